//! Dimensional attribution: which dimension-value combinations explain a KPI change.
//!
//! Input: leaves (one per combination of all dimensions, e.g. service × endpoint × pod × node)
//! with the actual and the expected (forecast) value at the anomaly time. Output: a small set
//! of elements such as `endpoint=/checkout` or `node=n1 & version=v7` that explain the change,
//! each with its evidence.
//!
//! The method (ours, after reading Adtributor, HotSpot, Squeeze, AutoRoot, RiskLoc and
//! RobustSpot):
//!
//! 1. **Leaf deviation** `d = ln(actual / forecast)` (on the leaf's ratio for derived KPIs).
//!    Log ratios are symmetric in up and down and scale-free, so small and large leaves
//!    compare; a zero on one side is a full change (±ln 1001), not an infinity.
//! 2. **Noise band from the data** (after RiskLoc's partition): forecast noise is symmetric, so
//!    the leaves that moved *against* the direction under study show how far noise alone moves
//!    a leaf. A leaf's *abnormality* ramps from 0 at the 70% quantile of those deviations to 1
//!    at the 95% quantile (RiskLoc's distance weighting, made two-sided). No noise level is
//!    configured. **Counts** (every actual numerator a whole number: errors, requests): a leaf
//!    also needs its count to have moved beyond Poisson noise (Anscombe z from 1 to 2), and
//!    only such leaves set the band — with 0–2 errors per leaf, 1 → 0 is noise, not a −100%
//!    change that would saturate the band.
//! 3. **Layer-wise search** over combinations of 1 … 6 dimensions (most general first, as
//!    HotSpot/RiskLoc). An element's *purity* is the abnormal share of its leaves, weighted by
//!    √(expected size). Its *explanatory power* is counterfactual: the share of the anomalous
//!    change that goes away if this element had its expected values (exact for ratio KPIs,
//!    where a cause is where the ratio moved, weighted by the denominator — not where traffic
//!    is). Its *evidence* is the log-likelihood ratio n_eff · KL(purity ‖ background purity).
//!    An element qualifies by share (purity ≥ 0.75 and ≥ 5% of the change, up to 3
//!    dimensions: small cubes), by evidence (purity ≥ 0.5 and ≥ 10 nats: big root causes partly
//!    inside the noise band, and small ones that explain little of a noisy total), or by
//!    extremity (every leaf moved 2× further than any noise, and further than Gaussian
//!    relative errors at the band's scale take any leaf but once in a thousand cubes: a root
//!    cause of one leaf in a cube of thousands). In the most general layer that has a qualifying element, the most
//!    explanatory wins, then the layer order is corrected both ways: an ancestor replaces it
//!    when the ancestor's other leaves moved with it (at least half as much: the true coarse
//!    element of a small cube, under the purity bar while its purest leaf passes), else a
//!    qualifying descendant replaces it when the rest of it did not move (a parent that only
//!    passes because one child carries it). Its leaves are removed and the search restarts —
//!    several root causes of different sizes and magnitudes (the Squeeze insight) without
//!    clustering.
//! 4. **Stop** when nothing qualifies; once what is left explains under 5%, only evidence and
//!    extremity may still accept (a small second root cause in a noisy total).
//! 5. **Both directions** are searched; the one whose causes carry more evidence wins (the
//!    total's sign can be outweighed by the summed noise of thousands of leaves), unless its
//!    causes explain under a tenth of the KPI change the other's do.
//!
//! Deterministic: candidates are compared on (layer, explanatory power, purity, element key),
//! never on hash order. Grouping is a dense table indexed by the mixed-radix key of the
//! element's values when the key space is small, a hash map otherwise (times in
//! BENCHMARKS.md).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Additive (request count, bytes) or derived ratio (error rate, mean latency) KPI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KpiKind {
    Additive,
    Ratio,
}

/// The leaves of one KPI, interned.
#[derive(Debug, Clone)]
pub struct Cube {
    kind: KpiKind,
    dims: Vec<String>,
    /// Per dimension, its values; coordinates index into these.
    values: Vec<Vec<String>>,
    /// Leaf-major coordinates, `dims.len()` per leaf.
    coords: Vec<u32>,
    /// Additive: the value; ratio: the numerator.
    actual: Vec<f64>,
    forecast: Vec<f64>,
    /// Ratio only: the denominator.
    den_actual: Vec<f64>,
    den_forecast: Vec<f64>,
}

/// Builds a [`Cube`] from string-keyed rows.
#[derive(Debug)]
pub struct CubeBuilder {
    cube: Cube,
    index: Vec<HashMap<String, u32>>,
    /// Rows dropped for a wrong arity or non-finite numbers.
    pub skipped: usize,
}

impl CubeBuilder {
    pub fn new(dimensions: &[&str], kind: KpiKind) -> Self {
        Self {
            cube: Cube {
                kind,
                dims: dimensions.iter().map(|d| d.to_string()).collect(),
                values: vec![Vec::new(); dimensions.len()],
                coords: Vec::new(),
                actual: Vec::new(),
                forecast: Vec::new(),
                den_actual: Vec::new(),
                den_forecast: Vec::new(),
            },
            index: vec![HashMap::new(); dimensions.len()],
            skipped: 0,
        }
    }

    fn push_coords(&mut self, values: &[&str]) -> bool {
        if values.len() != self.cube.dims.len() {
            self.skipped += 1;
            return false;
        }
        for (d, v) in values.iter().enumerate() {
            let next = self.cube.values[d].len() as u32;
            let id = *self.index[d].entry(v.to_string()).or_insert_with(|| {
                self.cube.values[d].push(v.to_string());
                next
            });
            self.cube.coords.push(id);
        }
        true
    }

    /// Additive leaf. Non-finite or negative values are skipped and counted in `skipped`.
    pub fn add(&mut self, values: &[&str], actual: f64, forecast: f64) {
        if !(actual.is_finite() && forecast.is_finite()) || actual < 0.0 || forecast < 0.0 {
            self.skipped += 1;
            return;
        }
        if self.push_coords(values) {
            self.cube.actual.push(actual);
            self.cube.forecast.push(forecast);
            self.cube.den_actual.push(1.0);
            self.cube.den_forecast.push(1.0);
        }
    }

    /// Ratio KPI leaf (e.g. errors / requests).
    pub fn add_ratio(
        &mut self,
        values: &[&str],
        num_actual: f64,
        num_forecast: f64,
        den_actual: f64,
        den_forecast: f64,
    ) {
        let all = [num_actual, num_forecast, den_actual, den_forecast];
        if all.iter().any(|x| !x.is_finite() || *x < 0.0) {
            self.skipped += 1;
            return;
        }
        if self.push_coords(values) {
            self.cube.actual.push(num_actual);
            self.cube.forecast.push(num_forecast);
            self.cube.den_actual.push(den_actual);
            self.cube.den_forecast.push(den_forecast);
        }
    }

    pub fn build(self) -> Cube {
        self.cube
    }
}

impl Cube {
    pub fn kind(&self) -> KpiKind {
        self.kind
    }
    pub fn dimensions(&self) -> &[String] {
        &self.dims
    }
    pub fn len(&self) -> usize {
        self.actual.len()
    }
    pub fn is_empty(&self) -> bool {
        self.actual.is_empty()
    }
    /// The interned values of dimension `d`.
    pub fn values(&self, d: usize) -> &[String] {
        &self.values[d]
    }
    /// Value index of `leaf` on dimension `d` (into [`Cube::values`]).
    pub fn coord(&self, leaf: usize, d: usize) -> u32 {
        self.coords[leaf * self.dims.len() + d]
    }
    /// `(numerator actual, numerator forecast, denominator actual, denominator forecast)` of
    /// `leaf`; the denominator is 1 for additive KPIs.
    pub fn leaf(&self, leaf: usize) -> (f64, f64, f64, f64) {
        (
            self.actual[leaf],
            self.forecast[leaf],
            self.den_actual[leaf],
            self.den_forecast[leaf],
        )
    }
    /// The KPI over a set of sums.
    fn kpi(&self, num: f64, den: f64) -> f64 {
        match self.kind {
            KpiKind::Additive => num,
            KpiKind::Ratio => {
                if den > 0.0 {
                    num / den
                } else {
                    0.0
                }
            }
        }
    }
}

/// Tuning; the defaults are what BENCHMARKS.md reports (tuned on seeds other than the
/// benchmark's and the regression test's).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttributionConfig {
    /// Largest number of dimensions in one element (6: every layer of the public datasets'
    /// cubes; deeper layers are only searched when nothing shallower qualifies).
    pub max_dims: usize,
    /// Most causes returned.
    pub max_causes: usize,
    /// Acceptance by share only for elements of up to this many dimensions: a deeper one is
    /// a few leaves of a large cube, where a leaf in the noise's tail explains 5 % as easily;
    /// evidence or extremity decide there.
    pub share_max_dims: usize,
    /// Acceptance by share: an element whose (weighted) leaves are at least this abnormal and
    /// that explains at least `min_explanatory_power` of the anomalous change. What decides on
    /// small cubes (a handful of endpoints), where no statistics is possible.
    pub min_purity: f64,
    pub min_explanatory_power: f64,
    /// Acceptance by evidence: an element at least `evidence_min_purity` abnormal, explaining
    /// at least `evidence_min_explanatory_power`, whose abnormal share stands out from the
    /// background's by at least `min_evidence` nats (n_eff × KL(purity ‖ background), the
    /// log-likelihood ratio of "this element is abnormal" against "its leaves are as abnormal
    /// as any": larger than the chance a noise-only element among thousands reaches). What
    /// decides on large cubes: finds big root causes whose leaves sit partly inside the noise
    /// band and small ones that explain little of a noisy total.
    pub evidence_min_purity: f64,
    pub evidence_min_explanatory_power: f64,
    pub min_evidence: f64,
    /// Quantiles of the against-the-change deviations (the noise) between which a leaf's
    /// abnormality ramps from 0 to 1.
    pub cutoff_low_quantile: f64,
    pub cutoff_high_quantile: f64,
    /// Smallest cutoff (log ratio): changes under ~5% are never anomalous on their own.
    pub min_cutoff: f64,
    /// Leaf weight = expected size ^ this (0: every leaf counts the same; 1: by size).
    pub size_exponent: f64,
    /// Acceptance by extremity: an element every leaf of which moved at least this many times
    /// further (log ratio) than the largest noise move, i.e. the largest against-the-change
    /// move of any leaf. What finds a root cause of one or a few leaves in a cube of
    /// thousands, where neither share nor evidence can. Twice: log forecast errors have
    /// exponential tails, so the largest of 10k noise leaves in the direction under study
    /// exceeds 1.5× the largest against it in ~1% of cases (a false root cause), 2× in ~0.01%.
    pub extreme_factor: f64,
    /// Extremity also needs the expected number of noise leaves moving that far (Gaussian
    /// relative errors at the band's scale) to be at most this.
    pub extreme_false_rate: f64,
    /// Once the remaining abnormal leaves explain less than this share of the change, only
    /// the evidence rule may still accept an element (a small second root cause in a noisy
    /// total); the search stops when nothing qualifies.
    pub stop_remaining: f64,
}

impl Default for AttributionConfig {
    fn default() -> Self {
        Self {
            max_dims: 6,
            max_causes: 10,
            share_max_dims: 3,
            min_purity: 0.75,
            min_explanatory_power: 0.05,
            evidence_min_purity: 0.5,
            evidence_min_explanatory_power: 0.001,
            min_evidence: 10.0,
            cutoff_low_quantile: 0.7,
            cutoff_high_quantile: 0.95,
            min_cutoff: 0.05,
            size_exponent: 0.5,
            extreme_factor: 2.0,
            extreme_false_rate: 0.001,
            stop_remaining: 0.05,
        }
    }
}

/// One explaining combination, with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cause {
    /// `(dimension, value)` in the cube's dimension order.
    pub elements: Vec<(String, String)>,
    /// Share of the anomalous KPI change (what the abnormal leaves changed) that goes away if
    /// this combination had its expected values.
    pub explanatory_power: f64,
    /// Relative change of the combination's KPI: actual / forecast − 1 (±∞ from a zero
    /// forecast).
    pub deviation: f64,
    /// The combination's KPI (a ratio for ratio KPIs).
    pub actual: f64,
    pub forecast: f64,
    pub leaves: usize,
    /// Weighted share of the combination's leaves that are abnormal (purity), in [0, 1].
    pub score: f64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Agg {
    num_a: f64,
    num_f: f64,
    den_a: f64,
    den_f: f64,
    /// Σ weight, Σ weight², Σ weight × abnormality.
    w: f64,
    w2: f64,
    wa: f64,
    leaves: u32,
    /// Leaves with a signal (weight > 0), and how many of them moved beyond any noise.
    signal_leaves: u32,
    extreme: u32,
    /// The first leaf added: names the group's element.
    first: u32,
}

impl Agg {
    #[inline]
    fn add(&mut self, p: &Prepared, cube: &Cube, leaf: usize) {
        if self.leaves == 0 {
            self.first = leaf as u32;
        }
        self.num_a += cube.actual[leaf];
        self.num_f += cube.forecast[leaf];
        self.den_a += cube.den_actual[leaf];
        self.den_f += cube.den_forecast[leaf];
        let w = p.weight[leaf];
        self.w += w;
        self.w2 += w * w;
        self.wa += w * p.abn[leaf];
        self.leaves += 1;
        if w > 0.0 {
            self.signal_leaves += 1;
            self.extreme += u32::from(p.extreme[leaf]);
        }
    }
}

/// Per-leaf deviation (log ratio) and expected size; `None` for a leaf that carries no
/// information (all zeros, or a ratio with no denominator on either side).
fn leaf_signal(cube: &Cube, leaf: usize) -> Option<(f64, f64)> {
    let (a, f) = (cube.actual[leaf], cube.forecast[leaf]);
    match cube.kind {
        KpiKind::Additive => {
            if a == 0.0 && f == 0.0 {
                return None;
            }
            // A zero on one side is a full change: ±ln(1001) rather than infinity.
            let eps = 1e-3 * (a + f);
            Some((((a + eps) / (f + eps)).ln(), f.max(a)))
        }
        KpiKind::Ratio => {
            let (da, df) = (cube.den_actual[leaf], cube.den_forecast[leaf]);
            if da <= 0.0 || df <= 0.0 {
                return None;
            }
            let (ra, rf) = (a / da, f / df);
            if ra == 0.0 && rf == 0.0 {
                return None;
            }
            let eps = 1e-3 * (ra + rf);
            Some((((ra + eps) / (rf + eps)).ln(), df.max(da)))
        }
    }
}

fn quantile(xs: &mut [f64], q: f64) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let i = ((xs.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    let (_, x, _) = xs.select_nth_unstable_by(i, f64::total_cmp);
    Some(*x)
}

/// All subsets of `0..n` with `k` elements, in lexicographic order.
fn subsets(n: usize, k: usize) -> Vec<Vec<usize>> {
    fn rec(start: usize, n: usize, k: usize, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if cur.len() == k {
            out.push(cur.clone());
            return;
        }
        for i in start..n {
            cur.push(i);
            rec(i + 1, n, k, cur, out);
            cur.pop();
        }
    }
    let mut out = Vec::new();
    rec(0, n, k, &mut Vec::new(), &mut out);
    out
}

/// What the search needs per leaf, and the anomaly's totals.
struct Prepared {
    /// Abnormality of each leaf in [0, 1].
    abn: Vec<f64>,
    /// Leaves that moved further than `extreme_factor` × the largest noise move.
    extreme: Vec<bool>,
    weight: Vec<f64>,
    total: Agg,
    kpi_actual: f64,
    /// The anomalous change (signed): what reverting the abnormal leaves would undo.
    change: f64,
    /// The direction under study: +1 up, −1 down.
    sign: f64,
}

impl Prepared {
    /// The KPI if the leaves of `agg` had their forecast values.
    fn reverted(&self, cube: &Cube, agg: &Agg) -> f64 {
        let t = &self.total;
        cube.kpi(
            t.num_a - agg.num_a + agg.num_f,
            t.den_a - agg.den_a + agg.den_f,
        )
    }
    fn explains(&self, cube: &Cube, agg: &Agg) -> f64 {
        (self.kpi_actual - self.reverted(cube, agg)) / self.change
    }
}

/// Leaf abnormality towards `sign` (+1: the KPI went up, −1: down) and the totals; `None` if
/// the leaves that moved that way do not move the KPI that way.
fn prepare(cube: &Cube, cfg: &AttributionConfig, sign: f64) -> Option<Prepared> {
    let n = cube.len();
    if n == 0 || cube.dims.is_empty() {
        return None;
    }
    let signals: Vec<Option<(f64, f64)>> = (0..n).map(|l| leaf_signal(cube, l)).collect();
    let significance = count_significance(cube);
    let weight: Vec<f64> = signals
        .iter()
        .map(|s| s.map_or(0.0, |(_, w)| w.powf(cfg.size_exponent)))
        .collect();
    // The noise band from the leaves that moved against `sign` (forecast noise is symmetric, so
    // they show how far noise alone moves a leaf); each leaf's abnormality ramps over it.
    // Leaves whose counts could have moved that far by chance alone (1 → 0 errors) say nothing
    // about the noise band: their log ratio is huge and meaningless.
    let mut against: Vec<f64> = signals
        .iter()
        .zip(&significance)
        .filter(|(_, s)| **s >= 1.0)
        .filter_map(|(sig, _)| *sig)
        .map(|(d, _)| -d * sign)
        .filter(|d| *d > 0.0)
        .collect();
    let q_low = quantile(&mut against, cfg.cutoff_low_quantile).unwrap_or(0.0);
    let lo = q_low.max(cfg.min_cutoff);
    let hi = quantile(&mut against, cfg.cutoff_high_quantile)
        .unwrap_or(0.0)
        .max(lo + cfg.min_cutoff);
    // The largest noise move sets how far a leaf must move to stand out alone. Full changes
    // (a zero on one side) count: noise that takes a leaf to zero can take one anywhere.
    let noise_max = against.iter().copied().fold(0.0, f64::max);
    let extreme_at = (noise_max * cfg.extreme_factor).max(hi);
    // Log forecast errors have a heavy tail where noise takes a leaf near zero, and a rare
    // near-total error on the side under study can beat twice the largest against-move. So a
    // leaf also needs the noise to be unlikely to move any leaf that far: with relative errors
    // N(0, σ) (σ from the against-moves' 70% quantile, 1.04σ for |N(0, σ)|), the expected
    // number of leaves whose error reaches 1 − e^(−|d|) must stay under
    // `extreme_false_rate`. A leaf with nothing expected has no measured ratio: it stands out
    // only where the noise stays under a (10/2)-fold move.
    let sigma = (q_low / 1.036).max(1e-9);
    let signal_leaves = signals.iter().filter(|s| s.is_some()).count() as f64;
    let zero_forecast_can_stand_out = extreme_at <= 10f64.ln();
    let extreme: Vec<bool> = (0..n)
        .map(|l| {
            significance[l] >= 1.0
                && (cube.forecast[l] > 0.0 || zero_forecast_can_stand_out)
                && signals[l].is_some_and(|(d, w)| {
                    let z = (1.0 - (-d.abs()).exp()) / sigma;
                    w > 0.0
                        && d * sign >= extreme_at
                        && signal_leaves * normal_tail(z) <= cfg.extreme_false_rate
                })
        })
        .collect();
    let abn: Vec<f64> = signals
        .iter()
        .zip(&significance)
        .map(|(s, sig)| {
            s.map_or(0.0, |(d, _)| {
                ((d * sign - lo) / (hi - lo)).clamp(0.0, 1.0) * sig
            })
        })
        .collect();
    let mut p = Prepared {
        abn,
        extreme,
        weight,
        total: Agg::default(),
        kpi_actual: 0.0,
        change: 0.0,
        sign,
    };
    let mut total = Agg::default();
    for leaf in 0..n {
        total.add(&p, cube, leaf);
    }
    p.total = total;
    p.kpi_actual = cube.kpi(total.num_a, total.den_a);
    if !p.kpi_actual.is_finite() || !cube.kpi(total.num_f, total.den_f).is_finite() {
        return None;
    }
    // The anomalous change: what reverting the abnormal leaves (by their abnormality) undoes.
    let (mut na, mut da) = (total.num_a, total.den_a);
    for leaf in 0..n {
        if p.abn[leaf] > 0.0 {
            na -= p.abn[leaf] * (cube.actual[leaf] - cube.forecast[leaf]);
            da -= p.abn[leaf] * (cube.den_actual[leaf] - cube.den_forecast[leaf]);
        }
    }
    p.change = p.kpi_actual - cube.kpi(na, da);
    if !p.change.is_finite() || p.change * sign <= 0.0 {
        return None;
    }
    Some(p)
}

/// Per leaf, how far its change is beyond what counting noise explains, in [0, 1]: 0 up to
/// one standard deviation, 1 from two. Only for cubes whose actual numerators are all whole
/// numbers (error or request counts: 0–2 errors per pod and endpoint, where 1 → 0 is noise);
/// every leaf of any other cube counts fully (1). The test is Poisson on the Anscombe scale:
/// z = 2(√(x + 3/8) − √(e + 3/8)) for x counted where e were expected (for ratio KPIs, the
/// forecast rate times the actual denominator: more traffic is not more failure).
fn count_significance(cube: &Cube) -> Vec<f64> {
    let n = cube.len();
    if !cube.actual.iter().all(|x| x.fract() == 0.0) {
        return vec![1.0; n];
    }
    (0..n)
        .map(|l| {
            let x = cube.actual[l];
            let e = match cube.kind {
                KpiKind::Additive => cube.forecast[l],
                KpiKind::Ratio if cube.den_forecast[l] > 0.0 => {
                    cube.forecast[l] / cube.den_forecast[l] * cube.den_actual[l]
                }
                KpiKind::Ratio => return 1.0,
            };
            let z = 2.0 * ((x + 0.375).sqrt() - (e + 0.375).sqrt());
            (z.abs() - 1.0).clamp(0.0, 1.0)
        })
        .collect()
}

/// P(Z > z) for a standard normal Z, z ≥ 0 (Abramowitz & Stegun 7.1.26 for erfc; relative
/// error well under 1% in the tail, which is all a false-root-cause rate needs).
fn normal_tail(z: f64) -> f64 {
    let x = z.max(0.0) / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    0.5 * poly * (-x * x).exp()
}

/// Log-likelihood ratio (nats) of an element's abnormal share against the background's.
fn evidence_of(agg: &Agg, background: f64) -> f64 {
    if agg.w2 <= 0.0 {
        return 0.0;
    }
    let n_eff = agg.w * agg.w / agg.w2;
    let q = (agg.wa / agg.w).clamp(1e-9, 1.0 - 1e-9);
    let b = background.clamp(1e-9, 1.0 - 1e-9);
    if q <= b {
        return 0.0;
    }
    n_eff * (q * (q / b).ln() + (1.0 - q) * ((1.0 - q) / (1.0 - b)).ln())
}

fn cause_of(cube: &Cube, p: &Prepared, element: &[(usize, u32)], agg: &Agg) -> Cause {
    let actual = cube.kpi(agg.num_a, agg.den_a);
    let forecast = cube.kpi(agg.num_f, agg.den_f);
    Cause {
        elements: element
            .iter()
            .map(|&(d, v)| (cube.dims[d].clone(), cube.values[d][v as usize].clone()))
            .collect(),
        explanatory_power: p.explains(cube, agg),
        deviation: if forecast != 0.0 {
            actual / forecast - 1.0
        } else if actual != 0.0 {
            f64::INFINITY.copysign(actual)
        } else {
            0.0
        },
        actual,
        forecast,
        leaves: agg.leaves as usize,
        score: if agg.w > 0.0 { agg.wa / agg.w } else { 0.0 },
    }
}

/// The evidence for one given element (`(dimension, value)` pairs, any order), as
/// [`attribute`] would report it, taking the direction of the element's own change; `None` if
/// the element names an unknown dimension or value, matches no leaf, or did not change.
pub fn evidence(cube: &Cube, cfg: &AttributionConfig, element: &[(&str, &str)]) -> Option<Cause> {
    let mut el = Vec::new();
    for (dim, value) in element {
        let d = cube.dims.iter().position(|x| x == dim)?;
        let v = cube.values[d].iter().position(|x| x == value)? as u32;
        el.push((d, v));
    }
    el.sort_unstable();
    let leaves: Vec<usize> = (0..cube.len())
        .filter(|&l| el.iter().all(|&(d, v)| cube.coord(l, d) == v))
        .collect();
    let (mut a, mut f, mut da, mut df) = (0.0, 0.0, 0.0, 0.0);
    for &l in &leaves {
        a += cube.actual[l];
        f += cube.forecast[l];
        da += cube.den_actual[l];
        df += cube.den_forecast[l];
    }
    let sign = (cube.kpi(a, da) - cube.kpi(f, df)).signum();
    if leaves.is_empty() || sign == 0.0 || sign.is_nan() {
        return None;
    }
    let p = prepare(cube, cfg, sign)?;
    let mut agg = Agg::default();
    for &leaf in &leaves {
        agg.add(&p, cube, leaf);
    }
    Some(cause_of(cube, &p, &el, &agg))
}

/// Groups the alive leaves by their values on `dims`: a dense table when the key space is
/// small, a hash map otherwise. Calls `f` with each non-empty group.
struct Grouper {
    dense: Vec<Agg>,
    sparse: HashMap<u64, Agg>,
}

impl Grouper {
    fn for_each(
        &mut self,
        cube: &Cube,
        p: &Prepared,
        alive: &[u32],
        dims: &[usize],
        mut f: impl FnMut(&Agg),
    ) {
        let nd = cube.dims.len();
        let mut strides = Vec::with_capacity(dims.len());
        let mut space: u64 = 1;
        for &d in dims.iter().rev() {
            strides.push((d, space));
            space = space.saturating_mul(cube.values[d].len().max(1) as u64);
        }
        let key = |leaf: usize| -> u64 {
            let row = &cube.coords[leaf * nd..leaf * nd + nd];
            strides
                .iter()
                .fold(0u64, |k, &(d, s)| k + row[d] as u64 * s)
        };
        if space <= (4 * alive.len() as u64).max(4096) {
            self.dense.clear();
            self.dense.resize(space as usize, Agg::default());
            for &leaf in alive {
                let k = key(leaf as usize) as usize;
                self.dense[k].add(p, cube, leaf as usize);
            }
            self.dense.iter().filter(|a| a.leaves > 0).for_each(&mut f);
        } else {
            self.sparse.clear();
            for &leaf in alive {
                self.sparse
                    .entry(key(leaf as usize))
                    .or_default()
                    .add(p, cube, leaf as usize);
            }
            self.sparse.values().for_each(&mut f);
        }
    }
}

/// The combinations that explain the change of `cube`'s KPI, most explanatory first.
///
/// Non-finite or negative inputs never reach here ([`CubeBuilder`] skips them); leaves with
/// nothing on either side carry no signal and count for nothing; a zero forecast with a
/// non-zero actual is a full change. No change, or an empty cube, gives no causes.
///
/// Both directions are searched (the KPI went up because some elements went up, or down
/// because some went down): the summed noise of thousands of leaves can outweigh a small
/// root cause in the total, so the total's sign does not decide. The direction whose causes
/// carry more evidence wins (on a tie, the total's), unless its causes explain under a tenth
/// of the KPI change the other direction's explain.
pub fn attribute(cube: &Cube, cfg: &AttributionConfig) -> Vec<Cause> {
    if cube.is_empty() || cube.dims.is_empty() {
        return Vec::new();
    }
    let total_sign = {
        let (mut a, mut f, mut da, mut df) = (0.0, 0.0, 0.0, 0.0);
        for l in 0..cube.len() {
            a += cube.actual[l];
            f += cube.forecast[l];
            da += cube.den_actual[l];
            df += cube.den_forecast[l];
        }
        if cube.kpi(a, da) >= cube.kpi(f, df) {
            1.0
        } else {
            -1.0
        }
    };
    // Per direction: (summed evidence, KPI change its causes explain, causes).
    let mut found: Vec<(f64, f64, Vec<Cause>)> = Vec::new();
    for sign in [total_sign, -total_sign] {
        let Some(p) = prepare(cube, cfg, sign) else {
            continue;
        };
        let (evidence, causes) = search(cube, cfg, &p);
        if causes.is_empty() {
            continue;
        }
        let explained = p.change.abs() * causes.iter().map(|c| c.explanatory_power).sum::<f64>();
        found.push((evidence, explained.abs(), causes));
    }
    // Evidence decides between directions whose causes explain changes of the same order; a
    // direction whose causes explain under a tenth of the other's KPI change loses however many
    // leaves carry it (a widespread drift just past the noise band against a real fault).
    let largest = found.iter().map(|f| f.1).fold(0.0, f64::max);
    let best = found
        .into_iter()
        .filter(|f| f.1 >= 0.1 * largest)
        .reduce(|a, b| if b.0 > a.0 { b } else { a });
    let mut causes = best.map(|(_, _, c)| c).unwrap_or_default();
    causes.sort_by(|a, b| b.explanatory_power.total_cmp(&a.explanatory_power));
    causes
}

/// An element that qualified, with what decided it.
#[derive(Debug, Clone)]
struct Candidate {
    ep: f64,
    purity: f64,
    evidence: f64,
    /// `(dimension, value id)` pairs in dimension order.
    element: Vec<(usize, u32)>,
    agg: Agg,
}

impl Candidate {
    /// Ordered by explanatory power, then purity, then (reversed) element key: deterministic.
    fn beats(&self, other: &Candidate) -> bool {
        match (self.ep, self.purity).partial_cmp(&(other.ep, other.purity)) {
            Some(std::cmp::Ordering::Greater) => true,
            Some(std::cmp::Ordering::Equal) => self.element < other.element,
            _ => false,
        }
    }
}

/// What one search round needs to judge an element.
struct Round<'a> {
    cube: &'a Cube,
    cfg: &'a AttributionConfig,
    p: &'a Prepared,
    background: f64,
    /// False once what is left explains less than `stop_remaining`: evidence only.
    share_allowed: bool,
}

impl Round<'_> {
    /// `dims`: how many dimensions the element has.
    fn judge(
        &self,
        agg: &Agg,
        dims: usize,
        element: impl FnOnce() -> Vec<(usize, u32)>,
    ) -> Option<Candidate> {
        let cfg = self.cfg;
        if agg.w <= 0.0 || agg.wa <= 0.0 {
            return None;
        }
        let purity = agg.wa / agg.w;
        if purity < cfg.evidence_min_purity.min(cfg.min_purity) {
            return None;
        }
        let ep = self.p.explains(self.cube, agg);
        let evidence = evidence_of(agg, self.background);
        let by_share = self.share_allowed
            && dims <= cfg.share_max_dims
            && purity >= cfg.min_purity
            && ep >= cfg.min_explanatory_power;
        let by_evidence = purity >= cfg.evidence_min_purity
            && ep >= cfg.evidence_min_explanatory_power
            && evidence >= cfg.min_evidence;
        let by_extremity = agg.signal_leaves > 0 && agg.extreme == agg.signal_leaves && ep > 0.0;
        (by_share || by_evidence || by_extremity).then(|| Candidate {
            ep,
            purity,
            evidence,
            element: element(),
            agg: *agg,
        })
    }

    /// The best qualifying element over `cuboids`, grouping only `leaves`.
    fn best<'c>(
        &self,
        grouper: &mut Grouper,
        leaves: &[u32],
        cuboids: impl IntoIterator<Item = &'c Vec<usize>>,
    ) -> Option<Candidate> {
        let mut best: Option<Candidate> = None;
        for dims in cuboids {
            grouper.for_each(self.cube, self.p, leaves, dims, |agg| {
                let leaf = agg.first as usize;
                let el = || {
                    dims.iter()
                        .map(|&d| (d, self.cube.coord(leaf, d)))
                        .collect()
                };
                if let Some(c) = self.judge(agg, dims.len(), el)
                    && best.as_ref().is_none_or(|b| c.beats(b))
                {
                    best = Some(c);
                }
            });
        }
        best
    }

    /// Signed relative change (towards the direction under study) of a set of sums' KPI,
    /// 2(a − f)/(a + f): bounded (±2), so a leaf that fell to zero does not outweigh a
    /// 90 % drop of the rest as a log ratio would.
    fn change_of(&self, num_a: f64, num_f: f64, den_a: f64, den_f: f64) -> f64 {
        let (a, f) = (self.cube.kpi(num_a, den_a), self.cube.kpi(num_f, den_f));
        if a + f <= 0.0 {
            return 0.0;
        }
        2.0 * (a - f) / (a + f) * self.p.sign
    }

    /// Whether the rest of `parent` (its leaves outside `child`) moved with the child: at
    /// least half the child's relative change, in the same direction. Then the change belongs to
    /// the parent and the child is only its purest part; otherwise the parent is the child
    /// plus leaves that did not move. A rest with no weight (zeros) counts as moving along:
    /// the parent is the simpler name for the same leaves.
    fn rest_moved_with(&self, parent: &Agg, child: &Agg) -> bool {
        if parent.w - child.w <= 1e-12 * parent.w.max(1.0) {
            return true;
        }
        let c = self.change_of(child.num_a, child.num_f, child.den_a, child.den_f);
        let r = self.change_of(
            parent.num_a - child.num_a,
            parent.num_f - child.num_f,
            parent.den_a - child.den_a,
            parent.den_f - child.den_f,
        );
        c > 0.0 && r >= 0.5 * c
    }
}

fn matches(cube: &Cube, leaf: usize, element: &[(usize, u32)]) -> bool {
    element.iter().all(|&(d, v)| cube.coord(leaf, d) == v)
}

/// Layer-wise search in one direction; the causes and their summed evidence.
///
/// Each round takes the best element of the most general layer that has a qualifying one,
/// then corrects the layer order both ways: a more general element whose other leaves moved
/// with it replaces it (small cubes, where a true coarse element stays under the purity bar
/// while a purer child passes), and a qualifying descendant replaces it when the element's
/// other leaves did not move (a parent that passes only because one child carries it).
fn search(cube: &Cube, cfg: &AttributionConfig, p: &Prepared) -> (f64, Vec<Cause>) {
    let nd = cube.dims.len();
    let mut alive: Vec<u32> = (0..cube.len() as u32).collect();
    let mut causes: Vec<Cause> = Vec::new();
    // The causes' elements as `(dimension, value id)` pairs, beside `causes`.
    let mut elements: Vec<Vec<(usize, u32)>> = Vec::new();
    let mut total_evidence = 0.0;
    let layers: Vec<Vec<Vec<usize>>> = (1..=cfg.max_dims.min(nd)).map(|k| subsets(nd, k)).collect();
    let mut grouper = Grouper {
        dense: Vec::new(),
        sparse: HashMap::new(),
    };
    while causes.len() < cfg.max_causes && !alive.is_empty() {
        // What the remaining leaves could still explain, and their background abnormality.
        let mut rest = Agg::default();
        let mut rest_abnormal = Agg::default();
        for &leaf in &alive {
            rest.add(p, cube, leaf as usize);
            if p.abn[leaf as usize] > 0.0 {
                rest_abnormal.add(p, cube, leaf as usize);
            }
        }
        let round = Round {
            cube,
            cfg,
            p,
            background: if rest.w > 0.0 { rest.wa / rest.w } else { 0.5 },
            share_allowed: p.explains(cube, &rest_abnormal) >= cfg.stop_remaining,
        };
        let Some(mut best) = layers
            .iter()
            .find_map(|layer| round.best(&mut grouper, &alive, layer))
        else {
            break;
        };
        if let Some(parent) = generalize(&round, &alive, &best) {
            best = parent;
        } else {
            best = specialize(&round, &mut grouper, &alive, &layers, best);
        }
        alive.retain(|&leaf| !matches(cube, leaf as usize, &best.element));
        total_evidence += best.evidence;
        // A cause named earlier that lies inside this one was its purest part, found while
        // the whole was still under the bars: the whole is the cause.
        let inside = |c: &[(usize, u32)]| best.element.iter().all(|pair| c.contains(pair));
        let mut i = 0;
        let mut merged = false;
        while i < causes.len() {
            if inside(&elements[i]) {
                causes.remove(i);
                elements.remove(i);
                merged = true;
            } else {
                i += 1;
            }
        }
        if merged {
            // Report the whole element, the leaves of the merged part included.
            best.agg = Agg::default();
            for leaf in (0..cube.len()).filter(|&l| matches(cube, l, &best.element)) {
                best.agg.add(p, cube, leaf);
            }
        }
        elements.push(best.element.clone());
        causes.push(cause_of(cube, p, &best.element, &best.agg));
    }
    (total_evidence, causes)
}

/// The most general ancestor of `child` (one pair dropped at a time) that is mostly abnormal
/// and whose other leaves moved with the child; `None` if none is.
fn generalize(round: &Round, alive: &[u32], child: &Candidate) -> Option<Candidate> {
    let cube = round.cube;
    let mut current = child.clone();
    let mut moved = false;
    loop {
        if current.element.len() < 2 {
            break;
        }
        let mut best: Option<Candidate> = None;
        for drop in 0..current.element.len() {
            let mut el = current.element.clone();
            el.remove(drop);
            let mut agg = Agg::default();
            for &leaf in alive {
                if matches(cube, leaf as usize, &el) {
                    agg.add(round.p, cube, leaf as usize);
                }
            }
            if agg.w <= 0.0 || agg.wa / agg.w < round.cfg.evidence_min_purity {
                continue;
            }
            let ep = round.p.explains(cube, &agg);
            if ep < current.ep || !round.rest_moved_with(&agg, &current.agg) {
                continue;
            }
            let c = Candidate {
                ep,
                purity: agg.wa / agg.w,
                evidence: evidence_of(&agg, round.background),
                element: el,
                agg,
            };
            if best.as_ref().is_none_or(|b| c.beats(b)) {
                best = Some(c);
            }
        }
        let Some(b) = best else { break };
        current = b;
        moved = true;
    }
    moved.then_some(current)
}

/// The qualifying descendant that carries `parent` when the parent's other leaves did not
/// move with it (repeatedly, down to the deepest such); `parent` itself otherwise.
fn specialize(
    round: &Round,
    grouper: &mut Grouper,
    alive: &[u32],
    layers: &[Vec<Vec<usize>>],
    parent: Candidate,
) -> Candidate {
    let cube = round.cube;
    let mut current = parent;
    loop {
        let dims: Vec<usize> = current.element.iter().map(|&(d, _)| d).collect();
        let inside: Vec<u32> = alive
            .iter()
            .copied()
            .filter(|&l| matches(cube, l as usize, &current.element))
            .collect();
        let deeper = layers
            .iter()
            .skip(dims.len())
            .flatten()
            .filter(|c| dims.iter().all(|d| c.contains(d)));
        let Some(child) = round.best(grouper, &inside, deeper) else {
            return current;
        };
        if round.rest_moved_with(&current.agg, &child.agg) {
            return current;
        }
        current = child;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AttributionConfig {
        AttributionConfig::default()
    }

    fn el(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(d, v)| (d.to_string(), v.to_string()))
            .collect()
    }

    fn names(causes: &[Cause]) -> Vec<Vec<(String, String)>> {
        let mut v: Vec<_> = causes.iter().map(|c| c.elements.clone()).collect();
        v.sort();
        v
    }

    /// A symmetric spread of relative noise in [-amp, amp], deterministic in (i, j).
    fn noise(i: usize, j: usize, amp: f64) -> f64 {
        (((i * 7 + j * 13) % 21) as f64 - 10.0) / 10.0 * amp
    }

    #[test]
    fn a_small_second_cause_is_found_by_evidence_after_the_remainder_falls_under_stop() {
        // s0 (big leaves) loses 90%: ~99.7% of the change. s1 (small leaves) loses 30%: 0.3%
        // of it, under `stop_remaining`, but 50 leaves that all moved is strong evidence.
        let mut b = CubeBuilder::new(&["service", "pod"], KpiKind::Additive);
        for s in 0..20 {
            for p in 0..50 {
                let (f, a) = match s {
                    0 => (1000.0, 100.0),
                    1 => (10.0, 7.0),
                    _ => (100.0, 100.0 * (1.0 + noise(s, p, 0.02))),
                };
                b.add(&[&format!("s{s}"), &format!("p{p}")], a, f);
            }
        }
        let causes = attribute(&b.build(), &cfg());
        assert_eq!(
            names(&causes),
            [el(&[("service", "s0")]), el(&[("service", "s1")])],
            "{causes:?}"
        );
    }

    #[test]
    fn the_exact_child_wins_over_a_parent_it_carries() {
        // a1 & b1 drops 60%; a1 & b2 is as noisy as the rest. a1 is half abnormal and, over
        // 200 leaves, passes the evidence bar first: the child must be named.
        let mut b = CubeBuilder::new(&["a", "b", "c", "d"], KpiKind::Additive);
        for a in 0..6 {
            for bb in 0..2 {
                for c in 0..10 {
                    for d in 0..10 {
                        let f = 100.0;
                        let act = if a == 1 && bb == 1 {
                            40.0
                        } else {
                            f * (1.0 + noise(a * 20 + bb * 10 + c, d, 0.15))
                        };
                        b.add(
                            &[
                                &format!("a{a}"),
                                &format!("b{bb}"),
                                &format!("c{c}"),
                                &format!("d{d}"),
                            ],
                            act,
                            f,
                        );
                    }
                }
            }
        }
        let causes = attribute(&b.build(), &cfg());
        assert_eq!(
            names(&causes),
            [el(&[("a", "a1"), ("b", "b1")])],
            "{causes:?}"
        );
    }

    #[test]
    fn in_a_small_cube_the_coarse_element_wins_over_its_purest_leaf() {
        // 100 leaves; a3 drops by 5–13% per leaf, so part of it sits in the noise band (±5%)
        // and it stays under the purity and evidence bars, while its largest drop alone is
        // pure and explains 40%.
        let mut b = CubeBuilder::new(&["a", "b"], KpiKind::Additive);
        for a in 0..20 {
            for bb in 0..5 {
                let f = 100.0;
                let act = if a == 3 {
                    f * (1.0 - (0.05 + 0.02 * bb as f64))
                } else {
                    f * (1.0 + noise(a, bb, 0.05))
                };
                b.add(&[&format!("a{a}"), &format!("b{bb}")], act, f);
            }
        }
        let causes = attribute(&b.build(), &cfg());
        assert_eq!(names(&causes), [el(&[("a", "a3")])], "{causes:?}");
    }

    #[test]
    fn a_large_fault_beats_a_widespread_drift_with_more_evidence() {
        // Version v2 (4 big leaves) loses 90%; zone z1 drifts up 12% on 100 small leaves:
        // more leaves, more evidence, a thirtieth of the change.
        let mut b = CubeBuilder::new(&["zone", "pod", "version"], KpiKind::Additive);
        for z in 0..4 {
            for p in 0..100 {
                let v2 = z == 0 && p < 4;
                let (f, a) = if v2 {
                    (10_000.0, 1_000.0)
                } else if z == 1 {
                    (100.0, 112.0)
                } else {
                    (100.0, 100.0 * (1.0 + noise(z, p, 0.03)))
                };
                let version = if v2 { "v2" } else { "v1" };
                b.add(&[&format!("z{z}"), &format!("p{p}"), version], a, f);
            }
        }
        let causes = attribute(&b.build(), &cfg());
        assert_eq!(names(&causes), [el(&[("version", "v2")])], "{causes:?}");
    }

    #[test]
    fn failure_rates_from_small_error_counts_are_attributed() {
        // 0–2 errors per pod and endpoint where 1 was expected (1 → 0 is noise, not a
        // −100% change); p7 has 8 on every endpoint.
        let mut b = CubeBuilder::new(&["pod", "endpoint"], KpiKind::Ratio);
        for p in 0..20 {
            for e in 0..10 {
                let errors = if p == 7 {
                    8.0
                } else {
                    ((p * 7 + e * 3) % 3) as f64
                };
                b.add_ratio(
                    &[&format!("p{p}"), &format!("/e{e}")],
                    errors,
                    1.0,
                    50.0,
                    50.0,
                );
            }
        }
        let causes = attribute(&b.build(), &cfg());
        assert_eq!(names(&causes), [el(&[("pod", "p7")])], "{causes:?}");
    }

    #[test]
    fn a_single_leaf_far_beyond_the_noise_is_found_in_a_large_cube() {
        // One leaf of 4,000 loses 90%; the noise moves no leaf more than 10%.
        let mut b = CubeBuilder::new(&["a", "b", "c"], KpiKind::Additive);
        for a in 0..10 {
            for bb in 0..20 {
                for c in 0..20 {
                    let f = 100.0;
                    let act = if (a, bb, c) == (4, 5, 6) {
                        10.0
                    } else {
                        f * (1.0 + noise(a * 20 + bb, c, 0.1))
                    };
                    b.add(
                        &[&format!("a{a}"), &format!("b{bb}"), &format!("c{c}")],
                        act,
                        f,
                    );
                }
            }
        }
        let causes = attribute(&b.build(), &cfg());
        assert_eq!(
            names(&causes),
            [el(&[("a", "a4"), ("b", "b5"), ("c", "c6")])],
            "{causes:?}"
        );
    }

    #[test]
    fn empty_and_dimensionless_cubes_give_nothing() {
        assert!(attribute(&CubeBuilder::new(&["a"], KpiKind::Additive).build(), &cfg()).is_empty());
        let mut b = CubeBuilder::new(&[], KpiKind::Additive);
        b.add(&[], 1.0, 2.0);
        assert!(attribute(&b.build(), &cfg()).is_empty());
    }

    #[test]
    fn no_change_gives_nothing() {
        let mut b = CubeBuilder::new(&["a", "b"], KpiKind::Additive);
        for (x, y) in [("x", "1"), ("x", "2"), ("y", "1"), ("y", "2")] {
            b.add(&[x, y], 10.0, 10.0);
        }
        assert!(attribute(&b.build(), &cfg()).is_empty());
    }

    #[test]
    fn non_finite_and_negative_rows_are_skipped() {
        let mut b = CubeBuilder::new(&["a"], KpiKind::Additive);
        b.add(&["x"], f64::NAN, 1.0);
        b.add(&["x"], f64::INFINITY, 1.0);
        b.add(&["x"], -1.0, 1.0);
        b.add_ratio(&["x"], 1.0, 1.0, f64::NAN, 1.0);
        b.add(&["x", "extra"], 1.0, 1.0);
        assert_eq!(b.skipped, 5);
        b.add(&["x"], 1.0, 1.0);
        assert_eq!(b.build().len(), 1);
    }

    #[test]
    fn zero_forecast_is_a_full_change() {
        // A brand-new endpoint takes traffic nobody forecast.
        let mut b = CubeBuilder::new(&["endpoint"], KpiKind::Additive);
        b.add(&["/new"], 500.0, 0.0);
        for e in ["/a", "/b", "/c"] {
            b.add(&[e], 100.0, 100.0);
        }
        let causes = attribute(&b.build(), &cfg());
        assert_eq!(causes.len(), 1);
        assert_eq!(
            causes[0].elements,
            [("endpoint".to_string(), "/new".to_string())]
        );
        assert!(causes[0].deviation.is_infinite() && causes[0].deviation > 0.0);
        assert!((causes[0].explanatory_power - 1.0).abs() < 1e-9);
    }

    #[test]
    fn ratio_with_zero_denominators_does_not_panic() {
        let mut b = CubeBuilder::new(&["pod"], KpiKind::Ratio);
        b.add_ratio(&["p0"], 0.0, 0.0, 0.0, 0.0);
        b.add_ratio(&["p1"], 5.0, 0.0, 0.0, 10.0);
        assert!(attribute(&b.build(), &cfg()).is_empty());
    }

    #[test]
    fn a_drop_on_one_node_of_two_dimensions_is_named_with_both() {
        // node n1 & service s1 drops; n1's other services and s1 elsewhere are fine.
        let mut b = CubeBuilder::new(&["service", "node", "pod"], KpiKind::Additive);
        for s in ["s0", "s1", "s2", "s3"] {
            for n in ["n0", "n1", "n2", "n3"] {
                for p in ["p0", "p1", "p2"] {
                    let f = 100.0;
                    let a = if s == "s1" && n == "n1" { 10.0 } else { f };
                    b.add(&[s, n, p], a, f);
                }
            }
        }
        let causes = attribute(&b.build(), &cfg());
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(
            causes[0].elements,
            [
                ("service".to_string(), "s1".to_string()),
                ("node".to_string(), "n1".to_string())
            ]
        );
        assert_eq!(causes[0].leaves, 3);
        assert!((causes[0].deviation + 0.9).abs() < 1e-9);
    }

    #[test]
    fn a_single_dimension_with_several_causes() {
        let mut b = CubeBuilder::new(&["status"], KpiKind::Additive);
        for (s, a) in [
            ("200", 1000.0),
            ("500", 300.0),
            ("503", 200.0),
            ("404", 50.0),
        ] {
            let f = if s == "200" { 1000.0 } else { 50.0 };
            b.add(&[s], a, f);
        }
        let causes = attribute(&b.build(), &cfg());
        let names: Vec<&str> = causes.iter().map(|c| c.elements[0].1.as_str()).collect();
        assert_eq!(names, ["500", "503"]);
        let ep: f64 = causes.iter().map(|c| c.explanatory_power).sum();
        assert!((ep - 1.0).abs() < 1e-9, "{causes:?}");
    }

    #[test]
    fn evidence_reports_a_given_element() {
        let mut b = CubeBuilder::new(&["endpoint", "pod"], KpiKind::Additive);
        for e in ["/a", "/b"] {
            for p in ["p0", "p1"] {
                b.add(&[e, p], if e == "/b" { 50.0 } else { 100.0 }, 100.0);
            }
        }
        let cube = b.build();
        let c = evidence(&cube, &cfg(), &[("endpoint", "/b")]).unwrap();
        assert_eq!(c.leaves, 2);
        assert!((c.deviation + 0.5).abs() < 1e-9);
        assert!(evidence(&cube, &cfg(), &[("endpoint", "/nope")]).is_none());
        assert!(
            evidence(&cube, &cfg(), &[("endpoint", "/a")]).is_none(),
            "did not change"
        );
    }

    #[test]
    fn output_does_not_depend_on_row_order() {
        let mut rows = Vec::new();
        for s in 0..5 {
            for n in 0..4 {
                let f = 50.0 + (s * 7 + n * 3) as f64;
                let a = if n == 2 { f * 1.8 } else { f };
                rows.push((format!("s{s}"), format!("n{n}"), a, f));
            }
        }
        let build = |rows: &[(String, String, f64, f64)]| {
            let mut b = CubeBuilder::new(&["service", "node"], KpiKind::Additive);
            for (s, n, a, f) in rows {
                b.add(&[s, n], *a, *f);
            }
            attribute(&b.build(), &cfg())
        };
        let forward = build(&rows);
        rows.reverse();
        assert_eq!(forward, build(&rows));
        assert_eq!(
            forward[0].elements,
            [("node".to_string(), "n2".to_string())]
        );
    }
}
