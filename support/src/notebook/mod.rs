//! What the evcxr notebook (`notebooks/audio_mnist.ipynb`) shows: configuration from the
//! environment, tables, plotly figures, audio players and the interactive confusion matrix.
//!
//! evcxr shows a value by calling its `evcxr_display` method, and merges everything one cell
//! displays into one output keyed by MIME type, so each cell returns one [`Html`] at most.
//! Figures are `text/html` with plotly.js (embedded once per kernel, from the `plotly` crate),
//! because that renders in JupyterLab, VS Code and the nbconvert HTML export alike, whereas
//! plotly's own `application/vnd.plotly.v1+json` needs a renderer extension.

pub mod explorer;
pub mod figures;
mod relevance;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub use explorer::{ConfusionExplorer, Entry};
pub use figures::{
    adaptation_figure, audio_player, epoch_line, figure, look, robustness_figure, sequence_figure,
    training_curves,
};

// evcxr must name the type of every variable a cell keeps, and the notebook depends on
// `support` only: these re-exports give Candle's and polars' types a path it can write.
pub use candle_core::Device;
pub use polars::prelude::DataFrame;

use crate::data::cache::{CacheStatus, FeatureSet};
use crate::data::dataset::Dataset;
use crate::data::prepare::load_features;
use crate::data::table::Table;
use crate::data::union::scan_all;
use crate::dsp::features::FeatureConfig;
use crate::train::{Recipe, RecipeName};

/// An error as the notebook prints it: the whole chain on one line ("reading X: not a WAV").
/// (evcxr prints an error returned by `?` with `Display`, which for `anyhow` is the outermost
/// message only.)
pub struct Error(anyhow::Error);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {:#}", self.0)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<E: Into<anyhow::Error>> From<E> for Error {
    fn from(e: E) -> Self {
        Self(e.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// HTML that evcxr renders as a cell's rich output.
#[derive(Clone, Debug)]
pub struct Html(pub String);

impl Html {
    /// Called by evcxr for the value a cell ends with.
    pub fn evcxr_display(&self) {
        println!("EVCXR_BEGIN_CONTENT text/html\n{}\nEVCXR_END_CONTENT", self.0);
    }

    /// Several outputs in one (a cell can show only one).
    pub fn join(parts: impl IntoIterator<Item = Html>) -> Html {
        Html(parts.into_iter().map(|h| h.0).collect::<Vec<_>>().join("\n"))
    }
}

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

/// Where the notebook reads and writes, from the environment with defaults relative to
/// `notebooks/` (where Jupyter starts the kernel).
#[derive(Clone, Debug)]
pub struct Config {
    /// `AUDIO_MNIST_DATA`, default `../data` (where `audio-mnist download` puts AudioMNIST); a
    /// list separated like PATH (`a:b` on Unix) trains on several folders at once.
    pub data: Vec<PathBuf>,
    /// `AUDIO_MNIST_CACHE`, default `../cache`: feature files, reused between runs.
    pub cache: PathBuf,
    /// `AUDIO_MNIST_OUT`, default `../out/notebook`: model, logs, figures, reports.
    pub out: PathBuf,
    /// `AUDIO_MNIST_EPOCHS`, default 50 (early stopping usually ends sooner).
    pub epochs: usize,
    /// `AUDIO_MNIST_SEED`, default 42 (the seed notebook's).
    pub seed: u64,
    /// `AUDIO_MNIST_RECIPE`, default `best` (or `seed`, the Kaggle notebook's), with the
    /// seed and epochs above.
    pub recipe: Recipe,
}

/// Stop "Run All" at a data problem with one clear message.
///
/// evcxr does not mark a cell whose `?` returned an error as failed (nor one that panicked):
/// Jupyter would run the next cells, which then fail to compile for want of the variables this
/// one did not define, burying the message under compiler errors. Ending the kernel's worker
/// process is what evcxr reports as a failed cell; it restarts the worker (variables are lost,
/// which a data problem needs anyway: the settings are read when the kernel starts).
fn stop(error: Error) -> ! {
    use std::io::Write;
    eprintln!("{error}");
    eprintln!("(stopped here; fix this, then restart the kernel and run the notebook again)");
    let _ = std::io::stderr().flush();
    let _ = std::io::stdout().flush();
    std::process::exit(1)
}

impl Config {
    /// The configuration from the environment; a missing data folder stops the run here
    /// with a message saying how to get the data (see [`stop`]).
    pub fn from_env() -> Result<Self> {
        match Self::read() {
            Ok(cfg) => Ok(cfg),
            Err(e) => stop(e),
        }
    }

    /// As [`Config::from_env`], returning the error instead of stopping.
    pub fn read() -> Result<Self> {
        let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
        let number = |name: &str, default: &str| -> Result<u64> {
            let v = var(name, default);
            v.trim().parse().map_err(|_| anyhow::anyhow!("{name}={v:?} is not a whole number").into())
        };
        let name = var("AUDIO_MNIST_RECIPE", "best");
        let name = <RecipeName as clap::ValueEnum>::from_str(&name, true)
            .map_err(|_| anyhow::anyhow!("AUDIO_MNIST_RECIPE={name:?}: expected best or seed"))?;
        let (epochs, seed) =
            (number("AUDIO_MNIST_EPOCHS", "50")? as usize, number("AUDIO_MNIST_SEED", "42")?);
        let overrides = crate::train::Overrides { epochs: Some(epochs), ..Default::default() };
        let cfg = Self {
            data: std::env::split_paths(&var("AUDIO_MNIST_DATA", "../data"))
                .filter(|p| !p.as_os_str().is_empty())
                .collect(),
            cache: PathBuf::from(var("AUDIO_MNIST_CACHE", "../cache")),
            out: PathBuf::from(var("AUDIO_MNIST_OUT", "../out/notebook")),
            epochs,
            seed,
            recipe: Recipe::new(name, seed, overrides)?,
        };
        if cfg.data.is_empty() {
            return Err(anyhow::anyhow!("AUDIO_MNIST_DATA is empty: name one or more data folders").into());
        }
        if let Some(missing) = cfg.data.iter().find(|d| !d.is_dir()) {
            return Err(anyhow::anyhow!(
                "data folder {} does not exist. Get AudioMNIST with `audio-mnist download --dest {}`, \
                 or point AUDIO_MNIST_DATA at a folder of recordings (AudioMNIST or FSDD layout) \
                 before starting Jupyter",
                missing.display(),
                missing.display()
            )
            .into());
        }
        for dir in [&cfg.cache, &cfg.out] {
            std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
        }
        Ok(cfg)
    }
}

/// Print the versions the run depends on (the seed logs its library versions) and pick the
/// device: CUDA when this build has it and a GPU is present, else the CPU.
pub fn setup() -> Device {
    let versions = crate::manifest::crate_versions();
    let get = |c: &str| versions.get(c).map_or("?", |v| v.as_str()).to_string();
    println!(
        "support {}, candle {}, polars {}, plotly {}, {}",
        crate::VERSION,
        get("candle-core"),
        get("polars"),
        get("plotly"),
        crate::manifest::rustc_version()
    );
    let device = crate::model::pick_device();
    println!("device: {}", crate::model::describe_device(&device));
    device
}

// ---------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------

/// Find the recordings under `cfg.data` and write `metadata.csv` to the cache folder. A
/// folder without recordings stops the run here with the reason (see [`stop`]).
pub fn scan_data(cfg: &Config) -> Result<(Dataset, DataFrame)> {
    let dataset = match scan_all(&cfg.data) {
        Ok(d) => d,
        Err(e) => stop(e.into()),
    };
    let table = dataset.metadata_table().to_frame()?;
    println!(
        "{} recordings of {} speakers: {}",
        dataset.recordings.len(),
        dataset.speaker_ids().len(),
        dataset.describe()
    );
    if !dataset.skipped.is_empty() {
        println!("{} files skipped, e.g. {}", dataset.skipped.len(), dataset.skipped[0]);
    }
    for w in &dataset.warnings {
        println!("warning: {w}");
    }
    Ok((dataset, table))
}

/// Which corpora and voices the model learns from: per dataset folder and part of the split
/// (train, validation, test), the speakers and recordings, and whether the folder only trains
/// (a recipe's `--train-data`, e.g. `audio-mnist synth`'s voices).
pub fn learned_from(prep: &crate::data::prepare::Prepared) -> Result<DataFrame> {
    let d = &prep.dataset;
    let mut rows =
        std::collections::BTreeMap::<(usize, usize), (std::collections::BTreeSet<&str>, i64)>::new();
    let parts = ["train", "validation", "test"];
    for (part, speakers) in [&prep.split.train, &prep.split.val, &prep.split.test].into_iter().enumerate() {
        for r in d.recordings.iter().filter(|r| speakers.binary_search(&r.speaker).is_ok()) {
            let row = rows.entry((r.source, part)).or_default();
            row.0.insert(&r.speaker);
            row.1 += 1;
        }
    }
    Ok(Table::new()
        .text("corpus", rows.keys().map(|k| d.sources[k.0].name.clone()))
        .text("part", rows.keys().map(|k| parts[k.1].to_string()))
        .int("speakers", rows.values().map(|v| v.0.len() as i64))
        .int("recordings", rows.values().map(|v| v.1))
        .bool("training only", rows.keys().map(|k| d.sources[k.0].train_only))
        .to_frame()?)
}

/// Recordings per digit and per speaker (the seed's sanity check that the classes balance).
pub fn counts(dataset: &Dataset) -> Result<(DataFrame, DataFrame)> {
    let mut per_digit = [0i64; 10];
    let mut per_speaker = std::collections::BTreeMap::<String, i64>::new();
    for r in &dataset.recordings {
        per_digit[r.digit as usize % 10] += 1;
        *per_speaker.entry(r.speaker.clone()).or_default() += 1;
    }
    let digits = Table::new().int("digit", 0..10i64).int("recordings", per_digit).to_frame()?;
    let meta = |s: &String| dataset.speakers.get(s);
    let names = || per_speaker.keys();
    let speakers = Table::new()
        .text("speaker", names().cloned())
        .int("recordings", per_speaker.values().copied())
        .text("gender", names().map(|s| meta(s).and_then(|m| m.gender.clone())))
        .int("age", names().map(|s| meta(s).and_then(|m| m.age)))
        .text("accent", names().map(|s| meta(s).and_then(|m| m.accent.clone())))
        .to_frame()?;
    Ok((digits, speakers))
}

/// Save `value` as pretty JSON (the split, for instance) and say where.
pub fn save_json<T: serde::Serialize>(value: &T, path: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    println!("saved {}", path.display());
    Ok(())
}

/// A progress callback for feature extraction that prints a line every 10 %.
pub fn progress_lines(label: &'static str) -> impl Fn(usize, usize) + Sync {
    let last = AtomicU64::new(u64::MAX);
    move |done, total| {
        let tenth = (done * 10 / total.max(1)) as u64;
        if last.swap(tenth, Ordering::Relaxed) != tenth {
            println!("{label}: {done}/{total} files");
        }
    }
}

/// Features of every recording, from the cache when it holds them (then in well under a
/// second) or extracted in parallel and cached.
pub fn features(dataset: &Dataset, cfg: &Config, config: &FeatureConfig) -> Result<FeatureSet> {
    let started = std::time::Instant::now();
    let progress = progress_lines("features");
    let (set, status) = load_features(dataset, &cfg.cache, config, &progress)?;
    let how = match status {
        CacheStatus::Hit(p) => format!("loaded from the cache {}", p.display()),
        CacheStatus::Miss(p) => format!("extracted and cached in {}", p.display()),
    };
    println!(
        "{} x {} x {} features {how} in {:.2} s",
        set.len(),
        set.n_mels,
        set.n_frames,
        started.elapsed().as_secs_f64()
    );
    if !set.skipped.is_empty() {
        println!("{} files could not be read, e.g. {}", set.skipped.len(), set.skipped[0]);
    }
    Ok(set)
}

/// The network layer by layer, in forward order: output shape, tensors and trained values
/// (derived from the same description [`crate::model::Cnn`] is built from).
pub fn model_summary(arch: &crate::model::CnnConfig) -> Result<DataFrame> {
    let layers = arch.layers();
    let tensors = |l: &crate::model::LayerSpec| -> String {
        l.tensors.iter().map(|(n, s)| format!("{n} {s:?}")).collect::<Vec<_>>().join(", ")
    };
    println!("{} trainable parameters", arch.param_count());
    Ok(Table::new()
        .text("layer", layers.iter().map(|l| l.name.clone()))
        .text("computes", layers.iter().map(|l| l.op.clone()))
        .text("output", layers.iter().map(|l| format!("{:?}", l.output)))
        .text("tensors", layers.iter().map(tensors))
        .int("parameters", layers.iter().map(|l| l.params() as i64))
        .to_frame()?)
}
