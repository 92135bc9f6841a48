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
//! 1. **Leaf deviation** `d = ln(actual / forecast)` (on the ratio for derived KPIs), signed
//!    towards the direction of the total change. Log ratios are symmetric in up and down and
//!    scale-free, so small and large leaves compare.
//! 2. **Noise cutoff from the data** (as RiskLoc): forecast noise is symmetric, so the leaves
//!    that moved *against* the total change show how far noise alone moves a leaf. A high
//!    quantile of their deviation is the cutoff; leaves beyond it in the change's direction are
//!    abnormal. No noise level has to be configured.
//! 3. **Layer-wise search** over combinations of 1, 2, … dimensions. An element qualifies when
//!    its leaves are mostly abnormal (*purity*, weighted by each leaf's expected size so tiny
//!    noisy leaves count little) and it explains a meaningful share of the change
//!    (*explanatory power*, computed counterfactually: how much of the KPI change goes away if
//!    this element had its expected values — exact for ratio KPIs too). The most general
//!    qualifying element wins (fewest dimensions, then most explained, then purest); its leaves
//!    are removed and the search restarts, which finds several root causes of different sizes
//!    and magnitudes (the Squeeze insight) without clustering.
//! 4. **Stop** when what is left explains too little, or nothing qualifies.
//!
//! Deterministic: candidates are compared on (layer, score, canonical key), never on hash
//! order.

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
    pub fn add_ratio(&mut self, values: &[&str], num_actual: f64, num_forecast: f64, den_actual: f64, den_forecast: f64) {
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
    fn coord(&self, leaf: usize, d: usize) -> u32 {
        self.coords[leaf * self.dims.len() + d]
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

/// Tuning; the defaults are what BENCHMARKS.md reports.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttributionConfig {
    /// Largest number of dimensions in one element.
    pub max_dims: usize,
    /// Most causes returned.
    pub max_causes: usize,
    /// Share of an element's (expected-size weighted) leaves that must be abnormal.
    pub min_purity: f64,
    /// Smallest explanatory power of an accepted element.
    pub min_explanatory_power: f64,
    /// Quantile of the against-the-change deviations used as the noise cutoff.
    pub cutoff_quantile: f64,
    /// Smallest cutoff (log ratio): changes under ~5% are never anomalous on their own.
    pub min_cutoff: f64,
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
            cutoff_quantile: 0.98,
            min_cutoff: 0.05,
            stop_remaining: 0.05,
        }
    }
}

/// One explaining combination, with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cause {
    /// `(dimension, value)` in the cube's dimension order.
    pub elements: Vec<(String, String)>,
    /// Share of the anomalous KPI change (what the leaves beyond the noise cutoff changed) that
    /// goes away if this combination had its expected values.
    pub explanatory_power: f64,
    /// Relative change of the combination's KPI: actual / forecast − 1.
    pub deviation: f64,
    /// The combination's KPI (a ratio for ratio KPIs).
    pub actual: f64,
    pub forecast: f64,
    pub leaves: usize,
    /// Weighted share of the combination's leaves that are abnormal (purity).
    pub score: f64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Agg {
    num_a: f64,
    num_f: f64,
    den_a: f64,
    den_f: f64,
    weight: f64,
    abnormal_weight: f64,
    leaves: usize,
    /// The first leaf added: names the group's element.
    first: usize,
}

impl Agg {
    fn add(&mut self, cube: &Cube, leaf: usize, weight: f64, abnormal: bool) {
        if self.leaves == 0 {
            self.first = leaf;
        }
        self.num_a += cube.actual[leaf];
        self.num_f += cube.forecast[leaf];
        self.den_a += cube.den_actual[leaf];
        self.den_f += cube.den_forecast[leaf];
        self.weight += weight;
        if abnormal {
            self.abnormal_weight += weight;
        }
        self.leaves += 1;
    }
}

/// Per-leaf deviation (log ratio) and weight (expected size); `None` for a leaf that carries no
/// information (all zeros, or a ratio with no denominator on either side).
fn leaf_signal(cube: &Cube, leaf: usize) -> Option<(f64, f64)> {
    let (a, f) = (cube.actual[leaf], cube.forecast[leaf]);
    match cube.kind {
        KpiKind::Additive => {
            if a == 0.0 && f == 0.0 {
                return None;
            }
            // A zero on one side is a full change: ±ln(large) rather than infinity.
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

fn quantile(mut xs: Vec<f64>, q: f64) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let i = ((xs.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    Some(xs[i])
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

/// The combinations that explain the change of `cube`'s KPI, best first.
pub fn attribute(cube: &Cube, cfg: &AttributionConfig) -> Vec<Cause> {
    let n = cube.len();
    let nd = cube.dims.len();
    if n == 0 || nd == 0 {
        return Vec::new();
    }
    let mut total = Agg::default();
    for leaf in 0..n {
        total.add(cube, leaf, 0.0, false);
    }
    let kpi_actual = cube.kpi(total.num_a, total.den_a);
    let kpi_forecast = cube.kpi(total.num_f, total.den_f);
    if !(kpi_actual - kpi_forecast).is_finite() {
        return Vec::new();
    }
    // The KPI if the leaves of `agg` had their forecast values.
    let reverted = |agg: &Agg| cube.kpi(total.num_a - agg.num_a + agg.num_f, total.den_a - agg.den_a + agg.den_f);

    // Leaf deviations; then, for each direction, the noise cutoff from the leaves that moved
    // against it and the leaves beyond the cutoff. The anomaly's direction is the one whose
    // abnormal leaves move the KPI most: not the sign of the total change, which the summed
    // noise of thousands of leaves can outweigh when the root cause is small.
    let signals: Vec<Option<(f64, f64)>> = (0..n).map(|l| leaf_signal(cube, l)).collect();
    let weight: Vec<f64> = signals.iter().map(|s| s.map_or(0.0, |(_, w)| w)).collect();
    let classify = |sign: f64| -> (Vec<bool>, f64) {
        let against: Vec<f64> = signals.iter().flatten().map(|(d, _)| -d * sign).filter(|d| *d > 0.0).collect();
        let cutoff = quantile(against, cfg.cutoff_quantile).unwrap_or(0.0).max(cfg.min_cutoff);
        let abnormal: Vec<bool> = signals.iter().map(|s| s.is_some_and(|(d, _)| d * sign > cutoff)).collect();
        let mut agg = Agg::default();
        for leaf in (0..n).filter(|&l| abnormal[l]) {
            agg.add(cube, leaf, 0.0, true);
        }
        let moved = (kpi_actual - reverted(&agg)) * sign;
        (abnormal, moved)
    };
    let (up, up_moved) = classify(1.0);
    let (down, down_moved) = classify(-1.0);
    let (abnormal, change) = if up_moved >= down_moved { (up, up_moved) } else { (down, -down_moved) };
    if change == 0.0 || !change.is_finite() || !abnormal.iter().any(|a| *a) {
        return Vec::new();
    }

    // Explanatory power of an element: the share of the anomalous change (what reverting every
    // abnormal leaf would undo) that reverting this element's leaves undoes. Exact for ratio
    // KPIs; for additive ones, the element's share of the abnormal leaves' summed change.
    let explains = |agg: &Agg| -> f64 { (kpi_actual - reverted(agg)) / change };

    let mut removed = vec![false; n];
    let mut causes: Vec<Cause> = Vec::new();
    let layers: Vec<Vec<Vec<usize>>> = (1..=cfg.max_dims.min(nd)).map(|k| subsets(nd, k)).collect();
    while causes.len() < cfg.max_causes {
        // What the remaining abnormal leaves could still explain.
        let mut rest = Agg::default();
        for leaf in 0..n {
            if !removed[leaf] && abnormal[leaf] {
                rest.add(cube, leaf, weight[leaf], true);
            }
        }
        if rest.leaves == 0 || explains(&rest) < cfg.stop_remaining {
            break;
        }
        // (explanatory power, purity, element as (dimension, value id) pairs, its sums)
        type Best = (f64, f64, Vec<(usize, u32)>, Agg);
        let mut best: Option<Best> = None;
        for subsets in &layers {
            for dims in subsets {
                // Group the remaining leaves by their values on `dims`; only groups holding an
                // abnormal leaf can qualify, but every leaf counts towards purity.
                let mut groups: HashMap<u64, Agg> = HashMap::new();
                let key_of = |leaf: usize| -> u64 {
                    dims.iter().fold(0u64, |k, &d| k.wrapping_mul(cube.values[d].len() as u64 + 1).wrapping_add(cube.coord(leaf, d) as u64))
                };
                let mut hot = std::collections::HashSet::new();
                for leaf in 0..n {
                    if !removed[leaf] && abnormal[leaf] {
                        hot.insert(key_of(leaf));
                    }
                }
                for leaf in 0..n {
                    if removed[leaf] {
                        continue;
                    }
                    let key = key_of(leaf);
                    if hot.contains(&key) {
                        groups.entry(key).or_default().add(cube, leaf, weight[leaf], abnormal[leaf]);
                    }
                }
                for (_, agg) in groups {
                    if agg.weight <= 0.0 {
                        continue;
                    }
                    let purity = agg.abnormal_weight / agg.weight;
                    let ep = explains(&agg);
                    if purity < cfg.min_purity || ep < cfg.min_explanatory_power {
                        continue;
                    }
                    let leaf = agg.first;
                    let element: Vec<(usize, u32)> = dims.iter().map(|&d| (d, cube.coord(leaf, d))).collect();
                    let better = match &best {
                        None => true,
                        Some((bep, bpur, bel, _)) => {
                            (ep, purity).partial_cmp(&(*bep, *bpur)) == Some(std::cmp::Ordering::Greater)
                                || ((ep, purity) == (*bep, *bpur) && element < *bel)
                        }
                    };
                    if better {
                        best = Some((ep, purity, element, agg));
                    }
                }
            }
            if best.is_some() {
                // The most general layer with a qualifying element wins.
                break;
            }
        }
        let Some((ep, purity, element, agg)) = best else { break };
        for (leaf, r) in removed.iter_mut().enumerate() {
            if !*r && element.iter().all(|&(d, v)| cube.coord(leaf, d) == v) {
                *r = true;
            }
        }
        let actual = cube.kpi(agg.num_a, agg.den_a);
        let forecast = cube.kpi(agg.num_f, agg.den_f);
        causes.push(Cause {
            elements: element.iter().map(|&(d, v)| (cube.dims[d].clone(), cube.values[d][v as usize].clone())).collect(),
            explanatory_power: ep,
            deviation: if forecast != 0.0 { actual / forecast - 1.0 } else if actual != 0.0 { f64::INFINITY.copysign(actual) } else { 0.0 },
            actual,
            forecast,
            leaves: agg.leaves,
            score: purity,
        });
    }
    causes
}
