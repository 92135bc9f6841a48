//! Feed a parser natively, without a Wasm runtime: inline bytes or recorded payload files.
//!
//! Recording format (binary safe, readable when the payload is text): a sequence of
//!
//! ```text
//! > <ts_ns> <len>\n<len bytes>\n     egress segment (the process wrote it)
//! < <ts_ns> <len>\n<len bytes>\n     ingress segment (the process read it)
//! ! <egress|ingress> <len>\n         gap: len bytes missing before the next segment that way
//! # anything\n                       comment
//! ```
//!
//! Behind the SDK feature `harness`: a test-only dependency (`[dev-dependencies]`), never
//! compiled into a component.

mod recording;

pub use recording::{Recording, check_fixture};

use super::{
    Claim, ConnInfo, Direction, Driver, FeedResult, ProtocolParser, RequestRecord, Role, Segment,
};

/// One connection under test.
pub struct Harness<P: ProtocolParser> {
    driver: Driver<P>,
    conn: ConnInfo,
    pending_gap: [u64; 2],
    pub result: FeedResult,
}

impl<P: ProtocolParser> Harness<P> {
    pub fn new(conn: ConnInfo) -> Self {
        let mut driver = Driver::default();
        driver.open(conn.clone());
        Self {
            driver,
            conn,
            pending_gap: [0, 0],
            result: FeedResult::default(),
        }
    }

    /// A client connection (it writes requests).
    pub fn client() -> Self {
        Self::new(ConnInfo {
            id: 1,
            role: Role::Client,
            ..Default::default()
        })
    }

    /// A server connection (it reads requests).
    pub fn server() -> Self {
        Self::new(ConnInfo {
            id: 1,
            role: Role::Server,
            ..Default::default()
        })
    }

    pub fn gap(&mut self, direction: Direction, len: u64) -> &mut Self {
        self.pending_gap[direction.index()] += len;
        self
    }

    pub fn segment(&mut self, direction: Direction, ts_ns: u64, data: &[u8]) -> &mut Self {
        let gap_before = std::mem::take(&mut self.pending_gap[direction.index()]);
        let seg = Segment {
            direction,
            ts_ns,
            gap_before,
            data,
        };
        self.driver.feed(self.conn.id, &seg, &mut self.result);
        self
    }

    /// Requests the process sent (client) or received (server).
    pub fn request(&mut self, ts_ns: u64, data: &[u8]) -> &mut Self {
        self.segment(self.conn.request_direction(), ts_ns, data)
    }

    pub fn response(&mut self, ts_ns: u64, data: &[u8]) -> &mut Self {
        let d = match self.conn.request_direction() {
            Direction::Egress => Direction::Ingress,
            Direction::Ingress => Direction::Egress,
        };
        self.segment(d, ts_ns, data)
    }

    pub fn close(&mut self) -> &mut Self {
        self.driver.close(self.conn.id, &mut self.result);
        self
    }

    /// Replay a recording (see the module docs). Errors name the byte offset.
    pub fn replay(&mut self, recording: &[u8]) -> Result<&mut Self, String> {
        let mut at = 0;
        while at < recording.len() {
            let nl = recording[at..]
                .iter()
                .position(|b| *b == b'\n')
                .map(|p| at + p)
                .ok_or_else(|| format!("offset {at}: header without newline"))?;
            let header = std::str::from_utf8(&recording[at..nl])
                .map_err(|_| format!("offset {at}: header is not UTF-8"))?;
            let fields: Vec<&str> = header.split_whitespace().collect();
            let num = |i: usize| -> Result<u64, String> {
                fields
                    .get(i)
                    .and_then(|f| f.parse().ok())
                    .ok_or_else(|| format!("offset {at}: bad header {header:?}"))
            };
            match fields.first().copied() {
                None | Some("#") => at = nl + 1,
                Some(">") | Some("<") => {
                    let direction = if fields[0] == ">" {
                        Direction::Egress
                    } else {
                        Direction::Ingress
                    };
                    let (ts, len) = (num(1)?, num(2)? as usize);
                    let body = recording
                        .get(nl + 1..nl + 1 + len)
                        .ok_or_else(|| format!("offset {at}: payload shorter than {len}"))?;
                    self.segment(direction, ts, body);
                    at = nl + 1 + len;
                    if recording.get(at) == Some(&b'\n') {
                        at += 1;
                    }
                }
                Some("!") => {
                    let direction = match fields.get(1).copied() {
                        Some("egress") => Direction::Egress,
                        Some("ingress") => Direction::Ingress,
                        _ => return Err(format!("offset {at}: gap needs egress or ingress")),
                    };
                    self.gap(direction, num(2)?);
                    at = nl + 1;
                }
                Some(other) => return Err(format!("offset {at}: unknown line kind {other:?}")),
            }
        }
        Ok(self)
    }

    pub fn replay_file(&mut self, path: &std::path::Path) -> Result<&mut Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        self.replay(&bytes)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Feed arbitrary bytes as a conversation, for fuzzing: a sequence of
    /// `[control][len][len bytes…]` chunks; bit 0 of `control` picks the direction
    /// (0 egress), bit 4 puts a gap of `(control >> 5) * 1000` bytes before the chunk.
    /// Timestamps increase by one per chunk. A trailing partial chunk is fed as is.
    pub fn feed_arbitrary(&mut self, mut bytes: &[u8]) -> &mut Self {
        let mut ts = 1u64;
        while bytes.len() >= 2 {
            let (control, len) = (bytes[0], bytes[1] as usize);
            bytes = &bytes[2..];
            let take = len.min(bytes.len());
            let direction = if control & 1 == 0 {
                Direction::Egress
            } else {
                Direction::Ingress
            };
            if control & 0x10 != 0 {
                self.gap(direction, u64::from(control >> 5) * 1000);
            }
            ts += 1;
            self.segment(direction, ts, &bytes[..take]);
            bytes = &bytes[take..];
        }
        self
    }

    /// `(operation, status, error)` of each record so far.
    pub fn ops(&self) -> Vec<(String, u32, Option<String>)> {
        self.result
            .records
            .iter()
            .map(|r| (r.operation.clone(), r.status, r.error.clone()))
            .collect()
    }

    /// The fields most tests compare, of each record so far.
    pub fn briefs(&self) -> Vec<Brief> {
        self.result.records.iter().map(Brief::from).collect()
    }

    /// The claims reported so far, in order.
    pub fn claims(&self) -> Vec<Claim> {
        self.result.claims.iter().map(|(_, c)| *c).collect()
    }
}

/// An expected entry of [`Harness::ops`].
pub fn op(operation: &str, status: u32, error: Option<&str>) -> (String, u32, Option<String>) {
    (operation.to_string(), status, error.map(str::to_string))
}

/// The fields of a record most tests compare, in one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Brief {
    pub operation: String,
    pub status: u32,
    pub error: Option<String>,
    pub request_ts: u64,
    pub response_ts: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

impl From<&RequestRecord> for Brief {
    fn from(r: &RequestRecord) -> Self {
        Brief {
            operation: r.operation.clone(),
            status: r.status,
            error: r.error.clone(),
            request_ts: r.request_ts_ns,
            response_ts: r.response_ts_ns,
            request_bytes: r.request_bytes,
            response_bytes: r.response_bytes,
        }
    }
}
