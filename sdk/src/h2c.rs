//! Is a connection's first request an HTTP/1.1 `Upgrade: h2c` (RFC 7540 §3.2)?
//!
//! One predicate, shared by the HTTP/1 parser (which declines such a connection) and the
//! HTTP/2 parser (which claims it), so exactly one of them takes it, whatever order their
//! claims come back in. It looks at the request head only, at most [`HEAD_LOOK`] bytes, and
//! keeps nothing: a head still incomplete is [`Head::More`] (the SDK's driver keeps the
//! prefix), a head not complete within [`HEAD_LOOK`] bytes is [`Head::Plain`].

/// Bytes of a request head looked at. A head with the upgrade that does not end within them
/// is taken for a plain HTTP/1 request (below `DETECT_BUDGET`, so detection always decides).
pub const HEAD_LOOK: usize = 2048;

/// What the first bytes of a client's side say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// An HTTP/1.1 request head carrying `Upgrade: h2c` (a token of the list, any case) and
    /// `HTTP2-Settings`: `head_len` bytes with the blank line, then `body` bytes of body
    /// (`Content-Length`) before the client preface.
    Upgrade { head_len: usize, body: u64 },
    /// Anything else: another HTTP/1 request, or not HTTP/1 at all.
    Plain,
    /// A prefix of a head that may still turn out an upgrade.
    More,
}

/// Classify the first bytes of a connection's client side.
pub fn classify(d: &[u8]) -> Head {
    // The request line: METHOD SP target SP HTTP/1.1 (only 1.1 upgrades to h2c).
    let look = &d[..d.len().min(HEAD_LOOK)];
    let line_end = look.iter().position(|b| *b == b'\n');
    let line = &look[..line_end.unwrap_or(look.len())];
    let m = line
        .iter()
        .take_while(|b| b.is_ascii_uppercase() || **b == b'-' || **b == b'_')
        .count();
    if m == 0 || (m < line.len() && line[m] != b' ') {
        return Head::Plain;
    }
    let Some(line_end) = line_end else {
        return if look.len() < HEAD_LOOK {
            Head::More
        } else {
            Head::Plain
        };
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if !line.ends_with(b" HTTP/1.1") || line.len() < m + 1 + 1 + 9 {
        return Head::Plain;
    }
    let mut upgrade = false;
    let mut settings = false;
    let mut body = 0u64;
    let mut at = line_end + 1;
    loop {
        let Some(n) = look[at..].iter().position(|b| *b == b'\n') else {
            return if look.len() < HEAD_LOOK {
                Head::More
            } else {
                Head::Plain
            };
        };
        let raw = &look[at..at + n];
        at += n + 1;
        let field = raw.strip_suffix(b"\r").unwrap_or(raw);
        if field.is_empty() {
            break;
        }
        let Some(colon) = field.iter().position(|b| *b == b':') else {
            return Head::Plain;
        };
        let name = &field[..colon];
        let value = field[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade |= value
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"h2c"));
        } else if name.eq_ignore_ascii_case(b"http2-settings") {
            settings = true;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // A chunked body before the preface: not followed, left to HTTP/1.
            return Head::Plain;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            match std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()) {
                Some(n) => body = n,
                None => return Head::Plain,
            }
        }
    }
    if upgrade && settings {
        Head::Upgrade { head_len: at, body }
    } else {
        Head::Plain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: &[u8] = b"GET /p HTTP/1.1\r\nHost: a:8\r\nConnection: Upgrade, HTTP2-Settings\r\n\
        Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n";

    #[test]
    fn an_upgrade_is_seen_whole_and_every_prefix_waits() {
        assert_eq!(
            classify(UP),
            Head::Upgrade {
                head_len: UP.len(),
                body: 0
            }
        );
        let mut more = UP.to_vec();
        more.extend_from_slice(b"PRI * HTTP/2.0");
        assert_eq!(
            classify(&more),
            Head::Upgrade {
                head_len: UP.len(),
                body: 0
            }
        );
        for n in 1..UP.len() {
            assert_eq!(classify(&UP[..n]), Head::More, "{n}");
        }
        let post = b"POST /x HTTP/1.1\nupgrade: websocket , H2C\nhttp2-settings:\ncontent-length: 3\n\nabc";
        assert_eq!(
            classify(post),
            Head::Upgrade {
                head_len: post.len() - 3,
                body: 3
            }
        );
    }

    #[test]
    fn anything_else_is_plain() {
        for d in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
            b"GET / HTTP/1.1\r\nHTTP2-Settings: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nHTTP2-Settings: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nUpgrade: h2cx\r\nHTTP2-Settings: x\r\n\r\n",
            b"GET / HTTP/1.0\r\nUpgrade: h2c\r\nHTTP2-Settings: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nUpgrade: h2c\r\nHTTP2-Settings: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nUpgrade: h2c\r\nHTTP2-Settings: x\r\nContent-Length: z\r\n\r\n",
            b"GET / HTTP/1.1\r\nbad line\r\n\r\n",
            b"GET / HTTP/1.0\r\n",
            b"HTTP/1.1 200 OK\r\n",
            b"\r\nGET / HTTP/1.1\r\n",
            b"get / HTTP/1.1\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\x00\x00\x00\x04",
            b"*1\r\n$4\r\nPING\r\n",
        ] {
            assert_eq!(classify(d), Head::Plain, "{:?}", String::from_utf8_lossy(d));
        }
        // A head that does not end within the look.
        let mut long = b"GET / HTTP/1.1\r\nCookie: ".to_vec();
        long.resize(HEAD_LOOK + 10, b'a');
        assert_eq!(classify(&long), Head::Plain);
        assert_eq!(classify(&long[..HEAD_LOOK - 1]), Head::More);
    }
}
