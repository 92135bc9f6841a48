//! Which program goes on which tracepoint, the feature each one serves, and loading them one
//! at a time: only the core socket capture is fatal; an optional program that the kernel
//! lacks or the verifier refuses turns its own feature off, with one warning and a status.
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use aya::{Ebpf, programs::TracePoint};

use super::budget::ProgramCost;

/// How the kernel side learns that an fd is an inet socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SocketLookup {
    /// The tracepoints where the kernel has them (Linux ≥ 6.3), the file table otherwise.
    Auto,
    /// `sock:sock_send_length` / `sock:sock_recv_length` (one hit per socket call).
    Tracepoint,
    /// Walk the task's file table at syscall exit (every kernel).
    FdTable,
}

/// One program on one tracepoint.
#[derive(Debug, Clone, Copy)]
pub struct Attachment {
    pub program: &'static str,
    pub category: &'static str,
    pub tracepoint: &'static str,
    pub feature: Feature,
}

/// What a program is for; core features are fatal when they cannot run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Feature {
    /// Socket reads/writes, connect/accept/close (and stdout/stderr capture, which rides on
    /// the write programs).
    SocketIo,
    /// sock_*_length tracepoints (only with [`SocketLookup::Tracepoint`]).
    SocketLookup,
    /// TCP state changes (roles, the map).
    TcpState,
    /// sendfile/splice on sockets, passed on as gaps.
    Sendfile,
    /// io_uring submissions counted per process (sockets driven through it are invisible).
    IoUring,
    /// The network probes.
    TcpRtt,
    Retransmits,
    Resets,
    Drops,
    Interfaces,
    Softirq,
    /// TLS plaintext through uprobes on libssl (OpenSSL 1.1/3, dynamically linked).
    Tls,
}

impl Feature {
    pub fn name(self) -> &'static str {
        match self {
            Feature::SocketIo => "socket-io",
            Feature::SocketLookup => "socket-lookup",
            Feature::TcpState => "tcp-state",
            Feature::Sendfile => "sendfile",
            Feature::IoUring => "io-uring",
            Feature::TcpRtt => "tcp-rtt",
            Feature::Retransmits => "retransmits",
            Feature::Resets => "resets",
            Feature::Drops => "drops",
            Feature::Interfaces => "interfaces",
            Feature::Softirq => "softirq",
            Feature::Tls => "tls",
        }
    }

    /// A network-quality probe (the service map's edge health).
    pub fn is_network(self) -> bool {
        !matches!(
            self,
            Feature::SocketIo
                | Feature::SocketLookup
                | Feature::TcpState
                | Feature::Sendfile
                | Feature::IoUring
                | Feature::Tls
        )
    }

    pub fn is_core(self) -> bool {
        matches!(
            self,
            Feature::SocketIo | Feature::SocketLookup | Feature::TcpState
        )
    }
}

const fn at(
    program: &'static str,
    category: &'static str,
    tracepoint: &'static str,
    feature: Feature,
) -> Attachment {
    Attachment {
        program,
        category,
        tracepoint,
        feature,
    }
}

/// Payload capture: syscall entries and exits, one exit program per direction and class.
pub const SOCKET_IO: &[Attachment] = &[
    at(
        "sonde_enter_read",
        "syscalls",
        "sys_enter_read",
        Feature::SocketIo,
    ),
    at(
        "sonde_enter_write",
        "syscalls",
        "sys_enter_write",
        Feature::SocketIo,
    ),
    at(
        "sonde_enter_readv",
        "syscalls",
        "sys_enter_readv",
        Feature::SocketIo,
    ),
    at(
        "sonde_enter_writev",
        "syscalls",
        "sys_enter_writev",
        Feature::SocketIo,
    ),
    at(
        "sonde_enter_sendto",
        "syscalls",
        "sys_enter_sendto",
        Feature::SocketIo,
    ),
    at(
        "sonde_enter_recvfrom",
        "syscalls",
        "sys_enter_recvfrom",
        Feature::SocketIo,
    ),
    at(
        "sonde_enter_sendmsg",
        "syscalls",
        "sys_enter_sendmsg",
        Feature::SocketIo,
    ),
    at(
        "sonde_enter_recvmsg",
        "syscalls",
        "sys_enter_recvmsg",
        Feature::SocketIo,
    ),
    at(
        "sonde_enter_sendmmsg",
        "syscalls",
        "sys_enter_sendmmsg",
        Feature::SocketIo,
    ),
    at(
        "sonde_enter_recvmmsg",
        "syscalls",
        "sys_enter_recvmmsg",
        Feature::SocketIo,
    ),
    at(
        "sonde_exit_send",
        "syscalls",
        "sys_exit_write",
        Feature::SocketIo,
    ),
    at(
        "sonde_exit_send",
        "syscalls",
        "sys_exit_sendto",
        Feature::SocketIo,
    ),
    at(
        "sonde_exit_sendv",
        "syscalls",
        "sys_exit_writev",
        Feature::SocketIo,
    ),
    at(
        "sonde_exit_sendv",
        "syscalls",
        "sys_exit_sendmsg",
        Feature::SocketIo,
    ),
    at(
        "sonde_exit_sendmm",
        "syscalls",
        "sys_exit_sendmmsg",
        Feature::SocketIo,
    ),
    at(
        "sonde_exit_recv",
        "syscalls",
        "sys_exit_read",
        Feature::SocketIo,
    ),
    at(
        "sonde_exit_recv",
        "syscalls",
        "sys_exit_recvfrom",
        Feature::SocketIo,
    ),
    at(
        "sonde_exit_recvv",
        "syscalls",
        "sys_exit_readv",
        Feature::SocketIo,
    ),
    at(
        "sonde_exit_recvv",
        "syscalls",
        "sys_exit_recvmsg",
        Feature::SocketIo,
    ),
    at(
        "sonde_exit_recvmm",
        "syscalls",
        "sys_exit_recvmmsg",
        Feature::SocketIo,
    ),
    at(
        "sonde_enter_connect",
        "syscalls",
        "sys_enter_connect",
        Feature::SocketIo,
    ),
    at(
        "sonde_enter_accept",
        "syscalls",
        "sys_enter_accept",
        Feature::SocketIo,
    ),
    at(
        "sonde_enter_accept4",
        "syscalls",
        "sys_enter_accept4",
        Feature::SocketIo,
    ),
    at(
        "sonde_exit_conn",
        "syscalls",
        "sys_exit_connect",
        Feature::SocketIo,
    ),
    at(
        "sonde_exit_conn",
        "syscalls",
        "sys_exit_accept",
        Feature::SocketIo,
    ),
    at(
        "sonde_exit_conn",
        "syscalls",
        "sys_exit_accept4",
        Feature::SocketIo,
    ),
    at(
        "sonde_enter_close",
        "syscalls",
        "sys_enter_close",
        Feature::SocketIo,
    ),
];

/// With [`SocketLookup::Tracepoint`] only.
pub const SOCKET_LOOKUP: &[Attachment] = &[
    at(
        "sonde_sock_send",
        "sock",
        "sock_send_length",
        Feature::SocketLookup,
    ),
    at(
        "sonde_sock_recv",
        "sock",
        "sock_recv_length",
        Feature::SocketLookup,
    ),
];

pub const TCP_STATE: &[Attachment] = &[at(
    "sonde_sock_state",
    "sock",
    "inet_sock_set_state",
    Feature::TcpState,
)];

pub const SENDFILE: &[Attachment] = &[
    at(
        "sonde_enter_sendfile",
        "syscalls",
        "sys_enter_sendfile64",
        Feature::Sendfile,
    ),
    at(
        "sonde_enter_splice",
        "syscalls",
        "sys_enter_splice",
        Feature::Sendfile,
    ),
    at(
        "sonde_exit_splice",
        "syscalls",
        "sys_exit_sendfile64",
        Feature::Sendfile,
    ),
    at(
        "sonde_exit_splice",
        "syscalls",
        "sys_exit_splice",
        Feature::Sendfile,
    ),
];

pub const IO_URING: &[Attachment] = &[at(
    "sonde_io_uring_submit",
    "io_uring",
    "io_uring_submit_req",
    Feature::IoUring,
)];

pub const NETWORK: &[Attachment] = &[
    at("sonde_tcp_probe", "tcp", "tcp_probe", Feature::TcpRtt),
    at(
        "sonde_tcp_retransmit",
        "tcp",
        "tcp_retransmit_skb",
        Feature::Retransmits,
    ),
    at(
        "sonde_tcp_send_reset",
        "tcp",
        "tcp_send_reset",
        Feature::Resets,
    ),
    at(
        "sonde_tcp_receive_reset",
        "tcp",
        "tcp_receive_reset",
        Feature::Resets,
    ),
    at("sonde_kfree_skb", "skb", "kfree_skb", Feature::Drops),
    at(
        "sonde_netif_receive",
        "net",
        "netif_receive_skb",
        Feature::Interfaces,
    ),
    at(
        "sonde_dev_queue",
        "net",
        "net_dev_queue",
        Feature::Interfaces,
    ),
    at(
        "sonde_softirq_raise",
        "irq",
        "softirq_raise",
        Feature::Softirq,
    ),
    at(
        "sonde_softirq_entry",
        "irq",
        "softirq_entry",
        Feature::Softirq,
    ),
    at(
        "sonde_softirq_exit",
        "irq",
        "softirq_exit",
        Feature::Softirq,
    ),
];

/// Every attachment Sonde knows, core first.
pub fn all() -> impl Iterator<Item = &'static Attachment> {
    SOCKET_IO
        .iter()
        .chain(SOCKET_LOOKUP)
        .chain(TCP_STATE)
        .chain(SENDFILE)
        .chain(IO_URING)
        .chain(NETWORK)
}

/// What became of one program.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeState {
    Attached,
    /// Loaded (doctor: not attached on purpose).
    Loaded,
    Failed,
    /// Not wanted by the configuration, or not applicable on this kernel.
    Off,
}

impl ProbeState {
    pub fn name(&self) -> &'static str {
        match self {
            ProbeState::Attached => "attached",
            ProbeState::Loaded => "loaded",
            ProbeState::Failed => "failed",
            ProbeState::Off => "off",
        }
    }
}

/// One program's status, for `/api/health`, `sonde_probe_info` and `sonde doctor`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeStatus {
    pub program: String,
    pub feature: Feature,
    pub state: ProbeState,
    /// Why it failed or is off ("" when it runs).
    pub detail: String,
    /// Tracepoints it is attached to (or would be).
    pub tracepoints: Vec<String>,
    pub cost: Option<ProgramCost>,
}

/// The line of a verifier log that says why: its last line that is not a statistic.
pub fn verifier_reason(log: &str) -> String {
    const STATS: [&str; 5] = [
        "processed ",
        "verification time",
        "stack depth",
        "max_states_per_insn",
        "Verifier output",
    ];
    log.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !STATS.iter().any(|s| l.starts_with(s)))
        .unwrap_or("")
        .to_string()
}

/// Loads `program` (once), timing the verifier and reading what it processed.
pub fn load(ebpf: &mut Ebpf, program: &str) -> Result<(Duration, Option<u32>), String> {
    let prog = ebpf
        .program_mut(program)
        .ok_or_else(|| format!("program {program} missing from the eBPF object"))?;
    match prog {
        aya::programs::Program::TracePoint(p) => load_one!(p, program),
        aya::programs::Program::UProbe(p) => load_one!(p, program),
        _ => Err(format!(
            "program {program} is neither a tracepoint nor a uprobe"
        )),
    }
}

/// The body of [`load`] for one program type (aya's types share no loading trait).
macro_rules! load_one {
    ($prog:expr, $name:expr) => {{
        let prog = $prog;
        let program = $name;
        if prog.fd().is_ok() {
            return Ok((
                Duration::ZERO,
                prog.info()
                    .ok()
                    .and_then(|i| i.verified_instruction_count()),
            ));
        }
        let t = Instant::now();
        match prog.load() {
            Ok(()) => {
                let took = t.elapsed();
                let insns = prog
                    .info()
                    .ok()
                    .and_then(|i| i.verified_instruction_count());
                Ok((took, insns))
            }
            Err(aya::programs::ProgramError::LoadError {
                io_error,
                verifier_log,
            }) => {
                let log = verifier_log.to_string();
                tracing::debug!(program, log = %log, "verifier log");
                Err(format!(
                    "verifier rejected {program} ({io_error}): {}",
                    verifier_reason(&log)
                ))
            }
            Err(e) => Err(format!("loading {program}: {e}")),
        }
    }};
}
use load_one;

/// Attaches a loaded `program` to `category:name`.
pub fn attach(ebpf: &mut Ebpf, program: &str, category: &str, name: &str) -> Result<()> {
    let prog: &mut TracePoint = ebpf
        .program_mut(program)
        .with_context(|| format!("program {program} missing from the eBPF object"))?
        .try_into()?;
    prog.attach(category, name)
        .with_context(|| format!("attaching {program} to {category}:{name}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_reason_is_the_last_line_that_is_not_a_statistic() {
        let log = "0: (bf) r6 = r1\n1: (85) call bpf_get_current_pid_tgid#14\n\
                   combined stack size of 2 calls is 528. Too large\n\
                   verification time 9112839 usec\nstack depth 336+0+184\n\
                   processed 345249 insns (limit 1000000) max_states_per_insn 51 total_states 10209\n";
        assert_eq!(
            verifier_reason(log),
            "combined stack size of 2 calls is 528. Too large"
        );
        assert_eq!(verifier_reason(""), "");
    }

    /// Every program named in the tables exists in the object, and the object has no
    /// program that no table attaches.
    #[test]
    fn tables_and_object_agree() {
        let stacks = super::super::budget::static_stack(super::super::EBPF_OBJECT).unwrap();
        for a in all() {
            assert!(
                stacks.contains_key(a.program),
                "{} not in the object",
                a.program
            );
        }
        for p in stacks.keys() {
            assert!(
                all().any(|a| a.program == p) || super::super::tls::PROGRAMS.contains(&p.as_str()),
                "{p} is attached nowhere"
            );
        }
    }
}
