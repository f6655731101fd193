//! Data augmentation, applied on the fly: every epoch sees a fresh, seeded variant of every
//! training recording.
//!
//! The steps ([`AugmentConfig`]) run on the trimmed, peak-normalised 16 kHz clip, in this
//! order: speed perturbation (resampling by a random factor, which changes tempo and pitch
//! together, as Kaldi's and sox's `speed`), additive white noise at a random SNR; then the
//! log-Mel image is computed as for clean input and standardised. Every random number comes
//! from a generator seeded by (seed, epoch, row): the same seed gives the same epochs on any
//! number of threads.

use std::path::Path;

use anyhow::Result;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

pub use super::recipe::AugmentConfig;
use crate::dsp::features::{normalize, trim_bounds, FeatureExtractor};

/// The trimmed, peak-normalised clip of every file (paths relative to `root`), at the
/// extractor's rate and not yet padded: what augmentation starts from.
pub fn load_clips(fx: &FeatureExtractor, root: &Path, files: &[&str]) -> Result<Vec<Vec<f32>>> {
    let c = fx.config();
    files
        .par_iter()
        .map(|f| {
            let path = root.join(f);
            let audio = crate::dsp::audio::load_wav(&path, c.max_duration_s)?;
            let mut resampled = Vec::new();
            crate::dsp::audio::resample_into(
                &audio.samples,
                audio.sample_rate,
                c.sample_rate,
                &mut resampled,
            )
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
    let mut img = if c.framing == crate::dsp::features::Framing::Stretch {
        // The frames follow the word: the noise covers the word.
        add_noise(&mut y, cfg, rng);
        fx.log_mel_of_word(&y)
    } else {
        // The word at the start of its 1-s window, noise over the whole window.
        let len = y.len().min(c.clip_samples);
        let mut window = vec![0f32; c.clip_samples];
        window[..len].copy_from_slice(&y[..len]);
        if let Some(sigma) = noise_sigma(&y[..len], cfg, rng) {
            window.iter_mut().for_each(|v| *v += sigma * gaussian(rng));
        }
        fx.log_mel(&window)
    };
    let inv = 1.0 / std;
    img.iter_mut().for_each(|v| *v = (*v - mean) * inv);
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
