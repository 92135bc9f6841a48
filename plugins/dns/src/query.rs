//! A query waiting for its response, and which response answers it.

use sonde_sdk::protocol_parser::Direction;

use crate::wire::{Message, Question};

/// A query waiting for its response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    pub opcode: u8,
    /// `None` when the query was cut before its question (or had none).
    pub question: Option<Question>,
    /// The direction it travelled; its response travels the other way.
    pub direction: Direction,
    /// Timestamp of the segment with its first byte.
    pub ts: u64,
    /// Bytes on the wire (the TCP length prefix included).
    pub bytes: u64,
}

impl Query {
    pub(crate) fn answers_to(&self, r: &Message, direction: Direction) -> bool {
        if self.id != r.header.id || self.direction == direction {
            return false;
        }
        match (&self.question, &r.question) {
            (Some(q), Some(a)) => q.qtype == a.qtype && q.name == a.name,
            _ => true,
        }
    }
}
