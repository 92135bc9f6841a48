//! Reference rankings the engine is compared with on public data, and the scores used there.
//!
//! Both baselines score every service by its own metrics alone, with no topology: each metric
//! of the service is standardised against its history before the incident, the service's score
//! is its largest absolute standardised value during the incident.
//! - [`n_sigma`]: `(x − mean) / std` (as RCAEval's n-sigma).
//! - [`baro`]: `(x − median) / IQR`, the robust scaler of BARO (Pham et al., FSE 2024).
//!
//! A zero spread counts as 1, as sklearn's scalers do.

use std::collections::BTreeMap;

/// (`service:<name>`, metric) → samples sorted by time.
pub type Series = BTreeMap<(String, String), Vec<(i64, f64)>>;

fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn median_iqr(xs: &[f64]) -> (f64, f64) {
    let mut s = xs.to_vec();
    s.sort_by(f64::total_cmp);
    (quantile(&s, 0.5), quantile(&s, 0.75) - quantile(&s, 0.25))
}

/// Rank services, highest score first, with `centre_spread` standardising a metric's history.
fn rank(
    series: &Series,
    start: i64,
    end: i64,
    faults: &[(i64, i64)],
    centre_spread: fn(&[f64]) -> (f64, f64),
) -> Vec<(String, f64)> {
    let normal = |t: i64| !faults.iter().any(|(a, b)| (*a..*b).contains(&t));
    let mut best: BTreeMap<String, f64> = BTreeMap::new();
    for ((entity, _), points) in series {
        let Some(service) = entity.strip_prefix("service:") else {
            continue;
        };
        let history: Vec<f64> = points
            .iter()
            .filter(|p| p.0 < start && p.1.is_finite() && normal(p.0))
            .map(|p| p.1)
            .collect();
        let window: Vec<f64> = points
            .iter()
            .filter(|p| p.0 >= start && p.0 < end && p.1.is_finite())
            .map(|p| p.1)
            .collect();
        if history.is_empty() || window.is_empty() {
            continue;
        }
        let (centre, spread) = centre_spread(&history);
        let spread = if spread > 0.0 { spread } else { 1.0 };
        let score = window
            .iter()
            .map(|x| ((x - centre) / spread).abs())
            .fold(0.0, f64::max);
        let e = best.entry(service.to_string()).or_insert(0.0);
        *e = e.max(score);
    }
    let mut out: Vec<(String, f64)> = best.into_iter().collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

/// n-sigma per service over the incident window `[start, end)`.
pub fn n_sigma(series: &Series, start: i64, end: i64) -> Vec<(String, f64)> {
    rank(series, start, end, &[], mean_std)
}

/// n-sigma with a clean history: samples inside any of `faults` (`[start, end)` of every
/// labelled case) are left out, as benchmarks that hand the baselines a normal period do.
pub fn n_sigma_normal(
    series: &Series,
    start: i64,
    end: i64,
    faults: &[(i64, i64)],
) -> Vec<(String, f64)> {
    rank(series, start, end, faults, mean_std)
}

/// [`baro`] with a clean history (see [`n_sigma_normal`]).
pub fn baro_normal(
    series: &Series,
    start: i64,
    end: i64,
    faults: &[(i64, i64)],
) -> Vec<(String, f64)> {
    rank(series, start, end, faults, median_iqr)
}

/// BARO-style robust scores per service over `[start, end)`.
pub fn baro(series: &Series, start: i64, end: i64) -> Vec<(String, f64)> {
    rank(series, start, end, &[], median_iqr)
}

/// Accumulates AC@1, AC@3 and Avg@5 over cases.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopK {
    /// Cases where the truth is at rank k+1 (index 0..5) or missing.
    hits: [usize; 5],
    pub cases: usize,
}

impl TopK {
    /// Record one case: the ranking (best first) and the true root cause.
    pub fn add(&mut self, ranking: &[String], truth: &str) {
        self.cases += 1;
        if let Some(i) = ranking.iter().take(5).position(|r| r == truth) {
            self.hits[i] += 1;
        }
    }

    /// Share of cases with the truth in the top `k` (k ≤ 5).
    pub fn ac(&self, k: usize) -> f64 {
        if self.cases == 0 {
            return 0.0;
        }
        self.hits[..k.min(5)].iter().sum::<usize>() as f64 / self.cases as f64
    }

    /// Mean of AC@1..AC@5.
    pub fn avg5(&self) -> f64 {
        (1..=5).map(|k| self.ac(k)).sum::<f64>() / 5.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robust_scores_rank_the_changed_service_first() {
        let mut s = Series::new();
        let mk = |f: &dyn Fn(i64) -> f64| (0..20).map(|i| (i * 60, f(i))).collect::<Vec<_>>();
        s.insert(
            ("service:a".into(), "latency_mean_ms".into()),
            mk(&|i| if i >= 15 { 50.0 } else { 10.0 + (i % 3) as f64 }),
        );
        s.insert(
            ("service:b".into(), "latency_mean_ms".into()),
            mk(&|i| 10.0 + (i % 3) as f64),
        );
        for f in [n_sigma, baro] {
            let r = f(&s, 15 * 60, 20 * 60);
            assert_eq!(r[0].0, "a");
        }
        let mut k = TopK::default();
        k.add(&["a".into(), "b".into()], "b");
        k.add(&["a".into()], "a");
        assert_eq!(k.ac(1), 0.5);
        assert_eq!(k.ac(3), 1.0);
        assert!((k.avg5() - 0.9).abs() < 1e-12);
    }
}
