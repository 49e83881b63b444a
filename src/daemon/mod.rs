//! `inquiry-mailer run`: the long-running daemon around the jobs — the cron schedule, the HTTP
//! listener (webhooks, redirect links, health, metrics), systemd notification, signals and reload.

pub mod health;
pub mod http;
pub mod metrics;
pub mod new_users;
pub mod notify;
pub mod redirect;
pub mod scheduler;
pub mod server;
pub mod signals;
pub mod signature;
pub mod webhook_event;
