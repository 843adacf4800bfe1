//! Order statistics of a series of timings: median, quartiles, p95 (nearest rank), extremes.

use serde_json::{Value, json};

#[derive(Debug, Clone, Default)]
pub struct Series {
    samples: Vec<f64>,
}

impl Series {
    pub fn new() -> Series {
        Series::default()
    }

    pub fn push(&mut self, value: f64) {
        self.samples.push(value);
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    fn sorted(&self) -> Vec<f64> {
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        s
    }

    /// Nearest-rank percentile (p in 0..=100); NaN when empty.
    pub fn percentile(&self, p: f64) -> f64 {
        let s = self.sorted();
        if s.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
        s[rank.min(s.len()) - 1]
    }

    /// The median (the mean of the two middle samples for an even count).
    pub fn median(&self) -> f64 {
        let s = self.sorted();
        match s.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => s[n / 2],
            n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
        }
    }

    pub fn p95(&self) -> f64 {
        self.percentile(95.0)
    }

    pub fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }

    pub fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }

    pub fn json(&self) -> Value {
        let r = |v: f64| (v * 100.0).round() / 100.0;
        json!({
            "n": self.len(),
            "median": r(self.median()),
            "p25": r(self.percentile(25.0)),
            "p75": r(self.percentile(75.0)),
            "p95": r(self.p95()),
            "min": r(self.min()),
            "max": r(self.max()),
        })
    }

    /// `median [p25–p75] p95 (min–max)`, in the unit of the samples.
    pub fn cell(&self) -> String {
        if self.is_empty() {
            return "-".into();
        }
        format!(
            "{:.1} [{:.1}–{:.1}] p95 {:.1} ({:.1}–{:.1}, n={})",
            self.median(),
            self.percentile(25.0),
            self.percentile(75.0),
            self.p95(),
            self.min(),
            self.max(),
            self.len()
        )
    }
}
