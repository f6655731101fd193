//! `audio-mnist`: the command line of the spoken-digit recogniser. Thin: parsing and printing;
//! the work is in the `support` library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use support::model::pick_device;
use support::predict::{collect_inputs, Predictor};

// Training, evaluation and dataset commands: only in the full build (default feature `train`);
// `--no-default-features --features infer` builds a lean `predict` without them.
#[cfg(feature = "train")]
mod training;
#[cfg(feature = "train")]
use training::*;

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
    #[cfg(feature = "train")]
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
    #[cfg(feature = "train")]
    /// Train the CNN speaker-independently, evaluate it, and export model.safetensors.
    Train {
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        train: TrainArgs,
    },
    #[cfg(feature = "train")]
    /// Cross-validate a recipe: leave-one-speaker-out (`loso`) or the five official AudioMNIST
    /// folds (`paper`); writes OUT/crossval.json and a combined confusion matrix.
    Crossval {
        #[command(flatten)]
        data: DataArgs,
        /// `loso` (every speaker tested once; the next speaker validates) or `paper`.
        #[arg(long, default_value = "loso")]
        scheme: String,
        /// Output folder (crossval.json, confusion_matrix.png, fold-K/).
        #[arg(long, default_value = "crossval")]
        out: PathBuf,
        #[command(flatten)]
        recipe: RecipeArgs,
    },
    #[cfg(feature = "train")]
    /// The whole job: download AudioMNIST into --data when it holds no dataset, then features
    /// (cached), training, evaluation and export. Offline with any dataset already in --data.
    Run {
        /// Dataset folder; AudioMNIST is downloaded into it when it is empty or missing.
        #[arg(long, env = "AUDIO_MNIST_DATA", default_value = "data")]
        data: PathBuf,
        /// Feature cache folder.
        #[arg(long, env = "AUDIO_MNIST_CACHE", default_value = "cache")]
        cache_dir: PathBuf,
        /// Where to download AudioMNIST from (a zip of the dataset authors' repository).
        #[arg(long, env = "AUDIO_MNIST_URL", default_value = support::download::AUDIOMNIST_URL)]
        url: String,
        #[command(flatten)]
        train: TrainArgs,
    },
    #[cfg(feature = "train")]
    /// Download AudioMNIST (no account needed) and unpack it to DEST/NN/*.wav + audioMNIST_meta.txt.
    ///
    /// Resumes an interrupted download, skips a completed one, refuses archive entries that
    /// would land outside DEST, and reports how the result differs from 60 speakers x 500 files.
    Download {
        #[arg(long, default_value = "data")]
        dest: PathBuf,
        #[arg(long, env = "AUDIO_MNIST_URL", default_value = support::download::AUDIOMNIST_URL)]
        url: String,
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
    #[cfg(feature = "train")]
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
        /// CPU implementation: our fused kernels, or Candle's own ops (the "before").
        #[arg(long, value_enum, default_value_t = KernelChoice::Fused)]
        kernels: KernelChoice,
        /// Instead: time each layer's forward and backward alone (one JSON line).
        #[arg(long)]
        layers: bool,
    },
    #[cfg(feature = "train")]
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

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum KernelChoice {
    Fused,
    Candle,
}

impl From<KernelChoice> for support::model::Kernels {
    fn from(k: KernelChoice) -> Self {
        match k {
            KernelChoice::Fused => Self::Fused,
            KernelChoice::Candle => Self::Candle,
        }
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
        #[cfg(feature = "train")]
        Command::Features { data, out, cache_dir } => features(&data, &out, &cache_dir),
        #[cfg(feature = "train")]
        Command::Crossval { data, scheme, out, recipe } => crossval_command(&data, &scheme, &recipe, &out),
        #[cfg(feature = "train")]
        Command::Train { data, train } => train_command(&train.options(data.data, data.cache_dir)?),
        #[cfg(feature = "train")]
        Command::Run { data, cache_dir, url, train } => {
            let opts = train.options(data.clone(), cache_dir)?;
            if needs_download(&data)? {
                println!("no dataset in {}: downloading AudioMNIST from {url}", data.display());
                download_command(&data, &url)?;
            }
            train_command(&opts)
        }
        #[cfg(feature = "train")]
        Command::Download { dest, url } => download_command(&dest, &url),
        #[cfg(feature = "train")]
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
        Command::BenchTrain { batch, steps, kernels, layers, .. } => {
            let kernels = kernels.into();
            if layers {
                let rows = support::bench::profile_layers(batch, steps, kernels)?;
                println!(
                    "{}",
                    serde_json::json!({"batch": batch, "kernels": format!("{kernels:?}"), "layers": rows})
                );
            } else {
                let r = support::bench::bench_train(batch, steps, kernels, &pick_device())?;
                println!("{}", serde_json::to_string(&r)?);
            }
            Ok(())
        }
        Command::Predict { .. } => unreachable!("handled in main"),
        #[cfg(feature = "train")]
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
