//! Relevance maps: how much each log-Mel cell made the network answer a class.
//!
//! Both methods explain the class's **logit** (before the softmax, so that the numbers add up)
//! relative to a **baseline image**: the silent image, every cell at the feature floor
//! (`-top_db` dB, what the padding after a short word looks like). A cell's relevance is in
//! logit units; the map of an ensemble is the mean of its networks' maps.
//! - [`Method::IntegratedGradients`] (Sundararajan et al., 2017): `(x - b) ⊙ ∫₀¹ ∇f(b + α(x - b)) dα`,
//!   the integral by the midpoint rule over `steps` points, all in one batch. The map sums to
//!   `f(x) - f(b)` (completeness) up to the rule's error, which [`Relevance::completeness_gap`]
//!   reports.
//! - [`Method::GradientTimesInput`]: `(x - b) ⊙ ∇f(x)`, one backward pass (for a ReLU network
//!   without biases this is LRP-0); cheaper, and sums to `f(x) - f(b)` only approximately.
//!
//! The gradient comes from the network's own forward path: our fused CPU kernels (whose
//! inference block has an input-gradient backward pass) or Candle's ops on other devices.

pub mod colour;
#[cfg(feature = "train")]
pub mod picture;

use anyhow::{ensure, Result};
use candle_core::{Device, Tensor, Var};
use serde::Serialize;

use crate::model::{Classifier, Cnn, Member};

/// How the relevance is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "method")]
pub enum Method {
    IntegratedGradients { steps: usize },
    GradientTimesInput,
}

impl Default for Method {
    /// Integrated Gradients with 32 steps: completeness within a few percent on the networks
    /// measured (support/RESULTS.md, "Why did it hear an 8?").
    fn default() -> Self {
        Method::IntegratedGradients { steps: 32 }
    }
}

impl Method {
    /// The interpolation points α between the baseline (0) and the input (1).
    fn alphas(&self) -> Vec<f32> {
        match *self {
            Method::IntegratedGradients { steps } => {
                (0..steps).map(|k| (k as f32 + 0.5) / steps as f32).collect()
            }
            Method::GradientTimesInput => vec![1.0],
        }
    }

    pub fn name(&self) -> String {
        match self {
            Method::IntegratedGradients { steps } => format!("Integrated Gradients ({steps} steps)"),
            Method::GradientTimesInput => "gradient x input".to_string(),
        }
    }
}

/// The relevance of every log-Mel cell of one image for one class.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Relevance {
    pub class: usize,
    pub n_mels: usize,
    pub n_frames: usize,
    /// `n_mels x n_frames`, band-major like the features; logit units.
    pub map: Vec<f32>,
    /// The class's logit for the image, `f(x)` (mean over an ensemble's networks).
    pub score: f32,
    /// The class's logit for the baseline, `f(b)`.
    pub baseline_score: f32,
}

impl Relevance {
    /// Summed over frames: one value per mel band (low to high).
    pub fn per_band(&self) -> Vec<f32> {
        self.map.chunks_exact(self.n_frames).map(|row| row.iter().sum()).collect()
    }

    /// Summed over bands: one value per frame.
    pub fn per_frame(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.n_frames];
        for row in self.map.chunks_exact(self.n_frames) {
            out.iter_mut().zip(row).for_each(|(o, v)| *o += v);
        }
        out
    }

    pub fn total(&self) -> f32 {
        self.map.iter().sum()
    }

    /// `|Σ map - (f(x) - f(b))| / |f(x) - f(b)|`: 0 for an exact Integrated Gradients.
    pub fn completeness_gap(&self) -> f32 {
        let delta = self.score - self.baseline_score;
        (self.total() - delta).abs() / delta.abs().max(1e-12)
    }
}

/// Computes relevance maps for a model: its networks with constant weights (so the backward
/// pass computes the input's gradient only).
pub struct Explainer {
    nets: Vec<(Cnn, f32, f32)>,
    baseline_db: f32,
    method: Method,
    device: Device,
}

/// Rows per forward/backward batch (Integrated Gradients' steps of several images together).
const BATCH_ROWS: usize = 64;

impl Explainer {
    /// `baseline_db`: the baseline image's value in every cell ([`silence_db`]).
    pub fn new(model: &Classifier, baseline_db: f32, method: Method, device: &Device) -> Result<Self> {
        ensure!(!model.members.is_empty(), "a classifier without networks");
        if let Method::IntegratedGradients { steps } = method {
            ensure!(steps > 0, "Integrated Gradients needs at least one step");
        }
        let nets =
            model.members.iter().map(|m| Ok((m.net.detached()?, m.mean, m.std))).collect::<Result<_>>()?;
        Ok(Self { nets, baseline_db, method, device: device.clone() })
    }

    pub fn method(&self) -> Method {
        self.method
    }

    pub fn baseline_db(&self) -> f32 {
        self.baseline_db
    }

    /// One relevance map per (image, class): `images` holds `classes.len()` log-Mel images in
    /// dB (unstandardised), one after the other.
    pub fn explain(&self, images: &[f32], classes: &[usize]) -> Result<Vec<Relevance>> {
        let config = self.nets[0].0.config();
        let len = config.n_mels * config.n_frames;
        ensure!(
            images.len() == classes.len() * len,
            "{} values for {} images of {len}",
            images.len(),
            classes.len()
        );
        ensure!(classes.iter().all(|&c| c < config.classes), "a class beyond the model's {}", config.classes);
        let mut sum: Option<Vec<Relevance>> = None;
        for (net, mean, std) in &self.nets {
            let maps = self.explain_net(net, (*mean, *std), images, classes)?;
            sum = Some(match sum {
                None => maps,
                Some(mut s) => {
                    for (a, b) in s.iter_mut().zip(maps) {
                        a.map.iter_mut().zip(b.map).for_each(|(x, y)| *x += y);
                        a.score += b.score;
                        a.baseline_score += b.baseline_score;
                    }
                    s
                }
            });
        }
        let n = self.nets.len() as f32;
        let mut out = sum.unwrap_or_default();
        for r in &mut out {
            r.map.iter_mut().for_each(|v| *v /= n);
            r.score /= n;
            r.baseline_score /= n;
        }
        Ok(out)
    }

    /// One network's maps, in batches of about [`BATCH_ROWS`] interpolated images.
    fn explain_net(
        &self,
        net: &Cnn,
        (mean, std): (f32, f32),
        images: &[f32],
        classes: &[usize],
    ) -> Result<Vec<Relevance>> {
        let c = net.config();
        let len = c.n_mels * c.n_frames;
        let standardise = |v: f32| (v - mean) / std;
        let base = standardise(self.baseline_db);
        let alphas = self.method.alphas();
        let per_batch = (BATCH_ROWS / alphas.len()).max(1);
        let mut out = Vec::with_capacity(classes.len());
        for (chunk, cls) in images.chunks(per_batch * len).zip(classes.chunks(per_batch)) {
            let x: Vec<f32> = chunk.iter().map(|&v| standardise(v)).collect();
            let grads = self.mean_gradient(net, &x, base, cls, &alphas)?;
            let scores = self.logits(net, &x, base, cls)?;
            for (i, &class) in cls.iter().enumerate() {
                let xi = &x[i * len..][..len];
                let map = xi.iter().zip(&grads[i * len..][..len]).map(|(v, g)| (v - base) * g).collect();
                let (score, baseline_score) = scores[i];
                out.push(Relevance {
                    class,
                    n_mels: c.n_mels,
                    n_frames: c.n_frames,
                    map,
                    score,
                    baseline_score,
                });
            }
        }
        Ok(out)
    }

    /// For each image of `x` (standardised), the gradient of its class's logit averaged over
    /// the points `b + α (x - b)`: one forward and one backward pass over all of them.
    fn mean_gradient(
        &self,
        net: &Cnn,
        x: &[f32],
        base: f32,
        classes: &[usize],
        alphas: &[f32],
    ) -> Result<Vec<f32>> {
        let c = net.config();
        let len = c.n_mels * c.n_frames;
        let rows = classes.len() * alphas.len();
        let mut points = Vec::with_capacity(rows * len);
        let mut mask = vec![0f32; rows * c.classes];
        for (i, &class) in classes.iter().enumerate() {
            for (k, &a) in alphas.iter().enumerate() {
                points.extend(x[i * len..][..len].iter().map(|&v| base + a * (v - base)));
                mask[(i * alphas.len() + k) * c.classes + class] = 1.0;
            }
        }
        let input =
            Var::from_tensor(&Tensor::from_vec(points, (rows, 1, c.n_mels, c.n_frames), &self.device)?)?;
        let mask = Tensor::from_vec(mask, (rows, c.classes), &self.device)?;
        let objective = net.forward_t(input.as_tensor(), None)?.mul(&mask)?.sum_all()?;
        let grads = objective.backward()?;
        let g =
            grads.get(input.as_tensor()).ok_or_else(|| anyhow::anyhow!("no gradient reached the input"))?;
        let g = g.flatten_all()?.to_vec1::<f32>()?;
        let mut mean = vec![0f32; classes.len() * len];
        for (i, m) in mean.chunks_exact_mut(len).enumerate() {
            for k in 0..alphas.len() {
                m.iter_mut().zip(&g[(i * alphas.len() + k) * len..][..len]).for_each(|(a, b)| *a += b);
            }
            m.iter_mut().for_each(|a| *a /= alphas.len() as f32);
        }
        Ok(mean)
    }

    /// `(f(x), f(b))` of each image's class.
    fn logits(&self, net: &Cnn, x: &[f32], base: f32, classes: &[usize]) -> Result<Vec<(f32, f32)>> {
        let c = net.config();
        let len = c.n_mels * c.n_frames;
        let mut rows = x.to_vec();
        rows.extend(std::iter::repeat_n(base, len));
        let t = Tensor::from_vec(rows, (classes.len() + 1, 1, c.n_mels, c.n_frames), &self.device)?;
        let logits = net.forward_t(&t, None)?.to_vec2::<f32>()?;
        let b = &logits[classes.len()];
        Ok(classes.iter().enumerate().map(|(i, &k)| (logits[i][k], b[k])).collect())
    }
}

/// The same networks with freshly initialised weights (from `seed`) and the same inputs'
/// standardisation: the model-randomisation sanity check compares their maps with the
/// trained ones'.
pub fn randomised(model: &Classifier, seed: u64) -> Result<Classifier> {
    let members = model
        .members
        .iter()
        .enumerate()
        .map(|(k, m)| {
            let device = m.net.device();
            let (_, net) = crate::model::init_varmap(m.net.config(), seed + k as u64, &device)?;
            Ok(Member { net, mean: m.mean, std: m.std, temperature: 1.0 })
        })
        .collect::<Result<_>>()?;
    Ok(Classifier { members })
}

/// The silent image's value: the feature floor, `-top_db` dB below the loudest cell.
pub fn silence_db(config: &crate::dsp::features::FeatureConfig) -> f32 {
    -config.top_db
}

/// Spearman's rank correlation of two equally long series (ties get their mean rank).
pub fn rank_correlation(a: &[f32], b: &[f32]) -> f64 {
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len() as f64;
    let mean = (n - 1.0) / 2.0;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        sab += (x - mean) * (y - mean);
        saa += (x - mean) * (x - mean);
        sbb += (y - mean) * (y - mean);
    }
    sab / (saa * sbb).sqrt().max(1e-300)
}

fn ranks(v: &[f32]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
    let mut r = vec![0f64; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        for &k in &order[i..=j] {
            r[k] = (i + j) as f64 / 2.0;
        }
        i = j + 1;
    }
    r
}
