//! Byte scanning shared by the head parser and the resynchroniser: a word-at-a-time search for
//! one byte (no `memchr` dependency, and it compiles to plain 64-bit arithmetic in Wasm), and
//! the search for the end of a head that may be split across segments at any byte.

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Index of the first `needle` in `hay`.
///
/// Eight bytes per step: a header line is tens of bytes long, so a byte loop would be the
/// parser's hottest code.
#[inline]
pub(crate) fn find(hay: &[u8], needle: u8) -> Option<usize> {
    let pattern = LO * u64::from(needle);
    let mut chunks = hay.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes([
            chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7],
        ]) ^ pattern;
        // The lowest set bit marks the first zero byte exactly (false positives only appear
        // above a real zero, through the borrow).
        let zero = word.wrapping_sub(LO) & !word & HI;
        if zero != 0 {
            return Some(at + (zero.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|b| *b == needle)
        .map(|p| at + p)
}

/// Where the empty line that ends a head is, across segment boundaries.
///
/// The state carried between calls is how much of `LF [CR] LF` the previous bytes ended with,
/// so the bytes already buffered are never scanned twice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct HeadEnd(u8);

impl HeadEnd {
    /// Inside a line.
    const IN_LINE: u8 = 0;
    /// Just after an LF: at the start of a line.
    const LINE_START: u8 = 1;
    /// At the start of a line, after a CR.
    const LINE_START_CR: u8 = 2;

    /// The state after `data` (the first bytes of a head, which did not end it).
    pub(crate) fn after(data: &[u8]) -> Self {
        let mut s = Self::default();
        // Only the last two bytes matter.
        s.feed(&data[data.len().saturating_sub(2)..]);
        s
    }

    /// Feed the next bytes; the index just past the LF that ends the head, if it is in `data`.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Option<usize> {
        let mut i = 0;
        while self.0 != Self::IN_LINE {
            let b = data.get(i)?;
            i += 1;
            self.0 = match (self.0, *b) {
                (_, b'\n') => {
                    self.0 = Self::IN_LINE;
                    return Some(i);
                }
                (Self::LINE_START, b'\r') => Self::LINE_START_CR,
                _ => Self::IN_LINE,
            };
        }
        // The byte just before `i` was inside a line (or there was none).
        while let Some(p) = find(&data[i..], b'\n') {
            let lf = i + p;
            match (data.get(lf + 1), data.get(lf + 2)) {
                (Some(b'\n'), _) => return Some(lf + 2),
                (Some(b'\r'), Some(b'\n')) => return Some(lf + 3),
                (None, _) => {
                    self.0 = Self::LINE_START;
                    return None;
                }
                (Some(b'\r'), None) => {
                    self.0 = Self::LINE_START_CR;
                    return None;
                }
                _ => i = lf + 1,
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_matches_position() {
        let hay = b"0123456789abcdef\nxyz\n";
        for start in 0..hay.len() {
            let want = hay[start..].iter().position(|b| *b == b'\n');
            assert_eq!(find(&hay[start..], b'\n'), want, "from {start}");
        }
        assert_eq!(find(b"", b'x'), None);
        assert_eq!(find(&[0x80; 20], 0x00), None);
        assert_eq!(
            find(
                &[0x01, 0x00, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00],
                0x00
            ),
            Some(1)
        );
    }

    #[test]
    fn head_end_at_every_split() {
        for head in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY"[..],
            b"GET / HTTP/1.1\nHost: a\n\nBODY",
            b"GET / HTTP/1.1\r\n\r\nBODY",
        ] {
            let end = head.len() - 4;
            for split in 0..=head.len() {
                let (a, b) = head.split_at(split);
                let mut s = HeadEnd::default();
                let got = match s.feed(a) {
                    Some(e) => e,
                    None => {
                        assert_eq!(s, HeadEnd::after(a), "carry after {split}");
                        split + s.feed(b).expect("ends in the second part")
                    }
                };
                assert_eq!(
                    got,
                    end,
                    "split at {split} of {:?}",
                    String::from_utf8_lossy(head)
                );
            }
        }
    }

    #[test]
    fn head_end_needs_an_empty_line() {
        let mut s = HeadEnd::default();
        assert_eq!(s.feed(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
        assert_eq!(s.feed(b"\r"), None);
        assert_eq!(s.feed(b"x\r\n"), None);
        assert_eq!(s.feed(b"\r\n"), Some(2));
    }
}
