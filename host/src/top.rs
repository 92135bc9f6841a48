//! `sonde top`: a live table of the busiest endpoints — request rate, error share, p50 and p99
//! latency over the last interval — read from a running daemon's `/api/series`, so a user sees
//! value without Prometheus.
//!
//! Rates and quantiles come from the difference between two reads: counts and latency sketches
//! are cumulative in the daemon. Rows group a service's endpoint over status codes.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use sonde_pipeline::red::{SKETCH_BUCKETS, SeriesExport, sketch_quantile};

#[derive(Debug, Clone)]
pub struct TopOptions {
    /// The daemon's metrics address.
    pub endpoint: SocketAddr,
    pub interval: Duration,
    /// Rows shown.
    pub limit: usize,
    /// Print one table after one interval and exit (scripts, tests, no terminal).
    pub once: bool,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// `server`, `client` or the protocol's side.
    pub side: String,
    pub service: String,
    pub protocol: String,
    /// Method and route, or the operation.
    pub endpoint: String,
    pub requests: u64,
    pub rate: f64,
    pub error_ratio: f64,
    pub p50_s: Option<f64>,
    pub p99_s: Option<f64>,
}

/// Read `/api/series` once.
pub fn fetch(endpoint: SocketAddr) -> Result<Vec<SeriesExport>> {
    get_json(endpoint, "/api/series")
}

/// GET `path` from the daemon's endpoint and decode its JSON body.
pub fn get_json<T: serde::de::DeserializeOwned>(endpoint: SocketAddr, path: &str) -> Result<T> {
    let json = get_body(endpoint, path)?;
    serde_json::from_str(&json).with_context(|| format!("decoding {path}"))
}

/// GET `path` from the daemon's endpoint: the body of a 200 answer.
pub fn get_body(endpoint: SocketAddr, path: &str) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&endpoint, Duration::from_secs(3))
        .with_context(|| format!("connecting to sonde at {endpoint} (is `sonde run` running?)"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: sonde\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut body = Vec::new();
    s.read_to_end(&mut body)
        .with_context(|| format!("reading {path}"))?;
    let text = String::from_utf8_lossy(&body);
    let Some((head, json)) = text.split_once("\r\n\r\n") else {
        bail!("malformed answer from {endpoint}")
    };
    if !head.starts_with("HTTP/1.1 200") {
        bail!(
            "{endpoint} answered {}: {}",
            head.lines().next().unwrap_or(""),
            json.trim()
        );
    }
    Ok(json.to_string())
}

fn label<'a>(s: &'a SeriesExport, key: &str) -> &'a str {
    s.labels
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

/// Rows from two reads `secs` apart, busiest first.
pub fn rows(before: &[SeriesExport], after: &[SeriesExport], secs: f64) -> Vec<Row> {
    let key = |s: &SeriesExport| (s.metric.clone(), s.labels.clone());
    let old: HashMap<_, &SeriesExport> = before.iter().map(|s| (key(s), s)).collect();
    struct Acc {
        row: Row,
        errors: u64,
        sketch: Vec<u32>,
    }
    let mut groups: HashMap<(String, String, String, String), Acc> = HashMap::new();
    for s in after {
        let prev = old.get(&key(s));
        let count = s.count - prev.map_or(0, |p| p.count.min(s.count));
        if count == 0 {
            continue;
        }
        let errors = s.errors - prev.map_or(0, |p| p.errors.min(s.errors));
        let (side, protocol, endpoint) = match s.metric.as_str() {
            "http_server_request_duration_seconds" => (
                "server".to_string(),
                "http".to_string(),
                format!(
                    "{} {}",
                    label(s, "http_request_method"),
                    label(s, "http_route")
                ),
            ),
            "http_client_request_duration_seconds" => (
                "client".to_string(),
                "http".to_string(),
                format!(
                    "{} {}",
                    label(s, "http_request_method"),
                    label(s, "url_template")
                ),
            ),
            "rpc_server_duration_seconds" | "rpc_client_duration_seconds" => (
                if s.metric.starts_with("rpc_server") {
                    "server"
                } else {
                    "client"
                }
                .to_string(),
                label(s, "rpc_system").to_string(),
                format!("/{}/{}", label(s, "rpc_service"), label(s, "rpc_method")),
            ),
            "db_client_operation_duration_seconds" => (
                "client".to_string(),
                label(s, "db_system_name").to_string(),
                label(s, "db_operation_name").to_string(),
            ),
            "dns_lookup_duration_seconds" => (
                label(s, "side").to_string(),
                "dns".to_string(),
                label(s, "dns_question_type").to_string(),
            ),
            _ => (
                label(s, "side").to_string(),
                label(s, "protocol").to_string(),
                label(s, "operation").to_string(),
            ),
        };
        let service = label(s, "service_name").to_string();
        let acc = groups
            .entry((
                side.clone(),
                service.clone(),
                protocol.clone(),
                endpoint.clone(),
            ))
            .or_insert_with(|| Acc {
                row: Row {
                    side,
                    service,
                    protocol,
                    endpoint,
                    requests: 0,
                    rate: 0.0,
                    error_ratio: 0.0,
                    p50_s: None,
                    p99_s: None,
                },
                errors: 0,
                sketch: vec![0; SKETCH_BUCKETS],
            });
        acc.row.requests += count;
        acc.errors += errors;
        let prev_sketch: HashMap<u16, u32> = prev
            .map(|p| p.sketch.iter().copied().collect())
            .unwrap_or_default();
        for (i, c) in &s.sketch {
            let d = c.saturating_sub(prev_sketch.get(i).copied().unwrap_or(0));
            if let Some(slot) = acc.sketch.get_mut(*i as usize) {
                *slot += d;
            }
        }
    }
    let mut out: Vec<Row> = groups
        .into_values()
        .map(|mut a| {
            a.row.rate = a.row.requests as f64 / secs.max(1e-9);
            a.row.error_ratio = a.errors as f64 / a.row.requests as f64;
            a.row.p50_s = sketch_quantile(&a.sketch, 0.5);
            a.row.p99_s = sketch_quantile(&a.sketch, 0.99);
            a.row
        })
        .collect();
    out.sort_by(|a, b| {
        b.requests
            .cmp(&a.requests)
            .then_with(|| a.endpoint.cmp(&b.endpoint))
    });
    out
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |s| format!("{:.1}", s * 1e3))
}

/// The table as text.
pub fn render(rows: &[Row], limit: usize, secs: f64) -> String {
    let mut o = format!(
        "{:<7} {:<16} {:<6} {:<40} {:>9} {:>7} {:>9} {:>9}\n",
        "SIDE", "SERVICE", "PROTO", "ENDPOINT", "REQ/S", "ERR%", "P50(ms)", "P99(ms)"
    );
    if rows.is_empty() {
        o.push_str(&format!("(no requests in the last {secs:.1} s)\n"));
    }
    for r in rows.iter().take(limit) {
        let endpoint: String = r.endpoint.chars().take(40).collect();
        let service: String = r.service.chars().take(16).collect();
        o.push_str(&format!(
            "{:<7} {:<16} {:<6} {:<40} {:>9.1} {:>7.1} {:>9} {:>9}\n",
            r.side,
            service,
            r.protocol,
            endpoint,
            r.rate,
            r.error_ratio * 100.0,
            ms(r.p50_s),
            ms(r.p99_s)
        ));
    }
    o
}

pub fn run(opts: &TopOptions) -> Result<()> {
    let mut before = fetch(opts.endpoint)?;
    let mut at = Instant::now();
    loop {
        std::thread::sleep(opts.interval);
        let after = fetch(opts.endpoint)?;
        let secs = at.elapsed().as_secs_f64();
        at = Instant::now();
        let table = render(&rows(&before, &after, secs), opts.limit, secs);
        if opts.once {
            print!("{table}");
            return Ok(());
        }
        // Clear the screen and home the cursor, like top(1).
        print!(
            "\x1b[2J\x1b[H sonde top — {} — every {:.1} s (Ctrl-C to quit)\n\n{table}",
            opts.endpoint, secs
        );
        std::io::stdout().flush()?;
        before = after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonde_pipeline::red::sketch_index;

    fn series(route: &str, status: &str, count: u64, errors: u64, ms: u64) -> SeriesExport {
        SeriesExport {
            metric: "http_server_request_duration_seconds".into(),
            labels: vec![
                ("http_request_method".into(), "GET".into()),
                ("http_route".into(), route.into()),
                ("http_response_status_code".into(), status.into()),
                ("service_name".into(), "nginx".into()),
            ],
            count,
            errors,
            sum_seconds: 0.0,
            sketch: vec![(sketch_index(ms * 1_000_000) as u16, count as u32)],
        }
    }

    #[test]
    fn rows_are_deltas_grouped_over_status() {
        let before = vec![series("/a", "200", 10, 0, 5)];
        let after = vec![
            series("/a", "200", 30, 0, 5),
            series("/a", "500", 5, 5, 100),
            series("/b", "200", 1, 0, 1),
        ];
        let r = rows(&before, &after, 2.0);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].endpoint.as_str(), r[0].requests), ("GET /a", 25));
        assert!((r[0].rate - 12.5).abs() < 1e-9);
        assert!((r[0].error_ratio - 0.2).abs() < 1e-9);
        // The new 500 series' sketch is all delta: p99 is the slow one, p50 the fast one.
        assert!(
            (r[0].p50_s.unwrap() - 0.005).abs() < 0.001,
            "{:?}",
            r[0].p50_s
        );
        assert!((r[0].p99_s.unwrap() - 0.1).abs() < 0.01, "{:?}", r[0].p99_s);
        let text = render(&r, 10, 2.0);
        assert!(
            text.contains("GET /a") && text.contains("12.5") && text.contains("20.0"),
            "{text}"
        );
        assert!(render(&[], 10, 2.0).contains("no requests"));
    }
}
