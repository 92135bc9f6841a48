//! Real database and DNS servers for the parser tests, from Debian's packages, each with its
//! own data directory and loopback port (never the system services): MariaDB (`mariadbd`, with
//! the `mariadb` client) and dnsmasq with a fixed zone.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::httplab::{Scratch, free_port};
use crate::wait_until;

/// A MariaDB server on 127.0.0.1 with a fresh data directory, as root, without grant checks
/// (the client protocol, handshake and authentication exchange are still the real ones).
pub struct MariaDb {
    child: Child,
    pub port: u16,
    dir: Scratch,
}

impl MariaDb {
    pub fn start() -> Result<Self> {
        let dir = Scratch::new("mariadb");
        let data = dir.path().join("data");
        let install = Command::new("mariadb-install-db")
            .args([
                "--no-defaults",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .arg(format!("--datadir={}", data.display()))
            .output()
            .context("running mariadb-install-db (Debian package mariadb-server)")?;
        if !install.status.success() {
            bail!(
                "mariadb-install-db failed: {}",
                String::from_utf8_lossy(&install.stderr)
            );
        }
        let port = free_port();
        let child = Command::new("mariadbd")
            .args([
                "--no-defaults",
                "--user=root",
                "--bind-address=127.0.0.1",
                "--skip-grant-tables",
                "--skip-name-resolve",
            ])
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={port}"))
            .arg(format!(
                "--socket={}",
                dir.path().join("mysqld.sock").display()
            ))
            .arg(format!(
                "--pid-file={}",
                dir.path().join("mysqld.pid").display()
            ))
            .arg(format!(
                "--log-error={}",
                dir.path().join("error.log").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mariadbd")?;
        let mut db = MariaDb { child, port, dir };
        wait_until(
            Duration::from_secs(60),
            "mariadbd to accept connections",
            || {
                if let Ok(Some(st)) = db.child.try_wait() {
                    panic!(
                        "mariadbd exited: {st}; {}",
                        std::fs::read_to_string(db.dir.path().join("error.log"))
                            .unwrap_or_default()
                    );
                }
                TcpStream::connect(("127.0.0.1", port)).ok()
            },
        )?;
        Ok(db)
    }

    /// Run `sql` with the `mariadb` client over TCP (no TLS); fails unless `expect_error`.
    pub fn client(&self, sql: &str, expect_error: bool) -> Result<Output> {
        let out = Command::new("mariadb")
            .args([
                "--no-defaults",
                "--protocol=TCP",
                "-h",
                "127.0.0.1",
                "-u",
                "root",
                "--skip-ssl",
                "--batch",
            ])
            .arg(format!("-P{}", self.port))
            .arg("-e")
            .arg(sql)
            .output()
            .context("running the mariadb client")?;
        if out.status.success() == expect_error {
            bail!(
                "mariadb -e {sql:?}: exit {} (expected {}): {}",
                out.status,
                if expect_error { "an error" } else { "success" },
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// dnsmasq on 127.0.0.1 with a fixed zone: `a.test` → 10.1.2.3, `v6.test` → fd00::1, other
/// `*.test` names NXDOMAIN, `*.dead.test` forwarded to a broken upstream that answers every
/// query SERVFAIL (dnsmasq does not answer at all when its upstream is simply unreachable).
pub struct Dnsmasq {
    child: Child,
    pub port: u16,
    _dir: Scratch,
}

impl Dnsmasq {
    pub fn start() -> Result<Self> {
        let dir = Scratch::new("dnsmasq");
        let port = free_port();
        let dead = servfail_upstream()?;
        let child = Command::new("dnsmasq")
            .args([
                "--no-daemon",
                "--no-resolv",
                "--no-hosts",
                "--no-poll",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--user=root",
            ])
            .arg(format!("--port={port}"))
            .arg(format!(
                "--pid-file={}",
                dir.path().join("dnsmasq.pid").display()
            ))
            .args([
                "--address=/a.test/10.1.2.3",
                "--address=/v6.test/fd00::1",
                "--local=/test/",
            ])
            .arg(format!("--server=/dead.test/127.0.0.1#{dead}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting dnsmasq (Debian package dnsmasq-base)")?;
        let mut d = Dnsmasq {
            child,
            port,
            _dir: dir,
        };
        wait_until(Duration::from_secs(20), "dnsmasq to answer", || {
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!("dnsmasq exited: {st}");
            }
            dig(port, &["a.test", "A", "+tries=1", "+time=1"])
                .ok()
                .filter(|o| o.contains("10.1.2.3"))
        })?;
        Ok(d)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A UDP "DNS server" on loopback answering every query with SERVFAIL; returns its port.
fn servfail_upstream() -> Result<u16> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let port = sock.local_addr()?.port();
    std::thread::Builder::new()
        .name("servfail".into())
        .spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                if n < 12 {
                    continue;
                }
                let mut reply = buf[..n].to_vec();
                reply[2] |= 0x80; // QR: a response
                reply[3] = (reply[3] & 0xf0) | 2; // RCODE SERVFAIL (RA and Z kept)
                let _ = sock.send_to(&reply, from);
            }
        })?;
    Ok(port)
}

/// `dig @127.0.0.1 -p port args…`, short output.
pub fn dig(port: u16, args: &[&str]) -> Result<String> {
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .context("running dig (Debian package dnsutils)")?;
    if !out.status.success() {
        bail!(
            "dig {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
