//! Recording conditions a user's microphone and room add to speech, applied to a waveform:
//! additive noise at a signal-to-noise ratio, babble (other voices), room reverberation from a
//! synthetic impulse response, the telephone band, a level change and clipping. Seeded: the
//! same generator gives the same signal.

use rand::rngs::StdRng;
use rand::Rng;
use realfft::num_complex::Complex;
use realfft::RealFftPlanner;
use serde::{Deserialize, Serialize};

/// One condition.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Condition {
    /// The recording as it is.
    Clean,
    /// White noise at `snr_db` below the recording's power.
    White { snr_db: f32 },
    /// Other recordings summed (a crowd of voices) at `snr_db` below the recording's power.
    Babble { snr_db: f32 },
    /// A room: convolution with exponentially decaying noise whose energy falls 60 dB in `rt60_s`.
    Reverb { rt60_s: f32 },
    /// A phone line: only its 300-3400 Hz band (within what 8 kHz sampling keeps).
    Telephone,
    /// The level changed by `db`.
    Level { db: f32 },
    /// Peak-normalised, then clipped at `at` of full scale.
    Clip { at: f32 },
}

impl Condition {
    /// A short name: `white 10 dB`, `reverb RT60 0.6 s`, ...
    pub fn name(&self) -> String {
        match self {
            Self::Clean => "clean".into(),
            Self::White { snr_db } => format!("white noise {snr_db} dB SNR"),
            Self::Babble { snr_db } => format!("babble {snr_db} dB SNR"),
            Self::Reverb { rt60_s } => format!("reverb RT60 {rt60_s} s"),
            Self::Telephone => "telephone band".into(),
            Self::Level { db } => format!("level {db} dB"),
            Self::Clip { at } => format!("clipped at {at}"),
        }
    }

    /// `y` (at `rate` Hz) under this condition. `babble` holds other recordings at the same
    /// rate to mix in (used by [`Condition::Babble`] only).
    pub fn apply(&self, y: &[f32], rate: u32, babble: &[&[f32]], rng: &mut StdRng) -> Vec<f32> {
        match *self {
            Self::Clean => y.to_vec(),
            Self::White { snr_db } => {
                let noise: Vec<f32> = (0..y.len()).map(|_| gaussian(rng)).collect();
                add_at_snr(y, &noise, snr_db)
            }
            Self::Babble { snr_db } => add_at_snr(y, &babble_noise(y.len(), babble, rng), snr_db),
            Self::Reverb { rt60_s } => reverberate(y, &impulse_response(rt60_s, rate, rng)),
            Self::Telephone => band_pass(y, rate, 300.0, 3400.0),
            Self::Level { db } => y.iter().map(|v| v * 10f32.powf(db / 20.0)).collect(),
            Self::Clip { at } => {
                let peak = y.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
                y.iter().map(|v| (v / peak).clamp(-at, at)).collect()
            }
        }
    }
}

/// The fixed grid `audio-mnist robustness` reports.
pub fn standard_grid() -> Vec<Condition> {
    let mut grid = vec![Condition::Clean];
    for snr_db in [20.0, 10.0, 5.0, 0.0] {
        grid.push(Condition::White { snr_db });
    }
    for snr_db in [20.0, 10.0, 5.0, 0.0] {
        grid.push(Condition::Babble { snr_db });
    }
    grid.extend([
        Condition::Reverb { rt60_s: 0.3 },
        Condition::Reverb { rt60_s: 0.6 },
        Condition::Telephone,
        Condition::Level { db: -30.0 },
        Condition::Clip { at: 0.3 },
    ]);
    grid
}

/// The colour of additive noise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Colour {
    /// Flat spectrum.
    White,
    /// Power falling 3 dB per octave (1/f), like most room and fan noise.
    Pink,
    /// Power falling 6 dB per octave (1/f²), like rumble and wind.
    Brown,
    /// Mains hum: 50 or 60 Hz and its first harmonics.
    Hum,
}

/// `len` samples of noise of `colour` at `rate` Hz (unit-free; scale with [`add_at_snr`]).
pub fn coloured_noise(len: usize, colour: Colour, rate: u32, rng: &mut StdRng) -> Vec<f32> {
    match colour {
        Colour::White => (0..len).map(|_| gaussian(rng)).collect(),
        Colour::Hum => {
            let f0 = if rng.random::<bool>() { 50.0 } else { 60.0 };
            let phase: Vec<f32> = (0..4).map(|_| rng.random_range(0.0..std::f32::consts::TAU)).collect();
            (0..len)
                .map(|i| {
                    let t = i as f32 / rate as f32;
                    (1..=4)
                        .map(|h| (std::f32::consts::TAU * f0 * h as f32 * t + phase[h - 1]).sin() / h as f32)
                        .sum()
                })
                .collect()
        }
        Colour::Pink | Colour::Brown => {
            let white: Vec<f32> = (0..len).map(|_| gaussian(rng)).collect();
            let slope = if colour == Colour::Pink { 0.5 } else { 1.0 };
            shape_spectrum(&white, |bin| if bin == 0 { 0.0 } else { (bin as f32).powf(-slope) })
        }
    }
}

thread_local! {
    // Augmentation filters every clip of every epoch: plan each FFT size once per thread.
    static PLANNER: std::cell::RefCell<RealFftPlanner<f32>> = std::cell::RefCell::new(RealFftPlanner::new());
}

/// Forward and inverse real FFTs of size `n`, planned once per thread.
type Plans =
    (std::sync::Arc<dyn realfft::RealToComplex<f32>>, std::sync::Arc<dyn realfft::ComplexToReal<f32>>);
fn plans(n: usize) -> Plans {
    PLANNER.with_borrow_mut(|p| (p.plan_fft_forward(n), p.plan_fft_inverse(n)))
}

/// `x` with the amplitude of FFT bin `k` multiplied by `gain(k)`.
fn shape_spectrum(x: &[f32], gain: impl Fn(usize) -> f32) -> Vec<f32> {
    let n = x.len().max(2).next_power_of_two();
    let (fwd, inv) = plans(n);
    let mut buf = x.to_vec();
    buf.resize(n, 0.0);
    let mut spec = fwd.make_output_vec();
    if fwd.process(&mut buf, &mut spec).is_err() {
        return x.to_vec();
    }
    spec.iter_mut().enumerate().for_each(|(k, c)| *c *= gain(k));
    let mut out = inv.make_output_vec();
    if inv.process(&mut spec, &mut out).is_err() {
        return x.to_vec();
    }
    out.truncate(x.len());
    out
}

/// A standard normal number (Box-Muller).
pub fn gaussian(rng: &mut StdRng) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

fn power(x: &[f32]) -> f64 {
    x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len().max(1) as f64
}

/// `y + g * noise` with `g` putting the noise `snr_db` below `y`'s power.
pub fn add_at_snr(y: &[f32], noise: &[f32], snr_db: f32) -> Vec<f32> {
    let (py, pn) = (power(y), power(noise));
    if py == 0.0 || pn == 0.0 {
        return y.to_vec();
    }
    let g = (py / pn / 10f64.powf(snr_db as f64 / 10.0)).sqrt() as f32;
    y.iter().zip(noise.iter().cycle()).map(|(a, b)| a + g * b).collect()
}

/// Three to five of `others`, each from a random start, summed to `len` samples.
fn babble_noise(len: usize, others: &[&[f32]], rng: &mut StdRng) -> Vec<f32> {
    let mut out = vec![0f32; len];
    if others.is_empty() {
        return out;
    }
    for _ in 0..rng.random_range(3..=5) {
        let clip = others[rng.random_range(0..others.len())];
        if clip.is_empty() {
            continue;
        }
        let start = rng.random_range(0..clip.len());
        for (i, o) in out.iter_mut().enumerate() {
            *o += clip[(start + i) % clip.len()];
        }
    }
    out
}

/// A direct path followed by exponentially decaying Gaussian noise: the energy falls by 60 dB
/// over `rt60_s` (amplitude `exp(-6.91 t / rt60)`), the impulse response lasting `rt60_s`.
pub fn impulse_response(rt60_s: f32, rate: u32, rng: &mut StdRng) -> Vec<f32> {
    let n = ((rt60_s * rate as f32) as usize).max(1);
    let decay = 6.907_755 / (rt60_s * rate as f32);
    let mut h: Vec<f32> = (0..n).map(|i| 0.3 * gaussian(rng) * (-decay * i as f32).exp()).collect();
    h[0] = 1.0;
    h
}

/// `y * h`, cut to `y`'s length and scaled back to `y`'s peak (a room does not clip).
pub fn reverberate(y: &[f32], h: &[f32]) -> Vec<f32> {
    let n = (y.len() + h.len()).next_power_of_two();
    let (fwd, inv) = plans(n);
    let spectrum = |x: &[f32]| {
        let mut buf = x.to_vec();
        buf.resize(n, 0.0);
        let mut out = fwd.make_output_vec();
        fwd.process(&mut buf, &mut out).map(|_| out)
    };
    let (Ok(a), Ok(b)) = (spectrum(y), spectrum(h)) else { return y.to_vec() };
    let mut prod: Vec<Complex<f32>> = a.iter().zip(&b).map(|(a, b)| a * b).collect();
    let mut out = inv.make_output_vec();
    if inv.process(&mut prod, &mut out).is_err() {
        return y.to_vec();
    }
    out.truncate(y.len());
    let (peak_in, peak_out) =
        (y.iter().fold(0f32, |m, v| m.max(v.abs())), out.iter().fold(0f32, |m, v| m.max(v.abs())));
    let g = if peak_out > 0.0 { peak_in / peak_out } else { 1.0 };
    out.iter().map(|v| v * g).collect()
}

/// `y` with every frequency outside `[lo, hi]` Hz removed (an ideal filter in the frequency
/// domain, over the whole signal).
pub fn band_pass(y: &[f32], rate: u32, lo: f32, hi: f32) -> Vec<f32> {
    let n = y.len().max(2).next_power_of_two();
    let bin_hz = rate as f32 / n as f32;
    let pass = |k: usize| (lo..=hi).contains(&(k as f32 * bin_hz));
    shape_spectrum(y, |k| if pass(k) { 1.0 / n as f32 } else { 0.0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn tone(f: f32, rate: u32, n: usize) -> Vec<f32> {
        (0..n).map(|i| (std::f32::consts::TAU * f * i as f32 / rate as f32).sin() * 0.5).collect()
    }

    #[test]
    fn white_noise_lands_at_the_asked_snr() {
        let y = tone(440.0, 16000, 16000);
        for snr in [20.0, 0.0] {
            let z = Condition::White { snr_db: snr }.apply(&y, 16000, &[], &mut StdRng::seed_from_u64(1));
            let noise: Vec<f32> = z.iter().zip(&y).map(|(a, b)| a - b).collect();
            let got = 10.0 * (power(&y) / power(&noise)).log10();
            assert!((got - snr as f64).abs() < 0.01, "{got} vs {snr}");
        }
    }

    #[test]
    fn telephone_band_removes_low_and_high_frequencies() {
        let rate = 16000;
        for (f, kept) in [(100.0, false), (1000.0, true), (6000.0, false)] {
            let y = tone(f, rate, 8192);
            let z = Condition::Telephone.apply(&y, rate, &[], &mut StdRng::seed_from_u64(1));
            let ratio = power(&z) / power(&y);
            assert!(if kept { ratio > 0.9 } else { ratio < 0.01 }, "{f} Hz: {ratio}");
        }
    }

    #[test]
    fn reverb_decays_by_60_db_over_rt60_and_clipping_caps_the_peak() {
        let h = impulse_response(0.5, 16000, &mut StdRng::seed_from_u64(2));
        assert_eq!(h.len(), 8000);
        let energy = |a: usize, b: usize| h[a..b].iter().map(|v| v * v).sum::<f32>() / (b - a) as f32;
        let drop_db = 10.0 * (energy(1, 800) / energy(7200, 8000)).log10();
        assert!((45.0..70.0).contains(&drop_db), "{drop_db} dB");
        let y = tone(300.0, 16000, 4000);
        let z = Condition::Reverb { rt60_s: 0.5 }.apply(&y, 16000, &[], &mut StdRng::seed_from_u64(3));
        assert_eq!(z.len(), y.len());
        assert_ne!(z, y);
        let c = Condition::Clip { at: 0.3 }.apply(&y, 16000, &[], &mut StdRng::seed_from_u64(3));
        assert!(c.iter().all(|v| v.abs() <= 0.3) && c.iter().any(|v| v.abs() == 0.3));
    }

    #[test]
    fn noise_colours_have_their_slopes() {
        let rate = 16000;
        let band = |x: &[f32], lo: f32, hi: f32| power(&band_pass(x, rate, lo, hi));
        for (colour, low_over_high) in
            [(Colour::White, (0.5, 2.0)), (Colour::Pink, (5.0, 30.0)), (Colour::Brown, (50.0, 1e5))]
        {
            let x = coloured_noise(1 << 15, colour, rate, &mut StdRng::seed_from_u64(4));
            // equal-width bands at 250-500 Hz and 4000-4250 Hz
            let ratio = band(&x, 250.0, 500.0) / band(&x, 4000.0, 4250.0);
            assert!((low_over_high.0..low_over_high.1).contains(&ratio), "{colour:?}: {ratio}");
        }
        let hum = coloured_noise(16000, Colour::Hum, rate, &mut StdRng::seed_from_u64(4));
        assert!(band(&hum, 40.0, 200.0) / power(&hum) > 0.95);
    }

    #[test]
    fn conditions_are_seeded() {
        let y = tone(200.0, 16000, 4000);
        let other = tone(330.0, 16000, 3000);
        for c in standard_grid() {
            let a = c.apply(&y, 16000, &[&other], &mut StdRng::seed_from_u64(5));
            assert_eq!(a, c.apply(&y, 16000, &[&other], &mut StdRng::seed_from_u64(5)), "{}", c.name());
            assert!(a.iter().all(|v| v.is_finite()), "{}", c.name());
        }
        assert_eq!(standard_grid().len(), 14);
    }
}
