//! `sonde map`: the network map in the terminal — one row per edge (client → server:port),
//! worst first, with its status, connects and failures, retransmits, drops, RTT, requests and
//! errors over the daemon's window, and why it is not ok. Read from `/api/map`.
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;

use sonde_netmap::export::{EdgeView, Topology};
use sonde_netmap::status::Status;

#[derive(Debug, Clone)]
pub struct MapOptions {
    pub endpoint: SocketAddr,
    pub interval: Duration,
    /// Edges shown.
    pub limit: usize,
    /// Print once and exit.
    pub once: bool,
    /// Print the topology JSON instead of the table (with `once`).
    pub json: bool,
}

pub fn fetch(endpoint: SocketAddr) -> Result<Topology> {
    crate::top::get_json(endpoint, "/api/map")
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn status_mark(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Warning => "WARN",
        Status::Critical => "CRIT",
    }
}

fn retransmit_pct(e: &EdgeView) -> String {
    let segs = e.window.segments();
    if segs == 0 {
        "-".into()
    } else {
        format!("{:.1}%", e.window.retransmits as f64 * 100.0 / segs as f64)
    }
}

/// The table for one topology (edges already sorted worst first by the daemon).
pub fn render(t: &Topology, limit: usize) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<5} {:<44} {:>6} {:>6} {:>7} {:>6} {:>8} {:>7} {:>6} {:>10} {:>10}",
        "STAT",
        "EDGE (client -> server:port)",
        "CONN",
        "FAIL",
        "RETR",
        "DROP",
        "RTT ms",
        "REQ",
        "ERR%",
        "C->S",
        "S->C"
    );
    for e in t.edges.iter().take(limit) {
        let w = &e.window;
        let (req, err, _) = w.requests();
        let err_pct = if req > 0 {
            format!("{:.1}", err as f64 * 100.0 / req as f64)
        } else {
            "-".into()
        };
        let mut id = e.id.clone();
        if id.chars().count() > 44 {
            id = id.chars().take(43).collect::<String>() + "…";
        }
        let _ = writeln!(
            o,
            "{:<5} {:<44} {:>6} {:>6} {:>7} {:>6} {:>8} {:>7} {:>6} {:>10} {:>10}",
            status_mark(e.status),
            id,
            w.connects.max(w.accepts),
            w.connect_failures(),
            retransmit_pct(e),
            w.drops,
            e.rtt_ms.map_or("-".into(), |v| format!("{v:.2}")),
            req,
            err_pct,
            human_bytes(w.bytes_c2s),
            human_bytes(w.bytes_s2c),
        );
        for r in &e.reasons {
            let _ = writeln!(o, "      └ {r}");
        }
    }
    if t.edges.len() > limit {
        let _ = writeln!(o, "… {} more edges", t.edges.len() - limit);
    }
    let dropped: u64 = t.drops.iter().map(|d| d.packets).sum();
    if dropped > 0 {
        let mut by_reason: Vec<_> = t.drops.iter().collect();
        by_reason.sort_by_key(|d| std::cmp::Reverse(d.packets));
        let top: Vec<String> = by_reason
            .iter()
            .take(4)
            .map(|d| format!("{} {} {}", d.packets, d.protocol, d.reason))
            .collect();
        let _ = writeln!(o, "\nnode drops since start: {}", top.join(", "));
    }
    if !t.probes_missing.is_empty() {
        let _ = writeln!(o, "probes not running: {}", t.probes_missing.join(", "));
    }
    o
}

pub fn run(opts: &MapOptions) -> Result<()> {
    loop {
        let t = fetch(opts.endpoint)?;
        if opts.once {
            if opts.json {
                println!("{}", serde_json::to_string_pretty(&t)?);
            } else {
                print!("{}", render(&t, opts.limit));
            }
            return Ok(());
        }
        print!(
            "\x1b[2J\x1b[H sonde map — {} — last {} s, worst first (Ctrl-C to quit)\n\n{}",
            opts.endpoint,
            t.window_s,
            render(&t, opts.limit)
        );
        std::io::stdout().flush()?;
        std::thread::sleep(opts.interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonde_netmap::model::Counters;

    #[test]
    fn table_shows_worst_edges_with_reasons() {
        let bad = EdgeView {
            id: "curl@10.0.0.2 -> nginx@10.0.0.1:80".into(),
            status: Status::Critical,
            reasons: vec!["retransmits 9.0% of segments".into()],
            window: Counters {
                connects: 3,
                segments_c2s: 100,
                retransmits: 9,
                bytes_s2c: 3 << 20,
                ..Default::default()
            },
            rtt_ms: Some(1.5),
            ..Default::default()
        };
        let t = Topology {
            window_s: 30,
            edges: vec![bad.clone(), bad.clone(), bad],
            ..Default::default()
        };
        let table = render(&t, 2);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[1].starts_with("CRIT  curl@10.0.0.2 -> nginx@10.0.0.1:80"),
            "{table}"
        );
        assert!(
            lines[1].contains("9.0%") && lines[1].contains("3.0 MiB"),
            "{table}"
        );
        assert!(lines[2].contains("└ retransmits 9.0%"), "{table}");
        assert!(table.contains("… 1 more edges"), "{table}");
    }
}
