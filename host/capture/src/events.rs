//! Typed events decoded from raw ring-buffer records.
//!
//! Decoding never trusts the record: short, unknown or inconsistent records become a
//! [`DecodeError`] that the caller counts, never a panic.
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use sonde_common::{self as abi, ConnEvent, DataEvent, EventKind, LogEvent};

pub use crate::comm::Comm;

/// Direction of bytes, seen from the traced process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The process wrote/sent the bytes.
    Egress,
    /// The process read/received the bytes.
    Ingress,
}

impl Direction {
    pub fn index(self) -> usize {
        match self {
            Direction::Egress => 0,
            Direction::Ingress => 1,
        }
    }
}

/// Which end of a connection the traced process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Unknown,
    Client,
    Server,
}

impl Role {
    fn from_abi(v: u8) -> Self {
        match v {
            abi::role::CLIENT => Role::Client,
            abi::role::SERVER => Role::Server,
            _ => Role::Unknown,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Unknown => "?",
            Role::Client => "client",
            Role::Server => "server",
        })
    }
}

/// Process identity attached to every event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Task {
    pub tgid: u32,
    pub tid: u32,
    /// The process's name (its thread-group leader's comm): the service identity.
    pub comm: Comm,
    /// The calling thread's own name when it differs from the process's ("" otherwise):
    /// an attribute, never an identity (servers name their worker threads).
    #[serde(skip_serializing_if = "Comm::is_empty")]
    pub thread: Comm,
}

/// One socket read/write that moved bytes.
#[derive(Clone, Debug, Serialize)]
pub struct DataChunk {
    pub task: Task,
    pub fd: i32,
    pub conn_id: u64,
    pub sock: u64,
    pub ts_enter_ns: u64,
    pub ts_exit_ns: u64,
    /// Offset of the first byte of this chunk in its direction's stream.
    pub pos: u64,
    /// Bytes the syscall really moved.
    pub len: u64,
    pub direction: Direction,
    pub role: Role,
    pub syscall: &'static str,
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    /// `peer` came from the syscall's address argument (unconnected UDP).
    pub peer_from_args: bool,
    /// sendmmsg/recvmmsg moved several messages; only the first one's bytes are in `payload`.
    pub multi_msg: bool,
    /// Payload copy failed in the kernel (`payload` empty).
    pub read_failed: bool,
    /// Datagram socket (UDP): chunks are messages.
    pub datagram: bool,
    /// sendfile/splice: the bytes never passed through user memory; `len` is a gap.
    pub spliced: bool,
    /// TLS plaintext from a libssl uprobe: `pos` counts in the connection's plaintext
    /// streams, which are parsed instead of the socket bytes.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
    /// The first `payload.len()` bytes of the `len` moved (the rest was beyond the cap).
    #[serde(skip)]
    pub payload: Bytes,
}

impl DataChunk {
    /// Bytes moved but not captured (cap, copy failure or multi-message tail).
    pub fn truncated(&self) -> u64 {
        self.len.saturating_sub(self.payload.len() as u64)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnEventKind {
    Open,
    Close,
    State,
    /// A TCP reset sent (`syscall` "rst_sent") or received ("rst_received").
    Reset,
}

/// Connection lifecycle event.
#[derive(Clone, Debug, Serialize)]
pub struct ConnChange {
    pub kind: ConnEventKind,
    pub task: Task,
    pub fd: i32,
    pub conn_id: u64,
    pub sock: u64,
    pub ts_ns: u64,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub ret: i64,
    /// The process's cgroup v2 id (open and close; 0 when not in process context).
    pub cgroup_id: u64,
    pub role: Role,
    pub syscall: &'static str,
    pub old_state: TcpState,
    pub new_state: TcpState,
    pub protocol: u8,
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
}

impl ConnChange {
    /// An event of `kind` on socket `sock` between `local` and `peer` at `ts_ns`, in the
    /// softirq context the kernel reports TCP state changes from (no process: comm
    /// `swapper/0`, no fd, no conn id); the rest empty. For tests and benchmarks that feed the
    /// consumers (network map, tracker) synthetic kernel events: set what matters after.
    pub fn synthetic(
        kind: ConnEventKind,
        sock: u64,
        ts_ns: u64,
        local: SocketAddr,
        peer: SocketAddr,
    ) -> ConnChange {
        ConnChange {
            kind,
            task: Task {
                tgid: 10,
                tid: 10,
                comm: "swapper/0".into(),
                thread: Comm::default(),
            },
            fd: -1,
            conn_id: 0,
            sock,
            ts_ns,
            tx_bytes: 0,
            rx_bytes: 0,
            ret: 0,
            cgroup_id: 0,
            role: Role::Unknown,
            syscall: "state",
            old_state: TcpState(0),
            new_state: TcpState(0),
            protocol: 6,
            local: Some(local),
            peer: Some(peer),
        }
    }
}

/// Linux TCP states (include/net/tcp_states.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TcpState(pub u8);

impl TcpState {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const CLOSE: u8 = 7;
    pub fn name(self) -> &'static str {
        const NAMES: [&str; 13] = [
            "-",
            "ESTABLISHED",
            "SYN_SENT",
            "SYN_RECV",
            "FIN_WAIT1",
            "FIN_WAIT2",
            "TIME_WAIT",
            "CLOSE",
            "CLOSE_WAIT",
            "LAST_ACK",
            "LISTEN",
            "CLOSING",
            "NEW_SYN_RECV",
        ];
        NAMES.get(self.0 as usize).copied().unwrap_or("?")
    }
}

/// Which standard stream a [`LogChunk`] was written to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StdStream {
    /// fd 1.
    Stdout,
    /// fd 2.
    Stderr,
    /// A configured log file (`[[logs.files]]`), not a kernel record.
    File,
}

impl StdStream {
    pub fn from_fd(fd: i32) -> Option<Self> {
        match fd {
            1 => Some(StdStream::Stdout),
            2 => Some(StdStream::Stderr),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StdStream::Stdout => "stdout",
            StdStream::Stderr => "stderr",
            StdStream::File => "file",
        }
    }
}

/// One write/writev of a process to its stdout or stderr (not an inet socket).
#[derive(Clone, Debug, Serialize)]
pub struct LogChunk {
    pub task: Task,
    /// 1 or 2.
    pub fd: i32,
    pub stream: StdStream,
    /// The writer's cgroup v2 id (its container).
    pub cgroup_id: u64,
    /// CLOCK_MONOTONIC at syscall exit (the kernel side's `bpf_ktime_get_ns`).
    pub ts_ns: u64,
    /// Bytes the syscall wrote.
    pub len: u64,
    pub syscall: &'static str,
    /// The fd is a unix socket (journald's stdout stream, a socketpair), not a tty, pipe or file.
    pub unix_socket: bool,
    /// Payload copy failed in the kernel (`payload` empty).
    pub read_failed: bool,
    /// The first `payload.len()` bytes of the `len` written (the rest was beyond the cap).
    #[serde(skip)]
    pub payload: Bytes,
}

impl LogChunk {
    /// Bytes written but not captured (cap or copy failure).
    pub fn truncated(&self) -> u64 {
        self.len.saturating_sub(self.payload.len() as u64)
    }
}

#[derive(Clone, Debug)]
pub enum Event {
    Data(DataChunk),
    Conn(ConnChange),
    /// A write to stdout/stderr (`capture_stdio`); not connection traffic.
    Log(LogChunk),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is too short for its header")]
    Short(usize),
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
    #[error("data record claims {claimed} payload bytes but carries {present}")]
    PayloadLength { claimed: u32, present: usize },
    #[error("log record for fd {0}, not stdout or stderr")]
    LogFd(i32),
}

/// Decode one ring-buffer record; its payload gets an allocation of its own (tests, tools).
/// The capture loop uses a [`Decoder`].
pub fn decode(raw: &[u8]) -> Result<Event, DecodeError> {
    decode_with(raw, &mut Bytes::copy_from_slice)
}

/// Bytes of each shared payload buffer of a [`Decoder`]: below glibc's mmap threshold
/// (128 KiB), so a released buffer's memory is reused rather than unmapped; 16 records of
/// 4 KiB, hundreds of a small request's.
pub const PAYLOAD_BLOCK: usize = 64 << 10;

/// Decodes records without an allocation per record: payloads are copied into one shared
/// buffer of [`PAYLOAD_BLOCK`] bytes, each event's payload a view into it (a record larger
/// than a block gets a buffer of its own size), and task names are held inline
/// ([`Comm`]). A buffer is freed when the last view into it is dropped: whoever keeps a
/// payload past the batch it came in (the reassembler's reorder buffer) copies it out first,
/// so a few held bytes never pin a whole block.
#[derive(Debug, Default)]
pub struct Decoder {
    block: BytesMut,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decode one ring-buffer record.
    pub fn decode(&mut self, raw: &[u8]) -> Result<Event, DecodeError> {
        decode_with(raw, &mut |p| self.copy(p))
    }

    fn copy(&mut self, payload: &[u8]) -> Bytes {
        if payload.is_empty() {
            return Bytes::new();
        }
        // After a split, `capacity` is what is left of the block behind the views.
        if self.block.capacity() < payload.len() {
            self.block = BytesMut::with_capacity(PAYLOAD_BLOCK.max(payload.len()));
        }
        self.block.extend_from_slice(payload);
        self.block.split().freeze()
    }
}

fn decode_with(raw: &[u8], copy: &mut impl FnMut(&[u8]) -> Bytes) -> Result<Event, DecodeError> {
    if raw.len() < 4 {
        return Err(DecodeError::Short(raw.len()));
    }
    let kind = u32::from_ne_bytes(raw[..4].try_into().expect("4 bytes"));
    match EventKind::from_u32(kind) {
        Some(EventKind::Data) => decode_data(raw, copy).map(Event::Data),
        Some(EventKind::Log) => decode_log(raw, copy).map(Event::Log),
        Some(k) => decode_conn(raw, k).map(Event::Conn),
        None => Err(DecodeError::UnknownKind(kind)),
    }
}

fn read_struct<T: Copy>(raw: &[u8]) -> Result<T, DecodeError> {
    if raw.len() < size_of::<T>() {
        return Err(DecodeError::Short(raw.len()));
    }
    // SAFETY: length checked; T is a #[repr(C)] plain-data ABI type valid for any bytes;
    // read_unaligned because ring-buffer records are only 8-byte aligned by contract.
    Ok(unsafe { std::ptr::read_unaligned(raw.as_ptr().cast::<T>()) })
}

fn decode_data(
    raw: &[u8],
    copy: &mut impl FnMut(&[u8]) -> Bytes,
) -> Result<DataChunk, DecodeError> {
    let ev: DataEvent = read_struct(raw)?;
    let body = &raw[size_of::<DataEvent>()..];
    let captured = ev.captured as usize;
    if body.len() < captured || captured as u64 > ev.len {
        return Err(DecodeError::PayloadLength {
            claimed: ev.captured,
            present: body.len(),
        });
    }
    Ok(DataChunk {
        task: task_with_thread(ev.tgid, ev.tid, &ev.comm, &ev.thread),
        fd: ev.fd,
        conn_id: ev.conn_id,
        sock: ev.sock,
        ts_enter_ns: ev.ts_enter_ns,
        ts_exit_ns: ev.ts_exit_ns,
        pos: ev.pos,
        len: ev.len,
        direction: if ev.direction == abi::direction::INGRESS {
            Direction::Ingress
        } else {
            Direction::Egress
        },
        role: Role::from_abi(ev.role),
        syscall: syscall_name(ev.syscall),
        local: sock_addr(&ev.local),
        peer: sock_addr(&ev.peer),
        peer_from_args: ev.flags & abi::data_flags::PEER_FROM_ARGS != 0,
        multi_msg: ev.flags & abi::data_flags::MULTI_MSG != 0,
        read_failed: ev.flags & abi::data_flags::READ_FAILED != 0,
        datagram: ev.flags & abi::data_flags::DATAGRAM != 0,
        spliced: ev.flags & abi::data_flags::NO_PAYLOAD != 0,
        tls: ev.flags & abi::data_flags::TLS != 0,
        payload: copy(&body[..captured]),
    })
}

fn decode_log(raw: &[u8], copy: &mut impl FnMut(&[u8]) -> Bytes) -> Result<LogChunk, DecodeError> {
    let ev: LogEvent = read_struct(raw)?;
    let body = &raw[size_of::<LogEvent>()..];
    let captured = ev.captured as usize;
    if body.len() < captured || captured as u64 > ev.len {
        return Err(DecodeError::PayloadLength {
            claimed: ev.captured,
            present: body.len(),
        });
    }
    let stream = StdStream::from_fd(ev.fd).ok_or(DecodeError::LogFd(ev.fd))?;
    Ok(LogChunk {
        task: task(ev.tgid, ev.tid, &ev.comm),
        fd: ev.fd,
        stream,
        cgroup_id: ev.cgroup_id,
        ts_ns: ev.ts_ns,
        len: ev.len,
        syscall: syscall_name(ev.syscall),
        unix_socket: ev.flags & abi::log_flags::UNIX_SOCKET != 0,
        read_failed: ev.flags & abi::log_flags::READ_FAILED != 0,
        payload: copy(&body[..captured]),
    })
}

fn decode_conn(raw: &[u8], kind: EventKind) -> Result<ConnChange, DecodeError> {
    let ev: ConnEvent = read_struct(raw)?;
    Ok(ConnChange {
        kind: match kind {
            EventKind::ConnOpen => ConnEventKind::Open,
            EventKind::ConnClose => ConnEventKind::Close,
            EventKind::Reset => ConnEventKind::Reset,
            _ => ConnEventKind::State,
        },
        task: task(ev.tgid, ev.tid, &ev.comm),
        fd: ev.fd,
        conn_id: ev.conn_id,
        sock: ev.sock,
        ts_ns: ev.ts_ns,
        tx_bytes: ev.tx_bytes,
        rx_bytes: ev.rx_bytes,
        ret: ev.ret,
        cgroup_id: match kind {
            EventKind::ConnOpen | EventKind::ConnClose => ev.cgroup_id,
            _ => 0,
        },
        role: Role::from_abi(ev.role),
        syscall: syscall_name(ev.syscall),
        old_state: TcpState(ev.old_state),
        new_state: TcpState(ev.new_state),
        protocol: ev.protocol,
        local: sock_addr(&ev.local),
        peer: sock_addr(&ev.peer),
    })
}

fn syscall_name(sc: u8) -> &'static str {
    abi::syscall::NAMES.get(sc as usize).copied().unwrap_or("?")
}

pub fn comm_str(comm: &[u8; abi::TASK_COMM_LEN]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

fn task(tgid: u32, tid: u32, comm: &[u8; abi::TASK_COMM_LEN]) -> Task {
    Task {
        tgid,
        tid,
        comm: Comm::from_kernel(comm),
        thread: Comm::default(),
    }
}

fn task_with_thread(
    tgid: u32,
    tid: u32,
    comm: &[u8; abi::TASK_COMM_LEN],
    thread: &[u8; abi::TASK_COMM_LEN],
) -> Task {
    let mut t = task(tgid, tid, comm);
    if thread != comm && thread[0] != 0 {
        t.thread = Comm::from_kernel(thread);
    }
    t
}

/// `None` when the kernel side did not know the address (family 0).
pub fn sock_addr(a: &abi::Addr) -> Option<SocketAddr> {
    let ip = match a.family as i32 {
        libc::AF_INET => IpAddr::V4(Ipv4Addr::new(a.addr[0], a.addr[1], a.addr[2], a.addr[3])),
        libc::AF_INET6 => {
            let v6 = Ipv6Addr::from(a.addr);
            // Dual-stack sockets report IPv4 peers as ::ffff:a.b.c.d; show them as IPv4.
            v6.to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, a.port))
}

/// Encode a data record the way the kernel side does. For unit tests and benchmarks of
/// the user side that need realistic records without loading eBPF.
pub fn encode_data(ev: &DataEvent, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(size_of::<DataEvent>() + payload.len());
    // SAFETY: DataEvent is #[repr(C)] with no implicit padding (see sonde-common).
    out.extend_from_slice(unsafe {
        std::slice::from_raw_parts(
            (ev as *const DataEvent).cast::<u8>(),
            size_of::<DataEvent>(),
        )
    });
    out.extend_from_slice(payload);
    out
}

/// Encode a log record the way the kernel side does (tests and benchmarks).
pub fn encode_log(ev: &LogEvent, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(size_of::<LogEvent>() + payload.len());
    // SAFETY: LogEvent is #[repr(C)] with explicit padding (see sonde-common).
    out.extend_from_slice(unsafe {
        std::slice::from_raw_parts((ev as *const LogEvent).cast::<u8>(), size_of::<LogEvent>())
    });
    out.extend_from_slice(payload);
    out
}

/// Encode a connection record the way the kernel side does (tests and benchmarks).
pub fn encode_conn(ev: &abi::ConnEvent) -> Vec<u8> {
    // SAFETY: ConnEvent is #[repr(C)] with explicit padding (see sonde-common).
    unsafe {
        std::slice::from_raw_parts(
            (ev as *const abi::ConnEvent).cast::<u8>(),
            size_of::<abi::ConnEvent>(),
        )
    }
    .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_event(len: u64, captured: u32) -> DataEvent {
        DataEvent {
            kind: EventKind::Data as u32,
            tgid: 7,
            tid: 8,
            fd: 3,
            conn_id: 1,
            sock: 0xffff,
            ts_enter_ns: 1,
            ts_exit_ns: 2,
            pos: 0,
            len,
            captured,
            direction: abi::direction::INGRESS,
            role: abi::role::SERVER,
            syscall: abi::syscall::RECVMSG,
            flags: abi::data_flags::PEER_FROM_ARGS,
            local: abi::Addr {
                family: libc::AF_INET as u16,
                port: 80,
                addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            },
            peer: abi::Addr::default(),
            comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
            thread: *b"curl-worker\0\0\0\0\0",
        }
    }

    #[test]
    fn decodes_data_record() {
        let raw = encode_data(&data_event(10, 3), b"abc");
        let Event::Data(d) = decode(&raw).unwrap() else {
            panic!("not data")
        };
        assert_eq!(d.task.comm, "curl");
        assert_eq!(
            d.task.thread, "curl-worker",
            "the thread is an attribute beside the process"
        );
        assert_eq!(d.payload.as_ref(), b"abc");
        assert_eq!(d.truncated(), 7);
        assert_eq!(d.local, Some("127.0.0.1:80".parse().unwrap()));
        assert_eq!(d.peer, None);
        assert_eq!(d.syscall, "recvmsg");
        assert!(d.peer_from_args);
        assert_eq!(d.direction, Direction::Ingress);
        assert_eq!(d.role, Role::Server);
    }

    #[test]
    fn a_decoder_gives_each_event_its_own_bytes_from_shared_blocks() {
        let mut decoder = Decoder::new();
        // Enough records to fill several blocks, one larger than a block, and empty payloads.
        let sizes = [0, 1, 3000, PAYLOAD_BLOCK + 7, 0, 40_000, 40_000, 5];
        let payloads: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|b| (b + i) as u8).collect())
            .collect();
        let decoded: Vec<DataChunk> = payloads
            .iter()
            .map(|p| {
                let raw = encode_data(&data_event(p.len() as u64, p.len() as u32), p);
                let Event::Data(d) = decoder.decode(&raw).unwrap() else {
                    panic!("not data")
                };
                d
            })
            .collect();
        for (d, p) in decoded.iter().zip(&payloads) {
            assert_eq!(d.payload.as_ref(), p.as_slice(), "views do not overlap");
            assert_eq!(d.truncated(), 0);
            assert_eq!(d.task.comm, "curl");
        }
        // The same records through the allocating path decode to the same events.
        for p in &payloads {
            let raw = encode_data(&data_event(p.len() as u64, p.len() as u32), p);
            let (Event::Data(a), Event::Data(b)) =
                (decode(&raw).unwrap(), decoder.decode(&raw).unwrap())
            else {
                panic!("not data")
            };
            assert_eq!(a.payload, b.payload);
            assert_eq!(a.task, b.task);
        }
    }

    #[test]
    fn rejects_bad_records() {
        assert_eq!(decode(&[1, 0]).unwrap_err(), DecodeError::Short(2));
        assert_eq!(
            decode(&[99, 0, 0, 0]).unwrap_err(),
            DecodeError::UnknownKind(99)
        );
        let raw = encode_data(&data_event(10, 5), b"abc");
        assert!(matches!(
            decode(&raw),
            Err(DecodeError::PayloadLength { .. })
        ));
        let mut short = encode_data(&data_event(10, 0), b"");
        short.truncate(100);
        assert_eq!(decode(&short).unwrap_err(), DecodeError::Short(100));
    }

    fn log_event(fd: i32, len: u64, captured: u32) -> LogEvent {
        LogEvent {
            kind: EventKind::Log as u32,
            tgid: 7,
            tid: 9,
            fd,
            cgroup_id: 42,
            ts_ns: 5,
            len,
            captured,
            syscall: abi::syscall::WRITEV,
            flags: abi::log_flags::UNIX_SOCKET,
            _pad: [0; 2],
            comm: *b"app\0\0\0\0\0\0\0\0\0\0\0\0\0",
        }
    }

    #[test]
    fn log_record_layout() {
        assert_eq!(size_of::<LogEvent>(), 64, "no implicit padding");
    }

    #[test]
    fn decodes_log_record() {
        let raw = encode_log(&log_event(2, 12, 5), b"ERROR");
        let Event::Log(l) = decode(&raw).unwrap() else {
            panic!("not a log")
        };
        assert_eq!(l.task.comm, "app");
        assert_eq!((l.task.tgid, l.task.tid, l.fd), (7, 9, 2));
        assert_eq!(l.stream, StdStream::Stderr);
        assert_eq!(l.cgroup_id, 42);
        assert_eq!(l.payload.as_ref(), b"ERROR");
        assert_eq!(l.truncated(), 7);
        assert_eq!(l.syscall, "writev");
        assert!(l.unix_socket && !l.read_failed);
    }

    #[test]
    fn rejects_bad_log_records() {
        // Claims more than it carries.
        let raw = encode_log(&log_event(1, 10, 5), b"abc");
        assert!(matches!(
            decode(&raw),
            Err(DecodeError::PayloadLength { .. })
        ));
        // Captured more than written.
        let raw = encode_log(&log_event(1, 2, 3), b"abc");
        assert!(matches!(
            decode(&raw),
            Err(DecodeError::PayloadLength { .. })
        ));
        // Not a standard stream.
        let raw = encode_log(&log_event(5, 3, 3), b"abc");
        assert_eq!(decode(&raw).unwrap_err(), DecodeError::LogFd(5));
        // Header cut short.
        let mut raw = encode_log(&log_event(1, 0, 0), b"");
        raw.truncate(40);
        assert_eq!(decode(&raw).unwrap_err(), DecodeError::Short(40));
    }

    #[test]
    fn v4_mapped_addresses_read_as_v4() {
        let mut a = abi::Addr {
            family: libc::AF_INET6 as u16,
            port: 443,
            addr: [0; 16],
        };
        a.addr[10] = 0xff;
        a.addr[11] = 0xff;
        a.addr[12..].copy_from_slice(&[10, 1, 2, 3]);
        assert_eq!(sock_addr(&a), Some("10.1.2.3:443".parse().unwrap()));
    }
}
