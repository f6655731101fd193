//! The library's typed errors: each names what was wrong and, where a file is involved, the
//! file. The binary adds context with `anyhow` at its edge.

use std::path::PathBuf;

/// What went wrong, by kind.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A model file that is not a complete model this build understands.
    #[error("model file {}: {reason}", path.display())]
    ModelFile { path: PathBuf, reason: String },
    /// A recipe, network or feature setting out of range (a usage error).
    #[error("{0}")]
    Config(String),
    /// A data folder without usable recordings, or with broken metadata.
    #[error("{0}")]
    Data(String),
    /// A split that cannot be made from the speakers at hand.
    #[error("{0}")]
    Split(String),
    /// The resampler refused a signal.
    #[error("resampling failed: {0}")]
    Resample(String),
    /// A computation failed inside Candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    pub fn model_file(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Self::ModelFile { path: path.into(), reason: reason.to_string() }
    }
}

/// `Err(kind(message()))` unless `ok`.
pub(crate) fn check(
    ok: bool,
    kind: fn(String) -> Error,
    message: impl FnOnce() -> String,
) -> Result<(), Error> {
    if ok {
        Ok(())
    } else {
        Err(kind(message()))
    }
}

/// `Err(Error::Config(..))` unless `ok`.
pub(crate) fn config_check(ok: bool, message: impl FnOnce() -> String) -> Result<(), Error> {
    check(ok, Error::Config, message)
}
