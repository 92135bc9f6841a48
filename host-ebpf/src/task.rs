//! What the current task tells without a tracepoint argument: which socket an fd names (the
//! file-table walk for kernels without `sock:sock_{send,recv}_length`, and for sendfile/splice
//! everywhere), and the process's own name (the thread-group leader's comm).
//!
//! Plain `bpf_probe_read_kernel` at offsets user space read from BTF: no CO-RE, and a fault
//! anywhere along the chain reads as "not a socket" rather than failing the program.
use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_probe_read_kernel,
    generated::{bpf_get_current_task, bpf_probe_read_kernel as raw_probe_read_kernel},
};
use sonde_common::{Offsets, TASK_COMM_LEN};

use crate::{AF_INET, AF_INET6};

const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;

/// What an fd is, as far as capture cares.
#[derive(Clone, Copy)]
pub struct FdSock {
    /// `struct sock *` of an inet socket; 0 otherwise.
    pub sk: u64,
    pub protocol: u8,
    /// A socket, but not inet (unix, netlink…).
    pub other_socket: bool,
}

const NOT_A_SOCKET: FdSock = FdSock {
    sk: 0,
    protocol: 0,
    other_socket: false,
};

/// `*(base + off)` from kernel memory; 0 when unreadable.
#[inline(always)]
fn kread<T: Default>(base: u64, off: u16) -> T {
    // SAFETY: the probe helper faults softly on a bad kernel address.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T) }.unwrap_or_default()
}

/// The socket behind `fd` of the current task:
/// task->files->fdt->fd[fd]->f_inode->i_mode says socket; ->private_data->sk says which.
#[inline(always)]
pub fn sock_of_fd(fd: i32) -> FdSock {
    if fd < 0 {
        return NOT_A_SOCKET;
    }
    let o: Offsets = cfg!(offsets);
    // SAFETY: no preconditions; the pointer is only dereferenced through the probe helper.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = kread(task, o.task_files);
    if files == 0 {
        return NOT_A_SOCKET;
    }
    let fdt: u64 = kread(files, o.files_fdt);
    if fdt == 0 {
        return NOT_A_SOCKET;
    }
    let max_fds: u32 = kread(fdt, o.fdt_max_fds);
    if fd as u32 >= max_fds {
        return NOT_A_SOCKET;
    }
    let table: u64 = kread(fdt, o.fdt_fd);
    let file: u64 = if table == 0 {
        0
    } else {
        kread(table + 8 * (fd as u32 as u64), 0)
    };
    if file == 0 {
        return NOT_A_SOCKET;
    }
    let inode: u64 = kread(file, o.file_inode);
    let mode: u16 = if inode == 0 {
        0
    } else {
        kread(inode, o.inode_mode)
    };
    if mode & S_IFMT != S_IFSOCK {
        return NOT_A_SOCKET;
    }
    let socket: u64 = kread(file, o.file_private_data);
    let sk: u64 = if socket == 0 {
        0
    } else {
        kread(socket, o.socket_sk)
    };
    if sk == 0 {
        return FdSock {
            sk: 0,
            protocol: 0,
            other_socket: true,
        };
    }
    let family: u16 = kread(sk, o.skc_family);
    if family != AF_INET && family != AF_INET6 {
        return FdSock {
            sk: 0,
            protocol: 0,
            other_socket: true,
        };
    }
    let protocol: u16 = kread(sk, o.sock_protocol);
    FdSock {
        sk,
        protocol: protocol as u8,
        other_socket: false,
    }
}

/// The process's name into `dst`: the thread-group leader's comm, so a worker thread that
/// named itself (`isc-net-0000`) still counts as its process. Falls back to the thread's own.
///
/// # Safety
/// `dst` must point to `TASK_COMM_LEN` writable bytes of a map value or ring reservation.
#[inline(always)]
pub unsafe fn process_comm(dst: *mut [u8; TASK_COMM_LEN]) {
    let o: Offsets = cfg!(offsets);
    // SAFETY: as in sock_of_fd.
    let task = unsafe { bpf_get_current_task() };
    let leader: u64 = kread(task, o.task_group_leader);
    // SAFETY: dst is valid for TASK_COMM_LEN bytes (caller); src read through the helper.
    let ok = leader != 0
        && unsafe {
            raw_probe_read_kernel(
                dst.cast(),
                TASK_COMM_LEN as u32,
                (leader + o.task_comm as u64) as *const _,
            )
        } == 0;
    if !ok {
        // SAFETY: as above.
        unsafe { *dst = bpf_get_current_comm().unwrap_or([0u8; TASK_COMM_LEN]) };
    }
}
