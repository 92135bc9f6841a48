//! Prometheus and OpenMetrics exposition, shared by every crate that exposes metrics: label
//! escaping and the OpenMetrics form of a Prometheus text exposition. A leaf crate, so the
//! subsystems that write their own series (RED, the daemon's counters) agree on the format.
#![forbid(unsafe_code)]

mod label;
mod openmetrics;

pub use label::{label_value, push_label_value};
pub use openmetrics::to_openmetrics;
