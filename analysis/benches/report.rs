//! Report latency on a large topology: a 100-service call tree on 25 machines with one slow,
//! CPU-throttled service deep in it; every service carries an endpoint × pod × version
//! breakdown. Times the whole offline pipeline (detector over every series, topology, walk,
//! attribution of every abnormal service, the default fault tree compiled natively, ranking).
//! The sandboxed (Wasm) rule call is measured separately by the host's plugin benchmark.
//!
//! `cargo bench -p sonde-analysis --bench report [-- --quick]`

use std::time::Instant;

use sonde_analysis::replay::analyze_bundle;
use sonde_analysis::report::AnalysisConfig;
use sonde_analysis::rules::NativeRules;
use sonde_analysis::scenarios;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runs = if quick { 3 } else { 10 };
    println!(
        "| services | leaves/service | series | runs | report p50 ms | report max ms | top cause right |"
    );
    println!("|---:|---:|---:|---:|---:|---:|:--|");
    for (services, leaves) in [(100, 0), (100, 200), (100, 1000)] {
        let (bundle, faulty) = scenarios::large(services, leaves, 42);
        let series = bundle.series.len() + bundle.breakdowns.len();
        let mut times = Vec::new();
        let mut right = true;
        for _ in 0..runs {
            let mut rules = NativeRules::new().with("default", sonde_fta_rules::evaluate);
            let t = Instant::now();
            let report =
                analyze_bundle(&bundle, &mut rules, &AnalysisConfig::default()).expect("analysis");
            times.push(t.elapsed().as_secs_f64() * 1e3);
            right &= report
                .root_causes
                .first()
                .is_some_and(|c| c.element.id() == faulty);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "| {services} | {leaves} | {series} | {runs} | {:.1} | {:.1} | {} |",
            times[times.len() / 2],
            times[times.len() - 1],
            if right { "yes" } else { "no" }
        );
    }
}
