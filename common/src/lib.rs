//! The ABI between Sonde's eBPF programs and the daemon.
//!
//! Every type here is `#[repr(C)]`, has no implicit padding (padding is spelled out so the
//! kernel side never leaks uninitialised stack into the ring buffer) and is read by user space
//! from raw ring-buffer bytes with explicit length checks (see `host/capture/src/events.rs`).
//! Changing a layout is a breaking change for both sides; they are built together from one tree.
#![no_std]

/// Upper bound, fixed at compile time, on the payload one syscall event can carry.
/// The run-time cap ([`Config::capture_bytes`]) may be lower, never higher.
pub const MAX_CAPTURE: usize = 32 * 1024;
/// Default run-time payload cap per syscall.
pub const DEFAULT_CAPTURE_BYTES: u32 = 16 * 1024;
/// The smallest run-time cap: below it a typical request or response head (HTTP, a MySQL
/// packet header with its statement) no longer fits in one syscall's copy.
pub const MIN_CAPTURE_BYTES: u32 = 1024;
/// iovecs walked per readv/writev/sendmsg/recvmsg with the `bpf_loop` helper (Linux ≥ 5.17):
/// UIO_MAXIOV, the most one syscall accepts, so every iovec is walked (the bytes copied are
/// still capped by the capture size).
pub const MAX_IOV_LOOP: u32 = 1024;
/// iovecs walked by the unrolled fallback, on a kernel without `bpf_loop`
/// ([`config_flags::BPF_LOOP`] unset).
pub const MAX_IOV: u32 = 16;
/// Capacity of the `EXECS` queue (tgids that exec'd, for the TLS discovery): user space
/// rescans all of `/proc` when it pops this many at once (the queue was full, pushes lost).
pub const EXECS_CAPACITY: u32 = 4096;
/// Messages whose lengths are summed for sendmmsg/recvmmsg (only the first is captured).
pub const MAX_MMSG: u32 = 16;
pub const TASK_COMM_LEN: usize = 16;
/// Upper bound, fixed at compile time, on the payload one stdout/stderr log chunk can carry.
/// The run-time cap ([`Config::stdio_bytes`]) may be lower, never higher.
pub const MAX_STDIO: usize = 4096;
/// Default run-time payload cap per stdout/stderr write.
pub const DEFAULT_STDIO_BYTES: u32 = 512;
/// Default rate limit of stdout/stderr chunks, per second per CPU.
pub const DEFAULT_STDIO_PER_SEC: u32 = 2000;
// The kernel side bounds copies with `& (MAX_* - 1)` masks.
const _: () = assert!(MAX_CAPTURE.is_power_of_two() && MAX_STDIO.is_power_of_two());

/// First `u32` of every ring-buffer record.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// [`DataEvent`] followed by `captured` payload bytes.
    Data = 1,
    /// [`ConnEvent`] from connect/accept (a connection is born on an fd). A connect that
    /// failed outright (refused, unreachable) is reported too, with its errno in `ret` and
    /// `conn_id` 0: no connection exists. An accept without an address buffer is announced
    /// at the connection's first data, once the socket is known to be inet.
    ConnOpen = 2,
    /// [`ConnEvent`] from close (the fd's connection ends; byte totals are final).
    ConnClose = 3,
    /// [`ConnEvent`] from `sock:inet_sock_set_state` (TCP state machine; no fd).
    SockState = 4,
    /// [`ConnEvent`] from `tcp:tcp_send_reset` / `tcp:tcp_receive_reset`: `syscall` is
    /// [`syscall::RST_SENT`] or [`syscall::RST_RECEIVED`], `old_state` the socket's TCP state
    /// when known, `sock` 0 for a reset sent on behalf of no socket (a SYN to a closed port).
    Reset = 5,
    /// [`LogEvent`] followed by `captured` payload bytes: a write to fd 1 or 2 that did not
    /// go to an inet socket (a tty, pipe, file or unix socket such as journald's).
    Log = 6,
}

impl EventKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Data,
            2 => Self::ConnOpen,
            3 => Self::ConnClose,
            4 => Self::SockState,
            5 => Self::Reset,
            6 => Self::Log,
            _ => return None,
        })
    }
}

/// Direction of a data chunk, seen from the traced process.
pub mod direction {
    /// The process wrote/sent the bytes.
    pub const EGRESS: u8 = 0;
    /// The process read/received the bytes.
    pub const INGRESS: u8 = 1;
}

/// Which end of the connection the traced process is.
pub mod role {
    pub const UNKNOWN: u8 = 0;
    /// The process called connect() (or the socket went CLOSE -> SYN_SENT).
    pub const CLIENT: u8 = 1;
    /// The process accepted it (or the socket went SYN_RECV -> ESTABLISHED).
    pub const SERVER: u8 = 2;
}

/// The syscall an event came from.
pub mod syscall {
    pub const READ: u8 = 0;
    pub const WRITE: u8 = 1;
    pub const READV: u8 = 2;
    pub const WRITEV: u8 = 3;
    pub const SENDTO: u8 = 4;
    pub const RECVFROM: u8 = 5;
    pub const SENDMSG: u8 = 6;
    pub const RECVMSG: u8 = 7;
    pub const SENDMMSG: u8 = 8;
    pub const RECVMMSG: u8 = 9;
    pub const CONNECT: u8 = 10;
    pub const ACCEPT: u8 = 11;
    pub const ACCEPT4: u8 = 12;
    pub const CLOSE: u8 = 13;
    /// Not a syscall: `sock:inet_sock_set_state`.
    pub const STATE: u8 = 14;
    /// Not a syscall: `tcp:tcp_send_reset`.
    pub const RST_SENT: u8 = 15;
    /// Not a syscall: `tcp:tcp_receive_reset`.
    pub const RST_RECEIVED: u8 = 16;
    /// sendfile/sendfile64 to a socket: bytes moved from a file, never in user memory.
    pub const SENDFILE: u8 = 17;
    /// splice from or to a socket: bytes moved through a pipe, never in user memory.
    pub const SPLICE: u8 = 18;
    /// Not a syscall: the plaintext of OpenSSL's `SSL_write`/`SSL_write_ex` (uretprobe), or of
    /// Go's `crypto/tls.(*Conn).Write` (uprobes on its RETs).
    pub const SSL_WRITE: u8 = 19;
    /// Not a syscall: the plaintext of OpenSSL's `SSL_read`/`SSL_read_ex` (uretprobe), or of
    /// Go's `crypto/tls.(*Conn).Read` (uprobes on its RETs).
    pub const SSL_READ: u8 = 20;

    pub const NAMES: [&str; 21] = [
        "read",
        "write",
        "readv",
        "writev",
        "sendto",
        "recvfrom",
        "sendmsg",
        "recvmsg",
        "sendmmsg",
        "recvmmsg",
        "connect",
        "accept",
        "accept4",
        "close",
        "state",
        "rst_sent",
        "rst_received",
        "sendfile",
        "splice",
        "ssl_write",
        "ssl_read",
    ];

    /// true for the syscalls whose bytes flow from the process to the socket.
    pub const fn is_egress(sc: u8) -> bool {
        matches!(sc, WRITE | WRITEV | SENDTO | SENDMSG | SENDMMSG)
    }
}

/// Flags on a [`DataEvent`].
pub mod data_flags {
    /// `peer` came from the syscall's own address argument (sendto/recvfrom/msg_name),
    /// not from the socket: an unconnected UDP socket talking to this peer.
    pub const PEER_FROM_ARGS: u8 = 1;
    /// sendmmsg/recvmmsg moved more than one message; only the first one's payload is in the
    /// event, `len` counts all of them.
    pub const MULTI_MSG: u8 = 2;
    /// The payload copy from user memory failed (page not present): `captured` is 0.
    pub const READ_FAILED: u8 = 4;
    /// The socket is a datagram (UDP) socket: chunks are messages, not a byte stream.
    pub const DATAGRAM: u8 = 8;
    /// The bytes never passed through user memory (sendfile, splice): `captured` is 0 and
    /// the whole `len` is a gap of known length, so parsers stay in step with the stream.
    pub const NO_PAYLOAD: u8 = 16;
    /// TLS plaintext from a libssl uprobe (`SSL_read`/`SSL_write`): `pos` counts in the
    /// connection's plaintext stream, which user space parses instead of the socket bytes.
    pub const TLS: u8 = 32;
}

/// A socket address as the kernel side fills it. `family` is AF_INET (2) or AF_INET6 (10),
/// 0 when unknown. `port` is in host byte order. IPv4 addresses use the first 4 bytes of `addr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Addr {
    pub family: u16,
    pub port: u16,
    pub addr: [u8; 16],
}

/// One socket read or write that moved bytes, followed in the ring buffer by `captured` bytes
/// of payload (the first `captured` of the `len` bytes moved).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DataEvent {
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    pub fd: i32,
    /// Unique per connection for the kernel's lifetime of this daemon: a reused fd gets a new one.
    pub conn_id: u64,
    /// Kernel `struct sock *`, to join with [`EventKind::SockState`] events.
    pub sock: u64,
    pub ts_enter_ns: u64,
    pub ts_exit_ns: u64,
    /// Offset of this chunk's first byte in its direction's byte stream (per connection).
    pub pos: u64,
    /// Bytes the syscall really moved (its return value; summed over messages for *mmsg).
    pub len: u64,
    /// Payload bytes that follow this header (≤ len, ≤ the capture cap).
    pub captured: u32,
    pub direction: u8,
    pub role: u8,
    pub syscall: u8,
    pub flags: u8,
    pub local: Addr,
    pub peer: Addr,
    /// The process's name (its thread-group leader's comm): the service identity.
    pub comm: [u8; TASK_COMM_LEN],
    /// The calling thread's own name (`isc-net-0000`, `nginx: worker`…), an attribute only.
    pub thread: [u8; TASK_COMM_LEN],
}

/// Flags on a [`LogEvent`].
pub mod log_flags {
    /// The payload copy from user memory failed: `captured` is 0.
    pub const READ_FAILED: u8 = 1;
    /// The fd is a non-inet socket (AF_UNIX: journald's stdout stream, a socketpair), not a
    /// tty, pipe or file.
    pub const UNIX_SOCKET: u8 = 2;
}

/// One write/writev to stdout (fd 1) or stderr (fd 2) that moved bytes, followed in the ring
/// buffer by `captured` bytes of payload (the first `captured` of the `len` bytes written).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LogEvent {
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    /// 1 (stdout) or 2 (stderr).
    pub fd: i32,
    /// cgroup v2 id of the writer (the inode of its cgroup directory).
    pub cgroup_id: u64,
    /// `bpf_ktime_get_ns` at syscall exit (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// Bytes the syscall wrote (its return value).
    pub len: u64,
    /// Payload bytes that follow this header (≤ len, ≤ the stdio cap).
    pub captured: u32,
    pub syscall: u8,
    pub flags: u8,
    pub _pad: [u8; 2],
    pub comm: [u8; TASK_COMM_LEN],
}

/// Connection lifecycle: open (connect/accept), close, TCP state change.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnEvent {
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    pub fd: i32,
    pub conn_id: u64,
    pub sock: u64,
    pub ts_ns: u64,
    /// Close: bytes written/read over the connection's life, including bytes not captured
    /// (cap, verdict). Open/state: 0.
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    /// connect(): its return value (0, -EINPROGRESS, -ECONNREFUSED…). accept: the new fd.
    pub ret: i64,
    /// cgroup v2 id of the current task (the inode of its cgroup directory): the container,
    /// even when the process is gone before the daemon looks at /proc. Only meaningful in
    /// process context (open, close); state changes and resets run in softirq.
    pub cgroup_id: u64,
    pub role: u8,
    pub syscall: u8,
    /// SockState: TCP states (TCP_ESTABLISHED = 1 … TCP_NEW_SYN_RECV = 12).
    pub old_state: u8,
    pub new_state: u8,
    /// IPPROTO_TCP (6) / IPPROTO_UDP (17) when known.
    pub protocol: u8,
    pub _pad: [u8; 3],
    pub local: Addr,
    pub peer: Addr,
    pub comm: [u8; TASK_COMM_LEN],
}

/// Per-CPU counters in the `STATS` map, one slot each. Every drop has a slot.
pub mod stat {
    /// Data events that did not fit in the ring buffer (payload and header lost).
    pub const DATA_LOST: u32 = 0;
    /// Connection events that did not fit in the ring buffer.
    pub const CONN_LOST: u32 = 1;
    /// Data events written.
    pub const DATA_EVENTS: u32 = 2;
    /// Bytes moved by captured syscalls but beyond the cap (not copied; marked as a gap).
    pub const BYTES_TRUNCATED: u32 = 3;
    /// In-flight syscall table full: a syscall could not be followed.
    pub const INFLIGHT_FULL: u32 = 4;
    /// Connection table full: a connection could not be tracked.
    pub const CONN_TABLE_FULL: u32 = 5;
    /// Payload copy from user memory failed.
    pub const READ_FAILED: u32 = 6;
    /// Bytes not copied because the daemon's verdict said so (still counted per connection).
    pub const BYTES_SKIPPED_BY_VERDICT: u32 = 7;
    /// Connection events written.
    pub const CONN_EVENTS: u32 = 8;
    /// A per-flow, per-drop or per-interface counter could not get a map entry (the update
    /// is lost; the LRU maps evict old entries first, so this means an insert failed).
    pub const NET_MAP_FULL: u32 = 9;
    /// A dropped packet whose IP header could not be read: counted under its drop reason
    /// and protocol only, without a flow.
    pub const DROP_NO_HEADERS: u32 = 10;
    /// stdout/stderr log chunks written to the ring.
    pub const LOG_EVENTS: u32 = 11;
    /// stdout/stderr log chunks that did not fit in the ring buffer (or found no scratch).
    pub const LOG_LOST: u32 = 12;
    /// stdout/stderr payload copies from user memory that failed (the chunk goes out empty).
    pub const LOG_READ_FAILED: u32 = 13;
    /// stdout/stderr bytes written beyond the stdio cap (not copied).
    pub const LOG_BYTES_TRUNCATED: u32 = 14;
    /// stdout/stderr log chunks dropped by the per-CPU rate limit ([`super::Config::stdio_per_sec`]).
    pub const LOG_RATE_LIMITED: u32 = 15;
    /// Bytes moved by sendfile/splice on sockets: never in user memory, passed on as gaps.
    pub const BYTES_SPLICED: u32 = 16;
    /// TLS plaintext (an `SSL_read`/`SSL_write` return) whose SSL object was never seen on a
    /// socket (no socket syscall inside an SSL call of that thread yet), or a Go `tls.Conn`
    /// whose socket fd is not a tracked connection: not emitted.
    pub const TLS_WITHOUT_CONN: u32 = 17;
    /// TLS plaintext events written (also counted in `data_events`).
    pub const TLS_EVENTS: u32 = 18;
    /// Syscalls, calls and kernel events left out by the capture scope
    /// ([`super::Config::scope_cgroup_levels`], [`super::config_flags::SCOPE_NETNS`]…): a task
    /// or socket outside the configured network namespaces or cgroups.
    pub const OUT_OF_SCOPE: u32 = 19;
    pub const COUNT: u32 = 20;
    pub const NAMES: [&str; COUNT as usize] = [
        "data_lost",
        "conn_lost",
        "data_events",
        "bytes_truncated",
        "inflight_full",
        "conn_table_full",
        "read_failed",
        "bytes_skipped_by_verdict",
        "conn_events",
        "net_map_full",
        "drop_no_headers",
        "log_events",
        "log_lost",
        "log_read_failed",
        "log_bytes_truncated",
        "log_rate_limited",
        "bytes_spliced",
        "tls_without_conn",
        "tls_events",
        "out_of_scope",
    ];
}

/// One process's io_uring use (`IO_URING` map, key tgid): sockets driven through io_uring
/// bypass every syscall Sonde traces, so they are counted, not captured.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IoUringUse {
    /// The process's name when first seen.
    pub comm: [u8; TASK_COMM_LEN],
    /// Requests submitted.
    pub requests: u64,
    /// Of which socket operations (send, recv, sendmsg, recvmsg, accept, connect, socket…).
    pub socket_requests: u64,
}

/// Per-connection verdicts the daemon writes into the `VERDICTS` map (key: conn_id).
pub mod verdict {
    /// Copy payload (the default when a connection has no entry).
    pub const CAPTURE: u8 = 0;
    /// Stop copying payload; keep counting bytes and positions.
    pub const SKIP_PAYLOAD: u8 = 1;
    /// A TLS connection: stop copying its socket bytes (the records, which are never parsed)
    /// but keep copying the plaintext of the libssl uprobes.
    pub const SKIP_CIPHERTEXT: u8 = 2;
}

/// Byte offsets of fields in tracepoint records and kernel structs, read by user space from
/// tracefs `format` files and BTF at load time, so the kernel side needs no CO-RE.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Offsets {
    /// `sock:sock_send_length` / `sock:sock_recv_length`: `sk` and `family` fields.
    pub send_len_sk: u16,
    pub send_len_family: u16,
    pub recv_len_sk: u16,
    pub recv_len_family: u16,
    /// `sock:inet_sock_set_state` fields.
    pub state_skaddr: u16,
    pub state_oldstate: u16,
    pub state_newstate: u16,
    pub state_sport: u16,
    pub state_dport: u16,
    pub state_family: u16,
    pub state_protocol: u16,
    pub state_saddr: u16,
    pub state_daddr: u16,
    pub state_saddr_v6: u16,
    pub state_daddr_v6: u16,
    /// `struct sock_common` (at offset 0 of `struct sock`).
    pub skc_daddr: u16,
    pub skc_rcv_saddr: u16,
    pub skc_dport: u16,
    pub skc_num: u16,
    pub skc_family: u16,
    pub skc_v6_daddr: u16,
    pub skc_v6_rcv_saddr: u16,
    /// `sock:sock_send_length` / `sock:sock_recv_length`: `protocol` fields.
    pub send_len_protocol: u16,
    pub recv_len_protocol: u16,
    /// From the current task to a socket by fd (kernels without sock_*_length, and
    /// sendfile/splice everywhere): task->files->fdt->fd[fd]->f_inode->i_mode,
    /// ->private_data (struct socket)->sk->sk_protocol.
    pub task_files: u16,
    pub files_fdt: u16,
    pub fdt_max_fds: u16,
    pub fdt_fd: u16,
    pub file_inode: u16,
    pub file_private_data: u16,
    pub inode_mode: u16,
    pub socket_sk: u16,
    pub sock_protocol: u16,
    /// task->group_leader->comm: the process name, whatever the thread calls itself.
    pub task_group_leader: u16,
    pub task_comm: u16,
    /// `io_uring:io_uring_submit_req`: `opcode` (0 when the kernel has no such tracepoint).
    pub uring_opcode: u16,
}

/// Struct offsets for the capture scope's namespace checks, from BTF. Apart from [`Offsets`]
/// so the programs that copy those (every socket program, `cfg!(offsets)`) copy no more
/// without a scope.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ScopeOffsets {
    /// task->nsproxy->net_ns: the current task's `struct net *`.
    pub task_nsproxy: u16,
    pub nsproxy_net_ns: u16,
    /// `sk->__sk_common.skc_net`: a socket's `struct net *`.
    pub skc_net: u16,
    /// `struct net`: `ns.inum`, the namespace's inode (what `/proc/<pid>/ns/net` shows).
    pub net_inum: u16,
}

impl Offsets {
    pub const ZERO: Offsets = Offsets {
        send_len_sk: 0,
        send_len_family: 0,
        recv_len_sk: 0,
        recv_len_family: 0,
        state_skaddr: 0,
        state_oldstate: 0,
        state_newstate: 0,
        state_sport: 0,
        state_dport: 0,
        state_family: 0,
        state_protocol: 0,
        state_saddr: 0,
        state_daddr: 0,
        state_saddr_v6: 0,
        state_daddr_v6: 0,
        skc_daddr: 0,
        skc_rcv_saddr: 0,
        skc_dport: 0,
        skc_num: 0,
        skc_family: 0,
        skc_v6_daddr: 0,
        skc_v6_rcv_saddr: 0,
        send_len_protocol: 0,
        recv_len_protocol: 0,
        task_files: 0,
        files_fdt: 0,
        fdt_max_fds: 0,
        fdt_fd: 0,
        file_inode: 0,
        file_private_data: 0,
        inode_mode: 0,
        socket_sk: 0,
        sock_protocol: 0,
        task_group_leader: 0,
        task_comm: 0,
        uring_opcode: 0,
    };
}

/// Load-time configuration, written into the eBPF object's read-only `CONFIG` global so the
/// verifier sees the values as constants.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// The daemon's own tgid: never traced (its output would feed back into itself).
    pub self_tgid: u32,
    /// Payload bytes copied per syscall (≤ MAX_CAPTURE).
    pub capture_bytes: u32,
    /// Wake the daemon only once this many bytes wait in the ring buffer; below, records go
    /// in silently and the daemon's poll timer collects them. A wakeup per record costs more
    /// than the record itself on a busy node.
    pub wakeup_bytes: u32,
    /// Payload bytes copied per stdout/stderr write (≤ MAX_STDIO).
    pub stdio_bytes: u32,
    /// [`config_flags`] bits.
    pub flags: u32,
    /// The daemon's tgid, never traced for stdout/stderr even with `self_tgid` 0 (tracing
    /// itself): its own log lines would feed back into it.
    pub daemon_tgid: u32,
    /// stdout/stderr chunks per second per CPU; beyond, dropped and counted
    /// ([`stat::LOG_RATE_LIMITED`]) so chatty writers (`yes > /dev/null`) cannot fill the ring
    /// that socket data shares. 0: no limit.
    pub stdio_per_sec: u32,
    /// The capture scope's cgroups: bit `n` set when a configured cgroup sits at level `n`
    /// of the cgroup v2 tree (the root is level 0), so the kernel side asks
    /// `bpf_get_current_ancestor_cgroup_id` only at those levels. 0: no cgroup scope.
    pub scope_cgroup_levels: u32,
    pub offsets: Offsets,
    pub net: net::NetOffsets,
    pub scope: ScopeOffsets,
}

impl Config {
    /// What the eBPF object holds until user space overwrites it at load time.
    pub const DEFAULT: Config = Config {
        self_tgid: 0,
        capture_bytes: DEFAULT_CAPTURE_BYTES,
        wakeup_bytes: 0,
        stdio_bytes: DEFAULT_STDIO_BYTES,
        flags: 0,
        daemon_tgid: 0,
        stdio_per_sec: DEFAULT_STDIO_PER_SEC,
        scope_cgroup_levels: 0,
        offsets: Offsets::ZERO,
        net: net::NetOffsets::ZERO,
        scope: ScopeOffsets {
            task_nsproxy: 0,
            nsproxy_net_ns: 0,
            skc_net: 0,
            net_inum: 0,
        },
    };
}

/// Bits of [`Config::flags`].
pub mod config_flags {
    /// Emit [`super::LogEvent`]s for writes to stdout/stderr.
    pub const CAPTURE_STDIO: u32 = 1;
    /// Learn that an fd is an inet socket by walking the task's file table at syscall exit
    /// (`Offsets::task_files`…) instead of the `sock:sock_{send,recv}_length` tracepoints,
    /// which appeared in Linux 6.3.
    pub const SOCK_FROM_FD: u32 = 2;
    /// Test switch: the optional sendfile/splice program takes a path the verifier must
    /// reject, so tests can prove that an optional program failing leaves the rest running.
    pub const TEST_REJECT_SPLICE: u32 = 4;
    /// Tests only: `sonde_ssl_read_ret` makes a read the verifier must refuse (the TLS
    /// feature turns off alone).
    pub const TEST_REJECT_TLS: u32 = 8;
    /// The kernel has the `bpf_loop` helper (Linux ≥ 5.17, found by a load probe): iovec
    /// arrays are walked by it up to [`super::MAX_IOV_LOOP`] entries; without it, by an
    /// unrolled loop of [`super::MAX_IOV`]. The flag is read-only data, so the verifier
    /// prunes the walk not taken and never sees a helper this kernel lacks.
    pub const BPF_LOOP: u32 = 16;
    /// Benchmarks only (`SONDE_BENCH_FLOOR=1`): every program returns at once, attached to
    /// the same points, so `bench/capture-overhead.sh --floor` measures the attachments' own
    /// cost, the floor under any tracepoint-based capture.
    pub const FLOOR_ONLY: u32 = 32;
    /// The capture scope names network namespaces (inodes in the `SCOPE_NETNS` map).
    pub const SCOPE_NETNS: u32 = 64;
    /// The capture scope names cgroups (ids in `SCOPE_CGROUPS`, levels in
    /// [`super::Config::scope_cgroup_levels`]).
    pub const SCOPE_CGROUPS: u32 = 128;
    /// The scope's namespaces and cgroups are left out, everything else captured; without
    /// it only what is inside them (every list given must match) is captured.
    pub const SCOPE_EXCLUDE: u32 = 256;
}

/// Most entries of each capture-scope map (`SCOPE_NETNS`, `SCOPE_CGROUPS`).
pub const MAX_SCOPE_ENTRIES: u32 = 64;
/// Deepest cgroup v2 level a scope cgroup may sit at (the kernel side checks up to here).
pub const MAX_SCOPE_CGROUP_LEVEL: u32 = 31;

pub mod net;

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain #[repr(C)] data with explicit padding and no pointers.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: plain #[repr(C)] data with explicit padding and no pointers.
    unsafe impl aya::Pod for super::Addr {}
    // SAFETY: plain #[repr(C)] data with explicit padding and no pointers.
    unsafe impl aya::Pod for super::IoUringUse {}
    // SAFETY: plain #[repr(C)] data with explicit padding and no pointers.
    unsafe impl aya::Pod for super::net::FlowKey {}
    // SAFETY: plain #[repr(C)] data with explicit padding and no pointers.
    unsafe impl aya::Pod for super::net::FlowStats {}
    // SAFETY: plain #[repr(C)] data with explicit padding and no pointers.
    unsafe impl aya::Pod for super::net::DropKey {}
    // SAFETY: plain #[repr(C)] data with explicit padding and no pointers.
    unsafe impl aya::Pod for super::net::DropStats {}
    // SAFETY: plain #[repr(C)] data with explicit padding and no pointers.
    unsafe impl aya::Pod for super::net::IfaceStats {}
}
