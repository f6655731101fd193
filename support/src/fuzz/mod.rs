//! A seeded mutation fuzzer for everything that takes outside input: WAV files, model files,
//! raw PCM on `listen`'s stdin and (in the binary) the HTTP API.
//!
//! Why our own: cargo-fuzz needs a nightly compiler and libFuzzer, which CI does not have, and
//! a fixed seed gives the same inputs on every machine, so a failure found once is found again.
//! Inputs are real seeds (valid files) changed by a few of the usual mutations (bit flips,
//! interesting integers over header fields, cuts, repeats, splices); each case runs under
//! `catch_unwind`, timed, and the process's peak memory is read at the end.

pub mod seeds;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::dsp::audio::decode_wav_bytes;
use crate::infer::Predictor;

/// Integers that break parsers: zero, sign and size boundaries, WAV's common field values.
const INTERESTING: [u32; 14] =
    [0, 1, 2, 8, 16, 44, 0x7f, 0x80, 0xff, 0xffff, 0x8000_0000, 0x7fff_ffff, 0xffff_fffe, 0xffff_ffff];

/// Mutated copies of seed inputs, reproducible from one `u64`.
pub struct Mutator {
    rng: StdRng,
    seeds: Vec<Vec<u8>>,
    max_len: usize,
}

impl Mutator {
    /// `seeds` must not be empty; no input grows past `max_len` bytes.
    pub fn new(seed: u64, seeds: Vec<Vec<u8>>, max_len: usize) -> Self {
        assert!(!seeds.is_empty(), "a mutator needs at least one seed input");
        Self { rng: StdRng::seed_from_u64(seed), seeds, max_len }
    }

    /// The next input: a seed with one to four mutations.
    pub fn next_input(&mut self) -> Vec<u8> {
        let mut data = self.seeds[self.rng.random_range(0..self.seeds.len())].clone();
        for _ in 0..self.rng.random_range(1..=4) {
            self.mutate(&mut data);
        }
        data.truncate(self.max_len);
        data
    }

    fn mutate(&mut self, data: &mut Vec<u8>) {
        let rng = &mut self.rng;
        let at = |rng: &mut StdRng, len: usize| rng.random_range(0..len.max(1));
        match rng.random_range(0..9) {
            0 if !data.is_empty() => {
                let i = at(rng, data.len());
                data[i] ^= 1 << rng.random_range(0..8);
            }
            1 if !data.is_empty() => {
                let i = at(rng, data.len());
                data[i] = rng.random();
            }
            // Header fields are little-endian u16/u32: overwrite one with a boundary value,
            // more often near the start where the headers are.
            2 | 3 => {
                let span = if rng.random_bool(0.7) { data.len().min(64) } else { data.len() };
                let i = at(rng, span);
                let v = INTERESTING[rng.random_range(0..INTERESTING.len())].to_le_bytes();
                let width = if rng.random_bool(0.5) { 2 } else { 4 };
                for (k, b) in v.iter().take(width).enumerate() {
                    if let Some(d) = data.get_mut(i + k) {
                        *d = *b;
                    }
                }
            }
            4 if !data.is_empty() => {
                let i = at(rng, data.len());
                let n = rng.random_range(1..=(data.len() - i).min(256));
                data.drain(i..i + n);
            }
            5 if !data.is_empty() => {
                let i = at(rng, data.len());
                let n = rng.random_range(1..=(data.len() - i).min(256));
                let copy: Vec<u8> = data[i..i + n].to_vec();
                let j = at(rng, data.len());
                data.splice(j..j, copy);
            }
            6 => data.truncate(at(rng, data.len() + 1)),
            7 => {
                let other = &self.seeds[rng.random_range(0..self.seeds.len())];
                let (i, j) = (at(rng, data.len() + 1), at(rng, other.len() + 1));
                data.truncate(i);
                data.extend_from_slice(&other[j..]);
            }
            // Text formats (JSON headers, query strings): a run of digits or a stray character.
            _ => {
                let i = at(rng, data.len() + 1);
                let junk: &[u8] = match rng.random_range(0..5) {
                    0 => b"99999999999999999999",
                    1 => b"-1",
                    2 => b"\"",
                    3 => b"NaN",
                    _ => b"\x00\xff",
                };
                data.splice(i..i, junk.iter().copied());
            }
        }
    }
}

/// What a fuzzing round found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub target: String,
    pub seed: u64,
    pub cases: usize,
    /// Inputs taken as valid.
    pub accepted: usize,
    /// Inputs refused with an error message.
    pub rejected: usize,
    /// Refusals whose message is empty or says nothing (under 8 characters), and server
    /// errors (a target's check says `server error: ...`).
    pub unclear_errors: usize,
    pub unclear_examples: Vec<String>,
    /// Panics, with the case number and message (at most 10 kept).
    pub panics: usize,
    pub panic_examples: Vec<(usize, String)>,
    /// Cases slower than the round's limit (a hang would be one).
    pub slow_cases: usize,
    pub slowest_ms: f64,
    pub seconds: f64,
    /// The process's peak resident memory at the end of the round (MiB).
    pub peak_rss_mib: f64,
    /// The most frequent refusals (message, count), for reading what users would see.
    pub common_errors: Vec<(String, usize)>,
}

impl Report {
    /// True when nothing went wrong: no panic, no slow case, every refusal explained.
    pub fn clean(&self) -> bool {
        self.panics == 0 && self.slow_cases == 0 && self.unclear_errors == 0
    }
}

/// Run `cases` inputs from `mutator` through `check`, which returns `Ok` for an accepted input
/// and `Err(message)` for a refused one. A case over `slow` counts as slow.
pub fn run(
    target: &str,
    seed: u64,
    mutator: &mut Mutator,
    cases: usize,
    slow: Duration,
    mut check: impl FnMut(&[u8]) -> Result<(), String>,
) -> Report {
    let mut report = Report { target: target.to_string(), seed, cases, ..Default::default() };
    let mut errors = BTreeMap::<String, usize>::new();
    let started = Instant::now();
    for case in 0..cases {
        let input = mutator.next_input();
        let t = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| check(&input)));
        let ms = t.elapsed().as_secs_f64() * 1e3;
        report.slowest_ms = report.slowest_ms.max(ms);
        report.slow_cases += usize::from(t.elapsed() > slow);
        match outcome {
            Ok(Ok(())) => report.accepted += 1,
            Ok(Err(message)) => {
                report.rejected += 1;
                let unclear = message.trim().chars().count() < 8 || message.starts_with("server error");
                report.unclear_errors += usize::from(unclear);
                if unclear && report.unclear_examples.len() < 10 {
                    report.unclear_examples.push(message.chars().take(300).collect());
                }
                *errors.entry(error_kind(&message)).or_default() += 1;
            }
            Err(panic) => {
                report.panics += 1;
                if report.panic_examples.len() < 10 {
                    report.panic_examples.push((case, panic_message(panic.as_ref())));
                }
            }
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.peak_rss_mib = peak_rss_mib();
    let mut common: Vec<(String, usize)> = errors.into_iter().collect();
    common.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    common.truncate(8);
    report.common_errors = common;
    report
}

/// The WAV target: an upload's path, read then recognised (as `predict` and `serve` do).
pub fn check_wav(predictor: &Predictor, bytes: &[u8]) -> Result<(), String> {
    let audio = decode_wav_bytes(Path::new("upload.wav"), bytes.to_vec(), 10.0).map_err(|e| e.to_string())?;
    predictor.predict_samples(&audio.samples, audio.sample_rate).map_err(|e| e.to_string())?;
    Ok(())
}

/// The model-file target: loaded, made a predictor and asked about `clip` (8 kHz), as
/// `predict --model` does with a file from anywhere.
pub fn check_model(bytes: &[u8], clip: &[f32]) -> Result<(), String> {
    let device = candle_core::Device::Cpu;
    let loaded = crate::model::file::load_model_bytes(bytes, &device).map_err(|e| format!("{e:#}"))?;
    let predictor = Predictor::new(loaded.model, loaded.meta, &device).map_err(|e| format!("{e:#}"))?;
    predictor.predict_samples(clip, 8000).map_err(|e| e.to_string())?;
    Ok(())
}

/// A refusal's message without its numbers, so that errors of one kind count together.
fn error_kind(message: &str) -> String {
    let mut out: String =
        message.chars().take(90).map(|c| if c.is_ascii_digit() { '#' } else { c }).collect();
    while out.contains("##") {
        out = out.replace("##", "#");
    }
    out
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Peak resident memory of this process so far (0 where the platform does not say).
pub fn peak_rss_mib() -> f64 {
    #[cfg(unix)]
    {
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage writes into the struct we own; RUSAGE_SELF is always valid.
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } == 0 {
            return usage.ru_maxrss as f64 / 1024.0; // kilobytes on Linux
        }
    }
    0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_inputs_and_inputs_stay_bounded() {
        let seeds = vec![b"RIFF....WAVEfmt ".to_vec(), vec![0u8; 300]];
        let a: Vec<Vec<u8>> = {
            let mut m = Mutator::new(7, seeds.clone(), 400);
            (0..500).map(|_| m.next_input()).collect()
        };
        let b: Vec<Vec<u8>> = {
            let mut m = Mutator::new(7, seeds.clone(), 400);
            (0..500).map(|_| m.next_input()).collect()
        };
        assert_eq!(a, b);
        assert!(a.iter().all(|x| x.len() <= 400));
        assert!(a.iter().filter(|x| !seeds.contains(x)).count() > 450, "most inputs are changed");
        let c: Vec<Vec<u8>> = {
            let mut m = Mutator::new(8, seeds, 400);
            (0..500).map(|_| m.next_input()).collect()
        };
        assert_ne!(a, c);
    }

    #[test]
    fn panics_slow_cases_and_unclear_errors_are_counted() {
        let mut m = Mutator::new(1, vec![vec![1, 2, 3, 4]], 64);
        let mut n = 0;
        let report = run("toy", 1, &mut m, 40, Duration::from_millis(5), |input| {
            n += 1;
            match n % 4 {
                0 => panic!("boom {}", input.len()),
                1 => Err("e".into()),
                2 => {
                    std::thread::sleep(Duration::from_millis(8));
                    Ok(())
                }
                _ => Err("a clear reason 12".into()),
            }
        });
        assert_eq!((report.panics, report.unclear_errors, report.slow_cases), (10, 10, 10));
        assert_eq!((report.accepted, report.rejected), (10, 20));
        assert!(report.panic_examples[0].1.starts_with("boom"));
        assert_eq!(report.common_errors[0], ("a clear reason #".to_string(), 10));
        assert!(!report.clean());
    }
}
