//! Sonde's daemon as a library: the binary (`src/main.rs`) dispatches to [`cli`], one module
//! per command over these modules, and the integration tests in `tests/` drive them directly.
//! Nothing here imports `cli`: it is the top of the crate's module graph.
pub mod admin;
pub mod analyze;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod exits;
pub mod http;
pub mod hub;
pub mod incidents_view;
pub mod instance;
pub mod isolation;
pub mod map_view;
pub mod metrics;
pub mod scaffold;
pub mod top;
pub mod trace;
