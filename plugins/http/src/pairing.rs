//! The pairing of requests and responses on one connection: a FIFO of requests waiting for
//! responses (HTTP/1.1 answers in order, pipelined or not), settled by final responses. A
//! record is emitted when the response's last byte is seen, or when the exchange is given up
//! (`no-response`, `truncated`).

use std::collections::VecDeque;

use sonde_sdk::protocol_parser::RequestRecord;

use crate::MAX_PENDING;
use crate::body::Chunked;
use crate::conn::Mode;
use crate::head::{self, Head, Length, Start};
use crate::record::{self, Pending, attr, error};

/// What the head of the response being read said, until its last byte.
#[derive(Debug)]
struct Answer {
    /// The request it answers (the oldest pending when the head came); none for a response
    /// whose request was never seen.
    seq: Option<u64>,
    status: u16,
    content_length: Option<u64>,
    upgrade: Option<String>,
}

/// The pairing of requests and responses.
#[derive(Debug, Default)]
pub(crate) struct Exchanges {
    pub(crate) pending: VecDeque<Pending>,
    next_seq: u64,
    answer: Option<Answer>,
    /// Upgraded or tunnelled: nothing more to parse.
    pub(crate) finished: bool,
}

impl Exchanges {
    fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Queue a request; past [`MAX_PENDING`] the oldest is given up as unanswered.
    fn push(&mut self, p: Pending, out: &mut Vec<RequestRecord>) {
        if self.pending.len() >= MAX_PENDING
            && let Some(oldest) = self.pending.pop_front()
        {
            no_response(oldest, out);
        }
        self.pending.push_back(p);
    }

    /// A request head: queue it; how its body is framed.
    pub(crate) fn request_head(
        &mut self,
        h: &Head<'_>,
        ts: u64,
        len: u64,
        out: &mut Vec<RequestRecord>,
    ) -> (Mode, u64) {
        let seq = self.next_seq();
        if let Some(p) = Pending::from_head(seq, h, ts, len) {
            self.push(p, out);
        }
        let f = &h.fields;
        let mode = if f.transfer_encoding {
            // A request coding other than chunked cannot be framed (RFC 9112 §6.3).
            if f.chunked {
                Mode::Chunked(Chunked::default())
            } else {
                Mode::Resync
            }
        } else {
            match f.content_length {
                Length::Absent | Length::Value(0) => Mode::Idle,
                Length::Value(n) => Mode::Fixed(n),
                Length::Invalid => Mode::Resync,
            }
        };
        (mode, seq)
    }

    /// A request was lost in a gap: hold its place in the queue.
    pub(crate) fn push_lost(&mut self, out: &mut Vec<RequestRecord>) {
        let seq = self.next_seq();
        self.push(Pending::lost(seq), out);
    }

    /// A request head cut by a gap: what its complete lines tell, or a placeholder.
    pub(crate) fn request_cut(&mut self, partial: &[u8], ts: u64, out: &mut Vec<RequestRecord>) {
        let seq = self.next_seq();
        let p = head::parse_partial(partial)
            .and_then(|h| Pending::from_head(seq, &h, ts, partial.len() as u64))
            .unwrap_or_else(|| Pending::lost(seq));
        self.push(p, out);
    }

    pub(crate) fn add_request_bytes(&mut self, seq: u64, n: u64) {
        // The request being read is the newest, unless a response already settled it.
        if let Some(p) = self.pending.back_mut()
            && p.seq == seq
        {
            p.request_bytes += n;
        }
    }

    /// A response head: settle what it settles now, or say how its body is framed.
    pub(crate) fn response_head(
        &mut self,
        h: &Head<'_>,
        len: u64,
        ts: u64,
        out: &mut Vec<RequestRecord>,
    ) -> Mode {
        let Start::Response { minor, status } = h.start else {
            return Mode::Resync;
        };
        let f = &h.fields;
        let (seq, head, connect, request_close) = match self.pending.front() {
            Some(p) => (Some(p.seq), p.head, p.connect, p.close),
            None => (None, false, false, false),
        };
        // Interim (100 Continue, 103 Early Hints): the final response is still to come.
        if (100..200).contains(&status) && status != 101 {
            if let Some(p) = self.pending.front_mut() {
                p.response_bytes += len;
            }
            return Mode::Idle;
        }
        self.answer = Some(Answer {
            seq,
            status,
            content_length: match f.content_length {
                Length::Value(n) => Some(n),
                _ => None,
            },
            upgrade: if status == 101 {
                f.upgrade.map(|u| record::text(u, record::MAX_VALUE))
            } else {
                None
            },
        });
        // Switching protocols, or a tunnel: the rest of the connection is not HTTP/1.
        if status == 101 || (connect && (200..300).contains(&status)) {
            self.response_done(ts, len, out);
            self.finish(out);
            return Mode::Idle;
        }
        if head || status == 204 || status == 304 {
            self.response_done(ts, len, out);
            return Mode::Idle;
        }
        if f.transfer_encoding {
            return if f.chunked {
                Mode::Chunked(Chunked::default())
            } else {
                Mode::UntilClose { keep_alive: false }
            };
        }
        match f.content_length {
            Length::Value(0) => {
                self.response_done(ts, len, out);
                Mode::Idle
            }
            Length::Value(n) => Mode::Fixed(n),
            Length::Invalid => {
                self.response_truncated(ts, len, out);
                Mode::Resync
            }
            Length::Absent => Mode::UntilClose {
                // RFC 9112 §9.3: HTTP/1.0 closes unless keep-alive was agreed.
                keep_alive: !request_close && !f.close && (minor >= 1 || f.keep_alive),
            },
        }
    }

    /// The response's last byte came at `ts`.
    pub(crate) fn response_done(&mut self, ts: u64, bytes: u64, out: &mut Vec<RequestRecord>) {
        if let Some(a) = self.answer.take() {
            let error = record::error_class(a.status);
            self.settle(a, ts, bytes, error, out);
        }
    }

    /// The response was cut after its head.
    pub(crate) fn response_truncated(&mut self, ts: u64, bytes: u64, out: &mut Vec<RequestRecord>) {
        match self.answer.take() {
            Some(a) => self.settle(a, ts, bytes, Some(error::TRUNCATED), out),
            None => self.response_lost(out),
        }
    }

    /// The response to the oldest request was lost before its head was read.
    pub(crate) fn response_lost(&mut self, out: &mut Vec<RequestRecord>) {
        self.answer = None;
        if let Some(p) = self.pending.pop_front()
            && !p.lost
        {
            out.push(p.into_record(0, Some(error::TRUNCATED), 0, 0, None));
        }
    }

    fn settle(
        &mut self,
        a: Answer,
        ts: u64,
        bytes: u64,
        error: Option<&str>,
        out: &mut Vec<RequestRecord>,
    ) {
        // No request (never seen), or given up on already (too many pending): nothing to pair.
        let Some(seq) = a.seq else { return };
        if self.pending.front().map(|p| p.seq) != Some(seq) {
            return;
        }
        let Some(p) = self.pending.pop_front() else {
            return;
        };
        if p.lost {
            return;
        }
        let extra = [
            a.upgrade.map(|u| (attr::UPGRADE, u)),
            a.content_length
                .map(|n| (attr::RESPONSE_CONTENT_LENGTH, n.to_string())),
        ];
        out.push(p.into_record(a.status, error, ts, bytes, extra.into_iter().flatten()));
    }

    /// Upgraded: what is still pending will never be answered in HTTP/1.
    pub(crate) fn finish(&mut self, out: &mut Vec<RequestRecord>) {
        self.finished = true;
        self.flush(out);
    }

    pub(crate) fn flush(&mut self, out: &mut Vec<RequestRecord>) {
        for p in self.pending.drain(..) {
            no_response(p, out);
        }
    }
}

fn no_response(p: Pending, out: &mut Vec<RequestRecord>) {
    if !p.lost {
        out.push(p.into_record(0, Some(error::NO_RESPONSE), 0, 0, None));
    }
}
