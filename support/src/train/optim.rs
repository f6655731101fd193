//! AdamW with global-norm gradient clipping, fused for the CPU.
//!
//! Candle's `AdamW` builds ten temporary tensors per parameter and step, and clipping by
//! `g.sqr().sum_all()` then `g * coef` adds three more passes: ~30 ms per step for the 4.2 M
//! parameters of the seed CNN. Here each parameter is read once and updated in place (an
//! `InplaceOp2`), with the clipping factor folded in. Same formula as Candle's and PyTorch's
//! AdamW (decoupled weight decay, bias-corrected moments). On other devices Candle's AdamW
//! and tensor ops do the same work.

use std::sync::Mutex;

use anyhow::{anyhow, Result};
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, InplaceOp2, Layout, Var};
use candle_nn::optim::{Optimizer, ParamsAdamW};
use rayon::prelude::*;

/// Elements per parallel work item: fixed, so results never depend on the thread count.
const CHUNK: usize = 1 << 14;

pub struct AdamW {
    params: ParamsAdamW,
    step: i32,
    inner: Inner,
}

enum Inner {
    /// Parameters with their first and second moments.
    Cpu(Vec<(Var, Mutex<Vec<f32>>, Mutex<Vec<f32>>)>),
    Candle(Vec<Var>, candle_nn::AdamW),
}

impl AdamW {
    pub fn new(vars: Vec<Var>, params: ParamsAdamW) -> Result<Self> {
        let cpu = vars.iter().all(|v| v.device().is_cpu() && v.dtype() == DType::F32);
        let inner = if cpu {
            Inner::Cpu(
                vars.into_iter()
                    .map(|v| {
                        let n = v.elem_count();
                        (v, Mutex::new(vec![0f32; n]), Mutex::new(vec![0f32; n]))
                    })
                    .collect(),
            )
        } else {
            Inner::Candle(vars.clone(), candle_nn::AdamW::new(vars, params.clone())?)
        };
        Ok(Self { params, step: 0, inner })
    }

    pub fn learning_rate(&self) -> f64 {
        self.params.lr
    }

    pub fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr;
        if let Inner::Candle(_, opt) = &mut self.inner {
            opt.set_learning_rate(lr);
        }
    }

    /// One update from `grads`, first scaled so that their global L2 norm is at most
    /// `clip_norm` (PyTorch's `clip_grad_norm_`, when given). Returns the norm before clipping.
    pub fn step(&mut self, grads: &mut GradStore, clip_norm: Option<f64>) -> Result<f64> {
        self.step += 1;
        match &mut self.inner {
            Inner::Candle(vars, opt) => {
                let mut total = 0f64;
                for v in vars.iter() {
                    if let Some(g) = grads.get(v) {
                        total += g.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                    }
                }
                let norm = total.sqrt();
                let coef = clip_norm.map_or(1.0, |max| (max / (norm + 1e-6)).min(1.0));
                if coef < 1.0 {
                    for v in vars.iter() {
                        if let Some(g) = grads.remove(v) {
                            grads.insert(v, (g * coef)?);
                        }
                    }
                }
                opt.step(grads)?;
                Ok(norm)
            }
            Inner::Cpu(vars) => {
                let mut total = 0f64;
                for (v, _, _) in vars.iter() {
                    if let Some(g) = grads.get(v) {
                        let g = g.contiguous()?;
                        let (s, l) = g.storage_and_layout();
                        let candle_core::Storage::Cpu(s) = &*s else {
                            return Err(anyhow!("gradient not on the CPU"));
                        };
                        let parts: Vec<f64> = f32s(s, l)?
                            .par_chunks(CHUNK)
                            .map(|c| c.iter().map(|&x| x as f64 * x as f64).sum::<f64>())
                            .collect();
                        total += parts.iter().sum::<f64>();
                    }
                }
                let norm = total.sqrt();
                let coef = clip_norm.map_or(1.0, |max| (max / (norm + 1e-6)).min(1.0));
                let p = &self.params;
                for (v, m, s) in vars.iter() {
                    if let Some(g) = grads.get(v) {
                        let op = Update {
                            coef: coef as f32,
                            beta1: p.beta1 as f32,
                            beta2: p.beta2 as f32,
                            scale_m: (1.0 / (1.0 - p.beta1.powi(self.step))) as f32,
                            scale_v: (1.0 / (1.0 - p.beta2.powi(self.step))) as f32,
                            decay: (1.0 - p.lr * p.weight_decay) as f32,
                            lr: p.lr as f32,
                            eps: p.eps as f32,
                            m,
                            v: s,
                        };
                        v.as_tensor().inplace_op2(&g.contiguous()?, &op)?;
                    }
                }
                Ok(norm)
            }
        }
    }
}

fn f32s<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("AdamW: expected contiguous f32 values"),
    }
}

struct Update<'a> {
    coef: f32,
    beta1: f32,
    beta2: f32,
    scale_m: f32,
    scale_v: f32,
    decay: f32,
    lr: f32,
    eps: f32,
    m: &'a Mutex<Vec<f32>>,
    v: &'a Mutex<Vec<f32>>,
}

impl InplaceOp2 for Update<'_> {
    fn name(&self) -> &'static str {
        "audio-mnist-adamw"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let g = f32s(s2, l2)?;
        let (CpuStorage::F32(theta), Some((a, b))) = (s1, l1.contiguous_offsets()) else {
            candle_core::bail!("AdamW: parameters must be contiguous f32")
        };
        let theta = &mut theta[a..b];
        let (mut m, mut v) = (self.m.lock().expect("moments lock"), self.v.lock().expect("moments lock"));
        if theta.len() != g.len() || m.len() != g.len() {
            candle_core::bail!("AdamW: gradient of {} values for {} parameters", g.len(), theta.len())
        }
        theta
            .par_chunks_mut(CHUNK)
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .for_each(|(((t, m), v), g)| {
                for i in 0..t.len() {
                    let g = g[i] * self.coef;
                    m[i] = m[i] * self.beta1 + g * (1.0 - self.beta1);
                    v[i] = v[i] * self.beta2 + g * g * (1.0 - self.beta2);
                    let step = (m[i] * self.scale_m) / ((v[i] * self.scale_v).sqrt() + self.eps);
                    t[i] = t[i] * self.decay - step * self.lr;
                }
            });
        Ok(())
    }
}
