//! Which request the next response answers, for a protocol that answers requests in order
//! (HTTP/1.1, MySQL, Redis…), when gaps of the capture hid some messages. Shared by the
//! parsers so the delicate part, pairing only what is certain, is written and tested once.
//!
//! Without gaps the next response answers the oldest waiting request. A gap can hide requests
//! and responses, and how many is known only within bounds (from the bytes hidden; the
//! protocol's parser works them out). The queue keeps exactly what is certain: the requests
//! seen, bounds on the hidden requests sent before each, and bounds on where the next response
//! lands relative to the oldest request seen. A response is paired only when every count
//! within those bounds gives the same request; a request that may have been answered by a
//! response lost, or by one that could not be placed, is given up (the parser reports it
//! without a status): a status on the wrong request is worse than none.
//!
//! Causality narrows the bounds: a response answers a request already sent (the daemon feeds a
//! request before its response), so the caller says how many requests a response could answer
//! when it was read (see [`Queue::answerable`]). With one request waiting and nothing hidden
//! after it, the next response is its answer whatever was lost before.

use std::collections::VecDeque;

mod count;
#[cfg(test)]
mod tests;

pub use count::Count;

/// A request seen, with the hidden requests sent just before it (after the previous one).
#[derive(Debug)]
struct Waiting<T> {
    hidden_before: Count,
    request: T,
}

/// What became of a response start (see [`Queue::answer`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Answered<T> {
    /// It answers this request, certainly.
    Paired(T),
    /// It answers a hidden request, or one that cannot be told for sure.
    Unpaired,
    /// Nothing it could answer was sent.
    Orphan,
}

/// Requests waiting for responses. See the module documentation.
#[derive(Debug)]
pub struct Queue<T> {
    waiting: VecDeque<Waiting<T>>,
    /// Hidden requests after the newest one seen, still unanswered.
    trailing: Count,
    /// Where the next response lands, relative to the oldest waiting request: 0 is that
    /// request, below 0 a hidden one before it, above 0 a later one (the oldest's response was
    /// lost). Only meaningful while a request waits.
    offset: (i64, i64),
    /// Requests are being hidden after the newest one, how many is not known yet.
    open: bool,
    /// While `open`: responses that landed beyond every request seen.
    beyond: Count,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue {
            waiting: VecDeque::new(),
            trailing: Count::ZERO,
            offset: (0, 0),
            open: false,
            beyond: Count::ZERO,
        }
    }
}

/// Counts as offsets; beyond `i64::MAX` (no real gap) saturates.
fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl<T> Queue<T> {
    /// Requests seen and waiting.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// The newest request seen, if it still waits.
    pub fn newest_mut(&mut self) -> Option<&mut T> {
        self.waiting.back_mut().map(|w| &mut w.request)
    }

    /// The request the next response certainly answers, if that is known already.
    pub fn certain(&self) -> Option<&T> {
        if self.window(self.answerable()) != (0, 0) {
            return None;
        }
        self.waiting.front().map(|w| &w.request)
    }

    /// The request the next response certainly answers, if that is known already, to update
    /// (e.g. an interim response's bytes).
    pub fn certain_mut(&mut self) -> Option<&mut T> {
        if self.waiting.is_empty() || self.window(self.answerable()) != (0, 0) {
            return None;
        }
        self.waiting.front_mut().map(|w| &mut w.request)
    }

    /// The requests seen that the next response may answer: what a protocol whose response
    /// framing depends on the request (HTTP's HEAD) must allow for when it is not certain.
    pub fn candidates(&self) -> impl Iterator<Item = &T> {
        let (lo, hi) = if self.waiting.is_empty() {
            (-1, -1)
        } else {
            self.window(self.answerable())
        };
        let mut at = (0i64, 0i64);
        self.waiting.iter().enumerate().filter_map(move |(i, w)| {
            if i > 0 {
                at.0 =
                    at.0.saturating_add(1)
                        .saturating_add(signed(w.hidden_before.min));
                at.1 =
                    at.1.saturating_add(1)
                        .saturating_add(signed(w.hidden_before.max));
            }
            (at.0 <= hi && lo <= at.1).then_some(&w.request)
        })
    }

    /// Whether the next response may answer a request not seen (hidden, or never captured),
    /// one whose content, and so the response's framing, is unknown.
    pub fn may_answer_unseen(&self) -> bool {
        if self.waiting.is_empty() {
            return true;
        }
        let (lo, hi) = self.window(self.answerable());
        let hidden_after = self.open
            || self.trailing.max > 0
            || self.waiting.iter().skip(1).any(|w| w.hidden_before.max > 0);
        lo < 0 || (hi > 0 && hidden_after)
    }

    /// A request was sent. Beyond `cap` waiting, the oldest is returned: the caller gives it up,
    /// and it keeps its place (its response, if it comes, is not paired with a younger request).
    pub fn push(&mut self, request: T, cap: usize) -> Option<T> {
        if self.waiting.is_empty() {
            self.offset = (-signed(self.trailing.max), -signed(self.trailing.min));
        }
        self.waiting.push_back(Waiting {
            hidden_before: std::mem::take(&mut self.trailing),
            request,
        });
        if self.waiting.len() <= cap.max(1) {
            return None;
        }
        self.leave_oldest(false)
    }

    /// `n` requests expecting a response were sent after the newest one, unseen.
    pub fn hide(&mut self, n: Count) {
        self.trailing = self.trailing.plus(n);
    }

    /// The capture is hiding requests after the newest one; how many is known only once the
    /// stretch ends ([`Queue::close_hidden`]). Until then a response may answer one of them.
    pub fn open_hidden(&mut self) {
        self.open = true;
    }

    /// The stretch opened by [`Queue::open_hidden`] held `n` requests that expect a response.
    pub fn close_hidden(&mut self, n: Count) {
        if self.open {
            self.trailing = self.trailing.plus(n).minus(self.beyond);
        } else {
            self.trailing = self.trailing.plus(n);
        }
        self.open = false;
        self.beyond = Count::ZERO;
    }

    /// How many requests, counted from where the next response lands at the earliest, a
    /// response read now could answer at most (hidden ones included).
    pub fn answerable(&self) -> u64 {
        if self.open {
            return u64::MAX;
        }
        let hidden: u64 = self
            .waiting
            .iter()
            .skip(1)
            .map(|w| w.hidden_before.max)
            .fold(self.trailing.max, u64::saturating_add);
        hidden.saturating_add(self.waiting.len() as u64)
    }

    /// `n` responses started unseen, read when at most `answerable` requests could be answered
    /// (see [`Queue::answerable`]). The requests they certainly answered go to `give_up`; the
    /// ones they may have answered wait until a response tells.
    pub fn lost(&mut self, n: Count, answerable: u64, give_up: &mut impl FnMut(T)) {
        if n == Count::ZERO {
            return;
        }
        if self.waiting.is_empty() {
            self.land_beyond(Count::new(n.min.min(answerable), n.max.min(answerable)));
            return;
        }
        // Clamped where they land, not in number: responses may land before the oldest seen
        // (on one given up, or hidden), and those count too.
        let limit = signed(answerable);
        self.offset = (
            self.offset.0.saturating_add(signed(n.min)).min(limit),
            self.offset.1.saturating_add(signed(n.max)).min(limit),
        );
        self.settle_passed(give_up);
    }

    /// The next response answers one of the first `answerable` requests (counted as in
    /// [`Queue::answerable`]): narrow where it lands to them, giving up the requests it now
    /// certainly lands beyond. For a caller that knows this apart from any loss (HTTP applies
    /// it after every stretch of lost responses, even an empty one).
    pub fn limit_next(&mut self, answerable: u64, give_up: &mut impl FnMut(T)) {
        if self.waiting.is_empty() {
            return;
        }
        let limit = signed(answerable);
        self.offset = (self.offset.0.min(limit), self.offset.1.min(limit));
        self.settle_passed(give_up);
    }

    /// A response arrived, and nothing about it says which request it answers (no `fits`, see
    /// [`Queue::answer`]): the request it answers if its place alone makes that certain.
    pub fn answer_in_order(&mut self, give_up: &mut impl FnMut(T)) -> Answered<T> {
        let answerable = self.answerable();
        self.answer(answerable, |_| false, give_up)
    }

    /// A response started, read when at most `answerable` requests could be answered: the
    /// request it answers if that is certain. `fits`: whether a request can have it as its
    /// answer (where several could, and only one of them can, it is that one's).
    pub fn answer(
        &mut self,
        answerable: u64,
        fits: impl Fn(&T) -> bool,
        give_up: &mut impl FnMut(T),
    ) -> Answered<T> {
        if answerable == 0 {
            return Answered::Orphan;
        }
        if self.waiting.is_empty() {
            if self.open {
                self.beyond = self.beyond.plus(Count::exactly(1));
                return Answered::Unpaired;
            }
            if self.trailing.max == 0 {
                return Answered::Orphan;
            }
            // It answers one of the hidden requests, so there is at least one.
            self.trailing = Count::new(self.trailing.min.max(1) - 1, self.trailing.max - 1);
            return Answered::Unpaired;
        }
        let (lo, hi) = self.window(answerable);
        let only = match (lo, hi) {
            (0, 0) => Some(0),
            _ => self.only_fit(lo, hi, fits),
        };
        if let Some(j) = only {
            // The ones before it were answered already, by responses lost or not placed.
            for _ in 0..j {
                if let Some(request) = self.leave_oldest(false) {
                    give_up(request);
                }
            }
            return match self.leave_oldest(true) {
                Some(request) => Answered::Paired(request),
                None => Answered::Unpaired,
            };
        }
        self.offset = (lo.saturating_add(1), hi.saturating_add(1));
        self.settle_passed(give_up);
        Answered::Unpaired
    }

    /// Of the requests at `lo..=hi` (all seen, none hidden between), the only one that `fits`.
    fn only_fit(&self, lo: i64, hi: i64, fits: impl Fn(&T) -> bool) -> Option<usize> {
        let (lo, hi) = (usize::try_from(lo).ok()?, usize::try_from(hi).ok()?);
        if hi >= self.waiting.len() {
            return None;
        }
        let seen = self.waiting.range(..=hi);
        if seen.clone().skip(1).any(|w| w.hidden_before.max > 0) {
            return None;
        }
        let mut fit = seen
            .enumerate()
            .filter(|(j, w)| *j >= lo && fits(&w.request))
            .map(|(j, _)| j);
        match (fit.next(), fit.next()) {
            (Some(j), None) => Some(j),
            _ => None,
        }
    }

    /// Everything still waiting, oldest first, with whether its response may have been lost in
    /// a gap (otherwise it was simply never answered).
    pub fn drain(&mut self, mut each: impl FnMut(T, bool)) {
        while !self.waiting.is_empty() {
            let maybe_lost = self.offset.1 >= 1;
            if let Some(request) = self.leave_oldest(false) {
                each(request, maybe_lost);
            }
        }
        self.trailing = Count::ZERO;
        self.open = false;
        self.beyond = Count::ZERO;
        self.offset = (0, 0);
    }

    /// Where the next response may land, given that it answers one of the first `answerable`.
    fn window(&self, answerable: u64) -> (i64, i64) {
        if self.offset.1 <= 0 {
            // At or before the oldest waiting request: always sent (the usual case, cheaply).
            return self.offset;
        }
        let last = signed(answerable.min(self.answerable())).saturating_sub(1);
        (self.offset.0, self.offset.1.min(last))
    }

    /// `x` responses answered hidden requests after every request seen.
    fn land_beyond(&mut self, x: Count) {
        if self.open {
            self.beyond = self.beyond.plus(x);
        } else {
            self.trailing = self.trailing.minus(x);
        }
    }

    /// Give up the oldest requests while the next response certainly lands beyond them.
    fn settle_passed(&mut self, give_up: &mut impl FnMut(T)) {
        while self.offset.0 >= 1 {
            let Some(request) = self.leave_oldest(false) else {
                break;
            };
            give_up(request);
        }
    }

    /// The oldest request leaves the queue. `answered`: by the response just placed, so the next
    /// response answers the request sent after it. Otherwise the next response keeps its place
    /// in the sequence (the oldest's response was lost, or will be dropped).
    fn leave_oldest(&mut self, answered: bool) -> Option<T> {
        let oldest = self.waiting.pop_front()?;
        let (lo, hi) = if answered {
            (0, 0)
        } else {
            (
                self.offset.0.saturating_sub(1),
                self.offset.1.saturating_sub(1),
            )
        };
        match self.waiting.front() {
            Some(next) => {
                let b = next.hidden_before;
                self.offset = (
                    lo.saturating_sub(signed(b.max)),
                    hi.saturating_sub(signed(b.min)),
                );
            }
            None => {
                // Relative to the hidden requests after it: the responses lost land on them.
                self.land_beyond(Count::new(lo.max(0) as u64, hi.max(0) as u64));
                self.offset = (0, 0);
            }
        }
        Some(oldest.request)
    }
}
