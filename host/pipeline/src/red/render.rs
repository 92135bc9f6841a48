//! The RED metrics in the exposition (Prometheus or OpenMetrics) and as JSON for
//! `/api/series`.

use serde::{Deserialize, Serialize};
use sonde_metrics::{Exposition, LabelText};

use super::schema::Family;
use super::series::SeriesMap;
use super::{BUCKETS, Labels, Red, Series};

impl Red {
    /// Every RED metric, in the exposition's format (exemplars on the latency histograms in
    /// OpenMetrics).
    pub fn render(&self, ex: &mut Exposition) {
        // One label buffer for every series: no allocation per series once it has grown.
        let mut base = LabelText::new();
        for family in Family::ALL {
            let series = self.families.get(&family);
            let overflow = self.overflow.get(&family);
            if series.is_none_or(|m| m.len == 0) && overflow.is_none() {
                continue;
            }
            let mut h = ex.histogram(family.metric(), family.help());
            let mut sorted: Vec<(&Labels, &Series)> =
                series.map(|s| s.iter().collect()).unwrap_or_default();
            sorted.sort_by(|a, b| a.0.cmp(b.0));
            let overflow_labels: Labels = vec![("otel_metric_overflow", "true".to_string())];
            if let Some(s) = overflow {
                sorted.push((&overflow_labels, s));
            }
            for (labels, s) in sorted {
                label_text(&mut base, labels);
                let exemplar = |i: usize| {
                    let e = s.exemplars.as_ref()?[i].as_ref()?;
                    Some(sonde_metrics::Exemplar {
                        trace_id: &e.trace_id,
                        span_id: &e.span_id,
                        value: e.seconds,
                        timestamp: e.unix_s,
                    })
                };
                let mut lines = h.series(&base);
                let mut cumulative = 0u64;
                for (i, le) in BUCKETS.iter().enumerate() {
                    cumulative += s.buckets[i];
                    lines.bucket(*le, cumulative, exemplar(i).as_ref());
                }
                lines.inf(s.count, exemplar(BUCKETS.len()).as_ref());
                lines.sum(s.sum_ns as f64 / 1e9);
                lines.count(s.count);
            }
        }
        if self.unanswered.len > 0 || self.unanswered_overflow > 0 {
            let mut c = ex.counter(
                "sonde_requests_unanswered_total",
                "Requests without a response: flushed when the connection closed, or lost to a capture gap.",
            );
            let mut sorted: Vec<_> = self.unanswered.iter().collect();
            sorted.sort();
            for (labels, v) in sorted {
                label_text(&mut base, labels);
                c.sample(&base, *v);
            }
            if self.unanswered_overflow > 0 {
                c.sample([("otel_metric_overflow", "true")], self.unanswered_overflow);
            }
        }
        ex.counter(
            "sonde_db_slow_queries_total",
            "Database operations slower than slow_query_ms (the latest are at /api/slow-queries).",
        )
        .sample((), self.slow_total);
        ex.counter(
            "sonde_red_overflow_records_total",
            "Records counted in an overflow series (a metric reached max_series).",
        )
        .sample((), self.overflow_records);
        ex.counter(
            "sonde_red_service_overflow_records_total",
            "Records counted in an overflow series because their service held max_series_per_service series of the metric.",
        )
        .sample((), self.service_overflow_records);
        ex.counter(
            "sonde_red_invalid_records_total",
            "Records whose response preceded their request: not observed.",
        )
        .sample((), self.invalid_records);
        ex.gauge("sonde_red_series", "Series held by the RED metrics.")
            .sample((), self.series_count());
    }

    /// Every series for `sonde top` (`/api/series`).
    pub fn export(&self) -> Vec<SeriesExport> {
        let mut out = Vec::new();
        for family in Family::ALL {
            for (labels, s) in self
                .families
                .get(&family)
                .into_iter()
                .flat_map(SeriesMap::iter)
            {
                out.push(SeriesExport {
                    metric: family.metric().to_string(),
                    labels: labels
                        .iter()
                        .filter(|(_, v)| !v.is_empty())
                        .map(|(k, v)| (k.to_string(), v.clone()))
                        .collect(),
                    count: s.count,
                    errors: s.errors,
                    sum_seconds: s.sum_ns as f64 / 1e9,
                    sketch: s
                        .sketch
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| **c > 0)
                        .map(|(i, c)| (i as u16, *c))
                        .collect(),
                });
            }
        }
        out
    }
}

/// One series as `/api/series` serves it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SeriesExport {
    pub metric: String,
    pub labels: Vec<(String, String)>,
    pub count: u64,
    pub errors: u64,
    pub sum_seconds: f64,
    /// Non-empty sketch buckets: (index, count).
    pub sketch: Vec<(u16, u32)>,
}

/// `k="v",…` into `out` (cleared first), escaped; empty values are left out.
fn label_text(out: &mut LabelText, labels: &Labels) {
    out.clear();
    for (k, v) in labels {
        if !v.is_empty() {
            out.push(k, v);
        }
    }
}
