//! `adapt` and `adapt-bench`: a model retrained on one person's recordings.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use support::adapt::bench::{adapt_bench, table, BenchConfig};
use support::adapt::{adapt, AdaptConfig, Enrollment, Layers};
use support::model::pick_device;

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

pub fn adapt_command(
    model: &Path,
    data: &[PathBuf],
    out: &Path,
    takes: Option<usize>,
    speakers: &[String],
    args: &AdaptArgs,
) -> Result<()> {
    let ds = scan(data)?;
    let enrollment = Enrollment::pick(&ds, speakers, takes.unwrap_or(usize::MAX))?;
    let cfg = args.config()?;
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

pub fn adapt_bench_command(
    model: &Path,
    data: &[PathBuf],
    takes: &[usize],
    speakers: &[String],
    others: usize,
    out: Option<&Path>,
    args: &AdaptArgs,
) -> Result<()> {
    let ds = scan(data)?;
    let cfg =
        BenchConfig { takes: takes.to_vec(), speakers: speakers.to_vec(), others, adapt: args.config()? };
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
    if let Some(dir) = out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let json = serde_json::json!({ "model": model, "data": data, "method": cfg.adapt, "rows": rows });
        std::fs::write(dir.join("adapt_bench.json"), serde_json::to_string_pretty(&json)?)?;
        std::fs::write(dir.join("adapt_bench.md"), md)?;
        println!("adapt_bench.json and adapt_bench.md in {}", dir.display());
    }
    Ok(())
}
