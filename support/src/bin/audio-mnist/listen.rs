//! `audio-mnist listen`: digits from a WAV file of any length, a stream on stdin (WAV or raw
//! PCM) or a microphone (feature `mic`), printed as each word ends.

use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use support::infer::ModelChoice;
use support::infer::Predictor;
use support::stream::{transcript, Event, Listener};

pub use support::dsp::audio::PcmFormat as RawFormat;

/// Where the audio comes from and how to read it.
pub struct Source {
    /// A WAV file, or `-` for stdin.
    pub path: Option<PathBuf>,
    /// Raw PCM on the source: its rate, format and channels.
    pub raw: Option<(u32, RawFormat)>,
    pub channels: u16,
}

/// How words are printed and decided.
pub struct Output {
    pub json: bool,
    /// `--threshold`: also reject a best digit under this.
    pub threshold: Option<f32>,
    /// `--reject-weight`: "not a digit"'s probability is multiplied by this.
    pub reject_weight: f32,
}

/// Prints each event as it comes (a line, or a JSON object) and the sequence at the end.
struct Printer {
    json: bool,
    events: Vec<Event>,
}

impl Printer {
    fn show(&mut self, events: Vec<Event>) -> Result<()> {
        let mut out = std::io::stdout().lock();
        for e in events {
            let line = if self.json { serde_json::to_string(&e)? } else { e.line() };
            writeln!(out, "{line}")?;
            self.events.push(e);
        }
        out.flush()?;
        Ok(())
    }

    fn end(&self) -> Result<()> {
        let seq = transcript(&self.events);
        if self.json {
            println!("{}", serde_json::json!({ "sequence": seq }));
        } else {
            println!("sequence: {seq}");
        }
        Ok(())
    }
}

/// `listen SOURCE`: read it in 100 ms chunks, print words as they end.
pub fn listen_command(model: &ModelChoice, source: &Source, o: &Output) -> Result<()> {
    let predictor = load(model, o.threshold)?;
    let mut printer = Printer { json: o.json, events: Vec::new() };
    let path = source.path.as_deref().unwrap_or(Path::new("-"));
    let name = if path == Path::new("-") { "stdin".to_string() } else { path.display().to_string() };
    let reader: Box<dyn Read> = if path == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(path).with_context(|| format!("opening {name}"))?)
    };
    let mut listener: Option<Listener<&Predictor>> = None;
    let mut feed = |rate: u32, mono: &[f32]| -> Result<()> {
        let l = listener
            .get_or_insert_with(|| Listener::new(&predictor, rate).with_reject_weight(o.reject_weight));
        printer.show(l.push(mono))
    };
    match source.raw {
        Some((rate, format)) => read_raw(reader, rate, format, source.channels, &mut feed),
        None => read_wav(reader, &mut feed),
    }
    .with_context(|| format!("reading {name}"))?;
    if let Some(mut l) = listener {
        printer.show(l.finish())?;
    }
    printer.end()
}

fn load(model: &ModelChoice, threshold: Option<f32>) -> Result<Predictor> {
    eprintln!("{}", model.describe());
    let p = model.load()?;
    Ok(match threshold {
        Some(t) => p.with_threshold(t),
        None => p,
    })
}

/// Chunks of 100 ms of interleaved samples, downmixed to mono.
fn downmix(interleaved: &[f32], channels: usize) -> Vec<f32> {
    interleaved.chunks(channels).map(|f| f.iter().sum::<f32>() / channels as f32).collect()
}

/// A WAV stream: the header, then samples as they arrive.
pub(crate) fn read_wav(
    reader: Box<dyn Read + '_>,
    feed: &mut dyn FnMut(u32, &[f32]) -> Result<()>,
) -> Result<()> {
    let wav = hound::WavReader::new(BufReader::new(reader))
        .map_err(|e| anyhow::anyhow!("not a WAV stream ({e}); for raw PCM give --rate and --format"))?;
    let spec = wav.spec();
    ensure!(spec.channels > 0 && spec.sample_rate >= 1000, "unusable WAV header: {spec:?}");
    // hound reads integers of up to 32 bits into an i32; a header saying more is not a WAV we read.
    ensure!(
        (1..=32).contains(&spec.bits_per_sample),
        "unsupported WAV encoding: {} bits per sample (8 to 32 are read)",
        spec.bits_per_sample
    );
    let channels = spec.channels as usize;
    let chunk = channels * (spec.sample_rate as usize / 100).max(1);
    let mut buf = Vec::with_capacity(chunk);
    let scale = match spec.sample_format {
        hound::SampleFormat::Float => 1.0,
        hound::SampleFormat::Int => 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f32,
    };
    let mut push = |buf: &mut Vec<f32>| -> Result<()> {
        let whole = buf.len() / channels * channels;
        feed(spec.sample_rate, &downmix(&buf[..whole], channels))?;
        buf.clear();
        Ok(())
    };
    let mut read = 0usize;
    macro_rules! pump {
        ($t:ty, $conv:expr) => {
            for s in wav.into_samples::<$t>() {
                let s = s.map_err(|e| {
                    anyhow::anyhow!(
                        "the WAV stream broke off after {:.2} s: {e}",
                        read as f64 / chunk as f64 / 10.0
                    )
                })?;
                buf.push($conv(s));
                read += 1;
                if buf.len() == chunk {
                    push(&mut buf)?;
                }
            }
        };
    }
    match spec.sample_format {
        hound::SampleFormat::Float => pump!(f32, |s: f32| s),
        hound::SampleFormat::Int => pump!(i32, |s: i32| s as f32 * scale),
    }
    push(&mut buf)
}

/// Raw little-endian PCM at `rate`.
pub(crate) fn read_raw(
    mut reader: Box<dyn Read + '_>,
    rate: u32,
    format: RawFormat,
    channels: u16,
    feed: &mut dyn FnMut(u32, &[f32]) -> Result<()>,
) -> Result<()> {
    ensure!(channels >= 1, "--channels must be at least 1");
    let frame = format.width() * channels as usize;
    // 10 ms at a time: a digit is printed as soon as the pipe has delivered its end.
    let mut bytes = vec![0u8; frame * (rate as usize / 100).max(1)];
    let mut have = 0;
    loop {
        let n = reader.read(&mut bytes[have..])?;
        have += n;
        if n > 0 && have < bytes.len() {
            continue;
        }
        let whole = have / frame * frame;
        let samples = support::dsp::audio::decode_pcm(&bytes[..whole], format);
        feed(rate, &downmix(&samples, channels as usize))?;
        if n == 0 {
            if have > whole {
                bail!("the stream ended inside a sample frame ({} stray bytes)", have - whole);
            }
            return Ok(());
        }
        have = 0;
    }
}

/// `listen --mic [DEVICE]`: the default input device, or the one named; until Ctrl-C.
#[cfg(feature = "mic")]
pub fn listen_mic(model: &ModelChoice, device: Option<&str>, o: &Output) -> Result<()> {
    use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
    let predictor = load(model, o.threshold)?;
    let host = cpal::default_host();
    let dev = match device {
        Some(name) => host
            .input_devices()?
            .find(|d| d.name().is_ok_and(|n| n == name))
            .with_context(|| format!("no input device named {name:?} (see --list-devices)"))?,
        None => host.default_input_device().context("no default input device (see --list-devices)")?,
    };
    let config = dev.default_input_config().context("reading the input device's configuration")?;
    let (rate, channels) = (config.sample_rate().0, config.channels() as usize);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<f32>>(256);
    let err = |e: cpal::StreamError| eprintln!("audio input: {e}");
    let stream = match config.sample_format() {
        cpal::SampleFormat::F32 => dev.build_input_stream(
            &config.clone().into(),
            move |d: &[f32], _: &_| drop(tx.try_send(downmix(d, channels))),
            err,
            None,
        )?,
        cpal::SampleFormat::I16 => dev.build_input_stream(
            &config.clone().into(),
            move |d: &[i16], _: &_| {
                let f: Vec<f32> = d.iter().map(|v| *v as f32 / 32768.0).collect();
                drop(tx.try_send(downmix(&f, channels)))
            },
            err,
            None,
        )?,
        other => bail!("input sample format {other:?} is not supported; try another --mic device"),
    };
    stream.play()?;
    eprintln!("listening on {} at {rate} Hz (Ctrl-C to stop)", dev.name().unwrap_or_default());
    let mut listener = Listener::new(&predictor, rate).with_reject_weight(o.reject_weight);
    let mut printer = Printer { json: o.json, events: Vec::new() };
    for chunk in rx {
        printer.show(listener.push(&chunk))?;
    }
    printer.end()
}

/// `listen --list-devices`.
#[cfg(feature = "mic")]
pub fn list_devices() -> Result<()> {
    use cpal::traits::{DeviceTrait, HostTrait};
    let host = cpal::default_host();
    let default = host.default_input_device().and_then(|d| d.name().ok());
    for d in host.input_devices()? {
        let name = d.name().unwrap_or_else(|_| "?".into());
        let mark = if Some(&name) == default.as_ref() { " (default)" } else { "" };
        println!("{name}{mark}");
    }
    Ok(())
}

#[cfg(not(feature = "mic"))]
pub fn listen_mic(_: &ModelChoice, _: Option<&str>, _: &Output) -> Result<()> {
    bail!("this build has no microphone input: build with `--features mic` (needs libasound2-dev on Linux)")
}

#[cfg(not(feature = "mic"))]
pub fn list_devices() -> Result<()> {
    listen_mic(&ModelChoice::Bundled, None, &Output { json: false, threshold: None, reject_weight: 1.0 })
}

/// `listen-bench`: generated sequences of the speakers' clips, transcribed as a live stream.
#[cfg(feature = "train")]
#[allow(clippy::too_many_arguments)]
pub fn bench_command(
    model: &Path,
    data: &crate::args::DataArgs,
    speakers: &[String],
    count: usize,
    snr_db: &str,
    seed: u64,
    reject_weight: f32,
    out: Option<&Path>,
) -> Result<()> {
    use support::stream::sequence::{measure, SequenceConfig};
    let predictor = load(&ModelChoice::Given(model.to_path_buf()), None)?;
    let speakers = if speakers.is_empty() {
        let split: support::data::split::Split = serde_json::from_value(predictor.meta().split.clone())
            .context("the model's recorded split (give --speakers)")?;
        ensure!(!split.test.is_empty(), "the model has no test speakers: give --speakers");
        split.test
    } else {
        speakers.to_vec()
    };
    let snr = match snr_db {
        "none" => None,
        s => {
            let v: Vec<f32> = s
                .split(',')
                .map(|x| x.trim().parse())
                .collect::<Result<_, _>>()
                .map_err(|_| anyhow::anyhow!("--snr-db {s:?}: give LO,HI in dB, or none"))?;
            ensure!(v.len() == 2 && v[0] <= v[1], "--snr-db {s:?}: give LO,HI with LO <= HI");
            Some((v[0], v[1]))
        }
    };
    let dataset = support::data::union::scan_all(&data.data.resolve(None)?)?;
    let recs: Vec<_> = dataset.recordings.iter().filter(|r| speakers.contains(&r.speaker)).collect();
    ensure!(!recs.is_empty(), "no recordings of {speakers:?} in {}", dataset.describe());
    let fx = support::FeatureExtractor::new(predictor.meta().features.clone())?;
    let paths: Vec<PathBuf> = recs.iter().map(|r| dataset.absolute(r)).collect();
    let clips = support::train::augment::load_clips(&fx, &paths)?;
    let clips: Vec<(u8, Vec<f32>)> = recs.iter().map(|r| r.digit).zip(clips).collect();
    let cfg = SequenceConfig { snr_db: snr, ..Default::default() };
    let rate = fx.config().sample_rate;
    println!("{count} sequences from {} clips of {}", clips.len(), speakers.join(", "));
    let (report, all) = measure(&predictor, &clips, rate, &cfg, count, seed, reject_weight);
    let s = &report.score;
    println!(
        "digit error rate {:.2}% ({} digits: {} substitutions, {} deletions, {} insertions)",
        100.0 * report.digit_error_rate,
        s.reference_digits,
        s.substitutions,
        s.deletions,
        s.insertions
    );
    println!(
        "word boundaries: {:.0} ms mean error (start and end) over {} detected digits",
        s.boundary_ms, s.matched
    );
    println!(
        "latency after a word ends: mean {:.0} ms, max {:.0} ms; processing {:.2}% of one core",
        report.latency_mean_ms,
        report.latency_max_ms,
        100.0 * report.cpu_share
    );
    if let Some(out) = out {
        write_sequences(out, &all, rate)?;
        support::data::write_json(&out.join("listen_bench.json"), &report)?;
    }
    Ok(())
}

#[cfg(feature = "train")]
fn write_sequences(
    out: &Path,
    all: &[(support::stream::sequence::Sequence, Vec<Event>)],
    rate: u32,
) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut index = Vec::new();
    for (k, (seq, events)) in all.iter().enumerate() {
        let name = format!("sequence_{k}.wav");
        support::dsp::audio::write_wav(&out.join(&name), rate, &seq.samples)?;
        index.push(serde_json::json!({"file": name, "transcript": seq.transcript(), "heard": transcript(events), "sequence": seq, "events": events}));
    }
    support::data::write_json(&out.join("sequences.json"), &index)
}
