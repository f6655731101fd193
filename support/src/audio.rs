//! Reading WAV files and bringing them to the analysis sample rate.
//!
//! Mirrors `librosa.load(path, sr=16000, mono=True)`: integer samples are scaled to [-1, 1)
//! the way soundfile does (divide by 2^(bits-1)), channels are averaged (`librosa.to_mono`),
//! and the signal is resampled to `ceil(n * sr_out / sr_in)` samples (`librosa.resample`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler, WindowFunction};

/// Sample rates outside this range are refused as corrupt headers rather than resampled.
pub const MIN_SAMPLE_RATE: u32 = 1_000;
pub const MAX_SAMPLE_RATE: u32 = 768_000;
/// More channels than this is a corrupt header, not a microphone array.
pub const MAX_CHANNELS: u16 = 64;

/// A mono signal in [-1, 1] and its sample rate.
#[derive(Clone, Debug, PartialEq)]
pub struct Audio {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
}

impl Audio {
    pub fn duration_s(&self) -> f64 {
        self.samples.len() as f64 / self.sample_rate as f64
    }
}

/// Why one audio file could not be used. Always carries the file's path.
#[derive(Debug)]
pub struct AudioError {
    pub path: PathBuf,
    pub kind: AudioErrorKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AudioErrorKind {
    /// The file could not be opened or read (missing, permissions, a folder, ...).
    Io(String),
    /// Not a RIFF/WAVE file, or its header is malformed.
    NotWav(String),
    /// A valid WAV in a format we cannot decode (e.g. compressed, 12-bit float).
    Unsupported(String),
    /// The header promises more sample data than the file holds.
    Truncated(String),
    /// No samples at all.
    Empty,
    /// Longer than the configured limit; reading it would be a waste (or an attack).
    TooLong { seconds: f64, limit: f64 },
    /// NaN or infinite samples in a float WAV.
    NonFinite,
    /// The resampler refused the signal.
    Resample(String),
}

impl fmt::Display for AudioErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "cannot read file: {e}"),
            Self::NotWav(e) => write!(f, "not a WAV file ({e})"),
            Self::Unsupported(e) => write!(f, "unsupported WAV format: {e}"),
            Self::Truncated(e) => write!(f, "truncated WAV: {e}"),
            Self::Empty => write!(f, "WAV file holds no samples"),
            Self::TooLong { seconds, limit } => write!(
                f,
                "recording is {seconds:.1} s long, over the {limit:.0} s limit (FeatureConfig::max_duration_s)"
            ),
            Self::NonFinite => write!(f, "WAV holds NaN or infinite samples"),
            Self::Resample(e) => write!(f, "resampling failed: {e}"),
        }
    }
}

impl fmt::Display for AudioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.kind)
    }
}

impl std::error::Error for AudioError {}

impl AudioError {
    pub fn new(path: &Path, kind: AudioErrorKind) -> Self {
        Self {
            path: path.to_path_buf(),
            kind,
        }
    }
}

/// Basic facts from a WAV header, without decoding the samples.
#[derive(Clone, Debug, PartialEq)]
pub struct WavInfo {
    pub sample_rate: u32,
    pub channels: u16,
    pub bits_per_sample: u16,
    pub frames: u64,
}

impl WavInfo {
    pub fn duration_s(&self) -> f64 {
        self.frames as f64 / self.sample_rate as f64
    }
}

fn classify_hound(e: hound::Error) -> AudioErrorKind {
    match e {
        hound::Error::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            AudioErrorKind::Truncated("file ends before the header or sample data does".into())
        }
        // hound's own "Failed to read enough bytes." is a short read, too
        hound::Error::IoError(io) if io.to_string().contains("enough bytes") => {
            AudioErrorKind::Truncated("file ends before the header or sample data does".into())
        }
        hound::Error::IoError(io) => AudioErrorKind::Io(io.to_string()),
        hound::Error::FormatError(m) => AudioErrorKind::NotWav(m.to_string()),
        hound::Error::Unsupported => {
            AudioErrorKind::Unsupported("compressed or exotic encoding".into())
        }
        hound::Error::InvalidSampleFormat => {
            AudioErrorKind::Unsupported("bits per sample do not match the sample format".into())
        }
        hound::Error::TooWide => AudioErrorKind::Unsupported("sample width over 32 bits".into()),
        other => AudioErrorKind::NotWav(other.to_string()),
    }
}

fn open(path: &Path) -> Result<hound::WavReader<std::io::BufReader<std::fs::File>>, AudioError> {
    // hound reports a folder or missing file as a generic I/O error; say which.
    if path.is_dir() {
        return Err(AudioError::new(
            path,
            AudioErrorKind::Io("is a folder, not a file".into()),
        ));
    }
    let reader =
        hound::WavReader::open(path).map_err(|e| AudioError::new(path, classify_hound(e)))?;
    let spec = reader.spec();
    if spec.channels == 0 {
        return Err(AudioError::new(
            path,
            AudioErrorKind::NotWav("header says 0 channels".into()),
        ));
    }
    if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&spec.sample_rate) {
        return Err(AudioError::new(
            path,
            AudioErrorKind::Unsupported(format!(
                "sample rate {} Hz is outside {MIN_SAMPLE_RATE}..={MAX_SAMPLE_RATE} Hz",
                spec.sample_rate
            )),
        ));
    }
    Ok(reader)
}

/// Read only the header of a WAV file.
pub fn wav_info(path: &Path) -> Result<WavInfo, AudioError> {
    let reader = open(path)?;
    let spec = reader.spec();
    Ok(WavInfo {
        sample_rate: spec.sample_rate,
        channels: spec.channels,
        bits_per_sample: spec.bits_per_sample,
        frames: reader.duration() as u64,
    })
}

/// Load a WAV file as mono f32 at its own sample rate.
///
/// Accepts 8/16/24/32-bit integer PCM and 32-bit float, any channel count (averaged to mono).
/// Files longer than `max_duration_s` are refused before their samples are read.
pub fn load_wav(path: &Path, max_duration_s: f64) -> Result<Audio, AudioError> {
    let reader = open(path)?;
    let spec = reader.spec();
    let frames = reader.duration() as usize;
    if frames == 0 {
        return Err(AudioError::new(path, AudioErrorKind::Empty));
    }
    let seconds = frames as f64 / spec.sample_rate as f64;
    if seconds > max_duration_s {
        return Err(AudioError::new(
            path,
            AudioErrorKind::TooLong {
                seconds,
                limit: max_duration_s,
            },
        ));
    }
    let truncated = |got: usize| {
        AudioError::new(
            path,
            AudioErrorKind::Truncated(format!(
                "header promises {} samples, file holds {got}",
                frames * spec.channels as usize
            )),
        )
    };
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => {
            if spec.bits_per_sample != 32 {
                return Err(AudioError::new(
                    path,
                    AudioErrorKind::Unsupported(format!("{}-bit float", spec.bits_per_sample)),
                ));
            }
            read_all(reader.into_samples::<f32>(), |s| s)
                .map_err(|(n, e)| fail(path, n, e, &truncated))?
        }
        hound::SampleFormat::Int => {
            if !matches!(spec.bits_per_sample, 8 | 16 | 24 | 32) {
                return Err(AudioError::new(
                    path,
                    AudioErrorKind::Unsupported(format!(
                        "{}-bit integer PCM",
                        spec.bits_per_sample
                    )),
                ));
            }
            // soundfile's int -> float conversion: divide by 2^(bits-1).
            let scale = 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f64;
            read_all(reader.into_samples::<i32>(), |s| (s as f64 * scale) as f32)
                .map_err(|(n, e)| fail(path, n, e, &truncated))?
        }
    };
    if interleaved.iter().any(|s| !s.is_finite()) {
        return Err(AudioError::new(path, AudioErrorKind::NonFinite));
    }
    Ok(Audio {
        samples: to_mono(&interleaved, spec.channels as usize),
        sample_rate: spec.sample_rate,
    })
}

fn read_all<S, I: Iterator<Item = hound::Result<S>>>(
    it: I,
    conv: impl Fn(S) -> f32,
) -> Result<Vec<f32>, (usize, hound::Error)> {
    // The size hint comes from the header: trust it only up to a sane amount.
    let (lo, _) = it.size_hint();
    let mut out = Vec::with_capacity(lo.min(1 << 24));
    for s in it {
        match s {
            Ok(v) => out.push(conv(v)),
            Err(e) => return Err((out.len(), e)),
        }
    }
    Ok(out)
}

fn fail(
    path: &Path,
    got: usize,
    e: hound::Error,
    truncated: &dyn Fn(usize) -> AudioError,
) -> AudioError {
    match classify_hound(e) {
        AudioErrorKind::Truncated(_) => truncated(got),
        kind => AudioError::new(path, kind),
    }
}

/// Average interleaved channels into one (`librosa.to_mono`).
pub fn to_mono(interleaved: &[f32], channels: usize) -> Vec<f32> {
    if channels <= 1 {
        return interleaved.to_vec();
    }
    let inv = 1.0 / channels as f32;
    interleaved
        .chunks_exact(channels)
        .map(|frame| frame.iter().sum::<f32>() * inv)
        .collect()
}

/// Input frames per FFT block of the resampler. Long blocks give a steep anti-aliasing filter
/// (close to soxr's "HQ" used by librosa); the delay they add is trimmed by rubato.
const RESAMPLER_CHUNK: usize = 2048;

thread_local! {
    // Building an FFT resampler plans FFTs and designs a filter: keep one per rate pair and
    // thread, so a batch of files at the same rate pays that once.
    static RESAMPLERS: RefCell<HashMap<(u32, u32), Fft<f32>>> = RefCell::new(HashMap::new());
}

/// Resample a mono signal to `sr_out`, returning `ceil(len * sr_out / sr_in)` samples like
/// `librosa.resample` (rubato's synchronous FFT resampler, delay compensated).
pub fn resample(samples: &[f32], sr_in: u32, sr_out: u32) -> Result<Vec<f32>, String> {
    if sr_in == sr_out || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    let expected = (samples.len() as u128 * sr_out as u128).div_ceil(sr_in as u128) as usize;
    RESAMPLERS.with(|cell| {
        let mut map = cell.borrow_mut();
        let resampler = match map.entry((sr_in, sr_out)) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => v.insert(
                Fft::<f32>::new_custom(
                    sr_in as usize,
                    sr_out as usize,
                    RESAMPLER_CHUNK,
                    1,
                    1,
                    WindowFunction::BlackmanHarris2,
                    FixedSync::Input,
                )
                .map_err(|e| e.to_string())?,
            ),
        };
        let input = InterleavedSlice::new(samples, 1, samples.len()).map_err(|e| e.to_string())?;
        let out = resampler
            .process_all(&input, samples.len(), None)
            .map_err(|e| e.to_string())?;
        let mut data = out.take_data();
        data.resize(expected, 0.0);
        Ok(data)
    })
}
