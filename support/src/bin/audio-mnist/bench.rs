//! `bench-train` and `bench-features`: one JSON line each.

use std::path::Path;

use anyhow::Result;
use support::model::{pick_device, Kernels};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum KernelChoice {
    Fused,
    Candle,
}

impl From<KernelChoice> for Kernels {
    fn from(k: KernelChoice) -> Self {
        match k {
            KernelChoice::Fused => Self::Fused,
            KernelChoice::Candle => Self::Candle,
        }
    }
}

pub fn bench_train(batch: usize, steps: usize, kernels: KernelChoice, layers: bool) -> Result<()> {
    let kernels = kernels.into();
    if layers {
        let rows = support::bench::profile_layers(batch, steps, kernels)?;
        println!(
            "{}",
            serde_json::json!({"batch": batch, "kernels": format!("{kernels:?}"), "layers": rows})
        );
    } else {
        let r = support::bench::bench_train(batch, steps, kernels, &pick_device())?;
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(())
}

pub fn bench_features(data: &Path, limit: Option<usize>, threads: usize, repeat: usize) -> Result<()> {
    let r = support::bench::bench_features(data, limit, threads, repeat)?;
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}
