//! Is this connection Redis? Decided from one segment at a time (the driver keeps no bytes
//! for us), normally the client's first command.
//!
//! A client speaks arrays of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`): distinctive,
//! so that is a claim. Inline commands (`PING\r\n`, typed into `nc`) are plain text and
//! look like other text protocols: claimed only for a few well-known commands that no other
//! common protocol uses (not `GET`/`SET`: memcached's text protocol has them too). Replies
//! alone (`+OK\r\n` is also POP3) claim nothing, except pub/sub messages, which are
//! unmistakable; anything else that cannot start RESP is `NotMine` at once: HTTP, TLS,
//! binary protocols.

use sonde_sdk::protocol_parser::{Claim, ConnInfo, Role, Segment};

use crate::names::NAME_MAX;
use crate::scan::TYPES;

/// Inline commands worth a claim.
const INLINE_COMMANDS: &[&str] = &[
    "PING",
    "ECHO",
    "AUTH",
    "HELLO",
    "SELECT",
    "INFO",
    "DBSIZE",
    "FLUSHDB",
    "FLUSHALL",
    "MONITOR",
    "SUBSCRIBE",
    "PSUBSCRIBE",
    "PUBLISH",
    "CLIENT",
    "CONFIG",
    "COMMAND",
    "ROLE",
    "EXISTS",
    "KEYS",
    "SCAN",
    "TTL",
    "EXPIRE",
    "LPUSH",
    "RPUSH",
    "LRANGE",
    "HGET",
    "HSET",
    "HGETALL",
    "SADD",
    "SMEMBERS",
    "ZADD",
    "ZRANGE",
    "MGET",
    "MSET",
];

/// First elements of the arrays (RESP2) or pushes (RESP3) a subscribed connection receives.
pub(crate) const PUBSUB_KINDS: &[&[u8]] = &[
    b"message",
    b"pmessage",
    b"smessage",
    b"subscribe",
    b"psubscribe",
    b"ssubscribe",
    b"unsubscribe",
    b"punsubscribe",
    b"sunsubscribe",
];

/// Most arguments a plausible command has (Redis accepts more, clients rarely send them).
const ARGS_MAX: u64 = 1 << 20;

/// What one segment says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Yes,
    /// Consistent so far, but the segment ends too early to tell.
    Maybe,
    No,
}

pub(crate) fn detect(conn: &ConnInfo, seg: &Segment<'_>) -> Claim {
    if seg.data.is_empty() {
        return Claim::Undecided;
    }
    // With an unknown role either direction may carry the commands.
    if conn.role == Role::Unknown || seg.direction == conn.request_direction() {
        match command(seg.data) {
            Verdict::Yes => return Claim::Mine,
            Verdict::Maybe => return Claim::Undecided,
            Verdict::No if conn.role != Role::Unknown => return Claim::NotMine,
            Verdict::No => {}
        }
    }
    match reply(seg.data) {
        Verdict::Yes => Claim::Mine,
        Verdict::Maybe => Claim::Undecided,
        Verdict::No => Claim::NotMine,
    }
}

/// Whether `d` starts with a command.
pub(crate) fn command(d: &[u8]) -> Verdict {
    match d.first() {
        Some(b'*') => array(d),
        Some(b) if b.is_ascii_alphabetic() => inline(d),
        _ => Verdict::No,
    }
}

/// `*<n>\r\n$<len>\r\n<name>\r\n` with a name that looks like a command.
fn array(d: &[u8]) -> Verdict {
    let mut c = Cursor(d);
    let n = match c.number(b'*') {
        Ok(n) => n,
        Err(v) => return v,
    };
    if !(1..=ARGS_MAX).contains(&n) {
        return Verdict::No;
    }
    let len = match c.number(b'$') {
        Ok(len) => len as usize,
        Err(v) => return v,
    };
    if !(1..=NAME_MAX).contains(&len) {
        return Verdict::No;
    }
    let name = &c.0[..len.min(c.0.len())];
    let name_ok = name.first().is_none_or(u8::is_ascii_alphabetic)
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._-|".contains(b));
    if !name_ok {
        return Verdict::No;
    }
    match &c.0[name.len()..] {
        [b'\r', b'\n', ..] if name.len() == len => Verdict::Yes,
        [] | [b'\r'] => Verdict::Maybe,
        _ => Verdict::No,
    }
}

/// A whole inline line of printable ASCII whose first word is a well-known command.
fn inline(d: &[u8]) -> Verdict {
    let Some(nl) = d.iter().position(|&b| b == b'\n') else {
        let printable = d.len() < 64
            && d.iter()
                .all(|b| b.is_ascii_graphic() || *b == b' ' || *b == b'\r');
        return if printable {
            Verdict::Maybe
        } else {
            Verdict::No
        };
    };
    let line = d[..nl].strip_suffix(b"\r").unwrap_or(&d[..nl]);
    if !line.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        return Verdict::No;
    }
    let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let known = words.next().is_some_and(|w| {
        INLINE_COMMANDS
            .iter()
            .any(|c| c.as_bytes().eq_ignore_ascii_case(w))
    });
    // `PING :irc.example` is IRC; anything with ` HTTP/` is HTTP.
    let foreign = line.windows(6).any(|w| w == b" HTTP/") || words.any(|w| w.starts_with(b":"));
    if known && !foreign {
        Verdict::Yes
    } else {
        Verdict::No
    }
}

/// Whether `d` starts like a reply: `Yes` for a pub/sub message (we joined a subscribed
/// connection), `Maybe` for any other RESP type byte.
pub(crate) fn reply(d: &[u8]) -> Verdict {
    let Some(first) = d.first() else {
        return Verdict::Maybe;
    };
    if !TYPES.contains(first) {
        return Verdict::No;
    }
    if d.starts_with(b"*") || d.starts_with(b">") {
        let mut c = Cursor(d);
        if let (Ok(n), Ok(len)) = (c.number(d[0]), c.number(b'$'))
            && (2..=5).contains(&n)
            && let Some(kind) = c.0.get(..len as usize)
            && PUBSUB_KINDS.contains(&kind)
        {
            return Verdict::Yes;
        }
    }
    Verdict::Maybe
}

/// Reads RESP headers off the front of a segment.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    /// `<prefix><digits>\r\n`; `Err(Maybe)` if the segment ends inside it.
    fn number(&mut self, prefix: u8) -> Result<u64, Verdict> {
        let d = self.0;
        match d.first() {
            None => return Err(Verdict::Maybe),
            Some(&b) if b != prefix => return Err(Verdict::No),
            Some(_) => {}
        }
        let digits = d[1..].iter().take_while(|b| b.is_ascii_digit()).count();
        if digits > 10 {
            return Err(Verdict::No);
        }
        match &d[1 + digits..] {
            [] | [b'\r'] => Err(Verdict::Maybe),
            [b'\r', b'\n', ..] if digits > 0 => {
                self.0 = &d[1 + digits + 2..];
                Ok(d[1..1 + digits]
                    .iter()
                    .fold(0, |n, b| n * 10 + u64::from(b - b'0')))
            }
            _ => Err(Verdict::No),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(command(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"), Verdict::Yes);
        assert_eq!(command(b"*1\r\n$4\r\nping\r\n"), Verdict::Yes);
        assert_eq!(command(b"PING\r\n"), Verdict::Yes);
        assert_eq!(command(b"hello 3\n"), Verdict::Yes);
        // Cut short: wait for more.
        for cut in [
            b"*".as_slice(),
            b"*2",
            b"*2\r\n",
            b"*2\r\n$3\r",
            b"*2\r\n$3\r\nGE",
            b"*2\r\n$3\r\nGET\r",
            b"PIN",
        ] {
            assert_eq!(
                command(cut),
                Verdict::Maybe,
                "{}",
                String::from_utf8_lossy(cut)
            );
        }
    }

    #[test]
    fn not_commands() {
        let no: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /api HTTP/1.1\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"\x00\x00\x00\x2c\x00\x00\x00\x01",
            b"get user:1\r\n",
            b"set k 0 0 5\r\nhello\r\n",
            b"PING :irc.example.net\r\n",
            b"SSH-2.0-OpenSSH_9.6\r\n",
            b"*0\r\n",
            b"*2\r\n$0\r\n\r\n",
            b"*2\r\n$3\r\n\x01\x02\x03\r\n",
            b"*2\r\n$3\r\nGETX",
            b"*99999999999\r\n",
            b"+OK\r\n",
        ];
        for d in no {
            assert_eq!(command(d), Verdict::No, "{}", String::from_utf8_lossy(d));
        }
    }

    #[test]
    fn replies() {
        assert_eq!(
            reply(b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n"),
            Verdict::Yes
        );
        assert_eq!(reply(b">4\r\n$8\r\npmessage\r\n"), Verdict::Yes);
        assert_eq!(reply(b"+OK\r\n"), Verdict::Maybe);
        assert_eq!(reply(b"*2\r\n$3\r\nfoo\r\n"), Verdict::Maybe);
        assert_eq!(reply(b"HTTP/1.1 200 OK\r\n"), Verdict::No);
        assert_eq!(reply(b"\x16\x03\x03\x00\x5a\x02"), Verdict::No);
    }
}
