//! Speaker adaptation: a trained model retrained, in seconds, on a few recordings of one
//! person's digits. The convolutional trunk stays as trained (its features, batch-norm
//! statistics and the model's calibration and "not a digit" class are kept); the head (the
//! layers after the trunk) is retrained on the trunk's features of the enrollment clips and
//! seeded augmented copies of them, pulled towards its trained weights (an L2-SP penalty:
//! `l2sp * |w - w_trained|^2`) so that it moves only as far as the new voice needs.
//!
//! [`Enrollment`] picks the recordings, [`adapt`] retrains and returns an [`Adapted`] model
//! that saves as an ordinary model file whose `adaptation` metadata says what it learned from;
//! [`bench`] measures it per speaker.

pub mod bench;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::optim::ParamsAdamW;
use candle_nn::{VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::data::dataset::{Dataset, Recording};
use crate::dsp::features::FeatureExtractor;
use crate::error::Error;
use crate::model::{load_varmaps, save_ensemble, Classifier, Cnn, Member, ModelMeta};
use crate::train::augment::{epoch_features, load_clips, prepare_clip, AugmentConfig};
use crate::train::optim::AdamW;

/// Which layers adaptation retrains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Layers {
    /// Every layer after the trunk (a CNN's two linear layers).
    #[default]
    Head,
    /// Only the last linear layer.
    Last,
}

/// How to adapt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdaptConfig {
    pub layers: Layers,
    /// Full-batch AdamW steps.
    pub steps: usize,
    pub lr: f64,
    /// Weight of the pull towards the trained weights.
    pub l2sp: f64,
    /// Augmented copies of each enrollment clip besides the clean one.
    pub variants: usize,
    /// The copies' augmentation (the recipes' VTLP, speed, noise).
    pub augment: AugmentConfig,
    pub seed: u64,
}

impl Default for AdaptConfig {
    fn default() -> Self {
        Self {
            layers: Layers::Head,
            steps: 60,
            lr: 3e-4,
            l2sp: 1e-2,
            variants: 6,
            augment: AugmentConfig {
                speed: 0.05,
                noise_p: 0.5,
                snr_min_db: 15.0,
                vtlp: 0.05,
                ..Default::default()
            },
            seed: 42,
        }
    }
}

/// The recordings a model adapts on: at most `takes` of each digit per speaker.
#[derive(Clone, Debug, PartialEq)]
pub struct Enrollment {
    pub files: Vec<PathBuf>,
    pub digits: Vec<u8>,
    pub speakers: Vec<String>,
}

impl Enrollment {
    /// The first `takes` takes (by take number) of each digit of `speakers` (every speaker
    /// of the folder when empty). Refused, with the reason, when a digit has no take.
    pub fn pick(ds: &Dataset, speakers: &[String], takes: usize) -> Result<Self, Error> {
        crate::error::check(takes > 0, Error::Config, || "--takes 0: give at least 1 take".into())?;
        let wanted: Vec<String> = if speakers.is_empty() { ds.speaker_ids() } else { speakers.to_vec() };
        crate::error::check(!wanted.is_empty(), Error::Data, || {
            format!("no recordings in {}", ds.describe())
        })?;
        let mut files = Vec::new();
        let mut digits = Vec::new();
        for speaker in &wanted {
            let mut missing = Vec::new();
            for digit in 0..10u8 {
                let chosen = first_takes(ds, speaker, digit, takes);
                if chosen.is_empty() {
                    missing.push(digit.to_string());
                }
                files.extend(chosen.iter().map(|r| ds.absolute(r)));
                digits.extend(chosen.iter().map(|r| r.digit));
            }
            crate::error::check(missing.is_empty(), Error::Data, || {
                format!(
                    "speaker {speaker} has no recording of digit {} in {}; say each digit at least \
                     once (files named {{digit}}_{{name}}_{{take}}.wav)",
                    missing.join(", "),
                    ds.describe()
                )
            })?;
        }
        Ok(Self { files, digits, speakers: wanted })
    }
}

/// A speaker's recordings of a digit, by take number, the first `takes` of them.
fn first_takes<'a>(ds: &'a Dataset, speaker: &str, digit: u8, takes: usize) -> Vec<&'a Recording> {
    let mut all: Vec<&Recording> =
        ds.recordings.iter().filter(|r| r.speaker == speaker && r.digit == digit).collect();
    all.sort_by(|a, b| a.take.cmp(&b.take).then(a.path.cmp(&b.path)));
    all.truncate(takes);
    all
}

/// An adapted model: its networks' variables and its metadata (with `adaptation` set).
pub struct Adapted {
    pub varmaps: Vec<VarMap>,
    pub meta: ModelMeta,
    pub seconds: f64,
}

impl Adapted {
    /// How long adaptation took, also in the file's `adaptation` record.
    fn set_seconds(&mut self, seconds: f64) {
        self.seconds = seconds;
        if let Some(r) = self.meta.adaptation.as_mut().and_then(|a| a.as_object_mut()) {
            r.insert("seconds".into(), seconds.into());
        }
    }

    /// Write it as a model file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let refs: Vec<&VarMap> = self.varmaps.iter().collect();
        save_ensemble(path, &refs, &self.meta)
    }

    /// The adapted networks, ready to predict (the original's normalisation and temperatures).
    pub fn classifier(&self, device: &Device) -> Result<Classifier> {
        let norms = norms(&self.meta);
        let members = self
            .varmaps
            .iter()
            .enumerate()
            .map(|(k, vm)| {
                let net = Cnn::new(&self.meta.architecture, VarBuilder::from_varmap(vm, DType::F32, device))?;
                let temperature = self.meta.temperatures.get(k).copied().unwrap_or(1.0);
                Ok(Member { net, mean: norms[k].0, std: norms[k].1, temperature })
            })
            .collect::<Result<_>>()?;
        Ok(Classifier { members })
    }

    /// The adapted model, ready to answer as a loaded model file would.
    pub fn predictor(&self, device: &Device) -> Result<crate::infer::Predictor> {
        crate::infer::Predictor::new(self.classifier(device)?, self.meta.clone(), device)
    }

    /// The model file's bytes (what [`Self::save`] writes).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("adapted.safetensors");
        self.save(&path)?;
        Ok(std::fs::read(&path)?)
    }
}

/// Each network's input (mean, std).
fn norms(meta: &ModelMeta) -> Vec<(f32, f32)> {
    if meta.members.is_empty() {
        vec![(meta.mean, meta.std)]
    } else {
        meta.members.clone()
    }
}

/// Adapt the model file `model` to the speakers of `enrollment`.
pub fn adapt(model: &Path, enrollment: &Enrollment, cfg: &AdaptConfig, device: &Device) -> Result<Adapted> {
    let start = Instant::now();
    let (varmaps, meta) = load_varmaps(model, device)?;
    let fx = FeatureExtractor::new(meta.features.clone())?;
    let clips = load_clips(&fx, &enrollment.files)?;
    for (clip, file) in clips.iter().zip(&enrollment.files) {
        check_sound(clip).map_err(|e| Error::Data(format!("{}: {e}", file.display())))?;
    }
    let source = serde_json::json!({
        "from": model.display().to_string(),
        "speakers": enrollment.speakers,
        "files": enrollment.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
    });
    let mut adapted = retrain((varmaps, meta), &clips, &enrollment.digits, source, cfg, device)?;
    adapted.set_seconds(start.elapsed().as_secs_f64());
    Ok(adapted)
}

/// A recording held in memory (a take recorded on a web page) prepared as enrollment files
/// are: resampled, trimmed, peak-normalised; refused when there is no sound in it.
pub fn enrollment_clip(fx: &FeatureExtractor, samples: &[f32], sample_rate: u32) -> Result<Vec<f32>, Error> {
    if let Some(dbfs) = crate::infer::silent(samples) {
        let msg =
            format!("no sound to learn from (peak {dbfs:.0} dBFS): say the digit closer to the microphone");
        return Err(Error::Data(msg));
    }
    let clip = prepare_clip(fx, samples, sample_rate).map_err(|e| Error::Data(e.to_string()))?;
    check_sound(&clip).map_err(Error::Data)?;
    Ok(clip)
}

/// A prepared clip with something in it.
fn check_sound(clip: &[f32]) -> Result<(), String> {
    let peak = clip.iter().fold(0f32, |m, v| m.max(v.abs()));
    if clip.len() < 160 || !peak.is_finite() || peak == 0.0 {
        return Err("no sound to learn from (silent or empty)".into());
    }
    Ok(())
}

/// Adapt the model whose file bytes are `model` to prepared clips (see [`enrollment_clip`]) of `digits`;
/// `source` (what the clips are: speakers, files) goes into the file's `adaptation` record.
pub fn adapt_clips(
    model: &[u8],
    clips: &[Vec<f32>],
    digits: &[u8],
    source: serde_json::Value,
    cfg: &AdaptConfig,
    device: &Device,
) -> Result<Adapted> {
    let start = Instant::now();
    let varmaps = crate::model::file::load_varmaps_bytes(model, device)?;
    let mut adapted = retrain(varmaps, clips, digits, source, cfg, device)?;
    adapted.set_seconds(start.elapsed().as_secs_f64());
    Ok(adapted)
}

/// Retrain every network of a loaded model on `clips`; record `source` and the method.
fn retrain(
    (varmaps, mut meta): (Vec<VarMap>, ModelMeta),
    clips: &[Vec<f32>],
    digits: &[u8],
    source: serde_json::Value,
    cfg: &AdaptConfig,
    device: &Device,
) -> Result<Adapted> {
    crate::error::check(clips.len() == digits.len() && !clips.is_empty(), Error::Data, || {
        format!("{} clips for {} digits: give one digit per clip", clips.len(), digits.len())
    })?;
    let fx = FeatureExtractor::new(meta.features.clone())?;
    let labels: Vec<u32> = digits.iter().map(|&d| d as u32).collect();
    for (k, (varmap, norm)) in varmaps.iter().zip(norms(&meta)).enumerate() {
        let cfg = AdaptConfig { seed: cfg.seed.wrapping_add(k as u64), ..cfg.clone() };
        retrain_head(&meta, varmap, &fx, (clips, &labels), norm, &cfg, device)?;
    }
    let mut record = source;
    if let Some(r) = record.as_object_mut() {
        r.insert("method".into(), serde_json::to_value(cfg)?);
        r.insert("date".into(), crate::manifest::utc_date().into());
    }
    meta.adaptation = Some(record);
    Ok(Adapted { varmaps, meta, seconds: 0.0 })
}

/// Retrain one network's head on its trunk's features of the clips and their variants.
fn retrain_head(
    meta: &ModelMeta,
    varmap: &VarMap,
    fx: &FeatureExtractor,
    (clips, labels): (&[Vec<f32>], &[u32]),
    norm: (f32, f32),
    cfg: &AdaptConfig,
    device: &Device,
) -> Result<()> {
    let arch = &meta.architecture;
    let net = Cnn::new(arch, VarBuilder::from_varmap(varmap, DType::F32, device))?;
    // [N (variants + 1), 1, M, T] standardised images; variant 0 is the clean clip.
    let mut rows = Vec::new();
    for v in 0..=cfg.variants {
        let aug = if v == 0 { AugmentConfig::default() } else { cfg.augment.clone() };
        rows.extend(epoch_features(fx, clips, &aug, cfg.seed, v, norm));
    }
    let n = clips.len() * (cfg.variants + 1);
    let x = Tensor::from_vec(rows, (n, 1, arch.n_mels, arch.n_frames), device)?;
    let y: Vec<u32> = labels.iter().copied().cycle().take(n).collect();
    let vars = learning(varmap, arch, cfg.layers)?;
    // Constants: `copy` alone would stay on the graph and cancel the pull.
    let trained: Vec<Tensor> =
        vars.iter().map(|v| Ok(v.as_tensor().copy()?.detach())).collect::<candle_core::Result<_>>()?;
    let params = ParamsAdamW { lr: cfg.lr, weight_decay: 0.0, ..Default::default() };
    let mut opt = AdamW::new(vars.clone(), params)?;
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    // -> [N', D], constants: only the head learns.
    let h = net.trunk_t(&x, false)?.detach();
    let targets = Tensor::from_vec(y, n, device)?;
    for _ in 0..cfg.steps {
        let logits = net.head_t(&h, Some(&mut rng))?;
        let mut loss = candle_nn::loss::cross_entropy(&logits, &targets)?;
        for (v, w0) in vars.iter().zip(&trained) {
            loss = (loss + ((v.as_tensor() - w0)?.sqr()?.sum_all()? * cfg.l2sp)?)?;
        }
        opt.step(&mut loss.backward()?, Some(1.0))?;
    }
    Ok(())
}

/// The variables that learn.
fn learning(varmap: &VarMap, arch: &crate::model::CnnConfig, layers: Layers) -> Result<Vec<Var>> {
    let names = match layers {
        Layers::Head => arch.head_tensors(),
        Layers::Last => {
            let mut all = arch.head_tensors();
            all.split_off(all.len() - 2)
        }
    };
    let data = varmap.data().lock().map_err(|_| anyhow!("variable map lock poisoned"))?;
    names.iter().map(|n| data.get(n).cloned().ok_or_else(|| anyhow!("no `{n}`"))).collect()
}
