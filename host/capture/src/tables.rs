//! Giving memory back after a wave: the daemon's tables (connections, names, edges) grow with
//! traffic, and a Rust hash map keeps its capacity when entries leave. [`shrink_map`] and
//! [`shrink_set`] rehash a table to twice its length once at most a quarter of its capacity is
//! used, so a table that shrank by 4× gives its memory back; each shrink costs O(len) and
//! needs the table to have lost three quarters of itself since the last one, so it is
//! amortised O(1) per removal. [`release_freed`] then asks the C allocator to return the freed
//! pages to the kernel (glibc keeps them in its arenas otherwise, and RSS stays at the peak).
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};

/// A table keyed by an id the kernel made (a connection id): looked up several times per
/// event, so hashed with one multiply ([`IdHasher`]) instead of SipHash, whose protection
/// against chosen keys an id nobody outside the kernel picks does not need.
pub type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// [`IdMap`]'s hasher: a 64 × 64 → 128-bit multiply by an odd constant, both halves folded
/// (every key bit reaches the low bits that pick the bucket and the high bits of its tag).
#[derive(Default, Clone, Copy, Debug)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, v: u64) {
        let p = u128::from(v ^ self.0) * 0x9e37_79b9_7f4a_7c15;
        self.0 = (p as u64) ^ ((p >> 64) as u64);
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_ne_bytes(word));
        }
    }
}

/// Below this capacity a table is not worth rehashing.
pub const SHRINK_FLOOR: usize = 64;

fn sparse(len: usize, capacity: usize) -> bool {
    capacity > SHRINK_FLOOR && len.saturating_mul(4) < capacity
}

/// Rehashes `m` to twice its length when at most a quarter of its capacity is used. Returns
/// the entries' worth of capacity given back (0 when it did nothing).
pub fn shrink_map<K: Eq + Hash, V, S: BuildHasher>(m: &mut HashMap<K, V, S>) -> usize {
    let before = m.capacity();
    if !sparse(m.len(), before) {
        return 0;
    }
    m.shrink_to((m.len() * 2).max(SHRINK_FLOOR / 2));
    before.saturating_sub(m.capacity())
}

/// [`shrink_map`] for a set.
pub fn shrink_set<K: Eq + Hash, S: BuildHasher>(m: &mut HashSet<K, S>) -> usize {
    let before = m.capacity();
    if !sparse(m.len(), before) {
        return 0;
    }
    m.shrink_to((m.len() * 2).max(SHRINK_FLOOR / 2));
    before.saturating_sub(m.capacity())
}

/// [`shrink_map`] for a queue.
pub fn shrink_deque<T>(q: &mut VecDeque<T>) -> usize {
    let before = q.capacity();
    if !sparse(q.len(), before) {
        return 0;
    }
    q.shrink_to((q.len() * 2).max(SHRINK_FLOOR / 2));
    before.saturating_sub(q.capacity())
}

/// Returns the allocator's free pages to the kernel (glibc's `malloc_trim`; elsewhere a
/// no-op). Costs a walk of the free lists: call it after a shrink, not on every tick.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_maps_spread_sequential_and_strided_ids() {
        let hash = |v: u64| {
            let mut h = IdHasher::default();
            h.write_u64(v);
            h.finish()
        };
        // Connection ids count up; socket addresses are strided. Either way the low bits
        // (the bucket) and the top 7 (hashbrown's tag) must vary.
        for ids in [
            (0..4096).collect::<Vec<u64>>(),
            (0..4096)
                .map(|i| 0xffff_8880_0000_0000 + i * 4096)
                .collect(),
        ] {
            let low: HashSet<u64> = ids.iter().map(|&v| hash(v) & 0xfff).collect();
            let top: HashSet<u64> = ids.iter().map(|&v| hash(v) >> 57).collect();
            assert!(
                low.len() > 2500,
                "{} distinct low 12 bits of 4096",
                low.len()
            );
            assert_eq!(top.len(), 128, "every tag value used");
            let m: IdMap<u64> = ids.iter().map(|&v| (v, v)).collect();
            assert!(ids.iter().all(|v| m.get(v) == Some(v)));
        }
    }

    #[test]
    fn a_table_that_emptied_gives_its_capacity_back_and_a_full_one_keeps_it() {
        let mut m: HashMap<u64, [u8; 64]> = (0..100_000).map(|i| (i, [0; 64])).collect();
        let peak = m.capacity();
        assert_eq!(shrink_map(&mut m), 0, "full: nothing to give back");
        m.retain(|k, _| *k < 30_000);
        assert_eq!(shrink_map(&mut m), 0, "30 % used is not below a quarter");
        m.retain(|k, _| *k < 1_000);
        let given = shrink_map(&mut m);
        assert!(
            given > 0 && m.capacity() < peak / 16,
            "{} of {peak}",
            m.capacity()
        );
        assert_eq!(m.len(), 1_000, "entries are kept");
        assert!(m.contains_key(&999));
        m.clear();
        shrink_map(&mut m);
        assert!(m.capacity() <= SHRINK_FLOOR, "{}", m.capacity());
        assert_eq!(shrink_map(&mut m), 0, "small tables are left alone");
    }

    #[test]
    fn sets_and_queues_shrink_the_same_way() {
        let mut s: HashSet<u32> = (0..10_000).collect();
        s.retain(|v| *v < 10);
        assert!(shrink_set(&mut s) > 0);
        assert!(s.capacity() <= SHRINK_FLOOR);
        let mut q: VecDeque<u32> = (0..10_000).collect();
        q.truncate(5);
        assert!(shrink_deque(&mut q) > 0);
        assert!(q.capacity() < 100);
        release_freed();
    }
}
