//! The evaluation artifacts of a model on the test speakers: `classification_report.txt`,
//! `confusion_matrix.png`, `per_speaker_accuracy.csv`, `predictions.csv`.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use candle_core::{Device, Tensor};

use std::collections::BTreeMap;

use super::calibration::{ece_floor, ece_of, top_confidence, Calibration, ECE_BINS};
use super::rejection::{rejection, Rejection, ScoredNegatives, TEST_SEED};
use super::{
    argmax, class_names, per_dataset, per_speaker, predict_probabilities, Evaluation, FolderAccuracy,
};
use crate::data::cache::FeatureSet;
use crate::data::dataset::Dataset;
use crate::data::extract::Progress;
use crate::data::prepare::{load_features, Prepared};
use crate::data::split::{make_split, Split, SplitSpec};
use crate::data::table::Table;
use crate::data::write_json;
use crate::model::{load_model, Classifier};
use crate::train::tensors;

/// The test speakers' outcome, file by file.
pub struct Tested {
    /// Rows of the feature set, in the order of the other fields.
    pub rows: Vec<usize>,
    pub truth: Vec<usize>,
    pub predicted: Vec<usize>,
    pub probabilities: Vec<Vec<f32>>,
    pub evaluation: Evaluation,
    /// Accuracy per dataset folder (one entry unless several folders were given).
    pub per_dataset: BTreeMap<String, FolderAccuracy>,
    /// Expected calibration error of the confidences with and without the temperatures
    /// (`None` without test recordings).
    pub calibration: Option<Calibration>,
    /// False rejects of the test digits and false accepts of negatives made for the test.
    pub rejection: Option<Rejection>,
    /// Those negatives and what the model said of each.
    pub negatives: ScoredNegatives,
}

impl Tested {
    /// Confidence of each prediction (the probability of the predicted digit).
    pub fn confidence(&self) -> Vec<f32> {
        self.probabilities.iter().zip(&self.predicted).map(|(p, &d)| p[d]).collect()
    }
}

/// Score `model` on the test speakers of `prep` and write the evaluation files to `out`.
pub fn test(model: &Classifier, prep: &Prepared, device: &Device, out: &Path) -> Result<Tested> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    if prep.test_rows.is_empty() {
        let evaluation = Evaluation::new(&[], &[], 10);
        return Ok(Tested {
            rows: vec![],
            truth: vec![],
            predicted: vec![],
            probabilities: vec![],
            evaluation,
            per_dataset: BTreeMap::new(),
            calibration: None,
            rejection: None,
            negatives: ScoredNegatives::default(),
        });
    }
    let mut tested = evaluate_rows(model, &prep.set, &prep.dataset, &prep.test_rows, device, out, "test")?;
    let (r, negatives) = rejection(model, prep, &tested.rows, &tested.probabilities, 0.0, TEST_SEED, device)?;
    (tested.rejection, tested.negatives) = (Some(r), negatives);
    Ok(tested)
}

/// Predict `rows` and write the evaluation files (report, confusion matrix PNG, per-speaker
/// CSV, per-file predictions).
#[allow(clippy::too_many_arguments)]
fn evaluate_rows(
    model: &Classifier,
    set: &FeatureSet,
    dataset: &Dataset,
    rows: &[usize],
    device: &Device,
    out: &Path,
    part: &str,
) -> Result<Tested> {
    // Unstandardised: each member applies its own mean and std.
    let (x, _) = tensors(set, rows, 0.0, 1.0, device)?;
    let probabilities = predict_probabilities(model, &x, 256)?;
    let truth: Vec<usize> = rows.iter().map(|&i| set.digits[i] as usize).collect();
    let predicted: Vec<usize> = probabilities.iter().map(|p| argmax(p)).collect();
    let evaluation = Evaluation::new(&truth, &predicted, model.config().classes);
    let calibration = calibration(model, &x, &probabilities, &truth)?;
    write_evaluation(&evaluation, out, part)?;
    let speakers: Vec<String> = rows.iter().map(|&i| set.speakers[i].clone()).collect();
    per_speaker_frame(dataset, &per_speaker(&speakers, &truth, &predicted))
        .write_csv(&out.join("per_speaker_accuracy.csv"))?;
    let per_dataset = per_dataset(dataset, &speakers, &truth, &predicted);
    let (kept, rejection) = (rows.to_vec(), None);
    let tested = Tested {
        rows: kept,
        truth,
        predicted,
        probabilities,
        evaluation,
        per_dataset,
        calibration,
        rejection,
        negatives: ScoredNegatives::default(),
    };
    // Per-file predictions, for error analysis.
    let folders = speakers.iter().map(|s| dataset.source_of_speaker(s).to_string()).collect::<Vec<_>>();
    Table::new()
        .text("dataset", folders)
        .text("file", rows.iter().map(|&i| set.files[i].clone()))
        .text("speaker", speakers)
        .int("digit", tested.truth.iter().map(|&d| d as i64))
        .int("predicted", tested.predicted.iter().map(|&d| d as i64))
        .float("confidence", tested.confidence().into_iter().map(f64::from))
        .write_csv(&out.join("predictions.csv"))?;
    Ok(tested)
}

/// How well the confidences match accuracy, with the model's temperatures and without.
fn calibration(
    model: &Classifier,
    x: &Tensor,
    calibrated: &[Vec<f32>],
    truth: &[usize],
) -> Result<Option<Calibration>> {
    if truth.is_empty() {
        return Ok(None);
    }
    let temperatures = model.temperatures();
    let ece_after = ece_of(calibrated, truth);
    let ece_before = if temperatures.iter().all(|&t| t == 1.0) {
        ece_after
    } else {
        ece_of(&predict_probabilities(&model.uncalibrated(), x, 256)?, truth)
    };
    let ece_floor = ece_floor(&top_confidence(calibrated), ECE_BINS, 400, 7);
    Ok(Some(Calibration { temperatures, ece_before, ece_after, ece_floor }))
}

/// `out/classification_report.txt` and `out/confusion_matrix.png`.
fn write_evaluation(evaluation: &Evaluation, out: &Path, part: &str) -> Result<()> {
    let names = class_names(evaluation.confusion.len());
    std::fs::write(out.join("classification_report.txt"), evaluation.report(&names))
        .with_context(|| format!("writing {}", out.join("classification_report.txt").display()))?;
    let title = format!("{part} confusion matrix (accuracy {:.2}%)", 100.0 * evaluation.accuracy);
    crate::eval::plots::confusion_matrix(
        &evaluation.confusion,
        &names,
        &title,
        &out.join("confusion_matrix.png"),
    )
}

/// The per-speaker accuracy table (with the speakers' metadata when the dataset has it).
pub fn per_speaker_table(prep: &Prepared, tested: &Tested) -> Table {
    let speakers: Vec<String> = tested.rows.iter().map(|&i| prep.set.speakers[i].clone()).collect();
    per_speaker_frame(&prep.dataset, &per_speaker(&speakers, &tested.truth, &tested.predicted))
}

fn per_speaker_frame(dataset: &Dataset, rows: &[(String, usize, usize)]) -> Table {
    let meta = |f: fn(&crate::data::dataset::SpeakerMeta) -> Option<String>| -> Vec<Option<String>> {
        rows.iter().map(|(s, _, _)| dataset.speakers.get(s).and_then(f)).collect()
    };
    let table = Table::new()
        .text("dataset", rows.iter().map(|r| dataset.source_of_speaker(&r.0).to_string()))
        .text("speaker", rows.iter().map(|r| r.0.clone()))
        .int("correct", rows.iter().map(|r| r.1 as i64))
        .int("total", rows.iter().map(|r| r.2 as i64))
        .float("accuracy", rows.iter().map(|r| r.1 as f64 / r.2.max(1) as f64));
    if dataset.speakers.is_empty() {
        return table;
    }
    table
        .text("gender", meta(|m| m.gender.clone()))
        .int("age", rows.iter().map(|(s, _, _)| dataset.speakers.get(s).and_then(|m| m.age)))
        .text("accent", meta(|m| m.accent.clone()))
        .text("native_speaker", meta(|m| m.native_speaker.clone()))
        .text("recording_room", meta(|m| m.recording_room.clone()))
}

/// `audio-mnist evaluate`: score an exported model on the test speakers of `split` (or, when
/// `split` is `None`, on the test speakers recorded in the model) and write the same
/// evaluation files as training does.
pub fn evaluate_model(
    model_path: &Path,
    data: &[std::path::PathBuf],
    out: &Path,
    cache_dir: &Path,
    split: Option<SplitSpec>,
    device: &Device,
    progress: Progress,
) -> Result<Evaluation> {
    let loaded = load_model(model_path, device)?;
    let dataset = crate::data::union::scan_all(data)?;
    let (set, _) = load_features(&dataset, cache_dir, &loaded.meta.features, progress)?;
    let split: Split = match split {
        Some(spec) => make_split(&spec, &dataset.speaker_ids())?,
        None => serde_json::from_value(loaded.meta.split.clone()).context("the model's recorded split")?,
    };
    ensure!(
        !split.test.is_empty(),
        "{} was trained without test speakers (--split none): name them with --test-speakers and --val-speakers",
        model_path.display()
    );
    // The model's own folders of other words, where this machine has them.
    let recipe_negatives = loaded.meta.recipe.as_ref().map(|r| r.negatives.clone()).unwrap_or_default();
    let (found, missing): (Vec<_>, Vec<_>) = recipe_negatives.into_iter().partition(|d| d.is_dir());
    for dir in missing {
        eprintln!(
            "note: {} (the model's --negatives folder) is not here; its words are not scored",
            dir.display()
        );
    }
    let prep = Prepared::for_test(dataset, set, split).with_negatives(&found);
    let (split, rows) = (&prep.split, prep.test_rows.len());
    ensure!(rows > 0, "no recordings of the test speakers {:?} in {}", split.test, prep.dataset.describe());
    let tested = test(&loaded.model, &prep, device, out)?;
    write_json(
        &out.join("metrics.json"),
        &serde_json::json!({"test_accuracy": tested.evaluation.accuracy, "test_files": rows, "per_dataset": tested.per_dataset, "calibration": tested.calibration, "rejection": tested.rejection, "model": model_path.display().to_string(), "split": split}),
    )?;
    Ok(tested.evaluation)
}
