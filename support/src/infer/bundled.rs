//! Which model a command uses when it is not told: `--model` when given, else the main job's
//! `out/model.safetensors` when it exists, else the model that ships inside the program
//! (`support/models/digits-en.safetensors`, its card beside it), so that a fresh clone
//! recognises digits with no training and no network.

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::Device;

use super::Predictor;
use crate::model::file::load_model_bytes;

/// The bundled model's file name (in `support/models/`).
pub const BUNDLED_NAME: &str = "digits-en.safetensors";
/// The bundled model's bytes: English digits, half-precision weights (the card:
/// support/models/README.md; the command that makes it: support/models/make_default.sh).
pub const BUNDLED: &[u8] = include_bytes!("../../models/digits-en.safetensors");
/// Where `audio-mnist run` and `train` put their model by default.
pub const TRAINED: &str = "out/model.safetensors";

/// The model a command will use, and why.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelChoice {
    /// `--model PATH`.
    Given(PathBuf),
    /// `out/model.safetensors`, from `audio-mnist run` or `train`.
    Trained(PathBuf),
    /// The model inside the program.
    Bundled,
}

impl ModelChoice {
    /// `given` if any, else the trained model if it exists, else the bundled one.
    pub fn resolve(given: Option<&Path>) -> Self {
        match given {
            Some(p) => Self::Given(p.to_path_buf()),
            None if Path::new(TRAINED).is_file() => Self::Trained(PathBuf::from(TRAINED)),
            None => Self::Bundled,
        }
    }

    /// `path` when it exists, else the bundled model (the notebook's prediction cell).
    pub fn file_or_bundled(path: &Path) -> Self {
        if path.is_file() {
            Self::Given(path.to_path_buf())
        } else {
            Self::Bundled
        }
    }

    /// One line saying which model answers (commands print it on stderr).
    pub fn describe(&self) -> String {
        match self {
            Self::Given(p) => format!("model: {}", p.display()),
            Self::Trained(p) => {
                format!("model: {} (yours, from `audio-mnist run`; --model picks another)", p.display())
            }
            Self::Bundled => format!(
                "model: the bundled {BUNDLED_NAME} (English digits; its card: support/models/README.md). \
                 Train your own with `audio-mnist run`, or give --model"
            ),
        }
    }

    /// The file name a page or log may show (never a directory).
    pub fn name(&self) -> PathBuf {
        match self {
            Self::Given(p) | Self::Trained(p) => p.clone(),
            Self::Bundled => PathBuf::from(BUNDLED_NAME),
        }
    }

    /// The model file's bytes (what adaptation starts from).
    pub fn bytes(&self) -> Result<std::borrow::Cow<'static, [u8]>> {
        match self {
            Self::Given(p) | Self::Trained(p) => {
                Ok(std::fs::read(p).map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))?.into())
            }
            Self::Bundled => Ok(BUNDLED.into()),
        }
    }

    /// The predictor, on the best available device.
    pub fn load(&self) -> Result<Predictor> {
        self.load_on(&crate::model::pick_device())
    }

    pub fn load_on(&self, device: &Device) -> Result<Predictor> {
        match self {
            Self::Given(p) | Self::Trained(p) => {
                anyhow::ensure!(
                    p.is_file(),
                    "no model at {} (leave out --model to use the bundled one)",
                    p.display()
                );
                Predictor::load_on(p, device)
            }
            Self::Bundled => {
                let loaded = load_model_bytes(BUNDLED, device)?;
                Predictor::new(loaded.model, loaded.meta, device)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_model_wins_and_the_bundled_one_loads() {
        assert_eq!(
            ModelChoice::resolve(Some(Path::new("m.safetensors"))),
            ModelChoice::Given("m.safetensors".into())
        );
        let p = ModelChoice::Bundled.load_on(&Device::Cpu).unwrap();
        assert_eq!(p.meta().classes.len(), p.meta().architecture.classes);
        assert!(ModelChoice::Bundled.describe().contains("support/models/README.md"));
        assert!(BUNDLED.len() <= 10 << 20, "the bundled model is {} bytes", BUNDLED.len());
    }
}
