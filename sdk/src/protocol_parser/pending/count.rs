//! Counts the capture could not see, known only within bounds.

/// A number known to lie in `min..=max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Count {
    pub min: u64,
    pub max: u64,
}

impl Count {
    pub const ZERO: Count = Count { min: 0, max: 0 };
    pub const ONE: Count = Count { min: 1, max: 1 };

    pub fn new(min: u64, max: u64) -> Self {
        Count {
            min,
            max: max.max(min),
        }
    }

    pub fn exactly(n: u64) -> Self {
        Count { min: n, max: n }
    }

    pub fn plus(self, o: Count) -> Count {
        Count {
            min: self.min.saturating_add(o.min),
            max: self.max.saturating_add(o.max),
        }
    }

    /// What is left of `self` after `o` of them are taken (never below zero).
    pub fn minus(self, o: Count) -> Count {
        Count {
            min: self.min.saturating_sub(o.max),
            max: self.max.saturating_sub(o.min),
        }
    }

    /// Either count: the smallest range holding both.
    pub fn either(self, o: Count) -> Count {
        Count {
            min: self.min.min(o.min),
            max: self.max.max(o.max),
        }
    }
}
