//! Bringing a signal to the analysis sample rate, as `librosa.load(sr=...)` does with soxr's
//! "HQ" resampler: `ceil(n * sr_out / sr_in)` samples out, no delay.
//!
//! Two resamplers:
//! - [`resample_into`]: rubato's synchronous FFT resampler, any ratio (up-sampling FSDD's
//!   8 kHz, speed perturbation);
//! - [`Downsampler::Sinc`]: for input above the analysis rate (AudioMNIST's 48 kHz, 44.1 kHz,
//!   ...), a Kaiser-windowed sinc low-pass fitted to soxr HQ's measured response, applied to the
//!   whole signal in one FFT: the spectrum below the new Nyquist frequency, weighted by the
//!   filter's response, is the resampled signal's spectrum. Its cost does not grow with the
//!   filter's length, so the filter can be as steep as soxr's (see RESULTS.md, "48 kHz").

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler, WindowFunction};
use serde::{Deserialize, Serialize};

use crate::Error;

/// How a signal above the analysis rate is brought down to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Downsampler {
    /// Windowed-sinc low-pass matched to soxr HQ, in one FFT (the default since 2026-12-01).
    Sinc,
    /// rubato's FFT resampler, as every rate change before 2026-12-01 (kept so that older
    /// caches and model files compute the features they were made with).
    Rubato,
}

impl Downsampler {
    /// What a feature config without the field (older caches and model files) used.
    pub fn legacy() -> Self {
        Self::Rubato
    }
}

/// Bring `samples` from `sr_in` to `sr_out` into `out` (replacing its contents): `down`
/// when `sr_in > sr_out`, rubato otherwise.
pub fn to_rate(
    down: Downsampler,
    samples: &[f32],
    sr_in: u32,
    sr_out: u32,
    out: &mut Vec<f32>,
) -> Result<(), Error> {
    match down {
        Downsampler::Sinc if sr_in > sr_out && !samples.is_empty() => {
            sinc_downsample_into(samples, sr_in, sr_out, out)
        }
        _ => resample_into(samples, sr_in, sr_out, out),
    }
}

/// `ceil(len * sr_out / sr_in)`: librosa's output length.
fn output_len(len: usize, sr_in: u32, sr_out: u32) -> usize {
    (len as u128 * sr_out as u128).div_ceil(sr_in as u128) as usize
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// About this many input frames per FFT block of the resampler. Long blocks give a steep
/// anti-aliasing filter (close to soxr's "HQ" used by librosa); the delay they add is trimmed
/// by rubato.
const RESAMPLER_TARGET_CHUNK: usize = 2048;

/// Input block length: a power-of-two multiple of the smallest block the rate pair allows
/// (`sr_in / gcd`), so the FFT sizes factor into small primes. (For 48 kHz -> 16 kHz a plain
/// 2048 becomes 2049 = 3 x 683 in, 683 out: a prime-sized FFT, 5x slower.)
fn resampler_chunk(sr_in: u32, sr_out: u32) -> usize {
    let min_in = sr_in as usize / gcd(sr_in as usize, sr_out as usize);
    min_in * RESAMPLER_TARGET_CHUNK.div_ceil(min_in).next_power_of_two()
}

thread_local! {
    // Building an FFT resampler plans FFTs and designs a filter: keep one per rate pair and
    // thread, so a batch of files at the same rate pays that once.
    static RESAMPLERS: RefCell<HashMap<(u32, u32), Fft<f32>>> = RefCell::new(HashMap::new());
}

/// Resample a mono signal to `sr_out`, returning `ceil(len * sr_out / sr_in)` samples like
/// `librosa.resample` (rubato's synchronous FFT resampler, delay compensated).
pub fn resample(samples: &[f32], sr_in: u32, sr_out: u32) -> Result<Vec<f32>, Error> {
    let mut out = Vec::new();
    resample_into(samples, sr_in, sr_out, &mut out)?;
    Ok(out)
}

/// [`resample`] into a caller's buffer (replacing its contents).
pub fn resample_into(samples: &[f32], sr_in: u32, sr_out: u32, out: &mut Vec<f32>) -> Result<(), Error> {
    out.clear();
    if sr_in == sr_out || samples.is_empty() {
        out.extend_from_slice(samples);
        return Ok(());
    }
    let expected = output_len(samples.len(), sr_in, sr_out);
    RESAMPLERS.with_borrow_mut(|map| {
        let resampler = match map.entry((sr_in, sr_out)) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => v.insert(
                Fft::<f32>::new_custom(
                    sr_in as usize,
                    sr_out as usize,
                    resampler_chunk(sr_in, sr_out),
                    1,
                    1,
                    WindowFunction::BlackmanHarris2,
                    FixedSync::Input,
                )
                .map_err(|e| Error::Resample(e.to_string()))?,
            ),
        };
        let input =
            InterleavedSlice::new(samples, 1, samples.len()).map_err(|e| Error::Resample(e.to_string()))?;
        resampler.reset();
        // rubato needs room for its delay and a last padded block; the delay is cut off the
        // front for us, so the signal starts at 0 and the padding is truncated below.
        let needed = resampler.process_all_needed_output_len(samples.len());
        out.resize(needed, 0.0);
        let mut output = InterleavedSlice::new_mut(out.as_mut_slice(), 1, needed)
            .map_err(|e| Error::Resample(e.to_string()))?;
        let (_, produced) = resampler
            .process_all_into_buffer(&input, &mut output, samples.len(), None)
            .map_err(|e| Error::Resample(e.to_string()))?;
        out.truncate(produced.min(expected));
        out.resize(expected, 0.0);
        Ok(())
    })
}

/// The sinc filter, fitted to soxr HQ's magnitude response (measured 48 -> 16 kHz with white
/// noise: flat to 7.45 kHz, -3 dB at 7.6 kHz, -130 dB at 8 kHz) by
/// `tests/fixtures/fit_soxr_filter.py`: within 1.1 dB of it down to -90 dB. Cutoff (-6 dB) as
/// a fraction of the output's Nyquist frequency:
const SINC_CUTOFF: f64 = 0.956875;
/// Taps each side of the centre, in output samples (304 input taps at 48 -> 16 kHz).
const SINC_HALF_SPAN: f64 = 101.34;
/// Kaiser window shape (about 130 dB stopband).
const SINC_BETA: f64 = 14.0;

/// One FFT length's transforms and filter response (per rate pair and length).
struct SincPlan {
    forward: Arc<dyn RealToComplex<f32>>,
    inverse: Arc<dyn ComplexToReal<f32>>,
    /// The filter's response at bins `0..=n_out/2`, divided by `n_in` (realfft does not scale).
    gain: Vec<f32>,
}

/// Per thread: the planner, the plans by (rate pair, length), reusable buffers.
#[derive(Default)]
struct SincState {
    planner: RealFftPlanner<f32>,
    plans: HashMap<(u32, u32, usize), Rc<SincPlan>>,
    input: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
}

thread_local! {
    static SINC: RefCell<SincState> = RefCell::new(SincState::default());
}

/// A windowed-sinc down-sampler applied in the frequency domain (see the module docs): the
/// signal, zero-padded past the filter's reach so that the FFT's wrap-around adds nothing, is
/// transformed once; the bins up to the new Nyquist frequency, times the filter's response,
/// are transformed back at the new rate. `ceil(len * sr_out / sr_in)` samples, no delay.
pub fn sinc_downsample_into(
    samples: &[f32],
    sr_in: u32,
    sr_out: u32,
    out: &mut Vec<f32>,
) -> Result<(), Error> {
    debug_assert!(sr_in > sr_out);
    let g = gcd(sr_in as usize, sr_out as usize);
    let (p, q) = (sr_in as usize / g, sr_out as usize / g);
    let reach = (SINC_HALF_SPAN * sr_in as f64 / sr_out as f64).ceil() as usize;
    let m = fft_len_at_least((samples.len() + reach).div_ceil(p));
    let (n_in, n_out) = (p * m, q * m);
    let fail = |e: &dyn std::fmt::Display| Error::Resample(e.to_string());
    SINC.with_borrow_mut(|st| {
        let plan = sinc_plan(st, sr_in, sr_out, n_in, n_out, reach).map_err(|e| fail(&e))?;
        st.input.clear();
        st.input.extend_from_slice(samples);
        st.input.resize(n_in, 0.0);
        st.spectrum.resize(n_in / 2 + 1, Complex::default());
        st.scratch
            .resize(plan.forward.get_scratch_len().max(plan.inverse.get_scratch_len()), Complex::default());
        plan.forward
            .process_with_scratch(&mut st.input, &mut st.spectrum, &mut st.scratch)
            .map_err(|e| fail(&e))?;
        let kept = &mut st.spectrum[..n_out / 2 + 1];
        for (z, g) in kept.iter_mut().zip(&plan.gain) {
            *z *= *g;
        }
        kept[0].im = 0.0;
        if n_out % 2 == 0 {
            kept[n_out / 2].im = 0.0; // the Nyquist bin of a real signal is real
        }
        out.resize(n_out, 0.0);
        plan.inverse.process_with_scratch(kept, out, &mut st.scratch).map_err(|e| fail(&e))?;
        out.truncate(output_len(samples.len(), sr_in, sr_out));
        Ok(())
    })
}

/// The cached plan for one length, made on first use: FFTs and the filter's response (the
/// FFT of its zero-phase taps laid out around sample 0).
fn sinc_plan(
    st: &mut SincState,
    sr_in: u32,
    sr_out: u32,
    n_in: usize,
    n_out: usize,
    reach: usize,
) -> Result<Rc<SincPlan>, realfft::FftError> {
    if let Some(plan) = st.plans.get(&(sr_in, sr_out, n_in)) {
        return Ok(plan.clone());
    }
    if st.plans.len() >= 64 {
        st.plans.clear(); // many lengths (a stream of odd sizes): bound the memory
    }
    let forward = st.planner.plan_fft_forward(n_in);
    let inverse = st.planner.plan_fft_inverse(n_out);
    let mut taps = vec![0f32; n_in];
    for (t, h) in sinc_taps(sr_out as f64 / 2.0 * SINC_CUTOFF / sr_in as f64, reach).into_iter().enumerate() {
        let offset = t as isize - reach as isize;
        taps[offset.rem_euclid(n_in as isize) as usize] = h as f32;
    }
    let mut response = forward.make_output_vec();
    forward.process(&mut taps, &mut response)?;
    let gain = response[..n_out / 2 + 1].iter().map(|z| z.re / n_in as f32).collect();
    let plan = Rc::new(SincPlan { forward, inverse, gain });
    st.plans.insert((sr_in, sr_out, n_in), plan.clone());
    Ok(plan)
}

/// `2 * reach + 1` taps of a Kaiser-windowed sinc low-pass with cutoff `fc` (cycles per
/// sample), unit gain at DC.
pub fn sinc_taps(fc: f64, reach: usize) -> Vec<f64> {
    let i0_beta = bessel_i0(SINC_BETA);
    let taps: Vec<f64> = (0..=2 * reach)
        .map(|i| {
            let t = i as f64 - reach as f64;
            let x = 2.0 * fc * t;
            let sinc =
                if t == 0.0 { 1.0 } else { (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x) };
            let r = t / reach.max(1) as f64;
            sinc * bessel_i0(SINC_BETA * (1.0 - r * r).max(0.0).sqrt()) / i0_beta
        })
        .collect();
    let sum: f64 = taps.iter().sum();
    taps.into_iter().map(|h| h / sum).collect()
}

/// The modified Bessel function of the first kind, order 0 (the Kaiser window's shape), by its
/// power series (converges for every argument; ~40 terms at 14).
pub fn bessel_i0(x: f64) -> f64 {
    let (mut sum, mut term, q) = (1.0, 1.0, x * x / 4.0);
    for k in 1..200 {
        term *= q / (k * k) as f64;
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

/// The smallest `2^a`, `3 * 2^a` or `9 * 2^a` that is `>= n`: the FFT lengths rustfft did
/// fastest here (48 kHz files, `bench-features`: radix 5 or higher powers of 3 were 4-8% slower
/// overall than the few percent more length these cost).
fn fft_len_at_least(n: usize) -> usize {
    let n = n.max(1);
    let mut best = n.next_power_of_two();
    let mut p3 = 1;
    while p3 <= 9 && p3 < best {
        let mut v = p3;
        while v < n {
            v *= 2;
        }
        best = best.min(v);
        p3 *= 3;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f64, sr: u32, n: usize, phase: f64) -> Vec<f32> {
        (0..n)
            .map(|i| (2.0 * std::f64::consts::PI * hz * i as f64 / sr as f64 + phase).sin() as f32)
            .collect()
    }

    /// Amplitude of a down-sampled tone, in dB, away from the edges.
    fn gain_db(hz: f64, sr_in: u32) -> f64 {
        let mut out = Vec::new();
        sinc_downsample_into(&tone(hz, sr_in, sr_in as usize, 0.3), sr_in, 16_000, &mut out).unwrap();
        let peak = out[2000..14000].iter().fold(0f32, |m, v| m.max(v.abs()));
        20.0 * (peak as f64).log10()
    }

    #[test]
    fn bessel_i0_matches_tabulated_values() {
        // Abramowitz & Stegun table 9.8 / scipy.special.i0
        for (x, want) in
            [(0.0, 1.0), (1.0, 1.2660658777520082), (5.0, 27.239871823604442), (14.0, 129_418.56270064)]
        {
            assert!((bessel_i0(x) / want - 1.0).abs() < 1e-12, "{x}");
        }
    }

    #[test]
    fn fft_lengths_are_powers_of_two_times_1_3_or_9() {
        let allowed = |v: usize| [1, 3, 9].iter().any(|k| v % k == 0 && (v / k).is_power_of_two());
        assert_eq!(fft_len_at_least(0), 1);
        assert_eq!(fft_len_at_least(17_382), 18_432); // 9 * 2^11
        assert_eq!(fft_len_at_least(1025), 1152);
        for n in 1..3000 {
            let s = fft_len_at_least(n);
            assert!(s >= n && allowed(s) && !(n..s).any(allowed), "{n} -> {s}");
        }
    }

    #[test]
    fn sinc_downsampling_keeps_the_band_aligned_and_lengths_like_librosa() {
        for sr in [48_000, 44_100, 22_050, 32_000] {
            for n in [1, 2, 3, 1000, 44_101] {
                let mut out = Vec::new();
                sinc_downsample_into(&vec![0.5; n], sr, 16_000, &mut out).unwrap();
                assert_eq!(out.len(), output_len(n, sr, 16_000), "{sr} Hz, {n} samples");
            }
            // a 1 kHz tone comes out as the same tone at 16 kHz: no delay, unit gain
            let mut out = Vec::new();
            sinc_downsample_into(&tone(1000.0, sr, sr as usize, 0.3), sr, 16_000, &mut out).unwrap();
            let want = tone(1000.0, 16_000, 16_000, 0.3);
            let err =
                out[500..15_500].iter().zip(&want[500..]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(err < 1e-4, "{sr} Hz: max error {err}");
        }
    }

    #[test]
    fn sinc_response_follows_soxr_hq() {
        // soxr HQ, 48 -> 16 kHz, measured with white noise (fit_soxr_filter.py): 0 dB to 7.45 kHz,
        // -2.9 dB at 7.6, -9.8 at 7.7, -24.5 at 7.8, -51 at 7.9; aliases of 8-24 kHz are gone.
        for (hz, want, tol) in [
            (7000.0, 0.0, 0.05),
            (7600.0, -2.9, 0.6),
            (7700.0, -9.8, 1.0),
            (7800.0, -24.5, 1.2),
            (7900.0, -51.0, 1.5),
        ] {
            let got = gain_db(hz, 48_000);
            assert!((got - want).abs() <= tol, "{hz} Hz: {got:.2} dB, soxr {want} dB");
        }
        for hz in [8100.0, 9000.0, 15_000.0, 23_000.0] {
            assert!(gain_db(hz, 48_000) < -100.0, "{hz} Hz aliases: {:.1} dB", gain_db(hz, 48_000));
        }
        assert!(gain_db(7000.0, 44_100).abs() < 0.05 && gain_db(9000.0, 44_100) < -100.0);
    }

    #[test]
    fn older_feature_configs_keep_rubato() {
        let mut json = serde_json::to_value(crate::FeatureConfig::default()).unwrap();
        assert_eq!(json["downsampler"], "sinc");
        json.as_object_mut().unwrap().remove("downsampler");
        let old: crate::FeatureConfig = serde_json::from_value(json).unwrap();
        assert_eq!(old.downsampler, Downsampler::Rubato);
        // and rubato is what runs for them
        let x = tone(7900.0, 48_000, 4800, 0.0);
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        to_rate(Downsampler::Rubato, &x, 48_000, 16_000, &mut a).unwrap();
        resample_into(&x, 48_000, 16_000, &mut b).unwrap();
        to_rate(Downsampler::Sinc, &x, 48_000, 16_000, &mut c).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
