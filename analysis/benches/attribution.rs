//! Attribution accuracy (exact-match micro-F1) and time per case on seeded synthetic cases
//! (`sonde_analysis::synth`), per setting; and time per case at 20k and 50k leaves with 4–6
//! dimensions. A single-dimension, Adtributor-style baseline runs on the same cases.
//!
//! `cargo bench -p sonde-analysis --bench attribution [-- --quick]`

use std::time::Instant;

use sonde_analysis::attribution::{AttributionConfig, Cube, KpiKind, attribute};
use sonde_analysis::score::{Element, Scorer};
use sonde_analysis::synth::{SynthConfig, generate};

/// Adtributor-style baseline: per dimension, values by explanatory power until 67% of the change
/// is explained (each ≥ 10%); the dimension needing the fewest values wins. Single dimension only.
fn baseline(cube: &Cube) -> Vec<Element> {
    let causes = attribute(cube, &AttributionConfig { max_dims: 1, max_causes: 64, min_purity: 0.0, min_explanatory_power: 0.1, ..Default::default() });
    let mut by_dim: std::collections::BTreeMap<String, Vec<(f64, Element)>> = Default::default();
    for c in causes {
        by_dim.entry(c.elements[0].0.clone()).or_default().push((c.explanatory_power, c.elements));
    }
    let mut best: Option<Vec<Element>> = None;
    for (_, mut v) in by_dim {
        v.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut sum = 0.0;
        let mut set = Vec::new();
        for (ep, e) in v {
            set.push(e);
            sum += ep;
            if sum >= 0.67 {
                break;
            }
        }
        if sum >= 0.67 && best.as_ref().is_none_or(|b| set.len() < b.len()) {
            best = Some(set);
        }
    }
    best.unwrap_or_default()
}

const SHAPES_20K: &[&[usize]] = &[&[10, 10, 10, 20], &[5, 5, 8, 10, 10], &[4, 5, 5, 5, 5, 8]];
const SHAPES_50K: &[&[usize]] = &[&[10, 10, 20, 25], &[5, 10, 10, 10, 10], &[5, 5, 5, 8, 10, 5]];

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let cases = if quick { 4 } else { 20 };
    println!("Accuracy per setting ({cases} cases each; 20k leaves, 4–6 dimensions; noise U(0, 25%), zero leaves U(0, 25%)):\n");
    println!("| KPI | RCs | RC dims | Sonde F1 | baseline F1 | Sonde ms/case mean | p95 |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut all = Scorer::default();
    let mut all_base = Scorer::default();
    for kind in [KpiKind::Additive, KpiKind::Ratio] {
        for rcs in 1..=3 {
            for rcd in 1..=3 {
                let mut s = Scorer::default();
                let mut sb = Scorer::default();
                let mut times = Vec::new();
                for i in 0..cases {
                    let seed = 1_000_000 + (rcs * 100 + rcd * 10) as u64 * 1000 + i as u64 + if kind == KpiKind::Ratio { 500 } else { 0 };
                    let mut cfg = SynthConfig::new(seed, SHAPES_20K[i % 3], rcs, rcd, kind);
                    let mut r = sonde_analysis::scenarios::Rng::new(seed);
                    cfg.noise = 0.25 * r.unit();
                    cfg.zero_fraction = 0.25 * r.unit();
                    let case = generate(&cfg);
                    let t = Instant::now();
                    let got = attribute(&case.cube, &AttributionConfig::default());
                    times.push(t.elapsed().as_secs_f64() * 1e3);
                    let pred: Vec<Element> = got.into_iter().map(|c| c.elements).collect();
                    s.add(&pred, &case.truth);
                    sb.add(&baseline(&case.cube), &case.truth);
                }
                all.tp += s.tp; all.fp += s.fp; all.fn_ += s.fn_;
                all_base.tp += sb.tp; all_base.fp += sb.fp; all_base.fn_ += sb.fn_;
                times.sort_by(f64::total_cmp);
                let mean = times.iter().sum::<f64>() / times.len() as f64;
                let p95 = times[((times.len() as f64 * 0.95) as usize).min(times.len() - 1)];
                println!("| {kind:?} | {rcs} | {rcd} | {:.3} | {:.3} | {mean:.1} | {p95:.1} |", s.f1(), sb.f1());
            }
        }
    }
    println!("| **all** | | | **{:.3}** | {:.3} | | |", all.f1(), all_base.f1());
    println!("\nTime per case by size (additive, 2 RCs of 2 dims, noise 10%, zero leaves 10%):\n");
    println!("| leaves | dims | ms/case mean | max | F1 |");
    println!("|---:|---:|---:|---:|---:|");
    for shapes in [SHAPES_20K, SHAPES_50K] {
        for shape in shapes {
            let mut times = Vec::new();
            let mut s = Scorer::default();
            for i in 0..(if quick { 2 } else { 5 }) {
                let mut cfg = SynthConfig::new(7_000 + i, shape, 2, 2, KpiKind::Additive);
                cfg.noise = 0.1;
                cfg.zero_fraction = 0.1;
                let case = generate(&cfg);
                let t = Instant::now();
                let got = attribute(&case.cube, &AttributionConfig::default());
                times.push(t.elapsed().as_secs_f64() * 1e3);
                s.add(&got.into_iter().map(|c| c.elements).collect::<Vec<_>>(), &case.truth);
            }
            let leaves: usize = shape.iter().product();
            let mean = times.iter().sum::<f64>() / times.len() as f64;
            let max = times.iter().cloned().fold(0.0, f64::max);
            println!("| {leaves} | {} | {mean:.1} | {max:.1} | {:.3} |", shape.len(), s.f1());
        }
    }
}
