//! Operation names, attribute keys, error strings, and the record an exchange becomes.

use sonde_sdk::protocol_parser::RequestRecord;

use crate::MAX_TOPIC;

/// The record's `protocol`, and `messaging.system`.
pub const PROTOCOL: &str = "mqtt";

/// Attribute keys (OpenTelemetry messaging semantic conventions). Nothing in the daemon reads
/// them, so they live here rather than in the SDK's shared list.
pub mod attr {
    /// Always `mqtt`.
    pub const SYSTEM: &str = "messaging.system";
    /// The operation, as in the record (see [`super::Op`]).
    pub const OPERATION: &str = "messaging.operation.name";
    /// The topic of a PUBLISH, or the first topic filter of a SUBSCRIBE or UNSUBSCRIBE, at most
    /// [`MAX_TOPIC`](crate::MAX_TOPIC) bytes.
    pub const DESTINATION: &str = "messaging.destination.name";
}

/// Error strings other than a refusal's code name (see `codes.rs`).
pub mod error {
    /// The response may have been lost in a capture gap.
    pub const TRUNCATED: &str = "truncated";
    /// The connection closed (or too many were in flight) before the response.
    pub const NO_RESPONSE: &str = "no-response";
}

/// What an exchange is. Client-initiated operations are named from the client's side
/// (`publish`), broker-initiated ones from the receiving client's (`deliver`); on a broker's
/// connection the names are the same, so both ends of one connection agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// CONNECT → CONNACK.
    Connect,
    /// The client's PUBLISH at QoS 1 → PUBACK, or QoS 2 → PUBREC.
    Publish,
    /// The client's PUBLISH at QoS 0: nothing answers it (one-way, no duration).
    PublishQos0,
    /// The client's PUBREL → PUBCOMP (the second half of a QoS 2 publish).
    PublishRelease,
    /// The broker's PUBLISH to a subscriber at QoS 1 → the client's PUBACK, or QoS 2 → PUBREC.
    Deliver,
    /// The broker's PUBLISH at QoS 0 (one-way, no duration).
    DeliverQos0,
    /// The broker's PUBREL → the client's PUBCOMP.
    DeliverRelease,
    /// SUBSCRIBE → SUBACK.
    Subscribe,
    /// UNSUBSCRIBE → UNSUBACK.
    Unsubscribe,
    /// PINGREQ → PINGRESP.
    Ping,
}

impl Op {
    /// The record's `operation` and `messaging.operation.name`.
    pub fn name(self) -> &'static str {
        match self {
            Op::Connect => "connect",
            Op::Publish => "publish",
            Op::PublishQos0 => "publish qos0",
            Op::PublishRelease => "publish release",
            Op::Deliver => "deliver",
            Op::DeliverQos0 => "deliver qos0",
            Op::DeliverRelease => "deliver release",
            Op::Subscribe => "subscribe",
            Op::Unsubscribe => "unsubscribe",
            Op::Ping => "ping",
        }
    }
}

/// A request seen, waiting for its response (or one-way).
#[derive(Debug, Clone)]
pub(crate) struct Exchange {
    pub op: Op,
    pub topic: Option<String>,
    pub request_ts: u64,
    pub request_bytes: u64,
}

/// How an exchange ended.
#[derive(Debug, Clone, Copy)]
pub(crate) enum End {
    /// Answered at `ts` with `bytes`; `code` is the failing code, 0 on success.
    Answered { ts: u64, bytes: u64, code: u8 },
    /// Nothing answers it.
    OneWay,
    /// No response: the error string.
    Unanswered(&'static str),
}

impl Exchange {
    pub(crate) fn record(self, end: End) -> RequestRecord {
        let op = self.op.name();
        let mut attributes = Vec::with_capacity(3);
        attributes.push((attr::SYSTEM.to_string(), PROTOCOL.to_string()));
        attributes.push((attr::OPERATION.to_string(), op.to_string()));
        if let Some(t) = self.topic {
            attributes.push((attr::DESTINATION.to_string(), t));
        }
        let (status, error, response_ts_ns, response_bytes) = match end {
            End::Answered { ts, bytes, code } => (
                u32::from(code),
                (code != 0).then(|| crate::codes::name(code).to_string()),
                ts,
                bytes,
            ),
            End::OneWay => (0, None, self.request_ts, 0),
            End::Unanswered(e) => (0, Some(e.to_string()), 0, 0),
        };
        RequestRecord {
            conn: 0,
            protocol: PROTOCOL.into(),
            operation: op.into(),
            status,
            error,
            request_ts_ns: self.request_ts,
            response_ts_ns,
            request_bytes: self.request_bytes,
            response_bytes,
            attributes,
        }
    }
}

/// A topic as an attribute: lossy UTF-8, at most [`MAX_TOPIC`] bytes (cut at a character).
pub(crate) fn topic(b: &[u8]) -> Option<String> {
    if b.is_empty() {
        return None;
    }
    let mut s = String::from_utf8_lossy(&b[..b.len().min(MAX_TOPIC)]).into_owned();
    if s.len() > MAX_TOPIC {
        let mut end = MAX_TOPIC;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    Some(s)
}
