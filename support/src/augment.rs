//! Data augmentation, applied on the fly: every epoch sees a fresh, seeded variant of every
//! training recording.
//!
//! Waveform steps run on the trimmed, peak-normalised 16 kHz clip, in this order: speed
//! perturbation (resampling by a random factor, which changes tempo and pitch together, as
//! Kaldi's and sox's `speed`), gain, time shift (the clip starts later in its 1-s window),
//! additive white noise at a random SNR; then the log-Mel image is computed as for clean input,
//! standardised, and SpecAugment masks bands and frames. Every random number comes from a
//! generator seeded by (seed, epoch, row): the same seed gives the same epochs on any number of
//! threads.
//!
//! Note on gain: the features are peak-normalised and referenced to their maximum
//! (`power_to_db(ref=np.max)`), so a gain alone changes nothing; it only moves the signal
//! against the noise floor added after it.

use std::path::Path;

use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::features::{normalize, trim_bounds, FeatureExtractor};

/// What to augment, and how much. A zero turns a step off.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    /// Speed perturbation: factor uniform in `[1 - speed, 1 + speed]`.
    pub speed: f32,
    /// Gain uniform in `[-gain_db, +gain_db]` dB.
    pub gain_db: f32,
    /// Time shift: the clip starts up to `shift_s` seconds into its window.
    pub shift_s: f32,
    /// Probability of adding white noise, at an SNR uniform in `[snr_min_db, snr_max_db]`.
    pub noise_p: f32,
    pub snr_min_db: f32,
    pub snr_max_db: f32,
    /// Random equaliser (a microphone's or room's colouring): a smooth gain curve over the
    /// mel bands, the sum of the 1st-4th cosines over the band axis with amplitudes uniform in
    /// `[-eq_db, eq_db]` dB each, added to the log-Mel image.
    #[serde(default)]
    pub eq_db: f32,
    /// SpecAugment: `masks` frequency masks of up to `freq_mask` mel bands and `masks` time
    /// masks of up to `time_mask` frames, set to 0 (the mean after standardisation).
    pub masks: usize,
    pub freq_mask: usize,
    pub time_mask: usize,
}

impl Default for AugmentConfig {
    /// Nothing augmented (the seed recipe).
    fn default() -> Self {
        Self {
            speed: 0.0,
            gain_db: 0.0,
            shift_s: 0.0,
            noise_p: 0.0,
            snr_min_db: 10.0,
            snr_max_db: 40.0,
            eq_db: 0.0,
            masks: 0,
            freq_mask: 0,
            time_mask: 0,
        }
    }
}

/// Names accepted by [`AugmentConfig::only`] and `--augment`.
pub const STEPS: [&str; 6] = ["speed", "gain", "shift", "noise", "eq", "specaugment"];

impl AugmentConfig {
    /// Every step on, at the strengths of `--recipe best`.
    pub fn all() -> Self {
        Self {
            speed: 0.15,
            gain_db: 6.0,
            shift_s: 0.15,
            noise_p: 0.5,
            snr_min_db: 10.0,
            snr_max_db: 40.0,
            eq_db: 3.0,
            masks: 2,
            freq_mask: 16,
            time_mask: 4,
        }
    }

    pub fn is_off(&self) -> bool {
        self.speed == 0.0
            && self.gain_db == 0.0
            && self.shift_s == 0.0
            && self.noise_p == 0.0
            && self.eq_db == 0.0
            && (self.masks == 0 || (self.freq_mask == 0 && self.time_mask == 0))
    }

    /// Only the named steps of `self` (comma-separated list of [`STEPS`], or `none`).
    pub fn only(&self, list: &str) -> Result<Self> {
        let mut out = Self { snr_min_db: self.snr_min_db, snr_max_db: self.snr_max_db, ..Self::default() };
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty() && *s != "none") {
            match name {
                "speed" => out.speed = self.speed,
                "gain" => out.gain_db = self.gain_db,
                "shift" => out.shift_s = self.shift_s,
                "noise" => out.noise_p = self.noise_p,
                "eq" => out.eq_db = self.eq_db,
                "specaugment" => {
                    (out.masks, out.freq_mask, out.time_mask) = (self.masks, self.freq_mask, self.time_mask)
                }
                other => bail!("unknown augmentation {other:?}; known: {} (or none)", STEPS.join(", ")),
            }
        }
        Ok(out)
    }

    /// Names of the steps that are on.
    pub fn names(&self) -> Vec<&'static str> {
        let on = [
            self.speed > 0.0,
            self.gain_db > 0.0,
            self.shift_s > 0.0,
            self.noise_p > 0.0,
            self.eq_db > 0.0,
            self.masks > 0 && (self.freq_mask > 0 || self.time_mask > 0),
        ];
        STEPS.iter().zip(on).filter(|(_, on)| *on).map(|(n, _)| *n).collect()
    }
}

/// The trimmed, peak-normalised clip of every file (paths relative to `root`), at the
/// extractor's rate and not yet padded: what augmentation starts from.
pub fn load_clips(fx: &FeatureExtractor, root: &Path, files: &[&str]) -> Result<Vec<Vec<f32>>> {
    let c = fx.config();
    files
        .par_iter()
        .map(|f| {
            let path = root.join(f);
            let audio = crate::audio::load_wav(&path, c.max_duration_s)?;
            let mut resampled = Vec::new();
            crate::audio::resample_into(&audio.samples, audio.sample_rate, c.sample_rate, &mut resampled)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let (start, end) = trim_bounds(&resampled, c.trim_top_db, c.trim_frame_length, c.trim_hop_length);
            let mut clip = resampled[start..end].to_vec();
            normalize(&mut clip);
            Ok(clip)
        })
        .collect()
}

/// A generator for one (seed, epoch, row), independent of every other.
fn rng_for(seed: u64, epoch: usize, row: usize) -> StdRng {
    let mix = seed
        ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (row as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    StdRng::seed_from_u64(mix)
}

/// Linear-interpolation resampling by `factor` (> 1 plays faster: a shorter clip).
fn speed(y: &[f32], factor: f32) -> Vec<f32> {
    let n = ((y.len() as f32) / factor).floor().max(1.0) as usize;
    (0..n)
        .map(|k| {
            let t = k as f32 * factor;
            let i = t.floor() as usize;
            let f = t - i as f32;
            let a = y.get(i).copied().unwrap_or(0.0);
            let b = y.get(i + 1).copied().unwrap_or(a);
            a + (b - a) * f
        })
        .collect()
}

/// A standard normal number (Box-Muller).
fn gaussian(rng: &mut StdRng) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// One augmented, standardised log-Mel image of `clip`.
pub fn augment_one(
    fx: &FeatureExtractor,
    clip: &[f32],
    cfg: &AugmentConfig,
    rng: &mut StdRng,
    (mean, std): (f32, f32),
) -> Vec<f32> {
    let c = fx.config();
    let mut y = if cfg.speed > 0.0 {
        speed(clip, rng.random_range(1.0 - cfg.speed..=1.0 + cfg.speed))
    } else {
        clip.to_vec()
    };
    if cfg.gain_db > 0.0 {
        let g = 10f32.powf(rng.random_range(-cfg.gain_db..=cfg.gain_db) / 20.0);
        y.iter_mut().for_each(|v| *v *= g);
    }
    if c.framing == crate::features::Framing::Stretch {
        // The frames follow the word: no room to shift it in, and the noise covers the word.
        add_noise(&mut y, cfg, rng);
        let mut img = fx.log_mel_of_word(&y);
        standardise_and_mask(&mut img, c.n_mels, c.n_frames(), cfg, rng, (mean, std));
        return img;
    }
    let len = y.len().min(c.clip_samples);
    let room = c.clip_samples - len;
    let offset = if cfg.shift_s > 0.0 && room > 0 {
        rng.random_range(0..=room.min((cfg.shift_s * c.sample_rate as f32) as usize))
    } else {
        0
    };
    let mut window = vec![0f32; c.clip_samples];
    window[offset..offset + len].copy_from_slice(&y[..len]);
    if let Some(sigma) = noise_sigma(&y[..len], cfg, rng) {
        window.iter_mut().for_each(|v| *v += sigma * gaussian(rng));
    }
    let mut img = fx.log_mel(&window);
    standardise_and_mask(&mut img, c.n_mels, c.n_frames(), cfg, rng, (mean, std));
    img
}

/// With probability `noise_p`, the standard deviation of white noise at a random SNR
/// against the power of `y`.
fn noise_sigma(y: &[f32], cfg: &AugmentConfig, rng: &mut StdRng) -> Option<f32> {
    if cfg.noise_p > 0.0 && rng.random::<f32>() < cfg.noise_p && !y.is_empty() {
        let power = y.iter().map(|v| v * v).sum::<f32>() / y.len() as f32;
        let snr = rng.random_range(cfg.snr_min_db..=cfg.snr_max_db.max(cfg.snr_min_db));
        Some((power / 10f32.powf(snr / 10.0)).sqrt())
    } else {
        None
    }
}

fn add_noise(y: &mut [f32], cfg: &AugmentConfig, rng: &mut StdRng) {
    if let Some(sigma) = noise_sigma(y, cfg, rng) {
        y.iter_mut().for_each(|v| *v += sigma * gaussian(rng));
    }
}

/// `(x - mean) / std`, then the SpecAugment masks.
fn standardise_and_mask(
    img: &mut [f32],
    m: usize,
    t: usize,
    cfg: &AugmentConfig,
    rng: &mut StdRng,
    (mean, std): (f32, f32),
) {
    if cfg.eq_db > 0.0 {
        let amp: Vec<f32> = (1..=4).map(|_| rng.random_range(-cfg.eq_db..=cfg.eq_db)).collect();
        for (band, row) in img.chunks_exact_mut(t).enumerate() {
            let x = std::f32::consts::PI * (band as f32 + 0.5) / m as f32;
            let gain: f32 = amp.iter().enumerate().map(|(q, a)| a * ((q + 1) as f32 * x).cos()).sum();
            row.iter_mut().for_each(|v| *v += gain);
        }
    }
    let inv = 1.0 / std;
    img.iter_mut().for_each(|v| *v = (*v - mean) * inv);
    for _ in 0..cfg.masks {
        if cfg.freq_mask > 0 {
            let w = rng.random_range(0..=cfg.freq_mask.min(m));
            let f0 = rng.random_range(0..=m - w);
            img[f0 * t..(f0 + w) * t].fill(0.0);
        }
        if cfg.time_mask > 0 {
            let w = rng.random_range(0..=cfg.time_mask.min(t));
            let t0 = rng.random_range(0..=t - w);
            for row in img.chunks_exact_mut(t) {
                row[t0..t0 + w].fill(0.0);
            }
        }
    }
}

/// Standardised features `N x n_mels x n_frames` of every clip for one epoch.
pub fn epoch_features(
    fx: &FeatureExtractor,
    clips: &[Vec<f32>],
    cfg: &AugmentConfig,
    seed: u64,
    epoch: usize,
    norm: (f32, f32),
) -> Vec<f32> {
    let len = fx.config().feature_len();
    let mut out = vec![0f32; clips.len() * len];
    out.par_chunks_mut(len).zip(clips.par_iter()).enumerate().for_each(|(i, (o, clip))| {
        o.copy_from_slice(&augment_one(fx, clip, cfg, &mut rng_for(seed, epoch, i), norm));
    });
    out
}
