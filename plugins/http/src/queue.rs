//! Which request the next response answers, when gaps of the capture hid some messages.
//!
//! HTTP/1.1 answers requests in order, so without gaps the next response answers the oldest
//! waiting request. A gap can hide requests and responses, and how many is known only within
//! bounds (from the gap's length, see `gap`). The queue keeps exactly what is certain: the
//! requests seen, bounds on the hidden requests before each, and bounds on where the next
//! response lands relative to the oldest request seen. A response is paired only when every
//! count within those bounds pairs it with the same request; a request that could have been
//! answered by a response lost, or by one that could not be placed, is given up (reported
//! without a status) rather than guessed: a status on the wrong request is worse than none.
//!
//! One more fact narrows the bounds: a response answers a request already sent (the daemon
//! feeds a request before its response). So with one request waiting and nothing hidden after
//! it, the next response is its answer whatever was lost before.

use std::collections::VecDeque;

/// A number known to lie in `min..=max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Count {
    pub min: u64,
    pub max: u64,
}

impl Count {
    pub const ZERO: Count = Count { min: 0, max: 0 };
    pub const ONE: Count = Count { min: 1, max: 1 };

    pub fn new(min: u64, max: u64) -> Self {
        Count {
            min,
            max: max.max(min),
        }
    }

    pub fn plus_one(self) -> Count {
        self.plus(Count::ONE)
    }

    pub fn plus(self, o: Count) -> Count {
        Count {
            min: self.min.saturating_add(o.min),
            max: self.max.saturating_add(o.max),
        }
    }

    /// What is left of `self` after `o` of them are taken (never below zero).
    pub fn minus(self, o: Count) -> Count {
        Count {
            min: self.min.saturating_sub(o.max),
            max: self.max.saturating_sub(o.min),
        }
    }
}

/// A request seen, with the hidden requests sent just before it (and after the previous one).
#[derive(Debug)]
struct Waiting<T> {
    hidden_before: Count,
    request: T,
}

/// What became of a response (see [`Queue::answer`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Answered<T> {
    /// It answers this request, certainly.
    Paired(T),
    /// It answers a hidden request, or one that cannot be told for sure.
    Unpaired,
    /// Nothing it could answer is waiting.
    Orphan,
}

/// Requests waiting for responses. See the module documentation.
#[derive(Debug)]
pub struct Queue<T> {
    waiting: VecDeque<Waiting<T>>,
    /// Hidden requests after the newest one seen, still unanswered.
    trailing: Count,
    /// Where the next response lands, relative to the oldest waiting request: 0 is that
    /// request, below 0 a hidden request before it, above 0 a later one (the oldest's response
    /// was lost). Only meaningful while a request waits.
    offset: (i64, i64),
    /// Requests are being hidden after the newest one, how many is not known yet (see
    /// [`Queue::open_hidden`]).
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

/// Counts as offsets; a count beyond `i64::MAX` (no real gap) saturates.
fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl<T> Queue<T> {
    /// Requests seen and waiting.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// The newest request seen, if it still waits.
    pub fn newest_mut(&mut self) -> Option<&mut T> {
        self.waiting.back_mut().map(|w| &mut w.request)
    }

    /// A request was sent. Beyond `cap` waiting, the oldest is returned: the caller gives it
    /// up, and it counts as hidden from then on (its response, if it comes, is not paired with
    /// a younger request).
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

    /// `n` requests were sent that the capture did not show.
    pub fn hide(&mut self, n: Count) {
        self.trailing = self.trailing.plus(n);
    }

    /// The capture hides requests after the newest one, and how many is known only once the
    /// stretch ends ([`Queue::close_hidden`]). Until then they may be any number: a response
    /// may answer one of them whatever waits before.
    pub fn open_hidden(&mut self) {
        self.open = true;
    }

    /// The stretch opened by [`Queue::open_hidden`] held `n` requests.
    pub fn close_hidden(&mut self, n: Count) {
        if self.open {
            self.trailing = self.trailing.plus(n).minus(self.beyond);
        } else {
            self.trailing = self.trailing.plus(n);
        }
        self.open = false;
        self.beyond = Count::ZERO;
    }

    /// `x` responses answered hidden requests after every request seen.
    fn land_beyond(&mut self, x: Count) {
        if self.open {
            self.beyond = self.beyond.plus(x);
        } else {
            self.trailing = self.trailing.minus(x);
        }
    }

    /// How many requests, counted from the oldest waiting, a response could answer now: what
    /// responses lost before now could have answered at most (see [`Queue::responses_lost`]).
    pub fn answerable(&self) -> u64 {
        self.pending_max()
    }

    /// `n` responses were lost, when at most `answerable` requests could be answered (see
    /// [`Queue::answerable`]; requests sent since cannot be theirs). The requests they
    /// certainly answered go to `give_up`; the ones they may have answered wait until a
    /// response tells (see [`Queue::answer`]).
    pub fn responses_lost(&mut self, n: Count, answerable: u64, give_up: &mut impl FnMut(T)) {
        let n = Count::new(n.min.min(answerable), n.max.min(answerable));
        if self.waiting.is_empty() {
            self.land_beyond(n);
            return;
        }
        let limit = signed(answerable);
        self.offset = (
            self.offset.0.saturating_add(signed(n.min)).min(limit),
            self.offset.1.saturating_add(signed(n.max)).min(limit),
        );
        self.settle_passed(give_up);
    }

    /// A final response arrived: the request it answers if that is certain.
    pub fn answer(&mut self, give_up: &mut impl FnMut(T)) -> Answered<T> {
        if self.waiting.is_empty() {
            if self.open {
                self.beyond = self.beyond.plus_one();
                return Answered::Unpaired;
            }
            if self.trailing.max == 0 {
                return Answered::Orphan;
            }
            // It answers one of the hidden requests, so there is at least one.
            self.trailing = Count::new(self.trailing.min.max(1) - 1, self.trailing.max - 1);
            return Answered::Unpaired;
        }
        let (lo, hi) = self.window();
        if (lo, hi) == (0, 0) {
            return match self.leave_oldest(true) {
                Some(request) => Answered::Paired(request),
                None => Answered::Unpaired,
            };
        }
        self.offset = (lo.saturating_add(1), hi.saturating_add(1));
        self.settle_passed(give_up);
        Answered::Unpaired
    }

    /// The request the next response answers, if that is already certain.
    pub fn certain_mut(&mut self) -> Option<&mut T> {
        if self.waiting.is_empty() || self.window() != (0, 0) {
            return None;
        }
        self.waiting.front_mut().map(|w| &mut w.request)
    }

    /// The requests seen that the next response may answer.
    pub fn candidates(&self) -> impl Iterator<Item = &T> {
        let (lo, hi) = if self.waiting.is_empty() {
            (-1, -1)
        } else {
            self.window()
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

    /// Whether the next response may answer a request not seen (hidden, or never captured):
    /// one whose method, and so the response's framing, is unknown.
    pub fn may_answer_unseen(&self) -> bool {
        if self.waiting.is_empty() {
            return true;
        }
        let (lo, hi) = self.window();
        let hidden_after = self.open
            || self.trailing.max > 0
            || self.waiting.iter().skip(1).any(|w| w.hidden_before.max > 0);
        lo < 0 || (hi > 0 && hidden_after)
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
    }

    /// Where the next response may land, given that it answers a request already sent.
    fn window(&self) -> (i64, i64) {
        if self.offset.1 <= 0 {
            // At or before the oldest waiting request: always sent (the usual case, cheaply).
            return self.offset;
        }
        let last = signed(self.pending_max()).saturating_sub(1);
        (self.offset.0, self.offset.1.min(last))
    }

    /// Requests waiting from the oldest seen on, hidden ones included, at most.
    fn pending_max(&self) -> u64 {
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

    /// Give up the oldest requests while the next response certainly lands beyond them.
    fn settle_passed(&mut self, give_up: &mut impl FnMut(T)) {
        while self.offset.0 >= 1 {
            let Some(request) = self.leave_oldest(false) else {
                break;
            };
            give_up(request);
        }
    }

    /// The oldest request leaves the queue. `answered`: by the response just placed, so the
    /// next response answers the request sent after it. Otherwise the next response keeps its
    /// place in the sequence (the oldest's response was lost, or will be dropped).
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A queue of request numbers, what it paired and what it gave up.
    struct Q {
        q: Queue<u32>,
        given_up: Vec<u32>,
    }

    impl Q {
        fn new(requests: &[u32]) -> Self {
            let mut q = Q {
                q: Queue::default(),
                given_up: Vec::new(),
            };
            for r in requests {
                assert_eq!(q.q.push(*r, 64), None);
            }
            q
        }
        fn answer(&mut self) -> Answered<u32> {
            let given_up = &mut self.given_up;
            self.q.answer(&mut |r| given_up.push(r))
        }
        fn lost(&mut self, min: u64, max: u64) {
            let given_up = &mut self.given_up;
            let now = self.q.answerable();
            self.q
                .responses_lost(Count::new(min, max), now, &mut |r| given_up.push(r));
        }
    }

    #[test]
    fn in_order_without_gaps() {
        let mut q = Q::new(&[1, 2]);
        assert_eq!(q.answer(), Answered::Paired(1));
        assert_eq!(q.answer(), Answered::Paired(2));
        assert_eq!(q.answer(), Answered::Orphan);
    }

    #[test]
    fn lost_responses_pinned_by_what_was_sent() {
        // One or two responses lost of three waiting: 1 certainly, 2 perhaps.
        let mut q = Q::new(&[1, 2, 3]);
        q.lost(1, 2);
        assert_eq!(q.given_up, [1]);
        // Two requests may be answered next: neither is paired; 2 is given up.
        assert_eq!(q.answer(), Answered::Unpaired);
        assert_eq!(q.given_up, [1, 2]);
        // Only 3 can be left: the next response is its answer.
        assert_eq!(q.answer(), Answered::Paired(3));

        // With one request left the lost count does not matter.
        let mut q = Q::new(&[1, 2]);
        q.lost(1, 50);
        assert_eq!(q.answer(), Answered::Paired(2));
        // Lost responses never answer a request sent after.
        let mut q = Q::new(&[1]);
        q.lost(1, 50);
        assert_eq!(q.given_up, [1]);
        assert_eq!(q.q.push(2, 64), None);
        assert_eq!(q.answer(), Answered::Paired(2));
        // Nor when they are counted only later (the stretch ended after 2 was sent).
        let mut q = Q::new(&[1]);
        let then = q.q.answerable();
        assert_eq!(q.q.push(2, 64), None);
        let given_up = &mut q.given_up;
        q.q.responses_lost(Count::new(1, 50), then, &mut |r| given_up.push(r));
        assert_eq!(q.given_up, [1]);
        assert_eq!(q.answer(), Answered::Paired(2));
    }

    #[test]
    fn perhaps_lost_waits_for_a_response_to_tell() {
        let mut q = Q::new(&[1, 2]);
        q.lost(0, 1);
        assert!(q.given_up.is_empty());
        // 1 or 2: not paired. 1 is given up (answered by it, or lost).
        assert_eq!(q.answer(), Answered::Unpaired);
        assert_eq!(q.given_up, [1]);
        // 2 may have been answered already; with 3 sent, the next may be 2's or 3's.
        assert_eq!(q.q.push(3, 64), None);
        assert_eq!(q.answer(), Answered::Unpaired);
        assert_eq!(q.given_up, [1, 2]);
        let mut drained = Vec::new();
        q.q.drain(|r, maybe| drained.push((r, maybe)));
        assert_eq!(drained, [(3, true)]);
    }

    #[test]
    fn hidden_requests() {
        // Exactly one hidden before 2: its response comes first, unpaired.
        let mut q = Q::new(&[1]);
        q.q.hide(Count::ONE);
        assert_eq!(q.q.push(2, 64), None);
        assert_eq!(q.answer(), Answered::Paired(1));
        assert_eq!(q.answer(), Answered::Unpaired);
        assert_eq!(q.answer(), Answered::Paired(2));
        // Zero or one: the response after 1's may be 2's or the hidden one's.
        let mut q = Q::new(&[1]);
        q.q.hide(Count::new(0, 1));
        assert_eq!(q.q.push(2, 64), None);
        assert_eq!(q.answer(), Answered::Paired(1));
        assert_eq!(q.answer(), Answered::Unpaired);
        // While hiding is open, a response may answer a hidden request whatever waits: the
        // front request is still certain (hidden ones come after it).
        let mut q = Q::new(&[1, 2]);
        q.q.open_hidden();
        assert_eq!(q.answer(), Answered::Paired(1));
        q.lost(1, 1);
        assert_eq!(q.given_up, [2]);
        // The stretch held two requests; the next response answered one of them.
        assert_eq!(q.answer(), Answered::Unpaired);
        q.q.close_hidden(Count::new(2, 2));
        assert_eq!(q.q.push(3, 64), None);
        assert_eq!(q.answer(), Answered::Unpaired);
        assert_eq!(q.answer(), Answered::Paired(3));
    }

    #[test]
    fn cap_keeps_the_order() {
        let mut q = Queue::default();
        assert_eq!(q.push(1, 2), None);
        assert_eq!(q.push(2, 2), None);
        assert_eq!(q.push(3, 2), Some(1));
        let mut given_up = Vec::new();
        // 1's response still comes first: it pairs with nothing.
        assert_eq!(q.answer(&mut |r| given_up.push(r)), Answered::Unpaired);
        assert_eq!(q.answer(&mut |r| given_up.push(r)), Answered::Paired(2));
        assert!(given_up.is_empty());
    }
}
