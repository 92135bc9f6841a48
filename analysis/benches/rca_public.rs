//! Root-cause ranking on public microservice fault datasets, next to two baselines run on the
//! same cases: n-sigma per service and BARO-style robust scores (see `baselines`), each with
//! the whole history before the incident and (`*`) with the labelled faults left out of it.
//!
//! Data: timelines in the import layout (`sonde_analysis::import`), one directory per timeline
//! with `metrics.csv`, `edges.csv` and `cases.csv`, found one or two levels under
//! `$SONDE_RCA_DATA` (default `/work/rca-data`). bench/rca-public/README.md says how to
//! convert each public dataset. Nothing is fetched here.
//!
//! Two modes per case: `detect` (the entry KPI's detector must open the incident inside the
//! case's window; no incident = a miss for every method, the baselines included since they
//! are given the same window) and `given` (the injection time is the start). Each ranking is
//! of services; an edge the engine blames counts as its callee.
//!
//! `cargo bench -p sonde-analysis --bench rca_public` (`-- -v` prints every case)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sonde_analysis::baselines::{self, TopK};
use sonde_analysis::demarcation::Element;
use sonde_analysis::import::{Timeline, timelines};
use sonde_analysis::replay::analyze_bundle;
use sonde_analysis::report::{AnalysisConfig, Report};
use sonde_analysis::rules::NativeRules;

fn engine_ranking(report: &Report) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for rc in &report.root_causes {
        let name = match &rc.element {
            Element::Service { name } => name.clone(),
            Element::Edge { callee, .. } => callee.clone(),
            Element::Node { .. } => continue,
        };
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

fn datasets(root: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    if root.join("metrics.csv").is_file() {
        let name = root
            .file_name()
            .map_or("data".into(), |n| n.to_string_lossy().into_owned());
        return vec![(name, root.to_path_buf())];
    }
    for dir in timelines(root) {
        out.push((dir.file_name().unwrap().to_string_lossy().into_owned(), dir));
    }
    let mut subs: Vec<PathBuf> = std::fs::read_dir(root)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    subs.sort();
    for sub in subs {
        for dir in timelines(&sub) {
            let name = format!(
                "{}/{}",
                sub.file_name().unwrap().to_string_lossy(),
                dir.file_name().unwrap().to_string_lossy()
            );
            out.push((name, dir));
        }
    }
    out
}

/// `n-sigma*` and `baro*` get a clean history: the windows of every labelled case left out.
const METHODS: [&str; 5] = ["sonde", "n-sigma", "baro", "n-sigma*", "baro*"];

fn main() {
    let verbose = std::env::args().any(|a| a == "-v");
    let root = PathBuf::from(
        std::env::var("SONDE_RCA_DATA").unwrap_or_else(|_| "/work/rca-data".to_string()),
    );
    let sets = datasets(&root);
    if sets.is_empty() {
        println!(
            "no timelines under {} (set SONDE_RCA_DATA; bench/rca-public/README.md)",
            root.display()
        );
        return;
    }
    println!("| dataset | mode | cases | incident opened | method | AC@1 | AC@3 | Avg@5 |");
    println!("|:--|:--|---:|---:|:--|---:|---:|---:|");
    // (mode, method) → totals over every dataset
    let mut totals: BTreeMap<(&str, &str), TopK> = BTreeMap::new();
    let mut opened_total: BTreeMap<&str, usize> = BTreeMap::new();
    for (name, dir) in sets {
        let tl = match Timeline::load(&dir) {
            Ok(t) => t,
            Err(e) => {
                println!("| {name} | error: {e} |");
                continue;
            }
        };
        for (mode, detect) in [("detect", true), ("given", false)] {
            let mut scores: BTreeMap<&str, TopK> = BTreeMap::new();
            let mut opened = 0;
            for case in &tl.cases {
                let Some(truth) = &case.root_cause else {
                    continue;
                };
                let mut rankings: BTreeMap<&str, Vec<String>> = BTreeMap::new();
                if let Some(start) = tl.case_start(case, detect) {
                    opened += 1;
                    let bundle = tl.bundle(&case.entry, &case.kpi, start, case.window_end);
                    let s = bundle.spec.incident.start.unwrap_or(start);
                    let mut rules = NativeRules::new().with("default", sonde_fta_rules::evaluate);
                    let ranking =
                        match analyze_bundle(&bundle, &mut rules, &AnalysisConfig::default()) {
                            Ok(r) => {
                                if std::env::var("SONDE_RCA_CASE").is_ok_and(|c| c == case.id) {
                                    if let Some(why) = &r.nothing_found {
                                        eprintln!("    none ({mode}): {why}");
                                    }
                                    for rc in r.root_causes.iter().take(6) {
                                        eprintln!(
                                            "    {} {:.3} {} {}",
                                            rc.element.id(),
                                            rc.score,
                                            rc.category,
                                            rc.explanation
                                        );
                                    }
                                    for k in &r.key_metrics {
                                        eprintln!(
                                            "    key {} {} {:.3} -> {:.3} score {:.1}",
                                            k.entity, k.metric, k.before, k.after, k.score
                                        );
                                    }
                                }
                                engine_ranking(&r)
                            }
                            Err(e) => {
                                if verbose {
                                    eprintln!("{name} {}: {e}", case.id);
                                }
                                Vec::new()
                            }
                        };
                    rankings.insert("sonde", ranking);
                    let names = |r: Vec<(String, f64)>| r.into_iter().map(|x| x.0).collect();
                    rankings.insert(
                        "n-sigma",
                        names(baselines::n_sigma(&bundle.series, s, case.window_end)),
                    );
                    rankings.insert(
                        "baro",
                        names(baselines::baro(&bundle.series, s, case.window_end)),
                    );
                    let faults: Vec<(i64, i64)> = tl
                        .cases
                        .iter()
                        .map(|c| (c.window_start, c.window_end))
                        .collect();
                    let end = case.window_end;
                    rankings.insert(
                        "n-sigma*",
                        names(baselines::n_sigma_normal(&bundle.series, s, end, &faults)),
                    );
                    rankings.insert(
                        "baro*",
                        names(baselines::baro_normal(&bundle.series, s, end, &faults)),
                    );
                }
                for m in METHODS {
                    let r = rankings.get(m).cloned().unwrap_or_default();
                    scores.entry(m).or_default().add(&r, truth);
                    totals.entry((mode, m)).or_default().add(&r, truth);
                }
                if verbose && detect {
                    let key = (format!("service:{}", case.entry), case.kpi.clone());
                    if let Some(pts) = tl.series.get(&key) {
                        let values: Vec<f64> = pts.iter().map(|p| p.1).collect();
                        let v = sonde_analysis::detect::detect_series(
                            &values,
                            sonde_analysis::detect::Direction::for_metric(&case.kpi),
                            &sonde_analysis::detect::DetectorConfig::for_metric(&case.kpi),
                        );
                        let shown: Vec<String> = pts
                            .iter()
                            .zip(&v)
                            .filter(|(p, _)| p.0 >= case.window_start && p.0 < case.window_end)
                            .map(|(_, v)| {
                                format!(
                                    "{:.3}/{:.3}:{:.1}{}",
                                    v.value,
                                    v.expected,
                                    v.score,
                                    if v.anomalous { "!" } else { "" }
                                )
                            })
                            .collect();
                        eprintln!("  {} {}: {}", case.id, case.kpi, shown.join(" "));
                    }
                }
                if verbose {
                    let top = |m: &str| {
                        rankings.get(m).map_or("-".to_string(), |r| {
                            r.iter().take(3).cloned().collect::<Vec<_>>().join(" > ")
                        })
                    };
                    eprintln!(
                        "{name} {mode} {} truth={truth} sonde=[{}] nsigma=[{}] baro=[{}]",
                        case.id,
                        top("sonde"),
                        top("n-sigma"),
                        top("baro")
                    );
                }
            }
            *opened_total.entry(mode).or_default() += opened;
            for m in METHODS {
                let k = &scores[m];
                println!(
                    "| {name} | {mode} | {} | {opened} | {m} | {:.2} | {:.2} | {:.2} |",
                    k.cases,
                    k.ac(1),
                    k.ac(3),
                    k.avg5()
                );
            }
        }
    }
    for ((mode, m), k) in &totals {
        println!(
            "| all | {mode} | {} | {} | {m} | {:.2} | {:.2} | {:.2} |",
            k.cases,
            opened_total[mode],
            k.ac(1),
            k.ac(3),
            k.avg5()
        );
    }
}
