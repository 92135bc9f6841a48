//! Copies of user memory into scratch buffers, for socket payloads (io) and stdout/stderr
//! (stdio) alike: every copy's size is bounded so each kernel's verifier accepts it.
use aya_ebpf::helpers::{
    bpf_probe_read_user, generated::bpf_probe_read_user as raw_probe_read_user,
};
use sonde_common::{MAX_CAPTURE, MAX_IOV};

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

/// Copies up to `want` bytes from an iovec array. The write offset goes through `cursor`, a
/// slot of map memory, between iterations: a value loaded from a map is unknown to the
/// verifier, so after the masks every iteration starts from the same state whatever path
/// led there, and state pruning holds the walk to a few thousand instructions. Kept in a
/// register, each path's exact offset range made its own state (2^16 paths at worst: one
/// class of exit program went past the 1,000,000-instruction limit).
#[inline(always)]
pub(crate) fn copy_iovecs<const N: usize>(
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
