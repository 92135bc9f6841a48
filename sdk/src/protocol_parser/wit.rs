//! Conversions and the batch loop of the component glue (wasm32 only): between the
//! wit-bindgen types and the SDK's, so authors never touch the generated ones.

use super::{
    Claim, ConnInfo, Direction, Driver, Endpoint, FeedResult, ParserInfo, ProtocolParser,
    RecordBatch, Role, Segment, Span, Transport,
};
use crate::__protocol_parser_bindings::sonde::plugin::parser_types as w;

fn endpoint(e: Option<w::Endpoint>) -> Option<Endpoint> {
    e.map(|e| Endpoint {
        ip: e.ip,
        port: e.port,
    })
}

pub fn conn_from_wit(c: w::ConnInfo) -> ConnInfo {
    ConnInfo {
        id: c.id,
        pid: c.pid,
        comm: c.comm,
        local: endpoint(c.local),
        remote: endpoint(c.remote),
        role: match c.role {
            w::Role::Unknown => Role::Unknown,
            w::Role::Client => Role::Client,
            w::Role::Server => Role::Server,
        },
        transport: match c.transport {
            w::Transport::Tcp => Transport::Tcp,
            w::Transport::Udp => Transport::Udp,
        },
        labels: c.labels,
    }
}

fn claim_to_wit(c: Claim) -> w::Claim {
    match c {
        Claim::Undecided => w::Claim::Undecided,
        Claim::Mine => w::Claim::Mine,
        Claim::NotMine => w::Claim::NotMine,
        Claim::Finished => w::Claim::Finished,
    }
}

fn span(s: Span) -> w::Span {
    w::Span {
        start: s.start,
        len: s.len,
    }
}

pub fn result_to_wit(r: FeedResult) -> w::FeedResult {
    let b = RecordBatch::encode(&r.records);
    w::FeedResult {
        records: w::RecordBatch {
            heads: b
                .heads
                .iter()
                .map(|h| w::RecordHead {
                    conn: h.conn,
                    protocol: span(h.protocol),
                    operation: span(h.operation),
                    status: h.status,
                    error: h.error.map(span),
                    request_ts_ns: h.request_ts_ns,
                    response_ts_ns: h.response_ts_ns,
                    request_bytes: h.request_bytes,
                    response_bytes: h.response_bytes,
                    attrs_start: h.attrs_start,
                    attrs_len: h.attrs_len,
                })
                .collect(),
            attrs: b.attrs.iter().map(|(k, v)| (span(*k), span(*v))).collect(),
            text: b.text,
        },
        claims: r
            .claims
            .into_iter()
            .map(|(c, claim)| (c, claim_to_wit(claim)))
            .collect(),
    }
}

pub fn info_to_wit(i: ParserInfo) -> w::ParserInfo {
    w::ParserInfo {
        name: i.name,
        version: i.version,
        protocols: i.protocols,
    }
}

/// Split the flat batch into segments and feed them in order. A batch whose offsets do not
/// fit its buffer is the daemon's bug: the bad tail is ignored rather than trusted.
pub fn feed<P: ProtocolParser>(driver: &mut Driver<P>, batch: w::SegmentBatch) -> w::FeedResult {
    let mut out = FeedResult::default();
    let mut start = 0usize;
    for (end, meta) in batch.ends.iter().zip(&batch.meta) {
        let end = *end as usize;
        let Some(data) = batch.data.get(start..end) else {
            break;
        };
        let direction = match meta.direction {
            w::Direction::Egress => Direction::Egress,
            w::Direction::Ingress => Direction::Ingress,
        };
        driver.feed(
            meta.conn,
            &Segment {
                direction,
                ts_ns: meta.ts_ns,
                gap_before: meta.gap_before,
                data,
            },
            &mut out,
        );
        start = end;
    }
    result_to_wit(out)
}

pub fn close<P: ProtocolParser>(driver: &mut Driver<P>, conns: Vec<u64>) -> w::FeedResult {
    let mut out = FeedResult::default();
    for c in conns {
        driver.close(c, &mut out);
    }
    result_to_wit(out)
}
