//! `audio-mnist listen`: a long recording, the same as a stream on stdin in chunks of any
//! size, raw PCM, and clear errors for bad streams.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use rand::{Rng, SeedableRng};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_audio-mnist"))
}

fn model(dir: &Path) -> PathBuf {
    common::tone_model(dir)
}

fn listen(model: &Path, args: &[&str], stdin: Option<(Vec<u8>, u64)>) -> Output {
    let mut cmd = bin();
    cmd.arg("listen").arg("--model").arg(model).args(args);
    let Some((bytes, seed)) = stdin else { return cmd.output().unwrap() };
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    // Chunks of random sizes, as a live stream arrives.
    let writer = std::thread::spawn(move || {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut rest = bytes.as_slice();
        while !rest.is_empty() {
            let n = rng.random_range(1..4000).min(rest.len());
            if pipe.write_all(&rest[..n]).is_err() {
                break;
            }
            rest = &rest[n..];
        }
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn a_recording_and_the_same_stream_in_random_chunks_give_the_same_events() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let wav = dir.path().join("seq.wav");
    common::write_wav(&wav, 8000, &common::tone_sequence());
    let file = listen(&model, &[wav.to_str().unwrap()], None);
    let (out, err) = text(&file);
    assert!(file.status.success(), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "five words and the sequence: {out}");
    // The first word sounds from 0.625 to 0.875 s (the tone's envelope).
    let times: Vec<f64> =
        lines[0].split(" s").next().unwrap().split('-').map(|t| t.parse().unwrap()).collect();
    assert!((times[0] - 0.625).abs() <= 0.05 && (times[1] - 0.875).abs() <= 0.05, "{out}");
    assert!(lines[5].starts_with("sequence: "), "{out}");
    let bytes = std::fs::read(&wav).unwrap();
    for seed in 0..3 {
        let (piped, _) = text(&listen(&model, &["-"], Some((bytes.clone(), seed))));
        assert_eq!(piped, out, "stdin in chunks (seed {seed})");
    }
    // Raw PCM: the WAV's samples without the header, as s16le.
    let raw = bytes[44..].to_vec();
    let (raw_out, err) = text(&listen(&model, &["--rate", "8000", "--format", "s16le", "-"], Some((raw, 9))));
    assert_eq!(raw_out, out, "{err}");
    // JSON: an object per word, then the sequence.
    let (json, _) = text(&listen(&model, &["--json", wav.to_str().unwrap()], None));
    let objects: Vec<serde_json::Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(objects[..5].iter().all(|o| o["start_s"].as_f64().unwrap() < o["end_s"].as_f64().unwrap()));
    assert_eq!(objects[5]["sequence"].as_str().unwrap(), lines[5].trim_start_matches("sequence: "));
}

#[test]
fn bad_streams_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let wav = dir.path().join("seq.wav");
    common::write_wav(&wav, 8000, &common::tone_sequence());
    let bytes = std::fs::read(&wav).unwrap();
    let cases: Vec<(Vec<&str>, Vec<u8>, &str)> = vec![
        (vec!["-"], b"this is not audio at all, just text".repeat(40), "not a WAV stream"),
        (vec!["-"], bytes[..bytes.len() / 2 + 1].to_vec(), "broke off"),
        (vec!["--rate", "8000", "--format", "s16le", "-"], vec![1, 2, 3], "inside a sample frame"),
    ];
    for (args, input, want) in cases {
        let o = listen(&model, &args, Some((input, 1)));
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want) && !err.contains("panicked"), "{args:?}: {err}");
    }
    let missing = bin().args(["listen", "--model", "no/such/model.safetensors", "x.wav"]).output().unwrap();
    assert!(text(&missing).1.contains("no model at"), "{}", text(&missing).1);
    let usage = bin().args(["listen", "--rate", "8000", "-"]).output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
    #[cfg(not(feature = "mic"))]
    {
        let mic = listen(&model, &["--mic"], None);
        assert!(text(&mic).1.contains("--features mic"), "{}", text(&mic).1);
    }
}

/// Fed through a pipe at the pace of a microphone (10 ms chunks), every word is printed within
/// 300 ms of its end (the benchmark `support/bench/listen_latency.py` does the same on speech).
#[test]
fn words_are_printed_within_300_ms_of_their_end() {
    use std::io::BufRead;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let pcm: Vec<u8> = common::tone_sequence()
        .iter()
        .flat_map(|v| ((v.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes())
        .collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_audio-mnist"))
        .args(["listen", "-", "--rate", "8000", "--format", "s16le", "--json", "--model"])
        .arg(&model)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let start = Instant::now();
    let writer = std::thread::spawn(move || {
        for (k, chunk) in pcm.chunks(160).enumerate() {
            stdin.write_all(chunk).unwrap();
            stdin.flush().unwrap();
            let due = start + Duration::from_millis(10 * (k as u64 + 1));
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
    });
    let mut delays = Vec::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let now = start.elapsed().as_secs_f64();
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if let Some(end) = v["end_s"].as_f64() {
            delays.push(now - end);
        }
    }
    writer.join().unwrap();
    assert!(child.wait().unwrap().success());
    println!("printed after each word's end: {delays:.3?} s");
    assert_eq!(delays.len(), 5, "five words");
    assert!(delays.iter().all(|&d| d < 0.3), "{delays:?}");
}
