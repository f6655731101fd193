//! "Not a digit" examples as feature rows: seeded non-speech sounds, and the given speakers'
//! words played backwards or spliced. Training, validation and evaluation draw them with
//! different seeds from different speakers, so the negatives a model is scored on are not
//! the ones it learned from.

use std::path::PathBuf;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::dsp::features::FeatureExtractor;
use crate::dsp::negatives::{from_speech, non_speech_set, NegativeKind};

/// What a set of negatives is for; each part has its own seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Train,
    Val,
    Test,
}

impl Part {
    fn salt(self) -> u64 {
        match self {
            Part::Train => 0x7EA1_0000,
            Part::Val => 0x7A11_0000,
            Part::Test => 0x7E57_0000,
        }
    }

    /// Clips per example of each (synthesised, speech) kind: training sees negatives as
    /// about a fifth of its rows; the test gets more, for finer false-accept rates.
    fn clips_per_example(self) -> (usize, usize) {
        match self {
            Part::Train | Part::Val => (40, 20),
            Part::Test => (10, 10),
        }
    }
}

/// Feature rows (unstandardised log-Mel dB, row-major) and the kind of each.
#[derive(Clone, Debug, Default)]
pub struct Negatives {
    pub features: Vec<f32>,
    pub kinds: Vec<NegativeKind>,
    /// The recording each came from (`None`: generated).
    pub files: Vec<Option<PathBuf>>,
}

impl Negatives {
    pub fn len(&self) -> usize {
        self.kinds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    /// The rows of `other` after these.
    pub fn extend(&mut self, other: Negatives) {
        self.features.extend(other.features);
        self.kinds.extend(other.kinds);
        self.files.extend(other.files);
    }
}

/// Negatives for `part`, built around `clips` (trimmed clips at the extractor's rate, with
/// their digits): of each kind one for every 40 (synthesised) or 20 (speech) clips in
/// training and validation, one for every 10 in a test; at least 5 each.
pub fn negatives(
    fx: &FeatureExtractor,
    clips: &[Vec<f32>],
    digits: &[u8],
    part: Part,
    seed: u64,
) -> Negatives {
    let seed = seed ^ part.salt();
    let rate = fx.config().sample_rate;
    let (per_synth, per_speech) = part.clips_per_example();
    let mut sounds = non_speech_set((clips.len() / per_synth).max(5), rate, seed);
    sounds.extend(speech_negatives(clips, digits, (clips.len() / per_speech).max(5), seed));
    let rows: Vec<Option<(NegativeKind, Vec<f32>)>> = sounds
        .par_iter()
        .map(|(kind, samples)| fx.extract_samples(samples, rate).ok().map(|f| (*kind, f)))
        .collect();
    let mut out = Negatives::default();
    for (kind, f) in rows.into_iter().flatten() {
        out.kinds.push(kind);
        out.files.push(None);
        out.features.extend(f);
    }
    out
}

/// `count` reversed and `count` spliced words from `clips` (two different digits per splice).
fn speech_negatives(
    clips: &[Vec<f32>],
    digits: &[u8],
    count: usize,
    seed: u64,
) -> Vec<(NegativeKind, Vec<f32>)> {
    let n = clips.len();
    let distinct = digits.iter().any(|&d| d != digits[0]);
    if n == 0 || !distinct {
        return Vec::new();
    }
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5EEC);
    let mut out = Vec::with_capacity(2 * count);
    for kind in NegativeKind::SPEECH {
        for _ in 0..count {
            let a = rng.random_range(0..n);
            let b = loop {
                let b = rng.random_range(0..n);
                if digits[b] != digits[a] {
                    break b;
                }
            };
            out.push((kind, from_speech(kind, &clips[a], &clips[b], &mut rng)));
        }
    }
    out
}
