//! `audio-mnist download`: AudioMNIST or the Free Spoken Digit Dataset from their authors'
//! public repository archives, or the ten digit words of Speech Commands v0.02 from its
//! public tarball (renamed `recordings/{digit}_{speaker}_{n}.wav`), no account.
//!
//! The archive is fetched to `DEST/.download/archive.zip.part` (resumed with an HTTP range
//! request when a previous attempt was cut off), renamed to `archive.zip` when complete, checked
//! entry by entry (no absolute paths, no `..`, no links: nothing may land outside `DEST`),
//! extracted to `DEST/.download/extract/`, moved into place and only then marked complete with
//! `DEST/.audio-mnist-download.json`. A run that stops anywhere leaves no marker, so the next
//! run resumes or redoes the unfinished step instead of trusting a half-extracted folder.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The dataset authors' repository archive (Becker et al., github.com/soerenab/AudioMNIST).
pub const AUDIOMNIST_URL: &str = "https://github.com/soerenab/AudioMNIST/archive/refs/heads/master.zip";
/// The Free Spoken Digit Dataset's repository archive (Jakobovski et al., CC BY-SA 4.0).
pub const FSDD_URL: &str =
    "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/heads/master.zip";
/// Speech Commands v0.02 (Warden 2018, CC BY 4.0), 2.3 GB, of which the digit words are kept.
pub const SPEECH_COMMANDS_URL: &str = "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz";

/// The corpora `download` knows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Corpus {
    /// 60 speakers x 500 recordings, 48 kHz, `NN/{digit}_{NN}_{take}.wav`.
    #[default]
    Audiomnist,
    /// 6 speakers x 500 recordings, 8 kHz, `recordings/{digit}_{name}_{take}.wav`.
    Fsdd,
    /// The words "zero".."nine" of Speech Commands v0.02: 38,908 one-second clips of 2,618
    /// speakers, 16 kHz, as `recordings/{digit}_{speaker}_{n}.wav`.
    SpeechCommands,
}

impl Corpus {
    pub fn url(self) -> &'static str {
        match self {
            Self::Audiomnist => AUDIOMNIST_URL,
            Self::Fsdd => FSDD_URL,
            Self::SpeechCommands => SPEECH_COMMANDS_URL,
        }
    }

    /// Expected speakers and recordings of a complete download.
    fn expected(self) -> (usize, usize) {
        match self {
            Self::Audiomnist => (EXPECTED_SPEAKERS, EXPECTED_WAVS),
            Self::Fsdd => (6, 3_000),
            Self::SpeechCommands => (2_618, 38_908),
        }
    }

    fn archive_name(self) -> &'static str {
        match self {
            Self::SpeechCommands => "archive.tar.gz",
            _ => "archive.zip",
        }
    }
}
/// The metadata file that sits beside the speaker folders.
pub const META_FILE: &str = "audioMNIST_meta.txt";
/// Written last: its presence means the folder is complete.
pub const MARKER: &str = ".audio-mnist-download.json";
const STAGING: &str = ".download";

/// What AudioMNIST should look like once extracted.
pub const EXPECTED_SPEAKERS: usize = 60;
pub const EXPECTED_WAVS: usize = 30_000;

/// The shape of an extracted dataset and how it differs from AudioMNIST's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    #[serde(default)]
    pub corpus: Corpus,
    pub url: String,
    /// Speaker folders (AudioMNIST) or distinct speakers (the flat `recordings/` layouts).
    pub speaker_folders: usize,
    pub wavs: usize,
    pub metadata: bool,
    /// Human-readable differences from the expected 60 folders / 30,000 WAVs / metadata.
    pub differences: Vec<String>,
}

/// Called with (bytes so far, total when known).
pub type Progress<'a> = &'a dyn Fn(u64, Option<u64>);

/// What happened.
#[derive(Debug)]
pub enum Outcome {
    /// `DEST` was already complete (marker present): nothing fetched.
    AlreadyComplete(Report),
    Downloaded(Report),
}

/// The marker of a completed download in `dest`, if any.
pub fn completed(dest: &Path) -> Option<Report> {
    let text = fs::read_to_string(dest.join(MARKER)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Whether `dest` holds an unfinished download (staging folder without the marker).
pub fn unfinished(dest: &Path) -> bool {
    dest.join(STAGING).exists() && completed(dest).is_none()
}

/// Download `url` (a zip of AudioMNIST) into `dest`; see the module docs.
pub fn download(url: &str, dest: &Path, progress: Progress) -> Result<Outcome> {
    download_corpus(Corpus::Audiomnist, url, dest, progress)
}

/// Download `corpus` from `url` (its archive, or a copy of it) into `dest`.
pub fn download_corpus(corpus: Corpus, url: &str, dest: &Path, progress: Progress) -> Result<Outcome> {
    if let Some(report) = completed(dest) {
        if report.corpus != corpus {
            bail!("{} already holds a download of {:?}; give another --dest", dest.display(), report.corpus);
        }
        return Ok(Outcome::AlreadyComplete(report));
    }
    let staging = dest.join(STAGING);
    fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let archive = staging.join(corpus.archive_name());
    if !archive.exists() {
        let part = staging.join(format!("{}.part", corpus.archive_name()));
        fetch(url, &part, progress)?;
        fs::rename(&part, &archive).with_context(|| format!("renaming {}", part.display()))?;
    }
    let extract = staging.join("extract");
    if extract.exists() {
        fs::remove_dir_all(&extract).with_context(|| format!("clearing {}", extract.display()))?;
    }
    let unpacked = match corpus {
        Corpus::SpeechCommands => unpack_speech_commands(&archive, &extract),
        _ => unpack(&archive, &extract, corpus),
    };
    if let Err(e) = unpacked {
        // A damaged archive is not worth resuming: the next run fetches a fresh one.
        let _ = fs::remove_file(&archive);
        let _ = fs::remove_dir_all(&extract);
        return Err(e);
    }
    // Move the speaker folders and the metadata into place, replacing leftovers of an
    // interrupted earlier move.
    for entry in fs::read_dir(&extract).with_context(|| format!("reading {}", extract.display()))? {
        let entry = entry?;
        let target = dest.join(entry.file_name());
        if target.is_dir() {
            fs::remove_dir_all(&target).with_context(|| format!("replacing {}", target.display()))?;
        } else if target.exists() {
            fs::remove_file(&target).with_context(|| format!("replacing {}", target.display()))?;
        }
        fs::rename(entry.path(), &target).with_context(|| format!("moving into {}", target.display()))?;
    }
    let report = inspect_corpus(corpus, dest, url)?;
    let text = serde_json::to_string_pretty(&report)? + "\n";
    fs::write(dest.join(MARKER), text).with_context(|| format!("writing {}", dest.join(MARKER).display()))?;
    let _ = fs::remove_dir_all(&staging);
    Ok(Outcome::Downloaded(report))
}

/// GET `url` into `part`, continuing from its current length with a range request when the
/// server allows (else from the start). Fails, keeping `part` for the next attempt, when the
/// connection ends before the announced length.
fn fetch(url: &str, part: &Path, progress: Progress) -> Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .build()
        .into();
    let have = fs::metadata(part).map_or(0, |m| m.len());
    let mut request = agent.get(url);
    if have > 0 {
        request = request.header("Range", format!("bytes={have}-"));
    }
    let response = request.call().map_err(|e| match e {
        ureq::Error::StatusCode(code) => anyhow!("downloading {url}: the server answered HTTP {code}"),
        e => anyhow!(
            "downloading {url}: {e}. No network? Give --url another copy of the archive, or point \
             --data at a dataset already on disk (FSDD or an unpacked AudioMNIST work offline)"
        ),
    })?;
    let resumed = response.status().as_u16() == 206;
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let length = header("content-length").and_then(|v| v.parse::<u64>().ok());
    let start = if resumed { have } else { 0 };
    let total = match (resumed, header("content-range")) {
        // "bytes 100-199/200"
        (true, Some(range)) => range.rsplit('/').next().and_then(|t| t.parse().ok()),
        _ => length.map(|l| l + start),
    };
    let mut file = if resumed { fs::OpenOptions::new().append(true).open(part) } else { File::create(part) }
        .with_context(|| format!("opening {}", part.display()))?;
    let mut body = response.into_body().into_reader();
    let mut done = start;
    let mut buf = vec![0u8; 1 << 16];
    progress(done, total);
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                file.flush().ok();
                bail!(
                    "the download of {url} broke off after {done} bytes{}: {e}. Run the command again to resume",
                    total.map_or(String::new(), |t| format!(" of {t}"))
                );
            }
        };
        file.write_all(&buf[..n]).with_context(|| format!("writing {}", part.display()))?;
        done += n as u64;
        progress(done, total);
    }
    file.sync_all().with_context(|| format!("writing {}", part.display()))?;
    if let Some(t) = total {
        if done != t {
            bail!("the download of {url} ended after {done} of {t} bytes. Run the command again to resume");
        }
    }
    Ok(())
}

/// The folder inside the archive that holds the speaker folders: where `audioMNIST_meta.txt`
/// is, else two levels above the first recording (`ROOT/NN/d_NN_t.wav`).
fn data_root(names: &[PathBuf]) -> Option<PathBuf> {
    if let Some(meta) = names.iter().find(|n| n.file_name().is_some_and(|f| f == META_FILE)) {
        return Some(meta.parent().map(Path::to_path_buf).unwrap_or_default());
    }
    names
        .iter()
        .find(|n| {
            n.extension().is_some_and(|e| e.eq_ignore_ascii_case("wav"))
                && n.file_name()
                    .and_then(|f| f.to_str())
                    .is_some_and(|f| crate::data::dataset::parse_name(f).is_some())
        })
        .and_then(|wav| wav.parent()?.parent().map(Path::to_path_buf))
}

/// Where each checked zip entry goes under the extraction folder (`None`: not kept).
fn zip_targets(names: &[PathBuf], corpus: Corpus, archive: &Path) -> Result<Vec<Option<PathBuf>>> {
    let is_recording = |n: &Path| {
        n.extension().is_some_and(|e| e.eq_ignore_ascii_case("wav"))
            && n.file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| crate::data::dataset::parse_name(f).is_some())
    };
    let targets: Vec<Option<PathBuf>> = match corpus {
        Corpus::Fsdd => names
            .iter()
            .map(|n| {
                let in_recordings = n.parent().and_then(Path::file_name).is_some_and(|d| d == "recordings");
                (in_recordings && is_recording(n))
                    .then(|| Path::new("recordings").join(n.file_name().unwrap_or_default()))
            })
            .collect(),
        _ => {
            let root = data_root(names).ok_or_else(|| {
                anyhow!(
                    "{} holds no AudioMNIST recordings ({{digit}}_{{speaker}}_{{take}}.wav)",
                    archive.display()
                )
            })?;
            let rel = |n: &PathBuf| {
                n.strip_prefix(&root).ok().filter(|r| !r.as_os_str().is_empty()).map(Path::to_path_buf)
            };
            names.iter().map(rel).collect()
        }
    };
    if targets.iter().all(Option::is_none) {
        bail!("{} holds no {corpus:?} recordings ({{digit}}_{{speaker}}_{{take}}.wav)", archive.display());
    }
    Ok(targets)
}

/// Check every entry of the zip at `archive`, then extract the dataset part of it into `out`.
fn unpack(archive: &Path, out: &Path, corpus: Corpus) -> Result<()> {
    let file = File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let mut zip = zip::ZipArchive::new(io::BufReader::new(file)).map_err(|e| {
        anyhow!(
            "{} is not a complete zip archive ({e}); it was deleted, run the command again",
            archive.display()
        )
    })?;
    // Refuse the whole archive before writing anything if one entry could escape `out`.
    let mut names = Vec::with_capacity(zip.len());
    for i in 0..zip.len() {
        let entry =
            zip.by_index_raw(i).with_context(|| format!("reading entry {i} of {}", archive.display()))?;
        let raw = String::from_utf8_lossy(entry.name_raw()).to_string();
        // The raw name is checked too: the zip crate's view of it is normalised.
        let raw_ok = !raw.starts_with(['/', '\\'])
            && !raw.split(['/', '\\']).any(|c| c == "..")
            && !(raw.len() > 1 && raw.as_bytes()[1] == b':');
        let safe = entry
            .enclosed_name()
            .filter(|p| raw_ok && p.components().all(|c| matches!(c, Component::Normal(_))));
        let Some(path) = safe else {
            bail!("refusing {}: entry {raw:?} would be written outside the destination", archive.display());
        };
        if entry.is_symlink() {
            bail!("refusing {}: entry {raw:?} is a link", archive.display());
        }
        names.push(path);
    }
    let targets = zip_targets(&names, corpus, archive)?;
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for (i, (name, rel)) in names.iter().zip(&targets).enumerate() {
        let Some(rel) = rel else { continue };
        let mut entry = zip.by_index(i).with_context(|| format!("reading {}", name.display()))?;
        let target = out.join(rel);
        if entry.is_dir() {
            fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
            continue;
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let mut file = File::create(&target).with_context(|| format!("creating {}", target.display()))?;
        io::copy(&mut entry, &mut file)
            .map_err(|e| anyhow!("extracting {} from {}: {e}", name.display(), archive.display()))?;
    }
    Ok(())
}

/// Speech Commands' digit words from the tarball at `archive` into `out/recordings`, renamed
/// `{digit}_{speaker}_{n}.wav` from `{word}/{speaker}_nohash_{n}.wav`. Only names built here
/// are written, so no entry can land outside `out`.
fn unpack_speech_commands(archive: &Path, out: &Path) -> Result<()> {
    use crate::data::synth::DIGIT_WORDS;
    let file = File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(io::BufReader::new(file)));
    let recordings = out.join("recordings");
    fs::create_dir_all(&recordings).with_context(|| format!("creating {}", recordings.display()))?;
    let broken = |e: io::Error| {
        anyhow!(
            "{} is not a complete .tar.gz archive ({e}); it was deleted, run the command again",
            archive.display()
        )
    };
    let mut kept = 0;
    for entry in tar.entries().map_err(broken)? {
        let mut entry = entry.map_err(broken)?;
        let path = entry.path().map_err(broken)?.to_string_lossy().to_string();
        let Some(name) = speech_commands_name(&path, &DIGIT_WORDS) else { continue };
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let target = recordings.join(name);
        let mut f = File::create(&target).with_context(|| format!("creating {}", target.display()))?;
        io::copy(&mut entry, &mut f).map_err(broken)?;
        kept += 1;
    }
    if kept == 0 {
        bail!("{} holds none of Speech Commands' digit words (zero/..., nine/...)", archive.display());
    }
    Ok(())
}

/// `./seven/0a7c2a8d_nohash_1.wav` -> `7_0a7c2a8d_1.wav`; `None` for anything else.
fn speech_commands_name(path: &str, words: &[&str]) -> Option<String> {
    let mut parts = path.trim_start_matches("./").split('/');
    let (word, file, rest) = (parts.next()?, parts.next()?, parts.next());
    let digit = words.iter().position(|w| *w == word)?;
    let (speaker, n) = file.strip_suffix(".wav")?.split_once("_nohash_")?;
    let plain = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric());
    (rest.is_none() && plain(speaker) && plain(n)).then(|| format!("{digit}_{speaker}_{n}.wav"))
}

/// Count speakers and recordings of `corpus` in `dest` and list what differs from a complete
/// download.
pub fn inspect_corpus(corpus: Corpus, dest: &Path, url: &str) -> Result<Report> {
    if corpus == Corpus::Audiomnist {
        return inspect(dest, url);
    }
    let dir = dest.join("recordings");
    let mut speakers = std::collections::BTreeSet::new();
    let mut wavs = 0;
    for f in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = f?.file_name().to_string_lossy().to_string();
        if let Some((_, speaker, _)) = crate::data::dataset::parse_name(&name) {
            speakers.insert(speaker.to_string());
            wavs += 1;
        }
    }
    let (want_speakers, want_wavs) = corpus.expected();
    let mut differences = Vec::new();
    if speakers.len() != want_speakers {
        differences.push(format!("{} speakers, {corpus:?} has {want_speakers}", speakers.len()));
    }
    if wavs != want_wavs {
        differences.push(format!("{wavs} recordings, {corpus:?} has {want_wavs}"));
    }
    Ok(Report {
        corpus,
        url: url.to_string(),
        speaker_folders: speakers.len(),
        wavs,
        metadata: false,
        differences,
    })
}

/// Count speaker folders and recordings in `dest` and list what differs from AudioMNIST.
pub fn inspect(dest: &Path, url: &str) -> Result<Report> {
    let mut speaker_folders = 0;
    let mut wavs = 0;
    for entry in fs::read_dir(dest).with_context(|| format!("reading {}", dest.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if !entry.file_type()?.is_dir() || name.starts_with('.') {
            continue;
        }
        speaker_folders += 1;
        for f in fs::read_dir(entry.path())? {
            let f = f?.file_name().to_string_lossy().to_string();
            if f.to_ascii_lowercase().ends_with(".wav") && crate::data::dataset::parse_name(&f).is_some() {
                wavs += 1;
            }
        }
    }
    let metadata = dest.join(META_FILE).is_file();
    let mut differences = Vec::new();
    if speaker_folders != EXPECTED_SPEAKERS {
        differences.push(format!("{speaker_folders} speaker folders, AudioMNIST has {EXPECTED_SPEAKERS}"));
    }
    if wavs != EXPECTED_WAVS {
        differences.push(format!("{wavs} recordings, AudioMNIST has {EXPECTED_WAVS}"));
    }
    if !metadata {
        differences.push(format!("no {META_FILE}"));
    }
    Ok(Report {
        corpus: Corpus::Audiomnist,
        url: url.to_string(),
        speaker_folders,
        wavs,
        metadata,
        differences,
    })
}

#[cfg(test)]
mod tests {
    use super::speech_commands_name;

    #[test]
    fn speech_commands_names_keep_only_plain_digit_words() {
        let words = crate::data::synth::DIGIT_WORDS;
        assert_eq!(
            speech_commands_name("./seven/0a7c2a8d_nohash_1.wav", &words).as_deref(),
            Some("7_0a7c2a8d_1.wav")
        );
        assert_eq!(
            speech_commands_name("zero/ffd2ba2f_nohash_12.wav", &words).as_deref(),
            Some("0_ffd2ba2f_12.wav")
        );
        for bad in [
            "./yes/0a7c2a8d_nohash_1.wav",
            "./seven/../../evil_nohash_1.wav",
            "./seven/a/b_nohash_1.wav",
            "./seven/a-b_nohash_1.wav",
            "./seven/0a7c2a8d_1.wav",
            "./seven/0a7c2a8d_nohash_1.txt",
            "./seven/",
        ] {
            assert_eq!(speech_commands_name(bad, &words), None, "{bad}");
        }
    }
}
