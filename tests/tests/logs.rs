//! stdout/stderr capture end to end, for real: the eBPF programs load and attach in this
//! process, children write known lines to pipes, a unix socket and a TCP socket, and the
//! `Event::Log` chunks of their pids must carry the fd, the byte counts and the content; fed
//! through the line splitter and the template miner, the three `timed out` lines must become
//! one error template counted three times. A write to an inet socket on fd 1 is socket data,
//! never a log; the daemon's own writes are never captured; the feature can be turned off.
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sonde_capture::events::{Event, LogChunk, StdStream};
use sonde_capture::{Capture, CaptureOptions, monotonic_now_ns};
use sonde_logs::{LogMiner, LogMinerConfig, Stream, unix_ms_of};
use sonde_tests::require_root;

const T: Duration = Duration::from_secs(20);

fn options() -> CaptureOptions {
    CaptureOptions {
        // Only the syscall programs: the network probes are not what is tested here.
        network: false,
        ..CaptureOptions::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Decodes events until `done(events so far)` holds or the deadline passes.
async fn collect_until(
    capture: &mut Capture,
    timeout: Duration,
    mut done: impl FnMut(&[Event]) -> bool,
) -> Vec<Event> {
    let deadline = Instant::now() + timeout;
    let mut all = Vec::new();
    let mut batch = Vec::new();
    while !done(&all) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let _ = tokio::time::timeout(
            left.min(Duration::from_millis(100)),
            capture.next_batch(&mut batch, 4096),
        )
        .await;
        all.append(&mut batch);
    }
    all
}

fn logs_of(events: &[Event], pid: u32) -> Vec<&LogChunk> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Log(l) if l.task.tgid == pid => Some(l),
            _ => None,
        })
        .collect()
}

fn text(l: &LogChunk) -> &str {
    std::str::from_utf8(&l.payload).expect("utf-8 payload")
}

/// The cgroup v2 id of this process's cgroup (its directory's inode), which children inherit.
fn own_cgroup_id() -> Option<u64> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        post.starts_with("cgroup2 ")
            .then(|| pre.split(' ').nth(4).map(str::to_string))
            .flatten()
    })?;
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    std::fs::metadata(format!("{mount}{path}"))
        .ok()
        .map(|m| m.ino())
}

#[test]
fn stdout_and_stderr_lines_become_one_error_template() {
    require_root();
    let rt = runtime();
    rt.block_on(async {
        let mut capture = Capture::start(&options()).expect("capture starts");
        let before = monotonic_now_ns();
        // The test process itself writes to stderr: never captured (it is the "daemon").
        let own = b"this is the daemon's own stderr\n";
        // SAFETY: writing a valid buffer to fd 2.
        unsafe { libc::write(2, own.as_ptr().cast(), own.len()) };
        // perl's syswrite is exactly one write(2) on the fd named: 1 or 2.
        let child = Command::new("/usr/bin/perl")
            .args([
                "-e",
                r#"syswrite(STDERR, "ERROR upstream timed out after $_ ms\n") for 1..3;
                   syswrite(STDOUT, "INFO served request 7 in 12 ms\n");
                   syswrite(STDOUT, ("0" x 600) . "\n");"#,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("perl starts");
        let pid = child.id();
        let out = child.wait_with_output().expect("perl runs");
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "ERROR upstream timed out after 1 ms\nERROR upstream timed out after 2 ms\n\
             ERROR upstream timed out after 3 ms\n",
            "what perl wrote to stderr"
        );

        let events = collect_until(&mut capture, T, |ev| {
            let logs = logs_of(ev, pid);
            logs.iter().filter(|l| l.fd == 2).count() >= 3
                && logs
                    .iter()
                    .filter(|l| l.fd == 1)
                    .map(|l| l.len)
                    .sum::<u64>()
                    >= 31 + 601
        })
        .await;
        let after = monotonic_now_ns();
        let logs = logs_of(&events, pid);

        let stderr: Vec<&&LogChunk> = logs.iter().filter(|l| l.fd == 2).collect();
        assert_eq!(stderr.len(), 3, "one chunk per echo: {logs:#?}");
        let cgroup = own_cgroup_id();
        for (i, l) in stderr.iter().enumerate() {
            let want = format!("ERROR upstream timed out after {} ms\n", i + 1);
            assert_eq!(text(l), want);
            assert_eq!(l.len, want.len() as u64);
            assert_eq!(l.payload.len(), want.len());
            assert_eq!(l.stream, StdStream::Stderr);
            assert_eq!(l.task.comm, "perl");
            assert_eq!(l.task.tid, pid, "single-threaded: tid = pid");
            assert_eq!(l.syscall, "write");
            assert!(!l.unix_socket && !l.read_failed);
            assert!(
                before <= l.ts_ns && l.ts_ns <= after,
                "timestamp in the test's window"
            );
            if let Some(id) = cgroup {
                assert_eq!(l.cgroup_id, id, "the writer's cgroup v2 id");
            }
        }

        let stdout: Vec<&&LogChunk> = logs.iter().filter(|l| l.fd == 1).collect();
        assert_eq!(stdout[0].stream, StdStream::Stdout);
        assert_eq!(text(stdout[0]), "INFO served request 7 in 12 ms\n");
        // 601 bytes written at once, 512 captured (the default stdio_bytes).
        let long = stdout
            .iter()
            .find(|l| l.len == 601)
            .unwrap_or_else(|| panic!("the 601-byte write: {stdout:#?}"));
        assert_eq!(long.payload.len(), 512);
        assert_eq!(long.truncated(), 89);
        assert!(long.payload.iter().all(|&b| b == b'0'));

        assert!(
            events
                .iter()
                .all(|e| !matches!(e, Event::Log(l) if l.task.tgid == std::process::id())),
            "the daemon's own writes are not captured"
        );
        let stats = capture.stats().expect("stats");
        assert!(stats.total(sonde_common::stat::LOG_EVENTS) >= 5);
        assert!(stats.total(sonde_common::stat::LOG_BYTES_TRUNCATED) >= 89);

        // Lines → templates (raw samples on: the sample is checked below).
        let mut miner = LogMiner::new(LogMinerConfig::default()).keep_samples(true);
        for l in &logs {
            miner.observe_chunk("product", l, unix_ms_of(l.ts_ns));
        }
        let now = unix_ms_of(monotonic_now_ns());
        let templates = miner.templates(Some("product"), now - 120_000, now + 1);
        let errors: Vec<_> = templates.iter().filter(|t| t.is_error).collect();
        assert_eq!(errors.len(), 1, "{templates:#?}");
        assert_eq!(errors[0].template, "ERROR upstream timed out after <*> ms");
        assert_eq!(errors[0].count, 3);
        assert_eq!(errors[0].stream, Stream::Stderr);
        assert_eq!(errors[0].sample, "ERROR upstream timed out after 1 ms");
        let info = templates
            .iter()
            .find(|t| t.template == "INFO served request <*> in <*> ms")
            .unwrap_or_else(|| panic!("{templates:#?}"));
        assert_eq!((info.count, info.is_error), (1, false));
        let summary = miner.error_summary(None, now - 120_000, now + 1, 5);
        assert_eq!(
            summary[0].text,
            "3 lines in product: `ERROR upstream timed out after <*> ms`"
        );
        let s = miner.stats();
        assert_eq!(
            s.truncated_lines, 1,
            "the 601-byte line, cut at the capture cap"
        );
        assert_eq!(s.lines, 5);
    });
}

#[test]
fn a_socket_on_fd_1_is_data_a_unix_socket_is_a_log() {
    require_root();
    let rt = runtime();
    rt.block_on(async {
        let mut capture = Capture::start(&options()).expect("capture starts");
        // stdout is a TCP socket (an inetd-style server): its bytes are connection data.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        let tcp_child = Command::new("sh")
            .args(["-c", "echo TCP-STDOUT-MARK"])
            .stdout(Stdio::from(OwnedFd::from(client)))
            .stderr(Stdio::null())
            .spawn()
            .expect("sh starts");
        let tcp_pid = tcp_child.id();
        // stdout is a unix socket (journald's stream, a socketpair): a log, flagged as such.
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let unix_child = Command::new("sh")
            .args(["-c", "echo UNIX-STDOUT-MARK"])
            .stdout(Stdio::from(OwnedFd::from(theirs)))
            .spawn()
            .expect("sh starts");
        let unix_pid = unix_child.id();
        for mut c in [tcp_child, unix_child] {
            assert!(c.wait().expect("sh runs").success());
        }
        let mut got = String::new();
        std::io::Read::read_to_string(&mut server, &mut got).expect("read the socket");
        assert_eq!(got, "TCP-STDOUT-MARK\n");
        drop(ours);

        let data_of_tcp = |ev: &[Event]| {
            ev.iter().any(|e| {
                matches!(e, Event::Data(d) if d.task.tgid == tcp_pid
                    && d.payload.as_ref() == b"TCP-STDOUT-MARK\n")
            })
        };
        let events = collect_until(&mut capture, T, |ev| {
            data_of_tcp(ev) && !logs_of(ev, unix_pid).is_empty()
        })
        .await;
        assert!(data_of_tcp(&events), "the TCP write is socket data");
        assert!(
            logs_of(&events, tcp_pid).is_empty(),
            "a write to an inet socket on fd 1 is not a log: {:#?}",
            logs_of(&events, tcp_pid)
        );
        let unix = logs_of(&events, unix_pid);
        assert_eq!(unix.len(), 1, "{unix:#?}");
        assert_eq!(text(unix[0]), "UNIX-STDOUT-MARK\n");
        assert!(unix[0].unix_socket);
        assert_eq!(unix[0].fd, 1);
    });
}

#[test]
fn stdio_capture_can_be_turned_off() {
    require_root();
    let rt = runtime();
    rt.block_on(async {
        let mut capture = Capture::start(&CaptureOptions {
            capture_stdio: false,
            ..options()
        })
        .expect("capture starts");
        // stderr to a pipe (would be a log), stdout to a TCP socket (data: shows the
        // programs ran for this process).
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        let child = Command::new("sh")
            .args(["-c", "echo OFF-ERR >&2; echo OFF-MARK"])
            .stdout(Stdio::from(OwnedFd::from(client)))
            .stderr(Stdio::piped())
            .spawn()
            .expect("sh starts");
        let pid = child.id();
        let out = child.wait_with_output().expect("sh runs");
        assert_eq!(out.stderr, b"OFF-ERR\n");
        let mut got = String::new();
        std::io::Read::read_to_string(&mut server, &mut got).expect("read the socket");
        let events = collect_until(&mut capture, T, |ev| {
            ev.iter()
                .any(|e| matches!(e, Event::Data(d) if d.task.tgid == pid))
        })
        .await;
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Data(d) if d.task.tgid == pid)),
            "the socket write was seen"
        );
        // Anything still in flight on the other CPU.
        let later = collect_until(&mut capture, Duration::from_millis(300), |_| false).await;
        assert!(logs_of(&events, pid).is_empty() && logs_of(&later, pid).is_empty());
        let stats = capture.stats().expect("stats");
        assert_eq!(stats.total(sonde_common::stat::LOG_EVENTS), 0);
    });
}

/// A shell's `echo … >&2` is `dup2(2, 1)` then a write to fd 1: the kernel sees fd 1 (on
/// stderr's pipe), so that is what a chunk says. Programs that write to fd 2 themselves are
/// reported as stderr (the test above).
#[test]
fn shell_redirections_are_reported_by_the_fd_written() {
    require_root();
    let rt = runtime();
    rt.block_on(async {
        let mut capture = Capture::start(&options()).expect("capture starts");
        let child = Command::new("sh")
            .args([
                "-c",
                "for i in 1 2 3; do echo \"ERROR upstream timed out after $i ms\" >&2; done",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sh starts");
        let pid = child.id();
        let out = child.wait_with_output().expect("sh runs");
        assert_eq!(out.stderr.len(), 3 * 36);
        let events = collect_until(&mut capture, T, |ev| logs_of(ev, pid).len() >= 3).await;
        let logs = logs_of(&events, pid);
        let lines: Vec<&str> = logs.iter().map(|l| text(l)).collect();
        assert_eq!(
            lines,
            [1, 2, 3].map(|i| format!("ERROR upstream timed out after {i} ms\n")),
            "{logs:#?}"
        );
        assert!(logs.iter().all(|l| l.fd == 1 && l.task.comm == "sh"));
        let mut miner = LogMiner::new(LogMinerConfig::default());
        for l in &logs {
            miner.observe_chunk("shell", l, unix_ms_of(l.ts_ns));
        }
        let now = unix_ms_of(monotonic_now_ns());
        let errors = miner.error_summary(Some("shell"), now - 120_000, now + 1, 5);
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].text,
            "3 lines in shell: `ERROR upstream timed out after <*> ms`"
        );
    });
}

/// A chatty writer cannot fill the ring that socket data shares: beyond `stdio_per_sec`
/// chunks per second per CPU, chunks are dropped and counted.
#[test]
fn chatty_writers_are_rate_limited() {
    require_root();
    let rt = runtime();
    rt.block_on(async {
        let mut capture = Capture::start(&CaptureOptions {
            stdio_per_sec: 20,
            ..options()
        })
        .expect("capture starts");
        let child = Command::new("/usr/bin/perl")
            .args(["-e", r#"syswrite(STDERR, "line $_\n") for 1..200;"#])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("perl starts");
        let pid = child.id();
        let out = child.wait_with_output().expect("perl runs");
        assert_eq!(out.stderr.iter().filter(|&&b| b == b'\n').count(), 200);
        let events = collect_until(&mut capture, Duration::from_secs(2), |_| false).await;
        let got = logs_of(&events, pid).len() as u64;
        let limited = capture
            .stats()
            .expect("stats")
            .total(sonde_common::stat::LOG_RATE_LIMITED);
        // Other processes' writes share the budget (the programs see every process), so
        // only an upper bound holds for this one.
        assert!(got < 200, "{got} of 200 chunks went through");
        assert!(limited >= 200 - got, "{limited} dropped chunks counted");
    });
}
