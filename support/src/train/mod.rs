//! Training: the [`Recipe`] (what to train), on-the-fly augmentation ([`augment`]), the fused
//! AdamW ([`optim`]), one network's training loop ([`trainer`]), "not a digit" examples
//! ([`negatives`], [`other_speech`]) and the ensembles of a run with their checkpoints ([`fit`]).

#[cfg(feature = "train")]
pub mod augment;
#[cfg(feature = "train")]
pub mod fit;
#[cfg(feature = "train")]
pub mod negatives;
pub mod optim;
#[cfg(feature = "train")]
pub mod other_speech;
pub mod recipe;
#[cfg(feature = "train")]
pub mod trainer;

pub use recipe::{AugmentConfig, AugmentStep, Overrides, Recipe, RecipeName};
#[cfg(feature = "train")]
pub use trainer::{evaluate_loss, norm_stats, rows_for, tensors, train, EpochLog, Trained};
