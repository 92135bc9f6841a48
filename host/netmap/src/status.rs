//! ok / warning / critical for edges and nodes, from thresholds on the recent window.
use serde::{Deserialize, Serialize};

use super::model::Counters;

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Ok,
    Warning,
    Critical,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Critical => "critical",
        }
    }
}

/// Thresholds (`[network.thresholds]`). Ratios are fractions (0.01 = 1 %). A signal is only
/// judged when it has enough volume in the window, so one lost SYN among three does not turn
/// an edge red.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// Retransmitted segments over all segments of the edge.
    pub retransmit_warning: f64,
    pub retransmit_critical: f64,
    /// Segments an edge needs in the window before its retransmit ratio is judged.
    pub min_segments: u64,
    /// Failed connects over attempted ones (any failure is at least a warning).
    pub connect_failure_critical: f64,
    /// Dropped packets over segments (any drop is at least a warning).
    pub drop_critical: f64,
    /// Mean smoothed RTT.
    pub rtt_warning_ms: f64,
    pub rtt_critical_ms: f64,
    /// L7 errors over requests.
    pub error_warning: f64,
    pub error_critical: f64,
    /// Requests an edge needs in the window before its error ratio is judged.
    pub min_requests: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            retransmit_warning: 0.01,
            retransmit_critical: 0.05,
            min_segments: 20,
            connect_failure_critical: 0.5,
            drop_critical: 0.05,
            rtt_warning_ms: 50.0,
            rtt_critical_ms: 250.0,
            error_warning: 0.01,
            error_critical: 0.1,
            min_requests: 5,
        }
    }
}

/// A status and what caused it, worst first, plus a badness score for sorting
/// (0 ok; ≥1 warning; ≥2 critical; within a level, larger is worse).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub status: Status,
    pub reasons: Vec<String>,
    pub badness: f64,
}

impl Verdict {
    pub(crate) fn raise(&mut self, status: Status, severity: f64, reason: String) {
        let level = match status {
            Status::Ok => 0.0,
            Status::Warning => 1.0,
            Status::Critical => 2.0,
        };
        // Within a level, the severity (≥ 1 at the threshold) orders edges; capped below the
        // next level.
        let score = level + (1.0 - 1.0 / severity.max(1.0)).min(0.99);
        if score > self.badness {
            self.badness = score;
        }
        if status > self.status {
            self.status = status;
        }
        self.reasons.push(reason);
    }
}

/// Judges one edge's window.
pub fn judge(w: &Counters, t: &Thresholds) -> Verdict {
    let mut v = Verdict::default();
    let segments = w.segments();
    if segments >= t.min_segments && w.retransmits > 0 {
        let r = w.retransmits as f64 / segments as f64;
        let msg = format!("retransmits {:.1}% of segments", r * 100.0);
        if r >= t.retransmit_critical {
            v.raise(Status::Critical, r / t.retransmit_critical, msg);
        } else if r >= t.retransmit_warning {
            v.raise(Status::Warning, r / t.retransmit_warning, msg);
        }
    }
    let failures = w.connect_failures();
    if failures > 0 {
        let r = failures as f64 / (failures + w.connects) as f64;
        let msg = format!(
            "{failures} failed connects ({} refused, {} timed out, {} aborted)",
            w.connect_refused, w.connect_timeouts, w.connect_aborted
        );
        if r >= t.connect_failure_critical {
            v.raise(Status::Critical, r / t.connect_failure_critical, msg);
        } else {
            v.raise(Status::Warning, 1.0 + r, msg);
        }
    }
    if w.drops > 0 {
        let r = w.drops as f64 / segments.max(1) as f64;
        let msg = format!("{} packets dropped", w.drops);
        if r >= t.drop_critical {
            v.raise(Status::Critical, r / t.drop_critical, msg);
        } else {
            v.raise(Status::Warning, 1.0 + r, msg);
        }
    }
    if let Some(rtt) = w.rtt_mean_s() {
        let ms = rtt * 1e3;
        let msg = format!("mean RTT {ms:.1} ms");
        if ms >= t.rtt_critical_ms {
            v.raise(Status::Critical, ms / t.rtt_critical_ms, msg);
        } else if ms >= t.rtt_warning_ms {
            v.raise(Status::Warning, ms / t.rtt_warning_ms, msg);
        }
    }
    let (requests, errors, _) = w.requests();
    if requests >= t.min_requests && errors > 0 {
        let r = errors as f64 / requests as f64;
        let msg = format!("{:.1}% of requests failed", r * 100.0);
        if r >= t.error_critical {
            v.raise(Status::Critical, r / t.error_critical, msg);
        } else if r >= t.error_warning {
            v.raise(Status::Warning, r / t.error_warning, msg);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_edge_is_ok() {
        let w = Counters {
            connects: 10,
            segments_c2s: 500,
            segments_s2c: 500,
            rtt_us_sum: 100 * 10,
            rtt_samples: 10,
            server_requests: 100,
            ..Default::default()
        };
        let v = judge(&w, &Thresholds::default());
        assert_eq!(v.status, Status::Ok, "{v:?}");
        assert_eq!(v.badness, 0.0);
    }

    #[test]
    fn retransmits_rtt_failures_and_errors_raise_status() {
        let t = Thresholds::default();
        let lossy = Counters {
            segments_c2s: 100,
            retransmits: 10,
            ..Default::default()
        };
        assert_eq!(judge(&lossy, &t).status, Status::Critical);
        let slight = Counters {
            segments_c2s: 100,
            retransmits: 2,
            ..Default::default()
        };
        assert_eq!(judge(&slight, &t).status, Status::Warning);
        let too_few = Counters {
            segments_c2s: 3,
            retransmits: 1,
            ..Default::default()
        };
        assert_eq!(judge(&too_few, &t).status, Status::Ok, "below min_segments");
        let slow = Counters {
            rtt_us_sum: 300_000,
            rtt_samples: 1,
            ..Default::default()
        };
        assert_eq!(judge(&slow, &t).status, Status::Critical);
        let refused = Counters {
            connect_refused: 3,
            ..Default::default()
        };
        let v = judge(&refused, &t);
        assert_eq!(v.status, Status::Critical);
        assert!(v.reasons[0].contains("3 refused"), "{v:?}");
        let one_in_ten = Counters {
            connects: 9,
            connect_timeouts: 1,
            ..Default::default()
        };
        assert_eq!(judge(&one_in_ten, &t).status, Status::Warning);
        let errors = Counters {
            server_requests: 100,
            server_errors: 20,
            ..Default::default()
        };
        assert_eq!(judge(&errors, &t).status, Status::Critical);
    }

    #[test]
    fn badness_orders_within_and_across_levels() {
        let t = Thresholds::default();
        let warn = judge(
            &Counters {
                segments_c2s: 100,
                retransmits: 2,
                ..Default::default()
            },
            &t,
        );
        let worse_warn = judge(
            &Counters {
                segments_c2s: 100,
                retransmits: 4,
                ..Default::default()
            },
            &t,
        );
        let crit = judge(
            &Counters {
                segments_c2s: 100,
                retransmits: 6,
                ..Default::default()
            },
            &t,
        );
        assert!(warn.badness >= 1.0 && warn.badness < worse_warn.badness);
        assert!(worse_warn.badness < 2.0 && crit.badness >= 2.0);
    }
}
