//! The one integration-test binary: real HTTP over loopback, real files in temp dirs.

mod support;

mod sim_conformance;
mod sim_semantics;
