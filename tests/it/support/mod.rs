//! Shared test helpers; each area keeps its own submodule.

pub mod sim;
pub mod spec;
