//! RiskLoc (Kalander 2022), reimplemented from the paper's description for the attribution
//! benchmarks (shared by `attribution.rs` and `attribution_public.rs`): not the paper's code.
//! No element pruning (it only saves time); the paper's defaults: 5 extreme values dropped for
//! the cutoff, risk threshold 0.5, explanatory power threshold 2%. Derived (ratio) KPIs:
//! deviation on the leaf ratio and the paper's derived explanatory power.

// `element_of` is used by attribution.rs only.
#![allow(dead_code)]

use sonde_analysis::attribution::{Cube, KpiKind};
use sonde_analysis::score::Element;

pub(crate) fn element_of(cube: &Cube, leaf: usize, dims: &[usize]) -> Element {
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

pub(crate) fn riskloc(cube: &Cube) -> Vec<Element> {
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
