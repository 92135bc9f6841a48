//! Sonde's daemon as a library: the binary (`src/main.rs`) is a thin CLI over these modules,
//! and the integration tests in `tests/` drive them directly.
pub mod admin;
pub mod analyze;
pub mod capture;
pub mod config;
pub mod conntrack;
pub mod correlate;
pub mod daemon;
pub mod demo;
pub mod doctor;
pub mod incidents_view;
pub mod isolation;
pub mod live;
pub mod logs;
pub mod map_view;
pub mod metrics;
pub mod netmap;
pub mod parse;
pub mod plugin;
pub mod records;
pub mod red;
pub mod scaffold;
pub mod text;
pub mod top;
pub mod trace;
