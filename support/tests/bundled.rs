//! The bundled model (`support/models/`): small, half precision, made by the documented command
//! (its recorded recipe and split are that command's), scoring what its card says, and what a
//! fresh clone's `predict` uses with no training.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::infer::bundled::{BUNDLED, BUNDLED_NAME};
use support::infer::{ModelChoice, Predictor};

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// The card's count of correct answers for `corpus` (its table rows read
/// `| corpus | clips | correct | accuracy |`).
fn card_correct(corpus: &str) -> (usize, usize) {
    let card = std::fs::read_to_string(models_dir().join("README.md")).unwrap();
    let row = card
        .lines()
        .find(|l| l.starts_with(&format!("| {corpus} |")))
        .unwrap_or_else(|| panic!("the card has no row for {corpus}"));
    let cells: Vec<&str> = row.split('|').map(|c| c.trim().trim_matches('*')).collect();
    (cells[2].parse().unwrap(), cells[3].parse().unwrap())
}

/// Correct answers of `predictor` on every WAV in `dir` (the digit is the name's first field).
fn correct_in(predictor: &Predictor, dir: &Path, speaker: Option<&str>) -> (usize, usize) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wav"))
        .filter(|p| {
            speaker.is_none_or(|s| p.file_name().unwrap().to_string_lossy().split('_').nth(1) == Some(s))
        })
        .collect();
    files.sort();
    let answers = predictor.predict_files(&files);
    let correct = answers
        .iter()
        .filter(|(p, r)| {
            let truth = p.file_name().unwrap().to_string_lossy().split('_').next().unwrap().to_string();
            r.as_ref().is_ok_and(|a| a.label == truth)
        })
        .count();
    (files.len(), correct)
}

#[test]
fn the_bundled_model_is_small_half_precision_and_made_by_the_documented_command() {
    assert!(BUNDLED.len() <= 10 << 20, "{} bytes", BUNDLED.len());
    let st = safetensors::SafeTensors::deserialize(BUNDLED).unwrap();
    assert!(st.tensors().iter().all(|(_, t)| t.dtype() == safetensors::Dtype::F16));
    let predictor = ModelChoice::Bundled.load_on(&candle_core::Device::Cpu).unwrap();
    let meta = predictor.meta();
    // What support/models/make_default.sh asks for: `best`, three networks, seed 42, FSDD's george
    // for testing and jackson for validation, FSDD and synth200 as training data.
    let recipe = meta.recipe.as_ref().expect("the recipe is recorded");
    assert_eq!((recipe.name, recipe.ensemble, recipe.seed), (support::train::RecipeName::Best, 3, 42));
    // `best` as it stands: the word found in a room, 32 ms frames over 40 bands, warm-up epochs.
    let best = support::train::Recipe::named(support::train::RecipeName::Best);
    assert_eq!((recipe.word_trim, recipe.warmup), (best.word_trim, best.warmup));
    assert_eq!(meta.features, best.features());
    assert_eq!((meta.features.n_fft, meta.features.n_mels), (512, 40));
    assert_eq!(meta.split["test"], serde_json::json!(["fsdd/george"]));
    assert_eq!(meta.split["val"], serde_json::json!(["fsdd/jackson"]));
    let train = meta.split["train"].as_array().unwrap();
    assert_eq!(train.iter().filter(|s| s.as_str().unwrap().starts_with("fsdd/")).count(), 4);
    assert_eq!(train.iter().filter(|s| s.as_str().unwrap().starts_with("synth200/")).count(), 200);
    // No path of the machine it was made on: training folders by name only.
    assert_eq!(recipe.train_data, [PathBuf::from("synth200")]);
    let script = std::fs::read_to_string(models_dir().join("make_default.sh")).unwrap();
    assert!(
        script.contains("--recipe best --ensemble 3") && script.contains("--voices 200 --count 1 --seed 11")
    );
    // `calibrate` on the strangers: one temperature for the three networks, softer than as trained
    // (the networks were overconfident on new voices), no "not a digit" threshold.
    assert!(script.contains("calibrate --model") && script.contains("speech-commands-digits"));
    let t = &meta.temperatures;
    assert!(t.len() == 3 && t.iter().all(|&x| x == t[0]) && (1.2..4.0).contains(&t[0]), "{t:?}");
    assert_eq!(meta.reject_threshold, None);
    assert_eq!(meta.metrics["calibrated"]["recordings"], 239, "fitted on all of speech-commands-digits");
    assert!(script.contains(BUNDLED_NAME));
}

#[test]
fn the_bundled_model_scores_what_its_card_says() {
    let Some(data) = common::shared_data() else { return };
    let predictor = ModelChoice::Bundled.load_on(&candle_core::Device::Cpu).unwrap();
    for (corpus, dir, speaker) in [
        ("speech-commands-digits", data.join("speech-commands-digits/recordings"), None),
        ("fsdd george", data.join("fsdd/recordings"), Some("george")),
    ] {
        let (clips, correct) = correct_in(&predictor, &dir, speaker);
        let (card_clips, card_correct) = card_correct(corpus);
        assert_eq!(clips, card_clips, "{corpus}");
        // The same bits on the same kind of CPU; one clip of slack for another CPU's rounding.
        assert!(
            correct.abs_diff(card_correct) <= 1,
            "{corpus}: {correct} correct, the card says {card_correct}"
        );
    }
}

#[test]
fn a_fresh_clone_predicts_with_the_bundled_model() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("seven.wav");
    std::fs::write(&wav, include_bytes!("../src/bin/audio-mnist/examples/seven.wav")).unwrap();
    // In a folder without out/model.safetensors, and no --model: the bundled model answers.
    let out = Command::new(env!("CARGO_BIN_EXE_audio-mnist"))
        .current_dir(dir.path())
        .args(["predict", "--json", "seven.wav"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("the bundled digits-en.safetensors"), "{stderr}");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["label"], "7", "{answer}");
    // A trained model in out/ takes over, and says so.
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    std::fs::write(dir.path().join("out/model.safetensors"), b"not a model").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_audio-mnist"))
        .current_dir(dir.path())
        .args(["predict", "seven.wav"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("model: out/model.safetensors (yours") && stderr.contains("not a safetensors file"),
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn serve_without_a_model_serves_the_bundled_one() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_audio-mnist"))
        .current_dir(dir.path())
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("listening on ").expect("the address line").to_string();
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let get = |path: &str| {
        let mut r = agent.get(format!("{url}{path}")).call().unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    };
    let (status, card) = get("/api/model");
    assert_eq!(status, 200);
    assert!(
        card.contains(BUNDLED_NAME) && !card.contains("safetensors\\/") && !card.contains("/models/"),
        "{card}"
    );
    // The card names every training folder and how the confidences were calibrated.
    let card: serde_json::Value = serde_json::from_str(&card).unwrap();
    assert_eq!(card["learned_from"]["datasets"], serde_json::json!(["fsdd", "synth200"]), "{card}");
    // Three networks, each validating on another FSDD speaker: together all five learned.
    assert_eq!(card["learned_from"]["speakers"], 205, "{card}");
    assert_eq!(card["learned_from"]["files"], 4500, "{card}");
    assert_eq!(card["calibrated"]["recordings"], 239, "{card}");
    let mut r = agent
        .post(format!("{url}/api/predict"))
        .header("Content-Type", "audio/wav")
        .send(&include_bytes!("../src/bin/audio-mnist/examples/seven.wav")[..])
        .unwrap();
    let answer: serde_json::Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(answer["label"], "7", "{answer}");
    // An unknown path is refused in the API's own words.
    let (status, body) = get("/api/nothing");
    assert_eq!(status, 404);
    assert!(body.contains("\"error\"") && body.contains("/api/nothing"), "{body}");
    child.kill().ok();
    child.wait().ok();
}
