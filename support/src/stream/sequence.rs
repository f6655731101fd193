//! Long recordings of digits to measure the live recogniser: clips of chosen speakers with
//! random gaps (0.15-1.0 s, some digits back to back), random levels, background noise at
//! 10-30 dB SNR, and noise bursts or other sounds between digits; with the reference
//! transcript and every word's boundaries. [`score`] gives the digit error rate.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::Event;
use crate::dsp::conditions::{coloured_noise, Colour};
use crate::dsp::negatives::{synthesize, NegativeKind};

/// How sequences are drawn.
#[derive(Clone, Debug, Serialize)]
pub struct SequenceConfig {
    /// Digits per sequence (inclusive range).
    pub digits: (usize, usize),
    /// Pause between words (s), and the chance that a digit follows the last back to back.
    pub gap_s: (f32, f32),
    pub back_to_back: f32,
    /// Peak level of each word (dBFS).
    pub level_db: (f32, f32),
    /// Background noise relative to the speech (dB); `None`: no noise.
    pub snr_db: Option<(f32, f32)>,
    /// Chance of a noise burst, tone, click or music between two digits.
    pub distractor: f32,
}

impl Default for SequenceConfig {
    fn default() -> Self {
        Self {
            digits: (4, 10),
            gap_s: (0.15, 1.0),
            back_to_back: 0.1,
            level_db: (-12.0, -1.0),
            snr_db: Some((10.0, 30.0)),
            distractor: 0.2,
        }
    }
}

/// One word of a sequence: where it is (s) and its digit (`None`: a sound that is not one).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Word {
    pub start_s: f64,
    pub end_s: f64,
    pub digit: Option<u8>,
}

/// A generated recording with what is in it.
#[derive(Clone, Debug, Serialize)]
pub struct Sequence {
    #[serde(skip)]
    pub samples: Vec<f32>,
    pub rate: u32,
    pub words: Vec<Word>,
    pub snr_db: Option<f32>,
}

impl Sequence {
    /// The digits said, in order.
    pub fn transcript(&self) -> String {
        self.words.iter().filter_map(|w| w.digit).map(|d| char::from(b'0' + d)).collect()
    }
}

/// A sequence from `clips` (digit, trimmed clip at `rate`), drawn with `seed`.
pub fn make_sequence(clips: &[(u8, Vec<f32>)], rate: u32, cfg: &SequenceConfig, seed: u64) -> Sequence {
    let mut rng = StdRng::seed_from_u64(seed);
    let secs = |s: f32| (s * rate as f32) as usize;
    let mut samples = vec![0f32; secs(rng.random_range(0.3..0.8))];
    let mut words = Vec::new();
    let n = rng.random_range(cfg.digits.0..=cfg.digits.1);
    for i in 0..n {
        if i > 0 {
            if rng.random::<f32>() < cfg.distractor {
                samples.extend(vec![0.0; secs(rng.random_range(cfg.gap_s.0..cfg.gap_s.1))]);
                let kind =
                    [NegativeKind::Noise, NegativeKind::Tone, NegativeKind::Clicks, NegativeKind::Music]
                        [rng.random_range(0..4)];
                let sound = synthesize(kind, rate, &mut rng);
                place(&mut samples, &mut words, &sound, None, rate);
            }
            let gap = if rng.random::<f32>() < cfg.back_to_back {
                0.0
            } else {
                rng.random_range(cfg.gap_s.0..cfg.gap_s.1)
            };
            samples.extend(vec![0.0; secs(gap)]);
        }
        let (digit, clip) = &clips[rng.random_range(0..clips.len())];
        let gain = 10f32.powf(rng.random_range(cfg.level_db.0..cfg.level_db.1) / 20.0);
        let peak = clip.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let word: Vec<f32> = clip.iter().map(|v| v * gain / peak).collect();
        place(&mut samples, &mut words, &word, Some(*digit), rate);
    }
    samples.extend(vec![0.0; secs(rng.random_range(0.3..0.8))]);
    let snr_db = cfg.snr_db.map(|(lo, hi)| rng.random_range(lo..=hi));
    if let Some(snr) = snr_db {
        add_noise(&mut samples, &words, snr, rate, &mut rng);
    }
    Sequence { samples, rate, words, snr_db }
}

fn place(samples: &mut Vec<f32>, words: &mut Vec<Word>, sound: &[f32], digit: Option<u8>, rate: u32) {
    let start = samples.len() as f64 / rate as f64;
    samples.extend_from_slice(sound);
    words.push(Word { start_s: start, end_s: samples.len() as f64 / rate as f64, digit });
}

/// Stationary noise (white, pink or brown) over the whole recording, `snr` dB under the mean
/// power of the digits.
fn add_noise(samples: &mut [f32], words: &[Word], snr: f32, rate: u32, rng: &mut StdRng) {
    let (mut power, mut count) = (0f64, 0usize);
    for w in words.iter().filter(|w| w.digit.is_some()) {
        let (a, b) = ((w.start_s * rate as f64) as usize, (w.end_s * rate as f64) as usize);
        power += samples[a..b.min(samples.len())].iter().map(|v| (*v as f64).powi(2)).sum::<f64>();
        count += b - a;
    }
    let power = power / count.max(1) as f64;
    let colour = [Colour::White, Colour::Pink, Colour::Brown][rng.random_range(0..3)];
    let noise = coloured_noise(samples.len(), colour, rate, rng);
    let noise_power = noise.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / noise.len().max(1) as f64;
    let gain = (power / noise_power.max(1e-20) / 10f64.powf(snr as f64 / 10.0)).sqrt() as f32;
    samples.iter_mut().zip(noise).for_each(|(s, n)| *s += gain * n);
}

/// How a transcription compares with the reference.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Score {
    pub reference_digits: usize,
    pub substitutions: usize,
    pub deletions: usize,
    pub insertions: usize,
    /// Mean start and end error (ms) of the reference digits a detected word overlaps.
    pub boundary_ms: f64,
    pub matched: usize,
}

impl Score {
    /// Digit error rate: edits over reference digits.
    pub fn der(&self) -> f64 {
        (self.substitutions + self.deletions + self.insertions) as f64 / self.reference_digits.max(1) as f64
    }

    /// Totals over several sequences (the boundary error weighted by matches).
    pub fn add(&mut self, other: &Score) {
        let m = self.matched + other.matched;
        if m > 0 {
            self.boundary_ms = (self.boundary_ms * self.matched as f64
                + other.boundary_ms * other.matched as f64)
                / m as f64;
        }
        self.matched = m;
        self.reference_digits += other.reference_digits;
        self.substitutions += other.substitutions;
        self.deletions += other.deletions;
        self.insertions += other.insertions;
    }
}

/// Score `events` against the words of `reference`.
pub fn score(reference: &[Word], events: &[Event]) -> Score {
    let r: Vec<u8> = reference.iter().filter_map(|w| w.digit).collect();
    let h: Vec<u8> = events.iter().filter_map(|e| e.digit.map(|d| d as u8)).collect();
    let (substitutions, deletions, insertions) = edit_counts(&r, &h);
    let (mut total, mut matched) = (0f64, 0usize);
    for w in reference.iter().filter(|w| w.digit.is_some()) {
        let overlap = |e: &&Event| (w.end_s.min(e.end_s) - w.start_s.max(e.start_s)).max(0.0);
        if let Some(e) =
            events.iter().filter(|e| overlap(e) > 0.0).max_by(|a, b| overlap(a).total_cmp(&overlap(b)))
        {
            total += ((e.start_s - w.start_s).abs() + (e.end_s - w.end_s).abs()) * 500.0;
            matched += 1;
        }
    }
    let boundary_ms = if matched > 0 { total / matched as f64 } else { 0.0 };
    Score { reference_digits: r.len(), substitutions, deletions, insertions, boundary_ms, matched }
}

/// Levenshtein alignment of `r` (reference) and `h` (hypothesis): substitutions, deletions,
/// insertions of a cheapest alignment.
pub fn edit_counts(r: &[u8], h: &[u8]) -> (usize, usize, usize) {
    // d[i][j]: (cost, subs, dels, ins) for r[..i], h[..j].
    let mut d = vec![vec![(0usize, 0usize, 0usize, 0usize); h.len() + 1]; r.len() + 1];
    for i in 1..=r.len() {
        d[i][0] = (i, 0, i, 0);
    }
    for j in 1..=h.len() {
        d[0][j] = (j, 0, 0, j);
    }
    for i in 1..=r.len() {
        for j in 1..=h.len() {
            let (c, s, de, ins) = d[i - 1][j - 1];
            let diag = if r[i - 1] == h[j - 1] { (c, s, de, ins) } else { (c + 1, s + 1, de, ins) };
            let (c, s, de, ins) = d[i - 1][j];
            let del = (c + 1, s, de + 1, ins);
            let (c, s, de, ins) = d[i][j - 1];
            let insert = (c + 1, s, de, ins + 1);
            d[i][j] = [diag, del, insert].into_iter().min_by_key(|t| t.0).unwrap_or(diag);
        }
    }
    let (_, s, de, ins) = d[r.len()][h.len()];
    (s, de, ins)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_counts_name_each_kind_of_error() {
        assert_eq!(edit_counts(b"5551234", b"5551234"), (0, 0, 0));
        assert_eq!(edit_counts(b"123", b"183"), (1, 0, 0));
        assert_eq!(edit_counts(b"123", b"13"), (0, 1, 0));
        assert_eq!(edit_counts(b"123", b"1293"), (0, 0, 1));
        assert_eq!(edit_counts(b"", b"42"), (0, 0, 2));
        assert_eq!(edit_counts(b"42", b""), (0, 2, 0));
    }

    #[test]
    fn sequences_are_seeded_and_their_words_do_not_overlap() {
        let clips: Vec<(u8, Vec<f32>)> = (0..10).map(|d| (d, vec![0.5; 4000 + 400 * d as usize])).collect();
        let cfg = SequenceConfig::default();
        let a = make_sequence(&clips, 16000, &cfg, 3);
        assert_eq!(a.samples, make_sequence(&clips, 16000, &cfg, 3).samples);
        let digits = a.transcript().len();
        assert!((4..=10).contains(&digits), "{}", a.transcript());
        for w in a.words.windows(2) {
            assert!(w[0].end_s <= w[1].start_s && w[0].start_s < w[0].end_s);
        }
        assert!(a.samples.iter().all(|v| v.is_finite()));
    }
}

/// The live recogniser on generated sequences: errors, boundaries, latency and cost.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ListenReport {
    pub sequences: usize,
    pub audio_seconds: f64,
    pub score: Score,
    pub digit_error_rate: f64,
    /// From the end of a word to its digit's event (stream position plus compute), ms.
    pub latency_mean_ms: f64,
    pub latency_max_ms: f64,
    /// Processing time over audio time (of one core's worth of wall-clock).
    pub cpu_share: f64,
}

/// Transcribe `count` sequences (seeds `seed`, `seed + 1`, ...) drawn from `clips`, fed in
/// 10 ms chunks as a live stream would arrive; every sequence with its events.
pub fn measure(
    predictor: &crate::infer::Predictor,
    clips: &[(u8, Vec<f32>)],
    rate: u32,
    cfg: &SequenceConfig,
    count: usize,
    seed: u64,
    reject_weight: f32,
) -> (ListenReport, Vec<(Sequence, Vec<Event>)>) {
    let mut report = ListenReport { sequences: count, ..Default::default() };
    let (mut latency_sum, mut events_n, mut busy) = (0f64, 0usize, 0f64);
    let mut all = Vec::new();
    for k in 0..count {
        let seq = make_sequence(clips, rate, cfg, seed.wrapping_add(k as u64));
        let mut listener = super::Listener::new(predictor, rate).with_reject_weight(reject_weight);
        let mut events = Vec::new();
        let chunk = (rate / 100) as usize;
        for (i, c) in seq.samples.chunks(chunk).enumerate() {
            let t = std::time::Instant::now();
            let new = listener.push(c);
            let took = t.elapsed().as_secs_f64();
            busy += took;
            let now = ((i * chunk + c.len()) as f64) / rate as f64;
            for e in new.iter().filter(|e| e.digit.is_some()) {
                let ms = (now - e.end_s + took) * 1000.0;
                latency_sum += ms;
                report.latency_max_ms = report.latency_max_ms.max(ms);
                events_n += 1;
            }
            events.extend(new);
        }
        events.extend(listener.finish());
        report.score.add(&score(&seq.words, &events));
        report.audio_seconds += seq.samples.len() as f64 / rate as f64;
        all.push((seq, events));
    }
    report.latency_mean_ms = latency_sum / events_n.max(1) as f64;
    report.cpu_share = busy / report.audio_seconds.max(1e-9);
    report.digit_error_rate = report.score.der();
    (report, all)
}
