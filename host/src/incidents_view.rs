//! `sonde incidents` and `sonde report <id>`: the exception event list and one report, from a
//! running daemon's `/api/incidents`.

use std::fmt::Write as _;
use std::net::SocketAddr;

use anyhow::{Context as _, Result};

use crate::top::{get_body, get_json};
use sonde_analysis::demarcation::Element;
use sonde_live::IncidentSummary;

#[derive(serde::Deserialize)]
struct List {
    incidents: Vec<IncidentSummary>,
}

pub fn fetch_list(endpoint: SocketAddr) -> Result<Vec<IncidentSummary>> {
    Ok(get_json::<List>(endpoint, "/api/incidents")?.incidents)
}

/// One incident as JSON, as the daemon serves it (reports hold NaN for "no value", which JSON
/// writes as null: the text form is rendered by the daemon from its own values).
pub fn fetch_detail_json(endpoint: SocketAddr, id: &str) -> Result<String> {
    get_body(endpoint, &format!("/api/incidents/{id}"))
        .with_context(|| format!("fetching incident {id}"))
}

/// One incident as `sonde report` prints it.
pub fn fetch_detail_text(endpoint: SocketAddr, id: &str) -> Result<String> {
    get_body(endpoint, &format!("/api/incidents/{id}?format=text"))
        .with_context(|| format!("fetching incident {id}"))
}

fn clock(unix_ms: u64) -> String {
    let s = unix_ms / 1000;
    format!("{:02}:{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60, s % 60)
}

/// The list as a table, newest first.
pub fn render_list(list: &[IncidentSummary]) -> String {
    let mut o = String::new();
    if list.is_empty() {
        o.push_str("no incidents\n");
        return o;
    }
    let _ = writeln!(
        o,
        "{:<28} {:<9} {:<8} {:<16} {:<16} {:>7}  first root cause",
        "ID", "STATE", "START", "ENTRY", "KPI", "REPORT"
    );
    for i in list.iter().rev() {
        let report = i.report_unix_ms.map_or("-".to_string(), |r| {
            format!("{:.0}s", r.saturating_sub(i.start_unix_ms) as f64 / 1e3)
        });
        let cause = i.top_cause.as_ref().map_or("(analysing)".to_string(), |c| {
            // A machine cause is its node: no "node-a on node-a".
            let on = match (&c.element, &c.node) {
                (Element::Node { .. }, _) | (_, None) => String::new(),
                (_, Some(n)) => format!(" on {n}"),
            };
            format!(
                "{}{on} {} ({:.0}%)",
                c.element.id(),
                c.category,
                c.confidence * 100.0
            )
        });
        let during = i
            .parent
            .as_ref()
            .map_or(String::new(), |p| format!("  [during {p}]"));
        let _ = writeln!(
            o,
            "{:<28} {:<9} {:<8} {:<16} {:<16} {:>7}  {}{}",
            i.id,
            i.state,
            clock(i.start_unix_ms),
            i.entry,
            i.kpi,
            report,
            cause,
            during
        );
    }
    o
}

pub fn run_list(endpoint: SocketAddr, json: bool) -> Result<()> {
    let list = fetch_list(endpoint)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        print!("{}", render_list(&list));
    }
    Ok(())
}

pub fn run_report(endpoint: SocketAddr, id: &str, json: bool) -> Result<()> {
    // `latest`: the newest incident with a report.
    let id = if id == "latest" {
        fetch_list(endpoint)?
            .into_iter()
            .rev()
            .find(|i| i.report_unix_ms.is_some())
            .map(|i| i.id)
            .context("no incident has a report yet")?
    } else {
        id.to_string()
    };
    if json {
        println!("{}", fetch_detail_json(endpoint, &id)?);
    } else {
        print!("{}", fetch_detail_text(endpoint, &id)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonde_live::TopCause;

    fn summary(id: &str, element: Element, node: Option<&str>) -> IncidentSummary {
        IncidentSummary {
            id: id.into(),
            entry: "gateway".into(),
            kpi: "latency_mean_ms".into(),
            trigger: "gateway".into(),
            start_unix_ms: 1_000,
            opened_unix_ms: 3_000,
            report_unix_ms: Some(6_000),
            resolved_unix_ms: None,
            state: "open".into(),
            top_cause: Some(TopCause {
                element,
                category: "database-slow".into(),
                confidence: 0.85,
                explanation: String::new(),
                node: node.map(str::to_string),
            }),
            parent: None,
        }
    }

    /// The list says which node the first cause is on, except for a machine (its own node).
    #[test]
    fn the_list_names_the_first_causes_node() {
        let text = render_list(&[
            summary(
                "i1",
                Element::Service {
                    name: "mariadbd".into(),
                },
                Some("node-c"),
            ),
            summary(
                "i2",
                Element::Node {
                    name: "node-b".into(),
                },
                Some("node-b"),
            ),
            summary("i3", Element::Service { name: "x".into() }, None),
        ]);
        assert!(
            text.contains("mariadbd on node-c database-slow (85%)"),
            "{text}"
        );
        assert!(text.contains("  node-b database-slow (85%)"), "{text}");
        assert!(!text.contains("on node-b"), "{text}");
        assert!(text.contains("  x database-slow"), "{text}");
    }
}
