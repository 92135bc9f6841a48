//! Exact-match micro-F1 over attribution cases: per case, a predicted element is a true
//! positive when it equals a true root cause (both in canonical dimension order);
//! F1 = 2ΣTP / (2ΣTP + ΣFP + ΣFN). Predictions and truths are sets: a repeated element counts
//! once.

pub type Element = Vec<(String, String)>;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scorer {
    pub tp: usize,
    pub fp: usize,
    pub fn_: usize,
    pub cases: usize,
}

fn canonical(e: &Element) -> Element {
    let mut e = e.clone();
    e.sort();
    e
}

impl Scorer {
    pub fn add(&mut self, predicted: &[Element], truth: &[Element]) {
        let mut p: Vec<Element> = predicted.iter().map(canonical).collect();
        let mut t: Vec<Element> = truth.iter().map(canonical).collect();
        p.sort();
        p.dedup();
        t.sort();
        t.dedup();
        let tp = p.iter().filter(|e| t.contains(e)).count();
        self.tp += tp;
        self.fp += p.len() - tp;
        self.fn_ += t.iter().filter(|e| !p.contains(e)).count();
        self.cases += 1;
    }

    /// Adds another scorer's counts.
    pub fn merge(&mut self, other: &Scorer) {
        self.tp += other.tp;
        self.fp += other.fp;
        self.fn_ += other.fn_;
        self.cases += other.cases;
    }

    pub fn f1(&self) -> f64 {
        let denom = 2 * self.tp + self.fp + self.fn_;
        if denom == 0 {
            1.0
        } else {
            2.0 * self.tp as f64 / denom as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(pairs: &[(&str, &str)]) -> Element {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn micro_f1_counts_exact_matches_only() {
        let mut s = Scorer::default();
        s.add(
            &[el(&[("b", "1"), ("a", "2")])],
            &[el(&[("a", "2"), ("b", "1")])],
        );
        assert_eq!((s.tp, s.fp, s.fn_), (1, 0, 0));
        // A parent of the truth is wrong: one FP and one FN.
        s.add(&[el(&[("a", "2")])], &[el(&[("a", "2"), ("b", "1")])]);
        assert_eq!((s.tp, s.fp, s.fn_), (1, 1, 1));
        assert!((s.f1() - 0.5).abs() < 1e-12);
        // A repeated prediction counts once.
        let mut d = Scorer::default();
        d.add(
            &[el(&[("a", "1")]), el(&[("a", "1")])],
            &[el(&[("a", "1")])],
        );
        assert_eq!((d.tp, d.fp, d.fn_), (1, 0, 0));
        assert_eq!(
            Scorer::default().f1(),
            1.0,
            "nothing to find, nothing found"
        );
    }
}
