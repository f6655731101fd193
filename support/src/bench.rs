//! Throughput of the feature pipeline (WAV on disk -> log-Mel), for `audio-mnist bench-features`.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::dataset::scan;
use crate::extract::{extract_dataset, no_progress};
use crate::features::{FeatureConfig, FeatureExtractor};

#[derive(Clone, Debug, Serialize)]
pub struct FeatureBench {
    pub files: usize,
    pub failed: usize,
    pub threads: usize,
    /// Median over the repeats.
    pub seconds: f64,
    pub files_per_s: f64,
    /// files/s of every repeat, in order.
    pub runs_files_per_s: Vec<f64>,
}

/// Extract features for (the first `limit` of) the recordings under `data` on `threads`
/// threads (0 = all cores), without any cache, `repeat` times; report the median. Scanning is
/// not timed; the first repeat also warms the page cache, which the median discounts.
pub fn bench_features(
    data: &Path,
    limit: Option<usize>,
    threads: usize,
    repeat: usize,
) -> Result<FeatureBench> {
    let mut dataset = scan(data)?;
    if let Some(n) = limit {
        dataset.recordings.truncate(n);
    }
    let fx = FeatureExtractor::new(FeatureConfig::default()).map_err(anyhow::Error::msg)?;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().context("starting threads")?;
    let threads = pool.current_num_threads();
    let files = dataset.recordings.len();
    let mut times = Vec::new();
    let mut failed = 0;
    for _ in 0..repeat.max(1) {
        let start = Instant::now();
        let out = pool.install(|| extract_dataset(&fx, &dataset, &no_progress));
        times.push(start.elapsed().as_secs_f64());
        failed = out.skipped.len();
    }
    let runs_files_per_s = times.iter().map(|t| files as f64 / t).collect();
    times.sort_by(f64::total_cmp);
    let seconds = times[times.len() / 2];
    Ok(FeatureBench {
        files,
        failed,
        threads,
        seconds,
        files_per_s: files as f64 / seconds,
        runs_files_per_s,
    })
}

/// Training and inference throughput of the CNN on synthetic input, for `audio-mnist bench-train`
/// (the same measurement as `../shared/reference/torch_bench.py`).
#[derive(Clone, Debug, Serialize)]
pub struct TrainBench {
    pub batch: usize,
    pub threads: usize,
    pub steps: usize,
    pub train_samples_per_second: f64,
    pub infer_samples_per_second: f64,
    /// Mean milliseconds per training step spent in each phase.
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub optimizer_ms: f64,
    pub device: String,
}

/// Time `steps` AdamW training steps and `steps` inference passes of the seed CNN on a
/// `[batch, 1, 128, 32]` input, after warm-up steps.
pub fn bench_train(batch: usize, steps: usize, device: &candle_core::Device) -> Result<TrainBench> {
    use candle_core::{Tensor, D};
    use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
    use rand::{Rng, SeedableRng};

    let arch = crate::model::CnnConfig::default();
    let (varmap, model) = crate::model::init_varmap(&arch, 0, device)?;
    let vars: Vec<candle_core::Var> =
        crate::model::parameters(&varmap)?.into_iter().map(|(_, v)| v).collect();
    let mut opt = AdamW::new(vars, ParamsAdamW { lr: 1e-3, ..ParamsAdamW::default() })?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let x: Vec<f32> = (0..batch * 128 * 32).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let x = Tensor::from_vec(x, (batch, 1, 128, 32), device)?;
    let y = Tensor::from_vec((0..batch as u32).map(|i| i % 10).collect::<Vec<_>>(), batch, device)?;
    let (mut fwd, mut bwd, mut optim) = (0f64, 0f64, 0f64);
    let mut dropout = rand::rngs::StdRng::seed_from_u64(1);
    let sync = |t: &Tensor| -> Result<()> {
        t.device().synchronize()?;
        Ok(())
    };
    for step in 0..steps + 2 {
        let t0 = Instant::now();
        let loss = candle_nn::loss::cross_entropy(&model.forward_t(&x, Some(&mut dropout))?, &y)?;
        sync(&loss)?;
        let t1 = Instant::now();
        let grads = loss.backward()?;
        sync(&loss)?;
        let t2 = Instant::now();
        opt.step(&grads)?;
        sync(&loss)?;
        let t3 = Instant::now();
        if step >= 2 {
            fwd += (t1 - t0).as_secs_f64();
            bwd += (t2 - t1).as_secs_f64();
            optim += (t3 - t2).as_secs_f64();
        }
    }
    let train_s = fwd + bwd + optim;
    model.forward_t(&x, None)?.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let t = Instant::now();
    for _ in 0..steps {
        model.forward_t(&x, None)?.argmax(D::Minus1)?.to_vec1::<u32>()?;
    }
    let infer_s = t.elapsed().as_secs_f64();
    let per = |s: f64| 1000.0 * s / steps as f64;
    Ok(TrainBench {
        batch,
        threads: candle_core::utils::get_num_threads(),
        steps,
        train_samples_per_second: (batch * steps) as f64 / train_s,
        infer_samples_per_second: (batch * steps) as f64 / infer_s,
        forward_ms: per(fwd),
        backward_ms: per(bwd),
        optimizer_ms: per(optim),
        device: crate::model::describe_device(device),
    })
}
