//! The feature cache: hits, misses on any change, atomic writes, and the file contract of
//! `audio-mnist features` (tensor `features` f32 N x bands x 32, `digits`, metadata `files`).

mod common;

use std::path::Path;
use std::process::Command;

use safetensors::SafeTensors;
use support::data::cache::{cache_path, fingerprint, load_or_extract, CacheStatus, FeatureSet};
use support::data::extract::no_progress;
use support::{scan, FeatureConfig, FeatureExtractor};

fn make_dataset(root: &Path, n: usize) {
    for i in 0..n {
        let spk = ["aa", "bb"][i % 2];
        let path = root.join("recordings").join(format!("{}_{spk}_{i}.wav", i % 10));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        common::write_wav(&path, 8000, &common::tone(8000, 0.6, 120.0 + 15.0 * i as f32));
    }
}

fn fx(config: FeatureConfig) -> FeatureExtractor {
    FeatureExtractor::new(config).unwrap()
}

#[test]
fn second_run_hits_and_any_change_misses() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cache = dir.path().join("cache");
    make_dataset(&data, 6);
    let ds = scan(&data).unwrap();
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let progress = |_: usize, _: usize| {
        calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    };
    let (first, s1) = load_or_extract(&ds, &fx(FeatureConfig::default()), &cache, &progress).unwrap();
    assert!(matches!(s1, CacheStatus::Miss(_)));
    assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 6, "progress called once per file");
    let (second, s2) = load_or_extract(&ds, &fx(FeatureConfig::default()), &cache, &progress).unwrap();
    assert!(matches!(s2, CacheStatus::Hit(_)));
    assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 6, "a hit extracts nothing");
    assert_eq!(first, second, "bit-identical round trip");

    // a config change recomputes, into another file
    let other = FeatureConfig { n_mels: 64, ..FeatureConfig::default() };
    let (third, s3) = load_or_extract(&ds, &fx(other), &cache, &no_progress).unwrap();
    assert!(matches!(s3, CacheStatus::Miss(_)));
    assert_eq!((third.n_mels, third.n_frames), (64, 32));

    // a changed file (size and mtime) recomputes
    let fp_before = fingerprint(&ds, &FeatureConfig::default()).unwrap();
    let changed = data.join("recordings/0_aa_0.wav");
    std::thread::sleep(std::time::Duration::from_millis(20));
    common::write_wav(&changed, 8000, &common::tone(8000, 0.7, 300.0));
    let ds2 = scan(&data).unwrap();
    assert_ne!(fp_before, fingerprint(&ds2, &FeatureConfig::default()).unwrap());
    let (fourth, s4) = load_or_extract(&ds2, &fx(FeatureConfig::default()), &cache, &no_progress).unwrap();
    assert!(matches!(s4, CacheStatus::Miss(_)));
    assert_ne!(fourth.row(0), first.row(0));
    assert_eq!(fourth.row(1), first.row(1));
}

#[test]
fn an_interrupted_or_damaged_cache_file_is_never_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cache = dir.path().join("cache");
    make_dataset(&data, 4);
    let ds = scan(&data).unwrap();
    let f = fx(FeatureConfig::default());
    let fp = fingerprint(&ds, f.config()).unwrap();
    let path = cache_path(&cache, &fp);
    let (good, _) = load_or_extract(&ds, &f, &cache, &no_progress).unwrap();
    // Simulate a crash that left half a file at the final name (which our atomic rename
    // never does, but a copy tool or full disk might) and a stray temporary file.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(cache.join(".features-abc.part"), &bytes[..100]).unwrap();
    let err = FeatureSet::load(&path).unwrap_err();
    assert!(format!("{err:#}").contains(&*path.display().to_string()), "{err:#}");
    let (again, status) = load_or_extract(&ds, &f, &cache, &no_progress).unwrap();
    assert!(matches!(status, CacheStatus::Miss(_)));
    assert_eq!(again, good);
    // only complete files in the cache folder: the final one and the stray we planted
    let names: Vec<String> =
        std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn features_command_writes_the_contract_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    make_dataset(&data, 5);
    std::fs::write(data.join("recordings/7_bad_1.wav"), b"garbage").unwrap();
    let out = dir.path().join("feats.safetensors");
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_audio-mnist"))
            .args(["features", "--data"])
            .arg(&data)
            .arg("--out")
            .arg(&out)
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .output()
            .unwrap()
    };
    let o = run();
    let stderr = String::from_utf8_lossy(&o.stderr);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("7_bad_1.wav") && stderr.contains("not a WAV"),
        "skipped file reported: {stderr}"
    );
    assert!(dir.path().join("cache/metadata.csv").exists());

    let bytes = std::fs::read(&out).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let f = st.tensor("features").unwrap();
    assert_eq!(f.dtype(), safetensors::Dtype::F32);
    // The default recipe (`best`): 40 mel bands.
    assert_eq!(f.shape(), &[5, 40, 32]);
    let d = st.tensor("digits").unwrap();
    assert_eq!(d.shape(), &[5]);
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let files: Vec<String> = serde_json::from_str(&meta["files"]).unwrap();
    assert_eq!(
        files,
        vec![
            "recordings/0_aa_0.wav",
            "recordings/1_bb_1.wav",
            "recordings/2_aa_2.wav",
            "recordings/3_bb_3.wav",
            "recordings/4_aa_4.wav"
        ]
    );
    let digits: Vec<i64> =
        d.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect();
    assert_eq!(digits, vec![0, 1, 2, 3, 4]);
    // The default recipe's features (`best`: frames spread over the word, 50 dB range).
    let config: FeatureConfig = serde_json::from_str(&meta["config"]).unwrap();
    let expected = support::train::Recipe::default().features();
    assert_eq!(config, expected);
    assert_ne!(config, FeatureConfig::default());
    assert_eq!(meta["version"], support::VERSION);

    // row i is the features of files[i], as the library computes them
    let lib = fx(expected).extract_file(&data.join(&files[3])).unwrap();
    let set = FeatureSet::load(&out).unwrap();
    assert_eq!(set.row(3), &lib[..]);

    let o2 = run();
    assert!(String::from_utf8_lossy(&o2.stdout).contains("from cache"));
    // The output shares the cache file's contents (a link where possible) but not its fate.
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
    std::fs::remove_dir_all(dir.path().join("cache")).unwrap();
    assert_eq!(FeatureSet::load(&out).unwrap().row(3), &lib[..]);
}

#[test]
fn cli_errors_are_one_clear_line_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_audio-mnist"))
        .args(["features", "--data"])
        .arg(dir.path().join("missing"))
        .arg("--out")
        .arg(dir.path().join("x.safetensors"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr.starts_with("error: data folder")
            && stderr.contains("missing")
            && stderr.contains("does not exist"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
    let not_st = dir.path().join("x.safetensors");
    std::fs::write(&not_st, b"hello").unwrap();
    let err = FeatureSet::load(&not_st).unwrap_err();
    assert!(format!("{err:#}").contains("not a safetensors file"), "{err:#}");
}

#[test]
fn shared_fsdd_subset_extracts_cleanly() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let mut ds = scan(&data.join("fsdd")).unwrap();
    ds.recordings.retain(|r| r.take < 3);
    let dir = tempfile::tempdir().unwrap();
    let (set, _) = load_or_extract(&ds, &fx(FeatureConfig::default()), dir.path(), &no_progress).unwrap();
    assert_eq!(set.len(), 6 * 10 * 3);
    assert!(set.skipped.is_empty());
    assert!(set.features.iter().all(|v| v.is_finite() && *v <= 0.0 && *v >= -80.0));
    // every image reaches 0 dB (ref = max) somewhere
    assert!((0..set.len()).all(|i| set.row(i).iter().any(|v| *v == 0.0)));
}
