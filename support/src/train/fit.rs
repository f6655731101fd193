//! The networks of a run: one, or an ensemble whose member `k` validates on the `k`-th next
//! training speaker, each with its training log and best-so-far checkpoint kept on disk, so an
//! interrupted run keeps its history and its best weights.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use candle_core::{Device, Tensor};
use serde::Serialize;

use super::negatives::{negatives, Negatives, Part};
use super::other_speech::OtherSpeech;
use super::{norm_stats, rows_for, tensors, train, EpochLog, Recipe, Trained};
use crate::data::prepare::Prepared;
use crate::data::split::Split;
use crate::data::table::Table;
use crate::data::write_json;
use crate::eval::{argmax, predict_probabilities};
use crate::model::{save_model, Classifier, CnnConfig, Member, ModelMeta};

/// A trained model: one network, or the members of an ensemble (`Recipe::ensemble`).
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
    /// Softmax temperature fitted on its validation speakers.
    pub temperature: f32,
}

impl FittedMember {
    fn member(&self) -> Member {
        Member {
            net: self.trained.model.clone(),
            mean: self.mean,
            std: self.std,
            temperature: self.temperature,
        }
    }
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
    cfg: &Recipe,
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
        let member_cfg = cfg.member(m);
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
        let logs: Vec<&[EpochLog]> = members.iter().map(|m| m.trained.log.as_slice()).collect();
        crate::eval::plots::training_curves(&logs, &out.join("training_metrics.png"))?;
    }
    if n > 1 {
        // Averaging already softens an ensemble: with each network's temperature it was
        // underconfident, and the test calibration error rose on FSDD and Gujarati folds
        // (support/RESULTS.md), so an ensemble keeps its networks as trained.
        members.iter_mut().for_each(|m| m.temperature = 1.0);
    }
    let model = Classifier { members: members.iter().map(FittedMember::member).collect() };
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
    cfg: &Recipe,
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
    let mut train_t = tensors(&prep.set, &train_rows, mean, std, device)?;
    let mut val_t = tensors(&prep.set, &val_rows, mean, std, device)?;
    let model_path = out.join("model.safetensors");
    // Augmentation and "not a digit" examples work on the clean training clips (augmented
    // ones re-featurised every epoch).
    let fx = prep.fx()?;
    let clips = if cfg.augment.is_off() && !cfg.reject { Vec::new() } else { prep.clips(&fx, &train_rows)? };
    let (n, m, t) = (train_rows.len(), prep.set.n_mels, prep.set.n_frames);
    let mut negative_x = None;
    if cfg.reject {
        let mut train_neg = negatives(&fx, &clips, &prep.digits(&train_rows), Part::Train, cfg.seed);
        let mut val_neg =
            negatives(&fx, &prep.clips(&fx, &val_rows)?, &prep.digits(&val_rows), Part::Val, cfg.seed);
        if !cfg.negatives.is_empty() {
            // Other words: at most a fifth as many as the training digits, like the others.
            let words = OtherSpeech::load(&cfg.negatives, &fx)?;
            train_neg.extend(words.negatives(Part::Train, n / 5, cfg.seed));
            val_neg.extend(words.negatives(Part::Val, val_rows.len(), cfg.seed));
        }
        let train_neg = negative_tensors(&train_neg, (mean, std), (m, t), device)?;
        val_t = append(val_t, negative_tensors(&val_neg, (mean, std), (m, t), device)?)?;
        negative_x = Some(train_neg.0.clone());
        train_t = append(train_t, train_neg)?;
    }
    let augmented = |epoch: usize| -> Result<Tensor> {
        let x =
            crate::train::augment::epoch_features(&fx, &clips, &cfg.augment, cfg.seed, epoch, (mean, std));
        let x = Tensor::from_vec(x, (n, 1, m, t), device)?;
        Ok(match &negative_x {
            Some(neg) => Tensor::cat(&[&x, neg], 0)?,
            None => x,
        })
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
                let meta = ModelMeta { mean, std, split, ..prep.model_meta(arch, cfg, partial) };
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
    crate::eval::plots::training_curves(&[trained.log.as_slice()], &out.join("training_metrics.png"))?;
    let temperature = fit_temperature(&logits(&trained.model, &val_t.0)?, &val_t.1.to_vec1::<u32>()?);
    Ok(FittedMember { trained, split, mean, std, temperature })
}

/// Standardised negatives `[N, 1, M, T]` labelled "not a digit" (class 10).
pub fn negative_tensors(
    neg: &Negatives,
    (mean, std): (f32, f32),
    (m, t): (usize, usize),
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let x: Vec<f32> = neg.features.iter().map(|v| (v - mean) / std).collect();
    Ok((
        Tensor::from_vec(x, (neg.len(), 1, m, t), device)?,
        Tensor::from_vec(vec![10u32; neg.len()], neg.len(), device)?,
    ))
}

/// Rows of `b` after those of `a`.
fn append(a: (Tensor, Tensor), b: (Tensor, Tensor)) -> Result<(Tensor, Tensor)> {
    Ok((Tensor::cat(&[&a.0, &b.0], 0)?, Tensor::cat(&[&a.1, &b.1], 0)?))
}

/// The network's logits for every row of `x`, in batches.
fn logits(net: &crate::model::Cnn, x: &Tensor) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::new();
    for start in (0..x.dim(0)?).step_by(256) {
        let len = 256.min(x.dim(0)? - start);
        out.extend(net.forward_t(&x.narrow(0, start, len)?, None)?.to_vec2::<f32>()?);
    }
    Ok(out)
}

/// The temperature of softmax(logits / T) that best explains the validation labels.
fn fit_temperature(logits: &[Vec<f32>], labels: &[u32]) -> f32 {
    let labels: Vec<usize> = labels.iter().map(|&y| y as usize).collect();
    crate::eval::calibration::fit_temperature(logits, &labels)
}

/// One network of a fitted model, for `metrics.json` and `crossval.json`.
#[derive(Clone, Debug, Serialize)]
pub struct MemberResult {
    pub val_speaker: String,
    pub val_accuracy: f64,
    /// The member alone on the test speakers (NaN without test speakers).
    pub test_accuracy: f64,
    pub best_epoch: usize,
    pub epochs: usize,
}

impl Fitted {
    /// Write the whole model (every member with its own normalisation) to one model file.
    pub fn save(
        &self,
        path: &Path,
        prep: &Prepared,
        arch: &CnnConfig,
        recipe: &Recipe,
        metrics: serde_json::Value,
    ) -> Result<()> {
        let mut meta = prep.model_meta(arch, recipe, metrics);
        if self.members.len() > 1 {
            meta.members = self.members.iter().map(|m| (m.mean, m.std)).collect();
        }
        meta.temperatures = self.members.iter().map(|m| m.temperature).collect();
        let varmaps: Vec<&candle_nn::VarMap> = self.members.iter().map(|m| &m.trained.varmap).collect();
        crate::model::save_ensemble(path, &varmaps, &meta)
    }

    /// Every member's training log, member 0 first.
    pub fn logs(&self) -> Vec<&[EpochLog]> {
        self.members.iter().map(|m| m.trained.log.as_slice()).collect()
    }

    /// Every member's validation and, alone, its test accuracy on `prep`'s test rows.
    pub fn member_results(&self, prep: &Prepared, device: &Device) -> Result<Vec<MemberResult>> {
        let (x, _) = tensors(&prep.set, &prep.test_rows, 0.0, 1.0, device)?;
        let truth: Vec<usize> = prep.test_rows.iter().map(|&i| prep.set.digits[i] as usize).collect();
        self.members
            .iter()
            .map(|m| {
                let single = Classifier { members: vec![m.member()] };
                let test_accuracy = if truth.is_empty() {
                    f64::NAN
                } else {
                    let p = predict_probabilities(&single, &x, 256)?;
                    p.iter().zip(&truth).filter(|(p, &t)| argmax(p) == t).count() as f64 / truth.len() as f64
                };
                Ok(MemberResult {
                    val_speaker: m.split.val.join(","),
                    val_accuracy: m.trained.best_val_acc,
                    test_accuracy,
                    best_epoch: m.trained.best_epoch,
                    epochs: m.trained.log.len(),
                })
            })
            .collect()
    }
}

/// `training_log.csv`: a row per epoch (and a `member` column in an ensemble).
pub fn write_training_log(path: &Path, log: &[EpochLog]) -> Result<()> {
    let mut table = Table::new();
    if log.iter().any(|r| r.member.is_some()) {
        table = table.int("member", log.iter().map(|r| r.member.map_or(1, |(k, _)| k as i64)));
    }
    let col = |f: fn(&EpochLog) -> f64| log.iter().map(f).collect::<Vec<_>>();
    table
        .int("epoch", log.iter().map(|r| r.epoch as i64))
        .float("train_loss", col(|r| r.train_loss))
        .float("train_acc", col(|r| r.train_acc))
        .float("val_loss", col(|r| r.val_loss))
        .float("val_acc", col(|r| r.val_acc))
        .float("lr", col(|r| r.lr))
        .float("seconds", col(|r| r.seconds))
        .write_csv(path)
}
