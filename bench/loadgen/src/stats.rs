//! Latency histogram with 1 µs buckets up to 100 ms (plus an overflow bucket).

use std::time::Duration;

const BUCKETS: usize = 100_000;

/// Latency histogram.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    overflow: u64,
    n: u64,
    sum_us: u128,
    max_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS],
            overflow: 0,
            n: 0,
            sum_us: 0,
            max_us: 0,
        }
    }

    /// Records one sample.
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        match self.counts.get_mut(us as usize) {
            Some(c) if (us as usize) < BUCKETS => *c += 1,
            _ => self.overflow += 1,
        }
        self.n += 1;
        self.sum_us += u128::from(us);
        self.max_us = self.max_us.max(us);
    }

    /// Adds another histogram's samples to this one (the sessions of one run).
    pub fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a = a.saturating_add(*b);
        }
        self.overflow = self.overflow.saturating_add(o.overflow);
        self.n = self.n.saturating_add(o.n);
        self.sum_us = self.sum_us.saturating_add(o.sum_us);
        self.max_us = self.max_us.max(o.max_us);
    }

    /// Samples recorded (tests check the histogram with it).
    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Mean in µs (0 when empty).
    pub fn mean_us(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum_us as f64 / self.n as f64
        }
    }

    /// Largest sample in µs.
    pub fn max_us(&self) -> u64 {
        self.max_us
    }

    /// The `q`-quantile (0..=1) in µs: the smallest bucket with at least `q` of the
    /// samples at or below it; samples past 100 ms report the maximum.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.n == 0 {
            return 0;
        }
        let want = ((q.clamp(0.0, 1.0) * self.n as f64).ceil() as u64).max(1);
        let mut acc = 0u64;
        for (us, &c) in self.counts.iter().enumerate() {
            acc += c;
            if acc >= want {
                return us as u64;
            }
        }
        self.max_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let mut h = Histogram::new();
        for us in 1..=100u64 {
            h.record(Duration::from_micros(us));
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile_us(0.5), 50);
        assert_eq!(h.quantile_us(0.99), 99);
        assert_eq!(h.quantile_us(1.0), 100);
        assert!((h.mean_us() - 50.5).abs() < 1e-9);
        h.record(Duration::from_secs(1));
        assert_eq!(h.max_us(), 1_000_000);
        assert_eq!(h.quantile_us(1.0), 1_000_000);
        assert_eq!(Histogram::new().quantile_us(0.5), 0);
    }

    #[test]
    fn merge_adds_samples() {
        // Two sessions: 1..=50 µs and 51..=100 µs merge into the same histogram as one
        // session recording 1..=100 µs.
        let (mut a, mut b) = (Histogram::new(), Histogram::new());
        for us in 1..=50u64 {
            a.record(Duration::from_micros(us));
            b.record(Duration::from_micros(us + 50));
        }
        b.record(Duration::from_secs(1));
        a.merge(&b);
        assert_eq!(a.count(), 101);
        assert_eq!(a.quantile_us(0.5), 51);
        assert_eq!(a.quantile_us(0.99), 100);
        assert_eq!(a.max_us(), 1_000_000);
    }
}
