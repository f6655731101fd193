//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared/data` beside the checkout (or `$AUDIO_MNIST_SHARED_DATA`). When it is absent the
/// calling test is skipped with a printed reason, unless `AUDIO_MNIST_REQUIRE_SHARED=1`
/// (set by `.ci/run`), which turns the absence into a failure.
pub fn shared_data() -> Option<PathBuf> {
    let dir = std::env::var_os("AUDIO_MNIST_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    if dir.join("fsdd/recordings").is_dir() {
        return Some(dir);
    }
    let required = std::env::var("AUDIO_MNIST_REQUIRE_SHARED").is_ok_and(|v| v == "1");
    assert!(!required, "AUDIO_MNIST_REQUIRE_SHARED=1 but shared data is missing at {}", dir.display());
    eprintln!("SKIPPED: shared data not found at {} (set AUDIO_MNIST_SHARED_DATA)", dir.display());
    None
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Write a 16-bit mono WAV.
pub fn write_wav(path: &std::path::Path, sample_rate: u32, samples: &[f32]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for s in samples {
        w.write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16).unwrap();
    }
    w.finalize().unwrap();
}

/// A vowel-like test tone: a few harmonics under an envelope, surrounded by silence.
pub fn tone(sample_rate: u32, seconds: f32, f0: f32) -> Vec<f32> {
    let n = (sample_rate as f32 * seconds) as usize;
    (0..n)
        .map(|i| {
            let t = i as f32 / sample_rate as f32;
            let env = if t > seconds * 0.25 && t < seconds * 0.75 { 0.6 } else { 0.0 };
            env * (1..5)
                .map(|h| (2.0 * std::f32::consts::PI * f0 * h as f32 * t).sin() / h as f32)
                .sum::<f32>()
        })
        .collect()
}

/// 3 speakers x 10 digits x 4 takes, 8 kHz; each digit its own pitch, each speaker a shift.
pub fn tone_dataset(root: &std::path::Path) {
    tone_speakers(&root.join("recordings"), &["ann", "bob", "cat"], 4);
}

/// `speakers` x 10 digits x `takes` tones, 8 kHz, in `dir` as `{digit}_{speaker}_{take}.wav`.
pub fn tone_speakers(dir: &std::path::Path, speakers: &[&str], takes: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for (s, speaker) in speakers.iter().enumerate() {
        for digit in 0..10 {
            for take in 0..takes {
                let f0 = 110.0 + 35.0 * digit as f32 + 6.0 * s as f32 + 2.0 * take as f32;
                let samples = tone(8000, 0.5, f0);
                write_wav(&dir.join(format!("{digit}_{speaker}_{take}.wav")), 8000, &samples);
            }
        }
    }
}

/// A small model of [`tone_dataset`] (`dir/data`) trained by the binary, at
/// `dir/run/model.safetensors` (test speaker `cat`).
pub fn tone_model(dir: &std::path::Path) -> PathBuf {
    tone_dataset(&dir.join("data"));
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_audio-mnist"))
        .args([
            "train",
            "--recipe",
            "seed",
            "--epochs",
            "3",
            "--test-speakers",
            "cat",
            "--val-speakers",
            "bob",
        ])
        .arg("--data")
        .arg(dir.join("data"))
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .arg("--out")
        .arg(dir.join("run"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    dir.join("run/model.safetensors")
}

/// `dan`: [`tone_dataset`]'s digits shifted by half the step between two digits (a voice
/// the tone model mistakes), 6 takes each, in `dir/dan`.
pub fn new_voice(dir: &std::path::Path) -> PathBuf {
    let root = dir.join("dan");
    std::fs::create_dir_all(&root).unwrap();
    for digit in 0..10 {
        for take in 0..6 {
            let f0 = 110.0 + 35.0 * digit as f32 + 19.0 + 1.5 * take as f32;
            write_wav(&root.join(format!("{digit}_dan_{take}.wav")), 8000, &tone(8000, 0.5, f0));
        }
    }
    root
}

/// Words of speaker `cat` (digits 3, 1, 4, 1, 5) with pauses, 8 kHz.
pub fn tone_sequence() -> Vec<f32> {
    let mut x = vec![0f32; 4000];
    for (k, d) in [3, 1, 4, 1, 5].into_iter().enumerate() {
        x.extend(tone(8000, 0.5, 110.0 + 35.0 * d as f32 + 12.0));
        x.extend(vec![0f32; 2000 + 700 * k]);
    }
    x
}
