//! `audio-mnist serve` against a server the test starts on a free loopback port: the API
//! answers good WAVs like `predict --json`, bad input with a 4xx and the reason (never a 5xx),
//! and 100 concurrent requests all correctly.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running server, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn start(model: &Path, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_audio-mnist"))
        .args(["serve", "--addr", "127.0.0.1:0", "--model"])
        .arg(model)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("listening on ").expect("the address line").to_string();
    Server { child, url }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

/// POST `body` as `kind`: (status, JSON).
fn post(url: &str, kind: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let mut r = agent().post(format!("{url}/api/predict")).header("Content-Type", kind).send(body).unwrap();
    let text = r.body_mut().read_to_string().unwrap();
    (r.status().as_u16(), serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}

/// Announce a `len`-byte WAV body with `Expect: 100-continue` and read the answer without
/// sending it: (status, the answer's text).
fn announce_oversize(url: &str, len: usize) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /api/predict HTTP/1.1\r\nHost: {addr}\r\nContent-Type: audio/wav\r\nContent-Length: {len}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).ok();
    let status = reply.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, reply)
}

fn wav_bytes(rate: u32, samples: &[f32]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.wav");
    common::write_wav(&p, rate, samples);
    std::fs::read(p).unwrap()
}

#[test]
fn the_api_answers_good_and_bad_input_and_many_clients() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::tone_model(dir.path());
    let server = start(&model, &["--max-body-mb", "1", "--max-seconds", "20"]);
    let url = &server.url;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let health = agent().get(format!("{url}/healthz")).call().unwrap().body_mut().read_to_string().unwrap();
    assert_eq!(health, "ok");
    let card: serde_json::Value = serde_json::from_str(
        &agent().get(format!("{url}/api/model")).call().unwrap().body_mut().read_to_string().unwrap(),
    )
    .unwrap();
    assert_eq!(card["classes"].as_array().unwrap().len(), 10);
    let page = agent().get(format!("{url}/")).call().unwrap().body_mut().read_to_string().unwrap();
    assert!(
        page.contains("Hold to talk") && !page.contains("http://") && !page.contains("https://"),
        "offline page"
    );

    // A good WAV: the same answer as `predict --json`.
    let file = dir.path().join("data/recordings/3_cat_0.wav");
    let (status, answer) = post(url, "audio/wav", &std::fs::read(&file).unwrap());
    assert_eq!(status, 200, "{answer}");
    let cli = Command::new(env!("CARGO_BIN_EXE_audio-mnist"))
        .args(["predict", "--json", "--model"])
        .arg(&model)
        .arg(&file)
        .output()
        .unwrap();
    let cli: serde_json::Value = serde_json::from_slice(&cli.stdout).unwrap();
    for key in ["digit", "label", "confidence", "probabilities"] {
        assert_eq!(answer[key], cli[key], "{key}");
    }
    // Words are listed however short the upload, a word at its very start too.
    let word = &common::tone(8000, 0.5, 215.0)[1000..3000];
    let (status, v) = post(url, "audio/wav", &wav_bytes(8000, word));
    assert_eq!((status, v["segments"].as_array().map(Vec::len)), (200, Some(1)), "{v}");
    assert_eq!(v["segments"][0]["start_s"], 0.0, "{v}");
    // Multipart works too.
    let boundary = "XyZ123";
    let mut form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n"
    )
    .into_bytes();
    form.extend(std::fs::read(&file).unwrap());
    form.extend(format!("\r\n--{boundary}--\r\n").into_bytes());
    let (status, multi) = post(url, &format!("multipart/form-data; boundary={boundary}"), &form);
    assert_eq!((status, &multi["label"]), (200, &answer["label"]), "{multi}");

    // Hostile input: each a 4xx with a reason, never a 5xx; the server stays up.
    let mut truncated = std::fs::read(&file).unwrap();
    truncated.truncate(30);
    let nan = {
        let mut v = wav_bytes(8000, &[0.1; 800]);
        let n = v.len();
        v[n - 2..].copy_from_slice(&[0xff, 0x7f]);
        v
    };
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("audio/wav", b"not a wav at all".to_vec(), 400),
        ("audio/wav", Vec::new(), 400),
        ("audio/wav", truncated, 400),
        ("audio/wav", wav_bytes(8000, &[]), 400),
        ("audio/wav", wav_bytes(8000, &vec![0.1; 8000 * 30]), 413),
        ("text/plain", b"hello".to_vec(), 415),
        ("audio/wav", nan, 200),
    ];
    for (kind, body, want) in cases {
        let (status, v) = post(url, kind, &body);
        assert_eq!(status, want, "{kind} {} bytes: {v}", body.len());
        if want != 200 {
            assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "a reason: {v}");
        }
    }
    // A body over the limit is refused from its announced length, before it is sent (a client
    // writing all 2 MB could find the connection already closed after the 413).
    let (status, reply) = announce_oversize(url, 2 << 20);
    assert_eq!(status, 413, "{reply}");
    assert!(reply.contains("error"), "{reply}");
    // 100 concurrent clients, every answer right.
    let good = std::fs::read(&file).unwrap();
    let handles: Vec<_> = (0..100)
        .map(|_| {
            let (url, good) = (url.clone(), good.clone());
            std::thread::spawn(move || post(&url, "audio/wav", &good))
        })
        .collect();
    for h in handles {
        let (status, v) = h.join().unwrap();
        assert_eq!((status, &v["label"], &v["confidence"]), (200, &answer["label"], &answer["confidence"]));
    }
    // Ctrl-C (SIGINT): the server finishes and exits cleanly.
    let mut server = server;
    // SAFETY: sends a signal to our own child process.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGINT) };
    let status = server.child.wait().unwrap();
    assert!(status.success(), "exit after Ctrl-C: {status:?}");
}

/// playwright-core (no browser download) in a cache folder beside the build, when Chromium,
/// node and npm are there (`None`, after saying so, when not; CI must have them).
fn browser_tools() -> Option<std::path::PathBuf> {
    let required = std::env::var("AUDIO_MNIST_REQUIRE_SHARED").is_ok_and(|v| v == "1");
    let have = |cmd: &str| Command::new(cmd).arg("--version").output().is_ok_and(|o| o.status.success());
    if !(have("chromium") && have("node") && have("npm")) {
        assert!(!required, "CI must have chromium, node and npm");
        eprintln!("SKIPPED: chromium, node or npm not on PATH");
        return None;
    }
    let tools = Path::new(env!("CARGO_TARGET_TMPDIR")).join("playwright");
    if !tools.join("node_modules/axe-core").is_dir() {
        std::fs::create_dir_all(&tools).unwrap();
        let o = Command::new("npm")
            .args(["install", "--silent", "--prefix"])
            .arg(&tools)
            .args(["playwright-core@1", "axe-core@4"])
            .output();
        assert!(o.is_ok_and(|o| o.status.success()), "npm install playwright-core failed");
    }
    Some(tools)
}

/// Run `tests/fixtures/NAME.js` with `args` and a screenshot folder (`target/tmp/NAME`, the
/// last argument) under node with playwright-core: its output (it must succeed) and the folder.
fn run_browser(tools: &Path, name: &str, args: &[&std::ffi::OsStr]) -> (String, std::path::PathBuf) {
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&shots).unwrap();
    let o = Command::new("node")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{name}.js")))
        .args(args)
        .arg(&shots)
        .env("NODE_PATH", tools.join("node_modules"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    println!("{out}");
    assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
    (out, shots)
}

/// The page in a real browser (Debian's Chromium, driven by playwright-core) with a fake
/// microphone playing one recording: it records, and shows the digit `predict` gives.
#[test]
fn the_page_records_from_a_microphone_and_shows_the_digit() {
    let Some(tools) = browser_tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let model = common::tone_model(dir.path());
    // The fake microphone: a word of speaker `cat` after 0.3 s of silence, then silence.
    let word = dir.path().join("data/recordings/6_cat_1.wav");
    let mut x = vec![0f32; 2400];
    x.extend(support::load_wav(&word, 60.0).unwrap().samples);
    x.extend(vec![0f32; 16000]);
    let fake = dir.path().join("fake.wav");
    common::write_wav(&fake, 8000, &x);
    let cli = Command::new(env!("CARGO_BIN_EXE_audio-mnist"))
        .args(["predict", "--json", "--model"])
        .arg(&model)
        .arg(&word)
        .output()
        .unwrap();
    let cli: serde_json::Value = serde_json::from_slice(&cli.stdout).unwrap();
    let server = start(&model, &[]);
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve_page.png");
    let o = Command::new("node")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/serve_browser.js"))
        .arg(&server.url)
        .arg(&fake)
        .arg(&shot)
        .env("NODE_PATH", tools.join("node_modules"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
    let label = out.lines().find_map(|l| l.strip_prefix("LABEL ")).expect("the page's answer");
    // The browser resamples what it records, and this small model is unsure: the page's digit
    // must be one of the two `predict` ranks first for the file (silence or a failed
    // recording would be "not a digit").
    let p: Vec<f64> = cli["probabilities"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let mut ranked: Vec<usize> = (0..p.len()).collect();
    ranked.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
    let top2: Vec<String> = ranked[..2].iter().map(|d| d.to_string()).collect();
    assert!(top2.contains(&label.to_string()), "the page heard {label}, predict ranks {top2:?} first");
    assert!(std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000));
    eprintln!("screenshot of the page: {}", shot.display());
}

/// One request, with the session cookie when given: (status, its Set-Cookie, the body).
fn session_call(
    method: &str,
    url: &str,
    cookie: &str,
    wav: Option<Vec<u8>>,
) -> (u16, Option<String>, Vec<u8>) {
    let a = agent();
    let r = match (method, wav) {
        ("POST", Some(body)) => {
            a.post(url).header("Cookie", cookie).header("Content-Type", "audio/wav").send(&body[..])
        }
        ("POST", None) => a.post(url).header("Cookie", cookie).send_empty(),
        ("DELETE", _) => a.delete(url).header("Cookie", cookie).call(),
        _ => a.get(url).header("Cookie", cookie).call(),
    };
    let mut r = r.unwrap();
    let set = r.headers().get("set-cookie").map(|v| v.to_str().unwrap().to_string());
    (r.status().as_u16(), set, r.body_mut().with_config().limit(1 << 30).read_to_vec().unwrap())
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap_or_else(|_| String::from_utf8_lossy(bytes).into())
}

/// "Teach it your voice" through the API: takes are checked as they arrive, adaptation needs
/// every digit, the adapted model answers that browser session only (and better on the new
/// voice), can be downloaded, and is forgotten on request; the served file never changes.
#[test]
fn the_page_api_teaches_a_new_voice_to_one_session_only() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::tone_model(dir.path());
    let served_bytes = std::fs::read(&model).unwrap();
    let voice = common::new_voice(dir.path());
    let take = |d: u8, t: usize| std::fs::read(voice.join(format!("{d}_dan_{t}.wav"))).unwrap();
    let server = start(&model, &[]);
    let url = &server.url;

    // No session yet: nothing to adapt or download.
    assert_eq!(session_call("POST", &format!("{url}/api/adapt"), "", None).0, 404);
    assert_eq!(session_call("GET", &format!("{url}/api/adapted"), "", None).0, 404);
    // The first take opens a session (a browser-session cookie scripts cannot read).
    let (status, set, body) =
        session_call("POST", &format!("{url}/api/enroll?digit=0"), "", Some(take(0, 0)));
    assert_eq!(status, 200, "{}", json(&body));
    let set = set.expect("a session cookie");
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
    let cookie = set.split(';').next().unwrap().to_string();
    let enroll = |d: u8, body: Vec<u8>| {
        let (s, _, b) = session_call("POST", &format!("{url}/api/enroll?digit={d}"), &cookie, Some(body));
        (s, json(&b))
    };
    // Bad takes: a digit out of range, silence, not a WAV; each a 400 with the reason.
    assert_eq!(enroll(12, take(1, 0)).0, 400);
    let (s, v) = enroll(1, wav_bytes(8000, &[0.0; 8000]));
    assert!(s == 400 && v["error"].as_str().unwrap().contains("no sound"), "{v}");
    let (s, v) = enroll(1, b"RIFF nonsense".to_vec());
    assert!(s == 400 && v["error"].as_str().is_some(), "{v}");
    // Digits 0-8 three times (0 already once), then adaptation is refused naming 9.
    for t in 0..3 {
        for d in 0..9u8 {
            if (d, t) != (0, 0) {
                let (s, v) = enroll(d, take(d, t));
                assert_eq!(s, 200, "{v}");
            }
        }
    }
    let (s, _, b) = session_call("POST", &format!("{url}/api/adapt"), &cookie, None);
    assert!(s == 400 && json(&b)["error"].as_str().unwrap().contains('9'), "{}", json(&b));
    // A wrong take can be said again: undo drops the last one.
    let (_, v) = enroll(9, take(5, 0));
    assert_eq!(v["total"], 28);
    let (_, _, b) = session_call("DELETE", &format!("{url}/api/enroll"), &cookie, None);
    assert_eq!(json(&b)["total"], 27);
    for t in 0..3 {
        assert_eq!(enroll(9, take(9, t)).0, 200);
    }

    let predict_all = |cookie: &str| -> (f64, Vec<String>) {
        let mut right = 0;
        let mut models = Vec::new();
        for d in 0..10u8 {
            for t in 3..6 {
                let (_, _, b) = session_call("POST", &format!("{url}/api/predict"), cookie, Some(take(d, t)));
                let v = json(&b);
                right += usize::from(v["digit"] == d);
                models.push(v["model"].as_str().unwrap().to_string());
            }
        }
        (right as f64 / 30.0, models)
    };
    let (before, models) = predict_all(&cookie);
    assert!(models.iter().all(|m| m == "served"));
    let (s, _, b) = session_call("POST", &format!("{url}/api/adapt"), &cookie, None);
    let v = json(&b);
    assert_eq!(s, 200, "{v}");
    assert_eq!((v["adapted"]["takes"].as_u64(), v["total"].as_u64()), (Some(30), Some(30)));
    // How long it took is reported (a timing, measured by `adapt-bench`, not asserted here).
    assert!(v["adapted"]["seconds"].as_f64().is_some_and(|t| t > 0.0), "{v}");
    // This session: the adapted model, better on dan's other takes; another browser: served.
    let (after, models) = predict_all(&cookie);
    assert!(models.iter().all(|m| m == "yours"), "{models:?}");
    let (other, models) = predict_all("am_session=someone-else");
    assert!(models.iter().all(|m| m == "served"));
    println!("dan's other takes on the page: served {before:.2}, adapted {after:.2}");
    assert!(before < 0.8 && after >= 0.8 && after > before + 0.3, "{before} -> {after}");
    assert_eq!(other, before);
    // The download is a model file that says what it learned from, with no server path.
    let (s, _, file) = session_call("GET", &format!("{url}/api/adapted"), &cookie, None);
    assert_eq!(s, 200);
    let saved = dir.path().join("mine.safetensors");
    std::fs::write(&saved, &file).unwrap();
    let meta = support::model::load_model(&saved, &candle_core::Device::Cpu).unwrap().meta;
    let a = meta.adaptation.expect("adaptation recorded");
    assert_eq!((a["takes"].as_u64(), a["from"].as_str()), (Some(30), Some("model.safetensors")));
    assert!(!String::from_utf8_lossy(&file).contains(&dir.path().display().to_string()));
    assert_eq!(std::fs::read(&model).unwrap(), served_bytes, "the served file never changes");
    // Forgotten: the served model again.
    let (_, _, b) = session_call("DELETE", &format!("{url}/api/session"), &cookie, None);
    assert_eq!(json(&b)["forgotten"], true);
    assert!(predict_all(&cookie).1.iter().all(|m| m == "served"));
}

/// A first visitor in Chromium, 390 px wide, fake microphone: a quick click, Space held, a
/// bad file, then "teach it your voice" end to end (`tests/fixtures/serve_teach.js`).
#[test]
fn the_page_teaches_your_voice_in_a_browser() {
    let Some(tools) = browser_tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let model = common::tone_model(dir.path());
    // The fake microphone, looped by Chromium: words of a new voice 0.2 s apart, so that any
    // take of a second has one in it.
    let voice = common::new_voice(dir.path());
    let mut x = Vec::new();
    for d in 0..10 {
        x.extend(support::load_wav(&voice.join(format!("{d}_dan_0.wav")), 60.0).unwrap().samples);
        x.extend(vec![0f32; 1600]);
    }
    let fake = dir.path().join("fake.wav");
    common::write_wav(&fake, 8000, &x);
    let server = start(&model, &[]);
    let (_, shots) =
        run_browser(&tools, "serve_teach", &[std::ffi::OsStr::new(&server.url), fake.as_os_str()]);
    for shot in ["recording", "bad_file", "teaching", "yours", "wide"] {
        let png = shots.join(format!("{shot}.png"));
        assert!(std::fs::metadata(&png).is_ok_and(|m| m.len() > 10_000), "{}", png.display());
    }
    eprintln!("screenshots: {}", shots.display());
}

/// Live mode through the API: samples pushed in 100 ms chunks give the same words, times and
/// sequence as `audio-mnist listen` on the same audio; bad streams are 4xx with the reason.
#[test]
fn live_streams_answer_as_listen_does() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::tone_model(dir.path());
    let x = common::tone_sequence();
    let wav = dir.path().join("seq.wav");
    common::write_wav(&wav, 8000, &x);
    let cli = Command::new(env!("CARGO_BIN_EXE_audio-mnist"))
        .args(["listen", "--json", "--model"])
        .arg(&model)
        .arg(&wav)
        .output()
        .unwrap();
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&cli.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let (cli_events, cli_seq) = lines.split_at(lines.len() - 1);
    let server = start(&model, &[]);
    let url = &server.url;
    // What the page sends: f32 little-endian, the WAV's 16-bit values.
    let samples = support::load_wav(&wav, 60.0).unwrap().samples;
    let (s, _, b) = session_call("POST", &format!("{url}/api/live?rate=8000&format=f32le"), "", None);
    let id = json(&b)["stream"].as_str().unwrap_or_else(|| panic!("{s} {}", json(&b))).to_string();
    let mut events = Vec::new();
    for chunk in samples.chunks(800) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
        let (s, _, b) = session_call("POST", &format!("{url}/api/live/{id}"), "", Some(bytes));
        assert_eq!(s, 200, "{}", json(&b));
        events.extend(json(&b)["events"].as_array().unwrap().clone());
    }
    let (_, _, b) = session_call("DELETE", &format!("{url}/api/live/{id}"), "", None);
    let last = json(&b);
    events.extend(last["events"].as_array().unwrap().clone());
    // The same words (the API's JSON widens f32 confidences to f64; compare them as f32).
    let key = |e: &serde_json::Value| {
        let f = |k: &str| e[k].as_f64().unwrap();
        (e["label"].clone(), e["digit"].clone(), f("start_s"), f("end_s"), f("confidence") as f32)
    };
    let (live, listen): (Vec<_>, Vec<_>) =
        (events.iter().map(key).collect(), cli_events.iter().map(key).collect());
    assert_eq!(live, listen, "live and listen differ");
    assert_eq!(last["sequence"], cli_seq[0]["sequence"]);
    assert!(!last["sequence"].as_str().unwrap().is_empty());
    // Closed: gone. Bad input: a reason each.
    assert_eq!(session_call("POST", &format!("{url}/api/live/{id}"), "", Some(vec![0; 8])).0, 404);
    assert_eq!(session_call("POST", &format!("{url}/api/live?rate=12"), "", None).0, 400);
    let (_, _, b) = session_call("POST", &format!("{url}/api/live?rate=8000&format=s16le"), "", None);
    let id = json(&b)["stream"].as_str().unwrap().to_string();
    let (s, _, b) = session_call("POST", &format!("{url}/api/live/{id}"), "", Some(vec![0; 3]));
    assert!(s == 400 && json(&b)["error"].as_str().unwrap().contains("whole number"), "{}", json(&b));
    let (s, _, _) = session_call("POST", &format!("{url}/api/live/{id}"), "", Some(vec![0; 2 * 8000 * 6]));
    assert_eq!(s, 400, "over 5 s in one chunk");
}

/// Live mode, examples, a short three-word upload, an error after a result and an
/// accessibility audit, in Chromium with a fake microphone (`tests/fixtures/serve_live.js`):
/// every word `listen` finds in the microphone's audio is shown live, with the same label,
/// within 500 ms of its end.
#[test]
fn the_page_is_live_accessible_and_plain_spoken() {
    let Some(tools) = browser_tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let model = common::tone_model(dir.path());
    let fake = dir.path().join("sequence.wav");
    common::write_wav(&fake, 8000, &common::tone_sequence());
    // Three words in 1.8 s.
    let mut short = Vec::new();
    for d in [3, 9, 1] {
        short.extend(common::tone(8000, 0.5, 110.0 + 35.0 * d as f32));
        short.extend(vec![0f32; 800]);
    }
    short.resize(14_400, 0.0);
    let short_wav = dir.path().join("three-nine-one.wav");
    common::write_wav(&short_wav, 8000, &short);
    let cli = Command::new(env!("CARGO_BIN_EXE_audio-mnist"))
        .args(["listen", "--json", "--model"])
        .arg(&model)
        .arg(&fake)
        .output()
        .unwrap();
    let heard: Vec<serde_json::Value> = String::from_utf8_lossy(&cli.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v.get("label").is_some())
        .collect();
    let server = start(&model, &[]);
    let args = [std::ffi::OsStr::new(&server.url), fake.as_os_str(), short_wav.as_os_str()];
    let (out, shots) = run_browser(&tools, "serve_live", &args);
    let live: Vec<serde_json::Value> =
        serde_json::from_str(out.lines().find_map(|l| l.strip_prefix("LIVE ")).expect("the live log"))
            .unwrap();
    // Chromium plays the file from the start when the microphone opens (then loops): each of
    // listen's words should be on screen, same label, about the same time (the browser
    // resamples, so times may move by a frame or two), within 500 ms of its end.
    let duration = common::tone_sequence().len() as f64 / 8000.0;
    for w in heard.iter().filter(|w| w["end_s"].as_f64().unwrap() + 0.5 < duration.min(6.0)) {
        let end = w["end_s"].as_f64().unwrap();
        let shown = live.iter().find(|l| (l["end_s"].as_f64().unwrap() - end).abs() < 0.1);
        let shown =
            shown.unwrap_or_else(|| panic!("listen's word ending at {end:.2} s not shown live: {live:?}"));
        assert_eq!(shown["label"], w["label"], "{shown} vs {w}");
        let lag = shown["lag_s"].as_f64().unwrap();
        assert!(lag < 0.5, "shown {lag:.2} s after its end");
    }
    let lags: Vec<f64> = live.iter().map(|l| l["lag_s"].as_f64().unwrap()).collect();
    println!("live: {} words, lag after the word's end {:?} s", live.len(), lags);
    assert!(std::fs::metadata(shots.join("live.png")).is_ok_and(|m| m.len() > 10_000));
}
