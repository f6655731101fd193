//! CPU kernels for the CNN's layers, as Candle custom ops with forward and backward passes.
//!
//! Candle's CPU conv2d backward runs direct loops (most of a training step, see README
//! "Training speed"), and its batch-norm, ReLU and max-pool each make several full passes
//! over the activations. Here:
//! - [`conv2d`]: im2col + one `gemm` per sample; backward recomputes the columns and gets
//!   the weight gradient and the input gradient from two more `gemm`s (col2im for the latter),
//!   and skips the input gradient when the input is data (the first layer).
//! - [`batch_norm_relu_max_pool2d`]: batch-norm with batch statistics, ReLU and 2x2 max-pool
//!   fused into one pass forward and two backward (max-pool routes to the first maximum, as
//!   PyTorch does); [`conv_bn_relu_max_pool2d_eval`] fuses all four for inference, so the
//!   convolution's output never leaves the cache.
//! - [`linear`]: `x · wᵀ + b` whose weight gradient comes out in the weight's own layout.
//!
//! Every op works on contiguous f32 tensors on the CPU; the model uses Candle's own ops on
//! other devices. Work is split over samples (or fixed groups of samples) and partial sums are
//! added in a fixed order, so results do not depend on the number of threads.

use candle_core::{bail, CpuStorage, CustomOp3, Device, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

/// Samples per work item in backward passes whose partial weight gradients are summed: fixed,
/// so the order of the additions never depends on the thread count.
const GROUP: usize = 4;

fn cpu_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = s else { bail!("{what}: expected f32 values") };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("{what}: expected a contiguous tensor"),
    }
}

/// Run `f` on the f32 values of a CPU tensor without copying them (unless not contiguous).
fn with_values<R>(t: &Tensor, what: &str, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(s) = &*storage else { bail!("{what}: expected a CPU tensor") };
    f(cpu_slice(s, layout, what)?)
}

fn tensor(values: Vec<f32>, dims: &[usize]) -> Result<Tensor> {
    Tensor::from_vec(values, dims, &Device::Cpu)
}

/// `dst[m×n] = a[m×k] · b[k×n]` (or `+=` with `accumulate`), every matrix given as a slice and
/// its row and column strides.
#[allow(clippy::too_many_arguments)]
fn gemm(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    (a, a_rs, a_cs): (&[f32], usize, usize),
    (b, b_rs, b_cs): (&[f32], usize, usize),
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rs: usize, cs: usize, r: usize, c: usize| (r - 1) * rs + (c - 1) * cs;
    assert!(last(dst_rs, 1, m, n) < dst.len(), "gemm: destination too short");
    if k == 0 {
        if !accumulate {
            (0..m).for_each(|i| dst[i * dst_rs..i * dst_rs + n].fill(0.0));
        }
        return;
    }
    assert!(last(a_rs, a_cs, m, k) < a.len() && last(b_rs, b_cs, k, n) < b.len(), "gemm: input too short");
    let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the asserts above keep every index the strides reach inside the slices, and
    // `dst` is borrowed mutably, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// Geometry of a stride-1, zero-padded 2-D convolution.
#[derive(Clone, Copy, Debug)]
struct ConvGeometry {
    batch: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    kh: usize,
    kw: usize,
    pad: usize,
}

impl ConvGeometry {
    fn new(x: &Layout, w: &Layout, b: &Layout, pad: usize) -> Result<Self> {
        let (batch, c_in, h, wd) = x.shape().dims4()?;
        let (c_out, wc, kh, kw) = w.shape().dims4()?;
        if wc != c_in || b.shape().dims1()? != c_out {
            bail!("conv2d: input {:?}, weight {:?}, bias {:?} disagree", x.shape(), w.shape(), b.shape())
        }
        if h + 2 * pad < kh || wd + 2 * pad < kw {
            bail!("conv2d: kernel {kh}x{kw} larger than padded input {h}x{wd} (padding {pad})")
        }
        Ok(Self { batch, c_in, h, w: wd, c_out, kh, kw, pad })
    }
    fn ho(&self) -> usize {
        self.h + 2 * self.pad + 1 - self.kh
    }
    fn wo(&self) -> usize {
        self.w + 2 * self.pad + 1 - self.kw
    }
    /// Rows of the column matrix: one per input channel and kernel tap.
    fn k(&self) -> usize {
        self.c_in * self.kh * self.kw
    }
    fn in_len(&self) -> usize {
        self.c_in * self.h * self.w
    }
    fn out_len(&self) -> usize {
        self.c_out * self.ho() * self.wo()
    }
    fn cols_len(&self) -> usize {
        self.k() * self.ho() * self.wo()
    }
    /// For kernel column `kj`: the output columns whose input column is inside the image.
    fn valid_cols(&self, kj: usize) -> (usize, usize) {
        let lo = self.pad.saturating_sub(kj).min(self.wo());
        let hi = (self.w + self.pad).saturating_sub(kj).min(self.wo()).max(lo);
        (lo, hi)
    }
}

/// librosa would call it a frame matrix: `cols[(c, ki, kj), (oy, ox)] = x[c, oy+ki-pad, ox+kj-pad]`
/// (zero outside the image).
fn im2col(g: &ConvGeometry, x: &[f32], cols: &mut [f32]) {
    let (ho, wo) = (g.ho(), g.wo());
    let mut rows = cols.chunks_exact_mut(ho * wo);
    for c in 0..g.c_in {
        let plane = &x[c * g.h * g.w..][..g.h * g.w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = rows.next().expect("cols holds k rows");
                let (lo, hi) = g.valid_cols(kj);
                for oy in 0..ho {
                    let dst = &mut row[oy * wo..][..wo];
                    let iy = (oy + ki) as isize - g.pad as isize;
                    if iy < 0 || iy >= g.h as isize {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &plane[iy as usize * g.w..][..g.w];
                    dst[..lo].fill(0.0);
                    dst[hi..].fill(0.0);
                    dst[lo..hi].copy_from_slice(&src[lo + kj - g.pad..hi + kj - g.pad]);
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: `dx[c, iy, ix] += Σ cols[(c, ki, kj), (oy, ox)]`.
fn col2im_add(g: &ConvGeometry, cols: &[f32], dx: &mut [f32]) {
    let (ho, wo) = (g.ho(), g.wo());
    let mut rows = cols.chunks_exact(ho * wo);
    for c in 0..g.c_in {
        let plane = &mut dx[c * g.h * g.w..][..g.h * g.w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = rows.next().expect("cols holds k rows");
                let (lo, hi) = g.valid_cols(kj);
                for oy in 0..ho {
                    let iy = (oy + ki) as isize - g.pad as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let dst = &mut plane[iy as usize * g.w..][..g.w][lo + kj - g.pad..hi + kj - g.pad];
                    for (d, s) in dst.iter_mut().zip(&row[oy * wo + lo..oy * wo + hi]) {
                        *d += s;
                    }
                }
            }
        }
    }
}

/// One sample's convolution: `out[c_out, ho*wo] = bias + w[c_out, k] · cols[k, ho*wo]`.
fn conv_sample(g: &ConvGeometry, x: &[f32], w: &[f32], bias: &[f32], cols: &mut [f32], out: &mut [f32]) {
    let hw = g.ho() * g.wo();
    im2col(g, x, cols);
    for (row, &b) in out.chunks_exact_mut(hw).zip(bias) {
        row.fill(b);
    }
    gemm((g.c_out, hw, g.k()), out, hw, true, (w, g.k(), 1), (cols, hw, 1), 1);
}

/// Stride-1 2-D convolution with zero padding: `x [B, C_in, H, W]`, `w [C_out, C_in, KH, KW]`,
/// `b [C_out]` -> `[B, C_out, H+2p-KH+1, W+2p-KW+1]`.
struct Conv2d {
    pad: usize,
}

impl CustomOp3 for Conv2d {
    fn name(&self) -> &'static str {
        "audio-mnist-conv2d"
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
        let mut out = vec![0f32; g.batch * g.out_len()];
        out.par_chunks_mut(g.out_len().max(1))
            .zip(x.par_chunks(g.in_len().max(1)))
            .for_each_init(|| vec![0f32; g.cols_len()], |cols, (o, xb)| conv_sample(&g, xb, w, b, cols, o));
        Ok((CpuStorage::F32(out), Shape::from((g.batch, g.c_out, g.ho(), g.wo()))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = ConvGeometry::new(x.layout(), w.layout(), b.layout(), self.pad)?;
        // The first layer's input is data: nobody wants its gradient.
        let need_dx = x.track_op();
        let (hw, k) = (g.ho() * g.wo(), g.k());
        with_values(x, "conv2d input", |xv| {
            with_values(w, "conv2d weight", |wv| {
                with_values(grad, "conv2d gradient", |gv| {
                    let mut dx = if need_dx { vec![0f32; g.batch * g.in_len()] } else { Vec::new() };
                    let group_in = GROUP * g.in_len();
                    let mut dx_groups: Vec<&mut [f32]> =
                        if need_dx { dx.chunks_mut(group_in.max(1)).collect() } else { Vec::new() };
                    let groups = g.batch.div_ceil(GROUP);
                    dx_groups.resize_with(groups, || &mut []);
                    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx_groups
                        .into_par_iter()
                        .enumerate()
                        .map(|(gi, dxg)| {
                            let mut cols = vec![0f32; g.cols_len()];
                            let mut dcols = if need_dx { vec![0f32; g.cols_len()] } else { Vec::new() };
                            let mut dw = vec![0f32; g.c_out * k];
                            let mut db = vec![0f32; g.c_out];
                            for s in gi * GROUP..((gi + 1) * GROUP).min(g.batch) {
                                let gs = &gv[s * g.out_len()..][..g.out_len()];
                                im2col(&g, &xv[s * g.in_len()..][..g.in_len()], &mut cols);
                                // dw[c_out, k] += grad[c_out, hw] · colsᵀ[hw, k]
                                gemm((g.c_out, k, hw), &mut dw, k, true, (gs, hw, 1), (&cols, 1, hw), 1);
                                for (d, row) in db.iter_mut().zip(gs.chunks_exact(hw.max(1))) {
                                    *d += row.iter().sum::<f32>();
                                }
                                if need_dx {
                                    // dcols[k, hw] = wᵀ[k, c_out] · grad[c_out, hw]
                                    gemm((k, hw, g.c_out), &mut dcols, hw, false, (wv, 1, k), (gs, hw, 1), 1);
                                    let local = (s - gi * GROUP) * g.in_len();
                                    col2im_add(&g, &dcols, &mut dxg[local..local + g.in_len()]);
                                }
                            }
                            (dw, db)
                        })
                        .collect();
                    let (mut dw, mut db) = (vec![0f32; g.c_out * k], vec![0f32; g.c_out]);
                    for (pw, pb) in partials {
                        dw.iter_mut().zip(pw).for_each(|(a, b)| *a += b);
                        db.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
                    }
                    let dx = if need_dx { Some(tensor(dx, x.dims())?) } else { None };
                    Ok((dx, Some(tensor(dw, w.dims())?), Some(tensor(db, b.dims())?)))
                })
            })
        })
    }
}

/// Stride-1 zero-padded convolution (Candle's `conv2d` with `padding = pad`, plus the bias).
pub fn conv2d(x: &Tensor, w: &Tensor, b: &Tensor, pad: usize) -> Result<Tensor> {
    x.contiguous()?.apply_op3_arc(w, b, std::sync::Arc::new(Box::new(Conv2d { pad })))
}

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
/// sample so the convolution's output stays in cache. No backward pass.
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

/// `x [B, in] · wᵀ + b` with `w [out, in]`, `b [out]` -> `[B, out]`.
struct Linear;

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "audio-mnist-linear"
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
        let ((batch, d_in), (d_out, w_in)) = (l1.shape().dims2()?, l2.shape().dims2()?);
        if w_in != d_in || l3.shape().dims1()? != d_out {
            bail!("linear: input {:?}, weight {:?}, bias {:?} disagree", l1.shape(), l2.shape(), l3.shape())
        }
        let (x, w, b) =
            (cpu_slice(s1, l1, "linear input")?, cpu_slice(s2, l2, "weight")?, cpu_slice(s3, l3, "bias")?);
        let mut out = vec![0f32; batch * d_out];
        for row in out.chunks_exact_mut(d_out.max(1)) {
            row.copy_from_slice(b);
        }
        let threads = rayon::current_num_threads();
        gemm((batch, d_out, d_in), &mut out, d_out, true, (x, d_in, 1), (w, 1, d_in), threads);
        Ok((CpuStorage::F32(out), Shape::from((batch, d_out))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let ((batch, d_in), d_out) = (x.dims2()?, w.dim(0)?);
        let threads = rayon::current_num_threads();
        with_values(x, "linear input", |xv| {
            with_values(w, "linear weight", |wv| {
                with_values(grad, "linear gradient", |gv| {
                    let dx = if x.track_op() {
                        let mut dx = vec![0f32; batch * d_in];
                        gemm(
                            (batch, d_in, d_out),
                            &mut dx,
                            d_in,
                            false,
                            (gv, d_out, 1),
                            (wv, d_in, 1),
                            threads,
                        );
                        Some(tensor(dx, x.dims())?)
                    } else {
                        None
                    };
                    let mut dw = vec![0f32; d_out * d_in];
                    gemm((d_out, d_in, batch), &mut dw, d_in, false, (gv, 1, d_out), (xv, d_in, 1), threads);
                    let mut db = vec![0f32; d_out];
                    for row in gv.chunks_exact(d_out.max(1)) {
                        db.iter_mut().zip(row).for_each(|(d, g)| *d += g);
                    }
                    Ok((dx, Some(tensor(dw, w.dims())?), Some(tensor(db, &[d_out])?)))
                })
            })
        })
    }
}

/// A fully connected layer, `x · wᵀ + b`.
pub fn linear(x: &Tensor, layer: &candle_nn::Linear) -> Result<Tensor> {
    let Some(b) = layer.bias() else { bail!("linear layer without bias") };
    x.contiguous()?.apply_op3_arc(layer.weight(), b, std::sync::Arc::new(Box::new(Linear)))
}
