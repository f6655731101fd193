//! Edge cases a user can reach: absurd flag values, a WAV ending in half a sample, a folder
//! holding a symbolic-link loop, out-of-range library inputs, and the permissions of what a
//! run writes. Each must give a clear error or the right result, never a panic.

mod common;

use std::path::Path;
use std::process::Command;

use candle_core::Device;
use support::data::split::{make_split, SplitSpec};
use support::model::{init_varmap, save_model, CnnConfig, ModelMeta};

fn cli(args: &[&str]) -> (Option<i32>, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_audio-mnist")).args(args).output().unwrap();
    (o.status.code(), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

#[test]
fn absurd_flag_values_are_usage_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let data = data.to_string_lossy().to_string();
    let out = dir.path().join("out").to_string_lossy().to_string();
    let train = |extra: &[&str]| {
        let mut args = vec!["train", "--data", &data, "--out", &out];
        args.extend(extra);
        cli(&args)
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--batch-size", "0"], "--batch-size"),
        (vec!["--epochs", "0"], "--epochs"),
        (vec!["--epochs", "-3"], "-3"),
        (vec!["--ensemble", "0"], "--ensemble"),
        (vec!["--ensemble", "1000000"], "--ensemble"),
        (vec!["--patience", "0"], "--patience"),
        (vec!["--top-db=-5"], "top-db"),
        (vec!["--top-db", "NaN"], "top-db"),
        (vec!["--lifter", "999"], "lifter 999"),
        (vec!["--channels", "0"], "channels"),
        (vec!["--channels", "8,8,8,8,8,8"], "conv blocks"),
        (vec!["--arch", "tc-resnet", "--channels", "8,8,8,8,8,8,8,8,8"], "1 to 8"),
        (vec!["--arch", "resnet50"], "--arch"),
        (vec!["--augment", "volume"], "unknown step"),
        (vec!["--framing", "squash"], "--framing"),
        (vec!["--split", "paper:7"], "fold must be 0-4"),
    ];
    for (flags, needle) in cases {
        let (code, _, err) = train(&flags);
        assert_eq!(code, Some(2), "{flags:?}: {err}");
        assert!(err.contains(needle) && !err.contains("panicked"), "{flags:?}: {err}");
    }
    for args in [
        vec!["bench-train", "--layers", "--steps", "0"],
        vec!["bench-train", "--batch", "0"],
        vec!["bench-features", "--data", &data, "--repeat", "0"],
        vec!["predict", "--model", "m.safetensors", "--top", "0", "x.wav"],
    ] {
        let (code, _, err) = cli(&args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains("error") && !err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn paper_folds_out_of_range_are_errors() {
    let speakers: Vec<String> = (1..=60).map(|s| format!("{s:02}")).collect();
    assert!(make_split(&SplitSpec::Paper(4), &speakers).is_ok());
    let e = make_split(&SplitSpec::Paper(5), &speakers).unwrap_err().to_string();
    assert!(e.contains("paper fold 5 does not exist"), "{e}");
}

/// 16-bit mono, with one stray byte after the last whole sample.
fn half_sample_wav(samples: &[i16]) -> Vec<u8> {
    let mut data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    data.push(0x7f);
    let mut v = Vec::new();
    v.extend(b"RIFF");
    v.extend(&(36 + data.len() as u32 + 1).to_le_bytes());
    v.extend(b"WAVEfmt ");
    v.extend(&16u32.to_le_bytes());
    v.extend(&1u16.to_le_bytes()); // PCM
    v.extend(&1u16.to_le_bytes()); // mono
    v.extend(&8000u32.to_le_bytes());
    v.extend(&16000u32.to_le_bytes());
    v.extend(&2u16.to_le_bytes()); // block align
    v.extend(&16u16.to_le_bytes());
    v.extend(b"data");
    v.extend(&(data.len() as u32).to_le_bytes());
    v.extend(&data);
    v.push(0); // RIFF pad byte after an odd-sized chunk
    v
}

#[test]
fn a_wav_ending_in_half_a_sample_reads_its_whole_samples() {
    let dir = tempfile::tempdir().unwrap();
    let samples: Vec<i16> = (0..4000).map(|i| ((i as f32 * 0.3).sin() * 12000.0) as i16).collect();
    let path = dir.path().join("half.wav");
    std::fs::write(&path, half_sample_wav(&samples)).unwrap();
    let audio = support::load_wav(&path, 60.0).unwrap();
    assert_eq!(audio.sample_rate, 8000);
    assert_eq!(audio.samples.len(), samples.len());
    for (got, want) in audio.samples.iter().zip(&samples) {
        assert_eq!(*got, *want as f32 / 32768.0);
    }
}

/// An untrained seed-sized model, enough for `predict` to run.
fn write_model(path: &Path) {
    let arch = CnnConfig::default();
    let (varmap, _) = init_varmap(&arch, 1, &Device::Cpu).unwrap();
    let meta = ModelMeta {
        architecture: arch,
        features: support::FeatureConfig::default(),
        mean: -40.0,
        std: 15.0,
        members: vec![],
        temperatures: vec![],
        classes: (0..10).map(|d| d.to_string()).collect(),
        recipe: None,
        split: serde_json::json!({}),
        metrics: serde_json::json!({}),
        reject_threshold: None,
        adaptation: None,
    };
    save_model(path, &varmap, &meta).unwrap();
}

#[cfg(unix)]
#[test]
fn predict_reports_a_symlink_loop_and_still_predicts_the_good_files() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.safetensors");
    write_model(&model);
    let folder = dir.path().join("in");
    std::fs::create_dir_all(folder.join("sub")).unwrap();
    common::write_wav(&folder.join("a.wav"), 8000, &common::tone(8000, 0.6, 200.0));
    std::os::unix::fs::symlink(&folder, folder.join("sub/loop")).unwrap();
    let (code, stdout, stderr) =
        cli(&["predict", "--model", &model.to_string_lossy(), &folder.to_string_lossy()]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("a.wav: "), "{stdout}");
    assert!(stderr.contains("loop") && stderr.contains("symbolic-link loop"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[cfg(unix)]
#[test]
fn written_files_are_readable_by_others() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.safetensors");
    write_model(&model);
    let csv = dir.path().join("table.csv");
    support::data::table::Table::new().int("a", [1i64, 2]).write_csv(&csv).unwrap();
    let json = dir.path().join("x.json");
    support::data::write_json(&json, &serde_json::json!({"a": 1})).unwrap();
    for f in [model, csv, json] {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{}: {mode:o}", f.display());
    }
}
