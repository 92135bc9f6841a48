//! Connections of processes that exited. The kernel closes an exiting process's descriptors
//! itself, without a close() syscall, so the capture sees no Close for them: a crashed or
//! killed server's connections would stay in the tracker, holding their reorder buffers, until
//! the idle timeout (10 minutes by default). Every [`CHECK_EVERY`], each process that holds
//! tracked connections is looked up under the correlation layer's `proc_root`; one that is gone
//! has its connections ended ([`ConnTracker::end_process`], counted as `exited`).
//!
//! The kernel reports host pids, so this needs `proc_root` to show the host's processes, as
//! the correlation layer does (`hostPID: true` in deploy/base/daemonset.yaml).
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sonde_capture::conntrack::{ConnTracker, StreamEvent};

/// How often the tracked processes are looked up (one `stat` per process holding connections).
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// The periodic check.
pub struct ExitCheck {
    proc_root: PathBuf,
    next: Instant,
}

impl ExitCheck {
    /// A check under `proc_root`; `None` (with a warning) when it is not a procfs that shows
    /// this process, so nothing is ended for want of a `/proc`.
    pub fn new(proc_root: PathBuf) -> Option<ExitCheck> {
        if !proc_root.join("self").exists() {
            tracing::warn!(
                proc_root = %proc_root.display(),
                "no procfs here: connections of exited processes end only at the idle timeout"
            );
            return None;
        }
        Some(ExitCheck {
            proc_root,
            next: Instant::now() + CHECK_EVERY,
        })
    }

    /// When due, ends the connections of every tracked process that is gone. Returns how many.
    pub fn run(&mut self, tracker: &mut ConnTracker, out: &mut Vec<StreamEvent>) -> usize {
        let now = Instant::now();
        if now < self.next {
            return 0;
        }
        self.next = now + CHECK_EVERY;
        let mut ended = 0;
        for tgid in tracker.processes() {
            if !self.proc_root.join(tgid.to_string()).exists() {
                ended += tracker.end_process(tgid, out);
            }
        }
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonde_capture::conntrack::TrackerConfig;
    use sonde_capture::events::{ConnChange, ConnEventKind, Event, Role};

    fn open(tgid: u32, conn_id: u64) -> Event {
        let (local, peer) = (
            "10.0.0.1:40000".parse().unwrap(),
            "10.0.0.2:80".parse().unwrap(),
        );
        let mut c = ConnChange::synthetic(ConnEventKind::Open, 0, 1, local, peer);
        (c.task.tgid, c.task.tid, c.task.comm) = (tgid, tgid, "app".into());
        (c.fd, c.conn_id, c.role, c.syscall) = (5, conn_id, Role::Client, "connect");
        Event::Conn(c)
    }

    /// A real process that exited (a child reaped here) loses its connections; this process,
    /// alive, keeps its own.
    #[test]
    fn the_connections_of_a_gone_process_end_and_a_live_ones_stay() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        let alive = std::process::id();
        let mut tracker = ConnTracker::new(TrackerConfig::default());
        let mut out = Vec::new();
        tracker.on_event(&open(gone, 1), &mut out);
        tracker.on_event(&open(alive, 2), &mut out);
        let mut check = ExitCheck::new("/proc".into()).expect("this machine has /proc");
        assert_eq!(check.run(&mut tracker, &mut out), 0, "not due yet");
        check.next = Instant::now();
        assert_eq!(check.run(&mut tracker, &mut out), 1);
        assert_eq!(tracker.processes(), [alive]);
        assert_eq!(tracker.stats().connections_exited, 1);
    }

    #[test]
    fn without_a_procfs_nothing_is_checked() {
        assert!(ExitCheck::new("/nonexistent-proc".into()).is_none());
    }
}
