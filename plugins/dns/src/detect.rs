//! Is this DNS? Decided on the first message of a connection (either direction), from its
//! bytes only — never from port numbers.
//!
//! A message is plausible when its header and its question look like what resolvers and
//! servers send (see [`plausible`]); over TCP the 2-byte length prefix must also frame it.
//! The checks are strict on purpose: text protocols (HTTP, RESP), TLS, MySQL and random
//! bytes fail at the header already.

use sonde_sdk::protocol_parser::{Claim, Transport};

use crate::wire::{HEADER_LEN, Header, MAX_LABEL, MAX_NAME};

/// The shortest plausible message: a header and a question for the root name.
pub const MIN_MESSAGE: usize = HEADER_LEN + 1 + 4;

/// Smallest resource record on the wire (root owner name, type, class, TTL, rdlength).
const MIN_RR: usize = 11;

/// What the bytes seen so far say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Yes,
    No,
    /// A prefix of a plausible message; more bytes will tell.
    NeedMore,
}

/// Opcodes accepted: QUERY (0), NOTIFY (4), UPDATE (5).
fn opcode_ok(op: u8) -> bool {
    matches!(op, 0 | 4 | 5)
}

/// Types seen in questions: the assigned data types, the meta types (IXFR, AXFR, ANY, URI,
/// CAA…), DLV/TA and the private-use range.
pub fn qtype_ok(t: u16) -> bool {
    matches!(t, 1..=110 | 249..=260 | 32768 | 32769 | 65280..=65534)
}

/// IN, CH, HS, NONE, ANY; the top bit (mDNS "unicast response") is ignored.
pub fn qclass_ok(c: u16) -> bool {
    matches!(c & 0x7FFF, 1 | 3 | 4 | 254 | 255)
}

/// Judge the first `msg.len()` bytes of a message of `declared` bytes (`msg` may be shorter
/// than `declared`: the rest has not arrived).
///
/// - header: Z clear; opcode QUERY, NOTIFY or UPDATE; exactly one question. A query has RCODE 0,
///   AA and TC clear, and (opcode QUERY) no answer or authority records and at most 3
///   additional ones (EDNS OPT, TSIG…). A response has an RCODE of at most 10 (NOTZONE).
/// - question: a name of labels of at most 63 printable ASCII bytes, at most 255 bytes on the
///   wire, not compressed (there is nothing before it to point to); a known type and class.
/// - the records announced fit in the declared length (unless a response has TC set).
pub fn plausible(msg: &[u8], declared: usize) -> Verdict {
    if declared < MIN_MESSAGE {
        return Verdict::No;
    }
    let more = if msg.len() < declared {
        Verdict::NeedMore
    } else {
        Verdict::No
    };
    let msg = &msg[..msg.len().min(declared)];
    if msg.len() >= 4 {
        let flags = u16::from_be_bytes([msg[2], msg[3]]);
        let h = Header {
            flags,
            ..Default::default()
        };
        if h.z() || !opcode_ok(h.opcode()) {
            return Verdict::No;
        }
        if !h.is_response() && (h.rcode() != 0 || h.aa() || h.tc()) {
            return Verdict::No;
        }
        if h.is_response() && h.rcode() > 10 {
            return Verdict::No;
        }
    }
    let Some(h) = Header::parse(msg) else {
        return more;
    };
    if h.qdcount != 1 {
        return Verdict::No;
    }
    if !h.is_response() && h.opcode() == 0 && (h.ancount != 0 || h.nscount != 0 || h.arcount > 3) {
        return Verdict::No;
    }
    // The question, byte by byte.
    let mut pos = HEADER_LEN;
    let mut wire = 0usize;
    loop {
        let Some(&len) = msg.get(pos) else {
            return more;
        };
        let len = len as usize;
        if len == 0 {
            pos += 1;
            break;
        }
        if len > MAX_LABEL {
            return Verdict::No;
        }
        wire += 1 + len;
        if wire + 1 > MAX_NAME {
            return Verdict::No;
        }
        let label = &msg[(pos + 1).min(msg.len())..(pos + 1 + len).min(msg.len())];
        if !label.iter().all(|b| (0x21..=0x7E).contains(b)) {
            return Verdict::No;
        }
        if label.len() < len {
            return more;
        }
        pos += 1 + len;
    }
    let (Some(t), Some(c)) = (msg.get(pos..pos + 2), msg.get(pos + 2..pos + 4)) else {
        // The type may already be there.
        if let Some(t) = msg.get(pos..pos + 2)
            && !qtype_ok(u16::from_be_bytes([t[0], t[1]]))
        {
            return Verdict::No;
        }
        return more;
    };
    if !qtype_ok(u16::from_be_bytes([t[0], t[1]])) || !qclass_ok(u16::from_be_bytes([c[0], c[1]])) {
        return Verdict::No;
    }
    let end = pos + 4;
    let records = h.ancount as usize + h.nscount as usize + h.arcount as usize;
    if !(h.is_response() && h.tc()) && records * MIN_RR > declared - end {
        return Verdict::No;
    }
    Verdict::Yes
}

/// A TCP stream's first bytes: a 2-byte big-endian length, then a plausible message of that
/// length.
pub fn plausible_frame(data: &[u8]) -> Verdict {
    let [hi, lo, rest @ ..] = data else {
        return Verdict::NeedMore;
    };
    let declared = u16::from_be_bytes([*hi, *lo]) as usize;
    plausible(&rest[..rest.len().min(declared)], declared)
}

/// The parser's `detect`: over UDP a segment is one datagram, judged alone (whole: a prefix
/// is not DNS); over TCP the stream's first bytes are a frame.
pub fn detect(transport: Transport, data: &[u8]) -> Claim {
    if data.is_empty() {
        return Claim::Undecided;
    }
    let verdict = match transport {
        Transport::Udp => match plausible(data, data.len()) {
            Verdict::NeedMore => Verdict::No,
            v => v,
        },
        Transport::Tcp => plausible_frame(data),
    };
    match verdict {
        Verdict::Yes => Claim::Mine,
        Verdict::No => Claim::NotMine,
        Verdict::NeedMore => Claim::Undecided,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUERY: &[u8] =
        b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01";

    #[test]
    fn a_query_is_plausible_and_its_prefixes_need_more() {
        assert_eq!(plausible(QUERY, QUERY.len()), Verdict::Yes);
        for n in 0..QUERY.len() {
            assert_eq!(
                plausible(&QUERY[..n], QUERY.len()),
                Verdict::NeedMore,
                "{n}"
            );
            assert_eq!(plausible(&QUERY[..n], n), Verdict::No, "{n}");
        }
        let mut framed = (QUERY.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(QUERY);
        assert_eq!(plausible_frame(&framed), Verdict::Yes);
        for n in 0..framed.len() {
            assert_eq!(plausible_frame(&framed[..n]), Verdict::NeedMore, "{n}");
        }
    }

    #[test]
    fn header_checks() {
        let with = |i: usize, v: u8| {
            let mut q = QUERY.to_vec();
            q[i] = v;
            plausible(&q, q.len())
        };
        assert_eq!(with(2, 0x01 | (1 << 3)), Verdict::No, "opcode 1");
        assert_eq!(with(2, 0x01 | (4 << 3)), Verdict::Yes, "NOTIFY");
        assert_eq!(with(3, 0x40), Verdict::No, "Z");
        assert_eq!(with(3, 0x03), Verdict::No, "query with rcode");
        assert_eq!(with(2, 0x81), Verdict::Yes, "response");
        assert_eq!(with(5, 2), Verdict::No, "two questions");
        assert_eq!(with(7, 1), Verdict::No, "query with an answer");
        assert_eq!(with(26, 0), Verdict::No, "type 0");
        assert_eq!(with(28, 9), Verdict::No, "class 9");
        assert_eq!(with(13, b' '), Verdict::No, "space in a label");
    }
}
