//! TC-ResNet (Choi et al., "Temporal Convolution for Real-time Keyword Spotting on Mobile
//! Devices", Interspeech 2019): the mel bands are the input channels of 1-D convolutions over
//! time, so every layer sees the whole spectrum and the network stays small and fast; residual
//! blocks halve the time axis; a global average over time makes the answer independent of where
//! in the clip the word sits. Built from Candle's ops on every device (its autograd gives
//! training and relevance maps their gradients).

use anyhow::Result;
use candle_core::{Module, ModuleT, Tensor};
use candle_nn::{BatchNorm, Linear, VarBuilder};
use rand::rngs::StdRng;

use super::config::{CnnConfig, TC_KERNEL};
use super::{detached_bn, detached_linear, seeded_dropout, BN_EPS};

/// conv 9 (stride 2) -> BN -> ReLU -> conv 9 -> BN, plus the shortcut conv 1 (stride 2) -> BN
/// -> ReLU; their sum through a ReLU.
#[derive(Clone, Debug)]
struct Block {
    conv1: Conv1d,
    bn1: BatchNorm,
    conv2: Conv1d,
    bn2: BatchNorm,
    proj: Conv1d,
    proj_bn: BatchNorm,
}

/// A 1-D convolution without bias, padding `k / 2`, by unfolding the input and one matrix
/// product: Candle 0.11's `conv1d` gets the kernel's gradient wrong on the CPU (its backward
/// convolves with a transposed, non-contiguous gradient; `tests/tc_resnet.rs` checks ours
/// against finite differences), and Candle's gradients of these ops are right.
#[derive(Clone, Debug)]
struct Conv1d {
    /// `[C_out, C_in, k]`
    weight: Tensor,
    stride: usize,
}

impl Conv1d {
    /// `[B, C_in, T]` -> `[B, C_out, ceil(T / stride)]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (cout, cin, k) = self.weight.dims3()?;
        let (b, _, t) = x.dims3()?;
        // [B, C_in, T + 2p] -> k shifted views stacked: [B, C_in, k, T]
        let padded = x.pad_with_zeros(2, k / 2, k / 2)?;
        let shifted = (0..k).map(|j| padded.narrow(2, j, t)).collect::<candle_core::Result<Vec<_>>>()?;
        let mut cols = Tensor::stack(&shifted, 2)?;
        // -> every `stride`-th frame: [B, C_in, k, T_out]
        if self.stride > 1 {
            let keep: Vec<u32> = (0..t as u32).step_by(self.stride).collect();
            let n = keep.len();
            cols = cols.contiguous()?.index_select(&Tensor::from_vec(keep, n, x.device())?, 3)?;
        }
        let t_out = cols.dim(3)?;
        // [C_out, C_in k] x [B, C_in k, T_out] -> [B, C_out, T_out]
        let w = self.weight.reshape((cout, cin * k))?;
        Ok(w.broadcast_matmul(&cols.reshape((b, cin * k, t_out))?)?)
    }

    fn detached(&self) -> Self {
        Self { weight: self.weight.detach(), stride: self.stride }
    }
}

fn conv(cin: usize, cout: usize, k: usize, stride: usize, vb: VarBuilder) -> Result<Conv1d> {
    let bound = (6.0 / ((cin + cout) * k) as f64).sqrt();
    let init = candle_nn::Init::Uniform { lo: -bound, up: bound };
    Ok(Conv1d { weight: vb.get_with_hints((cout, cin, k), "weight", init)?, stride })
}

fn bn(c: usize, vb: VarBuilder) -> Result<BatchNorm> {
    let cfg = candle_nn::BatchNormConfig { eps: BN_EPS, remove_mean: true, affine: true, momentum: 0.1 };
    Ok(candle_nn::batch_norm(c, cfg, vb)?)
}

impl Block {
    fn new(cin: usize, cout: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv1: conv(cin, cout, TC_KERNEL, 2, vb.pp("conv1"))?,
            bn1: bn(cout, vb.pp("bn1"))?,
            conv2: conv(cout, cout, TC_KERNEL, 1, vb.pp("conv2"))?,
            bn2: bn(cout, vb.pp("bn2"))?,
            proj: conv(cin, cout, 1, 2, vb.pp("proj"))?,
            proj_bn: bn(cout, vb.pp("proj_bn"))?,
        })
    }

    /// `[B, Cin, T]` -> `[B, Cout, ceil(T/2)]`.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.bn1.forward_t(&self.conv1.forward(x)?, train)?.relu()?;
        let h = self.bn2.forward_t(&self.conv2.forward(&h)?, train)?;
        let shortcut = self.proj_bn.forward_t(&self.proj.forward(x)?, train)?.relu()?;
        Ok((h + shortcut)?.relu()?)
    }

    fn detached(&self) -> Result<Self> {
        Ok(Self {
            conv1: self.conv1.detached(),
            bn1: detached_bn(&self.bn1)?,
            conv2: self.conv2.detached(),
            bn2: detached_bn(&self.bn2)?,
            proj: self.proj.detached(),
            proj_bn: detached_bn(&self.proj_bn)?,
        })
    }
}

/// The network; tensor names as [`CnnConfig::layers`] lists them.
#[derive(Clone, Debug)]
pub struct TcResNet {
    conv0: Conv1d,
    blocks: Vec<Block>,
    fc: Linear,
    dropout: f32,
}

impl TcResNet {
    pub fn new(config: &CnnConfig, vb: VarBuilder) -> Result<Self> {
        let c = &config.channels;
        let blocks = c
            .windows(2)
            .enumerate()
            .map(|(k, w)| Block::new(w[0], w[1], vb.pp(format!("block{}", k + 1))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            conv0: conv(config.n_mels, c[0], 3, 1, vb.pp("conv0"))?,
            blocks,
            fc: candle_nn::linear(c[c.len() - 1], config.classes, vb.pp("fc"))?,
            dropout: config.dropout,
        })
    }

    /// `[B, 1, M, T]` -> the time average of the last block, `[B, C_n]`.
    pub fn trunk_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (b, _, m, t) = x.dims4()?;
        // [B, 1, M, T] -> [B, M, T] -> [B, C_0, T]
        let mut x = self.conv0.forward(&x.reshape((b, m, t))?)?;
        // -> [B, C_k, ceil(T/2^k)]
        for block in &self.blocks {
            x = block.forward_t(&x, train)?;
        }
        // -> [B, C_n]
        Ok(x.mean(2)?)
    }

    /// Logits `[B, classes]` of the trunk's output; `dropout` as [`super::Cnn::forward_t`].
    pub fn head_t(&self, h: &Tensor, dropout: Option<&mut StdRng>) -> Result<Tensor> {
        let h = match dropout {
            Some(rng) => seeded_dropout(h, self.dropout, rng)?,
            None => h.clone(),
        };
        Ok(self.fc.forward(&h)?)
    }

    /// The same network with constant weights.
    pub fn detached(&self) -> Result<Self> {
        Ok(Self {
            conv0: self.conv0.detached(),
            blocks: self.blocks.iter().map(Block::detached).collect::<Result<_>>()?,
            fc: detached_linear(&self.fc),
            dropout: self.dropout,
        })
    }

    pub fn device(&self) -> &candle_core::Device {
        self.fc.weight().device()
    }
}
