//! The per-connection bookkeeping around a [`ProtocolParser`]: the same code runs in the
//! component (one driver per instance) and in the native harness, so a harness test exercises
//! exactly what the daemon will run.

use std::collections::BTreeMap;

use super::{
    Claim, ConnInfo, DETECT_BUDGET, Direction, ProtocolParser, RequestRecord, Segment, Transport,
};

enum Phase<S> {
    /// Not decided yet. Each direction's bytes so far are kept (up to [`DETECT_BUDGET`]) so
    /// `detect` sees the whole prefix however it was split, and `parse` gets every byte once
    /// the parser claims the connection.
    Detecting {
        seen: [u64; 2],
        pending: [Vec<u8>; 2],
        /// Timestamp and gap of each direction's first pending segment.
        first: [(u64, u64); 2],
    },
    Parsing(S),
    Done,
}

impl<S> Phase<S> {
    fn detecting() -> Self {
        Phase::Detecting {
            seen: [0, 0],
            pending: [Vec::new(), Vec::new()],
            first: [(0, 0); 2],
        }
    }
}

/// The per-connection bookkeeping around a [`ProtocolParser`].
pub struct Driver<P: ProtocolParser> {
    conns: BTreeMap<u64, (ConnInfo, Phase<P::State>)>,
}

impl<P: ProtocolParser> Default for Driver<P> {
    fn default() -> Self {
        Self::new()
    }
}

/// What one call produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedResult {
    pub records: Vec<RequestRecord>,
    pub claims: Vec<(u64, Claim)>,
}

impl<P: ProtocolParser> Driver<P> {
    /// `const`, so a component can keep its driver in a `static`.
    pub const fn new() -> Self {
        Self {
            conns: BTreeMap::new(),
        }
    }

    pub fn open(&mut self, conn: ConnInfo) {
        self.conns.insert(conn.id, (conn, Phase::detecting()));
    }

    /// Connections being tracked.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// One segment of connection `conn` (unknown connections are opened with what is known:
    /// only the id).
    pub fn feed(&mut self, conn: u64, segment: &Segment<'_>, out: &mut FeedResult) {
        let (info, phase) = self.conns.entry(conn).or_insert_with(|| {
            (
                ConnInfo {
                    id: conn,
                    ..Default::default()
                },
                Phase::detecting(),
            )
        });
        let first = out.records.len();
        let claim = match phase {
            Phase::Done => return,
            Phase::Detecting {
                seen,
                pending,
                first: starts,
            } => {
                let d = segment.direction.index();
                seen[d] += segment.data.len() as u64 + segment.gap_before;
                // Bytes before a gap do not continue into the segment after it; and a datagram
                // never continues another one (UDP: each segment is one message).
                if segment.gap_before > 0 || info.transport == Transport::Udp {
                    pending[d].clear();
                    pending[1 - d].clear();
                }
                let joined;
                let whole = if pending[d].is_empty() {
                    *segment
                } else {
                    pending[d].extend_from_slice(segment.data);
                    joined = std::mem::take(&mut pending[d]);
                    let (ts_ns, gap_before) = starts[d];
                    Segment {
                        direction: segment.direction,
                        ts_ns,
                        gap_before,
                        data: &joined,
                    }
                };
                match P::detect(info, &whole) {
                    Claim::Mine => {
                        let mut state = P::State::default();
                        // The other direction's undecided bytes came first.
                        let o = 1 - d;
                        let mut claim = Claim::Mine;
                        if !pending[o].is_empty() {
                            let other = Segment {
                                direction: if o == 0 {
                                    Direction::Egress
                                } else {
                                    Direction::Ingress
                                },
                                ts_ns: starts[o].0,
                                gap_before: starts[o].1,
                                data: &pending[o],
                            };
                            claim = P::parse(&mut state, info, &other, &mut out.records);
                        }
                        if matches!(claim, Claim::Mine | Claim::Undecided) {
                            claim = P::parse(&mut state, info, &whole, &mut out.records);
                        }
                        *phase = Phase::Parsing(state);
                        // Mine, even if parsing the first segment already finished it.
                        out.claims.push((conn, Claim::Mine));
                        claim
                    }
                    Claim::Undecided if seen.iter().all(|s| *s >= DETECT_BUDGET) => Claim::NotMine,
                    Claim::Undecided => {
                        if info.transport != Transport::Udp
                            && whole.data.len() as u64 <= DETECT_BUDGET
                        {
                            if pending[d].is_empty() && std::ptr::eq(whole.data, segment.data) {
                                starts[d] = (segment.ts_ns, segment.gap_before);
                                pending[d].extend_from_slice(segment.data);
                            } else {
                                pending[d] = whole.data.to_vec();
                            }
                        }
                        Claim::Undecided
                    }
                    other => other,
                }
            }
            Phase::Parsing(state) => P::parse(state, info, segment, &mut out.records),
        };
        match claim {
            Claim::NotMine | Claim::Finished => {
                *phase = Phase::Done;
                out.claims.push((conn, claim));
            }
            Claim::Mine | Claim::Undecided => {}
        }
        for r in &mut out.records[first..] {
            r.conn = conn;
        }
    }

    /// The connection is gone: flush and forget it.
    pub fn close(&mut self, conn: u64, out: &mut FeedResult) {
        if let Some((info, Phase::Parsing(mut state))) = self.conns.remove(&conn) {
            let first = out.records.len();
            P::close(&mut state, &info, &mut out.records);
            for r in &mut out.records[first..] {
                r.conn = conn;
            }
        }
    }
}
