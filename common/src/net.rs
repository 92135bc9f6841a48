//! Network-quality probes: the map layouts the kernel side aggregates into and user space reads.
//!
//! Per-packet and per-ACK tracepoints (`tcp:tcp_probe`, `net:netif_receive_skb`,
//! `net:net_dev_queue`, `skb:kfree_skb`, the softirq pair) would cost more as ring-buffer
//! records than the work they describe, so they only add to map entries here; the daemon reads
//! the maps on its tick. Rare events (resets, state changes) still go through the ring buffer
//! as [`crate::ConnEvent`]s, because their order matters (a reset before SYN_SENT → CLOSE is a
//! refused connect).

/// A TCP/UDP flow as 5-tuple minus the protocol. For sockets (`FLOWS`): `s*` is the local end
/// and `d*` the remote end, as the socket sees it. For dropped packets (`DROPS`): `s*` is the
/// packet's source. Ports in host byte order; IPv4 addresses in the first 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub _pad: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// Counters of one TCP socket (`FLOWS`, key [`FlowKey`] in the socket's view). Updated under
/// the socket's lock (every tracepoint that touches it runs with the socket locked), so the
/// kernel side needs no atomics for one entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// `bpf_ktime_get_ns` when the entry was made (not refreshed per segment: a clock read
    /// per segment costs more than the rest of the update).
    pub first_ns: u64,
    /// Segments retransmitted once established (`tcp:tcp_retransmit_skb`, state ≠ SYN_SENT).
    pub retransmits: u64,
    /// SYNs retransmitted while connecting: a path that loses SYNs, or nobody answering.
    pub syn_retransmits: u64,
    /// Segments and payload bytes received in ESTABLISHED (`tcp:tcp_probe` fires per segment).
    pub rx_segments: u64,
    pub rx_bytes: u64,
    /// Bytes the peer acknowledged (growth of `snd_una` between probes).
    pub tx_acked_bytes: u64,
    /// Smoothed RTT in µs and congestion window in segments, as of the last segment.
    pub srtt_us: u32,
    pub snd_cwnd: u32,
    /// `snd_una` as of the last probe; `una_seen` is 1 once it holds a value.
    pub last_una: u32,
    pub una_seen: u32,
}

/// One kind of dropped packet (`DROPS`): reason, protocols and, when the IP header could be
/// read, the flow (packet view: `s*` = source). A drop without readable headers has a zero flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DropKey {
    /// `enum skb_drop_reason` (names in tracefs: `skb/kfree_skb/format`).
    pub reason: u32,
    /// Ethertype in host byte order (0x0800 IPv4, 0x86dd IPv6, 0x0806 ARP…).
    pub l3_proto: u16,
    /// IPPROTO_* when the IP header was read, else 0.
    pub l4_proto: u8,
    pub _pad: u8,
    pub flow: FlowKey,
}

/// Packets and bytes (`skb->len`) of one [`DropKey`]. Added to atomically: drops of one kind
/// can happen on several CPUs at once.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropStats {
    pub packets: u64,
    pub bytes: u64,
}

/// Per-CPU traffic of one network device (`IFACES`, key: the `struct net_device *`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceStats {
    /// `net:netif_receive_skb`.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// `net:net_dev_queue`.
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub ifindex: u32,
    /// Inode of the device's network namespace (what `ls -l /proc/PID/ns/net` shows); 0 when
    /// unreadable.
    pub netns: u32,
    /// Device name, NUL-padded.
    pub name: [u8; 16],
}

/// Softirq vectors the probes follow, and their rows in `SOFTIRQ_HIST`.
pub mod softirq {
    /// Kernel vector numbers (`irq:softirq_*` `vec`).
    pub const VEC_NET_TX: u32 = 2;
    pub const VEC_NET_RX: u32 = 3;
    /// log2 buckets per histogram row: bucket b counts durations in [2^b, 2^(b+1)) ns, the
    /// last bucket everything from 2^31 ns (~2.1 s) up.
    pub const BUCKETS: u32 = 32;
    /// Rows: raise → entry delay and entry → exit run time, for NET_TX and NET_RX.
    pub const ROW_DELAY_TX: u32 = 0;
    pub const ROW_DELAY_RX: u32 = 1;
    pub const ROW_RUN_TX: u32 = 2;
    pub const ROW_RUN_RX: u32 = 3;
    pub const ROWS: u32 = 4;
    /// `SOFTIRQ_HIST` entries: per-row buckets, then per-row sums of nanoseconds.
    pub const HIST_ENTRIES: u32 = ROWS * BUCKETS + ROWS;
    /// Index of the sum of row `row`.
    pub const fn sum_index(row: u32) -> u32 {
        ROWS * BUCKETS + row
    }
}

/// How many 8-byte words of each tracepoint record the kernel side copies out of the context
/// (one block of direct loads instead of a helper call per field). Every offset in
/// [`NetOffsets`] must fall inside its record's window (the host checks that at start), and a
/// window must not pass the record's end (the kernel refuses to attach such a program).
pub mod window {
    pub const TCP_PROBE: usize = 14;
    pub const TCP_RETRANSMIT: usize = 10;
    pub const TCP_SEND_RESET: usize = 11;
    pub const TCP_RECEIVE_RESET: usize = 8;
    pub const KFREE_SKB: usize = 5;
    /// `net:netif_receive_skb` and `net:net_dev_queue`.
    pub const NET_DEV: usize = 3;
    /// `irq:softirq_*` (12 bytes: read by helper, a word window would pass its end).
    pub const SOFTIRQ: usize = 2;
}

/// Field offsets for the network probes, from tracefs `format` files and BTF. 50 × u16, so
/// [`crate::Config`] stays free of implicit padding (checked by a test in the host crate).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NetOffsets {
    /// `tcp:tcp_retransmit_skb`.
    pub retrans_state: u16,
    pub retrans_sport: u16,
    pub retrans_dport: u16,
    pub retrans_family: u16,
    pub retrans_saddr: u16,
    pub retrans_daddr: u16,
    pub retrans_saddr_v6: u16,
    pub retrans_daddr_v6: u16,
    /// `skb:kfree_skb`.
    pub kfree_skbaddr: u16,
    pub kfree_protocol: u16,
    pub kfree_reason: u16,
    /// `tcp:tcp_probe` (`saddr`/`daddr` are 28-byte sockaddr_in/sockaddr_in6).
    pub probe_saddr: u16,
    pub probe_daddr: u16,
    pub probe_family: u16,
    pub probe_data_len: u16,
    pub probe_snd_una: u16,
    pub probe_srtt: u16,
    pub probe_snd_cwnd: u16,
    /// `tcp_probe.skaddr` (0 where the record has none): the socket, for the capture scope. Read with
    /// a helper, not inside the record window, so its absence costs no kernel its probe.
    pub probe_skaddr: u16,
    /// Unused: keeps `Config` a whole number of 4-byte words without implicit padding.
    pub _reserved: u16,
    /// `tcp:tcp_send_reset` (sockaddrs as in tcp_probe).
    pub send_rst_skaddr: u16,
    pub send_rst_state: u16,
    pub send_rst_saddr: u16,
    pub send_rst_daddr: u16,
    /// `tcp:tcp_receive_reset`.
    pub recv_rst_skaddr: u16,
    pub recv_rst_sport: u16,
    pub recv_rst_dport: u16,
    pub recv_rst_family: u16,
    pub recv_rst_saddr: u16,
    pub recv_rst_daddr: u16,
    pub recv_rst_saddr_v6: u16,
    pub recv_rst_daddr_v6: u16,
    /// `net:netif_receive_skb` / `net:net_dev_queue`: `skbaddr`, `len`, `name` (__data_loc).
    pub rx_skbaddr: u16,
    pub rx_len: u16,
    pub rx_name: u16,
    pub tx_skbaddr: u16,
    pub tx_len: u16,
    pub tx_name: u16,
    /// `irq:softirq_*`: `vec`.
    pub softirq_vec: u16,
    /// `struct sk_buff`.
    pub skb_head: u16,
    pub skb_len: u16,
    pub skb_network_header: u16,
    pub skb_dev: u16,
    /// `struct net_device`: `ifindex`, `nd_net` (a `struct net *`).
    pub dev_ifindex: u16,
    pub dev_nd_net: u16,
    /// `struct net`: offset of `ns.inum`.
    pub net_ns_inum: u16,
    /// `tcp:tcp_send_reset` before Linux 6.2 (separate family/port/address fields, like
    /// tcp_receive_reset, instead of two sockaddrs): nonzero `send_rst_family` selects it.
    pub send_rst_family: u16,
    pub send_rst_sport: u16,
    pub send_rst_dport: u16,
    pub send_rst_saddr_v6: u16,
    pub send_rst_daddr_v6: u16,
    /// `tcp:tcp_retransmit_skb`: `skaddr`, whose namespace the capture scope judges.
    pub retrans_skaddr: u16,
}

impl NetOffsets {
    pub const ZERO: NetOffsets = NetOffsets {
        retrans_state: 0,
        retrans_sport: 0,
        retrans_dport: 0,
        retrans_family: 0,
        retrans_saddr: 0,
        retrans_daddr: 0,
        retrans_saddr_v6: 0,
        retrans_daddr_v6: 0,
        kfree_skbaddr: 0,
        kfree_protocol: 0,
        kfree_reason: 0,
        probe_saddr: 0,
        probe_daddr: 0,
        probe_family: 0,
        probe_data_len: 0,
        probe_snd_una: 0,
        probe_srtt: 0,
        probe_snd_cwnd: 0,
        probe_skaddr: 0,
        _reserved: 0,
        send_rst_skaddr: 0,
        send_rst_state: 0,
        send_rst_saddr: 0,
        send_rst_daddr: 0,
        recv_rst_skaddr: 0,
        recv_rst_sport: 0,
        recv_rst_dport: 0,
        recv_rst_family: 0,
        recv_rst_saddr: 0,
        recv_rst_daddr: 0,
        recv_rst_saddr_v6: 0,
        recv_rst_daddr_v6: 0,
        rx_skbaddr: 0,
        rx_len: 0,
        rx_name: 0,
        tx_skbaddr: 0,
        tx_len: 0,
        tx_name: 0,
        softirq_vec: 0,
        skb_head: 0,
        skb_len: 0,
        skb_network_header: 0,
        skb_dev: 0,
        dev_ifindex: 0,
        dev_nd_net: 0,
        net_ns_inum: 0,
        send_rst_family: 0,
        send_rst_sport: 0,
        send_rst_dport: 0,
        send_rst_saddr_v6: 0,
        send_rst_daddr_v6: 0,
        retrans_skaddr: 0,
    };
}
