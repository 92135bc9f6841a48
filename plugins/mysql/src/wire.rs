//! The wire format: packet framing (3-byte length, sequence id, 16 MiB continuations) as a
//! streaming [`Reader`] that keeps only a bounded prefix of each payload, and decoders for the
//! few packet bodies the parser reads (greeting, handshake response, OK, ERR, EOF).

use crate::KEEP;

/// A physical packet of this payload length is continued by the next one.
pub const MAX_PACKET: usize = 0xFF_FFFF;

pub(crate) const CLIENT_CONNECT_WITH_DB: u32 = 0x0000_0008;
pub(crate) const CLIENT_PROTOCOL_41: u32 = 0x0000_0200;
pub(crate) const CLIENT_SSL: u32 = 0x0000_0800;
pub(crate) const CLIENT_SECURE_CONNECTION: u32 = 0x0000_8000;
pub(crate) const CLIENT_PLUGIN_AUTH_LENENC_DATA: u32 = 0x0020_0000;
pub(crate) const CLIENT_DEPRECATE_EOF: u32 = 0x0100_0000;
pub(crate) const CLIENT_QUERY_ATTRIBUTES: u32 = 0x0800_0000;

pub(crate) const SERVER_MORE_RESULTS_EXISTS: u16 = 0x0008;
pub(crate) const SERVER_STATUS_CURSOR_EXISTS: u16 = 0x0040;

/// Length of an SSL request (the short handshake response sent before TLS starts).
pub(crate) const SSL_REQUEST_LEN: u64 = 32;

/// A complete logical packet (continuations joined), as far as it was kept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Packet<'a> {
    /// Sequence id of its first physical packet.
    pub seq: u8,
    /// Sequence id of its last physical packet (the next packet of the exchange has this + 1).
    pub last_seq: u8,
    /// Payload length, continuations included (bytes skipped in a gap count).
    pub len: u64,
    /// The payload's first bytes (at most [`KEEP`]; fewer if a gap cut them).
    pub body: &'a [u8],
    /// Bytes on the wire, headers included.
    pub wire: u64,
    /// Timestamp of the segment that carried its first byte.
    pub start_ts: u64,
}

impl Packet<'_> {
    pub(crate) fn first(&self) -> Option<u8> {
        self.body.first().copied()
    }

    /// An EOF packet, or with `CLIENT_DEPRECATE_EOF` the OK packet with a `0xFE` header that
    /// ends a result set (a row can only start with `0xFE` when it is 16 MiB long).
    pub(crate) fn is_terminator(&self) -> bool {
        self.first() == Some(0xFE) && self.len < MAX_PACKET as u64
    }

    /// The classic 5-byte EOF packet (the OK-with-`0xFE` form is at least 7 bytes).
    pub(crate) fn is_eof5(&self) -> bool {
        self.first() == Some(0xFE) && self.len == 5
    }
}

/// What a gap did to the framing (see [`Reader::gap`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GapEffect {
    /// Inside the current packet: skipped, still in step.
    Inside,
    /// The current packet ended inside the gap; `rest` bytes after it are hidden.
    Cut { rest: u64 },
    /// Boundaries lost: `bytes` since the last boundary known (or, already lost, the gap).
    Lost { bytes: u64 },
}

/// Streaming framer of one direction.
#[derive(Debug, Default)]
pub(crate) struct Reader {
    hdr: [u8; 4],
    hdr_len: usize,
    in_body: bool,
    /// Payload bytes left in the current physical packet.
    left: usize,
    /// The current physical packet is [`MAX_PACKET`] long: a continuation follows.
    more: bool,
    body: Vec<u8>,
    /// A gap cut the payload: keep no more of it (what is kept stays a true prefix).
    frozen: bool,
    len: u64,
    wire: u64,
    seq: u8,
    last_seq: u8,
    start_ts: u64,
    /// Packet boundaries are unknown (a gap the framing could not absorb).
    pub lost: bool,
    /// Payload bytes kept per packet (0: [`KEEP`]).
    keep: usize,
}

impl Reader {
    /// A reader keeping at most `keep` bytes (≤ [`KEEP`]) of each payload.
    pub(crate) fn with_keep(keep: usize) -> Self {
        Reader {
            keep: keep.min(KEEP),
            ..Default::default()
        }
    }

    /// Consume `data` up to the end of the next complete packet; true when one is complete
    /// (read it with [`Reader::packet`]). With `data` exhausted first, false.
    pub(crate) fn advance(&mut self, data: &mut &[u8], ts: u64) -> bool {
        loop {
            if !self.in_body {
                if data.is_empty() {
                    return false;
                }
                if self.hdr_len == 0 && !self.more {
                    self.body.clear();
                    self.frozen = false;
                    self.len = 0;
                    self.wire = 0;
                    self.start_ts = ts;
                }
                let take = (4 - self.hdr_len).min(data.len());
                self.hdr[self.hdr_len..self.hdr_len + take].copy_from_slice(&data[..take]);
                self.hdr_len += take;
                *data = &data[take..];
                if self.hdr_len < 4 {
                    return false;
                }
                self.hdr_len = 0;
                let n = u24(&self.hdr);
                if !self.more {
                    self.seq = self.hdr[3];
                }
                self.last_seq = self.hdr[3];
                self.wire += 4;
                self.left = n;
                self.more = n == MAX_PACKET;
                self.in_body = true;
            }
            if self.left > 0 {
                if data.is_empty() {
                    return false;
                }
                let take = self.left.min(data.len());
                if !self.frozen {
                    let keep = if self.keep == 0 { KEEP } else { self.keep };
                    let room = keep.saturating_sub(self.body.len()).min(take);
                    extend_capped(&mut self.body, &data[..room], keep);
                }
                self.left -= take;
                self.len += take as u64;
                self.wire += take as u64;
                *data = &data[take..];
            }
            if self.left == 0 {
                self.in_body = false;
                if !self.more {
                    return true;
                }
            }
        }
    }

    /// The packet [`Reader::advance`] just completed.
    pub(crate) fn packet(&self) -> Packet<'_> {
        Packet {
            seq: self.seq,
            last_seq: self.last_seq,
            len: self.len,
            body: &self.body,
            wire: self.wire,
            start_ts: self.start_ts,
        }
    }

    /// `n` bytes are missing. Inside a payload at least that long they are skipped by count
    /// ([`GapEffect::Inside`]); a payload ending inside the gap is complete, cut
    /// ([`GapEffect::Cut`]: read it with [`Reader::packet`], then [`Reader::lose`]); otherwise
    /// the boundaries are lost ([`GapEffect::Lost`]).
    pub(crate) fn gap(&mut self, n: u64) -> GapEffect {
        if self.lost {
            return GapEffect::Lost { bytes: n };
        }
        if self.in_body {
            let left = self.left as u64;
            if n <= left {
                self.left -= n as usize;
                self.len += n;
                self.wire += n;
                self.frozen = true;
                return GapEffect::Inside;
            }
            if !self.more {
                self.len += left;
                self.wire += left;
                self.left = 0;
                self.in_body = false;
                self.frozen = true;
                return GapEffect::Cut { rest: n - left };
            }
        }
        // From the last boundary: the pieces of a 16 MiB packet, or a header's first bytes.
        let bytes = if self.in_body || self.more {
            self.wire + n
        } else {
            self.hdr_len as u64 + n
        };
        self.lose();
        GapEffect::Lost { bytes }
    }

    /// Packet boundaries are known again: the next byte fed begins a packet.
    pub(crate) fn resume(&mut self) {
        self.hdr_len = 0;
        self.in_body = false;
        self.more = false;
        self.left = 0;
        self.lost = false;
    }

    /// Forget the partial packet and wait for a resynchronisation point.
    pub(crate) fn lose(&mut self) {
        self.hdr_len = 0;
        self.in_body = false;
        self.more = false;
        self.left = 0;
        self.body.clear();
        if self.body.capacity() > KEEP_BUFFER {
            self.body = Vec::new();
        }
        self.lost = true;
    }

    /// Bytes of buffer allocated (at most [`KEEP`]).
    pub(crate) fn capacity(&self) -> usize {
        self.body.capacity()
    }
}

/// A buffer bigger than this is freed when framing is lost rather than kept.
const KEEP_BUFFER: usize = 1024;

/// Append without ever reserving beyond `cap` bytes.
fn extend_capped(buf: &mut Vec<u8>, data: &[u8], cap: usize) {
    let need = buf.len() + data.len();
    if need > buf.capacity() {
        let want = (buf.capacity() * 2).clamp(64, cap).max(need);
        buf.reserve_exact(want - buf.len());
    }
    buf.extend_from_slice(data);
}

pub(crate) fn u24(b: &[u8]) -> usize {
    b[0] as usize | (b[1] as usize) << 8 | (b[2] as usize) << 16
}

fn u16le(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub(crate) fn u32le(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// A length-encoded integer: value and bytes used. `0xFB` (NULL) and `0xFF` are not integers.
pub(crate) fn lenenc(b: &[u8]) -> Option<(u64, usize)> {
    let n = match *b.first()? {
        x @ 0..=0xFA => return Some((x as u64, 1)),
        0xFC => 2,
        0xFD => 3,
        0xFE => 8,
        _ => return None,
    };
    let bytes = b.get(1..1 + n)?;
    let mut v = 0u64;
    for (i, x) in bytes.iter().enumerate() {
        v |= (*x as u64) << (8 * i);
    }
    Some((v, 1 + n))
}

/// Capability flags of the server's initial handshake (protocol 10).
pub(crate) fn greeting_caps(p: &[u8]) -> Option<u32> {
    if p.first() != Some(&10) {
        return None;
    }
    let nul = 1 + p.get(1..)?.iter().position(|b| *b == 0)?;
    // version NUL, connection id 4, auth data 8, filler 1, caps low 2, charset 1, status 2,
    // caps high 2.
    let low = u16le(p, nul + 1 + 4 + 8 + 1)? as u32;
    let high = u16le(p, nul + 1 + 4 + 8 + 1 + 2 + 1 + 2).unwrap_or(0) as u32;
    Some(low | high << 16)
}

/// The client's handshake response (protocol 41): capability flags and the database.
pub(crate) struct Login {
    pub caps: u32,
    pub database: Option<String>,
}

pub(crate) fn login(p: &[u8]) -> Option<Login> {
    let caps = u32le(p, 0)?;
    if caps & CLIENT_PROTOCOL_41 == 0 {
        return Some(Login {
            caps,
            database: None,
        });
    }
    let database = (|| {
        if caps & CLIENT_CONNECT_WITH_DB == 0 {
            return None;
        }
        let mut at = 32;
        at += p.get(at..)?.iter().position(|b| *b == 0)? + 1;
        if caps & CLIENT_PLUGIN_AUTH_LENENC_DATA != 0 {
            let (n, used) = lenenc(p.get(at..)?)?;
            at = at
                .checked_add(used)?
                .checked_add(usize::try_from(n).ok()?)?;
        } else if caps & CLIENT_SECURE_CONNECTION != 0 {
            at += 1 + *p.get(at)? as usize;
        } else {
            at += p.get(at..)?.iter().position(|b| *b == 0)? + 1;
        }
        let rest = p.get(at..)?;
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        name(&rest[..end])
    })();
    Some(Login { caps, database })
}

/// A schema name as text, at most [`crate::MAX_NAME`] bytes; `None` when empty.
pub(crate) fn name(b: &[u8]) -> Option<String> {
    let b = &b[..b.len().min(crate::MAX_NAME)];
    let s = String::from_utf8_lossy(b);
    let s = s.trim().trim_matches('`').trim_end_matches(';').trim();
    let mut s = s.to_string();
    while s.len() > crate::MAX_NAME {
        s.pop();
    }
    (!s.is_empty()).then_some(s)
}

/// An OK packet (`0x00`, or `0xFE` ending a result set): affected rows and status flags, as
/// far as the bytes kept hold them.
pub(crate) fn ok(p: &[u8]) -> (Option<u64>, Option<u16>) {
    let Some((affected, a)) = p.get(1..).and_then(lenenc) else {
        return (None, None);
    };
    let Some((_, b)) = p.get(1 + a..).and_then(lenenc) else {
        return (Some(affected), None);
    };
    (Some(affected), u16le(p, 1 + a + b))
}

/// Status flags of an EOF packet (`0xFE`, warnings, status).
pub(crate) fn eof_status(p: &[u8]) -> u16 {
    u16le(p, 3).unwrap_or(0)
}

/// Status flags of a result-set terminator of either form (`None`: cut off by a gap).
pub(crate) fn terminator_status(p: &Packet<'_>) -> Option<u16> {
    if p.len == 5 {
        u16le(p.body, 3)
    } else {
        ok(p.body).1
    }
}

/// An ERR packet: error code and SQLSTATE (absent before the handshake completes).
pub(crate) fn err(p: &[u8]) -> (u16, Option<String>) {
    let code = u16le(p, 1).unwrap_or(0);
    let state = match p.get(3..9) {
        Some([b'#', s @ ..]) if s.iter().all(|b| b.is_ascii_alphanumeric()) => {
            Some(String::from_utf8_lossy(s).into_owned())
        }
        _ => None,
    };
    (code, state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u8, payload: &[u8]) -> Vec<u8> {
        let n = payload.len();
        let mut v = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, seq];
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn packets_split_anywhere_and_several_per_segment() {
        let stream = [frame(0, b"\x03SELECT 1"), frame(1, b""), frame(2, b"abc")].concat();
        for cut in 0..=stream.len() {
            let mut r = Reader::default();
            let mut got = Vec::new();
            for (i, part) in [&stream[..cut], &stream[cut..]].into_iter().enumerate() {
                let mut d = part;
                while r.advance(&mut d, i as u64) {
                    let p = r.packet();
                    got.push((p.seq, p.len, p.body.to_vec(), p.wire));
                }
            }
            assert_eq!(
                got,
                [
                    (0, 9, b"\x03SELECT 1".to_vec(), 13),
                    (1, 0, vec![], 4),
                    (2, 3, b"abc".to_vec(), 7)
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn continuation_packets_join_and_keep_a_bounded_prefix() {
        let big = vec![b'x'; MAX_PACKET];
        let stream = [frame(0, &big), frame(1, b"tail")].concat();
        let mut r = Reader::default();
        let mut d = &stream[..];
        let mut n = 0;
        while !d.is_empty() {
            let take = d.len().min(70_000);
            let mut part = &d[..take];
            while r.advance(&mut part, 1) {
                let p = r.packet();
                assert_eq!(
                    (p.seq, p.len, p.body.len()),
                    (0, MAX_PACKET as u64 + 4, KEEP)
                );
                n += 1;
            }
            d = &d[take..];
            assert!(r.capacity() <= KEEP);
        }
        assert_eq!(n, 1);
    }

    #[test]
    fn gap_inside_a_payload_keeps_framing() {
        let stream = [frame(1, &[7u8; 100]), frame(2, b"ok")].concat();
        let mut r = Reader::default();
        let mut d = &stream[..50];
        assert!(!r.advance(&mut d, 1));
        assert_eq!(r.gap(20), GapEffect::Inside);
        let mut d = &stream[70..];
        assert!(r.advance(&mut d, 2));
        assert_eq!((r.packet().len, r.packet().body.len()), (100, 46));
        assert!(r.advance(&mut d, 2));
        assert_eq!(r.packet().body, b"ok");
        assert_eq!(
            r.gap(1),
            GapEffect::Lost { bytes: 1 },
            "between packets a gap loses the boundaries"
        );
        assert!(r.lost);
    }

    #[test]
    fn gap_past_the_end_of_a_payload_completes_it_cut() {
        let stream = frame(0, &[b'q'; 100]);
        let mut r = Reader::default();
        let mut d = &stream[..30];
        assert!(!r.advance(&mut d, 1));
        assert_eq!(r.gap(90), GapEffect::Cut { rest: 16 });
        let p = r.packet();
        assert_eq!((p.seq, p.len, p.wire, p.body.len()), (0, 100, 104, 26));
        r.lose();
        assert_eq!(r.gap(5), GapEffect::Lost { bytes: 5 });
        // A gap cutting a header: the header's bytes count from the boundary.
        let mut r = Reader::default();
        let mut d = &stream[..2];
        assert!(!r.advance(&mut d, 1));
        assert_eq!(r.gap(10), GapEffect::Lost { bytes: 12 });
        r.resume();
        let mut d = &stream[..];
        assert!(r.advance(&mut d, 2));
        assert_eq!(r.packet().len, 100);
    }

    #[test]
    fn decoders() {
        assert_eq!(lenenc(&[0xFC, 1, 2]), Some((0x201, 3)));
        assert_eq!(lenenc(&[0xFB]), None);
        assert_eq!(lenenc(&[0xFE, 1]), None);
        assert_eq!(ok(&[0, 3, 0, 2, 0, 0, 0]), (Some(3), Some(2)));
        assert_eq!(ok(&[0, 3, 0, 2]), (Some(3), None));
        assert_eq!(
            err(b"\xff\x7a\x04#42S02Table"),
            (1146, Some("42S02".into()))
        );
        assert_eq!(err(b"\xff\x15\x04Access"), (1045, None));
    }
}
