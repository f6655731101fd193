//! The whole training run on a small generated dataset: artifacts, determinism, evaluation.

mod common;

use std::path::Path;

use candle_core::Device;
use support::data::split::SplitSpec;
use support::eval::artifacts::evaluate_model;
use support::train::{Recipe, RecipeName};
use support::workflow::{train_and_evaluate, TrainOptions};

use common::tone_dataset as make_dataset;

fn options(data: &Path, out: &Path, cache: &Path) -> TrainOptions {
    TrainOptions {
        data: vec![data.to_path_buf()],
        out: out.to_path_buf(),
        cache_dir: cache.to_path_buf(),
        split: SplitSpec::Explicit { test: vec!["cat".into()], val: vec!["bob".into()] },
        recipe: Recipe { epochs: 2, batch_size: 16, ..Recipe::named(RecipeName::Seed) },
    }
}

/// `evaluate_model` of `model` on `dir/data` with the model's own split (cache `dir/cache`,
/// output `dir/eval`).
fn evaluate_in(dir: &Path, model: &Path) -> anyhow::Result<support::eval::Evaluation> {
    let data = [dir.join("data")];
    evaluate_model(model, &data, &dir.join("eval"), &dir.join("cache"), None, &Device::Cpu, &|_, _| {})
}

/// `audio-mnist train --data DIR/data --cache-dir DIR/cache --out OUT ARGS`.
fn train_cli(dir: &Path, out: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_audio-mnist"))
        .arg("train")
        .arg("--data")
        .arg(dir.join("data"))
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .arg("--out")
        .arg(out)
        .args(args)
        .output()
        .unwrap()
}

fn model_tensor_bytes(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Vec<u8>)> =
        st.tensors().into_iter().map(|(n, t)| (n, t.data().to_vec())).collect();
    v.sort();
    v
}

#[test]
fn train_writes_every_artifact_deterministically_and_evaluate_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let (data, cache) = (dir.path().join("data"), dir.path().join("cache"));
    make_dataset(&data);
    let (out1, out2) = (dir.path().join("run1"), dir.path().join("run2"));
    let mut lines = 0;
    let r1 = train_and_evaluate(&options(&data, &out1, &cache), &Device::Cpu, &|_, _| {}, &mut |_| {
        lines += 1;
        // the best-so-far model is on disk from the first epoch on: an interrupted run keeps it
        assert!(support::model::load_model(&out1.join("model.safetensors"), &Device::Cpu).is_ok());
    })
    .unwrap();
    assert_eq!(lines, r1.log.len());
    let r2 =
        train_and_evaluate(&options(&data, &out2, &cache), &Device::Cpu, &|_, _| {}, &mut |_| {}).unwrap();

    // artifacts
    for f in [
        "model.safetensors",
        "training_log.csv",
        "training_metrics.png",
        "confusion_matrix.png",
        "classification_report.txt",
        "per_speaker_accuracy.csv",
        "predictions.csv",
        "metrics.json",
        "run_manifest.json",
        "split.json",
    ] {
        assert!(out1.join(f).is_file(), "{f} missing");
    }
    for png in ["training_metrics.png", "confusion_matrix.png"] {
        let b = std::fs::read(out1.join(png)).unwrap();
        assert!(b.starts_with(b"\x89PNG") && b.len() > 5000, "{png} is not a real PNG");
    }
    let log = std::fs::read_to_string(out1.join("training_log.csv")).unwrap();
    assert!(log.starts_with("epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds"));
    assert_eq!(log.lines().count(), 1 + r1.log.len());
    let report = std::fs::read_to_string(out1.join("classification_report.txt")).unwrap();
    assert!(report.contains("weighted avg") && report.contains("macro avg") && report.contains("support"));
    let per_speaker = std::fs::read_to_string(out1.join("per_speaker_accuracy.csv")).unwrap();
    assert!(
        per_speaker.starts_with("dataset,speaker,correct,total,accuracy")
            && per_speaker.contains("data,cat,")
    );
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out1.join("metrics.json")).unwrap()).unwrap();
    for k in
        ["test_accuracy", "val_accuracy", "epochs", "train_seconds", "train_samples_per_second", "params"]
    {
        assert!(metrics.get(k).is_some(), "metrics.json lacks {k}");
    }
    assert_eq!(metrics["params"], 4_216_138);
    assert_eq!(metrics["test_files"], 40);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out1.join("run_manifest.json")).unwrap()).unwrap();
    for k in [
        "seed",
        "recipe",
        "architecture",
        "machine",
        "features",
        "split",
        "data_fingerprint",
        "crate_versions",
        "rustc",
        "git_commit",
        "device",
    ] {
        assert!(manifest.get(k).is_some(), "run_manifest.json lacks {k}");
    }
    assert_eq!(manifest["split"]["test"][0], "cat");
    // The recipe as data: its name, the fields changed, and what they resolved to.
    assert_eq!(manifest["recipe"]["name"], "seed");
    assert_eq!(manifest["recipe"]["epochs"], 2);
    assert_eq!(manifest["architecture"]["channels"], serde_json::json!([32, 64]));
    assert!(manifest["machine"]["cpu"].as_str().is_some_and(|c| !c.is_empty()), "{manifest}");
    assert!(manifest["machine"]["simd"].as_str().is_some(), "{manifest}");
    // Every network of the model is reported.
    assert_eq!(metrics["members"].as_array().map(Vec::len), Some(1), "{metrics}");
    assert_eq!(metrics["members"][0]["val_speaker"], "bob");
    // Calibration: one temperature per network, fitted on bob; the test ECE before and after.
    let cal = &metrics["calibration"];
    let t = cal["temperatures"][0].as_f64().unwrap();
    assert!(t > 0.0 && t != 1.0, "{cal}");
    for k in ["ece_before", "ece_after"] {
        assert!(cal[k].as_f64().is_some_and(|e| (0.0..=1.0).contains(&e)), "{cal}");
    }
    assert_eq!(
        support::model::load_model(&r1.model_path, &Device::Cpu).unwrap().meta.temperatures,
        vec![t as f32]
    );
    let loaded = support::model::load_model(&r1.model_path, &Device::Cpu).unwrap();
    assert_eq!(loaded.meta.recipe.as_ref().map(|r| r.epochs), Some(2));

    // determinism: same seed, data, config -> same weights and metrics
    assert_eq!(model_tensor_bytes(&r1.model_path), model_tensor_bytes(&r2.model_path));
    assert_eq!(r1.metrics.test_accuracy, r2.metrics.test_accuracy);
    assert_eq!(r1.metrics.val_accuracy, r2.metrics.val_accuracy);
    assert_eq!(r1.evaluation, r2.evaluation);

    // evaluate: the exported model alone reproduces the test accuracy (its own split by default)
    let eval_out = dir.path().join("eval");
    let e =
        evaluate_model(&r1.model_path, &[data.clone()], &eval_out, &cache, None, &Device::Cpu, &|_, _| {})
            .unwrap();
    assert_eq!(e, r1.evaluation);
    assert!(
        eval_out.join("confusion_matrix.png").is_file()
            && eval_out.join("classification_report.txt").is_file()
    );
}

#[test]
fn cli_train_refuses_unknown_recipe_and_bad_split() {
    let dir = tempfile::tempdir().unwrap();
    make_dataset(&dir.path().join("data"));
    let run = |args: &[&str]| {
        let o = train_cli(dir.path(), &dir.path().join("out"), args);
        (o.status.code(), String::from_utf8_lossy(&o.stderr).to_string())
    };
    let (code, err) = run(&["--recipe", "magic"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("invalid value 'magic'") && err.contains("seed") && !err.contains("panicked"),
        "{err}"
    );
    let (code, err) = run(&["--test-speakers", "zed", "--val-speakers", "bob"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("\"zed\" is not in the data"), "{err}");
    let (code, err) = run(&["--split", "paper:1"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("paper fold 1 needs AudioMNIST speakers"), "{err}");
}

#[test]
fn predict_command_and_predictor_agree_with_training_and_handle_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let (data, cache, out) = (dir.path().join("data"), dir.path().join("cache"), dir.path().join("run"));
    make_dataset(&data);
    let report =
        train_and_evaluate(&options(&data, &out, &cache), &Device::Cpu, &|_, _| {}, &mut |_| {}).unwrap();
    let model = report.model_path;

    // the predictor reproduces training's test predictions (same preprocessing code)
    let predictor = support::infer::Predictor::load_on(&model, &Device::Cpu).unwrap();
    let csv = std::fs::read_to_string(out.join("predictions.csv")).unwrap();
    let rows: Vec<(String, usize)> = csv
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[1].to_string(), f[4].parse().unwrap())
        })
        .collect();
    let paths: Vec<_> = rows.iter().map(|(f, _)| data.join(f)).collect();
    for ((_, want), (_, got)) in rows.iter().zip(predictor.predict_files(&paths)) {
        assert_eq!(got.unwrap().digit, Some(*want));
    }
    // a 1-second window at another rate, and silence
    let window = common::tone(44100, 1.0, 180.0);
    let p = predictor.predict_samples(&window, 44100).unwrap();
    assert!(
        (p.probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-4
            && p.confidence == p.probabilities[p.digit.unwrap()]
            && p.label == p.digit.unwrap().to_string()
    );
    let silent = predictor.predict_samples(&vec![0.0; 16000], 16000).unwrap();
    assert_eq!((silent.digit, silent.label.as_str()), (None, "not a digit"));
    assert!(silent.reason.as_ref().is_some_and(|r| r.contains("no speech")), "{silent:?}");
    // A threshold above every confidence rejects everything that the model would accept.
    let strict = support::infer::Predictor::load_on(&model, &Device::Cpu).unwrap().with_threshold(1.01);
    let q = strict.predict_samples(&window, 44100).unwrap();
    assert_eq!(q.digit, None);
    assert!((q.confidence - (1.0 - p.confidence)).abs() < 1e-6, "{q:?}");

    // the command line
    let bad = dir.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("text.wav"), "hello").unwrap();
    common::write_wav(&bad.join("silent.wav"), 16000, &vec![0.0; 16000]);
    common::write_wav(&bad.join("long.wav"), 8000, &common::tone(8000, 600.0, 150.0));
    let good = data.join("recordings/3_ann_0.wav");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(bad.join("truncated.wav"), &bytes[..bytes.len() / 2]).unwrap();
    let run = |args: &[&std::ffi::OsStr]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_audio-mnist"))
            .arg("predict")
            .args(args)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).to_string(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let m = ["--model".as_ref(), model.as_os_str()];
    let (code, stdout, _) = run(&[m[0], m[1], good.as_os_str()]);
    assert_eq!(code, Some(0));
    assert!(
        stdout.starts_with(&format!("{}: ", good.display())) && stdout.trim_end().ends_with(')'),
        "{stdout}"
    );
    let (_, stdout, _) = run(&[m[0], m[1], "--top".as_ref(), "3".as_ref(), good.as_os_str()]);
    assert_eq!(stdout.matches('(').count(), 3, "{stdout}");

    let missing = dir.path().join("missing.wav");
    let (code, stdout, stderr) =
        run(&[m[0], m[1], "--json".as_ref(), good.as_os_str(), bad.as_os_str(), missing.as_os_str()]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[0]["probabilities"].as_array().unwrap().len(), 10);
    let error_of = |name: &str| {
        lines.iter().find(|l| l["file"].as_str().unwrap().ends_with(name)).unwrap()["error"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(error_of("text.wav").contains("not a WAV"));
    let silent = lines.iter().find(|l| l["file"].as_str().unwrap().ends_with("silent.wav")).unwrap();
    assert!(silent["digit"].is_null() && silent["label"] == "not a digit", "{silent}");
    assert!(silent["reason"].as_str().unwrap().contains("no speech"), "{silent}");
    assert!(error_of("truncated.wav").contains("truncated"));
    assert!(error_of("missing.wav").contains("cannot read"));
    assert!(error_of("long.wav").contains("600.0 s long, over the 60 s limit"));
    assert!(!stderr.contains("panicked"));

    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (code, _, stderr) = run(&[m[0], m[1], empty.as_os_str()]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("no .wav files in folder"), "{stderr}");
    let not_model = bad.join("text.wav");
    let (code, _, stderr) = run(&["--model".as_ref(), not_model.as_os_str(), good.as_os_str()]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("not a safetensors file") && stderr.contains("text.wav"), "{stderr}");
}

#[test]
fn member_splits_rotate_validation_through_the_training_speakers() {
    use support::data::split::Split;
    use support::train::fit::member_split;
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let split = Split { train: s(&["a", "b", "d", "f"]), val: s(&["e"]), test: s(&["c"]) };
    assert_eq!(member_split(&split, 0), split);
    let vals: Vec<Vec<String>> = (1..6).map(|m| member_split(&split, m).val).collect();
    assert_eq!(vals, [s(&["f"]), s(&["a"]), s(&["b"]), s(&["d"]), s(&["e"])]);
    for m in 0..6 {
        let p = member_split(&split, m);
        assert_eq!(p.test, s(&["c"]));
        let mut all: Vec<String> = p.train.iter().chain(&p.val).cloned().collect();
        all.sort();
        assert_eq!(all, s(&["a", "b", "d", "e", "f"]), "member {m}: every non-test speaker, once");
    }
    // groups of two validation speakers move on by two
    let split = Split { train: s(&["a", "b", "c", "d"]), val: s(&["e", "f"]), test: s(&["g"]) };
    assert_eq!(member_split(&split, 1).val, s(&["a", "b"]));
    assert_eq!(member_split(&split, 2).val, s(&["c", "d"]));
}

#[test]
fn an_ensemble_run_exports_one_file_that_evaluate_and_predict_use() {
    let dir = tempfile::tempdir().unwrap();
    make_dataset(&dir.path().join("data"));
    let out = dir.path().join("run");
    let mut opts = options(&dir.path().join("data"), &out, &dir.path().join("cache"));
    opts.recipe.ensemble = 2;
    let report = train_and_evaluate(&opts, &Device::Cpu, &|_, _| {}, &mut |_| {}).unwrap();
    for m in 0..2 {
        assert!(out.join(format!("member-{m}/training_log.csv")).exists());
    }
    // The run's own log holds both networks' epochs, told apart by a member column.
    let log = std::fs::read_to_string(out.join("training_log.csv")).unwrap();
    assert!(log.starts_with("member,epoch,train_loss"), "{log}");
    assert_eq!(log.lines().filter(|l| l.starts_with("1,")).count(), report.log.len());
    assert_eq!(log.lines().filter(|l| l.starts_with("2,")).count(), 2, "{log}");
    assert!(out.join("training_metrics.png").exists());
    // Member 1 validated on the other training speaker and trained on the first one's.
    let member1 = support::model::load_model(&out.join("member-1/model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(member1.meta.split["val"], serde_json::json!(["ann"]));
    assert_eq!(member1.meta.split["train"], serde_json::json!(["bob"]));
    let loaded = support::model::load_model(&report.model_path, &Device::Cpu).unwrap();
    assert_eq!(loaded.model.members.len(), 2);
    assert_eq!(loaded.meta.members.len(), 2);
    let eval = evaluate_in(dir.path(), &report.model_path).unwrap();
    assert_eq!(eval.accuracy, report.evaluation.accuracy);
    let predictor = support::infer::Predictor::load_on(&report.model_path, &Device::Cpu).unwrap();
    let p = predictor.predict_file(&dir.path().join("data/recordings/3_cat_0.wav")).unwrap();
    assert!((p.probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-4);
}

#[test]
fn crossval_leaves_each_speaker_out_once_and_writes_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    make_dataset(&dir.path().join("data"));
    let out = dir.path().join("cv");
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_audio-mnist"))
            .arg("crossval")
            .arg("--data")
            .arg(dir.path().join("data"))
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .arg("--out")
            .arg(&out)
            .args(["--epochs", "1", "--batch-size", "16"])
            .args(extra)
            .output()
            .unwrap()
    };
    // Every augmentation on, so the on-the-fly path runs end to end.
    let o = run(&["--scheme", "loso", "--recipe", "best", "--augment", "speed,noise", "--ensemble", "2"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("augmentation: speed, noise"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("crossval.json")).unwrap()).unwrap();
    let folds = json["folds"].as_array().unwrap();
    let mut tested: Vec<&str> = folds.iter().map(|f| f["test_speaker"].as_str().unwrap()).collect();
    tested.sort();
    assert_eq!(tested, ["ann", "bob", "cat"]);
    let mut accs = Vec::new();
    for f in folds {
        let (test, val) = (f["test_speaker"].as_str().unwrap(), f["val_speaker"].as_str().unwrap());
        assert!(val != test && ["ann", "bob", "cat"].contains(&val), "fold {f}");
        // Two networks, validated on the two training speakers in turn, never on the test one.
        let members = f["members"].as_array().unwrap();
        let mut vals: Vec<&str> = members.iter().map(|m| m["val_speaker"].as_str().unwrap()).collect();
        assert_eq!(vals[0], val);
        vals.sort();
        let mut others: Vec<&str> = ["ann", "bob", "cat"].into_iter().filter(|s| *s != test).collect();
        others.sort();
        assert_eq!(vals, others, "fold {f}");
        let acc = f["test_accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc));
        accs.push(acc);
        assert_eq!(f["calibration"]["temperatures"].as_array().map(Vec::len), Some(2), "fold {f}");
    }
    let eces: Vec<f64> = folds.iter().map(|f| f["calibration"]["ece_after"].as_f64().unwrap()).collect();
    assert!((json["ece_after"].as_f64().unwrap() - eces.iter().sum::<f64>() / 3.0).abs() < 1e-12);
    assert!(json["ece_before"].as_f64().is_some_and(|e| (0.0..=1.0).contains(&e)), "{json}");
    let mean = accs.iter().sum::<f64>() / 3.0;
    let std = (accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / 3.0).sqrt();
    assert!((json["mean"].as_f64().unwrap() - mean).abs() < 1e-12);
    assert!((json["std"].as_f64().unwrap() - std).abs() < 1e-12);
    // Every recording tested exactly once over the folds: 3 speakers x 10 digits x 4 takes.
    let confusion: usize = json["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|v| v.as_u64().unwrap() as usize)
        .sum();
    assert_eq!(confusion, 120);
    assert!(std::fs::metadata(out.join("confusion_matrix.png")).unwrap().len() > 1000);
    assert!(out.join("fold-0/member-1/model.safetensors").exists());
    // Each fold's whole ensemble is one model file too.
    let fold0 = support::model::load_model(&out.join("fold-0/model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(fold0.model.members.len(), 2);
    // The scheme, the recipe (with what the flags changed) and the machine, as data.
    assert_eq!(json["scheme"], "loso");
    assert_eq!(json["recipe"]["name"], "best");
    assert_eq!(json["recipe"]["overrides"]["ensemble"], 2);
    assert_eq!(json["recipe"]["overrides"]["augment"], serde_json::json!(["speed", "noise"]));
    assert_eq!(json["recipe"]["channels"], serde_json::json!([32, 64, 128]));
    assert!(json["machine"]["cpu"].is_string() && json["machine"]["cache_kib"].is_array(), "{json}");
    // k-fold needs more speakers than these three
    let o = run(&["--scheme", "kfold:2"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("kfold:2 needs at least"));
    let o = run(&["--scheme", "kfold"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("invalid value 'kfold'") && err.contains("loso"), "{err}");
}

#[test]
fn a_model_for_deployment_trains_on_all_but_the_validation_speakers() {
    let dir = tempfile::tempdir().unwrap();
    make_dataset(&dir.path().join("data"));
    let out = dir.path().join("deploy");
    let o = train_cli(
        dir.path(),
        &out,
        &[
            "--recipe",
            "seed",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--split",
            "none",
            "--val-speakers",
            "bob",
        ],
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("no test speakers") && !stdout.contains("test accuracy"), "{stdout}");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert!(metrics["test_accuracy"].is_null(), "{metrics}");
    assert_eq!(metrics["test_files"], 0);
    assert_eq!(metrics["train_files"], 80, "ann and cat train");
    let model = support::model::load_model(&out.join("model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(model.meta.split["test"], serde_json::json!([]));
    assert_eq!(model.meta.split["train"], serde_json::json!(["ann", "cat"]));
    // Evaluating it needs a named split; --split none with test speakers is a usage error.
    let e = evaluate_in(dir.path(), &out.join("model.safetensors")).unwrap_err();
    assert!(format!("{e:#}").contains("without test speakers"), "{e:#}");
    assert!(SplitSpec::from_args("none", 1, Some("ann"), Some("bob")).is_err());
    assert!(SplitSpec::from_args("none", 1, None, None).is_err());
}

#[test]
fn robustness_scores_every_condition_reproducibly_and_clean_matches_the_test() {
    let dir = tempfile::tempdir().unwrap();
    let (data, cache, out) = (dir.path().join("data"), dir.path().join("cache"), dir.path().join("run"));
    make_dataset(&data);
    let report =
        train_and_evaluate(&options(&data, &out, &cache), &Device::Cpu, &|_, _| {}, &mut |_| {}).unwrap();
    let run = |name: &str, extra: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_audio-mnist"))
            .arg("robustness")
            .arg("--model")
            .arg(&report.model_path)
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(dir.path().join(name))
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let text = std::fs::read_to_string(dir.path().join(name).join("robustness.json")).unwrap();
        (
            String::from_utf8_lossy(&o.stdout).to_string(),
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
        )
    };
    let (stdout, json) = run("rob1", &[]);
    assert!(stdout.contains("| clean |") && stdout.contains("babble 10 dB SNR"), "{stdout}");
    let model = report.model_path.display().to_string();
    assert_eq!(json["models"], serde_json::json!([model]));
    assert_eq!(json["files"][&model], 40, "the test speaker's 40 recordings");
    let conditions = json["conditions"].as_array().unwrap();
    assert_eq!(conditions.len(), 14);
    for c in conditions {
        let acc = c["accuracy"][&model].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{c}");
    }
    // Clean is the test set itself: the same accuracy as training's evaluation.
    assert_eq!(conditions[0]["name"], "clean");
    assert_eq!(conditions[0]["accuracy"][&model].as_f64().unwrap(), report.evaluation.accuracy);
    // Seeded: a second run gives the same numbers; --all scores every recording.
    assert_eq!(run("rob2", &[]).1["conditions"], json["conditions"]);
    let (_, all) = run("rob3", &["--all"]);
    assert_eq!(all["files"][&model], 120);
    let png = std::fs::read(dir.path().join("rob1/robustness.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 5000);
}

/// Two folders with the same speaker names train as one: six speakers, the split over the
/// union, accuracy per folder, and each folder cached on its own (a later single-folder run
/// reuses it).
#[test]
fn two_folders_train_as_one_with_namespaced_speakers() {
    use support::data::cache::CacheStatus;
    let dir = tempfile::tempdir().unwrap();
    let (a, b, cache) = (dir.path().join("studio"), dir.path().join("kitchen"), dir.path().join("cache"));
    make_dataset(&a);
    make_dataset(&b);
    let out = dir.path().join("out");
    let opts = TrainOptions {
        data: vec![a.clone(), b.clone()],
        split: SplitSpec::Explicit {
            test: vec!["studio/cat".into(), "kitchen/ann".into()],
            val: vec!["kitchen/bob".into()],
        },
        ..options(&a, &out, &cache)
    };
    let plan = opts.plan().unwrap();
    assert_eq!(plan.dataset.speaker_ids().len(), 6, "two corpora's ann are two people");
    assert_eq!(plan.split.train, vec!["kitchen/cat", "studio/ann", "studio/bob"]);
    let r = train_and_evaluate(&opts, &Device::Cpu, &|_, _| {}, &mut |_| {}).unwrap();
    let per = &r.metrics.per_dataset;
    assert_eq!(per.keys().collect::<Vec<_>>(), vec!["kitchen", "studio"], "{per:?}");
    assert_eq!((per["kitchen"].total, per["studio"].total), (40, 40));
    let overall = (per["kitchen"].correct + per["studio"].correct) as f64 / 80.0;
    assert!((overall - r.metrics.test_accuracy).abs() < 1e-9);
    let predictions = std::fs::read_to_string(out.join("predictions.csv")).unwrap();
    assert!(predictions.starts_with("dataset,file,speaker,"), "{predictions}");
    assert!(predictions.contains("kitchen,kitchen/recordings/0_ann_0.wav,kitchen/ann,"), "{predictions}");
    let table = std::fs::read_to_string(cache.join("metadata.csv")).unwrap();
    assert!(table.starts_with("dataset,path,digit,speaker,"), "{table}");
    assert_eq!(table.lines().filter(|l| l.starts_with("studio,")).count(), 120);
    // One feature file per folder, and the studio alone is a cache hit.
    let ds = support::scan(&a).unwrap();
    let config = opts.recipe.features();
    let (set, status) = support::data::prepare::load_features(&ds, &cache, &config, &|_, _| {}).unwrap();
    assert!(matches!(status, CacheStatus::Hit(_)), "{status:?}");
    assert_eq!(set.speakers[0], "ann", "a folder alone keeps its own names");
}

/// A model with the "not a digit" class trained on the tone dataset in `dir` (`data`,
/// `cache`, `run`).
fn train_rejecting(dir: &Path) -> (TrainOptions, support::workflow::RunReport) {
    let data = dir.join("data");
    make_dataset(&data);
    let mut opts = options(&data, &dir.join("run"), &dir.join("cache"));
    opts.recipe.reject = true;
    let r = train_and_evaluate(&opts, &Device::Cpu, &|_, _| {}, &mut |_| {}).unwrap();
    (opts, r)
}

/// `--reject`: an eleventh class learned from generated negatives; the model file, the
/// metrics and the predictor carry it.
#[test]
fn a_rejecting_model_has_a_not_a_digit_class_and_reports_false_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let (data, cache, out) = (dir.path().join("data"), dir.path().join("cache"), dir.path().join("run"));
    let (_, r) = train_rejecting(dir.path());
    let loaded = support::model::load_model(&r.model_path, &Device::Cpu).unwrap();
    assert_eq!(loaded.meta.architecture.classes, 11);
    assert_eq!(loaded.meta.classes.last().map(String::as_str), Some("not a digit"));
    assert_eq!(r.evaluation.confusion.len(), 11);
    let rej = r.metrics.rejection.as_ref().unwrap();
    let kinds: Vec<&str> = rej.false_accept.keys().map(String::as_str).collect();
    let expected = [
        "bursts",
        "chord",
        "clicks",
        "cut_short",
        "modulated",
        "music",
        "noise",
        "reversed",
        "silence",
        "spliced",
        "sweep",
        "tone",
    ];
    assert_eq!(kinds, expected);
    assert!(rej.negatives >= 12 * 5 && (0.0..=1.0).contains(&rej.false_reject), "{rej:?}");
    // The threshold alternative: higher thresholds reject more digits and accept fewer negatives.
    assert_eq!(rej.sweep.len(), 6);
    for w in rej.sweep.windows(2) {
        assert!(
            w[1].false_reject >= w[0].false_reject
                && w[1].false_accept_non_speech <= w[0].false_accept_non_speech
        );
    }
    let report = std::fs::read_to_string(out.join("classification_report.txt")).unwrap();
    assert!(report.contains("not a digit"), "{report}");
    let p = support::infer::Predictor::load_on(&r.model_path, &Device::Cpu).unwrap();
    let q = p.predict_samples(&common::tone(16000, 0.5, 300.0), 16000).unwrap();
    assert_eq!(q.probabilities.len(), 11);
    assert_eq!(q.label, q.digit.map_or("not a digit".to_string(), |d| d.to_string()));
    // Without --reject the same run rejects nothing: every negative is taken for a digit.
    let plain = train_and_evaluate(
        &options(&data, &dir.path().join("plain"), &cache),
        &Device::Cpu,
        &|_, _| {},
        &mut |_| {},
    )
    .unwrap();
    let rej = plain.metrics.rejection.unwrap();
    assert_eq!((rej.false_reject, rej.false_accept_non_speech, rej.false_accept_speech), (0.0, 1.0, 1.0));
}

/// `audio-mnist negatives`: every kind, seeded, with a manifest.
#[test]
fn negatives_command_writes_every_kind_reproducibly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    make_dataset(&data);
    let make = |out: &Path, seed: &str| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_audio-mnist"))
            .args(["negatives", "--count", "3", "--seed", seed, "--out"])
            .arg(out)
            .arg("--from")
            .arg(&data)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let (a, b, c) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("c"));
    make(&a, "7");
    make(&b, "7");
    make(&c, "8");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("negatives.json")).unwrap()).unwrap();
    let files = manifest["files"].as_array().unwrap();
    assert_eq!(files.len(), 12 * 3, "9 generated and 3 speech kinds, 3 of each");
    for f in files {
        let name = f["file"].as_str().unwrap();
        let audio = support::dsp::audio::load_wav(&a.join(name), 60.0).unwrap();
        assert_eq!(audio.sample_rate, 16000);
        assert!(name.starts_with(f["kind"].as_str().unwrap()), "{f}");
        assert_eq!(
            std::fs::read(a.join(name)).unwrap(),
            std::fs::read(b.join(name)).unwrap(),
            "seeded: {name}"
        );
    }
    assert_ne!(std::fs::read(a.join("tone_0.wav")).unwrap(), std::fs::read(c.join("tone_0.wav")).unwrap());
    assert!(files.iter().any(|f| f["kind"] == "spliced" && f["source"].as_str().unwrap().contains(" + ")));
}

/// `--negatives DIR`: a folder of other words is learned as "not a digit", split by speaker,
/// and its test speakers are scored as the kind `words`, also by `evaluate`.
#[test]
fn a_folder_of_other_words_is_learned_and_scored_by_speaker() {
    use support::train::negatives::Part;
    use support::train::other_speech::speaker_part;
    let dir = tempfile::tempdir().unwrap();
    let (data, cache, out) = (dir.path().join("data"), dir.path().join("cache"), dir.path().join("run"));
    make_dataset(&data);
    // Other "words": two-tone glides, 12 speakers x 3 takes.
    let words = dir.path().join("words");
    std::fs::create_dir_all(&words).unwrap();
    let speakers: Vec<String> = (0..12).map(|i| format!("v{i}")).collect();
    for (s, speaker) in speakers.iter().enumerate() {
        for take in 0..3 {
            let mut x = common::tone(8000, 0.25, 900.0 + 40.0 * s as f32);
            x.extend(common::tone(8000, 0.25, 1400.0 + 30.0 * take as f32));
            common::write_wav(&words.join(format!("word{take}_{speaker}_{take}.wav")), 8000, &x);
        }
    }
    let test_files = 3 * speakers.iter().filter(|s| speaker_part(s) == Part::Test).count();
    assert!(test_files > 0, "some test speakers among {speakers:?}");
    let mut opts = options(&data, &out, &cache);
    opts.recipe = Recipe::new(
        RecipeName::Seed,
        42,
        support::train::Overrides {
            negatives: Some(vec![words.clone()]),
            epochs: Some(2),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(opts.recipe.reject, "--negatives turns the class on");
    let r = train_and_evaluate(&opts, &Device::Cpu, &|_, _| {}, &mut |_| {}).unwrap();
    let rej = r.metrics.rejection.as_ref().unwrap();
    assert!(rej.false_accept.contains_key("words"), "{rej:?}");
    let plain = 12 * 5; // 5 of each generated (9) and speech (3) kind for 40 test digits
    assert_eq!(rej.negatives, plain + test_files, "{rej:?}");
    // The model file records the folder; evaluate scores the same words.
    let loaded = support::model::load_model(&r.model_path, &Device::Cpu).unwrap();
    assert_eq!(loaded.meta.recipe.unwrap().negatives, vec![words]);
    evaluate_in(dir.path(), &r.model_path).unwrap();
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("eval/metrics.json")).unwrap())
            .unwrap();
    assert_eq!(m["rejection"]["negatives"], serde_json::json!(plain + test_files));
    // --reject false with --negatives is refused, with the reason.
    let o = train_cli(dir.path(), &dir.path().join("bad"), &["--negatives", "x", "--reject", "false"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--negatives"));
}

/// `audio-mnist negatives --words`: espeak-ng's voices saying non-digit words, seeded, with
/// test voices saying words no other voice says.
#[test]
fn negatives_words_are_spoken_by_split_voices() {
    use support::train::negatives::Part;
    use support::train::other_speech::{speaker_of, speaker_part};
    let have =
        std::process::Command::new("espeak-ng").arg("--version").output().is_ok_and(|o| o.status.success());
    if !have {
        let required = std::env::var("AUDIO_MNIST_REQUIRE_SHARED").is_ok_and(|v| v == "1");
        assert!(!required, "CI must have espeak-ng (.ci/run installs it)");
        eprintln!("SKIPPED: espeak-ng not on PATH");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let make = |out: &Path| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_audio-mnist"))
            .args(["negatives", "--words", "--voices", "20", "--count", "3", "--seed", "5", "--out"])
            .arg(out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    make(&a);
    make(&b);
    let (files, _) = support::infer::collect_inputs(&[a.clone()]).unwrap();
    assert_eq!(files.len(), 60);
    let (mut test_words, mut other_words) =
        (std::collections::BTreeSet::new(), std::collections::BTreeSet::new());
    for f in &files {
        let audio = support::dsp::audio::load_wav(f, 60.0).unwrap();
        assert_eq!(audio.sample_rate, 16000);
        assert!(audio.samples.iter().any(|v| v.abs() > 0.05), "{} is silent", f.display());
        assert_eq!(std::fs::read(f).unwrap(), std::fs::read(b.join(f.file_name().unwrap())).unwrap());
        let word = f.file_name().unwrap().to_string_lossy().split('_').next().unwrap().to_string();
        assert!(!["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
            .contains(&word.as_str()));
        if speaker_part(&speaker_of(f, &a)) == Part::Test {
            test_words.insert(word)
        } else {
            other_words.insert(word)
        };
    }
    assert!(!test_words.is_empty() && test_words.is_disjoint(&other_words), "{test_words:?}");
}

/// The notebook's explorer gains the "not a digit" row: every test negative, by kind.
#[cfg(feature = "notebook")]
#[test]
fn the_explorer_lists_the_negatives_in_the_not_a_digit_row() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (opts, r) = train_rejecting(dir.path());
    let plan = opts.plan().unwrap();
    let (set, _) =
        support::data::prepare::load_features(&plan.dataset, &cache, &opts.recipe.features(), &|_, _| {})
            .unwrap();
    let prep = support::data::prepare::Prepared::new(plan.dataset, set, plan.split).unwrap();
    let model = support::model::load_model(&r.model_path, &Device::Cpu).unwrap().model;
    let tested = support::eval::artifacts::test(&model, &prep, &Device::Cpu, &dir.path().join("t")).unwrap();
    let explorer = support::notebook::ConfusionExplorer::new(&prep, &tested);
    let negatives = tested.rejection.as_ref().unwrap().negatives;
    assert_eq!(explorer.confusion.len(), 11);
    assert_eq!(explorer.confusion[10].iter().sum::<usize>(), negatives);
    let listed: usize = (0..11).map(|p| explorer.files(10, p).len()).sum();
    assert_eq!(listed, negatives);
    let p = (0..11).max_by_key(|&p| explorer.confusion[10][p]).unwrap();
    let html = explorer.cell(10, p).0;
    assert!(html.contains("not a digit") && html.contains(" #") && html.contains("generated"), "{html}");
}
