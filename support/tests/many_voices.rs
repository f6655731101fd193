//! Many voices: training-only folders (`--train-data`), the scoreboard (`benchmark`) and
//! synthetic voices (`synth`), through the binary.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn audio_mnist(args: &[&str], paths: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_audio-mnist"));
    c.args(args);
    for (flag, path) in paths {
        c.arg(flag).arg(path);
    }
    c.output().unwrap()
}

fn ok(o: &Output) -> String {
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    stdout
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn training_only_folders_train_every_fold_and_are_never_tested_or_validated() {
    let dir = tempfile::tempdir().unwrap();
    common::tone_dataset(&dir.path().join("data"));
    common::tone_speakers(&dir.path().join("extra"), &["dan", "eve"], 2);
    let out = dir.path().join("cv");
    let o = audio_mnist(
        &["crossval", "--recipe", "seed", "--epochs", "1", "--batch-size", "16"],
        &[
            ("--data", &dir.path().join("data")),
            ("--train-data", &dir.path().join("extra")),
            ("--cache-dir", &dir.path().join("cache")),
            ("--out", &out),
        ],
    );
    let stdout = ok(&o);
    assert!(
        stdout.contains("extra: Fsdd layout, 40 recordings, 2 speakers") && stdout.contains("training only"),
        "{stdout}"
    );
    // Each fold's result as it finishes, and the time left until the last.
    assert!(stdout.contains("fold 1/3 done: test") && stdout.contains("left"), "{stdout}");
    assert!(stdout.contains("fold 3/3 done: test") && !stdout.contains("fold 4/"), "{stdout}");
    let cv = json(&out.join("crossval.json"));
    let folds = cv["folds"].as_array().unwrap();
    let mut tested: Vec<&str> = folds.iter().map(|f| f["test_speaker"].as_str().unwrap()).collect();
    tested.sort();
    assert_eq!(tested, ["data/ann", "data/bob", "data/cat"]);
    for f in folds {
        assert!(f["val_speaker"].as_str().unwrap().starts_with("data/"), "{f}");
        // One speaker of `data` (40 files) and both of `extra` (2 x 20) train.
        assert_eq!(f["train_files"], 80, "{f}");
    }
    assert_eq!(cv["recipe"]["train_data"].as_array().map(Vec::len), Some(1), "{cv}");
    // The model file records it, and its split lists the extra speakers as training.
    let model =
        support::model::load_model(&out.join("fold-0/model.safetensors"), &candle_core::Device::Cpu).unwrap();
    let train = model.meta.split["train"].as_array().unwrap();
    assert!(train.iter().any(|s| s == "extra/dan") && train.iter().any(|s| s == "extra/eve"), "{train:?}");

    // A training-only folder cannot be named as a test speaker.
    let o = audio_mnist(
        &[
            "train",
            "--recipe",
            "seed",
            "--epochs",
            "1",
            "--test-speakers",
            "extra/dan",
            "--val-speakers",
            "data/bob",
        ],
        &[
            ("--data", &dir.path().join("data")),
            ("--train-data", &dir.path().join("extra")),
            ("--out", &dir.path().join("t")),
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("extra/dan"));
}

#[test]
fn quick_benchmark_writes_a_labelled_scoreboard_and_skips_missing_corpora() {
    let dir = tempfile::tempdir().unwrap();
    let corpora = dir.path().join("corpora");
    common::tone_speakers(&corpora.join("fsdd/recordings"), &["ann", "bob", "theo"], 3);
    common::tone_speakers(&corpora.join("speech-commands-digits/recordings"), &["s1", "s2", "s3"], 1);
    let arabic: Vec<String> = (1..=8).map(|i| format!("{i:08}")).collect();
    for a in &arabic {
        common::tone_speakers(&corpora.join("arabic").join(a), &[a], 2);
    }
    let out = dir.path().join("bench");
    let o = audio_mnist(
        &["benchmark", "--quick", "--recipe", "seed", "--epochs", "2", "--batch-size", "16"],
        &[("--corpora", &corpora), ("--out", &out), ("--cache-dir", &dir.path().join("cache"))],
    );
    let stdout = ok(&o);
    assert!(stdout.contains("QUICK ESTIMATE"), "{stdout}");
    let board = json(&out.join("scoreboard.json"));
    assert_eq!(board["quick"], true);
    assert_eq!(board["recipe"]["ensemble"], 1);
    let names: Vec<&str> =
        board["lines"].as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["fsdd-loso", "arabic-kfold5", "cross-corpus", "babble-10db", "rt60-0.6s"]);
    let line =
        |name: &str| board["lines"].as_array().unwrap().iter().find(|l| l["name"] == name).unwrap().clone();
    assert_eq!(line("fsdd-loso")["folds"].as_array().unwrap().len(), 3);
    assert_eq!(line("arabic-kfold5")["folds"].as_array().unwrap().len(), 2, "quick: 2 of 5 folds");
    let cross = line("cross-corpus");
    assert!((0.0..=1.0).contains(&cross["value"].as_f64().unwrap()));
    // The cross-corpus model never saw a stranger: they are all its test speakers.
    let cc = json(&out.join("cross-corpus/metrics.json"));
    assert_eq!(cc["test_files"], 30, "{cc}");
    assert!(line("babble-10db")["value"].as_f64().unwrap().abs() <= 1.0);
    assert!(line("fsdd-loso")["train_ms_per_file"].as_f64().unwrap() > 0.0);
    assert!(board["skipped"][0].as_str().unwrap().starts_with("gujarati-kfold5"), "{board}");
    let md = std::fs::read_to_string(out.join("scoreboard.md")).unwrap();
    assert!(
        md.contains("QUICK ESTIMATE") && md.contains("| cross-corpus |") && md.contains("skipped: gujarati"),
        "{md}"
    );
    assert!(std::fs::metadata(out.join("scoreboard.png")).unwrap().len() > 5000);

    // One line alone.
    let o = audio_mnist(
        &["benchmark", "--quick", "--only", "cross-corpus", "--recipe", "seed", "--epochs", "1"],
        &[
            ("--corpora", &corpora),
            ("--out", &dir.path().join("one")),
            ("--cache-dir", &dir.path().join("cache")),
        ],
    );
    ok(&o);
    let one = json(&dir.path().join("one/scoreboard.json"));
    assert_eq!(one["lines"].as_array().unwrap().len(), 1);
    // A corpora folder without FSDD is a clear error.
    let o = audio_mnist(&["benchmark", "--quick"], &[("--corpora", &dir.path().join("nowhere"))]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not there"));
}

fn espeak_ng() -> bool {
    let there = Command::new("espeak-ng").arg("--version").output().is_ok_and(|o| o.status.success());
    let required = std::env::var("AUDIO_MNIST_REQUIRE_SHARED").is_ok_and(|v| v == "1");
    assert!(there || !required, "CI installs espeak-ng (.ci/run), but it is not on PATH");
    if !there {
        eprintln!("SKIPPED: espeak-ng is not installed");
    }
    there
}

#[test]
fn synth_says_every_digit_in_each_voice_seeded_and_resumable() {
    if !espeak_ng() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let list = ok(&audio_mnist(&["synth", "--list"], &[]));
    assert!(list.contains("espeakenus"), "{list}");
    let run = |out: &Path| {
        ok(&audio_mnist(&["synth", "--voices", "3", "--count", "2", "--seed", "5"], &[("--out", out)]))
    };
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    assert!(run(&a).contains("60 files (3 voices x 10 digits x 2; 0 already there)"));
    let dataset = support::data::dataset::scan(&a).unwrap();
    assert_eq!((dataset.recordings.len(), dataset.speaker_ids().len()), (60, 3));
    for digit in 0..10 {
        assert_eq!(dataset.recordings.iter().filter(|r| r.digit == digit).count(), 6);
    }
    let report = json(&a.join("synth.json"));
    assert_eq!(report["files"].as_array().unwrap().len(), 60);
    // Seeded: another folder, the same bytes; an interrupted run is completed, not redone.
    run(&b);
    let name = dataset.recordings[7].path.clone();
    assert_eq!(std::fs::read(a.join(&name)).unwrap(), std::fs::read(b.join(&name)).unwrap());
    std::fs::remove_file(b.join(&name)).unwrap();
    assert!(run(&b).contains("59 already there"));
    assert_eq!(std::fs::read(a.join(&name)).unwrap(), std::fs::read(b.join(&name)).unwrap());
    // Real speech: a second of audio or less, not silent, at 16 kHz.
    let audio = support::dsp::audio::load_wav(&a.join(&name), 10.0).unwrap();
    assert_eq!(audio.sample_rate, 16_000);
    let peak = audio.samples.iter().fold(0f32, |m, s| m.max(s.abs()));
    assert!(peak > 0.05 && audio.samples.len() < 2 * 16_000, "peak {peak}, {} samples", audio.samples.len());
}
