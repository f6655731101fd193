//! The enrollment benchmark: for each test speaker of a folder, adapt on the first K takes of
//! each digit and test on that speaker's other takes; also test the adapted model on the other
//! speakers (does it forget them?) and time the adaptation.

use std::path::Path;

use anyhow::Result;
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{adapt, AdaptConfig, Enrollment};
use crate::data::dataset::Dataset;
use crate::dsp::features::FeatureExtractor;
use crate::eval::{argmax, predict_probabilities};
use crate::model::{load_model, Classifier};

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Takes per digit to adapt on, each measured separately.
    pub takes: Vec<usize>,
    /// Speakers to adapt to; empty: the model's test speakers found in the folder, else all.
    pub speakers: Vec<String>,
    /// At most this many recordings of the other speakers (spread evenly) to test forgetting.
    pub others: usize,
    pub adapt: AdaptConfig,
}

/// One speaker at one number of takes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub speaker: String,
    pub takes: usize,
    /// Recordings adapted on, and tested on (the speaker's other takes).
    pub enrolled: usize,
    pub tested: usize,
    /// Accuracy on the tested recordings before and after adapting.
    pub before: f64,
    pub after: f64,
    /// Accuracy on the other speakers' recordings before and after.
    pub others: usize,
    pub others_before: f64,
    pub others_after: f64,
    pub seconds: f64,
}

/// Every speaker at every number of takes; `on_row` hears each as it is done.
pub fn adapt_bench(
    model: &Path,
    ds: &Dataset,
    cfg: &BenchConfig,
    device: &Device,
    on_row: &mut dyn FnMut(&Row),
) -> Result<Vec<Row>> {
    let original = load_model(model, device)?;
    let fx = FeatureExtractor::new(original.meta.features.clone())?;
    let images = images_of(&fx, ds)?;
    let speakers = speakers_to_adapt(ds, &original.meta.split, &cfg.speakers);
    let mut rows = Vec::new();
    for speaker in &speakers {
        let others =
            spread(ds.recordings.iter().enumerate().filter(|(_, r)| &r.speaker != speaker), cfg.others);
        let others_before = accuracy(&original.model, ds, &images, &others, device)?;
        for &takes in &cfg.takes {
            let enrollment = Enrollment::pick(ds, std::slice::from_ref(speaker), takes)?;
            let enrolled: Vec<&std::path::PathBuf> = enrollment.files.iter().collect();
            let rest: Vec<usize> = (0..ds.recordings.len())
                .filter(|&i| {
                    ds.recordings[i].speaker == *speaker
                        && !enrolled.contains(&&ds.absolute(&ds.recordings[i]))
                })
                .collect();
            if rest.is_empty() {
                continue;
            }
            let adapted = adapt(model, &enrollment, &cfg.adapt, device)?;
            let classifier = adapted.classifier(device)?;
            let row = Row {
                speaker: speaker.clone(),
                takes,
                enrolled: enrollment.files.len(),
                tested: rest.len(),
                before: accuracy(&original.model, ds, &images, &rest, device)?,
                after: accuracy(&classifier, ds, &images, &rest, device)?,
                others: others.len(),
                others_before,
                others_after: accuracy(&classifier, ds, &images, &others, device)?,
                seconds: adapted.seconds,
            };
            on_row(&row);
            rows.push(row);
        }
    }
    Ok(rows)
}

/// One speaker adapted on their first `takes` takes of each digit, and their other takes'
/// confusion matrices (rows: true digit; columns: the model's classes) before and after.
pub struct SpeakerAdaptation {
    pub speaker: String,
    pub takes: usize,
    pub adapted: super::Adapted,
    pub before: Vec<Vec<usize>>,
    pub after: Vec<Vec<usize>>,
}

/// Adapt the model file to one speaker of `ds` and test both models on the speaker's other takes.
pub fn adapt_speaker(
    model: &Path,
    ds: &Dataset,
    speaker: &str,
    takes: usize,
    cfg: &AdaptConfig,
    device: &Device,
) -> Result<SpeakerAdaptation> {
    let original = load_model(model, device)?;
    let enrollment = Enrollment::pick(ds, &[speaker.to_string()], takes)?;
    let rest = held_out(ds, speaker, &enrollment);
    let fx = FeatureExtractor::new(original.meta.features.clone())?;
    let images = images_of(&fx, ds)?;
    let adapted = adapt(model, &enrollment, cfg, device)?;
    let before = confusion(&original.model, ds, &images, &rest, device)?;
    let after = confusion(&adapted.classifier(device)?, ds, &images, &rest, device)?;
    Ok(SpeakerAdaptation { speaker: speaker.to_string(), takes, adapted, before, after })
}

/// The rows of `speaker`'s recordings that `enrollment` did not use.
fn held_out(ds: &Dataset, speaker: &str, enrollment: &Enrollment) -> Vec<usize> {
    (0..ds.recordings.len())
        .filter(|&i| {
            ds.recordings[i].speaker == speaker && !enrollment.files.contains(&ds.absolute(&ds.recordings[i]))
        })
        .collect()
}

/// Counts of (true digit, predicted class) over `rows`.
fn confusion(
    model: &Classifier,
    ds: &Dataset,
    images: &[Vec<f32>],
    rows: &[usize],
    device: &Device,
) -> Result<Vec<Vec<usize>>> {
    let classes = model.config().classes;
    let mut counts = vec![vec![0usize; classes]; 10];
    for (&i, p) in rows.iter().zip(predictions(model, images, rows, device)?) {
        counts[ds.recordings[i].digit as usize][p] += 1;
    }
    Ok(counts)
}

/// The most likely class of each of `rows`.
fn predictions(
    model: &Classifier,
    images: &[Vec<f32>],
    rows: &[usize],
    device: &Device,
) -> Result<Vec<usize>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let arch = model.config();
    let x: Vec<f32> = rows.iter().flat_map(|&i| images[i].iter().copied()).collect();
    let x = Tensor::from_vec(x, (rows.len(), 1, arch.n_mels, arch.n_frames), device)?;
    Ok(predict_probabilities(model, &x, 128)?.iter().map(|p| argmax(p)).collect())
}

/// Every recording's log-Mel image, in the folder's order.
fn images_of(fx: &FeatureExtractor, ds: &Dataset) -> Result<Vec<Vec<f32>>> {
    ds.recordings.par_iter().map(|r| fx.extract_file(&ds.absolute(r)).map_err(anyhow::Error::from)).collect()
}

/// The requested speakers; else the model's test speakers present here; else all.
fn speakers_to_adapt(ds: &Dataset, split: &serde_json::Value, asked: &[String]) -> Vec<String> {
    if !asked.is_empty() {
        return asked.to_vec();
    }
    let all = ds.speaker_ids();
    let tested: Vec<String> = split["test"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str())
                .map(|s| s.rsplit('/').next().unwrap_or(s).to_string())
                .collect()
        })
        .unwrap_or_default();
    let found: Vec<String> = all.iter().filter(|s| tested.contains(s)).cloned().collect();
    if found.is_empty() {
        all
    } else {
        found
    }
}

/// At most `n` of the indices, evenly spread.
fn spread<'a>(items: impl Iterator<Item = (usize, &'a crate::Recording)>, n: usize) -> Vec<usize> {
    let all: Vec<usize> = items.map(|(i, _)| i).collect();
    if all.len() <= n {
        return all;
    }
    (0..n).map(|k| all[k * all.len() / n]).collect()
}

/// Share of `rows` whose most likely class is the recorded digit ("not a digit" is wrong).
fn accuracy(
    model: &Classifier,
    ds: &Dataset,
    images: &[Vec<f32>],
    rows: &[usize],
    device: &Device,
) -> Result<f64> {
    if rows.is_empty() {
        return Ok(f64::NAN);
    }
    let p = predictions(model, images, rows, device)?;
    let right = rows.iter().zip(&p).filter(|(&i, &p)| p == ds.recordings[i].digit as usize).count();
    Ok(right as f64 / rows.len() as f64)
}

/// The rows as a Markdown table, with the mean per number of takes.
pub fn table(rows: &[Row]) -> String {
    let pct = |v: f64| format!("{:.1}", 100.0 * v);
    let mut out = String::from(
        "| speaker | takes | adapted on | tested | before | after | others before | others after | seconds |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        out += &format!(
            "| {} | {} | {} | {} | {} | **{}** | {} | {} | {:.1} |\n",
            r.speaker,
            r.takes,
            r.enrolled,
            r.tested,
            pct(r.before),
            pct(r.after),
            pct(r.others_before),
            pct(r.others_after),
            r.seconds
        );
    }
    let mut takes: Vec<usize> = rows.iter().map(|r| r.takes).collect();
    takes.dedup();
    takes.sort();
    takes.dedup();
    for k in takes {
        let of: Vec<&Row> = rows.iter().filter(|r| r.takes == k).collect();
        let mean = |f: fn(&Row) -> f64| of.iter().map(|r| f(r)).sum::<f64>() / of.len() as f64;
        let worst = of.iter().map(|r| r.after).fold(1.0, f64::min);
        out += &format!(
            "| **mean** ({} speakers) | {k} | | | {} | **{}** (worst {}) | {} | {} | {:.1} |\n",
            of.len(),
            pct(mean(|r| r.before)),
            pct(mean(|r| r.after)),
            pct(worst),
            pct(mean(|r| r.others_before)),
            pct(mean(|r| r.others_after)),
            mean(|r| r.seconds)
        );
    }
    out
}
