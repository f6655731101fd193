//! The seed's CNN in Candle, and the self-describing model file.
//!
//! ```text
//! x [B, 1, n_mels, n_frames]
//!  -> conv 3x3 (1 -> 32, pad 1) -> BatchNorm -> ReLU -> max-pool 2x2   [B, 32, n_mels/2, n_frames/2]
//!  -> conv 3x3 (32 -> 64, pad 1) -> BatchNorm -> ReLU -> max-pool 2x2  [B, 64, n_mels/4, n_frames/4]
//!  -> flatten -> Linear(flat, 256) -> ReLU -> Dropout(0.3) -> Linear(256, 10)
//! ```
//! 4,216,138 parameters at 128 x 32, exactly as the PyTorch original.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, ensure, Context, Result};
use candle_core::{DType, Device, Module, ModuleT, Tensor, D};
use candle_nn::{BatchNorm, Conv2d, Linear, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::features::{FeatureConfig, FEATURE_VERSION};

/// Architecture hyper-parameters; [`Cnn::new`] builds the network from them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CnnConfig {
    pub n_mels: usize,
    pub n_frames: usize,
    pub conv1_channels: usize,
    pub conv2_channels: usize,
    pub hidden: usize,
    pub dropout: f32,
    pub classes: usize,
    /// How the last feature maps reach the classifier (absent in older model files: flatten).
    #[serde(default)]
    pub head: Head,
    /// A third conv block (3x3 conv, BatchNorm, ReLU, 2x2 max-pool) with this many channels;
    /// 0 (the seed's, and older model files') for none.
    #[serde(default)]
    pub conv3_channels: usize,
    /// Normalise each input inside the network (absent in older model files: off): subtract
    /// every mel band's mean over time, then divide by the utterance's RMS. Removes a speaker's
    /// or channel's spectral tilt and level; inference applies it too, being part of the model.
    #[serde(default)]
    pub cmvn: bool,
    /// Cepstral liftering inside the network (absent in older model files: 0 = off): keep the
    /// first `lifter` DCT coefficients of each frame's log-Mel column, i.e. smooth the
    /// spectrum along frequency to its envelope (formants) and drop the pitch harmonics,
    /// which differ from voice to voice. 20-40 is MFCC-like for 128 bands.
    #[serde(default)]
    pub lifter: usize,
}

/// The classifier's input: the seed flattens the `[C2, M/4, T/4]` maps (a 16,384-wide layer
/// that knows where in the image each pattern was); `avgpool` averages each channel over
/// time and frequency first (64 values), which cannot memorise positions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Head {
    #[default]
    Flatten,
    AvgPool,
}

impl Default for CnnConfig {
    fn default() -> Self {
        Self {
            n_mels: 128,
            n_frames: 32,
            conv1_channels: 32,
            conv2_channels: 64,
            hidden: 256,
            dropout: 0.3,
            classes: 10,
            head: Head::Flatten,
            conv3_channels: 0,
            cmvn: false,
            lifter: 0,
        }
    }
}

impl CnnConfig {
    /// Input size of the first linear layer: a 2x2 pool per block (floor, as PyTorch's MaxPool2d).
    pub fn flat_dim(&self) -> usize {
        let (c, pools) =
            if self.conv3_channels > 0 { (self.conv3_channels, 3) } else { (self.conv2_channels, 2) };
        match self.head {
            Head::Flatten => c * (self.n_mels >> pools) * (self.n_frames >> pools),
            Head::AvgPool => c,
        }
    }

    /// Trainable parameters (BatchNorm running statistics are buffers, not parameters).
    pub fn param_count(&self) -> usize {
        let (c1, c2) = (self.conv1_channels, self.conv2_channels);
        (c1 * 9 + c1)
            + 2 * c1
            + (c2 * c1 * 9 + c2)
            + 2 * c2
            + if self.conv3_channels > 0 { self.conv3_channels * (c2 * 9 + 3) } else { 0 }
            + (self.flat_dim() * self.hidden + self.hidden)
            + (self.hidden * self.classes + self.classes)
    }

    /// Name and shape of every tensor of the network (weights and BatchNorm statistics), as
    /// [`Cnn::new`] creates them. Computed, not built: checking a model file stays cheap.
    pub fn tensor_shapes(&self) -> HashMap<String, Vec<usize>> {
        let (c1, c2) = (self.conv1_channels, self.conv2_channels);
        let mut m = HashMap::new();
        m.insert("conv1.weight".to_string(), vec![c1, 1, 3, 3]);
        m.insert("conv1.bias".to_string(), vec![c1]);
        m.insert("conv2.weight".to_string(), vec![c2, c1, 3, 3]);
        m.insert("conv2.bias".to_string(), vec![c2]);
        let c3 = self.conv3_channels;
        let mut bns = vec![("bn1", c1), ("bn2", c2)];
        if c3 > 0 {
            m.insert("conv3.weight".to_string(), vec![c3, c2, 3, 3]);
            m.insert("conv3.bias".to_string(), vec![c3]);
            bns.push(("bn3", c3));
        }
        for (bn, c) in bns {
            for t in ["weight", "bias", "running_mean", "running_var"] {
                m.insert(format!("{bn}.{t}"), vec![c]);
            }
        }
        m.insert("fc1.weight".to_string(), vec![self.hidden, self.flat_dim()]);
        m.insert("fc1.bias".to_string(), vec![self.hidden]);
        m.insert("fc2.weight".to_string(), vec![self.classes, self.hidden]);
        m.insert("fc2.bias".to_string(), vec![self.classes]);
        m
    }

    fn min_side(&self) -> usize {
        if self.conv3_channels > 0 {
            8
        } else {
            4
        }
    }

    fn validate(&self) -> Result<()> {
        ensure!(
            self.n_mels >= self.min_side() && self.n_frames >= self.min_side(),
            "input {}x{} is smaller than {m}x{m}",
            self.n_mels,
            self.n_frames,
            m = self.min_side()
        );
        ensure!((0.0..1.0).contains(&self.dropout), "dropout {} is outside [0, 1)", self.dropout);
        ensure!(
            self.classes >= 2 && self.hidden > 0 && self.conv1_channels > 0 && self.conv2_channels > 0,
            "empty layer"
        );
        ensure!(self.lifter <= self.n_mels, "lifter {} exceeds {} mel bands", self.lifter, self.n_mels);
        Ok(())
    }
}

/// The CNN. Build with [`Cnn::new`] from a `VarBuilder` (fresh from a `VarMap` to train, or
/// from a loaded file).
#[derive(Clone, Debug)]
pub struct Cnn {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    block3: Option<(Conv2d, BatchNorm)>,
    /// `[M, M]` projection onto the first `lifter` DCT-II basis vectors (symmetric).
    lifter: Option<Tensor>,
    fc1: Linear,
    fc2: Linear,
    config: CnnConfig,
    kernels: Kernels,
}

/// Which implementation runs the layers on the CPU. Other devices always use Candle's ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernels {
    /// Our fused CPU kernels ([`crate::kernels`]): the default.
    Fused,
    /// Candle's own ops, layer by layer: the reference the kernels are tested against.
    Candle,
}

const BN_EPS: f64 = 1e-5;

impl Cnn {
    pub fn new(config: &CnnConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let conv = candle_nn::Conv2dConfig { padding: 1, ..Default::default() };
        let bn = candle_nn::BatchNormConfig { eps: BN_EPS, remove_mean: true, affine: true, momentum: 0.1 };
        Ok(Self {
            conv1: candle_nn::conv2d(1, config.conv1_channels, 3, conv, vb.pp("conv1"))?,
            bn1: candle_nn::batch_norm(config.conv1_channels, bn, vb.pp("bn1"))?,
            conv2: candle_nn::conv2d(config.conv1_channels, config.conv2_channels, 3, conv, vb.pp("conv2"))?,
            bn2: candle_nn::batch_norm(config.conv2_channels, bn, vb.pp("bn2"))?,
            block3: match config.conv3_channels {
                0 => None,
                c3 => Some((
                    candle_nn::conv2d(config.conv2_channels, c3, 3, conv, vb.pp("conv3"))?,
                    candle_nn::batch_norm(c3, bn, vb.pp("bn3"))?,
                )),
            },
            lifter: match config.lifter {
                0 => None,
                k => Some(lifter_matrix(config.n_mels, k, vb.device())?),
            },
            fc1: candle_nn::linear(config.flat_dim(), config.hidden, vb.pp("fc1"))?,
            fc2: candle_nn::linear(config.hidden, config.classes, vb.pp("fc2"))?,
            config: config.clone(),
            kernels: Kernels::Fused,
        })
    }

    /// The same network (sharing its weights) running on the given kernels.
    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        self.kernels = kernels;
        self
    }

    pub fn config(&self) -> &CnnConfig {
        &self.config
    }

    /// Logits `[B, classes]`. `dropout` is `Some(rng)` in training (BatchNorm then uses and
    /// updates batch statistics), `None` in evaluation.
    pub fn forward_t(&self, x: &Tensor, dropout: Option<&mut StdRng>) -> Result<Tensor> {
        let train = dropout.is_some();
        let smoothed;
        let x = match &self.lifter {
            // [B, 1, M, T]: L [M, M] times every frame's column
            Some(l) => {
                let (b, _, m, t) = x.dims4()?;
                smoothed = l.broadcast_matmul(&x.reshape((b, m, t))?)?.reshape((b, 1, m, t))?;
                &smoothed
            }
            None => x,
        };
        let normalised;
        let x = if self.config.cmvn {
            // [B, 1, M, T]: per-band mean over time removed, then / utterance RMS
            let centred = x.broadcast_sub(&x.mean_keepdim(3)?)?;
            let rms = (centred.sqr()?.flatten_from(1)?.mean_keepdim(1)? + 1e-5)?.sqrt()?;
            normalised = centred.broadcast_div(&rms.reshape((x.dim(0)?, 1, 1, 1))?)?;
            &normalised
        } else {
            x
        };
        let fused = self.kernels == Kernels::Fused && x.device().is_cpu() && x.dtype() == DType::F32;
        let x = if fused {
            use crate::kernels::{batch_norm_relu_max_pool2d, conv2d, conv_bn_relu_max_pool2d_eval};
            let block = |x: &Tensor, conv: &Conv2d, bn: &BatchNorm| -> Result<Tensor> {
                Ok(if train {
                    let bias = conv.bias().ok_or_else(|| anyhow!("conv without bias"))?;
                    batch_norm_relu_max_pool2d(&conv2d(x, conv.weight(), bias, 1)?, bn, BN_EPS)?
                } else {
                    conv_bn_relu_max_pool2d_eval(x, conv, bn, 1, BN_EPS)?
                })
            };
            // [B, 1, M, T] -> [B, C1, M/2, T/2] -> [B, C2, M/4, T/4]
            let x = block(&block(x, &self.conv1, &self.bn1)?, &self.conv2, &self.bn2)?;
            // (-> [B, C3, M/8, T/8])
            let x = match &self.block3 {
                Some((conv, bn)) => block(&x, conv, bn)?,
                None => x,
            };
            // -> [B, C2*M/4*T/4] (or [B, C2]) -> [B, hidden]
            crate::kernels::linear(&self.head(&x)?, &self.fc1)?.relu()?
        } else {
            // [B, 1, M, T] -> [B, C1, M/2, T/2]
            let x = self.bn1.forward_t(&self.conv1.forward(x)?, train)?.relu()?;
            let x = max_pool2x2(&x)?;
            // -> [B, C2, M/4, T/4]
            let x = self.bn2.forward_t(&self.conv2.forward(&x)?, train)?.relu()?;
            let x = max_pool2x2(&x)?;
            // (-> [B, C3, M/8, T/8])
            let x = match &self.block3 {
                Some((conv, bn)) => max_pool2x2(&bn.forward_t(&conv.forward(&x)?, train)?.relu()?)?,
                None => x,
            };
            // -> [B, C2*M/4*T/4] (or [B, C2]) -> [B, hidden]
            self.fc1.forward(&self.head(&x)?)?.relu()?
        };
        let x = match dropout {
            Some(rng) => seeded_dropout(&x, self.config.dropout, rng)?,
            None => x,
        };
        // -> [B, classes]
        Ok(if fused { crate::kernels::linear(&x, &self.fc2)? } else { self.fc2.forward(&x)? })
    }

    /// `[B, C2, M/4, T/4]` -> the classifier's input.
    fn head(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self.config.head {
            Head::Flatten => x.flatten_from(1)?,
            Head::AvgPool => x.flatten_from(2)?.mean(2)?,
        })
    }

    /// Class probabilities `[B, classes]` in evaluation mode.
    pub fn probabilities(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::softmax(&self.forward_t(x, None)?, D::Minus1)?)
    }
}

/// `C^T P C` for the orthonormal DCT-II matrix `C` (`m x m`) and `P` keeping the first `k`
/// coefficients: the least-squares smoothing of a column by its `k` slowest cosines.
pub fn lifter_matrix(m: usize, k: usize, device: &Device) -> Result<Tensor> {
    let c = |q: usize, n: usize| {
        let scale = if q == 0 { (1.0 / m as f64).sqrt() } else { (2.0 / m as f64).sqrt() };
        scale * (std::f64::consts::PI * q as f64 * (2 * n + 1) as f64 / (2 * m) as f64).cos()
    };
    let mut l = vec![0f32; m * m];
    for i in 0..m {
        for j in 0..m {
            l[i * m + j] = (0..k).map(|q| c(q, i) * c(q, j)).sum::<f64>() as f32;
        }
    }
    Ok(Tensor::from_vec(l, (m, m), device)?)
}

/// 2x2 max-pool (stride 2, odd edges dropped) from Candle ops whose gradient is right: Candle
/// 0.11's `max_pool2d` backward multiplies the gradient by the share of window cells holding
/// the maximum (1/4 for a unique maximum) instead of dividing by their count, which shrinks
/// every gradient below a pool 4-fold (checked against finite differences in
/// `tests/kernels.rs`). The maximum of the four strided sub-images has the right gradient.
pub fn max_pool2x2(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (ho, wo) = (h / 2, w / 2);
    // [B, C, 2Ho, 2Wo] -> [B, C, Ho, 2, Wo, 2] -> max over both 2s -> [B, C, Ho, Wo]
    let x = x.narrow(2, 0, 2 * ho)?.narrow(3, 0, 2 * wo)?.contiguous()?;
    Ok(x.reshape((b, c, ho, 2, wo, 2))?.max(5)?.max(3)?)
}

/// Inverted dropout with a mask from our own seeded RNG: Candle's CPU random numbers cannot be
/// seeded, and reproducible training needs reproducible masks.
fn seeded_dropout(x: &Tensor, p: f32, rng: &mut StdRng) -> Result<Tensor> {
    if p == 0.0 {
        return Ok(x.clone());
    }
    let scale = 1.0 / (1.0 - p);
    let mask: Vec<f32> =
        (0..x.elem_count()).map(|_| if rng.random::<f32>() < p { 0.0 } else { scale }).collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    Ok(x.mul(&mask)?)
}

/// Names of the trainable tensors, in a fixed order.
fn is_parameter(name: &str) -> bool {
    !name.ends_with("running_mean") && !name.ends_with("running_var")
}

/// A fresh network in a `VarMap`, initialised like the seed: Xavier-uniform conv and linear
/// weights, zero biases, BatchNorm weight 1 / bias 0, from `seed` alone.
pub fn init_varmap(config: &CnnConfig, seed: u64, device: &Device) -> Result<(VarMap, Cnn)> {
    let varmap = VarMap::new();
    let model = Cnn::new(config, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
    let mut rng = StdRng::seed_from_u64(seed);
    let data = varmap.data().lock().map_err(|_| anyhow!("variable map lock poisoned"))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let value = if name.ends_with(".weight") && dims.len() >= 2 {
            // fan_in = in * receptive field, fan_out = out * receptive field (PyTorch's rule)
            let receptive: usize = dims[2..].iter().product();
            let (fan_in, fan_out) = (dims[1] * receptive, dims[0] * receptive);
            let bound = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
            let v: Vec<f32> = (0..var.elem_count()).map(|_| rng.random_range(-bound..bound)).collect();
            Tensor::from_vec(v, dims.as_slice(), device)?
        } else if name.ends_with(".bias") || name.ends_with("running_mean") {
            Tensor::zeros(dims.as_slice(), DType::F32, device)?
        } else {
            Tensor::ones(dims.as_slice(), DType::F32, device)? // BatchNorm weight, running_var
        };
        var.set(&value)?;
    }
    drop(data);
    Ok((varmap, model))
}

/// The trainable variables of a `VarMap` (what the optimiser updates), sorted by name.
pub fn parameters(varmap: &VarMap) -> Result<Vec<(String, candle_core::Var)>> {
    let data = varmap.data().lock().map_err(|_| anyhow!("variable map lock poisoned"))?;
    let mut v: Vec<(String, candle_core::Var)> =
        data.iter().filter(|(n, _)| is_parameter(n)).map(|(n, v)| (n.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

/// Format tag and version of the exported model file.
pub const MODEL_FORMAT: &str = "audio-mnist-model";
pub const MODEL_VERSION: u32 = 1;

/// Everything besides the weights that inference needs, stored in the file's metadata.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    pub architecture: CnnConfig,
    pub features: FeatureConfig,
    /// Standardisation applied to log-Mel dB values before the network: (x - mean) / std.
    pub mean: f32,
    pub std: f32,
    /// An ensemble's members' own (mean, std), member 0 first; empty for a single network
    /// (which uses `mean`/`std`).
    pub members: Vec<(f32, f32)>,
    pub classes: Vec<String>,
    /// Free-form JSON: the split, the metrics, the recipe.
    pub split: serde_json::Value,
    pub metrics: serde_json::Value,
}

/// Write weights and metadata to one safetensors file (temporary file, then rename).
pub fn save_model(path: &Path, varmap: &VarMap, meta: &ModelMeta) -> Result<()> {
    save_ensemble(path, &[varmap], meta)
}

/// Tensor name of member `k` of `n` (a single network keeps the plain names).
fn member_name(k: usize, n: usize, name: &str) -> String {
    if n == 1 {
        name.to_string()
    } else {
        format!("member{k}.{name}")
    }
}

/// Write the networks of an ensemble (`meta.members` holds their normalisations) to one file.
pub fn save_ensemble(path: &Path, varmaps: &[&VarMap], meta: &ModelMeta) -> Result<()> {
    ensure!(
        varmaps.len() == meta.members.len().max(1),
        "{} networks but {} member normalisations",
        varmaps.len(),
        meta.members.len()
    );
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (k, varmap) in varmaps.iter().enumerate() {
        let data = varmap.data().lock().map_err(|_| anyhow!("variable map lock poisoned"))?;
        for (name, var) in data.iter() {
            let t = var.as_tensor().to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
            let values: Vec<f32> = t.flatten_all()?.to_vec1()?;
            tensors.push((
                member_name(k, varmaps.len(), name),
                t.dims().to_vec(),
                bytemuck::cast_slice(&values).to_vec(),
            ));
        }
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let views = tensors
        .iter()
        .map(|(n, shape, bytes)| {
            Ok((
                n.as_str(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut metadata = HashMap::from([
        ("format".to_string(), MODEL_FORMAT.to_string()),
        ("model_version".to_string(), MODEL_VERSION.to_string()),
        ("feature_version".to_string(), FEATURE_VERSION.to_string()),
        ("version".to_string(), crate::VERSION.to_string()),
        ("architecture".to_string(), serde_json::to_string(&meta.architecture)?),
        ("features".to_string(), serde_json::to_string(&meta.features)?),
        ("mean".to_string(), meta.mean.to_string()),
        ("std".to_string(), meta.std.to_string()),
        ("classes".to_string(), serde_json::to_string(&meta.classes)?),
        ("split".to_string(), meta.split.to_string()),
        ("metrics".to_string(), meta.metrics.to_string()),
    ]);
    if !meta.members.is_empty() {
        metadata.insert("members".to_string(), serde_json::to_string(&meta.members)?);
    }
    crate::cache::write_safetensors(path, views, metadata)
}

/// One network of a [`Classifier`] with the standardisation its inputs need.
pub struct Member {
    pub net: Cnn,
    pub mean: f32,
    pub std: f32,
}

/// What predicts from log-Mel dB features: one network, or an ensemble whose class
/// probabilities are averaged.
pub struct Classifier {
    pub members: Vec<Member>,
}

impl Classifier {
    /// Class probabilities `[B, classes]` of unstandardised log-Mel features `[B, 1, M, T]`.
    pub fn probabilities(&self, x_db: &Tensor) -> Result<Tensor> {
        let mut sum: Option<Tensor> = None;
        for m in &self.members {
            let x = ((x_db - m.mean as f64)? * (1.0 / m.std) as f64)?;
            let p = m.net.probabilities(&x)?;
            sum = Some(match sum {
                None => p,
                Some(s) => (s + p)?,
            });
        }
        let sum = sum.ok_or_else(|| anyhow!("a classifier without networks"))?;
        Ok((sum / self.members.len() as f64)?)
    }

    pub fn config(&self) -> &CnnConfig {
        self.members[0].net.config()
    }
}

/// A model file loaded for inference.
pub struct LoadedModel {
    pub model: Classifier,
    pub meta: ModelMeta,
}

/// Load a model file, refusing with a clear message anything that is not a complete model of
/// a version this build understands.
pub fn load_model(path: &Path, device: &Device) -> Result<LoadedModel> {
    let bytes = std::fs::read(path).with_context(|| format!("reading model {}", path.display()))?;
    load_model_bytes(&bytes, device).with_context(|| format!("model file {}", path.display()))
}

fn load_model_bytes(bytes: &[u8], device: &Device) -> Result<LoadedModel> {
    let (st, md) = crate::cache::read_safetensors(bytes, MODEL_FORMAT, "model")?;
    let get = |k: &str| md.get(k).ok_or_else(|| anyhow!("metadata lacks `{k}`"));
    let version: u32 = get("model_version")?.parse().context("bad `model_version`")?;
    ensure!(
        version == MODEL_VERSION,
        "model file version {version}; this build reads version {MODEL_VERSION}"
    );
    let fv: u32 = get("feature_version")?.parse().context("bad `feature_version`")?;
    ensure!(
        fv == FEATURE_VERSION,
        "made with feature version {fv}; this build computes version {FEATURE_VERSION}"
    );
    let meta = ModelMeta {
        architecture: serde_json::from_str(get("architecture")?).context("bad `architecture`")?,
        features: serde_json::from_str(get("features")?).context("bad `features`")?,
        mean: get("mean")?.parse().context("bad `mean`")?,
        std: get("std")?.parse().context("bad `std`")?,
        classes: serde_json::from_str(get("classes")?).context("bad `classes`")?,
        split: serde_json::from_str(get("split")?).context("bad `split`")?,
        metrics: serde_json::from_str(get("metrics")?).context("bad `metrics`")?,
        members: match md.get("members") {
            Some(m) => serde_json::from_str(m).context("bad `members`")?,
            None => Vec::new(),
        },
    };
    ensure!(meta.std.is_finite() && meta.std > 0.0 && meta.mean.is_finite(), "bad normalisation mean/std");
    ensure!(
        meta.classes.len() == meta.architecture.classes,
        "{} class names for {} outputs",
        meta.classes.len(),
        meta.architecture.classes
    );
    ensure!(
        meta.features.n_mels == meta.architecture.n_mels
            && meta.features.n_frames() == meta.architecture.n_frames,
        "feature shape and network input disagree"
    );
    ensure!(
        meta.members.iter().all(|(m, s)| s.is_finite() && *s > 0.0 && m.is_finite()),
        "bad member normalisation mean/std"
    );
    let expected = meta.architecture.tensor_shapes();
    let mut names: Vec<&String> = expected.keys().collect();
    names.sort();
    let norms = if meta.members.is_empty() { vec![(meta.mean, meta.std)] } else { meta.members.clone() };
    let mut members = Vec::new();
    for (k, &(mean, std)) in norms.iter().enumerate() {
        let mut tensors = HashMap::new();
        for &plain in &names {
            let name = member_name(k, norms.len(), plain);
            let view = st.tensor(&name).map_err(|_| anyhow!("tensor `{name}` is missing"))?;
            ensure!(
                view.dtype() == safetensors::Dtype::F32,
                "tensor `{name}` is {:?}, expected F32",
                view.dtype()
            );
            ensure!(
                view.shape() == expected[plain].as_slice(),
                "tensor `{name}` has shape {:?}, expected {:?}",
                view.shape(),
                expected[plain]
            );
            let values = crate::cache::f32_values(&view);
            if values.iter().any(|v| !v.is_finite()) {
                bail!("tensor `{name}` holds NaN or infinite values");
            }
            tensors.insert(plain.clone(), Tensor::from_vec(values, view.shape(), device)?);
        }
        let net = Cnn::new(&meta.architecture, VarBuilder::from_tensors(tensors, DType::F32, device))?;
        members.push(Member { net, mean, std });
    }
    Ok(LoadedModel { model: Classifier { members }, meta })
}

/// CUDA when compiled in and a GPU is present, else the CPU.
pub fn pick_device() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = Device::new_cuda(0) {
        return d;
    }
    Device::Cpu
}

/// A short human description of a device ("CPU", "CUDA GPU 0").
pub fn describe_device(device: &Device) -> String {
    match device {
        Device::Cpu => format!("CPU ({} threads)", rayon::current_num_threads()),
        Device::Cuda(_) => "CUDA GPU 0".to_string(),
        Device::Metal(_) => "Metal GPU".to_string(),
    }
}
