//! One connection: a reader per direction and the FIFO of requests waiting for responses.
//!
//! Each direction is a [`Side`] in one [`Mode`]: between messages, inside a head that did not
//! fit one segment, inside a body of known length or a chunked body, reading a response to the
//! connection's close, or resynchronising after bytes went missing. Heads that fit their
//! segment are parsed in place; only a head split across segments is copied into the side's
//! buffer (at most [`MAX_HEAD`] bytes).
//!
//! A gap (bytes the capture did not show) is followed by the lengths the reader knows: inside a
//! body of known length or chunk data (and the CR LF after it) it is skipped and the message
//! stays whole. Anywhere else the boundaries are lost: the reader scans for the next message
//! start (`resync`) and counts, within bounds, the messages the stretch held (`gap`), for the
//! pairing to account for them.
//!
//! What the heads and bodies mean for the exchanges (pairing, records) is `pairing`'s job.

use sonde_sdk::protocol_parser::{Claim, ConnInfo, Direction, RequestRecord, Role, Segment};

use crate::MAX_HEAD;
use crate::body::Absorb;
use crate::detect::{self, Verdict, is_method_byte};
use crate::gap::Region;
use crate::head::{self, Head, Parsed, Start};
use crate::mode::Mode;
use crate::pairing::Exchanges;
use crate::resync::{Carry, Kind, next_start, start_verdict};
use crate::scan::HeadEnd;
use sonde_sdk::protocol_parser::pending::Count;

/// The reader of one direction.
#[derive(Debug, Default)]
struct Side {
    mode: Mode,
    /// A split head's bytes so far; capacity never beyond [`MAX_HEAD`].
    buf: Vec<u8>,
    head_end: HeadEnd,
    /// In [`Mode::Resync`]: the next byte may start a message (after an LF, a gap, or at a
    /// segment start).
    line_start: bool,
    /// In [`Mode::UntilClose`]: at the start of the body or of a segment.
    boundary: bool,
    /// Timestamp of the segment with the current message's first byte.
    start_ts: u64,
    /// Timestamp of the last segment that carried bytes of the current message.
    last_ts: u64,
    /// Bytes of the current message so far (head and framed body, on the wire).
    bytes: u64,
    /// Request side: the request whose body is being read.
    seq: u64,
    /// The stretch of unknown boundaries being read, until a message start is confirmed: from
    /// entering [`Mode::Resync`], or from a gap in a keep-alive [`Mode::UntilClose`] body.
    region: Option<Region>,
    /// In [`Mode::Resync`]: [`Side::buf`] holds the end of the last segment scanned.
    carry: Carry,
    /// Response side: how many waiting requests the responses hidden in [`Side::region`] could
    /// answer, as of its last gap (requests sent after cannot be theirs).
    answerable: u64,
}

/// The per-connection state of [`crate::Http`].
#[derive(Debug, Default)]
pub struct HttpState {
    request_direction: Option<Direction>,
    request: Side,
    response: Side,
    ex: Exchanges,
}

impl HttpState {
    /// Bytes of head buffer allocated, both directions (bounded by `2 × MAX_HEAD`).
    pub fn buffer_capacity(&self) -> usize {
        self.request.buf.capacity() + self.response.buf.capacity()
    }

    /// Requests waiting for a response (at most [`crate::MAX_PENDING`]).
    pub fn pending(&self) -> usize {
        self.ex.pending()
    }

    pub(crate) fn parse(
        &mut self,
        conn: &ConnInfo,
        seg: &Segment<'_>,
        out: &mut Vec<RequestRecord>,
    ) -> Claim {
        if self.ex.finished {
            return Claim::Finished;
        }
        let request_direction = *self
            .request_direction
            .get_or_insert_with(|| request_direction(conn, seg));
        let (side, kind) = if seg.direction == request_direction {
            (&mut self.request, Kind::Request)
        } else {
            (&mut self.response, Kind::Response)
        };
        if seg.gap_before > 0 {
            side.gap(kind, seg.gap_before, seg.ts_ns, &mut self.ex, out);
        }
        side.feed(kind, seg.ts_ns, seg.data, &mut self.ex, out);
        if self.ex.finished {
            Claim::Finished
        } else {
            Claim::Mine
        }
    }

    pub(crate) fn close(&mut self, out: &mut Vec<RequestRecord>) {
        if self.ex.finished {
            return;
        }
        self.response.end(&mut self.ex, out);
        self.ex.flush(out);
    }
}

/// Requests flow from client to server; with the role unknown, from the side that sent the
/// first start line unless that line is a status line.
fn request_direction(conn: &ConnInfo, seg: &Segment<'_>) -> Direction {
    match conn.role {
        Role::Client => Direction::Egress,
        Role::Server => Direction::Ingress,
        Role::Unknown => {
            let start = seg
                .data
                .iter()
                .position(|b| !matches!(b, b'\r' | b'\n'))
                .unwrap_or(seg.data.len());
            if detect::status_line(&seg.data[start..]) == Verdict::Yes {
                match seg.direction {
                    Direction::Egress => Direction::Ingress,
                    Direction::Ingress => Direction::Egress,
                }
            } else {
                seg.direction
            }
        }
    }
}

/// Append to a head buffer that must never hold (nor reserve) more than [`MAX_HEAD`] bytes.
fn extend_capped(buf: &mut Vec<u8>, data: &[u8]) {
    let need = buf.len() + data.len();
    if need > buf.capacity() {
        let want = (buf.capacity() * 2).clamp(512, MAX_HEAD).max(need);
        buf.reserve_exact(want - buf.len());
    }
    buf.extend_from_slice(data);
}

/// A head buffer bigger than this is freed once its head is parsed rather than kept for the
/// next one: most connections never split a head, and thousands of idle 16 KiB buffers add up.
const KEEP_BUFFER: usize = 2048;

impl Side {
    fn feed(
        &mut self,
        kind: Kind,
        ts: u64,
        mut data: &[u8],
        ex: &mut Exchanges,
        out: &mut Vec<RequestRecord>,
    ) {
        self.boundary = true;
        // Segments are the peer's writes, and writes tend to begin messages: a resync tries the
        // segment start too.
        self.line_start = true;
        while !data.is_empty() && !ex.finished {
            let used = self.step(kind, ts, data, ex, out);
            data = &data[used..];
        }
    }

    /// Consume a prefix of `data` (possibly none, after a mode change).
    fn step(
        &mut self,
        kind: Kind,
        ts: u64,
        data: &[u8],
        ex: &mut Exchanges,
        out: &mut Vec<RequestRecord>,
    ) -> usize {
        match self.mode {
            Mode::Idle => match data.iter().position(|b| !matches!(b, b'\r' | b'\n')) {
                Some(0) => self.start(kind, ts, data, ex, out),
                Some(skip) => skip,
                None => data.len(),
            },
            Mode::Head => self.continue_head(kind, ts, data, ex, out),
            Mode::Fixed(left) => {
                let take = left.min(data.len() as u64);
                self.body(kind, take, ts, ex);
                if take == left {
                    self.message_done(kind, ts, ex, out);
                } else {
                    self.mode = Mode::Fixed(left - take);
                }
                take as usize
            }
            Mode::Chunked(mut decoder) => {
                let result = decoder.feed(data);
                self.mode = Mode::Chunked(decoder);
                match result {
                    Ok((used, done)) => {
                        self.body(kind, used as u64, ts, ex);
                        if done {
                            self.message_done(kind, ts, ex, out);
                        }
                        used
                    }
                    Err(e) => {
                        self.body(kind, e.used as u64, ts, ex);
                        self.lose_framing(kind, ex, out);
                        self.line_start = false;
                        e.used
                    }
                }
            }
            Mode::UntilClose { keep_alive } => {
                if keep_alive && self.boundary && detect::status_line(data) == Verdict::Yes {
                    ex.response_done(self.last_ts, self.bytes, out);
                    // Responses a gap in the body hid, before this one.
                    self.close_region(kind, false, ex, out);
                    self.mode = Mode::Idle;
                    return 0;
                }
                self.boundary = false;
                self.body(kind, data.len() as u64, ts, ex);
                if let Some(r) = &mut self.region {
                    r.seen(data.len() as u64);
                }
                data.len()
            }
            Mode::Resync => self.resync(kind, ts, data),
        }
    }

    /// A message starts at `data[0]`.
    fn start(
        &mut self,
        kind: Kind,
        ts: u64,
        data: &[u8],
        ex: &mut Exchanges,
        out: &mut Vec<RequestRecord>,
    ) -> usize {
        self.start_ts = ts;
        self.last_ts = ts;
        self.bytes = 0;
        // Fast path: the whole head is in this segment, parsed where it lies.
        match head::parse(&data[..data.len().min(MAX_HEAD)]) {
            Parsed::Complete(h, len) => {
                self.on_head(kind, &h, len, ts, ex, out);
                len
            }
            Parsed::Invalid => {
                self.resync_from_here();
                0
            }
            Parsed::Incomplete if data.len() >= MAX_HEAD => {
                self.overflow(kind, 0, ex, out);
                0
            }
            Parsed::Incomplete if start_verdict(kind, data) == Verdict::No => {
                self.resync_from_here();
                0
            }
            Parsed::Incomplete => {
                self.buf.clear();
                extend_capped(&mut self.buf, data);
                self.head_end = HeadEnd::after(data);
                self.mode = Mode::Head;
                data.len()
            }
        }
    }

    /// More bytes of a head that began in an earlier segment.
    fn continue_head(
        &mut self,
        kind: Kind,
        ts: u64,
        data: &[u8],
        ex: &mut Exchanges,
        out: &mut Vec<RequestRecord>,
    ) -> usize {
        let Some(end) = self.head_end.feed(data) else {
            if self.buf.len() + data.len() > MAX_HEAD {
                self.overflow(kind, data.len(), ex, out);
                self.line_start = data.last() == Some(&b'\n');
            } else {
                extend_capped(&mut self.buf, data);
                self.last_ts = ts;
            }
            return data.len();
        };
        if self.buf.len() + end > MAX_HEAD {
            self.overflow(kind, end, ex, out);
            self.line_start = true;
            return end;
        }
        extend_capped(&mut self.buf, &data[..end]);
        let mut buf = std::mem::take(&mut self.buf);
        match head::parse(&buf) {
            Parsed::Complete(h, len) => self.on_head(kind, &h, len, ts, ex, out),
            Parsed::Incomplete | Parsed::Invalid => self.not_a_head(kind, &buf, ts, ex, out),
        }
        buf.clear();
        if buf.capacity() <= KEEP_BUFFER {
            self.buf = buf;
        }
        end
    }

    /// A head split across segments turned out not to be one. A real one may still begin in
    /// it, glued after the false start (a hidden body's last bytes can look like a method):
    /// look for it as a resync would, so that no start goes uncounted.
    fn not_a_head(
        &mut self,
        kind: Kind,
        buf: &[u8],
        ts: u64,
        ex: &mut Exchanges,
        out: &mut Vec<RequestRecord>,
    ) {
        let mut from = 0;
        while let Ok(at) = next_start(kind, &buf[from..], false) {
            let at = from + at;
            // The head ended where `buf` does, so a start inside ends there too.
            if let Parsed::Complete(h, len) = head::parse(&buf[at..]) {
                self.enter_resync(true).seen((at - from) as u64);
                self.on_head(kind, &h, len, ts, ex, out);
                return;
            }
            self.enter_resync(true).seen((at - from) as u64);
            from = at;
        }
        self.enter_resync(true).seen((buf.len() - from) as u64);
        self.line_start = true;
    }

    fn on_head(
        &mut self,
        kind: Kind,
        h: &Head<'_>,
        len: usize,
        ts: u64,
        ex: &mut Exchanges,
        out: &mut Vec<RequestRecord>,
    ) {
        self.bytes = len as u64;
        self.last_ts = ts;
        self.boundary = true;
        self.line_start = true;
        let mode = match (kind, h.start) {
            (Kind::Request, Start::Request { method, .. }) => {
                let after_hidden = self.region.as_ref().is_some_and(Region::ends_hidden);
                let continues_cut = self.region.as_ref().is_some_and(Region::may_continue_cut)
                    && !detect::METHODS.contains(&method);
                // A message start, confirmed: what the stretch before it held comes first.
                self.close_region(kind, continues_cut, ex, out);
                let (mode, seq) = ex.request_head(h, self.start_ts, len as u64, after_hidden, out);
                self.seq = seq;
                mode
            }
            (Kind::Response, Start::Response { .. }) => {
                self.close_region(kind, false, ex, out);
                ex.response_head(h, len as u64, ts, out)
            }
            // A status line where requests flow or the reverse: not a message we can place.
            _ => {
                self.enter_resync(true).seen(len as u64);
                return;
            }
        };
        self.mode = mode;
        if mode == Mode::Resync {
            self.enter_resync(false);
        }
    }

    /// Body bytes of the current message.
    fn body(&mut self, kind: Kind, n: u64, ts: u64, ex: &mut Exchanges) {
        self.bytes += n;
        self.last_ts = ts;
        if kind == Kind::Request {
            ex.add_request_bytes(self.seq, n);
        }
    }

    fn message_done(
        &mut self,
        kind: Kind,
        ts: u64,
        ex: &mut Exchanges,
        out: &mut Vec<RequestRecord>,
    ) {
        self.mode = Mode::Idle;
        if kind == Kind::Response {
            ex.response_done(ts, self.bytes, out);
        }
    }

    /// The current message's body can no longer be framed.
    fn lose_framing(&mut self, kind: Kind, ex: &mut Exchanges, out: &mut Vec<RequestRecord>) {
        if kind == Kind::Response {
            ex.response_truncated(self.last_ts, self.bytes, out);
        }
        self.enter_resync(false);
    }

    /// A head longer than [`MAX_HEAD`] (`more` bytes of it just read): dropped like a lost
    /// message, its buffer freed.
    fn overflow(
        &mut self,
        kind: Kind,
        more: usize,
        ex: &mut Exchanges,
        out: &mut Vec<RequestRecord>,
    ) {
        let seen = (self.buf.len() + more) as u64;
        self.buf = Vec::new();
        match &mut self.region {
            // A start the scan found: too long to tell whether it was one.
            Some(r) => {
                r.maybe_message();
                r.seen(seen);
                if kind == Kind::Response {
                    self.answerable = ex.answerable();
                }
            }
            None => match kind {
                Kind::Request => ex.request_lost(),
                Kind::Response => ex.responses_lost(Count::ONE, ex.answerable(), out),
            },
        }
        self.enter_resync(false);
        self.line_start = false;
    }

    fn resync_from_here(&mut self) {
        self.enter_resync(true);
        // Not here again: the next candidate is after the next LF (or glued further on).
        self.line_start = false;
    }

    /// Lose the message boundaries. `at_boundary`: the unknown stretch begins where a message
    /// could (the previous one is complete), unless one is already being read.
    fn enter_resync(&mut self, at_boundary: bool) -> &mut Region {
        self.mode = Mode::Resync;
        self.region.get_or_insert(Region::new(at_boundary))
    }

    /// Skip to the next place that could start a message of this direction.
    fn resync(&mut self, kind: Kind, ts: u64, data: &[u8]) -> usize {
        if let Some(at) = Carry::split_start(kind, &self.buf, data) {
            // A start line straddling the boundary: its first bytes become a split head.
            self.buf.drain(..at);
            self.carry = Carry::default();
            self.head_end = HeadEnd::after(&self.buf);
            self.mode = Mode::Head;
            self.start_ts = ts;
            self.last_ts = ts;
            self.bytes = 0;
            return 0;
        }
        let used = match next_start(kind, data, self.line_start) {
            Ok(at) => {
                // Confirmed (and the stretch closed) only once its head parses.
                self.carry.reset(&mut self.buf);
                self.mode = Mode::Idle;
                at
            }
            Err(line_start) => {
                self.line_start = line_start;
                if self.carry.keep(kind, &mut self.buf, data)
                    && let Some(r) = &mut self.region
                {
                    r.maybe_message();
                }
                data.len()
            }
        };
        if let Some(r) = &mut self.region {
            r.seen(used as u64);
        }
        used
    }

    /// The stretch of unknown boundaries ended: hand its count of messages to the pairing
    /// (`continues_cut`: see [`Region::messages`]).
    fn close_region(
        &mut self,
        kind: Kind,
        continues_cut: bool,
        ex: &mut Exchanges,
        out: &mut Vec<RequestRecord>,
    ) {
        let Some(r) = self.region.take() else { return };
        let n = r.messages(continues_cut);
        if !r.has_hidden() && n == Count::ZERO {
            return;
        }
        match kind {
            Kind::Request => ex.requests_hidden(n),
            Kind::Response => ex.responses_lost(n, self.answerable, out),
        }
    }

    /// The connection closed (response side): the message being read ends here.
    fn end(&mut self, ex: &mut Exchanges, out: &mut Vec<RequestRecord>) {
        let kind = Kind::Response;
        match self.mode {
            Mode::UntilClose { .. } => ex.response_done(self.last_ts, self.bytes, out),
            Mode::Fixed(_) | Mode::Chunked(_) => {
                ex.response_truncated(self.last_ts, self.bytes, out)
            }
            Mode::Head => match &mut self.region {
                Some(r) => {
                    r.maybe_message();
                    self.answerable = ex.answerable();
                }
                None => ex.responses_lost(Count::ONE, ex.answerable(), out),
            },
            Mode::Idle | Mode::Resync => {}
        }
        self.close_region(kind, false, ex, out);
    }

    /// `n` bytes are missing before the next segment.
    fn gap(
        &mut self,
        kind: Kind,
        n: u64,
        ts: u64,
        ex: &mut Exchanges,
        out: &mut Vec<RequestRecord>,
    ) {
        match self.mode {
            // Inside a body of known length: skip the missing bytes, still in sync.
            Mode::Fixed(left) if n < left => {
                self.body(kind, n, ts, ex);
                self.mode = Mode::Fixed(left - n);
            }
            Mode::Fixed(left) => {
                self.body(kind, left, ts, ex);
                self.message_done(kind, ts, ex, out);
                if n > left {
                    // The rest of the gap began the next message(s).
                    self.hide(kind, true, n - left, ex);
                }
            }
            Mode::Chunked(mut decoder) => match decoder.absorb(n) {
                Absorb::Absorbed => {
                    self.mode = Mode::Chunked(decoder);
                    self.body(kind, n, ts, ex);
                }
                Absorb::Ended => {
                    self.body(kind, n, ts, ex);
                    self.message_done(kind, ts, ex, out);
                }
                Absorb::Lost => {
                    self.lose_framing(kind, ex, out);
                    self.hide(kind, false, n, ex);
                }
            },
            Mode::UntilClose { keep_alive } => {
                self.body(kind, n, ts, ex);
                self.boundary = true;
                // The body ends at the next status line: the gap may have hidden some too.
                if keep_alive {
                    self.region.get_or_insert(Region::new(false)).hidden(n);
                    self.answerable = ex.answerable();
                }
            }
            Mode::Idle => self.hide(kind, true, n, ex),
            Mode::Head => {
                match &mut self.region {
                    // A start the scan found, cut before it could be confirmed.
                    Some(r) => {
                        r.maybe_message();
                        r.seen(self.buf.len() as u64);
                    }
                    // Cut inside its method: the start after the gap may be its rest, which
                    // the stretch's count settles.
                    None if kind == Kind::Request
                        && self.buf.iter().all(|b| is_method_byte(*b)) =>
                    {
                        self.region = Some(Region::after_cut_method(self.buf.len() as u64));
                    }
                    None => match kind {
                        Kind::Request => ex.request_cut(&self.buf, self.start_ts, out),
                        Kind::Response => ex.responses_lost(Count::ONE, ex.answerable(), out),
                    },
                }
                self.buf.clear();
                self.hide(kind, false, n, ex);
            }
            Mode::Resync => {
                // What follows the gap does not continue the bytes before it.
                self.carry.reset(&mut self.buf);
                self.hide(kind, false, n, ex);
            }
        }
        // The segment after a gap may well begin a message.
        self.line_start = true;
    }

    /// `n` bytes of unknown boundaries were hidden.
    fn hide(&mut self, kind: Kind, at_boundary: bool, n: u64, ex: &mut Exchanges) {
        self.enter_resync(at_boundary).hidden(n);
        match kind {
            Kind::Request => ex.hiding_requests(),
            Kind::Response => self.answerable = ex.answerable(),
        }
    }
}
