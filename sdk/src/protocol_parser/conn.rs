//! What the daemon tells a parser about a connection and its bytes, and what the parser says
//! back about owning it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    #[default]
    Unknown,
    Client,
    Server,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    #[default]
    Tcp,
    Udp,
}

/// Relative to the observed process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Bytes it wrote.
    Egress,
    /// Bytes it read.
    Ingress,
}

impl Direction {
    /// 0 egress, 1 ingress: the index of per-direction arrays in the driver and the harness.
    pub(crate) fn index(self) -> usize {
        match self {
            Direction::Egress => 0,
            Direction::Ingress => 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub ip: String,
    pub port: u16,
}

/// A connection as the daemon knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ConnInfo {
    pub id: u64,
    pub pid: u32,
    pub comm: String,
    pub local: Option<Endpoint>,
    pub remote: Option<Endpoint>,
    pub role: Role,
    pub transport: Transport,
    /// Container, pod, namespace, workload when known.
    pub labels: Vec<(String, String)>,
}

impl ConnInfo {
    /// Direction of requests: a client writes them, a server reads them. Unknown role: egress.
    pub fn request_direction(&self) -> Direction {
        match self.role {
            Role::Server => Direction::Ingress,
            _ => Direction::Egress,
        }
    }
}

/// One reassembled piece of one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    pub direction: Direction,
    pub ts_ns: u64,
    /// Stream bytes missing just before this segment (not copied, or lost).
    pub gap_before: u64,
    pub data: &'a [u8],
}

/// A parser's stance on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Claim {
    Undecided,
    Mine,
    NotMine,
    /// Mine, but nothing more to learn (e.g. after an HTTP upgrade): stop sending payload.
    Finished,
}
