//! The one integration-test binary.

mod mail_delivery;
mod mail_templates;
mod support;
