//! New programs, for the TLS discovery: `sched:sched_process_exec` pushes the tgid that just
//! exec'd on `EXECS`; user space pops them and reads only those processes' maps and
//! executables for a libssl or a Go binary to attach, instead of all of `/proc` every second.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::map, macros::tracepoint, maps::Queue,
    programs::TracePointContext,
};
use sonde_common::EXECS_CAPACITY;

#[map]
static EXECS: Queue<u32> = Queue::with_max_entries(EXECS_CAPACITY, 0);

#[tracepoint]
pub fn sonde_tls_exec(_ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // A full queue is seen by user space (it pops EXECS_CAPACITY entries) and answered
    // with a full rescan.
    let _ = EXECS.push(tgid, 0);
    0
}
