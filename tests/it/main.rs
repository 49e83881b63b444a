//! The one integration-test binary: each file is a behaviour, `support` holds the set-up.

mod config_loading;
mod mail_delivery;
mod mail_templates;
mod persona_client;
mod provisioning;
mod refresh;
mod refresh_api_budget;
mod refresh_crash_recovery;
mod refresh_finished_users;
mod refresh_limits;
mod refresh_link_kinds;
mod refresh_template_versions;
mod sim_conformance;
mod sim_semantics;
mod store_concurrency;
mod support;
mod unit_file;
mod users_and_status;
mod webhook_signature;
