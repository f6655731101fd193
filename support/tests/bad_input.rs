//! No input file can make the pipeline panic or produce NaN: every broken file gives a clear
//! per-file error naming the file and the reason, and a dataset run goes on with the rest.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use support::data::extract::{extract_dataset, no_progress};
use support::dsp::audio::AudioErrorKind;
use support::{load_wav, scan, FeatureConfig, FeatureExtractor};

fn fx() -> FeatureExtractor {
    FeatureExtractor::new(FeatureConfig::default()).unwrap()
}

fn write_spec(path: &Path, spec: hound::WavSpec, n: usize, f: impl Fn(usize) -> f64) {
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..n * spec.channels as usize {
        let v = f(i / spec.channels as usize);
        match (spec.sample_format, spec.bits_per_sample) {
            (hound::SampleFormat::Float, _) => w.write_sample(v as f32).unwrap(),
            (_, 8) => w.write_sample((v * 127.0) as i8).unwrap(),
            (_, 16) => w.write_sample((v * 32767.0) as i16).unwrap(),
            (_, bits) => w.write_sample((v * ((1i64 << (bits - 1)) - 1) as f64) as i32).unwrap(),
        }
    }
    w.finalize().unwrap();
}

fn spec(channels: u16, sample_rate: u32, bits: u16, float: bool) -> hound::WavSpec {
    let sample_format = if float { hound::SampleFormat::Float } else { hound::SampleFormat::Int };
    hound::WavSpec { channels, sample_rate, bits_per_sample: bits, sample_format }
}

/// A RIFF/WAVE header by hand, for formats hound will not write.
fn raw_wav(format_tag: u16, channels: u16, rate: u32, bits: u16, data: &[u8]) -> Vec<u8> {
    let block = channels * bits.div_ceil(8);
    let mut v = Vec::new();
    v.extend(b"RIFF");
    v.extend(&(36 + data.len() as u32).to_le_bytes());
    v.extend(b"WAVEfmt ");
    v.extend(&16u32.to_le_bytes());
    v.extend(&format_tag.to_le_bytes());
    v.extend(&channels.to_le_bytes());
    v.extend(&rate.to_le_bytes());
    v.extend(&(rate * block as u32).to_le_bytes());
    v.extend(&block.to_le_bytes());
    v.extend(&bits.to_le_bytes());
    v.extend(b"data");
    v.extend(&(data.len() as u32).to_le_bytes());
    v.extend(data);
    v
}

fn tone(i: usize, rate: u32) -> f64 {
    let t = i as f64 / rate as f64;
    let env = if (0.2..0.6).contains(&t) { 0.5 } else { 0.0 };
    env * (2.0 * std::f64::consts::PI * 440.0 * t).sin()
}

/// The broken corpus: (file name, bytes or writer, expected error kind check).
fn broken_corpus(dir: &Path) -> Vec<(PathBuf, fn(&AudioErrorKind) -> bool)> {
    let mut out: Vec<(PathBuf, fn(&AudioErrorKind) -> bool)> = Vec::new();
    let mut put = |name: &str, bytes: &[u8], check: fn(&AudioErrorKind) -> bool| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        out.push((p, check));
    };
    put("0_zero_0.wav", b"", |k| matches!(k, AudioErrorKind::NotWav(_) | AudioErrorKind::Truncated(_)));
    put("1_text_0.wav", b"this is not audio, just a text file renamed to .wav\n", |k| {
        matches!(k, AudioErrorKind::NotWav(_))
    });
    let garbage: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    put("2_garbage_0.wav", &garbage, |k| matches!(k, AudioErrorKind::NotWav(_)));
    let pcm: Vec<u8> = (0..16000i16).flat_map(|i| (i.wrapping_mul(37)).to_le_bytes()).collect();
    let full = raw_wav(1, 1, 16000, 16, &pcm);
    put("3_truncated_0.wav", &full[..full.len() / 2], |k| matches!(k, AudioErrorKind::Truncated(_)));
    put("4_headeronly_0.wav", &full[..30], |k| {
        matches!(k, AudioErrorKind::Truncated(_) | AudioErrorKind::NotWav(_))
    });
    put("5_adpcm_0.wav", &raw_wav(2, 1, 16000, 4, &pcm[..4000]), |k| {
        matches!(k, AudioErrorKind::Unsupported(_) | AudioErrorKind::NotWav(_))
    });
    put("6_empty_0.wav", &raw_wav(1, 1, 16000, 16, &[]), |k| matches!(k, AudioErrorKind::Empty));
    put("7_rate0_0.wav", &raw_wav(1, 1, 0, 16, &pcm), |k| {
        matches!(k, AudioErrorKind::Unsupported(_) | AudioErrorKind::NotWav(_))
    });
    put("8_float64_0.wav", &raw_wav(3, 1, 16000, 64, &pcm), |k| {
        matches!(k, AudioErrorKind::Unsupported(_) | AudioErrorKind::NotWav(_))
    });
    let nan: Vec<u8> = (0..8000).flat_map(|i| if i == 4000 { f32::NAN } else { 0.1 }.to_le_bytes()).collect();
    put("9_nan_0.wav", &raw_wav(3, 1, 16000, 32, &nan), |k| matches!(k, AudioErrorKind::NonFinite));
    // 10 minutes of 8 kHz audio: refused from the header, before decoding
    let long = dir.join("9_long_0.wav");
    write_spec(&long, spec(1, 8000, 16, false), 8000 * 600, |i| tone(i % 8000, 8000));
    out.push((long, |k| matches!(k, AudioErrorKind::TooLong { .. })));
    std::fs::create_dir(dir.join("8_folder_0.wav")).unwrap();
    out.push((dir.join("8_folder_0.wav"), |k| matches!(k, AudioErrorKind::Io(_))));
    out.push((dir.join("7_missing_0.wav"), |k| matches!(k, AudioErrorKind::Io(_))));
    out
}

#[test]
fn every_broken_file_gives_a_clear_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let fx = fx();
    for (path, check) in broken_corpus(dir.path()) {
        let err = fx.extract_file(&path).expect_err(&format!("{} should fail", path.display()));
        let msg = err.to_string();
        assert!(check(&err.kind), "{}: unexpected kind {:?}", path.display(), err.kind);
        assert!(msg.contains(&*path.file_name().unwrap().to_string_lossy()), "message lacks the file: {msg}");
        assert!(msg.len() > path.display().to_string().len() + 5, "message lacks a reason: {msg}");
    }
}

#[test]
fn dataset_run_skips_broken_files_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let broken = broken_corpus(dir.path());
    for take in 0..3 {
        write_spec(&dir.path().join(format!("5_good_{take}.wav")), spec(1, 8000, 16, false), 8000, |i| {
            tone(i, 8000)
        });
    }
    // a silent file is usable: all-zero features, not NaN
    write_spec(&dir.path().join("4_silent_0.wav"), spec(1, 16000, 16, false), 16000, |_| 0.0);
    std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
    let ds = scan(dir.path()).unwrap();
    let out = extract_dataset(&fx(), &ds, &no_progress);
    assert_eq!(out.kept.len(), 4, "good files kept: {:?}", out.skipped);
    let present = broken.iter().filter(|(p, _)| p.is_file()).count();
    assert_eq!(out.skipped.len(), present);
    assert!(out.features.iter().all(|v| v.is_finite()));
    assert!(ds.skipped.iter().any(|s| s.file == "notes.txt"));
}

#[test]
fn silent_and_near_silent_inputs_give_finite_features() {
    let fx = fx();
    for amp in [0.0f32, 1e-30, 1e-9, 1.0 / 32768.0] {
        let y: Vec<f32> = (0..16000).map(|i| if i % 2 == 0 { amp } else { -amp }).collect();
        let f = fx.extract_samples(&y, 16000).unwrap();
        assert!(f.iter().all(|v| v.is_finite() && *v <= 0.0 && *v >= -80.0), "amp {amp}");
    }
}

#[test]
fn all_supported_formats_and_rates_decode_to_the_same_features() {
    let dir = tempfile::tempdir().unwrap();
    let fx = fx();
    // reference: the tone generated directly at 16 kHz, 16-bit mono
    let reference_path = dir.path().join("ref.wav");
    write_spec(&reference_path, spec(1, 16000, 16, false), 16000, |i| tone(i, 16000));
    let reference = fx.extract_file(&reference_path).unwrap();
    let cases = [
        spec(1, 8000, 16, false),
        spec(1, 22050, 16, false),
        spec(1, 44100, 24, false),
        spec(2, 48000, 16, false),
        spec(1, 48000, 8, false),
        spec(1, 48000, 32, false),
        spec(2, 96000, 32, true),
        spec(1, 11025, 16, false),
    ];
    for s in cases {
        let p = dir.path().join(format!(
            "{}_{}_{}_{:?}.wav",
            s.channels, s.sample_rate, s.bits_per_sample, s.sample_format
        ));
        write_spec(&p, s, s.sample_rate as usize, |i| tone(i, s.sample_rate));
        let audio = load_wav(&p, 60.0).unwrap();
        assert_eq!(audio.samples.len(), s.sample_rate as usize);
        let peak = audio.samples.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!((peak - 0.5).abs() < 0.02, "{s:?}: peak {peak} (scaling)");
        let f = fx.extract_file(&p).unwrap();
        // Compare only where the 440 Hz tone has energy: the bands that hold the signal.
        // Below 4 kHz the 8 kHz file has all of it; 8-bit quantisation noise lifts the floor.
        let strong: Vec<usize> = (0..reference.len()).filter(|&i| reference[i] > -30.0).collect();
        let mean = strong.iter().map(|&i| (f[i] - reference[i]).abs()).sum::<f32>() / strong.len() as f32;
        assert!(mean < 0.5, "{s:?}: mean |diff| {mean} dB over {} strong cells", strong.len());
    }
}

#[test]
fn a_flat_folder_of_only_broken_files_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = std::fs::File::create(dir.path().join("3_x_1.wav")).unwrap();
    f.write_all(b"nope").unwrap();
    let ds = scan(dir.path()).unwrap();
    let cache = dir.path().join("cache");
    let err = support::data::cache::load_or_extract(&ds, &fx(), &cache, &no_progress).unwrap_err();
    assert!(err.to_string().contains("none of the 1 recordings"), "{err}");
    assert!(!cache.join("features").exists());
}

#[test]
fn mutated_and_cut_wavs_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.wav");
    write_spec(&good, spec(2, 22050, 16, false), 22050 / 2, |i| tone(i, 22050));
    let bytes = std::fs::read(&good).unwrap();
    let fx = fx();
    let target = dir.path().join("m.wav");
    let mut seed = 0x9E3779B97F4A7C15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut outcomes = (0, 0);
    for case in 0..300 {
        let mut b = bytes.clone();
        if case < 60 {
            b.truncate(case); // every cut inside the header
        } else {
            for _ in 0..1 + case % 4 {
                let at = (next() as usize) % 64; // corrupt the header region
                b[at] = next() as u8;
            }
        }
        std::fs::write(&target, &b).unwrap();
        match fx.extract_file(&target) {
            Ok(f) => {
                assert!(f.iter().all(|v| v.is_finite()), "case {case}: non-finite features");
                outcomes.0 += 1
            }
            Err(e) => {
                assert!(e.to_string().contains("m.wav"), "{e}");
                outcomes.1 += 1
            }
        }
    }
    assert!(outcomes.1 >= 60, "cuts must all fail: {outcomes:?}");
}
