//! Inference from an exported `model.safetensors`: everything (architecture, feature config,
//! normalisation, class names) comes from the file; preprocessing is the training code's own.

pub mod bundled;
pub mod threshold;

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use serde::Serialize;

use crate::dsp::audio::{AudioError, AudioErrorKind};
use crate::dsp::features::FeatureExtractor;
use crate::eval::{argmax, NOT_A_DIGIT};
use crate::explain::{silence_db, Explainer, Method};
use crate::model::{load_model, pick_device, Classifier, ModelMeta};

pub use bundled::ModelChoice;

/// Recordings whose peak is below this (dBFS) are "no speech" rather than a guess.
pub const SILENCE_DBFS: f32 = -60.0;

/// One prediction.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    /// The digit, or `None`: not a digit.
    pub digit: Option<usize>,
    /// `"7"`, or `"not a digit"`.
    pub label: String,
    /// Probability of the answer: the digit's, or "not a digit"'s (its class's, or one minus
    /// the best digit's when that is under the threshold; 1 for a recording without sound).
    pub confidence: f32,
    /// Every class's probability (the ten digits, then "not a digit" when the model has that
    /// class); empty for a recording without sound.
    pub probabilities: Vec<f32>,
    /// Why it is not a digit: no sound, or the best digit under the threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Prediction {
    /// The open-set decision on class probabilities at `threshold` and the model's
    /// `reject_at` ([`decide`]).
    pub fn from_probabilities(probabilities: Vec<f32>, threshold: f32, reject_at: Option<f32>) -> Self {
        let best = argmax(&probabilities);
        let (digit, confidence, reason) = match decide(&probabilities, threshold, reject_at) {
            Some(d) => (Some(d), probabilities[d], None),
            None if probabilities.get(10).zip(reject_at).is_some_and(|(p, t)| *p >= t) => {
                let p = probabilities[10];
                (
                    None,
                    p,
                    Some(format!(
                        "\"not a digit\" at {p:.3}, over the model's threshold {}",
                        reject_at.unwrap_or(1.0)
                    )),
                )
            }
            None if best >= 10 => (None, probabilities[best], None),
            None => {
                (None, 1.0 - probabilities[best], Some(format!("best digit under the threshold {threshold}")))
            }
        };
        let label = digit.map_or_else(|| NOT_A_DIGIT.to_string(), |d| d.to_string());
        Self { digit, label, confidence, probabilities, reason }
    }

    /// A recording without sound: not a digit, and why.
    pub fn silence(peak_dbfs: f32) -> Self {
        let reason = Some(format!("no speech: peak {peak_dbfs:.1} dBFS, under {SILENCE_DBFS} dBFS"));
        Self { digit: None, label: NOT_A_DIGIT.into(), confidence: 1.0, probabilities: Vec::new(), reason }
    }

    /// The `k` most likely classes, best first: (name, probability).
    pub fn top(&self, k: usize) -> Vec<(String, f32)> {
        let names = crate::eval::class_names(self.probabilities.len());
        let mut v: Vec<(usize, f32)> = self.probabilities.iter().cloned().enumerate().collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v.into_iter().take(k).map(|(i, p)| (names[i].clone(), p)).collect()
    }
}

/// A prediction and the log-Mel image (dB) it was made from (`None`: no sound, no network).
pub type Answer = (Prediction, Option<Vec<f32>>);

/// A loaded model, ready to predict files or raw sample windows.
pub struct Predictor {
    model: Classifier,
    meta: ModelMeta,
    extractor: FeatureExtractor,
    device: Device,
    /// Reject when the best digit's probability is under this (0: the model's own decision).
    threshold: f32,
}

impl Predictor {
    /// Load a model file onto the best available device.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_on(path, &pick_device())
    }

    pub fn load_on(path: &Path, device: &Device) -> Result<Self> {
        let loaded = load_model(path, device)?;
        Self::new(loaded.model, loaded.meta, device)
            .map_err(|e| anyhow::anyhow!("model file {}: {e}", path.display()))
    }

    /// A predictor for networks already in memory (an adapted model) and their metadata.
    pub fn new(model: Classifier, meta: ModelMeta, device: &Device) -> Result<Self> {
        let extractor = FeatureExtractor::new(meta.features.clone())?;
        Ok(Self { model, meta, extractor, device: device.clone(), threshold: 0.0 })
    }

    /// Also answer "not a digit" when the best digit's probability is under `threshold`
    /// (overrides the model's own decision, which rejects only by its "not a digit" class).
    pub fn with_threshold(mut self, threshold: f32) -> Self {
        self.threshold = threshold;
        self
    }

    /// The threshold of [`Self::with_threshold`] (0: the model's own decision).
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// The model's own threshold on "not a digit" (`calibrate`; `None`: when that class wins).
    pub fn reject_at(&self) -> Option<f32> {
        self.meta.reject_threshold
    }

    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    pub fn model(&self) -> &Classifier {
        &self.model
    }

    pub fn device(&self) -> Device {
        self.device.clone()
    }

    /// Predict one WAV file.
    pub fn predict_file(&self, path: &Path) -> Result<Prediction, AudioError> {
        let mut out = self.predict_files(&[path.to_path_buf()]);
        out.pop().map(|(_, r)| r).unwrap_or_else(|| Err(AudioError::new(path, AudioErrorKind::Empty)))
    }

    /// Predict a mono signal at any sample rate (e.g. a 1-second window from a microphone).
    pub fn predict_samples(&self, samples: &[f32], sample_rate: u32) -> Result<Prediction, AudioErrorKind> {
        self.predict_samples_with_features(samples, sample_rate).map(|(p, _)| p)
    }

    /// [`Self::predict_samples`] with the log-Mel image (dB) the network saw (`None`: no sound).
    pub fn predict_samples_with_features(
        &self,
        samples: &[f32],
        sample_rate: u32,
    ) -> Result<Answer, AudioErrorKind> {
        if let Some(peak) = silent(samples) {
            return Ok((Prediction::silence(peak), None));
        }
        let features = self.extractor.extract_samples(samples, sample_rate)?;
        let mut p = self.forward(&[&features]).map_err(|e| AudioErrorKind::Model(e.to_string()))?;
        Ok((p.remove(0), Some(features)))
    }

    /// The model's own preprocessing.
    pub fn extractor(&self) -> &FeatureExtractor {
        &self.extractor
    }

    /// Predict many files: features in parallel, then batched forward passes. Results are in
    /// input order; a file that cannot be read gets its error and the rest go on.
    pub fn predict_files(&self, paths: &[PathBuf]) -> Vec<(PathBuf, Result<Prediction, AudioError>)> {
        let out = self.predict_files_with_features(paths);
        out.into_iter().map(|(p, r)| (p, r.map(|(prediction, _)| prediction))).collect()
    }

    /// [`Self::predict_files`], each answer with the log-Mel image (dB) the network saw
    /// (`None` for a recording without sound, answered without the network).
    pub fn predict_files_with_features(
        &self,
        paths: &[PathBuf],
    ) -> Vec<(PathBuf, Result<Answer, AudioError>)> {
        let features = self.images_of_files(paths);
        let ok: Vec<&[f32]> =
            features.iter().filter_map(|f| Some(f.as_ref().ok()?.as_ref().ok()?.as_slice())).collect();
        let mut predictions = match self.forward(&ok) {
            Ok(p) => p.into_iter(),
            Err(e) => {
                let msg = e.to_string();
                return paths
                    .iter()
                    .map(|p| (p.clone(), Err(AudioError::new(p, AudioErrorKind::Model(msg.clone())))))
                    .collect();
            }
        };
        paths
            .iter()
            .zip(features)
            .map(|(p, f)| {
                let r = match f {
                    Ok(Ok(image)) => predictions
                        .next()
                        .map(|pr| (pr, Some(image)))
                        .ok_or_else(|| AudioError::new(p, AudioErrorKind::Empty)),
                    Ok(Err(peak)) => Ok((Prediction::silence(peak), None)),
                    Err(e) => Err(e),
                };
                (p.clone(), r)
            })
            .collect()
    }

    /// Each file's log-Mel image (dB) as this model sees it, in parallel, without the
    /// network: `Ok(Err(peak))` for a recording without sound.
    pub fn images_of_files(&self, paths: &[PathBuf]) -> Vec<Result<Result<Vec<f32>, f32>, AudioError>> {
        paths
            .par_iter()
            .map(|p| {
                let audio = crate::dsp::audio::load_wav(p, self.extractor.config().max_duration_s)?;
                if let Some(peak) = silent(&audio.samples) {
                    return Ok(Err(peak));
                }
                self.extractor
                    .extract_samples(&audio.samples, audio.sample_rate)
                    .map(Ok)
                    .map_err(|k| AudioError::new(p, k))
            })
            .collect()
    }

    /// Relevance maps for this model ([`crate::explain`]), against the silent image.
    pub fn explainer(&self, method: Method) -> Result<Explainer> {
        Explainer::new(&self.model, silence_db(&self.meta.features), method, &self.device)
    }

    fn forward(&self, features: &[&[f32]]) -> Result<Vec<Prediction>> {
        let arch = &self.meta.architecture;
        let mut out = Vec::with_capacity(features.len());
        for chunk in features.chunks(64) {
            // Unstandardised: each network of the model applies its own mean and std.
            let x: Vec<f32> = chunk.concat();
            let x = Tensor::from_vec(x, (chunk.len(), 1, arch.n_mels, arch.n_frames), &self.device)?;
            for p in self.model.probabilities(&x)?.to_vec2::<f32>()? {
                out.push(Prediction::from_probabilities(p, self.threshold, self.meta.reject_threshold));
            }
        }
        Ok(out)
    }
}

/// The open-set decision: the most likely digit, or `None` ("not a digit") when the model's
/// "not a digit" class says so or the digit's probability is below `threshold`. That class
/// says so when its probability reaches `reject_at` (a threshold fitted for a stated share of
/// real digits refused, `calibrate`), or, without one, when it beats every digit.
pub fn decide(probabilities: &[f32], threshold: f32, reject_at: Option<f32>) -> Option<usize> {
    let digit = argmax(&probabilities[..probabilities.len().min(10)]);
    let refused = match (probabilities.get(10), reject_at) {
        (Some(&p), Some(t)) => p >= t,
        (Some(&p), None) => p > probabilities[digit],
        (None, _) => false,
    };
    (!refused && probabilities[digit] >= threshold).then_some(digit)
}

/// The peak (dBFS) of a recording with no sound, which is "not a digit" without asking the
/// network; `None` when there is sound.
pub fn silent(samples: &[f32]) -> Option<f32> {
    let peak = samples.iter().fold(0f32, |m, s| m.max(s.abs()));
    let dbfs = 20.0 * peak.max(1e-12).log10();
    (dbfs < SILENCE_DBFS).then_some(dbfs)
}

/// The WAV files named by `inputs`: files as given, folders searched recursively for `*.wav`
/// (sorted), and the entries that could not be searched (a symbolic-link loop, a folder
/// without permission) with the reason, so one bad entry does not stop the others. A folder
/// without any WAV file is an error naming it.
pub fn collect_inputs(inputs: &[PathBuf]) -> Result<(Vec<PathBuf>, Vec<(PathBuf, String)>)> {
    let (mut out, mut problems) = (Vec::new(), Vec::new());
    for input in inputs {
        if !input.is_dir() {
            out.push(input.clone());
            continue;
        }
        let before = out.len();
        for e in walkdir::WalkDir::new(input).follow_links(true).sort_by_file_name() {
            match e {
                Ok(e)
                    if e.file_type().is_file()
                        && e.path().extension().is_some_and(|x| x.eq_ignore_ascii_case("wav")) =>
                {
                    out.push(e.path().to_path_buf())
                }
                Ok(_) => {}
                Err(e) => {
                    let path = e.path().map_or_else(|| input.clone(), Path::to_path_buf);
                    let why = if e.loop_ancestor().is_some() {
                        "a symbolic-link loop".to_string()
                    } else {
                        e.to_string()
                    };
                    problems.push((path, why));
                }
            }
        }
        anyhow::ensure!(
            out.len() > before || !problems.is_empty(),
            "no .wav files in folder {}",
            input.display()
        );
    }
    Ok((out, problems))
}
