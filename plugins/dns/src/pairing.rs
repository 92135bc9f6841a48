//! Queries waiting for their responses.
//!
//! DNS messages say what they are (the QR bit), so pairing does not depend on the
//! connection's role: a query waits until a response in the other direction carries its id
//! and — when both have one — the same question (name, case-insensitively, and type). Several
//! queries may wait at once (resolvers send A and AAAA together, servers answer out of
//! order); an unconnected UDP socket sees many peers on one connection, hence the question
//! check on top of the 16-bit id.
//!
//! The parser has no clock: a query is given up as `timeout` when a segment arrives more than
//! [`TIMEOUT_NS`] after it, when more than [`MAX_PENDING`] queries wait (the oldest), and at
//! the close.

use std::collections::VecDeque;

use sonde_sdk::protocol_parser::{Direction, RequestRecord, Transport};

use crate::query::Query;
use crate::record::{self, Outcome};
use crate::wire::Message;
use crate::{MAX_PENDING, TIMEOUT_NS};

/// A message handed over by a connection's reader.
pub(crate) struct Arrival<'a> {
    pub direction: Direction,
    /// Timestamp of the segment with its first byte (queries) / last byte (responses).
    pub first_ts: u64,
    pub last_ts: u64,
    /// Bytes on the wire (the TCP length prefix included; the declared length when cut).
    pub bytes: u64,
    /// The message's bytes, or its first bytes when `cut`.
    pub msg: &'a [u8],
    /// Cut by a gap of the capture or by the close.
    pub cut: bool,
}

/// The queries of one connection, oldest first; never more than [`MAX_PENDING`].
#[derive(Debug, Default)]
pub(crate) struct Pending {
    queue: VecDeque<Query>,
    /// No query is older than this (a lower bound), so most segments skip the timeout scan.
    oldest_ts: u64,
}

impl Pending {
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Give up the queries older than [`TIMEOUT_NS`] at `now`.
    pub(crate) fn expire(&mut self, now: u64, transport: Transport, out: &mut Vec<RequestRecord>) {
        if self.is_empty() || now.saturating_sub(self.oldest_ts) <= TIMEOUT_NS {
            return;
        }
        let mut oldest = u64::MAX;
        let mut kept = VecDeque::with_capacity(self.queue.len());
        for q in self.queue.drain(..) {
            if now.saturating_sub(q.ts) > TIMEOUT_NS {
                out.push(record::exchange(&q, Outcome::Timeout, transport));
            } else {
                oldest = oldest.min(q.ts);
                kept.push_back(q);
            }
        }
        self.queue = kept;
        self.oldest_ts = if self.queue.is_empty() { 0 } else { oldest };
    }

    /// Give up every query (the connection closed).
    pub(crate) fn flush(&mut self, transport: Transport, out: &mut Vec<RequestRecord>) {
        for q in self.queue.drain(..) {
            out.push(record::exchange(&q, Outcome::Timeout, transport));
        }
        self.oldest_ts = 0;
    }

    /// A message. `false` when the bytes are not a DNS message (the reader resynchronises).
    pub(crate) fn arrive(
        &mut self,
        a: Arrival<'_>,
        transport: Transport,
        out: &mut Vec<RequestRecord>,
    ) -> bool {
        let message = if a.cut {
            match Message::parse_cut(a.msg) {
                Some(m) => m,
                // Too little of it to know anything.
                None => return true,
            }
        } else {
            match Message::parse(a.msg) {
                Some(m) => m,
                None => return false,
            }
        };
        if message.header.is_response() {
            let Some(i) = self
                .queue
                .iter()
                .position(|q| q.answers_to(&message, a.direction))
            else {
                // A response to a query not seen (sent before the capture, or timed out).
                return true;
            };
            let Some(q) = self.queue.remove(i) else {
                return true;
            };
            let outcome = if a.cut {
                Outcome::Cut {
                    response: &message,
                    ts: a.last_ts,
                    bytes: a.bytes,
                }
            } else {
                Outcome::Answered {
                    response: &message,
                    ts: a.last_ts,
                    bytes: a.bytes,
                }
            };
            out.push(record::exchange(&q, outcome, transport));
            if self.queue.is_empty() {
                self.oldest_ts = 0;
            }
            return true;
        }
        let q = Query {
            id: message.header.id,
            opcode: message.header.opcode(),
            question: message.question,
            direction: a.direction,
            ts: a.first_ts,
            bytes: a.bytes,
        };
        // A retransmission (same id, question and way) keeps the first one's time.
        if self
            .queue
            .iter()
            .any(|p| p.id == q.id && p.direction == q.direction && p.question == q.question)
        {
            return true;
        }
        if self.queue.len() >= MAX_PENDING {
            if let Some(old) = self.queue.pop_front() {
                out.push(record::exchange(&old, Outcome::Timeout, transport));
            }
            self.oldest_ts = self.queue.iter().map(|q| q.ts).min().unwrap_or(0);
        }
        if self.queue.is_empty() || q.ts < self.oldest_ts {
            self.oldest_ts = q.ts;
        }
        self.queue.push_back(q);
        true
    }
}
