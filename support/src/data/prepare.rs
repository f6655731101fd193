//! A run's data, ready to train on: the features of every recording (from the cache when
//! possible), the speaker split, and the training part's standardisation statistics.

use std::path::Path;

use anyhow::{ensure, Result};

use crate::data::cache::{load_or_extract, CacheStatus, FeatureSet};
use crate::data::dataset::Dataset;
use crate::data::extract::Progress;
use crate::data::split::Split;
use crate::dsp::features::{FeatureConfig, FeatureExtractor};
use crate::model::{CnnConfig, ModelMeta};
use crate::train::{norm_stats, rows_for, Recipe};

/// The features of `dataset` (from the cache when possible; `cache_dir/metadata.csv` is
/// written on the way). The one path by which the CLI, crossval and the notebook get features.
pub fn load_features(
    dataset: &Dataset,
    cache_dir: &Path,
    config: &FeatureConfig,
    progress: Progress,
) -> Result<(FeatureSet, CacheStatus)> {
    let fx = FeatureExtractor::new(config.clone())?;
    dataset.metadata_table().write_csv(&cache_dir.join("metadata.csv"))?;
    if dataset.sources.len() == 1 {
        return load_or_extract(dataset, &fx, cache_dir, progress);
    }
    // A union: each folder cached on its own, so adding a folder re-extracts nothing else.
    let mut parts = Vec::new();
    let mut status = None;
    for (i, source) in dataset.sources.iter().enumerate() {
        let (set, s) = load_or_extract(&dataset.part(i), &fx, cache_dir, progress)?;
        if status.is_none() || matches!(s, CacheStatus::Miss(_)) {
            status = Some(s);
        }
        parts.push((source.name.clone(), set));
    }
    let status = status.ok_or_else(|| anyhow::anyhow!("no data folders"))?;
    Ok((FeatureSet::concat(parts)?, status))
}

/// The data of a run: recordings, their features, the speaker split and the training part's
/// standardisation statistics (the seed's `mean`/`std`, taken from training files only).
pub struct Prepared {
    pub dataset: Dataset,
    pub set: FeatureSet,
    pub split: Split,
    pub train_rows: Vec<usize>,
    pub val_rows: Vec<usize>,
    pub test_rows: Vec<usize>,
    pub mean: f32,
    pub std: f32,
    /// Folders of other words, whose test speakers' recordings are scored as "not a digit"
    /// ([`crate::train::other_speech`]).
    pub negatives: Vec<std::path::PathBuf>,
}

impl Prepared {
    /// Split the rows of `set` by the speakers of `split` and compute the normalisation
    /// statistics.
    pub fn new(dataset: Dataset, set: FeatureSet, split: Split) -> Result<Self> {
        let (train_rows, val_rows, test_rows) =
            (rows_for(&set, &split.train), rows_for(&set, &split.val), rows_for(&set, &split.test));
        ensure!(
            !train_rows.is_empty() && !val_rows.is_empty(),
            "the split leaves no training or no validation recordings"
        );
        let (mean, std) = norm_stats(&set, &train_rows);
        Ok(Self { dataset, set, split, train_rows, val_rows, test_rows, mean, std, negatives: Vec::new() })
    }

    /// Data to test an exported model on: only the test rows (the model brings its own
    /// normalisation, so none is computed here).
    pub fn for_test(dataset: Dataset, set: FeatureSet, split: Split) -> Self {
        let test_rows = rows_for(&set, &split.test);
        let (train_rows, val_rows, negatives) = (vec![], vec![], vec![]);
        Self { dataset, set, split, train_rows, val_rows, test_rows, mean: 0.0, std: 1.0, negatives }
    }

    /// Score the test speakers of these folders of other words too.
    pub fn with_negatives(mut self, dirs: &[std::path::PathBuf]) -> Self {
        self.negatives = dirs.to_vec();
        self
    }

    /// The feature extractor these features came from.
    pub fn fx(&self) -> Result<FeatureExtractor> {
        Ok(FeatureExtractor::new(self.set.config.clone())?)
    }

    /// The clean, trimmed, peak-normalised clips of `rows` at the extractor's rate (what
    /// augmentation and the "not a digit" examples start from).
    pub fn clips(&self, fx: &FeatureExtractor, rows: &[usize]) -> Result<Vec<Vec<f32>>> {
        let paths: Vec<_> = rows.iter().map(|&i| self.dataset.path_of(&self.set.files[i])).collect();
        crate::train::augment::load_clips(fx, &paths)
    }

    /// The digit of each of `rows`.
    pub fn digits(&self, rows: &[usize]) -> Vec<u8> {
        rows.iter().map(|&i| self.set.digits[i] as u8).collect()
    }

    /// The network `recipe` trains on these features.
    pub fn architecture(&self, recipe: &Recipe) -> CnnConfig {
        recipe.network(self.set.n_mels, self.set.n_frames)
    }

    /// What the model file records besides the weights.
    pub fn model_meta(&self, arch: &CnnConfig, recipe: &Recipe, metrics: serde_json::Value) -> ModelMeta {
        ModelMeta {
            architecture: arch.clone(),
            features: self.set.config.clone(),
            mean: self.mean,
            std: self.std,
            members: Vec::new(),
            temperatures: Vec::new(),
            classes: crate::eval::class_names(arch.classes),
            recipe: Some(recipe.clone()),
            split: serde_json::to_value(&self.split).unwrap_or_default(),
            metrics,
            reject_threshold: None,
            adaptation: None,
        }
    }
}
