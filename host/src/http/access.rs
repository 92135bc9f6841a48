//! Who may read what: `/metrics` is open (Prometheus scrapes it from anywhere the listener
//! is reachable), the JSON API under `/api/` and the web page that shows it (`/`, `/ui/…`:
//! every other path) answer loopback clients, and clients off loopback only with the bearer
//! token of `[api] token_file`. The API carries labels, routes
//! and incidents of every workload on the node; with `hostNetwork` any pod could read it.
use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use hyper::StatusCode;
use hyper::header::{AUTHORIZATION, HeaderMap};

/// A token file larger than this is not a token.
const MAX_TOKEN_BYTES: u64 = 4096;

/// The access rule of the API, loaded once at start.
#[derive(Debug, Default)]
pub struct Access {
    /// The bearer token clients off loopback must send; `None`: loopback only.
    token: Option<Box<[u8]>>,
}

/// Why a request is refused: status and a one-line body.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Refusal {
    pub status: StatusCode,
    pub body: &'static str,
}

impl Access {
    /// Reads the token file (whitespace around the token ignored, as a Kubernetes Secret or
    /// `echo` leaves a newline); a missing, empty, oversized or non-regular file is an error.
    pub fn load(token_file: Option<&Path>) -> Result<Access> {
        let Some(path) = token_file else {
            return Ok(Access::default());
        };
        let meta = std::fs::metadata(path)
            .with_context(|| format!("[api] token_file {}", path.display()))?;
        if !meta.is_file() {
            bail!("[api] token_file {} is not a regular file", path.display());
        }
        if meta.len() > MAX_TOKEN_BYTES {
            bail!(
                "[api] token_file {} is {} bytes: a token is at most {MAX_TOKEN_BYTES}",
                path.display(),
                meta.len()
            );
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("[api] token_file {}", path.display()))?;
        let token = text.trim();
        if token.is_empty() {
            bail!("[api] token_file {} is empty", path.display());
        }
        Ok(Access {
            token: Some(token.as_bytes().into()),
        })
    }

    /// Whether a client at `peer` may read `path`.
    pub(super) fn check(
        &self,
        path: &str,
        peer: IpAddr,
        headers: &HeaderMap,
    ) -> Result<(), Refusal> {
        if path == "/metrics" || is_loopback(peer) {
            return Ok(());
        }
        let Some(token) = &self.token else {
            return Err(Refusal {
                status: StatusCode::FORBIDDEN,
                body: "the API answers loopback clients only; set [api] token_file to let others in with a bearer token\n",
            });
        };
        let sent = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        match sent {
            Some(sent) if same_secret(sent, token) => Ok(()),
            _ => Err(Refusal {
                status: StatusCode::UNAUTHORIZED,
                body: "a bearer token is required (Authorization: Bearer <token>)\n",
            }),
        }
    }
}

/// Loopback, including an IPv4 loopback address seen through an IPv6 socket.
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
    }
}

/// Compares in time independent of where the first difference is (the length may show).
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use hyper::StatusCode;
    use hyper::header::{AUTHORIZATION, HeaderMap, HeaderValue};

    use super::Access;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        h
    }

    #[test]
    fn loopback_reads_everything_others_only_metrics_without_a_token() {
        let open = Access::default();
        let none = HeaderMap::new();
        for peer in ["127.0.0.1", "127.9.8.7", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(open.check("/api/logs", ip(peer), &none), Ok(()), "{peer}");
        }
        for peer in ["10.1.2.3", "192.168.0.1", "fd00::1", "::ffff:10.0.0.1"] {
            assert_eq!(open.check("/metrics", ip(peer), &none), Ok(()), "{peer}");
            let refused = open
                .check("/api/records", ip(peer), &bearer("x"))
                .unwrap_err();
            assert_eq!(refused.status, StatusCode::FORBIDDEN, "{peer}");
        }
    }

    #[test]
    fn off_loopback_the_token_must_match() {
        let dir = std::env::temp_dir().join(format!("sonde-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "s3cret-token\n").unwrap();
        let access = Access::load(Some(&file)).unwrap();
        let peer = ip("10.0.0.9");
        assert_eq!(
            access.check("/api/map", peer, &bearer("s3cret-token")),
            Ok(())
        );
        for wrong in [bearer("s3cret-tokeN"), bearer("s3cret"), HeaderMap::new()] {
            let refused = access.check("/api/map", peer, &wrong).unwrap_err();
            assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
        }
        // A token file that is no token is a start-up error.
        std::fs::write(&file, " \n").unwrap();
        assert!(
            Access::load(Some(&file))
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        std::fs::write(&file, vec![b'a'; 5000]).unwrap();
        assert!(Access::load(Some(&file)).is_err());
        assert!(
            Access::load(Some(&dir))
                .unwrap_err()
                .to_string()
                .contains("regular file")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
