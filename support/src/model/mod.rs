//! The network in Candle: [`CnnConfig`] describes it, [`Cnn`] builds it as a list of conv blocks
//! and runs one forward path in which each block picks our fused CPU kernels ([`kernels`]) or
//! Candle's ops, or, with `arch: tc-resnet`, as a [`TcResNet`] (Candle's ops); [`file`] is the
//! self-describing model file.
//!
//! ```text
//! x [B, 1, M, T]
//!  -> (lifter: each column projected on its first K cosines)          [B, 1, M, T]
//!  -> block k = 1..n: conv 3x3 (pad 1) -> BatchNorm -> ReLU -> max-pool 2x2
//!                                                                     [B, C_k, M/2^k, T/2^k]
//!  -> flatten -> Linear(hidden) -> ReLU -> Dropout -> Linear(classes) [B, classes]
//! ```
//! The seed's network (`channels: [32, 64]`) has 4,216,138 parameters at 128 x 32, exactly as
//! the PyTorch original.

pub mod config;
pub mod file;
pub mod kernels;
pub mod tc_resnet;

use anyhow::{anyhow, Result};
use candle_core::{DType, Device, Module, ModuleT, Tensor, D};
use candle_nn::{BatchNorm, Conv2d, Linear, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub use config::{is_parameter, Arch, CnnConfig, LayerSpec};
pub use file::{
    load_model, load_varmaps, save_ensemble, save_model, Classifier, LoadedModel, Member, ModelMeta,
};
pub use tc_resnet::TcResNet;

/// Which implementation runs the layers on the CPU. Other devices always use Candle's ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernels {
    /// Our fused CPU kernels ([`kernels`]): the default.
    Fused,
    /// Candle's own ops, layer by layer: the reference the kernels are tested against.
    Candle,
}

const BN_EPS: f64 = 1e-5;

/// One conv block: 3x3 conv (pad 1) -> BatchNorm -> ReLU -> 2x2 max-pool.
#[derive(Clone, Debug)]
pub struct ConvBlock {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

impl ConvBlock {
    pub fn new(cin: usize, cout: usize, vb_conv: VarBuilder, vb_bn: VarBuilder) -> Result<Self> {
        let conv = candle_nn::Conv2dConfig { padding: 1, ..Default::default() };
        let bn = candle_nn::BatchNormConfig { eps: BN_EPS, remove_mean: true, affine: true, momentum: 0.1 };
        Ok(Self {
            conv: candle_nn::conv2d(cin, cout, 3, conv, vb_conv)?,
            bn: candle_nn::batch_norm(cout, bn, vb_bn)?,
        })
    }

    /// `[B, Cin, H, W]` -> `[B, Cout, H/2, W/2]`; `train` uses and updates batch statistics.
    pub fn forward_t(&self, x: &Tensor, train: bool, fused: bool) -> Result<Tensor> {
        use kernels::{batch_norm_relu_max_pool2d, conv2d, conv_bn_relu_max_pool2d_eval};
        Ok(match (fused, train) {
            (true, true) => {
                let bias = self.conv.bias().ok_or_else(|| anyhow!("conv without bias"))?;
                batch_norm_relu_max_pool2d(&conv2d(x, self.conv.weight(), bias, 1)?, &self.bn, BN_EPS)?
            }
            (true, false) => conv_bn_relu_max_pool2d_eval(x, &self.conv, &self.bn, 1, BN_EPS)?,
            (false, _) => max_pool2x2(&self.bn.forward_t(&self.conv.forward(x)?, train)?.relu()?)?,
        })
    }
}

/// A linear layer on our kernel or Candle's.
fn dense(x: &Tensor, layer: &Linear, fused: bool) -> Result<Tensor> {
    Ok(if fused { kernels::linear(x, layer)? } else { layer.forward(x)? })
}

/// The network. Build with [`Cnn::new`] from a `VarBuilder` (fresh from a `VarMap` to train, or
/// from a loaded file); [`CnnConfig::arch`] picks its body.
#[derive(Clone, Debug)]
pub struct Cnn {
    body: Body,
    /// `[M, M]` projection onto the first `lifter` DCT-II basis vectors (symmetric).
    lifter: Option<Tensor>,
    config: CnnConfig,
    kernels: Kernels,
}

#[derive(Clone, Debug)]
enum Body {
    Conv { blocks: Vec<ConvBlock>, fc1: Linear, fc2: Linear },
    Tc(TcResNet),
}

/// The same BatchNorm with constant statistics and affine weights.
fn detached_bn(bn: &BatchNorm) -> Result<BatchNorm> {
    let (w, bias) = bn.weight_and_bias().ok_or_else(|| anyhow!("batch-norm without weight and bias"))?;
    let (mean, var) = (bn.running_mean().detach(), bn.running_var().detach());
    Ok(BatchNorm::new(w.dim(0)?, mean, var, w.detach(), bias.detach(), BN_EPS)?)
}

fn detached_linear(l: &Linear) -> Linear {
    Linear::new(l.weight().detach(), l.bias().map(Tensor::detach))
}

impl Cnn {
    pub fn new(config: &CnnConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let body = match config.arch {
            Arch::Cnn => Body::Conv {
                blocks: config
                    .blocks()
                    .enumerate()
                    .map(|(k, (cin, cout))| {
                        ConvBlock::new(
                            cin,
                            cout,
                            vb.pp(format!("conv{}", k + 1)),
                            vb.pp(format!("bn{}", k + 1)),
                        )
                    })
                    .collect::<Result<Vec<_>>>()?,
                fc1: candle_nn::linear(config.flat_dim(), config.hidden, vb.pp("fc1"))?,
                fc2: candle_nn::linear(config.hidden, config.classes, vb.pp("fc2"))?,
            },
            Arch::TcResnet => Body::Tc(TcResNet::new(config, vb.clone())?),
        };
        Ok(Self {
            body,
            lifter: match config.lifter {
                0 => None,
                k => Some(lifter_matrix(config.n_mels, k, vb.device())?),
            },
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

    /// The same network with its weights as constants (copies of their values): a backward
    /// pass then computes the input's gradient only, as relevance maps need.
    pub fn detached(&self) -> Result<Self> {
        let block = |b: &ConvBlock| -> Result<ConvBlock> {
            let conv =
                Conv2d::new(b.conv.weight().detach(), b.conv.bias().map(Tensor::detach), *b.conv.config());
            Ok(ConvBlock { conv, bn: detached_bn(&b.bn)? })
        };
        let body = match &self.body {
            Body::Conv { blocks, fc1, fc2 } => Body::Conv {
                blocks: blocks.iter().map(block).collect::<Result<_>>()?,
                fc1: detached_linear(fc1),
                fc2: detached_linear(fc2),
            },
            Body::Tc(tc) => Body::Tc(tc.detached()?),
        };
        Ok(Self {
            body,
            lifter: self.lifter.as_ref().map(Tensor::detach),
            config: self.config.clone(),
            kernels: self.kernels,
        })
    }

    /// The conv blocks of a CNN (none in a TC-ResNet).
    pub fn blocks(&self) -> &[ConvBlock] {
        match &self.body {
            Body::Conv { blocks, .. } => blocks,
            Body::Tc(_) => &[],
        }
    }

    /// A CNN's first linear layer (for the layer profile).
    pub fn fc1(&self) -> Option<&Linear> {
        match &self.body {
            Body::Conv { fc1, .. } => Some(fc1),
            Body::Tc(_) => None,
        }
    }

    /// Where the weights live.
    pub fn device(&self) -> Device {
        match &self.body {
            Body::Conv { fc2, .. } => fc2.weight().device().clone(),
            Body::Tc(tc) => tc.device().clone(),
        }
    }

    /// Logits `[B, classes]`. `dropout` is `Some(rng)` in training (BatchNorm then uses and
    /// updates batch statistics), `None` in evaluation.
    pub fn forward_t(&self, x: &Tensor, dropout: Option<&mut StdRng>) -> Result<Tensor> {
        let h = self.trunk_t(x, dropout.is_some())?;
        self.head_t(&h, dropout)
    }

    /// What the head sees, `[B, D]`: a CNN's flattened last maps, a TC-ResNet's time average.
    pub fn trunk_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        // [B, 1, M, T] -> [B, 1, M, T]
        let x = self.lift(x)?;
        let blocks = match &self.body {
            Body::Conv { blocks, .. } => blocks,
            Body::Tc(tc) => return tc.trunk_t(&x, train),
        };
        let fused = self.fused(&x);
        // -> [B, C_k, M/2^k, T/2^k] for each block k
        let mut x = x;
        for block in blocks {
            x = block.forward_t(&x, train, fused)?;
        }
        // -> [B, C_n * M/2^n * T/2^n]
        Ok(x.flatten_from(1)?)
    }

    /// Logits `[B, classes]` of the trunk's output; `dropout` as [`Self::forward_t`].
    pub fn head_t(&self, h: &Tensor, dropout: Option<&mut StdRng>) -> Result<Tensor> {
        let (fc1, fc2) = match &self.body {
            Body::Conv { fc1, fc2, .. } => (fc1, fc2),
            Body::Tc(tc) => return tc.head_t(h, dropout),
        };
        let fused = self.fused(h);
        // [B, D] -> [B, hidden]
        let x = dense(h, fc1, fused)?.relu()?;
        let x = match dropout {
            Some(rng) => seeded_dropout(&x, self.config.dropout, rng)?,
            None => x,
        };
        // -> [B, classes]
        dense(&x, fc2, fused)
    }

    /// Whether our fused CPU kernels run on `x`.
    fn fused(&self, x: &Tensor) -> bool {
        self.kernels == Kernels::Fused && x.device().is_cpu() && x.dtype() == DType::F32
    }

    /// `[B, 1, M, T]`: L `[M, M]` times every frame's column (identity without a lifter).
    fn lift(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match &self.lifter {
            Some(l) => {
                let (b, _, m, t) = x.dims4()?;
                l.broadcast_matmul(&x.reshape((b, m, t))?)?.reshape((b, 1, m, t))?
            }
            None => x.clone(),
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
