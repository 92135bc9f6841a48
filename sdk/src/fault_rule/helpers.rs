//! Building blocks of fault-tree rules: the default tree (`plugins/fta-rules`) is written with
//! these, and a platform team's own rule can be too, so its evidence and sentences read like
//! the built-in ones.
//!
//! ```
//! use sonde_sdk::fault_rule::helpers::{change, evidence, rose};
//! use sonde_sdk::fault_rule::{Metric, metric as m};
//!
//! let ms = vec![Metric { name: m::ERROR_RATE.into(), before: 0.01, after: 0.2, anomalous: true }];
//! let errors = rose(&ms, m::ERROR_RATE).expect("flagged and up");
//! assert_eq!(change(errors), "error_rate 1.0% → 20.0%");
//! assert_eq!(evidence(errors, "server side").after, 0.2);
//! ```

use super::{Evidence, Metric, Neighbour, Relation, RuleInput, find, metric};

/// The metric `name` if the detector flagged it anomalous *and* it went up; `None` when it is
/// missing (unknown, never zero), normal, or fell.
pub fn rose<'a>(metrics: &'a [Metric], name: &str) -> Option<&'a Metric> {
    find(metrics, name).filter(|x| x.anomalous && x.after > x.before)
}

/// The first of `names` that [rose], in the order given (strongest signal first).
pub fn first_rose<'a>(metrics: &'a [Metric], names: &[&str]) -> Option<&'a Metric> {
    names.iter().find_map(|n| rose(metrics, n))
}

/// Every one of `names` that [rose], in that order.
pub fn all_rose<'a>(metrics: &'a [Metric], names: &[&str]) -> Vec<&'a Metric> {
    names.iter().filter_map(|n| rose(metrics, n)).collect()
}

/// One piece of evidence from a metric: its name, before and after, and a short note saying
/// what it shows (`"server side"`, `"CFS throttling"`).
pub fn evidence(x: &Metric, note: &str) -> Evidence {
    Evidence {
        metric: x.name.clone(),
        before: x.before,
        after: x.after,
        note: note.into(),
    }
}

/// A value with the unit its metric name implies ([`metric::unit`]): `12.0%`, `3.5 ms`,
/// `41.0/s`, `1.95`.
pub fn format_value(name: &str, v: f64) -> String {
    match metric::unit(name) {
        metric::Unit::Ratio => format!("{:.1}%", v * 100.0),
        metric::Unit::Milliseconds => format!("{v:.1} ms"),
        metric::Unit::PerSecond => format!("{v:.1}/s"),
        metric::Unit::Cores | metric::Unit::Other => format!("{v:.2}"),
    }
}

/// `name before → after`, with units: the change as an explanation sentence quotes it.
pub fn change(x: &Metric) -> String {
    format!(
        "{} {} → {}",
        x.name,
        format_value(&x.name, x.before),
        format_value(&x.name, x.after)
    )
}

/// The value of label `key` (`protocol`, `kind`, `namespace`…), if set.
pub fn label<'a>(labels: &'a [(String, String)], key: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The subject's neighbours in one relation (its downstreams, its host…).
pub fn neighbours(input: &RuleInput, relation: Relation) -> impl Iterator<Item = &Neighbour> {
    input
        .neighbours
        .iter()
        .filter(move |n| n.relation == relation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault_rule::metric as m;

    fn metric(name: &str, before: f64, after: f64, anomalous: bool) -> Metric {
        Metric {
            name: name.into(),
            before,
            after,
            anomalous,
        }
    }

    #[test]
    fn rose_needs_a_flagged_rise() {
        let ms = vec![
            metric(m::ERROR_RATE, 0.0, 0.3, true),
            metric(m::LATENCY_MEAN_MS, 5.0, 50.0, false),
            metric(m::RTT_MS, 9.0, 1.0, true),
        ];
        assert!(rose(&ms, m::ERROR_RATE).is_some());
        assert!(rose(&ms, m::LATENCY_MEAN_MS).is_none(), "not flagged");
        assert!(rose(&ms, m::RTT_MS).is_none(), "fell");
        assert!(rose(&ms, m::DROP_RATE).is_none(), "missing is unknown");
        let names = [m::LATENCY_MEAN_MS, m::RTT_MS, m::ERROR_RATE];
        assert_eq!(first_rose(&ms, &names).unwrap().name, m::ERROR_RATE);
        assert_eq!(all_rose(&ms, &names).len(), 1);
    }

    #[test]
    fn change_and_evidence_carry_units_and_values() {
        let x = metric(m::LATENCY_MEAN_MS, 2.0, 120.0, true);
        assert_eq!(change(&x), "latency_mean_ms 2.0 ms → 120.0 ms");
        assert_eq!(format_value(m::RETRANSMIT_RATE, 41.0), "41.0/s");
        assert_eq!(format_value(m::CPU_USAGE_CORES, 1.5), "1.50");
        let e = evidence(&x, "server side");
        assert_eq!(
            (e.metric.as_str(), e.before, e.after, e.note.as_str()),
            (m::LATENCY_MEAN_MS, 2.0, 120.0, "server side")
        );
        let labels = vec![("protocol".to_string(), "mysql".to_string())];
        assert_eq!(label(&labels, "protocol"), Some("mysql"));
        assert_eq!(label(&labels, "kind"), None);
    }
}
