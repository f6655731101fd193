//! Evaluation: accuracy, confusion matrix, scikit-learn-style classification report,
//! per-speaker accuracy (here); the artifacts written for a model ([`artifacts`]),
//! cross-validation ([`crossval`]), accuracy under noise, rooms and phone lines
//! ([`robustness`]), the many-speaker scoreboard ([`benchmark`]) and the PNG figures ([`plots`]).

#[cfg(feature = "train")]
pub mod artifacts;
#[cfg(feature = "train")]
pub mod benchmark;
pub mod calibration;
#[cfg(feature = "train")]
pub mod crossval;
#[cfg(feature = "train")]
pub mod plots;
#[cfg(feature = "train")]
pub mod rejection;
#[cfg(feature = "train")]
pub mod robustness;

use std::collections::BTreeMap;

use anyhow::Result;
use candle_core::Tensor;
use serde::Serialize;

use crate::data::dataset::Dataset;
use crate::model::Classifier;

/// Class names of the digit task.
pub fn digit_names() -> Vec<String> {
    class_names(10)
}

/// The name of the eleventh class of a model that can reject.
pub const NOT_A_DIGIT: &str = "not a digit";

/// Names of `classes` outputs: the ten digits, then "not a digit" for an eleventh.
pub fn class_names(classes: usize) -> Vec<String> {
    (0..classes).map(|d| if d < 10 { d.to_string() } else { NOT_A_DIGIT.to_string() }).collect()
}

/// Class probabilities for every row of `x` (`[N, 1, M, T]`, unstandardised log-Mel dB), in
/// batches.
pub fn predict_probabilities(model: &Classifier, x: &Tensor, batch: usize) -> Result<Vec<Vec<f32>>> {
    let n = x.dim(0)?;
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(batch.max(1)) {
        let len = batch.min(n - start);
        let p = model.probabilities(&x.narrow(0, start, len)?)?;
        out.extend(p.to_vec2::<f32>()?);
    }
    Ok(out)
}

/// Index of the largest value (first on ties).
pub fn argmax(p: &[f32]) -> usize {
    p.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) })
        .0
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ClassStats {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

/// Everything computed from true and predicted labels.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Evaluation {
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
    pub accuracy: f64,
    pub per_class: Vec<ClassStats>,
    pub macro_avg: ClassStats,
    pub weighted_avg: ClassStats,
}

impl Evaluation {
    pub fn new(truth: &[usize], predicted: &[usize], classes: usize) -> Self {
        let mut confusion = vec![vec![0usize; classes]; classes];
        for (&t, &p) in truth.iter().zip(predicted) {
            confusion[t][p] += 1;
        }
        let total = truth.len();
        let correct: usize = (0..classes).map(|c| confusion[c][c]).sum();
        // scikit-learn's convention: a ratio with a zero denominator is 0.
        let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let per_class: Vec<ClassStats> = (0..classes)
            .map(|c| {
                let tp = confusion[c][c];
                let predicted_c: usize = (0..classes).map(|t| confusion[t][c]).sum();
                let support: usize = confusion[c].iter().sum();
                let (precision, recall) = (ratio(tp, predicted_c), ratio(tp, support));
                let f1 = if precision + recall == 0.0 {
                    0.0
                } else {
                    2.0 * precision * recall / (precision + recall)
                };
                ClassStats { precision, recall, f1, support }
            })
            .collect();
        let avg = |w: &dyn Fn(&ClassStats) -> f64, norm: f64| ClassStats {
            precision: per_class.iter().map(|s| s.precision * w(s)).sum::<f64>() / norm,
            recall: per_class.iter().map(|s| s.recall * w(s)).sum::<f64>() / norm,
            f1: per_class.iter().map(|s| s.f1 * w(s)).sum::<f64>() / norm,
            support: total,
        };
        let macro_avg = avg(&|_| 1.0, classes as f64);
        let weighted_avg = avg(&|s| s.support as f64, total.max(1) as f64);
        Self { confusion, accuracy: ratio(correct, total), per_class, macro_avg, weighted_avg }
    }

    /// The report exactly as `sklearn.metrics.classification_report(digits=4)` lays it out.
    pub fn report(&self, names: &[String]) -> String {
        let w = names.iter().map(|n| n.len()).max().unwrap_or(0).max("weighted avg".len());
        let row = |label: &str, c: &ClassStats| {
            format!("{label:>w$}  {:>9.4} {:>9.4} {:>9.4} {:>9}\n", c.precision, c.recall, c.f1, c.support)
        };
        let mut s =
            format!("{:>w$}  {:>9} {:>9} {:>9} {:>9}\n\n", "", "precision", "recall", "f1-score", "support");
        for (name, c) in names.iter().zip(&self.per_class) {
            s += &row(name, c);
        }
        s += &format!(
            "\n{:>w$}  {:>9} {:>9} {:>9.4} {:>9}\n",
            "accuracy", "", "", self.accuracy, self.macro_avg.support
        );
        s += &row("macro avg", &self.macro_avg);
        s += &row("weighted avg", &self.weighted_avg);
        s
    }
}

/// Accuracy per speaker: (speaker, correct, total), sorted by speaker.
pub fn per_speaker(speakers: &[String], truth: &[usize], predicted: &[usize]) -> Vec<(String, usize, usize)> {
    let mut map: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    for ((s, t), p) in speakers.iter().zip(truth).zip(predicted) {
        let e = map.entry(s).or_default();
        e.0 += (t == p) as usize;
        e.1 += 1;
    }
    map.into_iter().map(|(s, (c, n))| (s.to_string(), c, n)).collect()
}

/// Test accuracy on one dataset folder (of a union of several).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct FolderAccuracy {
    pub correct: usize,
    pub total: usize,
    pub accuracy: f64,
}

/// Accuracy per dataset folder, from each row's speaker id; `add` sums another's counts in.
pub fn per_dataset(
    dataset: &Dataset,
    speakers: &[String],
    truth: &[usize],
    predicted: &[usize],
) -> BTreeMap<String, FolderAccuracy> {
    let mut out = BTreeMap::new();
    for (speaker, correct, total) in per_speaker(speakers, truth, predicted) {
        let name = dataset.source_of_speaker(&speaker).to_string();
        add_counts(&mut out, &BTreeMap::from([(name, FolderAccuracy { correct, total, accuracy: 0.0 })]));
    }
    out
}

/// Sum `more`'s counts into `into` (crossval adds up its folds) and update the accuracies.
pub fn add_counts(into: &mut BTreeMap<String, FolderAccuracy>, more: &BTreeMap<String, FolderAccuracy>) {
    for (name, m) in more {
        let e = into.entry(name.clone()).or_default();
        e.correct += m.correct;
        e.total += m.total;
        e.accuracy = e.correct as f64 / e.total.max(1) as f64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_scikit_learn_on_a_small_case() {
        // sklearn: y_true=[0,0,1,1,2,2], y_pred=[0,1,1,1,2,0]
        let e = Evaluation::new(&[0, 0, 1, 1, 2, 2], &[0, 1, 1, 1, 2, 0], 3);
        assert_eq!(e.confusion, vec![vec![1, 1, 0], vec![0, 2, 0], vec![1, 0, 1]]);
        assert!((e.accuracy - 4.0 / 6.0).abs() < 1e-12);
        assert!((e.per_class[1].precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((e.per_class[0].f1 - 0.5).abs() < 1e-12);
        // macro f1 = (0.5 + 0.8 + 0.6666..)/3
        assert!((e.macro_avg.f1 - (0.5 + 0.8 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
        // sklearn.metrics.classification_report([0,0,1,1,2,2], [0,1,1,1,2,0], digits=4), verbatim
        let want = "              precision    recall  f1-score   support\n\n           0     0.5000    0.5000    0.5000         2\n           1     0.6667    1.0000    0.8000         2\n           2     1.0000    0.5000    0.6667         2\n\n    accuracy                         0.6667         6\n   macro avg     0.7222    0.6667    0.6556         6\nweighted avg     0.7222    0.6667    0.6556         6\n";
        assert_eq!(e.report(&["0".into(), "1".into(), "2".into()]), want);
    }

    #[test]
    fn empty_classes_give_zero_not_nan() {
        let e = Evaluation::new(&[0, 0], &[0, 0], 3);
        assert!(e.per_class.iter().all(|c| c.f1.is_finite() && c.precision.is_finite()));
        assert_eq!(
            per_speaker(&["a".into(), "b".into()], &[0, 0], &[0, 1]),
            vec![("a".into(), 1, 1), ("b".into(), 0, 1)]
        );
    }
}
