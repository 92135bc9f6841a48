//! Copies of user memory into scratch buffers, for socket payloads (io) and stdout/stderr
//! (stdio) alike: every copy's size is bounded so each kernel's verifier accepts it.
use core::ffi::c_void;

use aya_ebpf::helpers::{
    bpf_probe_read_user,
    generated::{bpf_loop as raw_bpf_loop, bpf_probe_read_user as raw_probe_read_user},
};
use sonde_common::{MAX_CAPTURE, MAX_IOV, MAX_IOV_LOOP, config_flags};

use crate::{bounded, min};

/// Copy `n` bytes of user memory to `dst[off..]`. The masks give the verifier independent
/// bounds (off < N/2, 1 ≤ n ≤ N/2) inside an N-byte buffer (N/2 a power of two:
/// MAX_CAPTURE for data events, MAX_STDIO for log events). The size is bounded by
/// arithmetic on the register passed to the helper, not by a branch on a copy of it: 6.1's
/// verifier does not carry a branch's bound over a 32-bit register copy.
#[inline(always)]
fn copy_chunk<const N: usize>(dst: &mut [u8; N], off: u32, src: u64, n: u32) -> bool {
    let half = (N / 2) as u64;
    let n = n as u64;
    if n == 0 {
        return true;
    }
    let off = bounded_to::<N>(off as u64);
    // 1 ≤ n ≤ half: n - 1 masked to [0, half), plus one.
    let n = bounded_to::<N>(min(n, half) - 1) + 1;
    // SAFETY: dst + off + n ≤ dst + N by the bounds above.
    let r = unsafe {
        raw_probe_read_user(
            dst.as_mut_ptr().add(off as usize).cast(),
            n as u32,
            src as *const _,
        )
    };
    r == 0
}

/// `v & (N/2 - 1)` in asm (see [`crate::bounded`]); N is 2 × MAX_CAPTURE or 2 × MAX_STDIO.
#[inline(always)]
fn bounded_to<const N: usize>(v: u64) -> u64 {
    if N == 2 * MAX_CAPTURE {
        bounded::<{ MAX_CAPTURE as u64 - 1 }>(v)
    } else {
        bounded::<{ sonde_common::MAX_STDIO as u64 - 1 }>(v)
    }
}

/// Returns (bytes copied, a copy failed).
#[inline(always)]
pub(crate) fn copy_one<const N: usize>(dst: &mut [u8; N], buf: u64, want: u32) -> (u32, bool) {
    if copy_chunk(dst, 0, buf, want) {
        (want, false)
    } else {
        (0, true)
    }
}

/// The state of one iovec walk, kept in the scratch map beside the buffer it fills: the
/// `bpf_loop` callback finds it there (no pointer to the caller's stack crosses frames), and
/// a value loaded from a map is unknown to the verifier, so every step starts from the same
/// state whatever path led there and state pruning holds the walk to a few thousand
/// instructions. Kept in a register, each path's exact offset range made its own state
/// (2^16 paths at worst: one class of exit program went past the 1,000,000-instruction limit).
#[repr(C)]
pub(crate) struct IovWalk {
    /// Bytes written to the buffer so far (the next write offset).
    cursor: u64,
    iov: u64,
    iovcnt: u64,
    want: u64,
    /// 1 when an iovec or its bytes could not be read.
    failed: u64,
}

/// A `bpf_loop` callback: `(index, ctx) -> 0 to go on, 1 to stop`.
pub(crate) type IovStep = extern "C" fn(u32, *mut c_void) -> i64;

/// Copies up to `want` bytes from an iovec array of `iovcnt` entries. With `bpf_loop`
/// (config flag, set by a load probe) every iovec up to [`MAX_IOV_LOOP`] is visited by
/// `step`, a callback the verifier checks once instead of once per unrolled iteration;
/// without it the first [`MAX_IOV`] are walked by an unrolled loop. Returns (bytes copied,
/// a read failed).
#[inline(always)]
pub(crate) fn copy_iovecs<const N: usize>(
    dst: &mut [u8; N],
    walk: &mut IovWalk,
    iov: u64,
    iovcnt: u64,
    want: u32,
    step: IovStep,
) -> (u32, bool) {
    if cfg!(flags) & config_flags::BPF_LOOP == 0 {
        return copy_iovecs_unrolled(dst, &mut walk.cursor, iov, iovcnt, want);
    }
    let w: *mut IovWalk = walk;
    // SAFETY: `walk` lives in this CPU's scratch map value; volatile so the callback's
    // writes are read back, not values the compiler kept from before the call.
    unsafe {
        core::ptr::write_volatile(&raw mut (*w).cursor, 0);
        core::ptr::write_volatile(&raw mut (*w).iov, iov);
        core::ptr::write_volatile(&raw mut (*w).iovcnt, iovcnt);
        core::ptr::write_volatile(&raw mut (*w).want, want as u64);
        core::ptr::write_volatile(&raw mut (*w).failed, 0);
    }
    let loops = min(iovcnt, MAX_IOV_LOOP as u64) as u32;
    // SAFETY: `step` is a BPF subprogram of the right signature; a null context is allowed
    // (the callback reads the walk from the scratch map).
    unsafe { raw_bpf_loop(loops, step as *mut c_void, core::ptr::null_mut(), 0) };
    // SAFETY: as above.
    let (off, failed) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*w).cursor) & (N as u64 - 1),
            core::ptr::read_volatile(&raw const (*w).failed) != 0,
        )
    };
    (min(off, want as u64) as u32, failed)
}

/// One iovec of a `bpf_loop` walk, for the callback of the scratch map holding `dst` and
/// `walk`: copies iovec `i` at the cursor; 1 (stop) when the cap is reached, the array ends
/// or a read fails.
#[inline(always)]
pub(crate) fn iov_step<const N: usize>(dst: &mut [u8; N], walk: *mut IovWalk, i: u32) -> i64 {
    let half = (N / 2) as u64;
    // SAFETY: `walk` is a field of this CPU's scratch map value (the callback looked it up).
    let (off, iov, iovcnt, want) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*walk).cursor) & (2 * half - 1),
            core::ptr::read_volatile(&raw const (*walk).iov),
            core::ptr::read_volatile(&raw const (*walk).iovcnt),
            core::ptr::read_volatile(&raw const (*walk).want),
        )
    };
    let i = i as u64;
    if off >= want || i >= iovcnt {
        return 1;
    }
    // struct iovec { void *base; size_t len; }: one read
    // SAFETY: user pointer read through the probe helper (faults return Err).
    let Ok([base, len]) = (unsafe { bpf_probe_read_user((iov + 16 * i) as *const [u64; 2]) })
    else {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(&raw mut (*walk).failed, 1) };
        return 1;
    };
    let n = min(len, want - off);
    if !copy_chunk(dst, off as u32, base, n as u32) {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(&raw mut (*walk).failed, 1) };
        return 1;
    }
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(&raw mut (*walk).cursor, off + min(n, half)) };
    0
}

/// The walk for kernels without `bpf_loop`: the first [`MAX_IOV`] iovecs, unrolled. The
/// write offset goes through `cursor` (map memory) between iterations, as in [`IovWalk`].
#[inline(always)]
fn copy_iovecs_unrolled<const N: usize>(
    dst: &mut [u8; N],
    cursor: &mut u64,
    iov: u64,
    iovcnt: u64,
    want: u32,
) -> (u32, bool) {
    let half = (N / 2) as u64;
    let cursor: *mut u64 = cursor;
    // SAFETY: `cursor` is a field of this CPU's scratch map value.
    unsafe { core::ptr::write_volatile(cursor, 0) };
    let want = want as u64;
    for i in 0..MAX_IOV as u64 {
        // SAFETY: as above.
        let off = unsafe { core::ptr::read_volatile(cursor) } & (2 * half - 1);
        if off >= want || i >= iovcnt {
            return (off as u32, false);
        }
        // struct iovec { void *base; size_t len; }: one read, one branch
        // SAFETY: user pointer read through the probe helper (faults return Err).
        let Ok([base, len]) = (unsafe { bpf_probe_read_user((iov + 16 * i) as *const [u64; 2]) })
        else {
            return (off as u32, true);
        };
        let n = min(len, want - off);
        if !copy_chunk(dst, off as u32, base, n as u32) {
            return (off as u32, true);
        }
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(cursor, off + min(n, half)) };
    }
    // SAFETY: as above.
    let off = unsafe { core::ptr::read_volatile(cursor) } & (2 * half - 1);
    (min(off, want) as u32, false)
}
