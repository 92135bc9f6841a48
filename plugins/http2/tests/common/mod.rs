//! What the fixture tests share: the recordings (the SDK harness format) as items to replay.

use std::path::Path;

use sonde_sdk::protocol_parser::{Direction, RequestRecord};

/// (operation, status, error) of records.
pub(crate) type Ops = Vec<(String, u32, Option<String>)>;

#[derive(Debug, Clone)]
pub(crate) enum Item {
    Seg(Direction, u64, Vec<u8>),
    Gap(Direction, u64),
}

/// The recording's segments (the format of the SDK harness).
pub(crate) fn load(name: &str) -> Vec<Item> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let bytes = std::fs::read(&path).unwrap();
    let mut items = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let nl = at + bytes[at..].iter().position(|b| *b == b'\n').unwrap();
        let header = std::str::from_utf8(&bytes[at..nl]).unwrap();
        let f: Vec<&str> = header.split_whitespace().collect();
        match f[0] {
            ">" | "<" => {
                let dir = if f[0] == ">" {
                    Direction::Egress
                } else {
                    Direction::Ingress
                };
                let (ts, len): (u64, usize) = (f[1].parse().unwrap(), f[2].parse().unwrap());
                items.push(Item::Seg(dir, ts, bytes[nl + 1..nl + 1 + len].to_vec()));
                at = nl + 1 + len + 1;
            }
            _ => at = nl + 1,
        }
    }
    items
}

/// Operation, status, error of each record: sorted, since interleaved streams end in any order.
pub(crate) fn ops(records: &[RequestRecord]) -> Ops {
    let mut v: Vec<_> = records
        .iter()
        .map(|r| (r.operation.clone(), r.status, r.error.clone()))
        .collect();
    v.sort();
    v
}

pub(crate) fn op(o: &str, status: u32, error: Option<&str>) -> (String, u32, Option<String>) {
    (o.into(), status, error.map(Into::into))
}

/// Every byte a recording holds in direction `dir`, its segments joined in order.
pub(crate) fn direction_bytes(items: &[Item], dir: Direction) -> Vec<u8> {
    items
        .iter()
        .filter_map(|it| match it {
            Item::Seg(d, _, data) if *d == dir => Some(data.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Each direction of a recording joined into one segment, the server's (ingress, as the
/// recordings are seen from the client) first: a batch may hand over that side first.
pub(crate) fn server_side_first(items: &[Item]) -> [Item; 2] {
    let join = |dir: Direction| Item::Seg(dir, 1, direction_bytes(items, dir));
    [join(Direction::Ingress), join(Direction::Egress)]
}
