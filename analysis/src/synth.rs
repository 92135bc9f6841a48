//! Seeded generator of dimensional-attribution cases, after the semi-synthetic generator that
//! RiskLoc (Kalander 2022) published for its S/L/H datasets, itself an extension of Squeeze's
//! (Li et al. 2019) B datasets:
//!
//! - every combination of the dimensions' values is a leaf;
//! - the true leaf value is Weibull (shape U(0.5, 1), scale 100); a share of the leaves
//!   (U(0, 25%) in the benchmark) is zero;
//! - the forecast carries a relative Gaussian error, `forecast = true × (1 + N(0, noise))`
//!   (noise U(0, 25%) in the benchmark), and actual and forecast are swapped on half of the
//!   leaves so the error is symmetric (negative forecasts clamp to zero);
//! - 1–3 root causes of 1–3 dimensions each; each has a severity `U(0.2, 1) + noise` and a
//!   per-leaf spread `U(0, 0.1)`; a root cause leaf loses its noise and moves to
//!   `forecast × (1 − r)` (down) or has its forecast set to `actual × (1 − r)` (up), `r ~
//!   N(severity, spread)`, clamped at zero; the direction of a case follows the direction of the
//!   normal leaves' summed error so the noise does not cancel the anomaly.
//!
//! Ratio cases (error rate = errors / requests, mean latency = sum / count; RiskLoc's and
//! Squeeze's derived-measure datasets): a Weibull denominator per leaf and a per-leaf base rate,
//! each of numerator and denominator with its own forecast error; a root cause changes the
//! numerator by the factor above, and on half of the cases also moves its traffic (numerator
//! and denominator together, ×U(0.5, 1.5)), which must not be mistaken for the cause of the
//! rate change.
//!
//! Root causes are unambiguous (RiskLoc's rules, plus ours): on every dimension two root causes
//! both constrain they take different values (so none is an ancestor or a descendant of
//! another, and those sharing a dimension share no leaf); each covers at least `min_rc_leaves`
//! non-zero leaves and at most half of the leaves. Root causes constraining disjoint
//! dimensions may intersect (as in RiskLoc); the leaves of the intersection take the later
//! root cause's change.

use crate::attribution::{Cube, CubeBuilder, KpiKind};

/// SplitMix64: small, fast, and good enough for test data; our own so the cases never change
/// under a dependency's update.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }
    /// Standard normal (Box–Muller, one value per call).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(1e-300);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
    /// Weibull with shape `k` and scale `lambda`.
    pub fn weibull(&mut self, k: f64, lambda: f64) -> f64 {
        let u = self.unit().max(1e-300);
        lambda * (-u.ln()).powf(1.0 / k)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    pub seed: u64,
    /// Cardinality of each dimension; leaves = their product.
    pub cardinalities: Vec<usize>,
    /// Share of zero leaves (U(0, 25%) in the benchmark).
    pub zero_fraction: f64,
    /// Standard deviation of the relative forecast error of normal leaves (U(0, 25%) in the
    /// benchmark).
    pub noise: f64,
    /// Number of root causes (1..=3).
    pub root_causes: usize,
    /// Dimensions per root cause (1..=3).
    pub rc_dims: usize,
    pub kind: KpiKind,
    /// Fewest non-zero leaves under a root cause.
    pub min_rc_leaves: usize,
    /// Range of the severity (before `noise` is added): RiskLoc S/H use (0.2, 1.0).
    pub severity: (f64, f64),
    /// Range of the per-root-cause spread of `r` across its leaves: RiskLoc S/H use (0, 0.1).
    pub spread: (f64, f64),
}

impl SynthConfig {
    pub fn new(
        seed: u64,
        cardinalities: &[usize],
        root_causes: usize,
        rc_dims: usize,
        kind: KpiKind,
    ) -> Self {
        Self {
            seed,
            cardinalities: cardinalities.to_vec(),
            zero_fraction: 0.0,
            noise: 0.0,
            root_causes,
            rc_dims,
            kind,
            min_rc_leaves: 4,
            severity: (0.2, 1.0),
            spread: (0.0, 0.1),
        }
    }
}

/// A generated case and its ground truth (canonically ordered elements).
#[derive(Debug, Clone)]
pub struct Case {
    pub cube: Cube,
    pub truth: Vec<Vec<(String, String)>>,
}

/// Mixed-radix coordinates of leaf `leaf` (last dimension fastest).
fn coords_of(cards: &[usize], mut leaf: usize, out: &mut [usize]) {
    for d in (0..cards.len()).rev() {
        out[d] = leaf % cards[d];
        leaf /= cards[d];
    }
}

pub fn generate(cfg: &SynthConfig) -> Case {
    let mut rng = Rng::new(cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xA5A5);
    let cards = &cfg.cardinalities;
    let nd = cards.len();
    let leaves: usize = cards.iter().product();
    let mut all_coords = vec![0usize; leaves * nd];
    for leaf in 0..leaves {
        coords_of(cards, leaf, &mut all_coords[leaf * nd..(leaf + 1) * nd]);
    }
    let coord = |leaf: usize, d: usize| all_coords[leaf * nd + d];

    // True values (the denominator for ratio KPIs).
    let shape = rng.uniform(0.5, 1.0);
    let truth: Vec<f64> = (0..leaves)
        .map(|_| {
            if rng.unit() < cfg.zero_fraction {
                0.0
            } else {
                rng.weibull(shape, 100.0)
            }
        })
        .collect();
    // Ratio KPIs: a per-leaf base rate (an error rate of 1–21%, or a mean latency in arbitrary
    // units: only ratios of it matter).
    let rate: Vec<f64> = match cfg.kind {
        KpiKind::Additive => vec![1.0; leaves],
        KpiKind::Ratio => (0..leaves).map(|_| rng.uniform(0.01, 0.21)).collect(),
    };
    // Forecast error, symmetric by swapping actual and forecast on half of the leaves.
    let noisy = |rng: &mut Rng, x: f64| -> (f64, f64) {
        let f = (x * (1.0 + cfg.noise * rng.normal())).max(0.0);
        if rng.unit() < 0.5 { (x, f) } else { (f, x) }
    };
    // (actual, forecast) of numerator and denominator.
    let mut num: Vec<(f64, f64)> = Vec::with_capacity(leaves);
    let mut den: Vec<(f64, f64)> = Vec::with_capacity(leaves);
    for leaf in 0..leaves {
        match cfg.kind {
            KpiKind::Additive => {
                num.push(noisy(&mut rng, truth[leaf]));
                den.push((1.0, 1.0));
            }
            KpiKind::Ratio => {
                num.push(noisy(&mut rng, truth[leaf] * rate[leaf]));
                den.push(noisy(&mut rng, truth[leaf]));
            }
        }
    }

    // Root causes: random dimensions and values; unambiguous; big enough; not too big.
    let mut rcs: Vec<Vec<(usize, usize)>> = Vec::new();
    let mut members_of: Vec<Vec<usize>> = Vec::new();
    let mut attempts = 0;
    let rc_dims = cfg.rc_dims.clamp(1, nd.max(1));
    while rcs.len() < cfg.root_causes && attempts < 10_000 && nd > 0 {
        attempts += 1;
        let mut dims: Vec<usize> = (0..nd).collect();
        for i in (1..nd).rev() {
            dims.swap(i, rng.below(i + 1));
        }
        let mut rc: Vec<(usize, usize)> = dims[..rc_dims]
            .iter()
            .map(|&d| (d, rng.below(cards[d])))
            .collect();
        rc.sort_unstable();
        // On every shared dimension, a different value.
        let clash = rcs.iter().any(|o| {
            rc.iter()
                .any(|(d, v)| o.iter().any(|(od, ov)| od == d && ov == v))
        });
        if clash {
            continue;
        }
        let members: Vec<usize> = (0..leaves)
            .filter(|&l| rc.iter().all(|&(d, v)| coord(l, d) == v))
            .collect();
        let nonzero = members.iter().filter(|&&l| truth[l] > 0.0).count();
        if nonzero < cfg.min_rc_leaves || members.len() * 2 > leaves {
            continue;
        }
        rcs.push(rc);
        members_of.push(members);
    }

    // Direction: that of the normal leaves' summed error (so noise does not cancel the anomaly).
    let in_rc: Vec<bool> = {
        let mut m = vec![false; leaves];
        for ms in &members_of {
            for &l in ms {
                m[l] = true;
            }
        }
        m
    };
    let kpi = |n: &[(f64, f64)], d: &[(f64, f64)], actual: bool| -> f64 {
        let pick = |p: &(f64, f64)| if actual { p.0 } else { p.1 };
        let sn: f64 = (0..leaves)
            .filter(|&l| !in_rc[l])
            .map(|l| pick(&n[l]))
            .sum();
        let sd: f64 = (0..leaves)
            .filter(|&l| !in_rc[l])
            .map(|l| pick(&d[l]))
            .sum();
        match cfg.kind {
            KpiKind::Additive => sn,
            KpiKind::Ratio => sn / sd.max(f64::MIN_POSITIVE),
        }
    };
    let up = kpi(&num, &den, true) > kpi(&num, &den, false);
    let traffic_moves = cfg.kind == KpiKind::Ratio && rng.unit() < 0.5;
    for members in &members_of {
        let severity = rng.uniform(cfg.severity.0, cfg.severity.1) + cfg.noise;
        let spread = rng.uniform(cfg.spread.0, cfg.spread.1);
        let traffic = if traffic_moves {
            rng.uniform(0.5, 1.5)
        } else {
            1.0
        };
        for &l in members {
            let r = severity + spread * rng.normal();
            let keep = (1.0 - r).max(0.0);
            // Reset the noise: the root cause's leaves move by the factor alone.
            let base_num = truth[l] * rate[l];
            let (a, f) = if up {
                (base_num, base_num * keep)
            } else {
                (base_num * keep, base_num)
            };
            num[l] = (a * traffic, f);
            if cfg.kind == KpiKind::Ratio {
                den[l] = (truth[l] * traffic, truth[l]);
            }
        }
    }

    let dim_names: Vec<String> = (0..nd).map(|d| format!("d{d}")).collect();
    let value_names: Vec<Vec<String>> = cards
        .iter()
        .enumerate()
        .map(|(d, &c)| (0..c).map(|v| format!("d{d}v{v}")).collect())
        .collect();
    let dim_refs: Vec<&str> = dim_names.iter().map(String::as_str).collect();
    let mut b = CubeBuilder::new(&dim_refs, cfg.kind);
    let mut refs: Vec<&str> = vec![""; nd];
    for leaf in 0..leaves {
        for d in 0..nd {
            refs[d] = &value_names[d][coord(leaf, d)];
        }
        match cfg.kind {
            KpiKind::Additive => b.add(&refs, num[leaf].0, num[leaf].1),
            KpiKind::Ratio => {
                b.add_ratio(&refs, num[leaf].0, num[leaf].1, den[leaf].0, den[leaf].1)
            }
        }
    }
    let truth = rcs
        .iter()
        .map(|rc| {
            rc.iter()
                .map(|&(d, v)| (dim_names[d].clone(), value_names[d][v].clone()))
                .collect()
        })
        .collect();
    Case {
        cube: b.build(),
        truth,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_unambiguous() {
        for seed in 0..20 {
            let mut cfg = SynthConfig::new(seed, &[5, 6, 7, 4], 3, 2, KpiKind::Additive);
            cfg.noise = 0.2;
            cfg.zero_fraction = 0.2;
            let a = generate(&cfg);
            let b = generate(&cfg);
            assert_eq!(a.truth, b.truth);
            assert_eq!(a.cube.len(), 5 * 6 * 7 * 4);
            assert_eq!(a.truth.len(), 3);
            for (i, x) in a.truth.iter().enumerate() {
                for y in &a.truth[i + 1..] {
                    // No shared (dimension, value): never an ancestor or descendant.
                    assert!(x.iter().all(|e| !y.contains(e)), "{x:?} {y:?}");
                }
            }
        }
    }

    #[test]
    fn rng_moments() {
        let mut r = Rng::new(1);
        let n = 100_000;
        let xs: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(
            mean.abs() < 0.02 && (var - 1.0).abs() < 0.02,
            "{mean} {var}"
        );
        assert!((0..1000).all(|_| r.below(7) < 7));
    }
}
