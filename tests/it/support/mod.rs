//! Set-up shared by the integration tests: a temp folder with a config file and a database,
//! and the real binary to run against it.
#![allow(dead_code)]

pub mod app;
