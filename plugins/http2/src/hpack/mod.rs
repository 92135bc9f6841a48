//! HPACK (RFC 7541): header blocks decoded into fields, with the static table, a dynamic
//! table per direction (size updates, eviction), integers, strings and Huffman.
//!
//! A decoder never guesses: a block that references an entry it may have missed (see
//! [`table::Dynamic`]) is refused with [`Error::Desync`], and the connection's records say so
//! instead of carrying another request's headers.

mod huffman;
pub(crate) mod table;

use table::{Dynamic, Lookup};

/// Why a header block was not decoded. Either way the dynamic table is no longer known in
/// full afterwards (the rest of the block's insertions were not applied): the decoder marks it
/// partial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Error {
    /// It references a dynamic entry inserted before we could follow the connection.
    Desync,
    /// Not valid HPACK (or past our bounds).
    Invalid,
}

/// One decoded field. Names past 256 bytes and values past [`VALUE_MAX`] are cut (the table
/// keeps them whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Field {
    pub(crate) name: Vec<u8>,
    pub(crate) value: Vec<u8>,
}

/// Longest name or value decoded (longer is invalid for us: no real header we read is that
/// long, and it bounds the work per string).
const STRING_MAX: usize = 64 * 1024;
/// Bytes of a value kept in a [`Field`].
pub(crate) const VALUE_MAX: usize = 1024;
/// Bytes of a name kept in a [`Field`] (no header the parser reads is longer).
const NAME_MAX: usize = 256;
/// Fields kept per block; further ones are decoded (for the table) but not kept.
pub(crate) const FIELDS_MAX: usize = 64;

/// The decoder of one direction.
#[derive(Debug)]
pub(crate) struct Decoder {
    table: Dynamic,
}

impl Decoder {
    /// `partial`: the connection was not followed from its start.
    pub(crate) fn new(table_cap: usize, partial: bool) -> Self {
        Self {
            table: Dynamic::new(table_cap, partial),
        }
    }

    /// Insertions were lost (a gap, a block we could not read).
    pub(crate) fn desync(&mut self) {
        self.table.desync();
    }

    /// Whether entries may be missing.
    #[cfg(test)]
    pub(crate) fn partial(&self) -> bool {
        self.table.partial
    }

    /// Decode a whole header block into `out` (cleared first). On error the table is marked
    /// partial.
    pub(crate) fn decode(&mut self, block: &[u8], out: &mut Vec<Field>) -> Result<(), Error> {
        out.clear();
        let r = self.decode_inner(block, out);
        if r.is_err() {
            self.table.desync();
            out.clear();
        }
        r
    }

    fn decode_inner(&mut self, mut b: &[u8], out: &mut Vec<Field>) -> Result<(), Error> {
        let mut fields_started = false;
        while let Some(&first) = b.first() {
            if first & 0x80 != 0 {
                // Indexed field.
                let i = integer(&mut b, 7)?;
                let (n, v) = self.lookup(i)?;
                push(out, n, v);
                fields_started = true;
            } else if first & 0xc0 == 0x40 {
                // Literal with incremental indexing.
                let (n, v) = self.literal(&mut b, 6)?;
                self.table.insert(&n, &v);
                push(out, &n, &v);
                fields_started = true;
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update: only before the first field (RFC 7541 §4.2).
                if fields_started {
                    return Err(Error::Invalid);
                }
                let max = integer(&mut b, 5)?;
                self.table.resize(max);
            } else {
                // Literal without indexing (0000) or never indexed (0001).
                let (n, v) = self.literal(&mut b, 4)?;
                push(out, &n, &v);
                fields_started = true;
            }
        }
        Ok(())
    }

    fn lookup(&self, i: usize) -> Result<(&[u8], &[u8]), Error> {
        match self.table.get(i) {
            Lookup::Found(n, v) => Ok((n, v)),
            Lookup::Unknown => Err(Error::Desync),
            Lookup::Invalid => Err(Error::Invalid),
        }
    }

    fn literal(&self, b: &mut &[u8], prefix: u8) -> Result<(Vec<u8>, Vec<u8>), Error> {
        let i = integer(b, prefix)?;
        let name = if i == 0 {
            string(b)?
        } else {
            self.lookup(i)?.0.to_vec()
        };
        let value = string(b)?;
        Ok((name, value))
    }
}

fn push(out: &mut Vec<Field>, name: &[u8], value: &[u8]) {
    if out.len() < FIELDS_MAX {
        out.push(Field {
            name: name[..name.len().min(NAME_MAX)].to_vec(),
            value: value[..value.len().min(VALUE_MAX)].to_vec(),
        });
    }
}

/// An integer with an `n`-bit prefix (RFC 7541 §5.1), bounded to what a table index, a
/// length or a table size can sensibly be.
fn integer(b: &mut &[u8], n: u8) -> Result<usize, Error> {
    let (&first, rest) = b.split_first().ok_or(Error::Invalid)?;
    *b = rest;
    let mask = (1usize << n) - 1;
    let mut v = usize::from(first) & mask;
    if v < mask {
        return Ok(v);
    }
    let mut shift = 0;
    loop {
        let (&byte, rest) = b.split_first().ok_or(Error::Invalid)?;
        *b = rest;
        if shift > 21 {
            return Err(Error::Invalid);
        }
        v += usize::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
}

/// A string literal (RFC 7541 §5.2), Huffman-decoded if flagged.
fn string(b: &mut &[u8]) -> Result<Vec<u8>, Error> {
    let huffman = b.first().ok_or(Error::Invalid)? & 0x80 != 0;
    let len = integer(b, 7)?;
    if len > b.len() || len > STRING_MAX {
        return Err(Error::Invalid);
    }
    let (raw, rest) = b.split_at(len);
    *b = rest;
    if !huffman {
        return Ok(raw.to_vec());
    }
    let mut out = Vec::with_capacity(len + len / 2);
    huffman::decode(raw, &mut out, STRING_MAX).map_err(|_| Error::Invalid)?;
    Ok(out)
}

#[cfg(test)]
mod tests;
