//! `calibrate`: fit a model's confidence (one temperature for its networks) and its "not a
//! digit" threshold on held-out speakers' digits, recorded like its users will be. A model's
//! own validation speaker is too easy for either (support/RESULTS.md).

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use candle_core::Tensor;
use support::data::dataset::parse_name;
use support::eval::calibration::fit_ensemble_temperature;
use support::eval::calibration::{
    ece_floor, ece_of, ensemble_nll, ensemble_probabilities, top_confidence, ECE_BINS,
};
use support::infer::threshold::fit_reject_threshold;
use support::infer::{collect_inputs, decide, Predictor};
use support::model::file::{save_calibrated, Calibrated};

/// Fit the model's temperature and, when it has a "not a digit" class, the threshold that
/// refuses at most --false-reject of these digit recordings; write a copy that uses them.
#[derive(clap::Args, Debug)]
pub struct CalibrateArgs {
    /// The model to calibrate.
    #[arg(long)]
    pub model: PathBuf,
    /// The calibrated copy (may be --model itself).
    #[arg(long)]
    pub out: PathBuf,
    /// The largest share of these digits to refuse as "not a digit" (0-0.5).
    #[arg(long, default_value_t = 0.03)]
    pub false_reject: f64,
    /// Digit recordings named `{digit}_{speaker}_{take}.wav` (files or folders) of speakers
    /// the model never trained or validated on.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

pub fn calibrate_command(a: &CalibrateArgs) -> Result<()> {
    ensure!(
        (0.0..=0.5).contains(&a.false_reject),
        "--false-reject {}: give a share from 0 to 0.5",
        a.false_reject
    );
    ensure!(a.model.is_file(), "no model at {}", a.model.display());
    let predictor = Predictor::load(&a.model)?;
    let (images, labels, silent) = labelled_images(&predictor, &a.paths)?;
    let logits = member_logits(&predictor, &images)?;
    let t = fit_ensemble_temperature(&logits, &labels);
    let before = ensemble_probabilities(&logits, 1.0);
    let after = ensemble_probabilities(&logits, t as f64);
    let n = labels.len();
    let (nll, ece) = (
        [ensemble_nll(&logits, &labels, 1.0), ensemble_nll(&logits, &labels, t as f64)],
        [ece_of(&before, &labels), ece_of(&after, &labels)],
    );
    let floor = ece_floor(&top_confidence(&after), ECE_BINS, 400, 7);
    println!(
        "{n} digit recordings: temperature {t:.3}; NLL {:.3} -> {:.3}, ECE {:.3} -> {:.3} (a calibrated model: {floor:.3}) on these recordings",
        nll[0], nll[1], ece[0], ece[1]
    );
    let mut record =
        serde_json::json!({"recordings": n, "temperature": t, "nll": nll, "ece": ece, "ece_floor": floor});
    let threshold = if predictor.meta().architecture.classes == 11 {
        Some(reject_threshold(&after, silent, a.false_reject, &mut record)?)
    } else {
        None
    };
    let temperatures = Some(vec![t; logits.len()]);
    save_calibrated(&a.model, &a.out, &Calibrated { temperatures, reject_threshold: threshold, record })?;
    println!("wrote {}", a.out.display());
    Ok(())
}

/// The "not a digit" threshold refusing at most `false_reject` of these digits (their
/// calibrated probabilities `after`, and `silent` recordings, refused whatever the threshold),
/// printed and added to `record`.
fn reject_threshold(
    after: &[Vec<f32>],
    silent: usize,
    false_reject: f64,
    record: &mut serde_json::Value,
) -> Result<f32> {
    let mut p_reject: Vec<f32> = after.iter().map(|p| p[10]).collect();
    p_reject.extend(std::iter::repeat_n(1.0, silent));
    let th = fit_reject_threshold(&p_reject, false_reject).context("no recording to calibrate on")?;
    let refused = p_reject.iter().filter(|&&p| p >= th).count();
    let as_trained = after.iter().filter(|p| decide(p, 0.0, None).is_none()).count() + silent;
    let share = |k: usize| 100.0 * k as f64 / p_reject.len() as f64;
    println!(
        "\"not a digit\" threshold {th:.4}: refuses {refused} of these {} digits ({:.1}%; the class alone: {as_trained}, {:.1}%)",
        p_reject.len(),
        share(refused),
        share(as_trained)
    );
    record["reject_threshold"] = th.into();
    record["false_reject"] = (refused as f64 / p_reject.len() as f64).into();
    Ok(th)
}

/// Each network's logits for `images`, 256 at a time (a whole corpus at once would not fit).
fn member_logits(predictor: &Predictor, images: &[Vec<f32>]) -> Result<Vec<Vec<Vec<f32>>>> {
    let arch = &predictor.meta().architecture;
    let mut out: Vec<Vec<Vec<f32>>> = Vec::new();
    for chunk in images.chunks(256) {
        let shape = (chunk.len(), 1, arch.n_mels, arch.n_frames);
        let x = Tensor::from_vec(chunk.concat(), shape, &predictor.device())?;
        let logits = predictor.model().member_logits(&x)?;
        out.resize(logits.len(), Vec::new());
        out.iter_mut().zip(logits).for_each(|(all, part)| all.extend(part));
    }
    Ok(out)
}

/// Each readable digit recording's log-Mel image and digit, and how many were silent.
fn labelled_images(predictor: &Predictor, paths: &[PathBuf]) -> Result<(Vec<Vec<f32>>, Vec<usize>, usize)> {
    let (files, problems) = collect_inputs(paths)?;
    for (path, why) in &problems {
        eprintln!("{}: skipped: {why}", path.display());
    }
    let (mut images, mut labels, mut silent) = (Vec::new(), Vec::new(), 0);
    for (k, chunk) in files.chunks(256).enumerate() {
        // Images only: the networks' logits are computed once, in `member_logits`.
        for (file, image) in chunk.iter().zip(predictor.images_of_files(chunk)) {
            let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            match (image, parse_name(&name)) {
                (Err(e), _) => eprintln!("{}: skipped: {}", file.display(), e.kind),
                (Ok(_), None) => {
                    eprintln!("{}: skipped: not named {{digit}}_{{speaker}}_{{take}}.wav", file.display())
                }
                (Ok(Err(_)), Some(_)) => silent += 1,
                (Ok(Ok(image)), Some((digit, ..))) => {
                    images.push(image);
                    labels.push(digit as usize);
                }
            }
        }
        eprintln!("{} of {} recordings read", (k * 256 + chunk.len()).min(files.len()), files.len());
    }
    ensure!(!labels.is_empty(), "none of the {} files is a readable digit recording with sound", files.len());
    Ok((images, labels, silent))
}
