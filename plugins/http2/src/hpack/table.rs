//! HPACK's indexing tables (RFC 7541 §2.3): the static table, and one dynamic table per
//! direction of a connection.

use std::collections::VecDeque;

/// RFC 7541 Appendix A: index 1..=61.
pub(crate) const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// A name and a value.
type Entry = (Box<[u8]>, Box<[u8]>);

/// What every entry costs beyond its bytes (RFC 7541 §4.1).
const ENTRY_OVERHEAD: usize = 32;

/// The dynamic table of one direction. Entries newest first, as HPACK indexes them.
///
/// `partial` says older entries may exist that we never saw (the connection was joined
/// mid-stream, or a gap or an undecodable block lost some insertions). The entries we hold
/// are then still exactly the newest ones of the encoder's table, at the same indices: what
/// we evict, the encoder evicted too (eviction takes the oldest first, and ours are the
/// newest); an index past ours is one we cannot know, and the lookup says so.
#[derive(Debug)]
pub(crate) struct Dynamic {
    entries: VecDeque<Entry>,
    size: usize,
    max: usize,
    /// Memory bound: a larger size asked for is capped here (safe: we then only forget
    /// entries the encoder may still use, and a lookup of those says `Unknown`).
    cap: usize,
    pub(crate) partial: bool,
}

/// A lookup's outcome.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup<'a> {
    Found(&'a [u8], &'a [u8]),
    /// An entry we may have missed (partial table).
    Unknown,
    /// No such entry: the block is not HPACK we can follow.
    Invalid,
}

impl Dynamic {
    pub(crate) fn new(cap: usize, partial: bool) -> Self {
        Self {
            entries: VecDeque::new(),
            size: 0,
            max: 4096.min(cap),
            cap,
            partial,
        }
    }

    /// Forget everything: from now on only entries inserted later are known.
    pub(crate) fn desync(&mut self) {
        self.entries.clear();
        self.size = 0;
        self.partial = true;
    }

    /// A dynamic table size update.
    pub(crate) fn resize(&mut self, max: usize) {
        if max > self.cap {
            // We will keep fewer entries than the encoder: the ones it keeps and we do not are
            // unknown, not absent.
            self.partial = true;
        }
        self.max = max.min(self.cap);
        self.evict(0);
    }

    fn evict(&mut self, room: usize) {
        while self.size + room > self.max {
            match self.entries.pop_back() {
                Some((n, v)) => self.size -= n.len() + v.len() + ENTRY_OVERHEAD,
                None => break,
            }
        }
    }

    pub(crate) fn insert(&mut self, name: &[u8], value: &[u8]) {
        let cost = name.len() + value.len() + ENTRY_OVERHEAD;
        if cost > self.max {
            // RFC 7541 §4.4: an entry larger than the table empties it.
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict(cost);
        self.entries.push_front((name.into(), value.into()));
        self.size += cost;
    }

    /// Index `i` of the combined table (1-based, static first).
    pub(crate) fn get(&self, i: usize) -> Lookup<'_> {
        if i == 0 {
            return Lookup::Invalid;
        }
        if let Some((n, v)) = STATIC.get(i - 1) {
            return Lookup::Found(n.as_bytes(), v.as_bytes());
        }
        match self.entries.get(i - 1 - STATIC.len()) {
            Some((n, v)) => Lookup::Found(n, v),
            None if self.partial => Lookup::Unknown,
            None => Lookup::Invalid,
        }
    }

    #[cfg(test)]
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_takes_the_oldest() {
        let mut t = Dynamic::new(4096, false);
        t.resize(2 * (32 + 2));
        t.insert(b"a", b"1");
        t.insert(b"b", b"2");
        t.insert(b"c", b"3");
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(62), Lookup::Found(b"c", b"3"));
        assert_eq!(t.get(63), Lookup::Found(b"b", b"2"));
        assert_eq!(t.get(64), Lookup::Invalid);
        t.resize(0);
        assert_eq!((t.len(), t.size()), (0, 0));
    }

    #[test]
    fn a_partial_table_knows_what_it_does_not_know() {
        let mut t = Dynamic::new(4096, true);
        t.insert(b"x", b"y");
        assert_eq!(t.get(62), Lookup::Found(b"x", b"y"));
        assert_eq!(t.get(63), Lookup::Unknown);
        assert_eq!(t.get(2), Lookup::Found(b":method", b"GET"));
        assert_eq!(t.get(0), Lookup::Invalid);
    }

    #[test]
    fn sizes_beyond_the_cap_are_capped() {
        let mut t = Dynamic::new(100, false);
        t.resize(1 << 30);
        t.insert(&[b'n'; 60], &[b'v'; 60]);
        assert_eq!(t.len(), 0, "larger than the capped table");
        assert_eq!(t.get(62), Lookup::Unknown, "the encoder may still have it");
    }
}
