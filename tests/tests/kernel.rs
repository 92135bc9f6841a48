//! The verifier budget on this machine's kernel, measured for real: `sonde doctor`'s own
//! examination loads and attaches every program (then drops them) and reads what the verifier processed.
//! The kernel matrix (scripts/kernel-matrix) runs the same check on other kernels in QEMU.
use sonde_capture::CaptureOptions;
use sonde_capture::budget::{self, Budget};
use sonde_capture::doctor;
use sonde_capture::programs::{ProbeState, SocketLookup};
use sonde_tests::require_root;

/// Verification is CPU-bound: tests that load programs run one at a time, so one does not
/// inflate another's verify time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn examine(lookup: SocketLookup) -> doctor::Report {
    require_root();
    doctor::examine(&CaptureOptions {
        socket_lookup: lookup,
        ..CaptureOptions::default()
    })
}

/// Like [`examine`], but a report whose only crossing is the total verify time is measured
/// once more and the faster kept: other load on the machine only ever adds time.
fn examine_quietest(lookup: SocketLookup) -> doctor::Report {
    let first = examine(lookup);
    let only_time = !first.budget_violations.is_empty()
        && first
            .budget_violations
            .iter()
            .all(|v| v.starts_with("all programs: verification took"));
    if !only_time {
        return first;
    }
    let second = examine(lookup);
    if second.verify_ms < first.verify_ms {
        second
    } else {
        first
    }
}

fn costs(r: &doctor::Report) -> Vec<budget::ProgramCost> {
    r.probes.iter().filter_map(|p| p.cost.clone()).collect()
}

/// Every program loads here, within the budget: stack ≤ 384 B, processed instructions ≤ 25 %
/// of the limit, all of them verified in ≤ 1 s — in both ways of finding sockets.
#[test]
fn every_program_loads_within_the_verifier_budget() {
    let _g = serial();
    for lookup in [SocketLookup::Auto, SocketLookup::FdTable] {
        let r = examine_quietest(lookup);
        assert!(r.core_ok(), "{lookup:?}: {}", r.core_error);
        let failed: Vec<_> = r
            .probes
            .iter()
            .filter(|p| p.state == ProbeState::Failed)
            .map(|p| format!("{}: {}", p.program, p.detail))
            .collect();
        assert!(failed.is_empty(), "{lookup:?}: {failed:#?}");
        let loaded = r
            .probes
            .iter()
            .filter(|p| p.state == ProbeState::Loaded)
            .count();
        assert!(loaded >= 30, "{lookup:?}: only {loaded} programs loaded");
        for c in costs(&r) {
            assert!(
                c.processed_insns.is_some_and(|n| n > 0),
                "{}: the kernel reported no processed instructions",
                c.program
            );
            assert!(c.stack_bytes > 0, "{}: no stack figure", c.program);
        }
        assert!(
            r.budget_violations.is_empty(),
            "{lookup:?}: {:#?}\n{}",
            r.budget_violations,
            doctor::render(&r)
        );
    }
}

/// The same check on the same real measurements fails when the budget is crossed, naming the
/// program and the figure: proof that the test above can fail.
#[test]
fn the_budget_check_fails_on_real_figures_when_crossed() {
    let _g = serial();
    let r = examine(SocketLookup::Auto);
    let tight = Budget {
        max_stack_bytes: 64,
        max_processed_insns: 1_000,
        max_total_verify: std::time::Duration::from_micros(1),
    };
    let v = budget::violations(&costs(&r), &tight);
    assert!(
        v.iter()
            .any(|l| l.starts_with("sonde_exit_send: combined stack")),
        "{v:#?}"
    );
    assert!(
        v.iter().any(|l| l.starts_with("sonde_exit_sendv: ")
            && l.contains("processed instructions > budget 1000")),
        "{v:#?}"
    );
    assert!(
        v.iter()
            .any(|l| l.starts_with("all programs: verification took")),
        "{v:#?}"
    );
}

/// `sonde doctor` as a user runs it: exit 0, the table, the budget line.
#[test]
fn doctor_command_reports_this_kernel() {
    let _g = serial();
    require_root();
    let out = std::process::Command::new(sonde_tests::sonde_bin_path())
        .arg("doctor")
        .output()
        .expect("sonde doctor runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("sonde_exit_send"), "{text}");
    assert!(text.contains("core socket capture: can run"), "{text}");
    assert!(text.contains("budget: every program within"), "{text}");
}

/// A running daemon says what runs: `/api/health` lists every program with its state and
/// verifier figures, `/metrics` has `sonde_probe_info` per program.
#[test]
fn the_daemon_reports_every_program_it_runs() {
    let _g = serial();
    let daemon = sonde_tests::httplab::Daemon::start("", "");
    let health: serde_json::Value = serde_json::from_str(
        &sonde_tests::httplab::http_body(daemon.port, "/api/health").expect("/api/health"),
    )
    .expect("JSON");
    let probes = health["probes"].as_array().expect("probes");
    let state_of = |name: &str| {
        probes
            .iter()
            .find(|p| p["program"] == name)
            .map(|p| p["state"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(state_of("sonde_exit_send").as_deref(), Some("attached"));
    assert_eq!(state_of("sonde_exit_splice").as_deref(), Some("attached"));
    assert!(
        probes
            .iter()
            .filter(|p| p["state"] == "attached")
            .all(|p| p["cost"]["processed_insns"].as_u64().is_some_and(|n| n > 0)),
        "every attached program has its verifier figures: {health:#}"
    );
    let samples = daemon.samples();
    let info = samples
        .iter()
        .filter(|s| s.name == "sonde_probe_info")
        .count();
    assert_eq!(info, probes.len(), "one sonde_probe_info per program");
    assert!(samples.iter().any(|s| s.name == "sonde_probe_info"
        && s.label("program") == "sonde_exit_send"
        && s.label("feature") == "socket-io"
        && s.label("state") == "attached"));
}
