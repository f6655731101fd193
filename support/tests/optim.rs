//! The fused AdamW against Candle's AdamW with PyTorch-style gradient clipping.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::optim::{Optimizer, ParamsAdamW};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn random(rng: &mut StdRng, n: usize, scale: f32) -> Tensor {
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-scale..scale)).collect();
    Tensor::from_vec(v, n, &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn fused_adamw_matches_candle_with_and_without_clipping() {
    let params = ParamsAdamW { lr: 3e-3, weight_decay: 1e-2, ..ParamsAdamW::default() };
    for clip in [None, Some(0.5)] {
        let mut rng = StdRng::seed_from_u64(1);
        let init: Vec<Tensor> = [40_000, 7, 1].iter().map(|&n| random(&mut rng, n, 1.0)).collect();
        let ours: Vec<Var> = init.iter().map(|t| Var::from_tensor(&t.copy().unwrap()).unwrap()).collect();
        let theirs: Vec<Var> = init.iter().map(|t| Var::from_tensor(&t.copy().unwrap()).unwrap()).collect();
        let mut opt = support::train::optim::AdamW::new(ours.clone(), params.clone()).unwrap();
        let mut reference = candle_nn::AdamW::new(theirs.clone(), params.clone()).unwrap();
        for step in 0..6 {
            if step == 3 {
                opt.set_learning_rate(1e-3);
                reference.set_learning_rate(1e-3);
            }
            // d/dp Σ p·r = r: the gradients are the probes.
            let probes: Vec<Tensor> = init.iter().map(|t| random(&mut rng, t.elem_count(), 0.2)).collect();
            let loss = |vars: &[Var]| {
                let terms: Vec<Tensor> = vars
                    .iter()
                    .zip(&probes)
                    .map(|(v, r)| v.as_tensor().mul(r).unwrap().sum_all().unwrap())
                    .collect();
                Tensor::stack(&terms, 0).unwrap().sum_all().unwrap()
            };
            let mut grads = loss(&ours).backward().unwrap();
            let norm = opt.step(&mut grads, clip).unwrap();
            let expected_norm: f64 = probes
                .iter()
                .map(|r| {
                    r.sqr()
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .to_dtype(DType::F64)
                        .unwrap()
                        .to_scalar::<f64>()
                        .unwrap()
                })
                .sum::<f64>()
                .sqrt();
            assert!((norm - expected_norm).abs() < 1e-4 * expected_norm, "norm {norm} vs {expected_norm}");
            let mut their_grads = loss(&theirs).backward().unwrap();
            if let Some(max) = clip {
                let coef = (max / (expected_norm + 1e-6)).min(1.0);
                for v in &theirs {
                    let g = their_grads.remove(v).unwrap();
                    their_grads.insert(v, (g * coef).unwrap());
                }
            }
            reference.step(&their_grads).unwrap();
            for (i, (o, t)) in ours.iter().zip(&theirs).enumerate() {
                let d = max_abs_diff(o.as_tensor(), t.as_tensor());
                assert!(d < 1e-6, "clip {clip:?}, step {step}, parameter {i}: differs by {d}");
            }
        }
        // The parameters moved: the comparison above is not between two untouched copies.
        let moved = max_abs_diff(ours[0].as_tensor(), &init[0]);
        assert!(moved > 1e-3, "parameters did not move ({moved})");
    }
}
