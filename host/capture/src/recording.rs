//! Event recordings: ring-buffer records (the kernel's exact bytes, see [`super::events`])
//! saved to a file, so the user-space pipeline can be replayed and measured without a kernel.
//!
//! Format: the magic line `SONDE-EVENTS 1\n`, then per record a little-endian `u32` length
//! and that many bytes.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context as _, Result, bail};

pub const MAGIC: &[u8] = b"SONDE-EVENTS 1\n";

/// Writes a recording.
pub struct Recorder<W: Write> {
    out: W,
    pub records: u64,
}

impl<W: Write> Recorder<W> {
    pub fn new(mut out: W) -> Result<Self> {
        out.write_all(MAGIC)?;
        Ok(Self { out, records: 0 })
    }

    pub fn record(&mut self, raw: &[u8]) -> Result<()> {
        let len = u32::try_from(raw.len()).context("record larger than 4 GiB")?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(raw)?;
        self.records += 1;
        Ok(())
    }

    pub fn finish(mut self) -> Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Every record of a recording, in order. Errors name the offset of a truncated record.
pub fn read(path: &Path) -> Result<Vec<Vec<u8>>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .with_context(|| format!("opening recording {}", path.display()))?
        .read_to_end(&mut bytes)?;
    parse(&bytes).with_context(|| format!("reading recording {}", path.display()))
}

pub fn parse(bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    let Some(mut rest) = bytes.strip_prefix(MAGIC) else {
        bail!("not a Sonde event recording (no `SONDE-EVENTS 1` header)")
    };
    let mut out = Vec::new();
    while !rest.is_empty() {
        let at = bytes.len() - rest.len();
        let (len, tail) = rest
            .split_at_checked(4)
            .with_context(|| format!("offset {at}: truncated length"))?;
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let (rec, tail) = tail
            .split_at_checked(len)
            .with_context(|| format!("offset {at}: record of {len} bytes is truncated"))?;
        out.push(rec.to_vec());
        rest = tail;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation_errors() {
        let mut r = Recorder::new(Vec::new()).unwrap();
        r.record(b"abc").unwrap();
        r.record(b"").unwrap();
        let bytes = r.finish().unwrap();
        assert_eq!(parse(&bytes).unwrap(), vec![b"abc".to_vec(), vec![]]);
        let err = parse(&bytes[..bytes.len() - 6]).unwrap_err();
        assert!(format!("{err:#}").contains("truncated"), "{err:#}");
        assert!(parse(b"nope").is_err());
    }
}
