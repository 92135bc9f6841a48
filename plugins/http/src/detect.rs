//! Is this HTTP/1.x? Decided on the first bytes of either direction: a request line
//! (`METHOD SP target SP HTTP/1.x`) or a status line (`HTTP/1.x SP 3DIGIT`).
//!
//! The same checks find the next message start when the parser has lost its place (see
//! `conn`), so they answer with a three-way [`Verdict`] on a prefix of the bytes.

use sonde_sdk::h2c;
use sonde_sdk::protocol_parser::Claim;

/// The standard methods. Any other all-uppercase token is accepted too, but only with a
/// complete request line behind it (`HTTP/1.x` and the line end).
pub const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Longest method token taken for HTTP (WebDAV's `VERSION-CONTROL` is 15).
pub const MAX_METHOD: usize = 20;

/// What a prefix of a stream says about a message starting there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// An HTTP/1.x start line (or a prefix specific enough to be one).
    Yes,
    /// Consistent so far; more bytes are needed.
    More,
    /// Cannot be an HTTP/1.x start line.
    No,
}

impl Verdict {
    /// The more hopeful of two verdicts.
    pub fn or(self, other: Verdict) -> Verdict {
        match (self, other) {
            (Verdict::Yes, _) | (_, Verdict::Yes) => Verdict::Yes,
            (Verdict::More, _) | (_, Verdict::More) => Verdict::More,
            _ => Verdict::No,
        }
    }
}

/// The claim on a connection from one segment's bytes (the driver calls this per segment until
/// a decision; it keeps nothing between calls).
pub fn detect(data: &[u8]) -> Claim {
    // RFC 9112 §2.2: empty lines before a request line are to be ignored.
    let start = data
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(data.len());
    let data = &data[start..];
    if data.is_empty() {
        return Claim::Undecided;
    }
    match request_line(data).or(status_line(data)) {
        // A request whose whole head, in the bytes the claim is decided on, is an
        // `Upgrade: h2c` is the HTTP/2 parser's: it claims with the same predicate
        // (`sonde_sdk::h2c`), and only on such bytes, so exactly one of the two takes it.
        Verdict::Yes if start == 0 && matches!(h2c::classify(data), h2c::Head::Upgrade { .. }) => {
            Claim::NotMine
        }
        // A 101 seen before its request (a batch may feed the server's side first): the
        // request decides, above (the HTTP/2 parser waits for it too).
        Verdict::Yes if data.starts_with(b"HTTP/1.1 101") => Claim::Undecided,
        Verdict::Yes => Claim::Mine,
        Verdict::More => Claim::Undecided,
        Verdict::No => Claim::NotMine,
    }
}

/// `HTTP/1.<digit> SP <3 digits>` followed by SP or the line end.
pub fn status_line(data: &[u8]) -> Verdict {
    // `#`: a digit; `$`: SP or the line end.
    const PATTERN: &[u8] = b"HTTP/1.# ###$";
    for (i, want) in PATTERN.iter().enumerate() {
        let Some(&b) = data.get(i) else {
            return Verdict::More;
        };
        let ok = match want {
            b'#' => b.is_ascii_digit(),
            b'$' => matches!(b, b' ' | b'\r' | b'\n'),
            w => b == *w,
        };
        if !ok {
            return Verdict::No;
        }
    }
    Verdict::Yes
}

/// `METHOD SP target SP HTTP/1.<digit>` and the line end.
///
/// A standard method with an origin-form target (`GET /`) is taken as soon as it is seen, so
/// a long URL that does not fit the first segment still gets its connection claimed.
pub fn request_line(data: &[u8]) -> Verdict {
    let m = data
        .iter()
        .take(MAX_METHOD + 1)
        .take_while(|b| is_method_byte(**b))
        .count();
    if m == data.len() {
        return if m <= MAX_METHOD {
            Verdict::More
        } else {
            Verdict::No
        };
    }
    if m == 0 || m > MAX_METHOD || data[m] != b' ' {
        return Verdict::No;
    }
    let method = &data[..m];
    // The HTTP/2 connection preface is `PRI * HTTP/2.0`.
    if method == b"PRI" {
        return Verdict::No;
    }
    let known = METHODS.iter().any(|k| k.as_bytes() == method);
    let target = m + 1;
    let Some(&first) = data.get(target) else {
        return Verdict::More;
    };
    let origin = first == b'/';
    if !(origin || first == b'*' || first.is_ascii_alphanumeric()) {
        return Verdict::No;
    }
    let early = if known && origin {
        Verdict::Yes
    } else {
        Verdict::More
    };
    let Some(len) = data[target..].iter().position(|b| *b <= b' ' || *b == 0x7f) else {
        return early;
    };
    if data[target + len] != b' ' {
        return Verdict::No;
    }
    let version = target + len + 1;
    for (i, want) in b"HTTP/1.".iter().enumerate() {
        match data.get(version + i) {
            None => return early,
            Some(b) if b == want => {}
            Some(_) => return Verdict::No,
        }
    }
    match data.get(version + 7) {
        None => return early,
        Some(b) if b.is_ascii_digit() => {}
        Some(_) => return Verdict::No,
    }
    match data.get(version + 8) {
        None => early,
        Some(b'\r' | b'\n') => Verdict::Yes,
        Some(_) => Verdict::No,
    }
}

/// Method tokens are taken as uppercase letters, `-` and `_` (real methods are; a lowercase
/// first word is much more likely another text protocol).
pub fn is_method_byte(b: u8) -> bool {
    b.is_ascii_uppercase() || b == b'-' || b == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses() {
        assert_eq!(detect(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Claim::Mine);
        assert_eq!(detect(b"HTTP/1.1 200 OK\r\n"), Claim::Mine);
        assert_eq!(detect(b"HTTP/1.0 204\r\n"), Claim::Mine);
        assert_eq!(detect(b"\r\nPOST /x HTTP/1.0\r\n"), Claim::Mine);
        assert_eq!(detect(b"OPTIONS * HTTP/1.1\r\n"), Claim::Mine);
        assert_eq!(detect(b"CONNECT example.com:443 HTTP/1.1\r\n"), Claim::Mine);
        assert_eq!(detect(b"PROPFIND /dav HTTP/1.1\r\n"), Claim::Mine);
        assert_eq!(detect(b"GET http://a/b HTTP/1.1\n"), Claim::Mine);
    }

    #[test]
    fn prefixes_wait() {
        for p in [
            &b"G"[..],
            b"GE",
            b"GET",
            b"GET ",
            b"HTTP/1.",
            b"HTTP/1.1 20",
            b"H",
            b"PROPFIND /x",
            b"CONNECT host:4",
            b"\r\n",
        ] {
            assert_eq!(
                detect(p),
                Claim::Undecided,
                "{:?}",
                String::from_utf8_lossy(p)
            );
        }
        // Every prefix of a request line is undecided or mine, never not-mine.
        let line = b"PATCH /users/1 HTTP/1.1\r\n";
        for n in 1..=line.len() {
            assert_ne!(detect(&line[..n]), Claim::NotMine, "{n}");
        }
        // A standard method and an origin-form target are enough.
        assert_eq!(detect(b"GET /a/very/long/url"), Claim::Mine);
    }

    #[test]
    fn an_h2c_upgrade_is_left_to_http2() {
        let up = b"GET /p HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n\
            Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n";
        assert_eq!(detect(up), Claim::NotMine);
        // Split before its end: claimed early, as any request (HTTP/2 declines it then).
        assert_eq!(detect(&up[..40]), Claim::Mine);
        // Other upgrades are HTTP/1's; a 101 seen first waits for its request.
        assert_eq!(
            detect(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"),
            Claim::Mine
        );
        assert_eq!(
            detect(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n"),
            Claim::Undecided
        );
        assert_eq!(
            detect(b"\r\nGET / HTTP/1.1\r\nUpgrade: h2c\r\nHTTP2-Settings: x\r\n\r\n"),
            Claim::Mine
        );
    }

    #[test]
    fn not_http() {
        for p in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
            b"*1\r\n$4\r\nPING\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\x00\x00\x00\x01",
            b"SSH-2.0-OpenSSH_9.6\r\n",
            b"get / HTTP/1.1\r\n",
            b"GET / HTTP/2.0\r\n",
            b"GET / FTP/1.1\r\n",
            b"GET /\r\n",
            b"PING\r\n",
            b"SET key value\r\n",
            b"HTTP/2 200\r\n",
            b"HTTP/1.1 2OO OK\r\n",
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZ / HTTP/1.1\r\n",
            b"GET  / HTTP/1.1\r\n",
        ] {
            assert_eq!(
                detect(p),
                Claim::NotMine,
                "{:?}",
                String::from_utf8_lossy(p)
            );
        }
    }
}
