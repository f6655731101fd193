//! `predict`: a digit per WAV file, as text or JSON lines.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use support::infer::{collect_inputs, Predictor};

/// Exit status: 0 all predicted, 1 some files failed (the others are still printed).
pub fn predict_command(model: &Path, json: bool, top: usize, paths: &[PathBuf]) -> Result<ExitCode> {
    let predictor = Predictor::load(model)?;
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
            Ok(p) if json => println!(
                "{}",
                serde_json::json!({"file": name, "digit": p.digit, "confidence": p.confidence, "probabilities": p.probabilities})
            ),
            Ok(p) => {
                let shown: Vec<String> = p.top(top).iter().map(|(d, c)| format!("{d} ({c:.2})")).collect();
                println!("{name}: {}", shown.join(", "));
            }
            Err(e) => error(&name, &e.kind.to_string()),
        }
    }
    Ok(if failed > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
