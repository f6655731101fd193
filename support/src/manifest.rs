//! Provenance of a run: what produced a model, for `run_manifest.json` and `crossval.json`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The machine that computed a result. Training is bit-identical from run to run on the same
/// kind of CPU only: the matrix multiplies (the `gemm` crate, also inside Candle) pick their
/// SIMD kernels from the CPU's features and their blocking from its cache sizes, which changes
/// the order in which floats are summed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// The CPU's model name (`/proc/cpuinfo`), or the architecture where that is unknown.
    pub cpu: String,
    /// The SIMD level the matrix-multiply kernels run at, e.g. `x86-64-v3 (AVX2+FMA)`.
    pub simd: String,
    /// L1 data, L2 and L3 cache sizes in KiB as the kernels read them (0 where unknown).
    pub cache_kib: [u64; 3],
    pub threads: usize,
}

impl Machine {
    /// This machine.
    pub fn this() -> Self {
        Self {
            cpu: cpu_model(),
            simd: simd_level().into(),
            cache_kib: cache_kib(),
            threads: rayon::current_num_threads(),
        }
    }
}

fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let name = info
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':'])));
    name.map(str::to_string).unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// The level gemm 0.19's runtime dispatch picks. It is built without its `x86-v4` feature (as
/// Candle depends on it), so AVX-512 CPUs run the same AVX2+FMA kernels as AVX2 ones.
fn simd_level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return "x86-64-v3 (AVX2+FMA)";
        }
        "scalar (no AVX2+FMA)"
    }
    #[cfg(target_arch = "aarch64")]
    {
        "aarch64 NEON"
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        "scalar"
    }
}

/// Per-core cache sizes from sysfs (what gemm reads to size its blocks).
fn cache_kib() -> [u64; 3] {
    let mut out = [0u64; 3];
    for index in 0..8 {
        let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{index}");
        let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).map(|s| s.trim().to_string());
        let (Ok(level), Ok(kind), Ok(size)) = (read("level"), read("type"), read("size")) else { continue };
        let kib = size.trim_end_matches('K').parse::<u64>().unwrap_or(0);
        let kib = if size.ends_with('M') {
            size.trim_end_matches('M').parse::<u64>().unwrap_or(0) * 1024
        } else {
            kib
        };
        match (level.as_str(), kind.as_str()) {
            ("1", "Data") => out[0] = kib,
            ("2", _) => out[1] = kib,
            ("3", _) => out[2] = kib,
            _ => {}
        }
    }
    out
}

/// Versions of the crates that shape the numbers, as locked in this build's Cargo.lock.
pub fn crate_versions() -> BTreeMap<String, String> {
    const LOCK: &str = include_str!("../../Cargo.lock");
    const WANTED: &[&str] = &[
        "candle-core",
        "candle-nn",
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

/// Today's date in UTC, `YYYY-MM-DD` (results carry the day they were measured).
pub fn utc_date() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    civil_date(secs / 86_400)
}

/// The proleptic Gregorian date of a day number counted from 1970-01-01 (H. Hinnant's
/// `civil_from_days`).
fn civil_date(days: u64) -> String {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil_date(0), "1970-01-01");
        assert_eq!(super::civil_date(11_016), "2000-02-29");
        assert_eq!(super::civil_date(20_792), "2026-12-05");
        assert_eq!(super::civil_date(20_818), "2026-12-31");
    }

    #[test]
    fn lockfile_versions_are_found() {
        let v = super::crate_versions();
        assert!(v["candle-core"].starts_with("0.11"), "{v:?}");
        assert!(v.contains_key("polars") && v.contains_key("hound"));
        assert!(super::rustc_version().starts_with("rustc "));
    }

    #[test]
    fn the_machine_is_described() {
        let m = super::Machine::this();
        assert!(!m.cpu.is_empty() && !m.simd.is_empty() && m.threads >= 1, "{m:?}");
        #[cfg(target_os = "linux")]
        assert!(m.cache_kib.iter().any(|&k| k > 0), "no cache sizes read: {m:?}");
    }
}
