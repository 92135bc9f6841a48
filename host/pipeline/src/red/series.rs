//! One series' counters (histogram, sketch, exemplars) and the map that finds a metric's
//! series by label values without allocating.

use std::collections::HashMap;

use super::sketch::{BUCKETS, SKETCH_BUCKETS, bucket_of, sketch_index};

/// Label pairs in exposition order. Empty values are left out at rendering.
pub type Labels = Vec<(&'static str, String)>;

/// One series' counters.
#[derive(Debug, Clone)]
pub struct Series {
    pub count: u64,
    pub errors: u64,
    pub sum_ns: u128,
    /// Cumulative at rendering only; stored per bucket (+Inf last).
    pub buckets: [u64; BUCKETS.len() + 1],
    pub sketch: Box<[u32; SKETCH_BUCKETS]>,
    /// Per bucket, the latest request that carried a trace context (allocated on the first).
    pub exemplars: Option<Box<[Option<Exemplar>; BUCKETS.len() + 1]>>,
}

/// A traced request in a histogram bucket: an OpenMetrics exemplar, so a latency spike in a
/// dashboard links to a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    pub trace_id: String,
    pub span_id: String,
    pub seconds: f64,
    /// Wall-clock time it was recorded (Unix seconds).
    pub unix_s: f64,
}

impl Exemplar {
    pub fn new(t: sonde_parse::trace_context::TraceContext, ns: u64) -> Self {
        Self {
            trace_id: t.trace_id,
            span_id: t.span_id,
            seconds: ns as f64 / 1e9,
            unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        }
    }
}

impl Default for Series {
    fn default() -> Self {
        Self {
            count: 0,
            errors: 0,
            sum_ns: 0,
            buckets: [0; BUCKETS.len() + 1],
            sketch: Box::new([0; SKETCH_BUCKETS]),
            exemplars: None,
        }
    }
}

impl Series {
    pub(super) fn observe(&mut self, ns: u64, error: bool) {
        self.count += 1;
        self.errors += u64::from(error);
        self.sum_ns += u128::from(ns);
        self.buckets[bucket_of(ns as f64 / 1e9)] += 1;
        let s = &mut self.sketch[sketch_index(ns)];
        *s = s.saturating_add(1);
    }

    pub(super) fn set_exemplar(&mut self, e: Exemplar) {
        let b = bucket_of(e.seconds);
        self.exemplars.get_or_insert_with(Default::default)[b] = Some(e);
    }
}

/// Series of one metric, found by their label values without allocating: a hash of the
/// borrowed values picks a short list, compared value by value. Labels are owned only once a
/// series exists.
#[derive(Debug)]
pub(super) struct SeriesMap<V> {
    pub(super) len: usize,
    /// Keyed by [`hash_values`], which is a hash already: no second hashing.
    buckets: HashMap<u64, Vec<(Labels, V)>, std::hash::BuildHasherDefault<HashIsKey>>,
}

impl<V> Default for SeriesMap<V> {
    fn default() -> Self {
        Self {
            len: 0,
            buckets: HashMap::default(),
        }
    }
}

/// A `Hasher` for keys that are hashes.
#[derive(Default)]
struct HashIsKey(u64);

impl std::hash::Hasher for HashIsKey {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// FNV-1a over label values, each followed by a separator. SipHash over twenty-odd short
/// strings (one `write` each) cost 1.5 µs a record, more than everything else RED does
/// (BENCHMARKS.md); this is ~40 ns.
fn hash_values(values: &[&str]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in values {
        for b in v.as_bytes() {
            h = (h ^ u64::from(*b)).wrapping_mul(PRIME);
        }
        h = (h ^ 0xff).wrapping_mul(PRIME);
    }
    h
}

impl<V: Default> SeriesMap<V> {
    /// The series with these label values; created if there is room (`None`: the metric is at
    /// `max` series).
    pub(super) fn get_or_insert(
        &mut self,
        keys: &[&'static str],
        values: &[&str],
        max: usize,
    ) -> Option<&mut V> {
        self.get_or_insert_if(keys, values, max, || true)
            .map(|(v, _)| v)
    }

    /// [`Self::get_or_insert`], inserting only when `room` (a further cap, asked only when the
    /// series is new and `max` allows) says so; the bool says the series is new.
    pub(super) fn get_or_insert_if(
        &mut self,
        keys: &[&'static str],
        values: &[&str],
        max: usize,
        room: impl FnOnce() -> bool,
    ) -> Option<(&mut V, bool)> {
        let bucket = self.buckets.entry(hash_values(values)).or_default();
        let found = bucket.iter().position(|(labels, _)| {
            labels.len() == values.len()
                && labels
                    .iter()
                    .zip(values)
                    .all(|((_, v), w)| sonde_parse::same(v, w))
        });
        let (i, new) = match found {
            Some(i) => (i, false),
            None if self.len < max && room() => {
                self.len += 1;
                bucket.push((
                    keys.iter()
                        .zip(values)
                        .map(|(k, v)| (*k, v.to_string()))
                        .collect(),
                    V::default(),
                ));
                (bucket.len() - 1, true)
            }
            None => return None,
        };
        Some((&mut bucket[i].1, new))
    }
}

impl<V> SeriesMap<V> {
    pub(super) fn iter(&self) -> impl Iterator<Item = (&Labels, &V)> {
        self.buckets.values().flatten().map(|(l, v)| (l, v))
    }
}

/// Decimal text of a number without allocating.
#[derive(Default)]
pub(super) struct NumBuf([u8; 20]);

impl NumBuf {
    pub(super) fn fmt(&mut self, mut v: u64) -> &str {
        let mut i = self.0.len();
        loop {
            i -= 1;
            self.0[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        std::str::from_utf8(&self.0[i..]).expect("ASCII digits")
    }
}
