//! Latency buckets: the Prometheus histogram bounds, and a log-scale sketch per series
//! (buckets 2^¼ wide, ±9 %) for quantiles in `sonde top`.

/// Upper bounds (seconds) of the duration buckets: the OpenTelemetry HTTP default.
pub const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Sketch buckets: index 0 is < 1 µs, index i ≥ 1 covers [2^((i-1)/4), 2^(i/4)) µs; the last
/// one is open-ended (≥ 2^31.75 µs, about an hour).
pub const SKETCH_BUCKETS: usize = 128;

pub(super) fn bucket_of(secs: f64) -> usize {
    BUCKETS
        .iter()
        .position(|le| secs <= *le)
        .unwrap_or(BUCKETS.len())
}

/// Sketch index of a duration.
pub fn sketch_index(ns: u64) -> usize {
    if ns < 1000 {
        return 0;
    }
    let us = ns as f64 / 1000.0;
    ((us.log2() * 4.0).floor() as usize + 1).min(SKETCH_BUCKETS - 1)
}

/// A representative duration (ns) of a sketch bucket: its geometric middle.
pub fn sketch_value_ns(i: usize) -> f64 {
    if i == 0 {
        return 500.0;
    }
    1000.0 * 2f64.powf((i as f64 - 0.5) / 4.0)
}

/// The `q` quantile (0..=1) of sketch counts, in seconds; `None` when empty.
pub fn sketch_quantile(sketch: &[u32], q: f64) -> Option<f64> {
    let total: u64 = sketch.iter().map(|c| u64::from(*c)).sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0u64;
    for (i, c) in sketch.iter().enumerate() {
        seen += u64::from(*c);
        if seen >= rank {
            return Some(sketch_value_ns(i) / 1e9);
        }
    }
    None
}
