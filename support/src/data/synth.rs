//! Synthetic voices: the ten digit words said by every text-to-speech engine and voice that
//! is installed (espeak-ng's English accents times its voice variants, flite's voices,
//! festival's voices), each take with its own seeded speaking rate, pitch, vocal-tract length
//! and emphasis, written in the FSDD layout (`{digit}_{voice}_{n}.wav`, 16 kHz) so that every
//! command reads the folder as a corpus whose speakers are the voices.
//!
//! The engines are programs (Debian: `espeak-ng`, `flite`, `festival` with `festvox-*`
//! voices), run once per take; a missing engine just contributes no voices.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::Serialize;

use crate::error::Error;

/// The words said for digits 0-9.
pub const DIGIT_WORDS: [&str; 10] =
    ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];

/// The sample rate of the written files (the features' analysis rate).
pub const SYNTH_RATE: u32 = 16_000;

/// espeak-ng's English accents.
const ESPEAK_ACCENTS: &[&str] =
    &["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029"];

/// espeak-ng variants that do not sound like a person (robots, a demon, a storm); left out.
const NOT_HUMAN: &[&str] = &["demonic", "robosoft", "unirobot", "anikarobot", "storm", "tweaky", "croak"];

/// flite's `awb_time` only says clock times.
const FLITE_SKIP: &[&str] = &["awb_time"];

/// A text-to-speech program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Engine {
    EspeakNg,
    Flite,
    Festival,
}

impl Engine {
    /// The short name used in voice ids.
    pub fn short(self) -> &'static str {
        match self {
            Self::EspeakNg => "espeak",
            Self::Flite => "flite",
            Self::Festival => "festival",
        }
    }
}

/// One voice of one engine.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Voice {
    pub engine: Engine,
    /// The engine's own name (`en-us+m3`, `slt`, `kal_diphone`).
    pub name: String,
}

impl Voice {
    /// The speaker id in file names: the engine and the voice in lower-case letters and
    /// digits only, as `{digit}_{speaker}_{take}.wav` wants its speaker (`espeakenusm3`).
    pub fn id(&self) -> String {
        let name: String =
            self.name.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect();
        format!("{}{name}", self.engine.short())
    }
}

/// How one take is said.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Style {
    /// Speaking rate relative to the engine's default (0.75-1.35).
    pub rate: f32,
    /// Pitch on the engine's scale, 0-1 (espeak-ng's 0-99, flite's 70-250 Hz mean).
    pub pitch: f32,
    /// Vocal-tract length: the voice played faster or slower by this factor (0.9-1.1),
    /// which moves pitch and formants together as a smaller or larger speaker would.
    pub tract: f32,
    /// How the word ends: `""`, `"."`, `"!"` or `"?"` (each engine's intonation for it).
    pub emphasis: &'static str,
}

impl Style {
    /// A seeded random style.
    pub fn random(rng: &mut impl Rng) -> Self {
        Self {
            rate: rng.random_range(0.75..1.35),
            pitch: rng.random_range(0.0..1.0),
            tract: rng.random_range(0.9..1.1),
            emphasis: ["", ".", "!", "?"][rng.random_range(0..4)],
        }
    }
}

/// Every voice of every installed engine, sorted.
pub fn installed_voices() -> Vec<Voice> {
    let mut voices = espeak_voices();
    voices.extend(flite_voices());
    voices.extend(festival_voices());
    voices.sort();
    // Two names that differ only in case or punctuation would share a speaker id.
    let mut seen = std::collections::BTreeSet::new();
    voices.retain(|v| seen.insert(v.id()));
    voices
}

/// The output of a command, or `None` when it is not installed or fails.
fn output_of(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn espeak_voices() -> Vec<Voice> {
    let Some(listing) = output_of("espeak-ng", &["--voices=variant"]) else { return Vec::new() };
    let variants: Vec<String> = listing
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(4)?.strip_prefix("!v/").map(str::to_string))
        .filter(|v| !NOT_HUMAN.iter().any(|n| v.to_lowercase().starts_with(n)))
        .collect();
    ESPEAK_ACCENTS
        .iter()
        .flat_map(|a| {
            variants.iter().map(move |v| Voice { engine: Engine::EspeakNg, name: format!("{a}+{v}") })
        })
        .collect()
}

fn flite_voices() -> Vec<Voice> {
    let Some(listing) = output_of("flite", &["-lv"]) else { return Vec::new() };
    let names = listing.split_once(':').map_or("", |(_, rest)| rest);
    names
        .split_whitespace()
        .filter(|n| !FLITE_SKIP.contains(n))
        .map(|n| Voice { engine: Engine::Flite, name: n.to_string() })
        .collect()
}

fn festival_voices() -> Vec<Voice> {
    let Some(listing) = output_of("festival", &["-b", "(begin (print (voice.list)))"]) else {
        return Vec::new();
    };
    let names = listing.trim().trim_start_matches('(').trim_end_matches(')');
    names.split_whitespace().map(|n| Voice { engine: Engine::Festival, name: n.to_string() }).collect()
}

/// `text` said by `voice` in `style`, at [`SYNTH_RATE`]; `scratch` is a folder for the
/// engine's own file.
pub fn speak(voice: &Voice, text: &str, style: &Style, scratch: &Path) -> Result<Vec<f32>, Error> {
    let tmp = tempfile::Builder::new()
        .prefix(".synth-")
        .suffix(".wav")
        .tempfile_in(scratch)
        .map_err(|e| Error::io(scratch, e))?;
    let wav = tmp.path().to_path_buf();
    let said = format!("{text}{}", style.emphasis);
    let mut cmd = engine_command(voice, &said, style, &wav);
    let failed = |why: String| Error::Data(format!("{} could not say {said:?}: {why}", voice.id()));
    // festival's text2wave reads the text from stdin; the others take it as an argument.
    let reads_stdin = voice.engine == Engine::Festival;
    cmd.stdin(if reads_stdin { Stdio::piped() } else { Stdio::null() });
    let out = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn();
    let mut child = out.map_err(|e| failed(format!("{e} (is {} installed?)", voice.engine.short())))?;
    if let Some(mut stdin) = child.stdin.take() {
        std::io::Write::write_all(&mut stdin, said.as_bytes()).map_err(|e| failed(e.to_string()))?;
    }
    let done = child.wait_with_output().map_err(|e| failed(e.to_string()))?;
    if !done.status.success() {
        return Err(failed(String::from_utf8_lossy(&done.stderr).trim().to_string()));
    }
    let audio = crate::dsp::audio::load_wav(&wav, 30.0).map_err(|e| failed(e.to_string()))?;
    // Played at `tract` times its rate: a shorter (> 1) or longer vocal tract.
    let played_at = (audio.sample_rate as f32 * style.tract).round() as u32;
    crate::dsp::resample::resample(&audio.samples, played_at, SYNTH_RATE)
}

/// The engine's command line for one take, writing `wav`.
fn engine_command(voice: &Voice, said: &str, style: &Style, wav: &Path) -> Command {
    match voice.engine {
        Engine::EspeakNg => {
            let mut c = Command::new("espeak-ng");
            let (speed, pitch) = ((175.0 * style.rate).round() as u32, (style.pitch * 99.0).round() as u32);
            c.args(["-v", &voice.name, "-s", &speed.to_string(), "-p", &pitch.to_string(), "-w"]);
            c.arg(wav).arg(said);
            c
        }
        Engine::Flite => {
            let mut c = Command::new("flite");
            let stretch = format!("duration_stretch={:.3}", 1.0 / style.rate);
            let f0 = format!("int_f0_target_mean={:.0}", 70.0 + 180.0 * style.pitch);
            c.args(["-voice", &voice.name, "--setf", &stretch, "--setf", &f0, "-t", said, "-o"]).arg(wav);
            c
        }
        Engine::Festival => {
            let mut c = Command::new("text2wave");
            let stretch = format!("(Parameter.set 'Duration_Stretch {:.3})", 1.0 / style.rate);
            c.args(["-eval", &format!("(voice_{})", voice.name), "-eval", &stretch, "-o"]).arg(wav);
            c
        }
    }
}

/// What [`synth_corpus`] wrote: `synth.json`.
#[derive(Clone, Debug, Serialize)]
pub struct SynthReport {
    pub seed: u64,
    /// Takes of each digit per voice.
    pub count: usize,
    pub sample_rate: u32,
    pub voices: Vec<Voice>,
    /// Every file and how it was said.
    pub files: Vec<SynthFile>,
    /// Files that were already there (an interrupted run resumed) and not made again.
    pub reused: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct SynthFile {
    pub file: String,
    pub voice: String,
    pub digit: u8,
    pub style: Style,
}

/// Say each digit `count` times with each of `voices` (seeded styles) into `out` as
/// `{digit}_{voice-id}_{n}.wav`, plus `synth.json`. Files already there are kept: the styles
/// depend only on the seed, so an interrupted run resumes where it stopped.
pub fn synth_corpus(
    out: &Path,
    voices: &[Voice],
    count: usize,
    seed: u64,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<SynthReport, Error> {
    if voices.is_empty() {
        let why = "no text-to-speech engine found: install espeak-ng, flite or festival (Debian/Ubuntu: apt-get install espeak-ng flite festival festvox-kallpc16k)";
        return Err(Error::Data(why.into()));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut files = Vec::new();
    for voice in voices {
        for (digit, _) in DIGIT_WORDS.iter().enumerate() {
            for n in 0..count {
                let file = format!("{digit}_{}_{n}.wav", voice.id());
                files.push(SynthFile {
                    file,
                    voice: voice.id(),
                    digit: digit as u8,
                    style: Style::random(&mut rng),
                });
            }
        }
    }
    let todo: Vec<(&SynthFile, &Voice)> = files
        .iter()
        .zip(voices.iter().flat_map(|v| std::iter::repeat_n(v, 10 * count)))
        .filter(|(f, _)| !out.join(&f.file).exists())
        .collect();
    let done = std::sync::atomic::AtomicUsize::new(0);
    todo.par_iter().try_for_each(|(f, voice)| {
        let samples = speak(voice, DIGIT_WORDS[f.digit as usize], &f.style, out)?;
        let path: PathBuf = out.join(&f.file);
        crate::dsp::audio::write_wav(&path, SYNTH_RATE, &samples)
            .map_err(|e| Error::Data(format!("{e:#}")))?;
        progress(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1, todo.len());
        Ok::<(), Error>(())
    })?;
    let reused = files.len() - todo.len();
    let report = SynthReport { seed, count, sample_rate: SYNTH_RATE, voices: voices.to_vec(), files, reused };
    crate::data::write_json(&out.join("synth.json"), &report).map_err(|e| Error::Data(format!("{e:#}")))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voice_ids_are_speaker_names() {
        let v = Voice { engine: Engine::EspeakNg, name: "en-gb-x-rp+Alex_2".into() };
        assert_eq!(v.id(), "espeakengbxrpalex2");
        assert!(crate::data::dataset::parse_name(&format!("3_{}_0.wav", v.id())).is_some());
        let v = Voice { engine: Engine::Festival, name: "kal_diphone".into() };
        assert_eq!(v.id(), "festivalkaldiphone");
    }

    #[test]
    fn styles_are_seeded_and_in_range() {
        let a: Vec<Style> = (0..50)
            .map({
                let mut r = StdRng::seed_from_u64(3);
                move |_| Style::random(&mut r)
            })
            .collect();
        let mut r = StdRng::seed_from_u64(3);
        assert!(a.iter().all(|s| *s == Style::random(&mut r)));
        assert!(a.iter().all(|s| (0.75..1.35).contains(&s.rate) && (0.9..1.1).contains(&s.tract)));
        assert!(a.iter().any(|s| s.emphasis == "?") && a.iter().any(|s| s.emphasis.is_empty()));
    }
}
