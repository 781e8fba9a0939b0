//! Summaries of repeated measurements.

use serde::Serialize;

/// Latency percentiles and throughput of repeated transfers of one size.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Transfers measured.
    pub samples: usize,
    /// Median seconds per transfer.
    pub p50_s: f64,
    /// 99th percentile seconds per transfer.
    pub p99_s: f64,
    /// Bytes per transfer divided by the median, in MB/s (10^6 bytes).
    pub mb_per_s: f64,
    /// Every transfer's seconds, as measured (in order).
    pub seconds: Vec<f64>,
}

/// The `q` quantile (0..=1) of `sorted` by nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Summarizes transfers of `bytes` bytes that took `seconds` each.
pub fn summarize(bytes: u64, measured: Vec<f64>) -> Summary {
    let mut seconds = measured.clone();
    seconds.sort_by(f64::total_cmp);
    let p50 = quantile(&seconds, 0.5);
    Summary {
        samples: seconds.len(),
        p50_s: p50,
        p99_s: quantile(&seconds, 0.99),
        mb_per_s: bytes as f64 / p50 / 1e6,
        seconds: measured,
    }
}

/// The median of `values`.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    quantile(&values, 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&[3.0], 0.99), 3.0);
        let s = summarize(1_000_000, vec![2.0, 1.0, 3.0]);
        assert_eq!((s.p50_s, s.p99_s, s.mb_per_s), (2.0, 3.0, 0.5));
    }
}
