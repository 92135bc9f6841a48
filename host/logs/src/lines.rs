//! Chunks of stdout/stderr writes → lines, per (tgid, fd).
//!
//! A write may hold several lines, or part of one (a logger that writes a line in pieces,
//! or a line longer than the capture cap). Bytes after the last newline wait in a partial
//! line for the next chunk of the same stream; a partial line is emitted as it is when
//! it reaches `max_line_bytes` (the rest of that line up to its newline is dropped), when it
//! waits longer than `flush_after_ms`, or when its stream is evicted. Only streams holding a
//! partial line are tracked, at most `max_streams`; beyond, the least recently written one is
//! flushed and forgotten (counted).
//!
//! A chunk the kernel cut at the cap (`cut`) ends its last line where the capture ends: the
//! rest of that write was not seen, so its newline never arrives; the line is emitted marked
//! truncated instead of being glued to the next write.
use std::collections::{BTreeMap, HashMap};

/// One stream of one process: (tgid, fd).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    pub tgid: u32,
    pub fd: i32,
}

#[derive(Clone, Debug)]
pub struct LineConfig {
    /// A line is cut (and marked truncated) at this many bytes.
    pub max_line_bytes: usize,
    /// A partial line waiting longer than this for its newline is emitted as it is.
    pub flush_after_ms: u64,
    /// Streams with a partial line tracked at once.
    pub max_streams: usize,
}

impl Default for LineConfig {
    fn default() -> Self {
        Self {
            max_line_bytes: 4096,
            flush_after_ms: 2000,
            max_streams: 4096,
        }
    }
}

/// One line, without its newline (and without a trailing `\r`), ANSI colour codes removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line<M> {
    pub key: StreamKey,
    /// What the caller attached to the chunk that completed the line (or, for a line flushed
    /// by the timeout or an eviction, to the last chunk of its stream).
    pub meta: M,
    /// The time of the chunk that began the line.
    pub ts_ms: u64,
    pub text: String,
    /// Part of the line is missing: cut at `max_line_bytes`, or the kernel's capture cap.
    pub truncated: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LineStats {
    pub chunks: u64,
    pub lines: u64,
    pub truncated_lines: u64,
    /// Partial lines emitted because their stream was evicted (`max_streams`).
    pub stream_evictions: u64,
    /// Partial lines emitted by the timeout.
    pub timeouts: u64,
}

struct Partial<M> {
    meta: M,
    buf: Vec<u8>,
    /// Time of the chunk that began the line.
    start_ms: u64,
    /// The line reached the cap and was emitted: drop bytes up to the next newline.
    skipping: bool,
    /// Key in `order` (recency).
    seq: u64,
}

/// Splits chunks into lines; see the module docs.
pub struct LineSplitter<M> {
    cfg: LineConfig,
    streams: HashMap<StreamKey, Partial<M>>,
    /// seq → stream, oldest write first.
    order: BTreeMap<u64, StreamKey>,
    seq: u64,
    stats: LineStats,
}

impl<M: Clone> LineSplitter<M> {
    pub fn new(cfg: LineConfig) -> Self {
        Self {
            cfg: LineConfig {
                max_line_bytes: cfg.max_line_bytes.max(1),
                max_streams: cfg.max_streams.max(1),
                ..cfg
            },
            streams: HashMap::new(),
            order: BTreeMap::new(),
            seq: 0,
            stats: LineStats::default(),
        }
    }

    pub fn stats(&self) -> LineStats {
        self.stats
    }

    /// Streams holding a partial line.
    pub fn pending_streams(&self) -> usize {
        self.streams.len()
    }

    /// Splits one chunk of `key`'s stream, appending complete lines to `out`. `cut`: the
    /// chunk is only the first part of what was written (capture cap, failed copy).
    pub fn push(
        &mut self,
        key: StreamKey,
        meta: &M,
        ts_ms: u64,
        bytes: &[u8],
        cut: bool,
        out: &mut Vec<Line<M>>,
    ) {
        self.stats.chunks += 1;
        let mut partial = match self.streams.remove(&key) {
            Some(p) => {
                self.order.remove(&p.seq);
                Some(p)
            }
            None => None,
        };
        let mut rest = bytes;
        while !rest.is_empty() {
            let nl = rest.iter().position(|&b| b == b'\n');
            let (piece, complete) = match nl {
                Some(i) => (&rest[..i], true),
                None => (rest, false),
            };
            rest = match nl {
                Some(i) => &rest[i + 1..],
                None => &[],
            };
            let p = partial.get_or_insert_with(|| Partial {
                meta: meta.clone(),
                buf: Vec::new(),
                start_ms: ts_ms,
                skipping: false,
                seq: 0,
            });
            if !p.skipping {
                let room = self.cfg.max_line_bytes - p.buf.len();
                if piece.len() > room {
                    p.buf.extend_from_slice(&piece[..room]);
                    let line = std::mem::take(&mut p.buf);
                    emit(
                        &mut self.stats,
                        key,
                        meta.clone(),
                        p.start_ms,
                        &line,
                        true,
                        out,
                    );
                    p.skipping = true;
                } else {
                    p.buf.extend_from_slice(piece);
                }
            }
            if complete {
                let p = partial.take().expect("set above");
                if !p.skipping {
                    emit(
                        &mut self.stats,
                        key,
                        meta.clone(),
                        p.start_ms,
                        &p.buf,
                        false,
                        out,
                    );
                }
            }
        }
        let Some(mut p) = partial else { return };
        if cut {
            // The rest of this write was not captured: its line ends here, incomplete.
            if !p.skipping {
                emit(
                    &mut self.stats,
                    key,
                    meta.clone(),
                    p.start_ms,
                    &p.buf,
                    true,
                    out,
                );
            }
            return;
        }
        p.meta = meta.clone();
        self.insert(key, p, out);
    }

    /// Emits partial lines that waited longer than `flush_after_ms` at `now_ms`.
    pub fn flush_idle(&mut self, now_ms: u64, out: &mut Vec<Line<M>>) {
        let due: Vec<StreamKey> = self
            .streams
            .iter()
            .filter(|(_, p)| now_ms.saturating_sub(p.start_ms) >= self.cfg.flush_after_ms)
            .map(|(k, _)| *k)
            .collect();
        let mut due = due;
        due.sort_unstable();
        for key in due {
            if let Some(p) = self.remove(key) {
                self.stats.timeouts += 1;
                self.emit_partial(key, p, out);
            }
        }
    }

    /// Emits every partial line (shutdown, tests).
    pub fn flush_all(&mut self, out: &mut Vec<Line<M>>) {
        while let Some((_, key)) = self.order.pop_first() {
            if let Some(p) = self.streams.remove(&key) {
                self.emit_partial(key, p, out);
            }
        }
    }

    fn insert(&mut self, key: StreamKey, mut p: Partial<M>, out: &mut Vec<Line<M>>) {
        while self.streams.len() >= self.cfg.max_streams {
            let Some((_, old)) = self.order.pop_first() else {
                break;
            };
            if let Some(o) = self.streams.remove(&old) {
                self.stats.stream_evictions += 1;
                self.emit_partial(old, o, out);
            }
        }
        self.seq += 1;
        p.seq = self.seq;
        self.order.insert(p.seq, key);
        self.streams.insert(key, p);
    }

    fn remove(&mut self, key: StreamKey) -> Option<Partial<M>> {
        let p = self.streams.remove(&key)?;
        self.order.remove(&p.seq);
        Some(p)
    }

    /// A partial line leaves without its newline: complete as far as we know, unless it
    /// was being skipped (already emitted at the cap).
    fn emit_partial(&mut self, key: StreamKey, p: Partial<M>, out: &mut Vec<Line<M>>) {
        if !p.skipping {
            emit(&mut self.stats, key, p.meta, p.start_ms, &p.buf, false, out);
        }
    }
}

fn emit<M>(
    stats: &mut LineStats,
    key: StreamKey,
    meta: M,
    ts_ms: u64,
    raw: &[u8],
    truncated: bool,
    out: &mut Vec<Line<M>>,
) {
    let text = clean(raw);
    if text.trim().is_empty() {
        return;
    }
    stats.lines += 1;
    if truncated {
        stats.truncated_lines += 1;
    }
    out.push(Line {
        key,
        meta,
        ts_ms,
        text,
        truncated,
    });
}

/// Bytes → text: invalid UTF-8 replaced, a trailing `\r` and ANSI escape sequences (colours)
/// removed, other control characters but tab replaced by spaces.
pub fn clean(raw: &[u8]) -> String {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ params… final byte in @..~; other escapes: ESC + one char.
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if c.is_control() && c != '\t' {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: StreamKey = StreamKey { tgid: 1, fd: 2 };

    fn texts(lines: &[Line<u8>]) -> Vec<(&str, bool)> {
        lines
            .iter()
            .map(|l| (l.text.as_str(), l.truncated))
            .collect()
    }

    #[test]
    fn splits_lines_and_joins_pieces() {
        let mut s = LineSplitter::new(LineConfig::default());
        let mut out = Vec::new();
        s.push(K, &0u8, 10, b"one\ntwo\nthr", false, &mut out);
        assert_eq!(texts(&out), [("one", false), ("two", false)]);
        assert_eq!(s.pending_streams(), 1);
        s.push(K, &0, 20, b"ee\r\n\n\nfour\n", false, &mut out);
        assert_eq!(
            texts(&out),
            [
                ("one", false),
                ("two", false),
                ("three", false),
                ("four", false)
            ]
        );
        assert_eq!(out[2].ts_ms, 10, "a line is timed by its first chunk");
        assert_eq!(s.pending_streams(), 0, "no partial line, nothing tracked");
        assert_eq!(s.stats().lines, 4);
    }

    #[test]
    fn streams_are_kept_apart() {
        let mut s = LineSplitter::new(LineConfig::default());
        let mut out = Vec::new();
        let other = StreamKey { tgid: 1, fd: 1 };
        s.push(K, &0u8, 0, b"err-", false, &mut out);
        s.push(other, &1u8, 0, b"out-", false, &mut out);
        s.push(K, &0, 0, b"line\n", false, &mut out);
        s.push(other, &1, 0, b"line\n", false, &mut out);
        assert_eq!(texts(&out), [("err-line", false), ("out-line", false)]);
        assert_eq!((out[0].key, out[0].meta), (K, 0));
        assert_eq!((out[1].key, out[1].meta), (other, 1));
    }

    #[test]
    fn long_lines_are_cut_at_the_cap() {
        let mut s = LineSplitter::new(LineConfig {
            max_line_bytes: 8,
            ..LineConfig::default()
        });
        let mut out = Vec::new();
        s.push(K, &0u8, 0, b"0123456789abc", false, &mut out);
        s.push(K, &0, 0, b"def\nnext\n", false, &mut out);
        assert_eq!(texts(&out), [("01234567", true), ("next", false)]);
        assert_eq!(s.stats().truncated_lines, 1);
    }

    #[test]
    fn a_cut_chunk_ends_its_line() {
        let mut s = LineSplitter::new(LineConfig::default());
        let mut out = Vec::new();
        s.push(K, &0u8, 0, b"first\nsecond is long", true, &mut out);
        s.push(K, &0, 0, b"third\n", false, &mut out);
        assert_eq!(
            texts(&out),
            [("first", false), ("second is long", true), ("third", false)]
        );
    }

    #[test]
    fn partial_lines_flush_after_the_timeout() {
        let mut s = LineSplitter::new(LineConfig {
            flush_after_ms: 100,
            ..LineConfig::default()
        });
        let mut out = Vec::new();
        s.push(K, &0u8, 1000, b"no newline", false, &mut out);
        s.flush_idle(1050, &mut out);
        assert!(out.is_empty());
        s.flush_idle(1100, &mut out);
        assert_eq!(texts(&out), [("no newline", false)]);
        assert_eq!(s.pending_streams(), 0);
        assert_eq!(s.stats().timeouts, 1);
    }

    #[test]
    fn streams_are_bounded_oldest_evicted() {
        let mut s = LineSplitter::new(LineConfig {
            max_streams: 3,
            ..LineConfig::default()
        });
        let mut out = Vec::new();
        for tgid in 0..10u32 {
            let key = StreamKey { tgid, fd: 1 };
            s.push(
                key,
                &0u8,
                tgid as u64,
                format!("p{tgid}").as_bytes(),
                false,
                &mut out,
            );
            assert!(s.pending_streams() <= 3);
        }
        // Touch tgid 7 so that 8 is the oldest when 10 arrives.
        s.push(StreamKey { tgid: 7, fd: 1 }, &0, 20, b"+", false, &mut out);
        s.push(
            StreamKey { tgid: 10, fd: 1 },
            &0,
            21,
            b"p10",
            false,
            &mut out,
        );
        let evicted: Vec<_> = out.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(evicted, ["p0", "p1", "p2", "p3", "p4", "p5", "p6", "p8"]);
        assert_eq!(s.stats().stream_evictions, 8);
        out.clear();
        s.flush_all(&mut out);
        assert_eq!(texts(&out), [("p9", false), ("p7+", false), ("p10", false)]);
    }

    #[test]
    fn cleans_colours_and_bad_bytes() {
        assert_eq!(clean(b"\x1b[31mERROR\x1b[0m boom\r"), "ERROR boom");
        assert_eq!(clean(b"a\xffb\x07c\td"), "a\u{fffd}b c\td");
    }
}
