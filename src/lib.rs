//! inquiry-mailer: gets an application's users through Persona identity verification by e-mail.
//!
//! The modules follow a user row through the pipeline: `store` reads it, `jobs` provision and
//! refresh it through `persona`, `links` and `mail`; `daemon` runs the jobs on a schedule.

pub mod app;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod domain;
pub mod faults;
pub mod jobs;
pub mod links;
pub mod logging;
pub mod mail;
pub mod persona;
pub mod store;
