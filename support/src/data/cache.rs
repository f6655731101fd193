//! The feature file and the automatic feature cache.
//!
//! File format (safetensors, read by numpy/PyTorch as well):
//! - tensor `features`: f32, `N x n_mels x n_frames`, log-Mel dB before any normalisation;
//! - tensor `digits`: i64, `N`;
//! - metadata `files`: JSON array of the paths relative to the data folder, in row order;
//!   `speakers`: JSON array, same order; `config`: the [`FeatureConfig`] as JSON;
//!   `feature_version`, `version` (this crate), `fingerprint`, `skipped` (JSON list).
//!
//! The cache names its files after a fingerprint of the file list (path, size, mtime) and the
//! configuration, so any change to either recomputes; writes go to a temporary file that is
//! renamed into place, so an interrupted run never leaves a file that later loads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use anyhow::{anyhow, bail, ensure, Context, Result};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use sha2::{Digest, Sha256};

use crate::data::dataset::{Dataset, Skipped};
use crate::data::extract::{extract_dataset, Progress};
use crate::dsp::features::{FeatureConfig, FeatureExtractor, FEATURE_VERSION};

/// Format tag written into every feature file.
pub const FORMAT: &str = "audio-mnist-features";

/// Extracted features with their labels and provenance.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureSet {
    /// `len() x n_mels x n_frames`, row-major.
    pub features: Vec<f32>,
    pub n_mels: usize,
    pub n_frames: usize,
    pub digits: Vec<i64>,
    /// Paths relative to the data folder, one per row.
    pub files: Vec<String>,
    pub speakers: Vec<String>,
    pub config: FeatureConfig,
    /// Recordings that could not be used, with reasons.
    pub skipped: Vec<Skipped>,
    /// Fingerprint of the inputs this set was computed from (empty when unknown).
    pub fingerprint: String,
}

/// Whether [`load_or_extract`] found the features in the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    Hit(PathBuf),
    Miss(PathBuf),
}

impl FeatureSet {
    pub fn len(&self) -> usize {
        self.digits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digits.is_empty()
    }

    /// The `n_mels x n_frames` image of row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        let len = self.n_mels * self.n_frames;
        &self.features[i * len..(i + 1) * len]
    }

    /// Build from a dataset extraction.
    pub fn from_extraction(
        dataset: &Dataset,
        config: &FeatureConfig,
        fx: crate::data::extract::Extracted,
        fingerprint: String,
    ) -> Self {
        let recs: Vec<_> = fx.kept.iter().map(|&i| &dataset.recordings[i]).collect();
        let mut skipped = dataset.skipped.clone();
        skipped.extend(fx.skipped);
        Self {
            features: fx.features,
            n_mels: config.n_mels,
            n_frames: config.n_frames(),
            digits: recs.iter().map(|r| r.digit as i64).collect(),
            files: recs.iter().map(|r| r.path.to_string_lossy().replace('\\', "/")).collect(),
            speakers: recs.iter().map(|r| r.speaker.clone()).collect(),
            config: config.clone(),
            skipped,
            fingerprint,
        }
    }

    /// The rows of several sets (same features config), one after the other, each set's
    /// files and speakers prefixed with its folder's name: the features of a union of folders.
    pub fn concat(parts: Vec<(String, FeatureSet)>) -> Result<FeatureSet> {
        let first = parts.first().map(|p| &p.1).ok_or_else(|| anyhow!("no feature sets to join"))?;
        let mut out = FeatureSet {
            features: Vec::new(),
            n_mels: first.n_mels,
            n_frames: first.n_frames,
            digits: Vec::new(),
            files: Vec::new(),
            speakers: Vec::new(),
            config: first.config.clone(),
            skipped: Vec::new(),
            fingerprint: String::new(),
        };
        let mut h = Sha256::new();
        for (i, (name, set)) in parts.into_iter().enumerate() {
            ensure!(set.config == out.config, "the folders' features were computed differently");
            let prefixed = |v: Vec<String>| v.into_iter().map(|s| format!("{name}/{s}")).collect::<Vec<_>>();
            out.features.extend(set.features);
            out.digits.extend(set.digits);
            out.files.extend(prefixed(set.files));
            out.speakers.extend(prefixed(set.speakers));
            out.skipped
                .extend(set.skipped.into_iter().map(|s| Skipped { file: format!("{name}/{}", s.file), ..s }));
            h.update(if i == 0 { set.fingerprint } else { format!("+{}", set.fingerprint) });
        }
        out.fingerprint = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok(out)
    }

    /// Write the safetensors file atomically (temporary file in the same folder, then rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let n = self.len();
        let feature_bytes: &[u8] = bytemuck::cast_slice(&self.features);
        let digit_bytes: &[u8] = bytemuck::cast_slice(&self.digits);
        let tensors = vec![
            ("features", TensorView::new(Dtype::F32, vec![n, self.n_mels, self.n_frames], feature_bytes)?),
            ("digits", TensorView::new(Dtype::I64, vec![n], digit_bytes)?),
        ];
        let meta = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("files".to_string(), serde_json::to_string(&self.files)?),
            ("speakers".to_string(), serde_json::to_string(&self.speakers)?),
            ("config".to_string(), serde_json::to_string(&self.config)?),
            ("feature_version".to_string(), FEATURE_VERSION.to_string()),
            ("version".to_string(), crate::VERSION.to_string()),
            ("fingerprint".to_string(), self.fingerprint.clone()),
            ("skipped".to_string(), serde_json::to_string(&self.skipped)?),
        ]);
        write_safetensors(path, tensors, meta)?;
        Ok(())
    }

    /// Read a feature file written by [`FeatureSet::save`], checking it thoroughly.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("reading feature file {}", path.display()))?;
        Self::from_bytes(&bytes).with_context(|| format!("feature file {}", path.display()))
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let (st, meta) = read_safetensors(bytes, FORMAT, "feature file")?;
        let get = |k: &str| meta.get(k).ok_or_else(|| anyhow!("metadata lacks `{k}`"));
        let version: u32 = get("feature_version")?.parse().context("bad `feature_version`")?;
        ensure!(
            version == FEATURE_VERSION,
            "made by feature version {version}, this build uses {FEATURE_VERSION}"
        );
        let config: FeatureConfig = serde_json::from_str(get("config")?).context("bad `config`")?;
        let files: Vec<String> = serde_json::from_str(get("files")?).context("bad `files`")?;
        let speakers: Vec<String> = serde_json::from_str(get("speakers")?).context("bad `speakers`")?;
        let skipped: Vec<Skipped> = serde_json::from_str(get("skipped")?).context("bad `skipped`")?;
        let f = st.tensor("features").map_err(|_| anyhow!("no `features` tensor"))?;
        let d = st.tensor("digits").map_err(|_| anyhow!("no `digits` tensor"))?;
        ensure!(f.dtype() == Dtype::F32 && d.dtype() == Dtype::I64, "unexpected tensor dtypes");
        let n = files.len();
        ensure!(
            f.shape() == [n, config.n_mels, config.n_frames()] && d.shape() == [n] && speakers.len() == n,
            "tensor shapes {:?}/{:?} do not match {} files of {}x{}",
            f.shape(),
            d.shape(),
            n,
            config.n_mels,
            config.n_frames()
        );
        let features = f32_values(&f);
        let digits: Vec<i64> =
            d.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8]))).collect();
        if let Some(bad) = digits.iter().find(|d| !(0..=9).contains(*d)) {
            bail!("digit label {bad} is out of range 0..=9");
        }
        Ok(Self {
            features,
            n_mels: config.n_mels,
            n_frames: config.n_frames(),
            digits,
            files,
            speakers,
            fingerprint: meta.get("fingerprint").cloned().unwrap_or_default(),
            config,
            skipped,
        })
    }
}

/// Write safetensors with metadata to a temporary file beside `path`, then rename it into
/// place: a killed run never leaves a half-written file under the final name. The header's
/// keys are sorted, so that the same content always gives the same bytes.
pub(crate) fn write_safetensors<'a>(
    path: &Path,
    tensors: Vec<(&'a str, TensorView<'a>)>,
    meta: HashMap<String, String>,
) -> Result<()> {
    super::write_atomically(path, |tmp| {
        safetensors::serialize_to_file(tensors, Some(meta), tmp.path())?;
        sort_header(tmp.path())
    })
}

/// Rewrite a safetensors file's JSON header in place with its keys sorted (safetensors writes
/// its metadata from a `HashMap`, in an order that changes from run to run). The compact JSON
/// of the same keys and values has the same length in any order, so the data stays put.
fn sort_header(path: &Path) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)?;
    let mut header = vec![0u8; u64::from_le_bytes(len) as usize];
    f.read_exact(&mut header)?;
    // serde_json's map is a BTreeMap (no `preserve_order`): parsing sorts the keys.
    let sorted = serde_json::to_vec(&serde_json::from_slice::<serde_json::Value>(&header)?)?;
    ensure!(sorted.len() <= header.len(), "safetensors header grew when sorted");
    header[..sorted.len()].copy_from_slice(&sorted);
    header[sorted.len()..].fill(b' ');
    f.seek(SeekFrom::Start(8))?;
    f.write_all(&header)?;
    Ok(())
}

/// Parse safetensors bytes and check that the metadata's `format` is `format`.
pub(crate) fn read_safetensors<'a>(
    bytes: &'a [u8],
    format: &str,
    what: &str,
) -> Result<(SafeTensors<'a>, HashMap<String, String>)> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| anyhow!("not a safetensors file ({e})"))?;
    let (_, header) = SafeTensors::read_metadata(bytes)?;
    let meta = header.metadata().clone().unwrap_or_default();
    match meta.get("format") {
        Some(f) if f == format => Ok((st, meta)),
        Some(f) => bail!("not an audio-mnist {what} (format {f:?})"),
        None => bail!("metadata lacks `format` (not an audio-mnist {what}?)"),
    }
}

/// The values of an F32 tensor (the data may be unaligned, so decode rather than cast).
pub(crate) fn f32_values(view: &TensorView) -> Vec<f32> {
    view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// Fingerprint of the inputs: the feature config and version, and every recording's relative
/// path, size and modification time. Any change to one of them changes the fingerprint.
pub fn fingerprint(dataset: &Dataset, config: &FeatureConfig) -> Result<String> {
    let mut h = Sha256::new();
    h.update(format!("{FORMAT}\n{FEATURE_VERSION}\n{}\n", serde_json::to_string(config)?));
    for r in &dataset.recordings {
        let path = dataset.absolute(r);
        let md = std::fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?;
        let mtime =
            md.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
        h.update(format!("{}\t{}\t{}\n", r.path.display(), md.len(), mtime));
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Where the cache keeps the features for this fingerprint.
pub fn cache_path(cache_dir: &Path, fingerprint: &str) -> PathBuf {
    cache_dir.join(format!("features-{}.safetensors", &fingerprint[..16.min(fingerprint.len())]))
}

/// The features of `dataset`, from the cache when it has them for exactly these files and
/// this configuration, else extracted (in parallel) and stored in the cache.
pub fn load_or_extract(
    dataset: &Dataset,
    fx: &FeatureExtractor,
    cache_dir: &Path,
    progress: Progress,
) -> Result<(FeatureSet, CacheStatus)> {
    let fp = fingerprint(dataset, fx.config())?;
    let path = cache_path(cache_dir, &fp);
    if path.exists() {
        match FeatureSet::load(&path) {
            Ok(set) if set.fingerprint == fp => return Ok((set, CacheStatus::Hit(path))),
            // A stale or damaged entry is recomputed and replaced, not trusted.
            _ => {}
        }
    }
    let extracted = extract_dataset(fx, dataset, progress);
    let set = FeatureSet::from_extraction(dataset, fx.config(), extracted, fp);
    if set.is_empty() {
        bail!(
            "none of the {} recordings under {} could be read",
            dataset.recordings.len(),
            dataset.describe()
        );
    }
    set.save(&path)?;
    Ok((set, CacheStatus::Miss(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same tensors and metadata give the same bytes, whatever order the maps iterate in,
    /// and the file reads back.
    #[test]
    fn written_bytes_do_not_depend_on_map_order() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..24u8).collect();
        let write = |name: &str, reversed: bool| {
            let mut keys: Vec<String> = (0..40).map(|i| format!("key{i:02}")).collect();
            if reversed {
                keys.reverse();
            }
            let mut meta = HashMap::new();
            for k in keys {
                meta.insert(k.clone(), format!("value of {k}"));
            }
            meta.insert("format".into(), "test".into());
            let views = vec![
                ("b", TensorView::new(safetensors::Dtype::F32, vec![2, 1], &data[..8]).unwrap()),
                ("a", TensorView::new(safetensors::Dtype::F32, vec![4], &data[8..]).unwrap()),
            ];
            let path = dir.path().join(name);
            write_safetensors(&path, views, meta).unwrap();
            std::fs::read(path).unwrap()
        };
        let (one, two) = (write("one", false), write("two", true));
        assert_eq!(one, two);
        let (st, meta) = read_safetensors(&one, "test", "test file").unwrap();
        assert_eq!(meta.len(), 41);
        assert_eq!(st.tensor("a").unwrap().data(), &data[8..]);
        let header = String::from_utf8_lossy(&one[8..200]).to_string();
        assert!(header.starts_with("{\"__metadata__\":{\"format\":\"test\",\"key00\""), "{header}");
    }
}
