//! The DNS wire format (RFC 1035 §4.1): the header, names (with compression pointers), the
//! question and the resource records of the answer section. Everything reads in place from
//! one message's bytes, is bounded, and fails with `None` rather than panicking.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 12;
/// Longest name on the wire (length octets and the root label included), RFC 1035 §2.3.4.
pub const MAX_NAME: usize = 255;
/// Longest label.
pub const MAX_LABEL: usize = 63;
/// Compression pointers followed in one name, at most (they must also point strictly backwards,
/// so a loop cannot happen; this is a second bound).
pub const MAX_JUMPS: usize = 128;
/// Bytes of a name's text form kept (escapes included).
pub const MAX_NAME_TEXT: usize = 255;
/// Questions a message may announce before it counts as garbage.
pub const MAX_QUESTIONS: u16 = 4;
/// A/AAAA addresses collected from an answer section.
pub const MAX_ADDRESSES: usize = 4;

/// Resource record types the parser knows by name.
pub mod rtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const CNAME: u16 = 5;
    pub const SOA: u16 = 6;
    pub const PTR: u16 = 12;
    pub const MX: u16 = 15;
    pub const TXT: u16 = 16;
    pub const AAAA: u16 = 28;
    pub const SRV: u16 = 33;
    pub const OPT: u16 = 41;
    pub const SVCB: u16 = 64;
    pub const HTTPS: u16 = 65;
    pub const ANY: u16 = 255;
}

/// Class IN.
pub const CLASS_IN: u16 = 1;

/// The fixed 12-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    pub id: u16,
    pub flags: u16,
    pub qdcount: u16,
    pub ancount: u16,
    pub nscount: u16,
    pub arcount: u16,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

impl Header {
    pub fn parse(b: &[u8]) -> Option<Header> {
        Some(Header {
            id: be16(b, 0)?,
            flags: be16(b, 2)?,
            qdcount: be16(b, 4)?,
            ancount: be16(b, 6)?,
            nscount: be16(b, 8)?,
            arcount: be16(b, 10)?,
        })
    }

    /// QR: a response.
    pub fn is_response(&self) -> bool {
        self.flags & 0x8000 != 0
    }

    pub fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0xF) as u8
    }

    /// AA: authoritative answer.
    pub fn aa(&self) -> bool {
        self.flags & 0x0400 != 0
    }

    /// TC: truncated (the answer did not fit the datagram).
    pub fn tc(&self) -> bool {
        self.flags & 0x0200 != 0
    }

    /// Z: reserved, zero.
    pub fn z(&self) -> bool {
        self.flags & 0x0040 != 0
    }

    /// The 4-bit response code of the header.
    pub fn rcode(&self) -> u8 {
        (self.flags & 0xF) as u8
    }
}

/// Append a label's bytes as text: ASCII letters lowercased, `.` and `\` and bytes outside
/// the printable ASCII range written `\DDD` (as `dig` does), so the text is always UTF-8.
fn push_label(text: &mut String, label: &[u8]) {
    for &b in label {
        let plain = (0x21..=0x7E).contains(&b) && b != b'.' && b != b'\\';
        if text.len() + if plain { 1 } else { 4 } > MAX_NAME_TEXT {
            return;
        }
        if plain {
            text.push(b.to_ascii_lowercase() as char);
        } else {
            let _ = write!(text, "\\{b:03}");
        }
    }
}

/// Read the name starting at `start` of the message `msg` (the whole message, header
/// included: pointers are offsets from its first byte). Returns the offset just past the
/// name where it sits (after its root label or its first pointer).
///
/// When `text` is given the name is appended to it: lowercase, labels joined by `.`, no
/// trailing dot, the root name as `.`, cut to [`MAX_NAME_TEXT`] bytes.
///
/// Rejected: labels of types 01/10 (RFC 6891 removed them), a name longer than [`MAX_NAME`]
/// on the wire, a pointer into the header, a pointer that does not point strictly before the
/// start of the labels it follows (this is what rules out loops), more than [`MAX_JUMPS`]
/// pointers, a name running past the message.
pub fn read_name(msg: &[u8], start: usize, mut text: Option<&mut String>) -> Option<usize> {
    let mut pos = start;
    // Pointers must land before this: the start of the run of labels being read.
    let mut run_start = start;
    let mut end = None;
    let mut wire = 0usize;
    let mut jumps = 0usize;
    let text_start = text.as_deref().map_or(0, String::len);
    loop {
        let len = *msg.get(pos)? as usize;
        match len & 0xC0 {
            0x00 if len == 0 => {
                wire += 1;
                if wire > MAX_NAME {
                    return None;
                }
                if let Some(t) = text.as_deref_mut()
                    && t.len() == text_start
                {
                    t.push('.');
                }
                return Some(end.unwrap_or(pos + 1));
            }
            0x00 => {
                let label = msg.get(pos + 1..pos + 1 + len)?;
                wire += 1 + len;
                if wire > MAX_NAME {
                    return None;
                }
                if let Some(t) = text.as_deref_mut() {
                    if t.len() > text_start && t.len() + 2 <= MAX_NAME_TEXT {
                        t.push('.');
                    }
                    push_label(t, label);
                }
                pos += 1 + len;
            }
            0xC0 => {
                let target = ((len & 0x3F) << 8) | *msg.get(pos + 1)? as usize;
                jumps += 1;
                if target < HEADER_LEN || target >= run_start || jumps > MAX_JUMPS {
                    return None;
                }
                if end.is_none() {
                    end = Some(pos + 2);
                }
                run_start = target;
                pos = target;
            }
            _ => return None,
        }
    }
}

/// One question (the first of the message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// See [`read_name`] for the text form.
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
}

/// Read a question at `at`: its name, type and class. Returns it and the offset past it.
pub fn read_question(msg: &[u8], at: usize) -> Option<(Question, usize)> {
    let mut name = String::new();
    let end = read_name(msg, at, Some(&mut name))?;
    let qtype = be16(msg, end)?;
    let qclass = be16(msg, end + 2)?;
    Some((
        Question {
            name,
            qtype,
            qclass,
        },
        end + 4,
    ))
}

/// What the parser keeps of one message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    pub header: Header,
    /// The first question, when the message has one and it could be read.
    pub question: Option<Question>,
    /// The first [`MAX_ADDRESSES`] A/AAAA addresses of the answer section (responses only),
    /// comma-separated; empty when there are none.
    pub addresses: String,
}

impl Message {
    /// A whole message. `None` when it cannot be one: shorter than the header, more than
    /// [`MAX_QUESTIONS`] questions, or a first question that does not read. What follows the
    /// question is read as far as it goes (a damaged answer section only stops the address
    /// list).
    pub fn parse(msg: &[u8]) -> Option<Message> {
        let header = Header::parse(msg)?;
        if header.qdcount > MAX_QUESTIONS {
            return None;
        }
        let mut m = Message {
            header,
            ..Default::default()
        };
        if header.qdcount == 0 {
            return Some(m);
        }
        let (q, mut at) = read_question(msg, HEADER_LEN)?;
        m.question = Some(q);
        if !header.is_response() {
            return Some(m);
        }
        for _ in 1..header.qdcount {
            match read_name(msg, at, None) {
                Some(end) if end + 4 <= msg.len() => at = end + 4,
                _ => return Some(m),
            }
        }
        m.addresses = addresses(msg, at, header.ancount);
        Some(m)
    }

    /// The first bytes of a message that was cut (by a gap of the capture or the close): its
    /// header, and its question if it is all there. `None` without a whole header.
    pub fn parse_cut(msg: &[u8]) -> Option<Message> {
        let header = Header::parse(msg)?;
        let question = if header.qdcount > 0 && header.qdcount <= MAX_QUESTIONS {
            read_question(msg, HEADER_LEN).map(|(q, _)| q)
        } else {
            None
        };
        Some(Message {
            header,
            question,
            addresses: String::new(),
        })
    }
}

/// The A (IN, 4 bytes) and AAAA (IN, 16 bytes) addresses among the first `count` records at
/// `at`, at most [`MAX_ADDRESSES`], comma-separated. Stops at the first record that does not
/// read.
fn addresses(msg: &[u8], mut at: usize, count: u16) -> String {
    let mut out = String::new();
    let mut found = 0;
    for _ in 0..count {
        if found >= MAX_ADDRESSES {
            break;
        }
        let Some(end) = read_name(msg, at, None) else {
            break;
        };
        let (Some(rtype), Some(class), Some(rdlen)) =
            (be16(msg, end), be16(msg, end + 2), be16(msg, end + 8))
        else {
            break;
        };
        let rdata_at = end + 10;
        let Some(rdata) = msg.get(rdata_at..rdata_at + rdlen as usize) else {
            break;
        };
        // The top bit of the class is mDNS's cache-flush flag.
        let class_in = class & 0x7FFF == CLASS_IN;
        let before = out.len();
        match (rtype, rdata.len()) {
            (rtype::A, 4) if class_in => {
                if !out.is_empty() {
                    out.push(',');
                }
                let _ = write!(
                    out,
                    "{}",
                    Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3])
                );
            }
            (rtype::AAAA, 16) if class_in => {
                let mut b = [0u8; 16];
                b.copy_from_slice(rdata);
                if !out.is_empty() {
                    out.push(',');
                }
                let _ = write!(out, "{}", Ipv6Addr::from(b));
            }
            _ => {}
        }
        if out.len() != before {
            found += 1;
        }
        at = rdata_at + rdlen as usize;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(qd: u16, an: u16, flags: u16) -> Vec<u8> {
        let mut m = vec![0x12, 0x34];
        for v in [flags, qd, an, 0, 0] {
            m.extend_from_slice(&v.to_be_bytes());
        }
        m
    }

    #[test]
    fn names_read_with_pointers_and_escapes() {
        let mut m = header(1, 0, 0);
        m.extend_from_slice(b"\x03WwW\x07example\x03com\x00\x00\x01\x00\x01");
        // A second name: "a.b" then a pointer to "example.com" (offset 16).
        let second = m.len();
        m.extend_from_slice(b"\x01a\x03b.c\xC0\x10");
        let mut t = String::new();
        assert_eq!(read_name(&m, 12, Some(&mut t)), Some(29));
        assert_eq!(t, "www.example.com");
        let mut t = String::new();
        assert_eq!(read_name(&m, second, Some(&mut t)), Some(m.len()));
        assert_eq!(t, "a.b\\046c.example.com");
        // Root.
        let mut t = String::new();
        assert_eq!(read_name(&[0; 13], 12, Some(&mut t)), Some(13));
        assert_eq!(t, ".");
    }

    #[test]
    fn bad_names_are_rejected() {
        let mut m = header(1, 0, 0);
        m.extend_from_slice(b"\x01a\xC0\x0C"); // points to its own start
        assert_eq!(read_name(&m, 12, None), None);
        let mut m = header(1, 0, 0);
        m.extend_from_slice(b"\xC0\x0E\x01a\xC0\x0C"); // forward pointer
        assert_eq!(read_name(&m, 12, None), None);
        let mut m = header(1, 0, 0);
        m.extend_from_slice(b"\xC0\x02"); // into the header
        assert_eq!(read_name(&m, 12, None), None);
        let mut m = header(1, 0, 0);
        m.extend_from_slice(b"\x41a"); // label type 01
        assert_eq!(read_name(&m, 12, None), None);
        let mut m = header(1, 0, 0);
        for _ in 0..5 {
            m.push(63);
            m.extend_from_slice(&[b'x'; 63]);
        }
        m.push(0);
        assert_eq!(read_name(&m, 12, None), None, "longer than 255");
        assert_eq!(read_name(&m[..40], 12, None), None, "cut");
    }

    #[test]
    fn addresses_are_collected() {
        let mut m = header(1, 3, 0x8180);
        m.extend_from_slice(b"\x01a\x00\x00\x01\x00\x01");
        m.extend_from_slice(b"\xC0\x0C\x00\x01\x00\x01\x00\x00\x00\x3C\x00\x04\x0A\x00\x00\x01");
        m.extend_from_slice(b"\xC0\x0C\x00\x05\x00\x01\x00\x00\x00\x3C\x00\x02\xC0\x0C");
        m.extend_from_slice(b"\xC0\x0C\x00\x1C\x00\x01\x00\x00\x00\x3C\x00\x10");
        m.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        let msg = Message::parse(&m).unwrap();
        assert_eq!(msg.addresses, "10.0.0.1,2001:db8::1");
        assert_eq!(msg.question.unwrap().name, "a");
    }
}
