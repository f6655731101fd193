//! Relevance figures of the explorer's model: what the network listens to for each digit, and
//! the two sides of a confusion (plotly heatmaps on one symmetric scale: red for the class,
//! blue against it).

use serde_json::{json, Value};

use super::explorer::{ConfusionExplorer, Entry};
use super::figures::figure_html;
use super::{Html, Result};

/// One heatmap of a grid: its title, rows (mel bands, low first) and whether it is a
/// relevance map (diverging, shared scale) or a log-Mel image.
struct Panel {
    title: String,
    z: Vec<Vec<f32>>,
    relevance: bool,
}

impl ConfusionExplorer {
    fn explainer_or_err(&self) -> Result<&crate::explain::Explainer> {
        self.explainer
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("call .with_relevance(&model, &device) first").into())
    }

    /// Mean relevance map of `entries` for `class`, and the mean log-Mel image.
    fn mean_maps(&self, entries: &[&Entry], class: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let len = self.n_mels * self.n_frames;
        let images: Vec<f32> = entries.iter().flat_map(|e| self.image(e).iter().copied()).collect();
        let maps = self.explainer_or_err()?.explain(&images, &vec![class; entries.len()])?;
        let n = entries.len().max(1) as f32;
        let (mut relevance, mut log_mel) = (vec![0f32; len], vec![0f32; len]);
        for (r, image) in maps.iter().zip(images.chunks_exact(len)) {
            relevance.iter_mut().zip(&r.map).for_each(|(a, b)| *a += b / n);
            log_mel.iter_mut().zip(image).for_each(|(a, b)| *a += b / n);
        }
        Ok((relevance, log_mel))
    }

    fn rows(&self, v: &[f32]) -> Vec<Vec<f32>> {
        v.chunks_exact(self.n_frames).map(<[f32]>::to_vec).collect()
    }

    /// What the network listens to for each digit: the mean relevance map for the true digit
    /// over (up to `per_digit` of) the test recordings it got right.
    pub fn digit_relevance(&self, per_digit: usize) -> Result<Html> {
        let mut panels = Vec::new();
        for d in 0..self.names.len().min(10) {
            let right: Vec<&Entry> = self.files(d, d).into_iter().rev().take(per_digit).collect();
            if right.is_empty() {
                continue;
            }
            let (relevance, _) = self.mean_maps(&right, d)?;
            panels.push(Panel {
                title: format!("{d} ({} files)", right.len()),
                z: self.rows(&relevance),
                relevance: true,
            });
        }
        let title = "mean relevance for the true digit, test recordings recognised (red: for the digit)";
        Ok(Html(figure_html(&grid(panels, 5, title).to_string(), 620, "")))
    }

    /// The two sides of a confusion: for the recordings of true `truth` taken for `predicted`,
    /// the mean log-Mel, the mean relevance for each of the two classes, and their difference
    /// (red: what pulled towards `predicted`).
    pub fn confusion_relevance(&self, truth: usize, predicted: usize) -> Result<Html> {
        let files: Vec<&Entry> = self.files(truth, predicted).into_iter().take(20).collect();
        if files.is_empty() {
            return Ok(Html(format!("<p>no test recording of {truth} was taken for {predicted}</p>")));
        }
        let (t, p) = (&self.names[truth], &self.names[predicted]);
        let (for_truth, log_mel) = self.mean_maps(&files, truth)?;
        let (for_predicted, _) = self.mean_maps(&files, predicted)?;
        let difference: Vec<f32> = for_predicted.iter().zip(&for_truth).map(|(a, b)| a - b).collect();
        let panels = vec![
            Panel { title: "mean log-Mel (dB)".into(), z: self.rows(&log_mel), relevance: false },
            Panel {
                title: format!("relevance for {t} (the truth)"),
                z: self.rows(&for_truth),
                relevance: true,
            },
            Panel {
                title: format!("relevance for {p} (the answer)"),
                z: self.rows(&for_predicted),
                relevance: true,
            },
            Panel { title: format!("{p} minus {t}"), z: self.rows(&difference), relevance: true },
        ];
        let title = format!("{} recording(s) of {t} heard as {p}: what each side saw", files.len());
        Ok(Html(figure_html(&grid(panels, 4, &title).to_string(), 380, "")))
    }
}

/// Heatmaps in a grid of `columns`, relevance panels on one symmetric scale (zero white).
fn grid(panels: Vec<Panel>, columns: usize, title: &str) -> Value {
    let peak = panels
        .iter()
        .filter(|p| p.relevance)
        .flat_map(|p| p.z.iter().flatten())
        .fold(1e-12f32, |m, v| m.max(v.abs()));
    let rows = panels.len().div_ceil(columns).max(1);
    let mut data = Vec::new();
    let mut annotations = Vec::new();
    let mut first_relevance = true;
    for (k, panel) in panels.into_iter().enumerate() {
        let axis = if k == 0 { String::new() } else { (k + 1).to_string() };
        let mut trace = json!({"type": "heatmap", "z": panel.z, "xaxis": format!("x{axis}"), "yaxis": format!("y{axis}"),
            "hovertemplate": "frame %{x}, band %{y}: %{z:.4f}<extra></extra>"});
        if panel.relevance {
            trace["colorscale"] = "RdBu".into();
            trace["reversescale"] = true.into();
            trace["zmin"] = (-peak).into();
            trace["zmax"] = peak.into();
            trace["showscale"] = first_relevance.into();
            trace["colorbar"] = json!({"title": {"text": "relevance"}, "len": 0.8});
            first_relevance = false;
        } else {
            trace["colorscale"] = "Magma".into();
            trace["showscale"] = false.into();
        }
        data.push(trace);
        annotations.push(json!({"text": panel.title, "showarrow": false, "xref": format!("x{axis} domain"),
            "yref": format!("y{axis} domain"), "x": 0.5, "y": 1.0, "yanchor": "bottom", "font": {"size": 12}}));
    }
    json!({
        "data": data,
        "layout": {"title": {"text": title}, "grid": {"rows": rows, "columns": columns, "pattern": "independent"},
            "annotations": annotations, "margin": {"t": 80}},
        "config": {"responsive": true},
    })
}
