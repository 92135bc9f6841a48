//! Short in-memory history: one value per step for every series, in rings that share one time
//! axis. Memory is bounded by `capacity` steps × `max_series` series (8 bytes a point); a
//! series that was empty for the whole retention is forgotten.

use std::collections::{BTreeMap, VecDeque};

/// One series' points, and how many of them are values (not NaN), so that a series empty
/// for the whole retention is found without scanning every ring at every step.
#[derive(Debug, Default)]
struct Ring {
    points: VecDeque<f64>,
    values: usize,
}

impl Ring {
    fn push_back(&mut self, v: f64) {
        self.values += usize::from(!v.is_nan());
        self.points.push_back(v);
    }

    fn pop_front(&mut self) {
        if let Some(v) = self.points.pop_front() {
            self.values -= usize::from(!v.is_nan());
        }
    }

    /// Overwrite the newest point.
    fn set_last(&mut self, v: f64) {
        let last = self.points.back_mut().expect("a step was pushed");
        self.values = self.values - usize::from(!last.is_nan()) + usize::from(!v.is_nan());
        *last = v;
    }
}

/// Series keyed by `K`, aligned on one time axis; missing points are NaN.
#[derive(Debug)]
pub struct History<K: Ord + Clone> {
    capacity: usize,
    max_series: usize,
    times: VecDeque<i64>,
    series: BTreeMap<K, Ring>,
    /// Values refused because `max_series` series existed already.
    pub refused: u64,
}

impl<K: Ord + Clone> History<K> {
    pub fn new(capacity: usize, max_series: usize) -> Self {
        Self {
            capacity: capacity.max(2),
            max_series,
            times: VecDeque::new(),
            series: BTreeMap::new(),
            refused: 0,
        }
    }

    /// Append one step at `ts` (unix seconds): every series gets a point, NaN unless
    /// `values` has one for it.
    pub fn push(&mut self, ts: i64, values: impl IntoIterator<Item = (K, f64)>) {
        let len = self.times.len();
        self.times.push_back(ts);
        for ring in self.series.values_mut() {
            ring.push_back(f64::NAN);
        }
        for (key, v) in values {
            let count = self.series.len();
            match self.series.get_mut(&key) {
                Some(ring) => ring.set_last(v),
                None if count < self.max_series => {
                    let mut ring = Ring {
                        points: std::iter::repeat_n(f64::NAN, len).collect(),
                        values: 0,
                    };
                    ring.push_back(v);
                    self.series.insert(key, ring);
                }
                None => self.refused += 1,
            }
        }
        if self.times.len() > self.capacity {
            self.times.pop_front();
            for ring in self.series.values_mut() {
                ring.pop_front();
            }
            // Whole retention empty: the entity is gone.
            self.series.retain(|_, ring| ring.values > 0);
        }
    }

    pub fn len(&self) -> usize {
        self.times.len()
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// Points held (for the memory gauge).
    pub fn points(&self) -> usize {
        self.series.len() * self.times.len()
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.series.keys()
    }

    /// The finite points of one series, oldest first.
    pub fn finite(&self, key: &K) -> Vec<(i64, f64)> {
        let Some(ring) = self.series.get(key) else {
            return Vec::new();
        };
        self.times
            .iter()
            .zip(&ring.points)
            .filter(|(_, v)| v.is_finite())
            .map(|(t, v)| (*t, *v))
            .collect()
    }

    /// Every series' finite points.
    pub fn all_finite(&self) -> impl Iterator<Item = (&K, Vec<(i64, f64)>)> {
        self.series.keys().map(|k| (k, self.finite(k)))
    }

    /// The last value of a series (NaN when it has none this step).
    pub fn last(&self, key: &K) -> f64 {
        self.series
            .get(key)
            .and_then(|r| r.points.back().copied())
            .unwrap_or(f64::NAN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_stay_aligned_and_bounded() {
        let mut h: History<&str> = History::new(3, 2);
        h.push(1, [("a", 1.0)]);
        h.push(2, [("a", 2.0), ("b", 20.0)]);
        h.push(3, [("b", 30.0), ("c", 300.0)]);
        assert_eq!(h.refused, 1, "a third series is refused");
        assert_eq!(h.finite(&"a"), vec![(1, 1.0), (2, 2.0)]);
        assert_eq!(h.finite(&"b"), vec![(2, 20.0), (3, 30.0)]);
        h.push(4, [("b", 40.0)]);
        assert_eq!(h.len(), 3);
        assert_eq!(h.finite(&"a"), vec![(2, 2.0)]);
        h.push(5, [("b", 50.0)]);
        h.push(6, [("b", 60.0)]);
        assert_eq!(
            h.series_count(),
            1,
            "a series empty for the whole retention is dropped"
        );
        assert!(h.last(&"a").is_nan());
        assert_eq!(h.last(&"b"), 60.0);
    }
}
