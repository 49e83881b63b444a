//! `inquiry-mailer run`: the long-running daemon around the jobs — webhook signatures and
//! bodies, systemd notification, signals, and the metrics registry.

pub mod metrics;
pub mod notify;
pub mod signals;
pub mod signature;
pub mod webhook_event;
