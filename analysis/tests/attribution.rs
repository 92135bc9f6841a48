//! Attribution regression: seeded synthetic cases (`sonde_analysis::synth`, RiskLoc-style:
//! Gaussian forecast noise σ and zero leaves each U(0, 25%)) over every setting (additive and
//! ratio KPIs, 1–3 root causes of 1–3 dimensions, 27 cases per KPI) must keep exact-match
//! micro-F1 above a floor. Measured: 0.982 additive (54 TP, 2 FP, 0 FN), 0.991 ratio (53 TP,
//! 0 FP, 1 FN; 0.972 before the issue-19 fixes); floor 0.93. Smaller cubes than the benchmark
//! (≈2k leaves) so this runs in well under a second in debug. Seeds differ from the benchmark's and from those the defaults were
//! tuned on.

use sonde_analysis::attribution::{AttributionConfig, CubeBuilder, KpiKind, attribute};
use sonde_analysis::score::{Element, Scorer};
use sonde_analysis::synth::Rng;
use sonde_analysis::synth::{SynthConfig, generate};

/// A bit below what is measured (see the top of the file).
const FLOOR: f64 = 0.93;

const SHAPES: &[&[usize]] = &[&[8, 5, 5, 10], &[4, 5, 5, 5, 4], &[3, 4, 4, 4, 3, 3]];

fn run(kind: KpiKind) -> Scorer {
    let mut s = Scorer::default();
    for rcs in 1..=3 {
        for rcd in 1..=3 {
            for i in 0..3 {
                let seed = 42_000 + (rcs * 10 + rcd) as u64 * 10 + i as u64;
                let mut cfg = SynthConfig::new(seed, SHAPES[i % 3], rcs, rcd, kind);
                let mut r = Rng::new(seed);
                cfg.noise = r.uniform(0.0, 0.25);
                cfg.zero_fraction = r.uniform(0.0, 0.25);
                let case = generate(&cfg);
                let got: Vec<Element> = attribute(&case.cube, &AttributionConfig::default())
                    .into_iter()
                    .map(|c| c.elements)
                    .collect();
                s.add(&got, &case.truth);
            }
        }
    }
    s
}

#[test]
fn additive_f1_floor() {
    let s = run(KpiKind::Additive);
    eprintln!("additive: {s:?} F1 {:.3}", s.f1());
    assert!(
        s.f1() >= FLOOR,
        "micro-F1 {:.3} fell below the floor: {s:?}",
        s.f1()
    );
}

#[test]
fn ratio_f1_floor() {
    let s = run(KpiKind::Ratio);
    eprintln!("ratio: {s:?} F1 {:.3}", s.f1());
    assert!(
        s.f1() >= FLOOR,
        "micro-F1 {:.3} fell below the floor: {s:?}",
        s.f1()
    );
}

#[test]
fn output_is_deterministic() {
    let mut cfg = SynthConfig::new(9, &[6, 6, 6, 6], 3, 2, KpiKind::Additive);
    cfg.noise = 0.2;
    cfg.zero_fraction = 0.2;
    let a = attribute(&generate(&cfg).cube, &AttributionConfig::default());
    let b = attribute(&generate(&cfg).cube, &AttributionConfig::default());
    assert_eq!(a, b);
}

#[test]
fn a_single_full_root_cause_explains_everything() {
    let mut b = CubeBuilder::new(&["endpoint", "pod"], KpiKind::Additive);
    for e in ["/a", "/b", "/c"] {
        for p in ["p0", "p1"] {
            let actual = if e == "/b" { 5.0 } else { 100.0 };
            b.add(&[e, p], actual, 100.0);
        }
    }
    let causes = attribute(&b.build(), &AttributionConfig::default());
    assert_eq!(causes.len(), 1);
    let c = &causes[0];
    assert_eq!(c.elements, [("endpoint".to_string(), "/b".to_string())]);
    assert!((c.explanatory_power - 1.0).abs() < 1e-9);
    assert!((c.deviation + 0.95).abs() < 1e-9);
    assert_eq!(c.leaves, 2);
}

#[test]
fn ratio_kpi_finds_where_the_rate_changed_not_where_traffic_is() {
    // /big has most traffic and a steady 1% error rate; /small goes from 1% to 50%.
    let mut b = CubeBuilder::new(&["endpoint"], KpiKind::Ratio);
    b.add_ratio(&["/big"], 10.0, 10.0, 1000.0, 1000.0);
    b.add_ratio(&["/small"], 25.0, 0.5, 50.0, 50.0);
    b.add_ratio(&["/other"], 1.0, 1.0, 100.0, 100.0);
    let causes = attribute(&b.build(), &AttributionConfig::default());
    assert_eq!(
        causes[0].elements,
        [("endpoint".to_string(), "/small".to_string())]
    );
    assert!(causes[0].explanatory_power > 0.99, "{:?}", causes[0]);
    assert!((causes[0].actual - 0.5).abs() < 1e-9);
}

#[test]
fn degenerate_inputs() {
    let empty = CubeBuilder::new(&["a"], KpiKind::Additive).build();
    assert!(attribute(&empty, &AttributionConfig::default()).is_empty());
    let mut b = CubeBuilder::new(&["a"], KpiKind::Additive);
    b.add(&["x"], 5.0, 5.0);
    b.add(&["y"], f64::NAN, 1.0);
    b.add(&["too", "many"], 1.0, 1.0);
    assert_eq!(b.skipped, 2);
    assert!(
        attribute(&b.build(), &AttributionConfig::default()).is_empty(),
        "no change, no cause"
    );
    let mut z = CubeBuilder::new(&["a"], KpiKind::Ratio);
    z.add_ratio(&["x"], 0.0, 0.0, 0.0, 0.0);
    assert!(attribute(&z.build(), &AttributionConfig::default()).is_empty());
}
