//! [`Comm`]: a task name held inline, so that decoding an event allocates nothing for it.
//!
//! The kernel's names are at most `TASK_COMM_LEN - 1` (15) bytes, so every valid UTF-8 name
//! fits the inline buffer; a name that is not UTF-8 (shown with U+FFFD replacements, which may
//! not fit) or a longer one built by tests goes to the heap, shared.
use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use serde::{Serialize, Serializer};
use sonde_common::TASK_COMM_LEN;

/// Bytes a name may have to be held inline (the kernel's buffer, terminator included).
const INLINE: usize = TASK_COMM_LEN;

/// A process or thread name (`comm`); reads as a `&str` ([`Comm::as_str`], `Deref`).
#[derive(Clone)]
pub struct Comm(Repr);

#[derive(Clone)]
enum Repr {
    /// `bytes[..len]` is valid UTF-8.
    Inline {
        len: u8,
        bytes: [u8; INLINE],
    },
    Heap(Arc<str>),
}

impl Comm {
    /// The name in a kernel `comm` buffer: up to the first NUL, invalid UTF-8 replaced by
    /// U+FFFD (as `String::from_utf8_lossy` does).
    pub fn from_kernel(raw: &[u8; TASK_COMM_LEN]) -> Comm {
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        match std::str::from_utf8(&raw[..end]) {
            Ok(s) => Comm::from(s),
            Err(_) => Comm(Repr::Heap(String::from_utf8_lossy(&raw[..end]).into())),
        }
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            // SAFETY: only built from a `&str` of `len` bytes (see `From<&str>`).
            Repr::Inline { len, bytes } => unsafe {
                std::str::from_utf8_unchecked(&bytes[..usize::from(*len)])
            },
            Repr::Heap(s) => s,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.as_str().is_empty()
    }
}

impl Default for Comm {
    fn default() -> Self {
        Comm(Repr::Inline {
            len: 0,
            bytes: [0; INLINE],
        })
    }
}

impl From<&str> for Comm {
    fn from(s: &str) -> Self {
        if s.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            Comm(Repr::Inline {
                len: s.len() as u8,
                bytes,
            })
        } else {
            Comm(Repr::Heap(s.into()))
        }
    }
}

impl From<String> for Comm {
    fn from(s: String) -> Self {
        Comm::from(s.as_str())
    }
}

impl Deref for Comm {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Comm {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Comm {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Comm {
    fn eq(&self, other: &Comm) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Comm {}

impl PartialEq<str> for Comm {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Comm {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Comm {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<Comm> for &str {
    fn eq(&self, other: &Comm) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Comm> for String {
    fn eq(&self, other: &Comm) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Hash for Comm {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl PartialOrd for Comm {
    fn partial_cmp(&self, other: &Comm) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Comm {
    fn cmp(&self, other: &Comm) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Display for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

/// As the string (what the `String` it replaces printed).
impl fmt::Debug for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for Comm {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(name: &[u8]) -> [u8; TASK_COMM_LEN] {
        let mut r = [0; TASK_COMM_LEN];
        r[..name.len()].copy_from_slice(name);
        r
    }

    #[test]
    fn kernel_names_read_up_to_the_terminator() {
        assert_eq!(Comm::from_kernel(&raw(b"nginx")), "nginx");
        assert_eq!(Comm::from_kernel(&raw(b"")), "");
        let full = *b"0123456789abcdef"; // no terminator: all 16 bytes
        assert_eq!(Comm::from_kernel(&full).as_str(), "0123456789abcdef");
    }

    #[test]
    fn invalid_utf8_reads_as_lossy_text() {
        let bad = raw(b"a\xff\xfeb\xc3");
        assert_eq!(
            Comm::from_kernel(&bad).as_str(),
            String::from_utf8_lossy(b"a\xff\xfeb\xc3")
        );
    }

    #[test]
    fn equal_names_are_equal_whatever_their_storage() {
        let long = "a-name-longer-than-sixteen-bytes";
        assert_eq!(Comm::from(long), long);
        assert_eq!(Comm::from(long).to_string(), long);
        let inline = Comm::from("api");
        let heap = Comm(Repr::Heap("api".into()));
        assert_eq!(inline, heap);
        let hash = |c: &Comm| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            c.hash(&mut h);
            h.finish()
        };
        assert_eq!(hash(&inline), hash(&heap));
        assert_eq!(format!("{inline:?}"), "\"api\"");
        assert_eq!(serde_json::to_string(&heap).unwrap(), "\"api\"");
        assert!(Comm::default().is_empty());
    }
}
