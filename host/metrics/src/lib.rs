//! Prometheus and OpenMetrics exposition, shared by every crate that exposes metrics: a typed
//! writer ([`Exposition`]: counter, gauge, histogram and unknown families, each written in the
//! form of the format, exemplars in OpenMetrics only) and label escaping. A leaf crate, so the
//! subsystems that write their own series (RED, the network map, the daemon's counters) agree
//! on the format.
#![forbid(unsafe_code)]

mod exposition;
mod label;

pub use exposition::{
    Counter, Exemplar, Exposition, Format, Gauge, Histogram, HistogramSeries, Kind, LabelText,
    Labels, Scalar, Unknown, Value,
};
pub use label::{label_value, push_label_value};
