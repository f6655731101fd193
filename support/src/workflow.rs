//! The whole run, as the seed notebook does it: scan -> features (cached) -> speaker split ->
//! training -> evaluation -> artifacts -> exported model. The CLI and the notebook both call
//! these functions; each step lives in its module (data, train, eval, model).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use candle_core::Device;
use serde::Serialize;

use crate::data::dataset::Dataset;
use crate::data::extract::Progress;
use crate::data::prepare::{load_features, Prepared};
use crate::data::split::{Split, SplitSpec};
use crate::data::union::scan_for_training;
use crate::data::write_json;
use crate::eval::artifacts::{test, Tested};
use crate::eval::calibration::Calibration;
use crate::eval::rejection::Rejection;
use crate::eval::{Evaluation, FolderAccuracy};
use crate::model::{describe_device, CnnConfig};
use crate::train::fit::{fit, Fitted, MemberResult};
use crate::train::{EpochLog, Recipe};

/// What a training run needs besides the data: where things go, the split and the recipe.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// One dataset folder, or several trained on as one ([`crate::data::union`]).
    pub data: Vec<PathBuf>,
    pub out: PathBuf,
    pub cache_dir: PathBuf,
    pub split: SplitSpec,
    pub recipe: Recipe,
}

/// What a run found before it trains: the recordings and the split, so a caller can say what
/// it will do before it does it.
pub struct Plan {
    pub dataset: Dataset,
    pub split: Split,
    /// The scan's time and memory: the run's first stage.
    pub scan: Stage,
}

impl TrainOptions {
    /// Scan the data and split its speakers.
    pub fn plan(&self) -> Result<Plan> {
        let start = Instant::now();
        let dataset = scan_for_training(&self.data, &self.recipe.train_data)?;
        let split = dataset.split(&self.split)?;
        Ok(Plan { dataset, split, scan: Stage::since("scan", start) })
    }
}

/// One stage of a run: its wall time and the process's peak memory when it ended.
#[derive(Clone, Debug, Serialize)]
pub struct Stage {
    pub name: String,
    pub seconds: f64,
    /// Peak resident memory of the process so far, MiB (`None` where the OS does not say).
    pub peak_mib: Option<f64>,
}

impl Stage {
    pub fn since(name: &str, start: Instant) -> Self {
        Self { name: name.to_string(), seconds: start.elapsed().as_secs_f64(), peak_mib: peak_memory_mib() }
    }
}

/// The process's peak resident set size in MiB (`getrusage`: KiB on Linux, bytes on macOS).
pub fn peak_memory_mib() -> Option<f64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `rusage` into the pointer it is given, which is valid.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return None;
        }
        usage.assume_init()
    };
    let unit = if cfg!(target_os = "macos") { 1024.0 * 1024.0 } else { 1024.0 };
    Some(usage.ru_maxrss as f64 / unit)
}

/// `metrics.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Metrics {
    pub test_accuracy: f64,
    /// Member 0's best validation accuracy (each member's is in `members`).
    pub val_accuracy: f64,
    /// Member 0's epochs and best epoch.
    pub epochs: usize,
    pub best_epoch: usize,
    /// Summed over the members.
    pub train_seconds: f64,
    pub train_samples_per_second: f64,
    pub params: usize,
    pub train_files: usize,
    pub val_files: usize,
    pub test_files: usize,
    pub device: String,
    /// Test accuracy per dataset folder (several with repeated `--data`; empty without test
    /// speakers).
    pub per_dataset: BTreeMap<String, FolderAccuracy>,
    /// The networks' temperatures and the test confidences' calibration error before and
    /// after them (`null` without test speakers).
    pub calibration: Option<Calibration>,
    /// False rejects of test digits, false accepts of test negatives per kind.
    pub rejection: Option<Rejection>,
    /// Every network of the model: its validation speaker(s), best validation accuracy,
    /// epochs, and its own test accuracy.
    pub members: Vec<MemberResult>,
    /// Wall time and peak memory of each stage: scan, features, training, evaluation, export.
    pub stages: Vec<Stage>,
}

/// What a training run produced.
pub struct RunReport {
    pub metrics: Metrics,
    pub split: Split,
    pub evaluation: Evaluation,
    pub log: Vec<EpochLog>,
    pub model_path: PathBuf,
}

/// Plan, train and write every artifact to `opts.out`.
pub fn train_and_evaluate(
    opts: &TrainOptions,
    device: &Device,
    progress: Progress,
    on_epoch: &mut dyn FnMut(&EpochLog),
) -> Result<RunReport> {
    run_plan(opts, opts.plan()?, device, progress, on_epoch)
}

/// Train on the planned data and write every artifact to `opts.out`.
pub fn run_plan(
    opts: &TrainOptions,
    plan: Plan,
    device: &Device,
    progress: Progress,
    on_epoch: &mut dyn FnMut(&EpochLog),
) -> Result<RunReport> {
    let mut stages = vec![plan.scan.clone()];
    let start = Instant::now();
    let (set, _) = load_features(&plan.dataset, &opts.cache_dir, &opts.recipe.features(), progress)?;
    let prep = Prepared::new(plan.dataset, set, plan.split)?.with_negatives(&opts.recipe.negatives);
    stages.push(Stage::since("features", start));
    let arch = prep.architecture(&opts.recipe);
    let start = Instant::now();
    let trained = fit(&prep, &arch, &opts.recipe, &opts.out, device, on_epoch)?;
    stages.push(Stage::since("training", start));
    let start = Instant::now();
    let tested = test(&trained.model, &prep, device, &opts.out)?;
    stages.push(Stage::since("evaluation", start));
    let metrics = export_timed(&prep, &arch, &trained, &tested, opts, device, stages)?;
    Ok(RunReport {
        metrics,
        split: prep.split,
        evaluation: tested.evaluation,
        log: trained.log,
        model_path: opts.out.join("model.safetensors"),
    })
}

/// Write `metrics.json`, the final `model.safetensors` (weights + everything needed to use
/// them) and `run_manifest.json` to `opts.out`.
pub fn export(
    prep: &Prepared,
    arch: &CnnConfig,
    trained: &Fitted,
    tested: &Tested,
    opts: &TrainOptions,
    device: &Device,
) -> Result<Metrics> {
    export_timed(prep, arch, trained, tested, opts, device, Vec::new())
}

/// [`export`], with the times of the stages before it (and its own) in `metrics.json`.
#[allow(clippy::too_many_arguments)]
fn export_timed(
    prep: &Prepared,
    arch: &CnnConfig,
    trained: &Fitted,
    tested: &Tested,
    opts: &TrainOptions,
    device: &Device,
    stages: Vec<Stage>,
) -> Result<Metrics> {
    let start = Instant::now();
    let evaluation = &tested.evaluation;
    let mut metrics = Metrics {
        // No test speakers (`--split none`): not measured, `null` in metrics.json.
        test_accuracy: if prep.test_rows.is_empty() { f64::NAN } else { evaluation.accuracy },
        val_accuracy: trained.best_val_acc,
        epochs: trained.log.len(),
        best_epoch: trained.best_epoch,
        train_seconds: trained.train_seconds,
        train_samples_per_second: trained.samples_seen as f64 / trained.train_seconds.max(1e-9),
        params: arch.param_count(),
        train_files: prep.train_rows.len(),
        val_files: prep.val_rows.len(),
        test_files: prep.test_rows.len(),
        device: describe_device(device),
        per_dataset: tested.per_dataset.clone(),
        calibration: tested.calibration.clone(),
        rejection: tested.rejection.clone(),
        members: trained.member_results(prep, device)?,
        stages,
    };
    // The export's own time is measured up to the model file; metrics.json is written last.
    let out = &opts.out;
    trained.save(
        &out.join("model.safetensors"),
        prep,
        arch,
        &opts.recipe,
        serde_json::to_value(&metrics)?,
    )?;
    write_manifest(&out.join("run_manifest.json"), prep, arch, opts, device)?;
    metrics.stages.push(Stage::since("export", start));
    write_json(&out.join("metrics.json"), &metrics)?;
    Ok(metrics)
}

/// `run_manifest.json`: everything that decided the numbers.
fn write_manifest(
    path: &Path,
    prep: &Prepared,
    arch: &CnnConfig,
    opts: &TrainOptions,
    device: &Device,
) -> Result<()> {
    write_json(
        path,
        &serde_json::json!({
            "seed": opts.recipe.seed,
            "recipe": opts.recipe,
            "architecture": arch,
            "features": prep.set.config,
            "split_spec": opts.split,
            "split": prep.split,
            "data": opts.data.iter().map(|d| d.display().to_string()).collect::<Vec<_>>(),
            "data_fingerprint": prep.set.fingerprint,
            "files": prep.set.len(),
            "skipped": prep.set.skipped.len(),
            "crate_versions": crate::manifest::crate_versions(),
            "rustc": crate::manifest::rustc_version(),
            "git_commit": crate::manifest::git_commit(),
            "device": describe_device(device),
            "machine": crate::manifest::Machine::this(),
        }),
    )
}
