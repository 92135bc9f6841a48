//! The capture flags `run` and `trace` share, applied onto `[capture]`.
use clap::Args;
use sonde_capture::CaptureOptions;

/// Capture flags shared by `run` and `trace`.
#[derive(Args, Debug, Default)]
pub struct CaptureArgs {
    /// Payload bytes copied per syscall (max 32768).
    #[arg(long)]
    pub capture_bytes: Option<u32>,
    /// Ring buffer size in bytes (power of two).
    #[arg(long)]
    pub ring_bytes: Option<u32>,
    /// Capture only tasks in this network namespace (a path such as /run/netns/NAME or
    /// /proc/PID/ns/net, or an inode number); repeatable. Replaces `[capture.scope] netns`.
    #[arg(long, value_name = "PATH|INODE")]
    pub netns: Vec<String>,
    /// Capture only tasks in (or below) this cgroup v2 directory; repeatable. Replaces
    /// `[capture.scope] cgroups`.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Vec<String>,
    /// Leave the --netns/--cgroup (or `[capture.scope]`) namespaces and cgroups out instead,
    /// capturing everything else (`[capture.scope] exclude = true`).
    #[arg(long)]
    pub scope_exclude: bool,
}

impl CaptureArgs {
    /// The flags given override the file's `[capture]`.
    pub fn apply(&self, capture: &mut CaptureOptions) {
        if let Some(v) = self.capture_bytes {
            capture.capture_bytes = v;
        }
        if let Some(v) = self.ring_bytes {
            capture.ring_bytes = v;
        }
        if !self.netns.is_empty() {
            capture.scope.netns = self.netns.clone();
        }
        if !self.cgroup.is_empty() {
            capture.scope.cgroups = self.cgroup.clone();
        }
        if self.scope_exclude {
            capture.scope.exclude = true;
        }
    }
}
