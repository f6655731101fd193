//! `audio-mnist serve`: a web page (every asset embedded) and a JSON API for one model, on
//! axum/tokio. Bound to loopback unless told otherwise; bodies and audio are limited; a bad
//! upload is a 4xx with the reason; one access-log line per request; Ctrl-C drains and stops.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use support::infer::{ModelChoice, Predictor};

mod card;
mod live;
#[cfg(feature = "train")]
mod teach;

/// The page: HTML, CSS and JavaScript in one file, no CDN.
const PAGE: &str = include_str!("page.html");

/// Example recordings for the page: (file name, title, WAV). From the Free Spoken Digit
/// Dataset (CC BY-SA 4.0), credited on the page.
const EXAMPLES: [(&str, &str, &[u8]); 3] = [
    ("seven.wav", "“seven”", include_bytes!("examples/seven.wav")),
    ("two-eight-six.wav", "“two eight six”", include_bytes!("examples/two-eight-six.wav")),
    ("three-nine-one.wav", "“three nine one”, quickly", include_bytes!("examples/three-nine-one.wav")),
];

/// Limits of a server.
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_seconds: f64,
}

struct App {
    predictor: Arc<Predictor>,
    /// Which model is served (its file name goes on the card; adaptation starts from it).
    model: ModelChoice,
    limits: Limits,
    /// Live streams (`/api/live`).
    streams: live::Streams,
    /// The page's "teach it your voice" sessions.
    #[cfg(feature = "train")]
    sessions: teach::Sessions,
}

impl App {
    /// The model that answers this request: the session's adapted one, else the served one.
    fn predictor_for(&self, _headers: &HeaderMap) -> (Arc<Predictor>, &'static str) {
        #[cfg(feature = "train")]
        if let Some(p) = self.sessions.predictor(_headers) {
            return (p, "yours");
        }
        (self.predictor.clone(), "served")
    }
}

/// An answer with a status and `{"error": reason}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

/// `audio-mnist serve`.
#[derive(clap::Args, Debug)]
pub struct ServeCmd {
    /// The model (default: out/model.safetensors if it exists, else the bundled one).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Address to listen on (loopback unless told otherwise; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Largest request body (MB).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_body_mb: u64,
    /// Longest audio accepted (s).
    #[arg(long, default_value_t = 60.0)]
    pub max_seconds: f64,
}

/// Serve the model on `cmd.addr` until Ctrl-C; prints `listening on http://ADDR` first.
pub fn serve_command(cmd: &ServeCmd) -> Result<()> {
    let choice = ModelChoice::resolve(cmd.model.as_deref());
    eprintln!("{}", choice.describe());
    let predictor = choice.load()?;
    let limits = Limits { max_body_bytes: (cmd.max_body_mb as usize) << 20, max_seconds: cmd.max_seconds };
    let addr: SocketAddr =
        cmd.addr.parse().with_context(|| format!("--addr {:?}: give IP:PORT", cmd.addr))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        let local = listener.local_addr()?;
        let router = router(App::new(predictor, choice, limits), true);
        println!("listening on http://{local}");
        axum::serve(listener, router).with_graceful_shutdown(ctrl_c()).await?;
        eprintln!("stopped");
        Ok(())
    })
}

impl App {
    fn new(predictor: Predictor, model: ModelChoice, limits: Limits) -> Arc<App> {
        Arc::new(App {
            predictor: Arc::new(predictor),
            model,
            limits,
            streams: Default::default(),
            #[cfg(feature = "train")]
            sessions: Default::default(),
        })
    }
}

/// The page and the API over `app`; `log`: one access-log line per request on stderr.
fn router(app: Arc<App>, log: bool) -> Router {
    let max_body = app.limits.max_body_bytes;
    let router = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/model", get(model_card))
        .route("/api/examples", get(examples))
        .route("/examples/{name}", get(example))
        .route("/api/predict", post(predict))
        .route("/api/live", post(live::open))
        .route("/api/live/{id}", post(live::push).delete(live::close));
    #[cfg(feature = "train")]
    let router = router
        .route("/api/enroll", post(teach::enroll).delete(teach::undo))
        .route("/api/adapt", post(teach::adapt))
        .route("/api/session", get(teach::session).delete(teach::forget))
        .route("/api/adapted", get(teach::download));
    let router = router
        .fallback(no_route)
        .method_not_allowed_fallback(no_route)
        .layer(DefaultBodyLimit::max(max_body));
    let router = if log { router.layer(middleware::from_fn(access_log)) } else { router };
    router.with_state(app)
}

/// An unknown path or method: said in JSON like every other refusal.
async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("no {method} {} here: the API is in support/API.md", uri.path()))
}

/// A server on a free loopback port, running on its own threads until dropped (for the
/// fuzzer, which sends it requests from this process).
pub struct Background {
    pub addr: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

pub fn start_background(predictor: Predictor, model: ModelChoice, limits: Limits) -> Result<Background> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let router = router(App::new(predictor, model, limits), false);
    runtime.spawn(async move { axum::serve(listener, router).await });
    Ok(Background { addr, _runtime: runtime })
}

/// 128 unguessable bits: SipHash under the process's random keys of a counter and the time.
fn new_id() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::BuildHasher;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::SystemTime;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let (a, b) = (RandomState::new().hash_one((n, t)), RandomState::new().hash_one((t, n)));
    format!("{a:016x}{b:016x}")
}

async fn ctrl_c() {
    tokio::signal::ctrl_c().await.ok();
    eprintln!("shutting down: finishing the requests in flight");
}

/// One line per request: method, path, status, milliseconds.
async fn access_log(req: Request, next: Next) -> Response {
    let (method, path, start) = (req.method().clone(), req.uri().path().to_string(), Instant::now());
    let res = next.run(req).await;
    eprintln!("{method} {path} {} {:.1} ms", res.status().as_u16(), start.elapsed().as_secs_f64() * 1000.0);
    res
}

/// `GET /api/model`: the model card ([`card::card`]), and whether the page can teach.
async fn model_card(State(app): State<Arc<App>>) -> Json<Value> {
    // The file's name only: the server's folders are nobody's business.
    let file = app.model.name().file_name().map(|n| n.to_string_lossy().to_string());
    let mut v = card::card(app.predictor.meta(), file);
    v["teach"] = json!(cfg!(feature = "train"));
    Json(v)
}

/// `GET /api/examples`: the example recordings and their credit.
async fn examples() -> Json<Value> {
    let list: Vec<Value> = EXAMPLES
        .iter()
        .map(|(name, title, _)| json!({"title": title, "url": format!("/examples/{name}")}))
        .collect();
    Json(json!({
        "examples": list,
        "credit": "Examples: Free Spoken Digit Dataset (Z. Jackson et al.), CC BY-SA 4.0",
    }))
}

/// `GET /examples/NAME`: one example WAV.
async fn example(axum::extract::Path(name): axum::extract::Path<String>) -> Result<Response, ApiError> {
    let (_, _, wav) = EXAMPLES
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no example {name:?}")))?;
    Ok(([(header::CONTENT_TYPE, "audio/wav")], *wav).into_response())
}

#[derive(serde::Deserialize)]
struct PredictQuery {
    /// Also return the log-Mel image the network saw (`?features=1`).
    #[serde(default)]
    features: u8,
    /// Where the audio came from, echoed as `file` (`upload`, `microphone` or `example`).
    #[serde(default)]
    source: Source,
}

#[derive(serde::Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Source {
    #[default]
    Upload,
    Microphone,
    Example,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Upload => "upload",
            Source::Microphone => "microphone",
            Source::Example => "example",
        }
    }
}

/// `POST /api/predict`: a WAV body (`audio/wav`, `application/octet-stream`) or a multipart
/// form with one file; answers `predict --json`'s object, plus `segments` for long input.
async fn predict(
    State(app): State<Arc<App>>,
    Query(q): Query<PredictQuery>,
    headers: HeaderMap,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    // An announced body over the limit is refused before it is read (no `100 Continue`).
    let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if let Some(n) = length.filter(|&n| n > app.limits.max_body_bytes) {
        let msg =
            format!("the body is {n} bytes, over the limit of {} (--max-body-mb)", app.limits.max_body_bytes);
        return Err(ApiError(StatusCode::PAYLOAD_TOO_LARGE, msg));
    }
    let kind = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let bytes = if kind.starts_with("multipart/form-data") {
        upload(Multipart::from_request(req, &()).await.map_err(bad)?).await?
    } else if ["audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave", "application/octet-stream"]
        .iter()
        .any(|t| kind.starts_with(t))
    {
        Bytes::from_request(req, &()).await.map_err(|e| ApiError(e.status(), e.body_text()))?
    } else {
        let msg = format!("content type {kind:?}: send a WAV file as audio/wav or multipart/form-data");
        return Err(ApiError(StatusCode::UNSUPPORTED_MEDIA_TYPE, msg));
    };
    let (predictor, which) = app.predictor_for(&headers);
    let max_seconds = app.limits.max_seconds;
    let source = q.source.name();
    tokio::task::spawn_blocking(move || {
        answer(&predictor, (which, source), max_seconds, bytes, q.features == 1)
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

/// What went wrong with an upload, said for the person who sent it.
fn plain_words(kind: &support::dsp::audio::AudioErrorKind, max_seconds: f64) -> String {
    use support::dsp::audio::AudioErrorKind as K;
    match kind {
        K::NotWav(_) => "this is not a WAV file: record with the button, or choose a .wav file \
            (convert others with e.g. `ffmpeg -i in.m4a out.wav`)"
            .into(),
        K::Unsupported(e) => format!("this WAV's encoding is not supported ({e}): save it as 16-bit PCM"),
        K::Truncated(_) => "the file is cut short: it was not saved or uploaded completely".into(),
        K::Empty => "the file holds no sound".into(),
        K::TooLong { seconds, .. } => {
            format!("the recording is {seconds:.0} s long; this server takes up to {max_seconds:.0} s")
        }
        K::NonFinite => "the file holds invalid (not-a-number) samples".into(),
        other => other.to_string(),
    }
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, e.to_string())
}

/// The first file of a multipart form.
async fn upload(mut form: Multipart) -> Result<Bytes, ApiError> {
    while let Some(field) = form.next_field().await.map_err(bad)? {
        if field.file_name().is_some() || field.name() == Some("file") {
            return field.bytes().await.map_err(bad);
        }
    }
    Err(bad("the form has no file field"))
}

/// Decode, predict, and for input longer than 2 s the words found in it.
fn answer(
    predictor: &Predictor,
    (which, source): (&str, &str),
    max_seconds: f64,
    bytes: Bytes,
    with_features: bool,
) -> Result<Json<Value>, ApiError> {
    use support::dsp::audio::AudioErrorKind;
    let audio = support::dsp::audio::decode_wav_bytes(Path::new(source), bytes.to_vec(), max_seconds)
        .map_err(|e| {
            let status = match e.kind {
                AudioErrorKind::TooLong { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::BAD_REQUEST,
            };
            ApiError(status, plain_words(&e.kind, max_seconds))
        })?;
    let seconds = audio.samples.len() as f64 / audio.sample_rate as f64;
    let (p, image) =
        predictor.predict_samples_with_features(&audio.samples, audio.sample_rate).map_err(bad)?;
    let mut out = json!({"file": source, "duration_s": seconds, "model": which});
    let obj = out.as_object_mut().expect("an object");
    if let Value::Object(fields) = serde_json::to_value(&p).map_err(bad)? {
        obj.extend(fields);
    }
    // The words in it, however short: "3 9 1" said in 1.8 s is three digits. One word (no
    // dip where two could meet) is the whole clip's answer: no second pass of the network.
    let words = support::stream::recording_words(&audio.samples, audio.sample_rate);
    let events = match words.as_slice() {
        [one] if one.two_words().is_none() => vec![support::stream::event(one, p.clone())],
        _ => support::stream::Listener::new(predictor, audio.sample_rate).classify(words),
    };
    obj.insert("sequence".into(), json!(support::stream::transcript(&events)));
    obj.insert("segments".into(), json!(events));
    if with_features {
        // The image the network saw; a silent upload (answered without the network) gets its own.
        let fx = predictor.extractor();
        let f = match image {
            Some(f) => f,
            None => fx.extract_samples(&audio.samples, audio.sample_rate).map_err(bad)?,
        };
        let c = fx.config();
        obj.insert("log_mel".into(), json!({"n_mels": c.n_mels, "n_frames": c.n_frames(), "db": f}));
    }
    Ok(Json(out))
}
