//! A running `sonde-testpeer` process whose JSON event lines can be awaited with a deadline.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use serde_json::Value;

use crate::{testpeer_path, wait_until};

/// How long to wait for a peer that closed stdout to be reaped, for error messages.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// A `sonde-testpeer` child process, SIGKILLed and reaped on drop.
pub struct Peer {
    child: Child,
    label: String,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl Peer {
    /// Spawns `sonde-testpeer ARGS...` in the current network namespace.
    pub fn spawn(args: &[&str]) -> anyhow::Result<Self> {
        Self::spawn_in(None, args)
    }

    /// Spawns `sonde-testpeer ARGS...`, inside network namespace `netns` if given
    /// (`ip netns exec` execs the peer, so [`Peer::pid`] is the peer's own pid).
    pub fn spawn_in(netns: Option<&str>, args: &[&str]) -> anyhow::Result<Self> {
        let peer = testpeer_path();
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&peer);
                c
            }
            None => Command::new(&peer),
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let label = format!(
            "sonde-testpeer {}{}",
            args.join(" "),
            netns.map(|ns| format!(" (netns {ns})")).unwrap_or_default()
        );
        let mut child = cmd.spawn().with_context(|| format!("spawning {label}"))?;
        let lines = spawn_line_reader(child.stdout.take().expect("stdout is piped"));
        let (stderr, stderr_reader) =
            spawn_collector(child.stderr.take().expect("stderr is piped"));
        Ok(Self {
            child,
            label,
            lines,
            stderr,
            stderr_reader: Some(stderr_reader),
            status: None,
        })
    }

    /// Process id of the peer (the pid its syscalls are attributed to).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the peer wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits for the next event line named `name`; earlier events with other names are
    /// skipped. Fails if the peer exits first or `timeout` elapses.
    pub fn expect_event(&mut self, name: &str, timeout: Duration) -> anyhow::Result<Value> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => {
                    bail!(
                        "timed out after {timeout:?} waiting for event {name:?} from {}",
                        self.label
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let why = self.describe_exit();
                    bail!("{} ended before event {name:?}: {why}", self.label)
                }
            };
            let v: Value = serde_json::from_str(&line)
                .with_context(|| format!("{} printed a non-JSON line: {line:?}", self.label))?;
            if v["event"] == name {
                return Ok(v);
            }
        }
    }

    /// A TCP exchange on loopback between two peers: the client writes messages of `sizes`
    /// (comma-separated), the server reads them (and echoes each with `reply`). Returns
    /// (server, client) once both finished cleanly.
    pub fn loopback_exchange(
        sizes: &str,
        reply: bool,
        timeout: Duration,
    ) -> anyhow::Result<(Peer, Peer)> {
        let mut server_args = vec![
            "tcp-server",
            "--listen",
            "127.0.0.1:0",
            "--recv-mode",
            "read",
            "--sizes",
            sizes,
        ];
        if reply {
            server_args.push("--reply");
        }
        let mut server = Peer::spawn(&server_args)?;
        let addr = server.listening_addr(timeout)?.to_string();
        let mut client_args = vec![
            "tcp-client",
            "--connect",
            &addr,
            "--send-mode",
            "write",
            "--sizes",
            sizes,
        ];
        if reply {
            client_args.push("--expect-reply");
        }
        let mut client = Peer::spawn(&client_args)?;
        client.finish(timeout)?;
        server.finish(timeout)?;
        Ok((server, client))
    }

    /// Waits for the `listening` event and returns the bound address (port 0 resolved).
    pub fn listening_addr(&mut self, timeout: Duration) -> anyhow::Result<SocketAddr> {
        let ev = self.expect_event("listening", timeout)?;
        event_addr(&ev, "addr")
    }

    /// Waits for the `done` event, then for a zero exit status; returns the `done` event.
    pub fn finish(&mut self, timeout: Duration) -> anyhow::Result<Value> {
        let end = Instant::now() + timeout;
        let done = self.expect_event("done", timeout)?;
        self.wait_success(
            end.saturating_duration_since(Instant::now())
                .max(EXIT_GRACE),
        )?;
        Ok(done)
    }

    /// Waits for the peer to exit and fails unless it exited with status 0.
    pub fn wait_success(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let status = self.wait_exit(timeout)?;
        if !status.success() {
            let stderr = self.final_stderr();
            bail!(
                "{} failed ({status}); stderr: {}",
                self.label,
                stderr.trim()
            );
        }
        Ok(())
    }

    /// Asks the peer to stop with SIGTERM (the `sink` then prints `done` and exits 0).
    pub fn terminate(&self) -> anyhow::Result<()> {
        if self.status.is_some() {
            bail!("{} has already exited", self.label);
        }
        let pid = libc::pid_t::try_from(self.pid()).context("pid out of range")?;
        // SAFETY: plain kill(2) on our own un-reaped child, so the pid cannot have been reused.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(std::io::Error::last_os_error()).context("kill(SIGTERM)");
        }
        Ok(())
    }

    fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let child = &mut self.child;
        let status = wait_until(timeout, &format!("{} to exit", self.label), || {
            child.try_wait().ok().flatten()
        })?;
        self.status = Some(status);
        Ok(status)
    }

    fn describe_exit(&mut self) -> String {
        let status = match self.wait_exit(EXIT_GRACE) {
            Ok(s) => s.to_string(),
            Err(_) => "still running".to_owned(),
        };
        format!("{status}; stderr: {}", self.final_stderr().trim())
    }

    /// Stderr for an error message: once the peer has been reaped its stderr is at EOF, so
    /// join the reader first and the last lines (usually the error) are not lost.
    fn final_stderr(&mut self) -> String {
        if self.status.is_some()
            && let Some(reader) = self.stderr_reader.take()
        {
            let _ = reader.join();
        }
        self.stderr()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if self.status.is_none() {
            // Errors only mean it already exited; wait() reaps it either way.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Parses the socket address in string field `field` of a peer event (`addr`, `local`, `peer`).
pub fn event_addr(ev: &Value, field: &str) -> anyhow::Result<SocketAddr> {
    ev[field]
        .as_str()
        .ok_or_else(|| anyhow!("event has no string field {field:?}: {ev}"))?
        .parse()
        .with_context(|| format!("field {field:?} of {ev} is not a socket address"))
}

/// Forwards stdout lines over a channel so they can be awaited with a timeout.
fn spawn_line_reader(stdout: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Accumulates stderr in the background so a chatty peer never blocks on a full pipe.
fn spawn_collector(
    mut stderr: impl std::io::Read + Send + 'static,
) -> (Arc<Mutex<String>>, JoinHandle<()>) {
    let buf = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&buf);
    let reader = std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = stderr.read(&mut chunk) {
            if let Ok(mut s) = sink.lock() {
                s.push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        }
    });
    (buf, reader)
}
