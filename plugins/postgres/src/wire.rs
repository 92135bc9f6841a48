//! Message framing: a typed message is a type byte and a big-endian length that counts itself
//! (not the type byte); the client's first messages (StartupMessage, SSLRequest,
//! GSSENCRequest, CancelRequest) have no type byte. A [`Reader`] per direction frames a stream
//! cut into segments, keeps at most a bounded prefix of each body (statement text, tags, error
//! fields) and skips the rest by count, never buffering a large DataRow or CopyData.

/// Longest message accepted: PostgreSQL's own limit for most messages is 1 GiB.
pub(crate) const MAX_LEN: u64 = 1 << 30;

/// A message as framed.
#[derive(Debug)]
pub(crate) struct Msg<'a> {
    /// Type byte; 0 for an untyped (startup) message.
    pub ty: u8,
    /// The first bytes of the body, at most the reader's `keep`.
    pub body: &'a [u8],
    /// Bytes of the message on the wire.
    pub wire: u64,
    /// Bytes of the body were lost in a gap: `body` is a true prefix only up to them.
    pub cut: bool,
}

/// Why framing stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Broken {
    /// A header not plausible for this side (its type or its length).
    Implausible,
}

/// One direction's framing.
#[derive(Debug)]
pub(crate) struct Reader {
    keep: usize,
    /// Untyped messages (the client's startup) come next.
    pub untyped: bool,
    head: [u8; 5],
    head_len: usize,
    ty: u8,
    len: u64,
    body: Vec<u8>,
    /// Body bytes still to come for the current message (after the header).
    remaining: u64,
    in_body: bool,
    /// Bytes of the current body were lost: the prefix kept stops there.
    cut: bool,
}

impl Reader {
    pub(crate) fn new(keep: usize, untyped: bool) -> Self {
        Reader {
            keep,
            untyped,
            head: [0; 5],
            head_len: 0,
            ty: 0,
            len: 0,
            body: Vec::new(),
            remaining: 0,
            in_body: false,
            cut: false,
        }
    }

    /// Bytes of buffer allocated.
    pub(crate) fn capacity(&self) -> usize {
        self.body.capacity()
    }

    /// `n` bytes of the stream are missing: whether the framing holds (they were inside the
    /// current message's body; the message is delivered, cut, when its end comes).
    pub(crate) fn skip(&mut self, n: u64) -> bool {
        if !self.in_body || self.remaining < n {
            return false;
        }
        self.remaining -= n;
        self.cut = true;
        true
    }

    /// The current message's body has all come (the rest in a gap): [`Reader::feed`] delivers
    /// it, even with no data.
    pub(crate) fn body_done(&self) -> bool {
        self.in_body && self.remaining == 0
    }

    /// `n` bytes of the stream are missing and [`Reader::skip`] refused them: the framing is
    /// lost. Returns how many of the missing bytes may have held whole messages (those past
    /// the end of the message being read, plus a header begun before the gap); the reader
    /// starts over at the next message boundary it is given.
    pub(crate) fn lose(&mut self, n: u64) -> u64 {
        let beyond = if self.in_body {
            n.saturating_sub(self.remaining)
        } else {
            n + self.head_len as u64
        };
        self.in_body = false;
        self.head_len = 0;
        self.remaining = 0;
        self.cut = false;
        self.body.clear();
        beyond
    }

    fn head_size(&self) -> usize {
        if self.untyped { 4 } else { 5 }
    }

    /// Feed `data`; `each` gets every complete message, with `valid` deciding whether a type
    /// byte can come from this side. Stops at an implausible header.
    pub(crate) fn feed(
        &mut self,
        mut data: &[u8],
        valid: impl Fn(u8) -> bool,
        mut each: impl FnMut(&mut Self, Msg<'_>),
    ) -> Result<(), Broken> {
        loop {
            if !self.in_body {
                let need = self.head_size() - self.head_len;
                let take = need.min(data.len());
                self.head[self.head_len..self.head_len + take].copy_from_slice(&data[..take]);
                self.head_len += take;
                data = &data[take..];
                if self.head_len < self.head_size() {
                    return Ok(());
                }
                let (ty, l) = if self.untyped {
                    (0, &self.head[..4])
                } else {
                    (self.head[0], &self.head[1..5])
                };
                let len = u64::from(u32::from_be_bytes([l[0], l[1], l[2], l[3]]));
                if !(4..=MAX_LEN).contains(&len) || (!self.untyped && !valid(ty)) {
                    return Err(Broken::Implausible);
                }
                self.ty = ty;
                self.len = len - 4;
                self.remaining = self.len;
                self.body.clear();
                self.in_body = true;
                self.cut = false;
            }
            let take = (self.remaining.min(data.len() as u64)) as usize;
            let room = if self.cut {
                0
            } else {
                self.keep.saturating_sub(self.body.len()).min(take)
            };
            self.body.extend_from_slice(&data[..room]);
            self.remaining -= take as u64;
            data = &data[take..];
            if self.remaining > 0 {
                return Ok(());
            }
            self.in_body = false;
            self.head_len = 0;
            let body = std::mem::take(&mut self.body);
            let hs = self.head_size() as u64;
            each(
                self,
                Msg {
                    ty: self.ty,
                    body: &body,
                    wire: hs + self.len,
                    cut: self.cut,
                },
            );
            // Keep the allocation.
            self.body = body;
            self.body.clear();
            if data.is_empty() {
                return Ok(());
            }
        }
    }
}

/// A ReadyForQuery message: `Z`, length 5, transaction status idle / in a transaction / in a
/// failed transaction.
pub(crate) const READY_LEN: usize = 6;

/// Is `b` a whole ReadyForQuery?
pub(crate) fn ready_for_query(b: &[u8]) -> bool {
    b.len() >= READY_LEN && b[..5] == *b"Z\0\0\0\x05" && matches!(b[5], b'I' | b'T' | b'E')
}

/// Do the server bytes `d`, taken to start at a message boundary, frame as plausible messages
/// up to their end (the last one may run past it)? Every ReadyForQuery among them must be a
/// well-formed one.
pub(crate) fn backend_frames_cleanly(mut d: &[u8]) -> bool {
    loop {
        let Some(&ty) = d.first() else {
            return true;
        };
        if !backend(ty) {
            return false;
        }
        if d.len() < 5 {
            return true;
        }
        let len = u64::from(u32::from_be_bytes([d[1], d[2], d[3], d[4]]));
        if !(4..=MAX_LEN).contains(&len) || (ty == b'Z' && len != 5) {
            return false;
        }
        if ty == b'Z' && d.len() >= READY_LEN && !ready_for_query(d) {
            return false;
        }
        let end = 1 + len as usize;
        if end >= d.len() {
            return true;
        }
        d = &d[end..];
    }
}

/// Where a ReadyForQuery begins in `d` after which the rest frames cleanly: a resynchronisation
/// point after a gap that hid message boundaries.
pub(crate) fn find_ready(d: &[u8]) -> Option<usize> {
    (0..d.len().saturating_sub(READY_LEN - 1))
        .find(|&i| ready_for_query(&d[i..]) && backend_frames_cleanly(&d[i + READY_LEN..]))
}

/// A NUL-terminated string at the start of `b`, and the rest after its NUL (`None` when cut).
pub(crate) fn cstr(b: &[u8]) -> (&[u8], Option<&[u8]>) {
    match b.iter().position(|c| *c == 0) {
        Some(i) => (&b[..i], Some(&b[i + 1..])),
        None => (b, None),
    }
}

/// Big-endian u32 at the start of `b`.
pub(crate) fn be32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

/// The protocol code of a StartupMessage for protocol 3.0.
pub(crate) const PROTOCOL_3: u32 = 196_608;
/// SSLRequest.
pub(crate) const SSL_REQUEST: u32 = 80_877_103;
/// GSSENCRequest.
pub(crate) const GSSENC_REQUEST: u32 = 80_877_104;
/// CancelRequest.
pub(crate) const CANCEL_REQUEST: u32 = 80_877_102;

/// Message types a client sends (after the startup).
pub(crate) fn frontend(ty: u8) -> bool {
    matches!(
        ty,
        b'Q' | b'P'
            | b'B'
            | b'E'
            | b'D'
            | b'C'
            | b'S'
            | b'H'
            | b'F'
            | b'X'
            | b'd'
            | b'c'
            | b'f'
            | b'p'
    )
}

/// Message types a server sends.
pub(crate) fn backend(ty: u8) -> bool {
    matches!(
        ty,
        b'R' | b'S'
            | b'K'
            | b'Z'
            | b'T'
            | b'D'
            | b'C'
            | b'E'
            | b'N'
            | b'A'
            | b'I'
            | b'1'
            | b'2'
            | b'3'
            | b'n'
            | b't'
            | b's'
            | b'G'
            | b'H'
            | b'W'
            | b'd'
            | b'c'
            | b'V'
            | b'v'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_ready_for_query_followed_by_clean_frames() {
        let z = b"Z\0\0\0\x05I";
        // In the middle of a row, then a ReadyForQuery and the next response's start.
        let d = [b"ow bytes".as_slice(), z, b"T\0\0\0\x06\0\0C\0\0"].concat();
        assert_eq!(find_ready(&d), Some(8));
        // A `Z` followed by bytes that are no message is passed over.
        let d = [z.as_slice(), b"\x01\x02\x03", z].concat();
        assert_eq!(find_ready(&d), Some(9));
        // Wrong length or status: not a ReadyForQuery.
        assert_eq!(find_ready(b"Z\0\0\0\x06II"), None);
        assert_eq!(find_ready(b"Z\0\0\0\x05X"), None);
        assert_eq!(find_ready(b"Z\0\0\0\x05"), None);
    }

    #[test]
    fn a_lost_framing_says_what_may_have_held_messages() {
        let mut r = Reader::new(64, false);
        r.feed(b"D\0\0\0\x14ab", backend, |_, _| {}).unwrap();
        // 14 body bytes still to come: a gap of 20 hides them and 6 bytes past the row.
        assert!(!r.skip(20));
        assert_eq!(r.lose(20), 6);
        // At a boundary again: a whole message frames.
        let mut n = 0;
        r.feed(b"Z\0\0\0\x05I", backend, |_, m| {
            assert_eq!(m.ty, b'Z');
            n += 1;
        })
        .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn frames_across_segments_and_bounds_bodies() {
        let mut r = Reader::new(4, false);
        let mut got = Vec::new();
        let msg = [b"Q\0\0\0\x0dSELECT 1\0".as_slice(), b"S\0\0\0\x04"].concat();
        for chunk in msg.chunks(3) {
            r.feed(chunk, frontend, |_, m| {
                got.push((m.ty, m.wire, m.body.to_vec()))
            })
            .unwrap();
        }
        assert_eq!(got, vec![(b'Q', 14, b"SELE".to_vec()), (b'S', 5, vec![])]);
        assert_eq!(
            r.feed(b"Z\0\0\0\x04", frontend, |_, _| {}),
            Err(Broken::Implausible)
        );
        let mut r = Reader::new(64, false);
        assert_eq!(
            r.feed(b"Q\0\0\0\x02", frontend, |_, _| {}),
            Err(Broken::Implausible)
        );
    }
}
