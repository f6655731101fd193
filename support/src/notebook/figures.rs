//! Figures and media as notebook HTML: plotly figures (plotly.js embedded once per kernel),
//! audio players and spectrogram images as data URIs.

use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use plotly::common::{Mode, Title};
use plotly::layout::{Axis, GridPattern, Layout, LayoutGrid};
use plotly::{HeatMap, Plot, Scatter};

use super::{Html, Result};
use crate::data::dataset::Dataset;
use crate::dsp::features::{FeatureConfig, FeatureExtractor};
use crate::explain::colour;
use crate::train::EpochLog;

static FIGURE_ID: AtomicU64 = AtomicU64::new(0);
/// Set in the kernel's environment once plotly.js is on the page. Not a static: evcxr links
/// `support` into every cell's library afresh, so statics start over in each cell, while the
/// process (and its environment) lives as long as the kernel.
const PLOTLY_LOADED: &str = "AUDIO_MNIST_PLOTLY_JS_SENT";

/// plotly.js, inline, the first time a figure is shown in this kernel; later figures reuse
/// it (and load it from the CDN if the page lost it, e.g. after clearing outputs).
fn plotly_js() -> String {
    if std::env::var_os(PLOTLY_LOADED).is_some() {
        return String::new();
    }
    std::env::set_var(PLOTLY_LOADED, "1");
    // The crate's offline bundle is plotly.js followed by MathJax; figures need only the first.
    let sources = Plot::offline_js_sources();
    let end = sources.find("</script>").map_or(sources.len(), |i| i + "</script>".len());
    sources[..end].to_string()
}

pub(crate) fn unique_id(prefix: &str) -> String {
    // Unique across kernel restarts too: an old output with the same id may still be on the page.
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!(
        "{prefix}-{:x}-{}",
        nanos as u64 ^ std::process::id() as u64,
        FIGURE_ID.fetch_add(1, Ordering::Relaxed)
    )
}

/// JSON made safe to sit inside a `<script>` element.
pub(crate) fn script_json(json: &str) -> String {
    json.replace("</", "<\\/")
}

/// A plotly figure (JSON of `{data, layout, config}`) as HTML; `then` is JavaScript run once
/// the figure is drawn, with `gd` bound to its element.
pub(crate) fn figure_html(figure_json: &str, height_px: u32, then: &str) -> String {
    let id = unique_id("am-fig");
    format!(
        r#"{lib}<div id="{id}" class="am-figure" style="width:100%;height:{height_px}px"></div>
<script type="text/javascript">
(function() {{
  var fig = {json};
  function draw() {{
    Plotly.newPlot("{id}", fig).then(function(gd) {{ {then} }});
  }}
  if (window.Plotly) {{ draw(); }} else {{
    var s = document.createElement("script");
    s.src = "https://cdn.plot.ly/plotly-3.0.1.min.js";
    s.onload = draw;
    document.head.appendChild(s);
  }}
}})();
</script>"#,
        lib = plotly_js(),
        json = script_json(figure_json),
    )
}

/// Show a plotly `Plot` (any figure a user builds) in the notebook.
pub fn figure(plot: &Plot) -> Html {
    Html(figure_html(&plot.to_json(), 450, ""))
}

/// A WAV player for `samples` (mono, `rate` Hz), embedded in the page.
pub fn audio_player(samples: &[f32], rate: u32) -> Result<Html> {
    Ok(Html(format!(r#"<audio controls preload="none" src="{}"></audio>"#, wav_data_uri(samples, rate)?)))
}

pub(crate) fn wav_data_uri(samples: &[f32], rate: u32) -> Result<String> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut bytes = std::io::Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut bytes, spec)?;
    for &s in samples {
        w.write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16)?;
    }
    w.finalize()?;
    Ok(format!(
        "data:audio/wav;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes.into_inner())
    ))
}

/// A log-Mel image (`n_mels x n_frames`, dB) as a small PNG data URI: one pixel row per mel
/// band (low frequencies at the bottom), each frame `frame_px` pixels wide, magma-like colours.
pub(crate) fn spectrogram_png(
    log_mel: &[f32],
    n_mels: usize,
    n_frames: usize,
    frame_px: usize,
) -> Result<String> {
    let level = colour::unit_range(log_mel);
    png_data_uri(colour::cells_rgb(n_mels, n_frames, frame_px, |i| colour::magma(level[i])))
}

/// A relevance map as a PNG data URI: blue against the class, red for it (symmetric scale),
/// laid over the grey log-Mel image when `log_mel` is given.
pub(crate) fn relevance_png(
    map: &[f32],
    log_mel: Option<&[f32]>,
    n_mels: usize,
    n_frames: usize,
    frame_px: usize,
) -> Result<String> {
    let r = colour::symmetric(map);
    let rgb = match log_mel {
        Some(db) => {
            let level = colour::unit_range(db);
            colour::cells_rgb(n_mels, n_frames, frame_px, |i| colour::overlay(level[i], r[i]))
        }
        None => colour::cells_rgb(n_mels, n_frames, frame_px, |i| colour::diverging(r[i])),
    };
    png_data_uri(rgb)
}

/// RGB pixels (width, height, bytes) as a PNG data URI.
fn png_data_uri((w, h, rgb): (usize, usize, Vec<u8>)) -> Result<String> {
    let mut png_bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png_bytes, w as u32, h as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header()?;
        writer.write_image_data(&rgb)?;
    }
    Ok(format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(png_bytes)))
}

/// A look at the data: for one recording of each of the first `n` digits, the waveform at the
/// analysis rate (the part `trim` keeps in colour) and its log-Mel spectrogram, plus a player
/// for the first clip as the network hears it (trimmed, normalised, 1 s).
pub fn look(dataset: &Dataset, config: &FeatureConfig, n: usize) -> Result<Html> {
    let fx = FeatureExtractor::new(config.clone())?;
    let mut picked = Vec::new();
    for digit in 0..10u8 {
        if let Some(r) = dataset.recordings.iter().find(|r| r.digit == digit) {
            picked.push(r);
        }
        if picked.len() == n {
            break;
        }
    }
    let mut parts = Vec::new();
    let mut player = None;
    let rate = config.sample_rate as f64;
    for r in picked {
        let path = dataset.absolute(r);
        let audio = crate::dsp::audio::load_wav(&path, 60.0)?;
        let stages =
            fx.stages(&audio.samples, audio.sample_rate).map_err(|k| crate::AudioError::new(&path, k))?;
        let t: Vec<f64> = (0..stages.resampled.len()).map(|i| i as f64 / rate).collect();
        let (s, e) = stages.trim;
        let mut plot = Plot::new();
        plot.add_trace(
            Scatter::new(t.clone(), stages.resampled.clone())
                .mode(Mode::Lines)
                .name("signal")
                .x_axis("x")
                .y_axis("y"),
        );
        plot.add_trace(
            Scatter::new(t[s..e].to_vec(), stages.resampled[s..e].to_vec())
                .mode(Mode::Lines)
                .name("kept by trim")
                .x_axis("x")
                .y_axis("y"),
        );
        let (n_mels, n_frames) = (config.n_mels, config.n_frames());
        let z: Vec<Vec<f32>> =
            (0..n_mels).map(|m| stages.log_mel[m * n_frames..(m + 1) * n_frames].to_vec()).collect();
        plot.add_trace(
            HeatMap::new((0..n_frames).collect(), (0..n_mels).collect(), z).x_axis("x2").y_axis("y2"),
        );
        plot.set_layout(
            Layout::new()
                .title(Title::with_text(format!(
                    "{} (digit {}, speaker {})",
                    r.path.display(),
                    r.digit,
                    r.speaker
                )))
                .show_legend(false)
                .grid(LayoutGrid::new().rows(1).columns(2).pattern(GridPattern::Independent))
                .x_axis(Axis::new().title(Title::with_text("time (s)")))
                .y_axis(Axis::new().title(Title::with_text("amplitude")))
                .x_axis2(Axis::new().title(Title::with_text("frame")))
                .y_axis2(Axis::new().title(Title::with_text("mel band"))),
        );
        parts.push(Html(figure_html(&plot.to_json(), 330, "")));
        if player.is_none() {
            player = Some((r.path.display().to_string(), audio_player(&stages.clip, config.sample_rate)?));
        }
    }
    if let Some((name, audio)) = player {
        parts.push(Html(format!(
            "<p>{} as the network hears it (trimmed, normalised, 1 s):</p>",
            escape(&name)
        )));
        parts.push(audio);
    }
    Ok(Html::join(parts))
}

/// Loss and accuracy per epoch (the seed's training curves), train and validation, of every
/// network (`net k` in an ensemble).
pub fn training_curves(logs: &[&[EpochLog]]) -> Html {
    let mut plot = Plot::new();
    let series: [(&str, fn(&EpochLog) -> f64, &str, &str); 4] = [
        ("train loss", |r| r.train_loss, "x", "y"),
        ("validation loss", |r| r.val_loss, "x", "y"),
        ("train accuracy", |r| r.train_acc, "x2", "y2"),
        ("validation accuracy", |r| r.val_acc, "x2", "y2"),
    ];
    for (k, log) in logs.iter().enumerate() {
        let epochs: Vec<usize> = log.iter().map(|r| r.epoch).collect();
        let net = if logs.len() > 1 { format!("net {} ", k + 1) } else { String::new() };
        for (name, get, x, y) in series {
            plot.add_trace(
                Scatter::new(epochs.clone(), log.iter().map(get).collect())
                    .mode(Mode::LinesMarkers)
                    .name(format!("{net}{name}"))
                    .x_axis(x)
                    .y_axis(y),
            );
        }
    }
    plot.set_layout(
        Layout::new()
            .title(Title::with_text("training curves"))
            .grid(LayoutGrid::new().rows(1).columns(2).pattern(GridPattern::Independent))
            .x_axis(Axis::new().title(Title::with_text("epoch")))
            .y_axis(Axis::new().title(Title::with_text("loss")))
            .x_axis2(Axis::new().title(Title::with_text("epoch")))
            .y_axis2(Axis::new().title(Title::with_text("accuracy")).range(vec![0.0, 1.0])),
    );
    Html(figure_html(&plot.to_json(), 420, ""))
}

/// Accuracy under each condition of `audio-mnist robustness`, one line per model.
pub fn robustness_figure(r: &crate::eval::robustness::Robustness) -> Html {
    let names: Vec<String> = r.conditions.iter().map(|c| c.name.clone()).collect();
    let mut plot = Plot::new();
    for m in &r.models {
        let acc: Vec<f64> =
            r.conditions.iter().map(|c| c.accuracy.get(m).copied().unwrap_or(f64::NAN)).collect();
        plot.add_trace(Scatter::new(names.clone(), acc).mode(Mode::LinesMarkers).name(m.as_str()));
    }
    plot.set_layout(
        Layout::new()
            .title(Title::with_text("accuracy under noise, babble, rooms, a phone line, level and clipping"))
            .margin(plotly::layout::Margin::new().bottom(150))
            .x_axis(Axis::new())
            .y_axis(Axis::new().title(Title::with_text("accuracy")).range(vec![0.0, 1.0])),
    );
    Html(figure_html(&plot.to_json(), 420, ""))
}

/// A long recording as `listen` heard it: the waveform (peak per 10 ms), what was said
/// (below) and what was heard (above: each word's span and label), and a player.
pub fn sequence_figure(
    seq: &crate::stream::sequence::Sequence,
    events: &[crate::stream::Event],
) -> Result<Html> {
    let hop = (seq.rate / 100) as usize;
    let t: Vec<f64> = (0..seq.samples.len() / hop).map(|i| (i * hop) as f64 / seq.rate as f64).collect();
    let peak: Vec<f32> =
        seq.samples.chunks(hop).map(|c| c.iter().fold(0f32, |m, v| m.max(v.abs()))).collect();
    let top = peak.iter().fold(1e-6f32, |m, &v| m.max(v)) as f64;
    let mut plot = Plot::new();
    plot.add_trace(Scatter::new(t.clone(), peak[..t.len()].to_vec()).mode(Mode::Lines).name("signal (peak)"));
    let said: Vec<(f64, f64, String)> = seq
        .words
        .iter()
        .map(|w| (w.start_s, w.end_s, w.digit.map_or("(sound)".to_string(), |d| d.to_string())))
        .collect();
    let heard: Vec<(f64, f64, String)> =
        events.iter().map(|e| (e.start_s, e.end_s, e.label.clone())).collect();
    for (name, spans, y) in [("said", said, -0.15 * top), ("heard", heard, 1.1 * top)] {
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for (s, e, _) in &spans {
            xs.extend([*s, *e, f64::NAN]);
            ys.extend([y, y, f64::NAN]);
        }
        plot.add_trace(Scatter::new(xs, ys).mode(Mode::Lines).name(name));
        let mid: Vec<f64> = spans.iter().map(|(s, e, _)| (s + e) / 2.0).collect();
        let labels: Vec<String> = spans.iter().map(|(_, _, l)| l.clone()).collect();
        plot.add_trace(
            Scatter::new(mid, vec![y; labels.len()])
                .mode(Mode::Text)
                .text_array(labels)
                .name(name)
                .show_legend(false),
        );
    }
    let said = seq.transcript();
    let heard = crate::stream::transcript(events);
    plot.set_layout(
        Layout::new()
            .title(Title::with_text(format!("said {said}, heard {heard}")))
            .x_axis(Axis::new().title(Title::with_text("time (s)")))
            .y_axis(Axis::new().title(Title::with_text("amplitude"))),
    );
    let player = audio_player(&seq.samples, seq.rate)?;
    Ok(Html(figure_html(&plot.to_json(), 360, "") + &player.0))
}

/// The epoch line printed during training.
pub fn epoch_line(r: &EpochLog) {
    println!("{}", r.line());
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// One speaker's held-out takes before and after adapting the model to them: two confusion
/// matrices.
pub fn adaptation_figure(a: &crate::adapt::bench::SpeakerAdaptation) -> Result<Html> {
    let classes = a.before.first().map_or(10, Vec::len);
    let names = crate::eval::class_names(classes);
    // Square: "not a digit" (if any) gets an empty row.
    let square = |m: &[Vec<usize>]| -> Vec<Vec<usize>> {
        (0..classes).map(|r| m.get(r).cloned().unwrap_or_else(|| vec![0; classes])).collect()
    };
    let before = super::explorer::confusion_json(
        &names,
        &square(&a.before),
        &format!("{}: the model as trained, {{accuracy}}", a.speaker),
    )?;
    let after = super::explorer::confusion_json(
        &names,
        &square(&a.after),
        &format!("after adapting on {} take(s) a digit ({:.1} s), {{accuracy}}", a.takes, a.adapted.seconds),
    )?;
    // One above the other: plotly sizes a figure by its container when drawn, and side-by-side
    // containers overlapped in the rendered export.
    Ok(Html(format!(
        "{}{}",
        figure_html(&before.to_string(), 440, ""),
        figure_html(&after.to_string(), 440, "")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_json_cannot_close_the_script() {
        assert!(!script_json(r#"{"file":"</script><b>"}"#).contains("</script>"));
    }
}
