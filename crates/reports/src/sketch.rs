//! Latency distributions that merge: an HDR histogram with two significant digits (values
//! within 1 % share a bucket), stored in a rollup row as `value:count` pairs of its buckets.
//! Days merge by adding pairs, so a summary over months reads one short text per rollup row
//! instead of every raw row.

use std::{collections::BTreeMap, sync::LazyLock};

use hdrhistogram::Histogram;

/// Significant digits kept.
const SIGFIG: u8 = 2;
/// Largest latency tracked exactly (an hour); longer ones are counted as an hour.
const MAX_US: u64 = 3_600_000_000;

fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts (1 ≤ low, high ≥ 2·low, sigfig ≤ 5).
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, MAX_US, SIGFIG).expect("constant histogram bounds are valid")
}

/// Maps a value to its bucket's representative, shared by every encoder.
static BUCKETS: LazyLock<Histogram<u64>> = LazyLock::new(histogram);

/// A latency distribution in microseconds.
pub struct Sketch {
    histogram: Histogram<u64>,
}

impl Default for Sketch {
    fn default() -> Self {
        Self {
            histogram: histogram(),
        }
    }
}

/// A rollup's stored sketch that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("latency sketch is malformed near {0:?}")]
pub struct BadSketch(String);

impl Sketch {
    /// The `(value, count)` pairs of a stored sketch (`value:count,...`).
    pub fn parse(text: &str) -> Result<Vec<(u64, u64)>, BadSketch> {
        text.split(',')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                pair.split_once(':')
                    .and_then(|(v, c)| Some((v.parse::<u64>().ok()?, c.parse::<u64>().ok()?)))
                    .ok_or_else(|| BadSketch(beast_core::refused_text(pair)))
            })
            .collect()
    }

    /// Adds `(value, count)` pairs: parsed from a stored sketch (see [`Sketch::parse`]), or
    /// one raw latency with count 1.
    pub fn record_pairs(&mut self, pairs: &[(u64, u64)]) {
        for &(value, count) in pairs {
            self.histogram
                .saturating_record_n(value.clamp(1, MAX_US), count);
        }
    }

    /// The latency at quantile `q` (0 to 1), 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.histogram.is_empty() {
            0
        } else {
            self.histogram.value_at_quantile(q)
        }
    }

    /// The bucket a latency falls in (its representative value), for [`Sketch::encode`].
    pub fn bucket(latency_us: u32) -> u64 {
        BUCKETS.highest_equivalent(u64::from(latency_us).clamp(1, MAX_US))
    }

    /// The stored text of bucket counts (bucket → count, as [`Sketch::bucket`] gives them):
    /// one `value:count` pair per bucket.
    pub fn encode(buckets: &BTreeMap<u64, u64>) -> String {
        let mut out = String::new();
        for (&value, &count) in buckets {
            push_pair(&mut out, value, count);
        }
        out
    }
}

fn push_pair(out: &mut String, value: u64, count: u64) {
    use std::fmt::Write;
    if !out.is_empty() {
        out.push(',');
    }
    let _ = write!(out, "{value}:{count}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(values: &[u32]) -> String {
        let mut buckets = BTreeMap::new();
        for &v in values {
            *buckets.entry(Sketch::bucket(v)).or_default() += 1;
        }
        Sketch::encode(&buckets)
    }

    #[test]
    fn merged_sketches_answer_like_one_over_all_values() {
        let all: Vec<u32> = (1..=10_000).collect();
        let (first, second) = all.split_at(3_000);
        let mut merged = Sketch::default();
        merged.record_pairs(&Sketch::parse(&encoded(first)).unwrap());
        merged.record_pairs(&Sketch::parse(&encoded(second)).unwrap());
        let mut direct = Sketch::default();
        all.iter()
            .for_each(|&v| direct.record_pairs(&[(u64::from(v), 1)]));
        for q in [0.5, 0.95, 0.99] {
            assert_eq!(merged.quantile(q), direct.quantile(q), "q={q}");
            let exact = q * 10_000.0;
            let got = merged.quantile(q) as f64;
            assert!(
                (got - exact).abs() / exact < 0.01,
                "q={q}: {got} vs {exact}"
            );
        }
    }

    #[test]
    fn equal_values_share_one_pair_and_bad_text_is_refused() {
        assert_eq!(encoded(&[120, 120, 120]), "120:3");
        assert_eq!(encoded(&[]), "");
        assert!(Sketch::parse("12:x").is_err());
        assert_eq!(Sketch::parse("").unwrap(), vec![]);
        assert_eq!(Sketch::default().quantile(0.5), 0);
    }
}
