//! Calibrated confidences: temperature scaling (Guo et al. 2017) fitted on validation
//! speakers, and the expected calibration error that measures it. A printed 0.9 should be
//! right about nine times in ten.

use serde::Serialize;

/// Bins of the expected calibration error (the usual 15).
pub const ECE_BINS: usize = 15;

/// Expected calibration error: the confidences cut into `bins` equal-width bins, the gap
/// between each bin's mean confidence and its accuracy, weighted by the bin's share.
pub fn expected_calibration_error(confidence: &[f32], correct: &[bool], bins: usize) -> f64 {
    let n = confidence.len().min(correct.len());
    if n == 0 || bins == 0 {
        return f64::NAN;
    }
    let mut sum_conf = vec![0f64; bins];
    let mut hits = vec![0usize; bins];
    let mut count = vec![0usize; bins];
    for (&c, &ok) in confidence.iter().zip(correct) {
        // Bin (k/B, (k+1)/B], as scikit-learn and the paper: 1.0 lands in the last bin.
        let k = ((c.clamp(0.0, 1.0) as f64 * bins as f64).ceil() as usize).clamp(1, bins) - 1;
        sum_conf[k] += c as f64;
        hits[k] += ok as usize;
        count[k] += 1;
    }
    (0..bins).filter(|&k| count[k] > 0).map(|k| (sum_conf[k] - hits[k] as f64).abs() / n as f64).sum()
}

/// The expected calibration error a perfectly calibrated model would still show on this many
/// test clips: each answer right with exactly its confidence, `draws` seeded draws, the mean.
/// ECE is biased upwards on small sets (about 0.04 on 239 clips at our confidences), so a
/// measured ECE means little until it stands clear of this floor.
pub fn ece_floor(confidence: &[f32], bins: usize, draws: usize, seed: u64) -> f64 {
    use rand::{Rng, SeedableRng};
    if confidence.is_empty() || draws == 0 {
        return f64::NAN;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let total: f64 = (0..draws)
        .map(|_| {
            let correct: Vec<bool> = confidence.iter().map(|&c| rng.random::<f32>() < c).collect();
            expected_calibration_error(confidence, &correct, bins)
        })
        .sum();
    total / draws as f64
}

/// Expected calibration error of class probabilities against the true classes.
pub fn ece_of(probabilities: &[Vec<f32>], truth: &[usize]) -> f64 {
    let predicted: Vec<usize> = probabilities.iter().map(|p| super::argmax(p)).collect();
    let confidence = top_confidence(probabilities);
    let correct: Vec<bool> = predicted.iter().zip(truth).map(|(p, t)| p == t).collect();
    expected_calibration_error(&confidence, &correct, ECE_BINS)
}

/// Each row's largest probability.
pub fn top_confidence(probabilities: &[Vec<f32>]) -> Vec<f32> {
    probabilities.iter().map(|p| p[super::argmax(p)]).collect()
}

/// Mean negative log-likelihood of `labels` under softmax(`logits` / `t`).
pub fn nll(logits: &[Vec<f32>], labels: &[usize], t: f64) -> f64 {
    ensemble_nll(std::slice::from_ref(&logits.to_vec()), labels, t)
}

/// Each row's log-softmax of `z / t`.
fn log_softmax(z: &[f32], t: f64) -> Vec<f64> {
    let max = z.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64 / t));
    let log_sum = z.iter().map(|&v| (v as f64 / t - max).exp()).sum::<f64>().ln() + max;
    z.iter().map(|&v| v as f64 / t - log_sum).collect()
}

/// Mean negative log-likelihood of `labels` under an ensemble's averaged softmax(logits / `t`):
/// `member_logits[k][row]` are network k's logits as trained.
pub fn ensemble_nll(member_logits: &[Vec<Vec<f32>>], labels: &[usize], t: f64) -> f64 {
    let k = member_logits.len() as f64;
    let total: f64 = (0..labels.len())
        .map(|i| {
            let logs: Vec<f64> = member_logits.iter().map(|m| log_softmax(&m[i], t)[labels[i]]).collect();
            let max = logs.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
            -(logs.iter().map(|l| (l - max).exp()).sum::<f64>().ln() + max - k.ln())
        })
        .sum();
    total / labels.len().max(1) as f64
}

/// An ensemble's averaged class probabilities with every network's logits divided by `t`.
pub fn ensemble_probabilities(member_logits: &[Vec<Vec<f32>>], t: f64) -> Vec<Vec<f32>> {
    let rows = member_logits.first().map_or(0, Vec::len);
    (0..rows)
        .map(|i| {
            let mut p = vec![0f64; member_logits[0][i].len()];
            for m in member_logits {
                log_softmax(&m[i], t).iter().zip(&mut p).for_each(|(l, s)| *s += l.exp());
            }
            p.iter().map(|v| (v / member_logits.len() as f64) as f32).collect()
        })
        .collect()
}

/// The temperature that minimises the validation NLL (golden-section search over ln T in
/// [ln 0.05, ln 20]; the NLL is convex in 1/T). 1.0 when there is nothing to fit.
pub fn fit_temperature(logits: &[Vec<f32>], labels: &[usize]) -> f32 {
    fit_ensemble_temperature(std::slice::from_ref(&logits.to_vec()), labels)
}

/// [`fit_temperature`] for an ensemble: one temperature shared by its networks, fitted on the
/// averaged probabilities (what the model answers with).
pub fn fit_ensemble_temperature(member_logits: &[Vec<Vec<f32>>], labels: &[usize]) -> f32 {
    if labels.is_empty() || member_logits.is_empty() || member_logits.iter().any(|m| m.len() != labels.len())
    {
        return 1.0;
    }
    let f = |ln_t: f64| ensemble_nll(member_logits, labels, ln_t.exp());
    let (mut a, mut b) = (0.05f64.ln(), 20f64.ln());
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let (mut c, mut d) = (b - g * (b - a), a + g * (b - a));
    let (mut fc, mut fd) = (f(c), f(d));
    for _ in 0..60 {
        if fc < fd {
            (b, d, fd) = (d, c, fc);
            c = b - g * (b - a);
            fc = f(c);
        } else {
            (a, c, fc) = (c, d, fd);
            d = a + g * (b - a);
            fd = f(d);
        }
    }
    ((a + b) / 2.0).exp() as f32
}

/// Calibration of a model's digit confidences on the test speakers.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Calibration {
    /// Each network's temperature, fitted on its validation speakers.
    pub temperatures: Vec<f32>,
    /// Expected calibration error (15 bins) of the test confidences without and with them.
    pub ece_before: f64,
    pub ece_after: f64,
    /// What a perfectly calibrated model with the same confidences would measure here
    /// ([`ece_floor`]): the noise under the two numbers above.
    pub ece_floor: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ece_is_zero_when_confidence_matches_accuracy_and_counts_the_gap() {
        // 10 predictions at 0.8, 8 right: perfectly calibrated.
        let conf = vec![0.8f32; 10];
        let right: Vec<bool> = (0..10).map(|i| i < 8).collect();
        assert!(expected_calibration_error(&conf, &right, 15) < 1e-6);
        // All at 0.99, half right: gap 0.49.
        let right: Vec<bool> = (0..10).map(|i| i % 2 == 0).collect();
        assert!((expected_calibration_error(&[0.99; 10], &right, 15) - 0.49).abs() < 1e-6);
        assert!(expected_calibration_error(&[], &[], 15).is_nan());
    }

    #[test]
    fn a_calibrated_models_ece_floor_shrinks_with_the_test_set() {
        // Confidences spread over 0.5-1: the floor is positive on a small set and falls
        // roughly as one over the square root of its size; seeded, so it repeats.
        let conf = |n: usize| (0..n).map(|i| 0.5 + 0.5 * (i as f32 / n as f32)).collect::<Vec<f32>>();
        let small = ece_floor(&conf(200), 15, 400, 1);
        let large = ece_floor(&conf(3200), 15, 400, 1);
        assert!((0.02..0.08).contains(&small), "{small}");
        assert!(large < small / 2.5 && large > small / 6.0, "{small} -> {large}");
        assert_eq!(small, ece_floor(&conf(200), 15, 400, 1));
        // Confidence 1 everywhere: every draw is right, no gap.
        assert_eq!(ece_floor(&[1.0; 50], 15, 10, 1), 0.0);
        assert!(ece_floor(&[], 15, 10, 1).is_nan());
    }

    #[test]
    fn temperature_undoes_overconfidence() {
        // Labels drawn from softmax(z), logits 4z: an overconfident model whose true
        // temperature is 4.
        let mut state = 12345u64;
        let mut uniform = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 1_000_000) as f64 / 1_000_000.0
        };
        let (mut logits, mut labels) = (Vec::new(), Vec::new());
        for _ in 0..4000 {
            let z: Vec<f64> = (0..10).map(|_| 3.0 * uniform()).collect();
            let e: Vec<f64> = z.iter().map(|v| v.exp()).collect();
            let (mut r, mut y) = (uniform() * e.iter().sum::<f64>(), 0);
            while y < 9 && r >= e[y] {
                r -= e[y];
                y += 1;
            }
            logits.push(z.iter().map(|v| (4.0 * v) as f32).collect::<Vec<_>>());
            labels.push(y);
        }
        let t = fit_temperature(&logits, &labels);
        assert!((3.0..5.0).contains(&t), "T = {t}, want about 4");
        assert!(nll(&logits, &labels, t as f64) < nll(&logits, &labels, 1.0));
        let probabilities = |t: f64| -> Vec<Vec<f32>> {
            logits
                .iter()
                .map(|z| {
                    let e: Vec<f64> = z.iter().map(|&v| (v as f64 / t).exp()).collect();
                    e.iter().map(|v| (v / e.iter().sum::<f64>()) as f32).collect()
                })
                .collect()
        };
        let (before, after) =
            (ece_of(&probabilities(1.0), &labels), ece_of(&probabilities(t as f64), &labels));
        assert!(after < 0.03 && after < before / 4.0, "ECE {before} -> {after}");
        assert_eq!(fit_temperature(&[], &[]), 1.0);
    }

    #[test]
    fn an_ensembles_shared_temperature_is_fitted_on_its_averaged_answer() {
        // Two identical networks answer as one: the same temperature and probabilities.
        let logits: Vec<Vec<f32>> = (0..200)
            .map(|i| (0..10).map(|c| if c == i % 10 { 6.0 } else { (c as f32) * 0.3 }).collect())
            .collect();
        // Labels right four times in five: the logits are overconfident.
        let labels: Vec<usize> = (0..200).map(|i| if i % 5 == 0 { (i + 3) % 10 } else { i % 10 }).collect();
        let one = fit_temperature(&logits, &labels);
        let two = fit_ensemble_temperature(&[logits.clone(), logits.clone()], &labels);
        assert!(one > 1.2 && (one - two).abs() < 1e-3, "{one} vs {two}");
        assert!((ensemble_nll(&[logits.clone()], &labels, 2.0) - nll(&logits, &labels, 2.0)).abs() < 1e-12);
        let p = ensemble_probabilities(
            &[logits.clone(), logits.iter().map(|z| z.iter().rev().cloned().collect()).collect()],
            1.5,
        );
        assert!(p.iter().all(|r| (r.iter().sum::<f32>() - 1.0).abs() < 1e-5));
        // Fitting lowers the NLL of what the ensemble answers.
        let pair = [logits.clone(), logits.iter().map(|z| z.iter().map(|v| v * 0.5).collect()).collect()];
        let t = fit_ensemble_temperature(&pair, &labels) as f64;
        assert!(ensemble_nll(&pair, &labels, t) < ensemble_nll(&pair, &labels, 1.0));
    }
}
