//! Is a connection MySQL? From its first bytes in either direction: the server's initial
//! handshake (protocol 10 and a printable, NUL-terminated version string), or — for a connection
//! whose start was not seen — a plausible command packet (sequence id 0 and one of a few common
//! commands with a plausible body). Text protocols (HTTP, RESP…) and TLS records are rejected
//! from their first four bytes.

use sonde_sdk::protocol_parser::{Claim, ConnInfo, Direction, Role, Segment};

use crate::command as cmd;
use crate::wire::u24;

/// What a prefix of bytes can still be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It is one.
    Yes,
    /// It cannot be one.
    No,
    /// Too short to tell.
    Maybe,
}

/// Longest server version string accepted.
const MAX_VERSION: usize = 100;

/// A server's initial handshake packet (protocol 10) at the start of `d`.
pub fn greeting(d: &[u8]) -> Verdict {
    if d.len() < 4 {
        return if d.len() == 3 && u24(&[d[0], d[1], d[2]]) < 20 {
            Verdict::No
        } else {
            Verdict::Maybe
        };
    }
    let len = u24(d);
    if d[3] != 0 || !(20..=1024).contains(&len) {
        return Verdict::No;
    }
    let p = &d[4..];
    match p.first() {
        None => return Verdict::Maybe,
        Some(10) => {}
        Some(_) => return Verdict::No,
    }
    for (i, b) in p[1..].iter().enumerate() {
        if *b == 0 {
            return if i == 0 || i + 2 + 12 > len {
                Verdict::No
            } else {
                Verdict::Yes
            };
        }
        if !(0x20..0x7f).contains(b) || i >= MAX_VERSION {
            return Verdict::No;
        }
    }
    Verdict::Maybe
}

/// A plausible command packet (sequence id 0) at the start of `d`.
pub fn command(d: &[u8]) -> Verdict {
    if d.len() < 4 {
        return Verdict::Maybe;
    }
    let len = u24(d);
    if d[3] != 0 || len == 0 {
        return Verdict::No;
    }
    let p = &d[4..];
    let Some(&c) = p.first() else {
        return Verdict::Maybe;
    };
    match c {
        cmd::QUIT | cmd::PING => yes_if(len == 1),
        cmd::INIT_DB => {
            if !(2..=257).contains(&len) {
                return Verdict::No;
            }
            let name = &p[1..p.len().min(len)];
            if !name.iter().all(|b| b.is_ascii_graphic() || *b >= 0x80) {
                Verdict::No
            } else if p.len() >= len {
                Verdict::Yes
            } else {
                Verdict::Maybe
            }
        }
        cmd::QUERY | cmd::STMT_PREPARE => {
            let mut text = &p[1..p.len().min(len)];
            let mut total = len - 1;
            // Query attributes (MySQL 8): parameter count 0, one parameter set.
            if c == cmd::QUERY && text.len() >= 2 && text[0] == 0 && text[1] == 1 {
                text = &text[2..];
                total = total.saturating_sub(2);
            }
            sql_text(text, total)
        }
        cmd::STMT_EXECUTE => {
            if len < 10 {
                return Verdict::No;
            }
            if p.len() < 10 {
                return Verdict::Maybe;
            }
            // Cursor flags, then an iteration count that is always 1.
            yes_if(p[5] <= 0x0f && p[6..10] == [1, 0, 0, 0])
        }
        _ => Verdict::No,
    }
}

fn yes_if(b: bool) -> Verdict {
    if b { Verdict::Yes } else { Verdict::No }
}

/// Bytes of statement text looked at.
const TEXT_LOOK: usize = 64;

/// The start of an SQL statement `total` bytes long, of which `text` is here.
fn sql_text(text: &[u8], total: usize) -> Verdict {
    if total == 0 {
        return Verdict::No;
    }
    let look = &text[..text.len().min(TEXT_LOOK)];
    if !look
        .iter()
        .all(|b| matches!(b, b'\t' | b'\n' | b'\r' | 0x20..=0x7e | 0x80..=0xff))
    {
        return Verdict::No;
    }
    match look.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b) if b.is_ascii_alphabetic() || matches!(b, b'(' | b'/' | b'-' | b'#') => {}
        Some(_) => return Verdict::No,
        None if look.len() >= total => return Verdict::No,
        None => return Verdict::Maybe,
    }
    if look.len() >= total.min(8) {
        Verdict::Yes
    } else {
        Verdict::Maybe
    }
}

/// A TLS record header (handshake or alert, version 3.x).
fn tls(d: &[u8]) -> bool {
    d.len() >= 2 && matches!(d[0], 0x15 | 0x16) && d[1] == 3
}

/// Detection for [`crate::Mysql`].
pub fn detect(conn: &ConnInfo, seg: &Segment<'_>) -> Claim {
    let d = seg.data;
    let (from_server, from_client) = match (conn.role, seg.direction) {
        (Role::Client, Direction::Ingress) | (Role::Server, Direction::Egress) => (true, false),
        (Role::Client, Direction::Egress) | (Role::Server, Direction::Ingress) => (false, true),
        (Role::Unknown, _) => (true, true),
    };
    if tls(d) {
        return Claim::NotMine;
    }
    if d.len() < 4 {
        return Claim::Undecided;
    }
    if d[..4]
        .iter()
        .all(|b| b.is_ascii_graphic() || matches!(b, b' ' | b'\r' | b'\n'))
    {
        // "GET ", "HTTP", "*1\r\n", "+OK\r": a text protocol (a MySQL header would claim a
        // payload of 2 MiB or more with a printable sequence id).
        return Claim::NotMine;
    }
    if d[3] != 0 {
        // Mid-stream: only a response can begin with a sequence id other than 0.
        return if from_server {
            Claim::Undecided
        } else {
            Claim::NotMine
        };
    }
    let g = if from_server {
        greeting(d)
    } else {
        Verdict::No
    };
    let c = if from_client { command(d) } else { Verdict::No };
    match (g, c) {
        (Verdict::Yes, _) | (_, Verdict::Yes) => Claim::Mine,
        (Verdict::Maybe, _) | (_, Verdict::Maybe) => Claim::Undecided,
        _ => Claim::NotMine,
    }
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
    fn commands() {
        assert_eq!(command(&frame(0, b"\x03SELECT 1")), Verdict::Yes);
        assert_eq!(command(&frame(0, b"\x03\x00\x01SELECT 1")), Verdict::Yes);
        assert_eq!(command(&frame(0, b"\x03  select * from t")), Verdict::Yes);
        assert_eq!(command(&frame(0, b"\x03\x01\x02\x03")), Verdict::No);
        assert_eq!(command(&frame(0, b"\x03123")), Verdict::No);
        assert_eq!(command(&frame(0, b"\x0e")), Verdict::Yes);
        assert_eq!(command(&frame(0, b"\x0eX")), Verdict::No);
        assert_eq!(command(&frame(0, b"\x02shop")), Verdict::Yes);
        assert_eq!(command(&frame(0, b"\x02sh op")), Verdict::No);
        assert_eq!(
            command(&frame(0, b"\x17\x01\x00\x00\x00\x00\x01\x00\x00\x00")),
            Verdict::Yes
        );
        assert_eq!(
            command(&frame(0, b"\x17\x01\x00\x00\x00\x00\x07\x00\x00\x00")),
            Verdict::No
        );
        assert_eq!(command(&frame(1, b"\x03SELECT 1")), Verdict::No);
        let q = frame(0, b"\x03SELECT * FROM a_long_table");
        assert_eq!(command(&q[..6]), Verdict::Maybe);
        assert_eq!(command(&q[..13]), Verdict::Yes);
    }

    #[test]
    fn greetings() {
        let mut p = b"\x0a8.0.36\x00".to_vec();
        p.extend_from_slice(&[0; 40]);
        let g = frame(0, &p);
        assert_eq!(greeting(&g), Verdict::Yes);
        assert_eq!(greeting(&g[..8]), Verdict::Maybe);
        assert_eq!(greeting(&frame(0, &[9; 40])), Verdict::No);
        assert_eq!(greeting(&frame(1, &p)), Verdict::No);
    }
}
