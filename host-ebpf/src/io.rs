//! Socket I/O: syscall entry saves the arguments, syscall exit emits one data event.
//!
//! One exit program per direction and syscall class (one buffer; iovecs or a msghdr; a vector
//! of mmsghdrs): each program's verifier walk covers only its own class's paths, which keeps
//! the processed instructions far below the limit on every kernel (they were 345k in one
//! program that served every class).
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        bpf_probe_read_user,
    },
    macros::{map, tracepoint},
    maps::Array,
    programs::TracePointContext,
};
use sonde_common::{
    DataEvent, EventKind, MAX_CAPTURE, MAX_MMSG, TASK_COMM_LEN, config_flags, data_flags,
    direction, stat, syscall, verdict,
};

use crate::{
    EVENTS, INFLIGHT, Inflight, arg, bounded,
    conn::{self, ConnState, VERDICTS},
    copy::{IovWalk, copy_iovecs, copy_one, iov_step},
    count, exit_ret, fetch_add, min, stdio, task, traced, wakeup_flag,
};

const IPPROTO_UDP: u8 = 17;

/// Where one data event is assembled before `bpf_ringbuf_output` copies exactly its size.
/// An `Array` indexed by CPU (resized to the CPU count at load): per-CPU maps cap values at
/// 32 KiB, and the payload area is twice the cap so the verifier can bound `off + len`
/// from two independent bounds.
#[map]
pub(crate) static SCRATCH: Array<Scratch> = Array::with_max_entries(1, 0);

#[repr(C)]
pub(crate) struct Scratch {
    pub(crate) ev: DataEvent,
    pub(crate) data: [u8; 2 * MAX_CAPTURE],
    /// The iovec walk's state, in map memory between iterations: see [`IovWalk`].
    walk: IovWalk,
}

/// The `bpf_loop` callback of the data iovec walk: one iovec into this CPU's [`Scratch`].
#[inline(never)]
extern "C" fn data_iov_step(i: u32, _ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: a helper without arguments; the callback runs on the exit program's CPU.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(scratch) = SCRATCH.get_ptr_mut(cpu) else {
        return 1;
    };
    // SAFETY: this CPU's scratch slot, the one the exit program is filling.
    unsafe { iov_step(&mut (*scratch).data, &raw mut (*scratch).walk, i) }
}

/// Syscall classes, one exit program each.
mod class {
    /// read/write/sendto/recvfrom: one buffer.
    pub const SINGLE: u8 = 0;
    /// readv/writev (iovecs), sendmsg/recvmsg (a msghdr holding iovecs).
    pub const VECTOR: u8 = 1;
    /// sendmmsg/recvmmsg: a vector of mmsghdrs; the first message is captured.
    pub const MULTI: u8 = 2;
}

// ---------------------------------------------------------------------------------------------
// Syscall entry: remember the arguments.

#[inline(always)]
fn enter_io(ctx: &TracePointContext, sc: u8) -> u32 {
    let id = bpf_get_current_pid_tgid();
    if !traced(id) {
        return 0;
    }
    let (buf, count, addr) = match sc {
        // (fd, buf, len, flags, addr, addrlen)
        syscall::SENDTO | syscall::RECVFROM => (arg(ctx, 1), arg(ctx, 2), arg(ctx, 4)),
        // (fd, msg, flags) / (fd, mmsg, vlen, flags)
        syscall::SENDMSG | syscall::RECVMSG => (arg(ctx, 1), 0, 0),
        // splice(fd_in, off_in, fd_out, off_out, len, flags): fd_out is the fd, fd_in in buf
        syscall::SPLICE => (arg(ctx, 0), 0, 0),
        // (fd, buf, count) / (fd, iov, iovcnt) / (fd, mmsg, vlen); sendfile(out, in, off, n)
        _ => (arg(ctx, 1), arg(ctx, 2), 0),
    };
    let fd = if sc == syscall::SPLICE {
        arg(ctx, 2)
    } else {
        arg(ctx, 0)
    };
    let inflight = Inflight {
        ts_enter: unsafe { bpf_ktime_get_ns() },
        sock: 0,
        buf,
        count,
        addr,
        fd: fd as i32,
        syscall: sc,
        skip: 0,
        protocol: 0,
        _pad: 0,
    };
    if INFLIGHT.insert(id, inflight, 0).is_err() {
        count_inflight_full();
    }
    // Inside an SSL call, this fd is the SSL object's socket (BIO): tie them here, where
    // the program is small, not in the exit programs (the same update there took 6.1's
    // sonde_exit_recvv past the instruction budget: BENCHMARKS.md, kernel matrix).
    crate::tls_calls::note_socket_io(id, fd as i32);
    0
}

#[inline(never)]
fn count_inflight_full() {
    count(stat::INFLIGHT_FULL, 1);
}

macro_rules! enter_prog {
    ($name:ident, $sc:expr) => {
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            if crate::floor_only() {
                return 0;
            }
            enter_io(&ctx, $sc)
        }
    };
}

enter_prog!(sonde_enter_read, syscall::READ);
enter_prog!(sonde_enter_write, syscall::WRITE);
enter_prog!(sonde_enter_readv, syscall::READV);
enter_prog!(sonde_enter_writev, syscall::WRITEV);
enter_prog!(sonde_enter_sendto, syscall::SENDTO);
enter_prog!(sonde_enter_recvfrom, syscall::RECVFROM);
enter_prog!(sonde_enter_sendmsg, syscall::SENDMSG);
enter_prog!(sonde_enter_recvmsg, syscall::RECVMSG);
enter_prog!(sonde_enter_sendmmsg, syscall::SENDMMSG);
enter_prog!(sonde_enter_recvmmsg, syscall::RECVMMSG);
enter_prog!(sonde_enter_sendfile, syscall::SENDFILE);
enter_prog!(sonde_enter_splice, syscall::SPLICE);

// ---------------------------------------------------------------------------------------------
// Inside sock_sendmsg/sock_recvmsg (Linux ≥ 6.3): learn that the fd is an inet socket.

#[inline(always)]
fn mark_socket(ctx: &TracePointContext, sk_off: u16, family_off: u16, proto_off: u16) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let Some(inflight) = INFLIGHT.get_ptr_mut(id) else {
        return 0;
    };
    // SAFETY: offsets come from this kernel's tracefs format files.
    let (sk, family, proto) = unsafe {
        (
            ctx.read_at::<u64>(sk_off as usize).unwrap_or(0),
            ctx.read_at::<u16>(family_off as usize).unwrap_or(0),
            ctx.read_at::<u16>(proto_off as usize).unwrap_or(0),
        )
    };
    // SAFETY: map value pointer, this thread's own entry.
    unsafe {
        if family == crate::AF_INET || family == crate::AF_INET6 {
            (*inflight).sock = sk;
            (*inflight).protocol = proto as u8;
        } else {
            (*inflight).skip = 1;
        }
    }
    0
}

#[tracepoint]
pub fn sonde_sock_send(ctx: TracePointContext) -> u32 {
    if crate::floor_only() {
        return 0;
    }
    let o: sonde_common::Offsets = cfg!(offsets);
    mark_socket(&ctx, o.send_len_sk, o.send_len_family, o.send_len_protocol)
}

#[tracepoint]
pub fn sonde_sock_recv(ctx: TracePointContext) -> u32 {
    if crate::floor_only() {
        return 0;
    }
    let o: sonde_common::Offsets = cfg!(offsets);
    mark_socket(&ctx, o.recv_len_sk, o.recv_len_family, o.recv_len_protocol)
}

// ---------------------------------------------------------------------------------------------
// Syscall exit: emit the data event.

/// The in-flight entry stays in the map until the exit is handled (its fields are read in
/// place, not copied to this stack), then goes.
#[inline(always)]
fn exit_io(ctx: &TracePointContext, dir: u8, class: u8) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let Some(inf) = INFLIGHT.get_ptr(id) else {
        return 0;
    };
    let ret = exit_ret(ctx);
    if ret > 0 {
        on_io(inf, id, ret as u64, dir, class);
    }
    let _ = INFLIGHT.remove(id);
    0
}

#[inline(always)]
fn on_io(inf: *const Inflight, id: u64, ret: u64, dir: u8, class: u8) {
    // SAFETY: this thread's own in-flight entry.
    let (fd, mut sk, mut protocol, mut other_socket) =
        unsafe { ((*inf).fd, (*inf).sock, (*inf).protocol, (*inf).skip != 0) };
    if sk == 0 && !other_socket && cfg!(flags) & config_flags::SOCK_FROM_FD != 0 {
        let s = task::sock_of_fd(fd);
        sk = s.sk;
        protocol = s.protocol;
        other_socket = s.other_socket;
    }
    if sk == 0 {
        // Not an inet socket (a file, pipe, tty or unix socket): only stdout/stderr matter.
        if dir == direction::EGRESS && class != class::MULTI && stdio::wanted(inf, id) {
            stdio::emit_log(inf, id, ret, other_socket, class == class::SINGLE);
        }
        return;
    }
    let _ = emit_data(inf, id, ret, dir, class, sk, protocol);
}

/// What to copy for one syscall: the iovecs (or one buffer), the bytes moved, a peer address.
struct IoPlan {
    /// Address of an iovec array, or of the buffer itself for [`class::SINGLE`].
    iov: u64,
    iovcnt: u64,
    /// Bytes the syscall moved (all messages for *mmsg).
    total: u64,
    /// Bytes of the first message (what we may copy).
    first: u64,
    /// User sockaddr to read the peer from, 0 if none.
    addr: u64,
}

/// `struct user_msghdr` field offsets (x86-64/arm64 ABI): name, namelen, iov, iovlen.
const MSG_NAME: u64 = 0;
const MSG_NAMELEN: u64 = 8;
const MSG_IOV: u64 = 16;
const MSG_IOVLEN: u64 = 24;
/// `struct mmsghdr`: a msghdr (56 bytes) and the kernel-written `msg_len`.
const MMSG_SIZE: u64 = 64;
const MMSG_LEN: u64 = 56;

#[inline(always)]
fn user_u64(addr: u64) -> Option<u64> {
    // SAFETY: user pointer read through the probe helper (faults return Err).
    unsafe { bpf_probe_read_user(addr as *const u64) }.ok()
}

/// The iovecs and peer address of a msghdr at `msg`.
#[inline(always)]
fn plan_msghdr(plan: &mut IoPlan, msg: u64) -> Option<()> {
    plan.iov = user_u64(msg + MSG_IOV)?;
    plan.iovcnt = user_u64(msg + MSG_IOVLEN)?;
    let namelen = user_u64(msg + MSG_NAMELEN)? as u32;
    plan.addr = if namelen > 0 {
        user_u64(msg + MSG_NAME)?
    } else {
        0
    };
    Some(())
}

#[inline(always)]
fn plan_io(inf: *const Inflight, ret: u64, class: u8, flags: &mut u8) -> Option<IoPlan> {
    // SAFETY: this thread's own in-flight entry.
    let (sc, buf, cnt, addr) = unsafe { ((*inf).syscall, (*inf).buf, (*inf).count, (*inf).addr) };
    let mut plan = IoPlan {
        iov: buf,
        iovcnt: cnt,
        total: ret,
        first: ret,
        addr: 0,
    };
    if class == class::SINGLE {
        if sc == syscall::SENDTO || sc == syscall::RECVFROM {
            plan.addr = addr;
        }
    } else if class == class::VECTOR {
        if sc == syscall::SENDMSG || sc == syscall::RECVMSG {
            plan_msghdr(&mut plan, buf)?;
        }
    } else {
        // ret = messages moved; capture the first, sum the lengths of up to MAX_MMSG.
        plan_msghdr(&mut plan, buf)?;
        let len0 = |i: u64| -> u64 {
            // SAFETY: as in user_u64; `msg_len` is the kernel-written field after the header.
            unsafe { bpf_probe_read_user((buf + i * MMSG_SIZE + MMSG_LEN) as *const u32) }
                .unwrap_or(0) as u64
        };
        plan.first = len0(0);
        let mut total = plan.first;
        for i in 1..MAX_MMSG as u64 {
            if i >= ret {
                break;
            }
            total += len0(i);
        }
        plan.total = total;
        if ret > 1 {
            *flags |= data_flags::MULTI_MSG;
        }
    }
    Some(plan)
}

#[inline(always)]
fn emit_data(
    inf: *const Inflight,
    id: u64,
    ret: u64,
    dir: u8,
    class: u8,
    sk: u64,
    protocol: u8,
) -> Option<()> {
    let mut flags = 0u8;
    let plan = plan_io(inf, ret, class, &mut flags)?;
    if plan.total == 0 {
        return None;
    }
    // SAFETY: this thread's own in-flight entry.
    let (fd, sc, ts_enter) = unsafe { ((*inf).fd, (*inf).syscall, (*inf).ts_enter) };
    let c = conn::conn_for_io(id, fd, sk, protocol)?;
    let (conn_id, pos) = advance(c, dir, plan.total);
    // Any verdict but CAPTURE (which is no entry) stops the copy here: SKIP_PAYLOAD, and
    // SKIP_CIPHERTEXT (a TLS connection's records; its plaintext goes on, tls.rs).
    // SAFETY: map lookup by value.
    if unsafe { VERDICTS.get(conn_id) }.is_some_and(|v| *v != verdict::CAPTURE) {
        count(stat::BYTES_SKIPPED_BY_VERDICT, plan.total);
        return Some(());
    }

    let cpu = unsafe { bpf_get_smp_processor_id() };
    let scratch = SCRATCH.get_ptr_mut(cpu)?;
    // SAFETY: this CPU's scratch slot; programs do not migrate while running.
    let scratch = unsafe { &mut *scratch };
    let cap = cfg!(capture_bytes) as u64;
    let want = min(min(plan.first, cap), MAX_CAPTURE as u64) as u32;
    let (copied, failed) = if class == class::SINGLE {
        copy_one(&mut scratch.data, plan.iov, want)
    } else if class == class::MULTI {
        // sendmmsg/recvmmsg carry datagrams (DNS, QUIC, syslog), one buffer each in practice:
        // the first iovec of the first message. A second iovec walk after the message loop
        // doubled this program's verification for no real traffic.
        first_iovec(&mut scratch.data, plan.iov, plan.iovcnt, want)
    } else {
        copy_iovecs(
            &mut scratch.data,
            &mut scratch.walk,
            plan.iov,
            plan.iovcnt,
            want,
            data_iov_step,
        )
    };
    if failed {
        flags |= data_flags::READ_FAILED;
        count(stat::READ_FAILED, 1);
    }
    if protocol == IPPROTO_UDP {
        flags |= data_flags::DATAGRAM;
    }
    let ev = &mut scratch.ev;
    fill_data_event(
        ev, id, fd, c, sc, dir, ts_enter, pos, plan.total, copied, flags,
    );
    if plan.addr != 0 {
        let mut a = crate::NO_ADDR;
        conn::read_user_sockaddr(plan.addr, &mut a);
        if a.family != 0 {
            ev.peer = a;
            ev.flags |= data_flags::PEER_FROM_ARGS;
        }
    }

    count(stat::BYTES_TRUNCATED, plan.total - copied as u64);
    let size = core::mem::size_of::<DataEvent>()
        + bounded::<{ MAX_CAPTURE as u64 * 2 - 1 }>(copied as u64) as usize;
    // SAFETY: header + copied ≤ size_of::<Scratch>() by the mask above.
    let bytes: &[u8] =
        unsafe { core::slice::from_raw_parts((scratch as *const Scratch).cast::<u8>(), size) };
    if EVENTS.output::<[u8]>(bytes, wakeup_flag()).is_ok() {
        count(stat::DATA_EVENTS, 1);
    } else {
        count(stat::DATA_LOST, 1);
    }
    Some(())
}

/// Moves the connection's position in `dir` by `n`; returns (conn_id, position before).
#[inline(always)]
fn advance(c: *mut ConnState, dir: u8, n: u64) -> (u64, u64) {
    // SAFETY: map value; the position counters are shared by all threads of the process.
    unsafe {
        let pos_ptr = if dir == direction::EGRESS {
            &raw mut (*c).tx_pos
        } else {
            &raw mut (*c).rx_pos
        };
        ((*c).conn_id, fetch_add(pos_ptr, n))
    }
}

/// Every header field of a data event (the payload is already in place).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn fill_data_event(
    ev: &mut DataEvent,
    id: u64,
    fd: i32,
    c: *const ConnState,
    sc: u8,
    dir: u8,
    ts_enter: u64,
    pos: u64,
    len: u64,
    captured: u32,
    flags: u8,
) {
    ev.kind = EventKind::Data as u32;
    ev.tgid = (id >> 32) as u32;
    ev.tid = id as u32;
    ev.fd = fd;
    ev.ts_enter_ns = ts_enter;
    ev.ts_exit_ns = unsafe { bpf_ktime_get_ns() };
    ev.pos = pos;
    ev.len = len;
    ev.captured = captured;
    ev.direction = dir;
    ev.syscall = sc;
    ev.flags = flags;
    // SAFETY: map value pointer.
    unsafe {
        ev.conn_id = (*c).conn_id;
        ev.sock = (*c).sock;
        ev.role = (*c).role;
        ev.local = (*c).local;
        ev.peer = (*c).peer;
        task::process_comm(&raw mut ev.comm);
    }
    ev.thread = bpf_get_current_comm().unwrap_or([0u8; TASK_COMM_LEN]);
}

/// The first iovec's bytes (up to `want`).
#[inline(always)]
fn first_iovec<const N: usize>(dst: &mut [u8; N], iov: u64, iovcnt: u64, want: u32) -> (u32, bool) {
    if iovcnt == 0 {
        return (0, false);
    }
    let (Some(base), Some(len)) = (user_u64(iov), user_u64(iov + 8)) else {
        return (0, true);
    };
    copy_one(dst, base, min(len, want as u64) as u32)
}

macro_rules! exit_prog {
    ($name:ident, $dir:expr, $class:expr) => {
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            if crate::floor_only() {
                return 0;
            }
            exit_io(&ctx, $dir, $class)
        }
    };
}

exit_prog!(sonde_exit_send, direction::EGRESS, class::SINGLE);
exit_prog!(sonde_exit_sendv, direction::EGRESS, class::VECTOR);
exit_prog!(sonde_exit_sendmm, direction::EGRESS, class::MULTI);
exit_prog!(sonde_exit_recv, direction::INGRESS, class::SINGLE);
exit_prog!(sonde_exit_recvv, direction::INGRESS, class::VECTOR);
exit_prog!(sonde_exit_recvmm, direction::INGRESS, class::MULTI);

// ---------------------------------------------------------------------------------------------
// sendfile/splice: bytes that never pass through user memory.

/// sendfile (out_fd a socket: egress) or splice (fd_out a socket: egress; fd_in a socket:
/// ingress). A payload-less event moves the stream position by the bytes moved, which user
/// space marks as a gap of that length, so parsers stay in step with the stream (nginx's
/// `sendfile on` answers with the head through writev and the body through sendfile).
#[tracepoint]
pub fn sonde_exit_splice(ctx: TracePointContext) -> u32 {
    if crate::floor_only() {
        return 0;
    }
    if cfg!(flags) & config_flags::TEST_REJECT_SPLICE != 0 {
        // SAFETY: none: a deliberate wild read, for the verifier to reject (tests only).
        return unsafe { core::ptr::read_volatile(16 as *const u32) };
    }
    let id = bpf_get_current_pid_tgid();
    let Some(inf) = INFLIGHT.get_ptr(id) else {
        return 0;
    };
    let ret = exit_ret(&ctx);
    if ret > 0 {
        on_splice(inf, id, ret as u64);
    }
    let _ = INFLIGHT.remove(id);
    0
}

#[inline(always)]
fn on_splice(inf: *const Inflight, id: u64, ret: u64) {
    // SAFETY: this thread's own in-flight entry.
    let (out_fd, in_fd, sc, ts_enter) = unsafe {
        (
            (*inf).fd,
            (*inf).buf as i32,
            (*inf).syscall,
            (*inf).ts_enter,
        )
    };
    let mut fd = out_fd;
    let mut dir = direction::EGRESS;
    let mut s = task::sock_of_fd(out_fd);
    if s.sk == 0 && sc == syscall::SPLICE {
        fd = in_fd;
        dir = direction::INGRESS;
        s = task::sock_of_fd(in_fd);
    }
    if s.sk == 0 {
        return;
    }
    let Some(c) = conn::conn_for_io(id, fd, s.sk, s.protocol) else {
        return;
    };
    let (_, pos) = advance(c, dir, ret);
    count(stat::BYTES_SPLICED, ret);
    let Some(mut entry) = EVENTS.reserve::<DataEvent>(0) else {
        count(stat::DATA_LOST, 1);
        return;
    };
    // SAFETY: a reservation of size_of::<DataEvent>(); every field is written below.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    fill_data_event(
        ev,
        id,
        fd,
        c,
        sc,
        dir,
        ts_enter,
        pos,
        ret,
        0,
        data_flags::NO_PAYLOAD,
    );
    entry.submit(wakeup_flag());
    count(stat::DATA_EVENTS, 1);
}
