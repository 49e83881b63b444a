//! Shared test helpers, one submodule per area.

pub mod persona;
