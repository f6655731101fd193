//! One network's training in Candle: AdamW, reduce-on-plateau, early stopping on validation
//! accuracy, gradient-norm clipping, seeded shuffling and dropout.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{anyhow, ensure, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::optim::ParamsAdamW;
use candle_nn::VarMap;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::recipe::Recipe;
use crate::data::cache::FeatureSet;
use crate::model::{init_varmap, parameters, Cnn, CnnConfig};

/// One row of `training_log.csv`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_loss: f64,
    pub val_acc: f64,
    pub lr: f64,
    pub seconds: f64,
    /// `(k, n)`: the row belongs to network `k` (1-based) of an ensemble of `n`.
    #[serde(default)]
    pub member: Option<(usize, usize)>,
}

impl EpochLog {
    /// `"epoch   3"`, or `"member 2/3  epoch   3"` in an ensemble: how progress lines start.
    pub fn label(&self) -> String {
        match self.member {
            Some((k, n)) => format!("member {k}/{n}  epoch {:>3}", self.epoch),
            None => format!("epoch {:>3}", self.epoch),
        }
    }

    /// The whole progress line: label, losses, accuracies, learning rate, seconds.
    pub fn line(&self) -> String {
        format!(
            "{}  train loss {:.4} acc {:.4}  val loss {:.4} acc {:.4}  lr {:.2e}  {:.1}s",
            self.label(),
            self.train_loss,
            self.train_acc,
            self.val_loss,
            self.val_acc,
            self.lr,
            self.seconds
        )
    }
}

/// Rows of `set` whose speaker is in `speakers`, in file order.
pub fn rows_for(set: &FeatureSet, speakers: &[String]) -> Vec<usize> {
    (0..set.len()).filter(|&i| speakers.contains(&set.speakers[i])).collect()
}

/// Mean and (population) standard deviation of every value of the given rows: the seed's
/// global standardisation, from the training split only.
pub fn norm_stats(set: &FeatureSet, rows: &[usize]) -> (f32, f32) {
    let (mut sum, mut sq, mut n) = (0f64, 0f64, 0usize);
    for &i in rows {
        for &v in set.row(i) {
            sum += v as f64;
            sq += (v as f64) * (v as f64);
        }
        n += set.row(i).len();
    }
    let mean = sum / n.max(1) as f64;
    let var = (sq / n.max(1) as f64 - mean * mean).max(0.0);
    (mean as f32, (var.sqrt() as f32).max(1e-6))
}

/// Standardised inputs `[N, 1, n_mels, n_frames]` and labels `[N]` (u32) for the given rows.
pub fn tensors(
    set: &FeatureSet,
    rows: &[usize],
    mean: f32,
    std: f32,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let inv = 1.0 / std;
    let mut x = Vec::with_capacity(rows.len() * set.n_mels * set.n_frames);
    for &i in rows {
        x.extend(set.row(i).iter().map(|v| (v - mean) * inv));
    }
    let y: Vec<u32> = rows.iter().map(|&i| set.digits[i] as u32).collect();
    Ok((
        Tensor::from_vec(x, (rows.len(), 1, set.n_mels, set.n_frames), device)?,
        Tensor::from_vec(y, rows.len(), device)?,
    ))
}

/// Loss and accuracy of the model in evaluation mode.
pub fn evaluate_loss(model: &Cnn, x: &Tensor, y: &Tensor, batch: usize) -> Result<(f64, f64)> {
    let n = x.dim(0)?;
    if n == 0 {
        return Ok((f64::NAN, f64::NAN));
    }
    let (mut loss, mut correct) = (0f64, 0usize);
    for start in (0..n).step_by(batch) {
        let len = batch.min(n - start);
        let (xb, yb) = (x.narrow(0, start, len)?, y.narrow(0, start, len)?);
        let logits = model.forward_t(&xb, None)?;
        loss += candle_nn::loss::cross_entropy(&logits, &yb)?.to_scalar::<f32>()? as f64 * len as f64;
        correct +=
            logits.argmax(D::Minus1)?.eq(&yb)?.to_dtype(DType::U32)?.sum_all()?.to_scalar::<u32>()? as usize;
    }
    Ok((loss / n as f64, correct as f64 / n as f64))
}

/// The outcome of [`train`]: the best-validation weights and the history.
pub struct Trained {
    pub varmap: VarMap,
    pub model: Cnn,
    pub log: Vec<EpochLog>,
    /// 1-based epoch whose weights were kept.
    pub best_epoch: usize,
    pub best_val_acc: f64,
    pub train_seconds: f64,
    pub samples_seen: usize,
}

fn snapshot(varmap: &VarMap) -> Result<HashMap<String, Tensor>> {
    let data = varmap.data().lock().map_err(|_| anyhow!("variable map lock poisoned"))?;
    data.iter().map(|(n, v)| Ok((n.clone(), v.as_tensor().copy()?))).collect()
}

fn restore(varmap: &VarMap, saved: &HashMap<String, Tensor>) -> Result<()> {
    let data = varmap.data().lock().map_err(|_| anyhow!("variable map lock poisoned"))?;
    for (n, v) in data.iter() {
        v.set(&saved[n])?;
    }
    Ok(())
}

/// ReduceLROnPlateau(mode="max", factor, patience, threshold=1e-4 relative), as PyTorch.
struct Plateau {
    best: f64,
    bad: usize,
}

impl Plateau {
    /// The factor to multiply the learning rate by after an epoch with `val_acc`.
    fn step(&mut self, val_acc: f64, cfg: &Recipe) -> f64 {
        if val_acc > self.best * (1.0 + 1e-4) {
            (self.best, self.bad) = (val_acc, 0);
        } else {
            self.bad += 1;
            if self.bad > cfg.plateau_patience {
                self.bad = 0;
                return cfg.plateau_factor;
            }
        }
        1.0
    }
}

/// One pass over the training rows in a seeded order: (summed loss, correct, samples).
fn train_epoch(
    model: &Cnn,
    opt: &mut crate::train::optim::AdamW,
    cfg: &Recipe,
    epoch: usize,
    (x_train, y_train): (&Tensor, &Tensor),
    dropout_rng: &mut StdRng,
) -> Result<(f64, usize, usize)> {
    let n = x_train.dim(0)?;
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.shuffle(&mut StdRng::seed_from_u64(cfg.seed.wrapping_add(epoch as u64)));
    // The epoch's order goes to the device once; each batch is one gather from the resident
    // rows (one kernel on a GPU; no per-row tensors to stack).
    let order = Tensor::from_vec(order, n, x_train.device())?;
    let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
    for start in (0..n).step_by(cfg.batch_size.max(1)) {
        let len = cfg.batch_size.min(n - start);
        let rows = order.narrow(0, start, len)?;
        let (xb, yb) = (x_train.index_select(&rows, 0)?, y_train.index_select(&rows, 0)?);
        // [B, 1, M, T] -> [B, classes]
        let logits = model.forward_t(&xb, Some(dropout_rng))?;
        let loss = candle_nn::loss::cross_entropy(&logits, &yb)?;
        let mut grads = loss.backward()?;
        opt.step(&mut grads, Some(cfg.clip_norm))?;
        loss_sum += loss.to_scalar::<f32>()? as f64 * len as f64;
        correct +=
            logits.argmax(D::Minus1)?.eq(&yb)?.to_dtype(DType::U32)?.sum_all()?.to_scalar::<u32>()? as usize;
        seen += len;
    }
    Ok((loss_sum, correct, seen))
}

/// Train a fresh network on `(x_train, y_train)`, choosing epochs by validation accuracy
/// after the recipe's warm-up.
/// `augmented(epoch)`, when given, is that epoch's variant of `x_train` (same rows, same
/// order). `on_epoch` is called after every epoch (for live progress lines) with the epoch's
/// row and, when the epoch is the best so far, the variables, which then hold the best weights
/// (so a caller can checkpoint them).
pub fn train(
    arch: &CnnConfig,
    cfg: &Recipe,
    (x_train, y_train): (&Tensor, &Tensor),
    (x_val, y_val): (&Tensor, &Tensor),
    device: &Device,
    augmented: Option<&dyn Fn(usize) -> Result<Tensor>>,
    on_epoch: &mut dyn FnMut(&EpochLog, Option<&VarMap>),
) -> Result<Trained> {
    let n_train = x_train.dim(0)?;
    ensure!(n_train > 0, "no training recordings");
    ensure!(x_val.dim(0)? > 0, "no validation recordings");
    let (varmap, model) = init_varmap(arch, cfg.seed, device)?;
    let vars: Vec<candle_core::Var> = parameters(&varmap)?.into_iter().map(|(_, v)| v).collect();
    let mut opt = crate::train::optim::AdamW::new(
        vars,
        ParamsAdamW { lr: cfg.lr, weight_decay: cfg.weight_decay, ..ParamsAdamW::default() },
    )?;
    let mut dropout_rng = StdRng::seed_from_u64(cfg.seed.wrapping_add(0x5eed_d409));
    let (mut best, mut best_epoch, mut since_best) = (-1f64, 0usize, 0usize);
    let mut plateau = Plateau { best: -1.0, bad: 0 };
    let mut best_weights = snapshot(&varmap)?;
    let (mut log, mut samples_seen, start) = (Vec::new(), 0usize, Instant::now());
    for epoch in 1..=cfg.epochs {
        let t0 = Instant::now();
        let fresh = augmented.map(|f| f(epoch)).transpose()?;
        let xs = (fresh.as_ref().unwrap_or(x_train), y_train);
        let (loss_sum, correct, seen) = train_epoch(&model, &mut opt, cfg, epoch, xs, &mut dropout_rng)?;
        samples_seen += seen;
        let (val_loss, val_acc) = evaluate_loss(&model, x_val, y_val, 256)?;
        let row = EpochLog {
            epoch,
            train_loss: loss_sum / n_train as f64,
            train_acc: correct as f64 / n_train as f64,
            val_loss,
            val_acc,
            lr: opt.learning_rate(),
            seconds: t0.elapsed().as_secs_f64(),
            member: None,
        };
        let factor = plateau.step(val_acc, cfg);
        if factor != 1.0 {
            opt.set_learning_rate(opt.learning_rate() * factor);
        }
        let improved = val_acc > best || epoch <= cfg.warmup;
        if improved {
            (best, best_epoch, since_best) = (val_acc, epoch, 0);
            best_weights = snapshot(&varmap)?;
        } else {
            since_best += 1;
        }
        on_epoch(&row, improved.then_some(&varmap));
        log.push(row);
        if since_best >= cfg.patience {
            break;
        }
    }
    restore(&varmap, &best_weights)?;
    let train_seconds = start.elapsed().as_secs_f64();
    Ok(Trained { varmap, model, log, best_epoch, best_val_acc: best, train_seconds, samples_seen })
}
