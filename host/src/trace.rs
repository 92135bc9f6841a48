//! `sonde trace`: a live view of socket connections and data chunks, one line per event.
use std::io::Write as _;

use anyhow::Result;
use serde::Serialize;

use sonde_capture::events::{ConnChange, ConnEventKind, DataChunk, Event};
use sonde_capture::{Capture, CaptureOptions};

/// Which events to show. Empty lists match everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub pids: Vec<u32>,
    pub ports: Vec<u16>,
    pub comms: Vec<String>,
    /// Show TCP state changes (no process context) too.
    pub states: bool,
    /// Show what processes write to stdout/stderr (matched by pid and command name only).
    pub logs: bool,
}

impl Filter {
    fn matches(&self, tgid: u32, comm: &str, ports: [Option<u16>; 2]) -> bool {
        (self.pids.is_empty() || self.pids.contains(&tgid))
            && (self.comms.is_empty() || self.comms.iter().any(|c| c == comm))
            && (self.ports.is_empty() || ports.iter().flatten().any(|p| self.ports.contains(p)))
    }

    pub fn matches_event(&self, ev: &Event) -> bool {
        match ev {
            Event::Data(d) => self.matches(
                d.task.tgid,
                &d.task.comm,
                [d.local.map(|a| a.port()), d.peer.map(|a| a.port())],
            ),
            Event::Conn(c) if matches!(c.kind, ConnEventKind::State | ConnEventKind::Reset) => {
                self.states
                    && (self.ports.is_empty()
                        || [c.local, c.peer]
                            .iter()
                            .flatten()
                            .any(|a| self.ports.contains(&a.port())))
            }
            Event::Conn(c) => self.matches(
                c.task.tgid,
                &c.task.comm,
                [c.local.map(|a| a.port()), c.peer.map(|a| a.port())],
            ),
            // Only when asked for: a `sonde trace | tee` would otherwise feed itself.
            Event::Log(l) => {
                self.logs
                    && (self.pids.is_empty() || self.pids.contains(&l.task.tgid))
                    && (self.comms.is_empty() || self.comms.iter().any(|c| *c == l.task.comm))
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct TraceOptions {
    pub filter: Filter,
    pub json: bool,
    /// Payload bytes shown per data line.
    pub payload_bytes: usize,
}

/// Runs until Ctrl-C/SIGTERM; dropping the capture detaches every program.
pub async fn run(capture_opts: &CaptureOptions, opts: TraceOptions) -> Result<()> {
    // The trace prints events, not the network maps: the network probes only run when TCP
    // state lines (and with them resets) are asked for.
    let capture_opts = CaptureOptions {
        network: capture_opts.network && opts.filter.states,
        // stdout/stderr chunks only when asked for (`--logs`).
        capture_stdio: capture_opts.capture_stdio && opts.filter.logs,
        ..capture_opts.clone()
    };
    // Before "capture attached" is logged: a signal right after it must be a clean stop.
    let mut signals = crate::daemon::Shutdown::install()?;
    let mut capture = Capture::start(&capture_opts)?;
    let mut printer = Printer::new(opts);
    let mut batch = Vec::with_capacity(1024);
    loop {
        tokio::select! {
            _ = signals.wait() => break,
            r = capture.next_batch(&mut batch, 1024) => {
                r?;
                for ev in batch.drain(..) {
                    printer.print(&ev)?;
                }
            }
        }
    }
    let stats = capture.stats()?;
    tracing::info!(
        data_events = stats.total(sonde_common::stat::DATA_EVENTS),
        lost =
            stats.total(sonde_common::stat::DATA_LOST) + stats.total(sonde_common::stat::CONN_LOST),
        counters = %counters_line(&stats),
        "trace stopped, programs detached"
    );
    Ok(())
}

/// Every kernel counter that moved, `name=value` by the stat's name: when an event a caller
/// waited for never showed up, this says whether the kernel emitted, dropped or never saw
/// it (the kernel matrix keeps this line).
fn counters_line(stats: &sonde_capture::CaptureStats) -> String {
    let mut line: Vec<String> = (0..sonde_common::stat::COUNT)
        .map(|s| (sonde_common::stat::NAMES[s as usize], stats.total(s)))
        .filter(|&(_, v)| v > 0)
        .map(|(name, v)| format!("{name}={v}"))
        .collect();
    if stats.decode_errors > 0 {
        line.push(format!("decode_errors={}", stats.decode_errors));
    }
    line.join(" ")
}

/// The JSON form of a data line: the chunk plus a payload preview.
#[derive(Serialize)]
struct JsonData<'a> {
    event: &'static str,
    #[serde(flatten)]
    chunk: &'a DataChunk,
    captured: usize,
    /// Printable preview: non-printable bytes as `.`.
    preview: String,
    /// The first `payload_bytes` captured bytes, hex.
    payload_hex: String,
}

#[derive(Serialize)]
struct JsonLog<'a> {
    event: &'static str,
    #[serde(flatten)]
    log: &'a sonde_capture::events::LogChunk,
    /// The captured bytes, invalid UTF-8 replaced.
    text: String,
}

#[derive(Serialize)]
struct JsonConn<'a> {
    event: &'static str,
    #[serde(flatten)]
    conn: &'a ConnChange,
}

struct Printer {
    opts: TraceOptions,
    out: std::io::BufWriter<std::io::Stdout>,
}

impl Printer {
    fn new(opts: TraceOptions) -> Self {
        Printer {
            opts,
            out: std::io::BufWriter::new(std::io::stdout()),
        }
    }

    fn print(&mut self, ev: &Event) -> Result<()> {
        if !self.opts.filter.matches_event(ev) {
            return Ok(());
        }
        if self.opts.json {
            match ev {
                Event::Data(d) => {
                    let shown = &d.payload[..d.payload.len().min(self.opts.payload_bytes)];
                    serde_json::to_writer(
                        &mut self.out,
                        &JsonData {
                            event: "data",
                            chunk: d,
                            captured: d.payload.len(),
                            preview: preview(shown),
                            payload_hex: hex(shown),
                        },
                    )?;
                }
                Event::Conn(c) => serde_json::to_writer(
                    &mut self.out,
                    &JsonConn {
                        event: match c.kind {
                            ConnEventKind::Open => "open",
                            ConnEventKind::Close => "close",
                            ConnEventKind::State => "state",
                            ConnEventKind::Reset => "reset",
                        },
                        conn: c,
                    },
                )?,
                Event::Log(l) => serde_json::to_writer(
                    &mut self.out,
                    &JsonLog {
                        event: "log",
                        log: l,
                        text: String::from_utf8_lossy(&l.payload).into_owned(),
                    },
                )?,
            }
            writeln!(self.out)?;
        } else {
            let line = match ev {
                Event::Data(d) => self.data_line(d),
                Event::Conn(c) => conn_line(c),
                Event::Log(l) => format!(
                    "{:>7} {:<15} {:<6} {:?}",
                    l.task.tgid,
                    l.task.comm,
                    if l.fd == 2 { "stderr" } else { "stdout" },
                    preview(&l.payload[..l.payload.len().min(self.opts.payload_bytes)])
                ),
            };
            writeln!(self.out, "{line}")?;
        }
        self.out.flush()?;
        Ok(())
    }

    fn data_line(&self, d: &DataChunk) -> String {
        let arrow = match d.direction {
            sonde_capture::events::Direction::Egress => "->",
            sonde_capture::events::Direction::Ingress => "<-",
        };
        let shown = &d.payload[..d.payload.len().min(self.opts.payload_bytes)];
        let mut notes = String::new();
        if d.truncated() > 0 {
            notes.push_str(&format!(" (+{}B not captured)", d.truncated()));
        }
        if d.read_failed {
            notes.push_str(" (copy failed)");
        }
        format!(
            "{:>7} {:<15} fd={:<4} conn={:<10x} {:<6} {} {} {} {:<8} {:>7}B pos={}{} {:?}",
            d.task.tgid,
            d.task.comm,
            d.fd,
            d.conn_id,
            d.role,
            addr(d.local),
            arrow,
            addr(d.peer),
            d.syscall,
            d.len,
            d.pos,
            notes,
            preview(shown),
        )
    }
}

fn conn_line(c: &ConnChange) -> String {
    match c.kind {
        ConnEventKind::Open => format!(
            "{:>7} {:<15} fd={:<4} conn={:<10x} OPEN  {} {} peer={} ret={}",
            c.task.tgid,
            c.task.comm,
            c.fd,
            c.conn_id,
            c.role,
            c.syscall,
            addr(c.peer),
            c.ret
        ),
        ConnEventKind::Close => format!(
            "{:>7} {:<15} fd={:<4} conn={:<10x} CLOSE {} {} -> {} tx={}B rx={}B",
            c.task.tgid,
            c.task.comm,
            c.fd,
            c.conn_id,
            c.role,
            addr(c.local),
            addr(c.peer),
            c.tx_bytes,
            c.rx_bytes
        ),
        ConnEventKind::Reset => format!(
            "{:>7} {:<15} sock={:x} TCP RST {} ({}) {} -> {}",
            "-",
            "",
            c.sock,
            if c.syscall == "rst_sent" {
                "sent"
            } else {
                "received"
            },
            c.old_state.name(),
            addr(c.local),
            addr(c.peer)
        ),
        ConnEventKind::State => format!(
            "{:>7} {:<15} sock={:x} TCP {} -> {} {} -> {}",
            "-",
            "",
            c.sock,
            c.old_state.name(),
            c.new_state.name(),
            addr(c.local),
            addr(c.peer)
        ),
    }
}

fn addr(a: Option<std::net::SocketAddr>) -> String {
    a.map_or_else(|| "?".into(), |a| a.to_string())
}

/// Printable ASCII kept, everything else as `.`.
pub fn preview(b: &[u8]) -> String {
    b.iter()
        .map(|&c| {
            if (0x20..0x7f).contains(&c) {
                c as char
            } else {
                '.'
            }
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|c| format!("{c:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_by_pid_port_comm() {
        let f = Filter {
            pids: vec![7],
            ports: vec![80],
            comms: vec!["curl".into()],
            states: false,
            logs: false,
        };
        assert!(f.matches(7, "curl", [Some(40000), Some(80)]));
        assert!(!f.matches(8, "curl", [Some(40000), Some(80)]));
        assert!(!f.matches(7, "wget", [Some(40000), Some(80)]));
        assert!(!f.matches(7, "curl", [Some(40000), Some(81)]));
        assert!(Filter::default().matches(1, "x", [None, None]));
    }

    #[test]
    fn preview_masks_binary() {
        assert_eq!(preview(b"GET /\r\n\x00\xff"), "GET /....");
    }
}
