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
    pub seconds: f64,
    pub files_per_s: f64,
}

/// Extract features for (the first `limit` of) the recordings under `data` on `threads`
/// threads (0 = all cores), without any cache, and time it. Scanning is not timed.
pub fn bench_features(data: &Path, limit: Option<usize>, threads: usize) -> Result<FeatureBench> {
    let mut dataset = scan(data)?;
    if let Some(n) = limit {
        dataset.recordings.truncate(n);
    }
    let fx = FeatureExtractor::new(FeatureConfig::default()).map_err(anyhow::Error::msg)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("starting threads")?;
    let threads = pool.current_num_threads();
    let start = Instant::now();
    let out = pool.install(|| extract_dataset(&fx, &dataset, &no_progress));
    let seconds = start.elapsed().as_secs_f64();
    let files = dataset.recordings.len();
    Ok(FeatureBench {
        files,
        failed: out.skipped.len(),
        threads,
        seconds,
        files_per_s: files as f64 / seconds,
    })
}
