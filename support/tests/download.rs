//! `audio-mnist download` against a local HTTP server (no internet here): a good archive laid
//! out like the dataset authors' repository, a truncated one, one with a `../` entry, one with
//! an absolute path, a non-archive, and a server that drops the connection half-way (resumed
//! with a range request). Plus `audio-mnist run` on a folder that needs the download.
#![cfg(feature = "train")]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use support::data::download::{completed, download, inspect, Outcome, MARKER};

/// A tiny HTTP/1.1 server on 127.0.0.1: `GET /name` serves `files[name]` (honouring
/// `Range: bytes=N-`), except `/drop/name`, whose first response announces the full length and
/// closes after half of it. Counts the requests it answered.
struct Server {
    base: String,
    requests: Arc<AtomicUsize>,
}

fn serve(files: Vec<(&'static str, Vec<u8>)>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    let files: std::collections::HashMap<String, Vec<u8>> =
        files.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    std::thread::spawn(move || {
        let dropped = std::sync::Mutex::new(std::collections::HashSet::<String>::new());
        for stream in listener.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = answer(stream, &files, &dropped);
        }
    });
    Server { base, requests }
}

fn answer(
    mut stream: TcpStream,
    files: &std::collections::HashMap<String, Vec<u8>>,
    dropped: &std::sync::Mutex<std::collections::HashSet<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").trim_start_matches('/').to_string();
    let mut from = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
            from = v.trim().trim_end_matches('-').parse().unwrap_or(0);
        }
    }
    let (drop_half, name) = match path.strip_prefix("drop/") {
        Some(n) => (dropped.lock().unwrap().insert(n.to_string()), n.to_string()),
        None => (false, path.clone()),
    };
    let Some(body) = files.get(&name) else {
        return stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    };
    if from > 0 && from < body.len() {
        let rest = &body[from..];
        write!(
            stream,
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {}-{}/{}\r\nConnection: close\r\n\r\n",
            rest.len(),
            from,
            body.len() - 1,
            body.len()
        )?;
        return stream.write_all(rest);
    }
    write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())?;
    if drop_half {
        stream.write_all(&body[..body.len() / 2])?;
        stream.flush()?;
        return stream.shutdown(std::net::Shutdown::Both);
    }
    stream.write_all(body)
}

/// A zip laid out like github.com/soerenab/AudioMNIST's archive: `AudioMNIST-master/data/NN/
/// d_NN_t.wav` + `audioMNIST_meta.txt`, plus repository files that are not part of the data.
/// The recordings are real FSDD speech when the shared data is there, else tones.
fn audiomnist_zip(speakers: usize, takes: usize, extra: &[(&str, &[u8])]) -> Vec<u8> {
    let shared = common::shared_data();
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut out);
        let opts =
            zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        zip.add_directory("AudioMNIST-master/", opts).unwrap();
        zip.start_file("AudioMNIST-master/README.md", opts).unwrap();
        zip.write_all(b"# AudioMNIST\n").unwrap();
        let mut meta = serde_json::Map::new();
        let fsdd = ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"];
        for s in 1..=speakers {
            let id = format!("{s:02}");
            meta.insert(id.clone(), serde_json::json!({"gender": "female", "age": "30"}));
            zip.add_directory(format!("AudioMNIST-master/data/{id}/"), opts).unwrap();
            for d in 0..10 {
                for t in 0..takes {
                    let bytes = match &shared {
                        Some(dir) => std::fs::read(
                            dir.join(format!("fsdd/recordings/{d}_{}_{t}.wav", fsdd[(s - 1) % fsdd.len()])),
                        )
                        .unwrap(),
                        None => {
                            let tmp = tempfile::NamedTempFile::new().unwrap();
                            common::write_wav(
                                tmp.path(),
                                8000,
                                &common::tone(8000, 0.5, 150.0 + 20.0 * d as f32),
                            );
                            std::fs::read(tmp.path()).unwrap()
                        }
                    };
                    zip.start_file(format!("AudioMNIST-master/data/{id}/{d}_{id}_{t}.wav"), opts).unwrap();
                    zip.write_all(&bytes).unwrap();
                }
            }
        }
        zip.start_file("AudioMNIST-master/data/audioMNIST_meta.txt", opts).unwrap();
        zip.write_all(serde_json::to_string(&meta).unwrap().as_bytes()).unwrap();
        for (name, bytes) in extra {
            zip.start_file(*name, opts).unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap();
    }
    out.into_inner()
}

fn replace_bytes(mut data: Vec<u8>, from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut hits = 0;
    let mut i = 0;
    while i + from.len() <= data.len() {
        if &data[i..i + from.len()] == from {
            data[i..i + from.len()].copy_from_slice(to);
            hits += 1;
        }
        i += 1;
    }
    assert_eq!(hits, 2, "local header and central directory");
    data
}

fn no_progress(_: u64, _: Option<u64>) {}

fn files_under(dir: &Path) -> usize {
    walkdir::WalkDir::new(dir).into_iter().flatten().filter(|e| e.file_type().is_file()).count()
}

#[test]
fn downloads_extracts_verifies_and_does_not_repeat() {
    let server = serve(vec![("good.zip", audiomnist_zip(3, 4, &[]))]);
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("data");
    let url = format!("{}/good.zip", server.base);
    let Outcome::Downloaded(report) = download(&url, &dest, &no_progress).unwrap() else {
        panic!("expected a download")
    };
    assert_eq!((report.speaker_folders, report.wavs, report.metadata), (3, 120, true));
    // The shape check names the differences from the real dataset.
    assert_eq!(
        report.differences,
        vec!["3 speaker folders, AudioMNIST has 60", "120 recordings, AudioMNIST has 30000"]
    );
    // The layout the scanner expects, and nothing of the repository besides the data.
    assert!(dest.join("01/0_01_0.wav").is_file() && dest.join("audioMNIST_meta.txt").is_file());
    assert!(!dest.join("README.md").exists() && !dest.join("AudioMNIST-master").exists());
    assert!(!dest.join(".download").exists(), "staging folder left behind");
    let ds = support::scan(&dest).unwrap();
    assert_eq!(ds.recordings.len(), 120);
    assert_eq!(ds.speakers.len(), 3);
    assert_eq!(completed(&dest).unwrap(), report);
    // Completed: not fetched again.
    let before = server.requests.load(Ordering::SeqCst);
    assert!(matches!(download(&url, &dest, &no_progress).unwrap(), Outcome::AlreadyComplete(_)));
    assert_eq!(server.requests.load(Ordering::SeqCst), before);
    assert_eq!(inspect(&dest, &url).unwrap(), report);
}

#[test]
fn a_dropped_connection_is_resumed_with_a_range_request() {
    let archive = audiomnist_zip(2, 3, &[]);
    let server = serve(vec![("a.zip", archive.clone())]);
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("data");
    let url = format!("{}/drop/a.zip", server.base);
    let err = download(&url, &dest, &no_progress).unwrap_err().to_string();
    assert!(err.contains("Run the command again to resume"), "{err}");
    // Nothing looks complete: no marker, no extracted speaker folder.
    assert!(completed(&dest).is_none() && !dest.join("01").exists() && !dest.join(MARKER).exists());
    let part = dest.join(".download/archive.zip.part");
    let kept = std::fs::metadata(&part).unwrap().len() as usize;
    assert!(kept > 0 && kept < archive.len(), "kept {kept} of {}", archive.len());
    // The second attempt asks for the rest only and ends with the complete dataset.
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let Outcome::Downloaded(report) =
        download(&url, &dest, &move |d, t| s2.lock().unwrap().push((d, t))).unwrap()
    else {
        panic!("expected a download")
    };
    let first = seen.lock().unwrap()[0];
    assert_eq!(first, (kept as u64, Some(archive.len() as u64)), "the resumed download must start at {kept}");
    assert_eq!((report.speaker_folders, report.wavs), (2, 60));
}

#[test]
fn unsafe_or_broken_archives_are_refused_and_write_nothing_outside() {
    let good = audiomnist_zip(1, 2, &[]);
    let traversal = audiomnist_zip(1, 2, &[("AudioMNIST-master/data/../../../escaped.txt", b"gotcha")]);
    // The zip writer strips a leading '/', so the absolute name is patched into the bytes
    // (same length: offsets stay valid; the CRC covers the contents only).
    let absolute = replace_bytes(
        audiomnist_zip(1, 2, &[("AudioMNIST-master/data/Ztmp/audio-mnist-absolute-escape.txt", b"gotcha")]),
        b"AudioMNIST-master/data/Ztmp/",
        b"/tmp////////////////////////",
    );
    let truncated = good[..good.len() * 2 / 3].to_vec();
    let html = b"<html><body>Rate limit exceeded</body></html>".to_vec();
    let server = serve(vec![
        ("traversal.zip", traversal),
        ("absolute.zip", absolute),
        ("truncated.zip", truncated),
        ("page.html", html),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    for (name, expect) in [
        ("traversal.zip", "outside the destination"),
        ("absolute.zip", "outside the destination"),
        ("truncated.zip", "not a complete zip archive"),
        ("page.html", "not a complete zip archive"),
        ("missing.zip", "HTTP 404"),
    ] {
        let dest = tmp.path().join(name).join("data");
        let err =
            format!("{:#}", download(&format!("{}/{name}", server.base), &dest, &no_progress).unwrap_err());
        assert!(err.contains(expect), "{name}: {err}");
        assert!(completed(&dest).is_none(), "{name}: marked complete");
        assert!(!dest.join("01").exists(), "{name}: speaker folder written");
        // The damaged archive is deleted so the next run fetches a fresh one.
        assert!(!dest.join(".download/archive.zip").exists(), "{name}: bad archive kept");
    }
    // Nothing escaped the destinations.
    assert!(!tmp.path().join("escaped.txt").exists());
    assert!(!Path::new("/tmp/audio-mnist-absolute-escape.txt").exists());
    assert_eq!(files_under(tmp.path()), 0, "files were written for refused archives");
}

#[test]
fn run_downloads_when_the_data_folder_is_empty_then_trains() {
    let Some(_) = common::shared_data() else { return };
    let server = serve(vec![("a.zip", audiomnist_zip(4, 5, &[]))]);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = tmp.path().join("out");
    let bin = env!("CARGO_BIN_EXE_audio-mnist");
    let output = Command::new(bin)
        .args(["run", "--epochs", "2"])
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .arg("--cache-dir")
        .arg(tmp.path().join("cache"))
        .arg("--url")
        .arg(format!("{}/a.zip", server.base))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("downloading AudioMNIST"), "{text}");
    assert!(out.join("model.safetensors").is_file() && out.join("classification_report.txt").is_file());
    assert!(completed(&data).is_some());
    // Where the time went: printed at the end, and in metrics.json.
    let summary = &text[text.find("time by stage:").expect("no stage summary")..];
    for stage in ["scan", "features", "training", "evaluation", "export", "total"] {
        assert!(summary.contains(&format!("  {stage} ")), "{summary}");
    }
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let stages = metrics["stages"].as_array().unwrap();
    let names: Vec<&str> = stages.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["scan", "features", "training", "evaluation", "export"]);
    assert!(stages
        .iter()
        .all(|s| s["seconds"].as_f64().unwrap() >= 0.0 && s["peak_mib"].as_f64().unwrap() > 1.0));
    assert!(
        stages[2]["seconds"].as_f64() > stages[0]["seconds"].as_f64(),
        "training is not the longest: {stages:?}"
    );
    // Offline on a folder the user filled: no download attempted (the URL is unreachable).
    let fsdd = tmp.path().join("fsdd");
    std::fs::create_dir_all(&fsdd).unwrap();
    for entry in std::fs::read_dir(data.join("01")).unwrap().flatten() {
        std::fs::copy(entry.path(), fsdd.join(entry.file_name().to_string_lossy().replace("_01_", "_anna_")))
            .unwrap();
    }
    for entry in std::fs::read_dir(data.join("02")).unwrap().flatten() {
        std::fs::copy(entry.path(), fsdd.join(entry.file_name().to_string_lossy().replace("_02_", "_bert_")))
            .unwrap();
    }
    for entry in std::fs::read_dir(data.join("03")).unwrap().flatten() {
        std::fs::copy(entry.path(), fsdd.join(entry.file_name().to_string_lossy().replace("_03_", "_carl_")))
            .unwrap();
    }
    let output = Command::new(bin)
        .args(["run", "--epochs", "1", "--test-speakers", "anna", "--val-speakers", "bert"])
        .arg("--data")
        .arg(&fsdd)
        .arg("--out")
        .arg(tmp.path().join("out2"))
        .arg("--cache-dir")
        .arg(tmp.path().join("cache"))
        .args(["--url", "http://127.0.0.1:9/unreachable.zip"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}");
    assert!(!text.contains("downloading"), "{text}");
    // A non-empty folder without recordings is the user's: refused with the scanner's reason.
    let junk = tmp.path().join("junk");
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("notes.txt"), "x").unwrap();
    let output = Command::new(bin)
        .args(["run", "--url", "http://127.0.0.1:9/unreachable.zip"])
        .arg("--data")
        .arg(&junk)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains("no recordings named"), "{err}");
}

fn tone_wav_bytes(digit: usize) -> Vec<u8> {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    common::write_wav(tmp.path(), 8000, &common::tone(8000, 0.5, 150.0 + 20.0 * digit as f32));
    std::fs::read(tmp.path()).unwrap()
}

/// A zip laid out like github.com/Jakobovski/free-spoken-digit-dataset's archive.
fn fsdd_zip() -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut out);
        let opts = zip::write::SimpleFileOptions::default();
        let root = "free-spoken-digit-dataset-master";
        zip.start_file(format!("{root}/README.md"), opts).unwrap();
        zip.write_all(b"# FSDD\n").unwrap();
        zip.start_file(format!("{root}/utils/spectogramer.py"), opts).unwrap();
        zip.write_all(b"print(1)\n").unwrap();
        for speaker in ["george", "jackson"] {
            for d in 0..10 {
                zip.start_file(format!("{root}/recordings/{d}_{speaker}_0.wav"), opts).unwrap();
                zip.write_all(&tone_wav_bytes(d)).unwrap();
            }
        }
        zip.finish().unwrap();
    }
    out.into_inner()
}

/// A .tar.gz laid out like speech_commands_v0.02.tar.gz: a folder per word.
fn speech_commands_tgz() -> Vec<u8> {
    let words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    let mut add = |path: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, path, bytes).unwrap();
    };
    for (d, word) in words.iter().enumerate() {
        for speaker in ["0a7c2a8d", "ffd2ba2f"] {
            add(&format!("./{word}/{speaker}_nohash_0.wav"), &tone_wav_bytes(d));
        }
    }
    add("./yes/0a7c2a8d_nohash_0.wav", &tone_wav_bytes(1));
    add("./_background_noise_/white_noise.wav", &tone_wav_bytes(2));
    add("./LICENSE", b"CC BY 4.0");
    tar.into_inner().unwrap().finish().unwrap()
}

#[test]
fn fsdd_and_speech_commands_download_into_the_recordings_layout() {
    let server = serve(vec![("fsdd.zip", fsdd_zip()), ("sc.tgz", speech_commands_tgz())]);
    let tmp = tempfile::tempdir().unwrap();
    let run = |dataset: &str, url: &str, dest: &Path| {
        Command::new(env!("CARGO_BIN_EXE_audio-mnist"))
            .args(["download", "--dataset", dataset, "--url", &format!("{}/{url}", server.base), "--dest"])
            .arg(dest)
            .output()
            .unwrap()
    };
    let fsdd = tmp.path().join("fsdd");
    let o = run("fsdd", "fsdd.zip", &fsdd);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("2 speakers, 20 recordings"), "{stdout}");
    assert_eq!(files_under(&fsdd.join("recordings")), 20);
    assert!(!fsdd.join("README.md").exists() && !fsdd.join("utils").exists());
    let ds = support::scan(&fsdd).unwrap();
    assert_eq!((ds.recordings.len(), ds.speaker_ids().len()), (20, 2));

    let sc = tmp.path().join("sc");
    let o = run("speech-commands", "sc.tgz", &sc);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Only the digit words, renamed; "yes" and the background noise are left out.
    assert_eq!(files_under(&sc.join("recordings")), 20);
    assert!(sc.join("recordings/7_0a7c2a8d_0.wav").is_file());
    let ds = support::scan(&sc).unwrap();
    assert_eq!((ds.recordings.len(), ds.speaker_ids().len()), (20, 2));
    let marker = completed(&sc).unwrap();
    assert_eq!(marker.corpus, support::data::download::Corpus::SpeechCommands);
    assert!(marker.differences.iter().any(|d| d.contains("20 recordings")), "{marker:?}");
    // A folder that holds another corpus is not overwritten.
    let o = run("fsdd", "fsdd.zip", &sc);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("already holds a download of SpeechCommands"));
    // A broken tarball is a clear error, and deleted for the next try.
    let o = run("speech-commands", "fsdd.zip", &tmp.path().join("bad"));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not a complete .tar.gz"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!tmp.path().join("bad/.download/archive.tar.gz").exists());
}
