//! Speaker adaptation (`support::adapt`, `audio-mnist adapt`, `adapt-bench`) on a tone model:
//! a new "voice" the model mistakes learns to be recognised from three takes a digit, the file
//! says what it learned from, the same seed gives the same weights, bad enrollment is refused.

mod common;

use std::path::{Path, PathBuf};

use candle_core::Device;
use support::adapt::{adapt, AdaptConfig, Enrollment};
use support::infer::Predictor;

fn accuracy(model: &Path, files: &[(PathBuf, u8)]) -> f64 {
    let p = Predictor::load_on(model, &Device::Cpu).unwrap();
    let right = files.iter().filter(|(f, d)| p.predict_file(f).unwrap().digit == Some(*d as usize)).count();
    right as f64 / files.len() as f64
}

#[test]
fn a_new_voice_is_learned_from_three_takes_and_the_file_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::tone_model(dir.path());
    let voice = common::new_voice(dir.path());
    let ds = support::scan(&voice).unwrap();
    let enrollment = Enrollment::pick(&ds, &[], 3).unwrap();
    assert_eq!(enrollment.files.len(), 30);
    assert_eq!(enrollment.speakers, vec!["dan".to_string()]);
    let held_out: Vec<(PathBuf, u8)> = (0..10u8)
        .flat_map(|d| (3..6).map(move |t| (d, t)))
        .map(|(d, t)| (voice.join(format!("{d}_dan_{t}.wav")), d))
        .collect();
    let before = accuracy(&model, &held_out);

    let cfg = AdaptConfig::default();
    let adapted = adapt(&model, &enrollment, &cfg, &Device::Cpu).unwrap();
    let out = dir.path().join("dan.safetensors");
    adapted.save(&out).unwrap();
    let after = accuracy(&out, &held_out);
    println!("dan's held-out takes: {:.1}% -> {:.1}%", 100.0 * before, 100.0 * after);
    assert!(before < 0.8, "the new voice should be new to the model: {before}");
    assert!(after >= 0.8 && after > before + 0.5, "adaptation: {before} -> {after}");

    // The file: what it learned from; the original's features, normalisation, temperatures.
    let original = support::model::load_model(&model, &Device::Cpu).unwrap().meta;
    let personal = support::model::load_model(&out, &Device::Cpu).unwrap().meta;
    let a = personal.adaptation.as_ref().expect("adaptation recorded");
    assert_eq!(a["speakers"], serde_json::json!(["dan"]));
    assert_eq!(a["files"].as_array().unwrap().len(), 30);
    assert_eq!(a["method"]["layers"], "head");
    assert!(original.adaptation.is_none());
    assert_eq!(
        (&personal.features, personal.mean, personal.std),
        (&original.features, original.mean, original.std)
    );
    assert_eq!(personal.temperatures, original.temperatures);

    // Seeded: the same seed, the same weights; another seed, others.
    let weights = |a: &support::adapt::Adapted| -> Vec<Vec<f32>> {
        let data = a.varmaps[0].data().lock().unwrap();
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        names.iter().map(|n| data[*n].flatten_all().unwrap().to_vec1().unwrap()).collect()
    };
    let again = adapt(&model, &enrollment, &cfg, &Device::Cpu).unwrap();
    assert_eq!(weights(&adapted), weights(&again));
    let other = adapt(&model, &enrollment, &AdaptConfig { seed: 7, ..cfg }, &Device::Cpu).unwrap();
    assert_ne!(weights(&adapted), weights(&other));
}

#[test]
fn bad_enrollment_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::tone_model(dir.path());
    let voice = common::new_voice(dir.path());
    // a digit never said
    for take in 0..6 {
        std::fs::remove_file(voice.join(format!("7_dan_{take}.wav"))).unwrap();
    }
    let ds = support::scan(&voice).unwrap();
    let e = Enrollment::pick(&ds, &[], 3).unwrap_err().to_string();
    assert!(e.contains("no recording of digit 7"), "{e}");
    // a silent take
    common::write_wav(&voice.join("7_dan_0.wav"), 8000, &vec![0.0; 4000]);
    let ds = support::scan(&voice).unwrap();
    let enrollment = Enrollment::pick(&ds, &[], 1).unwrap();
    let e = adapt(&model, &enrollment, &AdaptConfig::default(), &Device::Cpu).err().unwrap();
    assert!(format!("{e:#}").contains("7_dan_0.wav"), "{e:#}");
    // the CLI says so too, without a panic
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_audio-mnist"))
        .args(["adapt", "--model"])
        .arg(&model)
        .arg("--data")
        .arg(&voice)
        .arg("--out")
        .arg(dir.path().join("x.safetensors"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("7_dan_0.wav") && !err.contains("panicked"), "{err}");
}

#[test]
fn adapt_bench_reports_each_speaker_before_and_after() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::tone_model(dir.path());
    common::new_voice(dir.path());
    let out = dir.path().join("bench");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_audio-mnist"))
        .args(["adapt-bench", "--takes", "1,3", "--speakers", "dan", "--model"])
        .arg(&model)
        .arg("--data")
        .arg(dir.path().join("dan"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}\n{}", stdout, String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("dan with 3 take(s) per digit"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("adapt_bench.json")).unwrap()).unwrap();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[1]["takes"].as_u64(), rows[1]["enrolled"].as_u64(), rows[1]["tested"].as_u64()),
        (Some(3), Some(30), Some(30))
    );
    assert!(rows[1]["after"].as_f64().unwrap() > rows[1]["before"].as_f64().unwrap());
    // only dan is in the folder: no other speakers to forget
    assert_eq!(rows[1]["others"].as_u64(), Some(0));
    assert!(out.join("adapt_bench.md").exists());

    // One speaker's confusion matrices (the notebook's figure): the 30 held-out takes, before
    // and after, the diagonal growing.
    let ds = support::scan(&dir.path().join("dan")).unwrap();
    let cfg = support::adapt::AdaptConfig::default();
    let a = support::adapt::bench::adapt_speaker(&model, &ds, "dan", 3, &cfg, &Device::Cpu).unwrap();
    let total = |m: &[Vec<usize>]| m.iter().flatten().sum::<usize>();
    let right = |m: &[Vec<usize>]| (0..10).map(|d| m[d][d]).sum::<usize>();
    assert_eq!((total(&a.before), total(&a.after)), (30, 30));
    assert!(right(&a.after) > right(&a.before), "{:?} -> {:?}", a.before, a.after);
    assert_eq!(a.adapted.meta.adaptation.as_ref().unwrap()["speakers"], serde_json::json!(["dan"]));
}
