//! Sonde's MQTT parser: a `protocol-parser` component (WIT world `sonde:plugin/protocol-parser`)
//! turning MQTT 3.1, 3.1.1 and 5.0 into one [`RequestRecord`] per exchange. Written against
//! `sonde-sdk` only.
//!
//! - [`detect`]: is a connection MQTT, from the client's CONNECT (never from a port).
//! - `wire`: packet framing (fixed header, remaining-length varint, bounded body prefixes,
//!   large payloads skipped by count).
//! - `conn`: per-connection state: CONNECT/CONNACK and PINGREQ/PINGRESP in order; PUBLISH
//!   (QoS 1 and 2), PUBREL, SUBSCRIBE and UNSUBSCRIBE paired with their acknowledgement by
//!   packet id, in both directions (the broker's deliveries to a subscriber too).
//! - `codes`: what a CONNACK return code or an MQTT 5 reason code is called.
//! - [`record`]: operation names, attribute keys, error strings, the record itself.
//!
//! A record: protocol `mqtt`; operation one of [`record::Op`]'s names (`connect`, `publish`,
//! `publish qos0`, `publish release`, `deliver`, `deliver qos0`, `deliver release`,
//! `subscribe`, `unsubscribe`, `ping`); status the failing return / reason code (a refused
//! CONNECT, a SUBACK refusing a filter, an MQTT 5 PUBACK ≥ 0x80) with `error` its name, else 0;
//! attributes `messaging.system`, `messaging.operation.name`, `messaging.destination.name`
//! (the topic, or the first topic filter). QoS 0 publishes have no response: their record is
//! one-way (response timestamp = request timestamp, no response bytes). A request without its
//! acknowledgement is reported with error `truncated` (a gap may have hidden it) or
//! `no-response`.
#![warn(missing_docs)]

use sonde_sdk::protocol_parser::{
    Claim, ConnInfo, ParserInfo, ProtocolParser, RequestRecord, Segment,
};

mod codes;
mod conn;
pub mod detect;
pub mod record;
mod wire;

pub use conn::MqttState;

/// The name the component reports in `info`.
pub const NAME: &str = "sonde-mqtt";

/// Bytes of a packet's body kept at most (variable header: ids, topic, properties, codes); the
/// rest (a PUBLISH's payload) is skipped by count, never buffered.
pub const KEEP: usize = 512;

/// Bytes of a topic in a record, at most.
pub const MAX_TOPIC: usize = 256;

/// Requests waiting for an acknowledgement per side, at most; beyond, the oldest is reported
/// `no-response`. (MQTT 5's default Receive Maximum is 65 535, but clients keep far fewer in
/// flight.)
pub const WAITING_MAX: usize = 256;

/// MQTT 5 topic aliases remembered per side, at most; beyond, the oldest is forgotten (its
/// later publishes have no destination).
pub const ALIASES_MAX: usize = 128;

/// Acknowledgements kept that were read before their request, at most.
pub const EARLY_MAX: usize = 32;

/// The MQTT parser.
pub struct Mqtt;

impl ProtocolParser for Mqtt {
    type State = MqttState;

    fn info() -> ParserInfo {
        ParserInfo {
            name: NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            protocols: vec![record::PROTOCOL.into()],
        }
    }

    fn detect(conn: &ConnInfo, segment: &Segment<'_>) -> Claim {
        detect::detect(conn, segment)
    }

    fn parse(
        state: &mut MqttState,
        conn: &ConnInfo,
        segment: &Segment<'_>,
        out: &mut Vec<RequestRecord>,
    ) -> Claim {
        state.parse(conn, segment, out)
    }

    fn close(state: &mut MqttState, _conn: &ConnInfo, out: &mut Vec<RequestRecord>) {
        state.close(out)
    }
}

sonde_sdk::export_protocol_parser!(Mqtt);
