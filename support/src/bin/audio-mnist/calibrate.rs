//! `calibrate`: fit a model's "not a digit" threshold on held-out speakers' digits, so that it
//! refuses about a stated share of real digits and no more.

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use support::infer::threshold::fit_reject_threshold;
use support::infer::{collect_inputs, decide, Predictor};
use support::model::file::save_with_reject_threshold;

/// Fit the model's "not a digit" threshold so that at most --false-reject of these digit
/// recordings are refused, and write a copy of the model that uses it.
#[derive(clap::Args, Debug)]
pub struct CalibrateArgs {
    /// A model with a "not a digit" class (`train --reject true`).
    #[arg(long)]
    pub model: PathBuf,
    /// The calibrated copy (may be --model itself).
    #[arg(long)]
    pub out: PathBuf,
    /// The largest share of these digits to refuse (0-0.5).
    #[arg(long, default_value_t = 0.03)]
    pub false_reject: f64,
    /// Digit recordings (files or folders) of speakers the model never trained or validated
    /// on, recorded like its users will be.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

pub fn calibrate_command(a: &CalibrateArgs) -> Result<()> {
    ensure!(
        (0.0..=0.5).contains(&a.false_reject),
        "--false-reject {}: give a share from 0 to 0.5",
        a.false_reject
    );
    let predictor = Predictor::load(&a.model)?;
    ensure!(
        predictor.meta().architecture.classes == 11,
        "{} has no \"not a digit\" class to calibrate: train one with --reject true",
        a.model.display()
    );
    let (files, problems) = collect_inputs(&a.paths)?;
    for (path, why) in &problems {
        eprintln!("{}: skipped: {why}", path.display());
    }
    // Each digit's "not a digit" probability (1 for a silent recording, which is refused).
    let (mut p_reject, mut as_trained) = (Vec::new(), 0);
    for (k, chunk) in files.chunks(256).enumerate() {
        for (file, answer) in predictor.predict_files(chunk) {
            match answer {
                Ok(p) => {
                    p_reject.push(p.probabilities.get(10).copied().unwrap_or(1.0));
                    as_trained += usize::from(
                        p.probabilities.is_empty() || decide(&p.probabilities, 0.0, None).is_none(),
                    );
                }
                Err(e) => eprintln!("{}: skipped: {}", file.display(), e.kind),
            }
        }
        eprintln!("{} of {} recordings", (k * 256 + chunk.len()).min(files.len()), files.len());
    }
    let t = fit_reject_threshold(&p_reject, a.false_reject).context("no recording could be read")?;
    let refused = p_reject.iter().filter(|&&p| p >= t).count();
    save_with_reject_threshold(&a.model, &a.out, Some(t))?;
    let share = |n: usize| 100.0 * n as f64 / p_reject.len() as f64;
    println!(
        "\"not a digit\" threshold {t:.4}: refuses {refused} of these {} digits ({:.1}%; as trained {as_trained}, {:.1}%); wrote {}",
        p_reject.len(),
        share(refused),
        share(as_trained),
        a.out.display()
    );
    Ok(())
}
