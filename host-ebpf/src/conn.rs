//! Connection lifecycle: connect/accept/close, TCP state changes, the per-(tgid, fd)
//! connection table the I/O programs share, and lifecycle events built directly in ring-buffer
//! reservations (a `ConnEvent` on the stack cost 128 bytes of the 512-byte budget).
use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_smp_processor_id,
        bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user,
    },
    macros::{map, tracepoint},
    maps::{LruHashMap, PerCpuArray},
    programs::TracePointContext,
};
use sonde_common::{Addr, ConnEvent, EventKind, Offsets, role, stat, syscall};

use crate::{
    AF_INET, AF_INET6, EVENTS, INFLIGHT, Inflight, NO_ADDR, arg, conn_key, count, exit_ret, task,
    traced, wakeup_flag,
};

const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;
const TCP_CLOSE: i32 = 7;
/// -EINPROGRESS: a non-blocking connect that is under way is still a connection.
const EINPROGRESS: i64 = -115;

/// Connection state by (tgid << 32 | fd). LRU so a process that dies without closing
/// cannot fill the table; user space ages its own copy independently.
#[map]
pub(crate) static CONNS: LruHashMap<u64, ConnState> = LruHashMap::with_max_entries(65536, 0);

/// Role learned from the TCP state machine, by `struct sock *`.
#[map]
static SOCK_ROLE: LruHashMap<u64, u8> = LruHashMap::with_max_entries(65536, 0);

/// Per-connection capture verdicts written by the daemon (key: conn_id).
#[map]
pub(crate) static VERDICTS: LruHashMap<u64, u8> = LruHashMap::with_max_entries(65536, 0);

/// Per-CPU counter behind conn_id; conn_id = counter << 12 | cpu, so ids are unique without
/// atomics across CPUs.
#[map]
static CONN_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct ConnState {
    pub conn_id: u64,
    pub sock: u64,
    pub tx_pos: u64,
    pub rx_pos: u64,
    /// Positions in the TLS plaintext streams (libssl uprobes, [`crate::tls`]).
    pub tls_tx_pos: u64,
    pub tls_rx_pos: u64,
    pub role: u8,
    pub protocol: u8,
    /// A ConnOpen event went out for it (accept without an address buffer defers it to the
    /// first data, when the socket is known to be inet).
    pub announced: u8,
    pub _pad: [u8; 5],
    pub local: Addr,
    pub peer: Addr,
}

/// Reserve a lifecycle event in the ring, fill the common part, let `fill` set the rest,
/// submit. A full ring is counted, never silent.
#[inline(always)]
pub(crate) fn emit_conn(kind: EventKind, id: u64, fd: i32, fill: impl FnOnce(&mut ConnEvent)) {
    let Some(mut entry) = EVENTS.reserve::<ConnEvent>(0) else {
        count(stat::CONN_LOST, 1);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: a reservation of size_of::<ConnEvent>(); every field is written before submit.
    unsafe {
        (*ev).kind = kind as u32;
        (*ev).tgid = (id >> 32) as u32;
        (*ev).tid = id as u32;
        (*ev).fd = fd;
        (*ev).conn_id = 0;
        (*ev).sock = 0;
        (*ev).ts_ns = bpf_ktime_get_ns();
        (*ev).tx_bytes = 0;
        (*ev).rx_bytes = 0;
        (*ev).ret = 0;
        (*ev).cgroup_id = bpf_get_current_cgroup_id();
        (*ev).role = role::UNKNOWN;
        (*ev).syscall = 0;
        (*ev).old_state = 0;
        (*ev).new_state = 0;
        (*ev).protocol = 0;
        (*ev)._pad = [0; 3];
        (*ev).local = NO_ADDR;
        (*ev).peer = NO_ADDR;
        task::process_comm(&raw mut (*ev).comm);
        fill(&mut *ev);
    }
    entry.submit(wakeup_flag());
    count(stat::CONN_EVENTS, 1);
}

/// The fields of a tracked connection on its lifecycle event.
#[inline(always)]
fn describe(ev: &mut ConnEvent, c: *const ConnState, sc: u8) {
    // SAFETY: `c` points to a map value or a local copy.
    unsafe {
        ev.conn_id = (*c).conn_id;
        ev.sock = (*c).sock;
        ev.role = (*c).role;
        ev.protocol = (*c).protocol;
        ev.local = (*c).local;
        ev.peer = (*c).peer;
    }
    ev.syscall = sc;
}

#[inline(always)]
fn new_conn_id() -> u64 {
    let cpu = unsafe { bpf_get_smp_processor_id() } as u64;
    match CONN_SEQ.get_ptr_mut(0) {
        // SAFETY: per-CPU slot.
        Some(p) => unsafe {
            *p += 1;
            (*p << 12) | (cpu & 0xfff)
        },
        None => 0,
    }
}

/// Local and peer address of a `struct sock *`, from `struct sock_common` (offsets from BTF),
/// written straight into a connection's map value.
#[inline(always)]
fn read_sock_addrs(sk: u64, c: *mut ConnState) {
    let o: Offsets = cfg!(offsets);
    let base = sk as *const u8;
    // SAFETY: `c` is a map value, this connection's own.
    let c = unsafe { &mut *c };
    // SAFETY: kernel pointer read through the probe helper (faults return Err → zero).
    unsafe {
        let family: u16 =
            bpf_probe_read_kernel(base.add(o.skc_family as usize).cast()).unwrap_or(0);
        let lport: u16 = bpf_probe_read_kernel(base.add(o.skc_num as usize).cast()).unwrap_or(0);
        let dport: u16 = bpf_probe_read_kernel(base.add(o.skc_dport as usize).cast()).unwrap_or(0);
        c.local = NO_ADDR;
        c.peer = NO_ADDR;
        c.local.family = family;
        c.local.port = lport;
        c.peer.family = family;
        c.peer.port = u16::from_be(dport);
        if family == AF_INET {
            c.local.addr[..4].copy_from_slice(
                &bpf_probe_read_kernel::<[u8; 4]>(base.add(o.skc_rcv_saddr as usize).cast())
                    .unwrap_or([0; 4]),
            );
            c.peer.addr[..4].copy_from_slice(
                &bpf_probe_read_kernel::<[u8; 4]>(base.add(o.skc_daddr as usize).cast())
                    .unwrap_or([0; 4]),
            );
        } else if family == AF_INET6 {
            c.local.addr = bpf_probe_read_kernel(base.add(o.skc_v6_rcv_saddr as usize).cast())
                .unwrap_or([0; 16]);
            c.peer.addr =
                bpf_probe_read_kernel(base.add(o.skc_v6_daddr as usize).cast()).unwrap_or([0; 16]);
        }
        if c.peer.port == 0 {
            // Unconnected (UDP) socket: no peer on the socket itself.
            c.peer.family = 0;
        }
    }
}

/// The connection of (tgid, fd) for a socket I/O: existing, or born now (a connection that
/// was open before capture started, or whose connect/accept we did not see).
#[inline(always)]
pub(crate) fn conn_for_io(id: u64, fd: i32, sk: u64, protocol: u8) -> Option<*mut ConnState> {
    let key = conn_key((id >> 32) as u32, fd);
    if let Some(c) = CONNS.get_ptr_mut(key) {
        // SAFETY: map value pointer.
        let known = unsafe { (*c).sock };
        if known == sk {
            return Some(c);
        }
        if known == 0 {
            // Born at connect/accept, now we know its socket and addresses.
            // SAFETY: map value pointer.
            unsafe {
                let peer = (*c).peer;
                read_sock_addrs(sk, c);
                if (*c).peer.family == 0 {
                    (*c).peer = peer; // an unconnected socket: keep what connect/accept said
                }
                (*c).sock = sk;
                (*c).protocol = protocol;
                if (*c).announced == 0 {
                    (*c).announced = 1;
                    announce_accepted(id, fd, c);
                }
            }
            return Some(c);
        }
        // The fd now names another socket (dup2 over it, or a close we missed): the old
        // connection is over. Its close event is implied by the new conn_id.
    }
    // SAFETY: map lookup by value.
    let role = unsafe { SOCK_ROLE.get(sk) }
        .copied()
        .unwrap_or(role::UNKNOWN);
    let state = ConnState {
        conn_id: new_conn_id(),
        sock: sk,
        tx_pos: 0,
        rx_pos: 0,
        tls_tx_pos: 0,
        tls_rx_pos: 0,
        role,
        protocol,
        announced: 1,
        _pad: [0; 5],
        local: NO_ADDR,
        peer: NO_ADDR,
    };
    if CONNS.insert(key, state, 0).is_err() {
        count(stat::CONN_TABLE_FULL, 1);
        return None;
    }
    let c = CONNS.get_ptr_mut(key)?;
    read_sock_addrs(sk, c);
    Some(c)
}

/// The deferred ConnOpen of a connection accepted without an address buffer, sent with its
/// first data, now that the socket is known to be inet and its addresses are read.
#[inline(always)]
fn announce_accepted(id: u64, fd: i32, c: *const ConnState) {
    emit_conn(EventKind::ConnOpen, id, fd, |ev| {
        describe(ev, c, syscall::ACCEPT4);
        ev.ret = fd as i64;
    });
}

/// Read a user `struct sockaddr_in`/`sockaddr_in6`; family 0 when unreadable or not inet.
#[inline(always)]
pub(crate) fn read_user_sockaddr(ptr: u64, out: &mut Addr) {
    *out = NO_ADDR;
    // sockaddr_in6: family u16, port be16, flowinfo u32, addr [16]; sockaddr_in: family,
    // port, addr [4].
    // SAFETY: user pointer read through the probe helper.
    let Ok(head) = (unsafe { bpf_probe_read_user(ptr as *const [u16; 2]) }) else {
        return;
    };
    let family = head[0];
    let off = match family {
        AF_INET => 4,
        AF_INET6 => 8,
        _ => return,
    };
    // SAFETY: as above; inet addresses at 4 (4 bytes) or 8 (16 bytes).
    let Ok(addr) = (unsafe { bpf_probe_read_user((ptr + off) as *const [u8; 16]) }) else {
        return;
    };
    out.family = family;
    out.port = u16::from_be(head[1]);
    if family == AF_INET {
        out.addr[..4].copy_from_slice(&addr[..4]);
    } else {
        out.addr = addr;
    }
}

/// connect/accept enter: remember the fd and the sockaddr pointer.
#[inline(always)]
fn enter_conn(ctx: &TracePointContext, sc: u8) -> u32 {
    let id = bpf_get_current_pid_tgid();
    if !traced(id) {
        return 0;
    }
    let inflight = Inflight {
        ts_enter: unsafe { bpf_ktime_get_ns() },
        sock: 0,
        buf: 0,
        count: 0,
        addr: arg(ctx, 1),
        fd: arg(ctx, 0) as i32,
        syscall: sc,
        skip: 0,
        protocol: 0,
        _pad: 0,
    };
    if INFLIGHT.insert(id, inflight, 0).is_err() {
        count(stat::INFLIGHT_FULL, 1);
    }
    0
}

#[tracepoint]
pub fn sonde_enter_connect(ctx: TracePointContext) -> u32 {
    if crate::floor_only() {
        return 0;
    }
    enter_conn(&ctx, syscall::CONNECT)
}

#[tracepoint]
pub fn sonde_enter_accept(ctx: TracePointContext) -> u32 {
    if crate::floor_only() {
        return 0;
    }
    enter_conn(&ctx, syscall::ACCEPT)
}

#[tracepoint]
pub fn sonde_enter_accept4(ctx: TracePointContext) -> u32 {
    if crate::floor_only() {
        return 0;
    }
    enter_conn(&ctx, syscall::ACCEPT4)
}

/// The address family of a user sockaddr; 0 when unreadable.
#[inline(always)]
fn user_family(ptr: u64) -> u16 {
    // SAFETY: user pointer read through the probe helper.
    unsafe { bpf_probe_read_user(ptr as *const u16) }.unwrap_or(0)
}

/// connect/accept exit: a connection is born on an fd (inet sockets only).
#[tracepoint]
pub fn sonde_exit_conn(ctx: TracePointContext) -> u32 {
    if crate::floor_only() {
        return 0;
    }
    let id = bpf_get_current_pid_tgid();
    let Some(p) = INFLIGHT.get_ptr(id) else {
        return 0;
    };
    // SAFETY: this thread's own entry, read before it is deleted.
    let (sc, addr, arg_fd) = unsafe { ((*p).syscall, (*p).addr, (*p).fd) };
    let _ = INFLIGHT.remove(id);
    let ret = exit_ret(&ctx);
    let is_connect = sc == syscall::CONNECT;
    if !is_connect && ret < 0 {
        return 0; // accept failed (EAGAIN on a non-blocking listener…): nothing was born
    }
    // connect's address is the peer (still valid at exit); accept's is filled at exit.
    let family = if addr != 0 { user_family(addr) } else { 0 };
    if addr != 0 && family != AF_INET && family != AF_INET6 {
        return 0; // AF_UNIX or another non-inet family
    }
    let fd = if is_connect { arg_fd } else { ret as i32 };
    let role = if is_connect {
        role::CLIENT
    } else {
        role::SERVER
    };
    // A connect that failed outright (refused, unreachable) is reported with its errno but
    // gets no connection state.
    if is_connect && ret != 0 && ret != EINPROGRESS {
        emit_conn(EventKind::ConnOpen, id, fd, |ev| {
            read_user_sockaddr(addr, &mut ev.peer);
            ev.ret = ret;
            ev.role = role;
            ev.syscall = sc;
        });
        return 0;
    }
    let key = conn_key((id >> 32) as u32, fd);
    let state = ConnState {
        conn_id: new_conn_id(),
        sock: 0,
        tx_pos: 0,
        rx_pos: 0,
        tls_tx_pos: 0,
        tls_rx_pos: 0,
        role,
        protocol: 0,
        // accept() without an address buffer could be a unix socket: announce the connection
        // only once it is known to be inet (its first data sets `sock`; see close).
        announced: (family != 0) as u8,
        _pad: [0; 5],
        local: NO_ADDR,
        peer: NO_ADDR,
    };
    if CONNS.insert(key, state, 0).is_err() {
        count(stat::CONN_TABLE_FULL, 1);
        return 0;
    }
    let Some(c) = CONNS.get_ptr_mut(key) else {
        return 0;
    };
    if family != 0 {
        // SAFETY: map value pointer; the peer goes straight into it (no Addr on this stack).
        unsafe { read_user_sockaddr(addr, &mut (*c).peer) };
        emit_conn(EventKind::ConnOpen, id, fd, |ev| {
            describe(ev, c, sc);
            ev.ret = ret;
        });
    }
    0
}

#[tracepoint]
pub fn sonde_enter_close(ctx: TracePointContext) -> u32 {
    if crate::floor_only() {
        return 0;
    }
    let id = bpf_get_current_pid_tgid();
    if !traced(id) {
        return 0;
    }
    let fd = arg(&ctx, 0) as i32;
    let key = conn_key((id >> 32) as u32, fd);
    let Some(c) = CONNS.get_ptr(key) else {
        return 0; // not a connection we know: a file, a pipe, a unix socket
    };
    // SAFETY: map value pointer; the event is built before the entry is deleted.
    let (conn_id, announced) = unsafe { ((*c).conn_id, (*c).announced) };
    let _ = VERDICTS.remove(conn_id);
    if announced != 0 {
        emit_conn(EventKind::ConnClose, id, fd, |ev| {
            describe(ev, c, syscall::CLOSE);
            // SAFETY: as above.
            unsafe {
                ev.tx_bytes = (*c).tx_pos;
                ev.rx_bytes = (*c).rx_pos;
            }
        });
    } // else: accepted without address and never moved inet data: maybe not inet
    let _ = CONNS.remove(key);
    0
}

/// TCP state changes: role of sockets by state transition, and lifecycle events.
#[tracepoint]
pub fn sonde_sock_state(ctx: TracePointContext) -> u32 {
    if crate::floor_only() {
        return 0;
    }
    let o: Offsets = cfg!(offsets);
    // SAFETY: offsets come from this kernel's tracefs format file.
    let (sk, old, new) = unsafe {
        (
            ctx.read_at::<u64>(o.state_skaddr as usize).unwrap_or(0),
            ctx.read_at::<i32>(o.state_oldstate as usize).unwrap_or(0),
            ctx.read_at::<i32>(o.state_newstate as usize).unwrap_or(0),
        )
    };
    if !crate::scope::sock_in_scope(sk) {
        return 0;
    }
    let role = if old == TCP_CLOSE && new == TCP_SYN_SENT {
        role::CLIENT
    } else if old == TCP_SYN_RECV && new == TCP_ESTABLISHED {
        role::SERVER
    } else {
        role::UNKNOWN
    };
    if role != role::UNKNOWN {
        let _ = SOCK_ROLE.insert(sk, role, 0);
    } else if new == TCP_CLOSE {
        let _ = SOCK_ROLE.remove(sk);
    }
    let id = bpf_get_current_pid_tgid();
    emit_conn(EventKind::SockState, id, -1, |ev| {
        ev.sock = sk;
        ev.role = role;
        ev.syscall = syscall::STATE;
        ev.old_state = old as u8;
        ev.new_state = new as u8;
        // SAFETY: offsets from the format file; fixed-size fields inside the record.
        unsafe {
            let family = ctx.read_at::<u16>(o.state_family as usize).unwrap_or(0);
            ev.protocol = ctx.read_at::<u16>(o.state_protocol as usize).unwrap_or(0) as u8;
            ev.local.family = family;
            ev.peer.family = family;
            ev.local.port = ctx.read_at::<u16>(o.state_sport as usize).unwrap_or(0);
            ev.peer.port = ctx.read_at::<u16>(o.state_dport as usize).unwrap_or(0);
            if family == AF_INET {
                let s: [u8; 4] = ctx.read_at(o.state_saddr as usize).unwrap_or([0; 4]);
                let d: [u8; 4] = ctx.read_at(o.state_daddr as usize).unwrap_or([0; 4]);
                ev.local.addr[..4].copy_from_slice(&s);
                ev.peer.addr[..4].copy_from_slice(&d);
            } else {
                ev.local.addr = ctx.read_at(o.state_saddr_v6 as usize).unwrap_or([0; 16]);
                ev.peer.addr = ctx.read_at(o.state_daddr_v6 as usize).unwrap_or([0; 16]);
            }
        }
    });
    0
}
