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
    }
}
