//! `predict`: a digit per WAV file, as text or JSON lines.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use support::infer::{collect_inputs, Predictor};

/// Exit status: 0 all predicted, 1 some files failed (the others are still printed).
pub fn predict_command(
    model: &Path,
    json: bool,
    top: usize,
    threshold: Option<f32>,
    paths: &[PathBuf],
) -> Result<ExitCode> {
    let mut predictor = Predictor::load(model)?;
    if let Some(t) = threshold {
        anyhow::ensure!((0.0..=1.0).contains(&t), "--threshold {t}: give a probability from 0 to 1");
        predictor = predictor.with_threshold(t);
    }
    let (files, problems) = collect_inputs(paths)?;
    let mut failed = 0;
    let mut error = |name: &str, why: &str| {
        failed += 1;
        if json {
            println!("{}", serde_json::json!({"file": name, "error": why}));
        } else {
            eprintln!("{name}: error: {why}");
        }
    };
    for (path, why) in &problems {
        error(&path.display().to_string(), why);
    }
    for (file, result) in predictor.predict_files(&files) {
        let name = file.display().to_string();
        match result {
            Ok(p) if json => {
                let mut line = serde_json::to_value(&p)?;
                line["file"] = name.into();
                println!("{line}")
            }
            Ok(p) => {
                let mut shown = vec![format!("{} ({:.2})", p.label, p.confidence)];
                let others = p.top(top).into_iter().filter(|(label, _)| *label != p.label);
                shown.extend(others.take(top - 1).map(|(label, c)| format!("{label} ({c:.2})")));
                let reason = p.reason.map_or(String::new(), |r| format!("  [{r}]"));
                println!("{name}: {}{reason}", shown.join(", "));
            }
            Err(e) => error(&name, &e.kind.to_string()),
        }
    }
    Ok(if failed > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
