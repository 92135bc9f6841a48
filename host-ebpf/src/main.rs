//! Sonde's kernel side: socket payload capture from syscall tracepoints.
//!
//! How one socket read/write is followed (no kprobes on this kernel, tracepoints only):
//! 1. `sys_enter_<io>` saves the syscall's arguments in `INFLIGHT`, keyed by thread.
//! 2. `sock:sock_send_length` / `sock:sock_recv_length` fire inside sock_sendmsg/recvmsg in the
//!    same thread: they prove the fd is an inet socket and give its `struct sock *`.
//! 3. `sys_exit_<io>` with a positive return value: look up (or create) the connection of
//!    (tgid, fd), advance its per-direction byte position atomically, copy up to the cap of
//!    payload from user memory and emit one [`DataEvent`] into the `EVENTS` ring buffer.
//! A syscall on a file or pipe never sees step 2 and is dropped at step 3 without output,
//! unless it is a write/writev to fd 1 or 2: that is a process's stdout/stderr, emitted as a
//! [`LogEvent`] (`capture_stdio`) for log-template mining.
//!
//! connect/accept/close give connection lifecycle events; `sock:inet_sock_set_state` gives TCP
//! state changes and the role (client/server) of sockets we have not seen connect or accept.
//! Every drop is counted in `STATS` (per CPU).
#![no_std]
#![no_main]
// The BPF target has no `AtomicU64::fetch_add`, and LLVM's BPF backend lowers `atomicrmw add`
// to the non-fetching XADD even when the result is used; so the fetch-add is written in asm.
#![feature(asm_experimental_arch)]

mod net;

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_probe_read_user,
        generated::bpf_probe_read_user as raw_probe_read_user,
    },
    macros::{map, tracepoint},
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use sonde_common::{
    Addr, Config, ConnEvent, DataEvent, EventKind, LogEvent, MAX_CAPTURE, MAX_IOV, MAX_MMSG,
    MAX_STDIO, Offsets, TASK_COMM_LEN, config_flags, data_flags, direction, log_flags, role, stat,
    syscall, verdict,
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_UDP: u8 = 17;
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;
const TCP_CLOSE: i32 = 7;
/// Syscall tracepoint records: args start at 16, 8 bytes each; the exit's `ret` is at 16.
const ARG0: usize = 16;
const EXIT_RET: usize = 16;
/// -EINPROGRESS: a non-blocking connect that is under way is still a connection.
const EINPROGRESS: i64 = -115;

/// Written by user space at load time (aya `set_global`); read-only for the verifier.
#[unsafe(no_mangle)]
static CONFIG: Config = Config::DEFAULT;

/// All events to user space. Resized at load time (`--ring-bytes`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

/// Arguments of socket-I/O syscalls in progress, by thread (pid_tgid). LRU: a thread killed
/// inside a syscall never reaches its exit, and its entry must not stay forever.
#[map]
static INFLIGHT: LruHashMap<u64, Inflight> = LruHashMap::with_max_entries(16384, 0);

/// Connection state by (tgid << 32 | fd). LRU so a process that dies without closing
/// cannot fill the table; user space ages its own copy independently.
#[map]
static CONNS: LruHashMap<u64, ConnState> = LruHashMap::with_max_entries(65536, 0);

/// Role learned from the TCP state machine, by `struct sock *`.
#[map]
static SOCK_ROLE: LruHashMap<u64, u8> = LruHashMap::with_max_entries(65536, 0);

/// Per-connection capture verdicts written by the daemon (key: conn_id).
#[map]
static VERDICTS: LruHashMap<u64, u8> = LruHashMap::with_max_entries(65536, 0);

/// Per-CPU counter behind conn_id; conn_id = counter << 12 | cpu, so ids are unique without
/// atomics across CPUs.
#[map]
static CONN_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Where one data event is assembled before `bpf_ringbuf_output` copies exactly its size.
/// An `Array` indexed by CPU (resized to the CPU count at load): per-CPU maps cap values at
/// 32 KiB, and the payload area is twice the cap so the verifier can bound `off + len`
/// from two independent bounds.
#[map]
static SCRATCH: Array<Scratch> = Array::with_max_entries(1, 0);

#[repr(C)]
struct Scratch {
    ev: DataEvent,
    data: [u8; 2 * MAX_CAPTURE],
}

/// Where one stdout/stderr log event is assembled: small enough for a per-CPU map. The
/// payload area is twice the cap for the same verifier reason as [`Scratch`].
#[map]
static LOG_SCRATCH: PerCpuArray<LogScratch> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
struct LogScratch {
    ev: LogEvent,
    data: [u8; 2 * MAX_STDIO],
}

/// Per-CPU rate limit of log events: chunks emitted in the current one-second window.
#[map]
static LOG_BUDGET: PerCpuArray<LogBudget> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
struct LogBudget {
    window_start_ns: u64,
    used: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Inflight {
    ts_enter: u64,
    /// `struct sock *` from sock_*_length; 0 until then (= not a socket yet).
    sock: u64,
    /// buffer, iovec array, msghdr or mmsghdr pointer, by syscall.
    buf: u64,
    /// length, iovcnt or vlen, by syscall.
    count: u64,
    /// sockaddr pointer for sendto/recvfrom.
    addr: u64,
    fd: i32,
    syscall: u8,
    /// 1 when sock_*_length saw a non-inet socket (unix, netlink…): ignore.
    skip: u8,
    protocol: u8,
    _pad: u8,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct ConnState {
    conn_id: u64,
    sock: u64,
    tx_pos: u64,
    rx_pos: u64,
    role: u8,
    protocol: u8,
    /// A ConnOpen event went out for it (accept without an address buffer defers it to the
    /// first data, when the socket is known to be inet).
    announced: u8,
    _pad: [u8; 5],
    local: Addr,
    peer: Addr,
}

/// `struct user_msghdr` as laid out by the x86-64/arm64 ABI.
#[repr(C)]
#[derive(Clone, Copy)]
struct UserMsghdr {
    name: u64,
    namelen: u32,
    _pad: u32,
    iov: u64,
    iovlen: u64,
    control: u64,
    controllen: u64,
    flags: u32,
    _pad2: u32,
}

/// `struct mmsghdr`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Mmsghdr {
    hdr: UserMsghdr,
    len: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Iovec {
    base: u64,
    len: u64,
}

macro_rules! cfg {
    ($($field:ident).+) => {
        // SAFETY: CONFIG is a plain static; volatile so the value written at load time is read,
        // not the compile-time default.
        unsafe { core::ptr::read_volatile(&raw const CONFIG.$($field).+) }
    };
}

#[inline(always)]
fn count(slot: u32, n: u64) {
    if let Some(p) = STATS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, this program cannot be preempted by itself on this CPU.
        unsafe { *p += n };
    }
}

const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

/// Batch wakeups: signal the daemon only when `wakeup_bytes` are waiting (it also polls on a
/// timer), so a busy node does not pay an epoll wakeup and a context switch per syscall.
#[inline(always)]
fn wakeup_flag() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= cfg!(wakeup_bytes) as u64 {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

#[inline(always)]
fn traced(pid_tgid: u64) -> bool {
    (pid_tgid >> 32) as u32 != cfg!(self_tgid)
}

#[inline(always)]
fn conn_key(tgid: u32, fd: i32) -> u64 {
    ((tgid as u64) << 32) | fd as u32 as u64
}

#[inline(always)]
fn arg(ctx: &TracePointContext, n: usize) -> u64 {
    // SAFETY: syscall tracepoint records always hold six 8-byte arguments.
    unsafe { ctx.read_at::<u64>(ARG0 + 8 * n) }.unwrap_or(0)
}

#[inline(always)]
fn exit_ret(ctx: &TracePointContext) -> i64 {
    // SAFETY: sys_exit records hold `long ret` at 16.
    unsafe { ctx.read_at::<i64>(EXIT_RET) }.unwrap_or(-1)
}

// ---------------------------------------------------------------------------------------------
// Step 1: syscall entry, remember the arguments.

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
        // (fd, buf, count) / (fd, iov, iovcnt) / (fd, mmsg, vlen)
        _ => (arg(ctx, 1), arg(ctx, 2), 0),
    };
    let inflight = Inflight {
        ts_enter: unsafe { bpf_ktime_get_ns() },
        sock: 0,
        buf,
        count,
        addr,
        fd: arg(ctx, 0) as i32,
        syscall: sc,
        skip: 0,
        protocol: 0,
        _pad: 0,
    };
    if INFLIGHT.insert(id, inflight, 0).is_err() {
        count_stat_inflight_full();
    }
    0
}

#[inline(never)]
fn count_stat_inflight_full() {
    count(stat::INFLIGHT_FULL, 1);
}

macro_rules! enter_prog {
    ($name:ident, $sc:expr) => {
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
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

// ---------------------------------------------------------------------------------------------
// Step 2: inside sock_sendmsg/sock_recvmsg, learn that the fd is an inet socket.

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
        if family == AF_INET || family == AF_INET6 {
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
    let o: Offsets = cfg!(offsets);
    mark_socket(&ctx, o.send_len_sk, o.send_len_family, o.send_len_protocol)
}

#[tracepoint]
pub fn sonde_sock_recv(ctx: TracePointContext) -> u32 {
    let o: Offsets = cfg!(offsets);
    mark_socket(&ctx, o.recv_len_sk, o.recv_len_family, o.recv_len_protocol)
}

// ---------------------------------------------------------------------------------------------
// Step 3: syscall exit, emit the data event.

#[inline(always)]
fn exit_io(ctx: &TracePointContext, dir: u8) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let Some(p) = INFLIGHT.get_ptr(id) else {
        return 0;
    };
    // SAFETY: copy out of this thread's own entry before deleting it.
    let inflight = unsafe { *p };
    let _ = INFLIGHT.remove(id);
    let ret = exit_ret(ctx);
    if ret <= 0 {
        return 0;
    }
    if inflight.sock == 0 {
        // Not an inet socket (a file, pipe, tty or unix socket): only stdout/stderr matter.
        if dir == direction::EGRESS && stdio_wanted(&inflight, id) {
            emit_log(&inflight, id, ret as u64);
        }
        return 0;
    }
    if inflight.skip != 0 {
        return 0; // not an inet socket
    }
    let _ = emit_data(&inflight, id, ret as u64, dir);
    0
}

/// A write/writev to fd 1 or 2, stdout/stderr capture on, not the daemon itself.
#[inline(always)]
fn stdio_wanted(inf: &Inflight, id: u64) -> bool {
    (inf.fd == 1 || inf.fd == 2)
        && (inf.syscall == syscall::WRITE || inf.syscall == syscall::WRITEV)
        && cfg!(flags) & config_flags::CAPTURE_STDIO != 0
        && (id >> 32) as u32 != cfg!(daemon_tgid)
}

/// true while this CPU's window has room for one more log event (and takes it).
#[inline(always)]
fn log_budget_take() -> bool {
    let max = cfg!(stdio_per_sec) as u64;
    if max == 0 {
        return true;
    }
    let Some(b) = LOG_BUDGET.get_ptr_mut(0) else {
        return true;
    };
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: this CPU's slot; a program is not preempted by itself on its CPU.
    unsafe {
        if now.wrapping_sub((*b).window_start_ns) >= 1_000_000_000 {
            (*b).window_start_ns = now;
            (*b).used = 0;
        }
        if (*b).used >= max {
            return false;
        }
        (*b).used += 1;
    }
    true
}

/// One stdout/stderr write: header + the first `stdio_bytes` of the payload, copied into the
/// ring at its real size. Every drop is counted.
#[inline(always)]
fn emit_log(inf: &Inflight, id: u64, ret: u64) {
    if !log_budget_take() {
        count(stat::LOG_RATE_LIMITED, 1);
        return;
    }
    let Some(scratch) = LOG_SCRATCH.get_ptr_mut(0) else {
        count(stat::LOG_LOST, 1);
        return;
    };
    // SAFETY: this CPU's slot of a per-CPU map; programs do not migrate while running.
    let scratch = unsafe { &mut *scratch };
    let cap = cfg!(stdio_bytes) as u64;
    let want = min(min(ret, cap), MAX_STDIO as u64) as u32;
    let (copied, failed) = if inf.syscall == syscall::WRITE {
        copy_one(&mut scratch.data, inf.buf, want)
    } else {
        copy_iovecs(&mut scratch.data, inf.buf, inf.count, want)
    };
    let ev = &mut scratch.ev;
    ev.kind = EventKind::Log as u32;
    ev.tgid = (id >> 32) as u32;
    ev.tid = id as u32;
    ev.fd = inf.fd;
    ev.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    ev.len = ret;
    ev.captured = copied;
    ev.syscall = inf.syscall;
    ev.flags = 0;
    if failed {
        ev.flags |= log_flags::READ_FAILED;
        count(stat::LOG_READ_FAILED, 1);
    }
    if inf.skip != 0 {
        ev.flags |= log_flags::UNIX_SOCKET;
    }
    ev._pad = [0; 2];
    ev.comm = bpf_get_current_comm().unwrap_or([0u8; TASK_COMM_LEN]);
    count(stat::LOG_BYTES_TRUNCATED, ret - copied as u64);
    let size = core::mem::size_of::<LogEvent>() + (copied as usize & (MAX_STDIO * 2 - 1));
    // SAFETY: header + copied ≤ size_of::<LogScratch>() by the mask above.
    let bytes: &[u8] =
        unsafe { core::slice::from_raw_parts((scratch as *const LogScratch).cast::<u8>(), size) };
    if EVENTS.output::<[u8]>(bytes, wakeup_flag()).is_ok() {
        count(stat::LOG_EVENTS, 1);
    } else {
        count(stat::LOG_LOST, 1);
    }
}

/// What to copy for one syscall: the iovecs (or one buffer), the bytes moved, a peer address.
struct IoPlan {
    /// Address of an iovec array, or of the buffer itself when `single`.
    iov: u64,
    iovcnt: u64,
    single: bool,
    /// Bytes the syscall moved (all messages for *mmsg).
    total: u64,
    /// Bytes of the first message (what we may copy).
    first: u64,
    /// User sockaddr to read the peer from, 0 if none.
    addr: u64,
    flags: u8,
}

#[inline(always)]
fn plan_io(inf: &Inflight, ret: u64) -> Option<IoPlan> {
    let mut plan = IoPlan {
        iov: inf.buf,
        iovcnt: inf.count,
        single: false,
        total: ret,
        first: ret,
        addr: 0,
        flags: 0,
    };
    match inf.syscall {
        syscall::READ | syscall::WRITE => plan.single = true,
        syscall::SENDTO | syscall::RECVFROM => {
            plan.single = true;
            plan.addr = inf.addr;
        }
        syscall::READV | syscall::WRITEV => {}
        syscall::SENDMSG | syscall::RECVMSG => {
            // SAFETY: user pointer read through the probe helper (faults return Err).
            let m: UserMsghdr =
                unsafe { bpf_probe_read_user(inf.buf as *const UserMsghdr) }.ok()?;
            plan.iov = m.iov;
            plan.iovcnt = m.iovlen;
            plan.addr = if m.namelen > 0 { m.name } else { 0 };
        }
        syscall::SENDMMSG | syscall::RECVMMSG => {
            // ret = messages moved; capture the first, sum the lengths of up to MAX_MMSG.
            let vec = inf.buf as *const Mmsghdr;
            // SAFETY: as above.
            let m0: Mmsghdr = unsafe { bpf_probe_read_user(vec) }.ok()?;
            plan.iov = m0.hdr.iov;
            plan.iovcnt = m0.hdr.iovlen;
            plan.addr = if m0.hdr.namelen > 0 { m0.hdr.name } else { 0 };
            plan.first = m0.len as u64;
            let mut total = m0.len as u64;
            for i in 1..MAX_MMSG {
                if i as u64 >= ret {
                    break;
                }
                // SAFETY: as above; `len` is the kernel-written field after the header.
                let len: u32 =
                    unsafe { bpf_probe_read_user(&raw const (*vec.add(i as usize)).len) }
                        .unwrap_or(0);
                total += len as u64;
            }
            plan.total = total;
            if ret > 1 {
                plan.flags |= data_flags::MULTI_MSG;
            }
        }
        _ => return None,
    }
    Some(plan)
}

#[inline(always)]
fn emit_data(inf: &Inflight, id: u64, ret: u64, dir: u8) -> Option<()> {
    let plan = plan_io(inf, ret)?;
    if plan.total == 0 {
        return None;
    }
    let tgid = (id >> 32) as u32;
    let conn = conn_for_io(id, inf.fd, inf.sock, inf.protocol)?;
    // SAFETY: map value; the position counters are shared by all threads of the process.
    let (conn_id, pos, c) = unsafe {
        let pos_ptr = if dir == direction::EGRESS {
            &raw mut (*conn).tx_pos
        } else {
            &raw mut (*conn).rx_pos
        };
        let pos = fetch_add(pos_ptr, plan.total);
        ((*conn).conn_id, pos, *conn)
    };
    // SAFETY: map lookup by value.
    if unsafe { VERDICTS.get(conn_id) }.copied() == Some(verdict::SKIP_PAYLOAD) {
        count(stat::BYTES_SKIPPED_BY_VERDICT, plan.total);
        return Some(());
    }

    let cpu = unsafe { bpf_get_smp_processor_id() };
    let scratch = SCRATCH.get_ptr_mut(cpu)?;
    // SAFETY: this CPU's scratch slot; programs do not migrate while running.
    let scratch = unsafe { &mut *scratch };
    let cap = cfg!(capture_bytes) as u64;
    let want = min(min(plan.first, cap), MAX_CAPTURE as u64) as u32;
    let (copied, failed) = if plan.single {
        copy_one(&mut scratch.data, plan.iov, want)
    } else {
        copy_iovecs(&mut scratch.data, plan.iov, plan.iovcnt, want)
    };

    let ev = &mut scratch.ev;
    ev.kind = EventKind::Data as u32;
    ev.tgid = tgid;
    ev.tid = id as u32;
    ev.fd = inf.fd;
    ev.conn_id = conn_id;
    ev.sock = inf.sock;
    ev.ts_enter_ns = inf.ts_enter;
    ev.ts_exit_ns = unsafe { bpf_ktime_get_ns() };
    ev.pos = pos;
    ev.len = plan.total;
    ev.captured = copied;
    ev.direction = dir;
    ev.role = c.role;
    ev.syscall = inf.syscall;
    ev.flags = plan.flags;
    if failed {
        ev.flags |= data_flags::READ_FAILED;
        count(stat::READ_FAILED, 1);
    }
    if inf.protocol == IPPROTO_UDP {
        ev.flags |= data_flags::DATAGRAM;
    }
    ev.local = c.local;
    ev.peer = c.peer;
    if plan.addr != 0 {
        let a = read_user_sockaddr(plan.addr);
        if a.family != 0 {
            ev.peer = a;
            ev.flags |= data_flags::PEER_FROM_ARGS;
        }
    }
    ev.comm = bpf_get_current_comm().unwrap_or([0u8; TASK_COMM_LEN]);

    count(stat::BYTES_TRUNCATED, plan.total - copied as u64);
    let size = core::mem::size_of::<DataEvent>() + (copied as usize & (MAX_CAPTURE * 2 - 1));
    let bytes: &[u8] =
        unsafe { core::slice::from_raw_parts((scratch as *const Scratch).cast::<u8>(), size) };
    if EVENTS.output::<[u8]>(bytes, wakeup_flag()).is_ok() {
        count(stat::DATA_EVENTS, 1);
    } else {
        count(stat::DATA_LOST, 1);
    }
    Some(())
}

/// `*ptr += v`, atomically, returning the old value (BPF_ATOMIC | BPF_ADD | BPF_FETCH).
///
/// # Safety
/// `ptr` must point into a map value.
#[inline(always)]
unsafe fn fetch_add(ptr: *mut u64, v: u64) -> u64 {
    let mut val = v;
    // SAFETY: caller guarantees ptr; the instruction is a single atomic read-modify-write.
    unsafe {
        core::arch::asm!(
            "{v} = atomic_fetch_add((u64 *)({p} + 0), {v})",
            p = in(reg) ptr,
            v = inout(reg) val,
            options(nostack),
        );
    }
    val
}

#[inline(always)]
fn min(a: u64, b: u64) -> u64 {
    if a < b { a } else { b }
}

/// Copy `n` bytes of user memory to `dst[off..]`. The masks give the verifier independent
/// bounds (off < N/2, n ≤ N/2) inside an N-byte buffer (N/2 a power of two: MAX_CAPTURE for
/// data events, MAX_STDIO for log events).
#[inline(always)]
fn copy_chunk<const N: usize>(dst: &mut [u8; N], off: u32, src: u64, n: u32) -> bool {
    let half = N / 2;
    let off = off as usize & (half - 1);
    let mut n = n as usize;
    if n > half {
        n = half;
    }
    if n == 0 {
        return true;
    }
    // SAFETY: dst + off + n ≤ dst + N by the bounds above.
    let r =
        unsafe { raw_probe_read_user(dst.as_mut_ptr().add(off).cast(), n as u32, src as *const _) };
    r == 0
}

/// Returns (bytes copied, a copy failed).
#[inline(always)]
fn copy_one<const N: usize>(dst: &mut [u8; N], buf: u64, want: u32) -> (u32, bool) {
    if copy_chunk(dst, 0, buf, want) {
        (want, false)
    } else {
        (0, true)
    }
}

#[inline(always)]
fn copy_iovecs<const N: usize>(dst: &mut [u8; N], iov: u64, iovcnt: u64, want: u32) -> (u32, bool) {
    let mut off: u32 = 0;
    for i in 0..MAX_IOV {
        if off >= want || i as u64 >= iovcnt {
            break;
        }
        // SAFETY: user pointer read through the probe helper.
        let Ok(v) =
            (unsafe { bpf_probe_read_user((iov as *const Iovec).wrapping_add(i as usize)) })
        else {
            return (off, true);
        };
        let left = want - off;
        let n = if v.len < left as u64 {
            v.len as u32
        } else {
            left
        };
        if !copy_chunk(dst, off, v.base, n) {
            return (off, true);
        }
        off += n;
    }
    (off, false)
}

const NO_ADDR: Addr = Addr {
    family: 0,
    port: 0,
    addr: [0; 16],
};

/// Read a user `struct sockaddr_in`/`sockaddr_in6`; family 0 when unreadable or not inet.
/// (Returns a plain Addr, not an Option: copying a `None` copies undefined payload bytes,
/// which the verifier rejects as an uninitialised register read.)
#[inline(always)]
fn read_user_sockaddr(ptr: u64) -> Addr {
    // sockaddr_in6: family u16, port be16, flowinfo u32, addr [16]; sockaddr_in: family,
    // port, addr [4]. 24 bytes cover both.
    let Ok(raw) = (unsafe { bpf_probe_read_user(ptr as *const [u8; 24]) }) else {
        return NO_ADDR;
    };
    let family = u16::from_ne_bytes([raw[0], raw[1]]);
    let port = u16::from_be_bytes([raw[2], raw[3]]);
    let mut a = Addr {
        family,
        port,
        addr: [0; 16],
    };
    match family {
        AF_INET => a.addr[..4].copy_from_slice(&raw[4..8]),
        AF_INET6 => a.addr.copy_from_slice(&raw[8..24]),
        _ => return NO_ADDR,
    }
    a
}

/// Local and peer address of a `struct sock *`, from `struct sock_common` (offsets from BTF).
#[inline(always)]
fn sock_addrs(sk: u64) -> (Addr, Addr) {
    let o: Offsets = cfg!(offsets);
    let base = sk as *const u8;
    // SAFETY: kernel pointer read through the probe helper (faults return Err → zero).
    unsafe {
        let family: u16 =
            bpf_probe_read_kernel(base.add(o.skc_family as usize).cast()).unwrap_or(0);
        let lport: u16 = bpf_probe_read_kernel(base.add(o.skc_num as usize).cast()).unwrap_or(0);
        let dport: u16 = bpf_probe_read_kernel(base.add(o.skc_dport as usize).cast()).unwrap_or(0);
        let mut local = Addr {
            family,
            port: lport,
            addr: [0; 16],
        };
        let mut peer = Addr {
            family,
            port: u16::from_be(dport),
            addr: [0; 16],
        };
        if family == AF_INET {
            let l: [u8; 4] =
                bpf_probe_read_kernel(base.add(o.skc_rcv_saddr as usize).cast()).unwrap_or([0; 4]);
            let p: [u8; 4] =
                bpf_probe_read_kernel(base.add(o.skc_daddr as usize).cast()).unwrap_or([0; 4]);
            local.addr[..4].copy_from_slice(&l);
            peer.addr[..4].copy_from_slice(&p);
        } else if family == AF_INET6 {
            local.addr = bpf_probe_read_kernel(base.add(o.skc_v6_rcv_saddr as usize).cast())
                .unwrap_or([0; 16]);
            peer.addr =
                bpf_probe_read_kernel(base.add(o.skc_v6_daddr as usize).cast()).unwrap_or([0; 16]);
        }
        if peer.port == 0 {
            // Unconnected (UDP) socket: no peer on the socket itself.
            peer.family = 0;
        }
        (local, peer)
    }
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

/// The connection of (tgid, fd) for a socket I/O: existing, or born now (a connection that
/// was open before capture started, or whose connect/accept we did not see).
#[inline(always)]
fn conn_for_io(id: u64, fd: i32, sk: u64, protocol: u8) -> Option<*mut ConnState> {
    let key = conn_key((id >> 32) as u32, fd);
    if let Some(c) = CONNS.get_ptr_mut(key) {
        // SAFETY: map value pointer.
        let known = unsafe { (*c).sock };
        if known == sk {
            return Some(c);
        }
        if known == 0 {
            // Born at connect/accept, now we know its socket and addresses.
            let (local, peer) = sock_addrs(sk);
            unsafe {
                (*c).sock = sk;
                (*c).protocol = protocol;
                (*c).local = local;
                (*c).peer = peer;
                if (*c).announced == 0 {
                    (*c).announced = 1;
                    announce_accepted(id, fd, &*c);
                }
            }
            return Some(c);
        }
        // The fd now names another socket (dup2 over it, or a close we missed): the old
        // connection is over. Its close event is implied by the new conn_id.
    }
    let (local, peer) = sock_addrs(sk);
    // SAFETY: map lookup by value.
    let role = unsafe { SOCK_ROLE.get(sk) }
        .copied()
        .unwrap_or(role::UNKNOWN);
    let state = ConnState {
        conn_id: new_conn_id(),
        sock: sk,
        tx_pos: 0,
        rx_pos: 0,
        role,
        protocol,
        announced: 1,
        _pad: [0; 5],
        local,
        peer,
    };
    if CONNS.insert(key, state, 0).is_err() {
        count(stat::CONN_TABLE_FULL, 1);
        return None;
    }
    CONNS.get_ptr_mut(key)
}

macro_rules! exit_prog {
    ($name:ident, $dir:expr) => {
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            exit_io(&ctx, $dir)
        }
    };
}

// One exit program per direction is enough: the syscall kind is in INFLIGHT. They are still
// attached to each syscall's own exit tracepoint.
exit_prog!(sonde_exit_send, direction::EGRESS);
exit_prog!(sonde_exit_recv, direction::INGRESS);

// ---------------------------------------------------------------------------------------------
// Connection lifecycle.

#[inline(always)]
fn conn_event(kind: EventKind, id: u64, fd: i32) -> ConnEvent {
    ConnEvent {
        kind: kind as u32,
        tgid: (id >> 32) as u32,
        tid: id as u32,
        fd,
        conn_id: 0,
        sock: 0,
        ts_ns: unsafe { bpf_ktime_get_ns() },
        tx_bytes: 0,
        rx_bytes: 0,
        ret: 0,
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        role: role::UNKNOWN,
        syscall: 0,
        old_state: 0,
        new_state: 0,
        protocol: 0,
        _pad: [0; 3],
        local: NO_ADDR,
        peer: NO_ADDR,
        comm: bpf_get_current_comm().unwrap_or([0u8; TASK_COMM_LEN]),
    }
}

#[inline(always)]
fn output_conn(ev: &ConnEvent) {
    if EVENTS.output::<ConnEvent>(ev, wakeup_flag()).is_ok() {
        count(stat::CONN_EVENTS, 1);
    } else {
        count(stat::CONN_LOST, 1);
    }
}

/// The deferred ConnOpen of a connection accepted without an address buffer, sent with its
/// first data, now that the socket is known to be inet and its addresses are read.
#[inline(never)]
fn announce_accepted(id: u64, fd: i32, c: &ConnState) {
    let mut ev = conn_event_of(EventKind::ConnOpen, id, fd, c, syscall::ACCEPT4);
    ev.ret = fd as i64;
    output_conn(&ev);
}

/// A lifecycle event describing a tracked connection.
#[inline(always)]
fn conn_event_of(kind: EventKind, id: u64, fd: i32, c: &ConnState, sc: u8) -> ConnEvent {
    let mut ev = conn_event(kind, id, fd);
    ev.conn_id = c.conn_id;
    ev.sock = c.sock;
    ev.role = c.role;
    ev.syscall = sc;
    ev.protocol = c.protocol;
    ev.local = c.local;
    ev.peer = c.peer;
    ev
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
        count_stat_inflight_full();
    }
    0
}

#[tracepoint]
pub fn sonde_enter_connect(ctx: TracePointContext) -> u32 {
    enter_conn(&ctx, syscall::CONNECT)
}

#[tracepoint]
pub fn sonde_enter_accept(ctx: TracePointContext) -> u32 {
    enter_conn(&ctx, syscall::ACCEPT)
}

#[tracepoint]
pub fn sonde_enter_accept4(ctx: TracePointContext) -> u32 {
    enter_conn(&ctx, syscall::ACCEPT4)
}

/// connect/accept exit: a connection is born on an fd (inet sockets only).
#[tracepoint]
pub fn sonde_exit_conn(ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let Some(p) = INFLIGHT.get_ptr(id) else {
        return 0;
    };
    let inf = unsafe { *p };
    let _ = INFLIGHT.remove(id);
    let ret = exit_ret(&ctx);
    let is_connect = inf.syscall == syscall::CONNECT;
    if !is_connect && ret < 0 {
        return 0; // accept failed (EAGAIN on a non-blocking listener…): nothing was born
    }
    // connect's address is the peer (still valid at exit); accept's is filled at exit.
    let peer = if inf.addr != 0 {
        read_user_sockaddr(inf.addr)
    } else {
        NO_ADDR
    };
    if inf.addr != 0 && peer.family == 0 {
        return 0; // AF_UNIX or another non-inet family
    }
    let fd = if is_connect { inf.fd } else { ret as i32 };
    let role = if is_connect {
        role::CLIENT
    } else {
        role::SERVER
    };
    let mut ev = conn_event(EventKind::ConnOpen, id, fd);
    ev.ret = ret;
    ev.role = role;
    ev.syscall = inf.syscall;
    ev.peer = peer;
    // A connect that failed outright (refused, unreachable) is reported with its errno but
    // gets no connection state.
    if !is_connect || ret == 0 || ret == EINPROGRESS {
        let state = ConnState {
            conn_id: new_conn_id(),
            sock: 0,
            tx_pos: 0,
            rx_pos: 0,
            role,
            protocol: 0,
            announced: (ev.peer.family != 0) as u8,
            _pad: [0; 5],
            local: NO_ADDR,
            peer: ev.peer,
        };
        ev.conn_id = state.conn_id;
        if CONNS
            .insert(conn_key((id >> 32) as u32, fd), state, 0)
            .is_err()
        {
            count(stat::CONN_TABLE_FULL, 1);
        }
    }
    // accept() without an address buffer could be a unix socket: announce the connection
    // only once it is known to be inet (its first data sets `sock`; see close).
    if ev.peer.family != 0 {
        output_conn(&ev);
    }
    0
}

#[tracepoint]
pub fn sonde_enter_close(ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    if !traced(id) {
        return 0;
    }
    let fd = arg(&ctx, 0) as i32;
    let key = conn_key((id >> 32) as u32, fd);
    // SAFETY: map lookup by value.
    let Some(c) = (unsafe { CONNS.get(key) }).copied() else {
        return 0; // not a connection we know: a file, a pipe, a unix socket
    };
    let _ = CONNS.remove(key);
    let _ = VERDICTS.remove(c.conn_id);
    if c.announced == 0 {
        return 0; // accepted without address and never moved inet data: maybe not inet
    }
    let mut ev = conn_event_of(EventKind::ConnClose, id, fd, &c, syscall::CLOSE);
    ev.tx_bytes = c.tx_pos;
    ev.rx_bytes = c.rx_pos;
    output_conn(&ev);
    0
}

/// TCP state changes: role of sockets by state transition, and lifecycle events.
#[tracepoint]
pub fn sonde_sock_state(ctx: TracePointContext) -> u32 {
    let o: Offsets = cfg!(offsets);
    // SAFETY: offsets come from this kernel's tracefs format file.
    let (sk, old, new, family, proto, sport, dport) = unsafe {
        (
            ctx.read_at::<u64>(o.state_skaddr as usize).unwrap_or(0),
            ctx.read_at::<i32>(o.state_oldstate as usize).unwrap_or(0),
            ctx.read_at::<i32>(o.state_newstate as usize).unwrap_or(0),
            ctx.read_at::<u16>(o.state_family as usize).unwrap_or(0),
            ctx.read_at::<u16>(o.state_protocol as usize).unwrap_or(0),
            ctx.read_at::<u16>(o.state_sport as usize).unwrap_or(0),
            ctx.read_at::<u16>(o.state_dport as usize).unwrap_or(0),
        )
    };
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
    let mut ev = conn_event(EventKind::SockState, id, -1);
    ev.sock = sk;
    ev.role = role;
    ev.syscall = syscall::STATE;
    ev.old_state = old as u8;
    ev.new_state = new as u8;
    ev.protocol = proto as u8;
    ev.local.family = family;
    ev.peer.family = family;
    ev.local.port = sport;
    ev.peer.port = dport;
    // SAFETY: offsets from the format file; fixed-size arrays inside the record.
    unsafe {
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
    output_conn(&ev);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
