//! A plugin's stdout and stderr: the first few KiB are kept (a Rust guest's panic message is
//! there) so a trap can be reported with what the plugin said; everything after is counted and
//! dropped. Writes never fail and never block, so a chatty plugin cannot trap or stall on its
//! own output, and cannot make the daemon buffer more than [`OutputCapture::capacity`].

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

#[derive(Debug, Default)]
struct Buffer {
    kept: Vec<u8>,
    dropped: u64,
}

/// Shared by a store's stdout and stderr streams.
#[derive(Debug, Clone)]
pub struct OutputCapture {
    capacity: usize,
    buffer: Arc<Mutex<Buffer>>,
}

impl OutputCapture {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            buffer: Arc::default(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn push(&self, bytes: &[u8]) {
        let mut b = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let room = self.capacity.saturating_sub(b.kept.len());
        let n = room.min(bytes.len());
        b.kept.extend_from_slice(&bytes[..n]);
        b.dropped += (bytes.len() - n) as u64;
    }

    /// What the plugin wrote since the last [`clear`](Self::clear), lossily decoded and trimmed;
    /// `None` when it wrote nothing.
    pub fn text(&self) -> Option<String> {
        let b = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let text = String::from_utf8_lossy(&b.kept);
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        Some(if b.dropped > 0 {
            format!("{text} […{} bytes dropped]", b.dropped)
        } else {
            text.to_string()
        })
    }

    pub fn clear(&self) {
        let mut b = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        b.kept.clear();
        b.dropped = 0;
    }
}

impl IsTerminal for OutputCapture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for OutputCapture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for OutputCapture {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always writable: what does not fit is dropped, not refused.
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for OutputCapture {
    async fn ready(&mut self) {}
}

impl AsyncWrite for OutputCapture {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_bytes_and_counts_the_rest() {
        let c = OutputCapture::new(8);
        assert_eq!(c.text(), None);
        c.push(b"panicked");
        c.push(b" at lib.rs");
        assert_eq!(c.text().unwrap(), "panicked […10 bytes dropped]");
        c.clear();
        c.push(b"  ok \n");
        assert_eq!(c.text().unwrap(), "ok");
    }
}
