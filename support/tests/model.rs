//! The CNN, its training loop and the model file.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use support::model::{
    init_varmap, load_model, parameters, save_ensemble, save_model, Arch, Cnn, CnnConfig, ModelMeta,
};
use support::train::{evaluate_loss, train, Recipe, RecipeName};
use support::FeatureConfig;

fn small_arch() -> CnnConfig {
    CnnConfig { n_mels: 16, n_frames: 8, ..CnnConfig::default() }
}

/// A learnable toy problem: class c lights up band c of the image, plus seeded noise.
fn toy_data(n: usize, arch: &CnnConfig, seed: u64) -> (Tensor, Tensor) {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut noise = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    };
    let (m, t) = (arch.n_mels, arch.n_frames);
    let mut x = Vec::new();
    let mut y = Vec::new();
    for i in 0..n {
        let c = i % 4;
        for row in 0..m {
            for _ in 0..t {
                x.push(if row / 4 == c { 2.0 } else { 0.0 } + noise());
            }
        }
        y.push(c as u32);
    }
    (Tensor::from_vec(x, (n, 1, m, t), &Device::Cpu).unwrap(), Tensor::from_vec(y, n, &Device::Cpu).unwrap())
}

#[test]
fn parameter_count_matches_pytorch() {
    let arch = CnnConfig::default();
    assert_eq!(arch.param_count(), 4_216_138);
    let (varmap, _) = init_varmap(&arch, 1, &Device::Cpu).unwrap();
    let counted: usize = parameters(&varmap).unwrap().iter().map(|(_, v)| v.elem_count()).sum();
    assert_eq!(counted, 4_216_138);
    // other input shapes work: the flattened size follows the input
    assert_eq!(CnnConfig { n_mels: 64, n_frames: 20, ..arch }.flat_dim(), 64 * 16 * 5);
}

#[test]
fn computed_tensor_shapes_match_the_built_network() {
    let seed = CnnConfig::default();
    let deep = CnnConfig { channels: vec![32, 64, 128], ..CnnConfig::default() };
    // a third block: its conv and batch-norm, and fc1 now sees 128 x 16 x 4 instead of 64 x 32 x 8
    let third = 128 * 64 * 9 + 128 + 2 * 128;
    assert_eq!(deep.param_count(), seed.param_count() + third - (16_384 - 8_192) * 256);
    let one = CnnConfig { channels: vec![8], ..small_arch() };
    let three_small = CnnConfig { channels: vec![4, 8, 16], ..small_arch() };
    for arch in [seed, small_arch(), deep, one, three_small] {
        let (varmap, _) = init_varmap(&arch, 1, &Device::Cpu).unwrap();
        let built: std::collections::HashMap<String, Vec<usize>> =
            varmap.data().lock().unwrap().iter().map(|(n, v)| (n.clone(), v.dims().to_vec())).collect();
        assert_eq!(arch.tensor_shapes(), built);
        let counted: usize = parameters(&varmap).unwrap().iter().map(|(_, v)| v.elem_count()).sum();
        assert_eq!(arch.param_count(), counted);
        // the layer table runs in forward order and ends in the classes
        let layers = arch.layers();
        assert_eq!(layers.len(), 2 * arch.channels.len() + 2);
        assert_eq!(layers.last().unwrap().output, vec![10]);
    }
    // more blocks than the input can pool, or none, are refused
    assert!(init_varmap(&CnnConfig { channels: vec![4; 4], ..small_arch() }, 1, &Device::Cpu).is_err());
    assert!(init_varmap(&CnnConfig { channels: vec![], ..small_arch() }, 1, &Device::Cpu).is_err());
}

#[test]
fn forward_shapes() {
    for arch in
        [CnnConfig::default(), small_arch(), CnnConfig { n_mels: 30, n_frames: 11, ..CnnConfig::default() }]
    {
        let (_, model) = init_varmap(&arch, 3, &Device::Cpu).unwrap();
        for b in [1, 3] {
            let x = Tensor::zeros((b, 1, arch.n_mels, arch.n_frames), DType::F32, &Device::Cpu).unwrap();
            assert_eq!(model.forward_t(&x, None).unwrap().dims(), &[b, 10]);
            let p = model.probabilities(&x).unwrap().sum(1).unwrap().to_vec1::<f32>().unwrap();
            assert!(p.iter().all(|s| (s - 1.0).abs() < 1e-5));
        }
    }
}

#[test]
fn xavier_init_is_seeded_and_bounded() {
    let arch = small_arch();
    let (a, _) = init_varmap(&arch, 5, &Device::Cpu).unwrap();
    let (b, _) = init_varmap(&arch, 5, &Device::Cpu).unwrap();
    let (c, _) = init_varmap(&arch, 6, &Device::Cpu).unwrap();
    let get = |m: &VarMap, n: &str| {
        m.data().lock().unwrap()[n].as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    assert_eq!(get(&a, "fc1.weight"), get(&b, "fc1.weight"));
    assert_ne!(get(&a, "fc1.weight"), get(&c, "fc1.weight"));
    let bound = (6.0f32 / (arch.flat_dim() + arch.hidden) as f32).sqrt();
    let w = get(&a, "fc1.weight");
    assert!(w.iter().all(|v| v.abs() <= bound) && w.iter().any(|v| v.abs() > bound * 0.9));
    assert!(get(&a, "fc1.bias").iter().all(|v| *v == 0.0));
    assert!(get(&a, "bn1.weight").iter().all(|v| *v == 1.0));
}

fn quick_cfg(seed: u64) -> Recipe {
    Recipe { seed, epochs: 6, batch_size: 16, patience: 10, ..Recipe::named(RecipeName::Seed) }
}

#[test]
fn training_lowers_the_loss_and_learns_the_toy_task() {
    for arch in [small_arch(), CnnConfig { arch: Arch::TcResnet, channels: vec![8, 12, 16], ..small_arch() }]
    {
        learns_the_toy_task(arch);
    }
}

fn learns_the_toy_task(arch: CnnConfig) {
    let (x, y) = toy_data(64, &arch, 1);
    let (xv, yv) = toy_data(32, &arch, 2);
    let (_, fresh) = init_varmap(&arch, 9, &Device::Cpu).unwrap();
    let (loss0, _) = evaluate_loss(&fresh, &xv, &yv, 64).unwrap();
    let trained =
        train(&arch, &quick_cfg(9), (&x, &y), (&xv, &yv), &Device::Cpu, None, &mut |_, _| {}).unwrap();
    let first = &trained.log[0];
    let last = trained.log.last().unwrap();
    assert!(last.train_loss < first.train_loss, "{:?}", trained.log);
    let (loss1, acc1) = evaluate_loss(&trained.model, &xv, &yv, 64).unwrap();
    assert!(loss1 < loss0, "val loss {loss0} -> {loss1}");
    assert!(acc1 >= 0.9, "val acc {acc1}");
    assert_eq!(trained.best_val_acc, trained.log[trained.best_epoch - 1].val_acc);
}

/// Early stopping with patience 1 ends a run at its first epoch without a better validation
/// accuracy; a warm-up as long as the run keeps every epoch and takes the last one's weights.
#[test]
fn warm_up_epochs_neither_stop_nor_are_passed_over() {
    let arch = small_arch();
    let (x, y) = toy_data(64, &arch, 1);
    let (xv, yv) = toy_data(32, &arch, 2);
    let run = |warmup| {
        let cfg = Recipe { patience: 1, epochs: 6, warmup, ..quick_cfg(9) };
        train(&arch, &cfg, (&x, &y), (&xv, &yv), &Device::Cpu, None, &mut |_, _| {}).unwrap()
    };
    let warm = run(6);
    assert_eq!((warm.log.len(), warm.best_epoch), (6, 6));
    let (_, acc) = evaluate_loss(&warm.model, &xv, &yv, 64).unwrap();
    assert_eq!(acc, warm.log[5].val_acc, "the last epoch's weights are restored");
    let cold = run(0);
    let accs: Vec<f64> = cold.log.iter().map(|r| r.val_acc).collect();
    let first_worse = accs.windows(2).position(|w| w[1] <= w[0]);
    assert_eq!(cold.log.len(), first_worse.map_or(6, |i| i + 2), "{accs:?}");
}

#[test]
fn same_seed_gives_bit_identical_weights_and_logs() {
    for arch in [small_arch(), CnnConfig { arch: Arch::TcResnet, channels: vec![4, 6], ..small_arch() }] {
        bit_identical(arch);
    }
}

fn bit_identical(arch: CnnConfig) {
    let (x, y) = toy_data(48, &arch, 1);
    let (xv, yv) = toy_data(16, &arch, 2);
    let run = |seed| {
        train(&arch, &quick_cfg(seed), (&x, &y), (&xv, &yv), &Device::Cpu, None, &mut |_, _| {}).unwrap()
    };
    let (a, b, c) = (run(4), run(4), run(5));
    let weights = |t: &support::train::Trained| {
        let data = t.varmap.data().lock().unwrap();
        let mut v: Vec<(String, Vec<u32>)> = data
            .iter()
            .map(|(n, v)| {
                (
                    n.clone(),
                    v.as_tensor()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap()
                        .iter()
                        .map(|f| f.to_bits())
                        .collect(),
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(weights(&a), weights(&b));
    assert_ne!(weights(&a), weights(&c));
    let strip = |t: &support::train::Trained| {
        t.log
            .iter()
            .map(|r| (r.train_loss.to_bits(), r.val_acc.to_bits(), r.lr.to_bits()))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&a), strip(&b));
}

fn meta(arch: &CnnConfig) -> ModelMeta {
    ModelMeta {
        architecture: arch.clone(),
        features: FeatureConfig {
            n_mels: arch.n_mels,
            clip_samples: (arch.n_frames - 1) * 512,
            ..FeatureConfig::default()
        },
        mean: -40.0,
        std: 15.0,
        members: Vec::new(),
        temperatures: Vec::new(),
        classes: (0..10).map(|d| d.to_string()).collect(),
        recipe: Some(Recipe::named(RecipeName::Best)),
        split: serde_json::json!({"train": ["a"], "val": ["b"], "test": ["c"]}),
        metrics: serde_json::json!({"test_accuracy": 0.5}),
        reject_threshold: None,
        adaptation: None,
    }
}

#[test]
fn the_lifter_keeps_the_envelope_and_drops_the_ripple() {
    let m = 128;
    let dense = |k| support::model::lifter_matrix(m, k, &Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
    // all coefficients kept: the identity; one kept: the column's mean
    for (i, row) in dense(m).iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-5, "({i},{j}) {v}");
        }
    }
    assert!(dense(1).iter().flatten().all(|v| (v - 1.0 / m as f32).abs() < 1e-6));
    // a slow envelope plus a fast ripple (like pitch harmonics): the ripple goes, the envelope stays
    let l = dense(32);
    let envelope: Vec<f32> = (0..m).map(|n| -20.0 * (n as f32 / m as f32)).collect();
    let ripple: Vec<f32> = (0..m).map(|n| 6.0 * (std::f32::consts::PI * n as f32 / 2.5).cos()).collect();
    let column: Vec<f32> = envelope.iter().zip(&ripple).map(|(a, b)| a + b).collect();
    let smoothed: Vec<f32> = l.iter().map(|row| row.iter().zip(&column).map(|(a, b)| a * b).sum()).collect();
    let err =
        |a: &[f32], b: &[f32]| (a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f32>() / m as f32).sqrt();
    assert!(err(&smoothed, &envelope) < 0.5, "rms error {}", err(&smoothed, &envelope));
    assert!(err(&column, &envelope) > 4.0);
    // inside the network: same parameters, other outputs, refused when too large
    let arch = small_arch();
    let lifted = CnnConfig { lifter: 4, ..arch.clone() };
    assert_eq!(lifted.param_count(), arch.param_count());
    let (x, _) = toy_data(4, &arch, 5);
    let (vm, plain) = init_varmap(&arch, 1, &Device::Cpu).unwrap();
    let smooth = Cnn::new(&lifted, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
    let (a, b) = (plain.probabilities(&x).unwrap(), smooth.probabilities(&x).unwrap());
    assert_eq!(b.dims(), &[4, 10]);
    assert_ne!(a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
    assert!(init_varmap(&CnnConfig { lifter: 17, ..arch }, 1, &Device::Cpu).is_err());
}

#[test]
fn model_file_round_trips() {
    for arch in [small_arch(), CnnConfig { arch: Arch::TcResnet, channels: vec![4, 6], ..small_arch() }] {
        round_trips(arch);
    }
}

fn round_trips(arch: CnnConfig) {
    let (x, y) = toy_data(32, &arch, 1);
    let trained = train(
        &arch,
        &Recipe { epochs: 1, ..quick_cfg(1) },
        (&x, &y),
        (&x, &y),
        &Device::Cpu,
        None,
        &mut |_, _| {},
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    // Mean 0 and std 1: the loaded classifier standardises its input, here exactly a no-op.
    let meta = ModelMeta { mean: 0.0, std: 1.0, ..meta(&arch) };
    save_model(&path, &trained.varmap, &meta).unwrap();
    let loaded = load_model(&path, &Device::Cpu).unwrap();
    assert_eq!(loaded.meta, meta);
    let before = trained.model.probabilities(&x).unwrap().to_vec2::<f32>().unwrap();
    let after = loaded.model.probabilities(&x).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(before, after, "same weights, same running statistics, same outputs");
}

#[test]
fn an_ensemble_file_averages_its_members_each_with_its_own_normalisation() {
    let arch = small_arch();
    let (x, _) = toy_data(8, &arch, 3);
    let (a, net_a) = init_varmap(&arch, 1, &Device::Cpu).unwrap();
    let (b, net_b) = init_varmap(&arch, 2, &Device::Cpu).unwrap();
    let norms = vec![(0.5f32, 2.0f32), (-1.0, 0.5)];
    let meta = ModelMeta { members: norms.clone(), ..meta(&arch) };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ensemble.safetensors");
    save_ensemble(&path, &[&a, &b], &meta).unwrap();
    let loaded = load_model(&path, &Device::Cpu).unwrap();
    assert_eq!(loaded.meta, meta);
    assert_eq!(loaded.model.members.len(), 2);
    let got = loaded.model.probabilities(&x).unwrap().to_vec2::<f32>().unwrap();
    let mut want = vec![vec![0f32; 10]; 8];
    for (net, (mean, std)) in [(&net_a, norms[0]), (&net_b, norms[1])] {
        let xs = ((&x - mean as f64).unwrap() * (1.0 / std) as f64).unwrap();
        let p = net.probabilities(&xs).unwrap().to_vec2::<f32>().unwrap();
        want.iter_mut().zip(p).for_each(|(w, p)| w.iter_mut().zip(p).for_each(|(w, p)| *w += p / 2.0));
    }
    for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
        assert!((g - w).abs() < 1e-6, "{g} vs {w}");
    }
    // the two members differ, so the average is not just one of them
    let single = ModelMeta { mean: norms[0].0, std: norms[0].1, ..meta.clone() };
    save_model(&dir.path().join("a.safetensors"), &a, &ModelMeta { members: vec![], ..single }).unwrap();
    let one = load_model(&dir.path().join("a.safetensors"), &Device::Cpu).unwrap();
    assert_ne!(one.model.probabilities(&x).unwrap().to_vec2::<f32>().unwrap(), got);
    // a member's tensors missing, or norms without their networks, are refused
    assert!(save_ensemble(&path, &[&a], &meta).is_err());
    let three = ModelMeta { members: vec![(0.0, 1.0); 3], ..meta.clone() };
    let bytes = std::fs::read(&path).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut md = header.metadata().clone().unwrap();
    md.insert("members".into(), serde_json::to_string(&three.members).unwrap());
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let bad = dir.path().join("bad.safetensors");
    safetensors::serialize_to_file(st.tensors(), Some(md), &bad).unwrap();
    let e = format!("{:#}", load_model(&bad, &Device::Cpu).err().expect("refused"));
    assert!(e.contains("member2.") && e.contains("missing"), "{e}");
}

/// Each network's stored temperature divides its logits; a bad one is refused.
#[test]
fn stored_temperatures_soften_each_member() {
    let arch = small_arch();
    let (x, _) = toy_data(8, &arch, 5);
    let (a, net) = init_varmap(&arch, 1, &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warm.safetensors");
    let meta = ModelMeta { mean: 0.0, std: 1.0, temperatures: vec![2.5], ..meta(&arch) };
    save_model(&path, &a, &meta).unwrap();
    let loaded = load_model(&path, &Device::Cpu).unwrap();
    assert_eq!(loaded.meta.temperatures, vec![2.5]);
    let got = loaded.model.probabilities(&x).unwrap().to_vec2::<f32>().unwrap();
    let logits = (net.forward_t(&x, None).unwrap() / 2.5).unwrap();
    let want = candle_nn::ops::softmax(&logits, 1).unwrap().to_vec2::<f32>().unwrap();
    for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
        assert!((g - w).abs() < 1e-6, "{g} vs {w}");
    }
    let raw = loaded.model.uncalibrated().probabilities(&x).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(raw, net.probabilities(&x).unwrap().to_vec2::<f32>().unwrap());
    for bad in [vec![0.0f32], vec![-1.0], vec![1.0, 1.0]] {
        let p = dir.path().join("bad.safetensors");
        save_model(&p, &a, &ModelMeta { temperatures: bad.clone(), ..meta.clone() }).unwrap();
        let e = format!("{:#}", load_model(&p, &Device::Cpu).err().expect("refused"));
        assert!(e.contains("temperatures"), "{bad:?}: {e}");
    }
}

#[test]
fn bad_model_files_are_refused_with_reasons() {
    let arch = small_arch();
    let dir = tempfile::tempdir().unwrap();
    let (varmap, _) = init_varmap(&arch, 1, &Device::Cpu).unwrap();
    let good = dir.path().join("good.safetensors");
    save_model(&good, &varmap, &meta(&arch)).unwrap();
    let expect = |path: &std::path::Path, needle: &str| {
        let e = format!("{:#}", load_model(path, &Device::Cpu).err().expect("should be refused"));
        assert!(
            e.contains(needle) && e.contains(&*path.file_name().unwrap().to_string_lossy()),
            "{needle:?} not in {e:?}"
        );
    };
    let text = dir.path().join("text.safetensors");
    std::fs::write(&text, "not a model").unwrap();
    expect(&text, "not a safetensors file");
    expect(&dir.path().join("missing.safetensors"), "No such file");

    // a tensor missing / a wrong shape / another version: rewrite the good file's parts
    let bytes = std::fs::read(&good).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let md = header.metadata().clone().unwrap();
    let write =
        |name: &str, skip: &str, reshape: Option<&str>, md: std::collections::HashMap<String, String>| {
            let owned: Vec<(String, Vec<usize>, Vec<u8>)> = st
                .tensors()
                .into_iter()
                .filter(|(n, _)| n != skip)
                .map(|(n, t)| {
                    let shape = if Some(n.as_str()) == reshape {
                        vec![t.shape().iter().product::<usize>()]
                    } else {
                        t.shape().to_vec()
                    };
                    (n, shape, t.data().to_vec())
                })
                .collect();
            let views: Vec<_> = owned
                .iter()
                .map(|(n, s, d)| {
                    (
                        n.clone(),
                        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap(),
                    )
                })
                .collect();
            let p = dir.path().join(name);
            safetensors::serialize_to_file(views, Some(md), &p).unwrap();
            p
        };
    expect(&write("lacks.safetensors", "fc2.weight", None, md.clone()), "tensor `fc2.weight` is missing");
    expect(
        &write("shape.safetensors", "", Some("conv1.weight"), md.clone()),
        "tensor `conv1.weight` has shape",
    );
    let mut v99 = md.clone();
    v99.insert("model_version".into(), "99".into());
    expect(&write("version.safetensors", "", None, v99), "model file version 99");
    // Version 1 described the blocks as fixed fields: such a file still loads as the same
    // network; one with an option that version 2 removed is refused with what to do.
    let v1 = |extra: &str| {
        let mut v1 = md.clone();
        v1.insert("model_version".into(), "1".into());
        v1.remove("recipe");
        v1.insert(
            "architecture".into(),
            format!(
                r#"{{"n_mels":16,"n_frames":8,"conv1_channels":32,"conv2_channels":64,"hidden":256,"dropout":0.3,"classes":10{extra}}}"#
            ),
        );
        v1
    };
    // Version 2 had no `arch`: the CNN.
    let mut v2 = md.clone();
    v2.insert("model_version".into(), "2".into());
    assert_eq!(
        load_model(&write("v2.safetensors", "", None, v2), &Device::Cpu).unwrap().meta.architecture,
        arch
    );
    let old = write("v1.safetensors", "", None, v1(r#","head":"flatten""#));
    let loaded = load_model(&old, &Device::Cpu).unwrap();
    assert_eq!(loaded.meta.architecture, arch);
    assert_eq!(loaded.meta.recipe, None);
    expect(&write("v1avg.safetensors", "", None, v1(r#","head":"avgpool""#)), "retrain");
    expect(&write("v1cmvn.safetensors", "", None, v1(r#","cmvn":true"#)), "retrain");
    let mut nf = md.clone();
    nf.remove("format");
    expect(&write("noformat.safetensors", "", None, nf), "lacks `format`");
    // a feature file is not a model
    let feats = dir.path().join("features.safetensors");
    let set = support::FeatureSet {
        features: vec![0.0; 16 * 32],
        n_mels: 16,
        n_frames: 32,
        digits: vec![1],
        files: vec!["a.wav".into()],
        speakers: vec!["a".into()],
        config: FeatureConfig { n_mels: 16, ..FeatureConfig::default() },
        skipped: vec![],
        fingerprint: String::new(),
    };
    set.save(&feats).unwrap();
    expect(&feats, "not an audio-mnist model");
    // the good one loads
    load_model(&good, &Device::Cpu).unwrap();
    let _ = Cnn::new(&arch, VarBuilder::from_varmap(&VarMap::new(), DType::F32, &Device::Cpu)).unwrap();
}

#[test]
fn bench_train_prints_one_json_line_with_the_contract_keys() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_audio-mnist"))
        .args(["bench-train", "--batch", "4", "--steps", "1", "--threads", "1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.lines().count(), 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    for k in ["train_samples_per_second", "infer_samples_per_second"] {
        assert!(v[k].as_f64().unwrap() > 0.0, "{k}: {v}");
    }
    assert_eq!(v["batch"], 4);
    assert_eq!(v["threads"], 1);
}

/// `best` finds the word in a room (recorded in its features), `--word-trim false` and the
/// seed use librosa's trim, and records written before the field existed read as librosa's
/// trim and no warm-up.
#[test]
fn best_finds_the_word_in_a_room_and_older_records_keep_librosas_trim() {
    use support::dsp::effects::WordTrim;
    use support::dsp::features::FeatureExtractor;
    let best = Recipe::named(RecipeName::Best);
    assert_eq!((best.features().word_trim, best.warmup), (Some(WordTrim::ROOM), 5));
    assert_eq!(Recipe::named(RecipeName::Seed).features(), FeatureConfig::default());
    let overrides = support::train::Overrides { word_trim: Some(false), ..Default::default() };
    let off = Recipe::new(RecipeName::Best, 42, overrides).unwrap();
    assert_eq!(off.features().word_trim, None);

    let mut old = serde_json::to_value(&best).unwrap();
    old.as_object_mut().unwrap().retain(|k, _| k != "word_trim" && k != "warmup");
    let old: Recipe = serde_json::from_value(old).unwrap();
    assert_eq!((old.word_trim, old.warmup), (None, 0));
    let mut old = serde_json::to_value(best.features()).unwrap();
    assert!(old.as_object_mut().unwrap().remove("word_trim").is_some());
    let old: FeatureConfig = serde_json::from_value(old).unwrap();
    assert_eq!(old, FeatureConfig { word_trim: None, ..best.features() });
    // Files from before the room's minimum length take any quietest frame as the floor.
    let first: WordTrim = serde_json::from_str(r#"{"floor_margin_db":6.0,"max_gap_s":0.2}"#).unwrap();
    assert_eq!(first, WordTrim { min_room_s: 0.0, ..WordTrim::ROOM });

    // A word with a click 0.5 s before it: librosa's trim starts at the click.
    let mut y = vec![0.0f32; 24000];
    for (i, v) in y.iter_mut().enumerate() {
        let on = (2000..2300).contains(&i) || (12000..18000).contains(&i);
        *v = if on { (i as f32 * 0.2).sin() } else { 0.0 };
    }
    let start = |c: FeatureConfig| FeatureExtractor::new(c).unwrap().stages(&y, 16000).unwrap().trim.0;
    assert!(start(off.features()) <= 2000);
    assert!(start(best.features()) >= 12000 - 2048, "{}", start(best.features()));
}

/// A "not a digit" threshold and a temperature travel in the file (`calibrate` rewrites only
/// the header); the threshold decides: refuse when that class's probability reaches it, whichever class wins.
#[test]
fn a_reject_threshold_is_stored_checked_and_decides() {
    let cal = |temperatures, reject_threshold| support::model::file::Calibrated {
        temperatures,
        reject_threshold,
        record: serde_json::json!({"recordings": 3}),
    };
    let arch = CnnConfig { classes: 11, ..small_arch() };
    let (a, _) = init_varmap(&arch, 1, &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (plain, calibrated) = (dir.path().join("plain.safetensors"), dir.path().join("cal.safetensors"));
    let classes: Vec<String> = (0..10).map(|d| d.to_string()).chain(["not a digit".to_string()]).collect();
    let eleven = ModelMeta { classes, ..meta(&arch) };
    save_model(&plain, &a, &eleven).unwrap();
    assert_eq!(load_model(&plain, &Device::Cpu).unwrap().meta.reject_threshold, None);
    support::model::file::save_calibrated(&plain, &calibrated, &cal(Some(vec![1.7]), Some(0.9))).unwrap();
    let loaded = load_model(&calibrated, &Device::Cpu).unwrap().meta;
    assert_eq!((loaded.reject_threshold, loaded.temperatures), (Some(0.9), vec![1.7]));
    // The fit is recorded; the training metrics stay, as they were measured before.
    assert_eq!(loaded.metrics["calibrated"]["recordings"], 3);
    assert_eq!(loaded.metrics["test_accuracy"], 0.5);
    let tensors = |p: &std::path::Path| {
        let bytes = std::fs::read(p).unwrap();
        let (n, _) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        bytes[8 + n..].to_vec()
    };
    assert_eq!(tensors(&plain), tensors(&calibrated), "the weights' bytes are copied untouched");
    // Out of (0, 1], or on a ten-class model: refused with the reason.
    for bad in [0.0f32, 1.5, f32::NAN] {
        let e = format!(
            "{:#}",
            support::model::file::save_calibrated(&plain, &calibrated, &cal(None, Some(bad))).unwrap_err()
        );
        assert!(e.contains("reject_threshold"), "{bad}: {e}");
    }
    let e = support::model::file::save_calibrated(&plain, &calibrated, &cal(Some(vec![1.0, 1.0]), None))
        .unwrap_err();
    assert!(format!("{e:#}").contains("temperatures"), "{e:#}");
    let ten = dir.path().join("ten.safetensors");
    let (b, _) = init_varmap(&small_arch(), 1, &Device::Cpu).unwrap();
    save_model(&ten, &b, &meta(&small_arch())).unwrap();
    assert!(support::model::file::save_calibrated(&ten, &calibrated, &cal(None, Some(0.5))).is_err());
    // The decision: "not a digit" at 0.6 beats every digit, but is under a threshold of 0.9.
    let mut p = vec![0.04f32; 11];
    p[10] = 0.6;
    assert_eq!(support::infer::decide(&p, 0.0, None), None);
    assert_eq!(support::infer::decide(&p, 0.0, Some(0.9)), Some(0));
    assert_eq!(support::infer::decide(&p, 0.0, Some(0.5)), None);
    let q = support::infer::Prediction::from_probabilities(p.clone(), 0.0, Some(0.5));
    assert!(q.digit.is_none() && q.reason.unwrap().contains("threshold 0.5"));
    // The digits' confidence threshold still applies on top.
    assert_eq!(support::infer::decide(&p, 0.05, Some(0.9)), None);
}
