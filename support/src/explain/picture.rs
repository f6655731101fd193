//! `predict --explain`'s picture: the log-Mel image, the relevance map and the two overlaid,
//! as one PNG with axes and a title (plotters, the font compiled in).

use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;

use super::colour;
use super::Relevance;
use crate::eval::plots::{err, register_fonts};

/// One panel: title, and the colour of cell `i` (band-major).
type Panel<'a> = (String, Box<dyn Fn(usize) -> [u8; 3] + 'a>);

/// Write `path`: three panels side by side (log-Mel in dB, relevance for the class with blue
/// against / red for it on a symmetric scale, the relevance over the grey log-Mel), under
/// `title`.
pub fn save_png(path: &Path, log_mel: &[f32], relevance: &Relevance, title: &str) -> Result<()> {
    register_fonts();
    let (lo, hi) = log_mel.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let peak = relevance.map.iter().fold(0f32, |m, v| m.max(v.abs()));
    let (level, r) = (colour::unit_range(log_mel), colour::symmetric(&relevance.map));
    let panels: [Panel; 3] = [
        (format!("log-Mel, {lo:.0} to {hi:.0} dB"), Box::new(|i| colour::magma(level[i]))),
        (format!("relevance, |max| {peak:.3}"), Box::new(|i| colour::diverging(r[i]))),
        ("relevance over log-Mel".to_string(), Box::new(|i| colour::overlay(level[i], r[i]))),
    ];
    let root = BitMapBackend::new(path, (1200, 470)).into_drawing_area();
    root.fill(&WHITE).map_err(err(path))?;
    let root = root.titled(title, ("sans-serif", 20)).map_err(err(path))?;
    let (m, t) = (relevance.n_mels, relevance.n_frames);
    for (area, (name, cell)) in root.split_evenly((1, 3)).iter().zip(panels) {
        let mut chart = ChartBuilder::on(area)
            .caption(name, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(35)
            .y_label_area_size(45)
            .build_cartesian_2d(0f64..t as f64, 0f64..m as f64)
            .map_err(err(path))?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("frame")
            .y_desc("mel band")
            .label_style(("sans-serif", 12))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(err(path))?;
        let cells = (0..m * t).map(|i| {
            let (band, frame) = ((i / t) as f64, (i % t) as f64);
            let [red, green, blue] = cell(i);
            Rectangle::new([(frame, band), (frame + 1.0, band + 1.0)], RGBColor(red, green, blue).filled())
        });
        chart.draw_series(cells).map_err(err(path))?;
    }
    root.present().map_err(err(path))?;
    Ok(())
}
