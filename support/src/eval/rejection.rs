//! How well a model says "not a digit": the share of the test speakers' digits it rejects
//! (false rejects) and, per kind of negative, the share of negatives it answers with a digit
//! (false accepts). The negatives are generated for the test (their own seed, the test
//! speakers' words reversed and spliced, the test speakers of the `--negatives` folders),
//! never the ones training saw.

use std::collections::BTreeMap;

use anyhow::Result;
use candle_core::{Device, Tensor};
use serde::Serialize;

use super::predict_probabilities;
use crate::data::prepare::Prepared;
use crate::infer::decide;
use crate::model::Classifier;
use crate::train::negatives::{negatives, Negatives, Part};
use crate::train::other_speech::OtherSpeech;

/// `rejection` in `metrics.json` and each fold of `crossval.json`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Rejection {
    /// Reject when the best digit's probability is below this (0: only the model's own
    /// "not a digit" class rejects).
    pub threshold: f32,
    /// Test digits answered "not a digit".
    pub false_reject: f64,
    /// Per kind of negative: the share answered with a digit.
    pub false_accept: BTreeMap<String, f64>,
    /// Over all synthesised (non-speech) negatives, and over the reversed and spliced words.
    pub false_accept_non_speech: f64,
    pub false_accept_speech: f64,
    /// Negatives scored.
    pub negatives: usize,
    /// The same rates with a confidence threshold on top of the model's decision, at
    /// [`SWEEP`]: the "calibrated threshold" alternative to a "not a digit" class.
    pub sweep: Vec<ThresholdPoint>,
}

/// Rates at one threshold.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ThresholdPoint {
    pub threshold: f32,
    pub false_reject: f64,
    pub false_accept_non_speech: f64,
    pub false_accept_speech: f64,
}

/// Thresholds of [`Rejection::sweep`].
pub const SWEEP: [f32; 6] = [0.5, 0.7, 0.8, 0.9, 0.95, 0.99];

/// The seed of the test's generated negatives (the training ones are salted differently and
/// come from other speakers).
pub const TEST_SEED: u64 = 2026;

impl Rejection {
    /// The mean of several (crossval's folds): every rate averaged.
    pub fn mean(all: &[&Rejection]) -> Option<Rejection> {
        let first = all.first()?;
        let n = all.len() as f64;
        let avg = |f: &dyn Fn(&Rejection) -> f64| all.iter().map(|r| f(r)).sum::<f64>() / n;
        let kinds = first.false_accept.keys();
        Some(Rejection {
            threshold: first.threshold,
            false_reject: avg(&|r| r.false_reject),
            false_accept: kinds
                .map(|k| (k.clone(), avg(&|r| r.false_accept.get(k).copied().unwrap_or(f64::NAN))))
                .collect(),
            false_accept_non_speech: avg(&|r| r.false_accept_non_speech),
            false_accept_speech: avg(&|r| r.false_accept_speech),
            negatives: all.iter().map(|r| r.negatives).sum(),
            sweep: (0..first.sweep.len())
                .map(|i| ThresholdPoint {
                    threshold: first.sweep[i].threshold,
                    false_reject: avg(&|r| r.sweep[i].false_reject),
                    false_accept_non_speech: avg(&|r| r.sweep[i].false_accept_non_speech),
                    false_accept_speech: avg(&|r| r.sweep[i].false_accept_speech),
                })
                .collect(),
        })
    }
}

/// The negatives a test scored, with the model's probabilities for each.
#[derive(Clone, Debug, Default)]
pub struct ScoredNegatives {
    pub negatives: Negatives,
    pub probabilities: Vec<Vec<f32>>,
}

/// Score the decision of `model` at `threshold` on the test digits (their probabilities are
/// `digit_probabilities`, rows `rows`) and on negatives made for the test.
pub fn rejection(
    model: &Classifier,
    prep: &Prepared,
    rows: &[usize],
    digit_probabilities: &[Vec<f32>],
    threshold: f32,
    seed: u64,
    device: &Device,
) -> Result<(Rejection, ScoredNegatives)> {
    let fx = prep.fx()?;
    let mut neg = negatives(&fx, &prep.clips(&fx, rows)?, &prep.digits(rows), Part::Test, seed);
    if !prep.negatives.is_empty() {
        neg.extend(OtherSpeech::load(&prep.negatives, &fx)?.negatives(Part::Test, usize::MAX, seed));
    }
    let shape = (neg.len(), 1, prep.set.n_mels, prep.set.n_frames);
    let probabilities =
        predict_probabilities(model, &Tensor::from_vec(neg.features.clone(), shape, device)?, 256)?;
    let share = |rows: Vec<&Vec<f32>>, t: f32, accept: bool| {
        rows.iter().filter(|p| decide(p, t, None).is_some() == accept).count() as f64
            / rows.len().max(1) as f64
    };
    let of_kind = |speech: bool| -> Vec<&Vec<f32>> {
        probabilities
            .iter()
            .zip(&neg.kinds)
            .filter(|(_, k)| k.is_speech() == speech)
            .map(|(p, _)| p)
            .collect()
    };
    let point = |t: f32| ThresholdPoint {
        threshold: t,
        false_reject: share(digit_probabilities.iter().collect(), t, false),
        false_accept_non_speech: share(of_kind(false), t, true),
        false_accept_speech: share(of_kind(true), t, true),
    };
    let at = point(threshold);
    let mut false_accept = BTreeMap::new();
    for kind in neg.kinds.iter().collect::<std::collections::BTreeSet<_>>() {
        let rows = probabilities.iter().zip(&neg.kinds).filter(|(_, k)| *k == kind).map(|(p, _)| p).collect();
        false_accept.insert(kind.name().to_string(), share(rows, threshold, true));
    }
    let rejection = Rejection {
        threshold,
        false_reject: at.false_reject,
        false_accept,
        false_accept_non_speech: at.false_accept_non_speech,
        false_accept_speech: at.false_accept_speech,
        negatives: neg.len(),
        sweep: SWEEP.iter().map(|&t| point(t.max(threshold))).collect(),
    };
    Ok((rejection, ScoredNegatives { negatives: neg, probabilities }))
}
