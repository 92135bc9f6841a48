//! Degrade, don't die, for TLS: a libssl uprobe program that the verifier refuses turns the
//! `tls` feature off alone — every TLS program `failed` with the reason, nothing attached to
//! libssl — and the socket capture keeps working. Its own test binary: the switch is a
//! process-wide environment variable.
use std::time::Duration;

use sonde_capture::CaptureOptions;
use sonde_capture::events::Direction;
use sonde_capture::programs::{Feature, ProbeState};
use sonde_tests::{Collector, Peer, pattern, require_root};

const T: Duration = Duration::from_secs(30);

#[test]
fn a_rejected_tls_program_turns_tls_off_alone() {
    require_root();
    // SAFETY: set before any thread of this test binary reads the environment.
    unsafe { std::env::set_var("SONDE_TEST_REJECT_TLS", "1") };
    let col = Collector::start(CaptureOptions::default()).expect("capture starts without TLS");
    let probes = col.with(|c| c.probes.clone());
    let tls: Vec<_> = probes
        .iter()
        .filter(|p| p.feature == Feature::Tls)
        .collect();
    assert_eq!(
        tls.len(),
        sonde_capture::tls::PROGRAMS.len(),
        "every TLS program (OpenSSL's, Go's, the exec tracepoint) is listed: {probes:#?}"
    );
    for p in &tls {
        assert_eq!(p.state, ProbeState::Failed, "{p:?}");
    }
    let read_ret = tls
        .iter()
        .find(|p| p.program == "sonde_ssl_read_ret")
        .unwrap();
    assert!(
        read_ret
            .detail
            .starts_with("verifier rejected sonde_ssl_read_ret"),
        "the verifier's reason is kept: {}",
        read_ret.detail
    );
    for p in &probes {
        if p.feature != Feature::Tls && p.state != ProbeState::Off {
            assert_eq!(p.state, ProbeState::Attached, "{p:?}");
        }
    }
    let (server, client) = Peer::loopback_exchange("10,2000", true, T).unwrap();
    let stream: Vec<u8> = [pattern(0, 10), pattern(1, 2000)].concat();
    for pid in [client.pid(), server.pid()] {
        let seen = col.finished_conns(pid, 1, T).unwrap();
        seen[0].check_stream(Direction::Egress, &stream).unwrap();
        seen[0].check_stream(Direction::Ingress, &stream).unwrap();
    }
}
