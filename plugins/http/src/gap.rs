//! Stretches of a direction whose message boundaries are unknown: from a gap that did not fall
//! inside a body of known length (or from bytes that are not a message) to the next message
//! start. How many messages such a stretch held is known only within bounds, from two facts:
//! no HTTP/1 message is shorter than [`MIN_MESSAGE`] bytes, and the scan for the next start
//! (see `resync`) finds every start in the bytes it sees, so the messages it did not find
//! started in the bytes it did not see.

use crate::detect::MAX_METHOD;
use sonde_sdk::protocol_parser::pending::Count;

/// The shortest message: `HTTP/1.1 200` or `A / HTTP/1.1`, an LF, and the empty line.
pub(crate) const MIN_MESSAGE: u64 = 14;

/// One stretch of unknown boundaries, as it is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Region {
    /// It began where a message could begin (the previous one was complete), rather than
    /// inside a message.
    at_boundary: bool,
    /// Bytes so far, hidden or seen.
    len: u64,
    hidden: u64,
    /// Offsets in the stretch of its first and last hidden byte.
    first_hidden: Option<u64>,
    last_hidden: u64,
    /// Starts it saw that a later gap cut before they could be confirmed.
    maybe: u64,
    /// It began just after a request head cut inside its method (these many bytes of it):
    /// that request counts once, and the start after the gap may be its rest.
    cut_method: Option<u64>,
}

impl Region {
    pub(crate) fn new(at_boundary: bool) -> Self {
        Region {
            at_boundary,
            ..Region::default()
        }
    }

    /// `n` bytes the capture did not show.
    pub(crate) fn hidden(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        self.first_hidden.get_or_insert(self.len);
        self.len = self.len.saturating_add(n);
        self.last_hidden = self.len - 1;
        self.hidden = self.hidden.saturating_add(n);
    }

    /// `n` bytes seen, holding no message start.
    pub(crate) fn seen(&mut self, n: u64) {
        self.len = self.len.saturating_add(n);
    }

    /// A start was seen, then cut by a gap: perhaps a message, perhaps not.
    pub(crate) fn maybe_message(&mut self) {
        self.maybe += 1;
    }

    /// Begins just after `n` bytes of a request method, cut by the gap.
    pub(crate) fn after_cut_method(n: u64) -> Self {
        Region {
            cut_method: Some(n),
            ..Region::default()
        }
    }

    /// Whether a request line confirmed after it, whose method is not a standard one, may be
    /// the rest of the request cut inside its method: nothing seen between them, and the cut
    /// bytes, the hidden ones and at least one more fit in a method.
    pub(crate) fn may_continue_cut(&self) -> bool {
        self.cut_method
            .is_some_and(|c| self.len == self.hidden && c + self.hidden < MAX_METHOD as u64)
    }

    /// Whether its last bytes are hidden ones: a start found right after may have lost its
    /// first bytes to the gap (`AD /x HTTP/1.1` may be what is left of `HEAD`).
    pub(crate) fn ends_hidden(&self) -> bool {
        self.first_hidden.is_some() && self.last_hidden + 1 == self.len
    }

    /// Whether the capture hid anything in it (without, it holds no message).
    pub(crate) fn has_hidden(&self) -> bool {
        self.hidden > 0
    }

    /// The messages that started in the stretch (and the cut request before it), now that it
    /// has ended: at the end of the stream, or at a message start, which `continues_cut` if it
    /// is the rest of the cut request (see [`Region::may_continue_cut`]).
    pub(crate) fn messages(&self, continues_cut: bool) -> Count {
        let n = self.started();
        match self.cut_method {
            None => n,
            // One message with it unless the cut one could have ended in the gap.
            Some(c) if continues_cut => {
                let room = c.saturating_add(self.hidden) >= MIN_MESSAGE;
                Count::new(n.min, n.max + u64::from(room))
            }
            Some(_) => n.plus(Count::ONE),
        }
    }

    fn started(&self) -> Count {
        let Some(first) = self.first_hidden else {
            return Count::new(0, self.maybe);
        };
        // Starts lie in hidden bytes, at least MIN_MESSAGE apart, the last at least
        // MIN_MESSAGE before the end.
        let starts = match self.len.checked_sub(MIN_MESSAGE) {
            Some(latest) if latest.min(self.last_hidden) >= first => {
                ((latest.min(self.last_hidden) - first) / MIN_MESSAGE + 1).min(self.hidden)
            }
            _ => 0,
        };
        // At a boundary the first byte begins the next message, if one fits.
        let min = u64::from(self.at_boundary && first == 0 && starts > 0);
        Count::new(min, starts.saturating_add(self.maybe))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hidden(at_boundary: bool, n: u64) -> Region {
        let mut r = Region::new(at_boundary);
        r.hidden(n);
        r
    }

    #[test]
    fn bounds_from_lengths() {
        // At a boundary: at least the message that began there.
        let m = |r: &Region| r.messages(false);
        assert_eq!(m(&hidden(true, 14)), Count::new(1, 1));
        assert_eq!(m(&hidden(true, 27)), Count::new(1, 1));
        assert_eq!(m(&hidden(true, 28)), Count::new(1, 2));
        assert_eq!(m(&hidden(true, 1000)), Count::new(1, 71));
        // Too short for a message: filler (an extra CR LF), nothing lost.
        assert_eq!(m(&hidden(true, 2)), Count::ZERO);
        // Inside a message: its rest may be all there was.
        assert_eq!(m(&hidden(false, 1000)), Count::new(0, 71));
        // Bytes seen after the hidden ones may end a message that began hidden.
        let mut r = hidden(true, 2);
        r.seen(30);
        assert_eq!(m(&r), Count::new(1, 1));
        // Bytes seen first hold no start (the scan would have found it).
        let mut r = Region::new(true);
        r.seen(100);
        r.hidden(20);
        assert_eq!(m(&r), Count::new(0, 1));
        assert_eq!(m(&Region::new(true)), Count::ZERO);
        let mut r = Region::new(false);
        r.maybe_message();
        assert_eq!(m(&r), Count::new(0, 1));
    }

    #[test]
    fn request_cut_inside_its_method() {
        // "H", a gap of 1, "AD /x HTTP/1.1": one request, not two.
        let mut r = Region::after_cut_method(1);
        r.hidden(1);
        assert!(r.may_continue_cut());
        assert_eq!(r.messages(true), Count::ZERO);
        // Room for the cut request to end in the gap, the start found being the rest of
        // another that began there.
        let mut r = Region::after_cut_method(2);
        r.hidden(12);
        assert!(r.may_continue_cut());
        assert_eq!(r.messages(true), Count::new(0, 1));
        // The start found is another request: the cut one counts.
        assert_eq!(r.messages(false), Count::ONE);
        // Too long a gap for one method.
        let mut r = Region::after_cut_method(2);
        r.hidden(30);
        assert!(!r.may_continue_cut());
        assert_eq!(r.messages(false), Count::new(1, 3));
        let mut r = Region::after_cut_method(2);
        r.hidden(3);
        r.seen(5);
        assert!(!r.may_continue_cut());
    }
}
