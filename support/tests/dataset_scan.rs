//! Layout detection, naming rules and the metadata table.

mod common;

use std::path::Path;

use support::data::dataset::{scan, Layout};
use support::data::table::Values;

fn wav(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    common::write_wav(path, 48000, &common::tone(48000, 0.2, 200.0));
}

const META: &str = r#"{
 "01": {"accent": "german", "age": 30, "gender": "male", "native speaker": "no",
        "origin": "Europe, Germany, Wuerzburg", "recordingdate": "17-06-22-11-04-28", "recordingroom": "Kino"},
 "02": {"accent": "German", "age": "1234", "gender": "Female", "native speaker": "no",
        "origin": "Europe, Germany, Hamburg", "recordingdate": "17-06-26-17-57-29", "recordingroom": "Kino"}
}"#;

fn audiomnist(root: &Path) {
    for spk in ["01", "02"] {
        for d in 0..3 {
            wav(&root.join(spk).join(format!("{d}_{spk}_0.wav")));
        }
    }
    std::fs::write(root.join("audioMNIST_meta.txt"), META).unwrap();
}

#[test]
fn audiomnist_layout_with_metadata() {
    let dir = tempfile::tempdir().unwrap();
    audiomnist(dir.path());
    wav(&dir.path().join("01/badname.wav"));
    let ds = scan(dir.path()).unwrap();
    assert_eq!(ds.sources[0].layout, Layout::AudioMnist);
    assert_eq!(ds.recordings.len(), 6);
    assert_eq!(ds.speaker_ids(), vec!["01", "02"]);
    assert_eq!(ds.recordings[0].path, Path::new("01/0_01_0.wav"));
    assert_eq!(ds.skipped.len(), 1);
    assert!(
        ds.skipped[0].file.ends_with("badname.wav")
            && ds.skipped[0].reason.contains("{digit}_{speaker}_{take}")
    );
    assert_eq!(ds.speakers["01"].age, Some(30));
    assert_eq!(ds.speakers["02"].age, None, "age 1234 is implausible");
    assert_eq!(ds.speakers["02"].gender.as_deref(), Some("female"));
    assert!(ds.warnings.iter().any(|w| w.contains("1234")));

    let df = ds.metadata_table();
    assert_eq!(df.height(), 6);
    let names = df.names();
    for c in [
        "path",
        "digit",
        "speaker",
        "take",
        "sample_rate",
        "duration_s",
        "gender",
        "age",
        "accent",
        "recording_room",
    ] {
        assert!(names.contains(&c), "missing column {c} in {names:?}");
    }
    let Some(Values::Int(rates)) = df.column("sample_rate") else { panic!("sample_rate") };
    assert_eq!(rates[0], Some(48000));
    let Some(Values::Float(dur)) = df.column("duration_s") else { panic!("duration_s") };
    assert!((dur[0].unwrap() - 0.2).abs() < 1e-3);
    let csv = dir.path().join("out/metadata.csv");
    df.write_csv(&csv).unwrap();
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.starts_with("dataset,path,digit,speaker,take,sample_rate"), "{text}");
    assert_eq!(text.lines().count(), 7);
}

#[test]
fn kaggle_unzip_one_level_deeper_is_found_without_edits() {
    let dir = tempfile::tempdir().unwrap();
    audiomnist(&dir.path().join("data/data"));
    let ds = scan(dir.path()).unwrap();
    assert_eq!(ds.sources[0].layout, Layout::AudioMnist);
    assert_eq!(ds.recordings.len(), 6);
    assert_eq!(ds.recordings[0].path, Path::new("data/data/01/0_01_0.wav"));
    assert_eq!(ds.speakers.len(), 2);
}

#[test]
fn fsdd_layouts_recordings_folder_and_flat() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["0_george_0.wav", "9_jackson_49.wav", "3_theo_12.wav"] {
        wav(&dir.path().join("recordings").join(name));
    }
    std::fs::write(dir.path().join("README.md"), "fsdd").unwrap();
    let ds = scan(dir.path()).unwrap();
    assert_eq!(ds.sources[0].layout, Layout::Fsdd);
    assert_eq!(ds.recordings.len(), 3);
    assert_eq!(ds.speaker_ids(), vec!["george", "jackson", "theo"]);
    assert!(ds.speakers.is_empty());
    let flat = scan(&dir.path().join("recordings")).unwrap();
    assert_eq!(flat.recordings.len(), 3);
    assert_eq!(flat.recordings[1].path, Path::new("3_theo_12.wav"));
    let df = flat.metadata_table();
    assert!(df.column("gender").is_none(), "no speaker columns without metadata");
}

#[test]
fn duplicates_are_listed_not_counted_twice() {
    let dir = tempfile::tempdir().unwrap();
    wav(&dir.path().join("a/1_05_3.wav"));
    wav(&dir.path().join("b/1_05_3.wav"));
    let ds = scan(dir.path()).unwrap();
    assert_eq!(ds.recordings.len(), 1);
    assert!(ds.skipped[0].reason.contains("same digit, speaker and take"));
}

#[test]
fn missing_empty_and_unmatched_folders_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let e = scan(&missing).unwrap_err().to_string();
    assert!(e.contains("does not exist") && e.contains("nope"), "{e}");
    let e = scan(dir.path()).unwrap_err().to_string();
    assert!(e.contains("no recordings"), "{e}");
    std::fs::write(dir.path().join("song.wav"), "x").unwrap();
    let e = scan(dir.path()).unwrap_err().to_string();
    assert!(e.contains("no recordings") && e.contains("song.wav"), "{e}");
}

#[test]
fn real_shared_datasets_scan() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let am = scan(&data.join("audiomnist-samples")).unwrap();
    assert_eq!(am.sources[0].layout, Layout::AudioMnist);
    assert_eq!(am.recordings.len(), 6);
    assert_eq!(am.speakers.len(), 60);
    assert_eq!(am.speakers["45"].age, None, "speaker 45's recorded age is 1234");
    let Some(Values::Int(rates)) = am.metadata_table().column("sample_rate").cloned() else { panic!() };
    assert!(rates.iter().all(|&r| r == Some(48000)));
    let fsdd = scan(&data.join("fsdd")).unwrap();
    assert_eq!(fsdd.sources[0].layout, Layout::Fsdd);
    assert_eq!(fsdd.recordings.len(), 3000);
    assert_eq!(fsdd.speaker_ids().len(), 6);
    assert!(fsdd.skipped.is_empty());
}

/// Folders of different layouts as one dataset: names from the folders, speakers and paths
/// prefixed, metadata kept, each part as a scan of its folder alone.
#[test]
fn several_folders_are_one_dataset_with_namespaced_speakers() {
    use support::data::union::scan_all;
    let dir = tempfile::tempdir().unwrap();
    let fsdd = dir.path().join("fsdd/recordings");
    for (d, spk) in [(0, "george"), (1, "george"), (2, "anna")] {
        wav(&fsdd.join(format!("{d}_{spk}_0.wav")));
    }
    let am = dir.path().join("audiomnist");
    audiomnist(&am);
    let mine = dir.path().join("mine");
    wav(&mine.join("3_george_0.wav"));
    let roots = vec![fsdd.clone(), am.clone(), mine.clone()];
    let ds = scan_all(&roots).unwrap();
    let names: Vec<_> = ds.sources.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["fsdd", "audiomnist", "mine"]);
    assert_eq!(ds.recordings.len(), 3 + 6 + 1);
    assert_eq!(
        ds.speaker_ids(),
        ["audiomnist/01", "audiomnist/02", "fsdd/anna", "fsdd/george", "mine/george"]
    );
    for r in &ds.recordings {
        assert!(ds.absolute(r).is_file(), "{r:?}");
        assert_eq!(ds.source_of_speaker(&r.speaker), ds.sources[r.source].name);
    }
    assert_eq!(ds.recordings[0].path, Path::new("fsdd/0_george_0.wav"));
    assert_eq!(ds.path_of("mine/3_george_0.wav"), mine.join("3_george_0.wav"));
    assert_eq!(ds.speakers["audiomnist/01"].gender.as_deref(), Some("male"));
    assert!(ds.warnings.iter().any(|w| w.starts_with("audiomnist: speaker 02")), "{:?}", ds.warnings);
    let table = ds.metadata_table();
    let Some(Values::Text(folders)) = table.column("dataset") else { panic!("dataset") };
    assert_eq!(folders.iter().filter(|f| f.as_deref() == Some("audiomnist")).count(), 6);
    let Some(Values::Text(gender)) = table.column("gender") else { panic!("gender") };
    assert_eq!(gender.iter().filter(|g| g.is_none()).count(), 4, "metadata only where the folder has it");
    for (i, root) in roots.iter().enumerate() {
        let alone = scan(root).unwrap();
        let part = ds.part(i);
        assert_eq!((part.recordings, part.speakers), (alone.recordings, alone.speakers), "{root:?}");
    }
    // A single folder is itself, unprefixed; the same folder twice and no folder are errors.
    assert_eq!(scan_all(&[mine.clone()]).unwrap().speaker_ids(), ["george"]);
    let e = scan_all(&[mine.clone(), mine.join("../mine")]).unwrap_err().to_string();
    assert!(e.contains("given twice"), "{e}");
    assert!(scan_all(&[]).unwrap_err().to_string().contains("--data"));
    // Same folder names in different places stay apart.
    let other = dir.path().join("x/mine");
    wav(&other.join("4_george_0.wav"));
    let two = scan_all(&[mine, other]).unwrap();
    assert_eq!(two.speaker_ids(), ["mine-2/george", "mine/george"]);
}

/// `--data` repeated, or a list in AUDIO_MNIST_DATA, on the command line.
#[test]
fn cli_takes_several_data_folders() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    wav(&a.join("0_george_0.wav"));
    wav(&b.join("1_george_0.wav"));
    let bin = env!("CARGO_BIN_EXE_audio-mnist");
    let csv = dir.path().join("m.csv");
    let o = std::process::Command::new(bin)
        .args(["scan", "--csv"])
        .arg(&csv)
        .arg("--data")
        .arg(&a)
        .arg("--data")
        .arg(&b)
        .env_remove("AUDIO_MNIST_DATA")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("together: 2 recordings, 2 speakers"), "{stdout}");
    assert!(std::fs::read_to_string(&csv).unwrap().contains("b,b/1_george_0.wav,1,b/george"));
    let list = std::env::join_paths([&a, &b]).unwrap();
    let o = std::process::Command::new(bin)
        .args(["scan", "--csv"])
        .arg(&csv)
        .env("AUDIO_MNIST_DATA", list)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("together: 2 recordings, 2 speakers"));
    let o = std::process::Command::new(bin).args(["scan"]).env_remove("AUDIO_MNIST_DATA").output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("AUDIO_MNIST_DATA"));
}
