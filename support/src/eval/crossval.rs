//! Cross-validation of a recipe: every fold trained and tested, `crossval.json` rewritten
//! after each fold (an interrupted run keeps the folds it finished), a combined confusion
//! matrix at the end.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::artifacts::{test, Tested};
use super::calibration::Calibration;
use super::rejection::Rejection;
use super::{class_names, FolderAccuracy};
use crate::data::dataset::Dataset;
use crate::data::extract::Progress;
use crate::data::prepare::{load_features, Prepared};
use crate::data::split::SplitSpec;
use crate::data::write_json;
use crate::train::fit::{fit, MemberResult};
use crate::train::{EpochLog, Recipe};

/// How the speakers are folded (`loso`, `paper` or `kfold:K` on the command line and in
/// `crossval.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Leave one speaker out: each speaker is the test speaker once, the next speaker in
    /// sorted order validates, all others train.
    Loso,
    /// The five official AudioMNIST folds.
    Paper,
    /// K speaker-disjoint folds of the seeded shuffled speakers, for corpora with many
    /// speakers: each fold's speakers are tested once; the speakers after them in the shuffled
    /// order validate (15% of all, at least one); the rest train.
    Kfold(usize),
}

impl std::str::FromStr for Scheme {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "loso" => Ok(Self::Loso),
            "paper" => Ok(Self::Paper),
            _ => match s.strip_prefix("kfold:").map(str::parse::<usize>) {
                Some(Ok(k)) if k >= 2 => Ok(Self::Kfold(k)),
                Some(_) => Err(format!("{s}: K must be a whole number of folds, at least 2")),
                None => Err(format!("unknown scheme {s:?}: expected loso, paper or kfold:K")),
            },
        }
    }
}

impl std::fmt::Display for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Loso => write!(f, "loso"),
            Self::Paper => write!(f, "paper"),
            Self::Kfold(k) => write!(f, "kfold:{k}"),
        }
    }
}

impl Serialize for Scheme {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scheme {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
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
    /// Recordings the fold trained on (per network; augmented copies not counted).
    #[serde(default)]
    pub train_files: usize,
    /// Every network trained for the fold (one unless the recipe is an ensemble).
    pub members: Vec<MemberResult>,
    /// Temperatures and the test confidences' calibration error before and after them.
    pub calibration: Option<Calibration>,
    /// False rejects of the test digits, false accepts of the test negatives per kind.
    pub rejection: Option<Rejection>,
}

/// What [`crossval`] reports as it goes.
pub enum FoldEvent<'a> {
    /// Fold `k` of `n` (from 0) starts: its test and validation speakers.
    Start { k: usize, n: usize, spec: &'a SplitSpec },
    /// Fold `k` of `n` is done; `eta_s` estimates the seconds the remaining folds will take
    /// (the folds so far, on average, times the folds left).
    Done { k: usize, n: usize, fold: &'a FoldResult, eta_s: f64 },
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
    /// The folds' mean expected calibration error (15 bins) before and after temperature
    /// scaling.
    pub ece_before: f64,
    pub ece_after: f64,
    /// The folds' rejection rates, averaged.
    pub rejection: Option<Rejection>,
    /// Summed over the folds: every recording tested exactly once (LOSO).
    pub confusion: Vec<Vec<usize>>,
    /// Test accuracy per dataset folder over all folds (several with repeated `--data`).
    pub per_dataset: BTreeMap<String, FolderAccuracy>,
    pub seconds: f64,
}

/// The folds of a scheme over the dataset's speakers (`seed` shuffles `kfold`'s).
pub fn crossval_folds(
    scheme: Scheme,
    speakers: &[String],
    seed: u64,
) -> Result<Vec<SplitSpec>, crate::Error> {
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
        Scheme::Kfold(k) => kfold(k, speakers, seed),
    }
}

/// [`Scheme::Kfold`]'s folds.
fn kfold(k: usize, speakers: &[String], seed: u64) -> Result<Vec<SplitSpec>, crate::Error> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let n = speakers.len();
    let n_val = ((n as f64 * 0.15).round() as usize).max(1);
    if k < 2 || n < k + n_val + 1 {
        let why = format!("kfold:{k} needs at least {} speakers (K test folds, {n_val} validating, one training), found {n}", k + n_val + 1);
        return Err(crate::Error::Split(why));
    }
    let mut order = speakers.to_vec();
    order.sort();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    Ok((0..k)
        .map(|f| {
            let (start, end) = (f * n / k, (f + 1) * n / k);
            let test = order[start..end].to_vec();
            let val = (0..n_val).map(|j| order[(end + j) % n].clone()).collect();
            SplitSpec::Explicit { test, val }
        })
        .collect())
}

/// Cross-validate `recipe` on `dataset`: train and test every fold (the first `max_folds`
/// only, when given: a quicker estimate; artifacts in `out/fold-K`), writing
/// `out/crossval.json` after every fold and `out/confusion_matrix.png` at the end.
#[allow(clippy::too_many_arguments)]
pub fn crossval(
    dataset: Dataset,
    cache_dir: &Path,
    scheme: Scheme,
    recipe: &Recipe,
    out: &Path,
    device: &Device,
    progress: Progress,
    max_folds: Option<usize>,
    on_fold: &mut dyn FnMut(FoldEvent),
    on_epoch: &mut dyn FnMut(&EpochLog),
) -> Result<CrossVal> {
    let start = std::time::Instant::now();
    let (mut set, _) = load_features(&dataset, cache_dir, &recipe.features(), progress)?;
    let mut dataset = dataset;
    let mut folds = crossval_folds(scheme, &dataset.testable_speaker_ids(), recipe.seed)?;
    if let Some(limit) = max_folds {
        folds.truncate(limit.max(1));
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut result = CrossVal {
        scheme,
        recipe: recipe.clone(),
        machine: crate::manifest::Machine::this(),
        folds: Vec::new(),
        mean: f64::NAN,
        std: f64::NAN,
        ece_before: f64::NAN,
        ece_after: f64::NAN,
        rejection: None,
        confusion: vec![vec![0; 10 + recipe.reject as usize]; 10 + recipe.reject as usize],
        per_dataset: BTreeMap::new(),
        seconds: 0.0,
    };
    for (k, spec) in folds.iter().enumerate() {
        let n = folds.len();
        on_fold(FoldEvent::Start { k, n, spec });
        let split = dataset.split(spec)?;
        let prep = Prepared::new(dataset, set, split)?.with_negatives(&recipe.negatives);
        let fold = run_fold(&prep, recipe, &out.join(format!("fold-{k}")), device, on_epoch)?;
        result.add(fold.0, &fold.1.evaluation.confusion);
        let per_fold = start.elapsed().as_secs_f64() / (k + 1) as f64;
        let eta_s = per_fold * (n - k - 1) as f64;
        on_fold(FoldEvent::Done { k, n, fold: &result.folds[k], eta_s });
        super::add_counts(&mut result.per_dataset, &fold.1.per_dataset);
        result.seconds = start.elapsed().as_secs_f64();
        write_json(&out.join("crossval.json"), &result)?;
        (dataset, set) = (prep.dataset, prep.set);
    }
    let title = format!(
        "{scheme} cross-validation, {} folds: mean test accuracy {:.1}%",
        result.folds.len(),
        100.0 * result.mean
    );
    let png = out.join("confusion_matrix.png");
    super::plots::confusion_matrix(&result.confusion, &class_names(result.confusion.len()), &title, &png)?;
    Ok(result)
}

/// Train and test one fold: its result and its test confusion matrix.
fn run_fold(
    prep: &Prepared,
    recipe: &Recipe,
    out: &Path,
    device: &Device,
    on_epoch: &mut dyn FnMut(&EpochLog),
) -> Result<(FoldResult, Tested)> {
    let t0 = std::time::Instant::now();
    let arch = prep.architecture(recipe);
    let fitted = fit(prep, &arch, recipe, out, device, on_epoch)?;
    let tested = test(&fitted.model, prep, device, out)?;
    let members = fitted.member_results(prep, device)?;
    if fitted.members.len() > 1 {
        // The fold's whole model, so `predict` and `robustness` can use it.
        let metrics = serde_json::json!({"test_accuracy": tested.evaluation.accuracy, "members": members});
        fitted.save(&out.join("model.safetensors"), prep, &arch, recipe, metrics)?;
    }
    let fold = FoldResult {
        test_speaker: prep.split.test.join(","),
        val_speaker: members[0].val_speaker.clone(),
        test_accuracy: tested.evaluation.accuracy,
        val_accuracy: members.iter().map(|m| m.val_accuracy).sum::<f64>() / members.len() as f64,
        best_epoch: members[0].best_epoch,
        epochs: members[0].epochs,
        seconds: t0.elapsed().as_secs_f64(),
        train_files: prep.train_rows.len(),
        members,
        calibration: tested.calibration.clone(),
        rejection: tested.rejection.clone(),
    };
    Ok((fold, tested))
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
        let mean_of = |f: fn(&Calibration) -> f64| {
            let v: Vec<f64> = self.folds.iter().filter_map(|f| f.calibration.as_ref()).map(f).collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        (self.ece_before, self.ece_after) = (mean_of(|c| c.ece_before), mean_of(|c| c.ece_after));
        let rejections: Vec<&Rejection> = self.folds.iter().filter_map(|f| f.rejection.as_ref()).collect();
        self.rejection = Rejection::mean(&rejections);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::split::make_split;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("s{i:02}")).collect()
    }

    #[test]
    fn kfold_tests_every_speaker_once_and_keeps_the_parts_apart() {
        let speakers = ids(20);
        let folds = crossval_folds(Scheme::Kfold(5), &speakers, 7).unwrap();
        assert_eq!(folds.len(), 5);
        let mut tested = Vec::new();
        for spec in &folds {
            let SplitSpec::Explicit { test, val } = spec else { panic!("{spec:?}") };
            assert_eq!((test.len(), val.len()), (4, 3), "{spec:?}");
            assert!(test.iter().all(|t| !val.contains(t)), "{spec:?}");
            let split = make_split(spec, &speakers).unwrap();
            assert_eq!(split.train.len(), 13);
            tested.extend(test.clone());
        }
        tested.sort();
        assert_eq!(tested, speakers, "each speaker tested exactly once");
        assert_eq!(folds, crossval_folds(Scheme::Kfold(5), &speakers, 7).unwrap(), "seeded");
        assert_ne!(folds, crossval_folds(Scheme::Kfold(5), &speakers, 8).unwrap());
        assert!(crossval_folds(Scheme::Kfold(5), &ids(6), 7).is_err(), "too few speakers");
    }

    #[test]
    fn schemes_parse_print_and_serialise() {
        for s in ["loso", "paper", "kfold:5"] {
            let scheme: Scheme = s.parse().unwrap();
            assert_eq!(scheme.to_string(), s);
            assert_eq!(serde_json::to_value(scheme).unwrap(), s);
        }
        for bad in ["kfold", "kfold:1", "kfold:x", "LOSO", ""] {
            assert!(bad.parse::<Scheme>().is_err(), "{bad}");
        }
    }
}
