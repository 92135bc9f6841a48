//! The live engine on synthetic records and map edges: a slow backend opens one incident at
//! the front service, and its report names the backend.

use std::sync::Arc;

use sonde_analysis::demarcation::Element;
use sonde_analysis::rules::NativeRules;
use sonde_sdk::protocol_parser::{ConnInfo, Endpoint, RequestRecord, Role, Transport};

use super::*;
use sonde_netmap::export::EdgeView;
use sonde_parse::{Record, TaggedRecord};

fn conn(comm: &str, role: Role) -> Arc<ConnInfo> {
    Arc::new(ConnInfo {
        id: 1,
        pid: 0,
        comm: comm.into(),
        local: Some(Endpoint {
            ip: "10.0.0.1".into(),
            port: 8080,
        }),
        remote: Some(Endpoint {
            ip: "10.0.0.2".into(),
            port: 40000,
        }),
        role,
        transport: Transport::Tcp,
        labels: Vec::new(),
    })
}

fn record(op: &str, ms: f64, status: u32) -> Record {
    Record::Owned(RequestRecord {
        protocol: "http".into(),
        operation: op.into(),
        status,
        request_ts_ns: 1_000_000,
        response_ts_ns: 1_000_000 + (ms * 1e6) as u64,
        ..Default::default()
    })
}

fn edge(
    front_ms: f64,
    requests: u64,
    total: &mut sonde_netmap::model::Counters,
    back_ms: f64,
) -> Topology {
    total.client_requests += requests;
    total.server_requests += requests;
    total.client_duration_ns += (back_ms * 1e6) as u64 * requests;
    total.server_duration_ns += (back_ms * 1e6) as u64 * requests;
    let _ = front_ms;
    Topology {
        edges: vec![EdgeView {
            id: "front@10.0.0.1 -> back@10.0.0.2:8080".into(),
            client_name: "front".into(),
            server_name: "back".into(),
            total: *total,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn rules() -> Box<dyn RuleEngine + Send> {
    Box::new(NativeRules::new().with("default", sonde_fta_rules::evaluate))
}

/// Default settings but one-second steps, on "node-1".
fn live_1s() -> Live {
    let settings = LiveSettings {
        step_ms: 1000,
        ..Default::default()
    };
    Live::new(settings, "node-1".into(), rules(), 500)
}

#[test]
fn a_slow_backend_is_one_incident_at_the_front_naming_the_backend() {
    let mut live = live_1s();
    let mut total = Default::default();
    let front = conn("front", Role::Server);
    let back = conn("back", Role::Server);
    let mut changed_at = None;
    for step in 0..60u64 {
        let slow = step >= 40;
        // A little jitter so the detector has a scale.
        let jitter = (step % 3) as f64 * 0.3;
        let back_ms = if slow { 200.0 } else { 5.0 + jitter };
        let front_ms = back_ms + 3.0;
        let mut records = Vec::new();
        for i in 0..20 {
            let op = if i % 2 == 0 { "GET /a" } else { "GET /b" };
            records.push(TaggedRecord {
                conn: front.clone(),
                record: record(op, front_ms, 200),
            });
            records.push(TaggedRecord {
                conn: back.clone(),
                record: record("GET /item", back_ms, 200),
            });
        }
        let now = 1_800_000_000_000 + step * 1000;
        live.on_records(&records, now);
        if live.step(now, &edge(front_ms, 20, &mut total, back_ms)) && changed_at.is_none() {
            changed_at = Some(step);
        }
    }
    let board = live.board();
    assert_eq!(
        board.incidents.len(),
        1,
        "one incident, not one per victim: {:?}",
        board.summaries()
    );
    let d = &board.incidents[0];
    assert_eq!(d.incident.entry, "front");
    let opened = changed_at.expect("an incident opened");
    assert!((41..=43).contains(&opened), "opened at step {opened}");
    let report = d.report.as_ref().expect("a report within the window");
    let first = &report.root_causes[0];
    assert_eq!(
        first.element,
        Element::Service {
            name: "back".into()
        },
        "{}",
        report.to_text()
    );
    assert_eq!(first.category, "service-slow", "{}", report.to_text());
    assert!(d.to_text().contains("Incident"), "{}", d.to_text());
    assert_eq!(board.stats.incidents_opened, 1);
}

/// Drives front → back for `steps` one-second steps; `shape(step)` gives back's latency,
/// whether back fails half its requests (front then fails them too, and the call edge shows
/// caller- and callee-side errors), and whether front fails half its requests on its own.
fn drive(live: &mut Live, steps: u64, shape: impl Fn(u64) -> (f64, bool, bool)) {
    let mut total = sonde_netmap::model::Counters::default();
    let front = conn("front", Role::Server);
    let back = conn("back", Role::Server);
    for step in 0..steps {
        let (back_ms, back_failing, front_failing) = shape(step);
        let front_ms = back_ms + 3.0;
        let mut records = Vec::new();
        for i in 0..20 {
            let back_status = if back_failing && i % 2 == 0 { 500 } else { 200 };
            let front_status = if (back_failing || front_failing) && i % 2 == 0 {
                500
            } else {
                200
            };
            records.push(TaggedRecord {
                conn: front.clone(),
                record: record("GET /a", front_ms, front_status),
            });
            records.push(TaggedRecord {
                conn: back.clone(),
                record: record("GET /item", back_ms, back_status),
            });
        }
        if back_failing {
            total.client_errors += 10;
            total.server_errors += 10;
        }
        let now = 1_800_000_000_000 + step * 1000;
        live.on_records(&records, now);
        live.step(now, &edge(front_ms, 20, &mut total, back_ms));
    }
}

fn jitter(step: u64) -> f64 {
    5.0 + (step % 3) as f64 * 0.3
}

fn cause(d: &IncidentDetail) -> Option<(String, String)> {
    d.incident
        .top_cause
        .as_ref()
        .map(|c| (c.element.id(), c.category.clone()))
}

/// A second fault while the first is open: the backend is slow for ten steps, then it recovers
/// and the front starts failing on its own. The front's errors open an incident of their own,
/// under the first, and its report names the front.
#[test]
fn a_second_fault_under_an_open_incident_gets_its_own_incident() {
    let mut live = live_1s();
    drive(&mut live, 70, |step| {
        let back_ms = if (40..50).contains(&step) {
            200.0
        } else {
            jitter(step)
        };
        (back_ms, false, step >= 50)
    });
    let board = live.board();
    let texts: Vec<String> = board.incidents.iter().map(|d| d.to_text()).collect();
    assert_eq!(board.incidents.len(), 2, "{texts:#?}");
    let (first, second) = (&board.incidents[0], &board.incidents[1]);
    assert_eq!(
        cause(first),
        Some(("back".into(), "service-slow".into())),
        "{}",
        texts[0]
    );
    assert_eq!(
        first.incident.state, "resolved",
        "the backend recovered at step 50"
    );
    assert_eq!(second.incident.state, "open");
    assert_eq!(second.incident.kpi, "error_rate");
    assert_eq!(second.incident.parent.as_ref(), Some(&first.incident.id));
    assert_eq!(
        cause(second),
        Some(("front".into(), "code-error".into())),
        "{}",
        texts[1]
    );
    assert!(texts[1].contains("Arose while incident"), "{}", texts[1]);
    assert_eq!(board.stats.incidents_merged, 0);
}

/// The same fault growing: the slow backend starts failing too, and the front's errors follow.
/// The new anomaly's report names the backend again, so it is folded into the first incident.
#[test]
fn the_same_fault_seen_again_is_merged_into_its_incident() {
    let mut live = live_1s();
    drive(&mut live, 70, |step| {
        let back_ms = if step >= 40 { 200.0 } else { jitter(step) };
        (back_ms, step >= 50, false)
    });
    let board = live.board();
    let texts: Vec<String> = board.incidents.iter().map(|d| d.to_text()).collect();
    assert_eq!(board.incidents.len(), 1, "{texts:#?}");
    let d = &board.incidents[0];
    assert_eq!(cause(d).map(|c| c.0), Some("back".into()), "{}", texts[0]);
    assert_eq!(
        board.stats.incidents_opened, 2,
        "the errors opened a second incident first"
    );
    assert_eq!(board.stats.incidents_merged, 1);
    assert_eq!(d.merged.len(), 1, "{}", texts[0]);
    assert!(
        texts[0].contains("same first root cause (merged"),
        "{}",
        texts[0]
    );
}

#[test]
fn steady_traffic_opens_nothing() {
    let mut live = live_1s();
    let mut total = Default::default();
    let front = conn("front", Role::Server);
    for step in 0..300u64 {
        // Noise of ±40 % around 10 ms, and a rare slow request.
        let ms = 10.0 * (1.0 + 0.4 * (((step * 7919) % 17) as f64 / 8.0 - 1.0));
        let mut records: Vec<TaggedRecord> = (0..20)
            .map(|_| TaggedRecord {
                conn: front.clone(),
                record: record("GET /a", ms, 200),
            })
            .collect();
        if step % 50 == 0 {
            records.push(TaggedRecord {
                conn: front.clone(),
                record: record("GET /a", 80.0, 200),
            });
        }
        let now = 1_800_000_000_000 + step * 1000;
        live.on_records(&records, now);
        live.step(now, &edge(ms, 20, &mut total, 5.0));
    }
    assert!(
        live.board().incidents.is_empty(),
        "{:?}",
        live.board().summaries()
    );
}

#[test]
fn slow_sql_is_grouped_by_statement_slowest_first() {
    let sample = |service: &str, statement: &str, ms: f64, error: Option<&str>| SlowSample {
        unix_ms: 2_000,
        service: service.into(),
        server: "10.0.0.5:3306".into(),
        statement: statement.into(),
        ms,
        error: error.map(str::to_string),
    };
    let samples: VecDeque<SlowSample> = [
        sample("product", "SELECT a", 250.0, None),
        sample(
            "product",
            "SELECT a",
            350.0,
            Some("1205: lock wait timeout"),
        ),
        sample("product", "SELECT b", 900.0, None),
        sample("other", "SELECT c", 5000.0, None),
        SlowSample {
            unix_ms: 10,
            ..sample("product", "SELECT old", 9000.0, None)
        },
    ]
    .into_iter()
    .collect();
    let involved = BTreeSet::from(["product".to_string()]);
    let rows = slow_sql_of(&samples, 1_000, &involved, 10);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].statement, "SELECT b");
    let a = &rows[1];
    assert_eq!(
        (a.count, a.mean_ms, a.max_ms, a.errors),
        (2, 300.0, 350.0, 1)
    );
    assert_eq!(a.last_error.as_deref(), Some("1205: lock wait timeout"));
}

/// At the series cap, a crowd of new edges (every ephemeral port of some unscoped client, say)
/// is refused before a service: the service's KPI is what an incident's analysis starts from.
#[test]
fn edges_are_refused_before_services_at_the_series_cap() {
    let settings = LiveSettings {
        step_ms: 1000,
        max_series: 10,
        ..Default::default()
    };
    let mut engine = Engine::new(settings, rules());
    let mut series = BTreeMap::new();
    for port in 0..40 {
        series.insert(
            (
                format!("edge:10.0.0.0/24->10.0.0.1:{port}"),
                "request_rate".to_string(),
            ),
            1.0,
        );
    }
    series.insert(("node:n1".to_string(), "node_cpu_ratio".to_string()), 0.2);
    series.insert(
        ("service:shop".to_string(), "latency_mean_ms".to_string()),
        12.0,
    );
    let input = StepInput {
        series,
        ..Default::default()
    };
    engine.step(1_800_000_000_000, input, &NoExtras);
    let kept: BTreeSet<(String, String)> = engine
        .latest()
        .into_iter()
        .map(|(e, m, _)| (e, m))
        .collect();
    assert_eq!(kept.len(), 10);
    assert!(kept.contains(&("service:shop".into(), "latency_mean_ms".into())));
    assert!(kept.contains(&("node:n1".into(), "node_cpu_ratio".into())));
    assert_eq!(engine.stats().series_refused, 32);
}

/// At 1-second steps an incident needs 3 anomalous steps (3 s), at 5-second steps `open_after`.
#[test]
fn short_steps_need_three_seconds_of_anomaly_to_open() {
    let at = |step_ms: u64| {
        LiveSettings {
            step_ms,
            ..Default::default()
        }
        .open_after_steps()
    };
    assert_eq!(at(1000), 3);
    assert_eq!(at(2000), 2);
    assert_eq!(at(5000), 2);
    let mut s = LiveSettings {
        step_ms: 1000,
        ..Default::default()
    };
    s.open_after = 5;
    assert_eq!(s.open_after_steps(), 5, "a longer open_after stays");
}
