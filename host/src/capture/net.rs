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
use super::tracefs::{self, Format};

/// Network probes: (program, category, tracepoint). `sonde_sock_state` (inet_sock_set_state)
/// is in [`super::ATTACHMENTS`]: the payload side needs it for roles as well.
pub const NET_ATTACHMENTS: &[(&str, &str, &str)] = &[
    ("sonde_tcp_probe", "tcp", "tcp_probe"),
    ("sonde_tcp_retransmit", "tcp", "tcp_retransmit_skb"),
    ("sonde_tcp_send_reset", "tcp", "tcp_send_reset"),
    ("sonde_tcp_receive_reset", "tcp", "tcp_receive_reset"),
    ("sonde_kfree_skb", "skb", "kfree_skb"),
    ("sonde_netif_receive", "net", "netif_receive_skb"),
    ("sonde_dev_queue", "net", "net_dev_queue"),
    ("sonde_softirq_raise", "irq", "softirq_raise"),
    ("sonde_softirq_entry", "irq", "softirq_entry"),
    ("sonde_softirq_exit", "irq", "softirq_exit"),
];

/// Offsets for the network probes from this kernel's tracefs formats and BTF.
pub fn net_offsets(root: &Path, btf: &Btf) -> Result<NetOffsets> {
    let fmt = |c: &str, e: &str| Format::read(root, c, e);
    let retrans = fmt("tcp", "tcp_retransmit_skb")?;
    let kfree = fmt("skb", "kfree_skb")?;
    let probe = fmt("tcp", "tcp_probe")?;
    let send_rst = fmt("tcp", "tcp_send_reset")?;
    let recv_rst = fmt("tcp", "tcp_receive_reset")?;
    let rx = fmt("net", "netif_receive_skb")?;
    let tx = fmt("net", "net_dev_queue")?;
    let soft = fmt("irq", "softirq_entry")?;
    let skb = |m: &str| btf.member_offset("sk_buff", m);
    let dev = |m: &str| btf.member_offset("net_device", m);
    let net_ns_inum = btf
        .member_offset("net", "ns")?
        .checked_add(btf.member_offset("ns_common", "inum")?)
        .context("struct net: ns.inum offset overflows")?;
    let offsets = NetOffsets {
        retrans_state: retrans.offset("state", 4)?,
        retrans_sport: retrans.offset("sport", 2)?,
        retrans_dport: retrans.offset("dport", 2)?,
        retrans_family: retrans.offset("family", 2)?,
        retrans_saddr: retrans.offset("saddr", 4)?,
        retrans_daddr: retrans.offset("daddr", 4)?,
        retrans_saddr_v6: retrans.offset("saddr_v6", 16)?,
        retrans_daddr_v6: retrans.offset("daddr_v6", 16)?,
        kfree_skbaddr: kfree.offset("skbaddr", 8)?,
        kfree_protocol: kfree.offset("protocol", 2)?,
        kfree_reason: kfree.offset("reason", 4)?,
        probe_saddr: probe.offset("saddr", 28)?,
        probe_daddr: probe.offset("daddr", 28)?,
        probe_family: probe.offset("family", 2)?,
        probe_data_len: probe.offset("data_len", 2)?,
        probe_snd_una: probe.offset("snd_una", 4)?,
        probe_srtt: probe.offset("srtt", 4)?,
        probe_snd_cwnd: probe.offset("snd_cwnd", 4)?,
        send_rst_skaddr: send_rst.offset("skaddr", 8)?,
        send_rst_state: send_rst.offset("state", 4)?,
        send_rst_saddr: send_rst.offset("saddr", 28)?,
        send_rst_daddr: send_rst.offset("daddr", 28)?,
        recv_rst_skaddr: recv_rst.offset("skaddr", 8)?,
        recv_rst_sport: recv_rst.offset("sport", 2)?,
        recv_rst_dport: recv_rst.offset("dport", 2)?,
        recv_rst_family: recv_rst.offset("family", 2)?,
        recv_rst_saddr: recv_rst.offset("saddr", 4)?,
        recv_rst_daddr: recv_rst.offset("daddr", 4)?,
        recv_rst_saddr_v6: recv_rst.offset("saddr_v6", 16)?,
        recv_rst_daddr_v6: recv_rst.offset("daddr_v6", 16)?,
        rx_skbaddr: rx.offset("skbaddr", 8)?,
        rx_len: rx.offset("len", 4)?,
        rx_name: rx.offset("name", 4)?,
        tx_skbaddr: tx.offset("skbaddr", 8)?,
        tx_len: tx.offset("len", 4)?,
        tx_name: tx.offset("name", 4)?,
        softirq_vec: soft.offset("vec", 4)?,
        skb_head: skb("head")?,
        skb_len: skb("len")?,
        skb_network_header: skb("network_header")?,
        skb_dev: skb("dev")?,
        dev_ifindex: dev("ifindex")?,
        dev_nd_net: dev("nd_net")?,
        net_ns_inum,
    };
    check_windows(&offsets)?;
    Ok(offsets)
}

/// Every record field the kernel side reads must lie inside the words it copies from that
/// record ([`window`]); a kernel whose layout moved a field further fails here, clearly,
/// instead of reading zeros.
fn check_windows(o: &NetOffsets) -> Result<()> {
    let fields: [(&str, u16, usize, usize); 30] = [
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
    for (name, off, size, words) in fields {
        if usize::from(off) + size > words * 8 {
            anyhow::bail!(
                "{name} is at offset {off} on this kernel, beyond the {} bytes the probe reads",
                words * 8
            );
        }
    }
    Ok(())
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
