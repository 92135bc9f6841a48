//! Seeded generator of dimensional-attribution cases, after the semi-synthetic setups of Squeeze
//! and RiskLoc: every combination of the dimensions' values is a leaf; leaf values are Weibull;
//! a share of leaves is zero; forecasts carry relative noise; 1–3 root causes of 1–3 dimensions
//! each change their leaves by a factor of their own. Ratio cases (an error rate) draw a
//! denominator (requests) and a per-leaf base rate, and the root causes change the numerator.
//!
//! Root causes of one case never share leaves (each pair differs on a dimension they both
//! constrain), cover at least `min_rc_leaves` non-zero leaves, and at most 40% of all leaves:
//! otherwise the truth is ambiguous and no method could be scored fairly.

use crate::attribution::{Cube, CubeBuilder, KpiKind};
use crate::scenarios::Rng;

#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    pub seed: u64,
    /// Cardinality of each dimension; leaves = their product.
    pub cardinalities: Vec<usize>,
    /// Share of zero leaves (0..=0.25 in the benchmark).
    pub zero_fraction: f64,
    /// Forecast noise: forecast = true × (1 + U(−noise, noise)).
    pub noise: f64,
    pub root_causes: usize,
    pub rc_dims: usize,
    pub kind: KpiKind,
    pub min_rc_leaves: usize,
}

impl SynthConfig {
    pub fn new(seed: u64, cardinalities: &[usize], root_causes: usize, rc_dims: usize, kind: KpiKind) -> Self {
        Self {
            seed,
            cardinalities: cardinalities.to_vec(),
            zero_fraction: 0.0,
            noise: 0.0,
            root_causes,
            rc_dims,
            kind,
            min_rc_leaves: 4,
        }
    }
}

/// A generated case and its ground truth (canonically ordered elements).
#[derive(Debug, Clone)]
pub struct Case {
    pub cube: Cube,
    pub truth: Vec<Vec<(String, String)>>,
}

fn weibull(rng: &mut Rng, shape: f64, scale: f64) -> f64 {
    let u = rng.unit().max(1e-12);
    scale * (-u.ln()).powf(1.0 / shape)
}

fn pick(rng: &mut Rng, n: usize) -> usize {
    (rng.next_u64() % n as u64) as usize
}

pub fn generate(cfg: &SynthConfig) -> Case {
    let mut rng = Rng::new(cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xA5A5);
    let nd = cfg.cardinalities.len();
    let leaves: usize = cfg.cardinalities.iter().product();
    let coords = |mut leaf: usize| -> Vec<usize> {
        let mut c = vec![0; nd];
        for d in (0..nd).rev() {
            c[d] = leaf % cfg.cardinalities[d];
            leaf /= cfg.cardinalities[d];
        }
        c
    };
    let shape = 0.5 + 0.5 * rng.unit();
    let scale = 10.0 + 90.0 * rng.unit();
    let truth_vals: Vec<f64> = (0..leaves)
        .map(|_| if rng.unit() < cfg.zero_fraction { 0.0 } else { weibull(&mut rng, shape, scale) })
        .collect();

    // Root causes: random dimensions and values, disjoint, big enough, not too big.
    let mut rcs: Vec<Vec<(usize, usize)>> = Vec::new();
    let mut attempts = 0;
    while rcs.len() < cfg.root_causes && attempts < 10_000 {
        attempts += 1;
        let mut dims: Vec<usize> = (0..nd).collect();
        for i in (1..dims.len()).rev() {
            dims.swap(i, pick(&mut rng, i + 1));
        }
        let mut rc: Vec<(usize, usize)> = dims[..cfg.rc_dims.min(nd)].iter().map(|&d| (d, pick(&mut rng, cfg.cardinalities[d]))).collect();
        rc.sort();
        let disjoint = rcs.iter().all(|o| rc.iter().any(|(d, v)| o.iter().any(|(od, ov)| od == d && ov != v)));
        if !disjoint {
            continue;
        }
        let members: Vec<usize> = (0..leaves).filter(|&l| { let c = coords(l); rc.iter().all(|&(d, v)| c[d] == v) }).collect();
        let nonzero = members.iter().filter(|&&l| truth_vals[l] > 0.0).count();
        if nonzero < cfg.min_rc_leaves || members.len() as f64 > 0.4 * leaves as f64 {
            continue;
        }
        rcs.push(rc);
    }
    // One direction per case; each root cause its own magnitude.
    let up = rng.unit() < 0.5;
    let factors: Vec<f64> = rcs
        .iter()
        .map(|_| if up { 1.5 + 1.5 * rng.unit() } else { 0.1 + 0.5 * rng.unit() })
        .collect();
    let rc_of = |c: &[usize]| rcs.iter().position(|rc| rc.iter().all(|&(d, v)| c[d] == v));

    let dims: Vec<String> = (0..nd).map(|d| format!("d{d}")).collect();
    let dim_refs: Vec<&str> = dims.iter().map(String::as_str).collect();
    let mut b = CubeBuilder::new(&dim_refs, cfg.kind);
    let noisy = |rng: &mut Rng, x: f64| x * (1.0 + cfg.noise * (2.0 * rng.unit() - 1.0));
    for leaf in 0..leaves {
        let c = coords(leaf);
        let names: Vec<String> = c.iter().enumerate().map(|(d, v)| format!("d{d}v{v}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let factor = rc_of(&c).map_or(1.0, |i| factors[i]);
        let t = truth_vals[leaf];
        match cfg.kind {
            KpiKind::Additive => {
                let forecast = noisy(&mut rng, t);
                b.add(&refs, t * factor, forecast);
            }
            KpiKind::Ratio => {
                let rate = 0.01 + 0.2 * rng.unit();
                let den = t;
                let num = den * rate;
                let (num_f, den_f) = (noisy(&mut rng, num), noisy(&mut rng, den));
                b.add_ratio(&refs, (num * factor).min(den), num_f, den, den_f);
            }
        }
    }
    let truth = rcs
        .iter()
        .map(|rc| rc.iter().map(|&(d, v)| (format!("d{d}"), format!("d{d}v{v}"))).collect())
        .collect();
    Case { cube: b.build(), truth }
}
