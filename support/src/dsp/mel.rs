//! The mel scale and mel filterbank exactly as `librosa.filters.mel` builds them
//! (Slaney's auditory-toolbox scale, `htk=False`, and `norm="slaney"` area normalisation).

/// Slaney mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above
/// (`librosa.hz_to_mel(f, htk=False)`).
pub fn hz_to_mel(hz: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;
    let logstep = 6.4f64.ln() / 27.0;
    if hz >= MIN_LOG_HZ {
        MIN_LOG_MEL + (hz / MIN_LOG_HZ).ln() / logstep
    } else {
        hz / F_SP
    }
}

/// Inverse of [`hz_to_mel`] (`librosa.mel_to_hz(m, htk=False)`).
pub fn mel_to_hz(mel: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;
    let logstep = 6.4f64.ln() / 27.0;
    if mel >= MIN_LOG_MEL {
        MIN_LOG_HZ * (logstep * (mel - MIN_LOG_MEL)).exp()
    } else {
        F_SP * mel
    }
}

/// `n` frequencies evenly spaced on the mel scale between `fmin` and `fmax` (`librosa.mel_frequencies`).
pub fn mel_frequencies(n: usize, fmin: f64, fmax: f64) -> Vec<f64> {
    let (lo, hi) = (hz_to_mel(fmin), hz_to_mel(fmax));
    (0..n)
        .map(|i| {
            let t = if n > 1 { i as f64 / (n - 1) as f64 } else { 0.0 };
            mel_to_hz(lo + (hi - lo) * t)
        })
        .collect()
}

/// Centre frequency of each rFFT bin (`librosa.fft_frequencies`).
pub fn fft_frequencies(sr: f64, n_fft: usize) -> Vec<f64> {
    (0..=n_fft / 2).map(|k| k as f64 * sr / n_fft as f64).collect()
}

/// Dense `[n_mels][1 + n_fft/2]` triangular filterbank, `librosa.filters.mel(sr=sr, n_fft=n_fft,
/// n_mels=n_mels, fmin=fmin, fmax=fmax, htk=False, norm="slaney")`.
///
/// Like librosa, triangles are computed in f64, stored as f32, and then scaled by the
/// Slaney area factor `2 / (f[i+2] - f[i])`.
pub fn filterbank(sr: f64, n_fft: usize, n_mels: usize, fmin: f64, fmax: f64) -> Vec<Vec<f32>> {
    let fftfreqs = fft_frequencies(sr, n_fft);
    let mel_f = mel_frequencies(n_mels + 2, fmin, fmax);
    (0..n_mels)
        .map(|i| {
            let (f0, f1, f2) = (mel_f[i], mel_f[i + 1], mel_f[i + 2]);
            let enorm = 2.0 / (f2 - f0);
            fftfreqs
                .iter()
                .map(|&f| {
                    let lower = (f - f0) / (f1 - f0);
                    let upper = (f2 - f) / (f2 - f1);
                    let w = 0f64.max(lower.min(upper)) as f32;
                    (w as f64 * enorm) as f32
                })
                .collect()
        })
        .collect()
}

/// The filterbank stored by its non-zero span per band: a mel band touches a few dozen FFT
/// bins out of 1025, so applying it sparsely is ~30x less work than a dense matrix product.
#[derive(Clone, Debug)]
pub struct SparseFilterbank {
    /// For each band: first non-zero bin and the weights from there on.
    pub bands: Vec<(usize, Vec<f32>)>,
    pub n_bins: usize,
}

impl SparseFilterbank {
    pub fn from_dense(dense: &[Vec<f32>]) -> Self {
        let n_bins = dense.first().map_or(0, |r| r.len());
        let bands = dense
            .iter()
            .map(|row| match row.iter().position(|&w| w != 0.0) {
                None => (0, Vec::new()),
                Some(start) => {
                    let end = row.iter().rposition(|&w| w != 0.0).map_or(start, |e| e + 1);
                    (start, row[start..end].to_vec())
                }
            })
            .collect();
        Self { bands, n_bins }
    }

    /// `mel[m] = sum_k W[m, k] * power[k]` for one spectrum frame.
    pub fn apply(&self, power: &[f32], out: &mut [f32]) {
        for (o, (start, w)) in out.iter_mut().zip(&self.bands) {
            *o = w.iter().zip(&power[*start..]).map(|(a, b)| a * b).sum();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mel_scale_round_trips_and_matches_known_points() {
        // librosa.hz_to_mel(1000) == 15, hz_to_mel(8000) == 45.245640471924965
        assert!((hz_to_mel(1000.0) - 15.0).abs() < 1e-12);
        assert!((hz_to_mel(8000.0) - 45.245640471924965).abs() < 1e-9);
        for hz in [0.0, 60.0, 999.0, 1000.0, 4321.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-6, "{hz}");
        }
    }

    #[test]
    fn sparse_filterbank_equals_dense_product() {
        let dense = filterbank(16000.0, 2048, 128, 0.0, 8000.0);
        let sparse = SparseFilterbank::from_dense(&dense);
        let power: Vec<f32> = (0..1025).map(|k| ((k * 7919) % 101) as f32 / 10.0).collect();
        let mut out = vec![0.0; 128];
        sparse.apply(&power, &mut out);
        for (m, row) in dense.iter().enumerate() {
            let want: f64 = row.iter().zip(&power).map(|(a, b)| *a as f64 * *b as f64).sum();
            assert!((out[m] as f64 - want).abs() <= 1e-4 * want.abs().max(1.0), "band {m}");
        }
    }
}
