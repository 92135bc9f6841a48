//! One connection: over UDP each segment is one message; over TCP a [`Reader`] per direction
//! cuts the stream into messages by their 2-byte length prefix (RFC 1035 §4.2.2), across and
//! within segments, and resynchronises after a gap. Messages go to [`Pending`].

use sonde_sdk::protocol_parser::{Claim, ConnInfo, Direction, RequestRecord, Segment, Transport};

use crate::detect::{Verdict, plausible_frame};
use crate::pairing::{Arrival, Pending};
use crate::wire::HEADER_LEN;

/// Bytes kept while resynchronising: enough for a length prefix, a header and the longest
/// question (2 + 12 + 255 + 4), so a candidate split across segments is not missed.
pub(crate) const MAX_RESYNC_TAIL: usize = 2 + HEADER_LEN + 255 + 4;

/// Where a TCP direction's reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Mode {
    /// At a message boundary, or inside a message whose first bytes are in `buf`.
    #[default]
    Sync,
    /// Inside a message cut by a gap: this many of its bytes are still to come, then a
    /// boundary.
    Skip(usize),
    /// Boundaries lost: looking for a plausible length prefix and message. `buf` holds the
    /// last bytes of a candidate that needs more.
    Resync,
}

/// The framing of one TCP direction.
#[derive(Debug, Default)]
struct Reader {
    mode: Mode,
    /// A message split across segments (its length prefix included); at most 2 + 65535
    /// bytes, or [`MAX_RESYNC_TAIL`] in [`Mode::Resync`].
    buf: Vec<u8>,
    /// Timestamp of the segment with `buf`'s first byte.
    first_ts: u64,
    /// Timestamp of the segment with `buf`'s last byte.
    last_ts: u64,
}

/// A framed message, as the reader hands it over.
struct Frame<'a> {
    msg: &'a [u8],
    first_ts: u64,
    last_ts: u64,
    cut: bool,
    /// The whole frame's length (prefix included), even when cut.
    bytes: u64,
}

impl Reader {
    /// The segment's bytes, after its gap. `deliver` returns `false` when a frame is not a DNS
    /// message, which loses the boundaries.
    fn feed(&mut self, seg: &Segment<'_>, deliver: &mut dyn FnMut(Frame<'_>) -> bool) {
        if seg.gap_before > 0 {
            self.gap(seg.gap_before, deliver);
        }
        if self.mode == Mode::Resync && !self.buf.is_empty() {
            let mut joined = std::mem::take(&mut self.buf);
            let carried = joined.len();
            joined.extend_from_slice(seg.data);
            let first_ts = self.first_ts;
            self.run(&joined, seg.ts_ns, Some((carried, first_ts)), deliver);
        } else {
            self.run(seg.data, seg.ts_ns, None, deliver);
        }
    }

    /// `gap` bytes are missing before the next ones.
    fn gap(&mut self, gap: u64, deliver: &mut dyn FnMut(Frame<'_>) -> bool) {
        let gap = usize::try_from(gap).unwrap_or(usize::MAX);
        let skip = |left: usize| match gap.cmp(&left) {
            std::cmp::Ordering::Less => Mode::Skip(left - gap),
            std::cmp::Ordering::Equal => Mode::Sync,
            std::cmp::Ordering::Greater => Mode::Resync,
        };
        self.mode = match self.mode {
            Mode::Sync if self.buf.len() >= 2 => {
                let total = 2 + u16::from_be_bytes([self.buf[0], self.buf[1]]) as usize;
                let left = total.saturating_sub(self.buf.len());
                self.cut(deliver);
                skip(left)
            }
            // Between messages (or one byte into a prefix): how much is lost is unknown in
            // messages, so look for the next one.
            Mode::Sync | Mode::Resync => Mode::Resync,
            Mode::Skip(left) => skip(left),
        };
        self.buf.clear();
    }

    /// Hand over the partial message in `buf` as cut (a gap, or the close).
    fn cut(&mut self, deliver: &mut dyn FnMut(Frame<'_>) -> bool) {
        if self.mode == Mode::Sync && self.buf.len() >= 2 {
            let total = 2 + u16::from_be_bytes([self.buf[0], self.buf[1]]) as u64;
            deliver(Frame {
                msg: &self.buf[2..],
                first_ts: self.first_ts,
                last_ts: self.last_ts,
                cut: true,
                bytes: total,
            });
        }
        self.buf.clear();
    }

    /// Frame `data`. `carried`: its first bytes are `buf`'s from an earlier segment (offset,
    /// timestamp).
    fn run(
        &mut self,
        mut data: &[u8],
        ts: u64,
        carried: Option<(usize, u64)>,
        deliver: &mut dyn FnMut(Frame<'_>) -> bool,
    ) {
        // Offset in the original `data` of the current position (for `carried`).
        let total = data.len();
        let ts_at = |rest: usize| match carried {
            Some((n, first)) if total - rest < n => first,
            _ => ts,
        };
        while !data.is_empty() {
            match self.mode {
                Mode::Skip(left) => {
                    let k = left.min(data.len());
                    data = &data[k..];
                    self.mode = if k == left {
                        Mode::Sync
                    } else {
                        Mode::Skip(left - k)
                    };
                }
                Mode::Resync => {
                    // `buf` is empty here: it was joined into `data`, or cleared.
                    let mut found = None;
                    let mut candidate = None;
                    for i in 0..data.len() {
                        match plausible_frame(&data[i..]) {
                            Verdict::Yes => {
                                found = Some(i);
                                break;
                            }
                            Verdict::NeedMore if candidate.is_none() => candidate = Some(i),
                            _ => {}
                        }
                    }
                    if let Some(i) = found {
                        data = &data[i..];
                        self.mode = Mode::Sync;
                    } else {
                        if let Some(i) = candidate {
                            let from = i.max(data.len().saturating_sub(MAX_RESYNC_TAIL));
                            self.first_ts = ts_at(data.len() - from);
                            self.buf.clear();
                            self.buf.extend_from_slice(&data[from..]);
                        }
                        data = &[];
                    }
                }
                Mode::Sync if self.buf.is_empty() => {
                    if let [hi, lo, rest @ ..] = data {
                        let len = u16::from_be_bytes([*hi, *lo]) as usize;
                        if len < HEADER_LEN {
                            // Not a message: lost.
                            self.mode = Mode::Resync;
                            data = &data[1..];
                            continue;
                        }
                        if let Some(msg) = rest.get(..len) {
                            let frame = Frame {
                                msg,
                                first_ts: ts_at(data.len()),
                                last_ts: ts,
                                cut: false,
                                bytes: 2 + len as u64,
                            };
                            if !deliver(frame) {
                                self.mode = Mode::Resync;
                            }
                            data = &rest[len..];
                            continue;
                        }
                    }
                    self.first_ts = ts_at(data.len());
                    self.last_ts = ts;
                    self.buf.extend_from_slice(data);
                    data = &[];
                }
                Mode::Sync => {
                    let need = if self.buf.len() < 2 {
                        2 - self.buf.len()
                    } else {
                        2 + u16::from_be_bytes([self.buf[0], self.buf[1]]) as usize - self.buf.len()
                    };
                    let k = need.min(data.len());
                    self.buf.extend_from_slice(&data[..k]);
                    self.last_ts = ts;
                    data = &data[k..];
                    if self.buf.len() < 2 {
                        continue;
                    }
                    let len = u16::from_be_bytes([self.buf[0], self.buf[1]]) as usize;
                    if len < HEADER_LEN {
                        self.mode = Mode::Resync;
                        self.buf.clear();
                        continue;
                    }
                    if self.buf.len() == 2 + len {
                        let frame = Frame {
                            msg: &self.buf[2..],
                            first_ts: self.first_ts,
                            last_ts: ts,
                            cut: false,
                            bytes: self.buf.len() as u64,
                        };
                        if !deliver(frame) {
                            self.mode = Mode::Resync;
                        }
                        self.buf.clear();
                    }
                }
            }
        }
    }
}

/// The state of one connection.
#[derive(Debug, Default)]
pub struct DnsState {
    /// TCP only: egress, ingress.
    readers: [Reader; 2],
    pending: Pending,
}

fn index(d: Direction) -> usize {
    match d {
        Direction::Egress => 0,
        Direction::Ingress => 1,
    }
}

impl DnsState {
    /// Queries waiting for a response.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Bytes buffered by the TCP readers.
    pub fn buffered(&self) -> usize {
        self.readers.iter().map(|r| r.buf.len()).sum()
    }

    /// One segment: whole datagrams (UDP) or stream bytes (TCP), after the queries it times
    /// out are flushed.
    pub fn parse(
        &mut self,
        conn: &ConnInfo,
        seg: &Segment<'_>,
        out: &mut Vec<RequestRecord>,
    ) -> Claim {
        let transport = conn.transport;
        self.pending.expire(seg.ts_ns, transport, out);
        match transport {
            Transport::Udp => {
                // Whole datagrams: a gap only means some were lost.
                if !seg.data.is_empty() {
                    let arrival = Arrival {
                        direction: seg.direction,
                        first_ts: seg.ts_ns,
                        last_ts: seg.ts_ns,
                        bytes: seg.data.len() as u64,
                        msg: seg.data,
                        cut: false,
                    };
                    self.pending.arrive(arrival, transport, out);
                }
            }
            Transport::Tcp => {
                let DnsState { readers, pending } = self;
                let direction = seg.direction;
                readers[index(direction)].feed(seg, &mut |f: Frame<'_>| {
                    pending.arrive(
                        Arrival {
                            direction,
                            first_ts: f.first_ts,
                            last_ts: f.last_ts,
                            bytes: f.bytes,
                            msg: f.msg,
                            cut: f.cut,
                        },
                        transport,
                        out,
                    )
                });
            }
        }
        Claim::Mine
    }

    /// The connection closed: a message cut by the close is delivered as such, then every
    /// query still waiting is a `timeout`.
    pub fn close(&mut self, conn: &ConnInfo, out: &mut Vec<RequestRecord>) {
        let transport = conn.transport;
        let DnsState { readers, pending } = self;
        for (i, r) in readers.iter_mut().enumerate() {
            let direction = if i == 0 {
                Direction::Egress
            } else {
                Direction::Ingress
            };
            r.cut(&mut |f: Frame<'_>| {
                pending.arrive(
                    Arrival {
                        direction,
                        first_ts: f.first_ts,
                        last_ts: f.last_ts,
                        bytes: f.bytes,
                        msg: f.msg,
                        cut: f.cut,
                    },
                    transport,
                    out,
                )
            });
        }
        pending.flush(transport, out);
    }
}
