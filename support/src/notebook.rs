//! What the evcxr notebook (`notebooks/audio_mnist.ipynb`) shows: configuration from the
//! environment, tables, plotly figures, audio players and the interactive confusion matrix.
//!
//! evcxr shows a value by calling its `evcxr_display` method, and merges everything one cell
//! displays into one output keyed by MIME type, so each cell returns one [`Html`] at most.
//! Figures are `text/html` with plotly.js (embedded once per kernel, from the `plotly` crate),
//! because that renders in JupyterLab, VS Code and the nbconvert HTML export alike, whereas
//! plotly's own `application/vnd.plotly.v1+json` needs a renderer extension.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use plotly::common::{Mode, Title};
use plotly::layout::{Axis, GridPattern, Layout, LayoutGrid};
use plotly::{HeatMap, Plot, Scatter};
use polars::prelude::*;

// evcxr must name the type of every variable a cell keeps, and the notebook depends on
// `support` only: these re-exports give Candle's and polars' types a path it can write.
pub use candle_core::Device;
pub use polars::prelude::DataFrame;

use crate::cache::{load_or_extract, CacheStatus, FeatureSet};
use crate::dataset::{scan, write_csv, Dataset};
use crate::features::{FeatureConfig, FeatureExtractor};
use crate::train::EpochLog;
use crate::workflow::{Prepared, Tested};

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
    /// `AUDIO_MNIST_DATA`, default `../data` (where `audio-mnist download` puts AudioMNIST).
    pub data: PathBuf,
    /// `AUDIO_MNIST_CACHE`, default `../cache`: feature files, reused between runs.
    pub cache: PathBuf,
    /// `AUDIO_MNIST_OUT`, default `../out/notebook`: model, logs, figures, reports.
    pub out: PathBuf,
    /// `AUDIO_MNIST_EPOCHS`, default 50 (early stopping usually ends sooner).
    pub epochs: usize,
    /// `AUDIO_MNIST_SEED`, default 42 (the seed notebook's).
    pub seed: u64,
    /// `AUDIO_MNIST_RECIPE`, default `best` (README "Results"; or `seed`, the Kaggle notebook's).
    pub recipe: String,
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
        let cfg = Self {
            data: PathBuf::from(var("AUDIO_MNIST_DATA", "../data")),
            cache: PathBuf::from(var("AUDIO_MNIST_CACHE", "../cache")),
            out: PathBuf::from(var("AUDIO_MNIST_OUT", "../out/notebook")),
            epochs: number("AUDIO_MNIST_EPOCHS", "50")? as usize,
            seed: number("AUDIO_MNIST_SEED", "42")?,
            recipe: var("AUDIO_MNIST_RECIPE", "best"),
        };
        crate::train::TrainConfig::recipe(&cfg.recipe)?;
        if !cfg.data.is_dir() {
            return Err(anyhow::anyhow!(
                "data folder {} does not exist. Get AudioMNIST with `audio-mnist download --dest {}`, \
                 or point AUDIO_MNIST_DATA at a folder of recordings (AudioMNIST or FSDD layout) \
                 before starting Jupyter",
                cfg.data.display(),
                cfg.data.display()
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
    let dataset = match scan(&cfg.data) {
        Ok(d) => d,
        Err(e) => stop(e.into()),
    };
    let mut table = dataset.metadata_frame()?;
    write_csv(&mut table, &cfg.cache.join("metadata.csv"))?;
    println!(
        "{} recordings of {} speakers ({:?} layout) under {}",
        dataset.recordings.len(),
        dataset.speaker_ids().len(),
        dataset.layout,
        cfg.data.display()
    );
    if !dataset.skipped.is_empty() {
        println!("{} files skipped, e.g. {}", dataset.skipped.len(), dataset.skipped[0]);
    }
    for w in &dataset.warnings {
        println!("warning: {w}");
    }
    Ok((dataset, table))
}

/// Recordings per digit and per speaker (the seed's sanity check that the classes balance).
pub fn counts(dataset: &Dataset) -> Result<(DataFrame, DataFrame)> {
    let mut per_digit = [0i64; 10];
    let mut per_speaker = std::collections::BTreeMap::<String, i64>::new();
    for r in &dataset.recordings {
        per_digit[r.digit as usize % 10] += 1;
        *per_speaker.entry(r.speaker.clone()).or_default() += 1;
    }
    let digits = DataFrame::new_infer_height(vec![
        Column::new("digit".into(), (0..10i64).collect::<Vec<_>>()),
        Column::new("recordings".into(), per_digit.to_vec()),
    ])?;
    let meta = |s: &String| dataset.speakers.get(s);
    let speakers = DataFrame::new_infer_height(vec![
        Column::new("speaker".into(), per_speaker.keys().cloned().collect::<Vec<_>>()),
        Column::new("recordings".into(), per_speaker.values().cloned().collect::<Vec<_>>()),
        Column::new(
            "gender".into(),
            per_speaker.keys().map(|s| meta(s).and_then(|m| m.gender.clone())).collect::<Vec<_>>(),
        ),
        Column::new(
            "age".into(),
            per_speaker.keys().map(|s| meta(s).and_then(|m| m.age)).collect::<Vec<_>>(),
        ),
        Column::new(
            "accent".into(),
            per_speaker.keys().map(|s| meta(s).and_then(|m| m.accent.clone())).collect::<Vec<_>>(),
        ),
    ])?;
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
    let fx = FeatureExtractor::new(config.clone()).map_err(anyhow::Error::msg)?;
    let started = std::time::Instant::now();
    let progress = progress_lines("features");
    let (set, status) = load_or_extract(dataset, &fx, &cfg.cache, &progress)?;
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

// ---------------------------------------------------------------------------------------
// Figures
// ---------------------------------------------------------------------------------------

static FIGURE_ID: AtomicU64 = AtomicU64::new(0);
/// Set in the kernel's environment once plotly.js is on the page. Not a static: evcxr links
/// `support` into every cell's library afresh, so statics start over in each cell, while the
/// process (and its environment) lives as long as the kernel.
const PLOTLY_LOADED: &str = "AUDIO_MNIST_PLOTLY_JS_SENT";

/// plotly.js, inline, the first time a figure is shown in this kernel; later figures reuse
/// it (and load it from the CDN if the page lost it, e.g. after clearing outputs).
fn plotly_js() -> String {
    if std::env::var_os(PLOTLY_LOADED).is_some() {
        return String::new();
    }
    std::env::set_var(PLOTLY_LOADED, "1");
    // The crate's offline bundle is plotly.js followed by MathJax; figures need only the first.
    let sources = Plot::offline_js_sources();
    let end = sources.find("</script>").map_or(sources.len(), |i| i + "</script>".len());
    sources[..end].to_string()
}

fn unique_id(prefix: &str) -> String {
    // Unique across kernel restarts too: an old output with the same id may still be on the page.
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!(
        "{prefix}-{:x}-{}",
        nanos as u64 ^ std::process::id() as u64,
        FIGURE_ID.fetch_add(1, Ordering::Relaxed)
    )
}

/// JSON made safe to sit inside a `<script>` element.
fn script_json(json: &str) -> String {
    json.replace("</", "<\\/")
}

/// A plotly figure (JSON of `{data, layout, config}`) as HTML; `then` is JavaScript run once
/// the figure is drawn, with `gd` bound to its element.
fn figure_html(figure_json: &str, height_px: u32, then: &str) -> String {
    let id = unique_id("am-fig");
    format!(
        r#"{lib}<div id="{id}" class="am-figure" style="width:100%;height:{height_px}px"></div>
<script type="text/javascript">
(function() {{
  var fig = {json};
  function draw() {{
    Plotly.newPlot("{id}", fig).then(function(gd) {{ {then} }});
  }}
  if (window.Plotly) {{ draw(); }} else {{
    var s = document.createElement("script");
    s.src = "https://cdn.plot.ly/plotly-3.0.1.min.js";
    s.onload = draw;
    document.head.appendChild(s);
  }}
}})();
</script>"#,
        lib = plotly_js(),
        json = script_json(figure_json),
    )
}

/// Show a plotly `Plot` (any figure a user builds) in the notebook.
pub fn figure(plot: &Plot) -> Html {
    Html(figure_html(&plot.to_json(), 450, ""))
}

/// A WAV player for `samples` (mono, `rate` Hz), embedded in the page.
pub fn audio_player(samples: &[f32], rate: u32) -> Result<Html> {
    Ok(Html(format!(r#"<audio controls preload="none" src="{}"></audio>"#, wav_data_uri(samples, rate)?)))
}

fn wav_data_uri(samples: &[f32], rate: u32) -> Result<String> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut bytes = std::io::Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut bytes, spec)?;
    for &s in samples {
        w.write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16)?;
    }
    w.finalize()?;
    Ok(format!(
        "data:audio/wav;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes.into_inner())
    ))
}

/// A log-Mel image (`n_mels x n_frames`, dB) as a small PNG data URI: one pixel row per mel
/// band (low frequencies at the bottom), each frame `frame_px` pixels wide, magma-like colours.
fn spectrogram_png(log_mel: &[f32], n_mels: usize, n_frames: usize, frame_px: usize) -> Result<String> {
    let (lo, hi) = log_mel.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let span = (hi - lo).max(1e-6);
    let (w, h) = (n_frames * frame_px, n_mels);
    let mut rgb = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        let band = n_mels - 1 - y;
        for x in 0..w {
            let t = (log_mel[band * n_frames + x / frame_px] - lo) / span;
            rgb.extend_from_slice(&colormap(t));
        }
    }
    let mut png_bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png_bytes, w as u32, h as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header()?;
        writer.write_image_data(&rgb)?;
    }
    Ok(format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(png_bytes)))
}

/// Black -> purple -> orange -> light yellow (after matplotlib's magma), t in [0, 1].
fn colormap(t: f32) -> [u8; 3] {
    const STOPS: [[f32; 3]; 5] = [
        [0.0, 0.0, 4.0],
        [81.0, 18.0, 124.0],
        [183.0, 55.0, 121.0],
        [252.0, 137.0, 97.0],
        [252.0, 253.0, 191.0],
    ];
    let x = t.clamp(0.0, 1.0) * (STOPS.len() - 1) as f32;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f32;
    let mix = |c: usize| (STOPS[i][c] + f * (STOPS[i + 1][c] - STOPS[i][c])).round() as u8;
    [mix(0), mix(1), mix(2)]
}

/// A look at the data: for one recording of each of the first `n` digits, the waveform at the
/// analysis rate (the part `trim` keeps in colour) and its log-Mel spectrogram, plus a player
/// for the first clip as the network hears it (trimmed, normalised, 1 s).
pub fn look(dataset: &Dataset, config: &FeatureConfig, n: usize) -> Result<Html> {
    let fx = FeatureExtractor::new(config.clone()).map_err(anyhow::Error::msg)?;
    let mut picked = Vec::new();
    for digit in 0..10u8 {
        if let Some(r) = dataset.recordings.iter().find(|r| r.digit == digit) {
            picked.push(r);
        }
        if picked.len() == n {
            break;
        }
    }
    let mut parts = Vec::new();
    let mut player = None;
    let rate = config.sample_rate as f64;
    for r in picked {
        let path = dataset.absolute(r);
        let audio = crate::audio::load_wav(&path, 60.0)?;
        let stages =
            fx.stages(&audio.samples, audio.sample_rate).map_err(|k| crate::AudioError::new(&path, k))?;
        let t: Vec<f64> = (0..stages.resampled.len()).map(|i| i as f64 / rate).collect();
        let (s, e) = stages.trim;
        let mut plot = Plot::new();
        plot.add_trace(
            Scatter::new(t.clone(), stages.resampled.clone())
                .mode(Mode::Lines)
                .name("signal")
                .x_axis("x")
                .y_axis("y"),
        );
        plot.add_trace(
            Scatter::new(t[s..e].to_vec(), stages.resampled[s..e].to_vec())
                .mode(Mode::Lines)
                .name("kept by trim")
                .x_axis("x")
                .y_axis("y"),
        );
        let (n_mels, n_frames) = (config.n_mels, config.n_frames());
        let z: Vec<Vec<f32>> =
            (0..n_mels).map(|m| stages.log_mel[m * n_frames..(m + 1) * n_frames].to_vec()).collect();
        plot.add_trace(
            HeatMap::new((0..n_frames).collect(), (0..n_mels).collect(), z).x_axis("x2").y_axis("y2"),
        );
        plot.set_layout(
            Layout::new()
                .title(Title::with_text(format!(
                    "{} (digit {}, speaker {})",
                    r.path.display(),
                    r.digit,
                    r.speaker
                )))
                .show_legend(false)
                .grid(LayoutGrid::new().rows(1).columns(2).pattern(GridPattern::Independent))
                .x_axis(Axis::new().title(Title::with_text("time (s)")))
                .y_axis(Axis::new().title(Title::with_text("amplitude")))
                .x_axis2(Axis::new().title(Title::with_text("frame")))
                .y_axis2(Axis::new().title(Title::with_text("mel band"))),
        );
        parts.push(Html(figure_html(&plot.to_json(), 330, "")));
        if player.is_none() {
            player = Some((r.path.display().to_string(), audio_player(&stages.clip, config.sample_rate)?));
        }
    }
    if let Some((name, audio)) = player {
        parts.push(Html(format!(
            "<p>{} as the network hears it (trimmed, normalised, 1 s):</p>",
            escape(&name)
        )));
        parts.push(audio);
    }
    Ok(Html::join(parts))
}

/// Loss and accuracy per epoch (the seed's training curves), train and validation.
pub fn training_curves(log: &[EpochLog]) -> Html {
    let epochs: Vec<usize> = log.iter().map(|r| r.epoch).collect();
    let mut plot = Plot::new();
    let series: [(&str, fn(&EpochLog) -> f64, &str, &str); 4] = [
        ("train loss", |r| r.train_loss, "x", "y"),
        ("validation loss", |r| r.val_loss, "x", "y"),
        ("train accuracy", |r| r.train_acc, "x2", "y2"),
        ("validation accuracy", |r| r.val_acc, "x2", "y2"),
    ];
    for (name, get, x, y) in series {
        plot.add_trace(
            Scatter::new(epochs.clone(), log.iter().map(get).collect())
                .mode(Mode::LinesMarkers)
                .name(name)
                .x_axis(x)
                .y_axis(y),
        );
    }
    plot.set_layout(
        Layout::new()
            .title(Title::with_text("training curves"))
            .grid(LayoutGrid::new().rows(1).columns(2).pattern(GridPattern::Independent))
            .x_axis(Axis::new().title(Title::with_text("epoch")))
            .y_axis(Axis::new().title(Title::with_text("loss")))
            .x_axis2(Axis::new().title(Title::with_text("epoch")))
            .y_axis2(Axis::new().title(Title::with_text("accuracy")).range(vec![0.0, 1.0])),
    );
    Html(figure_html(&plot.to_json(), 420, ""))
}

/// The epoch line printed during training.
pub fn epoch_line(r: &EpochLog) {
    println!("{}", r.line());
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

// ---------------------------------------------------------------------------------------
// Confusion-matrix explorer
// ---------------------------------------------------------------------------------------

/// One test recording as the explorer lists it.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Path relative to the data folder.
    pub file: String,
    pub path: PathBuf,
    pub speaker: String,
    pub truth: usize,
    pub predicted: usize,
    pub confidence: f32,
    /// Row of the feature set (its log-Mel image).
    pub row: usize,
}

/// The test confusion matrix, cell by cell: which files landed where, with what confidence,
/// what they sound like and what the network saw.
pub struct ConfusionExplorer {
    pub names: Vec<String>,
    pub confusion: Vec<Vec<usize>>,
    pub entries: Vec<Entry>,
    config: FeatureConfig,
    images: Vec<f32>,
    n_mels: usize,
    n_frames: usize,
    /// Recordings per cell embedded with player and spectrogram in [`Self::show`]'s page
    /// (all files are listed; media for every file would make the page huge on AudioMNIST).
    pub media_per_cell: usize,
}

impl ConfusionExplorer {
    pub fn new(prep: &Prepared, tested: &Tested) -> Self {
        let set = &prep.set;
        let confidence = tested.confidence();
        let entries = tested
            .rows
            .iter()
            .enumerate()
            .map(|(k, &row)| Entry {
                file: set.files[row].clone(),
                path: prep.dataset.root.join(&set.files[row]),
                speaker: set.speakers[row].clone(),
                truth: tested.truth[k],
                predicted: tested.predicted[k],
                confidence: confidence[k],
                row,
            })
            .collect();
        Self {
            names: crate::workflow::digit_names(),
            confusion: tested.evaluation.confusion.clone(),
            entries,
            config: set.config.clone(),
            images: set.features.clone(),
            n_mels: set.n_mels,
            n_frames: set.n_frames,
            media_per_cell: 6,
        }
    }

    /// The files in cell (`truth`, `predicted`), least confident first.
    pub fn files(&self, truth: usize, predicted: usize) -> Vec<&Entry> {
        let mut v: Vec<&Entry> =
            self.entries.iter().filter(|e| e.truth == truth && e.predicted == predicted).collect();
        v.sort_by(|a, b| a.confidence.total_cmp(&b.confidence).then(a.file.cmp(&b.file)));
        v
    }

    /// The off-diagonal cell with the most files (ties: the first), or `None` when every
    /// test file is right.
    pub fn worst_cell(&self) -> Option<(usize, usize)> {
        let mut best = None;
        for (t, row) in self.confusion.iter().enumerate() {
            for (p, &c) in row.iter().enumerate() {
                if t != p && c > 0 && best.is_none_or(|(_, _, b)| c > b) {
                    best = Some((t, p, c));
                }
            }
        }
        best.map(|(t, p, _)| (t, p))
    }

    /// Player (the clip as the network hears it) and spectrogram of one entry.
    fn media(&self, e: &Entry) -> Result<(String, String)> {
        let fx = FeatureExtractor::new(self.config.clone()).map_err(anyhow::Error::msg)?;
        let audio = crate::audio::load_wav(&e.path, 60.0)?;
        let stages =
            fx.stages(&audio.samples, audio.sample_rate).map_err(|k| crate::AudioError::new(&e.path, k))?;
        let len = self.n_mels * self.n_frames;
        let image = &self.images[e.row * len..(e.row + 1) * len];
        Ok((
            wav_data_uri(&stages.clip, self.config.sample_rate)?,
            spectrogram_png(image, self.n_mels, self.n_frames, 6)?,
        ))
    }

    fn rows_html(&self, entries: &[&Entry], with_media: usize) -> String {
        let mut html = String::from(
            "<table class=\"am-cell\"><tr><th>file</th><th>speaker</th><th>confidence</th><th>listen</th><th>log-Mel</th></tr>",
        );
        for (i, e) in entries.iter().enumerate() {
            let (player, image) = match (i < with_media).then(|| self.media(e)) {
                Some(Ok((wav, png))) => (
                    format!(r#"<audio controls preload="none" src="{wav}"></audio>"#),
                    format!(r#"<img src="{png}" alt="log-Mel of {}">"#, escape(&e.file)),
                ),
                Some(Err(err)) => (escape(&err.to_string()), String::new()),
                None => (String::new(), String::new()),
            };
            html.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{:.3}</td><td>{player}</td><td>{image}</td></tr>",
                escape(&e.file),
                escape(&e.speaker),
                e.confidence
            ));
        }
        html.push_str("</table>");
        html
    }

    /// The files of one cell, each with speaker, confidence, a player and the spectrogram:
    /// `explorer.cell(3, 8)` shows the threes taken for eights.
    pub fn cell(&self, truth: usize, predicted: usize) -> Html {
        let files = self.files(truth, predicted);
        let head = format!(
            "<h4>true {} predicted {}: {} file(s)</h4>",
            self.names.get(truth).map_or("?", |s| s.as_str()),
            self.names.get(predicted).map_or("?", |s| s.as_str()),
            files.len()
        );
        Html(head + &self.rows_html(&files, 50))
    }

    /// The interactive confusion matrix: a plotly heatmap (counts, with the row-normalised
    /// share on hover); clicking a cell lists its files below it, the first
    /// `media_per_cell` of them with player and spectrogram.
    pub fn show(&self) -> Result<Html> {
        let n = self.names.len();
        let mut plot = Plot::new();
        plot.add_trace(HeatMap::new(self.names.clone(), self.names.clone(), self.confusion.clone()));
        let accuracy = {
            let total: usize = self.confusion.iter().flatten().sum();
            let right: usize = (0..n).map(|i| self.confusion[i][i]).sum();
            100.0 * right as f64 / total.max(1) as f64
        };
        plot.set_layout(
            Layout::new()
                .title(Title::with_text(format!(
                    "test confusion matrix, accuracy {accuracy:.2}% (click a cell)"
                )))
                .x_axis(
                    Axis::new()
                        .title(Title::with_text("predicted digit"))
                        .type_(plotly::layout::AxisType::Category),
                )
                .y_axis(
                    Axis::new()
                        .title(Title::with_text("true digit"))
                        .type_(plotly::layout::AxisType::Category),
                ),
        );
        // Colour by the row-normalised share (so small classes read like big ones), counts as
        // cell text, both on hover. The plotly crate has no 2-D `text` nor `texttemplate`, so
        // they are added to its JSON.
        let share: Vec<Vec<f64>> = self
            .confusion
            .iter()
            .map(|row| {
                let total = row.iter().sum::<usize>().max(1) as f64;
                row.iter().map(|&c| (1000.0 * c as f64 / total).round() / 10.0).collect()
            })
            .collect();
        let mut fig: serde_json::Value = serde_json::from_str(&plot.to_json())?;
        fig["layout"]["yaxis"]["autorange"] = "reversed".into(); // true 0 at the top
        let trace = &mut fig["data"][0];
        trace["z"] = serde_json::json!(share);
        trace["zmin"] = 0.into();
        trace["zmax"] = 100.into();
        // White to dark blue (matplotlib's "Blues"; plotly's own runs the other way).
        trace["colorscale"] =
            serde_json::json!([[0.0, "rgb(247,251,255)"], [0.5, "rgb(107,174,214)"], [1.0, "rgb(8,48,107)"]]);
        trace["colorbar"] = serde_json::json!({"title": {"text": "% of true digit"}});
        trace["text"] = serde_json::json!(self.confusion);
        trace["texttemplate"] = "%{text}".into();
        trace["hovertemplate"] =
            "true %{y}, predicted %{x}<br>%{text} file(s), %{z:.1f}% of true %{y}<extra></extra>".into();

        let details_id = unique_id("am-cells");
        let mut cells = serde_json::Map::new();
        for t in 0..n {
            for p in 0..n {
                let files = self.files(t, p);
                if files.is_empty() {
                    continue;
                }
                let head = format!(
                    "<h4>true {} predicted {}: {} file(s){}</h4>",
                    self.names[t],
                    self.names[p],
                    files.len(),
                    if files.len() > self.media_per_cell {
                        format!(
                            " (players for the {} least confident; <code>explorer.cell({t}, {p})</code> for more)",
                            self.media_per_cell
                        )
                    } else {
                        String::new()
                    }
                );
                cells
                    .insert(format!("{t},{p}"), (head + &self.rows_html(&files, self.media_per_cell)).into());
            }
        }
        let cells_json = script_json(&serde_json::Value::Object(cells).to_string());
        let then = format!(
            r#"var cells = {cells_json}; var out = document.getElementById("{details_id}");
    var names = {names};
    gd.on("plotly_click", function(ev) {{
      var pt = ev.points[0];
      var key = names.indexOf(String(pt.y)) + "," + names.indexOf(String(pt.x));
      out.innerHTML = cells[key] || "<p>no files in this cell</p>";
    }});"#,
            names = serde_json::to_string(&self.names)?
        );
        let figure = figure_html(&fig.to_string(), 560, &then);
        let style =
            "<style>.am-cell td,.am-cell th{padding:2px 8px;text-align:left;vertical-align:middle}</style>";
        Ok(Html(format!(
            "{style}{figure}<div id=\"{details_id}\" class=\"am-details\"><p>Click a cell to list its recordings.</p></div>"
        )))
    }
}

/// The network layer by layer: every tensor, its shape and size (BatchNorm running
/// statistics are buffers, not trained parameters), in forward order.
pub fn model_summary(arch: &crate::model::CnnConfig) -> Result<DataFrame> {
    let shapes = arch.tensor_shapes();
    let order = ["conv1", "bn1", "conv2", "bn2", "fc1", "fc2"];
    let mut names: Vec<&String> = shapes.keys().collect();
    names.sort_by_key(|n| (order.iter().position(|o| n.starts_with(o)).unwrap_or(order.len()), n.as_str()));
    let numel = |n: &String| shapes[n].iter().product::<usize>() as i64;
    println!("{} trainable parameters", arch.param_count());
    Ok(DataFrame::new_infer_height(vec![
        Column::new("tensor".into(), names.iter().map(|n| n.to_string()).collect::<Vec<_>>()),
        Column::new("shape".into(), names.iter().map(|n| format!("{:?}", shapes[*n])).collect::<Vec<_>>()),
        Column::new("values".into(), names.iter().map(|n| numel(n)).collect::<Vec<_>>()),
        Column::new("trained".into(), names.iter().map(|n| !n.contains("running_")).collect::<Vec<_>>()),
    ])?)
}

/// Per-class table of the classification report as a DataFrame (for sorting and filtering).
pub fn report_frame(tested: &Tested) -> Result<DataFrame> {
    let e = &tested.evaluation;
    Ok(DataFrame::new_infer_height(vec![
        Column::new("digit".into(), (0..e.per_class.len() as i64).collect::<Vec<_>>()),
        Column::new("precision".into(), e.per_class.iter().map(|c| c.precision).collect::<Vec<_>>()),
        Column::new("recall".into(), e.per_class.iter().map(|c| c.recall).collect::<Vec<_>>()),
        Column::new("f1".into(), e.per_class.iter().map(|c| c.f1).collect::<Vec<_>>()),
        Column::new("support".into(), e.per_class.iter().map(|c| c.support as i64).collect::<Vec<_>>()),
    ])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colormap_ends() {
        assert_eq!(colormap(0.0), [0, 0, 4]);
        assert_eq!(colormap(1.0), [252, 253, 191]);
        assert_eq!(colormap(2.0), [252, 253, 191]);
    }

    #[test]
    fn script_json_cannot_close_the_script() {
        assert!(!script_json(r#"{"file":"</script><b>"}"#).contains("</script>"));
    }
}
