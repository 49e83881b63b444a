//! The one integration-test binary: each file is a behaviour, `support` holds the set-up.

mod support;

mod config_loading;
mod store_concurrency;
mod unit_file;
mod users_and_status;
mod webhook_signature;
