//! Which command the next response answers, when capture gaps hid packets.
//!
//! MySQL answers commands in order: without gaps the next response answers the oldest waiting
//! command. A gap on the request side can hide commands, one on the response side can hide
//! responses, and how many is known only within bounds (from the bytes hidden). The queue keeps
//! exactly what is certain: the commands seen, bounds on the hidden commands sent before each,
//! and bounds on where the next response lands relative to the oldest command seen. A response is
//! paired only when every count within those bounds gives the same command; a command that may
//! have been answered by a response lost, or by one that could not be placed, is given up
//! (reported without a status): a status on the wrong command is worse than none.
//!
//! Causality narrows the bounds: a response answers a command already sent (the daemon feeds a
//! command before its response), so the caller says how many commands a response could answer
//! when it was read (see [`Queue::answerable`]).

use std::collections::VecDeque;

/// A number known to lie in `min..=max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Count {
    pub min: u64,
    pub max: u64,
}

impl Count {
    pub const ZERO: Count = Count { min: 0, max: 0 };

    pub fn new(min: u64, max: u64) -> Self {
        Count {
            min,
            max: max.max(min),
        }
    }

    pub fn exactly(n: u64) -> Self {
        Count { min: n, max: n }
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

    /// Either count: the smallest range holding both.
    pub fn either(self, o: Count) -> Count {
        Count {
            min: self.min.min(o.min),
            max: self.max.max(o.max),
        }
    }
}

/// A command seen, with the hidden commands sent just before it (after the previous one).
#[derive(Debug)]
struct Waiting<T> {
    hidden_before: Count,
    cmd: T,
}

/// What became of a response start (see [`Queue::answer`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answered<T> {
    /// It answers this command, certainly.
    Paired(T),
    /// It answers a hidden command, or one that cannot be told for sure.
    Unpaired,
    /// Nothing it could answer was sent.
    Orphan,
}

/// Commands waiting for responses. See the module documentation.
#[derive(Debug)]
pub(crate) struct Queue<T> {
    waiting: VecDeque<Waiting<T>>,
    /// Hidden commands after the newest one seen, still unanswered.
    trailing: Count,
    /// Where the next response lands, relative to the oldest waiting command: 0 is that
    /// command, below 0 a hidden one before it, above 0 a later one (the oldest's response was
    /// lost). Only meaningful while a command waits.
    offset: (i64, i64),
    /// Commands are being hidden after the newest one, how many is not known yet.
    open: bool,
    /// While `open`: responses that landed beyond every command seen.
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
    /// Commands seen and waiting.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// The newest command seen, if it still waits.
    pub fn newest_mut(&mut self) -> Option<&mut T> {
        self.waiting.back_mut().map(|w| &mut w.cmd)
    }

    /// The command the next response certainly answers, if that is known already.
    pub fn certain(&self) -> Option<&T> {
        if self.window(self.answerable()) != (0, 0) {
            return None;
        }
        self.waiting.front().map(|w| &w.cmd)
    }

    /// A command was sent. Beyond `cap` waiting, the oldest is returned: the caller gives it up,
    /// and it keeps its place (its response, if it comes, is not paired with a younger command).
    pub fn push(&mut self, cmd: T, cap: usize) -> Option<T> {
        if self.waiting.is_empty() {
            self.offset = (-signed(self.trailing.max), -signed(self.trailing.min));
        }
        self.waiting.push_back(Waiting {
            hidden_before: std::mem::take(&mut self.trailing),
            cmd,
        });
        if self.waiting.len() <= cap.max(1) {
            return None;
        }
        self.leave_oldest(false)
    }

    /// `n` commands expecting a response were sent after the newest one, unseen.
    pub fn hide(&mut self, n: Count) {
        self.trailing = self.trailing.plus(n);
    }

    /// The capture is hiding commands after the newest one; how many is known only once the
    /// stretch ends ([`Queue::close_hidden`]). Until then a response may answer one of them.
    pub fn open_hidden(&mut self) {
        self.open = true;
    }

    /// The stretch opened by [`Queue::open_hidden`] held `n` commands that expect a response.
    pub fn close_hidden(&mut self, n: Count) {
        if self.open {
            self.trailing = self.trailing.plus(n).minus(self.beyond);
        } else {
            self.trailing = self.trailing.plus(n);
        }
        self.open = false;
        self.beyond = Count::ZERO;
    }

    /// How many commands, counted from where the next response lands at the earliest, a
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

    /// `n` responses started unseen, read when at most `answerable` commands could be answered
    /// (see [`Queue::answerable`]). The commands they certainly answered go to `give_up`; the
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

    /// A response started, read when at most `answerable` commands could be answered: the
    /// command it answers if that is certain. `fits`: whether a command can have it as its
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
            // It answers one of the hidden commands, so there is at least one.
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
                if let Some(cmd) = self.leave_oldest(false) {
                    give_up(cmd);
                }
            }
            return match self.leave_oldest(true) {
                Some(cmd) => Answered::Paired(cmd),
                None => Answered::Unpaired,
            };
        }
        self.offset = (lo.saturating_add(1), hi.saturating_add(1));
        self.settle_passed(give_up);
        Answered::Unpaired
    }

    /// Of the commands at `lo..=hi` (all seen, none hidden between), the only one that `fits`.
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
            .filter(|(j, w)| *j >= lo && fits(&w.cmd))
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
            if let Some(cmd) = self.leave_oldest(false) {
                each(cmd, maybe_lost);
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
            // At or before the oldest waiting command: always sent (the usual case, cheaply).
            return self.offset;
        }
        let last = signed(answerable.min(self.answerable())).saturating_sub(1);
        (self.offset.0, self.offset.1.min(last))
    }

    /// `x` responses answered hidden commands after every command seen.
    fn land_beyond(&mut self, x: Count) {
        if self.open {
            self.beyond = self.beyond.plus(x);
        } else {
            self.trailing = self.trailing.minus(x);
        }
    }

    /// Give up the oldest commands while the next response certainly lands beyond them.
    fn settle_passed(&mut self, give_up: &mut impl FnMut(T)) {
        while self.offset.0 >= 1 {
            let Some(cmd) = self.leave_oldest(false) else {
                break;
            };
            give_up(cmd);
        }
    }

    /// The oldest command leaves the queue. `answered`: by the response just placed, so the next
    /// response answers the command sent after it. Otherwise the next response keeps its place
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
                // Relative to the hidden commands after it: the responses lost land on them.
                self.land_beyond(Count::new(lo.max(0) as u64, hi.max(0) as u64));
                self.offset = (0, 0);
            }
        }
        Some(oldest.cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queue of command numbers, and what it gave up.
    struct Q {
        q: Queue<u32>,
        given_up: Vec<u32>,
    }

    impl Q {
        fn new(cmds: &[u32]) -> Self {
            let mut q = Q {
                q: Queue::default(),
                given_up: Vec::new(),
            };
            for c in cmds {
                assert_eq!(q.q.push(*c, 64), None);
            }
            q
        }
        fn answer(&mut self) -> Answered<u32> {
            let now = self.q.answerable();
            let given_up = &mut self.given_up;
            self.q.answer(now, |_| true, &mut |c| given_up.push(c))
        }
        fn lost(&mut self, min: u64, max: u64) {
            let now = self.q.answerable();
            let given_up = &mut self.given_up;
            self.q
                .lost(Count::new(min, max), now, &mut |c| given_up.push(c));
        }
    }

    #[test]
    fn in_order_without_gaps() {
        let mut q = Q::new(&[1, 2]);
        assert_eq!(q.q.certain(), Some(&1));
        assert_eq!(q.answer(), Answered::Paired(1));
        assert_eq!(q.answer(), Answered::Paired(2));
        assert_eq!(q.answer(), Answered::Orphan);
    }

    #[test]
    fn lost_responses_are_placed_by_what_was_sent() {
        // One or two of three lost: 1 certainly answered, 2 perhaps.
        let mut q = Q::new(&[1, 2, 3]);
        q.lost(1, 2);
        assert_eq!(q.given_up, [1]);
        assert_eq!(q.q.certain(), None);
        assert_eq!(q.answer(), Answered::Unpaired);
        assert_eq!(q.given_up, [1, 2]);
        // Only 3 can be left.
        assert_eq!(q.answer(), Answered::Paired(3));

        // With one command left the count lost does not matter.
        let mut q = Q::new(&[1, 2]);
        q.lost(0, 50);
        assert_eq!(q.answer(), Answered::Unpaired);
        assert_eq!(q.given_up, [1]);
        assert_eq!(q.answer(), Answered::Paired(2));
        // Lost responses never answer a command sent after they were read.
        let mut q = Q::new(&[1]);
        let then = q.q.answerable();
        assert_eq!(q.q.push(2, 64), None);
        let given_up = &mut q.given_up;
        q.q.lost(Count::new(1, 50), then, &mut |c| given_up.push(c));
        assert_eq!(q.given_up, [1]);
        assert_eq!(q.answer(), Answered::Paired(2));
    }

    #[test]
    fn a_response_read_before_a_command_was_sent_is_not_its_answer() {
        let mut q = Q::new(&[1, 2]);
        q.lost(0, 1);
        let then = q.q.answerable();
        assert_eq!(then, 2);
        // Read while 1 and 2 were sent; 3 is sent before the response is told to the queue.
        assert_eq!(q.q.push(3, 64), None);
        let given_up = &mut q.given_up;
        assert_eq!(
            q.q.answer(1, |_| true, &mut |c| given_up.push(c)),
            Answered::Paired(1)
        );
        assert_eq!(q.q.answer(0, |_| true, &mut |_| ()), Answered::Orphan);
    }

    #[test]
    fn a_command_given_up_past_the_cap_can_still_have_lost_its_response() {
        // 1 is given up at the cap, keeping its place: three responses lost are 1's, 2's and
        // 3's, so the next is 4's, not 3's.
        let mut q = Q::new(&[]);
        for c in [1, 2] {
            assert_eq!(q.q.push(c, 2), None);
        }
        assert_eq!(q.q.push(3, 2), Some(1));
        q.lost(3, 3);
        assert_eq!(q.given_up, [2, 3]);
        assert_eq!(q.q.push(4, 2), None);
        assert_eq!(q.answer(), Answered::Paired(4));
    }

    #[test]
    fn hidden_commands() {
        // Exactly one hidden before 2: its response comes first, unpaired.
        let mut q = Q::new(&[1]);
        q.q.open_hidden();
        assert_eq!(q.q.answerable(), u64::MAX);
        q.q.close_hidden(Count::exactly(1));
        assert_eq!(q.q.push(2, 64), None);
        assert_eq!(q.answer(), Answered::Paired(1));
        assert_eq!(q.answer(), Answered::Unpaired);
        assert_eq!(q.answer(), Answered::Paired(2));
        // Zero or one: the response after 1's may be 2's or the hidden one's.
        let mut q = Q::new(&[1]);
        q.q.close_hidden(Count::new(0, 1));
        assert_eq!(q.q.push(2, 64), None);
        assert_eq!(q.answer(), Answered::Paired(1));
        assert_eq!(q.answer(), Answered::Unpaired);
        // While hiding is open the front is still certain (hidden ones come after it).
        let mut q = Q::new(&[1, 2]);
        q.q.open_hidden();
        assert_eq!(q.answer(), Answered::Paired(1));
        assert_eq!(q.answer(), Answered::Paired(2));
        // Responses beyond every command seen answer hidden ones: counted off the stretch.
        assert_eq!(q.answer(), Answered::Unpaired);
        q.q.close_hidden(Count::new(1, 1));
        assert_eq!(q.q.push(3, 64), None);
        assert_eq!(q.answer(), Answered::Paired(3));
    }

    #[test]
    fn cap_keeps_the_order() {
        let mut q = Queue::default();
        assert_eq!(q.push(1, 2), None);
        assert_eq!(q.push(2, 2), None);
        assert_eq!(q.push(3, 2), Some(1));
        // 1's response still comes first: it pairs with nothing.
        let now = q.answerable();
        assert_eq!(q.answer(now, |_| true, &mut |_| ()), Answered::Unpaired);
        let now = q.answerable();
        assert_eq!(q.answer(now, |_| true, &mut |_| ()), Answered::Paired(2));
    }

    #[test]
    fn what_a_response_can_answer_narrows_the_candidates() {
        // 1 or 2 (one response perhaps lost): a response only 2 can have is 2's.
        let mut q = Q::new(&[1, 2, 3]);
        q.lost(0, 1);
        let given_up = &mut q.given_up;
        let now = q.q.answerable();
        let fits = |c: &u32| c.is_multiple_of(2);
        assert_eq!(
            q.q.answer(now, fits, &mut |c| given_up.push(c)),
            Answered::Paired(2)
        );
        assert_eq!(q.given_up, [1]);
        assert_eq!(q.answer(), Answered::Paired(3));
        // Both can: not placed.
        let mut q = Q::new(&[1, 2]);
        q.lost(0, 1);
        assert_eq!(q.answer(), Answered::Unpaired);
        // A hidden command may sit between: no narrowing.
        let mut q = Q::new(&[1]);
        q.q.hide(Count::new(0, 1));
        assert_eq!(q.q.push(2, 64), None);
        q.lost(0, 1);
        let now = q.q.answerable();
        assert_eq!(q.q.answer(now, fits, &mut |_| ()), Answered::Unpaired);
    }

    #[test]
    fn drain_says_what_may_have_been_lost() {
        let mut q = Q::new(&[1, 2]);
        q.lost(0, 1);
        let mut drained = Vec::new();
        q.q.drain(|c, maybe| drained.push((c, maybe)));
        // At most one was lost: 1's, if any; 2 was never answered.
        assert_eq!(drained, [(1, true), (2, false)]);
        let mut q = Q::new(&[1]);
        let mut drained = Vec::new();
        q.q.drain(|c, maybe| drained.push((c, maybe)));
        assert_eq!(drained, [(1, false)]);
    }
}
