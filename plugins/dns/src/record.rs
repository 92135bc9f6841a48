//! What the parser reports: attribute keys, error strings, the names of types, opcodes and
//! response codes, and the [`RequestRecord`] of one exchange.

use sonde_sdk::protocol_parser::{RequestRecord, Transport};

use crate::query::Query;
use crate::wire::{Message, rtype};

/// `RequestRecord::protocol` of every record.
pub const PROTOCOL: &str = "dns";

/// Attribute keys, in the order they appear in a record (each only when known). The ones the
/// daemon reads too are the SDK's ([`sonde_sdk::attributes`]).
pub mod attr {
    use sonde_sdk::attributes as a;

    /// The first question's name: lowercase, no trailing dot (`.` for the root), bytes outside
    /// printable ASCII (and `.` or `\` inside a label) as `\DDD`, at most 255 bytes.
    pub const QUESTION_NAME: &str = a::DNS_QUESTION_NAME;
    /// The first question's type, named as in the operation (`A`, `AAAA`, `TYPE<n>`…).
    pub const QUESTION_TYPE: &str = "dns.question.type";
    /// The message id, decimal.
    pub const ID: &str = "dns.id";
    /// `udp` or `tcp`.
    pub const TRANSPORT: &str = a::NETWORK_TRANSPORT;
    /// The response code's name (`NOERROR`, `NXDOMAIN`, `SERVFAIL`…; `RCODE<n>` otherwise).
    pub const RESPONSE_CODE: &str = a::DNS_RESPONSE_CODE;
    /// The response header's ANCOUNT, decimal.
    pub const ANSWER_COUNT: &str = "dns.response.answer_count";
    /// `true` when the response has TC set (it did not fit; the client should retry over TCP).
    pub const TRUNCATED: &str = "dns.truncated";
    /// The first A/AAAA addresses of the answer section, comma-separated (at most 4).
    pub const ANSWERS: &str = "dns.answers";
}

/// `RequestRecord::error` values.
pub mod error {
    /// RCODE 1.
    pub const FORMERR: &str = "formerr";
    /// RCODE 2.
    pub const SERVFAIL: &str = "servfail";
    /// RCODE 3.
    pub const NXDOMAIN: &str = "nxdomain";
    /// RCODE 5.
    pub const REFUSED: &str = "refused";
    /// No response: none came within [`crate::TIMEOUT_NS`] of the query (judged by later
    /// segments' timestamps), the connection closed first, or more than
    /// [`crate::MAX_PENDING`] queries were waiting and this was the oldest.
    pub const TIMEOUT: &str = "timeout";
    /// The response was cut by a gap of the capture (or the close).
    pub const TRUNCATED: &str = "truncated";
    /// Any other non-zero RCODE `n` is reported as `rcode-<n>`.
    pub const RCODE_PREFIX: &str = "rcode-";
}

/// The name of a record type: `A`, `AAAA`, `CNAME`… or `TYPE<n>` (RFC 3597).
pub fn type_name(t: u16) -> String {
    let known = match t {
        rtype::A => "A",
        rtype::NS => "NS",
        rtype::CNAME => "CNAME",
        rtype::SOA => "SOA",
        rtype::PTR => "PTR",
        rtype::MX => "MX",
        rtype::TXT => "TXT",
        rtype::AAAA => "AAAA",
        rtype::SRV => "SRV",
        rtype::OPT => "OPT",
        rtype::SVCB => "SVCB",
        rtype::HTTPS => "HTTPS",
        rtype::ANY => "ANY",
        35 => "NAPTR",
        43 => "DS",
        46 => "RRSIG",
        47 => "NSEC",
        48 => "DNSKEY",
        50 => "NSEC3",
        52 => "TLSA",
        99 => "SPF",
        251 => "IXFR",
        252 => "AXFR",
        257 => "CAA",
        _ => return format!("TYPE{t}"),
    };
    known.to_string()
}

/// The name of a response code (RFC 1035, 2136): `NOERROR`, `NXDOMAIN`… or `RCODE<n>`.
pub fn rcode_name(rcode: u8) -> String {
    let known = match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        _ => return format!("RCODE{rcode}"),
    };
    known.to_string()
}

/// The name of an opcode other than QUERY (the operation of such messages).
pub fn opcode_name(op: u8) -> String {
    match op {
        0 => "QUERY".into(),
        1 => "IQUERY".into(),
        2 => "STATUS".into(),
        4 => "NOTIFY".into(),
        5 => "UPDATE".into(),
        6 => "DSO".into(),
        _ => format!("OPCODE{op}"),
    }
}

/// The error of a response code: none for NOERROR.
pub fn rcode_error(rcode: u8) -> Option<String> {
    match rcode {
        0 => None,
        1 => Some(error::FORMERR.into()),
        2 => Some(error::SERVFAIL.into()),
        3 => Some(error::NXDOMAIN.into()),
        5 => Some(error::REFUSED.into()),
        n => Some(format!("{}{n}", error::RCODE_PREFIX)),
    }
}

/// How an exchange ended.
pub enum Outcome<'a> {
    /// A whole response, read at `ts` (`bytes` on the wire).
    Answered {
        response: &'a Message,
        ts: u64,
        bytes: u64,
    },
    /// A response cut by a gap or the close; its header (and question) were read.
    Cut {
        response: &'a Message,
        ts: u64,
        bytes: u64,
    },
    /// No response.
    Timeout,
}

/// The record of a query and how it ended.
pub fn exchange(q: &Query, outcome: Outcome<'_>, transport: Transport) -> RequestRecord {
    let (response, ts, bytes) = match &outcome {
        Outcome::Answered {
            response,
            ts,
            bytes,
        }
        | Outcome::Cut {
            response,
            ts,
            bytes,
        } => (Some(*response), *ts, *bytes),
        Outcome::Timeout => (None, 0, 0),
    };
    // The query's question, or else the response's (a query cut before its question).
    let question = q
        .question
        .as_ref()
        .or_else(|| response.and_then(|r| r.question.as_ref()));
    let qtype = question.map(|q| type_name(q.qtype));
    let operation = match (q.opcode, &qtype) {
        (0, Some(t)) => t.clone(),
        (op, _) => opcode_name(op),
    };
    let mut attributes = Vec::with_capacity(8);
    if let Some(question) = question {
        attributes.push((attr::QUESTION_NAME.into(), question.name.clone()));
    }
    if let Some(t) = qtype {
        attributes.push((attr::QUESTION_TYPE.into(), t));
    }
    attributes.push((attr::ID.into(), q.id.to_string()));
    attributes.push((
        attr::TRANSPORT.into(),
        match transport {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
        .into(),
    ));
    let (status, error) = match (&outcome, response) {
        (Outcome::Answered { .. }, Some(r)) => {
            (u32::from(r.header.rcode()), rcode_error(r.header.rcode()))
        }
        (Outcome::Cut { .. }, Some(r)) => {
            (u32::from(r.header.rcode()), Some(error::TRUNCATED.into()))
        }
        _ => (0, Some(error::TIMEOUT.into())),
    };
    if let Some(r) = response {
        attributes.push((attr::RESPONSE_CODE.into(), rcode_name(r.header.rcode())));
        attributes.push((attr::ANSWER_COUNT.into(), r.header.ancount.to_string()));
        if r.header.tc() {
            attributes.push((attr::TRUNCATED.into(), "true".into()));
        }
        if !r.addresses.is_empty() {
            attributes.push((attr::ANSWERS.into(), r.addresses.clone()));
        }
    }
    RequestRecord {
        conn: 0,
        protocol: PROTOCOL.into(),
        operation,
        status,
        error,
        request_ts_ns: q.ts,
        response_ts_ns: ts,
        request_bytes: q.bytes,
        response_bytes: bytes,
        attributes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(type_name(1), "A");
        assert_eq!(type_name(65), "HTTPS");
        assert_eq!(type_name(64), "SVCB");
        assert_eq!(type_name(1234), "TYPE1234");
        assert_eq!(rcode_name(3), "NXDOMAIN");
        assert_eq!(rcode_name(12), "RCODE12");
        assert_eq!(rcode_error(0), None);
        assert_eq!(rcode_error(4).as_deref(), Some("rcode-4"));
        assert_eq!(rcode_error(5).as_deref(), Some("refused"));
        assert_eq!(opcode_name(5), "UPDATE");
    }
}
