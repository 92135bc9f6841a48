//! Giving memory back after a wave: the daemon's tables (connections, names, edges) grow with
//! traffic, and a Rust hash map keeps its capacity when entries leave. [`shrink_map`] and
//! [`shrink_set`] rehash a table to twice its length once at most a quarter of its capacity is
//! used, so a table that shrank by 4× gives its memory back; each shrink costs O(len) and
//! needs the table to have lost three quarters of itself since the last one, so it is
//! amortised O(1) per removal. [`release_freed`] then asks the C allocator to return the freed
//! pages to the kernel (glibc keeps them in its arenas otherwise, and RSS stays at the peak).
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hash};

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
