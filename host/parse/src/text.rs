//! Attribute keys and values compared on the hot path.

/// String equality without a libc `memcmp` call: label values and attribute keys are short,
/// and on these machines (glibc's AVX-512 `memcmp`) each call cost ~50 ns; RED compares 20-odd
/// values a record (BENCHMARKS.md: 1.7 µs → 0.3 µs a record).
#[inline]
pub fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        let x = u64::from_ne_bytes(x.try_into().expect("8 bytes"));
        let y = u64::from_ne_bytes(y.try_into().expect("8 bytes"));
        if x != y {
            return false;
        }
    }
    ca.remainder()
        .iter()
        .zip(cb.remainder())
        .all(|(x, y)| x == y)
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn same_is_equality() {
        for (a, b) in [
            ("", ""),
            ("a", "a"),
            ("a", "b"),
            ("abcdefgh", "abcdefgh"),
            ("abcdefghi", "abcdefghj"),
            ("abcdefgh1", "abcdefgh"),
            ("/api/v1/users/{id}", "/api/v1/users/{id}"),
        ] {
            assert_eq!(same(a, b), a == b, "{a:?} {b:?}");
        }
    }
}
