//! The self-describing model file: one safetensors file holding every network of a model
//! (an ensemble's as `memberK.*`) and, in its metadata, all inference needs: the architecture,
//! the feature config, the normalisation, the class names, and for the record the recipe, the
//! split and the metrics.
//!
//! Version 2 describes the network by its list of conv-block channels. Version 1 files (fixed
//! `conv1_channels`/`conv2_channels`/`conv3_channels` fields) still load when their network is
//! one version 2 can build; the options that were removed (`head: avgpool`, `cmvn: true`) are
//! refused with a message saying to retrain. Version 3 adds the architecture's `arch` (absent:
//! `cnn`, so version 2 files read as before); older builds refuse version 3 files by number.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use super::{Cnn, CnnConfig};
use crate::dsp::features::{FeatureConfig, FEATURE_VERSION};
use crate::error::Error;
use crate::train::recipe::Recipe;

/// Format tag and version of the exported model file.
pub const MODEL_FORMAT: &str = "audio-mnist-model";
pub const MODEL_VERSION: u32 = 3;

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
    /// Each network's softmax temperature, fitted on its validation speakers (empty: 1, as
    /// in files written before calibration).
    pub temperatures: Vec<f32>,
    /// Refuse when "not a digit"'s probability reaches this (`calibrate`: fitted on held-out
    /// speakers' digits for a stated false-reject rate); `None`: when that class wins.
    pub reject_threshold: Option<f32>,
    pub classes: Vec<String>,
    /// The recipe that trained it (absent in version 1 files).
    pub recipe: Option<Recipe>,
    /// Free-form JSON: the split and the metrics.
    pub split: serde_json::Value,
    pub metrics: serde_json::Value,
    /// What the model was adapted to (`audio-mnist adapt`: speakers, files, method, time);
    /// `None` for a model as trained.
    pub adaptation: Option<serde_json::Value>,
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
    if !meta.temperatures.is_empty() {
        metadata.insert("temperatures".to_string(), serde_json::to_string(&meta.temperatures)?);
    }
    if let Some(t) = meta.reject_threshold {
        metadata.insert("reject_threshold".to_string(), t.to_string());
    }
    if let Some(recipe) = &meta.recipe {
        // Folders as given: `evaluate` scores the model's own negatives from them. `shrink`
        // (a model to share) keeps their names only.
        metadata.insert("recipe".to_string(), serde_json::to_string(recipe)?);
    }
    if let Some(adaptation) = &meta.adaptation {
        metadata.insert("adaptation".to_string(), adaptation.to_string());
    }
    crate::data::cache::write_safetensors(path, views, metadata)
}

/// One network of a [`Classifier`] with the standardisation its inputs need.
pub struct Member {
    pub net: Cnn,
    pub mean: f32,
    pub std: f32,
    /// Softmax temperature (1: as trained).
    pub temperature: f32,
}

impl Member {
    /// Logits as trained (no temperature) of unstandardised features `[B, 1, M, T]`.
    fn logits(&self, x_db: &Tensor) -> Result<Tensor> {
        let x = ((x_db - self.mean as f64)? * (1.0 / self.std) as f64)?;
        Ok(self.net.forward_t(&x, None)?)
    }
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
            let logits = (m.logits(x_db)? * (1.0 / m.temperature as f64))?;
            let p = candle_nn::ops::softmax(&logits, candle_core::D::Minus1)?;
            sum = Some(match sum {
                None => p,
                Some(s) => (s + p)?,
            });
        }
        let sum = sum.ok_or_else(|| anyhow!("a classifier without networks"))?;
        Ok((sum / self.members.len() as f64)?)
    }

    /// Each network's logits as trained (no temperature) for features `[B, 1, M, T]`:
    /// `[network][row][class]`, to fit a temperature.
    pub fn member_logits(&self, x_db: &Tensor) -> Result<Vec<Vec<Vec<f32>>>> {
        self.members.iter().map(|m| Ok(m.logits(x_db)?.to_vec2::<f32>()?)).collect()
    }

    pub fn config(&self) -> &CnnConfig {
        self.members[0].net.config()
    }

    /// The same networks without their temperatures (as trained), to measure calibration.
    pub fn uncalibrated(&self) -> Classifier {
        let member = |m: &Member| Member { net: m.net.clone(), temperature: 1.0, ..*m };
        Classifier { members: self.members.iter().map(member).collect() }
    }

    pub fn temperatures(&self) -> Vec<f32> {
        self.members.iter().map(|m| m.temperature).collect()
    }
}

/// A model file loaded for inference.
pub struct LoadedModel {
    pub model: Classifier,
    pub meta: ModelMeta,
}

/// Load a model file, refusing with a clear message anything that is not a complete model of
/// a version this build understands.
pub fn load_model(path: &Path, device: &Device) -> Result<LoadedModel, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    load_model_bytes(&bytes, device).map_err(|e| Error::model_file(path, format!("{e:#}")))
}

/// The network of a version 1 file, whose blocks were fixed fields.
#[derive(Deserialize)]
struct ArchitectureV1 {
    n_mels: usize,
    n_frames: usize,
    conv1_channels: usize,
    conv2_channels: usize,
    hidden: usize,
    dropout: f32,
    classes: usize,
    #[serde(default)]
    head: Option<String>,
    #[serde(default)]
    conv3_channels: usize,
    #[serde(default)]
    cmvn: bool,
    #[serde(default)]
    lifter: usize,
}

fn architecture_v1(json: &str) -> Result<CnnConfig> {
    let a: ArchitectureV1 = serde_json::from_str(json).context("bad `architecture`")?;
    let retrain =
        "was removed in model version 2 (it measured as not helping); retrain with `audio-mnist train`";
    ensure!(a.head.as_deref().unwrap_or("flatten") == "flatten", "the `avgpool` head {retrain}");
    ensure!(!a.cmvn, "per-utterance normalisation (`cmvn`) {retrain}");
    let mut channels = vec![a.conv1_channels, a.conv2_channels];
    if a.conv3_channels > 0 {
        channels.push(a.conv3_channels);
    }
    let (n_mels, n_frames, hidden, dropout, classes, lifter) =
        (a.n_mels, a.n_frames, a.hidden, a.dropout, a.classes, a.lifter);
    Ok(CnnConfig { arch: super::Arch::Cnn, n_mels, n_frames, channels, hidden, dropout, classes, lifter })
}

/// A model file's networks as trainable variables (one `VarMap` per member, plain tensor
/// names), with its metadata: what adaptation starts from and [`save_ensemble`] writes back.
pub fn load_varmaps(path: &Path, device: &Device) -> Result<(Vec<VarMap>, ModelMeta), Error> {
    let read = || -> Result<(Vec<VarMap>, ModelMeta)> {
        load_varmaps_bytes(&std::fs::read(path).context("cannot read it")?, device)
    };
    read().map_err(|e| Error::model_file(path, format!("{e:#}")))
}

/// [`load_varmaps`] of a model file's bytes (the bundled model).
pub fn load_varmaps_bytes(bytes: &[u8], device: &Device) -> Result<(Vec<VarMap>, ModelMeta)> {
    let (st, md) = crate::data::cache::read_safetensors(bytes, MODEL_FORMAT, "model")?;
    let meta = read_meta(&md)?;
    let n = meta.members.len().max(1);
    let varmaps = (0..n)
        .map(|k| {
            let varmap = VarMap::new();
            let tensors = member_tensors(&st, &meta.architecture, k, n, device)?;
            let mut data = varmap.data().lock().map_err(|_| anyhow!("variable map lock poisoned"))?;
            for (name, t) in tensors {
                data.insert(name, candle_core::Var::from_tensor(&t)?);
            }
            drop(data);
            Ok(varmap)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((varmaps, meta))
}

/// Rewrite the model file `src` as `dst` with its weights in half precision (IEEE f16): half
/// the size, the same metadata. Weights of these networks lie well inside f16's range; what
/// rounding changes in the answers is measured in support/RESULTS.md ("The bundled model").
pub fn save_half(src: &Path, dst: &Path) -> Result<()> {
    let bytes = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
    let (st, mut md) = crate::data::cache::read_safetensors(&bytes, MODEL_FORMAT, "model")?;
    let meta = read_meta(&md).with_context(|| format!("{}", src.display()))?;
    if let Some(recipe) = &meta.recipe {
        md.insert("recipe".to_string(), serde_json::to_string(&recipe.without_paths())?);
    }
    let names = sorted_names(&st);
    let mut halves = Vec::new();
    for name in &names {
        let view = st.tensor(name)?;
        ensure!(view.dtype() == safetensors::Dtype::F32, "tensor `{name}` is already {:?}", view.dtype());
        let values = crate::data::cache::f32_values(&view);
        ensure!(
            values.iter().all(|v| v.abs() < 60_000.0),
            "tensor `{name}` holds values beyond half precision's range"
        );
        let data: Vec<u8> = values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
        halves.push((name.as_str(), view.shape().to_vec(), data));
    }
    let views = halves
        .iter()
        .map(|(n, shape, data)| {
            Ok((*n, safetensors::tensor::TensorView::new(safetensors::Dtype::F16, shape.clone(), data)?))
        })
        .collect::<Result<Vec<_>>>()?;
    crate::data::cache::write_safetensors(dst, views, md)
}

/// What `calibrate` changes in a model file: nothing of its weights.
#[derive(Clone, Debug, Default)]
pub struct Calibrated {
    /// One per network (`None`: as they are).
    pub temperatures: Option<Vec<f32>>,
    /// The "not a digit" threshold (`None`: removed).
    pub reject_threshold: Option<f32>,
    /// How it was fitted, kept as `metrics.calibrated` (the test speakers' calibration error
    /// in `metrics.calibration` was measured before, so it is moved to `as_trained`).
    pub record: serde_json::Value,
}

/// A copy of the model file `src` at `dst` with the header changed as `c` says; the weights'
/// bytes are copied untouched.
pub fn save_calibrated(src: &Path, dst: &Path, c: &Calibrated) -> Result<()> {
    let bytes = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
    let (st, mut md) = crate::data::cache::read_safetensors(&bytes, MODEL_FORMAT, "model")?;
    if let Some(t) = &c.temperatures {
        md.insert("temperatures".to_string(), serde_json::to_string(t)?);
    }
    match c.reject_threshold {
        Some(t) => md.insert("reject_threshold".to_string(), t.to_string()),
        None => md.remove("reject_threshold"),
    };
    let mut metrics: serde_json::Value =
        serde_json::from_str(md.get("metrics").map_or("{}", String::as_str)).context("bad `metrics`")?;
    if let Some(m) = metrics.as_object_mut() {
        if let Some(before) = m.remove("calibration") {
            m.insert("calibration".into(), serde_json::json!({ "as_trained": before }));
        }
        m.insert("calibrated".into(), c.record.clone());
    }
    md.insert("metrics".to_string(), metrics.to_string());
    read_meta(&md).with_context(|| format!("{}", src.display()))?;
    let names = sorted_names(&st);
    let views = names.iter().map(|n| Ok((n.as_str(), st.tensor(n)?))).collect::<Result<Vec<_>>>()?;
    crate::data::cache::write_safetensors(dst, views, md)
}

/// A file's tensor names in order, so that rewritten files do not depend on the reader's.
fn sorted_names(st: &safetensors::SafeTensors) -> Vec<String> {
    let mut names: Vec<String> = st.names().into_iter().map(|n| n.to_string()).collect();
    names.sort();
    names
}

/// [`load_model`] of a model file's bytes (an upload, a fuzzer's input).
pub fn load_model_bytes(bytes: &[u8], device: &Device) -> Result<LoadedModel> {
    let (st, md) = crate::data::cache::read_safetensors(bytes, MODEL_FORMAT, "model")?;
    let meta = read_meta(&md)?;
    let norms = if meta.members.is_empty() { vec![(meta.mean, meta.std)] } else { meta.members.clone() };
    let members = (0..norms.len())
        .map(|k| {
            let tensors = member_tensors(&st, &meta.architecture, k, norms.len(), device)?;
            let net = Cnn::new(&meta.architecture, VarBuilder::from_tensors(tensors, DType::F32, device))?;
            let temperature = meta.temperatures.get(k).copied().unwrap_or(1.0);
            Ok(Member { net, mean: norms[k].0, std: norms[k].1, temperature })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(LoadedModel { model: Classifier { members }, meta })
}

/// The metadata of a model file, checked for consistency.
fn read_meta(md: &HashMap<String, String>) -> Result<ModelMeta> {
    let get = |k: &str| md.get(k).ok_or_else(|| anyhow!("metadata lacks `{k}`"));
    let version: u32 = get("model_version")?.parse().context("bad `model_version`")?;
    let architecture = match version {
        1 => architecture_v1(get("architecture")?)?,
        2 | MODEL_VERSION => serde_json::from_str(get("architecture")?).context("bad `architecture`")?,
        v => bail!(
            "model file version {v}; this build reads versions 1 to {MODEL_VERSION}: update audio-mnist"
        ),
    };
    let fv: u32 = get("feature_version")?.parse().context("bad `feature_version`")?;
    ensure!(
        fv == FEATURE_VERSION,
        "made with feature version {fv}; this build computes version {FEATURE_VERSION}"
    );
    let meta = ModelMeta {
        architecture,
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
        temperatures: match md.get("temperatures") {
            Some(t) => serde_json::from_str(t).context("bad `temperatures`")?,
            None => Vec::new(),
        },
        reject_threshold: match md.get("reject_threshold") {
            Some(t) => Some(t.parse().context("bad `reject_threshold`")?),
            None => None,
        },
        recipe: match md.get("recipe") {
            Some(r) => Some(serde_json::from_str(r).context("bad `recipe`")?),
            None => None,
        },
        adaptation: match md.get("adaptation") {
            Some(a) => Some(serde_json::from_str(a).context("bad `adaptation`")?),
            None => None,
        },
    };
    meta.architecture.validate()?;
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
    ensure!(
        meta.temperatures.iter().all(|t| t.is_finite() && *t > 0.0)
            && (meta.temperatures.is_empty() || meta.temperatures.len() == meta.members.len().max(1)),
        "bad `temperatures`: one positive number per network"
    );
    ensure!(
        meta.reject_threshold.is_none_or(|t| t > 0.0 && t <= 1.0)
            && (meta.reject_threshold.is_none() || meta.architecture.classes == 11),
        "bad `reject_threshold`: a probability in (0, 1], for a model with a \"not a digit\" class"
    );
    Ok(meta)
}

/// Network `k` of `n`'s tensors, each checked for presence, type, shape and finite values.
fn member_tensors(
    st: &safetensors::SafeTensors,
    arch: &CnnConfig,
    k: usize,
    n: usize,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let expected = arch.tensor_shapes();
    let mut names: Vec<&String> = expected.keys().collect();
    names.sort();
    let mut tensors = HashMap::new();
    for &plain in &names {
        let name = member_name(k, n, plain);
        let view = st.tensor(&name).map_err(|_| anyhow!("tensor `{name}` is missing"))?;
        ensure!(
            matches!(view.dtype(), safetensors::Dtype::F32 | safetensors::Dtype::F16),
            "tensor `{name}` is {:?}, expected F32 or F16",
            view.dtype()
        );
        ensure!(
            view.shape() == expected[plain].as_slice(),
            "tensor `{name}` has shape {:?}, expected {:?}",
            view.shape(),
            expected[plain]
        );
        let values = match view.dtype() {
            safetensors::Dtype::F16 => view
                .data()
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect::<Vec<_>>(),
            _ => crate::data::cache::f32_values(&view),
        };
        if values.iter().any(|v| !v.is_finite()) {
            bail!("tensor `{name}` holds NaN or infinite values");
        }
        tensors.insert(plain.clone(), Tensor::from_vec(values, view.shape(), device)?);
    }
    Ok(tensors)
}
