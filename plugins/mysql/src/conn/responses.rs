//! The response side of a session: which command each response answers, through gaps.
//!
//! In step, a packet with the expected sequence id after a response's end begins the next
//! response, which the SDK's `pending` queue pairs; its structure (`response::step`) says where it ends. When
//! a gap hides packet headers, the scan finds a run of headers after it and the packet there is
//! placed by what is certain (`stretch`):
//!
//! - the paired response goes on through it when its sequence ids allow it and no other command
//!   could be answered at all; its hidden rows are counted when only one count fits, otherwise
//!   it ends without a row count;
//! - a packet with sequence id 1 begins a response when nothing could hold it inside (neither
//!   the paired response, by its ids, nor one that began in the stretch and had room for 255
//!   packets before it);
//! - otherwise it is held until the packet after it tells (a row goes on with the next id, a
//!   lone OK is followed by the next command's response, a column count by a column
//!   definition); if nothing tells, the response it may have begun is counted as perhaps lost.
//!
//! Responses that began unseen in the stretch are counted within bounds; the queue gives up the
//! commands they may have answered, without a status, and pairs a response only with the one
//! command it certainly answers (or the only one of those it may answer that can answer with a
//! packet like its first: `response::fits`).

use sonde_sdk::protocol_parser::RequestRecord;

use super::{Cursor, Held, Kept, Session};
use crate::record::error;
use crate::response::{self, Command, Resp, Step};
use crate::scan;
use crate::stretch::{self, Before, Stretch, Verdict};
use crate::wire::{self, Packet};
use sonde_sdk::protocol_parser::pending::{Answered, Count};

/// Response bytes kept while boundaries are lost, for a run of headers that goes on in the next
/// segment.
pub(super) const CARRY: usize = crate::CARRY;

impl Session {
    /// Responses picked up mid-stream (or after a lost handshake): what came before answers no
    /// command seen.
    pub(super) fn pickup_responses(&mut self) {
        self.cursor = Cursor::Lost;
        self.stretch = Stretch::new(Before::Start, 0, 0);
        self.carry.clear();
    }

    /// Response boundaries lost: `bytes` since the last one known are missing.
    pub(super) fn lose_responses(&mut self, bytes: u64, out: &mut Vec<RequestRecord>) {
        if self.cursor == Cursor::Lost {
            // What was kept to look for a boundary does not go on after the gap.
            self.stretch.bytes += self.carry.len() as u64 + bytes;
            self.carry.clear();
            self.stretch.answerable = self.queue.answerable();
            return;
        }
        self.settle_held(None, out);
        let next = self.last_seq.wrapping_add(1);
        let before = match self.cursor {
            Cursor::Current => match &self.current {
                Some(c) if self.resp == Resp::Rows => Before::Rows {
                    next,
                    min_packet: response::min_row_packet(c),
                    maybe_ended: c.unsure,
                },
                // Its structure says it goes on, unless what it is was lost too.
                _ => Before::Inside {
                    next: Some(next),
                    paired: self.resp != Resp::Unknown,
                },
            },
            Cursor::Unknown { prev } => Before::Inside {
                next: prev.map(|s| s.wrapping_add(1)),
                paired: false,
            },
            Cursor::Begin => {
                // The response found began unseen after all: it answered someone.
                let now = self.queue.answerable();
                self.count_lost(Count::exactly(1), now, out);
                Before::Inside {
                    next: None,
                    paired: false,
                }
            }
            _ => Before::Boundary {
                sure: self.deprecate_eof.is_some() && self.ended,
            },
        };
        self.cursor = Cursor::Lost;
        self.stretch = Stretch::new(before, bytes, self.queue.answerable());
    }

    /// Response bytes seen in which no boundary was found (`seen`: the carry and the segment).
    pub(super) fn unplaced(&mut self, seen: &[u8]) {
        let keep = seen.len().min(CARRY);
        self.stretch.bytes += (seen.len() - keep) as u64;
        self.carry = seen[seen.len() - keep..].to_vec();
        self.stretch.answerable = self.queue.answerable();
    }

    /// The scan found packets beginning at `found`, `at` bytes into what it looked at, of which
    /// the last segment began at `segment`.
    pub(super) fn resync(
        &mut self,
        found: &[u8],
        at: u64,
        segment: u64,
        out: &mut Vec<RequestRecord>,
    ) {
        self.carry.clear();
        let mut st = self.stretch;
        if at > segment {
            // Bytes of this segment were passed over: read now.
            st.answerable = self.queue.answerable();
        }
        let bytes = st.bytes + at;
        let seq = found[3];
        let len = wire::u24(found) as u64;
        let body = &found[4..found.len().min(4 + len as usize)];
        let now = self.queue.answerable();
        let mut cont = st.continuation(seq, bytes);
        // An unknown response may end with an OK; rows end with EOF, unless more results follow.
        let mut may_end = true;
        if let Some(c) = self.current.as_mut() {
            may_end = c.multi || self.resp != Resp::Rows;
            if matches!(st.before, Before::Rows { .. }) {
                // Past its rows, a command with several results goes on with any packet.
                if !c.multi && !response::may_be_in_rows(c, body, len) {
                    cont = None;
                }
                if cont.is_some() && now == 0 {
                    // No other command was sent: nothing else can be read here.
                    self.last_seq = seq.wrapping_sub(1);
                    c.ex.response_bytes += bytes;
                    match cont {
                        Some(Some(n)) if !c.multi => *c.ex.rows.get_or_insert(0) += n,
                        _ => c.ex.lossy = true,
                    }
                    if c.multi {
                        // The packets hidden may have ended a result and begun others.
                        self.resp = Resp::Unknown;
                    }
                    self.cursor = Cursor::Current;
                    return;
                }
            }
            // Not certainly its: its end, and what it said there, were lost.
            self.resp = Resp::Start;
            if let Some(c) = self.current.take() {
                self.emit(c, Some(error::TRUNCATED), out);
            }
        }
        let (if_start, if_not) = st.unseen(seq, bytes, cont.is_some());
        let inner = st.inner(seq, bytes);
        let shape = if seq == self.next_first_seq() {
            stretch::shape(body, len)
        } else {
            None
        };
        match shape {
            None => {
                self.count_lost(if_not, st.answerable, out);
                self.cursor = Cursor::Unknown { prev: None };
            }
            Some(_) if cont.is_none() && !inner => {
                self.count_lost(if_start, st.answerable, out);
                self.cursor = Cursor::Begin;
            }
            Some(shape) => {
                self.held = Some(Held {
                    packet: None,
                    shape,
                    if_start,
                    if_not,
                    answerable_before: st.answerable,
                    answerable: now,
                    may_end: inner || (cont.is_some() && may_end),
                });
                self.cursor = Cursor::Hold;
            }
        }
    }

    /// A response packet, commands being exchanged.
    pub(super) fn ready_response(&mut self, p: &Packet<'_>, ts: u64, out: &mut Vec<RequestRecord>) {
        match self.cursor {
            Cursor::Current => self.current_packet(p, ts, false, out),
            Cursor::Begin => self.begin(p, ts, self.queue.answerable(), out),
            Cursor::Boundary if p.seq == self.next_first_seq() => {
                self.begin(p, ts, self.queue.answerable(), out)
            }
            Cursor::Boundary | Cursor::Lost => self.orphan(p),
            Cursor::Unknown { prev: None } => {
                self.cursor = Cursor::Unknown {
                    prev: Some(p.last_seq),
                }
            }
            Cursor::Unknown { prev: Some(s) } if p.seq == s.wrapping_add(1) => {
                // The same response, unless its ids wrapped from 0 to 1 just as another began.
                match stretch::shape(p.body, p.len).filter(|_| p.seq == 1) {
                    Some(shape) => {
                        let now = self.queue.answerable();
                        self.held = Some(Held {
                            packet: Some(Kept::new(p, ts)),
                            shape,
                            if_start: Count::ZERO,
                            if_not: Count::ZERO,
                            answerable_before: now,
                            answerable: now,
                            may_end: true,
                        });
                        self.cursor = Cursor::Held;
                    }
                    None => {
                        self.cursor = Cursor::Unknown {
                            prev: Some(p.last_seq),
                        }
                    }
                }
            }
            Cursor::Unknown { .. } if p.seq == self.next_first_seq() => {
                self.begin(p, ts, self.queue.answerable(), out)
            }
            // Ids jump inside one exchange (LOCAL INFILE, authentication).
            Cursor::Unknown { .. } => self.orphan(p),
            Cursor::Hold => {
                if let Some(h) = self.held.as_mut() {
                    h.packet = Some(Kept::new(p, ts));
                }
                self.cursor = Cursor::Held;
            }
            Cursor::Held => {
                self.settle_held(Some(p), out);
                return self.ready_response(p, ts, out);
            }
        }
        self.last_seq = p.last_seq;
    }

    /// The packet held (see [`Cursor::Held`]) is told by `next`, the packet after it (`None`:
    /// nothing more will tell — a gap, or the end).
    pub(super) fn settle_held(&mut self, next: Option<&Packet<'_>>, out: &mut Vec<RequestRecord>) {
        if !matches!(self.cursor, Cursor::Hold | Cursor::Held) {
            return;
        }
        self.cursor = Cursor::Unknown { prev: None };
        let Some(h) = self.held.take() else {
            return;
        };
        let perhaps = h.if_start.plus(Count::exactly(1)).either(h.if_not);
        let Some(k) = h.packet else {
            self.count_lost(perhaps, h.answerable, out);
            return;
        };
        self.cursor = Cursor::Unknown {
            prev: Some(k.last_seq),
        };
        let verdict = match next {
            Some(q) => stretch::settle(
                h.shape,
                k.last_seq,
                q.seq,
                scan::column_def(q.body, q.len),
                self.queue.answerable() >= 2,
                h.may_end,
            ),
            None => Verdict::Unresolved,
        };
        match verdict {
            Verdict::Start => {
                self.count_lost(h.if_start, h.answerable_before, out);
                self.begin(&k.packet(), k.ts, h.answerable, out);
            }
            Verdict::NotStart => self.count_lost(h.if_not, h.answerable_before, out),
            Verdict::Unresolved => self.count_lost(perhaps, h.answerable, out),
        }
    }

    /// `n` responses began unseen, read when at most `answerable` commands could be answered.
    fn count_lost(&mut self, n: Count, answerable: u64, out: &mut Vec<RequestRecord>) {
        let mut given = Vec::new();
        self.queue.lost(n, answerable, &mut |c| given.push(c));
        self.give_up(given, out);
    }

    /// The sequence id the next response begins with.
    fn next_first_seq(&self) -> u8 {
        self.queue.certain().map_or(1, |c| c.first_seq)
    }

    /// A response begins with `p`, read when at most `answerable` commands could be answered.
    fn begin(&mut self, p: &Packet<'_>, ts: u64, answerable: u64, out: &mut Vec<RequestRecord>) {
        let mut given = Vec::new();
        let fits = |c: &Command| response::fits(c.expects, p.body, p.len);
        let answered = self.queue.answer(answerable, fits, &mut |c| given.push(c));
        self.give_up(given, out);
        match answered {
            Answered::Paired(mut c) => {
                c.ex.started = true;
                self.resp = Resp::Start;
                self.current = Some(c);
                self.cursor = Cursor::Current;
                self.current_packet(p, ts, true, out);
            }
            Answered::Unpaired | Answered::Orphan => self.orphan(p),
        }
    }

    /// A packet of the paired response (`first`: its first).
    fn current_packet(
        &mut self,
        p: &Packet<'_>,
        ts: u64,
        first: bool,
        out: &mut Vec<RequestRecord>,
    ) {
        let Some(c) = self.current.as_mut() else {
            return self.orphan(p);
        };
        let jumps = matches!(self.resp, Resp::Infile | Resp::UntilOkErr);
        if !first && !jumps && p.seq != self.last_seq.wrapping_add(1) {
            // Ids go up by one inside a response: this one ended unseen (its last packet's
            // kind was lost), and the packet begins another.
            c.ex.lossy = true;
            self.resp = Resp::Start;
            self.cursor = Cursor::Unknown {
                prev: Some(self.last_seq),
            };
            if let Some(c) = self.current.take() {
                self.emit(c, None, out);
            }
            return self.ready_response(p, ts, out);
        }
        c.ex.response_bytes += p.wire;
        c.ex.response_ts = ts;
        let step = response::step(&mut self.resp, c, &mut self.deprecate_eof, p);
        if step == Step::More {
            return;
        }
        self.resp = Resp::Start;
        self.cursor = Cursor::Boundary;
        if let Some(c) = self.current.take() {
            self.ended = !c.open_end;
            self.emit(c, None, out);
        }
        if step == Step::Finish {
            self.finished = true;
        }
    }

    /// A response packet that answers no command known (the tail of a response whose command was
    /// not seen, a response not paired, or the EOF after PREPARE_OK's definitions when it was not
    /// known to come).
    fn orphan(&mut self, p: &Packet<'_>) {
        if p.is_eof5() && self.deprecate_eof.is_none() {
            self.deprecate_eof = Some(false);
        }
        self.cursor = Cursor::Unknown {
            prev: Some(p.last_seq),
        };
    }
}
