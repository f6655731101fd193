//! Live mode: a client streams raw mono samples in short POSTs and gets each word back as it
//! ends, from the same [`Listener`] as `audio-mnist listen` (same segmenter, same decisions).
//!
//! - `POST /api/live?rate=R&format=f32le|s16le` opens a stream: `{"stream": ID}`.
//! - `POST /api/live/ID` with samples (little-endian, any amount up to 5 s): the words that
//!   ended in them, `{"events": [...], "sequence": "all digits so far", "received_s": t}`.
//!   Send the next chunk after the answer (a stream is ordered).
//! - `DELETE /api/live/ID` ends it: the word still open, the whole sequence.
//!
//! At most [`MAX_STREAMS`] streams; one idle for [`IDLE_S`] seconds is closed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::{json, Value};
use support::dsp::audio::PcmFormat as Format;
use support::infer::Predictor;
use support::stream::{transcript, Event, Listener};

use super::{ApiError, App};

pub const MAX_STREAMS: usize = 64;
const IDLE_S: u64 = 60;
const MAX_CHUNK_S: usize = 5;

struct LiveStream {
    listener: Listener<Arc<Predictor>>,
    format: Format,
    rate: u32,
    received: usize,
    events: Vec<Event>,
    model: &'static str,
}

#[derive(Default)]
pub struct Streams {
    map: Mutex<HashMap<String, (Arc<Mutex<LiveStream>>, Instant)>>,
}

impl Streams {
    fn get(&self, id: &str) -> Result<Arc<Mutex<LiveStream>>, ApiError> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let (s, used) = map.get_mut(id).ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("no live stream {id:?} (closed, or idle over {IDLE_S} s)"),
            )
        })?;
        *used = Instant::now();
        Ok(s.clone())
    }
}

#[derive(serde::Deserialize)]
pub struct OpenQuery {
    rate: u32,
    #[serde(default)]
    format: Format,
}

/// `POST /api/live?rate=R&format=F`: a new stream, answered by this browser's model.
pub async fn open(
    State(app): State<Arc<App>>,
    Query(q): Query<OpenQuery>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if !(4000..=192_000).contains(&q.rate) {
        return Err(ApiError(StatusCode::BAD_REQUEST, format!("rate={}: give 4000 to 192000 Hz", q.rate)));
    }
    let (predictor, model) = app.predictor_for(&headers);
    let stream = LiveStream {
        listener: Listener::new(predictor, q.rate),
        format: q.format,
        rate: q.rate,
        received: 0,
        events: Vec::new(),
        model,
    };
    let mut map = app.streams.map.lock().unwrap_or_else(|e| e.into_inner());
    map.retain(|_, (_, used)| used.elapsed() < Duration::from_secs(IDLE_S));
    if map.len() >= MAX_STREAMS {
        let msg = format!("{MAX_STREAMS} live streams are open: try again shortly");
        return Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, msg));
    }
    let id = super::new_id();
    map.insert(id.clone(), (Arc::new(Mutex::new(stream)), Instant::now()));
    Ok((StatusCode::CREATED, Json(json!({"stream": id, "rate": q.rate, "model": model}))))
}

/// `POST /api/live/ID`: push samples; the words that ended in them.
pub async fn push(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let stream = app.streams.get(&id)?;
    tokio::task::spawn_blocking(move || {
        let mut s = stream.lock().unwrap_or_else(|e| e.into_inner());
        let samples = decode(&body, s.format, s.rate)?;
        s.received += samples.len();
        let new = s.listener.push(&samples);
        Ok(Json(answer(&mut s, new)))
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

/// `DELETE /api/live/ID`: the end of the stream.
pub async fn close(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let stream = app.streams.get(&id)?;
    app.streams.map.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    tokio::task::spawn_blocking(move || {
        let mut s = stream.lock().unwrap_or_else(|e| e.into_inner());
        let new = s.listener.finish();
        let mut v = answer(&mut s, new);
        v["closed"] = json!(true);
        Ok(Json(v))
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

fn answer(s: &mut LiveStream, new: Vec<Event>) -> Value {
    s.events.extend(new.iter().cloned());
    json!({
        "events": new,
        "sequence": transcript(&s.events),
        "received_s": s.received as f64 / s.rate as f64,
        "model": s.model,
    })
}

/// Little-endian mono samples; at most [`MAX_CHUNK_S`] seconds.
fn decode(body: &[u8], format: Format, rate: u32) -> Result<Vec<f32>, ApiError> {
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let width = format.width();
    if body.len() % width != 0 {
        return Err(bad(format!("{} bytes is not a whole number of {width}-byte samples", body.len())));
    }
    if body.len() / width > MAX_CHUNK_S * rate as usize {
        return Err(bad(format!("a chunk is at most {MAX_CHUNK_S} s: send smaller ones")));
    }
    Ok(support::dsp::audio::decode_pcm(body, format))
}
