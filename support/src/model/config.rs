//! The network's description: [`CnnConfig`] lists the conv blocks by their channels, and
//! everything else about the architecture (tensor names and shapes, parameter count, the
//! layer table, the minimum input) is derived from it here.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{config_check, Error};

/// Architecture hyper-parameters; [`super::Cnn::new`] builds the network from them.
///
/// ```text
/// x [B, 1, M, T] -> (lifter) -> per block k: conv 3x3 (pad 1) -> BatchNorm -> ReLU -> max-pool 2x2
///   -> flatten [B, C_last * M/2^n * T/2^n] -> Linear(hidden) -> ReLU -> Dropout -> Linear(classes)
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CnnConfig {
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
        1 << self.channels.len()
    }

    pub fn validate(&self) -> Result<(), Error> {
        let m = self.min_side();
        config_check(!self.channels.is_empty() && self.channels.len() <= 5, || {
            format!("{} conv blocks; 1 to 5 are supported", self.channels.len())
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
