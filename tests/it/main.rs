//! The one integration-test binary: real HTTP over loopback, real files in temp dirs.

mod persona_client;
mod support;
