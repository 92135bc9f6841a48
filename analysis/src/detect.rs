//! Streaming anomaly detection with O(1) state per series, and the SLO burn-rate gate.
//!
//! [`ResidualDetector`]: the expected value is an exponentially weighted level; the residual
//! (value − level) is scaled by an exponentially weighted mean absolute deviation with a floor.
//! The floor matters for the series a node actually has: a flat series (error rate 0 for hours)
//! has zero deviation, and an integer series (retransmits per interval) moves in steps of one, so
//! without a floor any first blip would score infinity. Outliers are clipped before they update
//! the state, so one spike neither drags the level nor inflates the scale, and a sustained shift
//! is absorbed only after `adapt_after` anomalous points in a row (the new normal).
//!
//! [`BurnRateGate`]: multi-window, multi-burn-rate alerting as in the Google SRE workbook. An
//! anomaly on a KPI opens an incident only when the service is also burning its error budget
//! fast enough (both the long and the short window over the burn-rate factor), so a statistically
//! odd but harmless wiggle is not reported. Windows are rings of fixed-size buckets: constant
//! memory per series.

use serde::{Deserialize, Serialize};

/// Which direction of change is bad for a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Latency, errors, retransmits, CPU: only increases are anomalies.
    Up,
    /// Throughput that should not fall (e.g. successful requests).
    Down,
    /// Request rate: a surge and a collapse are both worth knowing.
    Both,
}

impl Direction {
    /// The bad direction of a metric from the fault-rule vocabulary.
    pub fn for_metric(name: &str) -> Direction {
        match name {
            "request_rate" => Direction::Both,
            _ => Direction::Up,
        }
    }

    /// The signed score seen from this direction: positive means "bad".
    pub fn badness(self, score: f64) -> f64 {
        match self {
            Direction::Up => score,
            Direction::Down => -score,
            Direction::Both => score.abs(),
        }
    }
}

/// Tuning of [`ResidualDetector`]; the defaults suit 10 s–1 min samples of golden metrics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorConfig {
    /// Weight of a new point in the level (EWMA smoothing factor).
    pub level_alpha: f64,
    /// Weight of a new absolute residual in the scale.
    pub scale_alpha: f64,
    /// Score (residual / scale) above which a point is anomalous.
    pub threshold: f64,
    /// Scale floor relative to the level: a change smaller than this share of the level is
    /// never anomalous on its own.
    pub relative_floor: f64,
    /// Absolute scale floor: the series' resolution (1 for counts, 0.001 for ratios…).
    pub absolute_floor: f64,
    /// Points before the detector gives verdicts.
    pub warmup: u32,
    /// Residuals are clipped to this many scales before they update the state.
    pub clip: f64,
    /// After this many anomalous points in a row the level follows the new value at full
    /// rate (a level shift becomes the new normal).
    pub adapt_after: u32,
    /// Robust mode, for coarse samples (minutes apart, see [`Self::for_samples`]): warm up
    /// from the median and MAD of the first points, and do not learn points over the
    /// threshold (either side) until they last `adapt_after` steps, since at that resolution
    /// such a point is mostly a fault, and faults some minutes apart would otherwise become
    /// the baseline. Off (the default, and the daemon's 1–10 s steps): a running-mean
    /// warm-up and clipped learning, so that bursts of noise widen the scale.
    pub robust: bool,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            level_alpha: 0.1,
            scale_alpha: 0.05,
            threshold: 4.0,
            relative_floor: 0.05,
            absolute_floor: 1e-9,
            warmup: 10,
            clip: 3.0,
            adapt_after: 30,
            robust: false,
        }
    }
}

/// The detector's verdict on one point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub value: f64,
    /// The expected value before this point was seen.
    pub expected: f64,
    /// Signed residual in scales (positive = above expectation).
    pub score: f64,
    /// `score` seen from the series' bad direction crossed the threshold.
    pub anomalous: bool,
    /// How many anomalous points in a row, this one included.
    pub run: u32,
}

/// Points the warm-up keeps to start from a median and a median absolute deviation.
const WARM_POINTS: usize = 16;
/// Mean absolute deviation / median absolute deviation of a normal distribution.
const MAD_TO_MEAN_ABS_DEV: f64 = 1.1829;

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// EWMA level + EWMA absolute deviation with a floor. About 180 bytes of state.
///
/// In robust mode ([`DetectorConfig::robust`], coarse samples), so that faults do not become
/// the baseline:
/// - warm-up: the level and scale are the median and the (rescaled) median absolute deviation
///   of the points seen so far, so an early spike moves neither;
/// - after it, a point more than `threshold` scales away (either side) is not learnt at all,
///   unless such points have lasted `adapt_after` steps in a row (a level shift: the level
///   then jumps to the new value); ordinary points are learnt clipped to `clip` scales.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ResidualDetector {
    level: f64,
    scale: f64,
    seen: u32,
    run: u32,
    /// Points in a row more than `threshold` scales away, either side.
    outliers: u32,
    warm: [f64; WARM_POINTS],
    direction: Direction,
}

impl ResidualDetector {
    pub fn new(direction: Direction) -> Self {
        Self {
            level: 0.0,
            scale: 0.0,
            seen: 0,
            run: 0,
            outliers: 0,
            warm: [0.0; WARM_POINTS],
            direction,
        }
    }

    /// The expected value of the next point.
    pub fn expected(&self) -> f64 {
        self.level
    }

    fn floor(&self, cfg: &DetectorConfig) -> f64 {
        (cfg.relative_floor * self.level.abs()).max(cfg.absolute_floor)
    }

    /// Feed one point. Non-finite values are ignored (they carry no information and would
    /// poison the state) and get a non-anomalous verdict.
    pub fn update(&mut self, value: f64, cfg: &DetectorConfig) -> Verdict {
        if !value.is_finite() {
            return Verdict {
                value,
                expected: self.level,
                score: 0.0,
                anomalous: false,
                run: self.run,
            };
        }
        if self.seen == 0 {
            self.level = value;
            self.warm[0] = value;
            self.seen = 1;
            return Verdict {
                value,
                expected: value,
                score: 0.0,
                anomalous: false,
                run: 0,
            };
        }
        let expected = self.level;
        let scale = self.scale.max(self.floor(cfg));
        let residual = value - expected;
        let score = residual / scale;
        let warm = self.seen >= cfg.warmup;
        let anomalous = warm && self.direction.badness(score) > cfg.threshold;
        self.run = if anomalous { self.run + 1 } else { 0 };

        let n = self.seen as usize;
        if !cfg.robust {
            // Clip before learning, unless the shift has lasted long enough to be the new
            // normal; a plain running mean during warm-up.
            let learn = if anomalous && self.run < cfg.adapt_after {
                residual.clamp(-cfg.clip * scale, cfg.clip * scale)
            } else {
                residual
            };
            let alpha = if self.seen < cfg.warmup {
                1.0 / (self.seen as f64 + 1.0)
            } else if self.run >= cfg.adapt_after {
                1.0
            } else {
                cfg.level_alpha
            };
            self.level += alpha * learn;
            let scale_alpha = if self.seen < cfg.warmup {
                1.0 / (self.seen as f64 + 1.0)
            } else {
                cfg.scale_alpha
            };
            self.scale += scale_alpha * (learn.abs() - self.scale);
        } else if !warm && n < WARM_POINTS {
            // Warm-up: median and MAD of every point so far.
            self.warm[n] = value;
            let mut xs = self.warm;
            let xs = &mut xs[..=n];
            let level = median(xs);
            let mut dev: Vec<f64> = xs.iter().map(|x| (x - level).abs()).collect();
            self.level = level;
            self.scale = median(&mut dev) * MAD_TO_MEAN_ABS_DEV;
        } else {
            let outlier = warm && score.abs() > cfg.threshold;
            self.outliers = if outlier { self.outliers + 1 } else { 0 };
            if self.outliers >= cfg.adapt_after.max(1) {
                // The shift has lasted: it is the new normal.
                self.level = value;
                self.scale += cfg.scale_alpha * (residual.abs() - self.scale);
            } else if !outlier {
                let learn = residual.clamp(-cfg.clip * scale, cfg.clip * scale);
                self.level += cfg.level_alpha * learn;
                self.scale += cfg.scale_alpha * (learn.abs() - self.scale);
            }
        }
        self.seen = self.seen.saturating_add(1);
        Verdict {
            value,
            expected,
            score,
            anomalous,
            run: self.run,
        }
    }
}

/// Runs a detector over a whole series (offline replay) and returns every verdict.
pub fn detect_series(values: &[f64], direction: Direction, cfg: &DetectorConfig) -> Vec<Verdict> {
    let mut detector = ResidualDetector::new(direction);
    values.iter().map(|v| detector.update(*v, cfg)).collect()
}

impl DetectorConfig {
    /// Defaults with the absolute floor set to the resolution of a metric from the fault-rule
    /// vocabulary: a fifth of a percentage point for error ratios, a millisecond for latencies,
    /// half an event per second for rates, ten millicores.
    pub fn for_metric(name: &str) -> Self {
        use sonde_sdk::fault_rule::metric::{OOM_KILLS, Unit, unit};
        let absolute_floor = match unit(name) {
            // With the threshold of 4 scales, 0.8 percentage points of errors over the usual
            // are needed: 8× a 99.9 % SLO's budget. Half a point needed 2 %, and hid a front
            // end going from 0.2 % to 1.8 % errors.
            Unit::Ratio => 0.002,
            Unit::Milliseconds => 1.0,
            Unit::PerSecond => 0.5,
            // Ten millicores: a container idling at 15 m that jumps to 200 m on a 0.2-core
            // limit is saturated, and a 50 m floor would hide it. Limits are judged apart
            // (demarcation: usage near the limit).
            Unit::Cores => 0.01,
            Unit::Other if name == OOM_KILLS => 0.5,
            Unit::Other => DetectorConfig::default().absolute_floor,
        };
        Self {
            absolute_floor,
            ..Self::default()
        }
    }
}

/// Samples this many seconds apart or more are coarse: a point over the threshold is mostly
/// minutes of a fault rather than a second of noise.
pub const COARSE_STEP_SECS: i64 = 120;

impl DetectorConfig {
    /// [`for_metric`](Self::for_metric) for samples `step_secs` apart (`None`: unknown, as
    /// fine): coarse samples get the robust mode.
    pub fn for_samples(name: &str, step_secs: Option<i64>) -> Self {
        Self {
            robust: step_secs.is_some_and(|s| s >= COARSE_STEP_SECS),
            ..Self::for_metric(name)
        }
    }
}

/// One alerting window pair of the multi-window, multi-burn-rate scheme.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BurnWindow {
    /// Long window, in buckets.
    pub long: usize,
    /// Short window, in buckets (must be ≤ long); stops alerts on budget already spent.
    pub short: usize,
    /// Burn-rate factor: 1.0 spends the budget exactly over the SLO period.
    pub factor: f64,
}

/// SLO of one service KPI and the windows that gate incidents on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SloConfig {
    /// Target share of good events, e.g. 0.999.
    pub objective: f64,
    pub windows: Vec<BurnWindow>,
}

impl Default for SloConfig {
    /// With 1-minute buckets: 14.4× over 1 h and 5 min (page), 6× over 6 h and 30 min.
    fn default() -> Self {
        Self {
            objective: 0.999,
            windows: vec![
                BurnWindow {
                    long: 60,
                    short: 5,
                    factor: 14.4,
                },
                BurnWindow {
                    long: 360,
                    short: 30,
                    factor: 6.0,
                },
            ],
        }
    }
}

/// Counts good and bad events in fixed buckets and says whether the error budget burns fast.
#[derive(Debug, Clone)]
pub struct BurnRateGate {
    slo: SloConfig,
    /// Ring of (bad, total) per bucket, as long as the longest window.
    ring: Vec<(f64, f64)>,
    head: usize,
    filled: usize,
}

/// The gate's state after a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BurnStatus {
    /// Highest burn rate over the long windows (1.0 = on budget).
    pub burn_rate: f64,
    /// Some window pair is over its factor in both its windows.
    pub firing: bool,
}

impl BurnRateGate {
    pub fn new(slo: SloConfig) -> Self {
        let len = slo
            .windows
            .iter()
            .map(|w| w.long.max(w.short))
            .max()
            .unwrap_or(1)
            .max(1);
        Self {
            slo,
            ring: vec![(0.0, 0.0); len],
            head: 0,
            filled: 0,
        }
    }

    fn sum(&self, buckets: usize) -> (f64, f64) {
        let n = buckets.min(self.filled);
        let len = self.ring.len();
        (0..n).fold((0.0, 0.0), |(bad, total), i| {
            let (b, t) = self.ring[(self.head + len - 1 - i) % len];
            (bad + b, total + t)
        })
    }

    fn rate(&self, buckets: usize) -> f64 {
        let (bad, total) = self.sum(buckets);
        let budget = (1.0 - self.slo.objective).max(f64::EPSILON);
        if total <= 0.0 {
            0.0
        } else {
            bad / total / budget
        }
    }

    /// Close one bucket with its bad and total event counts.
    pub fn push(&mut self, bad: f64, total: f64) -> BurnStatus {
        let len = self.ring.len();
        self.ring[self.head] = (bad.max(0.0), total.max(0.0));
        self.head = (self.head + 1) % len;
        self.filled = (self.filled + 1).min(len);
        let mut status = BurnStatus {
            burn_rate: 0.0,
            firing: false,
        };
        for w in &self.slo.windows {
            let long = self.rate(w.long);
            let short = self.rate(w.short);
            status.burn_rate = status.burn_rate.max(long);
            status.firing |= long > w.factor && short > w.factor;
        }
        status
    }
}

/// When an anomaly on an entry KPI becomes an incident.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IncidentPolicy {
    /// Anomalous points in a row before an incident opens (debounce).
    pub open_after: u32,
    /// Normal points in a row before it closes.
    pub close_after: u32,
    /// Require the SLO burn-rate gate to fire too (when the series has an SLO).
    pub require_burn: bool,
}

impl Default for IncidentPolicy {
    fn default() -> Self {
        Self {
            open_after: 2,
            close_after: 5,
            require_burn: true,
        }
    }
}

/// Incident lifecycle events for one series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transition {
    Opened,
    Closed,
}

/// Debounces a series' verdicts into open/close transitions (O(1) state).
#[derive(Debug, Clone, Default)]
pub struct IncidentState {
    open: bool,
    normal_run: u32,
}

impl IncidentState {
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// `burn`: the gate's verdict for this point, `None` when the series has no SLO.
    pub fn step(
        &mut self,
        verdict: &Verdict,
        burn: Option<bool>,
        policy: &IncidentPolicy,
    ) -> Option<Transition> {
        if self.open {
            self.normal_run = if verdict.anomalous {
                0
            } else {
                self.normal_run + 1
            };
            if self.normal_run >= policy.close_after {
                self.open = false;
                return Some(Transition::Closed);
            }
            return None;
        }
        let gate = !policy.require_burn || burn.unwrap_or(true);
        if verdict.anomalous && verdict.run >= policy.open_after && gate {
            self.open = true;
            self.normal_run = 0;
            return Some(Transition::Opened);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(values: &[f64], dir: Direction) -> Vec<Verdict> {
        detect_series(values, dir, &DetectorConfig::default())
    }

    #[test]
    fn flat_series_needs_a_real_change() {
        // Error rate flat at zero, then a blip of 0.1%, then a real jump to 20%.
        let cfg = DetectorConfig::for_metric("error_rate");
        let mut v = vec![0.0; 50];
        v.push(0.001);
        v.extend([0.0; 5]);
        v.push(0.2);
        let out = detect_series(&v, Direction::Up, &cfg);
        assert!(
            !out[50].anomalous,
            "a 0.1% blip on a flat series is noise: {:?}",
            out[50]
        );
        assert!(
            out[56].anomalous,
            "a jump from 0 to 20% is anomalous: {:?}",
            out[56]
        );
    }

    #[test]
    fn integer_series_floor_stops_unit_steps() {
        // Retransmits per interval alternating 10/11 (scale ~0.5) then 12: not anomalous
        // thanks to the relative floor (5% of 10.5 = 0.525 → score ~2.9).
        let mut v: Vec<f64> = (0..60).map(|i| 10.0 + (i % 2) as f64).collect();
        v.push(12.0);
        v.push(40.0);
        let out = run(&v, Direction::Up);
        assert!(!out[60].anomalous, "{:?}", out[60]);
        assert!(out[61].anomalous, "{:?}", out[61]);
    }

    #[test]
    fn one_outlier_does_not_move_the_baseline() {
        let mut v: Vec<f64> = (0..100).map(|i| 100.0 + ((i * 7) % 5) as f64).collect();
        v.push(10_000.0);
        v.extend((0..20).map(|i| 100.0 + ((i * 7) % 5) as f64));
        let out = run(&v, Direction::Up);
        assert!(out[100].anomalous);
        assert!(
            out[101..].iter().all(|x| !x.anomalous),
            "clipping keeps the level and scale"
        );
        assert!(
            (out[110].expected - 102.0).abs() < 5.0,
            "level stays near 102: {}",
            out[110].expected
        );
    }

    #[test]
    fn an_early_spike_does_not_become_the_baseline() {
        // A spike during warm-up: a running mean would take it in (level ~590, a huge
        // scale) and miss the real rise to 130 after it.
        let mut v = vec![
            100.0, 100.5, 5000.0, 99.5, 100.0, 100.2, 99.8, 100.1, 99.9, 100.0,
        ];
        v.extend([100.1, 99.9, 100.0, 100.2, 99.8]);
        v.push(130.0);
        let robust = DetectorConfig {
            robust: true,
            ..Default::default()
        };
        let out = detect_series(&v, Direction::Up, &robust);
        assert!(out[15].anomalous, "{:?}", out[15]);
        assert!((out[15].expected - 100.0).abs() < 1.0, "{:?}", out[15]);
    }

    #[test]
    fn repeated_faults_do_not_become_the_baseline() {
        // Normal noise, then a fault of five points every six: each fault must still score
        // over the threshold; learning (even clipped) from the faults raises the level and
        // the scale until they no longer do.
        let noise = |i: usize| 100.0 + ((i * 7) % 5) as f64 - 2.0;
        let mut v: Vec<f64> = (0..100).map(noise).collect();
        for cycle in 0..12 {
            v.extend([125.0; 5]);
            v.push(noise(cycle));
        }
        let coarse = DetectorConfig {
            robust: true,
            ..Default::default()
        };
        let out = detect_series(&v, Direction::Up, &coarse);
        let last = v.len() - 6;
        assert!(
            out[last..last + 5].iter().all(|x| x.anomalous),
            "{:?}",
            &out[last..last + 5]
        );
        assert!((out[last].expected - 100.0).abs() < 2.0, "{:?}", out[last]);
    }

    #[test]
    fn fine_samples_take_noise_bursts_into_the_scale() {
        // 1-second samples with bursts of two spikes every 5 s (a busy machine): learnt, the
        // bursts widen the scale until they no longer alarm; coarse samples would not learn.
        let mut v: Vec<f64> = Vec::new();
        for i in 0..400 {
            v.push(if i % 5 >= 3 {
                40.0
            } else {
                10.0 + (i % 3) as f64
            });
        }
        let fine = detect_series(
            &v,
            Direction::Up,
            &DetectorConfig::for_samples("latency_mean_ms", Some(1)),
        );
        let coarse = detect_series(
            &v,
            Direction::Up,
            &DetectorConfig::for_samples("latency_mean_ms", Some(300)),
        );
        let late = |out: &[Verdict]| out[300..].iter().filter(|x| x.anomalous).count();
        assert!(
            late(&fine) < late(&coarse),
            "{} vs {}",
            late(&fine),
            late(&coarse)
        );
    }

    #[test]
    fn a_small_container_saturating_is_anomalous() {
        // 15 millicores → 198 millicores (a 0.2-core limit): the cores floor must not hide it.
        let cfg = DetectorConfig::for_metric("cpu_usage_cores");
        let mut v: Vec<f64> = (0..40).map(|i| 0.015 + 0.001 * (i % 3) as f64).collect();
        v.extend([0.198, 0.198]);
        let out = detect_series(&v, Direction::Up, &cfg);
        assert!(out[40].anomalous && out[41].anomalous, "{:?}", &out[40..]);
    }

    #[test]
    fn errors_far_over_an_slo_budget_are_anomalous() {
        // A front end at 0-0.4 % errors goes to 1.8 % and 2.1 %: 20× a 99.9 % budget.
        let cfg = DetectorConfig::for_metric("error_rate");
        let mut v: Vec<f64> = (0..100).map(|i| [0.0, 0.002, 0.0, 0.004][i % 4]).collect();
        v.extend([0.018, 0.021]);
        let out = detect_series(&v, Direction::Up, &cfg);
        assert!(
            out[100].anomalous && out[101].anomalous,
            "{:?}",
            &out[100..]
        );
    }

    #[test]
    fn direction_decides_what_is_bad() {
        let mut v = vec![100.0; 30];
        v.push(10.0);
        assert!(!run(&v, Direction::Up)[30].anomalous);
        assert!(run(&v, Direction::Down)[30].anomalous);
        assert!(run(&v, Direction::Both)[30].anomalous);
    }

    #[test]
    fn level_shift_becomes_normal_after_adapt_after() {
        let cfg = DetectorConfig {
            adapt_after: 5,
            ..Default::default()
        };
        let mut v = vec![50.0; 30];
        v.extend(vec![80.0; 20]);
        let out = detect_series(&v, Direction::Up, &cfg);
        assert!(out[30].anomalous);
        assert!(
            !out[49].anomalous,
            "after the shift is absorbed: {:?}",
            out[49]
        );
    }

    #[test]
    fn non_finite_values_are_ignored() {
        let mut d = ResidualDetector::new(Direction::Up);
        let cfg = DetectorConfig::default();
        for _ in 0..20 {
            d.update(5.0, &cfg);
        }
        assert!(!d.update(f64::NAN, &cfg).anomalous);
        assert!(!d.update(f64::INFINITY, &cfg).anomalous);
        assert_eq!(d.expected(), 5.0);
    }

    #[test]
    fn burn_gate_needs_both_windows() {
        let mut gate = BurnRateGate::new(SloConfig {
            objective: 0.99,
            windows: vec![BurnWindow {
                long: 10,
                short: 2,
                factor: 5.0,
            }],
        });
        for _ in 0..10 {
            assert!(!gate.push(0.0, 100.0).firing);
        }
        // 10% errors = 10× budget in the short window, 2× over the long one: not yet.
        assert!(!gate.push(10.0, 100.0).firing);
        let mut fired = false;
        for _ in 0..5 {
            fired |= gate.push(10.0, 100.0).firing;
        }
        assert!(fired);
        // Recovery: the short window clears first and stops the alert.
        gate.push(0.0, 100.0);
        assert!(!gate.push(0.0, 100.0).firing);
    }

    #[test]
    fn incident_opens_after_debounce_and_closes() {
        let policy = IncidentPolicy {
            open_after: 2,
            close_after: 3,
            require_burn: true,
        };
        let mut st = IncidentState::default();
        let anomalous = |run| Verdict {
            value: 1.0,
            expected: 0.0,
            score: 9.0,
            anomalous: true,
            run,
        };
        let normal = Verdict {
            value: 0.0,
            expected: 0.0,
            score: 0.0,
            anomalous: false,
            run: 0,
        };
        assert_eq!(st.step(&anomalous(1), Some(true), &policy), None);
        assert_eq!(
            st.step(&anomalous(2), Some(false), &policy),
            None,
            "the gate holds it"
        );
        assert_eq!(
            st.step(&anomalous(3), Some(true), &policy),
            Some(Transition::Opened)
        );
        assert_eq!(st.step(&normal, None, &policy), None);
        assert_eq!(st.step(&normal, None, &policy), None);
        assert_eq!(st.step(&normal, None, &policy), Some(Transition::Closed));
    }
}
