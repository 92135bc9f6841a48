//! io_uring: sockets driven through it bypass every syscall Sonde traces and no tracepoint
//! carries their payload, so they are counted per process (`IO_URING`), not captured: the
//! daemon names who would be invisible (`sonde_io_uring_requests_total`).
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};
use sonde_common::{IoUringUse, Offsets};

use crate::task;

#[map]
static IO_URING: LruHashMap<u32, IoUringUse> = LruHashMap::with_max_entries(4096, 0);

/// IORING_OP_* codes that act on sockets: sendmsg 9, recvmsg 10, accept 13, connect 16,
/// send 26, recv 27, shutdown 34, socket 45, send_zc 47, sendmsg_zc 48.
#[inline(always)]
fn is_socket_op(op: u8) -> bool {
    matches!(op, 9 | 10 | 13 | 16 | 26 | 27 | 34 | 45 | 47 | 48)
}

#[tracepoint]
pub fn sonde_io_uring_submit(ctx: TracePointContext) -> u32 {
    if crate::floor_only() {
        return 0;
    }
    if !crate::scope::task_in_scope() {
        return 0;
    }
    let o: Offsets = cfg!(offsets);
    // SAFETY: offset from this kernel's format file.
    let op: u8 = unsafe { ctx.read_at(o.uring_opcode as usize) }.unwrap_or(0);
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let socket = is_socket_op(op) as u64;
    if let Some(u) = IO_URING.get_ptr_mut(&tgid) {
        // SAFETY: map value; counters, a lost increment under a race is acceptable.
        unsafe {
            (*u).requests += 1;
            (*u).socket_requests += socket;
        }
        return 0;
    }
    let fresh = IoUringUse {
        comm: [0; sonde_common::TASK_COMM_LEN],
        requests: 1,
        socket_requests: socket,
    };
    if IO_URING.insert(&tgid, &fresh, 0).is_ok()
        && let Some(u) = IO_URING.get_ptr_mut(&tgid)
    {
        // SAFETY: map value; the name is written in place.
        unsafe { task::process_comm(&raw mut (*u).comm) };
    }
    0
}
