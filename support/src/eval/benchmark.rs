//! The scoreboard: a recipe measured the way users meet it, on many speakers at once. One
//! suite, one command (`audio-mnist benchmark`):
//!
//! - FSDD leave-one-speaker-out (6 English speakers, one microphone);
//! - Gujarati and Arabic `kfold:5` (20 and 30 speakers of other languages);
//! - cross-corpus: trained on FSDD (plus the recipe's `train_data`), tested on the 118
//!   strangers of speech-commands-digits, who never touch training or any choice;
//! - robustness of the FSDD folds' models at 10 dB babble and RT60 0.6 s against clean;
//! - the training cost per file of every line.
//!
//! `quick` is a cheaper estimate for iterating, labelled as such everywhere it appears: one
//! network, at most 12 epochs, the first 3 of FSDD's 6 folds and the first 2 of each `kfold:5`.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use candle_core::Device;
use serde::Serialize;

use super::crossval::{crossval, CrossVal, FoldEvent, Scheme};
use crate::data::extract::Progress;
use crate::data::split::SplitSpec;
use crate::data::union::scan_for_training;
use crate::data::write_json;
use crate::dsp::conditions::Condition;
use crate::train::{EpochLog, Recipe};
use crate::workflow::{run_plan, Plan, Stage, TrainOptions};

/// The corpora of the suite; an absent optional one is skipped with the reason recorded.
#[derive(Clone, Debug, Serialize)]
pub struct Corpora {
    pub fsdd: PathBuf,
    /// Many strangers' digits, never trained on (speech-commands-digits).
    pub strangers: PathBuf,
    pub gujarati: PathBuf,
    pub arabic: PathBuf,
}

impl Corpora {
    /// The layout of the project's shared data folder (`../shared/data`).
    pub fn in_folder(data: &Path) -> Self {
        Self {
            fsdd: data.join("fsdd/recordings"),
            strangers: data.join("speech-commands-digits/recordings"),
            gujarati: data.join("gujarati/recordings"),
            arabic: data.join("arabic"),
        }
    }
}

/// Folds a quick estimate runs: the first 3 of FSDD's 6 leave-one-speaker-out folds, the
/// first 2 of each `kfold:5`.
pub const QUICK_LOSO_FOLDS: usize = 3;
pub const QUICK_KFOLDS: usize = 2;

/// The FSDD speaker that validates (early stopping) the cross-corpus model.
pub const CROSS_CORPUS_VAL: &str = "theo";

/// One row of the scoreboard.
#[derive(Clone, Debug, Serialize)]
pub struct Line {
    /// `fsdd-loso`, `gujarati-kfold5`, `arabic-kfold5`, `cross-corpus`, `babble-10db`, `rt60-0.6s`.
    pub name: String,
    /// What the number is, in words.
    pub what: String,
    /// Accuracy (0-1), or for the robustness lines the change from clean in points (negative:
    /// worse).
    pub value: f64,
    /// The worst fold (cross-validation lines).
    pub worst: Option<f64>,
    /// Every fold's test accuracy, in fold order.
    pub folds: Vec<f64>,
    /// The target for this line, on `value`'s scale, and whether it is met.
    pub target: f64,
    pub met: bool,
    /// Wall time of the line, and training time per training recording (all networks, all
    /// epochs, features included) in milliseconds.
    pub seconds: f64,
    pub train_ms_per_file: Option<f64>,
}

/// `scoreboard.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Scoreboard {
    /// `true`: a quick estimate (one network, at most 12 epochs, 3 of 6 and 2 of 5 folds), not
    /// the score.
    pub quick: bool,
    pub recipe: Recipe,
    pub corpora: Corpora,
    pub lines: Vec<Line>,
    /// Lines not measured and why (a corpus that is not there).
    pub skipped: Vec<String>,
    pub machine: crate::manifest::Machine,
    pub date: String,
    pub commit: String,
    pub seconds: f64,
}

/// How a benchmark reports as it goes.
pub trait Report {
    /// A line of the suite starts.
    fn start(&mut self, name: &str, what: &str);
    /// A cross-validation fold starts or ends.
    fn fold(&mut self, event: &FoldEvent);
    /// An epoch of some network ended.
    fn epoch(&mut self, log: &EpochLog);
    /// A line is measured.
    fn line(&mut self, line: &Line);
}

/// The recipe a quick estimate trains: one network, at most 12 epochs, patience at most 3.
/// (As overrides, so the label and the model files say so.)
pub fn quick_recipe(recipe: &Recipe) -> Result<Recipe, crate::Error> {
    let mut o = recipe.overrides.clone();
    (o.ensemble, o.epochs, o.patience) = (Some(1), Some(recipe.epochs.min(12)), Some(recipe.patience.min(3)));
    Recipe::new(recipe.name, recipe.seed, o)
}

/// The lines `only` may name (a prefix selects: `gujarati` = `gujarati-kfold5`).
pub const LINES: [&str; 5] = ["fsdd-loso", "gujarati", "arabic", "cross-corpus", "robustness"];

/// Run the suite (the lines whose names start with one of `only`; all when it is empty):
/// every line into `out` (each line's own folder), `scoreboard.json` rewritten after every
/// line, then `scoreboard.md` and `scoreboard.png`.
#[allow(clippy::too_many_arguments)]
pub fn benchmark(
    recipe: &Recipe,
    quick: bool,
    only: &[String],
    corpora: &Corpora,
    out: &Path,
    cache_dir: &Path,
    device: &Device,
    progress: Progress,
    report: &mut dyn Report,
) -> Result<Scoreboard> {
    let start = Instant::now();
    let recipe = if quick { quick_recipe(recipe)? } else { recipe.clone() };
    let mut board = Scoreboard {
        quick,
        recipe: recipe.clone(),
        corpora: corpora.clone(),
        lines: Vec::new(),
        skipped: Vec::new(),
        machine: crate::manifest::Machine::this(),
        date: crate::manifest::utc_date(),
        commit: crate::manifest::git_commit().to_string(),
        seconds: 0.0,
    };
    let ctx = Ctx { recipe: &recipe, quick, out, cache_dir, device, progress };
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| name.starts_with(o.as_str()));
    let mut fold_models = Vec::new();
    if wanted("fsdd-loso") {
        let (line, cv, dir) = ctx.loso(&corpora.fsdd, report)?;
        fold_models = (0..cv.folds.len()).map(|k| ctx.fold_model(&dir, k)).collect();
        board.push(line, out)?;
    }
    for (name, dir, target) in [("gujarati", &corpora.gujarati, 0.96), ("arabic", &corpora.arabic, 0.99)] {
        match (wanted(name), dir.is_dir()) {
            (false, _) => {}
            (true, true) => board.push(ctx.kfold(name, dir, target, report)?, out)?,
            (true, false) => board.skipped.push(format!("{name}-kfold5: {} is not there", dir.display())),
        }
    }
    if wanted("cross-corpus") {
        board.push(ctx.cross_corpus(corpora, report)?, out)?;
    }
    match (wanted("robustness"), fold_models.is_empty()) {
        (false, _) => {}
        (true, true) => board.skipped.push("robustness: needs the fsdd-loso line's models".into()),
        (true, false) => {
            for line in ctx.robustness(&fold_models, &corpora.fsdd, report)? {
                board.push(line, out)?;
            }
        }
    }
    board.seconds = start.elapsed().as_secs_f64();
    write_json(&out.join("scoreboard.json"), &board)?;
    crate::data::write_atomically(&out.join("scoreboard.md"), |f| {
        Ok(std::io::Write::write_all(f, board.markdown().as_bytes())?)
    })?;
    super::plots::scoreboard(&board, &out.join("scoreboard.png"))?;
    Ok(board)
}

impl Scoreboard {
    fn push(&mut self, line: Line, out: &Path) -> Result<()> {
        self.lines.push(line);
        write_json(&out.join("scoreboard.json"), self)
    }

    /// The Markdown table (`scoreboard.md`).
    pub fn markdown(&self) -> String {
        let label = match self.quick {
            true => "QUICK ESTIMATE (1 network, <= 12 epochs, FSDD 3 of 6 folds, kfold 2 of 5), ",
            false => "",
        };
        let mut s = format!(
            "Scoreboard of `{}` ({label}{}, {}, {} threads, commit {})\n\n",
            self.recipe.label(),
            self.date,
            self.machine.cpu,
            self.machine.threads,
            self.commit
        );
        s += "| line | what | score | worst fold | target | met | time | train ms/file |\n|---|---|---|---|---|---|---|---|\n";
        for l in &self.lines {
            let robust = l.name.starts_with("babble") || l.name.starts_with("rt60");
            let (v, t) = match robust {
                true => (format!("{:+.1} points", 100.0 * l.value), format!(">= {:+.0}", 100.0 * l.target)),
                false => (format!("{:.1}%", 100.0 * l.value), format!(">= {:.0}%", 100.0 * l.target)),
            };
            let worst = l.worst.map_or("".into(), |w| format!("{:.1}%", 100.0 * w));
            let ms = l.train_ms_per_file.map_or("".into(), |m| format!("{m:.1}"));
            let met = if l.met { "yes" } else { "no" };
            s += &format!(
                "| {} | {} | {v} | {worst} | {t} | {met} | {:.0} s | {ms} |\n",
                l.name, l.what, l.seconds
            );
        }
        for k in &self.skipped {
            s += &format!("\nskipped: {k}");
        }
        s + &format!("\n\ntotal {:.0} s\n", self.seconds)
    }
}

/// What every line needs.
struct Ctx<'a> {
    recipe: &'a Recipe,
    quick: bool,
    out: &'a Path,
    cache_dir: &'a Path,
    device: &'a Device,
    progress: Progress<'a>,
}

impl Ctx<'_> {
    /// Cross-validate on `roots` (plus the recipe's training-only folders) into `out/name`.
    fn crossval(
        &self,
        name: &str,
        roots: &[PathBuf],
        scheme: Scheme,
        report: &mut dyn Report,
    ) -> Result<CrossVal> {
        let dataset = scan_for_training(roots, &self.recipe.train_data)?;
        let max_folds = match scheme {
            Scheme::Kfold(_) => Some(QUICK_KFOLDS),
            _ => Some(QUICK_LOSO_FOLDS),
        }
        .filter(|_| self.quick);
        let report = RefCell::new(report);
        crossval(
            dataset,
            self.cache_dir,
            scheme,
            self.recipe,
            &self.out.join(name),
            self.device,
            self.progress,
            max_folds,
            &mut |e| report.borrow_mut().fold(&e),
            &mut |e| report.borrow_mut().epoch(e),
        )
    }

    /// FSDD leave-one-speaker-out: its line, the cross-validation, and its folder.
    fn loso(&self, fsdd: &Path, report: &mut dyn Report) -> Result<(Line, CrossVal, PathBuf)> {
        let what = "FSDD leave-one-speaker-out, mean test accuracy";
        report.start("fsdd-loso", what);
        let t0 = Instant::now();
        let cv = self.crossval("fsdd-loso", &[fsdd.to_path_buf()], Scheme::Loso, report)?;
        let line = cv_line("fsdd-loso", what, &cv, 0.92, t0);
        report.line(&line);
        Ok((line, cv, self.out.join("fsdd-loso")))
    }

    /// A `kfold:5` line on another corpus.
    fn kfold(&self, corpus: &str, dir: &Path, target: f64, report: &mut dyn Report) -> Result<Line> {
        let name = format!("{corpus}-kfold5");
        let what = format!("{corpus} kfold:5 (speaker-disjoint), mean test accuracy");
        report.start(&name, &what);
        let t0 = Instant::now();
        let cv = self.crossval(&name, &[dir.to_path_buf()], Scheme::Kfold(5), report)?;
        let line = cv_line(&name, &what, &cv, target, t0);
        report.line(&line);
        Ok(line)
    }

    /// The model of fold `k` of a cross-validation in `dir` (the whole ensemble, or the one
    /// network's best checkpoint).
    fn fold_model(&self, dir: &Path, k: usize) -> PathBuf {
        dir.join(format!("fold-{k}/model.safetensors"))
    }

    /// Trained on FSDD (theo validates) plus the recipe's training data; tested on every
    /// stranger.
    fn cross_corpus(&self, corpora: &Corpora, report: &mut dyn Report) -> Result<Line> {
        let what =
            "trained on FSDD (+ the recipe's training data), tested on speech-commands-digits' strangers";
        report.start("cross-corpus", what);
        let t0 = Instant::now();
        let data = vec![corpora.fsdd.clone(), corpora.strangers.clone()];
        let dataset = scan_for_training(&data, &self.recipe.train_data)?;
        let strangers = &dataset.sources[1].name;
        let test: Vec<String> = dataset
            .testable_speaker_ids()
            .into_iter()
            .filter(|s| s.starts_with(&format!("{strangers}/")))
            .collect();
        let val = vec![format!("{}/{CROSS_CORPUS_VAL}", dataset.sources[0].name)];
        let split_spec = SplitSpec::Explicit { test, val };
        let split = dataset.split(&split_spec)?;
        let out = self.out.join("cross-corpus");
        let opts = TrainOptions {
            data,
            out: out.clone(),
            cache_dir: self.cache_dir.to_path_buf(),
            split: split_spec,
            recipe: self.recipe.clone(),
        };
        let plan = Plan { dataset, split, scan: Stage::since("scan", t0) };
        let report = RefCell::new(report);
        let run = run_plan(&opts, plan, self.device, self.progress, &mut |e| report.borrow_mut().epoch(e))?;
        let m = &run.metrics;
        let line = Line {
            name: "cross-corpus".into(),
            what: what.into(),
            value: m.test_accuracy,
            worst: None,
            folds: vec![m.test_accuracy],
            target: 0.90,
            met: m.test_accuracy >= 0.90,
            seconds: t0.elapsed().as_secs_f64(),
            train_ms_per_file: Some(1000.0 * m.train_seconds / m.train_files.max(1) as f64),
        };
        report.borrow_mut().line(&line);
        Ok(line)
    }

    /// Each FSDD fold's model on its own test speaker at 10 dB babble and RT60 0.6 s, against
    /// clean: the mean change in points.
    fn robustness(&self, models: &[PathBuf], fsdd: &Path, report: &mut dyn Report) -> Result<Vec<Line>> {
        let what = "FSDD folds' models on their test speakers, change from clean";
        report.start("robustness", what);
        let t0 = Instant::now();
        let grid = [Condition::Clean, Condition::Babble { snr_db: 10.0 }, Condition::Reverb { rt60_s: 0.6 }];
        let data: Vec<PathBuf> =
            std::iter::once(fsdd.to_path_buf()).chain(self.recipe.train_data.clone()).collect();
        let r = super::robustness::robustness_under(
            models,
            &data,
            false,
            &grid,
            self.recipe.seed,
            self.device,
            &|_, _| {},
        )?;
        let mean = |k: usize| r.conditions[k].accuracy.values().sum::<f64>() / r.models.len().max(1) as f64;
        let per_model = |k: usize| r.models.iter().map(|m| r.conditions[k].accuracy[m]).collect::<Vec<f64>>();
        let clean = mean(0);
        let lines: Vec<Line> =
            [("babble-10db", "10 dB babble", 1), ("rt60-0.6s", "reverberation RT60 0.6 s", 2)]
                .into_iter()
                .map(|(name, cond, k)| Line {
                    name: name.into(),
                    what: format!("{cond}: {what} ({:.1}% clean)", 100.0 * clean),
                    value: mean(k) - clean,
                    worst: per_model(k).into_iter().reduce(f64::min),
                    folds: per_model(k),
                    target: -0.05,
                    met: mean(k) - clean >= -0.05,
                    seconds: t0.elapsed().as_secs_f64(),
                    train_ms_per_file: None,
                })
                .collect();
        lines.iter().for_each(|l| report.line(l));
        Ok(lines)
    }
}

/// A cross-validation's line: mean, worst fold, every fold, training cost per file.
fn cv_line(name: &str, what: &str, cv: &CrossVal, target: f64, t0: Instant) -> Line {
    let folds: Vec<f64> = cv.folds.iter().map(|f| f.test_accuracy).collect();
    let seconds: f64 = cv.folds.iter().map(|f| f.seconds).sum();
    let files: usize = cv.folds.iter().map(|f| f.train_files).sum();
    Line {
        name: name.into(),
        what: what.into(),
        value: cv.mean,
        worst: folds.iter().copied().reduce(f64::min),
        folds,
        target,
        met: cv.mean >= target,
        seconds: t0.elapsed().as_secs_f64(),
        train_ms_per_file: Some(1000.0 * seconds / files.max(1) as f64),
    }
}
