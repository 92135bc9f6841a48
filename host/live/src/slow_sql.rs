//! Slow SQL of an incident: the slow database operations seen, rolled up per (service,
//! server, statement) for the report.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::board::SlowSql;

/// One slow database operation as it was seen.
#[derive(Debug, Clone)]
pub(crate) struct SlowSample {
    pub unix_ms: u64,
    pub service: String,
    pub server: String,
    pub statement: String,
    pub ms: f64,
    pub error: Option<String>,
}

/// Slow samples since `from` of the `involved` services, one row per (service, server,
/// statement), slowest first.
pub(crate) fn slow_sql_of(
    samples: &VecDeque<SlowSample>,
    from: u64,
    involved: &BTreeSet<String>,
    limit: usize,
) -> Vec<SlowSql> {
    let mut rows: BTreeMap<(&str, &str, &str), SlowSql> = BTreeMap::new();
    for q in samples
        .iter()
        .filter(|q| q.unix_ms >= from && involved.contains(&q.service))
    {
        let row = rows
            .entry((&q.service, &q.server, &q.statement))
            .or_insert_with(|| SlowSql {
                service: q.service.clone(),
                server: q.server.clone(),
                statement: q.statement.clone(),
                count: 0,
                mean_ms: 0.0,
                max_ms: 0.0,
                errors: 0,
                last_error: None,
                last_unix_ms: 0,
            });
        row.count += 1;
        row.mean_ms += (q.ms - row.mean_ms) / row.count as f64;
        row.max_ms = row.max_ms.max(q.ms);
        if q.error.is_some() {
            row.errors += 1;
            row.last_error.clone_from(&q.error);
        }
        row.last_unix_ms = row.last_unix_ms.max(q.unix_ms);
    }
    let mut out: Vec<SlowSql> = rows.into_values().collect();
    out.sort_by(|a, b| {
        b.max_ms
            .total_cmp(&a.max_ms)
            .then_with(|| b.count.cmp(&a.count))
    });
    out.truncate(limit);
    out
}
