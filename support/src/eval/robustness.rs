//! How a model holds up away from clean recordings: its accuracy on the same recordings under
//! each condition of a fixed, seeded grid ([`crate::dsp::conditions::standard_grid`]), for
//! one or several models side by side (`audio-mnist robustness`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::Serialize;

use super::argmax;
use crate::data::dataset::{Dataset, Recording};
use crate::data::union::scan_all;
use crate::dsp::conditions::{standard_grid, Condition};
use crate::dsp::features::FeatureExtractor;
use crate::model::{load_model, LoadedModel};

/// `robustness.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Robustness {
    /// The model files, as given.
    pub models: Vec<String>,
    pub conditions: Vec<ConditionResult>,
    /// Recordings scored per model (its test speakers', or every one with `all`).
    pub files: BTreeMap<String, usize>,
    pub seed: u64,
}

/// One condition's accuracy for every model.
#[derive(Clone, Debug, Serialize)]
pub struct ConditionResult {
    pub name: String,
    pub condition: Condition,
    pub accuracy: BTreeMap<String, f64>,
}

/// Score every model on `data` under every condition of the grid: on each model's own test
/// speakers, or on every recording with `all`. `progress(done, total)` counts conditions.
pub fn robustness(
    models: &[PathBuf],
    data: &[PathBuf],
    all: bool,
    seed: u64,
    device: &Device,
    progress: &dyn Fn(usize, usize),
) -> Result<Robustness> {
    robustness_under(models, data, all, &standard_grid(), seed, device, progress)
}

/// [`robustness`] under the conditions of `grid` only.
pub fn robustness_under(
    models: &[PathBuf],
    data: &[PathBuf],
    all: bool,
    grid: &[Condition],
    seed: u64,
    device: &Device,
    progress: &dyn Fn(usize, usize),
) -> Result<Robustness> {
    let dataset = scan_all(data)?;
    let mut report = Robustness { models: Vec::new(), conditions: Vec::new(), files: BTreeMap::new(), seed };
    for c in grid {
        report.conditions.push(ConditionResult { name: c.name(), condition: *c, accuracy: BTreeMap::new() });
    }
    for (m, path) in models.iter().enumerate() {
        let name = path.display().to_string();
        let model = load_model(path, device)?;
        let chosen = recordings_for(&dataset, &model, all, path)?;
        let fx = FeatureExtractor::new(model.meta.features.clone())?;
        let clips = load_clips(&dataset, &chosen, fx.config().sample_rate)?;
        for (k, c) in grid.iter().enumerate() {
            progress(m * grid.len() + k, models.len() * grid.len());
            let acc = accuracy_under(&model, &fx, &chosen, &clips, c, seed ^ ((k as u64) << 32), device)?;
            report.conditions[k].accuracy.insert(name.clone(), acc);
        }
        report.files.insert(name.clone(), chosen.len());
        report.models.push(name);
    }
    progress(models.len() * grid.len(), models.len() * grid.len());
    Ok(report)
}

/// The recordings a model is scored on: its test speakers' (or all).
fn recordings_for<'a>(
    dataset: &'a Dataset,
    model: &LoadedModel,
    all: bool,
    path: &Path,
) -> Result<Vec<&'a Recording>> {
    let test: Vec<String> = if all {
        Vec::new()
    } else {
        let split = &model.meta.split["test"];
        serde_json::from_value(split.clone()).unwrap_or_default()
    };
    let chosen: Vec<&Recording> =
        dataset.recordings.iter().filter(|r| all || test.contains(&r.speaker)).collect();
    ensure!(
        !chosen.is_empty(),
        "{}: none of its test speakers {test:?} is in {}; pass --all to score every recording",
        path.display(),
        dataset.describe()
    );
    Ok(chosen)
}

/// Every chosen recording, mono at `rate` Hz, as recorded (not trimmed or normalised).
fn load_clips(dataset: &Dataset, chosen: &[&Recording], rate: u32) -> Result<Vec<Vec<f32>>> {
    chosen
        .par_iter()
        .map(|r| {
            let path = dataset.absolute(r);
            let audio = crate::dsp::audio::load_wav(&path, 60.0)?;
            Ok(crate::dsp::resample::resample(&audio.samples, audio.sample_rate, rate)?)
        })
        .collect()
}

/// Accuracy of `model` on `clips` under `condition`; file `i` gets its own generator from
/// (`seed`, `i`) and babble from five other recordings (of other speakers where there are).
fn accuracy_under(
    model: &LoadedModel,
    fx: &FeatureExtractor,
    chosen: &[&Recording],
    clips: &[Vec<f32>],
    condition: &Condition,
    seed: u64,
    device: &Device,
) -> Result<f64> {
    let rate = fx.config().sample_rate;
    let features: Vec<Option<Vec<f32>>> = (0..clips.len())
        .into_par_iter()
        .map(|i| {
            let mut rng = StdRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let draws: Vec<usize> = (0..20).map(|_| rng.random_range(0..clips.len())).collect();
            let voices = |other_speaker: bool| -> Vec<&[f32]> {
                let keep =
                    |j: &&usize| **j != i && (!other_speaker || chosen[**j].speaker != chosen[i].speaker);
                draws.iter().filter(keep).take(5).map(|&j| clips[j].as_slice()).collect()
            };
            let others = match voices(true) {
                v if v.is_empty() => voices(false),
                v => v,
            };
            let y = condition.apply(&clips[i], rate, &others, &mut rng);
            fx.extract_samples(&y, rate).ok()
        })
        .collect();
    let (m, t) = (fx.config().n_mels, fx.config().n_frames());
    let ok: Vec<(usize, &Vec<f32>)> =
        features.iter().enumerate().filter_map(|(i, f)| Some((i, f.as_ref()?))).collect();
    let mut correct = 0usize;
    for chunk in ok.chunks(256) {
        let x: Vec<f32> = chunk.iter().flat_map(|(_, f)| f.iter().copied()).collect();
        let x = Tensor::from_vec(x, (chunk.len(), 1, m, t), device)?;
        let p = model.model.probabilities(&x)?.to_vec2::<f32>()?;
        correct += chunk.iter().zip(&p).filter(|((i, _), p)| argmax(p) == chosen[*i].digit as usize).count();
    }
    // A recording whose features could not be computed counts as wrong.
    Ok(correct as f64 / clips.len().max(1) as f64)
}
