//! Error-log template mining over what processes write to stdout/stderr.
//!
//! ```text
//!  Event::Log(LogChunk) ─► lines::LineSplitter (per tgid+fd: partial lines, cap, timeout)
//!        (service from the correlator)            │ complete lines
//!                                                 ▼
//!  LogMiner::observe(service, stream, unix_ms, line)
//!        level / keywords ─► is_error (error and non-error lines never share a template)
//!        per service: drain::Drain (masking, fixed-depth tree, merge, LRU-bounded clusters)
//!        per template: counts per minute for the last `retention_minutes`, a sample line
//!                                                 │
//!  templates(service, from, to) / error_summary(…) / stats()  (reports, /metrics, API)
//! ```
//!
//! Everything is bounded: services (`max_services`, least recently written evicted),
//! templates per service (`max_templates_per_service`, least recently matched evicted), minute
//! buckets (`retention_minutes`), line and sample sizes, streams with a partial line. Every
//! eviction and cut is counted in [`LogStats`]. The same input gives the same output: ties in
//! queries break by service and template text.
#![forbid(unsafe_code)]
pub mod drain;
pub mod files;
pub mod lines;
#[cfg(test)]
mod untrusted_input_tests;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use self::drain::{ClusterId, Drain, DrainConfig};
use self::lines::{Line, LineConfig, LineSplitter, StreamKey};
use sonde_capture::events::LogChunk;

/// stdout or stderr.
pub use sonde_capture::events::StdStream as Stream;

const MINUTE_MS: u64 = 60_000;

/// Settings of the miner (all bounded; defaults in [`Default`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogMinerConfig {
    /// Minutes of per-template counts kept (the query window's reach).
    pub retention_minutes: u32,
    /// Services tracked; beyond, the least recently written one is forgotten (counted).
    pub max_services: usize,
    /// Templates per service; beyond, the least recently matched is evicted (counted).
    pub max_templates_per_service: usize,
    /// Drain similarity threshold (0..=1).
    pub similarity: f64,
    /// Drain tree depth (Drain3's meaning: 4 = token count, then the first token).
    pub depth: usize,
    /// Children per Drain tree node.
    pub max_children: usize,
    /// Lines are cut (and counted as truncated) at this many bytes.
    pub max_line_bytes: usize,
    /// A partial line (no newline yet) is taken as it is after this long.
    pub flush_after_ms: u64,
    /// Streams (tgid, fd) holding a partial line at once.
    pub max_streams: usize,
    /// Bytes kept of a template's sample line.
    pub max_sample_bytes: usize,
    /// Log files to tail, each with the service its lines belong to (for services that do
    /// not log to stdout/stderr).
    pub files: Vec<files::LogFile>,
}

impl Default for LogMinerConfig {
    fn default() -> Self {
        Self {
            retention_minutes: 60,
            max_services: 256,
            max_templates_per_service: 500,
            similarity: 0.4,
            depth: 4,
            max_children: 100,
            max_line_bytes: 4096,
            flush_after_ms: 2000,
            max_streams: 4096,
            max_sample_bytes: 512,
            files: Vec::new(),
        }
    }
}

impl LogMinerConfig {
    /// Every `[logs]` value within its range (see docs/sonde.example.toml).
    pub fn validate(&self) -> anyhow::Result<()> {
        use anyhow::ensure;
        ensure!(
            self.similarity > 0.0 && self.similarity <= 1.0,
            "logs.similarity must be within (0, 1] (got {})",
            self.similarity
        );
        ensure!(
            (3..=16).contains(&self.depth),
            "logs.depth must be within [3, 16] (got {})",
            self.depth
        );
        for (key, v) in [
            ("logs.retention_minutes", self.retention_minutes as usize),
            ("logs.max_services", self.max_services),
            (
                "logs.max_templates_per_service",
                self.max_templates_per_service,
            ),
            ("logs.max_children", self.max_children),
            ("logs.max_line_bytes", self.max_line_bytes),
            ("logs.max_streams", self.max_streams),
        ] {
            ensure!(v >= 1, "{key} must be at least 1 (got 0)");
        }
        ensure!(
            self.max_line_bytes <= 1 << 20,
            "logs.max_line_bytes must be at most 1 MiB (got {})",
            self.max_line_bytes
        );
        Ok(())
    }
}

/// One template of one service over a query's time range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TemplateCount {
    pub service: String,
    /// Variable parts as `<*>`.
    pub template: String,
    /// Lines in the range (whole minutes: every minute the range touches).
    pub count: u64,
    pub is_error: bool,
    /// One raw line of the template (the first one seen); empty unless raw samples are
    /// kept ([`LogMiner::keep_samples`], `[privacy] log_samples`): a raw line can carry what
    /// the template masks (passwords, tokens, card numbers).
    pub sample: String,
    /// Where the sample was written.
    pub stream: Stream,
    /// First and last line of the template ever seen (not limited to the range).
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
}

/// An error template for a report, with its sentence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ErrorSummary {
    pub service: String,
    pub template: String,
    pub count: u64,
    /// A raw line, empty unless raw samples are kept (see [`TemplateCount::sample`]).
    pub sample: String,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    /// "24 lines in product: `ERROR upstream timed out after <*> ms`".
    pub text: String,
}

/// Counters for /metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LogStats {
    /// Lines observed, and their bytes.
    pub lines: u64,
    pub bytes: u64,
    /// Lines classified as errors.
    pub error_lines: u64,
    /// Templates held now, over all services, and services tracked now.
    pub templates: u64,
    pub services: u64,
    /// Templates evicted to stay within `max_templates_per_service`.
    pub template_evictions: u64,
    /// Services forgotten to stay within `max_services`.
    pub service_evictions: u64,
    /// Lines cut: at the capture cap, at `max_line_bytes`.
    pub truncated_lines: u64,
    /// Lines older than the retention window when they arrived (template kept, not counted
    /// in any minute).
    pub stale_lines: u64,
    /// Chunks given to [`LogMiner::observe_chunk`].
    pub chunks: u64,
    /// Streams holding a partial line now; partial lines emitted by eviction / timeout.
    pub pending_streams: u64,
    pub stream_evictions: u64,
    pub partial_timeouts: u64,
}

/// Line severity, from an explicit level when the line has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error,
    Warn,
    /// info, notice, debug, trace.
    Info,
}

#[derive(Clone)]
struct LineMeta {
    service: Arc<str>,
    stream: Stream,
}

struct TemplateState {
    is_error: bool,
    sample: String,
    stream: Stream,
    first_seen_ms: u64,
    last_seen_ms: u64,
    /// (minute, lines), ascending, within the retention window.
    minutes: VecDeque<(u64, u64)>,
}

struct ServiceLogs {
    drain: Drain,
    templates: HashMap<ClusterId, TemplateState>,
    /// Recency for the service bound.
    used: u64,
}

/// Per-service template mining; see the module docs.
pub struct LogMiner {
    cfg: LogMinerConfig,
    services: HashMap<Arc<str>, ServiceLogs>,
    splitter: LineSplitter<LineMeta>,
    scratch: Vec<Line<LineMeta>>,
    clock: u64,
    /// Newest minute seen (lines or ticks): the retention window ends there.
    newest_minute: u64,
    stats: LogStats,
    /// Keep a raw sample line per template (off by default: privacy).
    keep_samples: bool,
}

impl std::fmt::Debug for LogMiner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogMiner")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl LogMiner {
    pub fn new(cfg: LogMinerConfig) -> Self {
        let cfg = LogMinerConfig {
            retention_minutes: cfg.retention_minutes.max(1),
            max_services: cfg.max_services.max(1),
            max_line_bytes: cfg.max_line_bytes.max(16),
            ..cfg
        };
        let splitter = LineSplitter::new(LineConfig {
            max_line_bytes: cfg.max_line_bytes,
            flush_after_ms: cfg.flush_after_ms,
            max_streams: cfg.max_streams,
        });
        Self {
            cfg,
            services: HashMap::new(),
            splitter,
            scratch: Vec::new(),
            clock: 0,
            newest_minute: 0,
            stats: LogStats::default(),
            keep_samples: false,
        }
    }

    /// Keep one raw line per template as its sample (`[privacy] log_samples`). Off by
    /// default: only templates, whose variable parts are masked, leave the miner.
    pub fn keep_samples(mut self, keep: bool) -> Self {
        self.keep_samples = keep;
        self
    }

    pub fn config(&self) -> &LogMinerConfig {
        &self.cfg
    }

    /// One chunk from the kernel (`Event::Log`), from a process of `service`: split into
    /// lines per (tgid, fd), complete lines observed at once. `unix_ms`: the chunk's time
    /// (see [`unix_ms_of`]). Partial lines wait for their newline or [`Self::tick`].
    pub fn observe_chunk(&mut self, service: &str, chunk: &LogChunk, unix_ms: u64) {
        self.stats.chunks += 1;
        let service = match self.services.get_key_value(service) {
            Some((k, _)) => k.clone(),
            None => Arc::from(service),
        };
        let meta = LineMeta {
            service,
            stream: chunk.stream,
        };
        let key = StreamKey {
            tgid: chunk.task.tgid,
            fd: chunk.fd,
        };
        let cut = chunk.truncated() > 0;
        let mut lines = std::mem::take(&mut self.scratch);
        self.splitter
            .push(key, &meta, unix_ms, &chunk.payload, cut, &mut lines);
        self.observe_lines(&mut lines);
        self.scratch = lines;
    }

    /// Call every second or so: partial lines that waited `flush_after_ms` are observed, and
    /// the retention window moves on to `now_ms` even when no line arrives.
    pub fn tick(&mut self, now_ms: u64) {
        let mut lines = std::mem::take(&mut self.scratch);
        self.splitter.flush_idle(now_ms, &mut lines);
        self.observe_lines(&mut lines);
        self.scratch = lines;
        self.advance(now_ms / MINUTE_MS);
    }

    fn observe_lines(&mut self, lines: &mut Vec<Line<LineMeta>>) {
        for line in lines.drain(..) {
            if line.truncated {
                self.stats.truncated_lines += 1;
            }
            self.observe(&line.meta.service, line.meta.stream, line.ts_ms, &line.text);
        }
    }

    /// One complete line (no newline) of `service`, written at `unix_ms`.
    pub fn observe(&mut self, service: &str, stream: Stream, unix_ms: u64, line: &str) {
        self.stats.lines += 1;
        self.stats.bytes += line.len() as u64;
        let line = if line.len() > self.cfg.max_line_bytes {
            self.stats.truncated_lines += 1;
            cut_at(line, self.cfg.max_line_bytes)
        } else {
            line
        };
        let is_error = is_error_line(line);
        if is_error {
            self.stats.error_lines += 1;
        }
        self.clock += 1;
        let clock = self.clock;
        let minute = unix_ms / MINUTE_MS;
        self.advance(minute);
        let max_sample = if self.keep_samples {
            self.cfg.max_sample_bytes
        } else {
            0
        };
        let oldest = (self.newest_minute + 1).saturating_sub(self.cfg.retention_minutes as u64);
        let svc = self.service_mut(service);
        svc.used = clock;
        let out = svc.drain.add(line, is_error as u8);
        let evicted = out
            .evicted
            .is_some_and(|gone| svc.templates.remove(&gone).is_some());
        let t = svc
            .templates
            .entry(out.cluster)
            .or_insert_with(|| TemplateState {
                is_error,
                sample: cut_at(line, max_sample).to_string(),
                stream,
                first_seen_ms: unix_ms,
                last_seen_ms: unix_ms,
                minutes: VecDeque::new(),
            });
        t.first_seen_ms = t.first_seen_ms.min(unix_ms);
        t.last_seen_ms = t.last_seen_ms.max(unix_ms);
        if minute < oldest {
            self.stats.template_evictions += evicted as u64;
            self.stats.stale_lines += 1;
            return;
        }
        match t.minutes.binary_search_by_key(&minute, |&(m, _)| m) {
            Ok(i) => t.minutes[i].1 += 1,
            Err(i) => t.minutes.insert(i, (minute, 1)),
        }
        self.stats.template_evictions += evicted as u64;
    }

    fn service_mut(&mut self, service: &str) -> &mut ServiceLogs {
        if !self.services.contains_key(service) {
            if self.services.len() >= self.cfg.max_services {
                // Least recently written; ties cannot happen (the clock is unique).
                if let Some(old) = self
                    .services
                    .iter()
                    .min_by_key(|(_, s)| s.used)
                    .map(|(k, _)| k.clone())
                {
                    self.services.remove(&old);
                    self.stats.service_evictions += 1;
                }
            }
            let drain = Drain::new(DrainConfig {
                depth: self.cfg.depth,
                similarity: self.cfg.similarity,
                max_children: self.cfg.max_children,
                max_clusters: self.cfg.max_templates_per_service,
                ..DrainConfig::default()
            });
            self.services.insert(
                Arc::from(service),
                ServiceLogs {
                    drain,
                    templates: HashMap::new(),
                    used: 0,
                },
            );
        }
        self.services.get_mut(service).expect("inserted above")
    }

    /// Moves the retention window's end to `minute`; on a new minute, drops minute buckets
    /// that left the window, templates with none left, and services with no template.
    fn advance(&mut self, minute: u64) {
        if minute <= self.newest_minute {
            return;
        }
        self.newest_minute = minute;
        let keep = self.cfg.retention_minutes as u64;
        let oldest = (minute + 1).saturating_sub(keep);
        self.services.retain(|_, svc| {
            svc.templates.retain(|_, t| {
                while t.minutes.front().is_some_and(|&(m, _)| m < oldest) {
                    t.minutes.pop_front();
                }
                !t.minutes.is_empty()
            });
            !svc.templates.is_empty()
        });
    }

    /// Templates with lines in [from_ms, to_ms) — widened to the whole minutes it touches —
    /// of one service or all, most lines first (ties: service, then template).
    pub fn templates(&self, service: Option<&str>, from_ms: u64, to_ms: u64) -> Vec<TemplateCount> {
        self.templates_where(|name| service.is_none_or(|s| s == name), from_ms, to_ms)
    }

    /// [`templates`](Self::templates) of the services `keep` accepts.
    fn templates_where(
        &self,
        keep: impl Fn(&str) -> bool,
        from_ms: u64,
        to_ms: u64,
    ) -> Vec<TemplateCount> {
        let mut out = Vec::new();
        if to_ms <= from_ms {
            return out;
        }
        let first = from_ms / MINUTE_MS;
        let last = (to_ms - 1) / MINUTE_MS;
        for (name, svc) in &self.services {
            if !keep(name) {
                continue;
            }
            for (id, t) in &svc.templates {
                let count: u64 = t
                    .minutes
                    .iter()
                    .filter(|&&(m, _)| m >= first && m <= last)
                    .map(|&(_, n)| n)
                    .sum();
                if count == 0 {
                    continue;
                }
                out.push(TemplateCount {
                    service: name.to_string(),
                    template: svc.drain.template(*id).unwrap_or_default(),
                    count,
                    is_error: t.is_error,
                    sample: t.sample.clone(),
                    stream: t.stream,
                    first_seen_ms: t.first_seen_ms,
                    last_seen_ms: t.last_seen_ms,
                });
            }
        }
        out.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.service.cmp(&b.service))
                .then_with(|| a.template.cmp(&b.template))
        });
        out
    }

    /// The `limit` error templates with most lines in the range, for reports.
    pub fn error_summary(
        &self,
        service: Option<&str>,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Vec<ErrorSummary> {
        self.error_summary_where(
            |name| service.is_none_or(|s| s == name),
            from_ms,
            to_ms,
            limit,
        )
    }

    /// [`error_summary`](Self::error_summary) over several services at once (an incident's).
    pub fn error_summary_of(
        &self,
        services: &[String],
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Vec<ErrorSummary> {
        self.error_summary_where(
            |name| services.iter().any(|s| s == name),
            from_ms,
            to_ms,
            limit,
        )
    }

    fn error_summary_where(
        &self,
        keep: impl Fn(&str) -> bool,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Vec<ErrorSummary> {
        self.templates_where(keep, from_ms, to_ms)
            .into_iter()
            .filter(|t| t.is_error)
            .take(limit)
            .map(|t| ErrorSummary {
                text: format!(
                    "{} line{} in {}: `{}`",
                    t.count,
                    if t.count == 1 { "" } else { "s" },
                    t.service,
                    t.template
                ),
                service: t.service,
                template: t.template,
                count: t.count,
                sample: t.sample,
                first_seen_ms: t.first_seen_ms,
                last_seen_ms: t.last_seen_ms,
            })
            .collect()
    }

    pub fn stats(&self) -> LogStats {
        let split = self.splitter.stats();
        LogStats {
            templates: self
                .services
                .values()
                .map(|s| s.templates.len() as u64)
                .sum(),
            services: self.services.len() as u64,
            pending_streams: self.splitter.pending_streams() as u64,
            stream_evictions: split.stream_evictions,
            partial_timeouts: split.timeouts,
            ..self.stats
        }
    }
}

/// The longest prefix of `s` of at most `max` bytes, cut at a character boundary.
fn cut_at(s: &str, max: usize) -> &str {
    &s[..s.floor_char_boundary(max)]
}

/// Unix time (ms) of a kernel timestamp (`LogChunk::ts_ns`, CLOCK_MONOTONIC), by the offset
/// between the two clocks now.
pub fn unix_ms_of(ts_ns: u64) -> u64 {
    let now_unix_ms = sonde_capture::unix_now_ms();
    let age_ms = sonde_capture::monotonic_now_ns().saturating_sub(ts_ns) / 1_000_000;
    now_unix_ms.saturating_sub(age_ms)
}

/// The line's explicit level, if it has one: a `level=`, `lvl=`, `severity=` field (also
/// JSON `"level":"error"`) anywhere, or a level word among the first six tokens that looks
/// like one — upper case (`ERROR`), decorated (`[warn]`, `<info>`, `Error:`), or the first
/// token after nothing but numbers and timestamps (`error …`, `12:00:01 warn …`,
/// `ERROR:root:…`) — or a glog prefix (`E0102 12:00:00.1 …`).
pub fn level(line: &str) -> Option<Level> {
    let mut after_numbers_only = true;
    for (i, tok) in line.split_whitespace().enumerate() {
        let lower = tok.to_ascii_lowercase();
        let plain: String = lower.chars().filter(|&c| c != '"' && c != '\'').collect();
        for key in ["level", "lvl", "severity", "loglevel", "log.level"] {
            for sep in ['=', ':'] {
                let field = format!("{key}{sep}");
                if let Some(rest) = plain
                    .find(&field)
                    .filter(|&at| at == 0 || !plain.as_bytes()[at - 1].is_ascii_alphanumeric())
                    .and_then(|at| plain.get(at + field.len()..))
                {
                    let value = rest.split([',', '}', ' ', ';']).next().unwrap_or("");
                    if let Some(l) = level_word(value) {
                        return Some(l);
                    }
                }
            }
        }
        if i < 6 {
            let core = plain.trim_matches(|c: char| !c.is_ascii_alphanumeric());
            let first = core.split([':', '|', '/']).next().unwrap_or(core);
            let bare = tok.trim_matches(|c: char| c == '"' || c == '\'');
            let decorated = bare.starts_with(['[', '(', '<', '{'])
                || bare.ends_with([':', ']', ')', '>', '|', '}']);
            let upper = bare.chars().any(|c| c.is_alphabetic())
                && bare
                    .chars()
                    .filter(|c| c.is_alphabetic())
                    .all(|c| c.is_uppercase());
            if (upper || decorated || after_numbers_only)
                && let Some(l) = level_word(first)
            {
                return Some(l);
            }
            // glog: `E0102 12:00:00.000000 …`, compared as bytes: the token is whatever a
            // process wrote (`€12` is 5 bytes too, and `tok[1..]` would split its '€').
            if i == 0
                && let [letter, digits @ ..] = tok.as_bytes()
                && digits.len() == 4
                && digits.iter().all(u8::is_ascii_digit)
            {
                match letter {
                    b'E' | b'F' => return Some(Level::Error),
                    b'W' => return Some(Level::Warn),
                    b'I' => return Some(Level::Info),
                    _ => {}
                }
            }
            after_numbers_only &= tok.contains(|c: char| c.is_ascii_digit());
        }
    }
    None
}

fn level_word(w: &str) -> Option<Level> {
    Some(match w {
        "error" | "err" | "eror" | "fatal" | "crit" | "critical" | "panic" | "alert" | "emerg"
        | "emergency" | "severe" => Level::Error,
        "warn" | "warning" => Level::Warn,
        "info" | "information" | "notice" | "debug" | "dbg" | "trace" | "verbose" | "fine" => {
            Level::Info
        }
        _ => return None,
    })
}

/// Words that make a line without an explicit error or info level an error line.
const ERROR_WORDS: &[&str] = &[
    "error",
    "errors",
    "err",
    "exception",
    "fatal",
    "panic",
    "panicked",
    "timeout",
    "timeouts",
    "refused",
    "failed",
    "failure",
    "fail",
    "fails",
    "traceback",
    "abort",
    "aborted",
    "crash",
    "crashed",
    "segfault",
    "unreachable",
    "unhandled",
    "oom",
];

/// An error line: an explicit error level; or, at warning level or without a level, an
/// error keyword (`error`, `exception`, `timeout`, `timed out`, `refused`, `failed`,
/// `traceback`, `panic`…, a `FooError` or `FooException` name). Lines at info/debug level
/// are never errors, whatever they say.
pub fn is_error_line(line: &str) -> bool {
    match level(line) {
        Some(Level::Error) => true,
        Some(Level::Info) => false,
        Some(Level::Warn) | None => has_error_words(line),
    }
}

fn has_error_words(line: &str) -> bool {
    let mut prev_timed = false;
    for word in line.split(|c: char| !c.is_alphanumeric()) {
        if word.is_empty() {
            continue;
        }
        let lower = word.to_lowercase();
        if ERROR_WORDS.contains(&lower.as_str()) || (prev_timed && lower == "out") {
            return true;
        }
        // TypeError, IOError, NullPointerException.
        if word.len() > 5
            && (word.ends_with("Error") || word.ends_with("Exception"))
            && word.starts_with(|c: char| c.is_alphabetic())
        {
            return true;
        }
        prev_timed = lower == "timed";
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE_MS;

    /// Raw samples on, so the tests see what a sample holds (the default is off).
    fn miner() -> LogMiner {
        LogMiner::new(LogMinerConfig::default()).keep_samples(true)
    }

    #[test]
    fn error_classification() {
        let errors = [
            "ERROR upstream timed out after 5 ms",
            "2024-01-02T12:00:00Z [error] db: connection refused",
            "level=error msg=\"bad things\"",
            "{\"level\":\"error\",\"msg\":\"boom\"}",
            "E0102 12:00:00.123456 1 main.go:10] lost leader",
            "ERROR:root:something happened",
            "WARN retry failed for job 12",
            "upstream request timed out",
            "Traceback (most recent call last):",
            "java.lang.NullPointerException: null",
            "ValueError: invalid literal",
            "thread 'main' panicked at src/main.rs:3:5",
            "FATAL cannot open config",
        ];
        for l in errors {
            assert!(is_error_line(l), "{l:?} is an error line");
        }
        let not = [
            "INFO retrying after error in worker 3",
            "level=info msg=\"0 errors\"",
            "{\"level\":\"debug\",\"msg\":\"timeout set to 5s\"}",
            "DEBUG connect failed, will retry",
            "GET /api/items 200 12ms",
            "W0102 12:00:00.1 1 x.go:1] slow disk",
            "server listening on :8080",
            "mirror terror",
            "request served: trace id 42 ok",
        ];
        for l in not {
            assert!(!is_error_line(l), "{l:?} is not an error line");
        }
        assert_eq!(level("[WARN] disk 91% full"), Some(Level::Warn));
        assert_eq!(level("nothing here"), None);
        assert_eq!(level("12:00:01.5 4242 warn disk slow"), Some(Level::Warn));
        assert_eq!(level("request failed: trace id 42"), None);
    }

    #[test]
    fn one_error_template_counted_per_service() {
        let mut m = miner();
        for (i, ms) in [2003, 17, 90].into_iter().enumerate() {
            m.observe(
                "product",
                Stream::Stderr,
                T0 + i as u64 * 1000,
                &format!("ERROR upstream timed out after {ms} ms"),
            );
        }
        m.observe(
            "product",
            Stream::Stdout,
            T0,
            "INFO request served in 12 ms",
        );
        m.observe(
            "cart",
            Stream::Stderr,
            T0,
            "ERROR upstream timed out after 4 ms",
        );
        let all = m.templates(None, T0, T0 + MINUTE_MS);
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].service, "product");
        assert_eq!(all[0].template, "ERROR upstream timed out after <*> ms");
        assert_eq!(all[0].count, 3);
        assert!(all[0].is_error);
        assert_eq!(all[0].sample, "ERROR upstream timed out after 2003 ms");
        assert_eq!(all[0].stream, Stream::Stderr);
        assert_eq!((all[0].first_seen_ms, all[0].last_seen_ms), (T0, T0 + 2000));
        // Ties by service name: cart's error before product's info line.
        assert_eq!((all[1].service.as_str(), all[1].count), ("cart", 1));
        assert_eq!(all[2].template, "INFO request served in <*> ms");
        assert!(!all[2].is_error);

        let product = m.templates(Some("product"), T0, T0 + MINUTE_MS);
        assert_eq!(product.len(), 2);
        let errs = m.error_summary(Some("product"), T0, T0 + MINUTE_MS, 10);
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].text,
            "3 lines in product: `ERROR upstream timed out after <*> ms`"
        );
        assert_eq!(m.error_summary(None, T0, T0 + MINUTE_MS, 1).len(), 1);
        // An incident's services at once: most lines first, only theirs.
        let both = ["cart".to_string(), "product".to_string()];
        let errs = m.error_summary_of(&both, T0, T0 + MINUTE_MS, 10);
        let got: Vec<(&str, u64)> = errs.iter().map(|e| (e.service.as_str(), e.count)).collect();
        assert_eq!(got, [("product", 3), ("cart", 1)]);
        let cart_only = m.error_summary_of(&both[..1], T0, T0 + MINUTE_MS, 10);
        assert_eq!(cart_only.len(), 1);
        assert_eq!(cart_only[0].service, "cart");
        let s = m.stats();
        assert_eq!(
            (s.lines, s.error_lines, s.templates, s.services),
            (5, 4, 3, 2)
        );
    }

    #[test]
    fn error_and_info_lines_never_share_a_template() {
        let mut m = miner();
        m.observe("a", Stream::Stderr, T0, "ERROR cache refresh done in 5 ms");
        m.observe("a", Stream::Stderr, T0, "INFO cache refresh done in 5 ms");
        let t = m.templates(None, T0, T0 + 1);
        assert_eq!(t.len(), 2);
        assert!(t.iter().any(|t| t.is_error) && t.iter().any(|t| !t.is_error));
    }

    #[test]
    fn per_minute_counts_window_correctly() {
        let mut m = LogMiner::new(LogMinerConfig {
            retention_minutes: 5,
            ..LogMinerConfig::default()
        });
        // Minute k gets k+1 lines, k = 0..4.
        for k in 0..5u64 {
            for j in 0..=k {
                m.observe(
                    "svc",
                    Stream::Stdout,
                    T0 + k * MINUTE_MS + j * 10,
                    "ERROR job 7 failed",
                );
            }
        }
        let count = |m: &LogMiner, from: u64, to: u64| -> u64 {
            m.templates(Some("svc"), from, to)
                .iter()
                .map(|t| t.count)
                .sum()
        };
        assert_eq!(count(&m, T0, T0 + 5 * MINUTE_MS), 15);
        assert_eq!(
            count(&m, T0 + MINUTE_MS, T0 + 2 * MINUTE_MS),
            2,
            "minute 1 alone"
        );
        assert_eq!(count(&m, T0 + 2 * MINUTE_MS, T0 + 4 * MINUTE_MS), 3 + 4);
        // A range inside a minute counts that whole minute.
        assert_eq!(count(&m, T0 + 3 * MINUTE_MS + 5, T0 + 3 * MINUTE_MS + 6), 4);
        assert_eq!(count(&m, T0 + 5 * MINUTE_MS, T0 + 9 * MINUTE_MS), 0);
        assert_eq!(count(&m, T0, T0), 0, "empty range");
        // Two minutes later the window (5 minutes) has lost minutes 0 and 1.
        m.tick(T0 + 6 * MINUTE_MS);
        assert_eq!(count(&m, T0, T0 + 10 * MINUTE_MS), 3 + 4 + 5);
        // A line older than the window keeps its template but counts nowhere.
        m.observe("svc", Stream::Stdout, T0, "ERROR job 9 failed");
        assert_eq!(count(&m, T0, T0 + 10 * MINUTE_MS), 3 + 4 + 5);
        assert_eq!(m.stats().stale_lines, 1);
        // Out of order but inside the window: counted in its minute.
        m.observe(
            "svc",
            Stream::Stdout,
            T0 + 3 * MINUTE_MS,
            "ERROR job 1 failed",
        );
        assert_eq!(count(&m, T0 + 3 * MINUTE_MS, T0 + 4 * MINUTE_MS), 5);
        // Once everything left the window, the service is gone.
        m.tick(T0 + 20 * MINUTE_MS);
        assert_eq!(m.stats().services, 0);
        assert!(m.templates(None, 0, u64::MAX).is_empty());
    }

    #[test]
    fn bounds_hold() {
        let mut m = LogMiner::new(LogMinerConfig {
            max_services: 3,
            max_templates_per_service: 4,
            max_sample_bytes: 10,
            max_line_bytes: 64,
            ..LogMinerConfig::default()
        })
        .keep_samples(true);
        for i in 0..50u64 {
            // svc0 stays recent (every other line); the others rotate through what is left.
            let svc = if i % 2 == 0 {
                "svc0".to_string()
            } else {
                format!("svc{}", 1 + i % 5)
            };
            let words = [
                "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf",
            ];
            let line = format!(
                "{} happened {}",
                words[(i % 7) as usize],
                "x".repeat(i as usize * 3)
            );
            m.observe(&svc, Stream::Stdout, T0 + i, &line);
            let s = m.stats();
            assert!(s.services <= 3, "{s:?}");
            assert!(s.templates <= 3 * 4, "{s:?}");
        }
        let s = m.stats();
        assert!(s.service_evictions > 0 && s.template_evictions > 0, "{s:?}");
        assert!(s.truncated_lines > 0);
        for t in m.templates(None, 0, u64::MAX) {
            assert!(t.sample.len() <= 10);
        }
    }

    /// `cut`: the write was longer than what was captured.
    pub(super) fn chunk(tgid: u32, fd: i32, payload: &[u8], cut: bool) -> LogChunk {
        let len = payload.len() as u64 + if cut { 50 } else { 0 };
        LogChunk {
            task: sonde_capture::events::Task {
                tgid,
                tid: tgid,
                comm: "app".into(),
                thread: Default::default(),
            },
            fd,
            stream: Stream::from_fd(fd).unwrap(),
            cgroup_id: 1,
            ts_ns: 0,
            len,
            syscall: "write",
            unix_socket: false,
            read_failed: false,
            payload: bytes::Bytes::copy_from_slice(payload),
        }
    }

    #[test]
    fn chunks_become_lines_per_stream() {
        let mut m = LogMiner::new(LogMinerConfig {
            flush_after_ms: 500,
            ..LogMinerConfig::default()
        });
        m.observe_chunk("svc", &chunk(1, 2, b"ERROR upstream timed ", false), T0);
        m.observe_chunk("svc", &chunk(1, 1, b"INFO ok\n", false), T0);
        m.observe_chunk(
            "svc",
            &chunk(1, 2, b"out after 3 ms\nERROR upstream", false),
            T0 + 1,
        );
        assert_eq!(
            m.stats().lines,
            2,
            "the second stderr line is still partial"
        );
        // Cut by the capture cap: the line ends where the capture does.
        m.observe_chunk(
            "svc",
            &chunk(2, 2, b"ERROR upstream timed out after 9", true),
            T0,
        );
        assert_eq!(m.stats().truncated_lines, 1);
        m.tick(T0 + 600);
        let t = m.templates(Some("svc"), T0, T0 + MINUTE_MS);
        let names: Vec<(&str, u64)> = t.iter().map(|t| (t.template.as_str(), t.count)).collect();
        assert!(
            names.contains(&("ERROR upstream timed out after <*> ms", 1)),
            "{names:?}"
        );
        assert!(
            names.contains(&("ERROR upstream", 1)),
            "flushed by the timeout: {names:?}"
        );
        assert!(names.contains(&("INFO ok", 1)), "{names:?}");
        assert_eq!(m.stats().partial_timeouts, 1);
    }

    #[test]
    fn outputs_serialize() {
        let mut m = miner();
        m.observe("svc", Stream::Stderr, T0, "ERROR x failed");
        let v = serde_json::to_value(m.templates(None, T0, T0 + 1)).unwrap();
        assert_eq!(v[0]["stream"], "stderr");
        assert_eq!(v[0]["is_error"], true);
        serde_json::to_string(&m.error_summary(None, T0, T0 + 1, 5)).unwrap();
        serde_json::to_string(&m.stats()).unwrap();
    }

    #[test]
    fn unix_time_of_a_kernel_timestamp() {
        let now = unix_ms_of(sonde_capture::monotonic_now_ns());
        let earlier = unix_ms_of(sonde_capture::monotonic_now_ns() - 5_000_000_000);
        assert!(
            now - earlier >= 4_990 && now - earlier <= 5_100,
            "{}",
            now - earlier
        );
    }
}
