//! tracefs: mount it when missing (a fresh node has it unmounted) and read tracepoint record
//! layouts from its `format` files, so the eBPF side reads fields at this kernel's offsets.
use std::collections::HashMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// The tracefs root, mounting it at /sys/kernel/tracing when no mount is found.
pub fn ensure_mounted() -> Result<PathBuf> {
    for root in [TRACEFS, DEBUGFS_TRACING] {
        if Path::new(root).join("events").is_dir() {
            return Ok(PathBuf::from(root));
        }
    }
    tracing::info!(path = TRACEFS, "tracefs is not mounted; mounting it");
    let target = CString::new(TRACEFS).expect("no NUL");
    let fstype = CString::new("tracefs").expect("no NUL");
    let source = CString::new("nodev").expect("no NUL");
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        bail!("mounting tracefs at {TRACEFS} failed: {err} (Sonde needs root to mount it)");
    }
    if !Path::new(TRACEFS).join("events").is_dir() {
        bail!("tracefs mounted at {TRACEFS} but has no events/ directory");
    }
    Ok(PathBuf::from(TRACEFS))
}

/// Field name → (offset, size) of one tracepoint's record.
#[derive(Debug, Clone)]
pub struct Format {
    pub name: String,
    fields: HashMap<String, (u16, u16)>,
}

impl Format {
    pub fn read(root: &Path, category: &str, event: &str) -> Result<Format> {
        let path = root
            .join("events")
            .join(category)
            .join(event)
            .join("format");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "tracepoint {category}:{event} is missing ({})",
                path.display()
            )
        })?;
        Ok(Format::parse(&format!("{category}:{event}"), &text))
    }

    /// Parses lines like `field:void * sk; offset:8; size:8; signed:0;` (tab-separated).
    pub fn parse(name: &str, text: &str) -> Format {
        let mut fields = HashMap::new();
        for line in text.lines() {
            let mut decl = None;
            let mut offset = None;
            let mut size = None;
            for part in line.trim().split(';') {
                let part = part.trim();
                if let Some(d) = part.strip_prefix("field:") {
                    decl = Some(d);
                } else if let Some(o) = part.strip_prefix("offset:") {
                    offset = o.parse::<u16>().ok();
                } else if let Some(s) = part.strip_prefix("size:") {
                    size = s.parse::<u16>().ok();
                }
            }
            if let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) {
                // The field name is the last word, without any `[N]`: `__u8 saddr[28]`,
                // `void * sk`, `__data_loc char[] name`.
                let last = decl.trim().rsplit([' ', '*']).next().unwrap_or(decl);
                let ident = last.split('[').next().unwrap_or(last).trim();
                fields.insert(ident.to_string(), (offset, size));
            }
        }
        Format {
            name: name.to_string(),
            fields,
        }
    }

    /// Offset of `field`, checking its size, so a layout change is an error, not garbage.
    pub fn offset(&self, field: &str, size: u16) -> Result<u16> {
        match self.fields.get(field) {
            Some(&(off, sz)) if sz == size => Ok(off),
            Some(&(_, sz)) => bail!(
                "{}: field {field} has size {sz}, expected {size}",
                self.name
            ),
            None => bail!("{}: no field {field}", self.name),
        }
    }
}

/// `value → name` pairs of `__print_symbolic(REC-><field>, { 2, "NAME" }, …)` in a format
/// file's `print fmt` line. Anything unparsable is skipped: names are for display only.
pub fn print_symbols(format_text: &str, field: &str) -> HashMap<u32, String> {
    let mut out = HashMap::new();
    let needle = format!("__print_symbolic(REC->{field},");
    let Some(start) = format_text.find(&needle) else {
        return out;
    };
    let mut rest = &format_text[start + needle.len()..];
    while let Some(open) = rest.find('{') {
        // Stop at the end of this __print_symbolic call.
        if rest[..open].contains(')') {
            break;
        }
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let pair = &rest[open + 1..open + close];
        if let Some((num, name)) = pair.split_once(',') {
            let num = num.trim();
            let parsed = num
                .strip_prefix("0x")
                .map_or_else(|| num.parse().ok(), |h| u32::from_str_radix(h, 16).ok());
            if let Some(n) = parsed {
                out.insert(n, name.trim().trim_matches('"').to_string());
            }
        }
        rest = &rest[open + close + 1..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOCK_SEND_LENGTH: &str = "name: sock_send_length
ID: 1590
format:
	field:unsigned short common_type;	offset:0;	size:2;	signed:0;
	field:void * sk;	offset:8;	size:8;	signed:0;
	field:__u16 family;	offset:16;	size:2;	signed:0;
	field:__u8 saddr_v6[16];	offset:40;	size:16;	signed:0;
	field:__data_loc char[] name;	offset:56;	size:4;	signed:0;
";

    #[test]
    fn reads_symbol_tables() {
        let text = r#"print fmt: "reason: %s", __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 0x0c, "NETFILTER_DROP" }), __print_symbolic(REC->other, { 9, "X" })"#;
        let names = print_symbols(text, "reason");
        assert_eq!(names.len(), 2);
        assert_eq!(names[&2], "NOT_SPECIFIED");
        assert_eq!(names[&12], "NETFILTER_DROP");
        assert!(print_symbols(text, "missing").is_empty());
    }

    /// The running kernel names its drop reasons (the daemon shows these in its metrics).
    #[test]
    fn running_kernel_names_netfilter_drops() {
        let Ok(root) = ensure_mounted() else {
            panic!("tracefs is needed (run as root)");
        };
        let text = std::fs::read_to_string(root.join("events/skb/kfree_skb/format")).unwrap();
        let names = print_symbols(&text, "reason");
        assert!(names.values().any(|n| n == "NETFILTER_DROP"), "{names:?}");
    }

    #[test]
    fn parses_format_fields() {
        let f = Format::parse("sock:sock_send_length", SOCK_SEND_LENGTH);
        assert_eq!(f.offset("sk", 8).unwrap(), 8);
        assert_eq!(f.offset("family", 2).unwrap(), 16);
        assert_eq!(f.offset("saddr_v6", 16).unwrap(), 40);
        assert_eq!(f.offset("common_type", 2).unwrap(), 0);
        assert_eq!(f.offset("name", 4).unwrap(), 56, "__data_loc string");
        assert!(
            f.offset("family", 4)
                .unwrap_err()
                .to_string()
                .contains("size 2")
        );
        assert!(
            f.offset("nope", 4)
                .unwrap_err()
                .to_string()
                .contains("no field nope")
        );
    }
}
