//! Finding the recordings of a spoken-digit dataset and their metadata.
//!
//! Accepted layouts (detected, never configured):
//! - AudioMNIST: `ROOT/NN/{digit}_{NN}_{take}.wav` plus `ROOT/audioMNIST_meta.txt`;
//! - the Kaggle unzip of it, one or more folders deeper (`ROOT/data/NN/...`, `ROOT/data/data/NN/...`);
//! - FSDD: `ROOT/recordings/{digit}_{name}_{take}.wav`, or a flat folder of such files.
//!
//! Files that do not follow the naming are listed in [`Dataset::skipped`], never fatal.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::data::table::Table;
use crate::error::Error;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dsp::audio;

/// Name of AudioMNIST's speaker metadata file.
pub const AUDIOMNIST_META: &str = "audioMNIST_meta.txt";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    /// `NN/{digit}_{NN}_{take}.wav` speaker folders.
    AudioMnist,
    /// `{digit}_{name}_{take}.wav` in one folder (Free Spoken Digit Dataset).
    Fsdd,
}

/// One dataset folder of a [`Dataset`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Short name: the folder's name (its parent's for `recordings`/`data`), unique in a union.
    pub name: String,
    pub root: PathBuf,
    pub layout: Layout,
    /// Its speakers only ever train (a recipe's `--train-data`): never tested or validated.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub train_only: bool,
}

/// One usable recording.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recording {
    /// Path relative to its folder's root; in a union of several folders, prefixed with the
    /// folder's name (`fsdd/recordings/0_george_0.wav`), so every path is unique.
    pub path: PathBuf,
    pub digit: u8,
    /// Speaker id; in a union prefixed with the folder's name (`fsdd/george`): two corpora's
    /// `george` are two people.
    pub speaker: String,
    pub take: u32,
    /// Index of its folder in [`Dataset::sources`].
    #[serde(default)]
    pub source: usize,
}

/// A file that was passed over, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub file: String,
    pub reason: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.reason)
    }
}

/// What `audioMNIST_meta.txt` says about a speaker.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SpeakerMeta {
    pub gender: Option<String>,
    pub age: Option<i64>,
    pub accent: Option<String>,
    pub native_speaker: Option<String>,
    pub origin: Option<String>,
    pub recording_room: Option<String>,
    pub recording_date: Option<String>,
}

/// The result of [`scan`].
#[derive(Clone, Debug)]
pub struct Dataset {
    /// The folders scanned: one, or several for a union ([`super::union::scan_all`]).
    pub sources: Vec<Source>,
    /// Sorted by path, so row order is stable across runs and machines.
    pub recordings: Vec<Recording>,
    pub skipped: Vec<Skipped>,
    /// Speaker metadata, keyed by speaker id ("01"..., prefixed in a union), empty when the
    /// dataset has none.
    pub speakers: BTreeMap<String, SpeakerMeta>,
    /// Oddities worth telling the user (implausible metadata values, ...).
    pub warnings: Vec<String>,
}

/// `{digit}_{speaker}_{take}.wav` -> (digit, speaker, take).
pub fn parse_name(file_name: &str) -> Option<(u8, String, u32)> {
    let stem = file_name.strip_suffix(".wav").or_else(|| file_name.strip_suffix(".WAV"))?;
    let mut parts = stem.split('_');
    let (d, s, t) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || d.len() != 1 || s.is_empty() {
        return None;
    }
    if !s.chars().all(|c| c.is_ascii_alphanumeric()) || t.is_empty() || !t.chars().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let digit = d.parse::<u8>().ok()?;
    Some((digit, s.to_string(), t.parse().ok()?))
}

/// Find every recording under `root`.
pub fn scan(root: &Path) -> Result<Dataset, Error> {
    if !root.exists() {
        let why = "does not exist (pass --data DIR, or set AUDIO_MNIST_DATA)";
        return Err(Error::Data(format!("data folder {} {why}", root.display())));
    }
    if !root.is_dir() {
        return Err(Error::Data(format!("data path {} is not a folder", root.display())));
    }
    let found = walk(root);
    let (recordings, skipped) = (found.recordings, found.skipped);
    if recordings.is_empty() {
        let hint = skipped.first().map_or(String::new(), |s| format!("; e.g. {s}"));
        return Err(Error::Data(format!(
            "no recordings named {{digit}}_{{speaker}}_{{take}}.wav under {} ({} other files{hint})",
            root.display(),
            skipped.len()
        )));
    }
    // AudioMNIST keeps each speaker in a folder named after them; FSDD does not.
    let in_speaker_folders = recordings
        .iter()
        .filter(|r| {
            r.path.parent().and_then(|p| p.file_name()).is_some_and(|f| f.to_string_lossy() == r.speaker)
        })
        .count();
    let layout = if found.meta_file.is_some() || in_speaker_folders * 2 > recordings.len() {
        Layout::AudioMnist
    } else {
        Layout::Fsdd
    };
    let mut warnings = Vec::new();
    let speakers = match &found.meta_file {
        Some(p) => read_speaker_meta(p, &mut warnings)?,
        None => BTreeMap::new(),
    };
    let source =
        Source { name: super::union::source_name(root), root: root.to_path_buf(), layout, train_only: false };
    Ok(Dataset { sources: vec![source], recordings, skipped, speakers, warnings })
}

/// What a walk of the data folder found.
struct Found {
    recordings: Vec<Recording>,
    skipped: Vec<Skipped>,
    meta_file: Option<PathBuf>,
}

/// Every file under `root` (hidden ones aside), sorted: recordings by their names, the
/// metadata file, and what cannot be used with the reason (duplicates included).
fn walk(root: &Path) -> Found {
    let mut found = Found { recordings: Vec::new(), skipped: Vec::new(), meta_file: None };
    let mut seen: HashMap<(u8, String, u32), PathBuf> = HashMap::new();
    let walker = walkdir::WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for entry in walker {
        let entry = match entry {
            Ok(e) if e.file_type().is_file() => e,
            Ok(_) => continue,
            Err(e) => {
                let file = e.path().map_or_else(|| root.display().to_string(), |p| rel(root, p));
                found.skipped.push(Skipped { file, reason: format!("cannot read: {e}") });
                continue;
            }
        };
        let name = entry.file_name().to_string_lossy();
        let rel_path = entry.path().strip_prefix(root).unwrap_or(entry.path()).to_path_buf();
        if name == AUDIOMNIST_META {
            found.meta_file.get_or_insert_with(|| entry.path().to_path_buf());
            continue;
        }
        let file = rel_path.display().to_string();
        let reason = match parse_name(&name) {
            Some(key) => match seen.get(&key) {
                Some(first) => format!("same digit, speaker and take as {}", first.display()),
                None => {
                    seen.insert(key.clone(), rel_path.clone());
                    let (digit, speaker, take) = key;
                    found.recordings.push(Recording { path: rel_path, digit, speaker, take, source: 0 });
                    continue;
                }
            },
            None if name.to_ascii_lowercase().ends_with(".wav") => {
                "name does not follow {digit}_{speaker}_{take}.wav".into()
            }
            None => "not a .wav file".into(),
        };
        found.skipped.push(Skipped { file, reason });
    }
    found
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

/// Parse `audioMNIST_meta.txt`: a JSON object of speaker id -> fields, where numbers are
/// sometimes strings ("age": "25") and sometimes not ("age": 30).
pub fn read_speaker_meta(
    path: &Path,
    warnings: &mut Vec<String>,
) -> Result<BTreeMap<String, SpeakerMeta>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Data(format!("{} is not valid JSON: {e}", path.display())))?;
    let Some(obj) = json.as_object() else {
        return Err(Error::Data(format!("{}: expected a JSON object of speakers", path.display())));
    };
    let text_of = |v: Option<&serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => Some(s.trim().to_string()),
        Some(serde_json::Value::Null) | None => None,
        Some(other) => Some(other.to_string()),
    };
    let mut out = BTreeMap::new();
    for (id, fields) in obj {
        let age_raw = text_of(fields.get("age"));
        let age = age_raw.as_deref().and_then(|a| a.parse::<i64>().ok());
        let age = match age {
            Some(a) if (1..=120).contains(&a) => Some(a),
            _ => {
                if let Some(raw) = &age_raw {
                    warnings.push(format!("speaker {id}: age {raw:?} is not plausible; left empty"));
                }
                None
            }
        };
        out.insert(
            id.clone(),
            SpeakerMeta {
                gender: text_of(fields.get("gender")).map(|g| g.to_lowercase()),
                age,
                accent: text_of(fields.get("accent")),
                native_speaker: text_of(fields.get("native speaker")),
                origin: text_of(fields.get("origin")),
                recording_room: text_of(fields.get("recordingroom")),
                recording_date: text_of(fields.get("recordingdate")),
            },
        );
    }
    Ok(out)
}

impl Dataset {
    /// Distinct speakers, sorted.
    pub fn speaker_ids(&self) -> Vec<String> {
        self.speakers_where(|_| true)
    }

    /// The speakers a split may test or validate: those of folders that are not training-only.
    pub fn testable_speaker_ids(&self) -> Vec<String> {
        self.speakers_where(|train_only| !train_only)
    }

    /// Distinct speakers, sorted, of the recordings whose folder's `train_only` flag `keep`
    /// accepts.
    fn speakers_where(&self, keep: impl Fn(bool) -> bool) -> Vec<String> {
        let mut s: Vec<String> = self
            .recordings
            .iter()
            .filter(|r| keep(self.sources.get(r.source).is_some_and(|s| s.train_only)))
            .map(|r| r.speaker.clone())
            .collect();
        s.sort();
        s.dedup();
        s
    }

    /// Split the testable speakers by `spec`; the training-only folders' speakers all train.
    pub fn split(&self, spec: &crate::data::split::SplitSpec) -> Result<crate::data::split::Split, Error> {
        let testable = self.testable_speaker_ids();
        let mut split = crate::data::split::make_split(spec, &testable)?;
        split.train.extend(self.speakers_where(|train_only| train_only));
        split.train.sort();
        Ok(split)
    }

    /// Where the recording is on disk.
    pub fn absolute(&self, r: &Recording) -> PathBuf {
        self.path_of(&r.path.to_string_lossy())
    }

    /// Where the file of a path as recorded ([`Recording::path`], the feature set's `files`)
    /// is on disk.
    pub fn path_of(&self, file: &str) -> PathBuf {
        if self.sources.len() == 1 {
            return self.sources[0].root.join(file);
        }
        let (name, rest) = file.split_once('/').unwrap_or(("", file));
        let source = self.sources.iter().find(|s| s.name == name).unwrap_or(&self.sources[0]);
        source.root.join(rest)
    }

    /// The name of the folder a speaker id (as in [`Recording::speaker`]) belongs to.
    pub fn source_of_speaker(&self, speaker: &str) -> &str {
        let name = speaker.split_once('/').map(|(n, _)| n);
        let found = self.sources.iter().find(|s| Some(s.name.as_str()) == name && self.sources.len() > 1);
        &found.unwrap_or(&self.sources[0]).name
    }

    /// One line per folder: name, layout and where it is.
    pub fn describe(&self) -> String {
        let line = |s: &Source| format!("{} ({:?} layout, {})", s.name, s.layout, s.root.display());
        self.sources.iter().map(line).collect::<Vec<_>>().join(" + ")
    }

    /// The metadata table: one row per recording with its header facts (read in parallel)
    /// and, where the dataset has them, the speaker's metadata.
    pub fn metadata_table(&self) -> Table {
        let infos: Vec<Result<audio::WavInfo, String>> = self
            .recordings
            .par_iter()
            .map(|r| audio::wav_info(&self.absolute(r)).map_err(|e| e.kind.to_string()))
            .collect();
        let rec = &self.recordings;
        let info = |f: fn(&audio::WavInfo) -> i64| infos.iter().map(move |i| i.as_ref().ok().map(f));
        let mut table = Table::new()
            .text("dataset", rec.iter().map(|r| self.sources[r.source].name.clone()))
            .text("path", rec.iter().map(|r| r.path.display().to_string()))
            .int("digit", rec.iter().map(|r| r.digit as i64))
            .text("speaker", rec.iter().map(|r| r.speaker.clone()))
            .int("take", rec.iter().map(|r| r.take as i64))
            .int("sample_rate", info(|i| i.sample_rate as i64))
            .int("channels", info(|i| i.channels as i64))
            .float("duration_s", infos.iter().map(|i| i.as_ref().ok().map(|i| i.duration_s())))
            .text("header_error", infos.iter().map(|i| i.as_ref().err().cloned()));
        if !self.speakers.is_empty() {
            let meta: Vec<Option<&SpeakerMeta>> = rec.iter().map(|r| self.speakers.get(&r.speaker)).collect();
            let text = |f: fn(&SpeakerMeta) -> &Option<String>| -> Vec<Option<String>> {
                meta.iter().map(|m| m.and_then(|m| f(m).clone())).collect()
            };
            table = table
                .text("gender", text(|m| &m.gender))
                .int("age", meta.iter().map(|m| m.and_then(|m| m.age)))
                .text("accent", text(|m| &m.accent))
                .text("native_speaker", text(|m| &m.native_speaker))
                .text("origin", text(|m| &m.origin))
                .text("recording_room", text(|m| &m.recording_room))
                .text("recording_date", text(|m| &m.recording_date));
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert_eq!(parse_name("7_03_12.wav"), Some((7, "03".into(), 12)));
        assert_eq!(parse_name("0_george_49.wav"), Some((0, "george".into(), 49)));
        for bad in [
            "12_03_1.wav",
            "7_03.wav",
            "7_03_x.wav",
            "a_03_1.wav",
            "7__1.wav",
            "7_03_1_2.wav",
            "7_03_1.mp3",
            "7_a-b_1.wav",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }
}
