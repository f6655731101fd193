//! Cross-validation of a recipe: every fold trained and tested, `crossval.json` rewritten
//! after each fold (an interrupted run keeps the folds it finished), a combined confusion
//! matrix at the end.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::artifacts::test;
use super::digit_names;
use crate::data::dataset::Dataset;
use crate::data::extract::Progress;
use crate::data::prepare::{load_features, Prepared};
use crate::data::split::{make_split, SplitSpec};
use crate::data::write_json;
use crate::train::fit::{fit, MemberResult};
use crate::train::{EpochLog, Recipe};

/// How the speakers are folded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Leave one speaker out: each speaker is the test speaker once, the next speaker in
    /// sorted order validates, all others train.
    Loso,
    /// The five official AudioMNIST folds.
    Paper,
}

/// One fold of [`crossval`].
#[derive(Clone, Debug, Serialize)]
pub struct FoldResult {
    /// The held-out speaker (comma-separated speakers for the paper's folds).
    pub test_speaker: String,
    /// The speaker(s) early stopping watched, taken from the training speakers.
    pub val_speaker: String,
    pub test_accuracy: f64,
    /// Best validation accuracy (the members' mean for an ensemble).
    pub val_accuracy: f64,
    pub best_epoch: usize,
    pub epochs: usize,
    pub seconds: f64,
    /// Every network trained for the fold (one unless the recipe is an ensemble).
    pub members: Vec<MemberResult>,
}

/// `crossval.json`.
#[derive(Clone, Debug, Serialize)]
pub struct CrossVal {
    pub scheme: Scheme,
    pub recipe: Recipe,
    /// The CPU and SIMD level that computed it (bit-identical reruns need the same).
    pub machine: crate::manifest::Machine,
    pub folds: Vec<FoldResult>,
    /// Mean and (population) standard deviation of the folds' test accuracies.
    pub mean: f64,
    pub std: f64,
    /// Summed over the folds: every recording tested exactly once (LOSO).
    pub confusion: Vec<Vec<usize>>,
    pub seconds: f64,
}

/// The folds of a scheme over the dataset's speakers.
pub fn crossval_folds(scheme: Scheme, speakers: &[String]) -> Result<Vec<SplitSpec>, crate::Error> {
    match scheme {
        Scheme::Loso => {
            let n = speakers.len();
            if n < 3 {
                return Err(crate::Error::Split(format!(
                    "leave-one-speaker-out needs at least 3 speakers, found {n}"
                )));
            }
            Ok((0..n)
                .map(|i| SplitSpec::Explicit {
                    test: vec![speakers[i].clone()],
                    val: vec![speakers[(i + 1) % n].clone()],
                })
                .collect())
        }
        Scheme::Paper => Ok((0..5).map(SplitSpec::Paper).collect()),
    }
}

/// Cross-validate `recipe` on `dataset`: train and test every fold (artifacts in
/// `out/fold-K`), writing `out/crossval.json` after every fold and `out/confusion_matrix.png`
/// at the end.
#[allow(clippy::too_many_arguments)]
pub fn crossval(
    dataset: Dataset,
    cache_dir: &Path,
    scheme: Scheme,
    recipe: &Recipe,
    out: &Path,
    device: &Device,
    progress: Progress,
    on_fold: &mut dyn FnMut(usize, usize, &SplitSpec),
    on_epoch: &mut dyn FnMut(&EpochLog),
) -> Result<CrossVal> {
    let start = std::time::Instant::now();
    let (mut set, _) = load_features(&dataset, cache_dir, &recipe.features(), progress)?;
    let mut dataset = dataset;
    let folds = crossval_folds(scheme, &dataset.speaker_ids())?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut result = CrossVal {
        scheme,
        recipe: recipe.clone(),
        machine: crate::manifest::Machine::this(),
        folds: Vec::new(),
        mean: f64::NAN,
        std: f64::NAN,
        confusion: vec![vec![0; 10]; 10],
        seconds: 0.0,
    };
    for (k, spec) in folds.iter().enumerate() {
        on_fold(k, folds.len(), spec);
        let split = make_split(spec, &dataset.speaker_ids())?;
        let prep = Prepared::new(dataset, set, split)?;
        let fold = run_fold(&prep, recipe, &out.join(format!("fold-{k}")), device, on_epoch)?;
        result.add(fold.0, &fold.1);
        result.seconds = start.elapsed().as_secs_f64();
        write_json(&out.join("crossval.json"), &result)?;
        (dataset, set) = (prep.dataset, prep.set);
    }
    let title = format!(
        "{scheme:?} cross-validation, {} folds: mean test accuracy {:.1}%",
        result.folds.len(),
        100.0 * result.mean
    );
    let png = out.join("confusion_matrix.png");
    super::plots::confusion_matrix(&result.confusion, &digit_names(), &title, &png)?;
    Ok(result)
}

/// Train and test one fold: its result and its test confusion matrix.
fn run_fold(
    prep: &Prepared,
    recipe: &Recipe,
    out: &Path,
    device: &Device,
    on_epoch: &mut dyn FnMut(&EpochLog),
) -> Result<(FoldResult, Vec<Vec<usize>>)> {
    let t0 = std::time::Instant::now();
    let arch = prep.architecture(recipe);
    let fitted = fit(prep, &arch, recipe, out, device, on_epoch)?;
    let tested = test(&fitted.model, prep, device, out)?;
    let members = fitted.member_results(prep, device)?;
    let fold = FoldResult {
        test_speaker: prep.split.test.join(","),
        val_speaker: members[0].val_speaker.clone(),
        test_accuracy: tested.evaluation.accuracy,
        val_accuracy: members.iter().map(|m| m.val_accuracy).sum::<f64>() / members.len() as f64,
        best_epoch: members[0].best_epoch,
        epochs: members[0].epochs,
        seconds: t0.elapsed().as_secs_f64(),
        members,
    };
    Ok((fold, tested.evaluation.confusion))
}

impl CrossVal {
    /// Add a fold: its confusion to the sum, the mean and (population) std updated.
    fn add(&mut self, fold: FoldResult, confusion: &[Vec<usize>]) {
        for (row, counts) in self.confusion.iter_mut().zip(confusion) {
            row.iter_mut().zip(counts).for_each(|(a, b)| *a += b);
        }
        self.folds.push(fold);
        let acc: Vec<f64> = self.folds.iter().map(|f| f.test_accuracy).collect();
        self.mean = acc.iter().sum::<f64>() / acc.len() as f64;
        self.std = (acc.iter().map(|a| (a - self.mean).powi(2)).sum::<f64>() / acc.len() as f64).sqrt();
    }
}
