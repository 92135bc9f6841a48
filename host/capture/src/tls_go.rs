//! Go binaries' `crypto/tls`: where to put the uprobes of `host-ebpf/src/tls_go.rs`.
//!
//! A Go binary links `crypto/tls` statically, so its functions are found in the binary's own
//! ELF symbol table (`.symtab`, kept by `go build` unless `-ldflags=-s`). For each of
//! `(*Conn).Write` and `(*Conn).Read`: the file offset of the entry, and of every RET
//! instruction inside the function (decoded instruction by instruction, so a 0xC3 byte inside
//! another instruction is not taken for one) — the return probes go there, because
//! uretprobes corrupt Go stacks. Only x86-64 and Go ≥ 1.17 (the register ABI the programs
//! read) are accepted; anything else is a counted reason, not an error.
use std::{fs::File, path::Path};

use iced_x86::{Decoder, DecoderOptions, Mnemonic};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _, ReadCache, read::elf::ElfFile64};

pub const WRITE: &str = "crypto/tls.(*Conn).Write";
pub const READ: &str = "crypto/tls.(*Conn).Read";

/// File offsets of one function's entry and of its RET instructions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probes {
    pub entry: u64,
    pub rets: Vec<u64>,
}

/// What a Go binary using `crypto/tls` needs probed.
#[derive(Debug, Clone)]
pub struct GoTls {
    /// `go1.19.8`, from the binary's build information.
    pub version: String,
    pub write: Probes,
    pub read: Probes,
}

/// Inspects the ELF file at `path`. `Ok(None)`: not a Go binary, or one without `crypto/tls`.
/// `Err(reason)`: a Go binary with `crypto/tls` that cannot be probed (`go-stripped`,
/// `go-version`, `go-arch`, `go-symbol`), or a file that cannot be read (`file`).
pub fn inspect(path: &Path) -> Result<Option<GoTls>, &'static str> {
    let file = File::open(path).map_err(|_| "file")?;
    // Read on demand: most executables are not Go, and only a few sections are needed.
    let cache = ReadCache::new(file);
    let Ok(elf) = ElfFile64::<object::Endianness, _>::parse(&cache) else {
        return Ok(None); // not a 64-bit ELF: not a Go binary we could probe
    };
    let Some(buildinfo) = elf.section_by_name(".go.buildinfo") else {
        return Ok(None);
    };
    let uses_tls = |elf: &ElfFile64<object::Endianness, &ReadCache<File>>| {
        elf.symbols().any(|s| s.name() == Ok(WRITE))
    };
    if elf.architecture() != object::Architecture::X86_64 {
        return if uses_tls(&elf) {
            Err("go-arch")
        } else {
            Ok(None)
        };
    }
    if elf.symbol_table().is_none() {
        // Stripped: the names are still in .gopclntab; a plain search tells whether it uses
        // crypto/tls at all (then it is a binary we miss, counted).
        let uses = elf
            .section_by_name(".gopclntab")
            .and_then(|s| s.data().ok())
            .is_some_and(|d| d.windows(WRITE.len()).any(|w| w == WRITE.as_bytes()));
        return if uses { Err("go-stripped") } else { Ok(None) };
    }
    if !uses_tls(&elf) {
        return Ok(None);
    }
    let version = buildinfo
        .data()
        .ok()
        .and_then(|d| go_version(&elf, d))
        .unwrap_or_default();
    if !register_abi(&version) {
        return Err("go-version");
    }
    let write = probes(&elf, WRITE).ok_or("go-symbol")?;
    let read = probes(&elf, READ).ok_or("go-symbol")?;
    Ok(Some(GoTls {
        version,
        write,
        read,
    }))
}

/// The Go version in `.go.buildinfo`: inline since Go 1.18 (flag bit 2; a varint length and
/// the bytes at +32), before that a pointer at +16 to a string header (pointer, length).
fn go_version<'d, R: object::ReadRef<'d>>(
    elf: &ElfFile64<'d, object::Endianness, R>,
    info: &[u8],
) -> Option<String> {
    if info.len() < 32 || &info[..14] != b"\xff Go buildinf:" {
        return None;
    }
    let (ptr_size, flags) = (info[14], info[15]);
    if flags & 2 != 0 {
        let (len, used) = uvarint(&info[32..])?;
        let start = 32 + used;
        let bytes = info.get(start..start.checked_add(len as usize)?)?;
        return String::from_utf8(bytes.to_vec()).ok();
    }
    if ptr_size != 8 || flags & 1 != 0 {
        return None; // big-endian or 32-bit: not x86-64
    }
    let word = |b: &[u8]| Some(u64::from_le_bytes(b.get(..8)?.try_into().ok()?));
    let header = word(&info[16..])?;
    let hdr = read_at(elf, header, 16)?;
    let (ptr, len) = (word(&hdr)?, word(&hdr[8..])?);
    String::from_utf8(read_at(elf, ptr, len.min(64))?).ok()
}

/// `len` bytes at virtual address `addr`, from the section that holds it.
fn read_at<'d, R: object::ReadRef<'d>>(
    elf: &ElfFile64<'d, object::Endianness, R>,
    addr: u64,
    len: u64,
) -> Option<Vec<u8>> {
    let s = elf
        .sections()
        .find(|s| s.address() <= addr && addr + len <= s.address() + s.size())?;
    let (off, _) = s.file_range()?;
    elf.data()
        .read_bytes_at(off + (addr - s.address()), len)
        .ok()
        .map(<[u8]>::to_vec)
}

fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Go ≥ 1.17 passes arguments in registers on amd64; `devel` builds are taken as new.
fn register_abi(version: &str) -> bool {
    let Some(rest) = version.strip_prefix("go") else {
        return version.starts_with("devel");
    };
    let mut parts = rest.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= (1, 17)
}

/// The entry and RET file offsets of the function `name`.
fn probes<'d, R: object::ReadRef<'d>>(
    elf: &ElfFile64<'d, object::Endianness, R>,
    name: &str,
) -> Option<Probes> {
    let sym = elf.symbols().find(|s| s.name() == Ok(name))?;
    let (addr, size) = (sym.address(), sym.size());
    if size == 0 {
        return None;
    }
    let section = elf.section_by_index(sym.section_index()?).ok()?;
    let (off, _) = section.file_range()?;
    let file_off = off + (addr - section.address());
    let code = elf.data().read_bytes_at(file_off, size).ok()?;
    let rets = ret_offsets(code);
    if rets.is_empty() {
        return None;
    }
    Some(Probes {
        entry: file_off,
        rets: rets.into_iter().map(|r| file_off + r).collect(),
    })
}

/// Offsets of the RET instructions in x86-64 `code`, decoded from its first byte.
pub fn ret_offsets(code: &[u8]) -> Vec<u64> {
    let mut decoder = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let mut out = Vec::new();
    for insn in &mut decoder {
        if insn.mnemonic() == Mnemonic::Ret {
            out.push(insn.ip());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rets_at_instruction_boundaries_only() {
        // mov eax, 0xc3c3c3c3; ret; mov rbx, [rsp+0xc3]; ret
        let code = [
            0xb8, 0xc3, 0xc3, 0xc3, 0xc3, 0xc3, 0x48, 0x8b, 0x9c, 0x24, 0xc3, 0x00, 0x00, 0x00,
            0xc3,
        ];
        assert_eq!(ret_offsets(&code), vec![5, 14]);
    }

    #[test]
    fn register_abi_versions() {
        assert!(register_abi("go1.17"));
        assert!(register_abi("go1.19.8"));
        assert!(register_abi("go1.22rc1"));
        assert!(register_abi("devel go1.23-abcdef"));
        assert!(!register_abi("go1.16.15"));
        assert!(!register_abi(""));
    }

    #[test]
    fn varints() {
        assert_eq!(uvarint(&[0x08]), Some((8, 1)));
        assert_eq!(uvarint(&[0x96, 0x01]), Some((150, 2)));
        assert_eq!(uvarint(&[0x80]), None);
    }

    #[test]
    fn a_non_go_file_is_not_an_error() {
        assert!(matches!(inspect(Path::new("/bin/sh")), Ok(None)));
        assert!(matches!(
            inspect(Path::new("/nonexistent/sonde")),
            Err("file")
        ));
    }
}
