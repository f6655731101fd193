//! Speech that is not a digit word, from folders of WAV files (`--negatives DIR`): words
//! synthesised by `audio-mnist negatives --words`, or real recordings such as another
//! language's speakers. Split by speaker with a stable hash of the name (a fifth of the
//! speakers for tests, a fifth for validation, the rest for training), so the words a model is
//! scored on come from voices it never heard.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{ensure, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;

use super::negatives::{Negatives, Part};
use crate::dsp::features::FeatureExtractor;
use crate::dsp::negatives::NegativeKind;

/// The part a speaker's recordings belong to: FNV-1a of the name, modulo 5.
pub fn speaker_part(speaker: &str) -> Part {
    let hash =
        speaker.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    match hash % 5 {
        0 => Part::Test,
        1 => Part::Val,
        _ => Part::Train,
    }
}

/// Who speaks `file` (under `root`): the middle field of `{word}_{speaker}_{take}.wav`, else
/// the first folder under `root`, else the file's name.
pub fn speaker_of(file: &Path, root: &Path) -> String {
    let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let fields: Vec<&str> = stem.split('_').collect();
    if fields.len() == 3 {
        return fields[1].to_string();
    }
    let rel = file.strip_prefix(root).unwrap_or(file);
    match rel.components().count() {
        0 | 1 => stem,
        _ => rel.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned()).unwrap_or(stem),
    }
}

/// Every recording of the folders, as feature rows, with its speaker's part.
pub struct OtherSpeech {
    pub files: Vec<PathBuf>,
    pub parts: Vec<Part>,
    /// Unstandardised log-Mel rows, one per file.
    pub features: Vec<Vec<f32>>,
}

impl OtherSpeech {
    /// Extract the features of every WAV under `dirs` (each folder read once per process and
    /// feature configuration). A file that cannot be read is an error naming it.
    pub fn load(dirs: &[PathBuf], fx: &FeatureExtractor) -> Result<Arc<Self>> {
        static MEMO: OnceLock<Mutex<HashMap<String, Arc<OtherSpeech>>>> = OnceLock::new();
        let key = format!("{dirs:?} {:?}", fx.config());
        let memo = MEMO.get_or_init(Default::default);
        if let Some(found) = memo.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(found);
        }
        let (mut files, mut parts) = (Vec::new(), Vec::new());
        for dir in dirs {
            let (found, problems) = crate::infer::collect_inputs(std::slice::from_ref(dir))?;
            ensure!(problems.is_empty(), "reading {}: {:?}", dir.display(), problems);
            parts.extend(found.iter().map(|f| speaker_part(&speaker_of(f, dir))));
            files.extend(found);
        }
        let max_s = fx.config().max_duration_s;
        let features = files
            .par_iter()
            .map(|f| {
                let audio = crate::dsp::audio::load_wav(f, max_s)?;
                Ok(fx
                    .extract_samples(&audio.samples, audio.sample_rate)
                    .map_err(|k| crate::dsp::audio::AudioError::new(f, k))?)
            })
            .collect::<Result<Vec<_>>>()?;
        let loaded = Arc::new(Self { files, parts, features });
        if let Ok(mut m) = memo.lock() {
            m.insert(key, loaded.clone());
        }
        Ok(loaded)
    }

    /// The rows of `part` as "words" negatives; at most `max` of them, drawn with `seed`.
    pub fn negatives(&self, part: Part, max: usize, seed: u64) -> Negatives {
        let mut rows: Vec<usize> = (0..self.files.len()).filter(|&i| self.parts[i] == part).collect();
        if rows.len() > max {
            rows.shuffle(&mut StdRng::seed_from_u64(seed ^ 0x0713_5EEC));
            rows.truncate(max);
            rows.sort_unstable();
        }
        Negatives {
            features: rows.iter().flat_map(|&i| self.features[i].iter().copied()).collect(),
            kinds: vec![NegativeKind::Words; rows.len()],
            files: rows.iter().map(|&i| Some(self.files[i].clone())).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speakers_come_from_names_or_folders_and_split_in_fifths() {
        let root = Path::new("neg");
        assert_eq!(speaker_of(Path::new("neg/hello_en-us+m3_0.wav"), root), "en-us+m3");
        assert_eq!(speaker_of(Path::new("neg/anna/take1.wav"), root), "anna");
        assert_eq!(speaker_of(Path::new("neg/cough.wav"), root), "cough");
        let names: Vec<String> = (0..1000).map(|i| format!("speaker{i}")).collect();
        let count = |p: Part| names.iter().filter(|n| speaker_part(n) == p).count();
        for (p, share) in [(Part::Test, 200), (Part::Val, 200), (Part::Train, 600)] {
            assert!(count(p).abs_diff(share) < 60, "{p:?}: {} of 1000", count(p));
        }
        assert_eq!(speaker_part("r1s1"), speaker_part("r1s1"), "stable");
    }
}
