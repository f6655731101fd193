//! Sounds that are not digits, for teaching and testing "not a digit": silence, noise of
//! every colour, tones, chords, music-like note sequences, clicks, frequency sweeps, noise with
//! speech's rhythm and cough- or laugh-like bursts, synthesised from a seed; and speech that is
//! not a digit word, made from digit recordings (played backwards, the start of one digit
//! spliced onto the end of another, or a digit cut short).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::dsp::conditions::{coloured_noise, Colour};

/// A kind of negative example.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum NegativeKind {
    /// Digital silence (zeros) or near silence (noise at -80 to -60 dBFS).
    Silence,
    /// White, pink, brown noise or mains hum, stationary.
    Noise,
    /// One sine tone, 80 Hz-4 kHz.
    Tone,
    /// Three or four tones at once (a major or minor chord, with harmonics).
    Chord,
    /// A sequence of plucked notes with harmonics: music-like.
    Music,
    /// Clicks and short bursts (impulsive noise) in near silence.
    Clicks,
    /// A frequency sweep (chirp) up or down, linear or exponential, 100 Hz-6 kHz: sirens,
    /// whistles, alarms.
    Sweep,
    /// Noise with speech's rhythm and colour: a gliding resonance, loudness swelling at a
    /// syllable rate (3-8 Hz).
    Modulated,
    /// Coughs and laughs, roughly: 1-6 resonant noise bursts with sharp onsets and decays.
    Bursts,
    /// A digit recording played backwards: speech sounds, no digit word.
    Reversed,
    /// The first part of one digit joined to the last part of another.
    Spliced,
    /// A digit cut short: its first 25-55%.
    CutShort,
    /// Words that are not digits: synthesised (`audio-mnist negatives --words`) or recorded
    /// (a `--negatives` folder).
    Words,
}

impl NegativeKind {
    /// The kinds synthesised without recordings.
    pub const NON_SPEECH: [NegativeKind; 9] = [
        NegativeKind::Silence,
        NegativeKind::Noise,
        NegativeKind::Tone,
        NegativeKind::Chord,
        NegativeKind::Music,
        NegativeKind::Clicks,
        NegativeKind::Sweep,
        NegativeKind::Modulated,
        NegativeKind::Bursts,
    ];
    /// The kinds made from digit recordings.
    pub const SPEECH: [NegativeKind; 3] =
        [NegativeKind::Reversed, NegativeKind::Spliced, NegativeKind::CutShort];

    pub fn name(self) -> &'static str {
        match self {
            Self::Silence => "silence",
            Self::Noise => "noise",
            Self::Tone => "tone",
            Self::Chord => "chord",
            Self::Music => "music",
            Self::Clicks => "clicks",
            Self::Sweep => "sweep",
            Self::Modulated => "modulated",
            Self::Bursts => "bursts",
            Self::Reversed => "reversed",
            Self::Spliced => "spliced",
            Self::CutShort => "cut_short",
            Self::Words => "words",
        }
    }

    pub fn is_speech(self) -> bool {
        Self::SPEECH.contains(&self) || self == Self::Words
    }
}

/// A peak level in dBFS as a linear factor.
fn from_db(db: f32) -> f32 {
    10f32.powf(db / 20.0)
}

/// Scale `x` to the peak `peak` (silence stays silence).
fn with_peak(mut x: Vec<f32>, peak: f32) -> Vec<f32> {
    let m = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    if m > 0.0 {
        x.iter_mut().for_each(|v| *v *= peak / m);
    }
    x
}

/// Raised-cosine fade in and out over `n` samples, so tones do not start with a click.
fn fade(x: &mut [f32], n: usize) {
    let n = n.min(x.len() / 2);
    let len = x.len();
    for i in 0..n {
        let g = 0.5 - 0.5 * (std::f32::consts::PI * i as f32 / n as f32).cos();
        x[i] *= g;
        x[len - 1 - i] *= g;
    }
}

/// A sum of harmonics of `f0` (amplitude 1/h), `len` samples at `rate`.
fn harmonic(f0: f32, harmonics: usize, len: usize, rate: u32, rng: &mut StdRng) -> Vec<f32> {
    let phases: Vec<f32> = (0..harmonics).map(|_| rng.random_range(0.0..std::f32::consts::TAU)).collect();
    (0..len)
        .map(|i| {
            let t = i as f32 / rate as f32;
            (1..=harmonics)
                .filter(|&h| f0 * (h as f32) < rate as f32 / 2.0)
                .map(|h| (std::f32::consts::TAU * f0 * h as f32 * t + phases[h - 1]).sin() / h as f32)
                .sum()
        })
        .collect()
}

/// A non-speech negative of `kind` at `rate` Hz, 0.3-1.2 s long, peak -40 to -1 dBFS.
pub fn synthesize(kind: NegativeKind, rate: u32, rng: &mut StdRng) -> Vec<f32> {
    let len = (rng.random_range(0.3..1.2) * rate as f32) as usize;
    let peak = from_db(rng.random_range(-40.0..-1.0));
    match kind {
        NegativeKind::Silence if rng.random::<bool>() => vec![0.0; len],
        NegativeKind::Silence => {
            with_peak(coloured_noise(len, Colour::White, rate, rng), from_db(rng.random_range(-80.0..-60.0)))
        }
        NegativeKind::Noise => {
            let colour = [Colour::White, Colour::Pink, Colour::Brown, Colour::Hum][rng.random_range(0..4)];
            with_peak(coloured_noise(len, colour, rate, rng), peak)
        }
        NegativeKind::Tone => {
            let f = (rng.random_range(80f32.ln()..4000f32.ln())).exp();
            let mut x = harmonic(f, 1, len, rate, rng);
            fade(&mut x, rate as usize / 100);
            with_peak(x, peak)
        }
        NegativeKind::Chord => with_peak(chord(len, rate, rng), peak),
        NegativeKind::Music => with_peak(music(len, rate, rng), peak),
        NegativeKind::Clicks => with_peak(clicks(len, rate, rng), peak),
        NegativeKind::Sweep => with_peak(sweep(len, rate, rng), peak),
        NegativeKind::Modulated => with_peak(modulated(len, rate, rng), peak),
        NegativeKind::Bursts => with_peak(bursts(len, rate, rng), peak),
        NegativeKind::Reversed | NegativeKind::Spliced | NegativeKind::CutShort | NegativeKind::Words => {
            vec![0.0; len]
        }
    }
}

fn chord(len: usize, rate: u32, rng: &mut StdRng) -> Vec<f32> {
    let root = (rng.random_range(100f32.ln()..800f32.ln())).exp();
    let third = if rng.random::<bool>() { 4.0 } else { 3.0 };
    let mut steps = vec![0.0, third, 7.0];
    if rng.random::<bool>() {
        steps.push(12.0);
    }
    let harmonics = rng.random_range(1..5);
    let mut x = vec![0f32; len];
    for s in steps {
        let tone = harmonic(root * 2f32.powf(s / 12.0), harmonics, len, rate, rng);
        x.iter_mut().zip(tone).for_each(|(a, b)| *a += b);
    }
    fade(&mut x, rate as usize / 50);
    x
}

/// Plucked notes (exponential decay) of random pitch and length, one after the other.
fn music(len: usize, rate: u32, rng: &mut StdRng) -> Vec<f32> {
    let mut x = vec![0f32; len];
    let mut start = 0;
    while start < len {
        let note = (rng.random_range(0.08..0.3) * rate as f32) as usize;
        let f = 110.0 * 2f32.powf(rng.random_range(0..36) as f32 / 12.0);
        let tone = harmonic(f, rng.random_range(2..7), note.min(len - start), rate, rng);
        let decay = rng.random_range(3.0..12.0) / note as f32;
        for (i, v) in tone.into_iter().enumerate() {
            x[start + i] += v * (-(i as f32) * decay).exp();
        }
        start += note;
    }
    x
}

/// 1-10 clicks (a single sample or a 1-5 ms decaying burst) over faint noise.
fn clicks(len: usize, rate: u32, rng: &mut StdRng) -> Vec<f32> {
    let mut x: Vec<f32> = coloured_noise(len, Colour::White, rate, rng).iter().map(|v| v * 1e-3).collect();
    for _ in 0..rng.random_range(1..=10) {
        let at = rng.random_range(0..len);
        let burst = (rng.random_range(0.0..0.005) * rate as f32) as usize + 1;
        let sign = if rng.random::<bool>() { 1.0 } else { -1.0 };
        for i in 0..burst.min(len - at) {
            x[at + i] +=
                sign * crate::dsp::conditions::gaussian(rng).abs() * (-(i as f32) * 5.0 / burst as f32).exp();
        }
    }
    x
}

/// A chirp from `f0` to `f1` (one of them 100 Hz-1 kHz, the other up to 6 kHz), its phase
/// the running sum of the instantaneous frequency, with 1-3 harmonics.
fn sweep(len: usize, rate: u32, rng: &mut StdRng) -> Vec<f32> {
    let nyquist = rate as f32 / 2.0;
    let lo = rng.random_range(100f32.ln()..1000f32.ln()).exp();
    let hi = rng.random_range((2.0 * lo).ln()..(6000f32.min(0.9 * nyquist)).max(2.5 * lo).ln()).exp();
    let (f0, f1) = if rng.random::<bool>() { (lo, hi) } else { (hi, lo) };
    let exponential = rng.random::<bool>();
    let harmonics = rng.random_range(1..=3);
    let mut phase = 0f32;
    let mut x: Vec<f32> = (0..len)
        .map(|i| {
            let u = i as f32 / len as f32;
            let f = if exponential { f0 * (f1 / f0).powf(u) } else { f0 + (f1 - f0) * u };
            phase = (phase + std::f32::consts::TAU * f / rate as f32) % std::f32::consts::TAU;
            (1..=harmonics)
                .filter(|&h| f * (h as f32) < nyquist)
                .map(|h| (h as f32 * phase).sin() / h as f32)
                .sum()
        })
        .collect();
    fade(&mut x, rate as usize / 100);
    x
}

/// Two-pole resonator at `f` Hz (pole radius `r`), one sample: `y = x + 2r cos(w) y1 - r^2 y2`.
fn resonate(x: f32, f: f32, r: f32, rate: u32, state: &mut (f32, f32)) -> f32 {
    let w = std::f32::consts::TAU * f / rate as f32;
    let y = x + 2.0 * r * w.cos() * state.0 - r * r * state.1;
    *state = (y, state.0);
    y
}

/// Pink noise through a resonance gliding between two formant-like frequencies (300-2500 Hz),
/// its loudness a raised cosine at a syllable rate (3-8 Hz) to a random power.
fn modulated(len: usize, rate: u32, rng: &mut StdRng) -> Vec<f32> {
    let noise = coloured_noise(len, Colour::Pink, rate, rng);
    let (fa, fb) = (rng.random_range(300.0..2500.0), rng.random_range(300.0..2500.0));
    let syllables = rng.random_range(3.0..8.0);
    let (offset, sharpness) = (rng.random_range(0.0..std::f32::consts::TAU), rng.random_range(1.0..3.0));
    let mut state = (0.0, 0.0);
    let mut x: Vec<f32> = noise
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let t = i as f32 / rate as f32;
            let f = fa + (fb - fa) * i as f32 / len as f32;
            let swell = 0.5 - 0.5 * (std::f32::consts::TAU * syllables * t + offset).cos();
            resonate(n, f, 0.97, rate, &mut state) * swell.powf(sharpness)
        })
        .collect();
    fade(&mut x, rate as usize / 100);
    x
}

/// 1-6 bursts of white noise through a broad resonance (400-2000 Hz), each 40-250 ms with a
/// 5 ms onset and an exponential decay, 50-200 ms apart: a cough, or a laugh's "ha-ha".
fn bursts(len: usize, rate: u32, rng: &mut StdRng) -> Vec<f32> {
    let noise = coloured_noise(len, Colour::White, rate, rng);
    let f = rng.random_range(400.0..2000.0);
    let mut envelope = vec![0f32; len];
    let mut start = (rng.random_range(0.0..0.1) * rate as f32) as usize;
    for _ in 0..rng.random_range(1..=6) {
        let burst = (rng.random_range(0.04..0.25) * rate as f32) as usize;
        let onset = rate as f32 * 0.005;
        for i in 0..burst.min(len.saturating_sub(start)) {
            envelope[start + i] = (i as f32 / onset).min(1.0) * (-4.0 * i as f32 / burst as f32).exp();
        }
        start += burst + (rng.random_range(0.05..0.2) * rate as f32) as usize;
    }
    let mut state = (0.0, 0.0);
    noise.iter().zip(&envelope).map(|(&n, &e)| resonate(n * e, f, 0.9, rate, &mut state)).collect()
}

/// A speech negative made from digit clips: `a` reversed, the first 40-60% of `a` joined to
/// the last 40-60% of `b` (two different digits), or the first 25-55% of `a` (cut short).
pub fn from_speech(kind: NegativeKind, a: &[f32], b: &[f32], rng: &mut StdRng) -> Vec<f32> {
    match kind {
        NegativeKind::CutShort => a[..(a.len() as f32 * rng.random_range(0.25..0.55)) as usize].to_vec(),
        NegativeKind::Spliced => {
            let cut_a = (a.len() as f32 * rng.random_range(0.4..0.6)) as usize;
            let cut_b = (b.len() as f32 * rng.random_range(0.4..0.6)) as usize;
            a[..cut_a].iter().chain(&b[cut_b..]).copied().collect()
        }
        _ => a.iter().rev().copied().collect(),
    }
}

/// `count` seeded examples of each non-speech kind at `rate`: (kind, samples). The same seed
/// gives the same sounds; training and evaluation use different seeds.
pub fn non_speech_set(count: usize, rate: u32, seed: u64) -> Vec<(NegativeKind, Vec<f32>)> {
    let mut out = Vec::with_capacity(count * NegativeKind::NON_SPEECH.len());
    for (k, kind) in NegativeKind::NON_SPEECH.into_iter().enumerate() {
        for i in 0..count {
            let mut rng =
                StdRng::seed_from_u64(seed ^ ((k as u64) << 40) ^ (i as u64).wrapping_mul(0x9E37_79B9));
            out.push((kind, synthesize(kind, rate, &mut rng)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peak_db(x: &[f32]) -> f32 {
        20.0 * x.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12).log10()
    }

    #[test]
    fn every_kind_is_seeded_finite_and_within_its_level() {
        let set = non_speech_set(20, 16000, 7);
        assert_eq!(set.len(), 20 * NegativeKind::NON_SPEECH.len());
        assert_eq!(set, non_speech_set(20, 16000, 7), "seeded");
        assert_ne!(set, non_speech_set(20, 16000, 8));
        for (kind, x) in &set {
            assert!(x.iter().all(|v| v.is_finite()), "{kind:?}");
            assert!((4800..=19200).contains(&x.len()), "{kind:?}: {} samples", x.len());
            let p = peak_db(x);
            match kind {
                NegativeKind::Silence => assert!(p <= -59.9, "{kind:?} at {p} dBFS"),
                _ => assert!((-40.1..=-0.9).contains(&p), "{kind:?} at {p} dBFS"),
            }
        }
    }

    #[test]
    fn a_tone_has_one_frequency_and_speech_negatives_use_their_sources() {
        let mut rng = StdRng::seed_from_u64(3);
        let x = synthesize(NegativeKind::Tone, 16000, &mut rng);
        // Zero crossings give the frequency: within 80 Hz-4 kHz.
        let crossings = x.windows(2).filter(|w| w[0] <= 0.0 && w[1] > 0.0).count();
        let f = crossings as f32 / (x.len() as f32 / 16000.0);
        assert!((70.0..4200.0).contains(&f), "{f} Hz");
        let a: Vec<f32> = (0..100).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..100).map(|i| -(i as f32)).collect();
        let r = from_speech(NegativeKind::Reversed, &a, &b, &mut rng);
        assert_eq!(r[0], 99.0);
        let s = from_speech(NegativeKind::Spliced, &a, &b, &mut rng);
        assert!(s[0] == 0.0 && *s.last().unwrap() == -99.0 && (80..=120).contains(&s.len()));
    }

    /// Zero crossings per second of `x[a..b]` at 16 kHz.
    fn crossing_rate(x: &[f32]) -> f32 {
        x.windows(2).filter(|w| w[0] <= 0.0 && w[1] > 0.0).count() as f32 / (x.len() as f32 / 16000.0)
    }

    /// RMS of each 20 ms frame.
    fn frame_rms(x: &[f32]) -> Vec<f32> {
        x.chunks(320).map(|c| (c.iter().map(|v| v * v).sum::<f32>() / c.len() as f32).sqrt()).collect()
    }

    #[test]
    fn a_sweep_glides_and_modulated_noise_and_bursts_come_and_go() {
        for seed in 0..20 {
            let mut rng = StdRng::seed_from_u64(seed);
            let x = synthesize(NegativeKind::Sweep, 16000, &mut rng);
            let q = x.len() / 4;
            let (first, last) = (crossing_rate(&x[..q]), crossing_rate(&x[x.len() - q..]));
            assert!(first.max(last) > 1.3 * first.min(last), "seed {seed}: {first} -> {last} Hz");
            for kind in [NegativeKind::Modulated, NegativeKind::Bursts] {
                let rms = frame_rms(&synthesize(kind, 16000, &mut rng));
                let loud = rms.iter().fold(0f32, |m, &v| m.max(v));
                let quiet = rms.iter().fold(f32::MAX, |m, &v| m.min(v));
                assert!(quiet < 0.25 * loud, "{kind:?}, seed {seed}: frames {quiet}..{loud}");
            }
        }
    }

    #[test]
    fn a_digit_cut_short_is_its_first_quarter_to_half() {
        let a: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..50 {
            let c = from_speech(NegativeKind::CutShort, &a, &[], &mut rng);
            assert!((250..=550).contains(&c.len()) && c[..] == a[..c.len()], "{} samples", c.len());
        }
    }
}
