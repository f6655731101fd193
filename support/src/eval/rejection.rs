//! How well a model says "not a digit": the share of the test speakers' digits it rejects
//! (false rejects) and, per kind of negative, the share of negatives it answers with a digit
//! (false accepts). The negatives are generated for the test (their own seed, the test
//! speakers' words reversed and spliced), never the ones training saw.

use std::collections::BTreeMap;

use anyhow::Result;
use candle_core::{Device, Tensor};
use serde::Serialize;

use super::predict_probabilities;
use crate::data::prepare::Prepared;
use crate::infer::decide;
use crate::model::Classifier;
use crate::train::negatives::{negatives, Part};

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
}

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
        })
    }
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
) -> Result<Rejection> {
    let rejected = digit_probabilities.iter().filter(|p| decide(p, threshold).is_none()).count();
    let fx = prep.fx()?;
    let neg = negatives(&fx, &prep.clips(&fx, rows)?, &prep.digits(rows), Part::Test, seed);
    let x =
        Tensor::from_vec(neg.features.clone(), (neg.len(), 1, prep.set.n_mels, prep.set.n_frames), device)?;
    let probabilities = predict_probabilities(model, &x, 256)?;
    let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let (mut speech, mut non_speech) = ((0, 0), (0, 0));
    for (kind, p) in neg.kinds.iter().zip(&probabilities) {
        let accepted = decide(p, threshold).is_some() as usize;
        let c = counts.entry(kind.name().to_string()).or_default();
        *c = (c.0 + accepted, c.1 + 1);
        let total = if kind.is_speech() { &mut speech } else { &mut non_speech };
        *total = (total.0 + accepted, total.1 + 1);
    }
    let rate = |(a, n): (usize, usize)| a as f64 / n.max(1) as f64;
    Ok(Rejection {
        threshold,
        false_reject: rate((rejected, digit_probabilities.len())),
        false_accept: counts.into_iter().map(|(k, c)| (k, rate(c))).collect(),
        false_accept_non_speech: rate(non_speech),
        false_accept_speech: rate(speech),
        negatives: neg.len(),
    })
}
