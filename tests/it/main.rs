//! The one integration-test binary: each file is a behaviour, `support` holds the set-up.

mod config_loading;
mod demo;
mod mail_delivery;
mod mail_templates;
mod persona_client;
mod provisioning;
mod refresh;
mod sim_conformance;
mod sim_semantics;
mod store_concurrency;
mod support;
mod unit_file;
mod users_and_status;
mod webhook_signature;
