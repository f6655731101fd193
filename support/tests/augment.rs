//! Augmentation: reproducible, each step does something, and "nothing on" is the clean pipeline.

mod common;

use rand::rngs::StdRng;
use rand::SeedableRng;
use support::train::augment::{augment_one, epoch_features, load_clips, AugmentConfig};
use support::train::AugmentStep;
use support::{FeatureConfig, FeatureExtractor};

/// Four FSDD recordings (folder, names) with the extractor and their clean clips.
fn fsdd_clips() -> Option<(std::path::PathBuf, Vec<&'static str>, FeatureExtractor, Vec<Vec<f32>>)> {
    let root = common::shared_data()?.join("fsdd/recordings");
    let files = vec!["0_george_0.wav", "3_jackson_7.wav", "7_theo_3.wav", "9_lucas_12.wav"];
    let fx = FeatureExtractor::new(FeatureConfig::default()).unwrap();
    let paths: Vec<_> = files.iter().map(|f| root.join(f)).collect();
    let clips = load_clips(&fx, &paths).unwrap();
    Some((root, files, fx, clips))
}

#[test]
fn no_augmentation_reproduces_the_clean_features() {
    let Some((root, files, fx, clips)) = fsdd_clips() else { return };
    for (clip, f) in clips.iter().zip(&files) {
        let clean = fx.extract_file(&root.join(f)).unwrap();
        let (mean, std) = (-40.0, 20.0);
        let ours = augment_one(
            &fx,
            clip,
            &[],
            &AugmentConfig::default(),
            &mut StdRng::seed_from_u64(0),
            (mean, std),
        );
        let worst = clean.iter().zip(&ours).map(|(c, o)| ((c - mean) / std - o).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-5, "{f}: differs from the clean features by {worst}");
    }
}

#[test]
fn every_step_changes_the_features_and_is_reproducible() {
    let Some((_, _, fx, clips)) = fsdd_clips() else { return };
    let norm = (-40.0, 20.0);
    let clean = epoch_features(&fx, &clips, &AugmentConfig::default(), 1, 1, norm);
    use AugmentStep::*;
    for step in [Speed, Noise, Babble, Reverb, Telephone, Clip, Vtlp] {
        // Every clip gets the step (probability 1), so "changed nothing" is a real failure.
        let cfg = AugmentConfig::with_steps(&[step]);
        let always = |p: f32| if p > 0.0 { 1.0 } else { 0.0 };
        let cfg = AugmentConfig {
            noise_p: always(cfg.noise_p),
            babble_p: always(cfg.babble_p),
            reverb_p: always(cfg.reverb_p),
            telephone_p: always(cfg.telephone_p),
            clip_p: always(cfg.clip_p),
            ..cfg
        };
        assert_eq!(cfg.names().len(), 1, "{step:?}");
        let a = epoch_features(&fx, &clips, &cfg, 1, 1, norm);
        assert!(a.iter().all(|v| v.is_finite()), "{step:?}");
        assert!(a == epoch_features(&fx, &clips, &cfg, 1, 1, norm), "{step:?}: same seed, same epoch");
        assert!(a != clean, "{step:?} changed nothing");
        // Every step but the (fixed) telephone band draws new variants each epoch.
        let other_epoch = epoch_features(&fx, &clips, &cfg, 1, 2, norm);
        assert!((a != other_epoch) == (step != Telephone), "{step:?}: epochs differ");
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        assert_eq!(
            a,
            pool.install(|| epoch_features(&fx, &clips, &cfg, 1, 1, norm)),
            "{step:?}: thread count"
        );
    }
    assert!(AugmentConfig::with_steps(&[]).is_off());
}

#[test]
fn vtlp_moves_energy_along_the_mel_axis() {
    // One lit band: warping by alpha moves it to band * alpha.
    let (m, t) = (128, 4);
    let mut img = vec![0f32; m * t];
    img[40 * t..41 * t].fill(1.0);
    let up = support::train::augment::warp_mel_axis(&img, m, t, 1.1);
    let peak = (0..m).max_by(|&a, &b| up[a * t].total_cmp(&up[b * t])).unwrap();
    assert_eq!(peak, 44);
    assert_eq!(support::train::augment::warp_mel_axis(&img, m, t, 1.0), img);
}
