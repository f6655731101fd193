//! A "not a digit" threshold for a stated false-reject rate, fitted on held-out speakers'
//! digits (`audio-mnist calibrate`): the class's own argmax refused a sixth of strangers'
//! digits (support/RESULTS.md), and a rate users can count on is what rejection needs.

/// The "not a digit" threshold that refuses at most `false_reject` of real digits whose
/// "not a digit" probabilities are `p_reject`: just above the (k+1)-th largest, k the allowed
/// refusals (ties at it are all accepted). `None` without digits.
pub fn fit_reject_threshold(p_reject: &[f32], false_reject: f64) -> Option<f32> {
    let mut sorted: Vec<f32> =
        p_reject.iter().map(|p| if p.is_nan() { 1.0 } else { p.clamp(0.0, 1.0) }).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(|a, b| b.total_cmp(a));
    let allowed =
        ((false_reject.clamp(0.0, 1.0) * sorted.len() as f64).floor() as usize).min(sorted.len() - 1);
    // The smallest f32 above the (k+1)-th largest, at most 1 (a probability of 1 is refused).
    sorted.get(allowed).map(|&p| f32::from_bits(p.max(f32::MIN_POSITIVE).to_bits() + 1).min(1.0))
}

#[cfg(test)]
mod tests {
    use super::fit_reject_threshold;

    #[test]
    fn the_fitted_threshold_refuses_the_stated_share_of_digits() {
        let p: Vec<f32> = (0..100).map(|i| i as f32 / 100.0).collect();
        let t = fit_reject_threshold(&p, 0.03).unwrap();
        assert_eq!(p.iter().filter(|&&v| v >= t).count(), 3, "{t}");
        assert!(t > 0.96 && t <= 0.97, "{t}");
        // No refusals allowed: above the largest; everything refused is capped at 1.
        let t0 = fit_reject_threshold(&p, 0.0).unwrap();
        assert!(p.iter().all(|&v| v < t0));
        assert_eq!(fit_reject_threshold(&[1.0, 1.0], 0.0), Some(1.0));
        // Ties at the cut are accepted together, so fewer than the share may be refused.
        let t = fit_reject_threshold(&[0.5; 10], 0.2).unwrap();
        assert!(t > 0.5);
        assert_eq!(fit_reject_threshold(&[], 0.03), None);
    }
}
