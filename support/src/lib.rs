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
//! | [`download`] | fetch and safely unpack AudioMNIST (resumable, verified)            |
//! | [`extract`]  | parallel feature extraction over a dataset, with progress             |
//! | [`cache`]    | the safetensors feature file and the fingerprinted cache              |
//! | [`model`]    | the seed's CNN (Candle), its initialisation and the model file        |
//! | [`split`]    | speaker-independent splits (random, official AudioMNIST folds, named) |
//! | [`train`]    | the training recipe (AdamW, plateau schedule, early stopping)         |
//! | [`evaluate`] | accuracy, confusion matrix, classification report, per speaker        |
//! | [`plots`]    | PNG figures (plotters)                                                |
//! | [`predict`]  | inference from an exported model file (`Predictor`)                   |
//! | [`workflow`] | the whole seed notebook as functions: features -> train -> artifacts  |
//! | [`notebook`] | what the evcxr notebook shows: figures, players, confusion explorer   |
//! | [`manifest`] | provenance for run_manifest.json                                      |
//! | [`bench`]    | throughput measurement of the feature pipeline                        |

pub mod audio;
#[cfg(feature = "train")]
pub mod augment;
pub mod bench;
pub mod cache;
pub mod dataset;
#[cfg(feature = "download")]
pub mod download;
pub mod evaluate;
pub mod extract;
pub mod features;
pub mod kernels;
pub mod manifest;
pub mod mel;
pub mod model;
#[cfg(feature = "notebook")]
pub mod notebook;
pub mod optim;
#[cfg(feature = "train")]
pub mod plots;
pub mod predict;
pub mod split;
#[cfg(feature = "train")]
pub mod train;
#[cfg(feature = "train")]
pub mod workflow;

pub use audio::{load_wav, resample, Audio, AudioError};
pub use cache::{CacheStatus, FeatureSet};
pub use dataset::{scan, Dataset, Recording, Skipped};
pub use features::{FeatureConfig, FeatureExtractor};

/// Version of this crate, recorded in every file it writes.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Make glibc keep freed memory for reuse instead of returning it to the kernel.
///
/// glibc hands every freed block above its mmap threshold (128 KiB to start) back to the
/// kernel, so each large tensor Candle's CPU backend allocates (im2col buffers, activations,
/// gradients: up to tens of MB per op) costs fresh page faults and zeroing. In the training
/// step that was over a third of the time; raising the thresholds made it 1.5x faster
/// (`audio-mnist bench-train`, README). Call once at start-up; a no-op off glibc.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters; valid at any time.
    unsafe {
        // glibc caps the mmap threshold (32 MiB on 64-bit); ask for 1 GiB, fall back to the cap.
        if libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30) == 0 {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        }
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        // The capped threshold still maps the largest activations (conv1's output at batch 64
        // is 32 MiB plus a header): serve everything from the heap, which is kept.
        libc::mallopt(libc::M_MMAP_MAX, 0);
    }
}
