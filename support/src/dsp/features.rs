//! From a signal to the 128 x 32 log-Mel image the CNN sees, step for step like the seed:
//!
//! ```text
//! librosa.load(sr=16000) -> effects.trim(top_db=20) -> util.normalize -> util.fix_length(16000)
//!   -> feature.melspectrogram(n_fft=2048, hop_length=512, n_mels=128) -> power_to_db(ref=np.max)
//! ```
//!
//! Every number is a field of [`FeatureConfig`]; its defaults are the seed's.

use std::path::Path;
use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};
use serde::{Deserialize, Serialize};

use crate::dsp::audio::{self, AudioError, AudioErrorKind};
use crate::dsp::effects::{fix_length, normalize, trim_bounds, word_bounds, WordTrim};
use crate::dsp::mel::{self, SparseFilterbank};
use crate::dsp::resample::{self, Downsampler};

/// Bumped whenever the feature computation changes in a way the config does not show, so that
/// caches and exported models made by older code are recognised.
pub const FEATURE_VERSION: u32 = 1;

/// All preprocessing parameters. Defaults reproduce the seed notebook.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureConfig {
    /// Analysis sample rate (`librosa.load(sr=...)`).
    pub sample_rate: u32,
    /// `librosa.effects.trim(top_db=...)`: frames quieter than this many dB below the loudest
    /// frame are silence.
    pub trim_top_db: f32,
    /// Find the word as in a room ([`word_bounds`], not librosa's): above the noise floor,
    /// far clicks dropped (absent in older caches and model files: librosa's trim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub word_trim: Option<WordTrim>,
    /// `librosa.effects.trim(frame_length=...)`.
    pub trim_frame_length: usize,
    /// `librosa.effects.trim(hop_length=...)`.
    pub trim_hop_length: usize,
    /// `librosa.util.fix_length(size=...)`: pad with zeros at the end or cut, in samples.
    pub clip_samples: usize,
    /// `melspectrogram(n_fft=...)`, also the Hann window length.
    pub n_fft: usize,
    /// `melspectrogram(hop_length=...)`.
    pub hop_length: usize,
    /// `melspectrogram(n_mels=...)`.
    pub n_mels: usize,
    /// Lowest mel filter edge in Hz.
    pub fmin: f32,
    /// Highest mel filter edge in Hz; `None` = Nyquist (librosa's default).
    pub fmax: Option<f32>,
    /// `power_to_db(amin=...)`.
    pub amin: f32,
    /// `power_to_db(top_db=...)`: floor, in dB below the maximum.
    pub top_db: f32,
    /// Recordings longer than this are refused (AudioMNIST clips are under 1 s).
    pub max_duration_s: f64,
    /// Where the STFT frames sit (absent in older caches and model files: `pad`).
    #[serde(default)]
    pub framing: Framing,
    /// How input above `sample_rate` is brought down to it (absent in older caches and model
    /// files: `rubato`).
    #[serde(default = "Downsampler::legacy")]
    pub downsampler: Downsampler,
}

/// Where the `n_frames` STFT frames of a trimmed word sit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Framing {
    /// The seed's: `fix_length` pads the word to `clip_samples`, frames every `hop_length`
    /// samples; a short word fills the first few frames and its length shows.
    #[default]
    Pad,
    /// The frame centres spread evenly from the word's first sample to its last (hop =
    /// word length / (n_frames - 1)): every image shows the whole word at the same scale,
    /// whatever the speaking rate, with finer time steps for short words.
    Stretch,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        Self {
            sample_rate: 16_000,
            trim_top_db: 20.0,
            word_trim: None,
            trim_frame_length: 2048,
            trim_hop_length: 512,
            clip_samples: 16_000,
            n_fft: 2048,
            hop_length: 512,
            n_mels: 128,
            fmin: 0.0,
            fmax: None,
            amin: 1e-10,
            top_db: 80.0,
            max_duration_s: 60.0,
            framing: Framing::Pad,
            downsampler: Downsampler::Sinc,
        }
    }
}

impl FeatureConfig {
    /// Frames of the centred STFT over one clip: `1 + clip_samples / hop_length` (32 by default).
    pub fn n_frames(&self) -> usize {
        1 + self.clip_samples / self.hop_length
    }

    /// Where the word is in a signal at the analysis rate: `[start, end)` in samples.
    pub fn trim(&self, resampled: &[f32]) -> (usize, usize) {
        let (top_db, frame, hop) = (self.trim_top_db, self.trim_frame_length, self.trim_hop_length);
        match self.word_trim {
            None => trim_bounds(resampled, top_db, frame, hop),
            Some(w) => word_bounds(resampled, top_db, w, self.sample_rate, frame, hop),
        }
    }

    /// Values per feature image (`n_mels * n_frames`).
    pub fn feature_len(&self) -> usize {
        self.n_mels * self.n_frames()
    }

    pub fn validate(&self) -> Result<(), crate::Error> {
        let nyquist = self.sample_rate as f32 / 2.0;
        let fmax = self.fmax.unwrap_or(nyquist);
        let checks = [
            (self.sample_rate >= audio::MIN_SAMPLE_RATE, "sample_rate is too low"),
            (self.n_fft >= 16, "n_fft must be >= 16"),
            (self.hop_length > 0 && self.trim_hop_length > 0, "hop lengths must be > 0"),
            (self.trim_frame_length > 0, "trim_frame_length must be > 0"),
            (self.clip_samples > 0, "clip_samples must be > 0"),
            (self.n_mels > 0, "n_mels must be > 0"),
            (
                self.fmin >= 0.0 && fmax > self.fmin && fmax <= nyquist,
                "need 0 <= fmin < fmax <= sample_rate/2",
            ),
            (
                self.amin > 0.0 && self.top_db > 0.0 && self.trim_top_db > 0.0,
                "amin and top_db values must be > 0",
            ),
            (self.max_duration_s > 0.0, "max_duration_s must be > 0"),
            (self.word_trim.is_none_or(|w| w.is_valid()), "word_trim's margin, gap and room must be >= 0"),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, why)) => Err(crate::Error::Config(format!("invalid feature config: {why}"))),
            None => Ok(()),
        }
    }
}

/// Periodic Hann window (`scipy.signal.get_window("hann", n, fftbins=True)`).
pub fn hann_window(n: usize) -> Vec<f32> {
    (0..n).map(|i| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos()) as f32).collect()
}

/// The preprocessing of one recording, stage by stage (for plots and tests).
#[derive(Clone, Debug)]
pub struct Stages {
    /// After mixing to mono and resampling to the analysis rate.
    pub resampled: Vec<f32>,
    /// `librosa.effects.trim` bounds into `resampled`.
    pub trim: (usize, usize),
    /// Trimmed, peak-normalised and (`Framing::Pad`) fixed to `clip_samples`.
    pub clip: Vec<f32>,
    /// `n_mels x n_frames` log-Mel image, row-major (mel band, then frame).
    pub log_mel: Vec<f32>,
}

/// Working buffers of one thread, reused from file to file: fresh allocations of these
/// sizes cost page faults on every recording.
#[derive(Default)]
struct Scratch {
    samples: Vec<f32>,
    resampled: Vec<f32>,
    trim: (usize, usize),
    clip: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Turns recordings into log-Mel images. Build once (it plans the FFT and the filterbank) and
/// share freely between threads.
#[derive(Clone)]
pub struct FeatureExtractor {
    config: FeatureConfig,
    window: Vec<f32>,
    filterbank: SparseFilterbank,
    fft: Arc<dyn RealToComplex<f32>>,
}

impl std::fmt::Debug for FeatureExtractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureExtractor").field("config", &self.config).finish()
    }
}

impl FeatureExtractor {
    pub fn new(config: FeatureConfig) -> Result<Self, crate::Error> {
        config.validate()?;
        let sr = config.sample_rate as f64;
        let fmax = config.fmax.map_or(sr / 2.0, |f| f as f64);
        let dense = mel::filterbank(sr, config.n_fft, config.n_mels, config.fmin as f64, fmax);
        Ok(Self {
            window: hann_window(config.n_fft),
            filterbank: SparseFilterbank::from_dense(&dense),
            fft: RealFftPlanner::<f32>::new().plan_fft_forward(config.n_fft),
            config,
        })
    }

    pub fn config(&self) -> &FeatureConfig {
        &self.config
    }

    /// Features of one WAV file: `n_mels x n_frames` values, row-major.
    pub fn extract_file(&self, path: &Path) -> Result<Vec<f32>, AudioError> {
        SCRATCH.with_borrow_mut(|scratch| {
            let sr = audio::load_wav_into(path, self.config.max_duration_s, &mut scratch.samples)?;
            let samples = std::mem::take(&mut scratch.samples);
            let result = self.run(&samples, sr, scratch).map_err(|kind| AudioError::new(path, kind));
            scratch.samples = samples;
            result
        })
    }

    /// Features of a mono signal at any sample rate (what a streaming front end would call
    /// with each 1-second window).
    pub fn extract_samples(&self, samples: &[f32], sample_rate: u32) -> Result<Vec<f32>, AudioErrorKind> {
        check_finite(samples)?;
        SCRATCH.with_borrow_mut(|scratch| self.run(samples, sample_rate, scratch))
    }

    /// Every preprocessing stage of a mono signal, for inspection.
    pub fn stages(&self, samples: &[f32], sample_rate: u32) -> Result<Stages, AudioErrorKind> {
        check_finite(samples)?;
        let mut scratch = Scratch::default();
        let log_mel = self.run(samples, sample_rate, &mut scratch)?;
        Ok(Stages { resampled: scratch.resampled, trim: scratch.trim, clip: scratch.clip, log_mel })
    }

    /// The pipeline, with its intermediate signals left in `scratch` (`samples` are finite:
    /// the WAV decoder or the public entry points checked).
    fn run(
        &self,
        samples: &[f32],
        sample_rate: u32,
        scratch: &mut Scratch,
    ) -> Result<Vec<f32>, AudioErrorKind> {
        if samples.is_empty() {
            return Err(AudioErrorKind::Empty);
        }
        let c = &self.config;
        self.resample_into(samples, sample_rate, &mut scratch.resampled)
            .map_err(|e| AudioErrorKind::Resample(e.to_string()))?;
        scratch.trim = c.trim(&scratch.resampled);
        let (start, end) = scratch.trim;
        scratch.clip.clear();
        scratch.clip.extend_from_slice(&scratch.resampled[start..end]);
        normalize(&mut scratch.clip);
        if c.framing == Framing::Stretch {
            return Ok(self.log_mel_of_word(&scratch.clip));
        }
        scratch.clip.resize(c.clip_samples, 0.0);
        Ok(self.log_mel(&scratch.clip))
    }

    /// A signal at `sample_rate` brought to the analysis rate, the way this config says.
    pub fn resample_into(
        &self,
        samples: &[f32],
        sample_rate: u32,
        out: &mut Vec<f32>,
    ) -> Result<(), crate::Error> {
        resample::to_rate(self.config.downsampler, samples, sample_rate, self.config.sample_rate, out)
    }

    /// The log-Mel image of a trimmed, normalised word, framed as the config says.
    pub fn log_mel_of_word(&self, word: &[f32]) -> Vec<f32> {
        let mut mel = match self.config.framing {
            Framing::Pad => self.melspectrogram(&fix_length(word.to_vec(), self.config.clip_samples)),
            Framing::Stretch => {
                let n = self.config.n_frames();
                let last = word.len().saturating_sub(1);
                // frame t centred on sample round(t * last / (n - 1))
                self.mel_frames(word, n, |t| (t * last + (n - 1) / 2) / (n - 1).max(1))
            }
        };
        power_to_db(&mut mel, self.config.amin, self.config.top_db);
        mel
    }

    /// Trim, normalize and fix_length a signal already at the analysis rate.
    pub fn clip_from(&self, resampled: &[f32], (start, end): (usize, usize)) -> Vec<f32> {
        let mut clip = resampled[start..end].to_vec();
        normalize(&mut clip);
        fix_length(clip, self.config.clip_samples)
    }

    /// `power_to_db(melspectrogram(y), ref=np.max, amin, top_db)` of a signal at the analysis
    /// rate. Centred frames with zero padding (librosa >= 0.10's `pad_mode="constant"`).
    pub fn log_mel(&self, y: &[f32]) -> Vec<f32> {
        let mut mel = self.melspectrogram(y);
        power_to_db(&mut mel, self.config.amin, self.config.top_db);
        mel
    }

    /// Power mel spectrogram, `n_mels x n_frames` row-major, for a signal of any length.
    pub fn melspectrogram(&self, y: &[f32]) -> Vec<f32> {
        let hop = self.config.hop_length;
        self.mel_frames(y, 1 + y.len() / hop, |t| t * hop)
    }

    /// Power mel spectrogram of `n_frames` frames, frame `t` centred on sample `centre(t)`
    /// (non-decreasing), zeros outside `y`.
    fn mel_frames(&self, y: &[f32], n_frames: usize, centre: impl Fn(usize) -> usize) -> Vec<f32> {
        let c = &self.config;
        let half = c.n_fft / 2;
        let mut frame = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0f32; spectrum.len()];
        let mut column = vec![0f32; c.n_mels];
        let mut out = vec![0f32; c.n_mels * n_frames];
        // fix_length pads short clips with zeros: frames that see only padding have an
        // all-zero spectrum, so skip their FFTs (most frames of a short word).
        let signal_end = y.iter().rposition(|v| *v != 0.0).map_or(0, |i| i + 1);
        for t in 0..n_frames {
            let at = centre(t);
            if at >= signal_end + half {
                break;
            }
            // sample index of frame position k is centre + k - half; zeros outside the signal
            let start = at.wrapping_sub(half);
            if at >= half && start + c.n_fft <= y.len() {
                for ((v, w), s) in frame.iter_mut().zip(&self.window).zip(&y[start..]) {
                    *v = s * w;
                }
            } else {
                for (k, (v, w)) in frame.iter_mut().zip(&self.window).enumerate() {
                    let i = start.wrapping_add(k);
                    *v = if i < y.len() { y[i] * w } else { 0.0 };
                }
            }
            self.fft
                .process_with_scratch(&mut frame, &mut spectrum, &mut scratch)
                .expect("buffer sizes come from the plan");
            for (p, z) in power.iter_mut().zip(&spectrum) {
                *p = z.re * z.re + z.im * z.im;
            }
            self.filterbank.apply(&power, &mut column);
            for (m, v) in column.iter().enumerate() {
                out[m * n_frames + t] = *v;
            }
        }
        out
    }
}

/// NaN or infinite samples are refused (they would poison every FFT bin).
fn check_finite(samples: &[f32]) -> Result<(), AudioErrorKind> {
    match audio::all_finite(samples) {
        true => Ok(()),
        false => Err(AudioErrorKind::NonFinite),
    }
}

/// `librosa.power_to_db(S, ref=np.max, amin, top_db)` in place:
/// `10*log10(max(amin, S)) - 10*log10(max(amin, max(S)))`, floored at `max - top_db`.
pub fn power_to_db(s: &mut [f32], amin: f32, top_db: f32) {
    // f32 logarithms, as librosa computes on float32 spectrograms (and 2x faster than f64).
    let peak = s.iter().cloned().fold(0f32, f32::max);
    let reference = 10.0 * peak.max(amin).log10();
    let mut max_db = f32::NEG_INFINITY;
    // Cells at or below amin (all the zero-padded frames) share one value: skip their log.
    let floor_db = 10.0 * amin.log10() - reference;
    for v in s.iter_mut() {
        let db = if *v <= amin { floor_db } else { 10.0 * v.log10() - reference };
        max_db = max_db.max(db);
        *v = db;
    }
    let floor = max_db - top_db;
    for v in s.iter_mut() {
        *v = v.max(floor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_gives_128_by_32() {
        let c = FeatureConfig::default();
        assert_eq!((c.n_mels, c.n_frames()), (128, 32));
    }

    #[test]
    fn silence_gives_zeros_not_nan() {
        let fx = FeatureExtractor::new(FeatureConfig::default()).unwrap();
        let out = fx.extract_samples(&vec![0.0; 8000], 8000).unwrap();
        assert_eq!(out.len(), 128 * 32);
        // librosa gives exactly 0 dB everywhere for digital silence (ref and values both clamp to amin)
        assert!(out.iter().all(|v| *v == 0.0));
    }

    /// A chirp-like test word of `n` samples.
    fn word(n: usize) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * (0.05 + 0.3 * i as f32 / n as f32)).sin()).collect()
    }

    #[test]
    fn stretch_framing_spreads_the_frames_over_the_word() {
        let pad = FeatureExtractor::new(FeatureConfig::default()).unwrap();
        let stretch =
            FeatureExtractor::new(FeatureConfig { framing: Framing::Stretch, ..FeatureConfig::default() })
                .unwrap();
        // A word of 31 hops + 1 sample: stretched centres are exactly the padded ones.
        let exact = word(31 * 512 + 1);
        assert_eq!(stretch.log_mel_of_word(&exact), pad.log_mel_of_word(&exact));
        assert_eq!(pad.log_mel_of_word(&exact), pad.log_mel(&fix_length(exact.clone(), 16_000)));
        // A short word: padded, the last frames see nothing (the -80 dB floor); stretched, every
        // frame sees the word.
        let short = word(4000);
        let (p, s) = (pad.log_mel_of_word(&short), stretch.log_mel_of_word(&short));
        let column_max = |img: &[f32], t: usize| (0..128).map(|m| img[m * 32 + t]).fold(f32::MIN, f32::max);
        assert!((20..32).all(|t| column_max(&p, t) == -80.0));
        assert!((0..32).all(|t| column_max(&s, t) > -40.0));
        // The extractor's own pipeline frames the trimmed word the same way.
        let mut signal = vec![0f32; 2000];
        signal.extend(&short);
        signal.extend(vec![0f32; 6000]);
        let via_pipeline = stretch.extract_samples(&signal, 16_000).unwrap();
        let stages = stretch.stages(&signal, 16_000).unwrap();
        assert_eq!(via_pipeline, stretch.log_mel_of_word(&stages.clip));
        assert_ne!(via_pipeline, pad.extract_samples(&signal, 16_000).unwrap());
    }

    #[test]
    fn invalid_config_is_refused() {
        let c = FeatureConfig { fmax: Some(9000.0), ..FeatureConfig::default() };
        assert!(FeatureExtractor::new(c).unwrap_err().to_string().contains("fmax"));
    }
}
