//! The network's description: [`CnnConfig`] lists the conv blocks by their channels, and
//! everything else about the architecture (tensor names and shapes, parameter count, the
//! layer table, the minimum input) is derived from it here.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{config_check, Error};

/// Which network [`CnnConfig::channels`] builds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// 2-D conv blocks (3x3 conv, BatchNorm, ReLU, 2x2 max-pool), flatten, two linear layers:
    /// the seed's network.
    #[default]
    Cnn,
    /// TC-ResNet (Choi et al., Interspeech 2019), a keyword-spotting network: mel bands as
    /// channels, 1-D convs over time, residual blocks of stride 2, global average pooling over
    /// time, one linear layer. `channels` = the first conv's width, then each block's.
    TcResnet,
}

impl Arch {
    fn is_cnn(&self) -> bool {
        *self == Arch::Cnn
    }
}

/// Kernel width of TC-ResNet's residual convs (over frames).
pub const TC_KERNEL: usize = 9;

/// Architecture hyper-parameters; [`super::Cnn::new`] builds the network from them.
///
/// `arch: cnn` (the default):
/// ```text
/// x [B, 1, M, T] -> (lifter) -> per block k: conv 3x3 (pad 1) -> BatchNorm -> ReLU -> max-pool 2x2
///   -> flatten [B, C_last * M/2^n * T/2^n] -> Linear(hidden) -> ReLU -> Dropout -> Linear(classes)
/// ```
/// `arch: tc-resnet` ([`Arch::TcResnet`]; `hidden` unused):
/// ```text
/// x [B, 1, M, T] -> (lifter) -> [B, M, T] -> conv 3 (M -> C_0)                   [B, C_0, T]
///   -> per block k: relu(bn(conv 9, stride 2 -> relu(bn) -> conv 9) + relu(bn(conv 1, stride 2)))
///                                                                        [B, C_k, ceil(T/2^k)]
///   -> mean over time [B, C_n] -> Dropout -> Linear(classes)                   [B, classes]
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CnnConfig {
    /// Which network the channels build (absent in files before model version 3: `cnn`).
    #[serde(default, skip_serializing_if = "Arch::is_cnn")]
    pub arch: Arch,
    pub n_mels: usize,
    pub n_frames: usize,
    /// Output channels of each conv block, in order (the seed's: `[32, 64]`).
    pub channels: Vec<usize>,
    pub hidden: usize,
    pub dropout: f32,
    pub classes: usize,
    /// Cepstral liftering before the first block (0 = off): keep the first `lifter` DCT
    /// coefficients of each frame's log-Mel column, i.e. smooth the spectrum along frequency
    /// to its envelope (formants) and drop the pitch harmonics, which differ from voice to voice.
    #[serde(default)]
    pub lifter: usize,
}

impl Default for CnnConfig {
    /// The seed notebook's network: 4,216,138 parameters at 128 x 32.
    fn default() -> Self {
        Self {
            arch: Arch::Cnn,
            n_mels: 128,
            n_frames: 32,
            channels: vec![32, 64],
            hidden: 256,
            dropout: 0.3,
            classes: 10,
            lifter: 0,
        }
    }
}

/// One layer of the network as the summary and the profile show it.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerSpec {
    /// Tensor prefix: `conv1`, `bn1`, ..., `fc1`, `fc2`.
    pub name: String,
    /// What it computes, e.g. `conv 3x3 1->32` or `linear 16384->256`.
    pub op: String,
    /// Output shape without the batch dimension.
    pub output: Vec<usize>,
    /// Its tensors (name, shape); BatchNorm running statistics are buffers, not parameters.
    pub tensors: Vec<(String, Vec<usize>)>,
}

impl LayerSpec {
    /// Trainable values of the layer.
    pub fn params(&self) -> usize {
        self.tensors.iter().filter(|(n, _)| is_parameter(n)).map(|(_, s)| s.iter().product::<usize>()).sum()
    }
}

/// Whether a tensor is trained (BatchNorm running statistics are not).
pub fn is_parameter(name: &str) -> bool {
    !name.ends_with("running_mean") && !name.ends_with("running_var")
}

impl CnnConfig {
    /// Input channels of each block, paired with its output channels.
    pub fn blocks(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let ins = std::iter::once(1).chain(self.channels.iter().copied());
        ins.zip(self.channels.iter().copied())
    }

    /// `[C, M, T]` after the last block (each 2x2 pool floors, as PyTorch's MaxPool2d).
    pub fn last_maps(&self) -> [usize; 3] {
        let n = self.channels.len();
        [self.channels.last().copied().unwrap_or(1), self.n_mels >> n, self.n_frames >> n]
    }

    /// Input size of the first linear layer.
    pub fn flat_dim(&self) -> usize {
        self.last_maps().iter().product()
    }

    /// Every layer in forward order, with its tensors and output shape.
    pub fn layers(&self) -> Vec<LayerSpec> {
        match self.arch {
            Arch::Cnn => self.cnn_layers(),
            Arch::TcResnet => self.tc_layers(),
        }
    }

    fn cnn_layers(&self) -> Vec<LayerSpec> {
        let mut out = Vec::new();
        let (mut m, mut t) = (self.n_mels, self.n_frames);
        for (k, (cin, cout)) in self.blocks().enumerate() {
            let n = k + 1;
            out.push(LayerSpec {
                name: format!("conv{n}"),
                op: format!("conv 3x3 {cin}->{cout}"),
                output: vec![cout, m, t],
                tensors: vec![
                    (format!("conv{n}.weight"), vec![cout, cin, 3, 3]),
                    (format!("conv{n}.bias"), vec![cout]),
                ],
            });
            (m, t) = (m / 2, t / 2);
            out.push(LayerSpec {
                name: format!("bn{n}"),
                op: "bn + relu + pool 2x2".into(),
                output: vec![cout, m, t],
                tensors: ["weight", "bias", "running_mean", "running_var"]
                    .iter()
                    .map(|s| (format!("bn{n}.{s}"), vec![cout]))
                    .collect(),
            });
        }
        let flat = self.flat_dim();
        out.push(linear("fc1", flat, self.hidden, "linear (+relu, dropout)"));
        out.push(linear("fc2", self.hidden, self.classes, "linear"));
        out
    }

    /// TC-ResNet's layers: `conv0`, `block1`.. (each with `conv1`, `bn1`, `conv2`, `bn2`,
    /// `proj`, `proj_bn`), `fc`.
    fn tc_layers(&self) -> Vec<LayerSpec> {
        let c0 = self.channels.first().copied().unwrap_or(1);
        let mut t = self.n_frames;
        let mut out = vec![LayerSpec {
            name: "conv0".into(),
            op: format!("conv1d 3 {}->{c0}", self.n_mels),
            output: vec![c0, t],
            tensors: vec![("conv0.weight".into(), vec![c0, self.n_mels, 3])],
        }];
        let bn = |p: String, c: usize| {
            ["weight", "bias", "running_mean", "running_var"].map(|s| (format!("{p}.{s}"), vec![c]))
        };
        for (k, pair) in self.channels.windows(2).enumerate() {
            let (cin, cout, n) = (pair[0], pair[1], k + 1);
            t = t.div_ceil(2);
            let p = format!("block{n}");
            let mut tensors = vec![
                (format!("{p}.conv1.weight"), vec![cout, cin, TC_KERNEL]),
                (format!("{p}.conv2.weight"), vec![cout, cout, TC_KERNEL]),
                (format!("{p}.proj.weight"), vec![cout, cin, 1]),
            ];
            for b in ["bn1", "bn2", "proj_bn"] {
                tensors.extend(bn(format!("{p}.{b}"), cout));
            }
            out.push(LayerSpec {
                name: p,
                op: format!("residual conv1d {TC_KERNEL} /2 {cin}->{cout}"),
                output: vec![cout, t],
                tensors,
            });
        }
        let last = self.channels.last().copied().unwrap_or(1);
        out.push(linear("fc", last, self.classes, "mean over time, linear"));
        out
    }

    /// The tensors of the layers after [`super::Cnn::trunk_t`]: a CNN's two linear layers, a
    /// TC-ResNet's one (what adaptation retrains).
    pub fn head_tensors(&self) -> Vec<String> {
        let layers: &[&str] = match self.arch {
            Arch::Cnn => &["fc1", "fc2"],
            Arch::TcResnet => &["fc"],
        };
        layers.iter().flat_map(|l| [format!("{l}.weight"), format!("{l}.bias")]).collect()
    }

    /// Trainable parameters.
    pub fn param_count(&self) -> usize {
        self.layers().iter().map(LayerSpec::params).sum()
    }

    /// Name and shape of every tensor of the network, as [`super::Cnn::new`] creates them.
    /// Derived, not built: checking a model file stays cheap.
    pub fn tensor_shapes(&self) -> HashMap<String, Vec<usize>> {
        self.layers().into_iter().flat_map(|l| l.tensors).collect()
    }

    /// The smallest input side the blocks' pools leave at least one cell of.
    pub fn min_side(&self) -> usize {
        match self.arch {
            Arch::Cnn => 1 << self.channels.len(),
            Arch::TcResnet => 1,
        }
    }

    pub fn validate(&self) -> Result<(), Error> {
        let m = self.min_side();
        let most = if self.arch.is_cnn() { 5 } else { 8 };
        config_check(!self.channels.is_empty() && self.channels.len() <= most, || {
            format!("{} conv blocks; 1 to {most} are supported", self.channels.len())
        })?;
        config_check(self.n_mels >= m && self.n_frames >= m, || {
            format!(
                "input {}x{} is smaller than {m}x{m} ({} blocks)",
                self.n_mels,
                self.n_frames,
                self.channels.len()
            )
        })?;
        config_check((0.0..1.0).contains(&self.dropout), || {
            format!("dropout {} is outside [0, 1)", self.dropout)
        })?;
        config_check(
            self.classes >= 2 && self.hidden > 0 && self.channels.iter().all(|&c| c > 0 && c <= 4096),
            || format!("empty or absurd layer (channels {:?}, hidden {})", self.channels, self.hidden),
        )?;
        config_check(self.lifter <= self.n_mels, || {
            format!("lifter {} exceeds {} mel bands", self.lifter, self.n_mels)
        })
    }
}

fn linear(name: &str, inputs: usize, outputs: usize, op: &str) -> LayerSpec {
    LayerSpec {
        name: name.into(),
        op: format!("{op} {inputs}->{outputs}"),
        output: vec![outputs],
        tensors: vec![
            (format!("{name}.weight"), vec![outputs, inputs]),
            (format!("{name}.bias"), vec![outputs]),
        ],
    }
}
