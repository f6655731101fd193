//! Provenance of a run: what produced a model, for `run_manifest.json`.

use std::collections::BTreeMap;

/// Versions of the crates that shape the numbers, as locked in this build's Cargo.lock.
pub fn crate_versions() -> BTreeMap<String, String> {
    const LOCK: &str = include_str!("../../Cargo.lock");
    const WANTED: &[&str] = &[
        "candle-core",
        "candle-nn",
        "candle-datasets",
        "gemm",
        "hound",
        "rubato",
        "realfft",
        "rustfft",
        "polars",
        "plotly",
        "safetensors",
        "rand",
        "rayon",
        "plotters",
    ];
    let mut out = BTreeMap::new();
    let mut name: Option<&str> = None;
    for line in LOCK.lines() {
        if let Some(n) = line.strip_prefix("name = \"") {
            name = n.strip_suffix('"');
        } else if let (Some(n), Some(v)) = (name, line.strip_prefix("version = \"")) {
            if WANTED.contains(&n) {
                out.entry(n.to_string()).or_insert_with(|| v.trim_end_matches('"').to_string());
            }
            name = None;
        }
    }
    out.insert("support".into(), crate::VERSION.into());
    out
}

pub fn rustc_version() -> &'static str {
    env!("AUDIO_MNIST_RUSTC")
}

pub fn git_commit() -> &'static str {
    env!("AUDIO_MNIST_GIT_COMMIT")
}

#[cfg(test)]
mod tests {
    #[test]
    fn lockfile_versions_are_found() {
        let v = super::crate_versions();
        assert!(v["candle-core"].starts_with("0.11"), "{v:?}");
        assert!(v.contains_key("polars") && v.contains_key("hound"));
        assert!(super::rustc_version().starts_with("rustc "));
    }
}
