//! Live recognition: [`segment::Segmenter`] cuts a stream into words as they end, and a
//! [`Listener`] classifies each with a [`Predictor`], answering a digit or "not a digit" with
//! the word's start and end. Push samples in chunks of any size; memory stays bounded.
//! [`sequence`] builds long recordings of digits with their transcript to measure it.

pub mod segment;
#[cfg(feature = "train")]
pub mod sequence;

use std::ops::Deref;

use serde::Serialize;

use crate::infer::{Prediction, Predictor};
use segment::{Segment, Segmenter, VadConfig};

/// One word heard: where it is in the stream (s) and what the model made of it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    pub start_s: f64,
    pub end_s: f64,
    pub digit: Option<usize>,
    pub label: String,
    pub confidence: f32,
}

impl Event {
    /// `1.84-2.31 s  7 (0.97)`.
    pub fn line(&self) -> String {
        format!("{:.2}-{:.2} s  {} ({:.2})", self.start_s, self.end_s, self.label, self.confidence)
    }
}

/// The digits of `events`, in order (`5551234`).
pub fn transcript(events: &[Event]) -> String {
    events.iter().filter_map(|e| e.digit).map(|d| char::from(b'0' + d as u8)).collect()
}

/// A model listening to one stream of mono samples at one rate; `P` holds the predictor (a
/// reference, or an `Arc` for a stream that outlives the call that opened it, as a server's).
pub struct Listener<P: Deref<Target = Predictor>> {
    predictor: P,
    segmenter: Segmenter,
    /// "Not a digit"'s probability is multiplied by this before deciding (1: as the model says).
    reject_weight: f32,
}

impl<P: Deref<Target = Predictor>> Listener<P> {
    pub fn new(predictor: P, rate: u32) -> Self {
        Self::with_config(predictor, rate, VadConfig::default())
    }

    pub fn with_config(predictor: P, rate: u32, cfg: VadConfig) -> Self {
        Self { predictor, segmenter: Segmenter::new(rate, cfg), reject_weight: REJECT_WEIGHT }
    }

    /// Weigh the "not a digit" class by `w` before deciding: below 1, a word the detector
    /// heard as speech is taken for a digit more readily (in a stream of digits most words are
    /// digits, and noise makes the model doubt them).
    pub fn with_reject_weight(mut self, w: f32) -> Self {
        self.reject_weight = w;
        self
    }

    /// Feed mono samples; returns the words that ended in them, classified.
    pub fn push(&mut self, samples: &[f32]) -> Vec<Event> {
        let segments = self.segmenter.push(samples);
        self.classify(segments)
    }

    /// The end of the stream: the word still open, if any.
    pub fn finish(&mut self) -> Vec<Event> {
        let segments = self.segmenter.finish();
        self.classify(segments)
    }

    /// Learn the noise floor from a whole recording's start first ([`Segmenter::prime`]).
    pub fn prime(&mut self, samples: &[f32]) {
        self.segmenter.prime(samples);
    }

    /// Samples held (bounded on an endless stream).
    pub fn buffered(&self) -> usize {
        self.segmenter.buffered()
    }

    /// Classify words already cut ([`recording_words`], [`segment::Segmenter`]).
    pub fn classify(&self, segments: Vec<Segment>) -> Vec<Event> {
        segments.into_iter().flat_map(|s| self.words_in(s)).collect()
    }

    /// One word, or two run together: a long segment with a deep dip is split there when
    /// both halves are digits, each more certain than the whole.
    fn words_in(&self, s: Segment) -> Vec<Event> {
        let whole = self.predict(&s);
        if let Some((a, b)) = s.two_words() {
            let (pa, pb) = (self.predict(&a), self.predict(&b));
            let sure = |p: &Prediction| p.digit.is_some() && p.confidence >= 0.5;
            let beats = whole.digit.is_none() || pa.confidence.min(pb.confidence) > whole.confidence;
            if sure(&pa) && sure(&pb) && beats {
                return vec![event(&a, pa), event(&b, pb)];
            }
        }
        vec![event(&s, whole)]
    }

    fn predict(&self, s: &Segment) -> Prediction {
        let p = self.predictor.predict_samples(&s.samples, self.segmenter.rate()).unwrap_or_else(|e| {
            Prediction { reason: Some(e.to_string()), ..Prediction::silence(f32::NEG_INFINITY) }
        });
        if self.reject_weight == 1.0 || p.probabilities.len() <= 10 {
            return p;
        }
        let mut q = p.probabilities;
        q[10] *= self.reject_weight;
        let sum: f32 = q.iter().sum();
        q.iter_mut().for_each(|v| *v /= sum.max(f32::MIN_POSITIVE));
        Prediction::from_probabilities(q, self.predictor.threshold(), self.predictor.reject_at())
    }
}

/// The weight of "not a digit" in a stream ([`Listener::with_reject_weight`]): of 1, 0.3 and
/// 0.1, 0.1 gave the lowest digit error rate on validation speakers' sequences (RESULTS.md).
pub const REJECT_WEIGHT: f32 = 0.1;

/// A word's event, from its prediction.
pub fn event(s: &Segment, p: Prediction) -> Event {
    Event { start_s: s.start_s, end_s: s.end_s, digit: p.digit, label: p.label, confidence: p.confidence }
}

/// The words of a whole recording. It is read as if surrounded by silence (0.25 s each side),
/// and the floor is learned from its start first: a word at the very start, or a recording
/// trimmed to its word, is then heard.
pub fn recording_words(samples: &[f32], rate: u32) -> Vec<Segment> {
    let pad = rate as usize / 4;
    let mut padded = vec![0f32; pad];
    padded.extend_from_slice(samples);
    padded.resize(samples.len() + 2 * pad, 0.0);
    let mut segmenter = Segmenter::new(rate, VadConfig::default());
    segmenter.prime(&padded);
    let mut words = segmenter.push(&padded);
    words.extend(segmenter.finish());
    let (shift, end) = (pad as f64 / rate as f64, samples.len() as f64 / rate as f64);
    let at = |t: f64| ((t - shift).clamp(0.0, end) * 1000.0).round() / 1000.0;
    for w in &mut words {
        (w.start_s, w.end_s) = (at(w.start_s), at(w.end_s));
    }
    words
}

/// Every event of a whole recording ([`recording_words`], classified).
pub fn transcribe(predictor: &Predictor, samples: &[f32], rate: u32) -> Vec<Event> {
    Listener::new(predictor, rate).classify(recording_words(samples, rate))
}
