//! The seed notebook end to end: features (cached) -> speaker split -> training -> evaluation
//! -> artifacts -> exported model. The CLI and the notebook both call these functions.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use candle_core::{Device, Tensor};
use polars::prelude::*;
use serde::Serialize;

use crate::cache::{load_or_extract, CacheStatus, FeatureSet};
use crate::dataset::{scan, write_csv, Dataset};
use crate::evaluate::{argmax, per_speaker, predict_probabilities, Evaluation};
use crate::extract::Progress;
use crate::features::{FeatureConfig, FeatureExtractor};
use crate::model::{
    describe_device, load_model, save_ensemble, save_model, Classifier, CnnConfig, Member, ModelMeta,
};
use crate::split::{make_split, Split, SplitSpec};
use crate::train::{norm_stats, rows_for, tensors, train, EpochLog, TrainConfig, Trained};
use candle_nn::VarMap;

/// Class names of the digit task.
pub fn digit_names() -> Vec<String> {
    (0..10).map(|d| d.to_string()).collect()
}

/// Scan `data` and get its features, from the cache when possible.
pub fn load_features(
    data: &Path,
    cache_dir: &Path,
    config: &FeatureConfig,
    progress: Progress,
) -> Result<(Dataset, FeatureSet, CacheStatus)> {
    let dataset = scan(data)?;
    let fx = FeatureExtractor::new(config.clone()).map_err(anyhow::Error::msg)?;
    let mut table = dataset.metadata_frame()?;
    write_csv(&mut table, &cache_dir.join("metadata.csv"))?;
    let (set, status) = load_or_extract(&dataset, &fx, cache_dir, progress)?;
    Ok((dataset, set, status))
}

/// What `train` needs besides the data.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub data: PathBuf,
    pub out: PathBuf,
    pub cache_dir: PathBuf,
    pub split: SplitSpec,
    pub train: TrainConfig,
    pub features: FeatureConfig,
}

/// `metrics.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Metrics {
    pub test_accuracy: f64,
    pub val_accuracy: f64,
    pub epochs: usize,
    pub best_epoch: usize,
    pub train_seconds: f64,
    pub train_samples_per_second: f64,
    pub params: usize,
    pub train_files: usize,
    pub val_files: usize,
    pub test_files: usize,
    pub device: String,
}

/// What a training run produced.
pub struct RunReport {
    pub metrics: Metrics,
    pub split: Split,
    pub evaluation: Evaluation,
    pub log: Vec<EpochLog>,
    pub model_path: PathBuf,
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
}

impl Prepared {
    /// Split `set` by speaker with `spec` and compute the normalisation statistics.
    pub fn new(dataset: Dataset, set: FeatureSet, spec: &SplitSpec) -> Result<Self> {
        let split = make_split(spec, &dataset.speaker_ids())?;
        let (train_rows, val_rows, test_rows) =
            (rows_for(&set, &split.train), rows_for(&set, &split.val), rows_for(&set, &split.test));
        ensure!(
            !train_rows.is_empty() && !val_rows.is_empty(),
            "the split leaves no training or no validation recordings"
        );
        let (mean, std) = norm_stats(&set, &train_rows);
        Ok(Self { dataset, set, split, train_rows, val_rows, test_rows, mean, std })
    }

    /// The feature extractor these features came from.
    pub fn fx(&self) -> Result<crate::features::FeatureExtractor> {
        crate::features::FeatureExtractor::new(self.set.config.clone()).map_err(anyhow::Error::msg)
    }

    /// The seed CNN sized for these features.
    pub fn architecture(&self) -> CnnConfig {
        CnnConfig { n_mels: self.set.n_mels, n_frames: self.set.n_frames, ..CnnConfig::default() }
    }

    /// The network a recipe trains on these features.
    pub fn architecture_for(&self, cfg: &TrainConfig) -> CnnConfig {
        CnnConfig {
            head: cfg.head,
            cmvn: cfg.cmvn,
            conv3_channels: cfg.conv3_channels,
            lifter: cfg.lifter,
            ..self.architecture()
        }
    }

    /// What the model file records besides the weights.
    pub fn model_meta(&self, arch: &CnnConfig, metrics: serde_json::Value) -> ModelMeta {
        ModelMeta {
            architecture: arch.clone(),
            features: self.set.config.clone(),
            mean: self.mean,
            std: self.std,
            members: Vec::new(),
            classes: digit_names(),
            split: serde_json::to_value(&self.split).unwrap_or_default(),
            metrics,
        }
    }
}

/// A trained model: one network, or the members of an ensemble (`TrainConfig::ensemble`).
pub struct Fitted {
    /// What predicts: all members, probabilities averaged.
    pub model: Classifier,
    pub members: Vec<FittedMember>,
    /// Member 0's history, best epoch and best validation accuracy (on `prep.split.val`).
    pub log: Vec<EpochLog>,
    pub best_epoch: usize,
    pub best_val_acc: f64,
    /// Summed over the members.
    pub train_seconds: f64,
    pub samples_seen: usize,
}

/// One network of a [`Fitted`] model and the split it learned from.
pub struct FittedMember {
    pub trained: Trained,
    pub split: Split,
    pub mean: f32,
    pub std: f32,
}

/// The split of ensemble member `m`: the same test speakers; validation moves on by `m`
/// groups of `val.len()` speakers through the other speakers in sorted order (from the
/// original validation speakers), and every speaker not validating trains. Member 0 keeps
/// `split`; together the members learn from every non-test speaker.
pub fn member_split(split: &Split, m: usize) -> Split {
    if m == 0 || split.val.is_empty() {
        return split.clone();
    }
    let mut pool: Vec<String> = split.train.iter().chain(&split.val).cloned().collect();
    pool.sort();
    let start = pool.iter().position(|s| *s == split.val[0]).unwrap_or(0);
    pool.rotate_left(start);
    let g = split.val.len();
    let mut val: Vec<String> = (0..g).map(|j| pool[(m * g + j) % pool.len()].clone()).collect();
    val.sort();
    val.dedup();
    let mut train: Vec<String> = pool.into_iter().filter(|s| !val.contains(s)).collect();
    train.sort();
    Split { train, val, test: split.test.clone() }
}

/// Train the network(s) of `cfg` on `prep`. For each network, `training_log.csv` (rewritten
/// every epoch) and `model.safetensors` (the best network so far, saved whenever validation
/// accuracy improves) are kept in `out` (`out/member-K` for an ensemble), so an interrupted run
/// keeps its history and its best weights. Member `m` uses seed `cfg.seed + m`.
pub fn fit(
    prep: &Prepared,
    arch: &CnnConfig,
    cfg: &TrainConfig,
    out: &Path,
    device: &Device,
    on_epoch: &mut dyn FnMut(&EpochLog),
) -> Result<Fitted> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    write_json(&out.join("split.json"), &prep.split)?;
    let n = cfg.ensemble.max(1);
    let mut members = Vec::new();
    for m in 0..n {
        let split = member_split(&prep.split, m);
        let member_out = if n > 1 { out.join(format!("member-{m}")) } else { out.to_path_buf() };
        let member_cfg = TrainConfig { seed: cfg.seed.wrapping_add(m as u64), ..cfg.clone() };
        let mut labelled = |row: &EpochLog| {
            let row = EpochLog { member: (n > 1).then_some((m + 1, n)), ..row.clone() };
            on_epoch(&row)
        };
        members.push(fit_member(prep, split, arch, &member_cfg, &member_out, device, &mut labelled)?);
    }
    if n > 1 {
        // The whole history in one file too (a `member` column tells the networks apart).
        let all: Vec<EpochLog> = members
            .iter()
            .enumerate()
            .flat_map(|(k, m)| {
                m.trained.log.iter().map(move |r| EpochLog { member: Some((k + 1, n)), ..r.clone() })
            })
            .collect();
        write_training_log(&out.join("training_log.csv"), &all)?;
        crate::plots::training_curves(&members[0].trained.log, &out.join("training_metrics.png"))?;
    }
    let model = Classifier {
        members: members
            .iter()
            .map(|m| Member { net: m.trained.model.clone(), mean: m.mean, std: m.std })
            .collect(),
    };
    let first = &members[0].trained;
    Ok(Fitted {
        model,
        log: first.log.clone(),
        best_epoch: first.best_epoch,
        best_val_acc: first.best_val_acc,
        train_seconds: members.iter().map(|m| m.trained.train_seconds).sum(),
        samples_seen: members.iter().map(|m| m.trained.samples_seen).sum(),
        members,
    })
}

/// One network of [`fit`], on the speakers of `split`.
fn fit_member(
    prep: &Prepared,
    split: Split,
    arch: &CnnConfig,
    cfg: &TrainConfig,
    out: &Path,
    device: &Device,
    on_epoch: &mut dyn FnMut(&EpochLog),
) -> Result<FittedMember> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let (train_rows, val_rows) = (rows_for(&prep.set, &split.train), rows_for(&prep.set, &split.val));
    ensure!(
        !train_rows.is_empty() && !val_rows.is_empty(),
        "the split leaves no training or no validation recordings"
    );
    let (mean, std) =
        if split == prep.split { (prep.mean, prep.std) } else { norm_stats(&prep.set, &train_rows) };
    let train_t = tensors(&prep.set, &train_rows, mean, std, device)?;
    let val_t = tensors(&prep.set, &val_rows, mean, std, device)?;
    let model_path = out.join("model.safetensors");
    // Augmentation works on the clean training clips, re-featurised every epoch.
    let fx = prep.fx()?;
    let clips = if cfg.augment.is_off() {
        Vec::new()
    } else {
        let files: Vec<&str> = train_rows.iter().map(|&i| prep.set.files[i].as_str()).collect();
        crate::augment::load_clips(&fx, &prep.dataset.root, &files)?
    };
    let (n, m, t) = (train_rows.len(), prep.set.n_mels, prep.set.n_frames);
    let augmented = |epoch: usize| -> Result<Tensor> {
        let x = crate::augment::epoch_features(&fx, &clips, &cfg.augment, cfg.seed, epoch, (mean, std));
        Ok(Tensor::from_vec(x, (n, 1, m, t), device)?)
    };
    let augmented: Option<&dyn Fn(usize) -> Result<Tensor>> =
        if cfg.augment.is_off() { None } else { Some(&augmented) };
    let mut log_rows = Vec::new();
    let mut checkpoint_error = None;
    let trained = train(
        arch,
        cfg,
        (&train_t.0, &train_t.1),
        (&val_t.0, &val_t.1),
        device,
        augmented,
        &mut |row, best| {
            log_rows.push(row.clone());
            if let Err(e) = write_training_log(&out.join("training_log.csv"), &log_rows) {
                checkpoint_error.get_or_insert(e);
            }
            if let Some(varmap) = best {
                let partial = serde_json::json!({"status": "training", "best_epoch": row.epoch, "val_accuracy": row.val_acc});
                let split = serde_json::to_value(&split).unwrap_or_default();
                let meta = ModelMeta { mean, std, split, ..prep.model_meta(arch, partial) };
                if let Err(e) = save_model(&model_path, varmap, &meta) {
                    checkpoint_error.get_or_insert(e);
                }
            }
            on_epoch(row);
        },
    )?;
    if let Some(e) = checkpoint_error {
        return Err(e.context("saving the training log or checkpoint"));
    }
    write_training_log(&out.join("training_log.csv"), &trained.log)?;
    crate::plots::training_curves(&trained.log, &out.join("training_metrics.png"))?;
    Ok(FittedMember { trained, split, mean, std })
}

/// Train on `opts.data` and write every artifact to `opts.out`.
pub fn train_and_evaluate(
    opts: &TrainOptions,
    device: &Device,
    progress: Progress,
    on_epoch: &mut dyn FnMut(&EpochLog),
) -> Result<RunReport> {
    let (dataset, set, _) = load_features(&opts.data, &opts.cache_dir, &opts.features, progress)?;
    let prep = Prepared::new(dataset, set, &opts.split)?;
    let arch = prep.architecture_for(&opts.train);
    let trained = fit(&prep, &arch, &opts.train, &opts.out, device, on_epoch)?;
    let tested = test(&trained.model, &prep, device, &opts.out)?;
    let metrics = export(&prep, &arch, &trained, &tested.evaluation, opts, device)?;
    Ok(RunReport {
        metrics,
        split: prep.split,
        evaluation: tested.evaluation,
        log: trained.log,
        model_path: opts.out.join("model.safetensors"),
    })
}

/// Write `metrics.json`, the final `model.safetensors` (weights + everything needed to use
/// them) and `run_manifest.json` to `opts.out`.
pub fn export(
    prep: &Prepared,
    arch: &CnnConfig,
    trained: &Fitted,
    evaluation: &Evaluation,
    opts: &TrainOptions,
    device: &Device,
) -> Result<Metrics> {
    let metrics = Metrics {
        test_accuracy: evaluation.accuracy,
        val_accuracy: trained.best_val_acc,
        epochs: trained.log.len(),
        best_epoch: trained.best_epoch,
        train_seconds: trained.train_seconds,
        train_samples_per_second: trained.samples_seen as f64 / trained.train_seconds.max(1e-9),
        params: arch.param_count(),
        train_files: prep.train_rows.len(),
        val_files: prep.val_rows.len(),
        test_files: prep.test_rows.len(),
        device: describe_device(device),
    };
    let out = &opts.out;
    write_json(&out.join("metrics.json"), &metrics)?;
    let mut meta = prep.model_meta(arch, serde_json::to_value(&metrics)?);
    if trained.members.len() > 1 {
        meta.members = trained.members.iter().map(|m| (m.mean, m.std)).collect();
    }
    let varmaps: Vec<&VarMap> = trained.members.iter().map(|m| &m.trained.varmap).collect();
    save_ensemble(&out.join("model.safetensors"), &varmaps, &meta)?;
    write_json(
        &out.join("run_manifest.json"),
        &serde_json::json!({
            "seed": opts.train.seed,
            "train": opts.train,
            "architecture": arch,
            "features": prep.set.config,
            "split_spec": opts.split,
            "split": prep.split,
            "data": opts.data.display().to_string(),
            "data_fingerprint": prep.set.fingerprint,
            "files": prep.set.len(),
            "skipped": prep.set.skipped.len(),
            "crate_versions": crate::manifest::crate_versions(),
            "rustc": crate::manifest::rustc_version(),
            "git_commit": crate::manifest::git_commit(),
            "device": describe_device(device),
        }),
    )?;
    Ok(metrics)
}

/// The test speakers' outcome, file by file.
pub struct Tested {
    /// Rows of the feature set, in the order of the other fields.
    pub rows: Vec<usize>,
    pub truth: Vec<usize>,
    pub predicted: Vec<usize>,
    pub probabilities: Vec<Vec<f32>>,
    pub evaluation: Evaluation,
}

impl Tested {
    /// Confidence of each prediction (the probability of the predicted digit).
    pub fn confidence(&self) -> Vec<f32> {
        self.probabilities.iter().zip(&self.predicted).map(|(p, &d)| p[d]).collect()
    }
}

/// Score `model` on the test speakers of `prep` and write the evaluation files to `out`.
pub fn test(model: &Classifier, prep: &Prepared, device: &Device, out: &Path) -> Result<Tested> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    if prep.test_rows.is_empty() {
        let evaluation = Evaluation::new(&[], &[], 10);
        return Ok(Tested {
            rows: vec![],
            truth: vec![],
            predicted: vec![],
            probabilities: vec![],
            evaluation,
        });
    }
    evaluate_rows(model, &prep.set, &prep.dataset, &prep.test_rows, device, out, "test")
}

/// Predict `rows` and write the evaluation files (report, confusion matrix PNG, per-speaker
/// CSV, per-file predictions).
#[allow(clippy::too_many_arguments)]
fn evaluate_rows(
    model: &Classifier,
    set: &FeatureSet,
    dataset: &Dataset,
    rows: &[usize],
    device: &Device,
    out: &Path,
    part: &str,
) -> Result<Tested> {
    // Unstandardised: each member applies its own mean and std.
    let (x, _) = tensors(set, rows, 0.0, 1.0, device)?;
    let probabilities = predict_probabilities(model, &x, 256)?;
    let truth: Vec<usize> = rows.iter().map(|&i| set.digits[i] as usize).collect();
    let predicted: Vec<usize> = probabilities.iter().map(|p| argmax(p)).collect();
    let evaluation = Evaluation::new(&truth, &predicted, 10);
    write_evaluation(&evaluation, out, part)?;
    let speakers: Vec<String> = rows.iter().map(|&i| set.speakers[i].clone()).collect();
    let mut df = per_speaker_frame(dataset, &per_speaker(&speakers, &truth, &predicted))?;
    write_csv(&mut df, &out.join("per_speaker_accuracy.csv"))?;
    let tested = Tested { rows: rows.to_vec(), truth, predicted, probabilities, evaluation };
    // Per-file predictions, for error analysis.
    let mut pred = DataFrame::new_infer_height(vec![
        Column::new("file".into(), rows.iter().map(|&i| set.files[i].clone()).collect::<Vec<_>>()),
        Column::new("speaker".into(), speakers),
        Column::new("digit".into(), tested.truth.iter().map(|&d| d as i32).collect::<Vec<_>>()),
        Column::new("predicted".into(), tested.predicted.iter().map(|&d| d as i32).collect::<Vec<_>>()),
        Column::new("confidence".into(), tested.confidence()),
    ])?;
    write_csv(&mut pred, &out.join("predictions.csv"))?;
    Ok(tested)
}

/// `out/classification_report.txt` and `out/confusion_matrix.png`.
fn write_evaluation(evaluation: &Evaluation, out: &Path, part: &str) -> Result<()> {
    let names = digit_names();
    std::fs::write(out.join("classification_report.txt"), evaluation.report(&names))
        .with_context(|| format!("writing {}", out.join("classification_report.txt").display()))?;
    let title = format!("{part} confusion matrix (accuracy {:.2}%)", 100.0 * evaluation.accuracy);
    crate::plots::confusion_matrix(&evaluation.confusion, &names, &title, &out.join("confusion_matrix.png"))
}

/// The per-speaker accuracy table (with the speakers' metadata when the dataset has it).
pub fn per_speaker_table(prep: &Prepared, tested: &Tested) -> Result<DataFrame> {
    let speakers: Vec<String> = tested.rows.iter().map(|&i| prep.set.speakers[i].clone()).collect();
    per_speaker_frame(&prep.dataset, &per_speaker(&speakers, &tested.truth, &tested.predicted))
}

fn per_speaker_frame(dataset: &Dataset, rows: &[(String, usize, usize)]) -> Result<DataFrame> {
    let meta = |f: fn(&crate::dataset::SpeakerMeta) -> Option<String>| -> Vec<Option<String>> {
        rows.iter().map(|(s, _, _)| dataset.speakers.get(s).and_then(f)).collect()
    };
    let mut cols = vec![
        Column::new("speaker".into(), rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>()),
        Column::new("correct".into(), rows.iter().map(|r| r.1 as i64).collect::<Vec<_>>()),
        Column::new("total".into(), rows.iter().map(|r| r.2 as i64).collect::<Vec<_>>()),
        Column::new(
            "accuracy".into(),
            rows.iter().map(|r| r.1 as f64 / r.2.max(1) as f64).collect::<Vec<_>>(),
        ),
    ];
    if !dataset.speakers.is_empty() {
        cols.push(Column::new("gender".into(), meta(|m| m.gender.clone())));
        cols.push(Column::new(
            "age".into(),
            rows.iter().map(|(s, _, _)| dataset.speakers.get(s).and_then(|m| m.age)).collect::<Vec<_>>(),
        ));
        cols.push(Column::new("accent".into(), meta(|m| m.accent.clone())));
        cols.push(Column::new("native_speaker".into(), meta(|m| m.native_speaker.clone())));
        cols.push(Column::new("recording_room".into(), meta(|m| m.recording_room.clone())));
    }
    Ok(DataFrame::new_infer_height(cols)?)
}

/// `audio-mnist evaluate`: score an exported model on the test speakers of `split` (or, when
/// `split` is `None`, on the test speakers recorded in the model) and write the same
/// evaluation files as training does.
pub fn evaluate_model(
    model_path: &Path,
    data: &Path,
    out: &Path,
    cache_dir: &Path,
    split: Option<SplitSpec>,
    device: &Device,
    progress: Progress,
) -> Result<Evaluation> {
    let loaded = load_model(model_path, device)?;
    let (dataset, set, _) = load_features(data, cache_dir, &loaded.meta.features, progress)?;
    let split: Split = match split {
        Some(spec) => make_split(&spec, &dataset.speaker_ids())?,
        None => serde_json::from_value(loaded.meta.split.clone()).context("the model's recorded split")?,
    };
    let rows = rows_for(&set, &split.test);
    ensure!(!rows.is_empty(), "no recordings of the test speakers {:?} in {}", split.test, data.display());
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let tested = evaluate_rows(&loaded.model, &set, &dataset, &rows, device, out, "test")?;
    let evaluation = tested.evaluation;
    write_json(
        &out.join("metrics.json"),
        &serde_json::json!({"test_accuracy": evaluation.accuracy, "test_files": rows.len(), "model": model_path.display().to_string(), "split": split}),
    )?;
    Ok(evaluation)
}

fn write_training_log(path: &Path, log: &[EpochLog]) -> Result<()> {
    let col =
        |name: &str, f: fn(&EpochLog) -> f64| Column::new(name.into(), log.iter().map(f).collect::<Vec<_>>());
    let mut cols = Vec::new();
    if log.iter().any(|r| r.member.is_some()) {
        cols.push(Column::new(
            "member".into(),
            log.iter().map(|r| r.member.map_or(1, |(k, _)| k as i64)).collect::<Vec<_>>(),
        ));
    }
    cols.extend([
        Column::new("epoch".into(), log.iter().map(|r| r.epoch as i64).collect::<Vec<_>>()),
        col("train_loss", |r| r.train_loss),
        col("train_acc", |r| r.train_acc),
        col("val_loss", |r| r.val_loss),
        col("val_acc", |r| r.val_acc),
        col("lr", |r| r.lr),
        col("seconds", |r| r.seconds),
    ]);
    write_csv(&mut DataFrame::new_infer_height(cols)?, path)
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
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

/// One network of a fold.
#[derive(Clone, Debug, Serialize)]
pub struct MemberResult {
    pub val_speaker: String,
    pub val_accuracy: f64,
    pub test_accuracy: f64,
    pub best_epoch: usize,
    pub epochs: usize,
}

/// `crossval.json`.
#[derive(Clone, Debug, Serialize)]
pub struct CrossVal {
    pub scheme: String,
    pub recipe: TrainConfig,
    pub folds: Vec<FoldResult>,
    /// Mean and (population) standard deviation of the folds' test accuracies.
    pub mean: f64,
    pub std: f64,
    /// Summed over the folds: every recording tested exactly once (LOSO).
    pub confusion: Vec<Vec<usize>>,
    pub seconds: f64,
}

/// The folds of a scheme: `loso` (each speaker tested once; the next speaker in sorted order
/// validates; all others train) or `paper` (the five official AudioMNIST folds).
pub fn crossval_folds(scheme: &str, speakers: &[String]) -> Result<Vec<SplitSpec>> {
    match scheme {
        "loso" => {
            ensure!(
                speakers.len() >= 3,
                "leave-one-speaker-out needs at least 3 speakers, found {}",
                speakers.len()
            );
            let n = speakers.len();
            Ok((0..n)
                .map(|i| SplitSpec::Explicit {
                    test: vec![speakers[i].clone()],
                    val: vec![speakers[(i + 1) % n].clone()],
                })
                .collect())
        }
        "paper" => Ok((0..5).map(SplitSpec::Paper).collect()),
        other => anyhow::bail!("unknown scheme {other:?}; expected loso or paper"),
    }
}

/// Cross-validate `cfg` on `data`: train and test every fold (artifacts in `out/fold-K`), then
/// write `out/crossval.json` (rewritten after every fold) and `out/confusion_matrix.png`.
#[allow(clippy::too_many_arguments)]
pub fn crossval(
    data: &Path,
    cache_dir: &Path,
    scheme: &str,
    cfg: &TrainConfig,
    out: &Path,
    device: &Device,
    progress: Progress,
    on_fold: &mut dyn FnMut(usize, usize, &SplitSpec),
    on_epoch: &mut dyn FnMut(&EpochLog),
) -> Result<CrossVal> {
    let start = std::time::Instant::now();
    let (mut dataset, mut set, _) = load_features(data, cache_dir, &cfg.features(), progress)?;
    let folds = crossval_folds(scheme, &dataset.speaker_ids())?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut result = CrossVal {
        scheme: scheme.to_string(),
        recipe: cfg.clone(),
        folds: Vec::new(),
        mean: f64::NAN,
        std: f64::NAN,
        confusion: vec![vec![0; 10]; 10],
        seconds: 0.0,
    };
    for (k, spec) in folds.iter().enumerate() {
        on_fold(k, folds.len(), spec);
        let t0 = std::time::Instant::now();
        let prep = Prepared::new(dataset, set, spec)?;
        let fold_out = out.join(format!("fold-{k}"));
        let arch = prep.architecture_for(cfg);
        let fitted = fit(&prep, &arch, cfg, &fold_out, device, on_epoch)?;
        let tested = test(&fitted.model, &prep, device, &fold_out)?;
        let evaluation = tested.evaluation;
        for (row, counts) in result.confusion.iter_mut().zip(&evaluation.confusion) {
            row.iter_mut().zip(counts).for_each(|(a, b)| *a += b);
        }
        let mut members = Vec::new();
        for m in &fitted.members {
            // Each member alone on the test speaker, for the record.
            let single = Classifier {
                members: vec![Member { net: m.trained.model.clone(), mean: m.mean, std: m.std }],
            };
            let (x, _) = tensors(&prep.set, &prep.test_rows, 0.0, 1.0, device)?;
            let p = predict_probabilities(&single, &x, 256)?;
            let correct = p.iter().zip(&tested.truth).filter(|(p, &t)| argmax(p) == t).count();
            members.push(MemberResult {
                val_speaker: m.split.val.join(","),
                val_accuracy: m.trained.best_val_acc,
                test_accuracy: correct as f64 / tested.truth.len().max(1) as f64,
                best_epoch: m.trained.best_epoch,
                epochs: m.trained.log.len(),
            });
        }
        result.folds.push(FoldResult {
            test_speaker: prep.split.test.join(","),
            val_speaker: members[0].val_speaker.clone(),
            test_accuracy: evaluation.accuracy,
            val_accuracy: members.iter().map(|m| m.val_accuracy).sum::<f64>() / members.len() as f64,
            best_epoch: members[0].best_epoch,
            epochs: members[0].epochs,
            seconds: t0.elapsed().as_secs_f64(),
            members,
        });
        let acc: Vec<f64> = result.folds.iter().map(|f| f.test_accuracy).collect();
        result.mean = acc.iter().sum::<f64>() / acc.len() as f64;
        result.std = (acc.iter().map(|a| (a - result.mean).powi(2)).sum::<f64>() / acc.len() as f64).sqrt();
        result.seconds = start.elapsed().as_secs_f64();
        write_json(&out.join("crossval.json"), &result)?;
        (dataset, set) = (prep.dataset, prep.set);
    }
    let title = format!(
        "{scheme} cross-validation, {} folds: mean test accuracy {:.1}%",
        result.folds.len(),
        100.0 * result.mean
    );
    crate::plots::confusion_matrix(
        &result.confusion,
        &digit_names(),
        &title,
        &out.join("confusion_matrix.png"),
    )?;
    Ok(result)
}
