//! The capture scope (`[capture.scope]`): several daemons on one kernel each act as one node
//! (a test's network namespace each), or a node leaves namespaces and cgroups out.
//!
//! Programs with process context ask [`task_in_scope`] first (through `traced`): the current
//! task's network namespace (task->nsproxy->net_ns->ns.inum, offsets from BTF) against
//! `SCOPE_NETNS`, and its cgroup v2 ancestors at the configured levels
//! (`bpf_get_current_ancestor_cgroup_id`) against `SCOPE_CGROUPS`. Exit programs need no check
//! of their own: they only act on what an entry program kept (`INFLIGHT`, `SSL_CALLS`…).
//! Programs without process context judge the socket's or device's namespace
//! ([`sock_in_scope`], [`dev_in_scope`]); they cannot judge a cgroup.
//!
//! Every check is behind a `CONFIG.flags` bit, read-only data: without a scope the verifier
//! sees the branch is never taken and removes it, so an unset scope costs nothing.
use aya_ebpf::{
    helpers::{
        bpf_probe_read_kernel,
        generated::{bpf_get_current_ancestor_cgroup_id, bpf_get_current_task},
    },
    macros::map,
    maps::HashMap,
};
use sonde_common::{MAX_SCOPE_CGROUP_LEVEL, MAX_SCOPE_ENTRIES, ScopeOffsets, config_flags, stat};

use crate::count;

/// Network namespace inodes of the scope (value unused).
#[map]
static SCOPE_NETNS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_SCOPE_ENTRIES, 0);

/// cgroup v2 ids of the scope (value unused); a cgroup includes its descendants.
#[map]
static SCOPE_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(MAX_SCOPE_ENTRIES, 0);

/// `*(base + off)` from kernel memory; 0 when unreadable.
#[inline(always)]
fn kread<T: Default>(base: u64, off: u16) -> T {
    // SAFETY: the probe helper faults softly on a bad kernel address.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T) }.unwrap_or_default()
}

/// Whether the namespace of `struct net *net` is one the scope lists.
#[inline(always)]
fn netns_listed(net: u64) -> bool {
    let o: ScopeOffsets = cfg!(scope);
    let inum: u32 = kread(net, o.net_inum);
    // SAFETY: map lookup by value.
    unsafe { SCOPE_NETNS.get(&inum) }.is_some()
}

/// The current task's `struct net *`; 0 when unreadable (a task exiting has no nsproxy).
#[inline(always)]
fn task_net() -> u64 {
    let o: ScopeOffsets = cfg!(scope);
    // SAFETY: no preconditions; the pointer is only dereferenced through the probe helper.
    let task = unsafe { bpf_get_current_task() };
    let nsproxy: u64 = kread(task, o.task_nsproxy);
    if nsproxy == 0 {
        return 0;
    }
    kread(nsproxy, o.nsproxy_net_ns)
}

/// Whether the current task sits in (or below) a cgroup the scope lists: its ancestor at
/// each level a listed cgroup has. The levels are a load-time constant, so the verifier walks
/// only those.
#[inline(always)]
fn cgroup_listed() -> bool {
    let levels = cfg!(scope_cgroup_levels);
    let mut level = 0;
    while level <= MAX_SCOPE_CGROUP_LEVEL {
        if levels & (1 << level) != 0 {
            // SAFETY: a helper on the current task; 0 when it has no ancestor that deep.
            let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
            // SAFETY: map lookup by value.
            if id != 0 && unsafe { SCOPE_CGROUPS.get(&id) }.is_some() {
                return true;
            }
        }
        level += 1;
    }
    false
}

#[inline(never)]
fn count_out_of_scope() {
    count(stat::OUT_OF_SCOPE, 1);
}

/// Whether the current task is inside the scope (always, without one). A task left out is
/// counted (`out_of_scope`).
#[inline(always)]
pub fn task_in_scope() -> bool {
    let f = cfg!(flags);
    let by_netns = f & config_flags::SCOPE_NETNS != 0;
    let by_cgroup = f & config_flags::SCOPE_CGROUPS != 0;
    if !by_netns && !by_cgroup {
        return true;
    }
    let inside = if f & config_flags::SCOPE_EXCLUDE != 0 {
        // Leave out what any list names.
        !((by_netns && netns_listed(task_net())) || (by_cgroup && cgroup_listed()))
    } else {
        // Keep what every given list names.
        (!by_netns || netns_listed(task_net())) && (!by_cgroup || cgroup_listed())
    };
    if !inside {
        count_out_of_scope();
    }
    inside
}

/// Whether the namespace of `struct net *net` is inside the scope's namespaces. An unknown
/// namespace (0) is kept: an event is only dropped when it is known to be out.
#[inline(always)]
fn net_in_scope(net: u64) -> bool {
    if net == 0 {
        return true;
    }
    let excluding = cfg!(flags) & config_flags::SCOPE_EXCLUDE != 0;
    let inside = netns_listed(net) != excluding;
    if !inside {
        count_out_of_scope();
    }
    inside
}

/// Whether the scope names network namespaces (a load-time constant).
#[inline(always)]
pub fn netns_scoped() -> bool {
    cfg!(flags) & config_flags::SCOPE_NETNS != 0
}

/// For programs without process context: whether socket `sk` (a `struct sock *`) lives in a
/// namespace inside the scope. Always true without a namespace scope (a cgroup cannot be
/// judged from softirq).
#[inline(always)]
pub fn sock_in_scope(sk: u64) -> bool {
    if cfg!(flags) & config_flags::SCOPE_NETNS == 0 || sk == 0 {
        return true;
    }
    let o: ScopeOffsets = cfg!(scope);
    net_in_scope(kread(sk, o.skc_net))
}

/// The same for a `struct net_device *` (its `nd_net`), at offsets the network probes read;
/// kept when they are unknown on this kernel.
#[inline(always)]
pub fn dev_in_scope(dev: u64, nd_net_off: usize) -> bool {
    if cfg!(flags) & config_flags::SCOPE_NETNS == 0 || dev == 0 || nd_net_off == 0 {
        return true;
    }
    net_in_scope(kread(dev, nd_net_off as u16))
}
