//! stdout/stderr capture: a write/writev to fd 1 or 2 that did not go to an inet socket is a
//! process's log output, emitted as a [`LogEvent`] for log-template mining. Rate-limited per
//! CPU so chatty writers cannot fill the ring that socket data shares; every drop counted.
use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_ktime_get_ns},
    macros::map,
    maps::PerCpuArray,
};
use sonde_common::{EventKind, LogEvent, MAX_STDIO, config_flags, log_flags, stat, syscall};

use crate::{
    EVENTS, Inflight,
    copy::{IovWalk, copy_iovecs, copy_one, iov_step},
    count, min, task, wakeup_flag,
};

/// Where one stdout/stderr log event is assembled: small enough for a per-CPU map. The
/// payload area is twice the cap for the same verifier reason as the data scratch.
#[map]
static LOG_SCRATCH: PerCpuArray<LogScratch> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
struct LogScratch {
    ev: LogEvent,
    data: [u8; 2 * MAX_STDIO],
    /// The iovec walk's state between iterations (see [`IovWalk`]).
    walk: IovWalk,
}

/// The `bpf_loop` callback of the stdout/stderr iovec walk: one iovec into this CPU's
/// [`LogScratch`].
#[inline(never)]
extern "C" fn log_iov_step(i: u32, _ctx: *mut core::ffi::c_void) -> i64 {
    let Some(scratch) = LOG_SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's slot of a per-CPU map, the one the exit program is filling.
    unsafe { iov_step(&mut (*scratch).data, &raw mut (*scratch).walk, i) }
}

/// Per-CPU rate limit of log events: chunks emitted in the current one-second window.
#[map]
static LOG_BUDGET: PerCpuArray<LogBudget> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
struct LogBudget {
    window_start_ns: u64,
    used: u64,
}

/// A write/writev to fd 1 or 2, stdout/stderr capture on, not the daemon itself.
#[inline(always)]
pub(crate) fn wanted(inf: *const Inflight, id: u64) -> bool {
    // SAFETY: this thread's own in-flight entry.
    let (fd, sc) = unsafe { ((*inf).fd, (*inf).syscall) };
    (fd == 1 || fd == 2)
        && (sc == syscall::WRITE || sc == syscall::WRITEV)
        && cfg!(flags) & config_flags::CAPTURE_STDIO != 0
        && (id >> 32) as u32 != cfg!(daemon_tgid)
}

/// true while this CPU's window has room for one more log event (and takes it).
#[inline(always)]
fn budget_take() -> bool {
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
pub(crate) fn emit_log(inf: *const Inflight, id: u64, ret: u64, unix_socket: bool, single: bool) {
    if !budget_take() {
        count(stat::LOG_RATE_LIMITED, 1);
        return;
    }
    let Some(scratch) = LOG_SCRATCH.get_ptr_mut(0) else {
        count(stat::LOG_LOST, 1);
        return;
    };
    // SAFETY: this CPU's slot of a per-CPU map; programs do not migrate while running.
    let scratch = unsafe { &mut *scratch };
    // SAFETY: this thread's own in-flight entry.
    let (fd, sc, buf, cnt) = unsafe { ((*inf).fd, (*inf).syscall, (*inf).buf, (*inf).count) };
    let cap = cfg!(stdio_bytes) as u64;
    let want = min(min(ret, cap), MAX_STDIO as u64) as u32;
    let (copied, failed) = if single {
        copy_one(&mut scratch.data, buf, want)
    } else {
        copy_iovecs(
            &mut scratch.data,
            &mut scratch.walk,
            buf,
            cnt,
            want,
            log_iov_step,
        )
    };
    let ev = &mut scratch.ev;
    ev.kind = EventKind::Log as u32;
    ev.tgid = (id >> 32) as u32;
    ev.tid = id as u32;
    ev.fd = fd;
    ev.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    ev.len = ret;
    ev.captured = copied;
    ev.syscall = sc;
    ev.flags = 0;
    if failed {
        ev.flags |= log_flags::READ_FAILED;
        count(stat::LOG_READ_FAILED, 1);
    }
    if unix_socket {
        ev.flags |= log_flags::UNIX_SOCKET;
    }
    ev._pad = [0; 2];
    // SAFETY: a field of this CPU's scratch value.
    unsafe { task::process_comm(&raw mut ev.comm) };
    count(stat::LOG_BYTES_TRUNCATED, ret - copied as u64);
    let size = core::mem::size_of::<LogEvent>()
        + crate::bounded::<{ MAX_STDIO as u64 * 2 - 1 }>(copied as u64) as usize;
    // SAFETY: header + copied ≤ size_of::<LogScratch>() by the mask above.
    let bytes: &[u8] =
        unsafe { core::slice::from_raw_parts((scratch as *const LogScratch).cast::<u8>(), size) };
    if EVENTS.output::<[u8]>(bytes, wakeup_flag()).is_ok() {
        count(stat::LOG_EVENTS, 1);
    } else {
        count(stat::LOG_LOST, 1);
    }
}
