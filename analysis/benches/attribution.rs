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

// ---------------------------------------------------------------------------------------------
// Baseline 1: RiskLoc, reimplemented from the paper's description (no element pruning; the
// paper's defaults: 5 extreme values dropped for the cutoff, risk threshold 0.5, explanatory
// power threshold 2%). Derived (ratio) KPIs: deviation on the leaf ratio and the paper's
// derived explanatory power.
// ---------------------------------------------------------------------------------------------

fn element_of(cube: &Cube, leaf: usize, dims: &[usize]) -> Element {
    dims.iter()
        .map(|&d| {
            (
                cube.dimensions()[d].clone(),
                cube.values(d)[cube.coord(leaf, d) as usize].clone(),
            )
        })
        .collect()
}

fn subsets(n: usize, k: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    fn rec(s: usize, n: usize, k: usize, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if cur.len() == k {
            out.push(cur.clone());
            return;
        }
        for i in s..n {
            cur.push(i);
            rec(i + 1, n, k, cur, out);
            cur.pop();
        }
    }
    rec(0, n, k, &mut cur, &mut out);
    out
}

fn riskloc(cube: &Cube) -> Vec<Element> {
    let n = cube.len();
    let nd = cube.dimensions().len();
    if n == 0 {
        return Vec::new();
    }
    let ratio = cube.kind() == KpiKind::Ratio;
    // Per leaf: real and predict (ratios for derived measures), deviation, explanatory power.
    let (mut fa, mut fb) = (0.0, 0.0);
    let (mut sa, mut sf) = (0.0, 0.0);
    for l in 0..n {
        let (na, nf, _, df) = cube.leaf(l);
        sa += na;
        sf += nf;
        fa += nf;
        fb += df;
    }
    let mut real = vec![0.0; n];
    let mut pred = vec![0.0; n];
    let mut ep = vec![0.0; n];
    for l in 0..n {
        let (na, nf, da, df) = cube.leaf(l);
        if ratio {
            real[l] = if da > 0.0 { na / da } else { 0.0 };
            pred[l] = if df > 0.0 { nf / df } else { 0.0 };
            let num = (na - nf) * fb - (da - df) * fa;
            let den = fb * (fb + da - df);
            ep[l] = if den != 0.0 { num / den } else { 0.0 };
        } else {
            real[l] = na;
            pred[l] = nf;
            ep[l] = if sa != sf { (na - nf) / (sa - sf) } else { 0.0 };
        }
    }
    if ratio {
        let s: f64 = ep.iter().sum();
        if s != 0.0 {
            ep.iter_mut().for_each(|e| *e /= s);
        }
    }
    let dev: Vec<f64> = (0..n)
        .map(|l| {
            if real[l] + pred[l] != 0.0 {
                2.0 * (pred[l] - real[l]) / (pred[l] + real[l])
            } else {
                0.0
            }
        })
        .collect();
    // Cutoff: the smaller in magnitude of the 6th smallest and 6th largest distinct deviation.
    let mut devs = dev.clone();
    devs.sort_by(f64::total_cmp);
    devs.dedup();
    let k = 5.min(devs.len() - 1);
    let (lo, hi) = (devs[k], devs[devs.len() - 1 - k]);
    let t = -(if lo.abs() <= hi.abs() { lo } else { hi });
    let right = t > 0.0 || (t == 0.0 && t.is_sign_positive());
    let part: Vec<bool> = dev
        .iter()
        .map(|&d| if right { d > t } else { d < t })
        .collect();
    let weight: Vec<f64> = (0..n)
        .map(|l| {
            let w = if part[l] {
                dev[l].abs()
            } else if real[l] == 0.0 && pred[l] == 0.0 {
                0.0
            } else {
                (t - dev[l]).abs()
            };
            w.min(1.0)
        })
        .collect();
    let mut anomaly_ep: f64 = (0..n).filter(|&l| part[l]).map(|l| ep[l]).sum();
    if anomaly_ep < 0.0 {
        ep.iter_mut().for_each(|e| *e = -*e);
        anomaly_ep = -anomaly_ep;
    }
    let threshold = anomaly_ep * 0.02;
    let mut alive = vec![true; n];
    let mut out = Vec::new();
    let cuboids: Vec<Vec<usize>> = (1..=nd).flat_map(|k| subsets(nd, k)).collect();
    let mut groups: std::collections::HashMap<u64, [f64; 9]> = Default::default();
    while out.len() < 10 {
        let rest: f64 = (0..n).filter(|&l| alive[l] && part[l]).map(|l| ep[l]).sum();
        if rest < threshold {
            break;
        }
        let mut found: Option<(Vec<usize>, usize)> = None;
        let mut layer_found = 0;
        let mut best_ep = threshold;
        for cuboid in &cuboids {
            if layer_found != 0 && cuboid.len() > layer_found {
                break;
            }
            let key = |l: usize| {
                cuboid.iter().fold(0u64, |k, &d| {
                    k * (cube.values(d).len() as u64 + 1) + cube.coord(l, d) as u64
                })
            };
            // [ep, n_part1, w_part1, w_part0, sum real, sum pred (nonzero), sum |dev| (nonzero), count (nonzero), first leaf]
            groups.clear();
            for l in (0..n).filter(|&l| alive[l]) {
                let g = groups
                    .entry(key(l))
                    .or_insert([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, l as f64]);
                g[0] += ep[l];
                if part[l] {
                    g[1] += 1.0;
                    g[2] += weight[l];
                } else {
                    g[3] += weight[l];
                }
                if real[l] != 0.0 && pred[l] != 0.0 {
                    g[4] += real[l];
                    g[5] += pred[l];
                    g[6] += dev[l].abs();
                    g[7] += 1.0;
                }
            }
            let mut cands: Vec<(f64, u64)> = groups
                .iter()
                .filter(|(_, g)| g[1] > 0.0 && g[0] > best_ep)
                .map(|(k, g)| (g[0], *k))
                .collect();
            cands.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            for (e, k) in cands {
                let g = groups[&k];
                let high = g[2] / (g[2] + g[3] + 1.0);
                let low = if g[7] > 0.0 && g[6] > 0.0 {
                    let scale = g[4] / g[5];
                    let mut w1 = 0.0;
                    for l in (0..n)
                        .filter(|&l| alive[l] && key(l) == k && real[l] != 0.0 && pred[l] != 0.0)
                    {
                        let a = pred[l] * scale;
                        w1 += (2.0 * (a - real[l]) / (a + real[l])).abs();
                    }
                    (w1 / g[7]) / (g[6] / g[7])
                } else {
                    0.0
                };
                if high - low >= 0.5 {
                    best_ep = e;
                    found = Some((cuboid.clone(), g[8] as usize));
                    layer_found = cuboid.len();
                    break;
                }
            }
        }
        let Some((dims, leaf)) = found else { break };
        let el = element_of(cube, leaf, &dims);
        for (l, a) in alive.iter_mut().enumerate() {
            if *a
                && dims
                    .iter()
                    .all(|&d| cube.coord(l, d) == cube.coord(leaf, d))
            {
                *a = false;
            }
        }
        out.push(el);
    }
    out
}

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

fn stats(ms: &[f64]) -> (f64, f64) {
    if ms.is_empty() {
        return (0.0, 0.0);
    }
    let mut v = ms.to_vec();
    v.sort_by(f64::total_cmp);
    (
        v.iter().sum::<f64>() / v.len() as f64,
        v[((v.len() as f64 * 0.95).ceil() as usize).clamp(1, v.len()) - 1],
    )
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
