//! Log-linear latency histogram in nanoseconds: fixed memory (3,776 counters) and about
//! 1.6% resolution, so percentiles need no per-message sample storage.

/// Sub-buckets per power of two; values below `2 * SUB` ns are exact.
const SUB: u64 = 64;
const SUB_BITS: u32 = SUB.trailing_zeros();
const BUCKETS: usize = (2 * SUB + 57 * SUB) as usize;

pub struct Hist {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

fn index(v: u64) -> usize {
    if v < 2 * SUB {
        return v as usize;
    }
    let top = 63 - v.leading_zeros(); // >= SUB_BITS + 1
    let shift = top - SUB_BITS;
    let mantissa = v >> shift; // in SUB..2*SUB
    (2 * SUB + u64::from(shift - 1) * SUB + (mantissa - SUB)) as usize
}

/// The middle of bucket `i`.
fn value(i: usize) -> u64 {
    let i = i as u64;
    if i < 2 * SUB {
        return i;
    }
    let shift = (i - 2 * SUB) / SUB + 1;
    let mantissa = (i - 2 * SUB) % SUB + SUB;
    let lo = u128::from(mantissa) << shift;
    u64::try_from(lo + (1u128 << shift) / 2).unwrap_or(u64::MAX)
}

impl Hist {
    pub fn new() -> Self {
        Hist {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }

    pub fn clear(&mut self) {
        self.counts.fill(0);
        self.total = 0;
        self.max = 0;
    }

    pub fn record(&mut self, ns: u64) {
        self.counts[index(ns)] += 1;
        self.total += 1;
        self.max = self.max.max(ns);
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1), or 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return value(i).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        assert_eq!(index(127), 127);
        assert_eq!(index(128), 128);
        assert_eq!(index(255), 191);
        assert_eq!(index(256), 192);
        assert_eq!(index(u64::MAX), BUCKETS - 1);
        for v in [1_000u64, 123_456, 9_999_999, 1 << 40] {
            let err = (value(index(v)) as f64 - v as f64).abs() / v as f64;
            assert!(err < 0.016, "{v}: {err}");
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Hist::new();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.02, "{p50}");
        assert!((p99 - 990_000.0).abs() / 990_000.0 < 0.02, "{p99}");
        assert_eq!(h.quantile(1.0), 1_000_000);
        h.clear();
        assert_eq!(h.quantile(0.5), 0);
    }
}
