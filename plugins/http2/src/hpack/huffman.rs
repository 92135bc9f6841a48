//! HPACK's Huffman code (RFC 7541 Appendix B), decoding only.
//!
//! The code is canonical: within one length, codes are consecutive in symbol order, and each
//! length's first code follows the previous length's last. So the table is just the code
//! length of each symbol (the RFC's data), and a decoder needs, per length, the first code,
//! how many codes have it and where its symbols start: built at compile time. Decoding walks
//! the bits one at a time (at most 30 per symbol), which is plenty for header values.

/// Code length in bits of each symbol 0..=255, and of EOS (256): RFC 7541 Appendix B.
const LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

/// End of string: must never be decoded (RFC 7541 §5.2).
const EOS: u16 = 256;
const MAX_LEN: usize = 30;

/// Per code length: first code, count, offset of its first symbol in `symbols`.
struct Canonical {
    first: [u32; MAX_LEN + 1],
    count: [u32; MAX_LEN + 1],
    offset: [u32; MAX_LEN + 1],
    symbols: [u16; 257],
}

const fn canonical() -> Canonical {
    let mut c = Canonical {
        first: [0; MAX_LEN + 1],
        count: [0; MAX_LEN + 1],
        offset: [0; MAX_LEN + 1],
        symbols: [0; 257],
    };
    let mut code: u32 = 0;
    let mut n: usize = 0;
    let mut len = 1;
    while len <= MAX_LEN {
        c.first[len] = code;
        c.offset[len] = n as u32;
        let mut sym = 0;
        while sym < 257 {
            if LENGTHS[sym] as usize == len {
                c.symbols[n] = sym as u16;
                n += 1;
                c.count[len] += 1;
                code += 1;
            }
            sym += 1;
        }
        code <<= 1;
        len += 1;
    }
    c
}

static CANONICAL: Canonical = canonical();

/// Why a Huffman string is not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HuffmanError {
    /// EOS inside the string, a code longer than any, or padding that is not a prefix of EOS
    /// (all ones, under 8 bits).
    Invalid,
    /// The decoded string would exceed the caller's bound.
    TooLong,
}

/// Appends the decoding of `data` to `out`, at most `max` bytes in all.
pub(crate) fn decode(data: &[u8], out: &mut Vec<u8>, max: usize) -> Result<(), HuffmanError> {
    let c = &CANONICAL;
    let mut code: u32 = 0;
    let mut len: usize = 0;
    for byte in data {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            let idx = code.wrapping_sub(c.first[len]);
            if idx < c.count[len] {
                let sym = c.symbols[(c.offset[len] + idx) as usize];
                if sym == EOS {
                    return Err(HuffmanError::Invalid);
                }
                if out.len() >= max {
                    return Err(HuffmanError::TooLong);
                }
                out.push(sym as u8);
                code = 0;
                len = 0;
            } else if len >= MAX_LEN {
                return Err(HuffmanError::Invalid);
            }
        }
    }
    // Padding: the most significant bits of EOS (all ones), shorter than a byte.
    if len > 7 || code != (1u32 << len) - 1 {
        return Err(HuffmanError::Invalid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(data: &[u8]) -> Result<Vec<u8>, HuffmanError> {
        let mut out = Vec::new();
        decode(data, &mut out, 1024).map(|()| out)
    }

    #[test]
    fn canonical_codes_are_the_rfcs() {
        // A few codes of RFC 7541 Appendix B, as (symbol, code): the table rebuilt from the
        // lengths alone must give them.
        let c = &CANONICAL;
        let code_of = |sym: u16| {
            let len = LENGTHS[sym as usize] as usize;
            let pos = (0..c.count[len])
                .find(|i| c.symbols[(c.offset[len] + i) as usize] == sym)
                .unwrap();
            c.first[len] + pos
        };
        assert_eq!(code_of(b'0'.into()), 0x0);
        assert_eq!(code_of(b' '.into()), 0x14);
        assert_eq!(code_of(b'a'.into()), 0x3);
        assert_eq!(code_of(b'z'.into()), 0x7b);
        assert_eq!(code_of(0), 0x1ff8);
        assert_eq!(code_of(255), 0x3ffffee);
        assert_eq!(code_of(EOS), 0x3fff_ffff);
    }

    #[test]
    fn rfc_7541_c4_strings() {
        assert_eq!(
            dec(&[
                0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff
            ])
            .unwrap(),
            b"www.example.com"
        );
        assert_eq!(
            dec(&[0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf]).unwrap(),
            b"no-cache"
        );
        assert_eq!(
            dec(&[0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xa9, 0x7d, 0x7f]).unwrap(),
            b"custom-key"
        );
    }

    #[test]
    fn bad_strings_are_refused() {
        // EOS spelled out (30 ones, then padding).
        assert_eq!(dec(&[0xff, 0xff, 0xff, 0xff]), Err(HuffmanError::Invalid));
        // Padding of zeros: not a prefix of EOS.
        assert_eq!(dec(&[0x00]), Err(HuffmanError::Invalid));
        // Eight bits that end no code: too long for padding.
        assert_eq!(dec(&[0xfe]), Err(HuffmanError::Invalid));
        // Bounded output.
        let mut out = Vec::new();
        assert_eq!(
            decode(&[0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf], &mut out, 3),
            Err(HuffmanError::TooLong)
        );
    }
}
