//! Real database and DNS servers for the parser tests, from Debian's packages, each with its
//! own data directory and loopback port (never the system services): MariaDB (`mariadbd`, with
//! the `mariadb` client), PostgreSQL (`initdb`, `pg_ctl`, with `psql`), dnsmasq with a fixed
//! zone, and Redis (`redis-server`, with `redis-cli` and `redis-benchmark`).

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
        Self::start_with(&[])
    }

    /// With TLS: a certificate made with `openssl` (`httplab::make_certificate`) in the
    /// server's own directory; clients ask for TLS with [`Self::client_tls`].
    pub fn start_tls() -> Result<Self> {
        let certs = Scratch::new("mariadb-cert");
        crate::httplab::make_certificate(certs.path())?;
        let db = Self::start_with(&[
            format!("--ssl-cert={}", certs.path().join("cert.pem").display()),
            format!("--ssl-key={}", certs.path().join("key.pem").display()),
        ])?;
        // The server has read them at start.
        drop(certs);
        Ok(db)
    }

    fn start_with(extra: &[String]) -> Result<Self> {
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
            .args(extra)
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
        self.run_client(&["--skip-ssl"], sql, expect_error)
    }

    /// Run `sql` with the `mariadb` client over TLS (the server's certificate not verified:
    /// it is self-signed); fails unless `expect_error`.
    pub fn client_tls(&self, sql: &str, expect_error: bool) -> Result<Output> {
        self.run_client(
            &["--ssl", "--skip-ssl-verify-server-cert"],
            sql,
            expect_error,
        )
    }

    fn run_client(&self, tls: &[&str], sql: &str, expect_error: bool) -> Result<Output> {
        let out = Command::new("mariadb")
            .args([
                "--no-defaults",
                "--protocol=TCP",
                "-h",
                "127.0.0.1",
                "-u",
                "root",
                "--batch",
            ])
            .args(tls)
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

/// A minimal MySQL client speaking the binary protocol for prepared statements (what a Rust
/// application's driver sends: COM_STMT_PREPARE, COM_STMT_EXECUTE), written here so the test
/// controls every packet. Works against a server started with `--skip-grant-tables`.
pub struct RawMysql {
    s: TcpStream,
    seq: u8,
    /// Capabilities both sides agreed on.
    deprecate_eof: bool,
}

const CLIENT_LONG_PASSWORD: u32 = 1;
const CLIENT_PROTOCOL_41: u32 = 0x200;
const CLIENT_TRANSACTIONS: u32 = 0x2000;
const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
const CLIENT_PLUGIN_AUTH: u32 = 0x8_0000;
const CLIENT_DEPRECATE_EOF: u32 = 0x100_0000;

impl RawMysql {
    pub fn connect(port: u16) -> Result<Self> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut c = RawMysql {
            s,
            seq: 0,
            deprecate_eof: false,
        };
        let hello = c.read_packet()?;
        // protocol version, server version\0, thread id (4), salt (8), filler, caps low (2)…
        let nul = hello[1..]
            .iter()
            .position(|b| *b == 0)
            .context("handshake without version")?
            + 1;
        let caps_low = u16::from_le_bytes([hello[nul + 14], hello[nul + 15]]) as u32;
        let caps_high = u16::from_le_bytes([hello[nul + 19], hello[nul + 20]]) as u32;
        let server_caps = caps_low | (caps_high << 16);
        let mut caps = CLIENT_LONG_PASSWORD
            | CLIENT_PROTOCOL_41
            | CLIENT_TRANSACTIONS
            | CLIENT_SECURE_CONNECTION
            | CLIENT_PLUGIN_AUTH;
        if server_caps & CLIENT_DEPRECATE_EOF != 0 {
            caps |= CLIENT_DEPRECATE_EOF;
            c.deprecate_eof = true;
        }
        let mut resp = Vec::new();
        resp.extend_from_slice(&caps.to_le_bytes());
        resp.extend_from_slice(&(16u32 << 20).to_le_bytes());
        resp.push(33); // utf8
        resp.extend_from_slice(&[0; 23]);
        resp.extend_from_slice(b"root\0");
        resp.push(0); // empty auth response
        resp.extend_from_slice(b"mysql_native_password\0");
        c.seq = 1;
        c.write_packet(&resp)?;
        loop {
            let p = c.read_packet()?;
            match p.first() {
                Some(0x00) => break,
                Some(0xff) => bail!(
                    "authentication refused: {}",
                    String::from_utf8_lossy(&p[9..])
                ),
                // An auth switch or more data: answer with an empty response.
                Some(0xfe) | Some(0x01) => c.write_packet(&[])?,
                _ => bail!("unexpected packet during authentication"),
            }
        }
        Ok(c)
    }

    fn read_packet(&mut self) -> Result<Vec<u8>> {
        use std::io::Read as _;
        let mut head = [0u8; 4];
        self.s.read_exact(&mut head)?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
        self.seq = head[3].wrapping_add(1);
        let mut body = vec![0u8; len];
        self.s.read_exact(&mut body)?;
        Ok(body)
    }

    fn write_packet(&mut self, body: &[u8]) -> Result<()> {
        use std::io::Write as _;
        let mut p = (body.len() as u32).to_le_bytes()[..3].to_vec();
        p.push(self.seq);
        p.extend_from_slice(body);
        self.seq = self.seq.wrapping_add(1);
        self.s.write_all(&p)?;
        Ok(())
    }

    fn command(&mut self, cmd: u8, payload: &[u8]) -> Result<()> {
        self.seq = 0;
        let mut body = vec![cmd];
        body.extend_from_slice(payload);
        self.write_packet(&body)
    }

    /// Skip `n` definition packets and, without DEPRECATE_EOF, the EOF after them.
    fn skip_definitions(&mut self, n: usize) -> Result<()> {
        for _ in 0..n {
            self.read_packet()?;
        }
        if n > 0 && !self.deprecate_eof {
            self.read_packet()?;
        }
        Ok(())
    }

    /// COM_STMT_PREPARE: the statement id and its parameter count.
    pub fn prepare(&mut self, sql: &str) -> Result<(u32, u16)> {
        self.command(0x16, sql.as_bytes())?;
        let p = self.read_packet()?;
        if p.first() != Some(&0x00) {
            bail!(
                "prepare failed: {}",
                String::from_utf8_lossy(p.get(9..).unwrap_or(&[]))
            );
        }
        let id = u32::from_le_bytes([p[1], p[2], p[3], p[4]]);
        let cols = u16::from_le_bytes([p[5], p[6]]);
        let params = u16::from_le_bytes([p[7], p[8]]);
        self.skip_definitions(params as usize)?;
        self.skip_definitions(cols as usize)?;
        Ok((id, params))
    }

    /// COM_STMT_EXECUTE with integer parameters; returns the rows of the result set.
    pub fn execute(&mut self, id: u32, params: &[i64]) -> Result<usize> {
        let mut b = id.to_le_bytes().to_vec();
        b.push(0); // CURSOR_TYPE_NO_CURSOR
        b.extend_from_slice(&1u32.to_le_bytes()); // iteration count
        if !params.is_empty() {
            b.extend(std::iter::repeat_n(0u8, params.len().div_ceil(8))); // NULL bitmap
            b.push(1); // new params bound
            for _ in params {
                b.extend_from_slice(&[0x08, 0x00]); // MYSQL_TYPE_LONGLONG, signed
            }
            for v in params {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        self.command(0x17, &b)?;
        let first = self.read_packet()?;
        match first.first() {
            Some(0x00) => return Ok(0),
            Some(0xff) => bail!(
                "execute failed: {}",
                String::from_utf8_lossy(first.get(9..).unwrap_or(&[]))
            ),
            _ => {}
        }
        let cols = first[0] as usize;
        self.skip_definitions(cols)?;
        let mut rows = 0;
        loop {
            let p = self.read_packet()?;
            if p.first() == Some(&0xfe) && p.len() < 0xff_ffff {
                return Ok(rows);
            }
            rows += 1;
        }
    }

    /// COM_STMT_CLOSE, then COM_QUIT.
    pub fn close(mut self, id: u32) -> Result<()> {
        self.command(0x19, &id.to_le_bytes())?;
        self.command(0x01, &[])?;
        Ok(())
    }
}

/// A Redis server on 127.0.0.1, no persistence, its working directory a scratch one.
pub struct Redis {
    child: Child,
    pub port: u16,
    _dir: Scratch,
}

impl Redis {
    pub fn start() -> Result<Self> {
        let dir = Scratch::new("redis");
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--protected-mode", "no"])
            .arg("--port")
            .arg(port.to_string())
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (Debian package redis-server)")?;
        let mut r = Redis {
            child,
            port,
            _dir: dir,
        };
        wait_until(Duration::from_secs(20), "redis-server to answer", || {
            if let Ok(Some(st)) = r.child.try_wait() {
                panic!("redis-server exited: {st}");
            }
            r.cli(&["PING"]).ok().filter(|o| o.trim() == "PONG")
        })?;
        Ok(r)
    }

    /// `redis-cli -p port args…`: its output (redis-cli exits 0 on error replies too).
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running redis-cli (Debian package redis-tools)")?;
        if !out.status.success() {
            bail!(
                "redis-cli {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `redis-cli` reading commands from `script`, one a line, all on one connection.
    pub fn cli_script(&self, script: &str) -> Result<String> {
        use std::io::Write as _;
        let mut child = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running redis-cli (Debian package redis-tools)")?;
        child
            .stdin
            .take()
            .context("redis-cli's stdin")?
            .write_all(script.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("redis-cli: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Calls per command from `INFO commandstats`, the server's truth about what it ran
    /// (rejected calls included), named as Sonde names operations: `SET`, `CONFIG GET`.
    pub fn command_calls(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        let info = self.cli(&["INFO", "commandstats"])?;
        let mut calls = std::collections::BTreeMap::new();
        for line in info.lines() {
            let Some((name, stats)) = line
                .trim()
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let field = |k: &str| -> u64 {
                stats
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('=')?.parse().ok())
                    .unwrap_or(0)
            };
            calls.insert(
                name.replace('|', " ").to_ascii_uppercase(),
                field("calls") + field("rejected_calls"),
            );
        }
        Ok(calls)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throwaway PostgreSQL cluster (Debian's `postgresql` package): `initdb` as user postgres
/// in a scratch directory (trust authentication, no TLS), `pg_ctl` on a free loopback port;
/// stopped and removed on drop.
pub struct Postgres {
    pub port: u16,
    data: std::path::PathBuf,
    dir: Scratch,
}

/// Where Debian keeps the server binaries of its one PostgreSQL version.
fn pg_bin(name: &str) -> std::path::PathBuf {
    let mut versions: Vec<std::path::PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    versions.sort();
    versions
        .last()
        .map(|v| v.join("bin").join(name))
        .unwrap_or_else(|| name.into())
}

impl Postgres {
    pub fn start() -> Result<Self> {
        Self::start_with(false)
    }

    /// With TLS (`ssl = on`, a certificate made with `openssl`, owned by the server's user as
    /// it requires); clients ask for it with [`Self::psql_tls`].
    pub fn start_tls() -> Result<Self> {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Result<Self> {
        let dir = Scratch::new("postgres");
        let uid = postgres_uid()?;
        std::os::unix::fs::chown(dir.path(), Some(uid), None)?;
        let mut tls_opts = String::new();
        if tls {
            crate::httplab::make_certificate(dir.path())?;
            for f in ["cert.pem", "key.pem"] {
                std::os::unix::fs::chown(dir.path().join(f), Some(uid), None)?;
            }
            std::fs::set_permissions(
                dir.path().join("key.pem"),
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )?;
            tls_opts = format!(
                " -c ssl=on -c ssl_cert_file={d}/cert.pem -c ssl_key_file={d}/key.pem",
                d = dir.path().display()
            );
        }
        let data = dir.path().join("data");
        let as_postgres = |bin: &str| {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(pg_bin(bin));
            c
        };
        let init = as_postgres("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .context("running initdb (Debian package postgresql)")?;
        if !init.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&init.stderr));
        }
        let port = free_port();
        let opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off{tls_opts}",
            dir.path().display()
        );
        let start = as_postgres("pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(&data)
            .args(["-o", &opts, "-l"])
            .arg(dir.path().join("log"))
            .arg("start")
            .stdout(Stdio::null())
            .output()
            .context("running pg_ctl start")?;
        let db = Postgres { port, data, dir };
        if !start.status.success() {
            bail!(
                "pg_ctl start failed: {}{}",
                String::from_utf8_lossy(&start.stderr),
                std::fs::read_to_string(db.dir.path().join("log")).unwrap_or_default()
            );
        }
        wait_until(
            Duration::from_secs(60),
            "postgres to accept connections",
            || TcpStream::connect(("127.0.0.1", port)).ok(),
        )?;
        Ok(db)
    }

    /// `psql` over TCP with each of `commands` as a `-c` (one connection; a `-c` with several
    /// statements is one simple Query). Fails unless `expect_error` says whether one fails.
    pub fn psql(&self, commands: &[&str], expect_error: bool) -> Result<Output> {
        self.run_psql("prefer", commands, expect_error)
    }

    /// As [`Self::psql`], with TLS required (`sslmode=require`: the certificate is not
    /// verified, it is self-signed).
    pub fn psql_tls(&self, commands: &[&str], expect_error: bool) -> Result<Output> {
        self.run_psql("require", commands, expect_error)
    }

    fn run_psql(&self, sslmode: &str, commands: &[&str], expect_error: bool) -> Result<Output> {
        let mut c = Command::new("psql");
        c.env("PGSSLMODE", sslmode);
        // psql's default sslmode (prefer): an SSLRequest first, which the server declines.
        c.args([
            "-X",
            "-q",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
        ])
        .arg("-p")
        .arg(self.port.to_string());
        for cmd in commands {
            c.arg("-c").arg(cmd);
        }
        let out = c.output().context("running psql")?;
        let failed = !out.status.success() || !out.stderr.is_empty();
        if failed != expect_error {
            bail!(
                "psql {commands:?}: exit {} (expected {}): {}",
                out.status,
                if expect_error { "an error" } else { "success" },
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out)
    }
}

fn postgres_uid() -> Result<u32> {
    let out = Command::new("id").args(["-u", "postgres"]).output()?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("no user postgres (Debian package postgresql)")
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(pg_bin("pg_ctl"))
            .args(["-m", "immediate", "-w", "-D"])
            .arg(&self.data)
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A minimal PostgreSQL client speaking the extended query protocol (Parse, Bind, Describe,
/// Execute, Sync, pipelined), what drivers such as psycopg 3, asyncpg or JDBC send; written
/// here so the test controls every message. Trust authentication only.
pub struct RawPg {
    s: TcpStream,
    buf: Vec<u8>,
}

/// What the server answered a group up to its ReadyForQuery: rows per CommandComplete, and
/// the SQLSTATE of an error.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PgAnswer {
    pub tags: Vec<String>,
    pub rows: Vec<u64>,
    pub sqlstate: Option<String>,
}

impl RawPg {
    pub fn connect(port: u16) -> Result<Self> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut c = RawPg { s, buf: Vec::new() };
        let mut params = Vec::new();
        for kv in ["user", "postgres", "database", "postgres"] {
            params.extend_from_slice(kv.as_bytes());
            params.push(0);
        }
        params.push(0);
        let mut m = ((params.len() + 8) as u32).to_be_bytes().to_vec();
        m.extend_from_slice(&196_608u32.to_be_bytes());
        m.extend_from_slice(&params);
        c.write(&m)?;
        let a = c.until_ready()?;
        if let Some(e) = a.sqlstate {
            bail!("startup refused: {e}");
        }
        Ok(c)
    }

    fn write(&mut self, b: &[u8]) -> Result<()> {
        use std::io::Write as _;
        self.s.write_all(b)?;
        Ok(())
    }

    fn msg(ty: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![ty];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    fn cstr(s: &str) -> Vec<u8> {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        v
    }

    pub fn parse(name: &str, sql: &str) -> Vec<u8> {
        let mut b = Self::cstr(name);
        b.extend_from_slice(&Self::cstr(sql));
        b.extend_from_slice(&[0, 0]);
        Self::msg(b'P', &b)
    }

    /// Bind text parameters to the unnamed portal.
    pub fn bind(statement: &str, values: &[&str]) -> Vec<u8> {
        let mut b = Self::cstr("");
        b.extend_from_slice(&Self::cstr(statement));
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&(values.len() as u16).to_be_bytes());
        for v in values {
            b.extend_from_slice(&(v.len() as u32).to_be_bytes());
            b.extend_from_slice(v.as_bytes());
        }
        b.extend_from_slice(&[0, 0]);
        Self::msg(b'B', &b)
    }

    pub fn describe_statement(name: &str) -> Vec<u8> {
        let mut b = vec![b'S'];
        b.extend_from_slice(&Self::cstr(name));
        Self::msg(b'D', &b)
    }

    pub fn execute() -> Vec<u8> {
        let mut b = Self::cstr("");
        b.extend_from_slice(&0u32.to_be_bytes());
        Self::msg(b'E', &b)
    }

    pub fn sync() -> Vec<u8> {
        Self::msg(b'S', &[])
    }

    /// Send `messages` in one write (a pipeline), then read `groups` answers (one per Sync).
    pub fn pipeline(&mut self, messages: &[Vec<u8>], groups: usize) -> Result<Vec<PgAnswer>> {
        self.write(&messages.concat())?;
        (0..groups).map(|_| self.until_ready()).collect()
    }

    fn until_ready(&mut self) -> Result<PgAnswer> {
        use std::io::Read as _;
        let mut a = PgAnswer::default();
        let mut rows = 0;
        loop {
            while self.buf.len() >= 5 {
                let n = u32::from_be_bytes(self.buf[1..5].try_into()?) as usize;
                if self.buf.len() < 1 + n {
                    break;
                }
                let m: Vec<u8> = self.buf.drain(..1 + n).collect();
                let body = &m[5..];
                match m[0] {
                    b'D' => rows += 1,
                    b'C' => {
                        let tag = String::from_utf8_lossy(&body[..body.len() - 1]).into_owned();
                        a.tags.push(tag);
                        a.rows.push(std::mem::take(&mut rows));
                    }
                    b'E' => {
                        let mut f = body;
                        while let Some((&k, rest)) = f.split_first() {
                            if k == 0 {
                                break;
                            }
                            let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
                            if k == b'C' {
                                a.sqlstate = Some(String::from_utf8_lossy(&rest[..end]).into());
                            }
                            f = rest.get(end + 1..).unwrap_or(&[]);
                        }
                    }
                    b'R' if body.get(..4) != Some(&[0, 0, 0, 0]) => {
                        bail!("the server asks for a password (trust authentication only)")
                    }
                    b'Z' => return Ok(a),
                    _ => {}
                }
            }
            let mut chunk = [0u8; 8192];
            let n = self.s.read(&mut chunk)?;
            if n == 0 {
                bail!("the server closed the connection");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub fn terminate(mut self) -> Result<()> {
        self.write(&Self::msg(b'X', &[]))
    }
}
