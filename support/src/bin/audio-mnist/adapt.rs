//! `adapt` and `adapt-bench`: a model retrained on one person's recordings.

use std::path::PathBuf;

use anyhow::{Context, Result};
use support::adapt::bench::{adapt_bench, table, BenchConfig};
use support::adapt::{adapt, AdaptConfig, Enrollment, Layers};
use support::model::pick_device;

/// `audio-mnist adapt`.
#[derive(clap::Args, Debug)]
pub struct AdaptCmd {
    #[arg(long)]
    pub model: PathBuf,
    /// Folder(s) of `{digit}_{name}_{take}.wav` (any supported layout), every digit at least once.
    #[arg(long = "data", value_name = "DIR", required = true)]
    pub data: Vec<PathBuf>,
    #[arg(long)]
    pub out: PathBuf,
    /// Use at most the first K takes of each digit (default: all).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub takes: Option<u64>,
    /// Only these speakers of the folder (comma-separated; default: all).
    #[arg(long, value_delimiter = ',')]
    pub speakers: Vec<String>,
    #[command(flatten)]
    pub method: AdaptArgs,
}

/// `audio-mnist adapt-bench`.
#[derive(clap::Args, Debug)]
pub struct AdaptBenchCmd {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long = "data", value_name = "DIR", required = true)]
    pub data: Vec<PathBuf>,
    /// Takes per digit to adapt on, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,5")]
    pub takes: Vec<usize>,
    /// Speakers to adapt to (default: the model's test speakers found in the folder, else all).
    #[arg(long, value_delimiter = ',')]
    pub speakers: Vec<String>,
    /// Recordings of the other speakers to test forgetting on (at most).
    #[arg(long, default_value_t = 300)]
    pub others: usize,
    /// Folder for adapt_bench.json and adapt_bench.md.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub method: AdaptArgs,
}

/// How to adapt (`support::adapt::AdaptConfig`).
#[derive(clap::Args, Clone, Debug)]
pub struct AdaptArgs {
    /// Which layers learn the new voice: `head` (every layer after the conv trunk) or `last`.
    #[arg(long, value_enum, default_value = "head")]
    pub layers: Layers,
    /// Full-batch optimisation steps.
    #[arg(long, default_value_t = AdaptConfig::default().steps as u64, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub steps: u64,
    /// Augmented copies of each recording besides the clean one.
    #[arg(long, default_value_t = AdaptConfig::default().variants as u64, value_parser = clap::value_parser!(u64).range(0..=100))]
    pub variants: u64,
    /// AdamW's learning rate.
    #[arg(long, default_value_t = AdaptConfig::default().lr)]
    pub lr: f64,
    /// Pull towards the trained weights (larger: closer to the original model).
    #[arg(long, default_value_t = AdaptConfig::default().l2sp)]
    pub l2sp: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

impl AdaptArgs {
    pub fn config(&self) -> Result<AdaptConfig> {
        anyhow::ensure!(self.l2sp.is_finite() && self.l2sp >= 0.0, "--l2sp {} (0 or more)", self.l2sp);
        anyhow::ensure!(
            self.lr.is_finite() && self.lr > 0.0 && self.lr <= 1.0,
            "--lr {} (above 0, at most 1)",
            self.lr
        );
        Ok(AdaptConfig {
            layers: self.layers,
            steps: self.steps as usize,
            variants: self.variants as usize,
            l2sp: self.l2sp,
            lr: self.lr,
            seed: self.seed,
            ..AdaptConfig::default()
        })
    }
}

/// The folders' recordings; files passed over (a name that is not `{digit}_{name}_{take}.wav`)
/// are listed, as they teach nothing.
fn scan(data: &[PathBuf]) -> Result<support::Dataset> {
    let ds = support::data::union::scan_all(data)?;
    for s in &ds.skipped {
        eprintln!("skipped {s}");
    }
    Ok(ds)
}

pub fn adapt_command(cmd: &AdaptCmd) -> Result<()> {
    let (model, out) = (&cmd.model, &cmd.out);
    let ds = scan(&cmd.data)?;
    let enrollment = Enrollment::pick(&ds, &cmd.speakers, cmd.takes.map_or(usize::MAX, |t| t as usize))?;
    let cfg = cmd.method.config()?;
    println!(
        "adapting {} to {} ({} recordings, {} layers, {} steps)...",
        model.display(),
        enrollment.speakers.join(", "),
        enrollment.files.len(),
        format!("{:?}", cfg.layers).to_lowercase(),
        cfg.steps
    );
    let device = pick_device();
    let adapted =
        adapt(model, &enrollment, &cfg, &device).with_context(|| format!("adapting {}", model.display()))?;
    adapted.save(out).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "adapted in {:.1} s -> {} (a personal model: it knows {} better, and may know others less well)",
        adapted.seconds,
        out.display(),
        enrollment.speakers.join(", ")
    );
    Ok(())
}

pub fn adapt_bench_command(cmd: &AdaptBenchCmd) -> Result<()> {
    let (model, data) = (&cmd.model, &cmd.data);
    let ds = scan(data)?;
    let cfg = BenchConfig {
        takes: cmd.takes.clone(),
        speakers: cmd.speakers.clone(),
        others: cmd.others,
        adapt: cmd.method.config()?,
    };
    let device = pick_device();
    let rows = adapt_bench(model, &ds, &cfg, &device, &mut |r| {
        let others = match r.others {
            0 => "no other speakers in the folder".to_string(),
            n => format!(
                "{n} of other speakers {:.1}% -> {:.1}%",
                100.0 * r.others_before,
                100.0 * r.others_after
            ),
        };
        println!(
            "{} with {} take(s) per digit: {:.1}% -> {:.1}% on {} other takes; {others}; {:.1} s",
            r.speaker,
            r.takes,
            100.0 * r.before,
            100.0 * r.after,
            r.tested,
            r.seconds
        )
    })?;
    let md = table(&rows);
    println!("\n{md}");
    if let Some(dir) = &cmd.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let json = serde_json::json!({ "model": model, "data": data, "method": cfg.adapt, "rows": rows });
        std::fs::write(dir.join("adapt_bench.json"), serde_json::to_string_pretty(&json)?)?;
        std::fs::write(dir.join("adapt_bench.md"), md)?;
        println!("adapt_bench.json and adapt_bench.md in {}", dir.display());
    }
    Ok(())
}
