use super::*;
use sonde_metrics::{Exposition, Format};
use sonde_sdk::protocol_parser::{Endpoint, RequestRecord};

fn render(red: &Red, format: Format) -> String {
    let mut ex = Exposition::new(format);
    red.render(&mut ex);
    ex.finish()
}

fn conn(role: Role) -> Arc<ConnInfo> {
    Arc::new(ConnInfo {
        id: 1,
        comm: "nginx".into(),
        role,
        local: Some(Endpoint {
            ip: "127.0.0.1".into(),
            port: 8080,
        }),
        remote: Some(Endpoint {
            ip: "127.0.0.1".into(),
            port: 40000,
        }),
        ..Default::default()
    })
}

fn rec(op: &str, status: u32, ms: u64) -> RequestRecord {
    RequestRecord {
        conn: 1,
        protocol: "http".into(),
        operation: op.into(),
        status,
        error: (status >= 500).then(|| "server-error".into()),
        request_ts_ns: 1_000_000,
        response_ts_ns: 1_000_000 + ms * 1_000_000,
        attributes: vec![(
            "url.path".into(),
            op.split(' ').nth(1).unwrap_or("/").into(),
        )],
        ..Default::default()
    }
}

#[test]
fn server_histogram_with_otel_names_and_errors() {
    let mut red = Red::default();
    let c = conn(Role::Server);
    for _ in 0..3 {
        red.record(&c, &Record::Owned(rec("GET /users/{id}", 200, 20)));
    }
    red.record(&c, &Record::Owned(rec("GET /users/{id}", 500, 300)));
    let o = render(&red, Format::Prometheus);
    let base = "http_request_method=\"GET\",http_route=\"/users/{id}\",http_response_status_code=\"200\",server_address=\"127.0.0.1\",server_port=\"8080\",tls=\"false\",service_name=\"nginx\"";
    assert!(
        o.contains(&format!(
            "http_server_request_duration_seconds_count{{{base}}} 3"
        )),
        "{o}"
    );
    assert!(
        o.contains(&format!(
            "http_server_request_duration_seconds_bucket{{{base},le=\"0.025\"}} 3"
        )),
        "{o}"
    );
    assert!(
        o.contains(&format!(
            "http_server_request_duration_seconds_bucket{{{base},le=\"0.01\"}} 0"
        )),
        "{o}"
    );
    assert!(
        o.contains("http_response_status_code=\"500\",error_type=\"500\""),
        "{o}"
    );
    // Client side: a 404 is an error; a server's 404 is not.
    red.record(&conn(Role::Client), &Record::Owned(rec("GET /x", 404, 1)));
    red.record(&c, &Record::Owned(rec("GET /x", 404, 1)));
    let o = render(&red, Format::Prometheus);
    assert!(o.contains("http_client_request_duration_seconds_count{http_request_method=\"GET\",url_template=\"/x\",http_response_status_code=\"404\",error_type=\"404\""), "{o}");
    assert!(o.contains("http_server_request_duration_seconds_count{http_request_method=\"GET\",http_route=\"/x\",http_response_status_code=\"404\",server_address"), "{o}");
}

/// Records of a connection parsed from TLS plaintext (the router's `tls` connection label)
/// count in their own HTTP series, `tls="true"`; cleartext ones say `tls="false"`.
#[test]
fn tls_records_are_labelled_on_the_http_series() {
    let mut red = Red::default();
    let mut tls = (*conn(Role::Server)).clone();
    tls.labels = vec![("tls".into(), "true".into())];
    let tls = Arc::new(tls);
    red.record(&tls, &Record::Owned(rec("GET /a", 200, 1)));
    red.record(&tls, &Record::Owned(rec("GET /a", 200, 1)));
    red.record(&conn(Role::Server), &Record::Owned(rec("GET /a", 200, 1)));
    let o = render(&red, Format::Prometheus);
    let series = |tls: &str| {
        format!(
            "http_server_request_duration_seconds_count{{http_request_method=\"GET\",http_route=\"/a\",\
             http_response_status_code=\"200\",server_address=\"127.0.0.1\",server_port=\"8080\",\
             tls=\"{tls}\",service_name=\"nginx\"}}"
        )
    };
    assert!(o.contains(&format!("{} 2", series("true"))), "{o}");
    assert!(o.contains(&format!("{} 1", series("false"))), "{o}");
}

#[test]
fn identity_labels_and_exemplars_only_in_openmetrics() {
    let mut red = Red::default();
    let mut c = (*conn(Role::Server)).clone();
    c.labels = vec![
        ("service_name".into(), "web".into()),
        ("k8s_namespace_name".into(), "shop".into()),
        ("container_id".into(), "abc".into()),
        ("peer_service_name".into(), "loadgen".into()),
        ("peer_k8s_pod_name".into(), "loadgen-0".into()),
    ];
    let c = Arc::new(c);
    let mut r = rec("GET /a", 200, 30);
    r.attributes.push((
        "traceparent".into(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
    ));
    red.record(&c, &Record::Owned(r));
    red.record(&c, &Record::Owned(rec("GET /a", 200, 3)));
    let plain = render(&red, Format::Prometheus);
    assert!(plain.contains("service_name=\"web\",k8s_namespace_name=\"shop\",container_id=\"abc\",peer_service_name=\"loadgen\""), "{plain}");
    // Peer pods are not a RED label (cardinality), and no exemplar in the Prometheus format.
    assert!(!plain.contains("loadgen-0") && !plain.contains("trace_id"));
    let om = render(&red, Format::OpenMetrics);
    // The 30 ms request sits in the 0.05 bucket; the untraced 3 ms one has none.
    let line = om.lines().find(|l| l.contains("le=\"0.05\"")).unwrap();
    assert!(line.ends_with(&format!(
        "2 # {{trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\",span_id=\"00f067aa0ba902b7\"}} 0.03 {}",
        line.rsplit(' ').next().unwrap()
    )), "{line}");
    let small = om.lines().find(|l| l.contains("le=\"0.005\"")).unwrap();
    assert!(!small.contains('#'), "{small}");
}

#[test]
fn cardinality_is_bounded_by_an_overflow_series() {
    let mut red = Red::new(&RedSettings {
        max_series: 5,
        ..Default::default()
    });
    let c = conn(Role::Server);
    for i in 0..20 {
        red.record(&c, &Record::Owned(rec(&format!("GET /r{i}"), 200, 1)));
    }
    assert_eq!(red.series_count(), 6);
    assert_eq!(red.overflow_records, 15);
    let o = render(&red, Format::Prometheus);
    assert!(
        o.contains("http_server_request_duration_seconds_count{otel_metric_overflow=\"true\"} 15"),
        "{o}"
    );
}

#[test]
fn one_service_cannot_take_a_metrics_whole_budget() {
    let mut red = Red::new(&RedSettings {
        max_series: 10,
        max_series_per_service: 3,
        ..Default::default()
    });
    let hostile = conn(Role::Server);
    for i in 0..20 {
        red.record(&hostile, &Record::Owned(rec(&format!("GET /r{i}"), 200, 1)));
    }
    assert_eq!(red.series_count(), 4, "3 series and the overflow series");
    assert_eq!(
        (red.overflow_records, red.service_overflow_records),
        (17, 17)
    );
    // Another service still gets series of its own.
    let mut other = (*conn(Role::Server)).clone();
    other.comm = "api".into();
    let other = Arc::new(other);
    for i in 0..2 {
        red.record(&other, &Record::Owned(rec(&format!("GET /o{i}"), 200, 1)));
    }
    assert_eq!(red.series_count(), 6);
    assert_eq!(red.overflow_records, 17);
    let mut ex = sonde_metrics::Exposition::new(sonde_metrics::Format::Prometheus);
    red.render(&mut ex);
    let o = ex.finish();
    assert!(
        o.contains("sonde_red_service_overflow_records_total 17"),
        "{o}"
    );
    assert!(o.contains("http_route=\"/o1\""), "{o}");
}

#[test]
fn the_latency_metrics_share_one_total_budget() {
    let mut red = Red::new(&RedSettings {
        max_series: 10,
        max_series_total: 5,
        ..Default::default()
    });
    let (server, client) = (conn(Role::Server), conn(Role::Client));
    for i in 0..3 {
        red.record(&server, &Record::Owned(rec(&format!("GET /s{i}"), 200, 1)));
    }
    for i in 0..3 {
        red.record(&client, &Record::Owned(rec(&format!("GET /c{i}"), 200, 1)));
    }
    // Three server series, two client series, then the client metric's overflow series.
    assert_eq!(red.series_count(), 6);
    assert_eq!(red.overflow_records, 1);
    assert_eq!(red.service_overflow_records, 0, "not the service's share");
    // A known series still counts; a new one of any metric overflows.
    red.record(&server, &Record::Owned(rec("GET /s0", 200, 1)));
    red.record(&server, &Record::Owned(rec("GET /s9", 200, 1)));
    assert_eq!(red.overflow_records, 2);
    let mut ex = sonde_metrics::Exposition::new(sonde_metrics::Format::Prometheus);
    red.render(&mut ex);
    let o = ex.finish();
    assert!(
        o.contains("http_server_request_duration_seconds_count{otel_metric_overflow=\"true\"} 1"),
        "{o}"
    );
    assert!(
        o.contains("http_client_request_duration_seconds_count{otel_metric_overflow=\"true\"} 1"),
        "{o}"
    );
}

#[test]
fn route_templates_and_unanswered() {
    let mut red = Red::new(&RedSettings {
        route_templates: vec!["/shop/{cat}/items/{*}".into()],
        ..Default::default()
    });
    let c = conn(Role::Server);
    let mut r = rec("GET /shop/books/items/{id}", 200, 1);
    r.attributes = vec![("url.path".into(), "/shop/books/items/9/x".into())];
    red.record(&c, &Record::Owned(r));
    let mut lost = rec("POST /a", 0, 0);
    lost.response_ts_ns = 0;
    lost.error = Some("no-response".into());
    red.record(&c, &Record::Owned(lost));
    let o = render(&red, Format::Prometheus);
    assert!(o.contains("http_route=\"/shop/{cat}/items/{*}\""), "{o}");
    assert!(o.contains("sonde_requests_unanswered_total{protocol=\"http\",side=\"server\",operation=\"POST /a\",error_type=\"no-response\",service_name=\"nginx\"} 1"), "{o}");
}

#[test]
fn database_and_dns_records_get_their_own_metrics_and_slow_queries_are_logged() {
    let mut red = Red::new(&RedSettings {
        slow_query_ms: 250,
        slow_query_log: 2,
        ..Default::default()
    });
    let client = conn(Role::Client);
    let db = |op: &str, status: u32, ms: u64, text: &str| {
        let mut r = rec(op, status, ms);
        r.protocol = "mysql".into();
        r.error = (status > 0).then(|| status.to_string());
        r.attributes = vec![
            ("db.system.name".into(), "mysql".into()),
            ("db.query.text".into(), text.into()),
            ("db.response.returned_rows".into(), "1".into()),
        ];
        if status > 0 {
            r.attributes
                .push(("db.response.status_code".into(), status.to_string()));
        }
        Record::Owned(r)
    };
    red.record(&client, &db("SELECT", 0, 5, "SELECT ?"));
    red.record(&client, &db("SELECT", 1146, 2, "SELECT * FROM missing"));
    for ms in [300, 400, 500] {
        red.record(&client, &db("SELECT", 0, ms, "SELECT SLEEP(?)"));
    }
    let mut dns = rec("A", 3, 4);
    dns.protocol = "dns".into();
    dns.error = Some("nxdomain".into());
    dns.attributes = vec![("dns.response.code".into(), "NXDOMAIN".into())];
    red.record(&client, &Record::Owned(dns));
    let o = render(&red, Format::Prometheus);
    assert!(o.contains("db_client_operation_duration_seconds_count{db_system_name=\"mysql\",db_operation_name=\"SELECT\",db_response_status_code=\"1146\",error_type=\"1146\""), "{o}");
    assert!(o.contains("dns_lookup_duration_seconds_count{dns_question_type=\"A\",dns_response_code=\"NXDOMAIN\",error_type=\"nxdomain\",side=\"client\""), "{o}");
    assert!(o.contains("sonde_db_slow_queries_total 3"), "{o}");
    // The log keeps the latest two, with their statement and duration.
    let slow = red.slow_queries();
    assert_eq!(slow.len(), 2);
    assert_eq!(
        (slow[0].statement.as_str(), slow[1].duration_seconds),
        ("SELECT SLEEP(?)", 0.5)
    );
    assert_eq!(
        (slow[1].rows, slow[1].side.as_str(), slow[1].server.as_str()),
        (Some(1), "client", "127.0.0.1:40000")
    );
}

/// PostgreSQL's error codes are SQLSTATEs, not numbers: a record with status 0, the
/// SQLSTATE as its error and `db.response.status_code` is answered, not lost.
#[test]
fn sqlstate_errors_are_answered_with_their_code() {
    let mut red = Red::new(&RedSettings::default());
    for role in [Role::Client, Role::Server] {
        let mut r = rec("SELECT", 0, 3);
        r.protocol = "postgresql".into();
        r.error = Some("42P01".into());
        r.attributes = vec![
            ("db.system.name".into(), "postgresql".into()),
            ("db.response.status_code".into(), "42P01".into()),
        ];
        red.record(&conn(role), &Record::Owned(r));
    }
    let o = render(&red, Format::Prometheus);
    assert!(o.contains("db_client_operation_duration_seconds_count{db_system_name=\"postgresql\",db_operation_name=\"SELECT\",db_response_status_code=\"42P01\",error_type=\"42P01\""), "{o}");
    assert!(o.contains("sonde_request_duration_seconds_count{protocol=\"postgresql\",side=\"server\",operation=\"SELECT\",status=\"42P01\",error_type=\"42P01\""), "{o}");
    assert!(
        !o.contains("sonde_requests_unanswered_total{protocol=\"postgresql\""),
        "{o}"
    );
}

#[test]
fn sketch_quantiles_are_within_ten_percent() {
    let mut s = vec![0u32; SKETCH_BUCKETS];
    for ms in 1..=100u64 {
        s[sketch_index(ms * 1_000_000)] += 1;
    }
    let p50 = sketch_quantile(&s, 0.5).unwrap();
    let p99 = sketch_quantile(&s, 0.99).unwrap();
    assert!((p50 - 0.050).abs() / 0.050 < 0.1, "{p50}");
    assert!((p99 - 0.099).abs() / 0.099 < 0.1, "{p99}");
    assert_eq!(sketch_quantile(&[0; 4], 0.5), None);
}

/// gRPC records (the HTTP/2 parser's, with `rpc.*`) get OTel's RPC metrics, each side its own;
/// a non-OK status is an error named by the status.
#[test]
fn grpc_records_get_the_rpc_metrics() {
    let mut red = Red::default();
    let grpc = |code: u32| {
        let mut r = rec("/helloworld.Greeter/SayHello", code, 2);
        r.protocol = "grpc".into();
        r.error = (code != 0).then(|| "NOT_FOUND".into());
        r.attributes = vec![
            ("rpc.system".into(), "grpc".into()),
            ("rpc.service".into(), "helloworld.Greeter".into()),
            ("rpc.method".into(), "SayHello".into()),
            ("rpc.grpc.status_code".into(), code.to_string()),
        ];
        Record::Owned(r)
    };
    for role in [Role::Server, Role::Client] {
        red.record(&conn(role), &grpc(0));
        red.record(&conn(role), &grpc(0));
        red.record(&conn(role), &grpc(5));
    }
    let o = render(&red, Format::Prometheus);
    let ok = "rpc_system=\"grpc\",rpc_service=\"helloworld.Greeter\",rpc_method=\"SayHello\",rpc_grpc_status_code=\"0\",server_address=\"127.0.0.1\"";
    assert!(o.contains(&format!("rpc_server_duration_seconds_count{{{ok},server_port=\"8080\",service_name=\"nginx\"}} 2")), "{o}");
    assert!(o.contains(&format!("rpc_client_duration_seconds_count{{{ok},server_port=\"40000\",service_name=\"nginx\"}} 2")), "{o}");
    assert!(o.contains("rpc_server_duration_seconds_count{rpc_system=\"grpc\",rpc_service=\"helloworld.Greeter\",rpc_method=\"SayHello\",rpc_grpc_status_code=\"5\",error_type=\"NOT_FOUND\""), "{o}");
    assert!(!o.contains("sonde_request_duration_seconds"), "{o}");
    assert!(!o.contains("sonde_requests_unanswered_total{"), "{o}");
}
