//! `predict`: a digit per WAV file, as text or JSON lines; with `--explain`, a relevance map
//! per file.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use support::explain::{Explainer, Method, Relevance};
use support::infer::{collect_inputs, Answer, ModelChoice, Predictor};

/// Predict the digit spoken in WAV files (folders are searched for *.wav).
#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    /// The model (default: out/model.safetensors if it exists, else the bundled one).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// One JSON object per line instead of `path: digit (confidence)`.
    #[arg(long)]
    pub json: bool,
    /// Also show the K most likely digits.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=11))]
    pub top: u8,
    /// Also answer "not a digit" when the best digit's probability is under this (0-1);
    /// by default the model decides (its "not a digit" class, when it has one).
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Write one PNG per file into DIR: the log-Mel image and the relevance of each cell for
    /// the predicted class (with --json, also relevance per mel band and per frame).
    #[arg(long, value_name = "DIR")]
    pub explain: Option<PathBuf>,
    /// Integrated Gradients' steps (0: gradient x input, one backward pass).
    #[arg(long, default_value_t = 32)]
    pub explain_steps: usize,
    /// Explain this class instead of the predicted one (0-9; 10: "not a digit").
    #[arg(long, value_name = "CLASS", value_parser = clap::value_parser!(u8).range(0..=10))]
    pub explain_class: Option<u8>,
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// Files per batch of predictions (and explanations), so output comes as it is ready.
const CHUNK: usize = 64;

/// Exit status: 0 all predicted, 1 some files failed (the others are still printed).
pub fn predict_command(args: &PredictArgs) -> Result<ExitCode> {
    let choice = ModelChoice::resolve(args.model.as_deref());
    eprintln!("{}", choice.describe());
    let mut predictor = choice.load()?;
    if let Some(t) = args.threshold {
        anyhow::ensure!((0.0..=1.0).contains(&t), "--threshold {t}: give a probability from 0 to 1");
        predictor = predictor.with_threshold(t);
    }
    let mut explain = match &args.explain {
        Some(dir) => Some(Explain::new(&predictor, dir, args.explain_steps, args.explain_class)?),
        None => None,
    };
    let (files, problems) = collect_inputs(&args.paths)?;
    let mut failed = 0;
    let mut error = |name: &str, why: &str| {
        failed += 1;
        if args.json {
            println!("{}", serde_json::json!({"file": name, "error": why}));
        } else {
            eprintln!("{name}: error: {why}");
        }
    };
    for (path, why) in &problems {
        error(&path.display().to_string(), why);
    }
    for chunk in files.chunks(CHUNK) {
        let answers = predictor.predict_files_with_features(chunk);
        let mut maps = match explain.as_mut() {
            Some(e) => e.explain(&answers)?.into_iter(),
            None => Vec::new().into_iter(),
        };
        for (file, result) in answers {
            let name = file.display().to_string();
            let map = if explain.is_some() { maps.next().flatten() } else { None };
            match result {
                Ok((p, _)) if args.json => {
                    let mut line = serde_json::to_value(&p)?;
                    line["file"] = name.into();
                    if let (Some((r, png)), Some(e)) = (&map, &explain) {
                        line["relevance"] = relevance_json(r, png, &e.explainer);
                    }
                    println!("{line}")
                }
                Ok((p, _)) => {
                    let top = args.top as usize;
                    let mut shown = vec![format!("{} ({:.2})", p.label, p.confidence)];
                    let others = p.top(top).into_iter().filter(|(label, _)| *label != p.label);
                    shown.extend(others.take(top - 1).map(|(label, c)| format!("{label} ({c:.2})")));
                    let reason = p.reason.map_or(String::new(), |r| format!("  [{r}]"));
                    let png =
                        map.map_or(String::new(), |(_, png)| format!("  [relevance: {}]", png.display()));
                    println!("{name}: {}{reason}{png}", shown.join(", "));
                }
                Err(e) => error(&name, &e.kind.to_string()),
            }
        }
    }
    Ok(if failed > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// The relevance maps of `--explain`: computed for each file's most likely class (or
/// `--explain-class`), written as PNGs under unique names.
struct Explain {
    explainer: Explainer,
    dir: PathBuf,
    used: HashSet<String>,
    /// `--explain-class`: the class to explain instead of each file's most likely one.
    class: Option<usize>,
}

impl Explain {
    fn new(predictor: &Predictor, dir: &Path, steps: usize, class: Option<u8>) -> Result<Self> {
        let method =
            if steps == 0 { Method::GradientTimesInput } else { Method::IntegratedGradients { steps } };
        let classes = predictor.meta().architecture.classes;
        let class = class.map(usize::from);
        if let Some(c) = class.filter(|&c| c >= classes) {
            anyhow::bail!("--explain-class {c}: the model has classes 0 to {}", classes - 1)
        }
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("--explain {}: {e}", dir.display()))?;
        Ok(Self {
            explainer: predictor.explainer(method)?,
            dir: dir.to_path_buf(),
            used: HashSet::new(),
            class,
        })
    }

    /// One entry per answer: its map and PNG, or `None` (an error, or no sound).
    fn explain(
        &mut self,
        answers: &[(PathBuf, Result<Answer, support::AudioError>)],
    ) -> Result<Vec<Option<(Relevance, PathBuf)>>> {
        let mut images = Vec::new();
        let mut classes = Vec::new();
        for (_, r) in answers {
            if let Ok((p, Some(image))) = r {
                images.extend_from_slice(image);
                classes.push(self.class.unwrap_or_else(|| support::eval::argmax(&p.probabilities)));
            }
        }
        let mut maps = self.explainer.explain(&images, &classes)?.into_iter();
        let mut out = Vec::with_capacity(answers.len());
        for (file, r) in answers {
            let Ok((p, Some(image))) = r else {
                out.push(None);
                continue;
            };
            let map = maps.next().ok_or_else(|| anyhow::anyhow!("a relevance map is missing"))?;
            let png = self.png_path(file);
            let name = file.file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned());
            let class = support::eval::class_names(p.probabilities.len())[map.class].clone();
            let title = format!(
                "{name}: heard {} ({:.2}); relevance for \"{class}\", {}, baseline silence ({} dB)",
                p.label,
                p.confidence,
                self.explainer.method().name(),
                self.explainer.baseline_db()
            );
            draw(&png, image, &map, &title)?;
            out.push(Some((map, png)));
        }
        Ok(out)
    }

    /// `DIR/<stem>.png`, with `-2`, `-3`... when two inputs share a stem.
    fn png_path(&mut self, file: &Path) -> PathBuf {
        let stem = file.file_stem().map_or("recording".to_string(), |s| s.to_string_lossy().into_owned());
        let mut name = format!("{stem}.png");
        let mut k = 1;
        while !self.used.insert(name.clone()) {
            k += 1;
            name = format!("{stem}-{k}.png");
        }
        self.dir.join(name)
    }
}

fn relevance_json(r: &Relevance, png: &Path, explainer: &Explainer) -> serde_json::Value {
    serde_json::json!({
        "class": r.class,
        "method": explainer.method().name(),
        "baseline_db": explainer.baseline_db(),
        "score": r.score,
        "baseline_score": r.baseline_score,
        "total": r.total(),
        "per_band": r.per_band(),
        "per_frame": r.per_frame(),
        "png": png.display().to_string(),
    })
}

#[cfg(feature = "train")]
fn draw(png: &Path, image: &[f32], map: &Relevance, title: &str) -> Result<()> {
    support::explain::picture::save_png(png, image, map, title)
}

#[cfg(not(feature = "train"))]
fn draw(png: &Path, _: &[f32], _: &Relevance, _: &str) -> Result<()> {
    anyhow::bail!(
        "cannot draw {}: this build has no plotting (build with the default features)",
        png.display()
    )
}

/// `shrink`'s model file and where its half-precision copy goes.
#[derive(clap::Args, Debug)]
pub struct ShrinkArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
}

/// `audio-mnist shrink`: the model in half precision, and the sizes before and after.
pub fn shrink_command(model: &std::path::Path, out: &std::path::Path) -> Result<()> {
    support::model::file::save_half(model, out)?;
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len() as f64 / 1e6).unwrap_or(0.0);
    println!("wrote {} ({:.1} MB; was {:.1} MB)", out.display(), size(out), size(model));
    Ok(())
}
