//! Helpers shared by the integration tests: packet builders and record views.
#![allow(dead_code)]

use sonde_mysql_parser::Mysql;
use sonde_sdk::protocol_parser::harness::Harness;
use sonde_sdk::protocol_parser::{Claim, ConnInfo, RequestRecord, Role};

pub(crate) type H = Harness<Mysql>;

pub(crate) const CLIENT_CONNECT_WITH_DB: u32 = 0x8;
pub(crate) const CLIENT_PROTOCOL_41: u32 = 0x200;
pub(crate) const CLIENT_SSL: u32 = 0x800;
pub(crate) const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
pub(crate) const CLIENT_PLUGIN_AUTH: u32 = 0x8_0000;
pub(crate) const CLIENT_PLUGIN_AUTH_LENENC: u32 = 0x20_0000;
pub(crate) const CLIENT_DEPRECATE_EOF: u32 = 0x100_0000;
pub(crate) const MORE_RESULTS: u16 = 0x0008;
pub(crate) const AUTOCOMMIT: u16 = 0x0002;

/// Capabilities a modern client and server both announce (without `CLIENT_DEPRECATE_EOF`).
pub(crate) const BASE_CAPS: u32 = 0x0000_0001 // LONG_PASSWORD
    | 0x0000_0004 // LONG_FLAG
    | CLIENT_CONNECT_WITH_DB
    | CLIENT_PROTOCOL_41
    | 0x0000_2000 // TRANSACTIONS
    | CLIENT_SECURE_CONNECTION
    | 0x0001_0000 // MULTI_STATEMENTS
    | 0x0002_0000 // MULTI_RESULTS
    | CLIENT_PLUGIN_AUTH
    | CLIENT_PLUGIN_AUTH_LENENC;

/// One packet: 3-byte length, sequence id, payload (no continuation splitting).
pub(crate) fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let n = payload.len();
    assert!(n < 0xFF_FFFF);
    let mut v = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, seq];
    v.extend_from_slice(payload);
    v
}

/// Packets with consecutive sequence ids from `seq`.
pub(crate) fn packets(seq: u8, payloads: &[Vec<u8>]) -> Vec<u8> {
    payloads
        .iter()
        .enumerate()
        .flat_map(|(i, p)| packet(seq.wrapping_add(i as u8), p))
        .collect()
}

pub(crate) fn lenenc(n: u64) -> Vec<u8> {
    match n {
        0..=0xFA => vec![n as u8],
        0xFB..=0xFFFF => vec![0xFC, n as u8, (n >> 8) as u8],
        0x1_0000..=0xFF_FFFF => vec![0xFD, n as u8, (n >> 8) as u8, (n >> 16) as u8],
        _ => {
            let mut v = vec![0xFE];
            v.extend_from_slice(&n.to_le_bytes());
            v
        }
    }
}

pub(crate) fn lenenc_str(s: &[u8]) -> Vec<u8> {
    let mut v = lenenc(s.len() as u64);
    v.extend_from_slice(s);
    v
}

/// The server's initial handshake (protocol 10).
pub(crate) fn greeting(version: &str, caps: u32) -> Vec<u8> {
    let mut p = vec![10];
    p.extend_from_slice(version.as_bytes());
    p.push(0);
    p.extend_from_slice(&42u32.to_le_bytes());
    p.extend_from_slice(b"abcdefgh");
    p.push(0);
    p.extend_from_slice(&(caps as u16).to_le_bytes());
    p.push(0x21);
    p.extend_from_slice(&AUTOCOMMIT.to_le_bytes());
    p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    p.push(21);
    p.extend_from_slice(&[0; 10]);
    p.extend_from_slice(b"ijklmnopqrst\0");
    p.extend_from_slice(b"caching_sha2_password\0");
    p
}

/// The client's handshake response (protocol 41).
pub(crate) fn login(caps: u32, user: &str, db: Option<&str>) -> Vec<u8> {
    let caps = if db.is_some() {
        caps | CLIENT_CONNECT_WITH_DB
    } else {
        caps & !CLIENT_CONNECT_WITH_DB
    };
    let mut p = caps.to_le_bytes().to_vec();
    p.extend_from_slice(&(16u32 << 20).to_le_bytes());
    p.push(0x21);
    p.extend_from_slice(&[0; 23]);
    p.extend_from_slice(user.as_bytes());
    p.push(0);
    p.extend_from_slice(&lenenc_str(&[0x5a; 32]));
    if let Some(db) = db {
        p.extend_from_slice(db.as_bytes());
        p.push(0);
    }
    p.extend_from_slice(b"caching_sha2_password\0");
    p
}

/// The short SSL request a client sends before switching to TLS.
pub(crate) fn ssl_request(caps: u32) -> Vec<u8> {
    let mut p = (caps | CLIENT_SSL).to_le_bytes().to_vec();
    p.extend_from_slice(&(16u32 << 20).to_le_bytes());
    p.push(0x21);
    p.extend_from_slice(&[0; 23]);
    p
}

pub(crate) fn ok(affected: u64, status: u16) -> Vec<u8> {
    let mut p = vec![0x00];
    p.extend_from_slice(&lenenc(affected));
    p.extend_from_slice(&lenenc(0));
    p.extend_from_slice(&status.to_le_bytes());
    p.extend_from_slice(&[0, 0]);
    p
}

/// The OK packet with a `0xFE` header that ends a result set under `CLIENT_DEPRECATE_EOF`.
pub(crate) fn ok_fe(status: u16) -> Vec<u8> {
    let mut p = ok(0, status);
    p[0] = 0xFE;
    p
}

pub(crate) fn eof(status: u16) -> Vec<u8> {
    let mut p = vec![0xFE, 0, 0];
    p.extend_from_slice(&status.to_le_bytes());
    p
}

pub(crate) fn err(code: u16, state: &str, msg: &str) -> Vec<u8> {
    let mut p = vec![0xFF];
    p.extend_from_slice(&code.to_le_bytes());
    p.push(b'#');
    p.extend_from_slice(state.as_bytes());
    p.extend_from_slice(msg.as_bytes());
    p
}

pub(crate) fn column_def(name: &str) -> Vec<u8> {
    let mut p = Vec::new();
    for s in [
        &b"def"[..],
        b"shop",
        b"t",
        b"t",
        name.as_bytes(),
        name.as_bytes(),
    ] {
        p.extend_from_slice(&lenenc_str(s));
    }
    p.push(0x0c);
    p.extend_from_slice(&[0x21, 0, 0xff, 0, 0, 0, 0xfd, 0, 0, 0, 0, 0]);
    p
}

pub(crate) fn text_row(values: &[&str]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|v| lenenc_str(v.as_bytes()))
        .collect()
}

/// A binary-protocol row: header 0x00, NULL bitmap, then the values (all strings here).
pub(crate) fn binary_row(values: &[&str]) -> Vec<u8> {
    let mut p = vec![0x00];
    p.extend(std::iter::repeat_n(0, (values.len() + 9) / 8));
    for v in values {
        p.extend_from_slice(&lenenc_str(v.as_bytes()));
    }
    p
}

pub(crate) fn query(sql: &str) -> Vec<u8> {
    let mut p = vec![0x03];
    p.extend_from_slice(sql.as_bytes());
    packet(0, &p)
}

pub(crate) fn prepare(sql: &str) -> Vec<u8> {
    let mut p = vec![0x16];
    p.extend_from_slice(sql.as_bytes());
    packet(0, &p)
}

pub(crate) fn execute(id: u32, params: &[&str]) -> Vec<u8> {
    let mut p = vec![0x17];
    p.extend_from_slice(&id.to_le_bytes());
    p.push(0);
    p.extend_from_slice(&1u32.to_le_bytes());
    if !params.is_empty() {
        p.extend(std::iter::repeat_n(0, params.len().div_ceil(8)));
        p.push(1);
        for _ in params {
            p.extend_from_slice(&[0xfe, 0]);
        }
        for v in params {
            p.extend_from_slice(&lenenc_str(v.as_bytes()));
        }
    }
    packet(0, &p)
}

pub(crate) fn prepare_ok(id: u32, columns: u16, params: u16) -> Vec<u8> {
    let mut p = vec![0x00];
    p.extend_from_slice(&id.to_le_bytes());
    p.extend_from_slice(&columns.to_le_bytes());
    p.extend_from_slice(&params.to_le_bytes());
    p.extend_from_slice(&[0, 0, 0]);
    p
}

/// A whole PREPARE_OK response (sequence ids from 1).
pub(crate) fn prepare_response(
    id: u32,
    columns: &[&str],
    params: usize,
    deprecate_eof: bool,
) -> Vec<u8> {
    let mut ps = vec![prepare_ok(id, columns.len() as u16, params as u16)];
    for i in 0..params {
        ps.push(column_def(&format!("?{i}")));
    }
    if params > 0 && !deprecate_eof {
        ps.push(eof(AUTOCOMMIT));
    }
    for c in columns {
        ps.push(column_def(c));
    }
    if !columns.is_empty() && !deprecate_eof {
        ps.push(eof(AUTOCOMMIT));
    }
    packets(1, &ps)
}

/// A whole text result set response (sequence ids from 1).
pub(crate) fn result_set(
    columns: &[&str],
    rows: &[Vec<&str>],
    deprecate_eof: bool,
    status: u16,
) -> Vec<u8> {
    rows_response(
        columns,
        rows.iter().map(|r| text_row(r)).collect(),
        deprecate_eof,
        status,
    )
}

/// A result set with the given row payloads.
pub(crate) fn rows_response(
    columns: &[&str],
    rows: Vec<Vec<u8>>,
    deprecate_eof: bool,
    status: u16,
) -> Vec<u8> {
    let mut ps = vec![lenenc(columns.len() as u64)];
    ps.extend(columns.iter().map(|c| column_def(c)));
    if !deprecate_eof {
        ps.push(eof(status));
    }
    ps.extend(rows);
    ps.push(if deprecate_eof {
        ok_fe(status)
    } else {
        eof(status)
    });
    packets(1, &ps)
}

/// Handshake bytes: (server greeting, client login, server auth OK), with or without
/// `CLIENT_DEPRECATE_EOF` on both sides.
pub(crate) fn handshake(deprecate_eof: bool, db: Option<&str>) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let caps = if deprecate_eof {
        BASE_CAPS | CLIENT_DEPRECATE_EOF
    } else {
        BASE_CAPS
    };
    (
        packet(0, &greeting("8.0.36", caps | CLIENT_SSL)),
        packet(1, &login(caps, "app", db)),
        packets(2, &[vec![0x01, 0x03], ok(0, AUTOCOMMIT)]),
    )
}

/// Feed a handshake to a harness at timestamps 1..=3.
pub(crate) fn connect(h: &mut H, deprecate_eof: bool, db: Option<&str>) {
    let (g, l, o) = handshake(deprecate_eof, db);
    h.response(1, &g).request(2, &l).response(3, &o);
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

pub(crate) fn with_role(role: Role) -> H {
    H::new(ConnInfo {
        id: 1,
        role,
        ..Default::default()
    })
}

/// Every record must respect the parser's bounds, whatever the input.
pub(crate) fn assert_bounded(records: &[RequestRecord]) {
    for r in records {
        assert_eq!(r.protocol, "mysql");
        assert!(r.operation.len() <= 32, "{}", r.operation);
        for (k, v) in &r.attributes {
            assert!(v.len() <= 1024, "{k} is {} bytes", v.len());
        }
    }
}
