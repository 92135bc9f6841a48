//! Network-quality probes: retransmits, drops with reason, RTT and per-flow traffic, resets,
//! per-device packets and bytes, NET_RX/NET_TX softirq delay.
//!
//! Everything that fires per packet adds to a map entry ([`sonde_common::net`]); only resets
//! go to the ring buffer, because user space needs them in order with the state changes.
//! None of these programs touch user memory or the payload maps.
use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes},
    macros::{map, tracepoint},
    maps::{LruHashMap, LruPerCpuHashMap, PerCpuArray},
    programs::TracePointContext,
};
use sonde_common::{
    Addr, EventKind,
    net::{DropKey, DropStats, FlowKey, FlowStats, IfaceStats, NetOffsets, softirq, window},
    stat, syscall,
};

use crate::{AF_INET, AF_INET6, CONFIG, conn::emit_conn, count, fetch_add};

const TCP_SYN_SENT: i32 = 2;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// `sockaddr_in.sin_addr` / `sockaddr_in6.sin6_addr` inside the 28-byte tracepoint fields.
const SIN_ADDR: usize = 4;
const SIN6_ADDR: usize = 8;

/// TCP sockets' counters, key in the socket's view (local → remote). User space deletes an
/// entry once the socket closed and its last values were read; LRU evicts the rest.
#[map]
static FLOWS: LruHashMap<FlowKey, FlowStats> = LruHashMap::with_max_entries(65536, 0);

/// Dropped packets by reason and flow.
#[map]
static DROPS: LruHashMap<DropKey, DropStats> = LruHashMap::with_max_entries(16384, 0);

/// Per-device traffic, key `struct net_device *`.
#[map]
static IFACES: LruPerCpuHashMap<u64, IfaceStats> = LruPerCpuHashMap::with_max_entries(4096, 0);

/// Per CPU: when NET_TX / NET_RX was raised (0: not pending), when its handler started.
#[map]
static SOFTIRQ_TS: PerCpuArray<u64> = PerCpuArray::with_max_entries(4, 0);

/// Per CPU: log2 histograms and sums (layout in [`softirq`]).
#[map]
static SOFTIRQ_HIST: PerCpuArray<u64> = PerCpuArray::with_max_entries(softirq::HIST_ENTRIES, 0);

macro_rules! net_off {
    ($field:ident) => {
        // SAFETY: CONFIG is a plain static written at load time; volatile so that value is read.
        unsafe { core::ptr::read_volatile(&raw const CONFIG.net.$field) as usize }
    };
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// Per CPU: where a probe copies its record window and builds a new flow's first counters,
/// so neither sits on the stack (the budget: ≤ 384 bytes of combined stack per program).
#[map]
static NET_SCRATCH: PerCpuArray<NetScratch> = PerCpuArray::with_max_entries(1, 0);

/// The widest record window, in words ([`window`]).
const REC_WORDS: usize = 16;
const _: () = assert!(window::TCP_PROBE <= REC_WORDS && window::TCP_SEND_RESET <= REC_WORDS);

#[repr(C)]
struct NetScratch {
    rec: [u64; REC_WORDS],
    fresh: FlowStats,
}

/// The first words of the tracepoint record, as direct context loads at constant offsets
/// (what the verifier allows a tracepoint program) into this CPU's scratch: one block copy
/// instead of a `bpf_probe_read_kernel` per field, which cost most of a per-segment probe's
/// time. Word 0 (the common fields) is off limits to tracepoint programs and reads as 0;
/// list words 1…N-1. Words past the window are stale: the host checks at start that every
/// offset a probe reads lies inside its window.
macro_rules! record {
    ($ctx:expr, $($i:literal)*) => {{
        let Some(s) = NET_SCRATCH.get_ptr_mut(0) else {
            return Default::default();
        };
        let base = $ctx.as_ptr() as *const u64;
        // SAFETY: this CPU's scratch value; aligned 8-byte loads inside the tracepoint buffer
        // (the verifier checks the offsets), volatile so they stay separate loads.
        unsafe {
            (*s).rec[0] = 0;
            $( (*s).rec[$i] = core::ptr::read_volatile(base.add($i)); )*
            &(*s).rec
        }
    }};
}

/// A value of type `T` at `off` in a copied record window (zero when outside it: the host
/// checks at start that every offset fits).
#[inline(always)]
fn field<T: Copy + Default, const N: usize>(rec: &[u64; N], off: usize) -> T {
    if off + core::mem::size_of::<T>() > N * 8 {
        return T::default();
    }
    // SAFETY: bounds checked above; an unaligned read of plain bytes.
    unsafe { core::ptr::read_unaligned((rec.as_ptr() as *const u8).add(off).cast::<T>()) }
}

/// A value of type `T` at `ptr + off` in kernel memory (zero when unreadable).
#[inline(always)]
fn kread<T: Copy + Default>(ptr: u64, off: usize) -> T {
    // SAFETY: read through the probe helper, which fails cleanly on a bad address.
    unsafe { bpf_probe_read_kernel((ptr as *const u8).add(off).cast::<T>()) }.unwrap_or_default()
}

/// The counters of one socket's flow, created on first sight.
#[inline(always)]
fn flow_entry(key: &FlowKey) -> Option<&'static mut FlowStats> {
    if let Some(p) = FLOWS.get_ptr_mut(key) {
        // SAFETY: map value pointer; the socket's lock serialises its updates.
        return Some(unsafe { &mut *p });
    }
    let s = NET_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch value; the new entry is built there, not on the stack.
    let fresh = unsafe {
        (*s).fresh = FlowStats::default();
        (*s).fresh.first_ns = now();
        &(*s).fresh
    };
    if FLOWS.insert(key, fresh, 0).is_err() {
        count(stat::NET_MAP_FULL, 1);
        return None;
    }
    // SAFETY: as above.
    FLOWS.get_ptr_mut(key).map(|p| unsafe { &mut *p })
}

/// A flow key from a tracepoint's 28-byte sockaddr fields (tcp_probe, tcp_send_reset).
#[inline(always)]
fn key_from_sockaddrs<const N: usize>(ctx: &[u64; N], s_off: usize, d_off: usize) -> FlowKey {
    let family: u16 = field(ctx, s_off);
    let mut k = FlowKey {
        family,
        sport: u16::from_be(field(ctx, s_off + 2)),
        dport: u16::from_be(field(ctx, d_off + 2)),
        ..FlowKey::default()
    };
    if family == AF_INET {
        let s: [u8; 4] = field(ctx, s_off + SIN_ADDR);
        let d: [u8; 4] = field(ctx, d_off + SIN_ADDR);
        k.saddr[..4].copy_from_slice(&s);
        k.daddr[..4].copy_from_slice(&d);
    } else if family == AF_INET6 {
        k.saddr = field(ctx, s_off + SIN6_ADDR);
        k.daddr = field(ctx, d_off + SIN6_ADDR);
    }
    k
}

/// A flow key from separate family/port/v4/v6 fields (tcp_retransmit_skb, tcp_receive_reset).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn key_from_fields<const N: usize>(
    ctx: &[u64; N],
    family: usize,
    sport: usize,
    dport: usize,
    saddr: usize,
    daddr: usize,
    saddr_v6: usize,
    daddr_v6: usize,
) -> FlowKey {
    let family: u16 = field(ctx, family);
    let mut k = FlowKey {
        family,
        sport: field(ctx, sport),
        dport: field(ctx, dport),
        ..FlowKey::default()
    };
    if family == AF_INET {
        let s: [u8; 4] = field(ctx, saddr);
        let d: [u8; 4] = field(ctx, daddr);
        k.saddr[..4].copy_from_slice(&s);
        k.daddr[..4].copy_from_slice(&d);
    } else {
        k.saddr = field(ctx, saddr_v6);
        k.daddr = field(ctx, daddr_v6);
    }
    k
}

#[inline(always)]
fn addr_of(family: u16, addr: [u8; 16], port: u16) -> Addr {
    Addr { family, port, addr }
}

/// The record window through one `bpf_probe_read_kernel` of words 1…N-1, for probes that
/// fire rarely (retransmits, resets, drops). A direct context load past the record's end is
/// refused at attach (`EACCES`: the program's largest context offset exceeds the event's
/// size), and these records differ in size between kernels (tcp_retransmit_skb is 74 bytes
/// on 6.1 and 6.12, 80 on 6.18; kfree_skb 32 on 6.1, 40 once it gained `rx_sk`): a window
/// sized for one kernel passes another's end. A helper read is not
/// bound by that check; the words past the end are never used (the host checks every offset
/// against the record's format at start).
macro_rules! record_read {
    ($ctx:expr, $words:expr) => {{
        let Some(s) = NET_SCRATCH.get_ptr_mut(0) else {
            return Default::default();
        };
        let base = $ctx.as_ptr() as *const u8;
        // SAFETY: this CPU's scratch value; the read goes through the fault-safe helper into
        // words 1…$words-1 of it ($words ≤ REC_WORDS, checked at compile time).
        unsafe {
            const _: () = assert!($words <= REC_WORDS);
            (*s).rec[0] = 0;
            let dst = core::slice::from_raw_parts_mut(
                (&raw mut (*s).rec[1]).cast::<u8>(),
                ($words - 1) * 8,
            );
            if aya_ebpf::helpers::bpf_probe_read_kernel_buf(base.add(8), dst).is_err() {
                return Default::default();
            }
            &(*s).rec
        }
    }};
}

/// Per received segment on an established socket: traffic, RTT, acknowledged bytes.
#[tracepoint]
pub fn sonde_tcp_probe(ctx: TracePointContext) -> u32 {
    if crate::floor_only() {
        return 0;
    }
    let rec = record!(ctx, 1 2 3 4 5 6 7 8 9 10 11 12 13);
    let key = key_from_sockaddrs(rec, net_off!(probe_saddr), net_off!(probe_daddr));
    let f = if crate::scope::netns_scoped() {
        match probe_sock(&ctx) {
            // Another namespace's segment (every loopback scrape of the host's, say) must not
            // become a flow here: each would be an edge of its own on this node.
            Some(sk) if !crate::scope::sock_in_scope(sk) => return 0,
            Some(_) => flow_entry(&key),
            // No socket in this kernel's record: follow only flows an in-scope probe began.
            // SAFETY: map value pointer; the socket's lock serialises its updates.
            None => FLOWS.get_ptr_mut(&key).map(|p| unsafe { &mut *p }),
        }
    } else {
        flow_entry(&key)
    };
    let Some(f) = f else {
        return 0;
    };
    let data_len: u16 = field(rec, net_off!(probe_data_len));
    let una: u32 = field(rec, net_off!(probe_snd_una));
    f.rx_segments += 1;
    f.rx_bytes += data_len as u64;
    if f.una_seen != 0 {
        let acked = una.wrapping_sub(f.last_una);
        // A value from before a wrap-around or a stale probe would look like ~4 GiB: skip it.
        if acked < 1 << 30 {
            f.tx_acked_bytes += acked as u64;
        }
    }
    f.last_una = una;
    f.una_seen = 1;
    f.srtt_us = field(rec, net_off!(probe_srtt));
    f.snd_cwnd = field(rec, net_off!(probe_snd_cwnd));
    0
}

/// tcp_probe's socket, where the record has one (6.18's does; not every kernel's may). A
/// helper read: the field lies past the window the other fields are loaded from.
#[inline(always)]
fn probe_sock(ctx: &TracePointContext) -> Option<u64> {
    let off = net_off!(probe_skaddr);
    if off == 0 {
        return None;
    }
    // SAFETY: offset from this kernel's tracefs format; a failed read is no socket.
    Some(unsafe { ctx.read_at::<u64>(off) }.unwrap_or(0))
}

/// A retransmitted segment: SYNs while connecting, data once established.
#[tracepoint]
pub fn sonde_tcp_retransmit(ctx: TracePointContext) -> u32 {
    if crate::floor_only() {
        return 0;
    }
    let rec = record_read!(ctx, window::TCP_RETRANSMIT);
    let key = key_from_fields(
        rec,
        net_off!(retrans_family),
        net_off!(retrans_sport),
        net_off!(retrans_dport),
        net_off!(retrans_saddr),
        net_off!(retrans_daddr),
        net_off!(retrans_saddr_v6),
        net_off!(retrans_daddr_v6),
    );
    let state: i32 = field(rec, net_off!(retrans_state));
    if crate::scope::netns_scoped()
        && !crate::scope::sock_in_scope(field(rec, net_off!(retrans_skaddr)))
    {
        return 0;
    }
    let Some(f) = flow_entry(&key) else {
        return 0;
    };
    if state == TCP_SYN_SENT {
        f.syn_retransmits += 1;
    } else {
        f.retransmits += 1;
    }
    0
}

/// A reset this host sent: on behalf of a socket, or of none (a SYN to a closed port).
#[tracepoint]
pub fn sonde_tcp_send_reset(ctx: TracePointContext) -> u32 {
    if crate::floor_only() {
        return 0;
    }
    let rec = record_read!(ctx, window::TCP_SEND_RESET);
    let key = if net_off!(send_rst_family) != 0 {
        // Before 6.2: the fields tcp_receive_reset has.
        key_from_fields(
            rec,
            net_off!(send_rst_family),
            net_off!(send_rst_sport),
            net_off!(send_rst_dport),
            net_off!(send_rst_saddr),
            net_off!(send_rst_daddr),
            net_off!(send_rst_saddr_v6),
            net_off!(send_rst_daddr_v6),
        )
    } else {
        key_from_sockaddrs(rec, net_off!(send_rst_saddr), net_off!(send_rst_daddr))
    };
    let state: i32 = field(rec, net_off!(send_rst_state));
    let sock = field(rec, net_off!(send_rst_skaddr));
    output_reset(&key, sock, syscall::RST_SENT, state as u8);
    0
}

/// A reset as a connection event (no process context: softirq or the peer's reset).
#[inline(always)]
fn output_reset(key: &FlowKey, sock: u64, kind: u8, old_state: u8) {
    // A reset sent on behalf of no socket (sock 0) has no namespace to judge: kept.
    if !crate::scope::sock_in_scope(sock) {
        return;
    }
    emit_conn(EventKind::Reset, 0, -1, |ev| {
        ev.tgid = 0;
        ev.tid = 0;
        ev.sock = sock;
        ev.syscall = kind;
        ev.old_state = old_state;
        ev.protocol = IPPROTO_TCP;
        ev.local = addr_of(key.family, key.saddr, key.sport);
        ev.peer = addr_of(key.family, key.daddr, key.dport);
    });
}

/// A reset this host received on a socket (in SYN_SENT: the connect was refused).
#[tracepoint]
pub fn sonde_tcp_receive_reset(ctx: TracePointContext) -> u32 {
    if crate::floor_only() {
        return 0;
    }
    let rec = record_read!(ctx, window::TCP_RECEIVE_RESET);
    let key = key_from_fields(
        rec,
        net_off!(recv_rst_family),
        net_off!(recv_rst_sport),
        net_off!(recv_rst_dport),
        net_off!(recv_rst_saddr),
        net_off!(recv_rst_daddr),
        net_off!(recv_rst_saddr_v6),
        net_off!(recv_rst_daddr_v6),
    );
    let sock = field(rec, net_off!(recv_rst_skaddr));
    output_reset(&key, sock, syscall::RST_RECEIVED, 0);
    0
}

/// A dropped packet: counted by reason, protocol and (when its IP header is readable) flow.
#[tracepoint]
pub fn sonde_kfree_skb(ctx: TracePointContext) -> u32 {
    if crate::floor_only() {
        return 0;
    }
    let rec = record_read!(ctx, window::KFREE_SKB);
    let skb: u64 = field(rec, net_off!(kfree_skbaddr));
    // The drop's device says its namespace; a drop without one (dev NULL) is kept.
    if crate::scope::netns_scoped() && net_off!(skb_dev) != 0 {
        let dev: u64 = kread(skb, net_off!(skb_dev));
        if !crate::scope::dev_in_scope(dev, net_off!(dev_nd_net)) {
            return 0;
        }
    }
    let mut key = DropKey {
        reason: field(rec, net_off!(kfree_reason)),
        l3_proto: field(rec, net_off!(kfree_protocol)),
        ..DropKey::default()
    };
    let len: u32 = kread(skb, net_off!(skb_len));
    if !read_packet_flow(skb, &mut key) {
        key.l4_proto = 0;
        key.flow = FlowKey::default();
        count(stat::DROP_NO_HEADERS, 1);
    }
    if let Some(p) = DROPS.get_ptr_mut(&key) {
        // SAFETY: map value pointer; atomic adds because drops of one key race across CPUs.
        unsafe {
            fetch_add(&raw mut (*p).packets, 1);
            fetch_add(&raw mut (*p).bytes, len as u64);
        }
    } else {
        let first = DropStats {
            packets: 1,
            bytes: len as u64,
        };
        // BPF_NOEXIST: a racing CPU's insert wins and this one is lost (rare; counted).
        if DROPS.insert(&key, &first, 1).is_err() {
            count(stat::NET_MAP_FULL, 1);
        }
    }
    0
}

/// Reads the IP header (and TCP/UDP ports) of a packet into `key.flow`; false when the network
/// header is not where `skb->network_header` says or does not look like IP.
#[inline(always)]
fn read_packet_flow(skb: u64, key: &mut DropKey) -> bool {
    let head: u64 = kread(skb, net_off!(skb_head));
    let nh: u16 = kread(skb, net_off!(skb_network_header));
    if head == 0 || nh == 0xffff {
        return false;
    }
    let ip = head + nh as u64;
    let first: u8 = kread(ip, 0);
    let l4_off;
    if key.l3_proto == ETH_P_IP {
        let ihl = (first & 0x0f) as u64 * 4;
        if first >> 4 != 4 || ihl < 20 {
            return false;
        }
        key.flow.family = AF_INET;
        key.l4_proto = kread(ip, 9);
        let s: [u8; 4] = kread(ip, 12);
        let d: [u8; 4] = kread(ip, 16);
        key.flow.saddr[..4].copy_from_slice(&s);
        key.flow.daddr[..4].copy_from_slice(&d);
        l4_off = ihl;
    } else if key.l3_proto == ETH_P_IPV6 {
        if first >> 4 != 6 {
            return false;
        }
        key.flow.family = AF_INET6;
        key.l4_proto = kread(ip, 6);
        key.flow.saddr = kread(ip, 8);
        key.flow.daddr = kread(ip, 24);
        l4_off = 40; // extension headers are not walked: their ports stay 0
    } else {
        return false;
    }
    if key.l4_proto == IPPROTO_TCP || key.l4_proto == IPPROTO_UDP {
        let ports: [u8; 4] = kread(ip, l4_off as usize);
        key.flow.sport = u16::from_be_bytes([ports[0], ports[1]]);
        key.flow.dport = u16::from_be_bytes([ports[2], ports[3]]);
    }
    true
}

/// Per-device counters for one packet; the entry is made (name, ifindex, netns) on first sight.
#[inline(always)]
fn iface_count(ctx: &TracePointContext, skb_off: usize, len_off: usize, name_off: usize, rx: bool) {
    let rec = record!(ctx, 1 2);
    let skb: u64 = field(rec, skb_off);
    let dev: u64 = kread(skb, net_off!(skb_dev));
    if dev == 0 || !crate::scope::dev_in_scope(dev, net_off!(dev_nd_net)) {
        return;
    }
    let len: u32 = field(rec, len_off);
    let entry = match IFACES.get_ptr_mut(&dev) {
        Some(p) => p,
        None => {
            let mut fresh = IfaceStats {
                ifindex: kread(dev, net_off!(dev_ifindex)),
                ..IfaceStats::default()
            };
            let net: u64 = kread(dev, net_off!(dev_nd_net));
            if net != 0 {
                fresh.netns = kread(net, net_off!(net_ns_inum));
            }
            // __data_loc: low 16 bits offset of the string in the record, high 16 its length.
            let loc: u32 = field(rec, name_off);
            // Masked in asm: 6.1's verifier refuses ctx + a register it cannot bound below.
            let off = crate::bounded::<0xffff>(loc as u64) as usize;
            let src = (ctx.as_ptr() as *const u8).wrapping_add(off);
            // SAFETY: a string inside this tracepoint record; the helper bounds the copy.
            let _ = unsafe { bpf_probe_read_kernel_str_bytes(src, &mut fresh.name) };
            if IFACES.insert(&dev, &fresh, 0).is_err() {
                count(stat::NET_MAP_FULL, 1);
                return;
            }
            match IFACES.get_ptr_mut(&dev) {
                Some(p) => p,
                None => return,
            }
        }
    };
    // SAFETY: this CPU's value of a per-CPU map.
    let s = unsafe { &mut *entry };
    if rx {
        s.rx_packets += 1;
        s.rx_bytes += len as u64;
    } else {
        s.tx_packets += 1;
        s.tx_bytes += len as u64;
    }
}

#[tracepoint]
pub fn sonde_netif_receive(ctx: TracePointContext) -> u32 {
    if crate::floor_only() {
        return 0;
    }
    iface_count(
        &ctx,
        net_off!(rx_skbaddr),
        net_off!(rx_len),
        net_off!(rx_name),
        true,
    );
    0
}

#[tracepoint]
pub fn sonde_dev_queue(ctx: TracePointContext) -> u32 {
    if crate::floor_only() {
        return 0;
    }
    iface_count(
        &ctx,
        net_off!(tx_skbaddr),
        net_off!(tx_len),
        net_off!(tx_name),
        false,
    );
    0
}

/// Row offset (0 for NET_TX, 1 for NET_RX) of a softirq vector this module follows.
#[inline(always)]
fn net_vec(ctx: &TracePointContext) -> Option<u32> {
    // The record is 12 bytes: a whole-word window would reach past it, which the kernel
    // refuses at attach time, so this one field goes through the helper.
    // SAFETY: offset from this kernel's format file.
    let off = net_off!(softirq_vec);
    // SAFETY: offset from this kernel's format file.
    let vec: u32 = unsafe { ctx.read_at(off) }.unwrap_or(0);
    match vec {
        softirq::VEC_NET_TX => Some(0),
        softirq::VEC_NET_RX => Some(1),
        _ => None,
    }
}

/// floor(log2(v)) for v ≥ 1, as a bucket index below [`softirq::BUCKETS`].
#[inline(always)]
fn log2_bucket(mut v: u64) -> u32 {
    let mut b = 0;
    for shift in [32u32, 16, 8, 4, 2, 1] {
        if v >> shift != 0 {
            v >>= shift;
            b += shift;
        }
    }
    if b >= softirq::BUCKETS {
        softirq::BUCKETS - 1
    } else {
        b
    }
}

#[inline(always)]
fn observe(row: u32, ns: u64) {
    let bucket = row * softirq::BUCKETS + log2_bucket(ns);
    if let Some(p) = SOFTIRQ_HIST.get_ptr_mut(bucket) {
        // SAFETY: this CPU's slot.
        unsafe { *p += 1 };
    }
    if let Some(p) = SOFTIRQ_HIST.get_ptr_mut(softirq::sum_index(row)) {
        // SAFETY: this CPU's slot.
        unsafe { *p += ns };
    }
}

/// NET_TX/NET_RX raised: remember when, unless it is already pending.
#[tracepoint]
pub fn sonde_softirq_raise(ctx: TracePointContext) -> u32 {
    if crate::floor_only() {
        return 0;
    }
    let Some(v) = net_vec(&ctx) else { return 0 };
    if let Some(p) = SOFTIRQ_TS.get_ptr_mut(v) {
        // SAFETY: this CPU's slot.
        unsafe {
            if *p == 0 {
                *p = now();
            }
        }
    }
    0
}

/// Handler starts: the delay since the raise goes into the histogram.
#[tracepoint]
pub fn sonde_softirq_entry(ctx: TracePointContext) -> u32 {
    if crate::floor_only() {
        return 0;
    }
    let Some(v) = net_vec(&ctx) else { return 0 };
    let t = now();
    if let Some(p) = SOFTIRQ_TS.get_ptr_mut(v) {
        // SAFETY: this CPU's slot.
        let raised = unsafe { core::mem::replace(&mut *p, 0) };
        if raised != 0 && t > raised {
            observe(softirq::ROW_DELAY_TX + v, t - raised);
        }
    }
    if let Some(p) = SOFTIRQ_TS.get_ptr_mut(2 + v) {
        // SAFETY: this CPU's slot.
        unsafe { *p = t };
    }
    0
}

/// Handler ends: its run time goes into the histogram.
#[tracepoint]
pub fn sonde_softirq_exit(ctx: TracePointContext) -> u32 {
    if crate::floor_only() {
        return 0;
    }
    let Some(v) = net_vec(&ctx) else { return 0 };
    if let Some(p) = SOFTIRQ_TS.get_ptr_mut(2 + v) {
        // SAFETY: this CPU's slot.
        let entered = unsafe { core::mem::replace(&mut *p, 0) };
        let t = now();
        if entered != 0 && t > entered {
            observe(softirq::ROW_RUN_TX + v, t - entered);
        }
    }
    0
}

// Keeps NetOffsets referenced so a layout change shows up here as well as in user space.
const _: usize = core::mem::size_of::<NetOffsets>();
