//! The SSL calls in progress and the socket each SSL object was seen on: shared by the
//! libssl uprobes ([`crate::tls`]) and the I/O syscall entry programs ([`crate::io`]).
use aya_ebpf::{macros::map, maps::LruHashMap};

/// An SSL call in progress, by thread (pid_tgid).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct SslCall {
    pub ssl: u64,
    pub buf: u64,
    pub num: u64,
    /// `size_t *` out-parameter of `SSL_read_ex`/`SSL_write_ex`; 0 for `SSL_read`/`SSL_write`.
    pub out: u64,
    pub ts_enter: u64,
}

/// Key of `SSL_FDS`: an SSL object is a pointer, unique within its process only.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct SslKey {
    pub ssl: u64,
    pub tgid: u32,
    pub _pad: u32,
}

#[map]
pub(crate) static SSL_CALLS: LruHashMap<u64, SslCall> = LruHashMap::with_max_entries(16384, 0);

/// The socket fd each SSL object was last seen on (its connection is `CONNS[(tgid, fd)]`).
#[map]
pub(crate) static SSL_FDS: LruHashMap<SslKey, i32> = LruHashMap::with_max_entries(65536, 0);

/// Called by the I/O syscall entry programs: inside an SSL call, ties the SSL object to the
/// fd (OpenSSL's socket BIO reads and writes its own fd; an fd that is not an inet socket
/// has no `CONNS` entry, and its plaintext is counted as without a connection).
#[inline(always)]
pub(crate) fn note_socket_io(id: u64, fd: i32) {
    // SAFETY: map lookup by value.
    let Some(call) = (unsafe { SSL_CALLS.get(id) }) else {
        return;
    };
    let key = SslKey {
        ssl: call.ssl,
        tgid: (id >> 32) as u32,
        _pad: 0,
    };
    let _ = SSL_FDS.insert(key, fd, 0);
}
