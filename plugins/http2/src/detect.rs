//! Is this connection HTTP/2? Decided from the first segment, cheaply.
//!
//! A connection seen from its start opens with the client preface (RFC 9113 §3.4): claimed on
//! it, and a prefix of it waits for more. h2c by `Upgrade: h2c` starts as an HTTP/1.1 request
//! head: claimed when the whole head, with `Upgrade: h2c` and `HTTP2-Settings`, is in the
//! bytes the HTTP/1 parser decides on (see [`upgrade`]); any other HTTP/1 request is declined
//! once its method is followed by a target. A connection joined mid-stream starts with some frame: claimed only if
//! the segment is a run of believable frame headers (types, streams and lengths that agree,
//! see [`frame::plausible`]) that starts with a frame a peer sends on its own (SETTINGS,
//! HEADERS, WINDOW_UPDATE, PING). Anything else is declined on its first bytes: a frame header
//! starts with a zero byte unless the frame is 64 KiB or larger.

use sonde_sdk::h2c::{self, Head};
use sonde_sdk::protocol_parser::{Claim, Segment};

use crate::frame::{self, HEADERS, PING, PREFACE, SETTINGS, WINDOW_UPDATE};

/// Longest method token (as the HTTP/1 parser's).
const MAX_METHOD: usize = 20;

pub(crate) fn detect(seg: &Segment<'_>) -> Claim {
    let d = seg.data;
    match d.first() {
        None => Claim::Undecided,
        Some(b'P') if d.starts_with(PREFACE) => Claim::Mine,
        Some(b'P') if PREFACE.starts_with(d) => Claim::Undecided,
        Some(b'H') if switching(d) => Claim::Undecided,
        Some(b'A'..=b'Z') => upgrade(d),
        Some(0) => mid_stream(d),
        Some(_) => Claim::NotMine,
    }
}

/// The server's `HTTP/1.1 101` (or a prefix of it), fed before the request: the request
/// decides (the HTTP/1 parser waits for it too).
fn switching(d: &[u8]) -> bool {
    const LINE: &[u8] = b"HTTP/1.1 101";
    let n = d.len().min(LINE.len());
    d[..n] == LINE[..n]
}

/// An HTTP/1.1 request head with `Upgrade: h2c` (RFC 7540 §3.2), by the predicate the HTTP/1
/// parser declines it with (`sonde_sdk::h2c`). Claimed only if the whole head is in the bytes
/// the HTTP/1 parser decides on: it claims a request as soon as it sees a target after the
/// method, so anything longer than `METHOD SP` that is not a whole upgrade head is declined
/// here (a head split there stays HTTP/1's), and no connection is ever claimed by both.
fn upgrade(d: &[u8]) -> Claim {
    if let Head::Upgrade { .. } = h2c::classify(d) {
        return Claim::Mine;
    }
    let m = d
        .iter()
        .take(MAX_METHOD + 1)
        .take_while(|b| b.is_ascii_uppercase() || **b == b'-' || **b == b'_')
        .count();
    if m <= MAX_METHOD && (m == d.len() || (m + 1 == d.len() && d[m] == b' ')) {
        Claim::Undecided
    } else {
        Claim::NotMine
    }
}

fn mid_stream(d: &[u8]) -> Claim {
    let c = frame::chain(d);
    let opener = matches!(
        c.first_kind,
        Some(SETTINGS | HEADERS | WINDOW_UPDATE | PING)
    );
    if opener && frame::plausible(d) {
        Claim::Mine
    } else if d.len() < 9 && head_so_far(d) {
        // Not even one header yet, but what there is could start an opener.
        Claim::Undecided
    } else {
        Claim::NotMine
    }
}

/// Whether the first bytes (fewer than a header) can start a frame a peer opens with.
fn head_so_far(d: &[u8]) -> bool {
    let (Some(&kind), Some(len)) = (d.get(3), d.get(..3)) else {
        return true;
    };
    let len = u32::from_be_bytes([0, len[0], len[1], len[2]]);
    match kind {
        SETTINGS => len.is_multiple_of(6),
        HEADERS => true,
        WINDOW_UPDATE => len == 4,
        PING => len == 8,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonde_sdk::protocol_parser::Direction;

    fn seg(data: &[u8]) -> Segment<'_> {
        Segment {
            direction: Direction::Egress,
            ts_ns: 1,
            gap_before: 0,
            data,
        }
    }

    #[test]
    fn the_preface_is_claimed() {
        assert_eq!(detect(&seg(PREFACE)), Claim::Mine);
        let mut with_settings = PREFACE.to_vec();
        with_settings.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert_eq!(detect(&seg(&with_settings)), Claim::Mine);
        assert_eq!(detect(&seg(&PREFACE[..10])), Claim::Undecided);
    }

    #[test]
    fn other_protocols_are_declined_at_once() {
        for d in [
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".as_slice(),
            b"POST /x HTTP/1.1\r\n",
            b"PUT /x HTTP/1.1\r\n",
            b"*1\r\n$4\r\nPING\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            // PostgreSQL's SSLRequest and startup message.
            b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
            b"\x00\x00\x00\x29\x00\x03\x00\x00user\x00postgres\x00database\x00postgres\x00\x00",
            // A MySQL handshake.
            b"\x4a\x00\x00\x00\x0a\x38\x2e\x30\x2e\x33\x36\x00",
        ] {
            assert_eq!(detect(&seg(d)), Claim::NotMine, "{d:?}");
        }
    }

    #[test]
    fn an_upgrade_head_is_claimed_and_other_heads_declined() {
        let up = b"GET /p HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n\
            Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n";
        assert_eq!(detect(&seg(up)), Claim::Mine);
        for p in [
            &b"G"[..],
            b"GET",
            b"GET ",
            b"OPTIONS ",
            b"P",
            b"PO",
            b"POST ",
            // The server's answer, fed first: the request decides.
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
            b"HTTP/1.",
        ] {
            assert_eq!(detect(&seg(p)), Claim::Undecided, "{p:?}");
        }
        // The HTTP/1 parser claims from here on: declined, even if the head would upgrade.
        for n in 5..up.len() {
            assert_eq!(detect(&seg(&up[..n])), Claim::NotMine, "{n}");
        }
        for d in [
            &b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.0 101",
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        ] {
            assert_eq!(detect(&seg(d)), Claim::NotMine, "{d:?}");
        }
    }

    #[test]
    fn frames_mid_stream_are_claimed() {
        // SETTINGS ACK then HEADERS on stream 3.
        let mut d = vec![0, 0, 0, 4, 1, 0, 0, 0, 0];
        d.extend_from_slice(&[0, 0, 1, 1, 4, 0, 0, 0, 3, 0x82]);
        assert_eq!(detect(&seg(&d)), Claim::Mine);
        // DATA first: could be anything's length prefix.
        let data = [0, 0, 2, 0, 0, 0, 0, 0, 3, b'h', b'i'];
        assert_eq!(detect(&seg(&data)), Claim::NotMine);
    }
}
