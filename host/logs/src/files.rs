//! Log files, tailed: for services that write their logs to files instead of stdout/stderr
//! (`[[logs.files]] path = "/var/log/app/error.log", service = "app"`). Each file is read from
//! where it ended when the daemon started (no replay of old lines); a file replaced by a new
//! one (rotation: another inode) or truncated (shorter than what was read of it at the next
//! poll, as `copytruncate` leaves it) is read again from its start.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{LogMiner, Stream};

/// One configured log file and the service its lines belong to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    pub path: PathBuf,
    pub service: String,
}

/// Bytes read per file per poll: a burst is spread over polls instead of stalling the loop.
const READ_PER_POLL: usize = 1 << 20;

#[derive(Debug)]
struct Tail {
    file: LogFile,
    /// (device, inode) of the file we follow, and how far we read it.
    id: Option<(u64, u64)>,
    offset: u64,
    partial: Vec<u8>,
    missing_logged: bool,
}

/// Follows every configured file.
#[derive(Debug)]
pub struct Tailer {
    tails: Vec<Tail>,
    max_line: usize,
    /// Lines read from files (all of them).
    pub lines: u64,
}

impl Tailer {
    pub fn new(files: &[LogFile], max_line_bytes: usize) -> Self {
        let tails = files
            .iter()
            .map(|f| {
                // Start at the current end: the daemon mines what happens from now on.
                let meta = std::fs::metadata(&f.path).ok();
                Tail {
                    file: f.clone(),
                    id: meta.as_ref().map(|m| (m.dev(), m.ino())),
                    offset: meta.map_or(0, |m| m.len()),
                    partial: Vec::new(),
                    missing_logged: false,
                }
            })
            .collect();
        Self {
            tails,
            max_line: max_line_bytes.max(64),
            lines: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tails.is_empty()
    }

    /// Read what was appended since the last poll into the miner.
    pub fn poll(&mut self, miner: &mut LogMiner, now_ms: u64) {
        for t in &mut self.tails {
            let meta = match std::fs::metadata(&t.file.path) {
                Ok(m) => m,
                Err(e) => {
                    if !t.missing_logged {
                        tracing::warn!(path = %t.file.path.display(), error = %e, "log file not readable; will retry");
                        t.missing_logged = true;
                    }
                    continue;
                }
            };
            t.missing_logged = false;
            let id = (meta.dev(), meta.ino());
            if t.id != Some(id) || meta.len() < t.offset {
                // Rotated or truncated: the new content starts at 0.
                t.id = Some(id);
                t.offset = 0;
                t.partial.clear();
            }
            if meta.len() == t.offset {
                continue;
            }
            let Ok(mut f) = File::open(&t.file.path) else {
                continue;
            };
            if f.seek(SeekFrom::Start(t.offset)).is_err() {
                continue;
            }
            let mut buf =
                Vec::with_capacity((meta.len() - t.offset).min(READ_PER_POLL as u64) as usize);
            let Ok(n) = f.take(READ_PER_POLL as u64).read_to_end(&mut buf) else {
                continue;
            };
            t.offset += n as u64;
            for piece in buf.split_inclusive(|b| *b == b'\n') {
                let complete = piece.last() == Some(&b'\n');
                t.partial.extend_from_slice(piece);
                if complete || t.partial.len() >= self.max_line {
                    // Cleaned as stdout/stderr lines are: invalid UTF-8 replaced, colours
                    // and control characters (NUL included) removed.
                    let raw = t.partial.strip_suffix(b"\n").unwrap_or(&t.partial);
                    let line = super::lines::clean(raw);
                    if !line.trim().is_empty() {
                        miner.observe(&t.file.service, Stream::File, now_ms, &line);
                        self.lines += 1;
                    }
                    t.partial.clear();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LogMinerConfig;
    use std::io::Write as _;

    fn append(path: &std::path::Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn appended_lines_rotation_and_truncation() {
        let dir = std::env::temp_dir().join(format!("sonde-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("app.log");
        std::fs::write(&path, "ERROR old line before the daemon started 1\n").unwrap();
        let mut miner = LogMiner::new(LogMinerConfig::default());
        let mut tail = Tailer::new(
            &[LogFile {
                path: path.clone(),
                service: "app".into(),
            }],
            4096,
        );
        let now = 1_800_000_000_000;
        tail.poll(&mut miner, now);
        assert_eq!(tail.lines, 0, "existing content is not replayed");

        append(
            &path,
            "ERROR upstream timed out after 2003 ms\nERROR upstream timed out after 17 ms\nERROR upstream ti",
        );
        tail.poll(&mut miner, now);
        assert_eq!(
            tail.lines, 2,
            "the partial third line waits for its newline"
        );
        append(&path, "med out after 5 ms\n");
        tail.poll(&mut miner, now);
        assert_eq!(tail.lines, 3);

        // Rotation: the file is renamed away and a new one starts.
        std::fs::rename(&path, dir.join("app.log.1")).unwrap();
        append(&path, "ERROR upstream timed out after 9 ms\n");
        tail.poll(&mut miner, now);
        // Truncation (copytruncate): seen when the file is shorter than what was read of
        // it at the next poll; reading starts over.
        std::fs::write(&path, "").unwrap();
        append(&path, "ERROR upstream timed out after 1 s\n");
        tail.poll(&mut miner, now);
        assert_eq!(tail.lines, 5);

        let t = miner.templates(Some("app"), now - 60_000, now + 60_000);
        assert_eq!(t.len(), 1, "{t:?}");
        assert_eq!(t[0].count, 5);
        assert_eq!(t[0].stream, Stream::File);
        assert!(
            t[0].template.contains("timed out after <*>"),
            "{}",
            t[0].template
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
