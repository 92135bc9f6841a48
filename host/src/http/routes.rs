//! The route table: which endpoint a request names, and one handler per endpoint (the web
//! page's files at `/` and `/ui/…`, see [`super::ui`]). Every answer is whole (a `Content-Length` body); anything unknown, or not a GET, is a 404 that
//! lists the endpoints; a target longer than [`MAX_TARGET`] is a 414 (a head over hyper's
//! buffer is a 431 before it gets here).
use std::net::IpAddr;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    ACCEPT, ACCEPT_ENCODING, CACHE_CONTROL, CONNECTION, CONTENT_ENCODING, CONTENT_SECURITY_POLICY,
    CONTENT_TYPE, HeaderMap, HeaderValue, WWW_AUTHENTICATE, X_CONTENT_TYPE_OPTIONS,
};
use hyper::{Method, Request, Response, StatusCode};

use super::Api;
use super::ui::{self, Asset};
use crate::metrics::{self, State};

/// The longest request target served (path and query); the API's own are far shorter.
const MAX_TARGET: usize = 2048;

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4";
const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const JSON: &str = "application/json";
const NOT_FOUND: &str = "try / (the web page), /metrics, /api/health, /api/plugins, /api/series, /api/map, /api/records, /api/containers, /api/slow-queries, /api/logs or /api/incidents\n";

/// The endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Metrics,
    Records,
    Containers,
    SlowQueries,
    Map,
    Incidents,
    /// `/api/incidents/<id>`.
    Incident(String),
    Logs,
    Health,
    /// `/api/plugins`: the loaded parsers.
    Plugins,
    Live,
    Series,
    /// A file of the web page.
    Page(&'static Asset),
}

/// The endpoint a method and path (without the query) name.
fn route(method: &Method, path: &str) -> Option<Route> {
    if method != Method::GET {
        return None;
    }
    Some(match path {
        "/metrics" => Route::Metrics,
        "/api/records" => Route::Records,
        "/api/containers" => Route::Containers,
        "/api/slow-queries" => Route::SlowQueries,
        "/api/map" => Route::Map,
        "/api/incidents" => Route::Incidents,
        "/api/logs" => Route::Logs,
        "/api/health" => Route::Health,
        "/api/live" => Route::Live,
        "/api/series" => Route::Series,
        "/api/plugins" => Route::Plugins,
        _ => {
            if let Some(asset) = ui::asset(path) {
                return Some(Route::Page(asset));
            }
            let id = path.strip_prefix("/api/incidents/")?;
            if id.is_empty() {
                return None;
            }
            Route::Incident(id.to_string())
        }
    })
}

/// An answer: status, content type, body.
type Answer = (StatusCode, &'static str, String);

/// Answer one request from `peer`.
pub(super) fn respond<B>(api: &Api, peer: IpAddr, req: &Request<B>) -> Response<Full<Bytes>> {
    let state = &api.shared;
    let target_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target_len > MAX_TARGET {
        return response(
            StatusCode::URI_TOO_LONG,
            "text/plain",
            "request target too long\n".into(),
        );
    }
    if let Err(refusal) = api.access.check(req.uri().path(), peer, req.headers()) {
        state.api.refused.fetch_add(1, Ordering::Relaxed);
        let mut r = response(refusal.status, "text/plain", refusal.body.into());
        if refusal.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        return r;
    }
    let query = req.uri().query();
    let (status, kind, body) = match route(req.method(), req.uri().path()) {
        Some(Route::Metrics) => return metrics(api, req.headers()),
        Some(Route::Records) => records(state, query),
        Some(Route::Containers) => containers(state),
        Some(Route::SlowQueries) => slow_queries(state),
        Some(Route::Map) => map(state),
        Some(Route::Incidents) => incidents(state),
        Some(Route::Incident(id)) => incident(state, &id, query),
        Some(Route::Logs) => logs(state, query),
        Some(Route::Health) => json(&*state.health.lock().unwrap_or_else(|e| e.into_inner())),
        Some(Route::Live) => live(state),
        Some(Route::Series) => series(state),
        Some(Route::Plugins) => plugins(state),
        Some(Route::Page(asset)) => return page(asset),
        None => (StatusCode::NOT_FOUND, "text/plain", NOT_FOUND.to_string()),
    };
    response(status, kind, body.into())
}

/// A whole response: status, content type, body; the connection closes after it.
fn response(status: StatusCode, kind: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A file of the web page: never cached past a reload (it changes with the binary), never
/// sniffed as another type, and under a policy that lets it load nothing but itself and the API.
fn page(asset: &'static Asset) -> Response<Full<Bytes>> {
    let mut r = response(StatusCode::OK, asset.kind, Bytes::from_static(asset.body));
    let headers = r.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(ui::CSP));
    r
}

/// Whether the client takes a gzip body (`Accept-Encoding: gzip`, as Prometheus sends).
fn wants_gzip(headers: &HeaderMap) -> bool {
    headers.get_all(ACCEPT_ENCODING).iter().any(|v| {
        String::from_utf8_lossy(v.as_bytes()).split(',').any(|e| {
            let mut parts = e.split(';');
            let name = parts.next().unwrap_or("").trim();
            // `gzip;q=0` says "not gzip".
            let refused = parts.any(|p| {
                let p = p.trim().replace(' ', "");
                p == "q=0" || p == "q=0.0" || p == "q=0.00" || p == "q=0.000"
            });
            name.eq_ignore_ascii_case("gzip") && !refused
        })
    })
}

/// Whether the request asks for OpenMetrics (`Accept: application/openmetrics-text`), as
/// Prometheus does when it may store exemplars.
fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers.get_all(ACCEPT).iter().any(|v| {
        String::from_utf8_lossy(v.as_bytes())
            .to_ascii_lowercase()
            .contains("application/openmetrics-text")
    })
}

/// A query parameter (`k=v&…`; values as sent, not percent-decoded).
fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_string())
}

/// A JSON answer (`[]` if serialising failed, which plain data cannot).
fn json<T: serde::Serialize>(v: &T) -> Answer {
    let body = serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
    (StatusCode::OK, JSON, body)
}

/// `/metrics`: the exposition, in OpenMetrics if the client asks for it, gzipped if it takes
/// that; the page every scraper of this interval shares.
fn metrics(api: &Api, headers: &HeaderMap) -> Response<Full<Bytes>> {
    let openmetrics = wants_openmetrics(headers);
    let gzip = wants_gzip(headers);
    let state = &api.shared;
    let page = api.pages.get(openmetrics, gzip, &state.api.renders, || {
        let format = if openmetrics {
            sonde_metrics::Format::OpenMetrics
        } else {
            sonde_metrics::Format::Prometheus
        };
        metrics::render_format(state, format)
    });
    let kind = if openmetrics {
        OPENMETRICS_TEXT
    } else {
        PROMETHEUS_TEXT
    };
    let mut r = response(StatusCode::OK, kind, page);
    if gzip {
        r.headers_mut()
            .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    r
}

/// `/api/records?limit=N`: the latest records (100 by default).
fn records(state: &State, query: Option<&str>) -> Answer {
    let limit = query_param(query, "limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100usize);
    let records = state
        .records
        .lock()
        .map(|r| r.latest(limit))
        .unwrap_or_default();
    json(&records)
}

/// `/api/containers`: containers, their usage and the Kubernetes watch status.
fn containers(state: &State) -> Answer {
    let rows = state
        .correlator
        .as_ref()
        .map(|c| c.containers())
        .unwrap_or_default();
    json(&rows)
}

/// `/api/slow-queries`: the slow-query log.
fn slow_queries(state: &State) -> Answer {
    let slow = state
        .red
        .lock()
        .map(|r| r.slow_queries())
        .unwrap_or_default();
    json(&slow)
}

/// `/api/map`: the network topology (`{}` before the first read).
fn map(state: &State) -> Answer {
    let body = state
        .network
        .lock()
        .ok()
        .and_then(|n| serde_json::to_string(&n.topology).ok())
        .unwrap_or_else(|| "{}".into());
    (StatusCode::OK, JSON, body)
}

/// `/api/incidents`: every incident's summary.
fn incidents(state: &State) -> Answer {
    let list = state.live.lock().map(|b| b.summaries()).unwrap_or_default();
    json(&serde_json::json!({ "incidents": list }))
}

/// `/api/incidents/<id>[?format=text]`: one incident's report, JSON or text.
fn incident(state: &State, id: &str, query: Option<&str>) -> Answer {
    let text = query_param(query, "format").is_some_and(|f| f == "text");
    match state.live.lock().ok().and_then(|b| b.detail(id).cloned()) {
        Some(d) if text => (StatusCode::OK, "text/plain; charset=utf-8", d.to_text()),
        Some(d) => json(&d),
        None => (
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("no incident {id}\n"),
        ),
    }
}

/// `/api/logs?service=S&minutes=M&errors=1`: log templates of the last M minutes (10).
fn logs(state: &State, query: Option<&str>) -> Answer {
    let service = query_param(query, "service");
    let minutes: u64 = query_param(query, "minutes")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let errors_only = query_param(query, "errors").is_some_and(|v| v == "1" || v == "true");
    let now = sonde_capture::unix_now_ms();
    let rows = state
        .logs
        .as_ref()
        .and_then(|l| {
            l.lock().ok().map(|m| {
                m.templates(
                    service.as_deref(),
                    now.saturating_sub(minutes * 60_000),
                    now + 1,
                )
            })
        })
        .unwrap_or_default();
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|t| !errors_only || t.is_error)
        .collect();
    json(&rows)
}

/// `/api/live`: the live diagnosis' counters and latest step.
fn live(state: &State) -> Answer {
    let body = state
        .live
        .lock()
        .map(|b| serde_json::json!({ "stats": b.stats, "latest": b.latest }))
        .unwrap_or_default();
    json(&body)
}

/// `/api/plugins`: the loaded parsers, their version, source, sandbox health and counters
/// (what `sonde_plugin_*` and `sonde_parser_*` show), as of the loop's last snapshot; and the
/// fault-tree rules the live diagnosis loaded, as loaded.
fn plugins(state: &State) -> Answer {
    let parsers = state
        .snapshot
        .lock()
        .map(|s| s.parsers.clone())
        .unwrap_or_default();
    json(&serde_json::json!({ "parsers": parsers, "rules": state.rules }))
}

/// `/api/series`: the RED series (`sonde top`).
fn series(state: &State) -> Answer {
    let series = state.red.lock().map(|r| r.export()).unwrap_or_default();
    json(&series)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(target: &str) -> Request<()> {
        Request::get(target).body(()).unwrap()
    }

    fn api() -> Api {
        Api {
            shared: std::sync::Arc::new(State::default()),
            access: super::super::Access::default(),
            pages: super::super::page::PageCache::new(std::time::Duration::ZERO),
        }
    }

    fn answer(req: &Request<()>) -> (StatusCode, String, String) {
        answer_from(&api(), "127.0.0.1".parse().unwrap(), req)
    }

    fn answer_from(api: &Api, peer: IpAddr, req: &Request<()>) -> (StatusCode, String, String) {
        let r = respond(api, peer, req);
        let kind = r.headers()[CONTENT_TYPE].to_str().unwrap().to_string();
        let status = r.status();
        let body = futures::executor::block_on(http_body_util::BodyExt::collect(r.into_body()))
            .unwrap()
            .to_bytes();
        (status, kind, String::from_utf8(body.to_vec()).unwrap())
    }

    #[test]
    fn routes() {
        let g = &Method::GET;
        assert_eq!(route(g, "/metrics"), Some(Route::Metrics));
        assert_eq!(route(g, "/api/records"), Some(Route::Records));
        assert_eq!(route(g, "/api/containers"), Some(Route::Containers));
        assert_eq!(route(g, "/api/slow-queries"), Some(Route::SlowQueries));
        assert_eq!(route(g, "/api/map"), Some(Route::Map));
        assert_eq!(route(g, "/api/incidents"), Some(Route::Incidents));
        assert_eq!(
            route(g, "/api/incidents/inc-3"),
            Some(Route::Incident("inc-3".into()))
        );
        assert_eq!(route(g, "/api/logs"), Some(Route::Logs));
        assert_eq!(route(g, "/api/health"), Some(Route::Health));
        assert_eq!(route(g, "/api/live"), Some(Route::Live));
        assert_eq!(route(g, "/api/series"), Some(Route::Series));
        assert_eq!(route(g, "/api/plugins"), Some(Route::Plugins));
        for page in ["/", "/ui/app.js", "/ui/style.css"] {
            assert!(matches!(route(g, page), Some(Route::Page(_))), "{page}");
        }
        for unknown in [
            "/index.html",
            "/ui",
            "/ui/",
            "/ui/nope.js",
            "/ui/../metrics",
            "/metrics/",
            "/metricsx",
            "/api",
            "/api/incidents/",
            "/API/map",
        ] {
            assert_eq!(route(g, unknown), None, "{unknown}");
        }
        for m in [Method::POST, Method::HEAD, Method::PUT, Method::DELETE] {
            assert_eq!(route(&m, "/metrics"), None, "{m}");
        }
    }

    #[test]
    fn unknown_paths_and_methods_are_404_with_the_list() {
        for req in [
            get("/nope"),
            get("/api/incidents/"),
            Request::post("/metrics").body(()).unwrap(),
        ] {
            let (status, kind, body) = answer(&req);
            assert_eq!(status, StatusCode::NOT_FOUND);
            assert_eq!(kind, "text/plain");
            assert_eq!(body, NOT_FOUND);
        }
        let (status, kind, body) = answer(&get("/api/incidents/inc-9?format=text"));
        assert_eq!(
            (status, kind.as_str(), body.as_str()),
            (StatusCode::NOT_FOUND, "text/plain", "no incident inc-9\n")
        );
    }

    #[test]
    fn query_parameters() {
        let q = Some("service=api&minutes=5&errors=1&empty=&flag");
        assert_eq!(query_param(q, "service").as_deref(), Some("api"));
        assert_eq!(query_param(q, "minutes").as_deref(), Some("5"));
        assert_eq!(query_param(q, "errors").as_deref(), Some("1"));
        assert_eq!(query_param(q, "empty").as_deref(), Some(""));
        assert_eq!(query_param(q, "flag"), None);
        assert_eq!(query_param(q, "serv"), None);
        assert_eq!(query_param(None, "service"), None);
        // The path routes with or without a query.
        let (status, kind, body) = answer(&get("/api/records?limit=3"));
        assert_eq!(
            (status, kind.as_str(), body.as_str()),
            (StatusCode::OK, JSON, "[]")
        );
        let (status, _, _) = answer(&get("/metrics?x=y"));
        assert_eq!(status, StatusCode::OK);
    }

    #[test]
    fn accept_negotiates_openmetrics() {
        let (status, kind, body) = answer(&get("/metrics"));
        assert_eq!((status, kind.as_str()), (StatusCode::OK, PROMETHEUS_TEXT));
        assert!(!body.contains("# EOF"));
        for accept in [
            "application/openmetrics-text; version=1.0.0",
            "Application/OpenMetrics-Text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        ] {
            let req = Request::get("/metrics")
                .header(ACCEPT, accept)
                .body(())
                .unwrap();
            let (status, kind, body) = answer(&req);
            assert_eq!((status, kind.as_str()), (StatusCode::OK, OPENMETRICS_TEXT));
            assert!(body.ends_with("# EOF\n"), "{body}");
        }
        // Any of several Accept headers.
        let req = Request::get("/metrics")
            .header(ACCEPT, "text/plain")
            .header(ACCEPT, "application/openmetrics-text")
            .body(())
            .unwrap();
        assert_eq!(answer(&req).1, OPENMETRICS_TEXT);
        let req = Request::get("/metrics")
            .header(ACCEPT, "text/plain")
            .body(())
            .unwrap();
        assert_eq!(answer(&req).1, PROMETHEUS_TEXT);
    }

    #[test]
    fn off_loopback_only_metrics_without_a_token_and_refusals_are_counted() {
        let api = api();
        let peer: IpAddr = "10.9.8.7".parse().unwrap();
        assert_eq!(answer_from(&api, peer, &get("/metrics")).0, StatusCode::OK);
        for path in ["/api/logs", "/api/records", "/api/incidents/x", "/nope"] {
            let (status, _, body) = answer_from(&api, peer, &get(path));
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
            assert!(body.contains("loopback"), "{body}");
        }
        assert_eq!(api.shared.api.refused.load(Ordering::Relaxed), 4);
        let (_, _, text) = answer_from(&api, "127.0.0.1".parse().unwrap(), &get("/metrics"));
        assert!(text.contains("sonde_api_refused_total 4\n"), "{text}");
    }

    #[test]
    fn the_page_is_served_whole_with_its_types_and_policy() {
        let (status, kind, html) = answer(&get("/"));
        assert_eq!(
            (status, kind.as_str()),
            (StatusCode::OK, "text/html; charset=utf-8")
        );
        assert!(html.starts_with("<!doctype html>"), "{html:.80}");
        // Every file the page names is served, with its type; nothing from elsewhere.
        for (file, kind) in [
            ("/ui/app.js", "text/javascript; charset=utf-8"),
            ("/ui/style.css", "text/css; charset=utf-8"),
        ] {
            // Named relative to the page (a hub may serve it under a prefix).
            assert!(
                html.contains(&format!("\"{}\"", &file[1..])),
                "{file} in the page"
            );
            let (status, k, body) = answer(&get(file));
            assert_eq!((status, k.as_str()), (StatusCode::OK, kind), "{file}");
            assert!(!body.is_empty());
            assert!(
                !body.contains("http://") && !body.contains("https://"),
                "{file}"
            );
        }
        assert!(!html.contains("http://") && !html.contains("https://"));
        // A query does not change the file.
        assert_eq!(answer(&get("/?x=1")).2, html);
        let r = respond(&api(), "127.0.0.1".parse().unwrap(), &get("/ui/app.js"));
        assert_eq!(r.headers()[CACHE_CONTROL], "no-cache");
        assert_eq!(r.headers()[X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(r.headers()[CONTENT_SECURITY_POLICY], ui::CSP);
        assert!(ui::CSP.contains("script-src 'self';"));
        // The JSON the page reads first.
        let (status, kind, body) = answer(&get("/api/plugins"));
        assert_eq!((status, kind.as_str()), (StatusCode::OK, JSON));
        assert_eq!(body, r#"{"parsers":[],"rules":[]}"#);
        // Small: well under the 1 MiB budget.
        assert!(ui::size() < 256 << 10, "{} bytes", ui::size());
    }

    #[test]
    fn the_page_follows_the_api_access_rule() {
        let api = api();
        let peer: IpAddr = "10.9.8.7".parse().unwrap();
        for path in ["/", "/ui/app.js", "/api/plugins"] {
            let (status, _, body) = answer_from(&api, peer, &get(path));
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
            assert!(body.contains("loopback"), "{body}");
        }
        let dir = std::env::temp_dir().join(format!("sonde-ui-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "t0ken\n").unwrap();
        let with_token = Api {
            access: super::super::Access::load(Some(&file)).unwrap(),
            ..api
        };
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            answer_from(&with_token, peer, &get("/")).0,
            StatusCode::UNAUTHORIZED
        );
        let req = Request::get("/")
            .header(hyper::header::AUTHORIZATION, "Bearer t0ken")
            .body(())
            .unwrap();
        assert_eq!(answer_from(&with_token, peer, &req).0, StatusCode::OK);
    }

    #[test]
    fn a_long_target_is_414() {
        let long = format!("/api/records?limit={}", "9".repeat(MAX_TARGET));
        assert_eq!(answer(&get(&long)).0, StatusCode::URI_TOO_LONG);
        let fits = format!("/api/records?x={}", "9".repeat(MAX_TARGET - 20));
        assert_eq!(answer(&get(&fits)).0, StatusCode::OK);
    }

    #[test]
    fn gzip_only_when_taken() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            m
        };
        assert!(wants_gzip(&h("gzip")));
        assert!(wants_gzip(&h("deflate, GZIP;q=0.5")));
        assert!(!wants_gzip(&h("gzip;q=0")));
        assert!(!wants_gzip(&h("br, deflate")));
        assert!(!wants_gzip(&h("x-gzip2")));
        assert!(!wants_gzip(&HeaderMap::new()));
        let req = Request::get("/metrics")
            .header(ACCEPT_ENCODING, "gzip")
            .body(())
            .unwrap();
        let r = respond(&api(), "::1".parse().unwrap(), &req);
        assert_eq!(r.headers()[CONTENT_ENCODING], "gzip");
    }
}
