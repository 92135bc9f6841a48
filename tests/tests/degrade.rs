//! Degrade, don't die: an optional program that the verifier refuses turns its own feature
//! off — one warning, a `failed` status with the verifier's reason — and the core capture
//! keeps working. Its own test binary: the switch is a process-wide environment variable.
use std::time::Duration;

use sonde_capture::CaptureOptions;
use sonde_capture::events::Direction;
use sonde_capture::programs::{Feature, ProbeState};
use sonde_tests::{Collector, Peer, pattern, require_root};

const T: Duration = Duration::from_secs(30);

#[test]
fn a_rejected_optional_program_turns_off_alone() {
    require_root();
    // SAFETY: set before any thread of this test binary reads the environment.
    unsafe { std::env::set_var("SONDE_TEST_REJECT_SENDFILE", "1") };
    let col = Collector::start(CaptureOptions::default()).expect("capture starts without it");
    let probes = col.with(|c| c.probes.clone());
    let splice = probes
        .iter()
        .find(|p| p.program == "sonde_exit_splice")
        .expect("the sendfile program is listed");
    assert_eq!(splice.state, ProbeState::Failed, "{splice:?}");
    assert_eq!(splice.feature, Feature::Sendfile);
    assert!(
        splice
            .detail
            .starts_with("verifier rejected sonde_exit_splice")
            && splice.detail.contains("invalid mem access"),
        "the verifier's reason is kept: {}",
        splice.detail
    );
    // Everything else that was wanted runs.
    for p in &probes {
        if p.program != "sonde_exit_splice" && p.state != ProbeState::Off {
            assert_eq!(p.state, ProbeState::Attached, "{p:?}");
        }
    }
    assert!(
        probes
            .iter()
            .any(|p| p.feature == Feature::Retransmits && p.state == ProbeState::Attached),
        "network probes still attached: {probes:#?}"
    );

    // ...and the core capture sees a real exchange, both sides, every byte.
    let (server, client) = Peer::loopback_exchange("10,2000", true, T).unwrap();
    let stream: Vec<u8> = [pattern(0, 10), pattern(1, 2000)].concat();
    for pid in [client.pid(), server.pid()] {
        let seen = col.finished_conns(pid, 1, T).unwrap();
        seen[0].check_stream(Direction::Egress, &stream).unwrap();
        seen[0].check_stream(Direction::Ingress, &stream).unwrap();
    }
}
