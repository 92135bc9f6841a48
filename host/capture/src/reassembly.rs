//! Per-direction stream reassembly by position.
//!
//! The kernel stamps every data chunk with `pos`, the offset of its first byte in its
//! direction's stream. Chunks still arrive out of order (threads of one process finish their
//! syscalls in another order than their positions were taken), twice (never by design, but a
//! reassembler must not trust its input), or not at all (ring buffer full). A
//! [`StreamReassembler`] turns them into [`Segment`]s that cover the stream contiguously from
//! its start, in order: captured bytes, [`GapReason::Truncated`] gaps for bytes the kernel
//! counted but did not copy, and [`GapReason::Lost`] gaps for holes that never filled.
//!
//! Time is whatever the caller passes (kernel monotonic timestamps of events, or the same
//! clock read by the daemon): nothing here reads a clock, so behaviour is deterministic.
use std::collections::BTreeMap;

use bytes::Bytes;

/// Fixed cost charged per buffered chunk on top of its payload, so that chunks without payload
/// (truncated to nothing, or skipped by verdict) still count against the pending bound.
pub const CHUNK_OVERHEAD_BYTES: usize = 64;

/// Why a part of a stream has no bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GapReason {
    /// The syscall moved the bytes but the kernel did not copy them: beyond the per-syscall
    /// capture cap, payload skipped by verdict, or the copy from user memory failed.
    Truncated,
    /// The bytes' chunk never arrived (ring buffer full): declared lost after the reorder
    /// window, when the pending bound was hit, or when the stream was finished.
    Lost,
}

/// What a segment holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SegmentBody {
    /// Captured stream bytes.
    Data(Bytes),
    /// `len` stream bytes that exist but are not available, and why.
    Gap { len: u64, reason: GapReason },
}

/// A contiguous piece of a direction's stream, emitted in position order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Offset of the segment's first byte in the stream.
    pub pos: u64,
    /// Timestamp of the chunk it came from (for lost gaps: of the chunk seen after the hole,
    /// or the latest timestamp seen when the stream was finished).
    pub ts_ns: u64,
    /// Bytes or a gap.
    pub body: SegmentBody,
}

impl Segment {
    /// Stream bytes the segment covers (data or gap).
    pub fn len(&self) -> u64 {
        match &self.body {
            SegmentBody::Data(b) => b.len() as u64,
            SegmentBody::Gap { len, .. } => *len,
        }
    }

    /// Never true for emitted segments; here because `len` is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Offset just past the segment.
    pub fn end(&self) -> u64 {
        self.pos.saturating_add(self.len())
    }
}

/// One syscall's worth of a stream, as the kernel reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Offset of the first byte in the stream.
    pub pos: u64,
    /// Bytes the syscall moved.
    pub len: u64,
    /// The first `payload.len()` of those bytes (≤ `len`); the rest is a truncation gap.
    pub payload: Bytes,
    /// When the chunk happened (kernel monotonic ns); also its age in the reorder buffer.
    pub ts_ns: u64,
}

impl Chunk {
    fn end(&self) -> u64 {
        self.pos.saturating_add(self.len)
    }

    /// Makes the chunk self-consistent: no payload beyond `len`, no end beyond `u64::MAX`.
    fn normalized(mut self) -> Self {
        self.len = self.len.min(u64::MAX - self.pos);
        if self.payload.len() as u64 > self.len {
            self.payload.truncate(self.len as usize);
        }
        self
    }

    /// Drops the first `n` bytes (`n` ≤ `len`).
    fn trim_front(&mut self, n: u64) {
        let n = n.min(self.len);
        let cut = (n as usize).min(self.payload.len());
        self.payload = self.payload.slice(cut..);
        self.pos += n;
        self.len -= n;
    }

    /// Splits off and returns the first `n` bytes (`n` ≤ `len`); `self` keeps the rest.
    fn split_front(&mut self, n: u64) -> Chunk {
        let n = n.min(self.len);
        let cut = (n as usize).min(self.payload.len());
        let head = Chunk {
            pos: self.pos,
            len: n,
            payload: self.payload.slice(..cut),
            ts_ns: self.ts_ns,
        };
        self.trim_front(n);
        head
    }

    /// What buffering the chunk costs against the pending bound.
    fn cost(&self) -> usize {
        self.payload.len() + CHUNK_OVERHEAD_BYTES
    }
}

/// Bounds on the reorder buffer of one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReorderLimits {
    /// Buffered cost (payload plus [`CHUNK_OVERHEAD_BYTES`] per chunk) above which holes are
    /// declared lost, oldest first, until the buffer fits again.
    pub max_pending_bytes: usize,
    /// How long the oldest buffered chunk may wait for the hole before it before the hole is
    /// declared lost.
    pub reorder_window_ns: u64,
}

impl Default for ReorderLimits {
    fn default() -> Self {
        ReorderLimits {
            max_pending_bytes: 4 << 20,
            reorder_window_ns: 500_000_000,
        }
    }
}

/// Running totals of one stream, for health metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReassemblyStats {
    /// Captured bytes emitted as [`SegmentBody::Data`].
    pub bytes_data: u64,
    /// Bytes emitted as [`GapReason::Truncated`] gaps.
    pub bytes_truncated: u64,
    /// Bytes emitted as [`GapReason::Lost`] gaps.
    pub bytes_lost: u64,
    /// Chunks that arrived ahead of a hole and had to wait in the buffer.
    pub chunks_reordered: u64,
    /// Chunks dropped entirely because every byte was already emitted or buffered.
    pub chunks_dropped_overlap: u64,
    /// Chunks of which only a part was new (the rest was trimmed).
    pub chunks_trimmed_overlap: u64,
    /// Bytes discarded from dropped or trimmed chunks (never counted twice).
    pub bytes_overlap: u64,
}

/// What one [`StreamReassembler::push`] did, for callers that keep their own totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Stream bytes of the chunk not seen before (its `len` minus overlaps).
    pub new_bytes: u64,
    /// Bytes of the chunk that were already emitted or buffered, and discarded.
    pub overlap_bytes: u64,
    /// The chunk arrived ahead of a hole and was buffered.
    pub reordered: bool,
}

/// Orders one direction of one connection. See the module documentation.
#[derive(Clone, Debug)]
pub struct StreamReassembler {
    limits: ReorderLimits,
    /// Everything before this offset has been emitted; every pending chunk starts at or after it.
    next: u64,
    /// Chunks waiting for a hole before them, by position; never overlapping each other.
    pending: BTreeMap<u64, Chunk>,
    pending_cost: usize,
    /// Timestamp of the oldest pending chunk.
    oldest_pending_ts: Option<u64>,
    /// Latest chunk timestamp seen (for the final gap of [`Self::finish`]).
    last_ts: u64,
    stats: ReassemblyStats,
}

impl StreamReassembler {
    /// A stream that starts at offset 0 (the kernel numbers every connection's streams from 0).
    pub fn new(limits: ReorderLimits) -> Self {
        Self::starting_at(0, limits)
    }

    /// A stream whose bytes before `pos` were already handled elsewhere (a connection that
    /// was finalised while idle and came back).
    pub fn starting_at(pos: u64, limits: ReorderLimits) -> Self {
        StreamReassembler {
            limits,
            next: pos,
            pending: BTreeMap::new(),
            pending_cost: 0,
            oldest_pending_ts: None,
            last_ts: 0,
            stats: ReassemblyStats::default(),
        }
    }

    /// Offset up to which the stream has been emitted.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Chunks waiting for a hole to fill.
    pub fn pending_chunks(&self) -> usize {
        self.pending.len()
    }

    /// Cost of the waiting chunks against [`ReorderLimits::max_pending_bytes`].
    pub fn pending_bytes(&self) -> usize {
        self.pending_cost
    }

    /// True when nothing waits and the stream has been emitted up to `total`.
    pub fn is_complete(&self, total: u64) -> bool {
        self.pending.is_empty() && self.next >= total
    }

    /// Running totals of what was emitted and discarded.
    pub fn stats(&self) -> &ReassemblyStats {
        &self.stats
    }

    /// Adds a chunk; appends whatever became emittable to `out`. Bytes already emitted or
    /// buffered are discarded (counted), so a duplicate never counts twice. If the buffer
    /// grows past its bound, the oldest holes are declared lost.
    pub fn push(&mut self, chunk: Chunk, out: &mut Vec<Segment>) -> Pushed {
        let mut chunk = chunk.normalized();
        let total = chunk.len;
        if total == 0 {
            return Pushed::default();
        }
        self.last_ts = self.last_ts.max(chunk.ts_ns);
        if chunk.pos < self.next {
            chunk.trim_front(self.next - chunk.pos);
        }
        if chunk.len > 0 && chunk.pos == self.next && self.pending.is_empty() {
            // The common case: in order, nothing waiting. Emitted at once, without being
            // inserted into the reorder map and removed again.
            let pushed = Pushed {
                new_bytes: chunk.len,
                overlap_bytes: total - chunk.len,
                reordered: false,
            };
            self.count_push(&pushed);
            self.emit(chunk, out);
            return pushed;
        }
        let reordered = chunk.len > 0 && chunk.pos > self.next;
        let new_bytes = self.insert(chunk);
        let pushed = Pushed {
            new_bytes,
            overlap_bytes: total - new_bytes,
            reordered: reordered && new_bytes > 0,
        };
        self.count_push(&pushed);
        self.drain(out);
        while self.pending_cost > self.limits.max_pending_bytes {
            self.skip_hole(out);
        }
        pushed
    }

    /// Declares holes lost while the oldest waiting chunk is older than the reorder window at
    /// `now_ns`, emitting what follows them.
    pub fn expire(&mut self, now_ns: u64, out: &mut Vec<Segment>) {
        while let Some(oldest) = self.oldest_pending_ts {
            if now_ns.saturating_sub(oldest) <= self.limits.reorder_window_ns {
                break;
            }
            self.skip_hole(out);
        }
    }

    /// Flushes the stream: every hole becomes a lost gap, and if the stream's final length
    /// `total` is known and beyond what was emitted, a last lost gap reaches it.
    pub fn finish(&mut self, total: Option<u64>, out: &mut Vec<Segment>) {
        while !self.pending.is_empty() {
            self.skip_hole(out);
        }
        if let Some(total) = total.filter(|&t| t > self.next) {
            self.emit_lost(total - self.next, self.last_ts, out);
        }
    }

    fn count_push(&mut self, p: &Pushed) {
        let s = &mut self.stats;
        s.chunks_reordered += u64::from(p.reordered);
        s.bytes_overlap += p.overlap_bytes;
        if p.overlap_bytes > 0 {
            if p.new_bytes == 0 {
                s.chunks_dropped_overlap += 1;
            } else {
                s.chunks_trimmed_overlap += 1;
            }
        }
    }

    /// Stores the parts of `chunk` (which starts at or after `next`) not already pending;
    /// returns how many bytes that was.
    fn insert(&mut self, mut chunk: Chunk) -> u64 {
        if let Some((_, prev)) = self.pending.range(..=chunk.pos).next_back() {
            let prev_end = prev.end();
            if prev_end > chunk.pos {
                chunk.trim_front(prev_end - chunk.pos);
            }
        }
        let mut inserted = 0;
        while chunk.len > 0 {
            let Some((start, end)) = self
                .pending
                .range(chunk.pos..chunk.end())
                .next()
                .map(|(_, c)| (c.pos, c.end()))
            else {
                inserted += chunk.len;
                self.store(chunk);
                break;
            };
            if start > chunk.pos {
                let head = chunk.split_front(start - chunk.pos);
                inserted += head.len;
                self.store(head);
            }
            chunk.trim_front(end - chunk.pos);
        }
        inserted
    }

    fn store(&mut self, mut chunk: Chunk) {
        if chunk.pos != self.next {
            // It waits for a hole: its bytes get their own buffer, so that it does not keep
            // alive the decoder's shared block it is a view into (events::Decoder).
            chunk.payload = Bytes::copy_from_slice(&chunk.payload);
        }
        self.pending_cost += chunk.cost();
        self.oldest_pending_ts = Some(
            self.oldest_pending_ts
                .map_or(chunk.ts_ns, |t| t.min(chunk.ts_ns)),
        );
        self.pending.insert(chunk.pos, chunk);
    }

    /// Emits pending chunks while the first one starts where the stream is.
    fn drain(&mut self, out: &mut Vec<Segment>) {
        let mut drained = false;
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() != self.next {
                break;
            }
            let chunk = entry.remove();
            self.pending_cost -= chunk.cost();
            self.emit(chunk, out);
            drained = true;
        }
        if drained {
            self.oldest_pending_ts = self.pending.values().map(|c| c.ts_ns).min();
        }
    }

    /// Declares the hole before the first pending chunk lost and emits what follows it.
    fn skip_hole(&mut self, out: &mut Vec<Segment>) {
        let Some((&pos, first)) = self.pending.first_key_value() else {
            return;
        };
        if pos > self.next {
            let ts = first.ts_ns;
            self.emit_lost(pos - self.next, ts, out);
        }
        self.drain(out);
    }

    /// Emits a chunk at `next`: its payload, then a truncation gap for the bytes not copied.
    fn emit(&mut self, chunk: Chunk, out: &mut Vec<Segment>) {
        let captured = chunk.payload.len() as u64;
        if captured > 0 {
            self.stats.bytes_data += captured;
            out.push(Segment {
                pos: chunk.pos,
                ts_ns: chunk.ts_ns,
                body: SegmentBody::Data(chunk.payload),
            });
        }
        let missing = chunk.len - captured;
        if missing > 0 {
            self.stats.bytes_truncated += missing;
            let body = SegmentBody::Gap {
                len: missing,
                reason: GapReason::Truncated,
            };
            out.push(Segment {
                pos: chunk.pos + captured,
                ts_ns: chunk.ts_ns,
                body,
            });
        }
        self.next = chunk.pos + chunk.len;
    }

    fn emit_lost(&mut self, len: u64, ts_ns: u64, out: &mut Vec<Segment>) {
        self.stats.bytes_lost += len;
        out.push(Segment {
            pos: self.next,
            ts_ns,
            body: SegmentBody::Gap {
                len,
                reason: GapReason::Lost,
            },
        });
        self.next += len;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn limits() -> ReorderLimits {
        ReorderLimits {
            max_pending_bytes: 1 << 20,
            reorder_window_ns: 100 * MS,
        }
    }

    /// Deterministic test bytes.
    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// A chunk of `stream` at `pos..pos+len`, with at most `cap` bytes captured.
    fn chunk(stream: &[u8], pos: usize, len: usize, cap: usize, ts_ns: u64) -> Chunk {
        let captured = len.min(cap);
        Chunk {
            pos: pos as u64,
            len: len as u64,
            payload: Bytes::copy_from_slice(&stream[pos..pos + captured]),
            ts_ns,
        }
    }

    /// Splits `0..total` into consecutive (pos, len) pieces with the given sizes, cycled.
    pub(crate) fn pieces(total: usize, sizes: &[usize]) -> Vec<(usize, usize)> {
        let mut v = Vec::new();
        let mut pos = 0;
        for &s in sizes.iter().cycle() {
            if pos >= total {
                break;
            }
            let len = s.min(total - pos);
            v.push((pos, len));
            pos += len;
        }
        v
    }

    /// Small deterministic PRNG (xorshift) for shuffles.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn shuffle<T>(&mut self, v: &mut [T]) {
            for i in (1..v.len()).rev() {
                v.swap(i, self.below(i + 1));
            }
        }
    }

    /// Checks that segments are contiguous from `start`, returns the data bytes and the end.
    fn contiguous(segs: &[Segment], start: u64) -> (Vec<u8>, u64) {
        let mut pos = start;
        let mut data = Vec::new();
        for s in segs {
            assert_eq!(s.pos, pos, "segments not contiguous: {segs:?}");
            assert!(!s.is_empty(), "empty segment");
            if let SegmentBody::Data(b) = &s.body {
                data.extend_from_slice(b);
            }
            pos = s.end();
        }
        (data, pos)
    }

    fn gaps(segs: &[Segment], reason: GapReason) -> Vec<(u64, u64)> {
        segs.iter()
            .filter_map(|s| match s.body {
                SegmentBody::Gap { len, reason: r } if r == reason => Some((s.pos, len)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn in_order_chunks_are_emitted_at_once() {
        let stream = pattern(300);
        let mut r = StreamReassembler::new(limits());
        let mut out = Vec::new();
        for (i, (pos, len)) in pieces(300, &[100]).into_iter().enumerate() {
            let p = r.push(chunk(&stream, pos, len, usize::MAX, i as u64), &mut out);
            assert_eq!(
                p,
                Pushed {
                    new_bytes: len as u64,
                    overlap_bytes: 0,
                    reordered: false
                }
            );
            assert_eq!(out.len(), i + 1, "chunk {i} emitted immediately");
            assert_eq!(r.pending_chunks(), 0);
        }
        let (data, end) = contiguous(&out, 0);
        assert_eq!(data, stream);
        assert_eq!(end, 300);
        assert_eq!(out[1].ts_ns, 1);
        assert_eq!(r.stats().bytes_data, 300);
        assert_eq!(r.stats().chunks_reordered, 0);
    }

    #[test]
    fn shuffled_chunks_from_threads_reassemble_to_the_original_bytes() {
        let stream = pattern(20_000);
        for seed in 1..=20u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut order = pieces(stream.len(), &[1, 700, 13, 4096, 333, 2]);
            rng.shuffle(&mut order);
            let mut r = StreamReassembler::new(limits());
            let mut out = Vec::new();
            for (ts, (pos, len)) in order.iter().enumerate() {
                r.push(chunk(&stream, *pos, *len, usize::MAX, ts as u64), &mut out);
            }
            assert_eq!(r.pending_chunks(), 0, "seed {seed}: everything drained");
            let (data, end) = contiguous(&out, 0);
            assert_eq!(data, stream, "seed {seed}");
            assert_eq!(end, stream.len() as u64);
            assert!(
                r.stats().chunks_reordered > 0,
                "seed {seed}: shuffle reordered something"
            );
            assert_eq!(r.stats().bytes_lost, 0);
        }
    }

    #[test]
    fn truncated_chunk_gives_data_then_truncated_gap() {
        let stream = pattern(50_000);
        let mut r = StreamReassembler::new(limits());
        let mut out = Vec::new();
        // 20_000 moved, 16 KiB captured; then 100 moved, all captured; then a failed copy.
        r.push(chunk(&stream, 0, 20_000, 16_384, 1), &mut out);
        r.push(chunk(&stream, 20_000, 100, 16_384, 2), &mut out);
        r.push(chunk(&stream, 20_100, 900, 0, 3), &mut out);
        let (data, end) = contiguous(&out, 0);
        assert_eq!(end, 21_000);
        assert_eq!(
            gaps(&out, GapReason::Truncated),
            vec![(16_384, 20_000 - 16_384), (20_100, 900)]
        );
        assert_eq!(data[..16_384], stream[..16_384]);
        assert_eq!(data[16_384..], stream[20_000..20_100]);
        let s = r.stats();
        assert_eq!(
            (s.bytes_data, s.bytes_truncated, s.bytes_lost),
            (16_484, 4_516, 0)
        );
    }

    #[test]
    fn hole_becomes_lost_after_the_reorder_window() {
        let stream = pattern(300);
        let mut r = StreamReassembler::new(limits());
        let mut out = Vec::new();
        r.push(chunk(&stream, 0, 100, usize::MAX, 0), &mut out);
        // 100..200 never comes.
        let p = r.push(chunk(&stream, 200, 100, usize::MAX, 10 * MS), &mut out);
        assert!(p.reordered);
        assert_eq!(out.len(), 1);
        r.expire(110 * MS, &mut out);
        assert_eq!(out.len(), 1, "window (100 ms) not passed yet");
        r.expire(110 * MS + 1, &mut out);
        assert_eq!(gaps(&out, GapReason::Lost), vec![(100, 100)]);
        assert_eq!(
            out[1].ts_ns,
            10 * MS,
            "lost gap stamped with the chunk after it"
        );
        let (data, end) = contiguous(&out, 0);
        assert_eq!(end, 300);
        assert_eq!(data, [&stream[..100], &stream[200..]].concat());
        assert_eq!(r.stats().bytes_lost, 100);
        // The missing chunk arriving after all is a late duplicate of the gap: dropped.
        let p = r.push(chunk(&stream, 100, 100, usize::MAX, 200 * MS), &mut out);
        assert_eq!(p.new_bytes, 0);
        assert_eq!(r.stats().chunks_dropped_overlap, 1);
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn hole_becomes_lost_when_pending_exceeds_its_bound() {
        let stream = pattern(10_000);
        let lim = ReorderLimits {
            max_pending_bytes: 3_000,
            reorder_window_ns: u64::MAX,
        };
        let mut r = StreamReassembler::new(lim);
        let mut out = Vec::new();
        // 0..1000 missing; 1000 bytes chunks queue up: 2 fit (2*(1000+64)), the third does not.
        r.push(chunk(&stream, 1000, 1000, usize::MAX, 1), &mut out);
        r.push(chunk(&stream, 2000, 1000, usize::MAX, 2), &mut out);
        assert!(out.is_empty());
        assert_eq!(r.pending_bytes(), 2 * (1000 + CHUNK_OVERHEAD_BYTES));
        r.push(chunk(&stream, 4000, 1000, usize::MAX, 3), &mut out);
        // The first hole is given up; 1000..3000 flow; 3000..4000 is the next hole and the
        // buffer fits again, so it still waits.
        assert_eq!(gaps(&out, GapReason::Lost), vec![(0, 1000)]);
        assert_eq!(r.position(), 3000);
        assert_eq!(r.pending_chunks(), 1);
        r.push(chunk(&stream, 3000, 1000, usize::MAX, 4), &mut out);
        let (data, end) = contiguous(&out, 0);
        assert_eq!(end, 5000);
        assert_eq!(data, stream[1000..5000]);
    }

    #[test]
    fn a_waiting_chunk_does_not_keep_its_shared_buffer() {
        let mut r = StreamReassembler::new(limits());
        let shared = Bytes::from(vec![7u8; 1000]);
        let mut out = Vec::new();
        r.push(
            Chunk {
                pos: 10,
                len: 4,
                payload: shared.slice(0..4),
                ts_ns: 1,
            },
            &mut out,
        );
        assert!(out.is_empty(), "it waits for bytes 0..10");
        // The buffer is unique again: the waiting chunk copied its bytes out.
        let shared = shared
            .try_into_mut()
            .expect("no view into the buffer is kept");
        drop(shared);
        r.push(
            Chunk {
                pos: 0,
                len: 10,
                payload: Bytes::from_static(b"0123456789"),
                ts_ns: 2,
            },
            &mut out,
        );
        let data: Vec<u8> = out
            .iter()
            .flat_map(|s| match &s.body {
                SegmentBody::Data(b) => b.to_vec(),
                SegmentBody::Gap { .. } => panic!("no gap: {s:?}"),
            })
            .collect();
        assert_eq!(data, b"0123456789\x07\x07\x07\x07");
    }

    #[test]
    fn chunks_without_payload_still_count_against_the_bound() {
        let lim = ReorderLimits {
            max_pending_bytes: 10 * CHUNK_OVERHEAD_BYTES,
            reorder_window_ns: u64::MAX,
        };
        let mut r = StreamReassembler::new(lim);
        let mut out = Vec::new();
        for i in 1..=100u64 {
            r.push(
                Chunk {
                    pos: i * 10,
                    len: 5,
                    payload: Bytes::new(),
                    ts_ns: i,
                },
                &mut out,
            );
            assert!(r.pending_chunks() <= 10);
        }
    }

    #[test]
    fn finish_flushes_holes_and_reaches_the_close_total() {
        let stream = pattern(1000);
        let mut r = StreamReassembler::new(limits());
        let mut out = Vec::new();
        r.push(chunk(&stream, 0, 100, usize::MAX, 1), &mut out);
        r.push(chunk(&stream, 300, 100, usize::MAX, 7), &mut out);
        r.finish(Some(1000), &mut out);
        assert_eq!(gaps(&out, GapReason::Lost), vec![(100, 200), (400, 600)]);
        assert_eq!(out.last().map(|s| s.ts_ns), Some(7));
        let (_, end) = contiguous(&out, 0);
        assert_eq!(end, 1000);
        assert!(r.is_complete(1000));
        assert_eq!(r.stats().bytes_lost, 800);
        // Unknown total: only the holes.
        let mut r = StreamReassembler::new(limits());
        let mut out = Vec::new();
        r.push(chunk(&stream, 50, 50, usize::MAX, 1), &mut out);
        r.finish(None, &mut out);
        assert_eq!(gaps(&out, GapReason::Lost), vec![(0, 50)]);
        assert_eq!(r.position(), 100);
    }

    #[test]
    fn duplicates_and_overlaps_are_trimmed_and_never_double_counted() {
        let stream = pattern(1000);
        let mut r = StreamReassembler::new(limits());
        let mut out = Vec::new();
        r.push(chunk(&stream, 0, 100, usize::MAX, 1), &mut out);
        // Exact duplicate of emitted bytes.
        let p = r.push(chunk(&stream, 0, 100, usize::MAX, 2), &mut out);
        assert_eq!(
            p,
            Pushed {
                new_bytes: 0,
                overlap_bytes: 100,
                reordered: false
            }
        );
        // Pending pieces 300..400 and 500..600; a chunk 50..700 spans emitted bytes, two holes,
        // both pending pieces and new bytes after them.
        r.push(chunk(&stream, 300, 100, usize::MAX, 3), &mut out);
        r.push(chunk(&stream, 500, 100, usize::MAX, 4), &mut out);
        let p = r.push(chunk(&stream, 50, 650, usize::MAX, 5), &mut out);
        assert_eq!(p.new_bytes, 200 + 100 + 100);
        assert_eq!(p.overlap_bytes, 50 + 100 + 100);
        // Duplicate of a pending piece.
        r.push(chunk(&stream, 800, 100, usize::MAX, 6), &mut out);
        let p = r.push(chunk(&stream, 800, 100, usize::MAX, 7), &mut out);
        assert_eq!(p.new_bytes, 0);
        // Overlap with a pending piece's tail and payload partly truncated.
        let p = r.push(chunk(&stream, 850, 150, 20, 8), &mut out);
        assert_eq!(p.new_bytes, 100);
        r.push(chunk(&stream, 700, 100, usize::MAX, 9), &mut out);
        assert_eq!(r.pending_chunks(), 0);
        let (data, end) = contiguous(&out, 0);
        assert_eq!(end, 1000);
        assert_eq!(
            data,
            stream[..900],
            "the truncated tail (900..1000) is a gap"
        );
        assert_eq!(gaps(&out, GapReason::Truncated), vec![(900, 100)]);
        let s = r.stats();
        assert_eq!(s.bytes_data + s.bytes_truncated, 1000);
        assert_eq!(s.chunks_dropped_overlap, 2);
        assert_eq!(s.chunks_trimmed_overlap, 2);
        assert_eq!(s.bytes_overlap, 100 + 250 + 100 + 50);
    }

    #[test]
    fn partial_reads_of_odd_sizes_reassemble_a_5k_message() {
        let msg = pattern(5 * 1024);
        let mut r = StreamReassembler::new(limits());
        let mut out = Vec::new();
        let reads = pieces(msg.len(), &[1, 7, 1448, 3, 999, 2049]);
        // Two readers: odd reads finish late, pairwise swapped.
        let mut order: Vec<_> = reads.clone();
        for pair in order.chunks_mut(2) {
            pair.reverse();
        }
        let mut total = 0;
        for (ts, (pos, len)) in order.into_iter().enumerate() {
            total += r
                .push(chunk(&msg, pos, len, usize::MAX, ts as u64), &mut out)
                .new_bytes;
        }
        assert_eq!(total, msg.len() as u64);
        let (data, end) = contiguous(&out, 0);
        assert_eq!(data, msg);
        assert_eq!(end, msg.len() as u64);
        assert_eq!(out.len(), reads.len(), "one segment per read");
    }

    #[test]
    fn malformed_chunks_do_not_panic() {
        let mut r = StreamReassembler::new(limits());
        let mut out = Vec::new();
        // Zero length: ignored.
        assert_eq!(
            r.push(
                Chunk {
                    pos: 0,
                    len: 0,
                    payload: Bytes::from_static(b"x"),
                    ts_ns: 0
                },
                &mut out
            ),
            Pushed::default()
        );
        // Payload longer than len: clamped.
        r.push(
            Chunk {
                pos: 0,
                len: 2,
                payload: Bytes::from_static(b"abcd"),
                ts_ns: 0,
            },
            &mut out,
        );
        assert_eq!(
            out,
            vec![Segment {
                pos: 0,
                ts_ns: 0,
                body: SegmentBody::Data(Bytes::from_static(b"ab"))
            }]
        );
        // Position near the end of u64: clamped, buffered, flushed.
        r.push(
            Chunk {
                pos: u64::MAX - 1,
                len: 10,
                payload: Bytes::new(),
                ts_ns: 1,
            },
            &mut out,
        );
        r.finish(Some(u64::MAX), &mut out);
        assert_eq!(r.position(), u64::MAX);
        contiguous(&out, 0);
    }

    #[test]
    fn random_duplicates_overlaps_and_losses_keep_the_stream_consistent() {
        let stream = pattern(8_000);
        for seed in 1..=50u64 {
            let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
            let lim = ReorderLimits {
                max_pending_bytes: 2_000 + rng.below(6_000),
                reorder_window_ns: 50,
            };
            let mut r = StreamReassembler::new(lim);
            let mut out = Vec::new();
            for ts in 0..400u64 {
                let pos = rng.below(stream.len());
                let len = 1 + rng.below((stream.len() - pos).min(600));
                let cap = rng.below(700);
                r.push(chunk(&stream, pos, len, cap, ts), &mut out);
                if ts % 37 == 0 {
                    r.expire(ts, &mut out);
                }
            }
            r.finish(Some(stream.len() as u64), &mut out);
            let (_, end) = contiguous(&out, 0);
            assert_eq!(end, stream.len() as u64, "seed {seed}");
            for s in &out {
                if let SegmentBody::Data(b) = &s.body {
                    assert_eq!(
                        b.as_ref(),
                        &stream[s.pos as usize..s.end() as usize],
                        "seed {seed}"
                    );
                }
            }
            let st = r.stats();
            assert_eq!(
                st.bytes_data + st.bytes_truncated + st.bytes_lost,
                stream.len() as u64,
                "seed {seed}"
            );
            assert_eq!(r.pending_bytes(), 0);
        }
    }
}
