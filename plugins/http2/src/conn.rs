//! Per-connection state: a frame reader and a HPACK decoder per direction, and the streams in
//! flight, paired by id.
//!
//! Streams interleave freely, and within one batch the daemon may feed one direction's
//! segments before the other's: a response can be read before its request. So a stream is
//! keyed by id and filled from both sides; it becomes a record when its request is known and
//! its response has ended (END_STREAM, or RST_STREAM). A response whose request never comes
//! is reported `truncated`, operation `_OTHER`, once the client has opened a later stream (ids
//! only grow, so the request was lost in a gap, or sent before we joined): nothing in it says
//! what was asked.
//!
//! Header blocks are always decoded, even those we do not report (pushes, trailers, even
//! streams): they change the dynamic table. One we cannot decode (see `hpack`) marks its
//! stream `hpack-desync`; a direction whose frame boundaries were lost (a gap) also forgets
//! its table, and the streams still waiting for their response are reported `truncated`.
//!
//! h2c by `Upgrade: h2c` (RFC 7540 §3.2): the client's HTTP/1.1 request head is stream 1's
//! request (then skipped, with its body, before the preface); the server's side is read as
//! HTTP/1.1 response heads until its `101` (skipped), frames after it. Another final status
//! refused the upgrade: that exchange is reported as HTTP/1.1 and the connection given up.

use std::collections::BTreeMap;
use std::mem;

use sonde_sdk::protocol_parser::{Claim, ConnInfo, Direction, RequestRecord, Role, Segment};

use crate::frame::{
    CONTINUATION, DATA, Event, FLAG_ACK, FLAG_END_HEADERS, FLAG_END_STREAM, FLAG_PADDED,
    FLAG_PRIORITY, Frame, HEADERS, PREFACE, PUSH_PROMISE, RST_STREAM, Reader, SETTINGS,
};
use crate::hpack::{Decoder, Field};
use crate::record::{self, End, Request, Response, error};
use crate::{BLOCK_MAX, STREAMS_MAX, TABLE_MAX};
use sonde_sdk::h2c::{self, Head};

/// Index of the client's (requests) and the server's (responses) side.
const REQ: usize = 0;
const RESP: usize = 1;

/// SETTINGS_HEADER_TABLE_SIZE (RFC 9113 §6.5.2).
const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;

/// One direction.
#[derive(Debug)]
struct Side {
    reader: Reader,
    hpack: Decoder,
    /// A header block waiting for its CONTINUATIONs.
    block: Option<Block>,
    /// The table size this side's peer allows it (its peer's SETTINGS_HEADER_TABLE_SIZE):
    /// informational; the decoder follows the encoder's own size updates.
    table_limit: Option<u32>,
}

impl Side {
    fn new(client: bool) -> Self {
        Side {
            reader: Reader::new(client),
            // Partial until proven otherwise is always safe; a table followed from the start
            // only tells an invalid reference from an unknown one.
            hpack: Decoder::new(TABLE_MAX, true),
            block: None,
            table_limit: None,
        }
    }
}

#[derive(Debug)]
struct Block {
    stream: u32,
    /// A PUSH_PROMISE's block: decoded for the table, otherwise ignored.
    push: bool,
    end_stream: bool,
    buf: Vec<u8>,
    first_ts: u64,
    /// Bytes on the wire of its frames (HEADERS or PUSH_PROMISE, CONTINUATIONs).
    wire: u64,
}

#[derive(Debug, Default)]
struct Stream {
    request: Option<Request>,
    /// The request's headers could not be decoded.
    request_desync: bool,
    response: Response,
    response_desync: bool,
    end: Option<End>,
    request_bytes: u64,
    response_bytes: u64,
}

/// The parser's state for one connection.
#[derive(Debug)]
pub struct State {
    init: bool,
    /// Which way requests flow.
    req_dir: Direction,
    sides: [Side; 2],
    streams: BTreeMap<u32, Stream>,
    /// Highest stream id whose request headers were seen.
    last_request: u32,
    /// Frames seen: garbage before the first one means detection was wrong.
    frames: u64,
    /// h2c by `Upgrade: h2c`: the HTTP/1.1 part of each side, until the switch.
    upgrade: Option<Upgrade>,
    /// Reused between calls.
    events: Vec<Event>,
    fields: Vec<Field>,
}

/// An h2c upgrade (RFC 7540 §3.2): the client's HTTP/1.1 request (stream 1) and the server's
/// `101 Switching Protocols` come before each side's frames.
#[derive(Debug)]
struct Upgrade {
    /// The client's side has started (with the request head).
    req_seen: bool,
    /// Bytes of the request (head and body) still to pass on the client's side.
    req_skip: u64,
    /// The server's side before its 101: the response head read so far. `None` once past.
    resp_head: Option<Vec<u8>>,
}

impl Default for Upgrade {
    fn default() -> Self {
        Upgrade {
            req_seen: false,
            req_skip: 0,
            resp_head: Some(Vec::new()),
        }
    }
}

/// Longest HTTP/1.1 response head read before the switch.
const RESP_HEAD_MAX: usize = 4096;

impl Default for State {
    fn default() -> Self {
        State {
            init: false,
            req_dir: Direction::Egress,
            sides: [Side::new(true), Side::new(false)],
            streams: BTreeMap::new(),
            last_request: 0,
            frames: 0,
            upgrade: None,
            events: Vec::new(),
            fields: Vec::new(),
        }
    }
}

impl State {
    /// One segment of the connection ([`sonde_sdk::protocol_parser::ProtocolParser::parse`]).
    pub fn parse(
        &mut self,
        conn: &ConnInfo,
        seg: &Segment<'_>,
        out: &mut Vec<RequestRecord>,
    ) -> Claim {
        if !self.init {
            self.init = true;
            if let Head::Upgrade { .. } = h2c::classify(seg.data) {
                // The upgrade request is the client's, whatever the role says.
                self.req_dir = seg.direction;
                self.upgrade = Some(Upgrade::default());
            } else if seg.data.starts_with(b"HTTP/1.") {
                // The server's 101, fed before the request (detection waited for the request
                // on it; see `detect`).
                self.req_dir = other(seg.direction);
                self.upgrade = Some(Upgrade::default());
            } else {
                // Requests go the role's way; with an unknown role, the client preface's way,
                // or away from the server's (a SETTINGS frame first).
                self.req_dir = match conn.role {
                    Role::Unknown => unknown_role_requests(seg),
                    _ => conn.request_direction(),
                };
            }
        }
        let side = if seg.direction == self.req_dir {
            REQ
        } else {
            RESP
        };
        let mut data = seg.data;
        let mut gap = seg.gap_before;
        if side == REQ
            && let Some(up) = self.upgrade.as_mut()
            && !up.req_seen
        {
            up.req_seen = true;
            // A gap before the head is before what detection saw: nothing of ours.
            gap = 0;
            let Head::Upgrade { head_len, body } = h2c::classify(data) else {
                // Not the request detection saw: not ours after all.
                return Claim::NotMine;
            };
            self.start_upgrade(&data[..head_len], body, seg.ts_ns, out);
        }
        if let Some(up) = self.upgrade.as_mut() {
            if side == REQ && up.req_skip > 0 {
                // The HTTP/1.1 request (counted on stream 1 already), then the preface.
                let g = gap.min(up.req_skip);
                up.req_skip -= g;
                gap -= g;
                if gap == 0 {
                    let n = usize::try_from(up.req_skip).map_or(data.len(), |k| k.min(data.len()));
                    up.req_skip -= n as u64;
                    data = &data[n..];
                }
            } else if side == RESP && up.resp_head.is_some() {
                if gap > 0 {
                    // The server's answer was lost: follow its frames if there are any (the
                    // reader waits for believable ones); stream 1 waits for its HEADERS.
                    up.resp_head = None;
                } else {
                    match self.switch(seg.ts_ns, data, out) {
                        Some(rest) => data = rest,
                        None if self.upgrade.is_none() => return Claim::Finished,
                        None => return Claim::Mine,
                    }
                }
            }
        }
        let mut events = mem::take(&mut self.events);
        let reader = &mut self.sides[side].reader;
        reader.gap(gap, &mut events);
        reader.feed(seg.ts_ns, data, &mut events);
        let mut claim = Claim::Mine;
        for ev in events.drain(..) {
            match ev {
                Event::Lost { gap: false } if self.frames == 0 => claim = Claim::NotMine,
                Event::Lost { .. } => self.lost(side, out),
                Event::Frame(f) => {
                    self.frames += 1;
                    self.frame(side, f, out);
                }
            }
        }
        self.events = events;
        claim
    }

    /// The connection closed: streams still waiting are reported.
    pub fn close(&mut self, out: &mut Vec<RequestRecord>) {
        // An upgrade request the server never answered stayed HTTP/1.1.
        let h1 = self.upgrade.as_ref().is_some_and(|u| u.resp_head.is_some());
        for (_, s) in mem::take(&mut self.streams) {
            if let Some(r) = unfinished(s, error::NO_RESPONSE) {
                out.push(if h1 { record::h1_record(r) } else { r });
            }
        }
    }

    /// The client's `Upgrade: h2c` request (`head`, then `body` bytes): stream 1.
    fn start_upgrade(&mut self, head: &[u8], body: u64, ts: u64, out: &mut Vec<RequestRecord>) {
        let bytes = head.len() as u64 + body;
        if let Some(up) = self.upgrade.as_mut() {
            up.req_skip = bytes;
        }
        if let Some(s) = self.open(1, REQ, out) {
            s.request = Some(Request::from_h1(head, ts));
            s.request_bytes += bytes;
        }
        // Its response may have been read already (the server's side fed first).
        self.emit_if_done(1, out);
    }

    /// The server's side before the switch: read its HTTP/1.1 response heads from `data`.
    /// A 101 switches: the bytes after it are frames (returned). Another 1xx is passed. Any
    /// other status refused the upgrade: the exchange is reported as the HTTP/1.1 exchange it
    /// is, and the connection given up (`self.upgrade` becomes `None`). `None` with the
    /// upgrade still on: the head is not complete yet.
    fn switch<'a>(
        &mut self,
        ts: u64,
        mut data: &'a [u8],
        out: &mut Vec<RequestRecord>,
    ) -> Option<&'a [u8]> {
        loop {
            let up = self.upgrade.as_mut()?;
            let buf = up.resp_head.as_mut()?;
            let old = buf.len();
            let take = data.len().min(RESP_HEAD_MAX + 1 - old);
            buf.extend_from_slice(&data[..take]);
            let Some(end) = head_end(buf) else {
                if buf.len() > RESP_HEAD_MAX {
                    self.refused(None, ts, out);
                }
                return None;
            };
            let status = status_code(&buf[..end]);
            buf.clear();
            data = &data[end - old..];
            if let Some(s) = self.open(1, RESP, out) {
                s.response_bytes += end as u64;
            }
            match status {
                Some(101) => {
                    if let Some(u) = self.upgrade.as_mut() {
                        u.resp_head = None;
                    }
                    return Some(data);
                }
                Some(100..=199) => {}
                other => {
                    self.refused(other, ts, out);
                    return None;
                }
            }
        }
    }

    /// The server answered the upgrade request with `status` (none: not an HTTP/1.1 head):
    /// stream 1 is an HTTP/1.1 exchange; its record is made, and the connection given up
    /// (the HTTP/1.1 exchanges that may follow are not parsed).
    fn refused(&mut self, status: Option<u16>, ts: u64, out: &mut Vec<RequestRecord>) {
        self.upgrade = None;
        if let Some(s) = self.streams.remove(&1)
            && let Some(req) = &s.request
        {
            let mut resp = Response::default();
            resp.status = status;
            let end = match status {
                Some(_) => End::Complete(ts),
                None => End::Unanswered(error::TRUNCATED),
            };
            out.push(record::h1_record(record::record(
                req,
                &resp,
                end,
                s.request_bytes,
                s.response_bytes,
            )));
        }
    }

    /// A direction's frame boundaries were lost.
    fn lost(&mut self, side: usize, out: &mut Vec<RequestRecord>) {
        let s = &mut self.sides[side];
        s.hpack.desync();
        s.block = None;
        if side == RESP {
            // Their responses may have ended in the lost bytes.
            for (_, s) in mem::take(&mut self.streams) {
                if let Some(r) = unfinished(s, error::TRUNCATED) {
                    out.push(r);
                }
            }
        }
    }

    fn frame(&mut self, side: usize, f: Frame, out: &mut Vec<RequestRecord>) {
        let h = f.header;
        let bytes = 9 + u64::from(h.len);
        if let Some(b) = &self.sides[side].block
            && !(h.kind == CONTINUATION && h.stream == b.stream)
        {
            // A header block interrupted: a protocol error, and its insertions are lost.
            let stream = b.stream;
            self.sides[side].block = None;
            self.sides[side].hpack.desync();
            self.desync(side, stream, f.last_ts, false, out);
        }
        // Header blocks count when decoded: their stream may not exist before.
        if !matches!(h.kind, HEADERS | CONTINUATION) {
            self.count(side, h.stream, bytes);
        }
        match h.kind {
            DATA if h.flags & FLAG_END_STREAM != 0 && side == RESP => {
                self.end(h.stream, End::Complete(f.last_ts), out);
            }
            HEADERS => self.headers(side, &f, out),
            PUSH_PROMISE => self.push_promise(side, &f, out),
            CONTINUATION => self.continuation(side, &f, out),
            RST_STREAM => self.end(h.stream, End::Reset(f.last_ts), out),
            SETTINGS if h.flags & FLAG_ACK == 0 => {
                for s in f.payload.chunks_exact(6) {
                    if u16::from_be_bytes([s[0], s[1]]) == SETTINGS_HEADER_TABLE_SIZE {
                        // It limits the other direction's encoder.
                        self.sides[1 - side].table_limit =
                            Some(u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
                    }
                }
            }
            _ => {}
        }
    }

    /// Frame bytes of a stream we follow (client-initiated: odd ids).
    fn count(&mut self, side: usize, id: u32, bytes: u64) {
        if let Some(s) = self.streams.get_mut(&id) {
            if side == REQ {
                s.request_bytes += bytes;
            } else {
                s.response_bytes += bytes;
            }
        }
    }

    fn headers(&mut self, side: usize, f: &Frame, out: &mut Vec<RequestRecord>) {
        let h = f.header;
        if f.dropped {
            self.sides[side].hpack.desync();
            self.desync(
                side,
                h.stream,
                f.last_ts,
                h.flags & FLAG_END_STREAM != 0,
                out,
            );
            return;
        }
        let Some(fragment) = strip(&f.payload, h.flags, h.flags & FLAG_PRIORITY != 0) else {
            self.sides[side].hpack.desync();
            self.desync(
                side,
                h.stream,
                f.last_ts,
                h.flags & FLAG_END_STREAM != 0,
                out,
            );
            return;
        };
        let block = Block {
            stream: h.stream,
            push: false,
            end_stream: h.flags & FLAG_END_STREAM != 0,
            buf: fragment.to_vec(),
            first_ts: f.first_ts,
            wire: 9 + u64::from(h.len),
        };
        self.block_part(side, block, h.flags, f.last_ts, out);
    }

    fn push_promise(&mut self, side: usize, f: &Frame, out: &mut Vec<RequestRecord>) {
        let h = f.header;
        let fragment = strip(&f.payload, h.flags, false).and_then(|p| p.get(4..));
        match fragment {
            Some(fragment) if !f.dropped => {
                let block = Block {
                    stream: h.stream,
                    push: true,
                    end_stream: false,
                    buf: fragment.to_vec(),
                    first_ts: f.first_ts,
                    wire: 9 + u64::from(h.len),
                };
                self.block_part(side, block, h.flags, f.last_ts, out);
            }
            _ => self.sides[side].hpack.desync(),
        }
    }

    fn continuation(&mut self, side: usize, f: &Frame, out: &mut Vec<RequestRecord>) {
        let Some(mut block) = self.sides[side].block.take() else {
            // A CONTINUATION with no block open: its fragment is lost to us.
            self.sides[side].hpack.desync();
            return;
        };
        if f.dropped || block.buf.len() + f.payload.len() > BLOCK_MAX {
            self.sides[side].hpack.desync();
            if !block.push {
                self.desync(side, block.stream, f.last_ts, block.end_stream, out);
            }
            return;
        }
        block.buf.extend_from_slice(&f.payload);
        block.wire += 9 + u64::from(f.header.len);
        self.block_part(side, block, f.header.flags, f.last_ts, out);
    }

    /// A block's latest part arrived with `flags`: decode it if it is whole.
    fn block_part(
        &mut self,
        side: usize,
        block: Block,
        flags: u8,
        last_ts: u64,
        out: &mut Vec<RequestRecord>,
    ) {
        if flags & FLAG_END_HEADERS == 0 {
            self.sides[side].block = Some(block);
            return;
        }
        let mut fields = mem::take(&mut self.fields);
        let decoded = self.sides[side].hpack.decode(&block.buf, &mut fields);
        // Pushes and server-initiated streams: decoded for the table only.
        if !block.push && block.stream % 2 == 1 {
            match decoded {
                Err(_) => self.desync(side, block.stream, last_ts, block.end_stream, out),
                Ok(()) if side == REQ => self.request(&block, &fields, out),
                Ok(()) => self.response(&block, &fields, last_ts, out),
            }
        }
        fields.clear();
        self.fields = fields;
    }

    fn request(&mut self, block: &Block, fields: &[Field], out: &mut Vec<RequestRecord>) {
        let id = block.stream;
        let Some(s) = self.open(id, REQ, out) else {
            return;
        };
        s.request_bytes += block.wire;
        if s.request.is_none() && !s.request_desync {
            s.request = Some(Request::from_fields(fields, block.first_ts));
        }
        self.emit_if_done(id, out);
    }

    fn response(&mut self, block: &Block, fields: &[Field], ts: u64, out: &mut Vec<RequestRecord>) {
        let id = block.stream;
        let Some(s) = self.open(id, RESP, out) else {
            return;
        };
        s.response_bytes += block.wire;
        s.response.add(fields);
        if block.end_stream {
            self.end(id, End::Complete(ts), out);
        }
    }

    /// A block of stream `id` could not be decoded.
    fn desync(
        &mut self,
        side: usize,
        id: u32,
        ts: u64,
        end_stream: bool,
        out: &mut Vec<RequestRecord>,
    ) {
        if id.is_multiple_of(2) {
            return;
        }
        let Some(s) = self.open(id, side, out) else {
            return;
        };
        if side == REQ {
            // Trailers we cannot read do not undo a request we could.
            s.request_desync = s.request.is_none();
        } else {
            s.response_desync = true;
        }
        if end_stream && side == RESP {
            self.end(id, End::Complete(ts), out);
        } else {
            self.emit_if_done(id, out);
        }
    }

    /// The stream `id`, created if new. Requests open streams; a response may come first
    /// (see the module docs), unless its request's turn is past. Bounded by [`STREAMS_MAX`].
    fn open(&mut self, id: u32, side: usize, out: &mut Vec<RequestRecord>) -> Option<&mut Stream> {
        if !self.streams.contains_key(&id) {
            if side == RESP && id <= self.last_request {
                return None;
            }
            if self.streams.len() >= STREAMS_MAX
                && let Some((_, oldest)) = self.streams.pop_first()
                && let Some(r) = unfinished(oldest, error::NO_RESPONSE)
            {
                out.push(r);
            }
            self.streams.insert(id, Stream::default());
        }
        if side == REQ && id > self.last_request {
            self.last_request = id;
            // Responses read before their request whose request can no longer come.
            let orphans: Vec<u32> = self
                .streams
                .range(..id)
                .filter(|(_, s)| s.request.is_none() && !s.request_desync && s.end.is_some())
                .map(|(k, _)| *k)
                .collect();
            for k in orphans {
                if let Some(s) = self.streams.remove(&k) {
                    out.push(orphan(&s));
                }
            }
        }
        self.streams.get_mut(&id)
    }

    /// Stream `id`'s response ended (or it was reset).
    fn end(&mut self, id: u32, end: End, out: &mut Vec<RequestRecord>) {
        if let Some(s) = self.streams.get_mut(&id)
            && s.end.is_none()
        {
            s.end = Some(end);
            self.emit_if_done(id, out);
        }
    }

    fn emit_if_done(&mut self, id: u32, out: &mut Vec<RequestRecord>) {
        let Some(s) = self.streams.get(&id) else {
            return;
        };
        let Some(end) = s.end else {
            return;
        };
        if s.request.is_none() && !s.request_desync {
            if id <= self.last_request
                && let Some(s) = self.streams.remove(&id)
            {
                out.push(orphan(&s));
            }
            return;
        }
        if let Some(s) = self.streams.remove(&id) {
            out.push(finished(s, end));
        }
    }
}

/// Which way requests go on a connection whose role the kernel did not tell, from the first
/// segment: the client preface is the client's; a SETTINGS frame first is the server's
/// preface (the client's comes after its own preface); anything else, the default.
fn unknown_role_requests(seg: &Segment<'_>) -> Direction {
    let d = seg.data;
    let other = match seg.direction {
        Direction::Egress => Direction::Ingress,
        Direction::Ingress => Direction::Egress,
    };
    if !d.is_empty() && PREFACE.starts_with(&d[..d.len().min(PREFACE.len())]) {
        seg.direction
    } else if d.len() >= 5 && d[3] == SETTINGS && d[4] & FLAG_ACK == 0 {
        other
    } else {
        Direction::Egress
    }
}

fn other(d: Direction) -> Direction {
    match d {
        Direction::Egress => Direction::Ingress,
        Direction::Ingress => Direction::Egress,
    }
}

/// The length of an HTTP/1 head in `b` (through its blank line), if it is whole.
fn head_end(b: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(n) = b[at..].iter().position(|c| *c == b'\n') {
        let line = &b[at..at + n];
        at += n + 1;
        if line.is_empty() || line == b"\r" {
            return Some(at);
        }
    }
    None
}

/// The status of an HTTP/1.x response head (`HTTP/1.x SP 3DIGIT`).
fn status_code(head: &[u8]) -> Option<u16> {
    let rest = head.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// The record of a response whose request we never saw (lost in a gap, or sent before we
/// joined): counted, as `truncated`, with nothing said about what was asked.
fn orphan(s: &Stream) -> RequestRecord {
    let mut r = record::desync_record(0, s.request_bytes, s.response_bytes);
    r.error = Some(error::TRUNCATED.into());
    r
}

/// The record of a stream that ended.
fn finished(s: Stream, end: End) -> RequestRecord {
    let end_ts = match end {
        End::Complete(ts) | End::Reset(ts) | End::Desync(ts) => ts,
        End::Unanswered(_) => 0,
    };
    match &s.request {
        None => record::desync_record(0, s.request_bytes, s.response_bytes),
        Some(req) if s.response_desync => record::record(
            req,
            &s.response,
            End::Desync(end_ts),
            s.request_bytes,
            s.response_bytes,
        ),
        Some(req) => record::record(req, &s.response, end, s.request_bytes, s.response_bytes),
    }
}

/// The record of a stream that will not end normally; none if its request is unknown and
/// nothing says it was undecodable.
fn unfinished(s: Stream, why: &'static str) -> Option<RequestRecord> {
    if let Some(end) = s.end {
        return (s.request.is_some() || s.request_desync).then(|| finished(s, end));
    }
    match &s.request {
        Some(req) if s.response_desync => Some(record::record(
            req,
            &s.response,
            End::Desync(0),
            s.request_bytes,
            s.response_bytes,
        )),
        Some(req) => Some(record::record(
            req,
            &s.response,
            End::Unanswered(why),
            s.request_bytes,
            s.response_bytes,
        )),
        None if s.request_desync => {
            Some(record::desync_record(0, s.request_bytes, s.response_bytes))
        }
        None => None,
    }
}

/// A HEADERS or PUSH_PROMISE payload without its padding (and the priority fields): the
/// header block fragment, or `None` if the lengths do not add up.
fn strip(payload: &[u8], flags: u8, priority: bool) -> Option<&[u8]> {
    let mut p = payload;
    let mut pad = 0usize;
    if flags & FLAG_PADDED != 0 {
        let (&n, rest) = p.split_first()?;
        pad = usize::from(n);
        p = rest;
    }
    if priority {
        p = p.get(5..)?;
    }
    p.get(..p.len().checked_sub(pad)?)
}
