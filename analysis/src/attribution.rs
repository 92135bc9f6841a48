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
//!    configured.
//! 3. **Layer-wise search** over combinations of 1, 2, 3 dimensions (most general first, as
//!    HotSpot/RiskLoc). An element's *purity* is the abnormal share of its leaves, weighted by
//!    √(expected size). Its *explanatory power* is counterfactual: the share of the anomalous
//!    change that goes away if this element had its expected values (exact for ratio KPIs,
//!    where a cause is where the ratio moved, weighted by the denominator — not where traffic
//!    is). Its *evidence* is the log-likelihood ratio n_eff · KL(purity ‖ background purity).
//!    An element qualifies by share (purity ≥ 0.75 and ≥ 5% of the change: small cubes) or by
//!    evidence (purity ≥ 0.5 and ≥ 10 nats: big root causes partly inside the noise band, and
//!    small ones that explain little of a noisy total). In the most general layer that has a
//!    qualifying element, the most explanatory wins; its leaves are removed and the search
//!    restarts — several root causes of different sizes and magnitudes (the Squeeze insight)
//!    without clustering.
//! 4. **Stop** when what is left explains too little, or nothing qualifies.
//! 5. **Both directions** are searched; the one whose causes carry more evidence wins (the
//!    total's sign can be outweighed by the summed noise of thousands of leaves).
//!
//! Deterministic: candidates are compared on (layer, explanatory power, purity, element key),
//! never on hash order. Grouping is a dense table indexed by the mixed-radix key of the
//! element's values when the key space is small, a hash map otherwise; ~30 ms for 50k leaves
//! and 6 dimensions (BENCHMARKS.md).

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
    /// Largest number of dimensions in one element.
    pub max_dims: usize,
    /// Most causes returned.
    pub max_causes: usize,
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
    /// Stop once the remaining abnormal leaves explain less than this share of the change.
    pub stop_remaining: f64,
}

impl Default for AttributionConfig {
    fn default() -> Self {
        Self {
            max_dims: 3,
            max_causes: 5,
            min_purity: 0.75,
            min_explanatory_power: 0.05,
            evidence_min_purity: 0.5,
            evidence_min_explanatory_power: 0.001,
            min_evidence: 10.0,
            cutoff_low_quantile: 0.7,
            cutoff_high_quantile: 0.95,
            min_cutoff: 0.05,
            size_exponent: 0.5,
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
    weight: Vec<f64>,
    total: Agg,
    kpi_actual: f64,
    /// The anomalous change (signed): what reverting the abnormal leaves would undo.
    change: f64,
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
    let weight: Vec<f64> = signals
        .iter()
        .map(|s| s.map_or(0.0, |(_, w)| w.powf(cfg.size_exponent)))
        .collect();
    // The noise band from the leaves that moved against `sign` (forecast noise is symmetric, so
    // they show how far noise alone moves a leaf); each leaf's abnormality ramps over it.
    let mut against: Vec<f64> = signals
        .iter()
        .flatten()
        .map(|(d, _)| -d * sign)
        .filter(|d| *d > 0.0)
        .collect();
    let lo = quantile(&mut against, cfg.cutoff_low_quantile)
        .unwrap_or(0.0)
        .max(cfg.min_cutoff);
    let hi = quantile(&mut against, cfg.cutoff_high_quantile)
        .unwrap_or(0.0)
        .max(lo + cfg.min_cutoff);
    let abn: Vec<f64> = signals
        .iter()
        .map(|s| s.map_or(0.0, |(d, _)| ((d * sign - lo) / (hi - lo)).clamp(0.0, 1.0)))
        .collect();
    let mut p = Prepared {
        abn,
        weight,
        total: Agg::default(),
        kpi_actual: 0.0,
        change: 0.0,
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
/// carry more evidence wins; on a tie, the total's.
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
    let mut best: Option<(f64, Vec<Cause>)> = None;
    for sign in [total_sign, -total_sign] {
        let Some(p) = prepare(cube, cfg, sign) else {
            continue;
        };
        let (evidence, causes) = search(cube, cfg, &p);
        if causes.is_empty() {
            continue;
        }
        if best.as_ref().is_none_or(|(e, _)| evidence > *e) {
            best = Some((evidence, causes));
        }
    }
    let mut causes = best.map(|(_, c)| c).unwrap_or_default();
    causes.sort_by(|a, b| b.explanatory_power.total_cmp(&a.explanatory_power));
    causes
}

/// Layer-wise search in one direction; the causes and their summed evidence.
fn search(cube: &Cube, cfg: &AttributionConfig, p: &Prepared) -> (f64, Vec<Cause>) {
    let nd = cube.dims.len();
    let mut alive: Vec<u32> = (0..cube.len() as u32).collect();
    let mut causes: Vec<Cause> = Vec::new();
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
        if p.explains(cube, &rest_abnormal) < cfg.stop_remaining {
            break;
        }
        let background = if rest.w > 0.0 { rest.wa / rest.w } else { 0.5 };
        // (explanatory power, purity, evidence, element as (dimension, value id) pairs, its sums)
        type Best = (f64, f64, f64, Vec<(usize, u32)>, Agg);
        let mut best: Option<Best> = None;
        for layer in &layers {
            for dims in layer {
                grouper.for_each(cube, p, &alive, dims, |agg| {
                    if agg.w <= 0.0 || agg.wa <= 0.0 {
                        return;
                    }
                    let purity = agg.wa / agg.w;
                    if purity < cfg.evidence_min_purity.min(cfg.min_purity) {
                        return;
                    }
                    let ep = p.explains(cube, agg);
                    let evidence = evidence_of(agg, background);
                    let by_share = purity >= cfg.min_purity && ep >= cfg.min_explanatory_power;
                    let by_evidence = purity >= cfg.evidence_min_purity
                        && ep >= cfg.evidence_min_explanatory_power
                        && evidence >= cfg.min_evidence;
                    if !(by_share || by_evidence) {
                        return;
                    }
                    let leaf = agg.first as usize;
                    let better = match &best {
                        None => true,
                        Some((bep, bpur, _, bel, _)) => {
                            match (ep, purity).partial_cmp(&(*bep, *bpur)) {
                                Some(std::cmp::Ordering::Greater) => true,
                                Some(std::cmp::Ordering::Equal) => {
                                    dims.iter()
                                        .map(|&d| (d, cube.coord(leaf, d)))
                                        .collect::<Vec<_>>()
                                        < *bel
                                }
                                _ => false,
                            }
                        }
                    };
                    if better {
                        best = Some((
                            ep,
                            purity,
                            evidence,
                            dims.iter().map(|&d| (d, cube.coord(leaf, d))).collect(),
                            *agg,
                        ));
                    }
                });
            }
            if best.is_some() {
                // The most general layer with a qualifying element wins.
                break;
            }
        }
        let Some((_, _, evidence, element, agg)) = best else {
            break;
        };
        alive.retain(|&leaf| {
            !element
                .iter()
                .all(|&(d, v)| cube.coord(leaf as usize, d) == v)
        });
        total_evidence += evidence;
        causes.push(cause_of(cube, p, &element, &agg));
    }
    (total_evidence, causes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AttributionConfig {
        AttributionConfig::default()
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
