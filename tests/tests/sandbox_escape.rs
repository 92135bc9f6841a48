//! A parser component that tries to open a file, list a directory, create a file or connect a
//! socket it was not granted gets nowhere: the attempt fails inside the sandbox, the host's
//! files and network are untouched, and the plugin lives on.
//!
//! The fixture (`bad-parser` built with `escape`) uses plain `std::fs` / `std::net`. Built for
//! wasm32-wasip2 those go through wasi-libc to `wasi:filesystem` and `wasi:sockets` imports,
//! which the host never links: [`sonde_sandbox::stub_unknown_imports`] defines them as
//! functions that trap with "import `…` is not granted to plugins". So the component
//! instantiates fine, and an attempt could end in one of two ways, both inside the sandbox:
//!
//! - the guest's libc reports an ordinary `io::Error` without calling the host, and the
//!   fixture returns it in a record (`error: Some(..)`, status 0); or
//! - the guest calls a stubbed import: the call traps, is reported as a [`FailureKind::Trap`]
//!   naming the denied import, and the instance is dropped; the next call gets a fresh one.
//!
//! Today every attempt is the second kind: the path-based file calls trap in wasi-libc's lazy
//! preopen lookup (`wasi:filesystem/preopens#get-directories`, before any path is opened) and
//! `connect` in `socket()` (`wasi:sockets/tcp-create-socket#create-tcp-socket`, before any
//! address is used). The test accepts either kind, but a trap must name exactly that import.
//! Either way the host must show no trace of the attempt, and the plugin must keep working.

use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;

use sonde_parse::{ConnInfo, Direction, ParseJob, ParseOutput, ParserBackend, SegMeta};
use sonde_sandbox::PluginsConfig;
use sonde_sandbox::parsers::{self, WasmParser};
use sonde_sandbox::{Failure, FailureKind, Limits};
use sonde_sdk::protocol_parser::Role;
use sonde_tests::wasm;

const CREATED: &str = "/tmp/sonde-escape";

/// One job: connection `conn` announced, and one segment of `text` (the fixture's list of
/// attempts).
fn job(conn: u64, text: &str) -> ParseJob {
    let mut j = ParseJob::default();
    j.opened.push(Arc::new(ConnInfo {
        id: conn,
        role: Role::Server,
        comm: "escapee".into(),
        ..Default::default()
    }));
    j.push_segment(
        SegMeta {
            conn,
            direction: Direction::Ingress,
            ts_ns: 1_000,
            gap_before: 0,
        },
        text.as_bytes(),
    );
    j
}

/// How one attempt ended.
#[derive(Debug)]
enum Outcome {
    /// An ordinary error inside the guest, returned in a record.
    Refused(String),
    /// The guest called an import the host does not grant; the call trapped.
    Trapped(String),
}

/// Check one call's result for attempt `operation`: either exactly one `escape` record with an
/// error, or a trap in the denied import `denied` (`<interface>#<function>`, unversioned).
/// Anything else (a success, a record without an error, another kind of failure) fails the test.
fn outcome(operation: &str, denied: &str, r: Result<ParseOutput, Failure>) -> Outcome {
    match r {
        Ok(out) => {
            assert_eq!(
                out.records.len(),
                1,
                "{operation}: one record per attempt: {:?}",
                out.records
            );
            let rec = &out.records[0];
            assert_eq!(rec.protocol(), "escape");
            assert_eq!(rec.operation(), operation);
            let error = rec.error().map(str::to_string);
            assert!(
                error.is_some() && rec.status() == 0,
                "{operation} succeeded inside the sandbox (status {}, outcome {:?})",
                rec.status(),
                rec.attr("outcome")
            );
            Outcome::Refused(error.unwrap())
        }
        Err(f) => {
            assert_eq!(
                f.kind,
                FailureKind::Trap,
                "{operation}: a denied import is a trap: {f}"
            );
            let (iface, func) = denied.split_once('#').unwrap();
            assert!(
                f.message.contains(&format!("import `{iface}@"))
                    && f.message
                        .contains(&format!("#{func}` is not granted to plugins")),
                "{operation}: the trap names the denied import {denied}: {f}"
            );
            Outcome::Trapped(f.message)
        }
    }
}

#[test]
fn a_plugin_cannot_reach_files_or_sockets_it_was_not_granted() {
    match std::fs::remove_file(CREATED) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => panic!("cannot clear {CREATED} before the test: {e}"),
    }
    let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();

    let engine = parsers::engine(&PluginsConfig {
        cache_dir: None,
        ..Default::default()
    })
    .unwrap();
    let limits = Limits {
        // Every trap below counts as a failure; none of them may quarantine the plugin.
        quarantine_after: 100,
        ..Limits::default()
    };
    let bytes = std::fs::read(wasm::bad_parser("escape")).unwrap();
    let mut p = WasmParser::load(engine, limits, &bytes, "test")
        .expect("a component importing wasi:filesystem and wasi:sockets still loads");
    assert_eq!(p.name, "bad-parser-escape");

    const PREOPENS: &str = "wasi:filesystem/preopens#get-directories";
    const TCP: &str = "wasi:sockets/tcp-create-socket#create-tcp-socket";
    // (what the segment asks for, the record's operation, the import a trap must be in)
    let attempts = [
        (
            "read-file".to_string(),
            "read /etc/hostname".to_string(),
            PREOPENS,
        ),
        ("read-dir".into(), "read_dir /".into(), PREOPENS),
        ("create-file".into(), format!("create {CREATED}"), PREOPENS),
        (
            format!("connect:{port}"),
            format!("connect 127.0.0.1:{port}"),
            TCP,
        ),
    ];
    let mut trapped = 0;
    for (i, (word, operation, denied)) in attempts.iter().enumerate() {
        let conn = 10 + i as u64;
        match outcome(operation, denied, p.run(&mut job(conn, word))) {
            Outcome::Refused(error) => eprintln!("{operation}: refused in the guest: {error}"),
            Outcome::Trapped(message) => {
                trapped += 1;
                eprintln!("{operation}: trapped: {message}");
            }
        }
        // Still healthy: the next call (on a fresh instance if that one trapped) works.
        let out = p
            .run(&mut job(100 + i as u64, "nothing-to-try"))
            .unwrap_or_else(|f| panic!("after {operation}, the plugin is broken: {f}"));
        assert!(out.records.is_empty(), "{:?}", out.records);
    }

    // Nothing reached the host.
    assert!(
        !Path::new(CREATED).exists(),
        "the plugin created {CREATED} on the host"
    );
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Ok((_, from)) => panic!("the plugin connected to the test's listener from {from}"),
        Err(e) => panic!("accept: {e}"),
    }

    // Traps are counted as plugin failures, nothing worse: no quarantine, and a fresh instance
    // for each call after one.
    let h = p.health();
    assert_eq!(h.failures, trapped, "{h:?}");
    assert_eq!(h.traps, trapped, "{h:?}");
    assert_eq!(h.quarantines, 0, "{h:?}");
    assert_eq!(h.instantiations, 1 + trapped, "{h:?}");
    assert_eq!(
        h.calls,
        1 + 2 * attempts.len() as u64,
        "info, then two calls per attempt"
    );
}
