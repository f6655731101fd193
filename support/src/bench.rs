//! Throughput of the feature pipeline (WAV on disk -> log-Mel), for `audio-mnist bench-features`.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::dataset::scan;
use crate::extract::{extract_dataset, no_progress};
use crate::features::{FeatureConfig, FeatureExtractor};

#[derive(Clone, Debug, Serialize)]
pub struct FeatureBench {
    pub files: usize,
    pub failed: usize,
    pub threads: usize,
    /// Median over the repeats.
    pub seconds: f64,
    pub files_per_s: f64,
    /// files/s of every repeat, in order.
    pub runs_files_per_s: Vec<f64>,
}

/// Extract features for (the first `limit` of) the recordings under `data` on `threads`
/// threads (0 = all cores), without any cache, `repeat` times; report the median. Scanning is
/// not timed; the first repeat also warms the page cache, which the median discounts.
pub fn bench_features(
    data: &Path,
    limit: Option<usize>,
    threads: usize,
    repeat: usize,
) -> Result<FeatureBench> {
    let mut dataset = scan(data)?;
    if let Some(n) = limit {
        dataset.recordings.truncate(n);
    }
    let fx = FeatureExtractor::new(FeatureConfig::default()).map_err(anyhow::Error::msg)?;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().context("starting threads")?;
    let threads = pool.current_num_threads();
    let files = dataset.recordings.len();
    let mut times = Vec::new();
    let mut failed = 0;
    for _ in 0..repeat.max(1) {
        let start = Instant::now();
        let out = pool.install(|| extract_dataset(&fx, &dataset, &no_progress));
        times.push(start.elapsed().as_secs_f64());
        failed = out.skipped.len();
    }
    let runs_files_per_s = times.iter().map(|t| files as f64 / t).collect();
    times.sort_by(f64::total_cmp);
    let seconds = times[times.len() / 2];
    Ok(FeatureBench {
        files,
        failed,
        threads,
        seconds,
        files_per_s: files as f64 / seconds,
        runs_files_per_s,
    })
}
