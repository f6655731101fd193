//! Feature extraction over a whole dataset: parallel (rayon), ordered, failure-tolerant.

use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use crate::data::dataset::{Dataset, Skipped};
use crate::dsp::features::FeatureExtractor;

/// Features for the recordings that could be read.
#[derive(Clone, Debug)]
pub struct Extracted {
    /// `kept.len() x feature_len` values, row-major, in dataset order.
    pub features: Vec<f32>,
    /// Index into `dataset.recordings` of each row.
    pub kept: Vec<usize>,
    /// Recordings that failed, with the reason (path relative to the dataset root).
    pub skipped: Vec<Skipped>,
}

/// Called with (files done, files total) as extraction progresses, from worker threads.
pub type Progress<'a> = &'a (dyn Fn(usize, usize) + Sync);

/// A progress callback that does nothing.
pub fn no_progress(_: usize, _: usize) {}

/// Extract every recording of `dataset` in parallel. A file that cannot be read becomes an
/// entry of `skipped` (path and reason) and the rest go on.
pub fn extract_dataset(fx: &FeatureExtractor, dataset: &Dataset, progress: Progress) -> Extracted {
    let len = fx.config().feature_len();
    let total = dataset.recordings.len();
    let done = AtomicUsize::new(0);
    let mut features = vec![0f32; total * len];
    let errors: Vec<Option<String>> = features
        .par_chunks_mut(len)
        .zip(dataset.recordings.par_iter())
        .map(|(dst, rec)| {
            let result = fx.extract_file(&dataset.absolute(rec));
            progress(done.fetch_add(1, Ordering::Relaxed) + 1, total);
            match result {
                Ok(v) => {
                    dst.copy_from_slice(&v);
                    None
                }
                Err(e) => Some(e.kind.to_string()),
            }
        })
        .collect();
    // Compact: move kept rows to the front, in order.
    let mut kept = Vec::with_capacity(total);
    let mut skipped = Vec::new();
    for (i, err) in errors.into_iter().enumerate() {
        match err {
            None => {
                let row = kept.len();
                if row != i {
                    features.copy_within(i * len..(i + 1) * len, row * len);
                }
                kept.push(i);
            }
            Some(reason) => {
                skipped.push(Skipped { file: dataset.recordings[i].path.display().to_string(), reason })
            }
        }
    }
    features.truncate(kept.len() * len);
    Extracted { features, kept, skipped }
}
