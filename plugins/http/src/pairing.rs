//! The pairing of requests and responses on one connection. HTTP/1.1 answers in order
//! (pipelined or not), so a FIFO of waiting requests pairs them, with the bounds the SDK's `pending` queue keeps
//! when gaps hid messages. A record is emitted when the response's last byte is seen, or when
//! the exchange is given up (`no-response`, `truncated`).

use sonde_sdk::protocol_parser::RequestRecord;

use crate::MAX_PENDING;
use crate::body::Chunked;
use crate::head::{self, Head, Length, Start};
use crate::mode::Mode;
use crate::record::{self, Pending, attr, error};
use sonde_sdk::protocol_parser::pending::{Answered, Count, Queue};

/// What the head of the response being read said, until its last byte.
#[derive(Debug)]
struct Answer {
    /// The request it answers; none when that is not certain, or was never seen.
    request: Option<Pending>,
    status: u16,
    content_length: Option<u64>,
    upgrade: Option<String>,
}

/// How the request(s) a response may answer shape its framing.
#[derive(Debug, Clone, Copy, Default)]
struct Asked {
    head: bool,
    connect: bool,
    close: bool,
}

/// The pairing of requests and responses.
#[derive(Debug, Default)]
pub(crate) struct Exchanges {
    queue: Queue<Pending>,
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

    /// Requests waiting for a response (seen ones).
    pub(crate) fn pending(&self) -> usize {
        self.queue.len()
    }

    /// Queue a request; past [`MAX_PENDING`] the oldest is given up as unanswered.
    fn push(&mut self, p: Pending, out: &mut Vec<RequestRecord>) {
        if let Some(oldest) = self.queue.push(p, MAX_PENDING) {
            no_response(oldest, out);
        }
    }

    /// A request head: queue it; how its body is framed. `after_hidden`: it began right after
    /// bytes the capture did not show, so its method may be the end of a longer one.
    pub(crate) fn request_head(
        &mut self,
        h: &Head<'_>,
        ts: u64,
        len: u64,
        after_hidden: bool,
        out: &mut Vec<RequestRecord>,
    ) -> (Mode, u64) {
        let seq = self.next_seq();
        if let Some(mut p) = Pending::from_head(seq, h, ts, len) {
            if let Start::Request { method, .. } = h.start
                && after_hidden
                && method != "HEAD"
                && "HEAD".ends_with(method)
            {
                // Perhaps a HEAD: its response is then taken to have no body (see `asked`).
                p.head = true;
            }
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

    /// The request side entered a stretch with hidden bytes: until it ends, any number of
    /// requests may hide there.
    pub(crate) fn hiding_requests(&mut self) {
        self.queue.open_hidden();
    }

    /// That stretch ended: it held `n` requests the capture did not show.
    pub(crate) fn requests_hidden(&mut self, n: Count) {
        self.queue.close_hidden(n);
    }

    /// A request the parser could not read (its head too long).
    pub(crate) fn request_lost(&mut self) {
        self.queue.hide(Count::ONE);
    }

    /// A request head cut by a gap: what its complete lines tell, or a hidden request.
    pub(crate) fn request_cut(&mut self, partial: &[u8], ts: u64, out: &mut Vec<RequestRecord>) {
        let seq = self.next_seq();
        match head::parse_partial(partial)
            .and_then(|h| Pending::from_head(seq, &h, ts, partial.len() as u64))
        {
            Some(p) => self.push(p, out),
            None => self.queue.hide(Count::ONE),
        }
    }

    pub(crate) fn add_request_bytes(&mut self, seq: u64, n: u64) {
        // The request being read is the newest, unless a response head already took it.
        let answered = self.answer.as_mut().and_then(|a| a.request.as_mut());
        for p in [self.queue.newest_mut(), answered].into_iter().flatten() {
            if p.seq == seq {
                p.request_bytes += n;
                return;
            }
        }
    }

    /// What the request(s) the next response may answer say about its framing. Unless that is
    /// certain, a response is taken to have no body when it may answer a HEAD, or a request
    /// not seen (its method unknown): a body it did have is then skipped by the resync (still
    /// one response), where reading a body it did not have would swallow the responses after.
    fn asked(&mut self) -> Asked {
        if let Some(p) = self.queue.certain_mut() {
            return Asked {
                head: p.head,
                connect: p.connect,
                close: p.close,
            };
        }
        let mut a = Asked {
            head: self.queue.may_answer_unseen(),
            ..Asked::default()
        };
        for p in self.queue.candidates() {
            a.head |= p.head;
            a.close |= p.close;
        }
        a
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
        // Interim (100 Continue, 103 Early Hints): the final response is still to come.
        if (100..200).contains(&status) && status != 101 {
            if let Some(p) = self.queue.certain_mut() {
                p.response_bytes += len;
            }
            return Mode::Idle;
        }
        let asked = self.asked();
        let request = match self.queue.answer_in_order(&mut |p| truncated(p, out)) {
            Answered::Paired(p) => Some(p),
            Answered::Unpaired | Answered::Orphan => None,
        };
        let certain = request.is_some();
        // A tunnel only when certain: otherwise the parser goes on, and finds no status line
        // in the tunnel's bytes if it was one.
        let connect = asked.connect && certain;
        self.answer = Some(Answer {
            request,
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
        if asked.head || status == 204 || status == 304 {
            self.response_done(ts, len, out);
            // Taken to have no body only for want of knowing: a body may follow, so the next
            // response is looked for rather than expected (and not as if at a boundary).
            return if certain || status == 204 || status == 304 {
                Mode::Idle
            } else {
                Mode::Resync
            };
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
                keep_alive: !asked.close && !f.close && (minor >= 1 || f.keep_alive),
            },
        }
    }

    /// The response's last byte came at `ts`.
    pub(crate) fn response_done(&mut self, ts: u64, bytes: u64, out: &mut Vec<RequestRecord>) {
        if let Some(a) = self.answer.take() {
            let error = record::error_class(a.status);
            settle(a, ts, bytes, error, out);
        }
    }

    /// The response was cut after its head.
    pub(crate) fn response_truncated(&mut self, ts: u64, bytes: u64, out: &mut Vec<RequestRecord>) {
        if let Some(a) = self.answer.take() {
            settle(a, ts, bytes, Some(error::TRUNCATED), out);
        }
    }

    /// How many waiting requests a response could answer now (see [`Queue::answerable`]).
    pub(crate) fn answerable(&self) -> u64 {
        self.queue.answerable()
    }

    /// `n` responses were lost before their heads were read, when at most `answerable`
    /// requests could be answered: the requests they certainly answered are `truncated`;
    /// those they may have answered wait for a response to tell.
    pub(crate) fn responses_lost(
        &mut self,
        n: Count,
        answerable: u64,
        out: &mut Vec<RequestRecord>,
    ) {
        // (Between responses: a response being read would have been settled first.)
        if let Some(a) = self.answer.take() {
            settle(a, 0, 0, Some(error::TRUNCATED), out);
        }
        // No more than could be answered when they were read were lost; and whatever their
        // number, the next response answers one of those.
        let n = Count::new(n.min.min(answerable), n.max.min(answerable));
        let give_up = &mut |p: Pending| truncated(p, out);
        self.queue.lost(n, answerable, give_up);
        self.queue.limit_next(answerable, give_up);
    }

    /// Upgraded: what is still pending will never be answered in HTTP/1.
    pub(crate) fn finish(&mut self, out: &mut Vec<RequestRecord>) {
        self.finished = true;
        self.queue.drain(|p, _| no_response(p, out));
    }

    /// The connection closed: what still waits was not answered, or its answer was lost.
    pub(crate) fn flush(&mut self, out: &mut Vec<RequestRecord>) {
        self.queue.drain(|p, maybe_lost| {
            if maybe_lost {
                truncated(p, out)
            } else {
                no_response(p, out)
            }
        });
    }
}

fn settle(a: Answer, ts: u64, bytes: u64, error: Option<&str>, out: &mut Vec<RequestRecord>) {
    // No request (never seen, or not certain): nothing to pair.
    let Some(p) = a.request else { return };
    let extra = [
        a.upgrade.map(|u| (attr::UPGRADE, u)),
        a.content_length
            .map(|n| (attr::RESPONSE_CONTENT_LENGTH, n.to_string())),
    ];
    out.push(p.into_record(a.status, error, ts, bytes, extra.into_iter().flatten()));
}

fn no_response(p: Pending, out: &mut Vec<RequestRecord>) {
    out.push(p.into_record(0, Some(error::NO_RESPONSE), 0, 0, None));
}

/// Its response was lost in a gap, or could not be told apart from another's.
fn truncated(p: Pending, out: &mut Vec<RequestRecord>) {
    out.push(p.into_record(0, Some(error::TRUNCATED), 0, 0, None));
}
