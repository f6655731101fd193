//! `audio-mnist bench-fuzz`: the seeded mutation fuzzer ([`support::fuzz`]) on every path that
//! takes outside input: WAV uploads, model files, `listen`'s stdin (a WAV stream or raw PCM)
//! and the HTTP API of `serve` (a real server on a loopback port, live streams included).
//! One JSON report per target; the exit status is 1 when a report is not clean.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Result;
use support::fuzz::{self, seeds, Mutator, Report};
use support::infer::Predictor;
use support::stream::Listener;

#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
pub enum Target {
    Wav,
    Model,
    Listen,
    Http,
}

/// `audio-mnist bench-fuzz`.
#[derive(clap::Args, Debug)]
pub struct FuzzCmd {
    /// What to fuzz (default: all four).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub target: Vec<Target>,
    /// Mutated inputs per target.
    #[arg(long, default_value_t = 10_000)]
    pub cases: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The model that recognises (default: a small untrained one; the parsers do not care).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// A case slower than this many milliseconds counts as a hang.
    #[arg(long, default_value_t = 2000)]
    pub slow_ms: u64,
}

/// Panics on any thread (the server's included), counted by a hook that also keeps them off
/// stderr: a million fuzz cases must not print a million backtraces.
static PANICS: AtomicUsize = AtomicUsize::new(0);
static FIRST_PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn count_panics() {
    std::panic::set_hook(Box::new(|info| {
        PANICS.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut v) = FIRST_PANICS.lock() {
            if v.len() < 10 {
                v.push(info.to_string());
            }
        }
    }));
}

pub fn fuzz_command(cmd: &FuzzCmd) -> Result<bool> {
    let targets = if cmd.target.is_empty() {
        vec![Target::Wav, Target::Model, Target::Listen, Target::Http]
    } else {
        cmd.target.clone()
    };
    count_panics();
    let mut clean = true;
    for target in targets {
        let before = PANICS.load(Ordering::Relaxed);
        let mut report = run_target(target, cmd, predictor(cmd)?)?;
        // Panics on other threads (the server's) were not seen by the runner's catch_unwind.
        let seen_elsewhere = (PANICS.load(Ordering::Relaxed) - before).saturating_sub(report.panics);
        if seen_elsewhere > 0 {
            report.panics += seen_elsewhere;
            report.panic_examples.extend(
                FIRST_PANICS.lock().map(|v| v.clone()).unwrap_or_default().into_iter().map(|m| (0, m)),
            );
        }
        clean &= report.clean();
        println!("{}", serde_json::to_string(&report)?);
    }
    let _ = std::panic::take_hook();
    Ok(clean)
}

/// `--model`, or a small untrained network.
fn predictor(cmd: &FuzzCmd) -> Result<Predictor> {
    let cpu = candle_core::Device::Cpu;
    if let Some(path) = &cmd.model {
        return Predictor::load_on(path, &cpu);
    }
    let bytes = seeds::model_seeds()?.swap_remove(0);
    let loaded = support::model::file::load_model_bytes(&bytes, &cpu)?;
    Predictor::new(loaded.model, loaded.meta, &cpu)
}

fn run_target(target: Target, cmd: &FuzzCmd, predictor: Predictor) -> Result<Report> {
    let slow = Duration::from_millis(cmd.slow_ms);
    let (name, seed) = (format!("{target:?}").to_lowercase(), cmd.seed);
    Ok(match target {
        Target::Wav => {
            let mut m = Mutator::new(seed, seeds::wav_seeds()?, 1 << 16);
            fuzz::run(&name, seed, &mut m, cmd.cases, slow, |b| fuzz::check_wav(&predictor, b))
        }
        Target::Model => {
            let clip = seeds::word(8000, 0.5);
            let mut m = Mutator::new(seed, seeds::model_seeds()?, 1 << 16);
            fuzz::run(&name, seed, &mut m, cmd.cases, slow, |b| fuzz::check_model(b, &clip))
        }
        Target::Listen => {
            let mut m = Mutator::new(seed, listen_seeds()?, 1 << 16);
            fuzz::run(&name, seed, &mut m, cmd.cases, slow, |b| check_listen(&predictor, b))
        }
        Target::Http => {
            let limits = crate::serve::Limits { max_body_bytes: 1 << 20, max_seconds: 10.0 };
            let server =
                crate::serve::start_background(predictor, support::infer::ModelChoice::Bundled, limits)?;
            let mut http = Http { addr: server.addr, live: String::new(), opened: 0 };
            let mut m = Mutator::new(seed, http_seeds()?, 1 << 17);
            fuzz::run(&name, seed, &mut m, cmd.cases, slow, |b| http.check(b))
        }
    })
}

/// `listen`'s input: the first byte picks how it is read (a WAV stream, or raw PCM at one of
/// four rates, formats and channel counts), the rest is the stream.
const RAW_MODES: [(u32, support::dsp::audio::PcmFormat, u16); 4] = {
    use support::dsp::audio::PcmFormat::{F32le, S16le};
    [(8000, S16le, 1), (16000, F32le, 1), (44100, S16le, 2), (4000, F32le, 3)]
};

fn listen_seeds() -> Result<Vec<Vec<u8>>> {
    let mut out: Vec<Vec<u8>> = seeds::wav_seeds()?.into_iter().map(|w| [vec![0u8], w].concat()).collect();
    for (i, pcm) in seeds::pcm_seeds().into_iter().enumerate() {
        out.push([vec![1 + i as u8], pcm].concat());
    }
    Ok(out)
}

/// Reads in uneven pieces, as a pipe delivers.
struct Pipe<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Pipe<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.step = (self.step * 7 + 3) % 977 + 1;
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn check_listen(predictor: &Predictor, input: &[u8]) -> Result<(), String> {
    let Some((&mode, stream)) = input.split_first() else { return Err("an empty stream".into()) };
    let pipe = Box::new(Pipe { data: stream, step: input.len() });
    let mut listener: Option<Listener<&Predictor>> = None;
    let mut feed = |rate: u32, mono: &[f32]| -> Result<()> {
        listener.get_or_insert_with(|| Listener::new(predictor, rate)).push(mono);
        Ok(())
    };
    let read = match mode % 5 {
        0 => crate::listen::read_wav(pipe, &mut feed),
        m => {
            let (rate, format, channels) = RAW_MODES[m as usize - 1];
            crate::listen::read_raw(pipe, rate, format, channels, &mut feed)
        }
    };
    read.map_err(|e| format!("{e:#}"))?;
    if let Some(mut l) = listener {
        l.finish();
    }
    Ok(())
}

/// The HTTP target: raw requests to a real server. `{LIVE}` in a request is replaced by the id
/// of an open live stream; `Content-Length` is corrected to the body half of the time (so that
/// most requests reach the handlers, and the rest test the framing).
struct Http {
    addr: std::net::SocketAddr,
    live: String,
    opened: usize,
}

impl Http {
    fn check(&mut self, input: &[u8]) -> Result<(), String> {
        if self.live.is_empty() || self.opened % 500 == 0 {
            // When all 64 streams are taken the last id is kept (it may have expired: a 404).
            let _ = self.open_live();
        }
        self.opened += 1;
        let mut request = replace(input, b"{LIVE}", self.live.as_bytes());
        if input.len() % 2 == 0 {
            fix_length(&mut request);
        }
        let (status, body) = self.send(&request)?;
        // A mutated request may have opened a stream: close it, or 64 of them fill the server.
        if let Some(id) = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["stream"].as_str().map(String::from))
        {
            if id != self.live {
                let _ = self.send(format!("DELETE /api/live/{id} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
            }
        }
        let reason =
            axum::http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
        let body = if body.is_empty() { "(no body)" } else { body.as_str() };
        match status {
            200..=299 => Ok(()),
            // 503 is the server saying it is full (64 live streams), with the reason: a refusal.
            500.. if status != 503 => Err(format!("server error: HTTP {status} {reason}: {body}")),
            _ => Err(format!("HTTP {status} {reason}: {body}")),
        }
    }

    fn open_live(&mut self) -> Result<(), String> {
        if !self.live.is_empty() {
            let close = format!("DELETE /api/live/{} HTTP/1.1\r\nHost: x\r\n\r\n", self.live);
            self.send(close.as_bytes())?;
        }
        let (status, body) = self.send(
            b"POST /api/live?rate=8000&format=s16le HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        )?;
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("live open: HTTP {status}: {e}"))?;
        self.live = v["stream"].as_str().ok_or(format!("live open: HTTP {status}: {body}"))?.to_string();
        Ok(())
    }

    /// One request on a fresh connection; the status and body of the answer.
    fn send(&self, request: &[u8]) -> Result<(u16, String), String> {
        let mut s = TcpStream::connect(self.addr).map_err(|e| format!("connecting: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
        // The server may answer (and close) before reading everything: not an error.
        let _ = s.write_all(request);
        let _ = s.shutdown(Shutdown::Write);
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        let status = text.get(9..12).and_then(|c| c.parse::<u16>().ok());
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.trim().to_string()).unwrap_or_default();
        status
            .map(|s| (s, body))
            .ok_or_else(|| "the server closed the connection without an answer".to_string())
    }
}

fn replace(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

/// Set a request's `Content-Length` to its body's length, when both can be found.
fn fix_length(request: &mut Vec<u8>) {
    let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else { return };
    let body = request.len() - end - 4;
    let head = String::from_utf8_lossy(&request[..end]).to_string();
    let lines: Vec<String> = head
        .split("\r\n")
        .map(|l| {
            if l.to_ascii_lowercase().starts_with("content-length:") {
                format!("Content-Length: {body}")
            } else {
                l.to_string()
            }
        })
        .collect();
    let mut fixed = lines.join("\r\n").into_bytes();
    fixed.extend_from_slice(&request[end..]);
    *request = fixed;
}

/// Requests of every route the page uses, with real bodies.
fn http_seeds() -> Result<Vec<Vec<u8>>> {
    let wav = seeds::wav_seeds()?.swap_remove(0);
    let pcm = seeds::pcm_seeds().swap_remove(0);
    let req = |head: &str, kind: &str, body: &[u8]| -> Vec<u8> {
        let mut r = format!("{head} HTTP/1.1\r\nHost: localhost\r\n").into_bytes();
        if !kind.is_empty() {
            r.extend(format!("Content-Type: {kind}\r\n").bytes());
        }
        r.extend(format!("Content-Length: {}\r\n\r\n", body.len()).bytes());
        r.extend_from_slice(body);
        r
    };
    let mut form = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n".to_vec();
    form.extend_from_slice(&wav);
    form.extend_from_slice(b"\r\n--XyZ--\r\n");
    Ok(vec![
        req("POST /api/predict?source=upload", "audio/wav", &wav),
        req("POST /api/predict?source=microphone&features=1", "multipart/form-data; boundary=XyZ", &form),
        req("POST /api/live?rate=16000&format=f32le", "", b""),
        req("POST /api/live/{LIVE}", "application/octet-stream", &pcm[..pcm.len().min(4000)]),
        req("DELETE /api/live/{LIVE}", "", b""),
        req("POST /api/enroll?digit=3", "audio/wav", &wav),
        req("DELETE /api/enroll?digit=3", "", b""),
        req("GET /api/session", "", b""),
        req("GET /api/model", "", b""),
        req("GET /examples/seven.wav", "", b""),
    ])
}
