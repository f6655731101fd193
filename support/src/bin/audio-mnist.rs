//! `audio-mnist`: the command line of the spoken-digit recogniser. Thin: parsing and printing;
//! the work is in the `support` library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use support::cache::{load_or_extract, CacheStatus};
use support::dataset::{scan, write_csv, Dataset};
use support::{FeatureConfig, FeatureExtractor};

// glibc's malloc hands every buffer over 128 KiB (one 48 kHz clip) back to the kernel and
// page-faults it in again for the next file: 7% of feature extraction. mimalloc keeps them.

#[derive(Parser)]
#[command(
    name = "audio-mnist",
    version,
    about = "Train and use a spoken-digit recogniser (AudioMNIST, FSDD)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Extract log-Mel features of every recording into one safetensors file.
    Features {
        /// Dataset folder (AudioMNIST, its Kaggle unzip, or FSDD).
        #[arg(long, env = "AUDIO_MNIST_DATA")]
        data: PathBuf,
        /// Output safetensors file (tensors `features`, `digits`; metadata `files`).
        #[arg(long)]
        out: PathBuf,
        /// Cache folder: a repeat run with unchanged files and config reuses the features.
        #[arg(long, env = "AUDIO_MNIST_CACHE", default_value = "cache")]
        cache_dir: PathBuf,
    },
    /// List the recordings and their metadata (writes metadata.csv).
    Scan {
        #[arg(long, env = "AUDIO_MNIST_DATA")]
        data: PathBuf,
        /// Where to write the CSV table.
        #[arg(long, default_value = "cache/metadata.csv")]
        csv: PathBuf,
    },
    /// Measure feature-extraction throughput (files/s) on a folder; prints one JSON line.
    BenchFeatures {
        #[arg(long)]
        data: PathBuf,
        /// Use only the first N recordings.
        #[arg(long)]
        limit: Option<usize>,
        /// Worker threads (0 = all cores).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Timed passes; the median is reported.
        #[arg(long, default_value_t = 5)]
        repeat: usize,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Features { data, out, cache_dir } => features(&data, &out, &cache_dir),
        Command::Scan { data, csv } => {
            let dataset = scan_verbose(&data)?;
            let mut df = dataset.metadata_frame()?;
            println!("{df}");
            write_csv(&mut df, &csv)?;
            println!("wrote {}", csv.display());
            Ok(())
        }
        Command::BenchFeatures { data, limit, threads, repeat } => {
            let r = support::bench::bench_features(&data, limit, threads, repeat)?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
    }
}

fn scan_verbose(data: &Path) -> Result<Dataset> {
    let dataset = scan(data)?;
    println!(
        "{}: {} recordings, {} speakers, layout {:?}",
        data.display(),
        dataset.recordings.len(),
        dataset.speaker_ids().len(),
        dataset.layout
    );
    for w in &dataset.warnings {
        eprintln!("warning: {w}");
    }
    Ok(dataset)
}

fn features(data: &Path, out: &Path, cache_dir: &Path) -> Result<()> {
    let dataset = scan_verbose(data)?;
    let mut df = dataset.metadata_frame()?;
    write_csv(&mut df, &cache_dir.join("metadata.csv"))?;
    let fx = FeatureExtractor::new(FeatureConfig::default()).map_err(anyhow::Error::msg)?;
    let bar = ProgressBar::new(dataset.recordings.len() as u64).with_style(
        ProgressStyle::with_template("{spinner} features {bar:40} {pos}/{len} files  {per_sec}  eta {eta}")
            .context("progress bar template")?,
    );
    let start = Instant::now();
    let (set, status) = load_or_extract(&dataset, &fx, cache_dir, &|done, _| bar.set_position(done as u64))?;
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
    set.save(out)?;
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
