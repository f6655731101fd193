//! Relevance maps: completeness of Integrated Gradients, the fused kernels' input gradient
//! against Candle's, a network that can only look at one region, and the model-randomisation
//! sanity check.

use candle_core::{Device, Tensor};
use candle_nn::optim::ParamsAdamW;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::explain::{rank_correlation, Explainer, Method, Relevance};
use support::model::{init_varmap, parameters, Arch, Classifier, Cnn, CnnConfig, Kernels, Member};
use support::train::optim::AdamW;

const SIDE: usize = 16;
const CLASSES: usize = 4;

fn classifier(net: Cnn) -> Classifier {
    Classifier { members: vec![Member { net, mean: 0.0, std: 1.0, temperature: 1.0 }] }
}

fn gaussian(rng: &mut StdRng) -> f32 {
    // Box-Muller: enough for test images.
    let (u, v): (f32, f32) = (rng.random_range(1e-6..1.0), rng.random());
    (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
}

/// Whether cell `i` of a 16 x 16 image is in the region that carries the label: the lowest
/// 8 bands of the first 8 frames (a quarter of the image).
fn in_region(i: usize) -> bool {
    i / SIDE < 8 && i % SIDE < 8
}

/// Whether cell `i` is in the 2-cell silent margin around the region: the network's receptive
/// fields (3x3 conv, 2x2 pool) that see the region reach 1 cell past it, and a distractor there
/// would be seen through the same features as the label.
fn in_margin(i: usize) -> bool {
    !in_region(i) && i / SIDE < 10 && i % SIDE < 10
}

/// Images whose label is written only in the region (one of 4 fixed patterns, plus noise);
/// the rest holds a pattern as strong drawn afresh for every image, plus noise, except the
/// silent margin (the baseline's value).
fn region_data(rng: &mut StdRng, n: usize) -> (Vec<f32>, Vec<u32>) {
    let mut pattern_rng = StdRng::seed_from_u64(7);
    let patterns: Vec<Vec<f32>> = (0..CLASSES)
        .map(|_| (0..SIDE * SIDE).map(|_| if pattern_rng.random::<bool>() { 2.0 } else { 0.0 }).collect())
        .collect();
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let label = rng.random_range(0..CLASSES);
        for i in 0..SIDE * SIDE {
            let p = if in_region(i) {
                patterns[label][i]
            } else if rng.random::<bool>() {
                2.0
            } else {
                0.0
            };
            x.push(if in_margin(i) { 0.0 } else { p + 0.5 * gaussian(rng) });
        }
        y.push(label as u32);
    }
    (x, y)
}

fn small_config() -> CnnConfig {
    CnnConfig {
        n_mels: SIDE,
        n_frames: SIDE,
        channels: vec![8],
        hidden: 32,
        dropout: 0.0,
        classes: CLASSES,
        lifter: 0,
        ..CnnConfig::default()
    }
}

/// A small network trained on [`region_data`] (and its accuracy on fresh images).
fn region_network() -> (Cnn, f32) {
    let device = Device::Cpu;
    let (varmap, net) = init_varmap(&small_config(), 3, &device).unwrap();
    let vars = parameters(&varmap).unwrap().into_iter().map(|(_, v)| v).collect();
    let mut opt =
        AdamW::new(vars, ParamsAdamW { lr: 3e-3, weight_decay: 1.0, ..Default::default() }).unwrap();
    let (mut rng, mut dropout) = (StdRng::seed_from_u64(5), StdRng::seed_from_u64(6));
    for step in 0..2500 {
        if step == 1500 {
            opt.set_learning_rate(3e-4); // settle: less gradient noise on the ignored cells
        }
        let (x, y) = region_data(&mut rng, 32);
        let x = Tensor::from_vec(x, (32, 1, SIDE, SIDE), &device).unwrap();
        let y = Tensor::from_vec(y, 32, &device).unwrap();
        let logits = net.forward_t(&x, Some(&mut dropout)).unwrap();
        let loss = candle_nn::loss::cross_entropy(&logits, &y).unwrap();
        opt.step(&mut loss.backward().unwrap(), None).unwrap();
    }
    let (x, y) = region_data(&mut rng, 200);
    let x = Tensor::from_vec(x, (200, 1, SIDE, SIDE), &device).unwrap();
    let p = net.probabilities(&x).unwrap().to_vec2::<f32>().unwrap();
    let right = p.iter().zip(&y).filter(|(p, &y)| support::eval::argmax(p) == y as usize).count();
    (net, right as f32 / 200.0)
}

fn explain(net: &Cnn, method: Method, images: &[f32], classes: &[usize]) -> Vec<Relevance> {
    Explainer::new(&classifier(net.clone()), 0.0, method, &Device::Cpu)
        .unwrap()
        .explain(images, classes)
        .unwrap()
}

#[test]
fn relevance_stays_in_the_region_that_carries_the_label_and_sums_to_the_logit_change() {
    let (net, accuracy) = region_network();
    println!("region network: accuracy {:.1}% on fresh images", 100.0 * accuracy);
    assert!(accuracy > 0.95, "the region network did not learn its task: {accuracy}");
    let (images, labels) = region_data(&mut StdRng::seed_from_u64(11), 20);
    let classes: Vec<usize> = labels.iter().map(|&l| l as usize).collect();

    // Completeness: with enough steps the map sums to f(x) - f(b) within 1%.
    let fine = explain(&net, Method::IntegratedGradients { steps: 256 }, &images, &classes);
    let worst = fine.iter().map(Relevance::completeness_gap).fold(0f32, f32::max);
    let coarse = explain(&net, Method::IntegratedGradients { steps: 32 }, &images, &classes);
    let worst32 = coarse.iter().map(Relevance::completeness_gap).fold(0f32, f32::max);
    println!(
        "completeness gap: 256 steps {:.3}%, 32 steps {:.3}% (worst of 20)",
        100.0 * worst,
        100.0 * worst32
    );
    assert!(worst < 0.01, "Integrated Gradients misses f(x) - f(b) by {:.2}%", 100.0 * worst);

    // Region: over 90% of the positive relevance in the quarter that carries the label.
    for (method, maps) in [
        ("integrated gradients", &coarse),
        ("gradient x input", &explain(&net, Method::GradientTimesInput, &images, &classes)),
    ] {
        let (mut inside, mut all) = (0f64, 0f64);
        for r in maps.iter() {
            for (i, &v) in r.map.iter().enumerate().filter(|(_, &v)| v > 0.0) {
                all += v as f64;
                inside += if in_region(i) { v as f64 } else { 0.0 };
            }
        }
        println!("{method}: {:.1}% of the positive relevance in the labelled region", 100.0 * inside / all);
        assert!(
            inside / all > 0.9,
            "{method}: only {:.1}% of the positive relevance in the region",
            100.0 * inside / all
        );
    }

    // Model randomisation: the same images through re-initialised weights give other maps.
    let (_, random) = init_varmap(&small_config(), 999, &Device::Cpu).unwrap();
    let other = explain(&random, Method::IntegratedGradients { steps: 32 }, &images, &classes);
    let rho: Vec<f64> = coarse.iter().zip(&other).map(|(a, b)| rank_correlation(&a.map, &b.map)).collect();
    let mean = rho.iter().sum::<f64>() / rho.len() as f64;
    println!(
        "rank correlation trained vs re-initialised: mean {mean:.3}, max {:.3}",
        rho.iter().cloned().fold(-1.0, f64::max)
    );
    assert!(mean < 0.5, "re-initialised weights give nearly the same maps: rank correlation {mean:.3}");
    // ... while a second run of the trained network gives the very same maps.
    assert_eq!(coarse, explain(&net, Method::IntegratedGradients { steps: 32 }, &images, &classes));
}

/// TC-ResNet's maps come from Candle's autograd through its unfolded convs: Integrated
/// Gradients still sums to the logit change.
#[test]
fn tc_resnet_maps_are_complete() {
    let config = CnnConfig { arch: Arch::TcResnet, channels: vec![6, 8, 10], lifter: 8, ..small_config() };
    let net = seasoned(&config, 5);
    let mut rng = StdRng::seed_from_u64(6);
    let images: Vec<f32> = (0..3 * SIDE * SIDE).map(|_| gaussian(&mut rng)).collect();
    let maps = explain(&net, Method::IntegratedGradients { steps: 256 }, &images, &[0, 1, 3]);
    let worst = maps.iter().map(Relevance::completeness_gap).fold(0f32, f32::max);
    assert!(worst < 0.01, "Integrated Gradients misses f(x) - f(b) by {:.2}%", 100.0 * worst);
    assert!(maps.iter().all(|r| r.map.iter().any(|v| *v != 0.0)), "an empty map");
}

/// A network with trained-looking batch-norm statistics (a few training-mode passes).
fn seasoned(config: &CnnConfig, seed: u64) -> Cnn {
    let (_vm, net) = init_varmap(config, seed, &Device::Cpu).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..3 {
        let n = 4 * config.n_mels * config.n_frames;
        let x: Vec<f32> = (0..n).map(|_| gaussian(&mut rng) * 2.0 + 0.5).collect();
        let x = Tensor::from_vec(x, (4, 1, config.n_mels, config.n_frames), &Device::Cpu).unwrap();
        net.forward_t(&x, Some(&mut rng)).unwrap();
    }
    net
}

#[test]
fn fused_kernels_give_candles_input_gradient() {
    let configs = [
        CnnConfig::default(),
        CnnConfig {
            channels: vec![16, 32, 32],
            lifter: 12,
            n_frames: 30,
            classes: 11,
            ..CnnConfig::default()
        },
    ];
    for config in configs {
        let net = seasoned(&config, 21);
        let mut rng = StdRng::seed_from_u64(4);
        let images: Vec<f32> = (0..3 * config.n_mels * config.n_frames).map(|_| gaussian(&mut rng)).collect();
        let classes = [1, 7, config.classes - 1];
        for method in [Method::GradientTimesInput, Method::IntegratedGradients { steps: 8 }] {
            let fused = explain(&net, method, &images, &classes);
            let candle = explain(&net.clone().with_kernels(Kernels::Candle), method, &images, &classes);
            for (a, b) in fused.iter().zip(&candle) {
                let scale = b.map.iter().fold(1e-12f32, |m, v| m.max(v.abs()));
                let diff = a.map.iter().zip(&b.map).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale;
                assert!(
                    diff < 1e-4,
                    "{:?} {method:?}: fused and Candle maps differ by {diff:e}",
                    config.channels
                );
                assert!((a.score - b.score).abs() < 1e-3 * b.score.abs().max(1.0));
            }
            assert_eq!(fused, explain(&net, method, &images, &classes), "explanations differ between runs");
        }
    }
}

#[test]
fn an_ensembles_map_is_the_mean_of_its_networks_maps() {
    let config = small_config();
    let (a, b) = (seasoned(&config, 1), seasoned(&config, 2));
    let (images, labels) = region_data(&mut StdRng::seed_from_u64(3), 2);
    let classes: Vec<usize> = labels.iter().map(|&l| l as usize).collect();
    let method = Method::IntegratedGradients { steps: 4 };
    let member = |net: &Cnn, mean: f32, std: f32| Member { net: net.clone(), mean, std, temperature: 1.0 };
    let ensemble = Classifier { members: vec![member(&a, 0.5, 2.0), member(&b, -1.0, 0.5)] };
    let both =
        Explainer::new(&ensemble, -3.0, method, &Device::Cpu).unwrap().explain(&images, &classes).unwrap();
    let single = |m: Member| {
        Explainer::new(&Classifier { members: vec![m] }, -3.0, method, &Device::Cpu)
            .unwrap()
            .explain(&images, &classes)
            .unwrap()
    };
    let (ra, rb) = (single(member(&a, 0.5, 2.0)), single(member(&b, -1.0, 0.5)));
    for ((e, x), y) in both.iter().zip(&ra).zip(&rb) {
        for ((v, p), q) in e.map.iter().zip(&x.map).zip(&y.map) {
            assert!((v - (p + q) / 2.0).abs() <= 1e-5 * (p.abs() + q.abs()).max(1e-3));
        }
        assert!((e.score - (x.score + y.score) / 2.0).abs() < 1e-4);
    }
    // Bad requests are errors, not panics.
    let ex = Explainer::new(&ensemble, -3.0, method, &Device::Cpu).unwrap();
    assert!(ex.explain(&images, &[0]).is_err(), "two images, one class");
    assert!(ex.explain(&images, &[0, CLASSES]).is_err(), "a class the model does not have");
}

mod common;

#[test]
fn predict_explain_writes_a_picture_and_relevance_per_file() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::tone_model(dir.path());
    let inputs = dir.path().join("inputs");
    std::fs::create_dir_all(inputs.join("again")).unwrap();
    for (name, f0) in [("a.wav", 145.0), ("b.wav", 320.0), ("again/a.wav", 250.0)] {
        common::write_wav(&inputs.join(name), 8000, &common::tone(8000, 0.5, f0));
    }
    common::write_wav(&inputs.join("silent.wav"), 8000, &vec![0.0; 4000]);
    std::fs::write(inputs.join("broken.wav"), b"RIFF....WAVE").unwrap();
    let out = dir.path().join("maps");
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_audio-mnist"))
            .arg("predict")
            .arg("--model")
            .arg(&model)
            .arg("--explain")
            .arg(&out)
            .args(extra)
            .arg(&inputs)
            .output()
            .unwrap()
    };
    let o = run(&["--json"]);
    assert_eq!(o.status.code(), Some(1), "one broken file: {}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5);
    let mut pngs = Vec::new();
    for line in &lines {
        let file = line["file"].as_str().unwrap();
        let r = &line["relevance"];
        if file.ends_with("silent.wav") || file.ends_with("broken.wav") {
            assert!(r.is_null(), "{file} has no network answer, so no relevance: {line}");
            continue;
        }
        let probabilities: Vec<f32> =
            line["probabilities"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_eq!(r["class"].as_u64().unwrap() as usize, support::eval::argmax(&probabilities));
        let sum = |key: &str| r[key].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).sum::<f64>();
        assert_eq!(r["per_band"].as_array().unwrap().len(), 128);
        assert_eq!(r["per_frame"].as_array().unwrap().len(), 32);
        let total = r["total"].as_f64().unwrap();
        assert!((sum("per_band") - total).abs() < 1e-3 * total.abs().max(1.0));
        assert!((sum("per_frame") - total).abs() < 1e-3 * total.abs().max(1.0));
        let change = r["score"].as_f64().unwrap() - r["baseline_score"].as_f64().unwrap();
        assert!((total - change).abs() < 0.1 * change.abs().max(0.1), "IG far from f(x) - f(b): {r}");
        let png = std::path::PathBuf::from(r["png"].as_str().unwrap());
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
        let info = decoder.read_info().unwrap().info().clone();
        assert_eq!((info.width, info.height), (1200, 470), "{}", png.display());
        pngs.push(png.file_name().unwrap().to_string_lossy().into_owned());
    }
    pngs.sort();
    assert_eq!(pngs, ["a-2.png", "a.png", "b.png"], "one picture per file, same stems kept apart");
    // Text output names the picture; an --explain folder that cannot be made is a clear error.
    let o = run(&[]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("[relevance: "),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_audio-mnist"))
        .args(["predict", "--explain"])
        .arg(inputs.join("a.wav").join("x"))
        .arg("--model")
        .arg(&model)
        .arg(inputs.join("a.wav"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--explain"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
