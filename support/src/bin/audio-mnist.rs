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
use support::model::{describe_device, pick_device};
use support::predict::{collect_inputs, Predictor};
use support::split::SplitSpec;
use support::train::TrainConfig;
use support::workflow::{digit_names, evaluate_model, train_and_evaluate, TrainOptions};
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
    /// Train the CNN speaker-independently, evaluate it, and export model.safetensors.
    Train {
        #[command(flatten)]
        data: DataArgs,
        /// Output folder for the model, logs, plots and reports.
        #[arg(long, default_value = "out")]
        out: PathBuf,
        #[command(flatten)]
        split: SplitArgs,
        /// Seed for initialisation, shuffling, dropout and the random split.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Maximum epochs (early stopping may end sooner).
        #[arg(long, default_value_t = 30)]
        epochs: usize,
        /// Training recipe: `seed` = the Kaggle notebook's, faithfully ported.
        #[arg(long, default_value = "seed")]
        recipe: String,
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
    },
    /// Predict the digit spoken in WAV files (folders are searched for *.wav).
    ///
    /// Exit status: 0 all predicted, 1 some files failed (the rest are printed), 2 usage or model errors.
    Predict {
        #[arg(long)]
        model: PathBuf,
        /// One JSON object per line instead of `path: digit (confidence)`.
        #[arg(long)]
        json: bool,
        /// Also show the K most likely digits.
        #[arg(long, default_value_t = 1)]
        top: usize,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Evaluate an exported model on the test speakers of a split (by default the model's own).
    Evaluate {
        #[arg(long)]
        model: PathBuf,
        #[command(flatten)]
        data: DataArgs,
        #[arg(long, default_value = "out/evaluation")]
        out: PathBuf,
        #[command(flatten)]
        split: SplitArgs,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Measure CNN training and inference throughput on synthetic input; prints one JSON line.
    BenchTrain {
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// CPU threads (0 = all cores).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Timed training steps (and inference passes).
        #[arg(long, default_value_t = 10)]
        steps: usize,
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

#[derive(clap::Args)]
struct DataArgs {
    /// Dataset folder (AudioMNIST, its Kaggle unzip, or FSDD).
    #[arg(long, env = "AUDIO_MNIST_DATA")]
    data: PathBuf,
    /// Feature cache folder.
    #[arg(long, env = "AUDIO_MNIST_CACHE", default_value = "cache")]
    cache_dir: PathBuf,
}

#[derive(clap::Args)]
struct SplitArgs {
    /// `random` (70/15/15 of the speakers, seeded) or `paper:K` (official AudioMNIST fold K, 0-4).
    #[arg(long, default_value = "random")]
    split: String,
    /// Explicit test speakers (comma-separated); needs --val-speakers.
    #[arg(long)]
    test_speakers: Option<String>,
    /// Explicit validation speakers (comma-separated); needs --test-speakers.
    #[arg(long)]
    val_speakers: Option<String>,
}

impl SplitArgs {
    fn spec(&self, seed: u64) -> Result<SplitSpec> {
        SplitSpec::from_args(&self.split, seed, self.test_speakers.as_deref(), self.val_speakers.as_deref())
    }
    fn given(&self) -> bool {
        self.split != "random" || self.test_speakers.is_some() || self.val_speakers.is_some()
    }
}

fn main() -> ExitCode {
    support::tune_allocator();
    let cli = Cli::parse();
    if let Command::BenchTrain { threads, .. } = cli.command {
        if threads > 0 {
            // Candle's CPU kernels size their thread pools from RAYON_NUM_THREADS; set it before
            // any pool exists (we are still single-threaded here).
            std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
        }
    }
    if let Command::Predict { model, json, top, paths } = &cli.command {
        return match predict_command(model, *json, *top, paths) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    match run(cli) {
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
        Command::Train { data, out, split, seed, epochs, recipe, batch_size } => {
            if recipe != "seed" {
                anyhow::bail!("unknown recipe {recipe:?}; available: seed");
            }
            let opts = TrainOptions {
                data: data.data,
                out,
                cache_dir: data.cache_dir,
                split: split.spec(seed)?,
                train: TrainConfig { seed, epochs, batch_size, recipe, ..TrainConfig::default() },
                features: FeatureConfig::default(),
            };
            train_command(&opts)
        }
        Command::Evaluate { model, data, out, split, seed } => {
            let device = pick_device();
            let spec = if split.given() { Some(split.spec(seed)?) } else { None };
            let bar = feature_bar()?;
            let e = evaluate_model(&model, &data.data, &out, &data.cache_dir, spec, &device, &|d, n| {
                bar.set_length(n as u64);
                bar.set_position(d as u64)
            })?;
            bar.finish_and_clear();
            print!("{}", e.report(&digit_names()));
            println!("test accuracy {:.2}%; files written to {}", 100.0 * e.accuracy, out.display());
            Ok(())
        }
        Command::BenchTrain { batch, steps, .. } => {
            let r = support::bench::bench_train(batch, steps, &pick_device())?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
        Command::Predict { .. } => unreachable!("handled in main"),
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

fn predict_command(model: &Path, json: bool, top: usize, paths: &[PathBuf]) -> Result<ExitCode> {
    let predictor = Predictor::load(model)?;
    let files = collect_inputs(paths)?;
    let mut failed = 0;
    for (file, result) in predictor.predict_files(&files) {
        let name = file.display().to_string();
        match result {
            Ok(p) if json => println!(
                "{}",
                serde_json::json!({"file": name, "digit": p.digit, "confidence": p.confidence, "probabilities": p.probabilities})
            ),
            Ok(p) => {
                let shown: Vec<String> =
                    p.top(top.max(1)).iter().map(|(d, c)| format!("{d} ({c:.2})")).collect();
                println!("{name}: {}", shown.join(", "));
            }
            Err(e) => {
                failed += 1;
                if json {
                    println!("{}", serde_json::json!({"file": name, "error": e.kind.to_string()}));
                } else {
                    eprintln!("{name}: error: {}", e.kind);
                }
            }
        }
    }
    Ok(if failed > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn feature_bar() -> Result<ProgressBar> {
    Ok(ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} features {bar:40} {pos}/{len} files  {per_sec}  eta {eta}")
            .context("progress bar template")?,
    ))
}

fn train_command(opts: &TrainOptions) -> Result<()> {
    let device = pick_device();
    println!("device: {}", describe_device(&device));
    let bar = feature_bar()?;
    let epochs = ProgressBar::new(opts.train.epochs as u64).with_style(
        ProgressStyle::with_template("{spinner} epoch {pos}/{len} {bar:30} {elapsed_precise} {msg}")
            .context("progress bar template")?,
    );
    let report = train_and_evaluate(
        opts,
        &device,
        &|d, n| {
            bar.set_length(n as u64);
            bar.set_position(d as u64)
        },
        &mut |r| {
            bar.finish_and_clear();
            let line = format!(
                "epoch {:>3}  train loss {:.4} acc {:.4}  val loss {:.4} acc {:.4}  lr {:.2e}  {:.1}s",
                r.epoch, r.train_loss, r.train_acc, r.val_loss, r.val_acc, r.lr, r.seconds
            );
            // A hidden bar (output not a terminal: logs, CI, notebooks) drops println: print plainly.
            if epochs.is_hidden() {
                println!("{line}");
            } else {
                epochs.println(line);
            }
            epochs.set_position(r.epoch as u64);
            epochs.set_message(format!("val acc {:.4}", r.val_acc));
        },
    )?;
    epochs.finish_and_clear();
    let m = &report.metrics;
    println!(
        "split: train {:?}\n       val {:?}\n       test {:?}",
        report.split.train, report.split.val, report.split.test
    );
    print!("{}", report.evaluation.report(&digit_names()));
    println!(
        "test accuracy {:.2}% ({} files), best val accuracy {:.2}% at epoch {}/{}; {:.0} s, {:.1} train samples/s",
        100.0 * m.test_accuracy,
        m.test_files,
        100.0 * m.val_accuracy,
        m.best_epoch,
        m.epochs,
        m.train_seconds,
        m.train_samples_per_second
    );
    println!("model: {}; artifacts in {}", report.model_path.display(), opts.out.display());
    Ok(())
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
