//! Valid inputs the fuzzer starts from: WAV files in every encoding the reader accepts, small
//! model files of each kind, raw PCM streams. Small on purpose: the mutations then land in the
//! headers, where parsers go wrong, rather than in sample data.

use std::io::Cursor;

use anyhow::Result;
use candle_core::Device;

use crate::dsp::features::FeatureConfig;
use crate::model::{init_varmap, save_ensemble, CnnConfig, ModelMeta};

/// A word-like sound: a 0.3 s vowel-ish tone with a rise and fall, then silence.
pub fn word(rate: u32, seconds: f32) -> Vec<f32> {
    let n = (rate as f32 * seconds) as usize;
    let voiced = (rate as f32 * 0.3) as usize;
    (0..n)
        .map(|i| {
            let t = i as f32 / rate as f32;
            let env = if i < voiced { (std::f32::consts::PI * i as f32 / voiced as f32).sin() } else { 0.0 };
            0.5 * env
                * ((2.0 * std::f32::consts::PI * 220.0 * t).sin()
                    + 0.4 * (2.0 * std::f32::consts::PI * 700.0 * t).sin())
        })
        .collect()
}

/// One WAV file's bytes, `samples` written in `spec`'s encoding (all channels the same).
pub fn wav_bytes(spec: hound::WavSpec, samples: &[f32]) -> Result<Vec<u8>> {
    let mut out = Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut out, spec)?;
    let max = ((1i64 << (spec.bits_per_sample.max(1) - 1)) - 1) as f32;
    for &s in samples {
        for _ in 0..spec.channels {
            match spec.sample_format {
                hound::SampleFormat::Float => w.write_sample(s)?,
                hound::SampleFormat::Int if spec.bits_per_sample == 8 => w.write_sample((s * max) as i8)?,
                hound::SampleFormat::Int if spec.bits_per_sample == 16 => w.write_sample((s * max) as i16)?,
                hound::SampleFormat::Int => w.write_sample((s * max) as i32)?,
            }
        }
    }
    w.finalize()?;
    Ok(out.into_inner())
}

/// WAV seeds: 8/16/24/32-bit integer and 32-bit float, mono and stereo, 8 to 48 kHz.
pub fn wav_seeds() -> Result<Vec<Vec<u8>>> {
    use hound::SampleFormat::{Float, Int};
    let cases = [
        (8000, 1, 16, Int),
        (16000, 2, 16, Int),
        (8000, 1, 8, Int),
        (11025, 1, 24, Int),
        (48000, 1, 32, Float),
        (22050, 2, 32, Int),
    ];
    cases
        .into_iter()
        .map(|(sample_rate, channels, bits_per_sample, sample_format)| {
            let spec = hound::WavSpec { channels, sample_rate, bits_per_sample, sample_format };
            // Short clips keep the inputs small: the headers get the mutations.
            wav_bytes(spec, &word(sample_rate, 0.35))
        })
        .collect()
}

/// A small untrained model file of `arch` (weights do not matter to a parser).
pub fn model_bytes(arch: CnnConfig, members: usize, features: FeatureConfig) -> Result<Vec<u8>> {
    let varmaps = (0..members)
        .map(|k| init_varmap(&arch, k as u64, &Device::Cpu).map(|v| v.0))
        .collect::<Result<Vec<_>>>()?;
    let classes =
        (0..arch.classes).map(|d| if d < 10 { d.to_string() } else { "not a digit".into() }).collect();
    // A calibrated "not a digit" threshold where the class exists, so its parsing is fuzzed.
    let reject_threshold = (arch.classes == 11).then_some(0.9);
    let meta = ModelMeta {
        architecture: arch,
        features,
        mean: -40.0,
        std: 15.0,
        members: if members > 1 { vec![(-40.0, 15.0); members] } else { vec![] },
        temperatures: if members > 1 { vec![1.5; members] } else { vec![] },
        classes,
        recipe: None,
        split: serde_json::json!({ "test": ["somebody"] }),
        metrics: serde_json::json!({}),
        reject_threshold,
        adaptation: None,
    };
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("model.safetensors");
    save_ensemble(&path, &varmaps.iter().collect::<Vec<_>>(), &meta)?;
    Ok(std::fs::read(path)?)
}

/// A model's features, shrunk to `n_mels` bands (fuzzing needs speed, not accuracy).
pub fn small_features(n_mels: usize) -> FeatureConfig {
    FeatureConfig { n_mels, ..FeatureConfig::default() }
}

/// Model seeds: one network, an ensemble with temperatures, eleven classes with liftering and
/// a "not a digit" threshold.
pub fn model_seeds() -> Result<Vec<Vec<u8>>> {
    let arch = |channels: Vec<usize>, classes, lifter| CnnConfig {
        n_mels: 16,
        n_frames: 32,
        channels,
        hidden: 8,
        classes,
        lifter,
        ..CnnConfig::default()
    };
    Ok(vec![
        model_bytes(arch(vec![2, 4], 10, 0), 1, small_features(16))?,
        model_bytes(arch(vec![2, 2, 4], 11, 8), 2, small_features(16))?,
    ])
}

/// Raw PCM seeds as `listen` reads them: a word, a pause, a word, in s16le and f32le.
pub fn pcm_seeds() -> Vec<Vec<u8>> {
    let rate = 8000;
    let mut signal = word(rate, 0.6);
    signal.extend(word(rate, 0.6));
    let s16: Vec<u8> = signal.iter().flat_map(|&s| ((s * 32767.0) as i16).to_le_bytes()).collect();
    let f32: Vec<u8> = signal.iter().flat_map(|&s| s.to_le_bytes()).collect();
    vec![s16, f32]
}
