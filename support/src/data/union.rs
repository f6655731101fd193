//! Several dataset folders used as one (`--data A --data B`): each folder in any supported
//! layout, its speakers and paths prefixed with the folder's name so that two corpora's
//! `george` are two people, and splits drawn over the union's speakers. Features stay cached
//! per folder ([`Dataset::part`]), so adding a folder never re-extracts the others.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::data::dataset::{scan, Dataset, Skipped};
use crate::error::Error;

/// Scan one folder, or several as a union.
pub fn scan_all(roots: &[PathBuf]) -> Result<Dataset, Error> {
    match roots {
        [] => Err(Error::Data("no data folder given (pass --data DIR, or set AUDIO_MNIST_DATA)".into())),
        [root] => scan(root),
        _ => {
            let mut seen = BTreeSet::new();
            for root in roots {
                let key = root.canonicalize().unwrap_or_else(|_| root.clone());
                if !seen.insert(key) {
                    return Err(Error::Data(format!("data folder {} is given twice", root.display())));
                }
            }
            let parts = roots.iter().map(|r| scan(r)).collect::<Result<Vec<_>, _>>()?;
            Ok(Dataset::union(parts))
        }
    }
}

/// `roots` and, as training-only folders whose speakers never test or validate,
/// `train_only` (a recipe's `--train-data`). Without training-only folders, [`scan_all`].
pub fn scan_for_training(roots: &[PathBuf], train_only: &[PathBuf]) -> Result<Dataset, Error> {
    if train_only.is_empty() {
        return scan_all(roots);
    }
    if roots.is_empty() {
        return Err(Error::Data("no data folder given (pass --data DIR, or set AUDIO_MNIST_DATA)".into()));
    }
    let all: Vec<PathBuf> = roots.iter().chain(train_only).cloned().collect();
    let mut dataset = scan_all(&all)?;
    // scan_all keeps the order and gives one source per folder.
    for source in dataset.sources.iter_mut().skip(roots.len()) {
        source.train_only = true;
    }
    Ok(dataset)
}

/// A folder's short name: its own name, or its parent's when it is FSDD's inner
/// `recordings` folder (`fsdd/recordings` -> `fsdd`).
pub fn source_name(root: &Path) -> String {
    let full = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let name_of = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    let mut name = name_of(&full).unwrap_or_default();
    if name == "recordings" {
        if let Some(parent) = full.parent().and_then(name_of) {
            name = parent;
        }
    }
    let clean: String =
        name.chars().map(|c| if c.is_alphanumeric() || "-_.".contains(c) { c } else { '-' }).collect();
    if clean.is_empty() {
        "data".into()
    } else {
        clean
    }
}

fn prefixed(name: &str, s: &str) -> String {
    format!("{name}/{s}")
}

impl Dataset {
    /// The union of single-folder datasets, in the given order: paths, speaker ids, skipped
    /// files and warnings prefixed with the folder's name (made unique with `-2`, `-3`...).
    pub fn union(parts: Vec<Dataset>) -> Dataset {
        let mut out = Dataset {
            sources: Vec::new(),
            recordings: Vec::new(),
            skipped: Vec::new(),
            speakers: Default::default(),
            warnings: Vec::new(),
        };
        for part in parts {
            for source in part.sources {
                let index = out.sources.len();
                let mut name = source.name.clone();
                let mut k = 1;
                while out.sources.iter().any(|s| s.name == name) {
                    k += 1;
                    name = format!("{}-{k}", source.name);
                }
                let n = name.as_str();
                out.recordings.extend(part.recordings.iter().map(|r| {
                    let mut r = r.clone();
                    r.path = PathBuf::from(prefixed(n, &r.path.to_string_lossy()));
                    r.speaker = prefixed(n, &r.speaker);
                    r.source = index;
                    r
                }));
                out.skipped.extend(
                    part.skipped
                        .iter()
                        .map(|s| Skipped { file: prefixed(n, &s.file), reason: s.reason.clone() }),
                );
                out.speakers.extend(part.speakers.iter().map(|(id, m)| (prefixed(n, id), m.clone())));
                out.warnings.extend(part.warnings.iter().map(|w| format!("{n}: {w}")));
                out.sources.push(super::dataset::Source { name, ..source });
            }
        }
        out
    }

    /// Folder `i` alone, as [`scan`] found it (prefixes removed): the unit of the feature cache.
    pub fn part(&self, i: usize) -> Dataset {
        if self.sources.len() == 1 {
            return self.clone();
        }
        let source = self.sources[i].clone();
        let strip = |s: &str| s.strip_prefix(&format!("{}/", source.name)).map(str::to_string);
        let recordings = self
            .recordings
            .iter()
            .filter(|r| r.source == i)
            .map(|r| {
                let mut r = r.clone();
                r.path = PathBuf::from(strip(&r.path.to_string_lossy()).unwrap_or_default());
                r.speaker = strip(&r.speaker).unwrap_or_default();
                r.source = 0;
                r
            })
            .collect();
        let skipped = self
            .skipped
            .iter()
            .filter_map(|s| Some(Skipped { file: strip(&s.file)?, reason: s.reason.clone() }))
            .collect();
        let speakers = self.speakers.iter().filter_map(|(id, m)| Some((strip(id)?, m.clone()))).collect();
        Dataset { sources: vec![source], recordings, skipped, speakers, warnings: Vec::new() }
    }
}
