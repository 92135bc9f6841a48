//! Sonde's kernel side: socket payload capture from syscall tracepoints.
//!
//! How one socket read/write is followed (no kprobes on these kernels, tracepoints only):
//! 1. `sys_enter_<io>` saves the syscall's arguments in `INFLIGHT`, keyed by thread.
//! 2. The fd is learnt to be an inet socket, with its `struct sock *`, in one of two ways
//!    chosen at load time ([`config_flags::SOCK_FROM_FD`]): `sock:sock_send_length` /
//!    `sock:sock_recv_length` fire inside sock_sendmsg/recvmsg in the same thread (Linux ≥
//!    6.3), or the exit program walks the task's file table (every kernel; [`task`]).
//! 3. `sys_exit_<io>` with a positive return value: look up (or create) the connection of
//!    (tgid, fd), advance its per-direction byte position atomically, copy up to the cap of
//!    payload from user memory and emit one [`DataEvent`] into the `EVENTS` ring buffer.
//!    sendfile/splice move bytes that never pass through user memory: their exit emits a
//!    payload-less event, a gap of known length, so the stream position stays exact.
//!
//! A syscall on a file or pipe is dropped at step 3 without output, unless it is a
//! write/writev to fd 1 or 2: that is a process's stdout/stderr, emitted as a [`LogEvent`]
//! (`capture_stdio`) for log-template mining ([`stdio`]).
//!
//! connect/accept/close give connection lifecycle events; `sock:inet_sock_set_state` gives TCP
//! state changes and the role (client/server) of sockets we have not seen connect or accept
//! ([`conn`]). Every drop is counted in `STATS` (per CPU).
//!
//! Verifier budget (ARCHITECTURE.md): every program's combined stack stays ≤ 384 bytes, so
//! records are built in per-CPU scratch or directly in ring-buffer reservations, never on the
//! stack; per-syscall-class exit programs keep each one's verified paths few.
#![no_std]
#![no_main]
// The BPF target has no `AtomicU64::fetch_add`, and LLVM's BPF backend lowers `atomicrmw add`
// to the non-fetching XADD even when the result is used; so the fetch-add is written in asm.
#![feature(asm_experimental_arch)]

use aya_ebpf::{
    macros::map,
    maps::{LruHashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use sonde_common::{Addr, Config};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Written by user space at load time (aya `set_global`); read-only for the verifier.
#[unsafe(no_mangle)]
static CONFIG: Config = Config::DEFAULT;

macro_rules! cfg {
    ($($field:ident).+) => {
        // SAFETY: CONFIG is a plain static; volatile so the value written at load time is read,
        // not the compile-time default.
        unsafe { core::ptr::read_volatile(&raw const $crate::CONFIG.$($field).+) }
    };
}

mod conn;
mod copy;
mod exec;
mod io;
mod net;
mod scope;
mod stdio;
mod task;
mod tls;
mod tls_calls;
mod tls_go;
mod uring;

/// All events to user space. Resized at load time (`--ring-bytes`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(sonde_common::stat::COUNT, 0);

/// Arguments of socket-I/O syscalls in progress, by thread (pid_tgid). LRU: a thread killed
/// inside a syscall never reaches its exit, and its entry must not stay forever.
#[map]
static INFLIGHT: LruHashMap<u64, Inflight> = LruHashMap::with_max_entries(16384, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct Inflight {
    ts_enter: u64,
    /// `struct sock *` from sock_*_length; 0 until then (= not known to be a socket yet).
    sock: u64,
    /// buffer, iovec array, msghdr or mmsghdr pointer, by syscall (splice: the input fd).
    buf: u64,
    /// length, iovcnt or vlen, by syscall.
    count: u64,
    /// sockaddr pointer for sendto/recvfrom, connect and accept.
    addr: u64,
    fd: i32,
    syscall: u8,
    /// 1 when sock_*_length saw a non-inet socket (unix, netlink…): ignore.
    skip: u8,
    protocol: u8,
    _pad: u8,
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

/// Waiting bytes above `wakeup_bytes` within which a record still forces a wakeup. Wider than
/// the largest record (header + `MAX_CAPTURE`), so a ring filling from below has a record
/// land in the band (on every CPU count we run on; the daemon's poll timer covers a miss).
const WAKEUP_BAND: u64 = 128 * 1024;

/// Batch wakeups: signal the daemon only when `wakeup_bytes` are waiting (it also polls on a
/// timer), so a busy node does not pay an epoll wakeup and a context switch per syscall.
/// Only records that find between `wakeup_bytes` and `wakeup_bytes + WAKEUP_BAND` waiting
/// wake it: beyond the band the daemon has been woken and is draining (it sleeps only once
/// the ring is empty), and a forced wakeup per record then cost the producer an irq_work and
/// the reader's reactor thread a context switch per record (up to ~10k a second on the
/// loopback bench while the daemon was behind: BENCHMARKS.md, capture overhead).
#[inline(always)]
fn wakeup_flag() -> u64 {
    let waiting = EVENTS.query(BPF_RB_AVAIL_DATA);
    let threshold = cfg!(wakeup_bytes) as u64;
    if waiting >= threshold && waiting - threshold < WAKEUP_BAND {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Benchmark floor (`config_flags::FLOOR_ONLY`): every program returns before doing any
/// work, so a load measures what the attachments alone cost (BENCHMARKS.md, capture overhead).
#[inline(always)]
fn floor_only() -> bool {
    cfg!(flags) & sonde_common::config_flags::FLOOR_ONLY != 0
}

/// Whether a program with process context follows the current task: not the daemon itself,
/// and inside the capture scope ([`scope`]; counted when not). Every entry program asks.
#[inline(always)]
fn traced(pid_tgid: u64) -> bool {
    (pid_tgid >> 32) as u32 != cfg!(self_tgid) && scope::task_in_scope()
}

#[inline(always)]
fn conn_key(tgid: u32, fd: i32) -> u64 {
    ((tgid as u64) << 32) | fd as u32 as u64
}

/// Syscall tracepoint records: args start at 16, 8 bytes each; the exit's `ret` is at 16.
const ARG0: usize = 16;
const EXIT_RET: usize = 16;

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

#[inline(always)]
fn min(a: u64, b: u64) -> u64 {
    if a < b { a } else { b }
}

const NO_ADDR: Addr = Addr {
    family: 0,
    port: 0,
    addr: [0; 16],
};

/// `v & MASK`, computed where the verifier sees it: LLVM drops a mask it can prove redundant
/// from an earlier branch (`min`), and 6.1's verifier does not carry that branch's bound over
/// to the register copy that reaches the helper ("R2 unbounded memory access"). A mask in
/// asm stays, and bounds the very register that is used.
#[inline(always)]
fn bounded<const MASK: u64>(v: u64) -> u64 {
    let mut x = v;
    // SAFETY: one ALU instruction on a register.
    unsafe {
        core::arch::asm!("{x} &= {m}", x = inout(reg) x, m = const MASK, options(pure, nomem, nostack));
    }
    x
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
