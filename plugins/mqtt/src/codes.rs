//! What a response's code means: CONNACK return codes (MQTT 3.1 and 3.1.1) and reason codes
//! (MQTT 5), as the `error` of a record. The two code spaces do not overlap (3.x: 1 to 5;
//! 5.0: failures from 0x80), so a code is named without knowing the version: a CONNACK read
//! before its CONNECT is named all the same.

/// Whether a CONNACK's code refuses the connection.
pub(crate) fn connack_refused(code: u8) -> bool {
    code != 0
}

/// Whether a reason code of an acknowledgement (PUBACK, PUBREC, PUBCOMP, SUBACK, UNSUBACK) is
/// a failure. In 3.1.1 a SUBACK's return code is the granted QoS (0 to 2) or 0x80.
pub(crate) fn failed(code: u8) -> bool {
    code >= 0x80
}

/// The name of a failing code, kebab-case (the `error` of a record and the `error_type` of its
/// metric).
pub(crate) fn name(code: u8) -> &'static str {
    match code {
        // MQTT 3.1 / 3.1.1 CONNACK return codes.
        1 => "unacceptable-protocol-version",
        2 => "identifier-rejected",
        3 => "server-unavailable",
        4 => "bad-user-name-or-password",
        5 => "not-authorized",
        // MQTT 5 reason codes (3.1.1's SUBACK failure is 0x80 too).
        0x80 => "unspecified-error",
        0x81 => "malformed-packet",
        0x82 => "protocol-error",
        0x83 => "implementation-specific-error",
        0x84 => "unsupported-protocol-version",
        0x85 => "client-identifier-not-valid",
        0x86 => "bad-user-name-or-password",
        0x87 => "not-authorized",
        0x88 => "server-unavailable",
        0x89 => "server-busy",
        0x8a => "banned",
        0x8c => "bad-authentication-method",
        0x8f => "topic-filter-invalid",
        0x90 => "topic-name-invalid",
        0x91 => "packet-identifier-in-use",
        0x92 => "packet-identifier-not-found",
        0x95 => "packet-too-large",
        0x97 => "quota-exceeded",
        0x99 => "payload-format-invalid",
        0x9a => "retain-not-supported",
        0x9b => "qos-not-supported",
        0x9c => "use-another-server",
        0x9d => "server-moved",
        0x9e => "shared-subscriptions-not-supported",
        0x9f => "connection-rate-exceeded",
        0xa1 => "subscription-identifiers-not-supported",
        0xa2 => "wildcard-subscriptions-not-supported",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_versions_name_a_refusal_alike() {
        assert_eq!(name(5), name(0x87));
        assert_eq!(name(4), name(0x86));
        assert!(connack_refused(5) && !connack_refused(0));
        assert!(failed(0x80) && !failed(2) && !failed(0x10));
    }
}
