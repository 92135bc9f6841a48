//! Helpers shared by the integration tests: a small DNS message builder and harness shortcuts.
#![allow(dead_code)]

use sonde_dns_parser::Dns;
use sonde_sdk::protocol_parser::harness::Harness;
use sonde_sdk::protocol_parser::{Claim, ConnInfo, RequestRecord, Role, Transport};

pub(crate) type H = Harness<Dns>;

pub(crate) const A: u16 = 1;
pub(crate) const NS: u16 = 2;
pub(crate) const CNAME: u16 = 5;
pub(crate) const MX: u16 = 15;
pub(crate) const TXT: u16 = 16;
pub(crate) const AAAA: u16 = 28;
pub(crate) const SRV: u16 = 33;
pub(crate) const HTTPS: u16 = 65;

pub(crate) const NOERROR: u8 = 0;
pub(crate) const FORMERR: u8 = 1;
pub(crate) const SERVFAIL: u8 = 2;
pub(crate) const NXDOMAIN: u8 = 3;
pub(crate) const NOTIMP: u8 = 4;
pub(crate) const REFUSED: u8 = 5;

/// A name on the wire, uncompressed.
pub(crate) fn name(n: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in n.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

fn header(id: u16, flags: u16, qd: u16, an: u16, ns: u16, ar: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(64);
    for v in [id, flags, qd, an, ns, ar] {
        m.extend_from_slice(&v.to_be_bytes());
    }
    m
}

/// A recursive query (RD set) for `qname`/`qtype`, class IN.
pub(crate) fn query(id: u16, qname: &str, qtype: u16) -> Vec<u8> {
    let mut m = header(id, 0x0100, 1, 0, 0, 0);
    m.extend_from_slice(&name(qname));
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    m
}

/// An answer record. Owners are a pointer to the question's name (offset 12).
#[derive(Debug, Clone)]
pub(crate) enum Rr {
    A([u8; 4]),
    Aaaa([u8; 16]),
    /// Target written uncompressed.
    Cname(&'static str),
    /// Anything else: type and raw rdata.
    Raw(u16, Vec<u8>),
}

fn rr(m: &mut Vec<u8>, owner: &[u8], rtype: u16, rdata: &[u8]) {
    m.extend_from_slice(owner);
    m.extend_from_slice(&rtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    m.extend_from_slice(&300u32.to_be_bytes());
    m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    m.extend_from_slice(rdata);
}

/// A response (QR, RD, RA) repeating the question, with `answers` whose owners point to it.
pub(crate) fn response(id: u16, qname: &str, qtype: u16, rcode: u8, answers: &[Rr]) -> Vec<u8> {
    let mut m = header(id, 0x8180 | u16::from(rcode), 1, answers.len() as u16, 0, 0);
    m.extend_from_slice(&name(qname));
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    for a in answers {
        match a {
            Rr::A(ip) => rr(&mut m, &[0xC0, 0x0C], A, ip),
            Rr::Aaaa(ip) => rr(&mut m, &[0xC0, 0x0C], AAAA, ip),
            Rr::Cname(t) => rr(&mut m, &[0xC0, 0x0C], CNAME, &name(t)),
            Rr::Raw(t, data) => rr(&mut m, &[0xC0, 0x0C], *t, data),
        }
    }
    m
}

/// A response to `www.example.com A` through a CNAME, every name compressed: the CNAME's
/// owner points to the question, its target `cdn` + pointer to `example.com` inside the
/// question, and the A records' owners point to the CNAME's target (a pointer to a name that
/// itself ends in a pointer).
pub(crate) fn compressed_cname_response(id: u16) -> Vec<u8> {
    let mut m = header(id, 0x8180, 1, 3, 0, 0);
    m.extend_from_slice(&name("www.example.com")); // at 12; "example.com" at 16
    m.extend_from_slice(&A.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    let cname_rdata_at = m.len() + 12;
    rr(&mut m, &[0xC0, 0x0C], CNAME, b"\x03cdn\xC0\x10");
    let target = [0xC0 | (cname_rdata_at >> 8) as u8, cname_rdata_at as u8];
    rr(&mut m, &target, A, &[93, 184, 216, 34]);
    rr(&mut m, &target, A, &[93, 184, 216, 35]);
    m
}

/// The message with TC set.
pub(crate) fn with_tc(mut m: Vec<u8>) -> Vec<u8> {
    m[2] |= 0x02;
    m
}

/// The message with a 2-byte length prefix (TCP).
pub(crate) fn tcp(m: &[u8]) -> Vec<u8> {
    let mut out = (m.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(m);
    out
}

pub(crate) fn conn(role: Role, transport: Transport) -> ConnInfo {
    ConnInfo {
        id: 1,
        role,
        transport,
        ..Default::default()
    }
}

pub(crate) fn udp_client() -> H {
    H::new(conn(Role::Client, Transport::Udp))
}

pub(crate) fn udp_server() -> H {
    H::new(conn(Role::Server, Transport::Udp))
}

pub(crate) fn tcp_client() -> H {
    H::new(conn(Role::Client, Transport::Tcp))
}

pub(crate) fn tcp_server() -> H {
    H::new(conn(Role::Server, Transport::Tcp))
}

#[allow(unused_imports)] // not every test binary compares ops
pub(crate) use sonde_sdk::protocol_parser::harness::{Brief, op};

// The SDK harness has these; the short free-function names keep the tests readable.
pub(crate) fn brief(r: &RequestRecord) -> Brief {
    Brief::from(r)
}

pub(crate) fn ops(h: &H) -> Vec<(String, u32, Option<String>)> {
    h.ops()
}

pub(crate) fn attr<'a>(r: &'a RequestRecord, key: &str) -> Option<&'a str> {
    r.attr(key)
}

pub(crate) fn claims(h: &H) -> Vec<Claim> {
    h.claims()
}

pub(crate) fn briefs(h: &H) -> Vec<Brief> {
    h.briefs()
}

pub(crate) fn b(
    operation: &str,
    status: u32,
    error: Option<&str>,
    ts: (u64, u64),
    bytes: (u64, u64),
) -> Brief {
    Brief {
        operation: operation.into(),
        status,
        error: error.map(str::to_string),
        request_ts: ts.0,
        response_ts: ts.1,
        request_bytes: bytes.0,
        response_bytes: bytes.1,
    }
}

/// The question names of the records, in order.
pub(crate) fn names(h: &H) -> Vec<String> {
    h.result
        .records
        .iter()
        .map(|r| attr(r, "dns.question.name").unwrap_or("").to_string())
        .collect()
}

/// Every record must respect the parser's bounds, whatever the input.
pub(crate) fn assert_bounded(records: &[RequestRecord]) {
    for r in records {
        assert_eq!(r.protocol, "dns");
        assert!(r.operation.len() <= 16, "{}", r.operation);
        assert!(r.attributes.len() <= 8, "{:?}", r.attributes);
        for (k, v) in &r.attributes {
            let max = if k == "dns.answers" { 4 * 40 + 3 } else { 255 };
            assert!(v.len() <= max, "{k} is {} bytes", v.len());
        }
        if let Some(answers) = attr(r, "dns.answers") {
            assert!(answers.split(',').count() <= 4, "{answers}");
        }
    }
}

/// A tiny deterministic PRNG (xorshift64*), so the randomised tests replay.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}
