//! `sonde-analysis`: the "explain" half of Sonde.
//!
//! Pure computation over metric series and a topology, with no eBPF and no Wasm runtime, so it
//! can be tested and benchmarked on its own and replayed offline (`sonde analyze`).
//!
//! - [`detect`]: streaming anomaly detection per series (O(1) state) and the SLO burn-rate gate
//!   that decides which anomalies open an incident worth a report.
//! - [`attribution`]: which dimension-value combinations explain a KPI change;
//!   [`attribution_cases`] reads labelled attribution cases from files (public datasets).
//! - [`topology`] and [`demarcation`]: walk the service/machine graph from the entry service and
//!   rank abnormal services, call edges and machines along the propagation path.
//! - [`rules`]: the fault-tree interface; rules are sandboxed `fault-rule` components run by the
//!   daemon, reached here through the [`rules::RuleEngine`] trait.
//! - [`report`]: the incident report (JSON and text).
//! - [`replay`]: load a directory of metric CSVs and run the whole pipeline offline.
//! - [`scenarios`]: seeded incident bundles (network edge, slow database, saturated node,
//!   endpoint errors) for tests, benchmarks and `sonde analyze --example`.
//! - [`synth`] and [`score`]: the seeded generator of attribution cases and micro-F1 scoring.
#![forbid(unsafe_code)]

pub mod attribution;
pub mod attribution_cases;
pub mod baselines;
pub mod demarcation;
pub mod detect;
pub mod import;
pub mod replay;
pub mod report;
pub mod rules;
pub mod scenarios;
pub mod score;
pub mod synth;
pub mod topology;
