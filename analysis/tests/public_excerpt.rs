//! The engine on excerpts of public datasets (PetShop, CC-BY-4.0, and CIRCA's simulator,
//! BSD-3-Clause; the README of each directory under tests/data says which part): the import layout loads, every fault opens an incident of its own on the
//! one timeline, and the injected service is ranked first in most cases. The whole datasets run
//! in `cargo bench --bench rca_public`.

use std::path::Path;

use sonde_analysis::demarcation::Element;
use sonde_analysis::import::Timeline;
use sonde_analysis::replay::analyze_bundle;
use sonde_analysis::report::AnalysisConfig;
use sonde_analysis::rules::NativeRules;

fn top(tl: &Timeline, detect: bool) -> (usize, usize, usize) {
    let (mut opened, mut first, mut top3) = (0, 0, 0);
    for case in &tl.cases {
        let Some(start) = tl.case_start(case, detect) else {
            continue;
        };
        opened += 1;
        let bundle = tl.bundle(&case.entry, &case.kpi, start, case.window_end);
        let mut rules = NativeRules::new().with("default", sonde_fta_rules::evaluate);
        let report = analyze_bundle(&bundle, &mut rules, &AnalysisConfig::default()).unwrap();
        let mut ranked: Vec<String> = Vec::new();
        for rc in &report.root_causes {
            let name = match &rc.element {
                Element::Service { name } => name.clone(),
                Element::Edge { callee, .. } => callee.clone(),
                Element::Node { .. } => continue,
            };
            if !ranked.contains(&name) {
                ranked.push(name);
            }
        }
        let truth = case.root_cause.as_deref().unwrap();
        eprintln!(
            "{} detect={detect} truth={truth} ranked={ranked:?}",
            case.id
        );
        first += usize::from(ranked.first().map(String::as_str) == Some(truth));
        top3 += usize::from(ranked.iter().take(3).any(|r| r == truth));
    }
    (opened, first, top3)
}

#[test]
fn petshop_excerpt() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/petshop-excerpt");
    let tl = Timeline::load(&dir).unwrap();
    assert_eq!(tl.cases.len(), 8);
    assert_eq!(tl.edges.len(), 9);
    let given = top(&tl, false);
    let detect = top(&tl, true);
    eprintln!("given {given:?} detect {detect:?}");
    assert_eq!(given.0, 8);
    // Measured when this test was written: 6 of 8 first with the injection time given (the
    // two petlistadoptions error faults, 0.4-1 % at the front end, find nothing); 5 incidents
    // opened by the detector, all 5 ranked right.
    assert!(given.1 >= 6 && given.2 >= 6, "given: {given:?}");
    assert!(detect.0 >= 5, "detect: {detect:?}");
    assert!(detect.1 >= 5, "detect: {detect:?}");
}

#[test]
fn circa_excerpt() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/circa-excerpt");
    let tl = Timeline::load(&dir).unwrap();
    assert_eq!(tl.cases.len(), 4);
    assert_eq!(tl.edges.len(), 100);
    // Samples 20 s past the minute: the incident must start at the fault's first sample
    // (starting a sample late left one anomalous sample of the 2-minute fault, and case 5
    // found nothing).
    let case = &tl.cases[0];
    let b = tl.bundle(
        &case.entry,
        &case.kpi,
        case.injected_at.unwrap(),
        case.window_end,
    );
    assert_eq!(b.spec.incident.start, case.injected_at);
    let given = top(&tl, false);
    let detect = top(&tl, true);
    eprintln!("given {given:?} detect {detect:?}");
    // Measured when this test was written: 3 of 4 first with the injection given (case 7's
    // n34 second behind its caller n1), all 4 in the top 3; the detector opens case 5 only,
    // ranked right (the SLI falls at faults 6 and 8, and latency is watched upwards; at 7 it
    // goes 1.3, 4.7, 2.9 σ and opens nothing).
    assert_eq!(given.0, 4);
    assert!(given.1 >= 3 && given.2 == 4, "given: {given:?}");
    assert!(detect.0 >= 1 && detect.1 >= 1, "detect: {detect:?}");
}
