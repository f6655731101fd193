//! `GET /api/model`: the model card, written from the model file alone: what it recognises,
//! what it learned from, how it was tested, how it was built and what to expect of it. No
//! server path appears (file names only).

use serde_json::{json, Value};
use support::model::ModelMeta;

/// The card of a model file named `file`.
pub fn card(meta: &ModelMeta, file: Option<String>) -> Value {
    let m = &meta.metrics;
    let split = &meta.split;
    let names = |k: &str| -> Vec<String> {
        split[k]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let (mut train, test) = (names("train"), names("test"));
    let mut files = m["train_files"].as_u64();
    // An ensemble's networks validate on different speakers (`member_split`), so together
    // they learned from the validation speakers too.
    if meta.members.len() > 1 {
        train.extend(names("val"));
        files = files.zip(m["val_files"].as_u64()).map(|(t, v)| t + v);
    }
    // The training speakers' folders (`folder/speaker`), else the tested datasets' names.
    let mut datasets: Vec<String> =
        train.iter().filter_map(|s| s.split_once('/').map(|(d, _)| d.to_string())).collect();
    datasets.sort();
    datasets.dedup();
    if datasets.is_empty() {
        datasets = m["per_dataset"].as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
    }
    let recognises: Vec<String> =
        meta.classes.iter().map(|c| if c == "reject" { "not a digit".into() } else { c.clone() }).collect();
    let mut limits = vec![format!(
        "It learned from {} speaker{}{}: voices, accents and microphones far from theirs are \
         recognised less well. \"Teach it your voice\" adapts it to yours.",
        train.len(),
        if train.len() == 1 { "" } else { "s" },
        if datasets.is_empty() { String::new() } else { format!(" ({})", datasets.join(", ")) }
    )];
    limits.push(if meta.classes.len() > 10 {
        "It answers \"not a digit\" for sounds and words it was taught to reject; other sounds may \
         still be taken for a digit."
            .into()
    } else {
        "It has no \"not a digit\" answer: every sound is taken for some digit (silence excepted).".into()
    });
    limits.push("One word at a time, English digit words, zero to nine; sequences are cut at pauses.".into());
    json!({
        "file": file,
        "recognises": recognises,
        "classes": meta.classes,
        "recipe": meta.recipe.as_ref().map(|r| json!({"name": r.name, "about": recipe_words(meta)})),
        "learned_from": {"speakers": train.len(), "datasets": datasets, "files": files},
        "tested_on": {
            "speakers": test,
            "files": m["test_files"],
            "accuracy": m["test_accuracy"],
            // Measured before `calibrate` changed the temperature, if it did.
            "calibration_error": if m["calibrated"].is_null() { m["calibration"]["ece_after"].clone() } else { serde_json::Value::Null },
        },
        "calibrated": m["calibrated"],
        "size": {"parameters": m["params"], "networks": meta.members.len().max(1)},
        "adaptation": meta.adaptation.as_ref().map(adaptation_words),
        "limits": limits,
        "features": meta.features,
        "architecture": meta.architecture,
    })
}

/// "3 CNNs, their answers averaged; trained with babble, reverb, vtlp".
fn recipe_words(meta: &ModelMeta) -> String {
    let n = meta.members.len().max(1);
    let arch = match meta.architecture.arch {
        support::model::Arch::Cnn => "CNN",
        support::model::Arch::TcResnet => "TC-ResNet",
    };
    let nets = if n == 1 { format!("one {arch}") } else { format!("{n} {arch}s, their answers averaged") };
    let aug = meta.recipe.as_ref().map(|r| r.augment.names().join(", ")).unwrap_or_default();
    if aug.is_empty() {
        nets
    } else {
        format!("{nets}; trained with {aug}")
    }
}

/// What an adapted file says about its adaptation, without paths.
fn adaptation_words(a: &Value) -> Value {
    json!({
        "speakers": a["speakers"],
        "takes": a["takes"].as_u64().or_else(|| a["files"].as_array().map(|f| f.len() as u64)),
        "date": a["date"],
    })
}
