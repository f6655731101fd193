//! Flags shared by several commands, parsed into typed values.

use std::path::PathBuf;

use anyhow::Result;
use support::data::split::SplitSpec;
use support::dsp::features::Framing;
use support::model::Arch;
use support::train::{AugmentStep, Overrides, Recipe, RecipeName};

#[derive(clap::Args)]
pub struct DataArgs {
    #[command(flatten)]
    pub data: DataFolders,
    /// Feature cache folder.
    #[arg(long, env = "AUDIO_MNIST_CACHE", default_value = "cache")]
    pub cache_dir: PathBuf,
}

/// `--data`, repeatable, or the list in `AUDIO_MNIST_DATA`.
#[derive(clap::Args)]
pub struct DataFolders {
    /// Dataset folder (AudioMNIST, its Kaggle unzip, FSDD, or any folder of
    /// `{digit}_{speaker}_{take}.wav`); repeat to train on several at once (speakers are
    /// named `folder/speaker`). Default: AUDIO_MNIST_DATA, a list separated like PATH.
    #[arg(long = "data", value_name = "DIR")]
    pub folders: Vec<PathBuf>,
}

/// The environment variable that lists the default data folders.
pub const DATA_ENV: &str = "AUDIO_MNIST_DATA";

impl DataFolders {
    /// The folders given, else those of `AUDIO_MNIST_DATA`, else `default`.
    pub fn resolve(&self, default: Option<&str>) -> Result<Vec<PathBuf>> {
        if !self.folders.is_empty() {
            return Ok(self.folders.clone());
        }
        if let Some(list) = std::env::var_os(DATA_ENV).filter(|v| !v.is_empty()) {
            return Ok(std::env::split_paths(&list).filter(|p| !p.as_os_str().is_empty()).collect());
        }
        match default {
            Some(d) => Ok(vec![PathBuf::from(d)]),
            None => anyhow::bail!("no data folder: pass --data DIR (repeatable) or set {DATA_ENV}"),
        }
    }
}

#[derive(clap::Args)]
pub struct SplitArgs {
    /// `random` (70/15/15 of the speakers, seeded), `paper:K` (official AudioMNIST fold K,
    /// 0-4) or `none` (train on every speaker but --val-speakers: a model for deployment).
    #[arg(long, default_value = "random")]
    pub split: String,
    /// Explicit test speakers (comma-separated); needs --val-speakers.
    #[arg(long)]
    pub test_speakers: Option<String>,
    /// Explicit validation speakers (comma-separated); needs --test-speakers.
    #[arg(long)]
    pub val_speakers: Option<String>,
}

impl SplitArgs {
    pub fn spec(&self, seed: u64) -> Result<SplitSpec> {
        Ok(SplitSpec::from_args(
            &self.split,
            seed,
            self.test_speakers.as_deref(),
            self.val_speakers.as_deref(),
        )?)
    }
    pub fn given(&self) -> bool {
        self.split != "random" || self.test_speakers.is_some() || self.val_speakers.is_some()
    }
}

/// The training flags `train` and `run` share.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// Output folder for the model, logs, plots and reports.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    #[command(flatten)]
    pub split: SplitArgs,
    #[command(flatten)]
    pub recipe: RecipeArgs,
}

/// How to train: a named recipe and typed overrides of its fields (`train`, `run`, `crossval`).
#[derive(clap::Args)]
pub struct RecipeArgs {
    /// Training recipe: `best` (frames spread over the word, liftered spectra, 50 dB range,
    /// three conv blocks, three networks averaged, augmented with VTLP, babble and reverb) or
    /// `seed` (the Kaggle notebook's).
    #[arg(long, value_enum, default_value_t = RecipeName::Best)]
    pub recipe: RecipeName,
    /// Seed for initialisation, shuffling, dropout, augmentation and the random split.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Maximum epochs per network (early stopping may end sooner); the recipes' is 30.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub epochs: Option<u64>,
    /// Mini-batch size; the recipes' is 64.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub batch_size: Option<u64>,
    /// Early-stopping patience: epochs without a better validation accuracy; the recipes' is 5.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub patience: Option<u64>,
    /// Networks trained and averaged, each validated on other training speakers.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=32))]
    pub ensemble: Option<u64>,
    /// How the STFT frames cover the word: `pad` (the seed's) or `stretch`.
    #[arg(long, value_enum)]
    pub framing: Option<Framing>,
    /// Dynamic range of the log-Mel image in dB (the seed's: 80).
    #[arg(long)]
    pub top_db: Option<f32>,
    /// STFT window in samples at 16 kHz (the seed's: 2048, 128 ms).
    #[arg(long)]
    pub n_fft: Option<usize>,
    /// Mel bands, the image's height (the seed's: 128).
    #[arg(long)]
    pub n_mels: Option<usize>,
    /// Find the word as in a room: above the noise floor, far clicks dropped (`true`/`false`;
    /// `best`: true; the seed: librosa's trim).
    #[arg(long)]
    pub word_trim: Option<bool>,
    /// Cepstral liftering: DCT coefficients kept per frame (0 = off).
    #[arg(long)]
    pub lifter: Option<usize>,
    /// Output channels of each conv block, comma-separated (the seed's: 32,64); for
    /// `--arch tc-resnet` the first conv's width, then each residual block's (e.g. 16,24,32,48).
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub channels: Option<Vec<usize>>,
    /// The network: `cnn` (the seed's) or `tc-resnet` (1-D convs over time, residual).
    #[arg(long, value_enum)]
    pub arch: Option<Arch>,
    /// On-the-fly augmentation steps, comma-separated (speed, noise, babble, reverb,
    /// telephone, clip, vtlp), or `none`.
    #[arg(long, value_parser = parse_steps)]
    pub augment: Option<Steps>,
    /// Learn an eleventh class, "not a digit", from generated sounds and reversed or spliced
    /// training words (`true`/`false`).
    #[arg(long)]
    pub reject: Option<bool>,
    /// A folder of speech that is not a digit word (WAVs, e.g. from `negatives --words`),
    /// learned as "not a digit" and scored on its test speakers; repeatable; turns --reject on.
    #[arg(long, value_name = "DIR")]
    pub negatives: Vec<PathBuf>,
    /// A folder of digit recordings that only ever trains (another corpus, `synth`'s voices):
    /// its speakers join every split's training part, never its test or validation; repeatable.
    #[arg(long, value_name = "DIR")]
    pub train_data: Vec<PathBuf>,
}

/// A parsed `--augment` list.
#[derive(Clone, Debug)]
pub struct Steps(Vec<AugmentStep>);

fn parse_steps(s: &str) -> Result<Steps, String> {
    use clap::ValueEnum;
    let names = s.split(',').map(str::trim).filter(|n| !n.is_empty() && *n != "none");
    let steps = names.map(|n| {
        AugmentStep::from_str(n, true).map_err(|_| {
            format!("unknown step {n:?}; known: speed, noise, babble, reverb, telephone, clip, vtlp, none")
        })
    });
    Ok(Steps(steps.collect::<Result<_, _>>()?))
}

impl RecipeArgs {
    /// The recipe with the flags' overrides, checked.
    pub fn recipe(&self) -> Result<Recipe> {
        let size = |v: Option<u64>| v.map(|v| v as usize);
        let overrides = Overrides {
            epochs: size(self.epochs),
            batch_size: size(self.batch_size),
            patience: size(self.patience),
            ensemble: size(self.ensemble),
            framing: self.framing,
            top_db: self.top_db,
            n_fft: self.n_fft,
            n_mels: self.n_mels,
            word_trim: self.word_trim,
            lifter: self.lifter,
            channels: self.channels.clone(),
            arch: self.arch,
            augment: self.augment.as_ref().map(|s| s.0.clone()),
            reject: self.reject,
            negatives: (!self.negatives.is_empty()).then(|| self.negatives.clone()),
            train_data: (!self.train_data.is_empty()).then(|| self.train_data.clone()),
        };
        Ok(Recipe::new(self.recipe, self.seed, overrides)?)
    }
}

impl TrainArgs {
    pub fn options(&self, data: Vec<PathBuf>, cache_dir: PathBuf) -> Result<support::workflow::TrainOptions> {
        Ok(support::workflow::TrainOptions {
            data,
            out: self.out.clone(),
            cache_dir,
            split: self.split.spec(self.recipe.seed)?,
            recipe: self.recipe.recipe()?,
        })
    }
}
