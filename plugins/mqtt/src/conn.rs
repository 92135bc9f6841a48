//! One connection: a packet [`Reader`] per direction, and exchanges paired on top of them.
//!
//! Sides are the MQTT client's and the broker's (whichever end the observed process is).
//! Pairing:
//! - CONNECT → CONNACK, and PINGREQ → PINGRESP: one at a time / in order (no packet id).
//! - Everything acknowledged by packet id — PUBLISH at QoS 1 (PUBACK) and 2 (PUBREC), PUBREL
//!   (PUBCOMP), SUBSCRIBE (SUBACK), UNSUBSCRIBE (UNSUBACK) — waits in its initiator's list
//!   and is paired by id with the other side's acknowledgement, however many are in flight
//!   and in whatever order they are answered. The broker initiates too: a PUBLISH to a
//!   subscriber at QoS 1 or 2 (`deliver`) waits for the client's PUBACK or PUBREC.
//! - A PUBLISH at QoS 0 has no response: it is a one-way record (see `record.rs`).
//!
//! Acknowledgements read before their request (the daemon may feed one direction's segments
//! of a batch before the other's) wait in a short list and are paired when the request comes,
//! if it was sent no later than they were read.
//!
//! Capture gaps: a gap inside a packet's body is skipped by count (a large payload loses
//! nothing we need). A gap that breaks the framing puts that direction in search of a packet
//! start: the next segment that begins with a plausible fixed header (clients and brokers
//! write whole packets) resumes it; segments before are skipped. Requests whose
//! acknowledgement may have been in a gap are reported `truncated` if it never comes;
//! those still waiting at close otherwise `no-response`.

use std::collections::VecDeque;

use sonde_sdk::protocol_parser::{Claim, ConnInfo, Direction, RequestRecord, Role, Segment};

use crate::codes;
use crate::detect::{self, Verdict};
use crate::record::{End, Exchange, Op, error, topic};
use crate::wire::{self, Packet, Reader, skip_properties, string_at, ty, u16_at};
use crate::{ALIASES_MAX, EARLY_MAX, KEEP, WAITING_MAX};

/// The MQTT client's side (index 0) and the broker's (1).
const CLIENT: usize = 0;
const BROKER: usize = 1;

/// A request waiting for its acknowledgement.
#[derive(Debug)]
struct Waiting {
    ex: Exchange,
    /// Packet id (0 for CONNECT and PINGREQ).
    id: u16,
    /// The packet type that answers it.
    answer: u8,
    /// Gaps the answering side had when it was sent: more at the end means its answer may
    /// have been lost.
    gaps: u64,
}

/// An acknowledgement read before its request.
#[derive(Debug)]
struct Early {
    /// The side that sent it.
    from: usize,
    ty: u8,
    id: u16,
    body: Vec<u8>,
    ts: u64,
    wire: u64,
}

/// The per-connection state of [`crate::Mqtt`].
#[derive(Debug)]
pub struct MqttState {
    client_dir: Option<Direction>,
    readers: [Reader; 2],
    /// Protocol level from the CONNECT: 3 (3.1), 4 (3.1.1), 5; 0 before it.
    level: u8,
    /// Requests waiting, by initiating side: id-acknowledged ones, CONNECT and PINGREQs alike.
    waiting: [VecDeque<Waiting>; 2],
    /// QoS 2 topics from PUBREC to PUBREL, by the side that published.
    released: [VecDeque<(u16, Option<String>)>; 2],
    early: VecDeque<Early>,
    /// MQTT 5 topic aliases, by the side that set them (each side's are its own).
    aliases: [VecDeque<(u16, String)>; 2],
    /// Gaps seen, by sending side.
    gaps: [u64; 2],
    /// That side's framing is lost: waiting for a segment that starts a packet.
    lost: [bool; 2],
}

impl Default for MqttState {
    fn default() -> Self {
        MqttState {
            client_dir: None,
            readers: [Reader::new(true), Reader::new(false)],
            level: 0,
            waiting: [VecDeque::new(), VecDeque::new()],
            released: [VecDeque::new(), VecDeque::new()],
            early: VecDeque::new(),
            aliases: [VecDeque::new(), VecDeque::new()],
            gaps: [0; 2],
            lost: [false; 2],
        }
    }
}

impl MqttState {
    /// Bytes of packet buffer allocated, both directions (at most 2 × [`KEEP`]).
    pub fn buffer_capacity(&self) -> usize {
        self.readers.iter().map(Reader::capacity).sum()
    }

    /// Requests waiting for an acknowledgement, both sides (at most 2 × [`WAITING_MAX`]).
    pub fn waiting(&self) -> usize {
        self.waiting.iter().map(VecDeque::len).sum()
    }

    pub(crate) fn parse(
        &mut self,
        conn: &ConnInfo,
        seg: &Segment<'_>,
        out: &mut Vec<RequestRecord>,
    ) -> Claim {
        let client_dir = *self.client_dir.get_or_insert_with(|| match conn.role {
            Role::Client => Direction::Egress,
            Role::Server => Direction::Ingress,
            // Claimed on a CONNECT: this segment is it, or it came the other way.
            Role::Unknown if detect::connect(seg.data) != Verdict::No => seg.direction,
            Role::Unknown => other(seg.direction),
        });
        let side = if seg.direction == client_dir {
            CLIENT
        } else {
            BROKER
        };
        if seg.gap_before > 0 {
            self.gap(side, seg.gap_before, out);
        }
        if self.lost[side] {
            if !self.readers[side].can_start(seg.data) {
                return Claim::Mine;
            }
            self.lost[side] = false;
        }
        let mut reader = std::mem::replace(&mut self.readers[side], Reader::new(side == CLIENT));
        let r = reader.feed(seg.data, seg.ts_ns, |p| {
            self.packet(side, &p, seg.ts_ns, out)
        });
        if r.is_err() {
            reader.reset();
            self.lost[side] = true;
        }
        self.readers[side] = reader;
        Claim::Mine
    }

    /// The connection closed: what still waits is reported without a response.
    pub(crate) fn close(&mut self, out: &mut Vec<RequestRecord>) {
        for initiator in [CLIENT, BROKER] {
            let answering = 1 - initiator;
            for w in self.waiting[initiator].drain(..) {
                let e = if self.gaps[answering] > w.gaps {
                    error::TRUNCATED
                } else {
                    error::NO_RESPONSE
                };
                out.push(w.ex.record(End::Unanswered(e)));
            }
        }
        self.early.clear();
    }

    /// `n` bytes the side `side` sent are missing.
    fn gap(&mut self, side: usize, n: u64, out: &mut Vec<RequestRecord>) {
        self.gaps[side] += 1;
        // Acknowledgements kept may answer requests the gap hid.
        self.early.clear();
        if side == BROKER {
            // A CONNACK or PINGRESP lost cannot be told from one late: in-order requests
            // waiting are given up (a later response would be paired with the wrong one).
            let (kept, lost): (VecDeque<_>, VecDeque<_>) = self.waiting[CLIENT]
                .drain(..)
                .partition(|w| w.answer != ty::CONNACK && w.answer != ty::PINGRESP);
            self.waiting[CLIENT] = kept;
            out.extend(
                lost.into_iter()
                    .map(|w| w.ex.record(End::Unanswered(error::TRUNCATED))),
            );
        }
        // A request lost (client side) is answered after those seen: pairing them holds.
        if !self.readers[side].skip(n) {
            self.readers[side].reset();
            self.lost[side] = true;
        }
    }

    /// One packet from `side`; `ts` is the segment carrying its last byte.
    fn packet(&mut self, side: usize, p: &Packet<'_>, ts: u64, out: &mut Vec<RequestRecord>) {
        let ex = |op: Op, topic: Option<String>| Exchange {
            op,
            topic,
            request_ts: p.first_ts,
            request_bytes: p.wire,
        };
        match p.ty {
            ty::CONNECT => {
                // Protocol name, then the level.
                if let Some((_, true, at)) = string_at(p.body, 0)
                    && let Some(&level) = p.body.get(at)
                {
                    self.level = level;
                }
                self.request(CLIENT, ex(Op::Connect, None), 0, ty::CONNACK, out);
            }
            ty::PINGREQ => self.request(CLIENT, ex(Op::Ping, None), 0, ty::PINGRESP, out),
            ty::PUBLISH => {
                let (mut name, id, after) = match string_at(p.body, 0) {
                    Some((t, _, at)) => {
                        let id = (p.qos() > 0).then(|| u16_at(p.body, at).or(p.picked_id));
                        // The properties follow the id (QoS 1 and 2) or the topic.
                        (topic(t), id.flatten(), at + if p.qos() > 0 { 2 } else { 0 })
                    }
                    None => (None, None, 0),
                };
                if self.level >= 5 {
                    name = self.aliased(side, name, wire::topic_alias(p.body, after));
                }
                let (acked, one_way) = if side == CLIENT {
                    (Op::Publish, Op::PublishQos0)
                } else {
                    (Op::Deliver, Op::DeliverQos0)
                };
                match (p.qos(), id) {
                    (0, _) => out.push(ex(one_way, name).record(End::OneWay)),
                    (qos, Some(id)) => {
                        let dup = p.flags & 0x08 != 0;
                        if dup
                            && self.waiting[side]
                                .iter()
                                .any(|w| w.id == id && w.ex.op == acked)
                        {
                            // A retransmission of one waiting: the first send times it.
                            return;
                        }
                        let answer = if qos == 1 { ty::PUBACK } else { ty::PUBREC };
                        self.request(side, ex(acked, name), id, answer, out);
                    }
                    // Its id was lost in a gap: it cannot be paired.
                    (_, None) => {
                        out.push(ex(acked, name).record(End::Unanswered(error::TRUNCATED)))
                    }
                }
            }
            ty::PUBREL => {
                let Some(id) = u16_at(p.body, 0) else { return };
                let released = &mut self.released[side];
                let name = match released.iter().position(|(i, _)| *i == id) {
                    Some(i) => released.remove(i).and_then(|(_, t)| t),
                    // Its PUBREC not read yet (fed after it): the PUBLISH still waits.
                    None => self.waiting[side]
                        .iter()
                        .find(|w| w.id == id && w.answer == ty::PUBREC)
                        .and_then(|w| w.ex.topic.clone()),
                };
                let op = if side == CLIENT {
                    Op::PublishRelease
                } else {
                    Op::DeliverRelease
                };
                self.request(side, ex(op, name), id, ty::PUBCOMP, out);
            }
            ty::SUBSCRIBE | ty::UNSUBSCRIBE if side == CLIENT => {
                let Some(id) = u16_at(p.body, 0) else { return };
                let at = if self.level >= 5 {
                    skip_properties(p.body, 2)
                } else {
                    Some(2)
                };
                let name = at
                    .and_then(|at| string_at(p.body, at))
                    .and_then(|(t, _, _)| topic(t));
                let (op, answer) = if p.ty == ty::SUBSCRIBE {
                    (Op::Subscribe, ty::SUBACK)
                } else {
                    (Op::Unsubscribe, ty::UNSUBACK)
                };
                self.request(CLIENT, ex(op, name), id, answer, out);
            }
            ty::CONNACK | ty::PINGRESP if side == BROKER => {
                self.acknowledgement(side, p.ty, 0, p.body, ts, p.wire, out)
            }
            ty::SUBACK | ty::UNSUBACK if side == BROKER => {
                let Some(id) = u16_at(p.body, 0) else { return };
                self.acknowledgement(side, p.ty, id, p.body, ts, p.wire, out)
            }
            ty::PUBACK | ty::PUBREC | ty::PUBCOMP => {
                let Some(id) = u16_at(p.body, 0) else { return };
                self.acknowledgement(side, p.ty, id, p.body, ts, p.wire, out)
            }
            // DISCONNECT ends the session (the connection closes next); AUTH exchanges of
            // enhanced authentication are not timed.
            _ => {}
        }
    }

    /// MQTT 5: a PUBLISH with a topic and an alias sets the alias; one with an empty topic
    /// uses the alias set earlier by the same side.
    fn aliased(&mut self, side: usize, name: Option<String>, alias: Option<u16>) -> Option<String> {
        let Some(alias) = alias else { return name };
        let aliases = &mut self.aliases[side];
        match name {
            Some(t) => {
                aliases.retain(|(a, _)| *a != alias);
                if aliases.len() >= ALIASES_MAX {
                    aliases.pop_front();
                }
                aliases.push_back((alias, t.clone()));
                Some(t)
            }
            None => aliases
                .iter()
                .find(|(a, _)| *a == alias)
                .map(|(_, t)| t.clone()),
        }
    }

    /// A request from `initiator`, answered by a packet of type `answer` (with id `id`).
    fn request(
        &mut self,
        initiator: usize,
        ex: Exchange,
        id: u16,
        answer: u8,
        out: &mut Vec<RequestRecord>,
    ) {
        let from = 1 - initiator;
        let in_order = answer == ty::CONNACK || answer == ty::PINGRESP;
        // An acknowledgement already read (this batch's other direction came first).
        if let Some(i) = self.early.iter().position(|e| {
            e.from == from && e.ty == answer && (in_order || e.id == id) && e.ts >= ex.request_ts
        }) && let Some(e) = self.early.remove(i)
        {
            let end = self.end(e.ty, &e.body, e.ts, e.wire);
            self.after_ack(initiator, e.ty, e.id, &ex, &end);
            out.push(ex.record(end));
            return;
        }
        let waiting = &mut self.waiting[initiator];
        // A PUBREL shares its PUBLISH's id: the PUBLISH may still wait for its PUBREC when
        // the PUBREC is fed after the PUBREL.
        let reused = |w: &Waiting| {
            w.id == id && !is_in_order(w) && !(w.answer == ty::PUBREC && answer == ty::PUBCOMP)
        };
        if !in_order && let Some(i) = waiting.iter().position(reused) {
            // The id is in use again: the earlier request's answer was not seen.
            if let Some(old) = waiting.remove(i) {
                let e = if self.gaps[from] > old.gaps {
                    error::TRUNCATED
                } else {
                    error::NO_RESPONSE
                };
                out.push(old.ex.record(End::Unanswered(e)));
            }
        }
        if answer == ty::CONNACK
            && let Some(i) = waiting.iter().position(|w| w.answer == ty::CONNACK)
            && let Some(old) = waiting.remove(i)
        {
            out.push(old.ex.record(End::Unanswered(error::NO_RESPONSE)));
        }
        if waiting.len() >= WAITING_MAX
            && let Some(old) = waiting.pop_front()
        {
            out.push(old.ex.record(End::Unanswered(error::NO_RESPONSE)));
        }
        waiting.push_back(Waiting {
            ex,
            id,
            answer,
            gaps: self.gaps[from],
        });
    }

    /// An acknowledgement of type `t` from `from` (id 0 for CONNACK and PINGRESP).
    #[allow(clippy::too_many_arguments)]
    fn acknowledgement(
        &mut self,
        from: usize,
        t: u8,
        id: u16,
        body: &[u8],
        ts: u64,
        wire: u64,
        out: &mut Vec<RequestRecord>,
    ) {
        let initiator = 1 - from;
        let in_order = t == ty::CONNACK || t == ty::PINGRESP;
        let found = self.waiting[initiator]
            .iter()
            .position(|w| w.answer == t && (in_order || w.id == id));
        match found.and_then(|i| self.waiting[initiator].remove(i)) {
            Some(w) => {
                let end = self.end(t, body, ts, wire);
                self.after_ack(initiator, t, id, &w.ex, &end);
                out.push(w.ex.record(end));
            }
            None => {
                if self.early.len() >= EARLY_MAX {
                    self.early.pop_front();
                }
                self.early.push_back(Early {
                    from,
                    ty: t,
                    id,
                    body: body[..body.len().min(KEEP)].to_vec(),
                    ts,
                    wire,
                });
            }
        }
    }

    /// A PUBREC that accepted a QoS 2 PUBLISH: its topic waits for the PUBREL.
    fn after_ack(&mut self, initiator: usize, t: u8, id: u16, ex: &Exchange, end: &End) {
        if t == ty::PUBREC && matches!(end, End::Answered { code: 0, .. }) {
            let released = &mut self.released[initiator];
            released.retain(|(i, _)| *i != id);
            if released.len() >= WAITING_MAX {
                released.pop_front();
            }
            released.push_back((id, ex.topic.clone()));
        }
    }

    /// How an acknowledgement ends its exchange: its failing code, if any.
    fn end(&self, t: u8, body: &[u8], ts: u64, bytes: u64) -> End {
        let code = match t {
            // Flags, then the return / reason code.
            ty::CONNACK => body
                .get(1)
                .copied()
                .filter(|c| codes::connack_refused(*c))
                .unwrap_or(0),
            // Id, then (5.0, when the packet is longer than 2) the reason code.
            ty::PUBACK | ty::PUBREC | ty::PUBCOMP => body
                .get(2)
                .copied()
                .filter(|c| codes::failed(*c))
                .unwrap_or(0),
            // Id, properties (5.0), then a code per topic filter (3.1.1's UNSUBACK has none).
            ty::SUBACK | ty::UNSUBACK => {
                let at = if self.level >= 5 {
                    skip_properties(body, 2)
                } else {
                    Some(2)
                };
                at.and_then(|at| body.get(at..))
                    .and_then(|codes| codes.iter().copied().find(|c| codes::failed(*c)))
                    .unwrap_or(0)
            }
            _ => 0,
        };
        End::Answered { ts, bytes, code }
    }
}

fn is_in_order(w: &Waiting) -> bool {
    w.answer == ty::CONNACK || w.answer == ty::PINGRESP
}

fn other(d: Direction) -> Direction {
    match d {
        Direction::Egress => Direction::Ingress,
        Direction::Ingress => Direction::Egress,
    }
}
