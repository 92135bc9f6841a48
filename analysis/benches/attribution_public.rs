//! Attribution on public datasets: exact-match micro-F1 (RiskLoc's evaluation: per case a
//! predicted element counts only if it equals a labelled root cause; F1 = 2ΣTP / (2ΣTP + ΣFP +
//! ΣFN) over the dataset) and time per case, for Sonde at its defaults and for our RiskLoc
//! reimplementation (`common/riskloc.rs`) on the same cases.
//!
//! Data: one directory per dataset in the layout of `sonde_analysis::attribution_cases`
//! (`cases.csv` + one CSV per case) under `$SONDE_ATTR_DATA` (default
//! `/work/rca-data/attribution`); bench/rca-public/README.md says how to generate and convert
//! RiskLoc's S, L and H. Nothing is downloaded; a missing directory is an error.
//!
//! `cargo bench -p sonde-analysis --bench attribution_public [-- --cases N] [--dataset S]
//! [--no-riskloc] [-v]` (`--cases`: the first N cases of each dataset; `-v`: every miss).

use std::path::{Path, PathBuf};
use std::time::Instant;

use sonde_analysis::attribution::{AttributionConfig, attribute};
use sonde_analysis::attribution_cases::{read_case, read_index};
use sonde_analysis::score::{Element, Scorer};

#[path = "common/riskloc.rs"]
mod riskloc;
#[path = "common/timing.rs"]
mod timing;
use timing::stats;

fn show(e: &[Element]) -> String {
    let mut s: Vec<String> = e
        .iter()
        .map(|el| {
            let mut el = el.clone();
            el.sort();
            el.iter()
                .map(|(d, v)| format!("{d}={v}"))
                .collect::<Vec<_>>()
                .join("&")
        })
        .collect();
    s.sort();
    s.join(";")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let limit: usize = opt("--cases")
        .and_then(|s| s.parse().ok())
        .unwrap_or(usize::MAX);
    let only = opt("--dataset");
    let verbose = args.iter().any(|a| a == "-v");
    let with_riskloc = !args.iter().any(|a| a == "--no-riskloc");
    let root = PathBuf::from(
        std::env::var("SONDE_ATTR_DATA").unwrap_or_else(|_| "/work/rca-data/attribution".into()),
    );
    let mut dirs: Vec<(String, PathBuf)> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| {
            panic!(
                "SONDE_ATTR_DATA={}: {e} (see bench/rca-public/README.md)",
                root.display()
            )
        })
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("cases.csv").is_file())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
        .filter(|(n, _)| only.as_ref().is_none_or(|o| o == n))
        .collect();
    dirs.sort();
    assert!(
        !dirs.is_empty(),
        "{}: no dataset directory with a cases.csv{}",
        root.display(),
        only.map(|o| format!(" named {o}")).unwrap_or_default()
    );
    println!(
        "| dataset | cases | leaves | dims | Sonde F1 | TP/FP/FN | RiskLoc F1 | TP/FP/FN | Sonde ms/case mean | p95 | RiskLoc ms/case mean |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, dir) in dirs {
        run(&name, &dir, limit, with_riskloc, verbose);
    }
}

fn run(name: &str, dir: &Path, limit: usize, with_riskloc: bool, verbose: bool) {
    let index = read_index(dir).unwrap_or_else(|e| panic!("{e}"));
    let cfg = AttributionConfig::default();
    let (mut ours, mut theirs) = (Scorer::default(), Scorer::default());
    let (mut ms, mut ms_r) = (Vec::new(), Vec::new());
    let (mut leaves, mut dims, mut skipped) = (0usize, 0usize, 0usize);
    for case in index.iter().take(limit) {
        let (cube, sk) = read_case(dir, &case.id).unwrap_or_else(|e| panic!("{e}"));
        skipped += sk;
        leaves = leaves.max(cube.len());
        dims = dims.max(cube.dimensions().len());
        let t = Instant::now();
        let got: Vec<Element> = attribute(&cube, &cfg)
            .into_iter()
            .map(|c| c.elements)
            .collect();
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        let before = ours;
        ours.add(&got, &case.truth);
        if verbose && (ours.fp, ours.fn_) != (before.fp, before.fn_) {
            eprintln!(
                "{name} {}: truth {}\n    got {}",
                case.id,
                show(&case.truth),
                show(&got)
            );
        }
        if with_riskloc {
            let t = Instant::now();
            let r = riskloc::riskloc(&cube);
            ms_r.push(t.elapsed().as_secs_f64() * 1e3);
            theirs.add(&r, &case.truth);
        }
    }
    if skipped > 0 {
        eprintln!("{name}: {skipped} leaves skipped (negative or non-finite)");
    }
    let (mean, p95) = stats(&ms);
    let (rmean, _) = stats(&ms_r);
    let counts = |s: &Scorer| format!("{}/{}/{}", s.tp, s.fp, s.fn_);
    let (rf1, rc, rms) = if with_riskloc {
        (
            format!("{:.3}", theirs.f1()),
            counts(&theirs),
            format!("{rmean:.1}"),
        )
    } else {
        ("—".into(), "—".into(), "—".into())
    };
    println!(
        "| {name} | {} | {leaves} | {dims} | {:.3} | {} | {rf1} | {rc} | {mean:.1} | {p95:.1} | {rms} |",
        ours.cases,
        ours.f1(),
        counts(&ours),
    );
}
