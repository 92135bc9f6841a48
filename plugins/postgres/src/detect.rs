//! Is a connection PostgreSQL? From the client's first bytes: a StartupMessage for protocol
//! 3.0 (with `user` among its parameters), or an SSLRequest / GSSENCRequest (undecided: if the
//! server declines with `N` the StartupMessage follows; if it accepts, TLS follows and the
//! TLS record is declined). A connection first seen mid-stream is claimed only from a plausible
//! Query (`Q`) or Parse (`P`) message at the start of a client segment, whole and with SQL-like
//! text. Server bytes never claim a connection; text protocols and TLS records are declined
//! from their first bytes.

use sonde_sdk::protocol_parser::{Claim, ConnInfo, Direction, Role, Segment};

use crate::wire::{CANCEL_REQUEST, GSSENC_REQUEST, MAX_LEN, PROTOCOL_3, SSL_REQUEST, be32, cstr};

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

/// Longest StartupMessage accepted (PostgreSQL's own limit is 10000 bytes).
const MAX_STARTUP: u32 = 10_000;

/// A StartupMessage (protocol 3.0) at the start of `d`.
pub fn startup(d: &[u8]) -> Verdict {
    let (Some(len), Some(code)) = (be32(d), d.get(4..).and_then(be32)) else {
        return if d.len() >= 4 && !(9..=MAX_STARTUP).contains(&be32(d).unwrap_or(0)) {
            Verdict::No
        } else {
            Verdict::Maybe
        };
    };
    if code != PROTOCOL_3 || !(9..=MAX_STARTUP).contains(&len) {
        return Verdict::No;
    }
    // Parameters: name\0value\0…\0, names printable; `user` is required.
    let params = &d[8..d.len().min(len as usize)];
    let mut rest = params;
    let mut user = false;
    loop {
        let (name, after) = cstr(rest);
        if !name.iter().all(|b| b.is_ascii_graphic()) {
            return Verdict::No;
        }
        let Some(after) = after else {
            return Verdict::Maybe;
        };
        if name.is_empty() {
            return if user { Verdict::Yes } else { Verdict::No };
        }
        user |= name == b"user";
        let (_, after) = cstr(after);
        let Some(after) = after else {
            return Verdict::Maybe;
        };
        rest = after;
    }
}

/// An SSLRequest or GSSENCRequest at the start of `d`.
pub fn encryption_request(d: &[u8]) -> Verdict {
    match (be32(d), d.get(4..).and_then(be32)) {
        (Some(8), Some(SSL_REQUEST | GSSENC_REQUEST)) => Verdict::Yes,
        (Some(8), None) => Verdict::Maybe,
        (None, _) => Verdict::Maybe,
        _ => Verdict::No,
    }
}

/// A CancelRequest at the start of `d`.
pub fn cancel(d: &[u8]) -> bool {
    be32(d) == Some(16) && d.get(4..).and_then(be32) == Some(CANCEL_REQUEST)
}

/// Bytes of statement text looked at.
const TEXT_LOOK: usize = 64;

/// A whole Query or Parse message, with SQL-like text, at the start of `d` (mid-stream).
pub fn command(d: &[u8]) -> Verdict {
    let Some(&ty) = d.first() else {
        return Verdict::Maybe;
    };
    if !matches!(ty, b'Q' | b'P') {
        return Verdict::No;
    }
    let Some(len) = d.get(1..).and_then(be32) else {
        return Verdict::Maybe;
    };
    if !(6..=MAX_LEN as u32).contains(&len) {
        return Verdict::No;
    }
    let body = &d[5..d.len().min(len as usize + 1)];
    let text = if ty == b'P' {
        let (name, rest) = cstr(body);
        if !name.iter().all(|b| b.is_ascii_graphic()) {
            return Verdict::No;
        }
        match rest {
            Some(r) => r,
            None => return Verdict::Maybe,
        }
    } else {
        body
    };
    let look = &text[..text.len().min(TEXT_LOOK)];
    let (look, terminated) = match look.iter().position(|b| *b == 0) {
        Some(i) => (&look[..i], true),
        None => (look, false),
    };
    if !look
        .iter()
        .all(|b| matches!(b, b'\t' | b'\n' | b'\r' | 0x20..=0x7e | 0x80..=0xff))
    {
        return Verdict::No;
    }
    match look.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b) if b.is_ascii_alphabetic() || matches!(b, b'(' | b'/' | b'-') => {}
        Some(_) => return Verdict::No,
        None if terminated => return Verdict::No,
        None => return Verdict::Maybe,
    }
    if terminated || look.len() >= 8 {
        Verdict::Yes
    } else {
        Verdict::Maybe
    }
}

/// A TLS record header (handshake or alert, version 3.x).
fn tls(d: &[u8]) -> bool {
    d.len() >= 2 && matches!(d[0], 0x15 | 0x16) && d[1] == 3
}

/// Detection for [`crate::Postgres`].
pub fn detect(conn: &ConnInfo, seg: &Segment<'_>) -> Claim {
    let d = seg.data;
    let from_client = match (conn.role, seg.direction) {
        (Role::Client, Direction::Egress) | (Role::Server, Direction::Ingress) => true,
        (Role::Client, Direction::Ingress) | (Role::Server, Direction::Egress) => false,
        (Role::Unknown, _) => true,
    };
    if tls(d) {
        return Claim::NotMine;
    }
    if !from_client {
        // The server's answer to an SSLRequest, or a response mid-stream: the client says.
        return Claim::Undecided;
    }
    if d.len() < 5 {
        return Claim::Undecided;
    }
    if d[0] == 0 {
        // Untyped: a startup-phase message (its length's high byte is 0).
        if cancel(d) {
            return Claim::NotMine;
        }
        if encryption_request(d) == Verdict::Yes && d.len() > 8 {
            // The server declined, and the StartupMessage followed (the driver joins a
            // direction's undecided bytes).
            return detect(
                conn,
                &Segment {
                    data: &d[8..],
                    ..*seg
                },
            );
        }
        return match (startup(d), encryption_request(d)) {
            (Verdict::Yes, _) => Claim::Mine,
            (_, Verdict::Yes) | (Verdict::Maybe, _) | (_, Verdict::Maybe) => Claim::Undecided,
            _ => Claim::NotMine,
        };
    }
    match command(d) {
        Verdict::Yes => Claim::Mine,
        Verdict::Maybe => Claim::Undecided,
        Verdict::No => Claim::NotMine,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup_msg(params: &[(&str, &str)]) -> Vec<u8> {
        let mut body = PROTOCOL_3.to_be_bytes().to_vec();
        for (k, v) in params {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut m = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn startup_messages() {
        let m = startup_msg(&[("user", "app"), ("database", "shop")]);
        assert_eq!(startup(&m), Verdict::Yes);
        assert_eq!(startup(&m[..12]), Verdict::Maybe);
        assert_eq!(startup(&startup_msg(&[("database", "shop")])), Verdict::No);
        let mut v2 = m.clone();
        v2[5] = 2;
        assert_eq!(startup(&v2), Verdict::No);
        assert_eq!(
            encryption_request(&[0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f]),
            Verdict::Yes
        );
    }

    #[test]
    fn commands() {
        assert_eq!(command(b"Q\0\0\0\x0dSELECT 1\0"), Verdict::Yes);
        assert_eq!(command(b"P\0\0\0\x11s1\0SELECT 1\0\0\0"), Verdict::Yes);
        assert_eq!(command(b"Q\0\0\0\x0d\x01\x02\x03"), Verdict::No);
        assert_eq!(command(b"Q\0\0\0\x06\0"), Verdict::No);
        assert_eq!(command(b"Q\0\0\0\x0dSEL"), Verdict::Maybe);
        assert_eq!(command(b"GET / HTTP/1.1\r\n"), Verdict::No);
        assert_eq!(command(b"Q\0\0\0\x0d123456789"), Verdict::No);
    }
}
