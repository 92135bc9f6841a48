//! A PromQL client over Prometheus' HTTP API: `/api/v1/query` (instant) and
//! `/api/v1/query_range` (range), POSTed as a form, nothing else — so Thanos, Mimir,
//! VictoriaMetrics and managed Prometheus answer it too. Plain HTTP on hyper's HTTP/1
//! client, one connection per query, each bounded by a timeout and a body size.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::Request;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

/// Largest answer read (a bigger one is an error, not an allocation).
const MAX_BODY: usize = 256 << 20;

/// Where Prometheus' API is: `http://host:port[/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// Path prefix before `/api/v1/…` (Mimir serves under `/prometheus`), no trailing `/`.
    pub prefix: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint> {
        let rest = match url.split_once("://") {
            Some(("http", rest)) => rest,
            Some((scheme, _)) => bail!(
                "Prometheus URL {url:?}: only http:// is supported (got {scheme}://; put a local proxy in front)"
            ),
            None => url,
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h,
                p.parse::<u16>()
                    .with_context(|| format!("Prometheus URL {url:?}: bad port {p:?}"))?,
            ),
            _ => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            bail!("Prometheus URL {url:?}: no host");
        }
        Ok(Endpoint {
            host: host.to_string(),
            port,
            prefix: path.trim_end_matches('/').to_string(),
        })
    }
}

/// One series of an answer: its labels and its points (unix seconds, value).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(f64, f64)>,
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct RawSeries {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    #[serde(default)]
    value: Option<(f64, String)>,
    #[serde(default)]
    values: Vec<(f64, String)>,
}

/// Percent-encode a form value (everything but unreserved characters).
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Prometheus' JSON answer → series. An error answer is one line: its type and message.
pub fn parse_answer(status: u16, body: &[u8]) -> Result<Vec<Series>> {
    let answer: Answer = serde_json::from_slice(body).map_err(|e| {
        let head = String::from_utf8_lossy(&body[..body.len().min(120)]).replace('\n', " ");
        anyhow!("HTTP {status}, not a Prometheus API answer ({e}): {head}")
    })?;
    if answer.status != "success" {
        bail!(
            "HTTP {status}, PromQL {}: {}",
            answer.error_type.unwrap_or_else(|| "error".into()),
            answer.error.unwrap_or_default()
        );
    }
    let data = answer
        .data
        .ok_or_else(|| anyhow!("HTTP {status}: a success without data"))?;
    if data.result_type != "vector" && data.result_type != "matrix" {
        bail!(
            "PromQL answered a {}, not a vector or matrix",
            data.result_type
        );
    }
    let raw: Vec<RawSeries> =
        serde_json::from_value(data.result).context("PromQL result not a list of series")?;
    Ok(raw
        .into_iter()
        .map(|r| {
            let points = r
                .value
                .into_iter()
                .chain(r.values)
                // "NaN", "+Inf" parse too; a value that does not parse is no point.
                .filter_map(|(t, v)| v.parse::<f64>().ok().map(|v| (t, v)))
                .collect();
            Series {
                labels: r.metric,
                points,
            }
        })
        .collect())
}

/// The client.
#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
    timeout: Duration,
}

impl Client {
    pub fn new(endpoint: Endpoint, timeout: Duration) -> Self {
        Self { endpoint, timeout }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// An instant query at `time` (unix seconds).
    pub async fn instant(&self, query: &str, time: f64) -> Result<Vec<Series>> {
        let form = format!("query={}&time={time:.3}", form_encode(query));
        self.post("/api/v1/query", form).await
    }

    /// A range query over `[start, end]` every `step_s` seconds.
    pub async fn range(
        &self,
        query: &str,
        start: f64,
        end: f64,
        step_s: u64,
    ) -> Result<Vec<Series>> {
        let form = format!(
            "query={}&start={start:.3}&end={end:.3}&step={step_s}",
            form_encode(query)
        );
        self.post("/api/v1/query_range", form).await
    }

    async fn post(&self, path: &str, form: String) -> Result<Vec<Series>> {
        let e = &self.endpoint;
        let work = async {
            let stream = tokio::net::TcpStream::connect((e.host.as_str(), e.port))
                .await
                .with_context(|| format!("connecting to Prometheus at {}:{}", e.host, e.port))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .context("HTTP handshake with Prometheus")?;
            let driver = tokio::spawn(conn);
            let req = Request::post(format!("{}{path}", e.prefix))
                .header(HOST, format!("{}:{}", e.host, e.port))
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Full::new(Bytes::from(form)))?;
            let resp = sender
                .send_request(req)
                .await
                .context("sending the query")?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| anyhow!("reading Prometheus' answer: {e}"))?
                .to_bytes();
            driver.abort();
            parse_answer(status, &body)
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| anyhow!("Prometheus did not answer within {:?}", self.timeout))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:9090").unwrap(),
            Endpoint {
                host: "127.0.0.1".into(),
                port: 9090,
                prefix: String::new()
            }
        );
        let m = Endpoint::parse("http://mimir.svc:8080/prometheus/").unwrap();
        assert_eq!((m.port, m.prefix.as_str()), (8080, "/prometheus"));
        assert_eq!(Endpoint::parse("prom").unwrap().port, 80);
        assert_eq!(Endpoint::parse("http://[::1]:9090").unwrap().host, "::1");
        let e = Endpoint::parse("https://x").unwrap_err().to_string();
        assert!(e.contains("only http://"), "{e}");
        assert!(Endpoint::parse("http://:9090").is_err());
    }

    #[test]
    fn answers() {
        let v = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"node":"a"},"value":[10.5,"2"]}]}}"#;
        let s = parse_answer(200, v).unwrap();
        assert_eq!(s[0].labels["node"], "a");
        assert_eq!(s[0].points, vec![(10.5, 2.0)]);
        let m = br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"],[2,"NaN"]]}]}}"#;
        let s = parse_answer(200, m).unwrap();
        assert_eq!(s[0].points.len(), 2);
        let err = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 3"}"#;
        let e = parse_answer(400, err).unwrap_err().to_string();
        assert_eq!(e, "HTTP 400, PromQL bad_data: parse error at char 3");
        let e = parse_answer(502, b"<html>bad gateway</html>")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("HTTP 502, not a Prometheus API answer"),
            "{e}"
        );
        assert!(!e.contains('\n'));
        assert_eq!(form_encode("a{b=\"c\"} +"), "a%7Bb%3D%22c%22%7D%20%2B");
    }
}
