//! Sonde's daemon as a library: the binary (`src/main.rs`) is a thin CLI over these modules,
//! and the integration tests in `tests/` drive them directly.
pub mod admin;
pub mod analyze;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod http;
pub mod incidents_view;
pub mod isolation;
pub mod map_view;
pub mod metrics;
pub mod scaffold;
pub mod top;
pub mod trace;
