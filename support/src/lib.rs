//! Spoken-digit recognition on AudioMNIST, the Rust way.
//!
//! The folders follow the pipeline, from a WAV file to a digit:
//!
//! | module       | step                                                                          |
//! |--------------|-------------------------------------------------------------------------------|
//! | [`dsp`]      | read a WAV, resample, trim, normalize, log-Mel (librosa's numbers)            |
//! | [`data`]     | find recordings, speaker splits, parallel extraction, the feature cache, download |
//! | [`model`]    | the CNN (a list of conv blocks), TC-ResNet, fused CPU kernels, the model file |
//! | [`train`]    | the [`Recipe`](train::Recipe), augmentation, AdamW, the training loop, ensembles |
//! | [`eval`]     | accuracy, confusion, report, evaluation artifacts, cross-validation, plots    |
//! | [`adapt`]    | a model's head retrained on one person's few takes, and its benchmark         |
//! | [`infer`]    | inference from an exported model file (`Predictor`)                           |
//! | [`explain`]  | relevance maps: which log-Mel cells made the network answer a class          |
//! | [`stream`]   | live recognition: words cut from a stream as they end, digit sequences         |
//! | [`workflow`] | the whole run: features -> split -> training -> evaluation -> export          |
//! | [`notebook`] | what the evcxr notebook shows: figures, players, the confusion explorer       |
//! | [`fuzz`]     | a seeded mutation fuzzer for WAV files, model files, PCM streams, the HTTP API |
//! | [`manifest`] | provenance: crate versions, compiler, commit, CPU and SIMD level              |
//! | [`bench`]    | throughput of the feature pipeline and of training                            |

#[cfg(feature = "train")]
pub mod adapt;
pub mod bench;
pub mod data;
pub mod dsp;
pub mod error;
pub mod eval;
pub mod explain;
pub mod fuzz;
pub mod infer;
pub mod manifest;
pub mod model;
#[cfg(feature = "notebook")]
pub mod notebook;
pub mod stream;
pub mod train;
#[cfg(feature = "train")]
pub mod workflow;

pub use data::cache::{CacheStatus, FeatureSet};
pub use data::dataset::{scan, Dataset, Recording, Skipped};
pub use dsp::audio::{load_wav, Audio, AudioError};
pub use dsp::features::{FeatureConfig, FeatureExtractor};
pub use dsp::resample::resample;
pub use error::Error;

/// Version of this crate, recorded in every file it writes.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Make glibc keep freed memory for reuse instead of returning it to the kernel.
///
/// glibc hands every freed block above its mmap threshold (128 KiB to start) back to the
/// kernel, so each large tensor Candle's CPU backend allocates (im2col buffers, activations,
/// gradients: up to tens of MB per op) costs fresh page faults and zeroing. In the training
/// step that was over a third of the time; raising the thresholds made it 1.5x faster
/// (`audio-mnist bench-train`, support/RESULTS.md). Call once at start-up; a no-op off glibc.
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
