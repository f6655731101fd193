//! Batch-norm + ReLU + 2x2 max-pool fused (training), and conv + all three fused (inference).

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::conv::{col2im_add, conv_sample, ConvGeometry};
use super::{cpu_slice, gemm, tensor, with_values};

/// `out = max-pool 2x2 (ReLU(x * scale + shift))` for one channel plane `[h, w]`; odd last
/// rows/columns are dropped, as PyTorch's `MaxPool2d(2)` does. With `argmax`, also records for
/// each window where its first maximum is (`DEAD` if it did not pass the ReLU).
fn affine_relu_pool_plane(
    x: &[f32],
    (h, w): (usize, usize),
    scale: f32,
    shift: f32,
    out: &mut [f32],
    mut argmax: Option<&mut [u32]>,
) {
    let (ho, wo) = (h / 2, w / 2);
    for i in 0..ho {
        let (r0, r1) = (&x[2 * i * w..][..w], &x[(2 * i + 1) * w..][..w]);
        for j in 0..wo {
            let (a, b) = (2 * i * w + 2 * j, (2 * i + 1) * w + 2 * j);
            let v = [r0[2 * j], r0[2 * j + 1], r1[2 * j], r1[2 * j + 1]].map(|x| x * scale + shift);
            let (mut best, mut at) = (v[0], a);
            for (q, pos) in [(1, a + 1), (2, b), (3, b + 1)] {
                if v[q] > best {
                    (best, at) = (v[q], pos);
                }
            }
            out[i * wo + j] = best.max(0.0);
            if let Some(arg) = argmax.as_deref_mut() {
                arg[i * wo + j] = if best > 0.0 { at as u32 } else { DEAD };
            }
        }
    }
}

/// A pooling window whose maximum did not pass the ReLU: no gradient.
const DEAD: u32 = u32::MAX;

/// Per-channel mean and biased variance of `x [B, C, H, W]` (f64 sums, fixed order).
fn channel_stats(x: &[f32], (batch, c, hw): (usize, usize, usize)) -> (Vec<f64>, Vec<f64>) {
    let sums: Vec<(f64, f64)> = x
        .par_chunks(hw.max(1))
        .map(|p| p.iter().fold((0f64, 0f64), |(s, q), &v| (s + v as f64, q + (v as f64) * (v as f64))))
        .collect();
    let n = (batch * hw).max(1) as f64;
    let (mut mean, mut var) = (vec![0f64; c], vec![0f64; c]);
    for (i, (s, q)) in sums.into_iter().enumerate() {
        mean[i % c] += s;
        var[i % c] += q;
    }
    for ch in 0..c {
        mean[ch] /= n;
        var[ch] = (var[ch] / n - mean[ch] * mean[ch]).max(0.0);
    }
    (mean, var)
}

/// Batch-norm with given batch statistics, ReLU and 2x2 max-pool: `x [B, C, H, W]`,
/// `gamma [C]`, `beta [C]` -> `[B, C, H/2, W/2]`.
struct BnReluPool {
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    /// Per pooled output, the position of its window's maximum in the input plane (forward
    /// finds it; backward routes the gradient there).
    argmax: std::sync::Mutex<Vec<u32>>,
}

impl BnReluPool {
    fn scale_shift(&self, gamma: &[f32], beta: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let scale: Vec<f32> = gamma.iter().zip(&self.inv_std).map(|(g, i)| g * i).collect();
        let shift = beta.iter().zip(&self.mean).zip(&scale).map(|((b, m), s)| b - m * s).collect();
        (scale, shift)
    }
}

impl CustomOp3 for BnReluPool {
    fn name(&self) -> &'static str {
        "audio-mnist-batch-norm-relu-max-pool2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (batch, c, h, w) = l1.shape().dims4()?;
        let x = cpu_slice(s1, l1, "batch-norm input")?;
        let (gamma, beta) = (cpu_slice(s2, l2, "batch-norm weight")?, cpu_slice(s3, l3, "batch-norm bias")?);
        if gamma.len() != c || beta.len() != c || self.mean.len() != c {
            bail!("batch-norm: {c} channels but {} weights, {} biases", gamma.len(), beta.len())
        }
        let (scale, shift) = self.scale_shift(gamma, beta);
        let (ho, wo) = (h / 2, w / 2);
        let mut out = vec![0f32; batch * c * ho * wo];
        let mut argmax = vec![DEAD; out.len()];
        out.par_chunks_mut((ho * wo).max(1))
            .zip(argmax.par_chunks_mut((ho * wo).max(1)))
            .zip(x.par_chunks((h * w).max(1)))
            .enumerate()
            .for_each(|(p, ((o, arg), xp))| {
                affine_relu_pool_plane(xp, (h, w), scale[p % c], shift[p % c], o, Some(arg))
            });
        *self.argmax.lock().map_err(|_| candle_core::Error::Msg("argmax lock poisoned".into()))? = argmax;
        Ok((CpuStorage::F32(out), Shape::from((batch, c, ho, wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (batch, c, h, w) = x.dims4()?;
        let (ho, wo) = (h / 2, w / 2);
        let n = (batch * h * w) as f64;
        let gamma = gamma.to_vec1::<f32>()?;
        let argmax =
            self.argmax.lock().map_err(|_| candle_core::Error::Msg("argmax lock poisoned".into()))?;
        if argmax.len() != batch * c * ho * wo {
            bail!("batch-norm backward without its forward")
        }
        with_values(x, "batch-norm input", |xv| {
            with_values(grad, "pool gradient", |gv| {
                let planes = || {
                    xv.par_chunks((h * w).max(1))
                        .zip(gv.par_chunks((ho * wo).max(1)))
                        .zip(argmax.par_chunks((ho * wo).max(1)))
                        .enumerate()
                };
                // Pass 1: dy is each pooled gradient at its window's maximum; per plane Σdy, Σdy·x̂.
                let sums: Vec<(f64, f64)> = planes()
                    .map(|(p, ((xp, gp), ap))| {
                        let (m, is) = (self.mean[p % c], self.inv_std[p % c]);
                        let (mut sdy, mut sdyx) = (0f64, 0f64);
                        for (&g, &at) in gp.iter().zip(ap).filter(|(_, &at)| at != DEAD) {
                            sdy += g as f64;
                            sdyx += g as f64 * ((xp[at as usize] - m) * is) as f64;
                        }
                        (sdy, sdyx)
                    })
                    .collect();
                let (mut dbeta, mut dgamma) = (vec![0f64; c], vec![0f64; c]);
                for (p, (a, b)) in sums.into_iter().enumerate() {
                    dbeta[p % c] += a;
                    dgamma[p % c] += b;
                }
                // Pass 2: dx = γ/σ · (dy − Σdy/N − x̂ · Σdy·x̂/N): an affine map of x everywhere,
                // plus γ/σ · dy at the maxima.
                let mut dx = vec![0f32; x.elem_count()];
                dx.par_chunks_mut((h * w).max(1)).zip(planes()).for_each(|(dxp, (p, ((xp, gp), ap)))| {
                    let ch = p % c;
                    let (m, is) = (self.mean[ch], self.inv_std[ch]);
                    let k = gamma[ch] * is;
                    let (mb, mg) = ((dbeta[ch] / n) as f32, (dgamma[ch] / n) as f32);
                    let (slope, offset) = (-k * is * mg, k * (m * is * mg - mb));
                    for (o, &v) in dxp.iter_mut().zip(xp) {
                        *o = v * slope + offset;
                    }
                    for (&g, &at) in gp.iter().zip(ap).filter(|(_, &at)| at != DEAD) {
                        dxp[at as usize] += k * g;
                    }
                });
                let to32 = |v: Vec<f64>| v.into_iter().map(|a| a as f32).collect::<Vec<f32>>();
                Ok((
                    Some(tensor(dx, x.dims())?),
                    Some(tensor(to32(dgamma), &[c])?),
                    Some(tensor(to32(dbeta), &[c])?),
                ))
            })
        })
    }
}

/// Training-mode batch-norm (batch statistics; the running statistics are updated as Candle's
/// `BatchNorm::forward_train` does), then ReLU and 2x2 max-pool, as one op.
pub fn batch_norm_relu_max_pool2d(x: &Tensor, bn: &candle_nn::BatchNorm, eps: f64) -> Result<Tensor> {
    let x = x.contiguous()?;
    let (batch, c, h, w) = x.dims4()?;
    let Some((gamma, beta)) = bn.weight_and_bias() else { bail!("batch-norm without weight and bias") };
    let (mean, var) = with_values(&x, "batch-norm input", |v| Ok(channel_stats(v, (batch, c, h * w))))?;
    let n = (batch * h * w) as f64;
    let m = bn.momentum();
    let update = |running: &Tensor, batch_value: Vec<f64>, weight: f64| -> Result<()> {
        let old = running.to_vec1::<f32>()?;
        let new: Vec<f32> =
            old.iter().zip(batch_value).map(|(&r, b)| (r as f64 * (1.0 - m) + b * weight) as f32).collect();
        candle_core::Var::from_tensor(running)?.set(&tensor(new, &[c])?)
    };
    update(bn.running_mean(), mean.clone(), m)?;
    update(bn.running_var(), var.clone(), m * n / (n - 1.0).max(1.0))?;
    let op = BnReluPool {
        mean: mean.iter().map(|&v| v as f32).collect(),
        inv_std: var.iter().map(|&v| (1.0 / (v + eps).sqrt()) as f32).collect(),
        argmax: Default::default(),
    };
    x.apply_op3_arc(gamma, beta, std::sync::Arc::new(Box::new(op)))
}

/// Inference: convolution, batch-norm with running statistics, ReLU and 2x2 max-pool, fused per
/// sample so the convolution's output stays in cache. Its backward pass gives the input's
/// gradient only (what relevance maps need); training uses the batch-statistics ops.
struct ConvBnReluPoolEval {
    pad: usize,
    scale: Vec<f32>,
    shift: Vec<f32>,
}

impl CustomOp3 for ConvBnReluPoolEval {
    fn name(&self) -> &'static str {
        "audio-mnist-conv-bn-relu-max-pool2d-eval"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = ConvGeometry::new(l1, l2, l3, self.pad)?;
        let (x, w, b) =
            (cpu_slice(s1, l1, "conv2d input")?, cpu_slice(s2, l2, "weight")?, cpu_slice(s3, l3, "bias")?);
        let (ho, wo) = (g.ho(), g.wo());
        let pooled = (ho / 2) * (wo / 2);
        let mut out = vec![0f32; g.batch * g.c_out * pooled];
        out.par_chunks_mut((g.c_out * pooled).max(1)).zip(x.par_chunks(g.in_len().max(1))).for_each_init(
            || (vec![0f32; g.cols_len()], vec![0f32; g.out_len()]),
            |(cols, conv), (o, xb)| {
                conv_sample(&g, xb, w, b, cols, conv);
                for (ch, (op, cp)) in
                    o.chunks_exact_mut(pooled.max(1)).zip(conv.chunks_exact(ho * wo)).enumerate()
                {
                    affine_relu_pool_plane(cp, (ho, wo), self.scale[ch], self.shift[ch], op, None);
                }
            },
        );
        Ok((CpuStorage::F32(out), Shape::from((g.batch, g.c_out, ho / 2, wo / 2))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        if w.track_op() || b.track_op() {
            bail!("inference conv block: no weight gradients (detach the weights, or train with batch statistics)")
        }
        let g = ConvGeometry::new(x.layout(), w.layout(), b.layout(), self.pad)?;
        let (ho, wo) = (g.ho(), g.wo());
        let (hw, pooled) = (ho * wo, (ho / 2) * (wo / 2));
        let mut dx = vec![0f32; g.batch * g.in_len()];
        with_values(x, "conv2d input", |xv| {
            with_values(w, "conv2d weight", |wv| {
                with_values(b, "conv2d bias", |bv| {
                    with_values(grad, "pool gradient", |gv| {
                        let scratch = || {
                            let conv = vec![0f32; g.out_len()];
                            (
                                vec![0f32; g.cols_len()],
                                conv.clone(),
                                conv,
                                vec![0f32; pooled],
                                vec![0u32; pooled],
                            )
                        };
                        dx.par_chunks_mut(g.in_len().max(1))
                            .zip(xv.par_chunks(g.in_len().max(1)))
                            .zip(gv.par_chunks((g.c_out * pooled).max(1)))
                            .for_each_init(scratch, |(cols, conv, dconv, out, arg), ((dxs, xs), gs)| {
                                conv_sample(&g, xs, wv, bv, cols, conv);
                                dconv.fill(0.0);
                                for ch in 0..g.c_out {
                                    let plane = &conv[ch * hw..][..hw];
                                    affine_relu_pool_plane(
                                        plane,
                                        (ho, wo),
                                        self.scale[ch],
                                        self.shift[ch],
                                        out,
                                        Some(arg),
                                    );
                                    let gp = &gs[ch * pooled..][..pooled];
                                    for (&at, &gj) in arg.iter().zip(gp).filter(|(&at, _)| at != DEAD) {
                                        dconv[ch * hw + at as usize] += gj * self.scale[ch];
                                    }
                                }
                                // dcols[k, hw] = wᵀ[k, c_out] · dconv[c_out, hw]
                                gemm(
                                    (g.k(), hw, g.c_out),
                                    cols,
                                    hw,
                                    false,
                                    (wv, 1, g.k()),
                                    (dconv, hw, 1),
                                    1,
                                );
                                col2im_add(&g, cols, dxs);
                            });
                        Ok(())
                    })
                })
            })
        })?;
        Ok((Some(tensor(dx, x.dims())?), None, None))
    }
}

/// Evaluation-mode `max_pool2d(relu(bn(conv(x))), 2)` in one op.
pub fn conv_bn_relu_max_pool2d_eval(
    x: &Tensor,
    conv: &candle_nn::Conv2d,
    bn: &candle_nn::BatchNorm,
    pad: usize,
    eps: f64,
) -> Result<Tensor> {
    let Some(bias) = conv.bias() else { bail!("conv2d without bias") };
    let Some((gamma, beta)) = bn.weight_and_bias() else { bail!("batch-norm without weight and bias") };
    let (gamma, beta) = (gamma.to_vec1::<f32>()?, beta.to_vec1::<f32>()?);
    let (mean, var) = (bn.running_mean().to_vec1::<f32>()?, bn.running_var().to_vec1::<f32>()?);
    let scale: Vec<f32> =
        gamma.iter().zip(&var).map(|(g, v)| (*g as f64 / (*v as f64 + eps).sqrt()) as f32).collect();
    let shift = beta.iter().zip(&mean).zip(&scale).map(|((b, m), s)| b - m * s).collect();
    let op = ConvBnReluPoolEval { pad, scale, shift };
    x.contiguous()?.apply_op3_arc(conv.weight(), bias, std::sync::Arc::new(Box::new(op)))
}
