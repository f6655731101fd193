//! `audio-mnist download`: AudioMNIST from the authors' public repository archive, no account.
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
    pub url: String,
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
    if let Some(report) = completed(dest) {
        return Ok(Outcome::AlreadyComplete(report));
    }
    let staging = dest.join(STAGING);
    fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let archive = staging.join("archive.zip");
    if !archive.exists() {
        let part = staging.join("archive.zip.part");
        fetch(url, &part, progress)?;
        fs::rename(&part, &archive).with_context(|| format!("renaming {}", part.display()))?;
    }
    let extract = staging.join("extract");
    if extract.exists() {
        fs::remove_dir_all(&extract).with_context(|| format!("clearing {}", extract.display()))?;
    }
    if let Err(e) = unpack(&archive, &extract) {
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
    let report = inspect(dest, url)?;
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

/// Check every entry of the zip at `archive`, then extract the dataset part of it into `out`.
fn unpack(archive: &Path, out: &Path) -> Result<()> {
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
    let root = data_root(&names).ok_or_else(|| {
        anyhow!("{} holds no AudioMNIST recordings ({{digit}}_{{speaker}}_{{take}}.wav)", archive.display())
    })?;
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for (i, name) in names.iter().enumerate() {
        let Ok(rel) = name.strip_prefix(&root) else { continue };
        if rel.as_os_str().is_empty() {
            continue;
        }
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
    Ok(Report { url: url.to_string(), speaker_folders, wavs, metadata, differences })
}
