//! Hostile input against a model with the "not a digit" class, trained on real speech (FSDD):
//! tones, noise, square waves and one-sample files must not come out as a confident digit.

mod common;

use std::path::{Path, PathBuf};

use candle_core::Device;
use support::data::split::SplitSpec;
use support::infer::Predictor;
use support::train::{Overrides, Recipe, RecipeName};
use support::workflow::{train_and_evaluate, TrainOptions};

/// Sounds that are not speech, at several rates and levels: (name, rate, samples).
fn hostile() -> Vec<(String, u32, Vec<f32>)> {
    let mut out = Vec::new();
    let mut state = 0x1234_5678u32;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state as f32 / u32::MAX as f32 * 2.0 - 1.0
    };
    for rate in [8000u32, 16000, 44100] {
        let n = rate as usize;
        for f in [100.0f32, 300.0, 440.0, 1000.0, 3000.0] {
            for level in [0.1f32, 0.7] {
                let sine =
                    (0..n).map(|i| level * (2.0 * std::f32::consts::PI * f * i as f32 / rate as f32).sin());
                out.push((format!("sine {f} Hz x{level} @{rate}"), rate, sine.collect()));
            }
        }
        let square = (0..n).map(|i| if (i as f32 * 200.0 / rate as f32).fract() < 0.5 { 0.3 } else { -0.3 });
        out.push((format!("square 200 Hz @{rate}"), rate, square.collect()));
        for level in [0.05f32, 0.5] {
            out.push((
                format!("white noise x{level} @{rate}"),
                rate,
                (0..n).map(|_| level * noise()).collect(),
            ));
        }
        out.push((format!("one sample @{rate}"), rate, vec![0.5]));
        out.push((format!("one negative sample @{rate}"), rate, vec![-0.9]));
    }
    out
}

fn write_all(dir: &Path, sounds: &[(String, u32, Vec<f32>)]) -> Vec<PathBuf> {
    sounds
        .iter()
        .enumerate()
        .map(|(i, (_, rate, x))| {
            let p = dir.join(format!("hostile_{i}.wav"));
            common::write_wav(&p, *rate, x);
            p
        })
        .collect()
}

#[test]
fn hostile_sounds_get_no_confident_digit_from_a_rejecting_model() {
    let Some(shared) = common::shared_data() else { return };
    let dir = tempfile::tempdir().unwrap();
    let overrides = Overrides { reject: Some(true), epochs: Some(6), ..Default::default() };
    let opts = TrainOptions {
        data: vec![shared.join("fsdd")],
        out: dir.path().join("run"),
        cache_dir: dir.path().join("cache"),
        split: SplitSpec::Explicit { test: vec!["george".into()], val: vec!["nicolas".into()] },
        recipe: Recipe::new(RecipeName::Seed, 42, overrides).unwrap(),
    };
    let r = train_and_evaluate(&opts, &Device::Cpu, &|_, _| {}, &mut |_| {}).unwrap();
    assert!(r.evaluation.accuracy > 0.3, "a model that learned digits: {}", r.evaluation.accuracy);
    let predictor = Predictor::load_on(&r.model_path, &Device::Cpu).unwrap();
    let sounds = hostile();
    let files = write_all(dir.path(), &sounds);
    let mut confident = Vec::new();
    for ((name, ..), (_, p)) in sounds.iter().zip(predictor.predict_files(&files)) {
        let p = p.unwrap();
        if p.digit.is_some() && p.confidence > 0.5 {
            confident.push(format!("{name}: {} ({:.2})", p.label, p.confidence));
        }
    }
    assert!(confident.is_empty(), "taken for digits: {confident:#?}");
    calibrate_refuses_the_stated_share(&r.model_path, &shared.join("fsdd/recordings"), dir.path());
}

/// `calibrate` on the held-out speaker's digits: the copy refuses at most the stated share of
/// them (10%); a ten-class model gets a temperature and no threshold; files that are not named
/// digit recordings are refused with the reason.
fn calibrate_refuses_the_stated_share(model: &Path, fsdd: &Path, dir: &Path) {
    let george: Vec<PathBuf> = std::fs::read_dir(fsdd)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("_george_"))
        .collect();
    let out = dir.join("calibrated.safetensors");
    let run = |model: &Path, files: &[PathBuf]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_audio-mnist"))
            .args(["calibrate", "--false-reject", "0.1", "--model"])
            .arg(model)
            .arg("--out")
            .arg(&out)
            .args(files)
            .output()
            .unwrap()
    };
    let o = run(model, &george);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let calibrated = Predictor::load_on(&out, &Device::Cpu).unwrap();
    let t = calibrated.reject_at().expect("a threshold");
    let refused =
        calibrated.predict_files(&george).into_iter().filter(|(_, p)| p.as_ref().unwrap().digit.is_none());
    let refused = refused.count();
    assert!(refused <= george.len() / 10, "{refused} of {} refused at {t}", george.len());
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("refuses {refused} of these")));
    assert_eq!(calibrated.meta().metrics["calibrated"]["recordings"], george.len());
    // The bundled model (ten classes, an ensemble): one temperature for all its networks, no
    // threshold.
    let ten = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/digits-en.safetensors");
    let o = run(&ten, &george[..50]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let meta = Predictor::load_on(&out, &Device::Cpu).unwrap().meta().clone();
    let t = &meta.temperatures;
    assert!(meta.reject_threshold.is_none() && t.len() == meta.members.len() && t.len() > 1, "{t:?}");
    assert!(t.iter().all(|&x| x == t[0] && x > 0.0), "{t:?}");
    // Not digit recordings (no `{digit}_` name): refused, and said why.
    let stray = dir.join("hostile_0.wav");
    let o = run(&ten, std::slice::from_ref(&stray));
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("not named {digit}_{speaker}_{take}.wav") && stderr.contains("none of the 1 files"),
        "{stderr}"
    );
}
