//! The page's "teach it your voice": takes recorded in the browser are kept per browser
//! session (a cookie), the served model is adapted to them on the server, and from then on
//! that session's answers come from the adapted model. The served file is never changed; the
//! adapted one can be downloaded. Bounded: [`MAX_SESSIONS`] sessions (the least recently used
//! goes first), [`MAX_TAKES`] takes of each digit, one adaptation at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use support::adapt::{adapt_clips, enrollment_clip, AdaptConfig};
use support::infer::Predictor;

use super::{ApiError, App};

const COOKIE: &str = "am_session";
pub const MAX_SESSIONS: usize = 16;
pub const MAX_TAKES: usize = 5;
/// A take is one word: longer recordings are refused before they are decoded in full.
const MAX_TAKE_SECONDS: f64 = 4.0;

/// One browser's takes and, once adapted, its model.
struct Session {
    /// (digit, prepared clip) in the order recorded.
    takes: Vec<(u8, Vec<f32>)>,
    /// How many takes the served model heard right (the "before").
    heard_right: Vec<bool>,
    adapted: Option<Personal>,
    used: Instant,
}

#[derive(Clone)]
struct Personal {
    predictor: Arc<Predictor>,
    file: Arc<Vec<u8>>,
    seconds: f64,
    takes: usize,
}

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    adapting: Mutex<()>,
}

impl Sessions {
    /// The adapted predictor of the request's session, if it has one.
    pub fn predictor(&self, headers: &HeaderMap) -> Option<Arc<Predictor>> {
        let id = session_id(headers)?;
        let mut map = self.map.lock().ok()?;
        let s = map.get_mut(&id)?;
        s.used = Instant::now();
        s.adapted.as_ref().map(|p| p.predictor.clone())
    }

    /// Run `f` on the request's session; `None` when it has none (or it was evicted).
    fn with<T>(&self, headers: &HeaderMap, f: impl FnOnce(&mut Session) -> T) -> Option<T> {
        self.with_id(&session_id(headers)?, f)
    }

    fn with_id<T>(&self, id: &str, f: impl FnOnce(&mut Session) -> T) -> Option<T> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get_mut(id).map(|s| {
            s.used = Instant::now();
            f(s)
        })
    }

    /// The request's session, created (evicting the least recently used) when missing: its
    /// id and whether it is new (the answer then sets the cookie).
    fn open(&self, headers: &HeaderMap) -> (String, bool) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = session_id(headers).filter(|id| map.contains_key(id)) {
            return (id, false);
        }
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.used).map(|(k, _)| k.clone()) {
                map.remove(&oldest);
            }
        }
        let id = super::new_id();
        let session =
            Session { takes: Vec::new(), heard_right: Vec::new(), adapted: None, used: Instant::now() };
        map.insert(id.clone(), session);
        (id, true)
    }
}

/// The session cookie's value.
fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(COOKIE)?.strip_prefix('=').map(str::to_string))
}

/// An answer that sets the session cookie when the session is new (a browser-session cookie:
/// no expiry, this site only, not readable by scripts).
fn with_cookie(mut res: Response, id: &str, new: bool) -> Response {
    if new {
        let cookie = format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict");
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            res.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    res
}

fn counts(takes: &[(u8, Vec<f32>)]) -> Vec<usize> {
    let mut c = vec![0; 10];
    takes.iter().for_each(|(d, _)| c[*d as usize] += 1);
    c
}

fn status_json(s: &Session) -> Value {
    json!({
        "takes": counts(&s.takes),
        "total": s.takes.len(),
        "heard_right_before": s.heard_right.iter().filter(|&&r| r).count(),
        "adapted": s.adapted.as_ref().map(|p| json!({"seconds": p.seconds, "takes": p.takes})),
    })
}

#[derive(serde::Deserialize)]
pub struct TakeQuery {
    digit: i64,
}

/// `POST /api/enroll?digit=D` with a WAV body: one take of digit D for this session; the
/// answer says what the served model heard and how many takes of each digit there are.
pub async fn enroll(
    State(app): State<Arc<App>>,
    Query(q): Query<TakeQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let digit = u8::try_from(q.digit).ok().filter(|d| *d < 10).ok_or_else(|| {
        ApiError(StatusCode::BAD_REQUEST, format!("digit={}: give a digit from 0 to 9", q.digit))
    })?;
    let (id, new) = app.sessions.open(&headers);
    let full = app.sessions.with_id(&id, |s| counts(&s.takes)[digit as usize] >= MAX_TAKES).unwrap_or(false);
    if full {
        let msg = format!("already {MAX_TAKES} takes of {digit}: adapt, or forget and start again");
        return Err(ApiError(StatusCode::CONFLICT, msg));
    }
    let served = app.predictor.clone();
    let (clip, heard) = tokio::task::spawn_blocking(move || prepare(&served, body, digit))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    let answer = app
        .sessions
        .with_id(&id, |s| {
            s.takes.push((digit, clip));
            s.heard_right.push(heard.as_deref() == Some(&digit.to_string()));
            let mut v = status_json(s);
            v["digit"] = json!(digit);
            v["heard"] = json!(heard);
            v
        })
        .ok_or_else(|| {
            ApiError(StatusCode::CONFLICT, "this session was closed meanwhile: start again".into())
        })?;
    Ok(with_cookie(Json(answer).into_response(), &id, new))
}

/// Decode one take, check it has sound, and what the served model hears in it.
fn prepare(served: &Predictor, body: Bytes, digit: u8) -> Result<(Vec<f32>, Option<String>), ApiError> {
    let name = std::path::Path::new("take");
    let audio =
        support::dsp::audio::decode_wav_bytes(name, body.to_vec(), MAX_TAKE_SECONDS).map_err(|e| {
            let reason = match e.kind {
                support::dsp::audio::AudioErrorKind::TooLong { .. } => {
                    format!("a take is at most {MAX_TAKE_SECONDS} s: say just the one digit")
                }
                _ => format!("this take could not be read: {}", e.kind),
            };
            ApiError(StatusCode::BAD_REQUEST, reason)
        })?;
    let clip = enrollment_clip(served.extractor(), &audio.samples, audio.sample_rate)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("take of {digit}: {e}")))?;
    let heard = served.predict_samples(&audio.samples, audio.sample_rate).ok().map(|p| p.label);
    Ok((clip, heard))
}

/// `DELETE /api/enroll`: drop this session's last take (to say it again).
pub async fn undo(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    app.sessions
        .with(&headers, |s| {
            s.takes.pop();
            s.heard_right.pop();
            status_json(s)
        })
        .map(Json)
        .ok_or_else(no_session)
}

fn no_session() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "no takes recorded in this browser session".into())
}

/// `POST /api/adapt`: adapt the served model to this session's takes (every digit needs one);
/// from then on `/api/predict` answers this session with it.
pub async fn adapt(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let (clips, digits): (Vec<Vec<f32>>, Vec<u8>) = app
        .sessions
        .with(&headers, |s| s.takes.iter().map(|(d, c)| (c.clone(), *d)).unzip())
        .ok_or_else(no_session)?;
    let missing: Vec<String> = (0..10u8).filter(|d| !digits.contains(d)).map(|d| d.to_string()).collect();
    if !missing.is_empty() {
        let msg = format!("no take of {}: say every digit at least once", missing.join(", "));
        return Err(ApiError(StatusCode::BAD_REQUEST, msg));
    }
    let app2 = app.clone();
    let personal = tokio::task::spawn_blocking(move || retrain(&app2, &clips, &digits))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    app.sessions
        .with(&headers, |s| {
            s.adapted = Some(personal);
            Json(status_json(s))
        })
        .ok_or_else(no_session)
}

/// One adaptation at a time: a few seconds of all cores each.
fn retrain(app: &App, clips: &[Vec<f32>], digits: &[u8]) -> Result<Personal, ApiError> {
    let _one = app.sessions.adapting.lock().unwrap_or_else(|e| e.into_inner());
    let internal = |e: anyhow::Error| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"));
    let device = app.predictor.device();
    let source = json!({
        "from": app.model.name().file_name().map(|n| n.to_string_lossy().to_string()),
        "speakers": ["recorded on the page"],
        "takes": clips.len(),
    });
    let model = app.model.bytes().map_err(internal)?;
    let adapted =
        adapt_clips(&model, clips, digits, source, &AdaptConfig::default(), &device).map_err(internal)?;
    Ok(Personal {
        predictor: Arc::new(adapted.predictor(&device).map_err(internal)?),
        file: Arc::new(adapted.to_bytes().map_err(internal)?),
        seconds: adapted.seconds,
        takes: clips.len(),
    })
}

/// `GET /api/session`: this session's takes and whether it has an adapted model.
pub async fn session(State(app): State<Arc<App>>, headers: HeaderMap) -> Json<Value> {
    Json(app.sessions.with(&headers, |s| status_json(s)).unwrap_or_else(
        || json!({"takes": vec![0; 10], "total": 0, "heard_right_before": 0, "adapted": null}),
    ))
}

/// `DELETE /api/session`: forget this session's takes and adapted model.
pub async fn forget(State(app): State<Arc<App>>, headers: HeaderMap) -> Json<Value> {
    let gone = session_id(&headers)
        .and_then(|id| app.sessions.map.lock().unwrap_or_else(|e| e.into_inner()).remove(&id))
        .is_some();
    Json(json!({ "forgotten": gone }))
}

/// `GET /api/adapted`: the adapted model file (`audio-mnist predict --model` takes it).
pub async fn download(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let file =
        app.sessions.with(&headers, |s| s.adapted.as_ref().map(|p| p.file.clone())).flatten().ok_or_else(
            || ApiError(StatusCode::NOT_FOUND, "no adapted model in this browser session".into()),
        )?;
    let headers = [
        (header::CONTENT_TYPE, "application/octet-stream"),
        (header::CONTENT_DISPOSITION, "attachment; filename=\"audio-mnist-your-voice.safetensors\""),
    ];
    Ok((headers, file.as_ref().clone()).into_response())
}
