//! Packet framing. Every MQTT control packet is a fixed header — one byte of type (high
//! nibble) and flags (low nibble), then the remaining length as a varint of 1 to 4 bytes —
//! followed by that many bytes. A [`Reader`] per direction frames a stream cut into segments,
//! keeps at most [`KEEP`](crate::KEEP) bytes of each body (the variable header: packet id,
//! topic, properties, reason codes) and skips the rest by count: a large PUBLISH payload is
//! never buffered. The packet id of a PUBLISH whose topic is longer than the kept prefix is
//! picked out of the stream as it passes.

use crate::KEEP;

/// Largest remaining length the 4-byte varint can say (the protocol's own limit).
#[cfg(test)]
pub(crate) const MAX_REMAINING: u64 = 268_435_455;

/// Control packet types.
pub(crate) mod ty {
    pub(crate) const CONNECT: u8 = 1;
    pub(crate) const CONNACK: u8 = 2;
    pub(crate) const PUBLISH: u8 = 3;
    pub(crate) const PUBACK: u8 = 4;
    pub(crate) const PUBREC: u8 = 5;
    pub(crate) const PUBREL: u8 = 6;
    pub(crate) const PUBCOMP: u8 = 7;
    pub(crate) const SUBSCRIBE: u8 = 8;
    pub(crate) const SUBACK: u8 = 9;
    pub(crate) const UNSUBSCRIBE: u8 = 10;
    pub(crate) const UNSUBACK: u8 = 11;
    pub(crate) const PINGREQ: u8 = 12;
    pub(crate) const PINGRESP: u8 = 13;
    pub(crate) const DISCONNECT: u8 = 14;
    pub(crate) const AUTH: u8 = 15;
}

/// Whether a fixed header's first byte can be sent by this side (`from_client`): the type is
/// one that side sends, and the flags are the ones the specification fixes for it.
pub(crate) fn plausible(first: u8, from_client: bool) -> bool {
    let (t, flags) = (first >> 4, first & 0x0f);
    let sent = match t {
        ty::CONNECT | ty::SUBSCRIBE | ty::UNSUBSCRIBE | ty::PINGREQ => from_client,
        ty::CONNACK | ty::SUBACK | ty::UNSUBACK | ty::PINGRESP => !from_client,
        ty::PUBLISH
        | ty::PUBACK
        | ty::PUBREC
        | ty::PUBREL
        | ty::PUBCOMP
        | ty::DISCONNECT
        | ty::AUTH => true,
        _ => false,
    };
    let flags_ok = match t {
        // QoS 3 does not exist.
        ty::PUBLISH => (flags >> 1) & 3 != 3,
        ty::PUBREL | ty::SUBSCRIBE | ty::UNSUBSCRIBE => flags == 0b0010,
        _ => flags == 0,
    };
    sent && flags_ok
}

/// A packet as framed.
#[derive(Debug)]
pub(crate) struct Packet<'a> {
    /// The packet type (high nibble of the first byte).
    pub ty: u8,
    /// The flags (low nibble).
    pub flags: u8,
    /// The first bytes of the body, at most [`KEEP`].
    pub body: &'a [u8],
    /// A PUBLISH's packet id when it lay beyond the kept prefix (see [`Reader`]).
    pub picked_id: Option<u16>,
    /// Bytes of the packet on the wire, header included.
    pub wire: u64,
    /// Timestamp of the segment carrying the packet's first byte.
    pub first_ts: u64,
}

impl Packet<'_> {
    /// QoS of a PUBLISH.
    pub(crate) fn qos(&self) -> u8 {
        (self.flags >> 1) & 3
    }
}

/// Why framing stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Broken {
    /// A header this side cannot send, or a remaining length longer than 4 bytes.
    Implausible,
}

/// One direction's framing.
#[derive(Debug)]
pub(crate) struct Reader {
    /// The client's bytes (for [`plausible`]).
    from_client: bool,
    head: [u8; 5],
    head_len: usize,
    first_ts: u64,
    ty_flags: u8,
    len: u64,
    body: Vec<u8>,
    /// Body bytes still to come for the current packet.
    remaining: u64,
    in_body: bool,
    cut: bool,
    /// A PUBLISH's packet id, picked as it passes: its offset in the body, its bytes, how many
    /// of them seen.
    pick: Option<(u64, [u8; 2], usize)>,
}

impl Reader {
    pub(crate) fn new(from_client: bool) -> Self {
        Reader {
            from_client,
            head: [0; 5],
            head_len: 0,
            first_ts: 0,
            ty_flags: 0,
            len: 0,
            body: Vec::new(),
            remaining: 0,
            in_body: false,
            cut: false,
            pick: None,
        }
    }

    /// Bytes of buffer allocated.
    pub(crate) fn capacity(&self) -> usize {
        self.body.capacity()
    }

    /// `n` bytes of the stream are missing: whether the framing holds (they lay inside the
    /// current packet's body, which is delivered, cut, when its end comes).
    pub(crate) fn skip(&mut self, n: u64) -> bool {
        if !self.in_body || self.remaining < n {
            return false;
        }
        self.remaining -= n;
        self.cut = true;
        // The id, if it was among the lost bytes, is lost too.
        if let Some((at, _, got)) = self.pick
            && got < 2
            && at < self.len - self.remaining
        {
            self.pick = None;
        }
        true
    }

    /// Start again at a packet boundary (after a gap that broke the framing).
    pub(crate) fn reset(&mut self) {
        self.head_len = 0;
        self.in_body = false;
        self.cut = false;
        self.pick = None;
        self.body.clear();
    }

    /// Whether `data` can start a packet from this side: the first byte plausible and the
    /// remaining length well formed, as far as `data` goes.
    pub(crate) fn can_start(&self, data: &[u8]) -> bool {
        let Some(&first) = data.first() else {
            return false;
        };
        if !plausible(first, self.from_client) {
            return false;
        }
        !matches!(varint(&data[1..]), Varint::Malformed)
    }

    /// Feed `data` (timestamp `ts`); `each` gets every complete packet. Stops at an implausible
    /// header.
    pub(crate) fn feed(
        &mut self,
        mut data: &[u8],
        ts: u64,
        mut each: impl FnMut(Packet<'_>),
    ) -> Result<(), Broken> {
        while !data.is_empty() {
            if !self.in_body {
                if self.head_len == 0 {
                    self.first_ts = ts;
                }
                // One byte at a time: the header is at most 5 bytes, and where it ends depends
                // on each varint byte.
                self.head[self.head_len] = data[0];
                self.head_len += 1;
                data = &data[1..];
                if self.head_len == 1 {
                    if !plausible(self.head[0], self.from_client) {
                        return Err(Broken::Implausible);
                    }
                    continue;
                }
                match varint(&self.head[1..self.head_len]) {
                    Varint::Short => {
                        // A 4-byte varint cannot continue: `varint` says Malformed first.
                        continue;
                    }
                    Varint::Malformed => return Err(Broken::Implausible),
                    Varint::Value(len, _) => {
                        self.ty_flags = self.head[0];
                        self.len = len;
                        self.remaining = len;
                        self.body.clear();
                        self.in_body = true;
                        self.cut = false;
                        self.pick = None;
                    }
                }
            }
            let offset = self.len - self.remaining;
            let take = self.remaining.min(data.len() as u64) as usize;
            let chunk = &data[..take];
            if !self.cut && self.body.len() < KEEP {
                let room = (KEEP - self.body.len()).min(take);
                self.body.extend_from_slice(&chunk[..room]);
                self.plan_pick();
            }
            if let Some((at, bytes, got)) = &mut self.pick {
                while *got < 2 {
                    let want = *at + *got as u64;
                    if want < offset || want >= offset + take as u64 {
                        break;
                    }
                    bytes[*got] = chunk[(want - offset) as usize];
                    *got += 1;
                }
            }
            self.remaining -= take as u64;
            data = &data[take..];
            if self.remaining > 0 {
                return Ok(());
            }
            let body = std::mem::take(&mut self.body);
            let picked_id = match self.pick.take() {
                Some((_, b, 2)) => Some(u16::from_be_bytes(b)),
                _ => None,
            };
            each(Packet {
                ty: self.ty_flags >> 4,
                flags: self.ty_flags & 0x0f,
                body: &body,
                picked_id,
                wire: self.head_len as u64 + self.len,
                first_ts: self.first_ts,
            });
            // Keep the allocation.
            self.body = body;
            self.body.clear();
            self.in_body = false;
            self.head_len = 0;
        }
        // A packet with an empty body ends with its header.
        if self.in_body && self.remaining == 0 {
            self.in_body = false;
            self.head_len = 0;
            each(Packet {
                ty: self.ty_flags >> 4,
                flags: self.ty_flags & 0x0f,
                body: &[],
                picked_id: None,
                wire: self.head_len as u64,
                first_ts: self.first_ts,
            });
        }
        Ok(())
    }

    /// A QoS 1 or 2 PUBLISH whose id lies beyond the kept prefix: remember where it is.
    fn plan_pick(&mut self) {
        if self.pick.is_some()
            || self.ty_flags >> 4 != ty::PUBLISH
            || (self.ty_flags >> 1) & 3 == 0
            || self.body.len() < 2
        {
            return;
        }
        let at = 2 + u64::from(u16::from_be_bytes([self.body[0], self.body[1]]));
        if at + 2 > KEEP as u64 {
            self.pick = Some((at, [0; 2], 0));
        }
    }
}

/// A variable byte integer, as far as the bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Varint {
    /// The value and the bytes it took.
    Value(u64, usize),
    /// More bytes needed.
    Short,
    /// A fifth byte would be needed.
    Malformed,
}

/// Decode a variable byte integer (at most 4 bytes) at the start of `b`.
pub(crate) fn varint(b: &[u8]) -> Varint {
    let mut value = 0u64;
    for i in 0..4 {
        let Some(&byte) = b.get(i) else {
            return Varint::Short;
        };
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Varint::Value(value, i + 1);
        }
    }
    Varint::Malformed
}

/// A big-endian u16 at `at`.
pub(crate) fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// A length-prefixed string at `at`: its bytes (cut at what `b` holds) and whether it is whole,
/// and the offset after it.
pub(crate) fn string_at(b: &[u8], at: usize) -> Option<(&[u8], bool, usize)> {
    let len = usize::from(u16_at(b, at)?);
    let start = at + 2;
    let end = start + len;
    let avail = b.len().min(end);
    Some((b.get(start..avail)?, avail == end, end))
}

/// Skip an MQTT 5 property block at `at` (its length is a varint): the offset after it, if
/// `b` holds the length.
pub(crate) fn skip_properties(b: &[u8], at: usize) -> Option<usize> {
    match varint(b.get(at..)?) {
        Varint::Value(len, n) => Some(at + n + usize::try_from(len).ok()?),
        _ => None,
    }
}

/// The Topic Alias (property 0x23) of an MQTT 5 property block at `at`, if the block is
/// whole in `b` and has one. Walks the properties by their types' sizes.
pub(crate) fn topic_alias(b: &[u8], at: usize) -> Option<u16> {
    let Varint::Value(len, n) = varint(b.get(at..)?) else {
        return None;
    };
    let start = at + n;
    let props = b.get(start..start + usize::try_from(len).ok()?)?;
    let mut i = 0;
    while i < props.len() {
        let id = props[i];
        i += 1;
        let size = match id {
            0x23 => return u16_at(props, i),
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2a => 1,
            0x13 | 0x21 | 0x22 => 2,
            0x02 | 0x11 | 0x18 | 0x27 => 4,
            0x0b => match varint(props.get(i..)?) {
                Varint::Value(_, n) => n,
                _ => return None,
            },
            // UTF-8 string, binary data: a 2-byte length and the bytes.
            0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1a | 0x1c | 0x1f => {
                2 + usize::from(u16_at(props, i)?)
            }
            // A string pair.
            0x26 => {
                let k = 2 + usize::from(u16_at(props, i)?);
                k + 2 + usize::from(u16_at(props, i + k)?)
            }
            _ => return None,
        };
        i += size;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(r: &mut Reader, chunks: &[&[u8]]) -> Vec<(u8, u64, Vec<u8>, Option<u16>)> {
        let mut got = Vec::new();
        for c in chunks {
            r.feed(c, 1, |p| {
                got.push((p.ty, p.wire, p.body.to_vec(), p.picked_id))
            })
            .unwrap();
        }
        got
    }

    #[test]
    fn varints_up_to_four_bytes() {
        assert_eq!(varint(&[0]), Varint::Value(0, 1));
        assert_eq!(varint(&[0x7f]), Varint::Value(127, 1));
        assert_eq!(varint(&[0x80, 0x01]), Varint::Value(128, 2));
        assert_eq!(
            varint(&[0xff, 0xff, 0xff, 0x7f]),
            Varint::Value(MAX_REMAINING, 4)
        );
        assert_eq!(varint(&[0x80, 0x80]), Varint::Short);
        assert_eq!(varint(&[0x80, 0x80, 0x80, 0x80, 0x01]), Varint::Malformed);
    }

    #[test]
    fn frames_byte_by_byte_and_empty_bodies() {
        let stream = [&[0xc0, 0x00][..], &[0x40, 0x02, 0x00, 0x07], &[0xe0, 0x00]].concat();
        let mut r = Reader::new(true);
        let chunks: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(
            frames(&mut r, &chunks),
            vec![
                (12, 2, vec![], None),
                (4, 4, vec![0, 7], None),
                (14, 2, vec![], None)
            ]
        );
    }

    #[test]
    fn large_publish_is_skipped_and_its_id_picked() {
        // Topic longer than KEEP, QoS 1, a 100 000-byte payload.
        let topic = vec![b't'; KEEP + 10];
        let mut body = (topic.len() as u16).to_be_bytes().to_vec();
        body.extend_from_slice(&topic);
        body.extend_from_slice(&[0x12, 0x34]);
        body.extend(std::iter::repeat_n(b'x', 100_000));
        let len = body.len();
        let mut p = vec![
            0x32,
            (len & 0x7f) as u8 | 0x80,
            ((len >> 7) & 0x7f) as u8 | 0x80,
        ];
        p.push((len >> 14) as u8);
        p.extend_from_slice(&body);
        let mut r = Reader::new(true);
        let chunks: Vec<&[u8]> = p.chunks(333).collect();
        let got = frames(&mut r, &chunks);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, p.len() as u64);
        assert_eq!(got[0].2.len(), KEEP);
        assert_eq!(got[0].3, Some(0x1234));
        assert!(r.capacity() <= 2 * KEEP);
    }

    #[test]
    fn topic_alias_among_other_properties() {
        // Properties: payload format (1 byte), a user property ("k", "v"), topic alias 7.
        let props = [0x01, 0x01, 0x26, 0, 1, b'k', 0, 1, b'v', 0x23, 0, 7];
        let mut b = vec![0xaa, props.len() as u8];
        b.extend_from_slice(&props);
        assert_eq!(topic_alias(&b, 1), Some(7));
        // Cut, or an unknown property: not guessed.
        assert_eq!(topic_alias(&b[..b.len() - 1], 1), None);
        assert_eq!(topic_alias(&[0x02, 0x7f, 0x00], 0), None);
        assert_eq!(topic_alias(&[0x00], 0), None);
    }

    #[test]
    fn implausible_headers_stop() {
        let mut r = Reader::new(true);
        // CONNACK from the client.
        assert_eq!(r.feed(&[0x20, 0x02], 1, |_| {}), Err(Broken::Implausible));
        let mut r = Reader::new(true);
        // A fifth varint byte.
        assert_eq!(
            r.feed(&[0x30, 0xff, 0xff, 0xff, 0xff], 1, |_| {}),
            Err(Broken::Implausible)
        );
        // SUBSCRIBE with the wrong flags.
        let mut r = Reader::new(true);
        assert_eq!(r.feed(&[0x80, 0x00], 1, |_| {}), Err(Broken::Implausible));
    }
}
