//! HTTP/2 framing (RFC 9113 §4): a reader per direction turns segments into frames, keeping
//! only the payloads the parser reads (header blocks, settings, resets) and skipping the rest
//! (DATA is counted, never buffered).
//!
//! Gaps: a gap inside a payload being skipped costs nothing (its length is known, the next
//! frame header is where it was). Any other gap loses the frame boundaries; the reader then
//! waits for a segment that starts on a frame (see [`plausible`]: writers emit whole frames,
//! so after a gap the next write usually starts one) and reports [`Event::Lost`] so the
//! connection can forget what the lost bytes may have changed (HPACK state, open streams).

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub(crate) const DATA: u8 = 0x0;
pub(crate) const HEADERS: u8 = 0x1;
pub(crate) const PRIORITY: u8 = 0x2;
pub(crate) const RST_STREAM: u8 = 0x3;
pub(crate) const SETTINGS: u8 = 0x4;
pub(crate) const PUSH_PROMISE: u8 = 0x5;
pub(crate) const PING: u8 = 0x6;
pub(crate) const GOAWAY: u8 = 0x7;
pub(crate) const WINDOW_UPDATE: u8 = 0x8;
pub(crate) const CONTINUATION: u8 = 0x9;

pub(crate) const FLAG_END_STREAM: u8 = 0x1;
pub(crate) const FLAG_ACK: u8 = 0x1;
pub(crate) const FLAG_END_HEADERS: u8 = 0x4;
pub(crate) const FLAG_PADDED: u8 = 0x8;
pub(crate) const FLAG_PRIORITY: u8 = 0x20;

/// Largest frame payload a peer may announce (SETTINGS_MAX_FRAME_SIZE's ceiling, 2^24-1): the
/// length field cannot say more, so this is only a sanity bound for [`plausible`].
const LEN_CEILING: u32 = (1 << 24) - 1;
/// Payload bytes kept of a frame the parser reads; a larger HEADERS/CONTINUATION/PUSH_PROMISE
/// is skipped and reported as lost to HPACK.
pub(crate) const KEEP_MAX: u32 = 64 * 1024;

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) len: u32,
    pub(crate) kind: u8,
    pub(crate) flags: u8,
    pub(crate) stream: u32,
}

impl Header {
    pub(crate) fn parse(b: &[u8; 9]) -> Self {
        Header {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    /// Whether the parser needs this frame's payload.
    fn wanted(&self) -> bool {
        matches!(
            self.kind,
            HEADERS | CONTINUATION | PUSH_PROMISE | SETTINGS | RST_STREAM | GOAWAY
        )
    }

    /// Whether this header is one a conforming peer could send: a known type, on the right
    /// kind of stream, with the length its type fixes. Unknown types are legal (extensions)
    /// but not believable when we are guessing where frames start.
    fn believable(raw: &[u8; 9]) -> bool {
        let h = Header::parse(raw);
        if raw[5] & 0x80 != 0 || h.len > LEN_CEILING {
            return false;
        }
        let on_stream = h.stream != 0;
        match h.kind {
            DATA | HEADERS | CONTINUATION | PUSH_PROMISE => on_stream,
            PRIORITY => on_stream && h.len == 5,
            RST_STREAM => on_stream && h.len == 4,
            SETTINGS => {
                !on_stream && h.len.is_multiple_of(6) && (h.flags & FLAG_ACK == 0 || h.len == 0)
            }
            PING => !on_stream && h.len == 8,
            GOAWAY => !on_stream && h.len >= 8,
            WINDOW_UPDATE => h.len == 4,
            _ => false,
        }
    }
}

/// How well `d` reads as a run of whole frames from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chain {
    /// Believable headers in a row.
    pub(crate) frames: usize,
    /// The run covers `d` to its end, the last frame ending exactly with it.
    pub(crate) exact: bool,
    /// The run covers `d` to its end (its last frame may continue beyond).
    pub(crate) to_end: bool,
    /// The first frame's type.
    pub(crate) first_kind: Option<u8>,
}

/// Walks `d` frame by frame while the headers are believable.
pub(crate) fn chain(d: &[u8]) -> Chain {
    let mut c = Chain {
        frames: 0,
        exact: false,
        to_end: false,
        first_kind: None,
    };
    let mut at = 0usize;
    while let Some(raw) = d.get(at..at + 9).and_then(|s| <&[u8; 9]>::try_from(s).ok()) {
        if !Header::believable(raw) {
            return c;
        }
        c.first_kind.get_or_insert(raw[3]);
        c.frames += 1;
        at += 9 + Header::parse(raw).len as usize;
    }
    // A header cut by the end of `d` is not believed either.
    c.exact = at == d.len();
    c.to_end = at >= d.len();
    c
}

/// Whether a segment seen after lost boundaries starts on a frame: a run of believable
/// headers to the end of the segment, and, unless it is one frame exactly, at least two.
pub(crate) fn plausible(d: &[u8]) -> bool {
    let c = chain(d);
    c.to_end && (c.frames >= 2 || (c.frames == 1 && c.exact))
}

/// Whether `d` starts like the server's connection preface, a SETTINGS frame (RFC 9113
/// §3.4), as far as it goes: then the server's direction is followed from its start. Else it
/// must pass as [`plausible`].
fn server_preface(d: &[u8]) -> bool {
    let mut head = [0u8; 9];
    let n = d.len().min(9);
    head[..n].copy_from_slice(&d[..n]);
    if n < 4 {
        // Only the length so far.
        return n == 0 || d[0] == 0;
    }
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]);
    head[3] == SETTINGS
        && len.is_multiple_of(6)
        && head[4] == 0
        && head[5..].iter().all(|b| *b == 0)
}

/// A whole frame, its payload kept if the parser reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) header: Header,
    /// The payload if [`Header::wanted`] and not larger than [`KEEP_MAX`]; else empty.
    pub(crate) payload: Vec<u8>,
    /// A wanted payload was too large to keep.
    pub(crate) dropped: bool,
    /// Timestamp of the segment with the frame's first byte.
    pub(crate) first_ts: u64,
    /// Timestamp of the segment with its last byte.
    pub(crate) last_ts: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    Frame(Frame),
    /// Frame boundaries lost (a gap, or bytes that are not HTTP/2): whatever the lost bytes
    /// carried is unknown. `gap` is false for garbage.
    Lost {
        gap: bool,
    },
}

#[derive(Debug)]
struct Partial {
    header: Header,
    remaining: u32,
    keep: bool,
    payload: Vec<u8>,
    first_ts: u64,
}

/// The frame reader of one direction.
#[derive(Debug)]
pub(crate) struct Reader {
    /// The client's direction: it may start with the preface.
    client: bool,
    /// Bytes seen: the first ones say whether we follow the connection from its start.
    started: bool,
    /// Preface bytes still expected (client direction, at the start).
    preface: usize,
    head: [u8; 9],
    head_len: usize,
    head_ts: u64,
    cur: Option<Partial>,
    /// Boundaries lost: waiting for a segment that starts a frame.
    lost: bool,
    last_ts: u64,
}

impl Reader {
    /// The reader of the client's direction (`client`) or the server's. Where frames start
    /// is decided by the first bytes: the preface, a frame, or neither (joined mid-stream:
    /// wait for a segment that starts a frame).
    pub(crate) fn new(client: bool) -> Self {
        Reader {
            client,
            started: false,
            preface: 0,
            head: [0; 9],
            head_len: 0,
            head_ts: 0,
            cur: None,
            lost: false,
            last_ts: 0,
        }
    }

    /// `len` bytes of this direction were not captured.
    pub(crate) fn gap(&mut self, len: u64, out: &mut Vec<Event>) {
        if len == 0 {
            return;
        }
        if !self.started {
            // Joined after bytes we never saw.
            self.started = true;
            self.lost = true;
            return;
        }
        if self.lost {
            return;
        }
        if self.preface == 0
            && self.head_len == 0
            && let Some(p) = self.cur.as_mut()
            && !p.keep
            && len <= u64::from(p.remaining)
        {
            // Inside a payload we skip anyway: still in step.
            p.remaining -= len as u32;
            if p.remaining == 0 {
                let ts = self.last_ts;
                self.finish(ts, out);
            }
            return;
        }
        self.lose(true, out);
    }

    fn lose(&mut self, gap: bool, out: &mut Vec<Event>) {
        self.lost = true;
        self.preface = 0;
        self.head_len = 0;
        self.cur = None;
        out.push(Event::Lost { gap });
    }

    pub(crate) fn feed(&mut self, ts: u64, mut d: &[u8], out: &mut Vec<Event>) {
        self.last_ts = ts;
        if d.is_empty() {
            return;
        }
        if !self.started {
            self.started = true;
            if self.client && (d.starts_with(PREFACE) || PREFACE.starts_with(d)) {
                self.preface = PREFACE.len();
            } else if self.client || !server_preface(d) {
                self.lost = true;
            }
        }
        if self.lost {
            if !plausible(d) {
                return;
            }
            self.lost = false;
        }
        while !d.is_empty() {
            if self.preface > 0 {
                let at = PREFACE.len() - self.preface;
                let n = self.preface.min(d.len());
                if d[..n] != PREFACE[at..at + n] {
                    self.lose(false, out);
                    return;
                }
                self.preface -= n;
                d = &d[n..];
                continue;
            }
            if let Some(p) = self.cur.as_mut() {
                let n = (p.remaining as usize).min(d.len());
                if p.keep {
                    p.payload.extend_from_slice(&d[..n]);
                }
                p.remaining -= n as u32;
                d = &d[n..];
                if p.remaining == 0 {
                    self.finish(ts, out);
                }
                continue;
            }
            if self.head_len == 0 {
                self.head_ts = ts;
            }
            let n = (9 - self.head_len).min(d.len());
            self.head[self.head_len..self.head_len + n].copy_from_slice(&d[..n]);
            self.head_len += n;
            d = &d[n..];
            if self.head_len < 9 {
                break;
            }
            self.head_len = 0;
            let header = Header::parse(&self.head);
            let keep = header.wanted() && header.len <= KEEP_MAX;
            self.cur = Some(Partial {
                header,
                remaining: header.len,
                keep,
                payload: Vec::with_capacity(if keep { header.len as usize } else { 0 }),
                first_ts: self.head_ts,
            });
            if header.len == 0 {
                self.finish(ts, out);
            }
        }
    }

    fn finish(&mut self, ts: u64, out: &mut Vec<Event>) {
        if let Some(p) = self.cur.take() {
            out.push(Event::Frame(Frame {
                dropped: p.header.wanted() && !p.keep,
                header: p.header,
                payload: p.payload,
                first_ts: p.first_ts,
                last_ts: ts,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut v = len.to_be_bytes()[1..].to_vec();
        v.push(kind);
        v.push(flags);
        v.extend_from_slice(&stream.to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    fn frames(events: &[Event]) -> Vec<(u8, u32, usize)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Frame(f) => Some((f.header.kind, f.header.stream, f.payload.len())),
                Event::Lost { .. } => None,
            })
            .collect()
    }

    #[test]
    fn frames_across_any_split() {
        let mut stream = PREFACE.to_vec();
        stream.extend(frame(SETTINGS, 0, 0, &[0, 1, 0, 0, 0x10, 0]));
        stream.extend(frame(HEADERS, 5, 1, b"\x82\x84"));
        stream.extend(frame(DATA, 1, 1, &[7; 100]));
        for cut in 0..=stream.len() {
            let mut r = Reader::new(true);
            let mut ev = Vec::new();
            r.feed(1, &stream[..cut], &mut ev);
            r.feed(2, &stream[cut..], &mut ev);
            assert_eq!(
                frames(&ev),
                [(SETTINGS, 0, 6), (HEADERS, 1, 2), (DATA, 1, 0)],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_gap_inside_data_keeps_the_boundaries() {
        let data = frame(DATA, 1, 3, &[7; 1000]);
        let next = frame(HEADERS, 4, 5, b"\x82");
        let mut r = Reader::new(false);
        let mut ev = Vec::new();
        r.feed(0, &frame(SETTINGS, 0, 0, &[]), &mut ev);
        r.feed(1, &data[..100], &mut ev);
        r.gap(800, &mut ev);
        r.feed(2, &data[900..], &mut ev);
        r.feed(3, &next, &mut ev);
        assert_eq!(
            frames(&ev),
            [(SETTINGS, 0, 0), (DATA, 3, 0), (HEADERS, 5, 1)]
        );
        assert!(!ev.iter().any(|e| matches!(e, Event::Lost { .. })));
    }

    #[test]
    fn a_gap_across_frames_loses_them_until_a_frame_starts_a_segment() {
        let mut r = Reader::new(false);
        let mut ev = Vec::new();
        let headers = frame(HEADERS, 4, 1, b"\x82\x84\x86");
        r.feed(0, &frame(SETTINGS, 0, 0, &[]), &mut ev);
        ev.clear();
        r.feed(1, &headers[..5], &mut ev);
        r.gap(10, &mut ev);
        assert_eq!(ev, [Event::Lost { gap: true }]);
        // Not on a boundary: ignored.
        r.feed(2, b"\x01\x02\x03 some bytes", &mut ev);
        let mut next = frame(HEADERS, 5, 7, b"\x82");
        next.extend(frame(DATA, 1, 7, b"abc"));
        r.feed(3, &next, &mut ev);
        assert_eq!(frames(&ev), [(HEADERS, 7, 1), (DATA, 7, 0)]);
    }

    #[test]
    fn a_bad_preface_is_garbage() {
        let mut r = Reader::new(true);
        let mut ev = Vec::new();
        r.feed(1, b"PRI * HTTP/2", &mut ev);
        r.feed(2, b".1\r\n\r\n", &mut ev);
        assert_eq!(ev, [Event::Lost { gap: false }]);
    }

    #[test]
    fn plausibility() {
        let mut two = frame(SETTINGS, 0, 0, &[]);
        two.extend(frame(WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]));
        assert!(plausible(&two));
        assert!(plausible(&frame(HEADERS, 4, 1, b"\x82")));
        // One frame cut by the segment: too little to believe.
        assert!(!plausible(&frame(DATA, 0, 1, &[0; 50])[..20]));
        assert!(!plausible(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(!plausible(&frame(PING, 0, 1, &[0; 8])), "PING on a stream");
        assert!(!plausible(&frame(0x20, 0, 1, &[])), "unknown type");
        assert!(!plausible(&[]));
    }
}
