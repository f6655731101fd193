//! PNG figures with plotters (no browser, no system fonts: DejaVu Sans is compiled in).

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::train::EpochLog;

pub(crate) fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is a static byte slice from the `dejavu` crate; registering cannot fail for it.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold());
    });
}

/// Line colours, one per network or model.
const PALETTE: [RGBColor; 6] = [BLUE, RED, RGBColor(0, 140, 0), RGBColor(200, 120, 0), MAGENTA, CYAN];

/// The series labels in a boxed legend at `position`.
fn draw_legend<'a, 'b: 'a>(
    chart: &mut ChartContext<
        'a,
        BitMapBackend<'b>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    position: SeriesLabelPosition,
    path: &Path,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err(path))?;
    Ok(())
}

pub(crate) fn err<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> anyhow::Error + '_ {
    move |e| anyhow!("drawing {}: {e}", path.display())
}

/// Loss and accuracy per epoch, training and validation, of every network (one line colour
/// per member of an ensemble; validation drawn thick with dots).
pub fn training_curves(logs: &[&[EpochLog]], path: &Path) -> Result<()> {
    register_fonts();
    let root = BitMapBackend::new(path, (1100, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(err(path))?;
    let (left, right) = root.split_horizontally(550);
    let longest = logs.iter().map(|l| l.len()).max().unwrap_or(0);
    let epochs = longest.max(2) as f64;
    let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
    let max_loss = logs
        .iter()
        .flat_map(|l| l.iter())
        .map(|r| finite(r.train_loss).max(finite(r.val_loss)))
        .fold(0.1, f64::max)
        * 1.05;
    type Panel<'a, 'b> = (
        &'a DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>,
        &'a str,
        f64,
        [fn(&EpochLog) -> f64; 2],
        SeriesLabelPosition,
    );
    let panels: [Panel; 2] = [
        (&left, "loss", max_loss, [|r| r.train_loss, |r| r.val_loss], SeriesLabelPosition::UpperRight),
        (&right, "accuracy", 1.0, [|r| r.train_acc, |r| r.val_acc], SeriesLabelPosition::LowerRight),
    ];
    for (area, name, top, series, legend) in panels {
        let mut chart = ChartBuilder::on(area)
            .caption(format!("training {name}"), ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(1f64..epochs, 0f64..top)
            .map_err(err(path))?;
        chart
            .configure_mesh()
            .x_labels(longest.clamp(2, 12))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .x_desc("epoch")
            .y_desc(name)
            .draw()
            .map_err(err(path))?;
        for (k, log) in logs.iter().enumerate() {
            let member = if logs.len() > 1 { format!("net {} ", k + 1) } else { String::new() };
            for (s, (get, part)) in series.iter().zip(["train", "validation"]).enumerate() {
                // A single network keeps the classic blue/red pair; members get one colour each.
                let color = if logs.len() > 1 { PALETTE[k % PALETTE.len()] } else { PALETTE[s] };
                let width = if s == 1 || logs.len() == 1 { 2 } else { 1 };
                let points: Vec<(f64, f64)> =
                    log.iter().map(|r| (r.epoch as f64, get(r))).filter(|p| p.1.is_finite()).collect();
                chart
                    .draw_series(LineSeries::new(points.clone(), color.stroke_width(width)))
                    .map_err(err(path))?
                    .label(format!("{member}{part}"))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(width))
                    });
                if s == 1 || logs.len() == 1 {
                    chart
                        .draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))
                        .map_err(err(path))?;
                }
            }
        }
        draw_legend(&mut chart, legend, path)?;
    }
    root.present().map_err(err(path))?;
    Ok(())
}

/// Confusion-matrix heatmap with counts in the cells; rows = true class, columns = predicted.
pub fn confusion_matrix(confusion: &[Vec<usize>], names: &[String], title: &str, path: &Path) -> Result<()> {
    register_fonts();
    let n = confusion.len();
    let root = BitMapBackend::new(path, (720, 680)).into_drawing_area();
    root.fill(&WHITE).map_err(err(path))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..n as f64 - 0.5, -0.5f64..n as f64 - 0.5)
        .map_err(err(path))?;
    // row 0 is drawn at the top: y = n-1-row
    let label = |v: &f64, flip: bool| {
        let i = v.round() as isize;
        let i = if flip { n as isize - 1 - i } else { i };
        if (v - v.round()).abs() < 1e-6 && i >= 0 && (i as usize) < n {
            names[i as usize].clone()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(n)
        .y_labels(n)
        .x_label_formatter(&|v| label(v, false))
        .y_label_formatter(&|v| label(v, true))
        .x_desc("predicted digit")
        .y_desc("true digit")
        .axis_desc_style(("sans-serif", 18))
        .label_style(("sans-serif", 16))
        .draw()
        .map_err(err(path))?;
    let row_max: Vec<usize> = confusion.iter().map(|r| r.iter().sum::<usize>().max(1)).collect();
    for (t, row) in confusion.iter().enumerate() {
        for (p, &count) in row.iter().enumerate() {
            let share = count as f64 / row_max[t] as f64; // row-normalised colour
            let y = (n - 1 - t) as f64;
            let color = RGBColor((255.0 - 200.0 * share) as u8, (255.0 - 140.0 * share) as u8, 255);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(p as f64 - 0.5, y - 0.5), (p as f64 + 0.5, y + 0.5)],
                    color.filled(),
                )))
                .map_err(err(path))?;
            if count > 0 {
                let style = TextStyle::from(("sans-serif", 15).into_font())
                    .color(if share > 0.6 { &WHITE } else { &BLACK })
                    .pos(plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Center,
                        plotters::style::text_anchor::VPos::Center,
                    ));
                chart
                    .draw_series(std::iter::once(Text::new(count.to_string(), (p as f64, y), style)))
                    .map_err(err(path))?;
            }
        }
    }
    root.present().map_err(err(path))?;
    Ok(())
}

/// Accuracy per condition (rows, clean at the top), one coloured line with dots per model.
pub fn robustness(report: &super::robustness::Robustness, path: &Path) -> Result<()> {
    register_fonts();
    let n = report.conditions.len();
    let root = BitMapBackend::new(path, (900, 120 + 34 * n as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(err(path))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("accuracy under each condition", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(200)
        .build_cartesian_2d(0f64..1f64, -0.5f64..n as f64 - 0.5)
        .map_err(err(path))?;
    let label = row_label(report.conditions.iter().map(|c| c.name.clone()).collect());
    chart
        .configure_mesh()
        .y_labels(n)
        .y_label_formatter(&label)
        .x_desc("accuracy")
        .draw()
        .map_err(err(path))?;
    for (m, model) in report.models.iter().enumerate() {
        let color = PALETTE[m % PALETTE.len()];
        let points: Vec<(f64, f64)> = report
            .conditions
            .iter()
            .enumerate()
            .map(|(k, c)| (c.accuracy.get(model).copied().unwrap_or(f64::NAN), (n - 1 - k) as f64))
            .filter(|p| p.0.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(err(path))?
            .label(model.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled()))).map_err(err(path))?;
    }
    draw_legend(&mut chart, SeriesLabelPosition::LowerLeft, path)?;
    root.present().map_err(err(path))?;
    Ok(())
}

/// The y-axis labels of a chart with one row per name, the first at the top (row `n - 1`).
fn row_label(names: Vec<String>) -> impl Fn(&f64) -> String {
    move |v: &f64| {
        let i = names.len() as isize - 1 - v.round() as isize;
        match (v - v.round()).abs() < 1e-6 && i >= 0 && (i as usize) < names.len() {
            true => names[i as usize].clone(),
            false => String::new(),
        }
    }
}

/// The scoreboard as bars: each line's score against its target (accuracy lines in percent;
/// the robustness lines as 100 + their change from clean, so "within 5 points" is a target
/// of 95).
pub fn scoreboard(board: &super::benchmark::Scoreboard, path: &Path) -> Result<()> {
    register_fonts();
    let n = board.lines.len();
    let root = BitMapBackend::new(path, (1000, 140 + 46 * n.max(1) as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(err(path))?;
    let quick = if board.quick { "QUICK ESTIMATE of " } else { "" };
    // Long override lists would run off the picture.
    let title: String = format!("{quick}{}", board.recipe.label()).chars().take(95).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 17))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(150)
        .build_cartesian_2d(0f64..100f64, -0.5f64..n as f64 - 0.5)
        .map_err(err(path))?;
    let label = row_label(board.lines.iter().map(|l| l.name.clone()).collect());
    chart
        .configure_mesh()
        .y_labels(n)
        .y_label_formatter(&label)
        .x_desc("percent (robustness: 100 + change from clean); black mark: target; green: met")
        .draw()
        .map_err(err(path))?;
    let score = |l: &super::benchmark::Line| match l.name.starts_with("babble") || l.name.starts_with("rt60")
    {
        true => (100.0 + 100.0 * l.value, 100.0 + 100.0 * l.target),
        false => (100.0 * l.value, 100.0 * l.target),
    };
    for (k, line) in board.lines.iter().enumerate() {
        let y = (n - 1 - k) as f64;
        let (v, t) = score(line);
        let color = if line.met { RGBColor(0, 140, 0) } else { RGBColor(200, 120, 0) };
        chart
            .draw_series([Rectangle::new([(0.0, y - 0.3), (v.clamp(0.0, 100.0), y + 0.3)], color.filled())])
            .map_err(err(path))?;
        chart
            .draw_series([PathElement::new(vec![(t, y - 0.42), (t, y + 0.42)], BLACK.stroke_width(3))])
            .map_err(err(path))?;
        let text = format!("{v:.1}");
        chart
            .draw_series([Text::new(text, (v.clamp(0.0, 88.0) + 1.0, y + 0.15), ("sans-serif", 15))])
            .map_err(err(path))?;
    }
    root.present().map_err(err(path))?;
    Ok(())
}
