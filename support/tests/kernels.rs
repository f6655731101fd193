//! Our CPU kernels against Candle's reference ops: outputs and gradients, on random shapes
//! (odd sizes, batch 1, several paddings and kernel sizes).

use candle_core::{DType, Device, Module, ModuleT, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::model::kernels;
use support::model::{init_varmap, max_pool2x2, parameters, CnnConfig, Kernels};

fn random(rng: &mut StdRng, dims: &[usize]) -> Tensor {
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

/// Largest absolute difference, relative to the reference's largest magnitude (at least 1).
fn rel_diff(ours: &Tensor, reference: &Tensor) -> f32 {
    assert_eq!(ours.dims(), reference.dims(), "shapes differ");
    let a: Vec<f32> = ours.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = reference.flatten_all().unwrap().to_vec1().unwrap();
    let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
    a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn assert_close(what: &str, ours: &Tensor, reference: &Tensor) {
    let d = rel_diff(ours, reference);
    assert!(d < 2e-5, "{what}: relative difference {d:e}");
}

/// Gradients of `sum(out * weights)` (random weights so every output matters differently).
fn grads_of(out: &Tensor, probe: &Tensor, vars: &[&Var]) -> Vec<Tensor> {
    let grads = out.mul(probe).unwrap().sum_all().unwrap().backward().unwrap();
    vars.iter().map(|v| grads.get(v).expect("gradient present").clone()).collect()
}

#[test]
fn conv2d_matches_candle_forward_and_backward() {
    let mut rng = StdRng::seed_from_u64(1);
    // (batch, c_in, h, w, c_out, kh, kw, pad)
    let cases = [
        (1, 1, 5, 7, 3, 3, 3, 1),
        (3, 2, 9, 4, 5, 3, 3, 1),
        (5, 3, 6, 11, 4, 3, 3, 0),
        (2, 4, 7, 5, 6, 2, 3, 2),
        (6, 1, 13, 8, 32, 3, 3, 1),
        (4, 32, 16, 8, 64, 3, 3, 1),
        (1, 2, 3, 3, 2, 3, 1, 1),
    ];
    for (b, ci, h, w, co, kh, kw, pad) in cases {
        let x = Var::from_tensor(&random(&mut rng, &[b, ci, h, w])).unwrap();
        let wt = Var::from_tensor(&random(&mut rng, &[co, ci, kh, kw])).unwrap();
        let bias = Var::from_tensor(&random(&mut rng, &[co])).unwrap();
        let ours = kernels::conv2d(&x, &wt, &bias, pad).unwrap();
        let reference = x
            .conv2d(&wt, pad, 1, 1, 1)
            .unwrap()
            .broadcast_add(&bias.reshape((1, co, 1, 1)).unwrap())
            .unwrap();
        let case = format!("{b}x{ci}x{h}x{w} * {co}x{kh}x{kw} pad {pad}");
        assert_close(&format!("conv2d {case}"), &ours, &reference);
        let probe = random(&mut rng, reference.dims());
        let g_ours = grads_of(&ours, &probe, &[&x, &wt, &bias]);
        let g_ref = grads_of(&reference, &probe, &[&x, &wt, &bias]);
        for (name, (o, r)) in ["input", "weight", "bias"].iter().zip(g_ours.iter().zip(&g_ref)) {
            assert_close(&format!("conv2d {case} d{name}"), o, r);
        }
    }
}

#[test]
fn conv2d_skips_the_gradient_of_data_inputs() {
    let mut rng = StdRng::seed_from_u64(2);
    let x = random(&mut rng, &[2, 1, 6, 5]); // data, not a variable
    let wt = Var::from_tensor(&random(&mut rng, &[4, 1, 3, 3])).unwrap();
    let bias = Var::from_tensor(&random(&mut rng, &[4])).unwrap();
    let out = kernels::conv2d(&x, &wt, &bias, 1).unwrap();
    let grads = out.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&x).is_none(), "no gradient for the data");
    let reference = x.conv2d(&wt, 1, 1, 1, 1).unwrap().sum_all().unwrap().backward().unwrap();
    assert_close("weight gradient", grads.get(&wt).unwrap(), reference.get(&wt).unwrap());
}

fn batch_norm(c: usize, rng: &mut StdRng) -> (VarMap, candle_nn::BatchNorm) {
    let varmap = VarMap::new();
    let cfg = candle_nn::BatchNormConfig { eps: 1e-5, remove_mean: true, affine: true, momentum: 0.1 };
    let bn =
        candle_nn::batch_norm(c, cfg, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
    // Non-trivial affine parameters (negative scales too) and running statistics.
    for (name, lo, hi) in
        [("weight", -1.5, 1.5), ("bias", -0.5, 0.5), ("running_mean", -0.3, 0.3), ("running_var", 0.5, 2.0)]
    {
        let v: Vec<f32> = (0..c).map(|_| rng.random_range(lo..hi)).collect();
        varmap.data().lock().unwrap()[name].set(&Tensor::new(v, &Device::Cpu).unwrap()).unwrap();
    }
    (varmap, bn)
}

fn var(varmap: &VarMap, name: &str) -> Var {
    varmap.data().lock().unwrap()[name].clone()
}

#[test]
fn batch_norm_relu_pool_matches_candle_in_training() {
    let mut rng = StdRng::seed_from_u64(3);
    for (b, c, h, w) in [(1, 1, 4, 4), (3, 2, 7, 9), (5, 4, 6, 5), (8, 32, 16, 8), (2, 3, 2, 3)] {
        let x = Var::from_tensor(&(random(&mut rng, &[b, c, h, w]) * 3.0).unwrap()).unwrap();
        let (ours_vm, ours_bn) = batch_norm(c, &mut StdRng::seed_from_u64(b as u64));
        let (ref_vm, ref_bn) = batch_norm(c, &mut StdRng::seed_from_u64(b as u64));
        let ours = kernels::batch_norm_relu_max_pool2d(&x, &ours_bn, 1e-5).unwrap();
        let reference = max_pool2x2(&ref_bn.forward_t(&x, true).unwrap().relu().unwrap()).unwrap();
        let case = format!("{b}x{c}x{h}x{w}");
        assert_close(&format!("bn-relu-pool {case}"), &ours, &reference);
        for stat in ["running_mean", "running_var"] {
            let (o, r) = (var(&ours_vm, stat), var(&ref_vm, stat));
            assert_close(&format!("{stat} {case}"), o.as_tensor(), r.as_tensor());
        }
        let probe = random(&mut rng, reference.dims());
        let (gamma_o, beta_o) = (var(&ours_vm, "weight"), var(&ours_vm, "bias"));
        let (gamma_r, beta_r) = (var(&ref_vm, "weight"), var(&ref_vm, "bias"));
        let g_ours = grads_of(&ours, &probe, &[&x, &gamma_o, &beta_o]);
        let g_ref = grads_of(&reference, &probe, &[&x, &gamma_r, &beta_r]);
        for (name, (o, r)) in ["input", "weight", "bias"].iter().zip(g_ours.iter().zip(&g_ref)) {
            assert_close(&format!("bn-relu-pool {case} d{name}"), o, r);
        }
    }
}

#[test]
fn fused_inference_block_matches_candle() {
    let mut rng = StdRng::seed_from_u64(4);
    for (b, ci, h, w, co) in [(1, 1, 8, 6, 3), (3, 2, 7, 9, 5), (4, 32, 16, 8, 64)] {
        let (_vm, bn) = batch_norm(co, &mut rng);
        let conv_vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&conv_vm, DType::F32, &Device::Cpu);
        let conv_cfg = candle_nn::Conv2dConfig { padding: 1, ..Default::default() };
        let conv = candle_nn::conv2d(ci, co, 3, conv_cfg, vb).unwrap();
        let x = random(&mut rng, &[b, ci, h, w]);
        let ours = kernels::conv_bn_relu_max_pool2d_eval(&x, &conv, &bn, 1, 1e-5).unwrap();
        let reference =
            bn.forward_t(&conv.forward(&x).unwrap(), false).unwrap().relu().unwrap().max_pool2d(2).unwrap();
        assert_close(&format!("conv-bn-relu-pool eval {b}x{ci}x{h}x{w}"), &ours, &reference);
    }
}

#[test]
fn linear_matches_candle() {
    let mut rng = StdRng::seed_from_u64(5);
    for (b, d_in, d_out) in [(1, 7, 3), (5, 33, 17), (64, 1024, 256), (2, 256, 10)] {
        let x = Var::from_tensor(&random(&mut rng, &[b, d_in])).unwrap();
        let w = Var::from_tensor(&random(&mut rng, &[d_out, d_in])).unwrap();
        let bias = Var::from_tensor(&random(&mut rng, &[d_out])).unwrap();
        let layer = candle_nn::Linear::new(w.as_tensor().clone(), Some(bias.as_tensor().clone()));
        let ours = kernels::linear(&x, &layer).unwrap();
        let reference = layer.forward(&x).unwrap();
        assert_close(&format!("linear {b}x{d_in}->{d_out}"), &ours, &reference);
        let probe = random(&mut rng, &[b, d_out]);
        let g_ours = grads_of(&ours, &probe, &[&x, &w, &bias]);
        let g_ref = grads_of(&reference, &probe, &[&x, &w, &bias]);
        for (name, (o, r)) in ["input", "weight", "bias"].iter().zip(g_ours.iter().zip(&g_ref)) {
            assert_close(&format!("linear {b}x{d_in}->{d_out} d{name}"), o, r);
        }
    }
}

/// The fused block's input gradient against central finite differences (which is also how we
/// know that Candle's own `max_pool2d` gradient is 4x too small: see `model::max_pool2x2`).
#[test]
fn batch_norm_relu_pool_gradient_matches_finite_differences() {
    let mut rng = StdRng::seed_from_u64(8);
    let (b, c, h, w) = (2, 2, 4, 6);
    let values: Vec<f32> = (0..b * c * h * w).map(|_| rng.random_range(-2.0f32..2.0)).collect();
    let (_vm, bn) = batch_norm(c, &mut rng);
    let probe = random(&mut rng, &[b, c, h / 2, w / 2]);
    let f = |v: &[f32]| -> f64 {
        let x = Tensor::from_vec(v.to_vec(), (b, c, h, w), &Device::Cpu).unwrap();
        let out = kernels::batch_norm_relu_max_pool2d(&x, &bn, 1e-5).unwrap();
        out.mul(&probe).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64
    };
    let x = Var::from_vec(values.clone(), (b, c, h, w), &Device::Cpu).unwrap();
    let grad = grads_of(&kernels::batch_norm_relu_max_pool2d(&x, &bn, 1e-5).unwrap(), &probe, &[&x]);
    let grad: Vec<f32> = grad[0].flatten_all().unwrap().to_vec1().unwrap();
    let candle_pool =
        grads_of(&bn.forward_t(&x, true).unwrap().relu().unwrap().max_pool2d(2).unwrap(), &probe, &[&x]);
    let candle_pool: Vec<f32> = candle_pool[0].flatten_all().unwrap().to_vec1().unwrap();
    let eps = 1e-3f32;
    let (mut worst, mut candle_worst) = (0f64, 0f64);
    for i in 0..values.len() {
        let (mut up, mut down) = (values.clone(), values.clone());
        up[i] += eps;
        down[i] -= eps;
        let numeric = (f(&up) - f(&down)) / (2.0 * eps as f64);
        worst = worst.max((numeric - grad[i] as f64).abs());
        candle_worst = candle_worst.max((numeric - candle_pool[i] as f64).abs());
    }
    assert!(worst < 5e-3, "analytic vs numeric gradient: {worst}");
    assert!(candle_worst > 10.0 * worst, "Candle's max_pool2d gradient is off ({candle_worst} vs {worst})");
}

/// The whole network: same weights, same dropout masks, our kernels vs Candle's ops, for every
/// block count a recipe uses (2: `seed`, 3: `best`).
#[test]
fn network_matches_candle_ops_in_training_and_inference() {
    for channels in [vec![4, 6], vec![4, 6, 8]] {
        let arch = CnnConfig { n_mels: 20, n_frames: 14, channels, hidden: 16, ..CnnConfig::default() };
        let x = random(&mut StdRng::seed_from_u64(6), &[3, 1, 20, 14]);
        let y = Tensor::new(&[1u32, 7, 3], &Device::Cpu).unwrap();
        let mut results = Vec::new();
        for kernels in [Kernels::Fused, Kernels::Candle] {
            let (varmap, model) = init_varmap(&arch, 11, &Device::Cpu).unwrap();
            let model = model.with_kernels(kernels);
            let logits = model.forward_t(&x, Some(&mut StdRng::seed_from_u64(9))).unwrap();
            let loss = candle_nn::loss::cross_entropy(&logits, &y).unwrap();
            let grads = loss.backward().unwrap();
            let named = parameters(&varmap).unwrap();
            let g: Vec<(String, Tensor)> =
                named.iter().map(|(n, v)| (n.clone(), grads.get(v).unwrap().clone())).collect();
            let eval = model.forward_t(&x, None).unwrap(); // after the running statistics moved
            results.push((logits, g, eval));
        }
        let ((lo, go, eo), (lr, gr, er)) = (&results[0], &results[1]);
        assert_close("training logits", lo, lr);
        assert_close("evaluation logits", eo, er);
        assert_eq!(go.len(), 4 * arch.channels.len() + 4);
        for ((name, o), (_, r)) in go.iter().zip(gr) {
            assert_close(&format!("gradient of {name}"), o, r);
        }
    }
}

/// Bit-identical results whatever the number of threads.
#[test]
fn kernels_do_not_depend_on_the_thread_count() {
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut rng = StdRng::seed_from_u64(7);
            let x = random(&mut rng, &[9, 1, 16, 12]);
            let arch = CnnConfig {
                n_mels: 16,
                n_frames: 12,
                channels: vec![8, 16],
                hidden: 32,
                ..CnnConfig::default()
            };
            let (varmap, model) = init_varmap(&arch, 3, &Device::Cpu).unwrap();
            let logits = model.forward_t(&x, Some(&mut StdRng::seed_from_u64(1))).unwrap();
            let grads = logits.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            let mut out: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
            for (_, v) in parameters(&varmap).unwrap() {
                out.extend(grads.get(&v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap());
            }
            out
        })
    };
    let one = run(1);
    assert_eq!(one, run(2), "1 vs 2 threads");
    assert_eq!(one, run(3), "1 vs 3 threads");
}
