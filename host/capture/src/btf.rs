//! The few struct member offsets the eBPF side needs (`struct sock_common`), read from the
//! kernel's BTF (/sys/kernel/btf/vmlinux). A minimal reader: type section walk, member lookup
//! through anonymous structs/unions. No CO-RE needed on the kernel side.
use anyhow::{Context as _, Result, bail};

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
}

struct Type {
    name_off: u32,
    kind: u32,
    /// size for structs/unions, referenced type for modifiers/typedefs.
    size_or_type: u32,
    members: Vec<Member>,
}

pub struct Btf {
    strings: Vec<u8>,
    /// Index = type id; id 0 is void.
    types: Vec<Option<Type>>,
}

fn u32_at(b: &[u8], off: usize) -> Result<u32> {
    let s = b.get(off..off + 4).context("BTF truncated")?;
    Ok(u32::from_le_bytes(s.try_into().expect("4 bytes")))
}

impl Btf {
    pub fn from_sys() -> Result<Btf> {
        let path = "/sys/kernel/btf/vmlinux";
        let data = std::fs::read(path).with_context(|| {
            format!("reading {path}: Sonde needs a kernel built with BTF (CONFIG_DEBUG_INFO_BTF)")
        })?;
        Btf::parse(&data).with_context(|| format!("parsing {path}"))
    }

    pub fn parse(data: &[u8]) -> Result<Btf> {
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != BTF_MAGIC {
            bail!("not little-endian BTF");
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let (type_off, type_len) = (u32_at(data, 8)? as usize, u32_at(data, 12)? as usize);
        let (str_off, str_len) = (u32_at(data, 16)? as usize, u32_at(data, 20)? as usize);
        let types_raw = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .context("type section out of bounds")?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .context("string section out of bounds")?
            .to_vec();
        let mut types = vec![None];
        let mut off = 0;
        while off < types_raw.len() {
            let (ty, next) = Self::parse_type(types_raw, off)?;
            types.push(ty);
            off = next;
        }
        Ok(Btf { strings, types })
    }

    /// Parses one type record; returns it (only the kinds we need) and the next offset.
    fn parse_type(b: &[u8], off: usize) -> Result<(Option<Type>, usize)> {
        let name_off = u32_at(b, off)?;
        let info = u32_at(b, off + 4)?;
        let size_or_type = u32_at(b, off + 8)?;
        let vlen = (info & 0xffff) as usize;
        let kind = (info >> 24) & 0x1f;
        let kind_flag = info >> 31 == 1;
        let body = off + 12;
        let next = match kind {
            KIND_INT | KIND_VAR | KIND_DECL_TAG => body + 4,
            KIND_ARRAY => body + 12,
            KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => body + 12 * vlen,
            KIND_ENUM | KIND_FUNC_PROTO => body + 8 * vlen,
            _ => body, // PTR, FWD, TYPEDEF, modifiers, FUNC, FLOAT, TYPE_TAG
        };
        let mut members = Vec::new();
        if kind == KIND_STRUCT || kind == KIND_UNION {
            for i in 0..vlen {
                let m = body + 12 * i;
                let raw = u32_at(b, m + 8)?;
                members.push(Member {
                    name_off: u32_at(b, m)?,
                    type_id: u32_at(b, m + 4)?,
                    bit_offset: if kind_flag { raw & 0x00ff_ffff } else { raw },
                });
            }
        }
        if next > b.len() {
            bail!("type record at {off} runs past the type section");
        }
        Ok((
            Some(Type {
                name_off,
                kind,
                size_or_type,
                members,
            }),
            next,
        ))
    }

    fn name(&self, off: u32) -> &[u8] {
        let rest = self.strings.get(off as usize..).unwrap_or(&[]);
        &rest[..rest.iter().position(|&c| c == 0).unwrap_or(rest.len())]
    }

    fn ty(&self, id: u32) -> Option<&Type> {
        self.types.get(id as usize).and_then(Option::as_ref)
    }

    /// Follow typedefs and modifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let t = self.ty(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type
                }
                _ => return Some(t),
            }
        }
        None
    }

    /// Byte offset of `member` in struct `name`, looking through anonymous members.
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u16> {
        let st = self
            .types
            .iter()
            .flatten()
            .find(|t| t.kind == KIND_STRUCT && self.name(t.name_off) == name.as_bytes())
            .with_context(|| format!("BTF has no struct {name}"))?;
        let bits = self
            .find_member(st, member.as_bytes(), 0)
            .with_context(|| format!("BTF: struct {name} has no member {member}"))?;
        if bits % 8 != 0 {
            bail!("BTF: {name}.{member} is a bitfield");
        }
        u16::try_from(bits / 8).context("offset too large")
    }

    fn find_member(&self, t: &Type, member: &[u8], depth: u32) -> Option<u32> {
        if depth > 8 {
            return None;
        }
        for m in &t.members {
            if self.name(m.name_off) == member {
                return Some(m.bit_offset);
            }
            if m.name_off == 0 {
                let inner = self.resolve(m.type_id)?;
                if matches!(inner.kind, KIND_STRUCT | KIND_UNION)
                    && let Some(off) = self.find_member(inner, member, depth + 1)
                {
                    return Some(m.bit_offset + off);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel's BTF (every machine Sonde supports has it): sock_common's layout
    /// has been stable for years, so these offsets double as a parser check.
    #[test]
    fn sock_common_offsets_from_running_kernel() {
        let btf = Btf::from_sys().expect("BTF");
        assert_eq!(btf.member_offset("sock_common", "skc_daddr").unwrap(), 0);
        assert_eq!(
            btf.member_offset("sock_common", "skc_rcv_saddr").unwrap(),
            4
        );
        assert_eq!(btf.member_offset("sock_common", "skc_dport").unwrap(), 12);
        assert_eq!(btf.member_offset("sock_common", "skc_num").unwrap(), 14);
        assert_eq!(btf.member_offset("sock_common", "skc_family").unwrap(), 16);
        assert!(btf.member_offset("sock_common", "skc_v6_daddr").unwrap() >= 24);
        assert!(btf.member_offset("sock_common", "no_such_member").is_err());
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"not btf at all, not at all").is_err());
    }
}
