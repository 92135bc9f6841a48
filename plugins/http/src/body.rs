//! Message body framing: the chunked transfer coding, decoded as a byte state machine so a
//! body can be split across segments at any byte without buffering anything.
//!
//! Chunk data is skipped in bulk; only the short size lines, chunk extensions and trailer
//! lines go byte by byte.

/// Where the decoder is inside a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunked {
    /// Reading the hexadecimal chunk size.
    Size { value: u64, digits: u8 },
    /// After the size: extensions (`;name=value`), whitespace, up to the LF.
    Extension(u64),
    /// Inside chunk data, with this many bytes left.
    Data(u64),
    /// Expecting the CR LF after chunk data.
    DataEnd,
    /// After the CR of [`Chunked::DataEnd`].
    DataEndLf,
    /// A gap took exactly one byte after chunk data: the CR of a CR LF, or a bare LF. An LF or
    /// the next size line's first digit may follow.
    DataEndGap,
    /// At the start of a trailer line, or of the final empty line.
    LineStart,
    /// At the start of a line, after a CR.
    LineStartLf,
    /// Inside a trailer field line.
    Trailer,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked::Size {
            value: 0,
            digits: 0,
        }
    }
}

/// The chunk data cannot be framed: the stream is out of sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FramingError {
    /// Bytes consumed, up to and including the offending one.
    pub used: usize,
}

impl Chunked {
    /// Decode from `data`: the bytes used and whether the body ended in them.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<(usize, bool), FramingError> {
        let mut i = 0;
        while i < data.len() {
            if let Chunked::Data(left) = *self {
                let take = left.min((data.len() - i) as u64);
                i += take as usize;
                *self = if take == left {
                    Chunked::DataEnd
                } else {
                    Chunked::Data(left - take)
                };
                continue;
            }
            let b = data[i];
            i += 1;
            *self = match (*self, b) {
                (Chunked::Size { value, digits }, _) if b.is_ascii_hexdigit() => {
                    // 15 hex digits is far beyond any real body; more would overflow.
                    if digits >= 15 {
                        return Err(FramingError { used: i });
                    }
                    Chunked::Size {
                        value: value << 4 | hex(b),
                        digits: digits + 1,
                    }
                }
                (Chunked::Size { digits: 0, .. }, _) => return Err(FramingError { used: i }),
                (Chunked::Size { value, .. }, b'\n') => after_size(value),
                (Chunked::Size { value, .. }, b';' | b' ' | b'\t' | b'\r') => {
                    Chunked::Extension(value)
                }
                (Chunked::Size { .. }, _) => return Err(FramingError { used: i }),
                (Chunked::Extension(value), b'\n') => after_size(value),
                (Chunked::Extension(value), _) => Chunked::Extension(value),
                (Chunked::DataEnd, b'\r') => Chunked::DataEndLf,
                (Chunked::DataEnd | Chunked::DataEndLf | Chunked::DataEndGap, b'\n') => {
                    Chunked::default()
                }
                (Chunked::DataEndGap, _) if b.is_ascii_hexdigit() => Chunked::Size {
                    value: hex(b),
                    digits: 1,
                },
                (Chunked::DataEnd | Chunked::DataEndLf | Chunked::DataEndGap, _) => {
                    return Err(FramingError { used: i });
                }
                (Chunked::LineStart, b'\r') => Chunked::LineStartLf,
                (Chunked::LineStart | Chunked::LineStartLf, b'\n') => {
                    *self = Chunked::default();
                    return Ok((i, true));
                }
                (Chunked::LineStartLf, _) => return Err(FramingError { used: i }),
                (Chunked::Trailer, b'\n') => Chunked::LineStart,
                (Chunked::LineStart | Chunked::Trailer, _) => Chunked::Trailer,
                (Chunked::Data(_), _) => unreachable!("handled above"),
            };
        }
        Ok((i, false))
    }

    /// `n` bytes of the stream are missing here. The decoder follows them by the lengths it
    /// knows: through the rest of the chunk data and the CR LF after it (taken as two bytes:
    /// real servers never end chunk data with a bare LF; one byte short of that leaves either
    /// possible). It stays in sync (`Absorbed`) unless the gap reaches into a chunk-size line,
    /// whose value is then unknown (`Lost`). A gap of exactly the final empty line after the
    /// last chunk ends the body (`Ended`).
    pub(crate) fn absorb(&mut self, n: u64) -> Absorb {
        // Bytes that would take the decoder to the next chunk-size line.
        let to_size = match *self {
            Chunked::Data(left) if n <= left => {
                *self = if n == left {
                    Chunked::DataEnd
                } else {
                    Chunked::Data(left - n)
                };
                return Absorb::Absorbed;
            }
            Chunked::Data(left) => left.saturating_add(2),
            Chunked::DataEnd => 2,
            Chunked::DataEndLf | Chunked::DataEndGap => 1,
            Chunked::LineStart if n == 2 => return self.end(),
            Chunked::LineStartLf if n == 1 => return self.end(),
            _ => return Absorb::Lost,
        };
        match to_size.checked_sub(n) {
            Some(0) => *self = Chunked::default(),
            Some(1) => *self = Chunked::DataEndGap,
            Some(2) => *self = Chunked::DataEnd,
            _ => return Absorb::Lost,
        }
        Absorb::Absorbed
    }

    fn end(&mut self) -> Absorb {
        *self = Chunked::default();
        Absorb::Ended
    }
}

/// What a gap did to a chunked body (see [`Chunked::absorb`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Absorb {
    Absorbed,
    Ended,
    Lost,
}

fn after_size(value: u64) -> Chunked {
    if value == 0 {
        Chunked::LineStart
    } else {
        Chunked::Data(value)
    }
}

fn hex(b: u8) -> u64 {
    u64::from(match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"4;ext=1\r\nWiki\r\n5 ; a=\"b\"\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\nX-A: b\r\n\r\nNEXT";

    #[test]
    fn whole_and_split_at_every_byte() {
        let end = BODY.len() - 4;
        let mut c = Chunked::default();
        assert_eq!(c.feed(BODY), Ok((end, true)));
        for split in 0..=end {
            let mut c = Chunked::default();
            let (a, b) = BODY.split_at(split);
            let (used, done) = c.feed(a).unwrap();
            let total = if done {
                used
            } else {
                assert_eq!(used, a.len());
                let (used2, done2) = c.feed(b).unwrap();
                assert!(done2, "split {split}");
                split + used2
            };
            assert_eq!(total, end, "split {split}");
        }
    }

    #[test]
    fn bare_lf_and_no_trailers() {
        let mut c = Chunked::default();
        assert_eq!(c.feed(b"3\nabc\n0\n\n"), Ok((9, true)));
    }

    #[test]
    fn errors() {
        assert!(Chunked::default().feed(b"zz\r\n").is_err());
        assert!(Chunked::default().feed(b"\r\n").is_err());
        assert!(Chunked::default().feed(b"3\r\nabcX").is_err());
        assert!(Chunked::default().feed(b"ffffffffffffffff\r\n").is_err());
    }

    #[test]
    fn gaps_inside_data_are_absorbed() {
        let mut c = Chunked::default();
        assert_eq!(c.feed(b"10\r\nab"), Ok((6, false)));
        assert_eq!(c.absorb(10), Absorb::Absorbed);
        assert_eq!(c.feed(b"wxyz\r\n0\r\n\r\n"), Ok((11, true)));
    }

    /// A gap through the end of chunk data and its CR LF, in every way it can be cut: the
    /// decoder comes out at the next size line each time.
    #[test]
    fn gaps_through_the_data_end() {
        const BODY: &[u8] = b"5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n";
        // "hello\r\n" is BODY[3..10]; a gap from `from` to `to` (exclusive) inside it.
        for from in 3..10 {
            for to in from + 1..=10 {
                let mut c = Chunked::default();
                assert_eq!(c.feed(&BODY[..from]), Ok((from, false)));
                assert_eq!(
                    c.absorb((to - from) as u64),
                    Absorb::Absorbed,
                    "{from}..{to}"
                );
                assert_eq!(
                    c.feed(&BODY[to..]),
                    Ok((BODY.len() - to, true)),
                    "{from}..{to}"
                );
            }
        }
        // One byte further is the size line's first digit: its value is unknown.
        let mut c = Chunked::default();
        c.feed(&BODY[..3]).unwrap();
        assert_eq!(c.absorb(8), Absorb::Lost);
        // After a gap of one byte, a bare LF was as possible as the CR: a digit may follow.
        let mut c = Chunked::default();
        c.feed(b"2\nab").unwrap();
        assert_eq!(c.absorb(1), Absorb::Absorbed);
        assert_eq!(c.feed(b"0\n\n"), Ok((3, true)));
        // Gaps in a size line or a trailer lose the framing.
        let mut c = Chunked::default();
        c.feed(b"2").unwrap();
        assert_eq!(c.absorb(3), Absorb::Lost);
        let mut c = Chunked::default();
        c.feed(b"0\r\nX-T").unwrap();
        assert_eq!(c.absorb(2), Absorb::Lost);
    }

    #[test]
    fn gap_of_the_final_line_ends_the_body() {
        let mut c = Chunked::default();
        c.feed(b"1\r\nx\r\n0\r\n").unwrap();
        assert_eq!(c.absorb(2), Absorb::Ended);
        let mut c = Chunked::default();
        c.feed(b"0\r\n\r").unwrap();
        assert_eq!(c.absorb(1), Absorb::Ended);
    }
}
