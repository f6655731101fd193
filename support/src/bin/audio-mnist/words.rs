//! `audio-mnist negatives --words`: English words that are not digits, spoken by espeak-ng's
//! voices, as a `--negatives` folder. Voices are split into test, validation and training
//! parts as every `--negatives` folder is (by speaker), and test voices say other words than
//! the rest, so a model is scored on words and voices it never heard.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use support::train::negatives::Part;
use support::train::other_speech::speaker_part;

/// Common words, and hard ones that share sounds with digits; none a digit or its homophone
/// ("for", "to", "too", "won", "ate" and "oh" are left out).
const WORDS: &[&str] = &[
    "hello",
    "yes",
    "no",
    "stop",
    "go",
    "left",
    "right",
    "up",
    "down",
    "on",
    "off",
    "cat",
    "dog",
    "bird",
    "house",
    "tree",
    "free",
    "tea",
    "sun",
    "fun",
    "fine",
    "wine",
    "line",
    "heaven",
    "eleven",
    "twelve",
    "twenty",
    "hundred",
    "thousand",
    "million",
    "ten",
    "hero",
    "zebra",
    "wonder",
    "wander",
    "tooth",
    "fourth",
    "fifth",
    "sixty",
    "seventh",
    "eighty",
    "ninth",
    "first",
    "second",
    "minute",
    "hour",
    "water",
    "coffee",
    "number",
    "phone",
    "code",
    "please",
    "thanks",
    "sorry",
    "again",
    "next",
    "back",
    "open",
    "close",
    "call",
    "play",
    "music",
    "light",
    "night",
    "white",
    "black",
    "green",
    "red",
    "blue",
    "yellow",
    "specs",
    "sick",
    "sister",
    "fix",
    "fight",
    "kite",
    "nice",
    "mine",
    "nun",
    "gate",
    "late",
    "weight",
    "wait",
    "eat",
    "it",
    "tin",
    "win",
    "when",
    "where",
    "what",
    "who",
    "why",
    "how",
    "sierra",
    "fox",
    "socks",
    "seat",
    "sit",
    "set",
    "oak",
    "own",
    "through",
    "threw",
    "thirsty",
    "fortune",
    "forest",
    "beer",
    "bear",
    "dear",
    "near",
    "year",
    "yellowish",
    "twin",
    "twist",
    "tune",
    "june",
    "monday",
    "friday",
    "sunday",
    "seventeen",
    "nineteen",
    "fourteen",
    "sixteen",
    "eighteen",
];

/// espeak-ng accents and voice variants (as `tools/synth_audiomnist.py` uses them).
const ACCENTS: &[&str] = &["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029"];
const VARIANTS: &[&str] = &[
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3",
    "edward", "john", "linda", "annie", "belinda", "michael", "paul", "steph", "anika",
];

/// Write `voices` voices x `per_voice` words to `out` as `{word}_{voice}_{k}.wav` at `rate`;
/// returns the files written.
pub fn write_words(out: &Path, voices: usize, per_voice: usize, rate: u32, seed: u64) -> Result<usize> {
    check_espeak()?;
    let mut all: Vec<String> =
        VARIANTS.iter().flat_map(|v| ACCENTS.iter().map(move |a| format!("{a}+{v}"))).collect();
    let mut rng = StdRng::seed_from_u64(seed);
    rand::seq::SliceRandom::shuffle(all.as_mut_slice(), &mut rng);
    ensure!(voices <= all.len(), "--voices {voices}: espeak-ng has {} here", all.len());
    let mut jobs = Vec::new();
    for voice in &all[..voices] {
        // Test voices say the test fifth of the words; the others, the rest.
        let test = speaker_part(voice) == Part::Test;
        let words: Vec<&str> =
            WORDS.iter().copied().filter(|w| (speaker_part(w) == Part::Test) == test).collect();
        for k in 0..per_voice {
            let word = words[rng.random_range(0..words.len())];
            let (speed, pitch) = (rng.random_range(120..200), rng.random_range(20..80));
            jobs.push((out.join(format!("{word}_{voice}_{k}.wav")), voice.clone(), word, speed, pitch));
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    jobs.par_iter()
        .try_for_each(|(path, voice, word, speed, pitch)| speak(path, voice, word, *speed, *pitch, rate))?;
    Ok(jobs.len())
}

/// A clear error when espeak-ng is missing.
fn check_espeak() -> Result<()> {
    match Command::new("espeak-ng").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => bail!("--words needs espeak-ng on PATH (Debian/Ubuntu: apt-get install espeak-ng)"),
    }
}

/// `word` in `voice` at `rate` Hz (the synthetic corpus's engine call, plain intonation).
fn speak(path: &Path, voice: &str, word: &str, speed: u32, pitch: u32, rate: u32) -> Result<()> {
    use support::data::synth::{self, Engine, Style, Voice, SYNTH_RATE};
    let voice = Voice { engine: Engine::EspeakNg, name: voice.to_string() };
    let style = Style { rate: speed as f32 / 175.0, pitch: pitch as f32 / 99.0, tract: 1.0, emphasis: "" };
    let dir = path.parent().unwrap_or(Path::new("."));
    let samples = synth::speak(&voice, word, &style, dir)?;
    let samples = support::dsp::resample::resample(&samples, SYNTH_RATE, rate)?;
    support::dsp::audio::write_wav(path, rate, &samples)?;
    Ok(())
}
