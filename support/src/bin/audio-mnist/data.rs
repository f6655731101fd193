//! `features`, `scan` and `download`: the dataset commands.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use support::data::cache::CacheStatus;
use support::data::dataset::{scan, Dataset};
use support::data::download::Corpus;
use support::data::prepare::load_features;
use support::train::Recipe;

/// `audio-mnist scan`: the metadata table, printed and written as CSV.
pub fn scan_command(data: &[PathBuf], csv: &Path) -> Result<()> {
    let dataset = scan_verbose(data)?;
    let table = dataset.metadata_table();
    println!("{table}");
    table.write_csv(csv)?;
    println!("wrote {}", csv.display());
    Ok(())
}

/// Scan the folders and say what was found: per folder, then the union.
pub fn scan_verbose(data: &[PathBuf]) -> Result<Dataset> {
    scan_verbose_for(data, &[])
}

/// [`scan_verbose`] with training-only folders (a recipe's `--train-data`).
pub fn scan_verbose_for(data: &[PathBuf], train_only: &[PathBuf]) -> Result<Dataset> {
    let dataset = support::data::union::scan_for_training(data, train_only)?;
    for (i, s) in dataset.sources.iter().enumerate() {
        let part = dataset.part(i);
        let (n, speakers) = (part.recordings.len(), part.speaker_ids().len());
        println!(
            "{}: {:?} layout, {n} recordings, {speakers} speakers ({}){}",
            s.name,
            s.layout,
            s.root.display(),
            if s.train_only { ", training only" } else { "" }
        );
    }
    if dataset.sources.len() > 1 {
        let (n, speakers) = (dataset.recordings.len(), dataset.speaker_ids().len());
        println!("together: {n} recordings, {speakers} speakers (named folder/speaker)");
    }
    for w in &dataset.warnings {
        eprintln!("warning: {w}");
    }
    Ok(dataset)
}

pub fn features(data: &[PathBuf], out: &Path, cache_dir: &Path, recipe: &Recipe) -> Result<()> {
    let dataset = scan_verbose(data)?;
    let config = recipe.features();
    let framing = format!("{:?}", config.framing).to_lowercase();
    println!("features of recipe {}: {framing} framing, {} dB range", recipe.label(), config.top_db);
    let bar = crate::train::feature_bar()?;
    let start = Instant::now();
    let (set, status) = load_features(&dataset, cache_dir, &config, &crate::train::bar_progress(&bar))?;
    bar.finish_and_clear();
    match &status {
        CacheStatus::Hit(p) => println!("features loaded from cache {}", p.display()),
        CacheStatus::Miss(p) => println!(
            "extracted {} files in {:.1} s, cached in {}",
            set.len(),
            start.elapsed().as_secs_f64(),
            p.display()
        ),
    }
    // One folder: its cache file is this very feature file, so link (or copy) it rather than
    // serialise and write the same 4 bytes per value again (a third of the command's time).
    match &status {
        CacheStatus::Hit(p) | CacheStatus::Miss(p) if dataset.sources.len() == 1 => {
            support::data::link_or_copy(p, out)?
        }
        _ => set.save(out)?,
    }
    println!("wrote {} ({} x {} x {})", out.display(), set.len(), set.n_mels, set.n_frames);
    if !set.skipped.is_empty() {
        eprintln!("skipped {} files:", set.skipped.len());
        for s in set.skipped.iter().take(20) {
            eprintln!("  {s}");
        }
        if set.skipped.len() > 20 {
            eprintln!("  ... and {} more", set.skipped.len() - 20);
        }
    }
    Ok(())
}

/// Whether `run` must download before training: `data` is missing or empty, or holds an
/// unfinished download. A folder with anything else in it is the user's: never written into.
pub fn needs_download(data: &Path) -> Result<bool> {
    if support::data::download::completed(data).is_some() {
        return Ok(false);
    }
    if support::data::download::unfinished(data) || !data.exists() {
        return Ok(true);
    }
    let empty =
        std::fs::read_dir(data).with_context(|| format!("reading {}", data.display()))?.next().is_none();
    if empty {
        return Ok(true);
    }
    // Not ours and not empty: it must be a dataset (scan says why when it is not).
    scan(data)?;
    Ok(false)
}

/// `audio-mnist download --dataset D`: its default folder and address unless given.
pub fn download_command(corpus: Corpus, dest: Option<PathBuf>, url: Option<String>) -> Result<()> {
    let dest = dest.unwrap_or_else(|| match corpus {
        Corpus::Audiomnist => PathBuf::from("data"),
        Corpus::Fsdd => PathBuf::from("data/fsdd"),
        Corpus::SpeechCommands => PathBuf::from("data/speech-commands"),
    });
    let env = std::env::var("AUDIO_MNIST_URL").ok().filter(|u| !u.is_empty() && corpus == Corpus::Audiomnist);
    let url = url.or(env).unwrap_or_else(|| corpus.url().to_string());
    download_into(corpus, &dest, &url)
}

/// Download `corpus` from `url` into `dest`, with a byte progress bar.
pub fn download_into(corpus: Corpus, dest: &Path, url: &str) -> Result<()> {
    use support::data::download::{download_corpus, Outcome};
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "{spinner} download {bar:40} {bytes}/{total_bytes}  {bytes_per_sec}  eta {eta}",
        )
        .context("progress bar template")?,
    );
    let outcome = download_corpus(corpus, url, dest, &|done, total| {
        if let Some(t) = total {
            bar.set_length(t);
        }
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let report = match outcome? {
        Outcome::AlreadyComplete(r) => {
            println!("{} already holds a completed download; nothing fetched", dest.display());
            r
        }
        Outcome::Downloaded(r) => {
            println!("downloaded {} into {}", r.url, dest.display());
            r
        }
    };
    match corpus {
        Corpus::Audiomnist => println!(
            "{} speaker folders, {} recordings, metadata {}",
            report.speaker_folders,
            report.wavs,
            if report.metadata { "present" } else { "missing" }
        ),
        _ => println!(
            "{} speakers, {} recordings in {}",
            report.speaker_folders,
            report.wavs,
            dest.join("recordings").display()
        ),
    }
    for d in &report.differences {
        eprintln!("warning: {d}");
    }
    Ok(())
}

/// `audio-mnist synth`: the digit words in every installed voice (or `--list` them).
pub fn synth_command(
    out: Option<&Path>,
    count: usize,
    voices: Option<usize>,
    seed: u64,
    list: bool,
) -> Result<()> {
    use support::data::synth::{installed_voices, synth_corpus};
    let mut all = installed_voices();
    let mut engines = std::collections::BTreeMap::<&str, usize>::new();
    all.iter().for_each(|v| *engines.entry(v.engine.short()).or_default() += 1);
    let found: Vec<String> = engines.iter().map(|(e, n)| format!("{e} {n}")).collect();
    println!("{} voices installed ({})", all.len(), found.join(", "));
    let Some(out) = out.filter(|_| !list) else {
        all.iter().for_each(|v| println!("{}\t{}", v.id(), v.name));
        return Ok(());
    };
    if let Some(n) = voices.filter(|&n| n < all.len()) {
        use rand::seq::SliceRandom;
        all.shuffle(&mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed));
        all.truncate(n);
        all.sort();
    }
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} synth {bar:40} {pos}/{len} files  {per_sec}  eta {eta}")
            .context("progress bar template")?,
    );
    let report = synth_corpus(out, &all, count, seed, &|done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    println!(
        "{} files ({} voices x 10 digits x {count}; {} already there) in {}, described in synth.json",
        report.files.len(),
        report.voices.len(),
        report.reused,
        out.display()
    );
    Ok(())
}

/// `audio-mnist negatives`: every kind's examples as WAV files and a manifest.
pub fn negatives_command(out: &Path, count: usize, seed: u64, rate: u32, from: Option<&Path>) -> Result<()> {
    use support::dsp::negatives::{from_speech, non_speech_set, NegativeKind};
    let mut made: Vec<(NegativeKind, Vec<f32>, String)> =
        non_speech_set(count, rate, seed).into_iter().map(|(k, x)| (k, x, String::new())).collect();
    if let Some(dir) = from {
        let dataset = scan(dir)?;
        let clips = speech_sources(&dataset, count, rate, seed)?;
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed ^ 0x5EED);
        for kind in NegativeKind::SPEECH {
            for ((a, b), names) in &clips {
                made.push((kind, from_speech(kind, a, b, &mut rng), names.clone()));
            }
        }
    }
    let mut index: Vec<serde_json::Value> = Vec::new();
    let mut counters = std::collections::BTreeMap::<NegativeKind, usize>::new();
    for (kind, samples, source) in &made {
        let n = counters.entry(*kind).or_default();
        let name = format!("{}_{}.wav", kind.name(), n);
        *n += 1;
        support::dsp::audio::write_wav(&out.join(&name), rate, samples)?;
        index.push(serde_json::json!({"file": name, "kind": kind, "source": source}));
    }
    let manifest = serde_json::json!({"seed": seed, "rate": rate, "count": count, "files": index});
    support::data::write_json(&out.join("negatives.json"), &manifest)?;
    for (kind, n) in &counters {
        println!("{:>9}: {n} files", kind.name());
    }
    println!("wrote {} files and negatives.json to {}", made.len(), out.display());
    Ok(())
}

/// Type of [`speech_sources`]: two clips of different digits and their names.
type ClipPair = ((Vec<f32>, Vec<f32>), String);

/// `count` seeded pairs of recordings of two different digits, at `rate`.
fn speech_sources(dataset: &Dataset, count: usize, rate: u32, seed: u64) -> Result<Vec<ClipPair>> {
    use rand::Rng;
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let n = dataset.recordings.len();
    let digits: std::collections::BTreeSet<u8> = dataset.recordings.iter().map(|r| r.digit).collect();
    anyhow::ensure!(digits.len() >= 2, "--from needs recordings of at least two digits");
    let load = |i: usize| -> Result<Vec<f32>> {
        let audio = support::dsp::audio::load_wav(&dataset.absolute(&dataset.recordings[i]), 60.0)?;
        Ok(support::dsp::resample::resample(&audio.samples, audio.sample_rate, rate)?)
    };
    (0..count)
        .map(|_| {
            let a = rng.random_range(0..n);
            let b = loop {
                let b = rng.random_range(0..n);
                if dataset.recordings[b].digit != dataset.recordings[a].digit {
                    break b;
                }
            };
            let names = format!(
                "{} + {}",
                dataset.recordings[a].path.display(),
                dataset.recordings[b].path.display()
            );
            Ok(((load(a)?, load(b)?), names))
        })
        .collect()
}
