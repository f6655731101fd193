//! The training-side commands of `audio-mnist` (features, scan, train, evaluate).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use support::cache::{load_or_extract, CacheStatus};
pub use support::dataset::write_csv;
use support::dataset::{scan, Dataset};
use support::model::{describe_device, pick_device};
use support::split::SplitSpec;
pub use support::train::TrainConfig;
pub use support::workflow::{digit_names, evaluate_model, train_and_evaluate, TrainOptions};
pub use support::FeatureConfig;
use support::FeatureExtractor;

#[derive(clap::Args)]
pub struct DataArgs {
    /// Dataset folder (AudioMNIST, its Kaggle unzip, or FSDD).
    #[arg(long, env = "AUDIO_MNIST_DATA")]
    pub data: PathBuf,
    /// Feature cache folder.
    #[arg(long, env = "AUDIO_MNIST_CACHE", default_value = "cache")]
    pub cache_dir: PathBuf,
}

#[derive(clap::Args)]
pub struct SplitArgs {
    /// `random` (70/15/15 of the speakers, seeded) or `paper:K` (official AudioMNIST fold K, 0-4).
    #[arg(long, default_value = "random")]
    pub split: String,
    /// Explicit test speakers (comma-separated); needs --val-speakers.
    #[arg(long)]
    pub test_speakers: Option<String>,
    /// Explicit validation speakers (comma-separated); needs --test-speakers.
    #[arg(long)]
    pub val_speakers: Option<String>,
}

impl SplitArgs {
    pub fn spec(&self, seed: u64) -> Result<SplitSpec> {
        SplitSpec::from_args(&self.split, seed, self.test_speakers.as_deref(), self.val_speakers.as_deref())
    }
    pub fn given(&self) -> bool {
        self.split != "random" || self.test_speakers.is_some() || self.val_speakers.is_some()
    }
}

/// The training flags `train` and `run` share.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// Output folder for the model, logs, plots and reports.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    #[command(flatten)]
    pub split: SplitArgs,
    #[command(flatten)]
    pub recipe: RecipeArgs,
}

/// How to train: the recipe and its overrides (`train`, `run`, `crossval`).
#[derive(clap::Args)]
pub struct RecipeArgs {
    /// Seed for initialisation, shuffling, dropout, augmentation and the random split.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Maximum epochs per network (early stopping may end sooner); default: the recipe's (30).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Training recipe: `best` (frames spread over the word, liftered spectra, 50 dB range, a
    /// third conv block, three networks averaged; README "Results") or `seed` (the Kaggle
    /// notebook's, faithfully ported).
    #[arg(long, default_value = "best")]
    pub recipe: String,
    /// Override the recipe's augmentation: comma-separated steps out of speed, gain, shift,
    /// noise, eq, specaugment (at the strengths of `AugmentConfig::all`), or `none`.
    #[arg(long)]
    pub augment: Option<String>,
    /// Override the recipe's label smoothing.
    #[arg(long)]
    pub label_smoothing: Option<f64>,
    /// Override the recipe's classifier input: `flatten` (the seed's) or `avgpool`.
    #[arg(long, value_parser = ["flatten", "avgpool"])]
    pub head: Option<String>,
    /// Override the recipe's per-utterance normalisation inside the network (true/false).
    #[arg(long)]
    pub cmvn: Option<bool>,
    /// Override the recipe's third conv block: its channels (0 = none, the seed's).
    #[arg(long)]
    pub conv3: Option<usize>,
    /// Override the recipe's cepstral liftering: DCT coefficients kept per frame (0 = off).
    #[arg(long)]
    pub lifter: Option<usize>,
    /// Override the recipe's mixup strength (Beta(a, a) blending of batch pairs; 0 = off).
    #[arg(long)]
    pub mixup: Option<f64>,
    /// Override the recipe's early-stopping patience (epochs without a better validation
    /// accuracy).
    #[arg(long)]
    pub patience: Option<usize>,
    /// Override the recipe's ensemble size: networks trained and averaged, each validated on
    /// other training speakers (all stored in the one model file).
    #[arg(long)]
    pub ensemble: Option<usize>,
    /// Override the recipe's framing: `pad` (the seed's: the word padded to 1 s) or `stretch`
    /// (the frames spread over the word).
    #[arg(long, value_parser = ["pad", "stretch"])]
    pub framing: Option<String>,
    /// Override the recipe's dynamic range of the log-Mel image in dB (the seed's: 80).
    #[arg(long)]
    pub top_db: Option<f32>,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
}

impl RecipeArgs {
    /// The recipe with the flags' overrides.
    pub fn config(&self) -> Result<TrainConfig> {
        let mut cfg = TrainConfig::recipe(&self.recipe)?;
        cfg.seed = self.seed;
        if let Some(e) = self.epochs {
            cfg.epochs = e;
        }
        cfg.batch_size = self.batch_size;
        if let Some(list) = &self.augment {
            cfg.augment = support::augment::AugmentConfig::all().only(list)?;
            cfg.recipe = format!("{}, augment {list}", self.recipe);
        }
        if let Some(h) = &self.head {
            cfg.head = serde_json::from_value(serde_json::Value::String(h.clone()))?;
            cfg.recipe = format!("{}, head {h}", cfg.recipe);
        }
        if let Some(c) = self.cmvn {
            cfg.cmvn = c;
            cfg.recipe = format!("{}, cmvn {c}", cfg.recipe);
        }
        if let Some(c) = self.conv3 {
            cfg.conv3_channels = c;
            cfg.recipe = format!("{}, conv3 {c}", cfg.recipe);
        }
        if let Some(k) = self.lifter {
            cfg.lifter = k;
            cfg.recipe = format!("{}, lifter {k}", cfg.recipe);
        }
        if let Some(a) = self.mixup {
            cfg.mixup = a;
            cfg.recipe = format!("{}, mixup {a}", cfg.recipe);
        }
        if let Some(p) = self.patience {
            cfg.patience = p;
            cfg.recipe = format!("{}, patience {p}", cfg.recipe);
        }
        if let Some(k) = self.ensemble {
            anyhow::ensure!(k >= 1, "--ensemble must be at least 1");
            cfg.ensemble = k;
            cfg.recipe = format!("{}, ensemble {k}", cfg.recipe);
        }
        if let Some(f) = &self.framing {
            cfg.framing = serde_json::from_value(serde_json::Value::String(f.clone()))?;
            cfg.recipe = format!("{}, framing {f}", cfg.recipe);
        }
        if let Some(db) = self.top_db {
            anyhow::ensure!(db > 0.0, "--top-db must be positive");
            cfg.top_db = db;
            cfg.recipe = format!("{}, top_db {db}", cfg.recipe);
        }
        if let Some(ls) = self.label_smoothing {
            cfg.label_smoothing = ls;
            cfg.recipe = format!("{}, label smoothing {ls}", cfg.recipe);
        }
        Ok(cfg)
    }
}

impl TrainArgs {
    pub fn options(&self, data: PathBuf, cache_dir: PathBuf) -> Result<TrainOptions> {
        Ok(TrainOptions {
            data,
            out: self.out.clone(),
            cache_dir,
            split: self.split.spec(self.recipe.seed)?,
            train: self.recipe.config()?,
            features: self.recipe.config()?.features(),
        })
    }
}

/// `audio-mnist crossval`: every fold, a line per fold, the summary.
pub fn crossval_command(data: &DataArgs, scheme: &str, recipe: &RecipeArgs, out: &Path) -> Result<()> {
    let device = pick_device();
    let cfg = recipe.config()?;
    println!("device: {}; recipe {}; augmentation: {}", describe_device(&device), cfg.recipe, {
        let n = cfg.augment.names();
        if n.is_empty() {
            "none".to_string()
        } else {
            n.join(", ")
        }
    });
    let bar = feature_bar()?;
    let r = support::workflow::crossval(
        &data.data,
        &data.cache_dir,
        scheme,
        &cfg,
        out,
        &device,
        &|d, n| {
            bar.set_length(n as u64);
            bar.set_position(d as u64)
        },
        &mut |k, n, spec| {
            bar.finish_and_clear();
            println!("fold {}/{n}: {spec:?}", k + 1);
        },
        &mut |e| {
            println!(
                "  {}  train loss {:.4} acc {:.4}  val acc {:.4}  {:.1}s",
                e.label(),
                e.train_loss,
                e.train_acc,
                e.val_acc,
                e.seconds
            )
        },
    )?;
    println!("\n| test speaker | val speaker | test accuracy | best epoch |");
    println!("|---|---|---|---|");
    for f in &r.folds {
        println!(
            "| {} | {} | {:.1}% | {} of {} |",
            f.test_speaker,
            f.val_speaker,
            100.0 * f.test_accuracy,
            f.best_epoch,
            f.epochs
        );
    }
    println!(
        "mean {:.2}%, std {:.2} points over {} folds; {:.0} s; {} and confusion_matrix.png in {}",
        100.0 * r.mean,
        100.0 * r.std,
        r.folds.len(),
        r.seconds,
        "crossval.json",
        out.display()
    );
    Ok(())
}

/// Whether `run` must download before training: `data` is missing or empty, or holds an
/// unfinished download. A folder with anything else in it is the user's: never written into.
pub fn needs_download(data: &Path) -> Result<bool> {
    if support::download::completed(data).is_some() {
        return Ok(false);
    }
    if support::download::unfinished(data) || !data.exists() {
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

/// `audio-mnist download`, with a byte progress bar.
pub fn download_command(dest: &Path, url: &str) -> Result<()> {
    use support::download::{download, Outcome};
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "{spinner} download {bar:40} {bytes}/{total_bytes}  {bytes_per_sec}  eta {eta}",
        )
        .context("progress bar template")?,
    );
    let outcome = download(url, dest, &|done, total| {
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
    println!(
        "{} speaker folders, {} recordings, metadata {}",
        report.speaker_folders,
        report.wavs,
        if report.metadata { "present" } else { "missing" }
    );
    for d in &report.differences {
        eprintln!("warning: {d}");
    }
    Ok(())
}

pub fn feature_bar() -> Result<ProgressBar> {
    Ok(ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} features {bar:40} {pos}/{len} files  {per_sec}  eta {eta}")
            .context("progress bar template")?,
    ))
}

pub fn train_command(opts: &TrainOptions) -> Result<()> {
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
            let line = r.line();
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

pub fn scan_verbose(data: &Path) -> Result<Dataset> {
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

pub fn features(data: &Path, out: &Path, cache_dir: &Path) -> Result<()> {
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
