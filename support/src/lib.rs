//! Spoken-digit recognition on AudioMNIST, the Rust way.
//!
//! The crate follows the seed Kaggle notebook step by step; each step lives in one module:
//!
//! | module       | step                                                                  |
//! |--------------|-----------------------------------------------------------------------|
//! | [`audio`]    | read a WAV (any integer/float format), mix to mono, resample (rubato) |
//! | [`mel`]      | librosa's mel scale and Slaney-normalised mel filterbank              |
//! | [`features`] | trim, normalize, fix_length, melspectrogram, power_to_db              |
//! | [`dataset`]  | find recordings (AudioMNIST, Kaggle unzip, FSDD) and their metadata   |
//! | [`extract`]  | parallel feature extraction over a dataset, with progress             |
//! | [`cache`]    | the safetensors feature file and the fingerprinted cache              |
//! | [`model`]    | the seed's CNN (Candle), its initialisation and the model file        |
//! | [`split`]    | speaker-independent splits (random, official AudioMNIST folds, named) |
//! | [`train`]    | the training recipe (AdamW, plateau schedule, early stopping)         |
//! | [`evaluate`] | accuracy, confusion matrix, classification report, per speaker        |
//! | [`plots`]    | PNG figures (plotters)                                                |
//! | [`workflow`] | the whole seed notebook as functions: features -> train -> artifacts  |
//! | [`manifest`] | provenance for run_manifest.json                                      |
//! | [`bench`]    | throughput measurement of the feature pipeline                        |

pub mod audio;
pub mod bench;
pub mod cache;
pub mod dataset;
pub mod evaluate;
pub mod extract;
pub mod features;
pub mod manifest;
pub mod mel;
pub mod model;
pub mod plots;
pub mod split;
pub mod train;
pub mod workflow;

pub use audio::{load_wav, resample, Audio, AudioError};
pub use cache::{CacheStatus, FeatureSet};
pub use dataset::{scan, Dataset, Recording, Skipped};
pub use features::{FeatureConfig, FeatureExtractor};

/// Version of this crate, recorded in every file it writes.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
