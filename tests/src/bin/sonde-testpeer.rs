//! `sonde-testpeer`: a TCP/UDP traffic generator for Sonde's integration tests.
//!
//! It calls libc directly so each test chooses the exact syscall (read vs recv vs recvmsg ...)
//! that Sonde's probes must observe. Events go to stdout as one JSON object per line; errors go
//! to stderr with a nonzero exit. Every blocking call is bounded (10 s socket timeouts, accept
//! via poll) so a broken test fails instead of hanging CI.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::io::{self, Write as _};
use std::mem;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sonde_tests::pattern;

const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest datagram we accept; bigger than any UDP payload over IPv4/IPv6 without jumbograms.
const MAX_DATAGRAM: usize = 65_536;

const USAGE: &str = "\
usage: sonde-testpeer COMMAND [OPTIONS]
  tcp-server --listen ADDR:PORT --recv-mode read|recv|recvmsg|readv --sizes N,N,... [--reply]
  tcp-client --connect ADDR:PORT --send-mode write|send|sendmsg|writev|sendmsg-many --sizes N,N,...
             [--expect-reply]
  udp-server --listen ADDR:PORT --count N
  udp-client --connect ADDR:PORT --sizes N,N,...
  file-io    --path PATH --size N
  flood      --connect ADDR:PORT --threads T --seconds S --size B
  sink       --listen ADDR:PORT [--max-seconds S]
Message k of a run carries sonde_tests::pattern(k, size). Port 0 picks a free port; the
`listening` event reports the real one.";

type Res<T> = Result<T, String>;

fn main() {
    // EPIPE instead of death by SIGPIPE, so a vanished peer is reported as an error.
    // SAFETY: setting a signal disposition to SIG_IGN has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("sonde-testpeer: {e}");
        std::process::exit(1);
    }
}

fn run(args: &[String]) -> Res<()> {
    let Some((cmd, rest)) = args.split_first() else {
        return Err(format!("missing command\n{USAGE}"));
    };
    match cmd.as_str() {
        "tcp-server" => tcp_server(&Flags::parse(
            rest,
            &["listen", "recv-mode", "sizes"],
            &["reply"],
        )?),
        "tcp-client" => tcp_client(&Flags::parse(
            rest,
            &["connect", "send-mode", "sizes"],
            &["expect-reply"],
        )?),
        "udp-server" => udp_server(&Flags::parse(rest, &["listen", "count"], &[])?),
        "udp-client" => udp_client(&Flags::parse(rest, &["connect", "sizes"], &[])?),
        "file-io" => file_io(&Flags::parse(rest, &["path", "size"], &[])?),
        "flood" => flood(&Flags::parse(
            rest,
            &["connect", "threads", "seconds", "size"],
            &[],
        )?),
        "sink" => sink(&Flags::parse(rest, &["listen", "max-seconds"], &[])?),
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command {other:?}\n{USAGE}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Command-line flags
// ---------------------------------------------------------------------------------------------

/// `--name value` / `--name=value` options and bare `--switch`es, checked against what the
/// command accepts so a typo fails instead of silently changing the test.
struct Flags {
    values: HashMap<String, String>,
    switches: HashSet<String>,
}

impl Flags {
    fn parse(args: &[String], valued: &[&str], switches: &[&str]) -> Res<Self> {
        let mut flags = Self {
            values: HashMap::new(),
            switches: HashSet::new(),
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let name = arg
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {arg:?}"))?;
            let (name, inline) = match name.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (name, None),
            };
            if switches.contains(&name) && inline.is_none() {
                flags.switches.insert(name.to_owned());
            } else if valued.contains(&name) {
                let value = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .ok_or_else(|| format!("--{name} needs a value"))?
                        .clone(),
                };
                flags.values.insert(name.to_owned(), value);
            } else {
                return Err(format!("unknown option --{name}\n{USAGE}"));
            }
        }
        Ok(flags)
    }

    fn get(&self, name: &str) -> Res<&str> {
        self.values
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| format!("--{name} is required"))
    }

    fn parse_as<T: FromStr>(&self, name: &str) -> Res<T>
    where
        T::Err: std::fmt::Display,
    {
        let raw = self.get(name)?;
        raw.parse().map_err(|e| format!("--{name} {raw:?}: {e}"))
    }

    fn parse_or<T: FromStr>(&self, name: &str, default: T) -> Res<T>
    where
        T::Err: std::fmt::Display,
    {
        if self.values.contains_key(name) {
            self.parse_as(name)
        } else {
            Ok(default)
        }
    }

    fn sizes(&self) -> Res<Vec<usize>> {
        self.get("sizes")?
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .map_err(|e| format!("--sizes entry {s:?}: {e}"))
            })
            .collect()
    }

    fn switch(&self, name: &str) -> bool {
        self.switches.contains(name)
    }
}

#[derive(Clone, Copy)]
enum RecvMode {
    Read,
    Recv,
    RecvMsg,
    Readv,
}

impl FromStr for RecvMode {
    type Err = String;
    fn from_str(s: &str) -> Res<Self> {
        Ok(match s {
            "read" => Self::Read,
            "recv" => Self::Recv,
            "recvmsg" => Self::RecvMsg,
            "readv" => Self::Readv,
            _ => return Err("expected read|recv|recvmsg|readv".into()),
        })
    }
}

#[derive(Clone, Copy)]
enum SendMode {
    Write,
    Send,
    SendMsg,
    Writev,
    /// sendmsg of [`MANY_IOVECS`] iovecs (gRPC's C core writes 29 in one sendmsg).
    SendMsgMany,
}

/// iovecs per `sendmsg-many` call: more than the 16 an unrolled eBPF walk reaches.
const MANY_IOVECS: usize = 40;

impl FromStr for SendMode {
    type Err = String;
    fn from_str(s: &str) -> Res<Self> {
        Ok(match s {
            "write" => Self::Write,
            "send" => Self::Send,
            "sendmsg" => Self::SendMsg,
            "writev" => Self::Writev,
            "sendmsg-many" => Self::SendMsgMany,
            _ => return Err("expected write|send|sendmsg|writev|sendmsg-many".into()),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

fn tcp_server(f: &Flags) -> Res<()> {
    let mode: RecvMode = f.parse_as("recv-mode")?;
    let sizes = f.sizes()?;
    let listener = tcp_listen(f.parse_as("listen")?)?;
    emit(json!({"event": "listening", "pid": std::process::id(), "addr": addr_string(&listener)?}));
    let conn = accept_timeout(&listener, IO_TIMEOUT)?;
    let mut received = 0;
    for (seed, &size) in (0u64..).zip(&sizes) {
        let mut buf = vec![0; size];
        recv_exact(&conn, mode, &mut buf).map_err(|e| format!("message {seed}: {e}"))?;
        verify(seed, &buf)?;
        received += size;
        if f.switch("reply") {
            send_all(&conn, SendMode::Write, &buf).map_err(|e| format!("reply {seed}: {e}"))?;
        }
    }
    emit_done(&conn, json!({"received": received}))
}

fn tcp_client(f: &Flags) -> Res<()> {
    let mode: SendMode = f.parse_as("send-mode")?;
    let sizes = f.sizes()?;
    let conn = tcp_connect(f.parse_as("connect")?)?;
    let (mut sent, mut received) = (0, 0);
    // Lock-step (send k, read reply k) keeps both sides' buffers small and the order fixed.
    for (seed, &size) in (0u64..).zip(&sizes) {
        let msg = pattern(seed, size);
        send_all(&conn, mode, &msg).map_err(|e| format!("message {seed}: {e}"))?;
        sent += size;
        if f.switch("expect-reply") {
            let mut buf = vec![0; size];
            recv_exact(&conn, RecvMode::Read, &mut buf)
                .map_err(|e| format!("reply {seed}: {e}"))?;
            verify(seed, &buf)?;
            received += size;
        }
    }
    emit_done(&conn, json!({"sent": sent, "received": received}))
}

fn udp_server(f: &Flags) -> Res<()> {
    let count: u64 = f.parse_as("count")?;
    let sock = udp_socket(f.parse_as("listen")?, true)?;
    emit(json!({"event": "listening", "pid": std::process::id(), "addr": addr_string(&sock)?}));
    let mut buf = vec![0; MAX_DATAGRAM];
    let (mut received, mut last_peer) = (0, None);
    for seed in 0..count {
        let (n, from) = recv_from(&sock, &mut buf).map_err(|e| format!("datagram {seed}: {e}"))?;
        verify(seed, &buf[..n])?;
        send_to(&sock, &buf[..n], from).map_err(|e| format!("echo {seed}: {e}"))?;
        received += n;
        last_peer = Some(from);
    }
    emit(json!({
        "event": "done", "pid": std::process::id(), "local": addr_string(&sock)?,
        "peer": last_peer.map(|p| p.to_string()), "received": received,
    }));
    Ok(())
}

fn udp_client(f: &Flags) -> Res<()> {
    let dst: SocketAddr = f.parse_as("connect")?;
    let sizes = f.sizes()?;
    let sock = udp_socket(dst, false)?;
    let mut buf = vec![0; MAX_DATAGRAM];
    let mut sent = 0;
    for (seed, &size) in (0u64..).zip(&sizes) {
        let msg = pattern(seed, size);
        send_to(&sock, &msg, dst).map_err(|e| format!("datagram {seed}: {e}"))?;
        sent += size;
        let (n, from) = recv_from(&sock, &mut buf).map_err(|e| format!("echo {seed}: {e}"))?;
        if from != dst {
            return Err(format!("echo {seed} came from {from}, expected {dst}"));
        }
        if buf[..n] != msg[..] {
            return Err(format!(
                "echo {seed}: got {n} bytes that differ from the {size} sent"
            ));
        }
    }
    let local = udp_client_local(&sock, dst)?;
    emit(json!({
        "event": "done", "pid": std::process::id(), "local": local.to_string(),
        "peer": dst.to_string(), "sent": sent,
    }));
    Ok(())
}

/// The unbound client's getsockname says 0.0.0.0:port; tests need the 4-tuple the packets
/// carried, so take the source IP the kernel routes to `dst` with (a connected throw-away UDP
/// socket sends nothing) and the port from the real socket.
fn udp_client_local(sock: &OwnedFd, dst: SocketAddr) -> Res<SocketAddr> {
    let probe = socket(&dst, libc::SOCK_DGRAM)?;
    let (sa, len) = to_sockaddr(dst);
    // SAFETY: sa is a valid sockaddr of length len.
    if unsafe { libc::connect(probe.as_raw_fd(), (&raw const sa).cast(), len) } != 0 {
        return Err(errno(&format!("connect (route probe) {dst}")));
    }
    let mut local = local_addr(&probe)?;
    local.set_port(local_addr(sock)?.port());
    Ok(local)
}

/// Regular-file and pipe I/O with the same read/write syscalls the socket commands use, so
/// tests can prove Sonde ignores non-socket file descriptors.
fn file_io(f: &Flags) -> Res<()> {
    let path = f.get("path")?;
    let size: usize = f.parse_as("size")?;
    let data = pattern(0, size);
    let c_path = CString::new(path).map_err(|_| "--path contains a NUL byte".to_owned())?;

    let file = open(&c_path, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC)?;
    send_all(&file, SendMode::Write, &data).map_err(|e| format!("writing {path}: {e}"))?;
    drop(file);
    let file = open(&c_path, libc::O_RDONLY)?;
    let mut back = vec![0; size];
    recv_exact(&file, RecvMode::Read, &mut back).map_err(|e| format!("reading {path}: {e}"))?;
    verify(0, &back)?;

    pipe_roundtrip(&data)?;
    emit(json!({"event": "done", "pid": std::process::id(), "path": path, "bytes": size}));
    Ok(())
}

/// Pushes `data` through a pipe in chunks small enough never to fill it, so one thread can
/// do both ends without blocking.
fn pipe_roundtrip(data: &[u8]) -> Res<()> {
    const CHUNK: usize = 4096;
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(errno("pipe2"));
    }
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let mut back = vec![0; CHUNK];
    for chunk in data.chunks(CHUNK) {
        send_all(&wr, SendMode::Write, chunk).map_err(|e| format!("pipe write: {e}"))?;
        recv_exact(&rd, RecvMode::Read, &mut back[..chunk.len()])
            .map_err(|e| format!("pipe read: {e}"))?;
        if back[..chunk.len()] != *chunk {
            return Err("pipe returned different bytes".into());
        }
    }
    Ok(())
}

/// T connections each writing B-byte messages with write(2) for S seconds.
fn flood(f: &Flags) -> Res<()> {
    let dst: SocketAddr = f.parse_as("connect")?;
    let threads: u64 = f.parse_as("threads")?;
    let seconds: f64 = f.parse_as("seconds")?;
    let size: usize = f.parse_as("size")?;
    let duration = Duration::try_from_secs_f64(seconds).map_err(|e| format!("--seconds: {e}"))?;
    let conns = (0..threads)
        .map(|_| tcp_connect(dst))
        .collect::<Res<Vec<_>>>()?;
    let locals = conns
        .iter()
        .map(|c| local_addr(c).map(|a| a.to_string()))
        .collect::<Res<Vec<_>>>()?;
    emit(json!({
        "event": "connected", "pid": std::process::id(), "peer": dst.to_string(), "locals": locals,
    }));

    let deadline = Instant::now() + duration;
    let workers: Vec<_> = (0u64..)
        .zip(conns)
        .map(|(seed, conn)| {
            std::thread::spawn(move || flood_one(&conn, &pattern(seed, size), deadline))
        })
        .collect();
    let (mut sent, mut messages) = (0u64, 0u64);
    for w in workers {
        let n = w.join().map_err(|_| "flood thread panicked".to_owned())??;
        messages += n;
        sent += n * size as u64;
    }
    emit(json!({
        "event": "done", "pid": std::process::id(), "peer": dst.to_string(), "locals": locals,
        "sent": sent, "messages": messages,
    }));
    Ok(())
}

/// Writes `msg` repeatedly until `deadline`; returns the number of messages written. The
/// payload is generated once per thread (seed = thread index) to keep the flood CPU-cheap.
fn flood_one(conn: &OwnedFd, msg: &[u8], deadline: Instant) -> Res<u64> {
    let mut n = 0;
    while Instant::now() < deadline {
        send_all(conn, SendMode::Write, msg).map_err(|e| format!("flood write: {e}"))?;
        n += 1;
    }
    Ok(n)
}

static TERMINATED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigterm(_: libc::c_int) {
    TERMINATED.store(true, Ordering::SeqCst);
}

/// Accepts any number of connections and discards their data until SIGTERM, then waits for
/// open connections to end (EOF, or the 10 s idle timeout) and reports the total received.
/// `--max-seconds` (default 600) bounds its life in case the test that started it never stops
/// it.
fn sink(f: &Flags) -> Res<()> {
    let max_life = Duration::from_secs(f.parse_or("max-seconds", 600)?);
    install_sigterm_handler()?;
    let listener = tcp_listen(f.parse_as("listen")?)?;
    emit(json!({"event": "listening", "pid": std::process::id(), "addr": addr_string(&listener)?}));
    let received = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let (mut connections, mut drains) = (0, Vec::new());
    while !TERMINATED.load(Ordering::SeqCst) {
        if started.elapsed() > max_life {
            return Err(format!(
                "no SIGTERM within --max-seconds {}",
                max_life.as_secs()
            ));
        }
        // Short poll slices so SIGTERM is noticed promptly even if poll is not interrupted.
        if !poll_readable(listener.as_raw_fd(), Duration::from_millis(200))? {
            continue;
        }
        let conn = accept(&listener)?;
        connections += 1;
        let received = Arc::clone(&received);
        drains.push(std::thread::spawn(move || drain(&conn, &received)));
    }
    // Let open connections reach EOF so `received` counts everything their clients sent.
    for d in drains {
        let _ = d.join();
    }
    emit(json!({
        "event": "done", "pid": std::process::id(), "local": addr_string(&listener)?,
        "received": received.load(Ordering::SeqCst), "connections": connections,
    }));
    Ok(())
}

/// Reads and discards until EOF; an error (e.g. the 10 s idle timeout) just ends this
/// connection, since the sink only exists to absorb traffic.
fn drain(conn: &OwnedFd, total: &AtomicU64) {
    let mut buf = vec![0u8; 65_536];
    loop {
        match recv_some(conn, RecvMode::Read, &mut buf) {
            Ok(0) => return,
            Ok(n) => total.fetch_add(n as u64, Ordering::Relaxed),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("sonde-testpeer: sink connection: {e}");
                return;
            }
        };
    }
}

fn install_sigterm_handler() -> Res<()> {
    // SAFETY: sigaction is zero-initialisable; the handler only stores to an atomic, which is
    // async-signal-safe. No SA_RESTART, so poll returns EINTR on SIGTERM.
    unsafe {
        let mut sa: libc::sigaction = mem::zeroed();
        sa.sa_sigaction = on_sigterm as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut()) != 0 {
            return Err(errno("sigaction(SIGTERM)"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Output and verification
// ---------------------------------------------------------------------------------------------

/// One JSON line, flushed at once: tests wait on these lines with deadlines.
fn emit(v: Value) {
    let mut out = io::stdout().lock();
    // A test that stopped reading stdout does not care; the exit status still tells.
    let _ = writeln!(out, "{v}").and_then(|()| out.flush());
}

/// The `done` event of a TCP command, with the connection's addresses.
fn emit_done(conn: &OwnedFd, mut extra: Value) -> Res<()> {
    let mut ev = json!({
        "event": "done", "pid": std::process::id(),
        "local": local_addr(conn)?.to_string(), "peer": peer_addr(conn)?.to_string(),
    });
    if let (Some(ev), Some(extra)) = (ev.as_object_mut(), extra.as_object_mut()) {
        ev.append(extra);
    }
    emit(ev);
    Ok(())
}

fn verify(seed: u64, got: &[u8]) -> Res<()> {
    let want = pattern(seed, got.len());
    match got.iter().zip(&want).position(|(g, w)| g != w) {
        None => Ok(()),
        Some(at) => Err(format!(
            "message {seed} ({} bytes) differs from its pattern at byte {at}",
            got.len()
        )),
    }
}

fn errno(what: &str) -> String {
    format!("{what}: {}", io::Error::last_os_error())
}

/// Error text for a failed blocking call, naming the timeout instead of "resource unavailable".
fn io_err(what: &str, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            format!("{what}: timed out after {IO_TIMEOUT:?}")
        }
        _ => format!("{what}: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Sockets
// ---------------------------------------------------------------------------------------------

fn socket(addr: &SocketAddr, ty: libc::c_int) -> Res<OwnedFd> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2) call.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(errno("socket"));
    }
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    set_timeouts(&fd)?;
    Ok(fd)
}

/// SO_RCVTIMEO/SO_SNDTIMEO bound every read and write; Linux also applies SO_SNDTIMEO to a
/// blocking connect(2), so an unreachable peer fails after 10 s instead of minutes of SYNs.
fn set_timeouts(fd: &OwnedFd) -> Res<()> {
    let tv = libc::timeval {
        tv_sec: IO_TIMEOUT.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
        setsockopt(fd, libc::SOL_SOCKET, opt, &tv)?;
    }
    Ok(())
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, opt: libc::c_int, val: &T) -> Res<()> {
    // SAFETY: val points to a live T and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (val as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(errno("setsockopt"));
    }
    Ok(())
}

fn bind(fd: &OwnedFd, addr: SocketAddr) -> Res<()> {
    let (sa, len) = to_sockaddr(addr);
    // SAFETY: sa is a valid sockaddr of length len.
    if unsafe { libc::bind(fd.as_raw_fd(), (&raw const sa).cast(), len) } != 0 {
        return Err(errno(&format!("bind {addr}")));
    }
    Ok(())
}

fn tcp_listen(addr: SocketAddr) -> Res<OwnedFd> {
    let fd = socket(&addr, libc::SOCK_STREAM)?;
    // Lets a fixed test port be reused right after a previous run's TIME_WAIT.
    setsockopt(
        &fd,
        libc::SOL_SOCKET,
        libc::SO_REUSEADDR,
        &(1 as libc::c_int),
    )?;
    bind(&fd, addr)?;
    // SAFETY: plain listen(2) on our socket.
    if unsafe { libc::listen(fd.as_raw_fd(), 128) } != 0 {
        return Err(errno("listen"));
    }
    Ok(fd)
}

fn accept_timeout(listener: &OwnedFd, timeout: Duration) -> Res<OwnedFd> {
    let end = Instant::now() + timeout;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("accept: no connection within {timeout:?}"));
        }
        if poll_readable(listener.as_raw_fd(), left)? {
            return accept(listener);
        }
    }
}

fn accept(listener: &OwnedFd) -> Res<OwnedFd> {
    // SAFETY: null address pointers are allowed when the peer address is not wanted.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(errno("accept4"));
    }
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    set_timeouts(&fd)?;
    Ok(fd)
}

/// Waits until `fd` is readable; false on timeout or EINTR (callers re-check their state).
fn poll_readable(fd: RawFd, timeout: Duration) -> Res<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: pfd is one valid pollfd.
    match unsafe { libc::poll(&mut pfd, 1, ms) } {
        n if n > 0 => Ok(true),
        0 => Ok(false),
        _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => Ok(false),
        _ => Err(errno("poll")),
    }
}

fn tcp_connect(addr: SocketAddr) -> Res<OwnedFd> {
    let fd = socket(&addr, libc::SOCK_STREAM)?;
    let (sa, len) = to_sockaddr(addr);
    // SAFETY: sa is a valid sockaddr of length len.
    if unsafe { libc::connect(fd.as_raw_fd(), (&raw const sa).cast(), len) } != 0 {
        let e = io::Error::last_os_error();
        // A blocking connect that hits SO_SNDTIMEO reports EINPROGRESS.
        return Err(match e.raw_os_error() {
            Some(libc::EINPROGRESS) => format!("connect {addr}: timed out after {IO_TIMEOUT:?}"),
            _ => format!("connect {addr}: {e}"),
        });
    }
    Ok(fd)
}

/// A UDP socket; bound to `addr` for a server, left unbound (and unconnected) for a client
/// so that sendto/recvfrom carry the addresses.
fn udp_socket(addr: SocketAddr, bind_it: bool) -> Res<OwnedFd> {
    let fd = socket(&addr, libc::SOCK_DGRAM)?;
    if bind_it {
        bind(&fd, addr)?;
    }
    Ok(fd)
}

fn local_addr(fd: &OwnedFd) -> Res<SocketAddr> {
    sock_name(fd, libc::getsockname, "getsockname")
}

fn peer_addr(fd: &OwnedFd) -> Res<SocketAddr> {
    sock_name(fd, libc::getpeername, "getpeername")
}

/// The local address as it appears in events.
fn addr_string(fd: &OwnedFd) -> Res<String> {
    local_addr(fd).map(|a| a.to_string())
}

type SockNameFn =
    unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

fn sock_name(fd: &OwnedFd, call: SockNameFn, what: &str) -> Res<SocketAddr> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut sa: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: sa has room for any socket address and len says so.
    if unsafe { call(fd.as_raw_fd(), (&raw mut sa).cast(), &mut len) } != 0 {
        return Err(errno(what));
    }
    from_sockaddr(&sa)
}

fn to_sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in>().write(sin) };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in6>().write(sin6) };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn from_sockaddr(sa: &libc::sockaddr_storage) -> Res<SocketAddr> {
    match libc::c_int::from(sa.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin =
                unsafe { &*(sa as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = u32::from_be(sin.sin_addr.s_addr).into();
            Ok(SocketAddrV4::new(ip, u16::from_be(sin.sin_port)).into())
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 =
                unsafe { &*(sa as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = sin6.sin6_addr.s6_addr.into();
            Ok(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )
            .into())
        }
        family => Err(format!("unexpected address family {family}")),
    }
}

fn open(path: &CString, flags: libc::c_int) -> Res<OwnedFd> {
    // SAFETY: path is NUL-terminated; the mode argument is read only with O_CREAT.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            flags | libc::O_CLOEXEC,
            0o644 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(errno(&format!("open {}", path.to_string_lossy())));
    }
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

// ---------------------------------------------------------------------------------------------
// Data transfer with a chosen syscall
// ---------------------------------------------------------------------------------------------

/// Splits `len` bytes into up to three deliberately uneven iovec lengths (~1/7, ~4/7, ~2/7),
/// so captures must stitch segments of different sizes back together.
fn split3(len: usize) -> [usize; 3] {
    if len < 3 {
        return [len, 0, 0];
    }
    let first = (len / 7).max(1);
    let rest = len - first;
    let second = (rest * 2 / 3).clamp(1, rest - 1);
    [first, second, rest - second]
}

/// iovecs covering `len` bytes at `base`, split by [`split3`]; returns them and their count.
fn iovecs(base: *mut u8, len: usize) -> ([libc::iovec; 3], usize) {
    let empty = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    let mut iov = [empty; 3];
    let (mut off, mut count) = (0, 0);
    for part in split3(len).into_iter().filter(|&p| p > 0) {
        iov[count] = libc::iovec {
            iov_base: base.wrapping_add(off).cast(),
            iov_len: part,
        };
        off += part;
        count += 1;
    }
    (iov, count)
}

/// `len` bytes at `base` as up to [`MANY_IOVECS`] iovecs of (nearly) equal length.
fn many_iovecs(base: *mut u8, len: usize) -> Vec<libc::iovec> {
    let n = len.clamp(1, MANY_IOVECS);
    let (part, extra) = (len / n, len % n);
    let mut off = 0;
    (0..n)
        .map(|i| {
            let l = part + usize::from(i < extra);
            let v = libc::iovec {
                iov_base: base.wrapping_add(off).cast(),
                iov_len: l,
            };
            off += l;
            v
        })
        .collect()
}

/// One receive syscall of the chosen kind into `buf`.
fn recv_some(fd: &OwnedFd, mode: RecvMode, buf: &mut [u8]) -> io::Result<usize> {
    let fd = fd.as_raw_fd();
    let (ptr, len) = (buf.as_mut_ptr(), buf.len());
    let (iov, count) = iovecs(ptr, len);
    // SAFETY: every pointer/length pair describes (part of) `buf`, which outlives the call.
    let n = unsafe {
        match mode {
            RecvMode::Read => libc::read(fd, ptr.cast(), len),
            RecvMode::Recv => libc::recv(fd, ptr.cast(), len, 0),
            RecvMode::Readv => libc::readv(fd, iov.as_ptr(), count as libc::c_int),
            RecvMode::RecvMsg => {
                let mut msg: libc::msghdr = mem::zeroed();
                msg.msg_iov = iov.as_ptr().cast_mut();
                msg.msg_iovlen = count as _;
                libc::recvmsg(fd, &mut msg, 0)
            }
        }
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// One send syscall of the chosen kind from `buf`. MSG_NOSIGNAL is redundant with the ignored
/// SIGPIPE but keeps send/sendmsg self-contained.
fn send_some(fd: &OwnedFd, mode: SendMode, buf: &[u8]) -> io::Result<usize> {
    let fd = fd.as_raw_fd();
    let (ptr, len) = (buf.as_ptr(), buf.len());
    // The kernel only reads through these iovecs; *mut is just the C type.
    let (iov, count) = iovecs(ptr.cast_mut(), len);
    // SAFETY: every pointer/length pair describes (part of) `buf`, which outlives the call.
    let n = unsafe {
        match mode {
            SendMode::Write => libc::write(fd, ptr.cast(), len),
            SendMode::Send => libc::send(fd, ptr.cast(), len, libc::MSG_NOSIGNAL),
            SendMode::Writev => libc::writev(fd, iov.as_ptr(), count as libc::c_int),
            SendMode::SendMsg => {
                let mut msg: libc::msghdr = mem::zeroed();
                msg.msg_iov = iov.as_ptr().cast_mut();
                msg.msg_iovlen = count as _;
                libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL)
            }
            SendMode::SendMsgMany => {
                let many = many_iovecs(ptr.cast_mut(), len);
                let mut msg: libc::msghdr = mem::zeroed();
                msg.msg_iov = many.as_ptr().cast_mut();
                msg.msg_iovlen = many.len() as _;
                libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL)
            }
        }
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Fills `buf` completely, looping over short reads (each retry uses the same syscall).
fn recv_exact(fd: &OwnedFd, mode: RecvMode, buf: &mut [u8]) -> Res<()> {
    let mut done = 0;
    while done < buf.len() {
        match recv_some(fd, mode, &mut buf[done..]) {
            Ok(0) => return Err(format!("EOF after {done} of {} bytes", buf.len())),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(io_err(
                    &format!("receive after {done} of {} bytes", buf.len()),
                    &e,
                ));
            }
        }
    }
    Ok(())
}

/// Sends all of `buf`: one syscall when the kernel takes it whole, more on short writes.
fn send_all(fd: &OwnedFd, mode: SendMode, buf: &[u8]) -> Res<()> {
    let mut done = 0;
    while done < buf.len() {
        match send_some(fd, mode, &buf[done..]) {
            Ok(0) => {
                return Err(format!(
                    "send made no progress after {done} of {} bytes",
                    buf.len()
                ));
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(io_err(
                    &format!("send after {done} of {} bytes", buf.len()),
                    &e,
                ));
            }
        }
    }
    Ok(())
}

fn send_to(fd: &OwnedFd, buf: &[u8], to: SocketAddr) -> Res<()> {
    let (sa, len) = to_sockaddr(to);
    // SAFETY: buf and sa are valid for the lengths given.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            0,
            (&raw const sa).cast(),
            len,
        )
    };
    match usize::try_from(n) {
        Ok(n) if n == buf.len() => Ok(()),
        Ok(n) => Err(format!("sendto {to}: sent {n} of {} bytes", buf.len())),
        Err(_) => Err(io_err(&format!("sendto {to}"), &io::Error::last_os_error())),
    }
}

fn recv_from(fd: &OwnedFd, buf: &mut [u8]) -> Res<(usize, SocketAddr)> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut sa: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    loop {
        // SAFETY: buf and sa are valid for the lengths given.
        let n = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&raw mut sa).cast(),
                &mut len,
            )
        };
        match usize::try_from(n) {
            Ok(n) => return Ok((n, from_sockaddr(&sa)?)),
            Err(_) => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(io_err("recvfrom", &e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split3_is_uneven_and_covers_everything() {
        for len in [0, 1, 2, 3, 10, 5120, 102_400] {
            let parts = split3(len);
            assert_eq!(parts.iter().sum::<usize>(), len, "{len}: {parts:?}");
            if len >= 3 {
                assert!(parts.iter().all(|&p| p > 0), "{len}: {parts:?}");
            }
        }
        let [a, b, c] = split3(5120);
        assert!(a != b && b != c && a != c);
    }

    #[test]
    fn sockaddr_round_trips() {
        for addr in ["10.77.3.1:8080", "[::1]:443", "[fe80::1%2]:9"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let (sa, _) = to_sockaddr(addr);
            assert_eq!(from_sockaddr(&sa).unwrap(), addr);
        }
    }
}
