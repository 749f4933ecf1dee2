//! Summaries of HDR histograms: the percentiles the report shows and the
//! percentile curve the plot draws.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest value a histogram records: 60 s in microseconds. Larger values are clamped.
pub const MAX_RECORDED_MICROS: u64 = 60_000_000;

/// Significant decimal digits kept by every histogram.
const SIGNIFICANT_DIGITS: u8 = 3;

/// Points per halving of the remaining percentile range in [`Summary::curve`].
const CURVE_TICKS_PER_HALF: u32 = 4;

/// Makes an empty histogram of microseconds from 1 µs to [`MAX_RECORDED_MICROS`].
pub fn new_histogram() -> Histogram<u64> {
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, MAX_RECORDED_MICROS, SIGNIFICANT_DIGITS)
        .expect("constant bounds: low 1, high above 2 * low, 3 significant digits")
}

/// Records a value in microseconds, clamped to the histogram's range.
pub fn record(histogram: &mut Histogram<u64>, micros: u64) {
    let value = micros.clamp(1, MAX_RECORDED_MICROS);
    // A value inside the bounds is always recordable.
    let _ = histogram.record(value);
}

/// Percentiles of one histogram, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    /// Number of recorded values.
    pub count: u64,
    /// Arithmetic mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest recorded value.
    pub max_us: u64,
}

impl Summary {
    /// Summarizes a histogram; an empty one gives zeros.
    pub fn of(histogram: &Histogram<u64>) -> Summary {
        if histogram.is_empty() {
            return Summary::default();
        }
        Summary {
            count: histogram.len(),
            mean_us: histogram.mean(),
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        }
    }
}

/// One point of a percentile curve: the percentile (0 to 100) and the value at it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurvePoint {
    /// Percentile, from 0 to 100.
    pub percentile: f64,
    /// Value at that percentile, in microseconds.
    pub value_us: u64,
}

/// Returns the percentile curve of a histogram, denser towards the tail, as
/// HdrHistogram's percentile distribution output is.
pub fn curve(histogram: &Histogram<u64>) -> Vec<CurvePoint> {
    if histogram.is_empty() {
        return Vec::new();
    }
    let mut points: Vec<CurvePoint> = histogram
        .iter_quantiles(CURVE_TICKS_PER_HALF)
        .map(|value| CurvePoint {
            percentile: value.quantile_iterated_to() * 100.0,
            value_us: value.value_iterated_to(),
        })
        .collect();
    points.dedup_by(|next, previous| next.percentile == previous.percentile);
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_uniform_values() {
        let mut histogram = new_histogram();
        for value in 1..=1000 {
            record(&mut histogram, value);
        }
        let summary = Summary::of(&histogram);
        assert_eq!(summary.count, 1000);
        assert_eq!(summary.p50_us, 500);
        assert_eq!(summary.p90_us, 900);
        assert_eq!(summary.p99_us, 990);
        assert_eq!(summary.max_us, 1000);
        assert!((summary.mean_us - 500.5).abs() < 1.0);
    }

    #[test]
    fn values_outside_range_are_clamped() {
        let mut histogram = new_histogram();
        record(&mut histogram, 0);
        record(&mut histogram, u64::MAX);
        assert_eq!(histogram.len(), 2);
        assert!(histogram.max() >= MAX_RECORDED_MICROS);
    }

    #[test]
    fn curve_rises_to_the_maximum() {
        let mut histogram = new_histogram();
        for value in 1..=10_000 {
            record(&mut histogram, value);
        }
        let points = curve(&histogram);
        assert!(points.len() > 10);
        assert!(points
            .windows(2)
            .all(|pair| pair[0].value_us <= pair[1].value_us));
        assert_eq!(points.last().map(|p| p.percentile), Some(100.0));
    }

    #[test]
    fn empty_histogram_summarizes_to_zero() {
        assert_eq!(Summary::of(&new_histogram()), Summary::default());
        assert!(curve(&new_histogram()).is_empty());
    }
}
