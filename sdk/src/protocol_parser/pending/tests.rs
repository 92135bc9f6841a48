//! The queue as MySQL uses it (with `fits`), then as HTTP does (`answer_in_order`, lost
//! counts clamped): the tests each plugin had for its own copy.

use super::*;

/// A queue of request numbers, and what it gave up.
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
        for c in requests {
            assert_eq!(q.q.push(*c, 64), None);
        }
        q
    }
    fn answer(&mut self) -> Answered<u32> {
        let now = self.q.answerable();
        let given_up = &mut self.given_up;
        self.q.answer(now, |_| true, &mut |r| given_up.push(r))
    }
    fn lost(&mut self, min: u64, max: u64) {
        let now = self.q.answerable();
        let given_up = &mut self.given_up;
        self.q
            .lost(Count::new(min, max), now, &mut |r| given_up.push(r));
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

    // With one request left the count lost does not matter.
    let mut q = Q::new(&[1, 2]);
    q.lost(0, 50);
    assert_eq!(q.answer(), Answered::Unpaired);
    assert_eq!(q.given_up, [1]);
    assert_eq!(q.answer(), Answered::Paired(2));
    // Lost responses never answer a request sent after they were read.
    let mut q = Q::new(&[1]);
    let then = q.q.answerable();
    assert_eq!(q.q.push(2, 64), None);
    let given_up = &mut q.given_up;
    q.q.lost(Count::new(1, 50), then, &mut |r| given_up.push(r));
    assert_eq!(q.given_up, [1]);
    assert_eq!(q.answer(), Answered::Paired(2));
}

#[test]
fn a_response_read_before_a_request_was_sent_is_not_its_answer() {
    let mut q = Q::new(&[1, 2]);
    q.lost(0, 1);
    let then = q.q.answerable();
    assert_eq!(then, 2);
    // Read while 1 and 2 were sent; 3 is sent before the response is told to the queue.
    assert_eq!(q.q.push(3, 64), None);
    let given_up = &mut q.given_up;
    assert_eq!(
        q.q.answer(1, |_| true, &mut |r| given_up.push(r)),
        Answered::Paired(1)
    );
    assert_eq!(q.q.answer(0, |_| true, &mut |_| ()), Answered::Orphan);
}

#[test]
fn a_request_given_up_past_the_cap_can_still_have_lost_its_response() {
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
fn hidden_requests() {
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
    // Responses beyond every request seen answer hidden ones: counted off the stretch.
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
        q.q.answer(now, fits, &mut |r| given_up.push(r)),
        Answered::Paired(2)
    );
    assert_eq!(q.given_up, [1]);
    assert_eq!(q.answer(), Answered::Paired(3));
    // Both can: not placed.
    let mut q = Q::new(&[1, 2]);
    q.lost(0, 1);
    assert_eq!(q.answer(), Answered::Unpaired);
    // A hidden request may sit between: no narrowing.
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
    q.q.drain(|r, maybe| drained.push((r, maybe)));
    // At most one was lost: 1's, if any; 2 was never answered.
    assert_eq!(drained, [(1, true), (2, false)]);
    let mut q = Q::new(&[1]);
    let mut drained = Vec::new();
    q.q.drain(|r, maybe| drained.push((r, maybe)));
    assert_eq!(drained, [(1, false)]);
}

// As HTTP uses the queue (`plugins/http/src/pairing.rs`): no `fits`, and lost responses counted
// at most what was answerable, then the next one's place narrowed to it.
fn http_lost(q: &mut Queue<u32>, n: Count, then: u64, give_up: &mut impl FnMut(u32)) {
    let n = Count::new(n.min.min(then), n.max.min(then));
    q.lost(n, then, give_up);
    q.limit_next(then, give_up);
}

impl Q {
    fn answer_in_order(&mut self) -> Answered<u32> {
        let given_up = &mut self.given_up;
        self.q.answer_in_order(&mut |r| given_up.push(r))
    }
    fn http_lost(&mut self, min: u64, max: u64) {
        let now = self.q.answerable();
        let given_up = &mut self.given_up;
        http_lost(&mut self.q, Count::new(min, max), now, &mut |r| {
            given_up.push(r)
        });
    }
}

#[test]
fn in_order_without_gaps_http() {
    let mut q = Q::new(&[1, 2]);
    assert_eq!(q.answer_in_order(), Answered::Paired(1));
    assert_eq!(q.answer_in_order(), Answered::Paired(2));
    assert_eq!(q.answer_in_order(), Answered::Orphan);
}

#[test]
fn lost_responses_pinned_by_what_was_sent_http() {
    // One or two responses lost of three waiting: 1 certainly, 2 perhaps.
    let mut q = Q::new(&[1, 2, 3]);
    q.http_lost(1, 2);
    assert_eq!(q.given_up, [1]);
    // Two requests may be answered next: neither is paired; 2 is given up.
    assert_eq!(q.answer_in_order(), Answered::Unpaired);
    assert_eq!(q.given_up, [1, 2]);
    // Only 3 can be left: the next response is its answer.
    assert_eq!(q.answer_in_order(), Answered::Paired(3));

    // With one request left the lost count does not matter.
    let mut q = Q::new(&[1, 2]);
    q.http_lost(1, 50);
    assert_eq!(q.answer_in_order(), Answered::Paired(2));
    // Lost responses never answer a request sent after.
    let mut q = Q::new(&[1]);
    q.http_lost(1, 50);
    assert_eq!(q.given_up, [1]);
    assert_eq!(q.q.push(2, 64), None);
    assert_eq!(q.answer_in_order(), Answered::Paired(2));
    // Nor when they are counted only later (the stretch ended after 2 was sent).
    let mut q = Q::new(&[1]);
    let then = q.q.answerable();
    assert_eq!(q.q.push(2, 64), None);
    let given_up = &mut q.given_up;
    http_lost(&mut q.q, Count::new(1, 50), then, &mut |r| given_up.push(r));
    assert_eq!(q.given_up, [1]);
    assert_eq!(q.answer_in_order(), Answered::Paired(2));
}

#[test]
fn perhaps_lost_waits_for_a_response_to_tell_http() {
    let mut q = Q::new(&[1, 2]);
    q.http_lost(0, 1);
    assert!(q.given_up.is_empty());
    // 1 or 2: not paired. 1 is given up (answered by it, or lost).
    assert_eq!(q.answer_in_order(), Answered::Unpaired);
    assert_eq!(q.given_up, [1]);
    // 2 may have been answered already; with 3 sent, the next may be 2's or 3's.
    assert_eq!(q.q.push(3, 64), None);
    assert_eq!(q.answer_in_order(), Answered::Unpaired);
    assert_eq!(q.given_up, [1, 2]);
    let mut drained = Vec::new();
    q.q.drain(|r, maybe| drained.push((r, maybe)));
    assert_eq!(drained, [(3, true)]);
}

#[test]
fn hidden_requests_http() {
    // Exactly one hidden before 2: its response comes first, unpaired.
    let mut q = Q::new(&[1]);
    q.q.hide(Count::ONE);
    assert_eq!(q.q.push(2, 64), None);
    assert_eq!(q.answer_in_order(), Answered::Paired(1));
    assert_eq!(q.answer_in_order(), Answered::Unpaired);
    assert_eq!(q.answer_in_order(), Answered::Paired(2));
    // Zero or one: the response after 1's may be 2's or the hidden one's.
    let mut q = Q::new(&[1]);
    q.q.hide(Count::new(0, 1));
    assert_eq!(q.q.push(2, 64), None);
    assert_eq!(q.answer_in_order(), Answered::Paired(1));
    assert_eq!(q.answer_in_order(), Answered::Unpaired);
    // While hiding is open, a response may answer a hidden request whatever waits: the
    // front request is still certain (hidden ones come after it).
    let mut q = Q::new(&[1, 2]);
    q.q.open_hidden();
    assert_eq!(q.answer_in_order(), Answered::Paired(1));
    q.http_lost(1, 1);
    assert_eq!(q.given_up, [2]);
    // The stretch held two requests; the next response answered one of them.
    assert_eq!(q.answer_in_order(), Answered::Unpaired);
    q.q.close_hidden(Count::new(2, 2));
    assert_eq!(q.q.push(3, 64), None);
    assert_eq!(q.answer_in_order(), Answered::Unpaired);
    assert_eq!(q.answer_in_order(), Answered::Paired(3));
}

#[test]
fn cap_keeps_the_order_http() {
    let mut q = Queue::default();
    assert_eq!(q.push(1, 2), None);
    assert_eq!(q.push(2, 2), None);
    assert_eq!(q.push(3, 2), Some(1));
    let mut given_up = Vec::new();
    // 1's response still comes first: it pairs with nothing.
    assert_eq!(
        q.answer_in_order(&mut |r| given_up.push(r)),
        Answered::Unpaired
    );
    assert_eq!(
        q.answer_in_order(&mut |r| given_up.push(r)),
        Answered::Paired(2)
    );
    assert!(given_up.is_empty());
}
