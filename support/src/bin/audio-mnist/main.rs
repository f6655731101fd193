//! `audio-mnist`: the command line of the spoken-digit recogniser. Thin: parsing and printing;
//! the work is in the `support` library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[cfg(feature = "train")]
mod adapt;
#[cfg(feature = "train")]
mod args;
mod bench;
mod calibrate;
#[cfg(feature = "train")]
mod data;
#[cfg(feature = "serve")]
mod fuzz;
mod listen;
mod predict;
#[cfg(feature = "serve")]
mod serve;
#[cfg(feature = "train")]
mod train;
#[cfg(feature = "train")]
mod words;

// Training, evaluation and dataset commands are only in the full build (default feature
// `train`); `--no-default-features --features infer` builds a lean `predict` without them.
#[cfg(feature = "train")]
use args::{DataArgs, RecipeArgs, SplitArgs, TrainArgs};
use bench::KernelChoice;

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
        #[command(flatten)]
        data: args::DataFolders,
        /// Output safetensors file (tensors `features`, `digits`; metadata `files`).
        #[arg(long)]
        out: PathBuf,
        /// Cache folder: a repeat run with unchanged files and config reuses the features.
        #[arg(long, env = "AUDIO_MNIST_CACHE", default_value = "cache")]
        cache_dir: PathBuf,
        /// The recipe whose features to extract (framing, dynamic range).
        #[arg(long, value_enum, default_value_t = support::train::RecipeName::Best)]
        recipe: support::train::RecipeName,
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
        /// `loso` (every speaker tested once; the next speaker validates), `paper` (the five
        /// official AudioMNIST folds) or `kfold:K` (K seeded speaker-disjoint folds).
        #[arg(long, default_value = "loso", value_parser = |s: &str| s.parse::<support::eval::crossval::Scheme>())]
        scheme: support::eval::crossval::Scheme,
        /// Output folder (crossval.json, confusion_matrix.png, fold-K/).
        #[arg(long, default_value = "crossval")]
        out: PathBuf,
        #[command(flatten)]
        recipe: RecipeArgs,
    },
    #[cfg(feature = "train")]
    /// The scoreboard: FSDD leave-one-speaker-out, Gujarati and Arabic kfold:5, trained on FSDD
    /// and tested on speech-commands' 118 strangers, robustness at 10 dB babble and RT60 0.6 s,
    /// training cost per file. Writes OUT/scoreboard.json, scoreboard.md, scoreboard.png.
    Benchmark {
        /// A cheaper estimate for iterating (one network, at most 12 epochs, FSDD 3 of 6 folds,
        /// kfold 2 of 5), labelled QUICK everywhere.
        #[arg(long)]
        quick: bool,
        /// Only these lines (comma-separated): fsdd-loso, gujarati, arabic, cross-corpus,
        /// robustness (needs fsdd-loso).
        #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(support::eval::benchmark::LINES))]
        only: Vec<String>,
        #[arg(long, default_value = "benchmark")]
        out: PathBuf,
        /// The folder holding fsdd/, speech-commands-digits/, gujarati/ and arabic/.
        #[arg(long, env = "AUDIO_MNIST_CORPORA", default_value = "../shared/data")]
        corpora: PathBuf,
        #[arg(long, env = "AUDIO_MNIST_CACHE", default_value = "cache")]
        cache_dir: PathBuf,
        #[command(flatten)]
        recipe: RecipeArgs,
    },
    #[cfg(feature = "train")]
    /// The whole job: download AudioMNIST into --data when it holds no dataset, then features
    /// (cached), training, evaluation and export. Offline with any dataset already in --data.
    Run {
        /// Dataset folder(s), default `data`; AudioMNIST is downloaded into the first when it is
        /// empty or missing.
        #[command(flatten)]
        data: args::DataFolders,
        /// Feature cache folder.
        #[arg(long, env = "AUDIO_MNIST_CACHE", default_value = "cache")]
        cache_dir: PathBuf,
        /// Where to download AudioMNIST from (a zip of the dataset authors' repository).
        #[arg(long, env = "AUDIO_MNIST_URL", default_value = support::data::download::AUDIOMNIST_URL)]
        url: String,
        #[command(flatten)]
        train: TrainArgs,
    },
    #[cfg(feature = "train")]
    /// Download a corpus (no account needed): AudioMNIST (to DEST/NN/*.wav +
    /// audioMNIST_meta.txt), FSDD, or Speech Commands' ten digit words (to
    /// DEST/recordings/{digit}_{speaker}_{n}.wav).
    ///
    /// Resumes an interrupted download, skips a completed one, refuses archive entries that
    /// would land outside DEST, and reports how the result differs from the complete corpus.
    Download {
        #[arg(long, value_enum, default_value_t = support::data::download::Corpus::Audiomnist)]
        dataset: support::data::download::Corpus,
        /// Default: `data` for AudioMNIST, `data/fsdd`, `data/speech-commands`.
        #[arg(long)]
        dest: Option<PathBuf>,
        /// Another copy of the corpus's archive (default: its authors'; for AudioMNIST also
        /// AUDIO_MNIST_URL).
        #[arg(long)]
        url: Option<String>,
    },
    #[cfg(feature = "train")]
    /// Write seeded sounds that are not digits as WAV files (OUT/{kind}_{n}.wav and
    /// OUT/negatives.json): silence, noise, tones, chords, music, clicks, sweeps, speech-like
    /// noise, bursts; with --from, digit recordings reversed, spliced and cut short. A
    /// different --seed gives a disjoint set.
    Negatives {
        #[arg(long)]
        out: PathBuf,
        /// Examples of each kind.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        count: u32,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Sample rate of the files.
        #[arg(long, default_value_t = 16000, value_parser = clap::value_parser!(u32).range(1000..=192_000))]
        rate: u32,
        /// A data folder whose digit recordings become reversed and spliced non-words.
        #[arg(long)]
        from: Option<PathBuf>,
        /// Instead: English words that are not digits, spoken by espeak-ng (needs it on PATH),
        /// --count per voice, as OUT/{word}_{voice}_{k}.wav, a folder for `--negatives`.
        #[arg(long, conflicts_with = "from")]
        words: bool,
        /// Voices for --words.
        #[arg(long, default_value_t = 40, requires = "words")]
        voices: usize,
    },
    #[cfg(feature = "train")]
    /// Say the ten digit words with every installed text-to-speech voice (espeak-ng's accents
    /// and variants, flite's and festival's voices), seeded rate, pitch, vocal-tract length and
    /// emphasis per take: OUT/{digit}_{voice}_{n}.wav (16 kHz, FSDD layout) and OUT/synth.json.
    /// Resumes an interrupted run; `--train-data OUT` trains on it.
    Synth {
        #[arg(long, required_unless_present = "list")]
        out: Option<PathBuf>,
        /// Takes of each digit per voice.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1000))]
        count: u32,
        /// At most this many voices, drawn with the seed from all installed (default: all).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        voices: Option<u32>,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Only list the installed voices.
        #[arg(long)]
        list: bool,
    },
    /// Digits from a recording of any length, a stream on stdin or a microphone, printed as
    /// each word ends (`1.84-2.31 s  7 (0.97)`), then the whole sequence.
    Listen {
        /// The model (default: out/model.safetensors if it exists, else the bundled one).
        #[arg(long)]
        model: Option<PathBuf>,
        /// One JSON object per event, and `{"sequence"}` at the end.
        #[arg(long)]
        json: bool,
        /// Also answer "not a digit" when the best digit's probability is under this (0-1).
        #[arg(long)]
        threshold: Option<f32>,
        /// SOURCE is raw PCM (no WAV header) at this sample rate, in --format.
        #[arg(long, requires = "format", value_parser = clap::value_parser!(u32).range(1000..=384_000))]
        rate: Option<u32>,
        #[arg(long, value_enum, requires = "rate")]
        format: Option<listen::RawFormat>,
        /// Channels of raw PCM (interleaved; mixed down to mono).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
        channels: u16,
        /// Listen to an input device: the default, or the one named (build with `--features mic`).
        #[arg(long, num_args = 0..=1, default_missing_value = "", conflicts_with = "source")]
        mic: Option<String>,
        /// List the input devices (build with `--features mic`).
        #[arg(long)]
        list_devices: bool,
        /// Multiply "not a digit"'s probability by this before deciding (1: as the model says;
        /// below 1, fewer digits rejected in a noisy stream).
        #[arg(long, default_value_t = support::stream::REJECT_WEIGHT)]
        reject_weight: f32,
        /// A WAV file of any length, or `-` for a stream on stdin.
        #[arg(required_unless_present_any = ["mic", "list_devices"])]
        source: Option<PathBuf>,
    },
    #[cfg(feature = "train")]
    /// Measure `listen` on generated digit sequences (the speakers' clips, random pauses,
    /// levels, background noise, other sounds between digits): digit error rate with
    /// substitutions, deletions and insertions, word boundary error, latency, cost.
    ListenBench {
        #[arg(long)]
        model: PathBuf,
        #[command(flatten)]
        data: DataArgs,
        /// Speakers whose clips make the sequences (default: the model's test speakers).
        #[arg(long, value_delimiter = ',')]
        speakers: Vec<String>,
        /// Sequences to generate.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        count: u64,
        /// Background noise, `LO,HI` dB SNR (drawn per sequence), or `none`.
        #[arg(long, default_value = "10,30")]
        snr_db: String,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Multiply "not a digit"'s probability by this before deciding (as `listen`).
        #[arg(long, default_value_t = support::stream::REJECT_WEIGHT)]
        reject_weight: f32,
        /// Also write the sequences (WAV), their transcripts and the report here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    #[cfg(feature = "serve")]
    /// A web page to try a model (record, or drop a WAV) and a JSON API: POST /api/predict,
    /// GET /api/model, GET /healthz. Ctrl-C stops it after the requests in flight.
    Serve(serve::ServeCmd),
    /// Predict the digit spoken in WAV files (folders are searched for *.wav).
    ///
    /// Exit status: 0 all predicted, 1 some files failed (the rest are printed), 2 usage or model errors.
    Predict(predict::PredictArgs),
    Calibrate(calibrate::CalibrateArgs),
    /// Store a model file's weights in half precision: half the size, the same answers to within
    /// rounding (how the bundled model is stored).
    Shrink(predict::ShrinkArgs),
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
    #[cfg(feature = "train")]
    /// Adapt a model to the speaker(s) of a folder of their digits (a few takes of each): writes
    /// a personal model file that records what it learned from.
    Adapt(adapt::AdaptCmd),
    #[cfg(feature = "train")]
    /// The enrollment benchmark: per speaker, adapt on the first K takes of each digit, test on
    /// the other takes and on the other speakers; adaptation time.
    AdaptBench(adapt::AdaptBenchCmd),
    #[cfg(feature = "serve")]
    /// Fuzz what takes outside input (WAV, model files, listen's stdin, the HTTP API) with seeded
    /// mutations; one JSON report per target; exit status 1 when one found a problem.
    BenchFuzz(fuzz::FuzzCmd),
    /// Measure CNN training and inference throughput on synthetic input; prints one JSON line.
    BenchTrain {
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
        batch: u16,
        /// CPU threads (0 = all cores).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1024))]
        threads: u16,
        /// Timed training steps (and inference passes).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        steps: u32,
        /// CPU implementation: our fused kernels, or Candle's own ops (the "before").
        #[arg(long, value_enum, default_value_t = KernelChoice::Fused)]
        kernels: KernelChoice,
        /// Instead: time each layer's forward and backward alone (one JSON line).
        #[arg(long)]
        layers: bool,
    },
    #[cfg(feature = "train")]
    /// Accuracy of one or more models under noise, babble, reverberation, a phone line, a
    /// level change and clipping (a fixed, seeded grid); writes OUT/robustness.json and a plot.
    Robustness {
        /// A model file; repeat to compare models side by side.
        #[arg(long = "model", required = true)]
        models: Vec<PathBuf>,
        /// Dataset folder(s), as the model was trained on: each model is scored on its own
        /// test speakers found there.
        #[command(flatten)]
        data: args::DataFolders,
        /// Score every recording of --data instead (for data no model trained on).
        #[arg(long)]
        all: bool,
        /// Output folder (robustness.json, robustness.png).
        #[arg(long, default_value = "robustness")]
        out: PathBuf,
        /// Seed of the noise, babble and rooms.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    #[cfg(feature = "train")]
    /// List the recordings and their metadata (writes metadata.csv).
    Scan {
        #[command(flatten)]
        data: args::DataFolders,
        /// Where to write the CSV table.
        #[arg(long, default_value = "cache/metadata.csv")]
        csv: PathBuf,
    },
    /// Measure feature-extraction throughput (files/s) on a folder; prints one JSON line.
    BenchFeatures {
        #[arg(long)]
        data: PathBuf,
        /// Use only the first N recordings.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        /// Worker threads (0 = all cores).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1024))]
        threads: u16,
        /// Timed passes; the median is reported.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=1000))]
        repeat: u16,
    },
    /// Time relevance maps (Integrated Gradients and gradient x input) per file and check them
    /// (completeness, model randomisation) on real recordings; prints one JSON line.
    BenchExplain {
        #[arg(long)]
        model: PathBuf,
        /// Integrated Gradients' steps.
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=4096))]
        steps: u16,
        /// Use at most N recordings, evenly spaced over the inputs.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
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
    // Commands whose exit status says more than success or failure.
    let status = match &cli.command {
        Command::Predict(args) => Some(predict::predict_command(args)),
        #[cfg(feature = "serve")]
        Command::BenchFuzz(cmd) => {
            Some(fuzz::fuzz_command(cmd).map(|clean| ExitCode::from(u8::from(!clean))))
        }
        _ => None,
    };
    status.unwrap_or_else(|| run(cli).map(|()| ExitCode::SUCCESS)).unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::from(2)
    })
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        #[cfg(feature = "train")]
        Command::Features { data, out, cache_dir, recipe } => {
            data::features(&data.resolve(None)?, &out, &cache_dir, &support::train::Recipe::named(recipe))
        }
        #[cfg(feature = "train")]
        Command::Crossval { data, scheme, out, recipe } => {
            train::crossval_command(&data, scheme, &recipe, &out)
        }
        #[cfg(feature = "train")]
        Command::Train { data, train } => {
            train::train_command(&train.options(data.data.resolve(None)?, data.cache_dir)?)
        }
        #[cfg(feature = "train")]
        Command::Run { data, cache_dir, url, train } => {
            let folders = data.resolve(Some("data"))?;
            let opts = train.options(folders.clone(), cache_dir)?;
            if data::needs_download(&folders[0])? {
                println!("no dataset in {}: downloading AudioMNIST from {url}", folders[0].display());
                data::download_into(support::data::download::Corpus::Audiomnist, &folders[0], &url)?;
            }
            train::train_command(&opts)
        }
        #[cfg(feature = "train")]
        Command::Download { dataset, dest, url } => data::download_command(dataset, dest, url),
        #[cfg(feature = "train")]
        Command::Negatives { out, count, seed, rate, words: true, voices, .. } => {
            let n = words::write_words(&out, voices, count as usize, rate, seed)?;
            println!("wrote {n} words to {}", out.display());
            Ok(())
        }
        #[cfg(feature = "train")]
        Command::Negatives { out, count, seed, rate, from, .. } => {
            data::negatives_command(&out, count as usize, seed, rate, from.as_deref())
        }
        #[cfg(feature = "train")]
        Command::Benchmark { quick, only, out, corpora, cache_dir, recipe } => {
            train::benchmark_command(&recipe, quick, &only, &corpora, &out, &cache_dir)
        }
        #[cfg(feature = "train")]
        Command::Synth { out, count, voices, seed, list } => {
            data::synth_command(out.as_deref(), count as usize, voices.map(|v| v as usize), seed, list)
        }
        #[cfg(feature = "train")]
        Command::Adapt(cmd) => adapt::adapt_command(&cmd),
        #[cfg(feature = "train")]
        Command::AdaptBench(cmd) => adapt::adapt_bench_command(&cmd),
        #[cfg(feature = "train")]
        Command::Evaluate { model, data, out, split, seed } => {
            train::evaluate_command(&model, &data, &out, &split, seed)
        }
        Command::BenchTrain { batch, steps, kernels, layers, .. } => {
            bench::bench_train(batch as usize, steps as usize, kernels, layers)
        }
        Command::Predict(_) => unreachable!("handled in main"),
        #[cfg(feature = "serve")]
        Command::BenchFuzz(_) => unreachable!("handled in main"),
        #[cfg(feature = "serve")]
        Command::Serve(cmd) => serve::serve_command(&cmd),
        Command::Shrink(a) => predict::shrink_command(&a.model, &a.out),
        Command::Calibrate(args) => calibrate::calibrate_command(&args),
        Command::Listen {
            model,
            json,
            threshold,
            rate,
            format,
            channels,
            mic,
            list_devices,
            reject_weight,
            source,
        } => {
            if list_devices {
                return listen::list_devices();
            }
            let o = listen::Output { json, threshold, reject_weight };
            let model = support::infer::ModelChoice::resolve(model.as_deref());
            if let Some(device) = mic {
                return listen::listen_mic(&model, Some(device.as_str()).filter(|d| !d.is_empty()), &o);
            }
            let source = listen::Source { path: source, raw: rate.zip(format), channels };
            listen::listen_command(&model, &source, &o)
        }
        #[cfg(feature = "train")]
        Command::ListenBench { model, data, speakers, count, snr_db, seed, reject_weight, out } => {
            let n = count as usize;
            listen::bench_command(&model, &data, &speakers, n, &snr_db, seed, reject_weight, out.as_deref())
        }
        #[cfg(feature = "train")]
        Command::Scan { data, csv } => data::scan_command(&data.resolve(None)?, &csv),
        #[cfg(feature = "train")]
        Command::Robustness { models, data, all, out, seed } => {
            train::robustness_command(&models, &data.resolve(None)?, all, &out, seed)
        }
        Command::BenchExplain { model, steps, limit, paths } => {
            let r = support::bench::bench_explain(&model, &paths, steps as usize, limit)?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
        Command::BenchFeatures { data, limit, threads, repeat } => {
            bench::bench_features(&data, limit.map(|l| l as usize), threads as usize, repeat as usize)
        }
    }
}
