//! `conv2d`: im2col + gemm forward; backward by two gemms and col2im.

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{cpu_slice, gemm, tensor, with_values, GROUP};

/// Geometry of a stride-1, zero-padded 2-D convolution.
#[derive(Clone, Copy, Debug)]
pub(super) struct ConvGeometry {
    pub(super) batch: usize,
    pub(super) c_in: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) c_out: usize,
    pub(super) kh: usize,
    pub(super) kw: usize,
    pub(super) pad: usize,
}

impl ConvGeometry {
    pub(super) fn new(x: &Layout, w: &Layout, b: &Layout, pad: usize) -> Result<Self> {
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
    pub(super) fn ho(&self) -> usize {
        self.h + 2 * self.pad + 1 - self.kh
    }
    pub(super) fn wo(&self) -> usize {
        self.w + 2 * self.pad + 1 - self.kw
    }
    /// Rows of the column matrix: one per input channel and kernel tap.
    pub(super) fn k(&self) -> usize {
        self.c_in * self.kh * self.kw
    }
    pub(super) fn in_len(&self) -> usize {
        self.c_in * self.h * self.w
    }
    pub(super) fn out_len(&self) -> usize {
        self.c_out * self.ho() * self.wo()
    }
    pub(super) fn cols_len(&self) -> usize {
        self.k() * self.ho() * self.wo()
    }
    /// For kernel column `kj`: the output columns whose input column is inside the image.
    pub(super) fn valid_cols(&self, kj: usize) -> (usize, usize) {
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
pub(super) fn col2im_add(g: &ConvGeometry, cols: &[f32], dx: &mut [f32]) {
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
pub(super) fn conv_sample(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    cols: &mut [f32],
    out: &mut [f32],
) {
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
        // The first layer's input is data in training (no gradient); the weights are constants
        // when a relevance map asks for the input's gradient.
        let (need_dx, need_dw) = (x.track_op(), w.track_op() || b.track_op());
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
                                if need_dw {
                                    im2col(&g, &xv[s * g.in_len()..][..g.in_len()], &mut cols);
                                    // dw[c_out, k] += grad[c_out, hw] · colsᵀ[hw, k]
                                    gemm((g.c_out, k, hw), &mut dw, k, true, (gs, hw, 1), (&cols, 1, hw), 1);
                                }
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
                    if !need_dw {
                        return Ok((dx, None, None));
                    }
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
