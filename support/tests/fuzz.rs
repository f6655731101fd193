//! A short fuzzing round over everything that takes outside input (`audio-mnist bench-fuzz`):
//! WAV uploads, model files, `listen`'s stdin and the HTTP API, each with its own mutated
//! inputs. The long round and its figures: support/RESULTS.md ("Fuzzing").

use std::process::Command;

#[test]
fn a_short_fuzzing_round_finds_no_panic_hang_or_unexplained_refusal() {
    let out = Command::new(env!("CARGO_BIN_EXE_audio-mnist"))
        .args(["bench-fuzz", "--cases", "3000", "--seed", "7"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let reports: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let targets: Vec<&str> = reports.iter().map(|r| r["target"].as_str().unwrap()).collect();
    assert_eq!(targets, ["wav", "model", "listen", "http"], "{stdout}");
    for r in &reports {
        let n = |k: &str| r[k].as_u64().unwrap();
        assert_eq!(n("cases"), 3000);
        assert_eq!((n("panics"), n("slow_cases"), n("unclear_errors")), (0, 0, 0), "{r}");
        // The mutations reach both sides: some inputs still valid, most refused with reasons.
        assert!(n("accepted") >= 30 && n("rejected") >= 1000, "{r}");
        assert_eq!(n("accepted") + n("rejected"), 3000);
        assert!(r["peak_rss_mib"].as_f64().unwrap() < 1024.0, "{r}");
    }
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_round_that_finds_a_problem_fails() {
    // A slow-case limit of 0 ms makes every case "slow": the command must say so by its status.
    let out = Command::new(env!("CARGO_BIN_EXE_audio-mnist"))
        .args(["bench-fuzz", "--target", "wav", "--cases", "50", "--slow-ms", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["slow_cases"], 50);
}
