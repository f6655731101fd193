//! Recordings on disk and what is derived from them: dataset layouts and metadata
//! ([`dataset`]), speaker-independent splits ([`split`]), parallel feature extraction
//! ([`extract`]), the safetensors feature file and cache ([`cache`]), the AudioMNIST download
//! ([`download`]), several folders at once ([`union`]), a run's prepared data ([`prepare`]) and
//! digit words said by text-to-speech voices ([`synth`]) and the tables the CLI writes as CSV
//! ([`table`]).

pub mod cache;
pub mod dataset;
#[cfg(feature = "download")]
pub mod download;
pub mod extract;
#[cfg(feature = "train")]
pub mod prepare;
pub mod split;
pub mod synth;
pub mod table;
pub mod union;

use std::path::Path;

use anyhow::{Context, Result};

/// Write `path` through a temporary file beside it, renamed into place when `write` is done:
/// a killed run never leaves half a file under the final name. The file gets the usual
/// permissions (rw-r--r--), not the temporary file's private ones, so other users and a web
/// server can read models and reports.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut tempfile::NamedTempFile) -> Result<()>,
) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating folder {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".audio-mnist-")
        .suffix(".part")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    write(&mut tmp).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // By path: a writer may have replaced the temporary file rather than written into it.
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("setting the permissions of {}", path.display()))?;
    }
    tmp.persist(path)
        .map_err(|e| anyhow::anyhow!("moving the new file into {}: {}", path.display(), e.error))?;
    Ok(())
}

/// Make `dst` a file with `src`'s contents, atomically: a hard link when both are on one file
/// system (no copying), else a copy.
pub fn link_or_copy(src: &Path, dst: &Path) -> Result<()> {
    write_atomically(dst, |tmp| {
        let part = tmp.path().to_path_buf();
        std::fs::remove_file(&part).with_context(|| format!("replacing {}", part.display()))?;
        if std::fs::hard_link(src, &part).is_err() {
            std::fs::copy(src, &part).with_context(|| format!("copying {}", src.display()))?;
        }
        Ok(())
    })
}

/// Write `value` as pretty JSON, atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    write_text(path, &(serde_json::to_string_pretty(value)? + "\n"))
}

/// Write `text` to `path`, atomically.
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    write_atomically(path, |tmp| Ok(std::io::Write::write_all(tmp, text.as_bytes())?))
}
