//! TLS plaintext from OpenSSL (libssl 1.1 and 3.x, dynamically linked): uprobes on
//! `SSL_write`, `SSL_read`, `SSL_write_ex`, `SSL_read_ex` and their returns.
//!
//! 1. The entry probe saves (ssl, buf, num, the `_ex` out-parameter) in `SSL_CALLS`, by thread.
//! 2. While the thread is inside that call, OpenSSL moves the TLS records through a socket
//!    syscall on the same thread: the syscall's entry program ([`crate::io`]) sees the entry
//!    in `SSL_CALLS` and records (tgid, ssl) → fd in `SSL_FDS` ([`crate::tls_calls`]). The
//!    exit programs are left alone: a map update or a flag there cost the iovec programs up
//!    to 2× their verified instructions on 6.1. User space recognises the records itself.
//! 3. The return probe reads the length moved (the return value, or `*out` for the `_ex`
//!    calls when they return 1), finds the connection through `SSL_FDS` and `CONNS`, and emits
//!    the plaintext (up to the capture cap) as a [`DataEvent`] flagged [`data_flags::TLS`],
//!    positioned in the connection's own plaintext stream (`tls_tx_pos`/`tls_rx_pos`).
//!
//! Plaintext returned from OpenSSL's buffer without a syscall in that call is still placed:
//! the (tgid, ssl) → fd association outlives the call. Plaintext of an SSL object never seen
//! on a socket is counted (`tls_without_conn`), not emitted.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use sonde_common::{DataEvent, MAX_CAPTURE, data_flags, direction, stat, syscall, verdict};

use crate::{
    EVENTS, bounded, conn, conn_key,
    copy::copy_one,
    count, fetch_add, io, min,
    tls_calls::{SSL_CALLS, SSL_FDS, SslCall, SslKey},
    traced, wakeup_flag,
};

#[inline(always)]
fn enter(ctx: &ProbeContext, ex: bool) -> u32 {
    let id = bpf_get_current_pid_tgid();
    if !traced(id) {
        return 0;
    }
    let call = SslCall {
        ssl: ctx.arg::<u64>(0).unwrap_or(0),
        buf: ctx.arg::<u64>(1).unwrap_or(0),
        num: ctx.arg::<u64>(2).unwrap_or(0),
        out: if ex {
            ctx.arg::<u64>(3).unwrap_or(0)
        } else {
            0
        },
        // SAFETY: no preconditions.
        ts_enter: unsafe { bpf_ktime_get_ns() },
    };
    if SSL_CALLS.insert(id, call, 0).is_err() {
        count(stat::INFLIGHT_FULL, 1);
    }
    0
}

/// `SSL_write(ssl, buf, num)` / `SSL_read(ssl, buf, num)`.
#[uprobe]
pub fn sonde_ssl_enter(ctx: ProbeContext) -> u32 {
    if crate::floor_only() {
        return 0;
    }
    enter(&ctx, false)
}

/// `SSL_write_ex(ssl, buf, num, *written)` / `SSL_read_ex(ssl, buf, num, *readbytes)`.
#[uprobe]
pub fn sonde_ssl_enter_ex(ctx: ProbeContext) -> u32 {
    if crate::floor_only() {
        return 0;
    }
    enter(&ctx, true)
}

#[uretprobe]
pub fn sonde_ssl_write_ret(ctx: RetProbeContext) -> u32 {
    if crate::floor_only() {
        return 0;
    }
    ret(&ctx, direction::EGRESS)
}

#[uretprobe]
pub fn sonde_ssl_read_ret(ctx: RetProbeContext) -> u32 {
    if crate::floor_only() {
        return 0;
    }
    if cfg!(flags) & sonde_common::config_flags::TEST_REJECT_TLS != 0 {
        // SAFETY: none: a deliberate wild read, for the verifier to reject (tests only).
        return unsafe { core::ptr::read_volatile(16 as *const u32) };
    }
    ret(&ctx, direction::INGRESS)
}

#[inline(always)]
fn ret(ctx: &RetProbeContext, dir: u8) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let Some(call) = SSL_CALLS.get_ptr(id) else {
        return 0;
    };
    let r: i64 = ctx.ret::<i64>();
    // SAFETY: this thread's own entry.
    let (ssl, buf, out, ts_enter) =
        unsafe { ((*call).ssl, (*call).buf, (*call).out, (*call).ts_enter) };
    let _ = SSL_CALLS.remove(id);
    let n = if out != 0 {
        // SSL_*_ex: 1 on success, the length in *out.
        if r as i32 != 1 {
            return 0;
        }
        // SAFETY: user pointer read through the probe helper (faults return Err).
        unsafe { aya_ebpf::helpers::bpf_probe_read_user(out as *const u64) }.unwrap_or(0)
    } else {
        // SSL_read/SSL_write return an int: > 0 is the length.
        let r = r as i32;
        if r <= 0 {
            return 0;
        }
        r as u64
    };
    if n == 0 {
        return 0;
    }
    let _ = emit_plain(id, ssl, buf, n, dir, ts_enter);
    0
}

#[inline(always)]
fn emit_plain(id: u64, ssl: u64, buf: u64, n: u64, dir: u8, ts_enter: u64) -> Option<()> {
    let tgid = (id >> 32) as u32;
    let key = SslKey { ssl, tgid, _pad: 0 };
    // SAFETY: map lookup by value.
    let Some(fd) = (unsafe { SSL_FDS.get(key) }).copied() else {
        count(stat::TLS_WITHOUT_CONN, 1);
        return None;
    };
    emit_on_fd(id, fd, buf, n, dir, ts_enter)
}

/// Emits `n` bytes of plaintext at `buf` (user memory) on the connection `(tgid, fd)`, in
/// its own plaintext stream; shared by the OpenSSL and the Go crypto/tls probes.
#[inline(always)]
pub(crate) fn emit_on_fd(id: u64, fd: i32, buf: u64, n: u64, dir: u8, ts_enter: u64) -> Option<()> {
    let tgid = (id >> 32) as u32;
    let Some(c) = conn::CONNS.get_ptr_mut(conn_key(tgid, fd)) else {
        count(stat::TLS_WITHOUT_CONN, 1);
        return None;
    };
    // SAFETY: map value; the positions are shared by every thread of the process.
    let (conn_id, pos) = unsafe {
        let p = if dir == direction::EGRESS {
            &raw mut (*c).tls_tx_pos
        } else {
            &raw mut (*c).tls_rx_pos
        };
        ((*c).conn_id, fetch_add(p, n))
    };
    // SAFETY: map lookup by value.
    if unsafe { conn::VERDICTS.get(conn_id) }.copied() == Some(verdict::SKIP_PAYLOAD) {
        count(stat::BYTES_SKIPPED_BY_VERDICT, n);
        return Some(());
    }
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let scratch = io::SCRATCH.get_ptr_mut(cpu)?;
    // SAFETY: this CPU's scratch slot; programs do not migrate while running.
    let scratch = unsafe { &mut *scratch };
    let cap = cfg!(capture_bytes) as u64;
    let want = min(min(n, cap), MAX_CAPTURE as u64) as u32;
    let (copied, failed) = copy_one(&mut scratch.data, buf, want);
    let mut flags = data_flags::TLS;
    if failed {
        flags |= data_flags::READ_FAILED;
        count(stat::READ_FAILED, 1);
    }
    let sc = if dir == direction::EGRESS {
        syscall::SSL_WRITE
    } else {
        syscall::SSL_READ
    };
    io::fill_data_event(
        &mut scratch.ev,
        id,
        fd,
        c,
        sc,
        dir,
        ts_enter,
        pos,
        n,
        copied,
        flags,
    );
    count(stat::BYTES_TRUNCATED, n - copied as u64);
    let size = core::mem::size_of::<DataEvent>()
        + bounded::<{ MAX_CAPTURE as u64 * 2 - 1 }>(copied as u64) as usize;
    // SAFETY: header + copied ≤ size_of::<Scratch>() by the mask above.
    let bytes: &[u8] =
        unsafe { core::slice::from_raw_parts((scratch as *const io::Scratch).cast::<u8>(), size) };
    if EVENTS.output::<[u8]>(bytes, wakeup_flag()).is_ok() {
        count(stat::DATA_EVENTS, 1);
        count(stat::TLS_EVENTS, 1);
    } else {
        count(stat::DATA_LOST, 1);
    }
    Some(())
}
