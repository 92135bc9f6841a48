//! The daemon's HTTP API: hyper's HTTP/1 server on the metrics listener, one response per
//! connection (no keep-alive), the route table in [`routes`]. `/metrics` (Prometheus text, or
//! OpenMetrics by `Accept`), the JSON API under `/api/`, and the web page that reads it
//! ([`ui`], at `/`); what they serve is [`crate::metrics::State`]. Bounded for a node that
//! runs anything: [`access`] keeps the API and the page to loopback (or a bearer token),
//! [`page`] shares one rendered `/metrics` page among scrapers, and connections beyond
//! `[api] max_connections` get a 503 at once.
mod access;
mod page;
mod routes;
mod settings;
mod ui;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, Result};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use self::access::Access;
pub use self::settings::ApiSettings;
use crate::metrics::Shared;

/// What every connection's handler reads: the state, the access rule, the shared page.
struct Api {
    shared: Shared,
    access: Access,
    pages: page::PageCache,
}

/// The whole answer to a connection over the limit.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 38\r\n\r\ntoo many connections to the sonde API\n";

/// How long a client may take to send its request head: a slow one must not hold a task.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Bind the endpoint (so a taken port is a start-up error, not a silent background one).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding metrics endpoint {addr}"))?;
    tracing::info!(%addr, "serving /metrics");
    Ok(listener)
}

/// Serve the API until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    shared: Shared,
    access: Access,
    settings: &ApiSettings,
) -> Result<()> {
    serve_with(listener, shared, access, settings, HEAD_TIMEOUT).await
}

async fn serve_with(
    listener: TcpListener,
    shared: Shared,
    access: Access,
    settings: &ApiSettings,
    head_timeout: Duration,
) -> Result<()> {
    let api = Arc::new(Api {
        shared,
        access,
        pages: page::PageCache::new(Duration::from_millis(settings.metrics_cache_ms)),
    });
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let mut conn = http1::Builder::new();
    conn.timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        // One request per connection, as clients that read to the end expect.
        .keep_alive(false)
        // The smallest buffer hyper allows: a request head is a line and a few headers.
        .max_buf_size(8192);
    loop {
        // A failed accept (a peer that reset first, or no file descriptor left) must not end
        // the endpoint: log it, back off a little, go on.
        let (mut sock, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Each connection holds a permit until it closes; none left: 503 and close, without
        // reading the request, so a flood of clients costs a few bytes each.
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            api.shared.api.busy.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                // Answer, half-close, then drain what the client sent (bounded in time and
                // bytes): closing with its request unread would reset the connection, and the
                // client could lose the 503 to the reset.
                let answer = async {
                    sock.write_all(BUSY).await?;
                    sock.shutdown().await?;
                    let mut sink = [0u8; 1024];
                    for _ in 0..16 {
                        if sock.read(&mut sink).await? == 0 {
                            break;
                        }
                    }
                    std::io::Result::Ok(())
                };
                let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
            });
            continue;
        };
        let api = api.clone();
        let service = service_fn(move |req| {
            let response = routes::respond(&api, peer.ip(), &req);
            async move { Ok::<_, Infallible>(response) }
        });
        let served = conn.serve_connection(TokioIo::new(sock), service);
        tokio::spawn(async move {
            if let Err(e) = served.await {
                tracing::debug!(error = %e, "metrics endpoint: connection failed");
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;

    async fn server(head_timeout: Duration) -> SocketAddr {
        server_with(head_timeout, super::ApiSettings::default()).await
    }

    async fn server_with(head_timeout: Duration, settings: super::ApiSettings) -> SocketAddr {
        let listener = super::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(crate::metrics::State::default());
        tokio::spawn(async move {
            let access = super::Access::default();
            super::serve_with(listener, shared, access, &settings, head_timeout).await
        });
        addr
    }

    /// What a client that sends a request and reads until the server closes gets back.
    async fn exchange(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
            .await
            .expect("the server closes after one response")
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
        let (head, _) = response.split_once("\r\n\r\n")?;
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    #[tokio::test]
    async fn one_response_per_connection_with_status_type_and_length() {
        let addr = server(Duration::from_secs(5)).await;
        // No `Connection: close`: the server closes anyway (the tests' and `sonde top`'s
        // clients read to the end).
        let r = exchange(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert_eq!(
            header(&r, "content-type"),
            Some("text/plain; version=0.0.4")
        );
        assert_eq!(header(&r, "connection"), Some("close"));
        let body = r.split_once("\r\n\r\n").unwrap().1;
        assert_eq!(header(&r, "content-length"), Some(&*body.len().to_string()));
        assert!(body.contains("# TYPE sonde_build_info gauge\n"), "{body}");

        let r = exchange(
            addr,
            "GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\naccept: Application/OpenMetrics-Text; version=1.0.0\r\n\r\n",
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert_eq!(
            header(&r, "content-type"),
            Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
        );
        assert!(r.ends_with("# EOF\n"), "{r}");

        let r = exchange(addr, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
        assert!(r.ends_with("or /api/incidents\n"), "{r}");

        let r = exchange(addr, "GET /api/incidents/abc HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\nno incident abc\n"), "{r}");

        let r = exchange(addr, "GET /api/records?limit=5 HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert_eq!(header(&r, "content-type"), Some("application/json"));
        assert!(r.ends_with("\r\n\r\n[]"), "{r}");
    }

    #[tokio::test]
    async fn a_slow_client_is_dropped() {
        let addr = server(Duration::from_millis(300)).await;
        for partial in ["", "GET /metr"] {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(partial.as_bytes()).await.unwrap();
            let started = Instant::now();
            let mut out = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
                .await
                .expect("a connection without a whole head is closed")
                .ok();
            assert!(started.elapsed() >= Duration::from_millis(250));
            assert!(!String::from_utf8_lossy(&out).contains(" 200 "));
        }
    }

    #[tokio::test]
    async fn connections_over_the_limit_get_503_at_once() {
        let settings = super::ApiSettings {
            max_connections: 1,
            ..Default::default()
        };
        let addr = server_with(Duration::from_secs(2), settings).await;
        // The one permit: a client that has not sent its head yet.
        let holder = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        let r = exchange(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{r}");
        assert_eq!(
            header(&r, "content-length"),
            Some(&*r.split_once("\r\n\r\n").unwrap().1.len().to_string())
        );
        assert!(started.elapsed() < Duration::from_secs(1));
        // The permit comes back when the holder goes.
        drop(holder);
        let served = crate::http::tests::poll_ok(addr).await;
        assert!(served.contains("sonde_api_busy_total 1\n"), "{served}");
    }

    /// `/metrics` once a connection is served again (deadline 5 s).
    async fn poll_ok(addr: SocketAddr) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = exchange(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
            if r.starts_with("HTTP/1.1 200 OK\r\n") {
                return r;
            }
            assert!(Instant::now() < deadline, "still busy: {r}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn an_oversized_head_is_431() {
        let addr = server(Duration::from_secs(5)).await;
        let big = format!(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(9000)
        );
        let r = exchange(addr, &big).await;
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
    }
}
