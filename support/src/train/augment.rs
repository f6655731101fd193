//! Data augmentation, applied on the fly: every epoch sees a fresh, seeded variant of every
//! training recording.
//!
//! The steps ([`AugmentConfig`]) run on the trimmed, peak-normalised 16 kHz clip, in this
//! order: speed perturbation (resampling by a random factor, which changes tempo and pitch
//! together, as Kaldi's and sox's `speed`), babble (other training clips), reverberation, noise
//! (white, pink, brown or hum), the telephone band, clipping ([`crate::dsp::conditions`]); then
//! the log-Mel image is computed as for clean input, its mel axis warped (VTLP) and
//! standardised. Every random number comes from a generator seeded by (seed, epoch, row): the
//! same seed gives the same epochs on any number of threads.

use std::path::PathBuf;

use anyhow::Result;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

pub use super::recipe::AugmentConfig;
use crate::dsp::conditions::{add_at_snr, coloured_noise, Colour, Condition};
use crate::dsp::effects::normalize;
use crate::dsp::features::FeatureExtractor;

/// The trimmed, peak-normalised clip of every file (paths relative to `root`), at the
/// extractor's rate and not yet padded: what augmentation starts from.
pub fn load_clips(fx: &FeatureExtractor, paths: &[PathBuf]) -> Result<Vec<Vec<f32>>> {
    let c = fx.config();
    paths
        .par_iter()
        .map(|path| {
            let audio = crate::dsp::audio::load_wav(&path, c.max_duration_s)?;
            prepare_clip(fx, &audio.samples, audio.sample_rate)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
        })
        .collect()
}

/// One signal at any rate as [`load_clips`] prepares a file: resampled, trimmed, peak-normalised.
pub fn prepare_clip(fx: &FeatureExtractor, samples: &[f32], sample_rate: u32) -> Result<Vec<f32>> {
    let c = fx.config();
    let mut resampled = Vec::new();
    fx.resample_into(samples, sample_rate, &mut resampled)?;
    let (start, end) = c.trim(&resampled);
    let mut clip = resampled[start..end].to_vec();
    normalize(&mut clip);
    Ok(clip)
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

/// One augmented, standardised log-Mel image of `clip`; `pool` holds the other training
/// clips babble draws from.
pub fn augment_one(
    fx: &FeatureExtractor,
    clip: &[f32],
    pool: &[Vec<f32>],
    cfg: &AugmentConfig,
    rng: &mut StdRng,
    (mean, std): (f32, f32),
) -> Vec<f32> {
    let c = fx.config();
    let y = if cfg.speed > 0.0 {
        speed(clip, rng.random_range(1.0 - cfg.speed..=1.0 + cfg.speed))
    } else {
        clip.to_vec()
    };
    let y = degrade(y, pool, cfg, c.sample_rate, rng);
    let mut img = if c.framing == crate::dsp::features::Framing::Stretch {
        // The frames follow the word.
        fx.log_mel_of_word(&y)
    } else {
        // The word at the start of its 1-s window.
        let len = y.len().min(c.clip_samples);
        let mut window = vec![0f32; c.clip_samples];
        window[..len].copy_from_slice(&y[..len]);
        fx.log_mel(&window)
    };
    if cfg.vtlp > 0.0 {
        img = warp_mel_axis(&img, c.n_mels, c.n_frames(), rng.random_range(1.0 - cfg.vtlp..=1.0 + cfg.vtlp));
    }
    let inv = 1.0 / std;
    img.iter_mut().for_each(|v| *v = (*v - mean) * inv);
    img
}

/// The waveform steps after speed: each with its probability, in a fixed order.
fn degrade(mut y: Vec<f32>, pool: &[Vec<f32>], cfg: &AugmentConfig, rate: u32, rng: &mut StdRng) -> Vec<f32> {
    let mut happens = |p: f32| p > 0.0 && rng.random::<f32>() < p;
    let (babble, reverb, noise) = (happens(cfg.babble_p), happens(cfg.reverb_p), happens(cfg.noise_p));
    let (telephone, clip) = (happens(cfg.telephone_p), happens(cfg.clip_p));
    let snr = |rng: &mut StdRng| rng.random_range(cfg.snr_min_db..=cfg.snr_max_db.max(cfg.snr_min_db));
    if babble && !pool.is_empty() {
        let others: Vec<&[f32]> = (0..5).map(|_| pool[rng.random_range(0..pool.len())].as_slice()).collect();
        let snr_db = snr(rng);
        y = Condition::Babble { snr_db }.apply(&y, rate, &others, rng);
    }
    if reverb {
        let rt60_s = rng.random_range(cfg.rt60_min_s..=cfg.rt60_max_s.max(cfg.rt60_min_s));
        y = Condition::Reverb { rt60_s }.apply(&y, rate, &[], rng);
    }
    if noise {
        let colour = [Colour::White, Colour::Pink, Colour::Brown, Colour::Hum][rng.random_range(0..4)];
        let n = coloured_noise(y.len(), colour, rate, rng);
        y = add_at_snr(&y, &n, snr(rng));
    }
    if telephone {
        y = Condition::Telephone.apply(&y, rate, &[], rng);
    }
    if clip {
        y = Condition::Clip { at: rng.random_range(0.2..=0.8) }.apply(&y, rate, &[], rng);
    }
    y
}

/// Vocal-tract-length perturbation on a log-Mel image (`n_mels x n_frames`, row-major): band
/// `m` takes the value at band `m / alpha`, linearly interpolated (the top band repeats).
pub fn warp_mel_axis(img: &[f32], n_mels: usize, n_frames: usize, alpha: f32) -> Vec<f32> {
    let mut out = vec![0f32; img.len()];
    for m in 0..n_mels {
        let src = (m as f32 / alpha).min((n_mels - 1) as f32);
        let (lo, f) = (src.floor() as usize, src.fract());
        let hi = (lo + 1).min(n_mels - 1);
        for t in 0..n_frames {
            out[m * n_frames + t] = img[lo * n_frames + t] * (1.0 - f) + img[hi * n_frames + t] * f;
        }
    }
    out
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
        o.copy_from_slice(&augment_one(fx, clip, clips, cfg, &mut rng_for(seed, epoch, i), norm));
    });
    out
}
