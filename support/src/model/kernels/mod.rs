//! CPU kernels for the CNN's layers, as Candle custom ops with forward and backward passes.
//!
//! Candle's CPU conv2d backward runs direct loops (most of a training step, see
//! support/RESULTS.md, "Training and inference speed"), and its batch-norm, ReLU and max-pool
//! each make several full passes over the activations. Here:
//! - [`conv2d`]: im2col + one `gemm` per sample; backward recomputes the columns and gets
//!   the weight gradient and the input gradient from two more `gemm`s (col2im for the latter),
//!   and skips the input gradient when the input is data (the first layer in training) and the
//!   weight gradients when the weights are constants (a relevance map's backward pass).
//! - [`batch_norm_relu_max_pool2d`]: batch-norm with batch statistics, ReLU and 2x2 max-pool
//!   fused into one pass forward and two backward (max-pool routes to the first maximum, as
//!   PyTorch does); [`conv_bn_relu_max_pool2d_eval`] fuses all four for inference, so the
//!   convolution's output never leaves the cache, and its backward pass gives the input's
//!   gradient (recomputing the convolution per sample) for relevance maps.
//! - [`linear`]: `x · wᵀ + b` whose weight gradient comes out in the weight's own layout.
//!
//! Every op works on contiguous f32 tensors on the CPU; the model uses Candle's own ops on
//! other devices. Work is split over samples (or fixed groups of samples) and partial sums are
//! added in a fixed order, so results do not depend on the number of threads.

mod bn_pool;
mod conv;

use candle_core::{bail, CpuStorage, CustomOp3, Device, Layout, Result, Shape, Storage, Tensor};

pub use bn_pool::{batch_norm_relu_max_pool2d, conv_bn_relu_max_pool2d_eval};
pub use conv::conv2d;

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
                    if !w.track_op() {
                        return Ok((dx, None, None)); // constant weights: a relevance map's pass
                    }
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
