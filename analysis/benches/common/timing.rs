//! Per-case timings of the attribution benchmarks (shared by `attribution.rs` and
//! `attribution_public.rs`).

/// Mean and 95th percentile of per-case milliseconds; (0, 0) for none.
pub(crate) fn stats(ms: &[f64]) -> (f64, f64) {
    if ms.is_empty() {
        return (0.0, 0.0);
    }
    let mut v = ms.to_vec();
    v.sort_by(f64::total_cmp);
    (
        v.iter().sum::<f64>() / v.len() as f64,
        v[((v.len() as f64 * 0.95).ceil() as usize).clamp(1, v.len()) - 1],
    )
}
