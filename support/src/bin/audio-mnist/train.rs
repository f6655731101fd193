//! `train`, `run`, `crossval` and `evaluate`: say what was found and what will be done, then
//! train with a progress line per epoch, then print the results.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use support::data::dataset::Dataset;
use support::data::split::Split;
use support::data::split::SplitSpec;
use support::eval::class_names;
use support::eval::crossval::{FoldEvent, Scheme};
use support::eval::rejection::Rejection;
use support::model::{describe_device, pick_device};
use support::train::{EpochLog, Recipe};
use support::workflow::{run_plan, TrainOptions};

use crate::args::{DataArgs, RecipeArgs, SplitArgs};
use crate::data::scan_verbose_for;

pub fn feature_bar() -> Result<ProgressBar> {
    Ok(ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} features {bar:40} {pos}/{len} files  {per_sec}  eta {eta}")
            .context("progress bar template")?,
    ))
}

/// A feature-extraction progress callback that drives `bar`.
pub fn bar_progress(bar: &ProgressBar) -> impl Fn(usize, usize) + Sync + '_ {
    move |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64)
    }
}

/// What the run will do, before it does it.
fn announce(recipe: &Recipe, device: &candle_core::Device) {
    let augment = recipe.augment.names();
    let augment = if augment.is_empty() { "none".to_string() } else { augment.join(", ") };
    println!(
        "recipe {}: {} trim, {} framing, {}-sample window, {} mel bands, {} dB range, lifter {}, {} {:?}, {} network(s), at most {} epochs; \
         augmentation: {augment}; seed {}",
        recipe.label(),
        if recipe.word_trim.is_some() { "room" } else { "librosa" },
        format!("{:?}", recipe.framing).to_lowercase(),
        recipe.n_fft,
        recipe.n_mels,
        recipe.top_db,
        recipe.lifter,
        match recipe.arch {
            support::model::Arch::Cnn => "conv blocks",
            support::model::Arch::TcResnet => "TC-ResNet widths",
        },
        recipe.channels,
        recipe.ensemble,
        recipe.epochs,
        recipe.seed
    );
    println!("device: {}", describe_device(device));
}

fn announce_split(split: &Split) {
    println!(
        "split by speaker: train {:?}\n                  val {:?}\n                  test {:?}",
        split.train, split.val, split.test
    );
}

/// `audio-mnist train` (and `run` after its download): plan, announce, train, report.
pub fn train_command(opts: &TrainOptions) -> Result<()> {
    let plan = opts.plan()?;
    report_dataset(&plan.dataset);
    announce_split(&plan.split);
    let device = pick_device();
    announce(&opts.recipe, &device);
    let bar = feature_bar()?;
    let epochs = ProgressBar::new(opts.recipe.epochs as u64).with_style(
        ProgressStyle::with_template("{spinner} epoch {pos}/{len} {bar:30} {elapsed_precise} {msg}")
            .context("progress bar template")?,
    );
    let progress = bar_progress(&bar);
    let report = run_plan(opts, plan, &device, &progress, &mut |r: &EpochLog| {
        bar.finish_and_clear();
        // A hidden bar (output not a terminal: logs, CI, notebooks) drops println: print plainly.
        if epochs.is_hidden() {
            println!("{}", r.line());
        } else {
            epochs.println(r.line());
        }
        epochs.set_position(r.epoch as u64);
        epochs.set_message(format!("val acc {:.4}", r.val_acc));
    })?;
    epochs.finish_and_clear();
    let m = &report.metrics;
    for (k, member) in m.members.iter().enumerate().filter(|_| m.members.len() > 1) {
        let alone = match member.test_accuracy {
            a if a.is_nan() => String::new(),
            a => format!(", alone on test {:.2}%", 100.0 * a),
        };
        println!(
            "  network {}: val {} {:.2}% (epoch {}/{}){alone}",
            k + 1,
            member.val_speaker,
            100.0 * member.val_accuracy,
            member.best_epoch,
            member.epochs
        );
    }
    let (val, best, epochs, secs, rate) =
        (100.0 * m.val_accuracy, m.best_epoch, m.epochs, m.train_seconds, m.train_samples_per_second);
    if m.test_files == 0 {
        println!("no test speakers (--split none): this model was not measured on unseen speakers");
        println!(
            "best val accuracy {val:.2}% at epoch {best}/{epochs}; {secs:.0} s, {rate:.1} train samples/s"
        );
    } else {
        print!("{}", report.evaluation.report(&class_names(report.evaluation.confusion.len())));
        println!(
            "test accuracy {:.2}% ({} files), best val accuracy {val:.2}% at epoch {best}/{epochs}; \
             {secs:.0} s, {rate:.1} train samples/s",
            100.0 * m.test_accuracy,
            m.test_files
        );
    }
    print_per_dataset(&m.per_dataset);
    print_calibration_and_rejection(
        m.calibration.as_ref().map(|c| (c.ece_before, c.ece_after, c.ece_floor)),
        m.rejection.as_ref(),
    );
    println!("model: {}; artifacts in {}", report.model_path.display(), opts.out.display());
    print_stages(&m.stages);
    Ok(())
}

/// Calibration error of the test confidences, and how often "not a digit" is right.
/// `ece`: as trained, with temperatures, and a perfectly calibrated model's (NaN: not known).
fn print_calibration_and_rejection(ece: Option<(f64, f64, f64)>, rejection: Option<&Rejection>) {
    if let Some((before, after, floor)) = ece {
        let floor = if floor.is_nan() { String::new() } else { format!(" (a calibrated model: {floor:.3})") };
        println!(
            "calibration error (ECE, 15 bins) on test: {before:.3} as trained, {after:.3} with temperatures{floor}"
        );
    }
    if let Some(r) = rejection {
        let kinds: Vec<String> =
            r.false_accept.iter().map(|(k, v)| format!("{k} {:.1}%", 100.0 * v)).collect();
        println!(
            "not a digit: {:.1}% of test digits rejected; negatives taken for digits: {:.1}% non-speech, {:.1}% speech ({})",
            100.0 * r.false_reject,
            100.0 * r.false_accept_non_speech,
            100.0 * r.false_accept_speech,
            kinds.join(", ")
        );
    }
}

/// Test accuracy per dataset folder, when there are several.
fn print_per_dataset(per: &std::collections::BTreeMap<String, support::eval::FolderAccuracy>) {
    for (name, a) in per.iter().filter(|_| per.len() > 1) {
        println!("  {name}: {:.2}% of {} test recordings", 100.0 * a.accuracy, a.total);
    }
}

fn report_dataset(dataset: &Dataset) {
    println!(
        "{}: {} recordings, {} speakers",
        dataset.describe(),
        dataset.recordings.len(),
        dataset.speaker_ids().len()
    );
    for w in &dataset.warnings {
        eprintln!("warning: {w}");
    }
}

/// `audio-mnist crossval`: every fold, a line per epoch, the summary table.
pub fn crossval_command(data: &DataArgs, scheme: Scheme, recipe: &RecipeArgs, out: &Path) -> Result<()> {
    let recipe = recipe.recipe()?;
    let dataset = scan_verbose_for(&data.data.resolve(None)?, &recipe.train_data)?;
    let device = pick_device();
    announce(&recipe, &device);
    let bar = feature_bar()?;
    let progress = bar_progress(&bar);
    let r = support::eval::crossval::crossval(
        dataset,
        &data.cache_dir,
        scheme,
        &recipe,
        out,
        &device,
        &progress,
        None,
        &mut |event| {
            bar.finish_and_clear();
            print_fold_event(&event);
        },
        &mut |e| {
            let (l, tl, ta, va, s) = (e.label(), e.train_loss, e.train_acc, e.val_acc, e.seconds);
            println!("  {l}  train loss {tl:.4} acc {ta:.4}  val acc {va:.4}  {s:.1}s")
        },
    )?;
    println!("\n| test speaker | val speaker | test accuracy | best epoch |");
    println!("|---|---|---|---|");
    for f in &r.folds {
        let (t, v, a, b, e) =
            (&f.test_speaker, &f.val_speaker, 100.0 * f.test_accuracy, f.best_epoch, f.epochs);
        println!("| {t} | {v} | {a:.1}% | {b} of {e} |");
    }
    println!(
        "mean {:.2}%, std {:.2} points over {} folds; {:.0} s; crossval.json and confusion_matrix.png in {}",
        100.0 * r.mean,
        100.0 * r.std,
        r.folds.len(),
        r.seconds,
        out.display()
    );
    print_per_dataset(&r.per_dataset);
    print_calibration_and_rejection(Some((r.ece_before, r.ece_after, f64::NAN)), r.rejection.as_ref());
    println!("computed on {} ({}, caches {:?} KiB)", r.machine.cpu, r.machine.simd, r.machine.cache_kib);
    Ok(())
}

/// `audio-mnist benchmark`: every line as it is measured, then the table.
pub fn benchmark_command(
    recipe: &RecipeArgs,
    quick: bool,
    only: &[String],
    corpora: &Path,
    out: &Path,
    cache: &Path,
) -> Result<()> {
    use support::eval::benchmark::{benchmark, Corpora};
    let recipe = recipe.recipe()?;
    let corpora = Corpora::in_folder(corpora);
    for needed in [&corpora.fsdd, &corpora.strangers] {
        anyhow::ensure!(
            needed.is_dir(),
            "{} is not there (set --corpora to the folder holding fsdd/ and speech-commands-digits/)",
            needed.display()
        );
    }
    let device = pick_device();
    announce(&recipe, &device);
    if quick {
        println!(
            "QUICK ESTIMATE: one network, at most 12 epochs, FSDD 3 of 6 folds, kfold 2 of 5; not the score"
        );
    }
    let bar = feature_bar()?;
    let progress = bar_progress(&bar);
    let mut report = BenchPrinter { bar: &bar };
    let board = benchmark(&recipe, quick, only, &corpora, out, cache, &device, &progress, &mut report)?;
    println!("\n{}", board.markdown());
    println!("scoreboard.json, scoreboard.md and scoreboard.png in {}", out.display());
    Ok(())
}

/// Prints a benchmark's progress.
struct BenchPrinter<'a> {
    bar: &'a ProgressBar,
}

impl support::eval::benchmark::Report for BenchPrinter<'_> {
    fn start(&mut self, name: &str, what: &str) {
        println!("== {name}: {what}");
    }
    fn fold(&mut self, event: &FoldEvent) {
        self.bar.finish_and_clear();
        print_fold_event(event);
    }
    fn epoch(&mut self, e: &EpochLog) {
        self.bar.finish_and_clear();
        println!("  {}", e.line());
    }
    fn line(&mut self, l: &support::eval::benchmark::Line) {
        let met = if l.met { "met" } else { "not met" };
        println!("-> {}: {:.4} (target {:.2}, {met}), {}", l.name, l.value, l.target, duration(l.seconds));
    }
}

/// A fold's start (its speakers) or its result and the time left.
pub fn print_fold_event(event: &FoldEvent) {
    match event {
        FoldEvent::Start { k, n, spec } => match spec {
            SplitSpec::Explicit { test, val } if test.len() <= 4 => {
                println!("fold {}/{n}: test {}, validate {}", k + 1, test.join(", "), val.join(", "))
            }
            SplitSpec::Explicit { test, val } => {
                println!("fold {}/{n}: test {} speakers, validate {}", k + 1, test.len(), val.join(", "))
            }
            other => println!("fold {}/{n}: {other:?}", k + 1),
        },
        FoldEvent::Done { k, n, fold, eta_s } => {
            let left = if k + 1 < *n { format!("; about {} left", duration(*eta_s)) } else { String::new() };
            let speakers = fold.test_speaker.split(',').count();
            let who = if speakers <= 4 { fold.test_speaker.clone() } else { format!("{speakers} speakers") };
            println!(
                "fold {}/{n} done: test {:.1}% ({who}), val {:.1}%, {} epochs, {}{left}",
                k + 1,
                100.0 * fold.test_accuracy,
                100.0 * fold.val_accuracy,
                fold.epochs,
                duration(fold.seconds)
            );
        }
    }
}

/// `75 s`, `12 min 5 s`, `1 h 3 min`.
pub fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..=99 => format!("{s} s"),
        100..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// `audio-mnist evaluate`.
pub fn evaluate_command(
    model: &Path,
    data: &DataArgs,
    out: &Path,
    split: &SplitArgs,
    seed: u64,
) -> Result<()> {
    let device = pick_device();
    let spec = if split.given() { Some(split.spec(seed)?) } else { None };
    let bar = feature_bar()?;
    let progress = bar_progress(&bar);
    let e = support::eval::artifacts::evaluate_model(
        model,
        &data.data.resolve(None)?,
        out,
        &data.cache_dir,
        spec,
        &device,
        &progress,
    )?;
    bar.finish_and_clear();
    print!("{}", e.report(&class_names(e.confusion.len())));
    println!("test accuracy {:.2}%; files written to {}", 100.0 * e.accuracy, out.display());
    Ok(())
}

/// `audio-mnist robustness`: the table, `robustness.json` and `robustness.png`.
pub fn robustness_command(
    models: &[PathBuf],
    data: &[PathBuf],
    all: bool,
    out: &Path,
    seed: u64,
) -> Result<()> {
    let device = pick_device();
    let r = support::eval::robustness::robustness(models, data, all, seed, &device, &|done, total| {
        if done < total {
            eprintln!("condition {}/{total}", done + 1);
        }
    })?;
    let header: Vec<String> = r.models.iter().map(|m| format!("{m} ({} files)", r.files[m])).collect();
    println!("| condition | {} |", header.join(" | "));
    println!("|---|{}", "---|".repeat(r.models.len()));
    for c in &r.conditions {
        let cells: Vec<String> = r
            .models
            .iter()
            .map(|m| format!("{:.1}%", 100.0 * c.accuracy.get(m).copied().unwrap_or(f64::NAN)))
            .collect();
        println!("| {} | {} |", c.name, cells.join(" | "));
    }
    support::data::write_json(&out.join("robustness.json"), &r)?;
    support::eval::plots::robustness(&r, &out.join("robustness.png"))?;
    println!("robustness.json and robustness.png in {}", out.display());
    Ok(())
}

/// Where the run's time went: one line per stage, then the total.
fn print_stages(stages: &[support::workflow::Stage]) {
    let total: f64 = stages.iter().map(|s| s.seconds).sum();
    println!("time by stage:");
    for s in stages {
        let memory = s.peak_mib.map_or(String::new(), |m| format!("  (peak memory {m:.0} MiB)"));
        println!(
            "  {:<10} {:>8.1} s  {:>5.1}%{memory}",
            s.name,
            s.seconds,
            100.0 * s.seconds / total.max(1e-9)
        );
    }
    println!("  {:<10} {:>8.1} s", "total", total);
}
