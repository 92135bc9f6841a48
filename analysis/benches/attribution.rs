//! Attribution accuracy (exact-match micro-F1) and time per case on seeded synthetic cases
//! (`sonde_analysis::synth`), per setting, against two baselines run on the same cases: our
//! reimplementation of RiskLoc (Kalander 2022) from its paper, and an Adtributor-style
//! single-dimension method; then time per case at 20k and 50k leaves with 4–6 dimensions.
//!
//! `cargo bench -p sonde-analysis --bench attribution [-- --quick] [--cases N] [--no-sizes]`
//! prints markdown (the tables of BENCHMARKS.md).

use std::time::Instant;

use sonde_analysis::attribution::{AttributionConfig, Cube, KpiKind, attribute};
use sonde_analysis::score::{Element, Scorer};
use sonde_analysis::synth::{Rng, SynthConfig, generate};

#[path = "common/riskloc.rs"]
mod riskloc;
#[path = "common/timing.rs"]
mod timing;
use riskloc::{element_of, riskloc};
use timing::stats;

// ---------------------------------------------------------------------------------------------
// Baseline 2: Adtributor-style: per dimension, values by explanatory power until 67% of the
// change is explained (each ≥ 10%); the dimension needing the fewest values wins.
// ---------------------------------------------------------------------------------------------

fn adtributor(cube: &Cube) -> Vec<Element> {
    let n = cube.len();
    let nd = cube.dimensions().len();
    let (mut a, mut f, mut da, mut df) = (0.0, 0.0, 0.0, 0.0);
    for l in 0..n {
        let x = cube.leaf(l);
        a += x.0;
        f += x.1;
        da += x.2;
        df += x.3;
    }
    let kpi = |n: f64, d: f64| {
        if cube.kind() == KpiKind::Ratio {
            if d > 0.0 { n / d } else { 0.0 }
        } else {
            n
        }
    };
    let total = kpi(a, da) - kpi(f, df);
    if total == 0.0 {
        return Vec::new();
    }
    let mut best: Option<Vec<Element>> = None;
    for d in 0..nd {
        let nv = cube.values(d).len();
        let mut s = vec![[0.0f64; 4]; nv];
        let mut first = vec![usize::MAX; nv];
        for l in 0..n {
            let v = cube.coord(l, d) as usize;
            let x = cube.leaf(l);
            s[v][0] += x.0;
            s[v][1] += x.1;
            s[v][2] += x.2;
            s[v][3] += x.3;
            if first[v] == usize::MAX {
                first[v] = l;
            }
        }
        // Counterfactual explanatory power: the change that goes away if this value reverted.
        let mut eps: Vec<(f64, usize)> = (0..nv)
            .filter(|&v| first[v] != usize::MAX)
            .map(|v| {
                let reverted = kpi(a - s[v][0] + s[v][1], da - s[v][2] + s[v][3]);
                ((kpi(a, da) - reverted) / total, v)
            })
            .collect();
        eps.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
        let mut sum = 0.0;
        let mut set = Vec::new();
        for (e, v) in eps {
            if e < 0.1 || sum >= 0.67 {
                break;
            }
            sum += e;
            set.push(element_of(cube, first[v], &[d]));
        }
        if sum >= 0.67 && best.as_ref().is_none_or(|b| set.len() < b.len()) {
            best = Some(set);
        }
    }
    best.unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------

const SHAPES_20K: &[&[usize]] = &[&[10, 10, 10, 20], &[5, 5, 8, 10, 10], &[4, 5, 5, 5, 5, 8]];
const SHAPES_50K: &[&[usize]] = &[
    &[10, 10, 20, 25],
    &[5, 10, 10, 10, 10],
    &[5, 5, 5, 8, 10, 5],
];

struct Run {
    ours: Scorer,
    riskloc: Scorer,
    adtributor: Scorer,
    ms: Vec<f64>,
    ms_riskloc: Vec<f64>,
}

impl Run {
    fn new() -> Self {
        Self {
            ours: Scorer::default(),
            riskloc: Scorer::default(),
            adtributor: Scorer::default(),
            ms: Vec::new(),
            ms_riskloc: Vec::new(),
        }
    }
    fn case(&mut self, cfg: &SynthConfig, baselines: bool) {
        let case = generate(cfg);
        let t = Instant::now();
        let got = attribute(&case.cube, &AttributionConfig::default());
        self.ms.push(t.elapsed().as_secs_f64() * 1e3);
        let pred: Vec<Element> = got.into_iter().map(|c| c.elements).collect();
        let sorted = |v: &[Element]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        if std::env::var_os("ATTR_DEBUG").is_some() && sorted(&pred) != sorted(&case.truth) {
            eprintln!(
                "{:?} seed {}: truth {:?}\n   got {:?}",
                cfg.kind, cfg.seed, case.truth, pred
            );
        }
        self.ours.add(&pred, &case.truth);
        if baselines {
            let t = Instant::now();
            let r = riskloc(&case.cube);
            self.ms_riskloc.push(t.elapsed().as_secs_f64() * 1e3);
            self.riskloc.add(&r, &case.truth);
            self.adtributor.add(&adtributor(&case.cube), &case.truth);
        }
    }
}

fn merge(into: &mut Scorer, s: &Scorer) {
    into.tp += s.tp;
    into.fp += s.fp;
    into.fn_ += s.fn_;
    into.cases += s.cases;
}

/// F1, or a dash for a method that did not run.
fn f1(s: &Scorer) -> String {
    if s.cases == 0 {
        "—".to_string()
    } else {
        format!("{:.3}", s.f1())
    }
}

/// The benchmark's draw of the case-level settings (as RiskLoc S: noise and zero share U(0, 25%)).
fn setting(seed: u64, shape: &[usize], rcs: usize, rcd: usize, kind: KpiKind) -> SynthConfig {
    let mut cfg = SynthConfig::new(seed, shape, rcs, rcd, kind);
    let mut r = Rng::new(seed ^ 0xBE7C_4A5E);
    cfg.noise = r.uniform(0.0, 0.25);
    cfg.zero_fraction = r.uniform(0.0, 0.25);
    cfg
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|s| s.parse::<u64>().ok())
    };
    let cases = arg("--cases").unwrap_or(if quick { 6 } else { 30 }) as usize;
    let base_seed = arg("--seed").unwrap_or(1_000_000);
    let kinds: Vec<KpiKind> = match args
        .iter()
        .position(|a| a == "--kind")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
    {
        Some("additive") => vec![KpiKind::Additive],
        Some("ratio") => vec![KpiKind::Ratio],
        _ => vec![KpiKind::Additive, KpiKind::Ratio],
    };
    let baselines = !args.iter().any(|a| a == "--no-baselines");

    println!(
        "Accuracy per setting ({cases} cases each, seeds from {base_seed}; ~20k leaves, 4–6 dimensions in turn; \
         forecast noise σ ~ U(0, 25%), zero leaves U(0, 25%)):\n"
    );
    println!(
        "| KPI | RCs | RC dims | Sonde F1 | RiskLoc F1 | Adtributor F1 | Sonde ms/case mean | p95 | RiskLoc ms mean |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut all = Run::new();
    for &kind in &kinds {
        let mut per_kind = Run::new();
        for rcs in 1..=3usize {
            for rcd in 1..=3usize {
                let mut run = Run::new();
                for i in 0..cases {
                    let seed = base_seed
                        + (rcs * 10 + rcd) as u64 * 1000
                        + i as u64
                        + if kind == KpiKind::Ratio { 500 } else { 0 };
                    run.case(&setting(seed, SHAPES_20K[i % 3], rcs, rcd, kind), baselines);
                }
                let (mean, p95) = stats(&run.ms);
                let (rmean, _) = stats(&run.ms_riskloc);
                println!(
                    "| {kind:?} | {rcs} | {rcd} | {:.3} | {} | {} | {mean:.1} | {p95:.1} | {rmean:.1} |",
                    run.ours.f1(),
                    f1(&run.riskloc),
                    f1(&run.adtributor)
                );
                for (a, b) in [
                    (&mut per_kind.ours, &run.ours),
                    (&mut per_kind.riskloc, &run.riskloc),
                    (&mut per_kind.adtributor, &run.adtributor),
                ] {
                    merge(a, b);
                }
                per_kind.ms.extend(&run.ms);
                per_kind.ms_riskloc.extend(&run.ms_riskloc);
            }
        }
        let (mean, p95) = stats(&per_kind.ms);
        let (rmean, _) = stats(&per_kind.ms_riskloc);
        println!(
            "| **{kind:?}** | | | **{:.3}** | {} | {} | {mean:.1} | {p95:.1} | {rmean:.1} |",
            per_kind.ours.f1(),
            f1(&per_kind.riskloc),
            f1(&per_kind.adtributor)
        );
        for (a, b) in [
            (&mut all.ours, &per_kind.ours),
            (&mut all.riskloc, &per_kind.riskloc),
            (&mut all.adtributor, &per_kind.adtributor),
        ] {
            merge(a, b);
        }
    }
    println!(
        "| **all** | | | **{:.3}** | {} | {} | | | |",
        all.ours.f1(),
        f1(&all.riskloc),
        f1(&all.adtributor)
    );

    if args.iter().any(|a| a == "--no-sizes") {
        return;
    }
    // RiskLoc's S dataset shape and mix: 10×12×10×8×5 = 48k leaves, 1–3 root causes of 1–3
    // dimensions each drawn per case (we draw one dimension count per case).
    let s_cases = if quick { 6 } else { 60 };
    println!(
        "\nRiskLoc's S shape (10×12×10×8×5 = 48,000 leaves; 1–3 root causes of 1–3 dimensions drawn per case; {s_cases} cases per KPI):\n"
    );
    println!(
        "| KPI | Sonde F1 | RiskLoc F1 | Adtributor F1 | Sonde ms/case mean | p95 | RiskLoc ms mean |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for &kind in &kinds {
        let mut run = Run::new();
        for i in 0..s_cases {
            let seed = base_seed + 77_000 + i as u64 + if kind == KpiKind::Ratio { 500 } else { 0 };
            let mut r = Rng::new(seed);
            let (rcs, rcd) = (1 + r.below(3), 1 + r.below(3));
            run.case(
                &setting(seed, &[10, 12, 10, 8, 5], rcs, rcd, kind),
                baselines,
            );
        }
        let (mean, p95) = stats(&run.ms);
        let (rmean, _) = stats(&run.ms_riskloc);
        println!(
            "| {kind:?} | {:.3} | {} | {} | {mean:.1} | {p95:.1} | {rmean:.1} |",
            run.ours.f1(),
            f1(&run.riskloc),
            f1(&run.adtributor)
        );
    }

    let per = if quick { 3 } else { 10 };
    println!(
        "\nTime per case by size ({per} cases each; 2 root causes of 2 dimensions, noise σ 10%, zero leaves 10%):\n"
    );
    println!(
        "| KPI | leaves | dims | Sonde ms/case mean | p95 | max | Sonde F1 | RiskLoc ms mean |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for &kind in &kinds {
        for shapes in [SHAPES_20K, SHAPES_50K] {
            for shape in shapes {
                let mut run = Run::new();
                for i in 0..per {
                    let mut cfg = SynthConfig::new(base_seed + 9_000 + i as u64, shape, 2, 2, kind);
                    cfg.noise = 0.1;
                    cfg.zero_fraction = 0.1;
                    run.case(&cfg, baselines);
                }
                let leaves: usize = shape.iter().product();
                let (mean, p95) = stats(&run.ms);
                let max = run.ms.iter().cloned().fold(0.0, f64::max);
                let (rmean, _) = stats(&run.ms_riskloc);
                println!(
                    "| {kind:?} | {leaves} | {} | {mean:.1} | {p95:.1} | {max:.1} | {:.3} | {rmean:.1} |",
                    shape.len(),
                    run.ours.f1()
                );
            }
        }
    }
}
