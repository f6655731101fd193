//! Throughput of the feature pipeline (WAV on disk -> log-Mel), for `audio-mnist bench-features`.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::Tensor;
use serde::Serialize;

use crate::data::dataset::scan;
use crate::data::extract::{extract_dataset, no_progress};
use crate::dsp::features::{FeatureConfig, FeatureExtractor};

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
    let fx = FeatureExtractor::new(FeatureConfig::default())?;
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
    pub kernels: String,
}

/// Time `steps` AdamW training steps and `steps` inference passes of the seed CNN on a
/// `[batch, 1, 128, 32]` input, after warm-up steps.
pub fn bench_train(
    batch: usize,
    steps: usize,
    kernels: crate::model::Kernels,
    device: &candle_core::Device,
) -> Result<TrainBench> {
    use candle_core::D;
    use candle_nn::optim::ParamsAdamW;
    use rand::{Rng, SeedableRng};

    let arch = crate::model::CnnConfig::default();
    let (varmap, model) = crate::model::init_varmap(&arch, 0, device)?;
    let model = model.with_kernels(kernels);
    let vars: Vec<candle_core::Var> =
        crate::model::parameters(&varmap)?.into_iter().map(|(_, v)| v).collect();
    anyhow::ensure!(batch > 0 && steps > 0, "batch and steps must be at least 1");
    let mut opt = crate::train::optim::AdamW::new(vars, ParamsAdamW { lr: 1e-3, ..ParamsAdamW::default() })?;
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
        let mut grads = loss.backward()?;
        sync(&loss)?;
        let t2 = Instant::now();
        opt.step(&mut grads, None)?;
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
        kernels: format!("{kernels:?}"),
    })
}

/// Milliseconds per call of one layer of the training step, forward and backward.
#[derive(Clone, Debug, Serialize)]
pub struct LayerTiming {
    pub layer: String,
    pub forward_ms: f64,
    pub backward_ms: f64,
}

/// Time each layer of the seed CNN alone at the shapes of a `[batch, 1, 128, 32]` step, on the
/// given kernels (Candle's ops are the "before": with Candle's own `max_pool2d`). The layers
/// and their input shapes come from the network's description ([`crate::model::CnnConfig`]).
/// Backward is the backward pass of `sum(out * r)` minus that of the same expression on a plain
/// variable of the output's shape, so only the layer's own gradient is counted. Median of `steps`.
pub fn profile_layers(
    batch: usize,
    steps: usize,
    kernels: crate::model::Kernels,
) -> Result<Vec<LayerTiming>> {
    use crate::model::kernels as k;
    use crate::model::{CnnConfig, Kernels};
    use candle_core::{Device, Module, ModuleT, Tensor, Var};
    use rand::{Rng, SeedableRng};

    anyhow::ensure!(batch > 0 && steps > 0, "batch and steps must be at least 1");
    let dev = Device::Cpu;
    let arch = CnnConfig::default();
    let (_, model) = crate::model::init_varmap(&arch, 0, &dev)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut random = |dims: &[usize], var: bool| -> Result<Tensor> {
        let v: Vec<f32> = (0..dims.iter().product()).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let t = Tensor::from_vec(v, dims, &dev)?;
        // Data entering conv1 needs no gradient (the fused kernel skips it); all else does.
        Ok(if var { Var::from_tensor(&t)?.as_tensor().clone() } else { t })
    };
    let ours = kernels == Kernels::Fused;
    type Layer<'a> = Box<dyn Fn() -> candle_core::Result<Tensor> + 'a>;
    let mut layers: Vec<(String, Layer)> = Vec::new();
    let (mut cin, mut m, mut t) = (1, arch.n_mels, arch.n_frames);
    for (n, block) in model.blocks().iter().enumerate() {
        let cout = block.conv.weight().dim(0)?;
        let x = random(&[batch, cin, m, t], n > 0)?;
        let a = random(&[batch, cout, m, t], true)?;
        let conv = &block.conv;
        layers.push((
            format!("conv{} ({cin}->{cout}, {m}x{t})", n + 1),
            Box::new(move || match (ours, conv.bias()) {
                (true, Some(b)) => k::conv2d(&x, conv.weight(), b, 1),
                _ => conv.forward(&x),
            }),
        ));
        let bn = &block.bn;
        layers.push((
            format!("bn{} + relu + max-pool", n + 1),
            Box::new(move || match ours {
                true => k::batch_norm_relu_max_pool2d(&a, bn, 1e-5),
                false => bn.forward_t(&a, true)?.relu()?.max_pool2d(2),
            }),
        ));
        (cin, m, t) = (cout, m / 2, t / 2);
    }
    let f1 = random(&[batch, arch.flat_dim()], true)?;
    let fc1 = model.fc1().ok_or_else(|| anyhow::anyhow!("the profile measures the CNN"))?;
    layers.push((
        format!("fc1 ({}->{})", arch.flat_dim(), arch.hidden),
        Box::new(move || match ours {
            true => k::linear(&f1, fc1),
            false => fc1.forward(&f1),
        }),
    ));
    layers.iter().map(|(name, layer)| time_layer(name, layer, steps)).collect()
}

/// Median forward and own-backward milliseconds of one layer over `steps` calls.
fn time_layer(
    name: &str,
    layer: &dyn Fn() -> candle_core::Result<Tensor>,
    steps: usize,
) -> Result<LayerTiming> {
    use candle_core::{Tensor, Var};
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (mut fwd, mut bwd) = (Vec::new(), Vec::new());
    for step in 0..steps + 1 {
        let t0 = Instant::now();
        let out = layer()?;
        let t1 = Instant::now();
        let probe = Tensor::ones(out.shape(), out.dtype(), out.device())?;
        let loss = out.mul(&probe)?.sum_all()?;
        let t2 = Instant::now();
        loss.backward()?;
        let t3 = Instant::now();
        let plain = Var::from_tensor(&out.detach())?;
        let base = plain.as_tensor().mul(&probe)?.sum_all()?;
        let t4 = Instant::now();
        base.backward()?;
        let t5 = Instant::now();
        if step > 0 {
            fwd.push((t1 - t0).as_secs_f64() * 1e3);
            bwd.push(((t3 - t2).as_secs_f64() - (t5 - t4).as_secs_f64()).max(0.0) * 1e3);
        }
    }
    Ok(LayerTiming { layer: name.to_string(), forward_ms: median(fwd), backward_ms: median(bwd) })
}

/// Cost and checks of relevance maps on real recordings, for `audio-mnist bench-explain`.
#[derive(Clone, Debug, Serialize)]
pub struct ExplainBench {
    pub files: usize,
    pub networks: usize,
    pub threads: usize,
    pub steps: usize,
    /// Integrated Gradients, one file at a time: median and mean milliseconds per file.
    pub ig_ms_median: f64,
    pub ig_ms_mean: f64,
    /// Gradient x input, one file at a time: median milliseconds per file.
    pub gxi_ms_median: f64,
    /// |Σ map - (f(x) - f(b))| / |f(x) - f(b)| at `steps`: mean and worst over the files.
    pub completeness_gap_mean: f64,
    pub completeness_gap_max: f64,
    /// The same at 256 steps.
    pub completeness_gap_256_max: f64,
    /// Spearman rank correlation of each file's map with the map from re-initialised weights
    /// (the model-randomisation check): mean over files, of the signed maps and of |map|.
    pub randomised_rank_correlation: f64,
    pub randomised_rank_correlation_abs: f64,
}

/// Time and check relevance maps for the predicted class of (at most `limit` of) `inputs`.
pub fn bench_explain(
    model: &Path,
    inputs: &[std::path::PathBuf],
    steps: usize,
    limit: usize,
) -> Result<ExplainBench> {
    use crate::explain::{rank_correlation, silence_db, Explainer, Method, Relevance};
    let predictor = crate::infer::Predictor::load(model)?;
    let (all, _) = crate::infer::collect_inputs(inputs)?;
    // Evenly spaced over the (sorted) inputs, so every digit is in a sample of a folder.
    let step = all.len().div_ceil(limit.max(1)).max(1);
    let files: Vec<std::path::PathBuf> = all.into_iter().step_by(step).collect();
    let (mut images, mut classes) = (Vec::new(), Vec::new());
    for (_, r) in predictor.predict_files_with_features(&files) {
        if let Ok((p, Some(image))) = r {
            classes.push(crate::eval::argmax(&p.probabilities));
            images.push(image);
        }
    }
    anyhow::ensure!(!images.is_empty(), "no recording with sound among {} file(s)", files.len());
    let time_each = |ex: &Explainer| -> Result<(Vec<f64>, Vec<Relevance>)> {
        ex.explain(&images[0], &classes[..1])?; // warm-up
        let (mut ms, mut maps) = (Vec::new(), Vec::new());
        for (image, &class) in images.iter().zip(&classes) {
            let start = Instant::now();
            maps.extend(ex.explain(image, &[class])?);
            ms.push(start.elapsed().as_secs_f64() * 1e3);
        }
        Ok((ms, maps))
    };
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ig = predictor.explainer(Method::IntegratedGradients { steps })?;
    let (ig_ms, maps) = time_each(&ig)?;
    let (gxi_ms, _) = time_each(&predictor.explainer(Method::GradientTimesInput)?)?;
    let gaps: Vec<f64> = maps.iter().map(|r| r.completeness_gap() as f64).collect();
    let all: Vec<f32> = images.concat();
    let fine = predictor.explainer(Method::IntegratedGradients { steps: 256 })?.explain(&all, &classes)?;
    let random = crate::explain::randomised(predictor.model(), 1234)?;
    let shuffled = Explainer::new(
        &random,
        silence_db(&predictor.meta().features),
        Method::IntegratedGradients { steps },
        &predictor.device(),
    )?
    .explain(&all, &classes)?;
    let abs = |r: &Relevance| r.map.iter().map(|v| v.abs()).collect::<Vec<f32>>();
    let n = maps.len() as f64;
    Ok(ExplainBench {
        files: maps.len(),
        networks: predictor.model().members.len(),
        threads: rayon::current_num_threads(),
        steps,
        ig_ms_mean: ig_ms.iter().sum::<f64>() / n,
        ig_ms_median: median(ig_ms),
        gxi_ms_median: median(gxi_ms),
        completeness_gap_mean: gaps.iter().sum::<f64>() / n,
        completeness_gap_max: gaps.iter().cloned().fold(0.0, f64::max),
        completeness_gap_256_max: fine.iter().map(|r| r.completeness_gap() as f64).fold(0.0, f64::max),
        randomised_rank_correlation: maps
            .iter()
            .zip(&shuffled)
            .map(|(a, b)| rank_correlation(&a.map, &b.map))
            .sum::<f64>()
            / n,
        randomised_rank_correlation_abs: maps
            .iter()
            .zip(&shuffled)
            .map(|(a, b)| rank_correlation(&abs(a), &abs(b)))
            .sum::<f64>()
            / n,
    })
}
