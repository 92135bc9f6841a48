//! Small helpers shared by the branches.

use sonde_sdk::fault_rule::{Evidence, Metric, Neighbour, Relation, RuleInput, find, metric};

/// A metric that the detector flagged and that went up.
pub(crate) fn rose<'a>(metrics: &'a [Metric], name: &str) -> Option<&'a Metric> {
    find(metrics, name).filter(|x| x.anomalous && x.after > x.before)
}

/// The first of `names` that rose.
pub(crate) fn first_rose<'a>(metrics: &'a [Metric], names: &[&str]) -> Option<&'a Metric> {
    names.iter().find_map(|n| rose(metrics, n))
}

/// Every one of `names` that rose, in that order.
pub(crate) fn all_rose<'a>(metrics: &'a [Metric], names: &[&str]) -> Vec<&'a Metric> {
    names.iter().filter_map(|n| rose(metrics, n)).collect()
}

pub(crate) fn evidence(x: &Metric, note: &str) -> Evidence {
    Evidence {
        metric: x.name.clone(),
        before: x.before,
        after: x.after,
        note: note.into(),
    }
}

/// A value with the unit its metric name implies.
pub(crate) fn fmt(name: &str, v: f64) -> String {
    match metric::unit(name) {
        metric::Unit::Ratio => format!("{:.1}%", v * 100.0),
        metric::Unit::Milliseconds => format!("{v:.1} ms"),
        metric::Unit::PerSecond => format!("{v:.1}/s"),
        metric::Unit::Cores | metric::Unit::Other => format!("{v:.2}"),
    }
}

/// `name before → after`, with units.
pub(crate) fn change(x: &Metric) -> String {
    format!(
        "{} {} → {}",
        x.name,
        fmt(&x.name, x.before),
        fmt(&x.name, x.after)
    )
}

pub(crate) fn label<'a>(labels: &'a [(String, String)], key: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

pub(crate) fn neighbours(
    input: &RuleInput,
    relation: Relation,
) -> impl Iterator<Item = &Neighbour> {
    input
        .neighbours
        .iter()
        .filter(move |n| n.relation == relation)
}
