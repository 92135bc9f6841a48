//! TLS plaintext from Go's `crypto/tls` (statically linked into Go binaries, Go ≥ 1.17's
//! register ABI on x86-64): a uprobe at the entry of `(*Conn).Write` / `(*Conn).Read`, and
//! one at each of their RET instructions instead of a uretprobe (a uretprobe rewrites the
//! return address on the goroutine's stack, which the Go runtime moves and walks).
//!
//! 1. Entry: the receiver (`*tls.Conn`) is in RAX, the buffer `b` in RBX (pointer) and RCX
//!    (length). The socket is read from the receiver itself, not tied through a syscall:
//!    `tls.Conn.conn` (a `net.Conn` interface, its data word at +8) → `*net.TCPConn` →
//!    `*net.netFD` (its first word) → `poll.FD.Sysfd` (+16, after the 16-byte `fdMutex`).
//!    This layout is the same in the Go sources from 1.9 on (tested: 1.19). A goroutine
//!    may park inside `Read` (netpoller) and resume on another thread, so the call is kept
//!    by goroutine — the `g` pointer in R14 under the register ABI — not by thread.
//! 2. `Write` is emitted at its entry (`len(b)` bytes: `Conn.Write` writes all of `b` or
//!    fails), not at its return: a Go client writes the request on one goroutine and reads
//!    the response on another, and the reader's return can come before the writer's — the
//!    response would reach the parser before its request. Emitted at the entry, the request
//!    is in the ring before its bytes are even on the socket. A write that then fails has
//!    been counted whole.
//! 3. `Read` at its RETs: `n` is in RAX; the plaintext (`n` bytes at the saved buffer) is
//!    emitted exactly as the OpenSSL path does ([`crate::tls::emit_on_fd`]). A `net.Conn`
//!    that is not a `*net.TCPConn` (or `*net.UnixConn`, same layout) gives an fd with no
//!    connection: counted in `tls_without_conn`, not emitted.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{map, uprobe},
    maps::LruHashMap,
    programs::ProbeContext,
};
use sonde_common::{direction, stat};

use crate::{count, tls::emit_on_fd, traced};

/// A Go `crypto/tls` Read in progress, by goroutine.
#[repr(C)]
#[derive(Clone, Copy)]
struct GoCall {
    buf: u64,
    ts_enter: u64,
    fd: i32,
    _pad: u32,
}

/// Key of `GO_CALLS`: a `g` pointer is unique within its process only (`dir`: room for the
/// Write calls, should they ever be kept).
#[repr(C)]
#[derive(Clone, Copy)]
struct GoKey {
    g: u64,
    tgid: u32,
    dir: u32,
}

#[map]
static GO_CALLS: LruHashMap<GoKey, GoCall> = LruHashMap::with_max_entries(16384, 0);

/// Offset of `Sysfd` in `internal/poll.FD` (after `fdmu fdMutex`, 16 bytes).
const SYSFD_OFFSET: u64 = 16;

#[inline(always)]
fn read_u64(addr: u64) -> Option<u64> {
    // SAFETY: user pointer read through the probe helper (faults return Err).
    unsafe { bpf_probe_read_user(addr as *const u64) }.ok()
}

/// The socket fd of the `*tls.Conn` in RAX: `conn`'s data word → `*net.TCPConn` → `*netFD`
/// → `pfd.Sysfd`.
#[inline(always)]
fn conn_fd(ctx: &ProbeContext) -> Option<i32> {
    // SAFETY: the probe's register frame.
    let conn = unsafe { (*ctx.regs).rax };
    let tcp = read_u64(conn + 8)?;
    let netfd = read_u64(tcp)?;
    let fd = read_u64(netfd + SYSFD_OFFSET)? as i64;
    if !(0..=i32::MAX as i64).contains(&fd) {
        count(stat::TLS_WITHOUT_CONN, 1);
        return None;
    }
    Some(fd as i32)
}

#[inline(always)]
fn enter_read(ctx: &ProbeContext) -> Option<()> {
    let id = bpf_get_current_pid_tgid();
    if !traced(id) {
        return None;
    }
    let fd = conn_fd(ctx)?;
    // SAFETY: the probe's register frame.
    let (buf, g) = unsafe { ((*ctx.regs).rbx, (*ctx.regs).r14) };
    let key = GoKey {
        g,
        tgid: (id >> 32) as u32,
        dir: direction::INGRESS as u32,
    };
    let call = GoCall {
        buf,
        // SAFETY: no preconditions.
        ts_enter: unsafe { bpf_ktime_get_ns() },
        fd,
        _pad: 0,
    };
    if GO_CALLS.insert(key, call, 0).is_err() {
        count(stat::INFLIGHT_FULL, 1);
    }
    Some(())
}

#[inline(always)]
fn enter_write(ctx: &ProbeContext) -> Option<()> {
    let id = bpf_get_current_pid_tgid();
    if !traced(id) {
        return None;
    }
    let fd = conn_fd(ctx)?;
    // SAFETY: the probe's register frame.
    let (buf, len) = unsafe { ((*ctx.regs).rbx, (*ctx.regs).rcx) };
    if len as i64 <= 0 {
        return None;
    }
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    emit_on_fd(id, fd, buf, len, direction::EGRESS, now)
}

#[inline(always)]
fn read_ret(ctx: &ProbeContext) -> Option<()> {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: the probe's register frame.
    let (n, g) = unsafe { ((*ctx.regs).rax, (*ctx.regs).r14) };
    let key = GoKey {
        g,
        tgid: (id >> 32) as u32,
        dir: direction::INGRESS as u32,
    };
    // SAFETY: map lookup by value; copied out before the removal.
    let call = unsafe { GO_CALLS.get(key) }.copied()?;
    let _ = GO_CALLS.remove(key);
    let n = n as i64;
    if n <= 0 {
        return None;
    }
    emit_on_fd(
        id,
        call.fd,
        call.buf,
        n as u64,
        direction::INGRESS,
        call.ts_enter,
    )
}

/// Entry of `crypto/tls.(*Conn).Write(b []byte) (int, error)`: emits `b`.
#[uprobe]
pub fn sonde_go_tls_write_enter(ctx: ProbeContext) -> u32 {
    if crate::floor_only() {
        return 0;
    }
    let _ = enter_write(&ctx);
    0
}

/// Entry of `crypto/tls.(*Conn).Read(b []byte) (int, error)`: saves the call.
#[uprobe]
pub fn sonde_go_tls_read_enter(ctx: ProbeContext) -> u32 {
    if crate::floor_only() {
        return 0;
    }
    let _ = enter_read(&ctx);
    0
}

/// At each RET of `(*Conn).Read`: `n` in RAX.
#[uprobe]
pub fn sonde_go_tls_read_ret(ctx: ProbeContext) -> u32 {
    if crate::floor_only() {
        return 0;
    }
    let _ = read_ret(&ctx);
    0
}
