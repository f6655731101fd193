//! Reading WAV files and bringing them to the analysis sample rate.
//!
//! Mirrors `librosa.load(path, sr=16000, mono=True)`: integer samples are scaled to [-1, 1)
//! the way soundfile does (divide by 2^(bits-1)), channels are averaged (`librosa.to_mono`),
//! and [`crate::dsp::resample`] brings the signal to the analysis rate.

use std::cell::RefCell;
use std::fmt;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

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
    /// The model failed on the recording's features.
    Model(String),
    /// The recording is silent: its peak is below the "no speech" threshold.
    NoSpeech { peak_dbfs: f32 },
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
            Self::Model(e) => write!(f, "the model failed: {e}"),
            Self::NoSpeech { peak_dbfs } => write!(f, "no speech: the recording is silent (peak {peak_dbfs:.0} dBFS)"),
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
        Self { path: path.to_path_buf(), kind }
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
        hound::Error::Unsupported => AudioErrorKind::Unsupported("compressed or exotic encoding".into()),
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
        return Err(AudioError::new(path, AudioErrorKind::Io("is a folder, not a file".into())));
    }
    let reader = hound::WavReader::open(path).map_err(|e| AudioError::new(path, classify_hound(e)))?;
    check_spec(path, &reader.spec())?;
    Ok(reader)
}

fn check_spec(path: &Path, spec: &hound::WavSpec) -> Result<(), AudioError> {
    if spec.channels == 0 {
        return Err(AudioError::new(path, AudioErrorKind::NotWav("header says 0 channels".into())));
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
    Ok(())
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

/// Write mono 32-bit float samples as a WAV file (through a temporary file, renamed into
/// place).
pub fn write_wav(path: &Path, sample_rate: u32, samples: &[f32]) -> anyhow::Result<()> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    crate::data::write_atomically(path, |tmp| {
        let mut w = hound::WavWriter::new(std::io::BufWriter::new(tmp.as_file_mut()), spec)?;
        for &s in samples {
            w.write_sample(s)?;
        }
        Ok(w.finalize()?)
    })
}

/// Load a WAV file as mono f32 at its own sample rate.
///
/// Accepts 8/16/24/32-bit integer PCM and 32/64-bit float, any channel count (averaged to
/// mono). hound parses the header; the sample data is then read in one go and converted in
/// bulk (hound's per-sample iterator was a fifth of the whole pipeline's time). Files longer
/// than `max_duration_s` are refused before their samples are read.
pub fn load_wav(path: &Path, max_duration_s: f64) -> Result<Audio, AudioError> {
    let mut samples = Vec::new();
    let sample_rate = load_wav_into(path, max_duration_s, &mut samples)?;
    Ok(Audio { samples, sample_rate })
}

/// [`load_wav`] into a caller's buffer (replacing its contents); returns the sample rate.
/// Batch extraction reuses one buffer per thread instead of allocating per file.
pub fn load_wav_into(path: &Path, max_duration_s: f64, out: &mut Vec<f32>) -> Result<u32, AudioError> {
    let err = |kind| AudioError::new(path, kind);
    if path.is_dir() {
        return Err(err(AudioErrorKind::Io("is a folder, not a file".into())));
    }
    let file = std::fs::File::open(path).map_err(|e| err(AudioErrorKind::Io(e.to_string())))?;
    if file.metadata().is_ok_and(|m| m.len() == 0) {
        return Err(err(AudioErrorKind::NotWav("the file is empty (0 bytes)".into())));
    }
    match hound::WavReader::new(std::io::BufReader::new(file)) {
        Ok(header) => decode_wav(path, header, max_duration_s, out),
        // A data chunk that ends in part of a sample: soundfile (and so librosa) reads the
        // whole frames and drops the rest; so do we.
        Err(hound::Error::FormatError(m))
            if m.contains("multiple of sample size") || m.contains("data chunk length") =>
        {
            let mut bytes = std::fs::read(path).map_err(|e| err(AudioErrorKind::Io(e.to_string())))?;
            whole_frames(&mut bytes).ok_or_else(|| err(AudioErrorKind::NotWav(m.to_string())))?;
            let header =
                hound::WavReader::new(std::io::Cursor::new(bytes)).map_err(|e| err(classify_hound(e)))?;
            decode_wav(path, header, max_duration_s, out)
        }
        Err(e) => Err(err(classify_hound(e))),
    }
}

/// [`load_wav`] of a WAV file's bytes (an upload, a pipe); `name` labels the errors.
pub fn decode_wav_bytes(name: &Path, mut bytes: Vec<u8>, max_duration_s: f64) -> Result<Audio, AudioError> {
    let err = |kind| AudioError::new(name, kind);
    if bytes.is_empty() {
        return Err(err(AudioErrorKind::NotWav("empty (0 bytes)".into())));
    }
    let first = hound::WavReader::new(std::io::Cursor::new(&bytes)).err();
    match first {
        Some(hound::Error::FormatError(m))
            if m.contains("multiple of sample size") || m.contains("data chunk length") =>
        {
            whole_frames(&mut bytes).ok_or_else(|| err(AudioErrorKind::NotWav(m.to_string())))?
        }
        Some(e) => return Err(err(classify_hound(e))),
        None => {}
    }
    let header = hound::WavReader::new(std::io::Cursor::new(bytes)).map_err(|e| err(classify_hound(e)))?;
    let mut samples = Vec::new();
    let sample_rate = decode_wav(name, header, max_duration_s, &mut samples)?;
    Ok(Audio { samples, sample_rate })
}

/// Shorten the `data` chunk's length in a WAV file's bytes to whole sample frames
/// (`block_align` of the `fmt ` chunk). `None` when the chunks cannot be found.
fn whole_frames(bytes: &mut [u8]) -> Option<()> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return None;
    }
    let (mut pos, mut align) = (12, None);
    while pos + 8 <= bytes.len() {
        let size = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().ok()?) as usize;
        match &bytes[pos..pos + 4] {
            b"fmt " if pos + 22 <= bytes.len() => {
                align = Some(u16::from_le_bytes([bytes[pos + 20], bytes[pos + 21]]) as usize)
            }
            b"data" => {
                let a = align.filter(|&a| a > 0)?;
                let whole = (size / a * a) as u32;
                bytes[pos + 4..pos + 8].copy_from_slice(&whole.to_le_bytes());
                return Some(());
            }
            _ => {}
        }
        pos = pos.checked_add(8 + size + (size & 1))?;
    }
    None
}

/// Read the samples after a parsed header (see [`load_wav`]).
fn decode_wav<R: Read + Seek>(
    path: &Path,
    header: hound::WavReader<R>,
    max_duration_s: f64,
    out: &mut Vec<f32>,
) -> Result<u32, AudioError> {
    let err = |kind| AudioError::new(path, kind);
    let spec = header.spec();
    check_spec(path, &spec)?;
    let samples_total = header.len() as usize;
    let channels = spec.channels as usize;
    // hound stops right after the `data` chunk header, whose last 4 bytes are the chunk length;
    // it has checked that the length is a whole number of samples. That gives the container
    // width (which hound keeps private), e.g. 4 bytes for 24-bit samples in 32-bit slots.
    let mut reader = header.into_inner();
    let io = |e: std::io::Error| err(AudioErrorKind::Io(e.to_string()));
    let data_start = reader.stream_position().map_err(io)?;
    reader.seek(std::io::SeekFrom::Start(data_start.saturating_sub(4))).map_err(io)?;
    let mut len_bytes = [0u8; 4];
    reader.read_exact(&mut len_bytes).map_err(io)?;
    let data_len = u32::from_le_bytes(len_bytes) as usize;
    if samples_total == 0 {
        return Err(err(AudioErrorKind::Empty));
    }
    let width = data_len / samples_total;
    let frames = data_len as usize / (width * channels);
    if frames == 0 {
        return Err(err(AudioErrorKind::Empty));
    }
    let seconds = frames as f64 / spec.sample_rate as f64;
    if seconds > max_duration_s {
        return Err(err(AudioErrorKind::TooLong { seconds, limit: max_duration_s }));
    }
    let want = frames * width * channels;
    FILE_BYTES
        .with_borrow_mut(|data| {
            data.clear();
            (&mut reader)
                .take(want as u64)
                .read_to_end(data)
                .map_err(|e| err(AudioErrorKind::Io(e.to_string())))?;
            decode_samples(path, &spec, width, data, want, out)
        })
        .map(|()| spec.sample_rate)
}

thread_local! {
    // The raw bytes of the file being decoded, reused from file to file: allocating a fresh
    // buffer per file made the kernel clear new pages for every recording.
    static FILE_BYTES: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn decode_samples(
    path: &Path,
    spec: &hound::WavSpec,
    width: usize,
    data: &[u8],
    want: usize,
    out: &mut Vec<f32>,
) -> Result<(), AudioError> {
    let err = |kind| AudioError::new(path, kind);
    let channels = spec.channels as usize;
    if data.len() < want {
        return Err(err(AudioErrorKind::Truncated(format!(
            "header promises {want} bytes of samples, file holds {}",
            data.len()
        ))));
    }
    // Integers are scaled by their container width (left-justified samples, as soundfile does).
    out.clear();
    match (spec.sample_format, width) {
        (hound::SampleFormat::Int, 1) => decode::<1>(data, channels, out, |b| (b[0] as f32 - 128.0) / 128.0),
        (hound::SampleFormat::Int, 2) => {
            decode::<2>(data, channels, out, |b| i16::from_le_bytes(b) as f32 / 32768.0)
        }
        (hound::SampleFormat::Int, 3) => decode::<3>(data, channels, out, |b| {
            (i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) as f32 / 8_388_608.0
        }),
        (hound::SampleFormat::Int, 4) => {
            decode::<4>(data, channels, out, |b| (i32::from_le_bytes(b) as f64 / 2_147_483_648.0) as f32)
        }
        (hound::SampleFormat::Float, 4) => decode::<4>(data, channels, out, f32::from_le_bytes),
        (hound::SampleFormat::Float, 8) => decode::<8>(data, channels, out, |b| f64::from_le_bytes(b) as f32),
        (format, w) => {
            return Err(err(AudioErrorKind::Unsupported(format!("{}-byte {format:?} samples", w))));
        }
    }
    // Integers are always finite; floats may hold NaN or infinities.
    if spec.sample_format == hound::SampleFormat::Float && !all_finite(out) {
        return Err(err(AudioErrorKind::NonFinite));
    }
    Ok(())
}

/// No NaN or infinity in `x`. Tests the exponent bits with an integer `max`, which
/// vectorises (a short-circuiting `any` runs one sample per cycle).
pub fn all_finite(x: &[f32]) -> bool {
    const EXPONENT: u32 = 0x7f80_0000;
    x.iter().map(|s| s.to_bits() & EXPONENT).max().unwrap_or(0) != EXPONENT
}

/// Convert little-endian samples of `B` bytes to f32 and average the channels of each frame.
fn decode<const B: usize>(data: &[u8], channels: usize, out: &mut Vec<f32>, conv: impl Fn([u8; B]) -> f32) {
    let sample = |c: &[u8]| conv(c.try_into().expect("chunks are B bytes"));
    if channels == 1 {
        out.extend(data.chunks_exact(B).map(sample));
    } else {
        let inv = 1.0 / channels as f32;
        out.extend(
            data.chunks_exact(B * channels).map(|frame| frame.chunks_exact(B).map(sample).sum::<f32>() * inv),
        );
    }
}

/// Raw little-endian PCM sample formats (`listen --format`, the page's live stream).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PcmFormat {
    /// Signed 16-bit little-endian.
    S16le,
    /// 32-bit float little-endian.
    #[default]
    F32le,
}

impl PcmFormat {
    /// Bytes per sample.
    pub fn width(self) -> usize {
        match self {
            PcmFormat::S16le => 2,
            PcmFormat::F32le => 4,
        }
    }
}

/// The whole samples of raw PCM (a trailing partial sample is ignored: callers check it), in
/// [-1, 1]; a float that is not finite becomes silence, as a sample nobody could have heard.
pub fn decode_pcm(bytes: &[u8], format: PcmFormat) -> Vec<f32> {
    match format {
        PcmFormat::S16le => {
            bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0).collect()
        }
        PcmFormat::F32le => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .map(|v| if v.is_finite() { v.clamp(-1.0, 1.0) } else { 0.0 })
            .collect(),
    }
}
