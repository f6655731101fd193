//! TC-ResNet (`arch: tc-resnet`): shapes, the layer table against the built tensors, and every
//! weight's gradient (Candle's autograd through strided 1-D convs) against finite differences.

use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::model::{init_varmap, parameters, Arch, CnnConfig};

fn small() -> CnnConfig {
    CnnConfig {
        arch: Arch::TcResnet,
        n_mels: 6,
        n_frames: 11,
        channels: vec![3, 4, 5],
        classes: 4,
        ..CnnConfig::default()
    }
}

fn input(rng: &mut StdRng, arch: &CnnConfig, b: usize) -> Tensor {
    let n = b * arch.n_mels * arch.n_frames;
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Tensor::from_vec(v, (b, 1, arch.n_mels, arch.n_frames), &Device::Cpu).unwrap()
}

#[test]
fn layers_list_exactly_the_built_tensors_and_logits_have_the_class_count() {
    let arch = small();
    let (varmap, net) = init_varmap(&arch, 1, &Device::Cpu).unwrap();
    let built: std::collections::HashMap<String, Vec<usize>> =
        varmap.data().lock().unwrap().iter().map(|(n, v)| (n.clone(), v.dims().to_vec())).collect();
    assert_eq!(built, arch.tensor_shapes());
    let layers = arch.layers();
    // 11 frames -> 6 -> 3 after two stride-2 blocks
    assert_eq!(layers[2].output, vec![5, 3]);
    let x = input(&mut StdRng::seed_from_u64(2), &arch, 3);
    assert_eq!(net.forward_t(&x, None).unwrap().dims(), &[3, 4]);
    let counted: usize = parameters(&varmap).unwrap().iter().map(|(_, v)| v.elem_count()).sum();
    assert_eq!(counted, arch.param_count());
    // TC-ResNet8 at 1.5x width on 128 mel bands: about 70 thousand weights (the CNN of `best`: millions).
    let tc8 = CnnConfig { arch: Arch::TcResnet, channels: vec![24, 36, 48, 72], ..CnnConfig::default() };
    assert!((60_000..200_000).contains(&tc8.param_count()), "{}", tc8.param_count());
}

/// The loss of a training step (batch statistics, no dropout) as a function of one weight.
#[test]
fn gradients_match_finite_differences() {
    let arch = CnnConfig { dropout: 0.0, ..small() };
    let (varmap, net) = init_varmap(&arch, 3, &Device::Cpu).unwrap();
    let mut rng = StdRng::seed_from_u64(4);
    let x = input(&mut rng, &arch, 4);
    let probe =
        Tensor::from_vec((0..16).map(|_| rng.random_range(-1.0f32..1.0)).collect(), (4, 4), &Device::Cpu)
            .unwrap();
    let mut dropout = StdRng::seed_from_u64(0);
    let loss = |dropout: &mut StdRng| -> Tensor {
        net.forward_t(&x, Some(dropout)).unwrap().mul(&probe).unwrap().sum_all().unwrap()
    };
    let grads = loss(&mut dropout).backward().unwrap();
    let eps = 1e-3f32;
    let mut checked = 0;
    for (name, var) in parameters(&varmap).unwrap() {
        let g: Vec<f32> = grads.get(&var).expect(&name).flatten_all().unwrap().to_vec1().unwrap();
        let values: Vec<f32> = var.flatten_all().unwrap().to_vec1().unwrap();
        // a few entries of each tensor
        for i in (0..values.len()).step_by(values.len().div_ceil(4)) {
            let mut at = |d: f32| {
                let mut v = values.clone();
                v[i] += d;
                var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap()).unwrap();
                loss(&mut dropout).to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
            };
            let numeric = (at(eps) - at(-eps)) / (2.0 * eps as f64);
            at(0.0);
            let err = (numeric - g[i] as f64).abs();
            assert!(
                err < 5e-3 * (1.0 + numeric.abs()),
                "{name}[{i}]: autograd {} vs numeric {numeric}",
                g[i]
            );
            checked += 1;
        }
    }
    assert!(checked > 40, "{checked} entries checked");
}
