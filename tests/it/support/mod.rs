//! Helpers shared by the integration tests.

pub mod mail;
pub mod smtp;
