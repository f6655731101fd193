//! A voice-activity detector for streams: 10 ms frames, their level above a noise floor that
//! follows the room, the better of the plain and the pre-emphasised signal (so rumble does not
//! hide a word, nor does hiss). The floor is the 40th percentile of the last 3 s of frame
//! energies (of 10-50%, 40-50% did best on validation speakers' sequences; 40% stays under
//! speech that fills half the time). A word starts after 50 ms over the floor + 9 dB and ends
//! after 100 ms under the floor + 6 dB, so digits spoken with short pauses come out one by one;
//! a run of speech longer than `max_word` is cut at its quietest frame. Memory is bounded: the
//! last 3 s of frame energies, a short pre-roll and at most one word of samples.

use std::collections::VecDeque;

/// How the detector decides; the defaults suit single digit words.
#[derive(Clone, Debug, PartialEq)]
pub struct VadConfig {
    /// A frame is speech this far above the noise floor (dB) ...
    pub on_db: f32,
    /// ... and stays speech down to this far above it.
    pub off_db: f32,
    /// Frames quieter than this (dBFS) are never speech.
    pub min_dbfs: f32,
    /// Speech this long (s) starts a word; silence this long ends it.
    pub min_on_s: f32,
    pub hangover_s: f32,
    /// Shorter words are dropped (clicks); longer ones are cut at their quietest frame.
    pub min_word_s: f32,
    pub max_word_s: f32,
    /// Audio kept before and after a word for the classifier (s).
    pub pad_s: f32,
    /// Window of the noise floor (s).
    pub floor_window_s: f32,
}

impl Default for VadConfig {
    fn default() -> Self {
        Self {
            on_db: 9.0,
            off_db: 6.0,
            min_dbfs: -55.0,
            min_on_s: 0.05,
            hangover_s: 0.1,
            min_word_s: 0.1,
            max_word_s: 1.1,
            pad_s: 0.05,
            floor_window_s: 3.0,
        }
    }
}

/// A word found in the stream: where the speech is (seconds from the start of the stream)
/// and the samples to classify (the word with `pad_s` either side).
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    pub start_s: f64,
    pub end_s: f64,
    pub samples: Vec<f32>,
    /// Samples of `samples` before `start_s`, samples per frame, and each speech frame's
    /// level above the noise floor (dB) from `start_s` on: where a word could be split.
    pub lead: usize,
    pub frame: usize,
    pub energies: Vec<f32>,
    pub rate: u32,
}

impl Segment {
    pub fn duration_s(&self) -> f64 {
        self.end_s - self.start_s
    }

    /// Two digits said back to back: a segment of at least 0.5 s with a deep dip (12 dB) at
    /// least 0.15 s from either end, cut there.
    pub fn two_words(&self) -> Option<(Segment, Segment)> {
        if self.duration_s() < 0.5 {
            return None;
        }
        self.split(0.15, 12.0)
    }

    /// Two words run together: cut at the deepest dip at least `edge_s` from either end, when
    /// it is `dip_db` under the quieter side's peak; `None` when there is no such dip.
    pub fn split(&self, edge_s: f32, dip_db: f32) -> Option<(Segment, Segment)> {
        let edge = (edge_s * 100.0) as usize;
        let e = &self.energies;
        let at = (edge..e.len().saturating_sub(edge)).min_by(|&a, &b| e[a].total_cmp(&e[b]))?;
        let peak = |r: &[f32]| r.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        if e[at] > peak(&e[..at]).min(peak(&e[at..])) - dip_db {
            return None;
        }
        let cut = (self.lead + at * self.frame).min(self.samples.len());
        let t = self.start_s + at as f64 * self.frame as f64 / self.rate as f64;
        let first = Segment {
            end_s: t,
            samples: self.samples[..cut].to_vec(),
            energies: e[..at].to_vec(),
            ..self.clone()
        };
        let second = Segment {
            start_s: t,
            samples: self.samples[cut..].to_vec(),
            lead: 0,
            energies: e[at..].to_vec(),
            ..self.clone()
        };
        Some((first, second))
    }
}

/// A frame's level (dBFS) plain and pre-emphasised; `last` carries the previous sample.
fn frame_db(frame: &[f32], last: &mut f32) -> (f32, f32) {
    let (mut plain, mut emphasised) = (0f32, 0f32);
    for &v in frame {
        plain += v * v;
        emphasised += (v - 0.97 * *last).powi(2);
        *last = v;
    }
    let db = |p: f32| 10.0 * (p / frame.len() as f32).max(1e-12).log10();
    (db(plain), db(emphasised))
}

/// Cuts a stream of mono samples into words as they end ([`Segmenter::push`]).
pub struct Segmenter {
    cfg: VadConfig,
    rate: u32,
    frame: usize,
    /// Samples of the frame being filled.
    pending: Vec<f32>,
    /// Frames seen so far.
    frames: u64,
    /// Energies (dBFS) of the last `floor_window_s`: plain and pre-emphasised.
    history: [VecDeque<f32>; 2],
    /// The last `pad_s + min_on_s` of samples before the current word.
    preroll: VecDeque<f32>,
    /// The current word: its first frame, samples (from its pre-roll on) and frame energies.
    word: Option<Word>,
    /// Consecutive frames above the start threshold while no word is open.
    run: usize,
    /// The last sample of the previous frame (pre-emphasis).
    last: f32,
    /// The floor was learned beforehand ([`Segmenter::prime`]).
    primed: bool,
}

struct Word {
    first_frame: u64,
    /// Frames of pre-roll before `first_frame` in `samples`.
    lead: usize,
    samples: Vec<f32>,
    energies: Vec<f32>,
    /// Frames since the last speech frame.
    quiet: usize,
}

impl Segmenter {
    pub fn new(rate: u32, cfg: VadConfig) -> Self {
        let frame = (rate as usize / 100).max(1);
        Self {
            cfg,
            rate,
            frame,
            pending: Vec::with_capacity(frame),
            frames: 0,
            history: Default::default(),
            preroll: VecDeque::new(),
            word: None,
            run: 0,
            last: 0.0,
            primed: false,
        }
    }

    /// Learn the noise floor from the first `floor_window_s` of a whole recording before
    /// reading it: a word at its very start is then heard (a stream's first 100 ms only
    /// learn the floor, and a floor learned on a word alone sits on the word).
    pub fn prime(&mut self, samples: &[f32]) {
        let n = self.frames_of(self.cfg.floor_window_s) * self.frame;
        let mut last = 0.0;
        for frame in samples[..n.min(samples.len())].chunks_exact(self.frame) {
            let (plain, emphasised) = frame_db(frame, &mut last);
            self.history[0].push_back(plain);
            self.history[1].push_back(emphasised);
        }
        self.primed = true;
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Samples held right now (pre-roll, the open word, the unfinished frame): bounded on an
    /// endless stream.
    pub fn buffered(&self) -> usize {
        self.pending.len() + self.preroll.len() + self.word.as_ref().map_or(0, |w| w.samples.len())
    }

    /// The noise floor (dBFS) as it stands, of the plain (`band` 0) or pre-emphasised signal.
    pub fn floor_db(&self, band: usize) -> f32 {
        let mut v: Vec<f32> = self.history[band].iter().copied().collect();
        if v.is_empty() {
            return self.cfg.min_dbfs - self.cfg.on_db;
        }
        let k = v.len() * 2 / 5;
        *v.select_nth_unstable_by(k, f32::total_cmp).1
    }

    fn frames_of(&self, seconds: f32) -> usize {
        (seconds * 100.0).round().max(1.0) as usize
    }

    /// Feed samples; returns the words that ended in them.
    pub fn push(&mut self, samples: &[f32]) -> Vec<Segment> {
        let mut out = Vec::new();
        for &s in samples {
            self.pending.push(if s.is_finite() { s } else { 0.0 });
            if self.pending.len() == self.frame {
                let frame = std::mem::take(&mut self.pending);
                out.extend(self.step(&frame));
                self.pending = frame;
                self.pending.clear();
            }
        }
        out
    }

    /// The end of the stream: the open word, if any.
    pub fn finish(&mut self) -> Vec<Segment> {
        let tail = std::mem::take(&mut self.pending);
        let mut out = Vec::new();
        if let Some(w) = self.word.as_mut() {
            w.samples.extend(&tail);
        }
        if let Some(w) = self.word.take() {
            out.extend(self.close(w));
        }
        out
    }

    fn step(&mut self, frame: &[f32]) -> Option<Segment> {
        let (plain, emphasised) = frame_db(frame, &mut self.last);
        // Level above the floor (dB): the better of the two signals.
        let energy = (plain - self.floor_db(0)).max(emphasised - self.floor_db(1));
        let window = self.frames_of(self.cfg.floor_window_s);
        for (h, e) in self.history.iter_mut().zip([plain, emphasised]) {
            h.push_back(e);
            if h.len() > window {
                h.pop_front();
            }
        }
        self.frames += 1;
        let loud = plain > self.cfg.min_dbfs;
        // The first 100 ms only learn the floor.
        let on = loud && energy > self.cfg.on_db && (self.frames > 10 || self.primed);
        let still = loud && energy > self.cfg.off_db;
        let (hangover, max_word) = (self.frames_of(self.cfg.hangover_s), self.frames_of(self.cfg.max_word_s));
        match self.word.as_mut() {
            Some(w) => {
                w.samples.extend_from_slice(frame);
                w.energies.push(energy);
                w.quiet = if still { 0 } else { w.quiet + 1 };
                if w.quiet >= hangover {
                    let w = self.word.take()?;
                    return self.close(w);
                }
                if w.energies.len() - w.quiet > max_word {
                    return self.cut();
                }
                None
            }
            None => {
                self.run = if on { self.run + 1 } else { 0 };
                self.preroll.extend(frame);
                let min_on = self.frames_of(self.cfg.min_on_s);
                if self.run >= min_on {
                    // The word began `min_on` frames ago; keep `pad_s` before that.
                    let lead = self.frames_of(self.cfg.pad_s);
                    let keep = ((min_on + lead) * self.frame).min(self.preroll.len());
                    let samples: Vec<f32> =
                        self.preroll.iter().skip(self.preroll.len() - keep).copied().collect();
                    let energies = vec![self.cfg.on_db; min_on];
                    let lead = keep / self.frame - min_on;
                    self.word = Some(Word {
                        first_frame: self.frames - min_on as u64,
                        lead,
                        samples,
                        energies,
                        quiet: 0,
                    });
                    self.preroll.clear();
                    self.run = 0;
                } else {
                    let cap = (self.frames_of(self.cfg.pad_s) + min_on) * self.frame;
                    while self.preroll.len() > cap {
                        self.preroll.pop_front();
                    }
                }
                None
            }
        }
    }

    /// A finished word as a segment (`None` when shorter than `min_word_s`); its last
    /// frames become the pre-roll of the next.
    fn close(&mut self, w: Word) -> Option<Segment> {
        let speech = w.energies.len() - w.quiet;
        let pad = self.frames_of(self.cfg.pad_s);
        let keep = ((w.lead + speech + pad.min(w.quiet)) * self.frame).min(w.samples.len());
        let end_frame = w.first_frame + speech as u64;
        self.preroll =
            w.samples[w.samples.len().saturating_sub(pad * self.frame)..].iter().copied().collect();
        let seconds = |f: u64| f as f64 * self.frame as f64 / self.rate as f64;
        (speech >= self.frames_of(self.cfg.min_word_s)).then(|| Segment {
            start_s: seconds(w.first_frame),
            end_s: seconds(end_frame),
            samples: w.samples[..keep].to_vec(),
            lead: w.lead * self.frame,
            frame: self.frame,
            energies: w.energies[..speech].to_vec(),
            rate: self.rate,
        })
    }

    /// A word over `max_word_s`: cut at its quietest frame away from the edges; the rest
    /// stays open.
    fn cut(&mut self) -> Option<Segment> {
        let edge = self.frames_of(0.25);
        let energies = &self.word.as_ref()?.energies;
        let n = energies.len();
        let at = (edge..n.saturating_sub(edge)).min_by(|&a, &b| energies[a].total_cmp(&energies[b]))?;
        let mut w = self.word.take()?;
        let split = (w.lead + at) * self.frame;
        let rest = Word {
            first_frame: w.first_frame + at as u64,
            lead: 0,
            samples: w.samples[split..].to_vec(),
            energies: w.energies[at..].to_vec(),
            quiet: 0,
        };
        w.samples.truncate(split);
        w.energies.truncate(at);
        w.quiet = 0;
        self.word = Some(rest);
        let saved = self.preroll.clone();
        let seg = self.close(w);
        self.preroll = saved;
        seg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// A vowel-like word: harmonics of `f0` under a smooth envelope (`sin^shape`: the larger,
    /// the softer its edges).
    fn word(rate: u32, seconds: f32, f0: f32, shape: f32) -> Vec<f32> {
        let n = (rate as f32 * seconds) as usize;
        (0..n)
            .map(|i| {
                let t = i as f32 / rate as f32;
                let env = (std::f32::consts::PI * i as f32 / n as f32).sin().powf(shape);
                env * 0.5
                    * (1..6)
                        .map(|h| (2.0 * std::f32::consts::PI * f0 * h as f32 * t).sin() / h as f32)
                        .sum::<f32>()
            })
            .collect()
    }

    /// Words with pauses of 0.15-1 s over noise `noise_db` dBFS: boundaries within 50 ms,
    /// whatever the chunking.
    #[test]
    fn words_are_found_within_50_ms_in_any_chunking() {
        let rate = 16000;
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for noise_db in [-200.0f32, -45.0] {
            let mut x = vec![0f32; 8000];
            let mut truth = Vec::new();
            for k in 0..12 {
                let w = word(rate, rng.random_range(0.3..0.7), 110.0 + 20.0 * k as f32, 0.3);
                let start = x.len();
                x.extend(&w);
                truth.push((start as f64 / rate as f64, x.len() as f64 / rate as f64));
                x.extend(vec![0.0; (rng.random_range(0.15..1.0) * rate as f32) as usize]);
            }
            let level = 10f32.powf(noise_db / 20.0);
            x.iter_mut().for_each(|v| *v += level * rng.random_range(-1.7f32..1.7));
            let mut runs = Vec::new();
            for chunk in [1usize, 160, 1234, x.len()] {
                let mut seg = Segmenter::new(rate, VadConfig::default());
                let mut found: Vec<Segment> = x.chunks(chunk).flat_map(|c| seg.push(c)).collect();
                found.extend(seg.finish());
                runs.push(found.iter().map(|s| (s.start_s, s.end_s)).collect::<Vec<_>>());
            }
            assert!(runs.iter().all(|r| *r == runs[0]), "chunking changed the words");
            assert_eq!(runs[0].len(), truth.len(), "noise {noise_db} dB: {:?}", runs[0]);
            for ((s, e), (ts, te)) in runs[0].iter().zip(&truth) {
                assert!((s - ts).abs() <= 0.05 && (e - te).abs() <= 0.05, "({s}, {e}) vs ({ts}, {te})");
            }
        }
    }

    /// Two words back to back are one segment with a dip that `split` cuts near the join.
    #[test]
    fn a_segment_of_two_words_splits_at_the_join() {
        let rate = 16000;
        let mut x = vec![0f32; 8000];
        x.extend(word(rate, 0.4, 150.0, 1.0));
        x.extend(word(rate, 0.4, 220.0, 1.0));
        x.extend(vec![0f32; 8000]);
        let mut seg = Segmenter::new(rate, VadConfig::default());
        let mut found = seg.push(&x);
        found.extend(seg.finish());
        assert_eq!(found.len(), 1, "{found:?}");
        let (a, b) = found[0].split(0.15, 12.0).expect("a dip at the join");
        assert!((a.end_s - 0.9).abs() < 0.05 && (b.start_s - 0.9).abs() < 0.05, "cut at {}", a.end_s);
        assert_eq!(a.samples.len() + b.samples.len(), found[0].samples.len());
        // One steady word has no such dip.
        let mut seg = Segmenter::new(rate, VadConfig::default());
        let steady: Vec<f32> = (0..16000).map(|i| 0.3 * (i as f32 * 0.05).sin()).collect();
        let mut one = seg.push(&[vec![0f32; 4000], steady, vec![0f32; 4000]].concat());
        one.extend(seg.finish());
        assert_eq!(one.len(), 1);
        assert!(one[0].split(0.15, 12.0).is_none());
    }

    /// An endless stream of silence or noise holds a bounded number of samples and yields no
    /// word; noise that starts loud is learned as the floor.
    #[test]
    fn an_endless_silent_or_noisy_stream_keeps_constant_memory() {
        let rate = 16000;
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        for level in [0.0f32, 0.2] {
            let mut seg = Segmenter::new(rate, VadConfig::default());
            let (mut most, mut words) = (0, 0);
            for _ in 0..600 {
                // 600 s in 1 s chunks
                let chunk: Vec<f32> = (0..rate).map(|_| level * rng.random_range(-1.0f32..1.0)).collect();
                words += seg.push(&chunk).len();
                most = most.max(seg.buffered());
            }
            assert!(most <= rate as usize, "{most} samples held");
            assert!(words <= 1, "{words} words in noise at {level}");
            assert!(seg.history.iter().all(|h| h.len() <= 300));
        }
    }
}
