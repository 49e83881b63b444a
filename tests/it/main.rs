//! The one integration-test binary: each file is a behaviour, `support` holds the set-up.

mod bad_rows_are_skipped;
mod broken_templates;
mod check_reports_each_part;
mod client_against_simulator;
mod config_loading;
mod crash_recovery_daemon;
mod crashes_lose_nothing;
mod daemon_lifecycle;
mod fault_tolerance;
mod job_overlap;
mod mail_delivery;
mod mail_templates;
mod persona_client;
mod preview_sends_nothing;
mod provisioning;
mod refresh;
mod secrets_stay_out_of_rest_and_logs;
mod sim_conformance;
mod sim_semantics;
mod smtp_outage_loses_nothing;
mod store_concurrency;
mod support;
mod unit_file;
mod users_and_status;
mod webhook_signature;
mod webhooks;
