//! The network-quality probes' side of the capture: which tracepoints they use, the record and
//! struct offsets they need, and reading the kernel maps they aggregate into.
//!
//! Unlike the payload programs, each network probe is optional: a kernel without one of these
//! tracepoints (or a verifier that refuses one program) loses that signal, with a warning and a
//! `sonde_net_probes_missing` entry, not the whole daemon.
use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context as _, Result};
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap};
use sonde_common::net::{
    DropKey, DropStats, FlowKey, FlowStats, IfaceStats, NetOffsets, softirq, window,
};

use super::btf::Btf;
use super::programs::Feature;
use super::tracefs::{self, Format};

// The probes and their tracepoints are in [`super::programs::NETWORK`].

/// The network probes' offsets, and the features this kernel cannot serve with the reason:
/// each feature stands alone (6.1's tcp_send_reset has 4-byte addresses, not sockaddrs: only
/// the reset probes go off there).
#[derive(Debug, Clone)]
pub struct NetOffsetReport {
    pub offsets: NetOffsets,
    pub unavailable: Vec<(Feature, String)>,
}

impl NetOffsetReport {
    pub fn why_unavailable(&self, f: Feature) -> Option<&str> {
        self.unavailable
            .iter()
            .find(|(g, _)| *g == f)
            .map(|(_, why)| why.as_str())
    }
}

/// Fills one feature's offsets, or says why this kernel cannot serve it.
type OffsetPart<'a> = dyn Fn(&mut NetOffsets) -> Result<()> + 'a;

/// Offsets for the network probes from this kernel's tracefs formats and BTF, per feature.
pub fn net_offsets(root: &Path, btf: &Btf) -> NetOffsetReport {
    let fmt = |c: &str, e: &str| Format::read(root, c, e);
    let skb = |m: &str| btf.member_offset("sk_buff", m);
    let dev = |m: &str| btf.member_offset("net_device", m);
    let mut o = NetOffsets::ZERO;
    let mut unavailable = Vec::new();
    let parts: [(Feature, &OffsetPart); 6] = [
        (Feature::Retransmits, &|o| {
            let f = fmt("tcp", "tcp_retransmit_skb")?;
            o.retrans_state = f.offset("state", 4)?;
            o.retrans_sport = f.offset("sport", 2)?;
            o.retrans_dport = f.offset("dport", 2)?;
            o.retrans_family = f.offset("family", 2)?;
            o.retrans_saddr = f.offset("saddr", 4)?;
            o.retrans_daddr = f.offset("daddr", 4)?;
            o.retrans_saddr_v6 = f.offset("saddr_v6", 16)?;
            o.retrans_daddr_v6 = f.offset("daddr_v6", 16)?;
            o.retrans_skaddr = f.offset("skaddr", 8)?;
            Ok(())
        }),
        (Feature::Drops, &|o| {
            let f = fmt("skb", "kfree_skb")?;
            o.kfree_skbaddr = f.offset("skbaddr", 8)?;
            o.kfree_protocol = f.offset("protocol", 2)?;
            o.kfree_reason = f.offset("reason", 4)?;
            o.skb_head = skb("head")?;
            o.skb_len = skb("len")?;
            o.skb_network_header = skb("network_header")?;
            Ok(())
        }),
        (Feature::TcpRtt, &|o| {
            let f = fmt("tcp", "tcp_probe")?;
            o.probe_saddr = f.offset("saddr", 28)?;
            o.probe_daddr = f.offset("daddr", 28)?;
            o.probe_family = f.offset("family", 2)?;
            o.probe_data_len = f.offset("data_len", 2)?;
            o.probe_snd_una = f.offset("snd_una", 4)?;
            o.probe_srtt = f.offset("srtt", 4)?;
            o.probe_snd_cwnd = f.offset("snd_cwnd", 4)?;
            // Optional: older kernels' records have no socket (the scope then keeps to flows
            // that in-scope probes created).
            o.probe_skaddr = f.offset("skaddr", 8).unwrap_or(0);
            Ok(())
        }),
        (Feature::Resets, &|o| {
            let send = fmt("tcp", "tcp_send_reset")?;
            let recv = fmt("tcp", "tcp_receive_reset")?;
            o.send_rst_skaddr = send.offset("skaddr", 8)?;
            o.send_rst_state = send.offset("state", 4)?;
            if send.offset("saddr", 28).is_ok() {
                o.send_rst_saddr = send.offset("saddr", 28)?;
                o.send_rst_daddr = send.offset("daddr", 28)?;
            } else {
                // Before Linux 6.2: family, ports and 4/16-byte addresses, as receive_reset.
                o.send_rst_family = send.offset("family", 2)?;
                o.send_rst_sport = send.offset("sport", 2)?;
                o.send_rst_dport = send.offset("dport", 2)?;
                o.send_rst_saddr = send.offset("saddr", 4)?;
                o.send_rst_daddr = send.offset("daddr", 4)?;
                o.send_rst_saddr_v6 = send.offset("saddr_v6", 16)?;
                o.send_rst_daddr_v6 = send.offset("daddr_v6", 16)?;
            }
            o.recv_rst_skaddr = recv.offset("skaddr", 8)?;
            o.recv_rst_sport = recv.offset("sport", 2)?;
            o.recv_rst_dport = recv.offset("dport", 2)?;
            o.recv_rst_family = recv.offset("family", 2)?;
            o.recv_rst_saddr = recv.offset("saddr", 4)?;
            o.recv_rst_daddr = recv.offset("daddr", 4)?;
            o.recv_rst_saddr_v6 = recv.offset("saddr_v6", 16)?;
            o.recv_rst_daddr_v6 = recv.offset("daddr_v6", 16)?;
            Ok(())
        }),
        (Feature::Interfaces, &|o| {
            let rx = fmt("net", "netif_receive_skb")?;
            let tx = fmt("net", "net_dev_queue")?;
            o.rx_skbaddr = rx.offset("skbaddr", 8)?;
            o.rx_len = rx.offset("len", 4)?;
            o.rx_name = rx.offset("name", 4)?;
            o.tx_skbaddr = tx.offset("skbaddr", 8)?;
            o.tx_len = tx.offset("len", 4)?;
            o.tx_name = tx.offset("name", 4)?;
            o.skb_dev = skb("dev")?;
            o.dev_ifindex = dev("ifindex")?;
            o.dev_nd_net = dev("nd_net")?;
            o.net_ns_inum = btf
                .member_offset("net", "ns")?
                .checked_add(btf.member_offset("ns_common", "inum")?)
                .context("struct net: ns.inum offset overflows")?;
            Ok(())
        }),
        (Feature::Softirq, &|o| {
            o.softirq_vec = fmt("irq", "softirq_entry")?.offset("vec", 4)?;
            Ok(())
        }),
    ];
    for (feature, part) in parts {
        if let Err(e) = part(&mut o) {
            unavailable.push((feature, format!("{e:#}")));
        }
    }
    for (feature, e) in check_windows(&o) {
        if !unavailable.iter().any(|(f, _)| *f == feature) {
            unavailable.push((feature, e));
        }
    }
    NetOffsetReport {
        offsets: o,
        unavailable,
    }
}

/// Every record field the kernel side reads must lie inside the words it copies from that
/// record ([`window`]); a kernel whose layout moved a field further fails here, clearly,
/// instead of reading zeros.
fn check_windows(o: &NetOffsets) -> Vec<(Feature, String)> {
    let fields: [(&str, u16, usize, usize); 33] = [
        (
            "tcp_retransmit_skb.skaddr",
            o.retrans_skaddr,
            8,
            window::TCP_RETRANSMIT,
        ),
        ("tcp_probe.saddr", o.probe_saddr, 28, window::TCP_PROBE),
        ("tcp_probe.daddr", o.probe_daddr, 28, window::TCP_PROBE),
        ("tcp_probe.data_len", o.probe_data_len, 2, window::TCP_PROBE),
        ("tcp_probe.snd_una", o.probe_snd_una, 4, window::TCP_PROBE),
        ("tcp_probe.srtt", o.probe_srtt, 4, window::TCP_PROBE),
        ("tcp_probe.snd_cwnd", o.probe_snd_cwnd, 4, window::TCP_PROBE),
        (
            "tcp_retransmit_skb.state",
            o.retrans_state,
            4,
            window::TCP_RETRANSMIT,
        ),
        (
            "tcp_retransmit_skb.family",
            o.retrans_family,
            2,
            window::TCP_RETRANSMIT,
        ),
        (
            "tcp_retransmit_skb.sport",
            o.retrans_sport,
            2,
            window::TCP_RETRANSMIT,
        ),
        (
            "tcp_retransmit_skb.dport",
            o.retrans_dport,
            2,
            window::TCP_RETRANSMIT,
        ),
        (
            "tcp_retransmit_skb.saddr_v6",
            o.retrans_saddr_v6,
            16,
            window::TCP_RETRANSMIT,
        ),
        (
            "tcp_retransmit_skb.daddr_v6",
            o.retrans_daddr_v6,
            16,
            window::TCP_RETRANSMIT,
        ),
        (
            "tcp_send_reset.skaddr",
            o.send_rst_skaddr,
            8,
            window::TCP_SEND_RESET,
        ),
        (
            "tcp_send_reset.state",
            o.send_rst_state,
            4,
            window::TCP_SEND_RESET,
        ),
        (
            "tcp_send_reset.saddr",
            o.send_rst_saddr,
            28,
            window::TCP_SEND_RESET,
        ),
        (
            "tcp_send_reset.daddr",
            o.send_rst_daddr,
            28,
            window::TCP_SEND_RESET,
        ),
        (
            "tcp_send_reset.saddr_v6",
            o.send_rst_saddr_v6,
            16,
            window::TCP_SEND_RESET,
        ),
        (
            "tcp_send_reset.daddr_v6",
            o.send_rst_daddr_v6,
            16,
            window::TCP_SEND_RESET,
        ),
        (
            "tcp_receive_reset.skaddr",
            o.recv_rst_skaddr,
            8,
            window::TCP_RECEIVE_RESET,
        ),
        (
            "tcp_receive_reset.family",
            o.recv_rst_family,
            2,
            window::TCP_RECEIVE_RESET,
        ),
        (
            "tcp_receive_reset.saddr_v6",
            o.recv_rst_saddr_v6,
            16,
            window::TCP_RECEIVE_RESET,
        ),
        (
            "tcp_receive_reset.daddr_v6",
            o.recv_rst_daddr_v6,
            16,
            window::TCP_RECEIVE_RESET,
        ),
        ("kfree_skb.skbaddr", o.kfree_skbaddr, 8, window::KFREE_SKB),
        ("kfree_skb.protocol", o.kfree_protocol, 2, window::KFREE_SKB),
        ("kfree_skb.reason", o.kfree_reason, 4, window::KFREE_SKB),
        (
            "netif_receive_skb.skbaddr",
            o.rx_skbaddr,
            8,
            window::NET_DEV,
        ),
        ("netif_receive_skb.len", o.rx_len, 4, window::NET_DEV),
        ("netif_receive_skb.name", o.rx_name, 4, window::NET_DEV),
        ("net_dev_queue.skbaddr", o.tx_skbaddr, 8, window::NET_DEV),
        ("net_dev_queue.len", o.tx_len, 4, window::NET_DEV),
        ("net_dev_queue.name", o.tx_name, 4, window::NET_DEV),
        ("softirq.vec", o.softirq_vec, 4, window::SOFTIRQ),
    ];
    let mut out = Vec::new();
    for (name, off, size, words) in fields {
        if off != 0 && usize::from(off) + size > words * 8 {
            let feature = match name.split('.').next().unwrap_or("") {
                "tcp_probe" => Feature::TcpRtt,
                "tcp_retransmit_skb" => Feature::Retransmits,
                "tcp_send_reset" | "tcp_receive_reset" => Feature::Resets,
                "kfree_skb" => Feature::Drops,
                "softirq" => Feature::Softirq,
                _ => Feature::Interfaces,
            };
            out.push((
                feature,
                format!(
                    "{name} is at offset {off} on this kernel, beyond the {} bytes the probe reads",
                    words * 8
                ),
            ));
        }
    }
    out
}

/// `enum skb_drop_reason` value → name, from the `__print_symbolic` of kfree_skb's format
/// (the kernel's own table, so new reasons need no Sonde release). Empty when unreadable.
pub fn drop_reason_names(root: &Path) -> HashMap<u32, String> {
    let path = root.join("events/skb/kfree_skb/format");
    match std::fs::read_to_string(&path) {
        Ok(text) => tracefs::print_symbols(&text, "reason"),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "drop reasons will show as numbers");
            HashMap::new()
        }
    }
}

/// One read of every network map, summed over CPUs where the map is per-CPU.
#[derive(Debug, Default, Clone)]
pub struct NetReading {
    pub flows: Vec<(FlowKey, FlowStats)>,
    pub drops: Vec<(DropKey, DropStats)>,
    /// Keyed by device pointer (stable while the device lives).
    pub ifaces: Vec<(u64, IfaceStats)>,
    /// [`softirq::HIST_ENTRIES`] values, summed over CPUs.
    pub softirq: Vec<u64>,
    /// Entries that could not be read (a racing delete): skipped, counted.
    pub read_errors: u64,
}

/// The network probes' maps, taken out of the loaded object.
pub struct NetMaps {
    flows: BpfHashMap<MapData, FlowKey, FlowStats>,
    drops: BpfHashMap<MapData, DropKey, DropStats>,
    ifaces: PerCpuHashMap<MapData, u64, IfaceStats>,
    softirq: PerCpuArray<MapData, u64>,
}

impl NetMaps {
    pub fn take(ebpf: &mut aya::Ebpf) -> Result<NetMaps> {
        let mut map = |name: &str| ebpf.take_map(name).with_context(|| format!("map {name}"));
        Ok(NetMaps {
            flows: BpfHashMap::try_from(map("FLOWS")?)?,
            drops: BpfHashMap::try_from(map("DROPS")?)?,
            ifaces: PerCpuHashMap::try_from(map("IFACES")?)?,
            softirq: PerCpuArray::try_from(map("SOFTIRQ_HIST")?)?,
        })
    }

    /// Reads every map into `out` (reusing its buffers).
    pub fn read(&self, out: &mut NetReading) {
        out.flows.clear();
        out.drops.clear();
        out.ifaces.clear();
        for item in self.flows.iter() {
            match item {
                Ok(kv) => out.flows.push(kv),
                Err(_) => out.read_errors += 1,
            }
        }
        for item in self.drops.iter() {
            match item {
                Ok(kv) => out.drops.push(kv),
                Err(_) => out.read_errors += 1,
            }
        }
        for item in self.ifaces.iter() {
            match item {
                Ok((dev, per_cpu)) => {
                    let mut sum = IfaceStats::default();
                    for s in per_cpu.iter() {
                        sum.rx_packets += s.rx_packets;
                        sum.rx_bytes += s.rx_bytes;
                        sum.tx_packets += s.tx_packets;
                        sum.tx_bytes += s.tx_bytes;
                        // Identity fields are written once per CPU that saw the device.
                        if s.ifindex != 0 {
                            sum.ifindex = s.ifindex;
                            sum.netns = s.netns;
                            sum.name = s.name;
                        }
                    }
                    out.ifaces.push((dev, sum));
                }
                Err(_) => out.read_errors += 1,
            }
        }
        out.softirq.clear();
        out.softirq.resize(softirq::HIST_ENTRIES as usize, 0);
        for i in 0..softirq::HIST_ENTRIES {
            match self.softirq.get(&i, 0) {
                Ok(per_cpu) => out.softirq[i as usize] = per_cpu.iter().sum(),
                Err(_) => out.read_errors += 1,
            }
        }
    }

    /// Forgets a closed socket's flow entry (after its last values were read).
    pub fn remove_flow(&mut self, key: &FlowKey) {
        // Already evicted by the LRU: nothing to do.
        let _ = self.flows.remove(key);
    }

    /// Forgets a drop entry whose counts were folded into the daemon's totals.
    pub fn remove_drop(&mut self, key: &DropKey) {
        let _ = self.drops.remove(key);
    }
}
