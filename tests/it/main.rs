//! The one integration-test binary: each file is a behaviour, `support` holds the set-up.

mod support;

mod config_loading;
mod mail_delivery;
mod mail_templates;
mod persona_client;
mod store_concurrency;
mod users_and_status;
