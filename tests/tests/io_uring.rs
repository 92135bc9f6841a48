//! Sockets driven through io_uring bypass every syscall Sonde traces, and no tracepoint carries
//! their payload: Sonde counts them per process instead (`sonde_io_uring_requests_total`), so
//! an operator sees who is invisible. A real ring, a real IORING_OP_SEND on loopback.
use std::io::Read as _;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd as _;
use std::time::Duration;

use io_uring::{IoUring, opcode, types};
use sonde_capture::CaptureOptions;
use sonde_capture::programs::{Feature, ProbeState};
use sonde_tests::{Collector, require_root};

#[test]
fn io_uring_socket_sends_are_counted_per_process() {
    require_root();
    let col = Collector::start(CaptureOptions::default()).expect("capture starts");
    let attached = col.with(|c| {
        c.probes
            .iter()
            .any(|p| p.feature == Feature::IoUring && p.state == ProbeState::Attached)
    });
    assert!(attached, "the io_uring counter runs on this kernel");

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let mut ring = IoUring::new(8).expect("io_uring_setup");
    let msg = b"sent through io_uring";
    for _ in 0..5 {
        let send = opcode::Send::new(
            types::Fd(client.as_raw_fd()),
            msg.as_ptr(),
            msg.len() as u32,
        )
        .build();
        // SAFETY: the buffer outlives the submission (we wait for its completion below).
        unsafe { ring.submission().push(&send).expect("queue has room") };
        ring.submit_and_wait(1).expect("io_uring_enter");
        let cqe = ring.completion().next().expect("a completion");
        assert_eq!(cqe.result(), msg.len() as i32);
    }
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut got = vec![0u8; 5 * msg.len()];
    server.read_exact(&mut got).unwrap();

    let me = std::process::id();
    let user = col
        .wait_for(
            Duration::from_secs(20),
            "this process's io_uring sends counted",
            |c| {
                c.stats
                    .io_uring
                    .iter()
                    .find(|u| u.tgid == me && u.socket_requests >= 5)
                    .cloned()
            },
        )
        .unwrap();
    assert!(user.requests >= 5, "{user:?}");
    assert!(!user.comm.is_empty(), "named: {user:?}");
}
