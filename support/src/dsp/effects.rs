//! Time-domain steps on the signal at the analysis rate, as librosa names them:
//! `librosa.effects.trim` ([`trim_bounds`]), `librosa.util.normalize` ([`normalize`]),
//! `librosa.util.fix_length` ([`fix_length`]).

/// `librosa.effects.trim(y, top_db, frame_length, hop_length)` bounds: `[start, end)` in samples.
///
/// Frame energies are `librosa.feature.rms` with centred, zero-padded frames; a frame is kept
/// when `10*log10(mean_square / max_mean_square) > -top_db` (with librosa's amin of 1e-10 on
/// both). The kept span runs from the first kept frame's sample to the end of the last one,
/// capped at the signal length. A signal with no kept frame gives `(0, 0)`; an all-zero
/// signal keeps everything, as in librosa (both sides clamp to amin).
pub fn trim_bounds(y: &[f32], top_db: f32, frame_length: usize, hop_length: usize) -> (usize, usize) {
    let n = y.len();
    let half = frame_length / 2;
    let padded_len = n + 2 * half;
    if padded_len < frame_length {
        return (0, n);
    }
    let n_frames = 1 + (padded_len - frame_length) / hop_length;
    // Sum of squares over signal range [lo, hi) (zero padding adds nothing). With the usual
    // frame = 4 hops and half = 2 hops, a frame is a sum of whole hop-sized blocks, so sum
    // each block once (8 independent lanes, so it vectorises) instead of every frame anew.
    let block_sums: Vec<f64> = y.chunks(hop_length).map(sum_sq).collect();
    let aligned = frame_length % hop_length == 0 && half % hop_length == 0;
    let mean_sq: Vec<f64> = (0..n_frames)
        .map(|t| {
            // padded index p maps to signal index p - half
            let lo = (t * hop_length).saturating_sub(half).min(n);
            let hi = (t * hop_length + frame_length).saturating_sub(half).min(n);
            let total = if aligned {
                block_sums[lo / hop_length..hi.div_ceil(hop_length)].iter().sum::<f64>()
            } else {
                sum_sq(&y[lo..hi])
            };
            total / frame_length as f64
        })
        .collect();
    const AMIN: f64 = 1e-10;
    let max = mean_sq.iter().cloned().fold(0f64, f64::max).max(AMIN);
    let keep = |&ms: &f64| 10.0 * (ms.max(AMIN) / max).log10() > -(top_db as f64);
    match (mean_sq.iter().position(keep), mean_sq.iter().rposition(keep)) {
        (Some(first), Some(last)) => (first * hop_length, ((last + 1) * hop_length).min(n)),
        _ => (0, 0),
    }
}

fn sum_sq(x: &[f32]) -> f64 {
    let mut lanes = [0f64; 8];
    let chunks = x.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|v| (*v as f64) * (*v as f64)).sum();
    for c in chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += (*v as f64) * (*v as f64);
        }
    }
    lanes.iter().sum::<f64>() + tail
}

/// `librosa.util.normalize(y)` (norm=inf): divide by the peak magnitude. A silent signal
/// (peak below f32's smallest normal number) is left as it is instead of becoming NaN.
pub fn normalize(y: &mut [f32]) {
    let peak = y.iter().fold(0f32, |m, s| m.max(s.abs()));
    if peak >= f32::MIN_POSITIVE {
        let inv = 1.0 / peak as f64;
        for s in y.iter_mut() {
            *s = (*s as f64 * inv) as f32;
        }
    }
}

/// `librosa.util.fix_length(y, size=n)`: zero-pad at the end or truncate.
pub fn fix_length(mut y: Vec<f32>, n: usize) -> Vec<f32> {
    y.resize(n, 0.0);
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_keeps_the_loud_part() {
        let mut y = vec![0.0f32; 16000];
        for (i, v) in y[6000..9000].iter_mut().enumerate() {
            *v = (i as f32 * 0.3).sin();
        }
        let (s, e) = trim_bounds(&y, 20.0, 2048, 512);
        assert!(s <= 6000 && s >= 6000 - 2048, "{s}");
        assert!(e >= 9000 && e <= 9000 + 2048, "{e}");
    }

    #[test]
    fn normalize_peaks_at_one() {
        let mut y = vec![0.1, -0.5, 0.25];
        normalize(&mut y);
        assert_eq!(y, vec![0.2, -1.0, 0.5]);
    }
}
