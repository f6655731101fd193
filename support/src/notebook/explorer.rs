//! The confusion-matrix explorer: the test confusion matrix as a plotly heatmap; clicking a
//! cell lists its recordings with speaker, confidence, a player and the spectrogram (and, with
//! [`ConfusionExplorer::with_relevance`], what in it made the network decide). A model with the
//! "not a digit" class gets that row too: the negatives of the test, by kind.

use std::path::PathBuf;

use plotly::common::Title;
use plotly::layout::{Axis, Layout};
use plotly::{HeatMap, Plot};

use super::figures::{
    escape, figure_html, relevance_png, script_json, spectrogram_png, unique_id, wav_data_uri,
};
use super::{Html, Result};
use crate::data::prepare::Prepared;
use crate::dsp::features::{FeatureConfig, FeatureExtractor};
use crate::eval::artifacts::Tested;
use crate::eval::rejection::ScoredNegatives;
use crate::explain::{silence_db, Explainer, Method};
use crate::model::Classifier;

/// One test recording as the explorer lists it.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Path relative to the data folder.
    pub file: String,
    pub path: PathBuf,
    pub speaker: String,
    pub truth: usize,
    pub predicted: usize,
    pub confidence: f32,
    /// Row of the feature set (its log-Mel image).
    pub row: usize,
}

/// The test confusion matrix, cell by cell: which files landed where, with what confidence,
/// what they sound like and what the network saw.
pub struct ConfusionExplorer {
    pub names: Vec<String>,
    pub confusion: Vec<Vec<usize>>,
    pub entries: Vec<Entry>,
    config: FeatureConfig,
    pub(super) images: Vec<f32>,
    pub(super) n_mels: usize,
    pub(super) n_frames: usize,
    /// Relevance maps of the model, when asked for ([`Self::with_relevance`]).
    pub(super) explainer: Option<Explainer>,
    /// Recordings per cell embedded with player and spectrogram in [`Self::show`]'s page
    /// (all files are listed; media for every file would make the page huge on AudioMNIST).
    pub media_per_cell: usize,
}

/// Negative `j` of a test as an entry of the "not a digit" row: a `--negatives` file by its
/// path, a generated one by its kind and number (its speaker: the kind).
fn negative_entry(
    negatives: &ScoredNegatives,
    j: usize,
    predicted: usize,
    confidence: f32,
    row: usize,
) -> Entry {
    let kind = negatives.negatives.kinds[j].name().to_string();
    let path = negatives.negatives.files[j].clone().unwrap_or_default();
    let file = if path.as_os_str().is_empty() { format!("{kind} #{j}") } else { path.display().to_string() };
    Entry { file, path, speaker: kind, truth: 10, predicted, confidence, row }
}

impl ConfusionExplorer {
    pub fn new(prep: &Prepared, tested: &Tested) -> Self {
        let set = &prep.set;
        let confidence = tested.confidence();
        let mut entries: Vec<Entry> = tested
            .rows
            .iter()
            .enumerate()
            .map(|(k, &row)| Entry {
                file: set.files[row].clone(),
                path: prep.dataset.path_of(&set.files[row]),
                speaker: set.speakers[row].clone(),
                truth: tested.truth[k],
                predicted: tested.predicted[k],
                confidence: confidence[k],
                row,
            })
            .collect();
        let (mut confusion, mut images) = (tested.evaluation.confusion.clone(), set.features.clone());
        let negatives = &tested.negatives;
        if confusion.len() > 10 {
            for (j, p) in negatives.probabilities.iter().enumerate() {
                let predicted = crate::eval::argmax(p);
                confusion[10][predicted] += 1;
                entries.push(negative_entry(negatives, j, predicted, p[predicted], set.len() + j));
            }
            images.extend_from_slice(&negatives.negatives.features);
        }
        Self {
            names: crate::eval::class_names(confusion.len()),
            confusion,
            entries,
            config: set.config.clone(),
            images,
            n_mels: set.n_mels,
            n_frames: set.n_frames,
            media_per_cell: 6,
            explainer: None,
        }
    }

    /// Also show, for each listed recording, the relevance of every log-Mel cell for the
    /// predicted and for the true class (Integrated Gradients, 32 steps, against the silent
    /// image; [`crate::explain`]) laid over the grey log-Mel: red for the class, blue against.
    pub fn with_relevance(mut self, model: &Classifier, device: &candle_core::Device) -> Result<Self> {
        let baseline = silence_db(&self.config);
        self.explainer = Some(Explainer::new(model, baseline, Method::default(), device)?);
        Ok(self)
    }

    /// The log-Mel image (dB) of an entry.
    pub(super) fn image(&self, e: &Entry) -> &[f32] {
        let len = self.n_mels * self.n_frames;
        &self.images[e.row * len..(e.row + 1) * len]
    }

    /// The files in cell (`truth`, `predicted`), least confident first.
    pub fn files(&self, truth: usize, predicted: usize) -> Vec<&Entry> {
        let mut v: Vec<&Entry> =
            self.entries.iter().filter(|e| e.truth == truth && e.predicted == predicted).collect();
        v.sort_by(|a, b| a.confidence.total_cmp(&b.confidence).then(a.file.cmp(&b.file)));
        v
    }

    /// The off-diagonal cell with the most files (ties: the first), or `None` when every
    /// test file is right.
    pub fn worst_cell(&self) -> Option<(usize, usize)> {
        let mut best = None;
        for (t, row) in self.confusion.iter().enumerate() {
            for (p, &c) in row.iter().enumerate() {
                if t != p && c > 0 && best.is_none_or(|(_, _, b)| c > b) {
                    best = Some((t, p, c));
                }
            }
        }
        best.map(|(t, p, _)| (t, p))
    }

    /// Player (the clip as the network hears it; none for a generated negative), spectrogram
    /// and relevance images (for the predicted class, then the true one) of one entry.
    fn media(&self, e: &Entry) -> Result<(String, String, Vec<String>)> {
        let image = self.image(e);
        let png = spectrogram_png(image, self.n_mels, self.n_frames, 6)?;
        let relevance = match &self.explainer {
            Some(ex) => {
                let classes =
                    if e.truth == e.predicted { vec![e.predicted] } else { vec![e.predicted, e.truth] };
                let maps = ex.explain(&image.repeat(classes.len()), &classes)?;
                maps.iter()
                    .map(|r| relevance_png(&r.map, Some(image), self.n_mels, self.n_frames, 6))
                    .collect::<Result<Vec<_>>>()?
            }
            None => Vec::new(),
        };
        if e.path.as_os_str().is_empty() {
            return Ok((String::new(), png, relevance));
        }
        let fx = FeatureExtractor::new(self.config.clone())?;
        let audio = crate::dsp::audio::load_wav(&e.path, 60.0)?;
        let stages =
            fx.stages(&audio.samples, audio.sample_rate).map_err(|k| crate::AudioError::new(&e.path, k))?;
        Ok((wav_data_uri(&stages.clip, self.config.sample_rate)?, png, relevance))
    }

    fn rows_html(&self, entries: &[&Entry], with_media: usize) -> String {
        let extra = if self.explainer.is_some() {
            "<th>relevance for predicted</th><th>relevance for true</th>"
        } else {
            ""
        };
        let mut html = format!(
            "<table class=\"am-cell\"><tr><th>file</th><th>speaker</th><th>confidence</th><th>listen</th><th>log-Mel</th>{extra}</tr>"
        );
        for (i, e) in entries.iter().enumerate() {
            let (player, image, relevance) = match (i < with_media).then(|| self.media(e)) {
                Some(Ok((wav, png, maps))) => (
                    if wav.is_empty() {
                        "generated".to_string()
                    } else {
                        format!(r#"<audio controls preload="none" src="{wav}"></audio>"#)
                    },
                    format!(r#"<img src="{png}" alt="log-Mel of {}">"#, escape(&e.file)),
                    relevance_cells(&maps, &self.names[e.predicted], &self.names[e.truth], &e.file),
                ),
                Some(Err(err)) => (escape(&err.to_string()), String::new(), String::new()),
                None => (String::new(), String::new(), String::new()),
            };
            let relevance = if self.explainer.is_some() && relevance.is_empty() {
                "<td></td><td></td>".to_string()
            } else {
                relevance
            };
            html.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{:.3}</td><td>{player}</td><td>{image}</td>{relevance}</tr>",
                escape(&e.file),
                escape(&e.speaker),
                e.confidence
            ));
        }
        html.push_str("</table>");
        html
    }

    /// The files of one cell, each with speaker, confidence, a player and the spectrogram:
    /// `explorer.cell(3, 8)` shows the threes taken for eights.
    pub fn cell(&self, truth: usize, predicted: usize) -> Html {
        let files = self.files(truth, predicted);
        let head = format!(
            "<h4>true {} predicted {}: {} file(s)</h4>",
            self.names.get(truth).map_or("?", |s| s.as_str()),
            self.names.get(predicted).map_or("?", |s| s.as_str()),
            files.len()
        );
        Html(head + &self.rows_html(&files, 50))
    }

    /// The interactive confusion matrix: a plotly heatmap (counts, with the row-normalised
    /// share on hover); clicking a cell lists its files below it, the first
    /// `media_per_cell` of them with player and spectrogram.
    pub fn show(&self) -> Result<Html> {
        let details_id = unique_id("am-cells");
        let cells_json = script_json(&self.cells_html().to_string());
        let then = format!(
            r#"var cells = {cells_json}; var out = document.getElementById("{details_id}");
    var names = {names};
    gd.on("plotly_click", function(ev) {{
      var pt = ev.points[0];
      var key = names.indexOf(String(pt.y)) + "," + names.indexOf(String(pt.x));
      out.innerHTML = cells[key] || "<p>no files in this cell</p>";
    }});"#,
            names = serde_json::to_string(&self.names)?
        );
        let figure = figure_html(&self.heatmap()?.to_string(), 560, &then);
        let style =
            "<style>.am-cell td,.am-cell th{padding:2px 8px;text-align:left;vertical-align:middle}</style>";
        Ok(Html(format!(
            "{style}{figure}<div id=\"{details_id}\" class=\"am-details\"><p>Click a cell to list its recordings.</p></div>"
        )))
    }

    /// The heatmap's plotly JSON, titled with the accuracy.
    fn heatmap(&self) -> Result<serde_json::Value> {
        confusion_json(
            &self.names,
            &self.confusion,
            "test confusion matrix, accuracy {accuracy} (click a cell)",
        )
    }

    /// The listing of every non-empty cell, keyed `"truth,predicted"`.
    fn cells_html(&self) -> serde_json::Value {
        let n = self.names.len();
        let mut cells = serde_json::Map::new();
        for (t, p) in (0..n).flat_map(|t| (0..n).map(move |p| (t, p))) {
            let files = self.files(t, p);
            if files.is_empty() {
                continue;
            }
            let more = if files.len() > self.media_per_cell {
                format!(
                    " (players for the {} least confident; <code>explorer.cell({t}, {p})</code> for more)",
                    self.media_per_cell
                )
            } else {
                String::new()
            };
            let head = format!(
                "<h4>true {} predicted {}: {} file(s){more}</h4>",
                self.names[t],
                self.names[p],
                files.len()
            );
            cells.insert(format!("{t},{p}"), (head + &self.rows_html(&files, self.media_per_cell)).into());
        }
        serde_json::Value::Object(cells)
    }
}

/// The relevance columns of a row: for the predicted class, then the true one ("same" when
/// they agree).
fn relevance_cells(maps: &[String], predicted: &str, truth: &str, file: &str) -> String {
    let img = |png: &String, class: &str| {
        format!(
            r#"<td><img src="{png}" alt="relevance for {} in {}" title="relevance for {}"></td>"#,
            escape(class),
            escape(file),
            escape(class)
        )
    };
    match maps {
        [p] => img(p, predicted) + "<td>same</td>",
        [p, t] => img(p, predicted) + &img(t, truth),
        _ => String::new(),
    }
}

/// A confusion matrix's plotly JSON (rows true, columns predicted; `{accuracy}` in the title
/// becomes the accuracy): colour by the row-normalised share (so small classes read like big
/// ones), counts as cell text, both on hover. The plotly crate has no 2-D `text` nor
/// `texttemplate`, so they are added to its JSON.
pub(crate) fn confusion_json(
    names: &[String],
    confusion: &[Vec<usize>],
    title: &str,
) -> Result<serde_json::Value> {
    let n = names.len().min(confusion.len());
    let mut plot = Plot::new();
    plot.add_trace(HeatMap::new(names.to_vec(), names.to_vec(), confusion.to_vec()));
    let total: usize = confusion.iter().flatten().sum();
    let right: usize = (0..n).map(|i| confusion[i][i]).sum();
    let accuracy = format!("{:.2}%", 100.0 * right as f64 / total.max(1) as f64);
    let category =
        |title: &str| Axis::new().title(Title::with_text(title)).type_(plotly::layout::AxisType::Category);
    plot.set_layout(
        Layout::new()
            .title(Title::with_text(title.replace("{accuracy}", &accuracy)))
            .x_axis(category("predicted digit"))
            .y_axis(category("true digit")),
    );
    let share: Vec<Vec<f64>> = confusion
        .iter()
        .map(|row| {
            let total = row.iter().sum::<usize>().max(1) as f64;
            row.iter().map(|&c| (1000.0 * c as f64 / total).round() / 10.0).collect()
        })
        .collect();
    let mut fig: serde_json::Value = serde_json::from_str(&plot.to_json())?;
    fig["layout"]["yaxis"]["autorange"] = "reversed".into(); // true 0 at the top
    let trace = &mut fig["data"][0];
    trace["z"] = serde_json::json!(share);
    trace["zmin"] = 0.into();
    trace["zmax"] = 100.into();
    // White to dark blue (matplotlib's "Blues"; plotly's own runs the other way).
    trace["colorscale"] =
        serde_json::json!([[0.0, "rgb(247,251,255)"], [0.5, "rgb(107,174,214)"], [1.0, "rgb(8,48,107)"]]);
    trace["colorbar"] = serde_json::json!({"title": {"text": "% of true digit"}});
    trace["text"] = serde_json::json!(confusion);
    trace["texttemplate"] = "%{text}".into();
    trace["hovertemplate"] =
        "true %{y}, predicted %{x}<br>%{text} file(s), %{z:.1f}% of true %{y}<extra></extra>".into();
    Ok(fig)
}
