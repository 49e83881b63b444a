//! Set-up shared by the integration tests: a temp folder with a config file and a database,
//! the real binary to run against it, a real SMTP server, mail fixtures.
#![allow(dead_code)]

pub mod app;
pub mod daemon;
pub mod mail;
pub mod persona;
pub mod pg_server;
pub mod postgres;
pub mod redirect;
pub mod refresh;
pub mod relay;
pub mod replica;
pub mod runs;
pub mod safety;
pub mod sim;
pub mod smtp;
pub mod spec;
pub mod stack;
