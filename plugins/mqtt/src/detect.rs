//! Is a connection MQTT: the client's first packet is a CONNECT (type 1, flags 0) naming the
//! protocol "MQTT" (level 4 = 3.1.1, 5 = 5.0) or "MQIsdp" (level 3 = 3.1). Decided from the
//! first bytes; never from a port. The broker never speaks first, so a server's first bytes
//! other than a CONNACK (one read before its CONNECT, see the driver) decline.

use sonde_sdk::protocol_parser::{Claim, ConnInfo, Role, Segment};

use crate::wire::{Varint, varint};

/// What a prefix says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It is.
    Yes,
    /// It is not.
    No,
    /// Consistent so far: more bytes needed.
    More,
}

/// Whether the connection is MQTT, from one direction's first bytes.
pub fn detect(conn: &ConnInfo, seg: &Segment<'_>) -> Claim {
    let from_client = match conn.role {
        Role::Unknown => None,
        _ => Some(seg.direction == conn.request_direction()),
    };
    let connect = connect(seg.data);
    let connack = connack(seg.data);
    let claim = |v: Verdict| match v {
        Verdict::Yes => Claim::Mine,
        Verdict::More => Claim::Undecided,
        Verdict::No => Claim::NotMine,
    };
    match from_client {
        Some(true) => claim(connect),
        // A CONNACK waits for its CONNECT; it never claims alone.
        Some(false) => match connack {
            Verdict::No => Claim::NotMine,
            _ => Claim::Undecided,
        },
        None => match (connect, connack) {
            (Verdict::No, Verdict::No) => Claim::NotMine,
            (c, _) => match claim(c) {
                Claim::NotMine => Claim::Undecided,
                other => other,
            },
        },
    }
}

/// A CONNECT's first bytes: `0x10`, a remaining length, the protocol name and level.
pub fn connect(d: &[u8]) -> Verdict {
    let Some(&first) = d.first() else {
        return Verdict::More;
    };
    if first != 0x10 {
        return Verdict::No;
    }
    let (len, n) = match varint(&d[1..]) {
        Varint::Value(len, n) => (len, n),
        Varint::Short => return Verdict::More,
        Varint::Malformed => return Verdict::No,
    };
    // Protocol name (2 + 4 or 6), level, flags, keep alive: 10 bytes at least.
    if len < 10 {
        return Verdict::No;
    }
    let rest = &d[1 + n..];
    let names: [(&[u8], &[u8]); 2] = [(b"\x00\x04MQTT", &[4, 5]), (b"\x00\x06MQIsdp", &[3])];
    let mut more = false;
    for (name, levels) in names {
        let have = rest.len().min(name.len());
        if rest[..have] != name[..have] {
            continue;
        }
        match rest.get(name.len()) {
            None => more = true,
            Some(level) if levels.contains(level) => return Verdict::Yes,
            Some(_) => {}
        }
    }
    if more { Verdict::More } else { Verdict::No }
}

/// A CONNACK's first bytes: `0x20` and a remaining length of 2 (3.x) or more (5.0).
fn connack(d: &[u8]) -> Verdict {
    match d {
        [] => Verdict::More,
        [0x20] => Verdict::More,
        [0x20, len, ..] if *len >= 2 => Verdict::More,
        _ => Verdict::No,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonde_sdk::protocol_parser::Direction;

    const CONNECT_311: &[u8] = b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04abcd";
    const CONNECT_31: &[u8] = b"\x10\x12\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x04abcd";

    fn seg(direction: Direction, data: &[u8]) -> Segment<'_> {
        Segment {
            direction,
            ts_ns: 1,
            gap_before: 0,
            data,
        }
    }

    fn client() -> ConnInfo {
        ConnInfo {
            role: Role::Client,
            ..Default::default()
        }
    }

    #[test]
    fn connect_of_each_version_claims_and_prefixes_wait() {
        let c = client();
        assert_eq!(
            detect(&c, &seg(Direction::Egress, CONNECT_311)),
            Claim::Mine
        );
        assert_eq!(detect(&c, &seg(Direction::Egress, CONNECT_31)), Claim::Mine);
        let mut v5 = CONNECT_311.to_vec();
        v5[8] = 5;
        assert_eq!(detect(&c, &seg(Direction::Egress, &v5)), Claim::Mine);
        for cut in 0..9 {
            assert_eq!(
                detect(&c, &seg(Direction::Egress, &CONNECT_311[..cut])),
                Claim::Undecided,
                "{cut}"
            );
        }
    }

    #[test]
    fn other_protocols_decline_in_the_first_bytes() {
        let c = client();
        for other in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"*1\r\n$4\r\nPING\r\n",
            b"\x10\x10\x00\x04AMQP\x04",
            // MQTT, but an unknown level.
            b"\x10\x10\x00\x04MQTT\x07",
            // Too short to be a CONNECT.
            b"\x10\x02\x00\x04",
            // A PUBLISH first: mid-stream, never claimed.
            b"\x30\x05\x00\x01ahi",
        ] {
            assert_eq!(
                detect(&c, &seg(Direction::Egress, other)),
                Claim::NotMine,
                "{other:?}"
            );
        }
        // A server greeting first: not MQTT.
        assert_eq!(
            detect(&c, &seg(Direction::Ingress, b"220 smtp ready\r\n")),
            Claim::NotMine
        );
        // A CONNACK first waits for the CONNECT.
        assert_eq!(
            detect(&c, &seg(Direction::Ingress, b"\x20\x02\x00\x00")),
            Claim::Undecided
        );
    }

    #[test]
    fn role_unknown_claims_the_connect_either_way() {
        let c = ConnInfo::default();
        assert_eq!(
            detect(&c, &seg(Direction::Ingress, CONNECT_311)),
            Claim::Mine
        );
        assert_eq!(
            detect(&c, &seg(Direction::Egress, b"\x20\x02\x00\x00")),
            Claim::Undecided
        );
        assert_eq!(
            detect(&c, &seg(Direction::Egress, b"HTTP/1.1 200")),
            Claim::NotMine
        );
    }
}
