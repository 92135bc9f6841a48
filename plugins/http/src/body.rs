//! Message body framing: the chunked transfer coding, decoded as a byte state machine so a
//! body can be split across segments at any byte without buffering anything.
//!
//! Chunk data is skipped in bulk; only the short size lines, chunk extensions and trailer
//! lines go byte by byte.

/// Where the decoder is inside a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
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
pub struct FramingError {
    /// Bytes consumed, up to and including the offending one.
    pub used: usize,
}

impl Chunked {
    /// Decode from `data`: the bytes used and whether the body ended in them.
    pub fn feed(&mut self, data: &[u8]) -> Result<(usize, bool), FramingError> {
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
                (Chunked::DataEnd | Chunked::DataEndLf, b'\n') => Chunked::default(),
                (Chunked::DataEnd | Chunked::DataEndLf, _) => return Err(FramingError { used: i }),
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

    /// `n` bytes of the stream are missing here. If they fall inside chunk data the decoder
    /// skips them and stays in sync (true); anywhere else the framing is lost (false).
    pub fn absorb(&mut self, n: u64) -> bool {
        match *self {
            Chunked::Data(left) if n <= left => {
                *self = if n == left {
                    Chunked::DataEnd
                } else {
                    Chunked::Data(left - n)
                };
                true
            }
            _ => false,
        }
    }
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
        assert!(c.absorb(10));
        assert_eq!(c.feed(b"wxyz\r\n0\r\n\r\n"), Ok((11, true)));
        let mut c = Chunked::default();
        c.feed(b"2\r\n").unwrap();
        assert!(!c.absorb(3));
    }
}
