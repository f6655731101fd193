//! Speaker-independent splits: no speaker appears in two parts.

use crate::error::Error;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

/// The five official AudioMNIST digit folds (Becker et al.; 36 train / 12 validate / 12 test
/// speakers each), as published with the dataset.
const PAPER_SPLITS: &str = include_str!("paper_splits.json");

type Result<T> = std::result::Result<T, Error>;

/// `Err(Error::Split(message))` unless `ok`.
fn check(ok: bool, message: impl FnOnce() -> String) -> Result<()> {
    crate::error::check(ok, Error::Split, message)
}

/// How to split the speakers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SplitSpec {
    /// 70/15/15 of the speakers, shuffled with the seed (the seed notebook's default).
    Random { seed: u64 },
    /// Official AudioMNIST fold 0..=4.
    Paper(usize),
    /// Named test and validation speakers; every other speaker trains.
    Explicit { test: Vec<String>, val: Vec<String> },
    /// No test part, for a model to deploy: the named speakers validate (early stopping),
    /// every other speaker trains. Nothing measures such a model on unseen speakers.
    NoTest { val: Vec<String> },
}

impl SplitSpec {
    /// Parse `--split random|paper:K|none` plus optional explicit speaker lists (`none` takes
    /// validation speakers only).
    pub fn from_args(split: &str, seed: u64, test: Option<&str>, val: Option<&str>) -> Result<Self> {
        let list = |s: &str| {
            s.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect::<Vec<_>>()
        };
        match (split, test, val) {
            ("none", None, Some(v)) => return Ok(Self::NoTest { val: list(v) }),
            ("none", _, _) => {
                let why = "--split none trains on every speaker but the --val-speakers (and takes no --test-speakers)";
                return Err(Error::Split(why.into()));
            }
            (_, Some(t), Some(v)) => return Ok(Self::Explicit { test: list(t), val: list(v) }),
            (_, Some(_), None) | (_, None, Some(_)) => {
                return Err(Error::Split("give both --test-speakers and --val-speakers".into()))
            }
            (_, None, None) => {}
        }
        if split == "random" {
            return Ok(Self::Random { seed });
        }
        if let Some(k) = split.strip_prefix("paper:") {
            let k: usize =
                k.parse().map_err(|_| Error::Split(format!("--split {split}: fold must be 0-4")))?;
            check(k < 5, || format!("--split {split}: fold must be 0-4"))?;
            return Ok(Self::Paper(k));
        }
        Err(Error::Split(format!("--split {split}: expected `random`, `paper:K` (K = 0-4) or `none`")))
    }
}

/// The speakers of each part, sorted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Split {
    pub train: Vec<String>,
    pub val: Vec<String>,
    pub test: Vec<String>,
}

#[derive(Deserialize)]
struct PaperFolds {
    folds: Vec<PaperFold>,
}

#[derive(Deserialize)]
struct PaperFold {
    train: Vec<u32>,
    validate: Vec<u32>,
    test: Vec<u32>,
}

/// Split `speakers` (the dataset's speaker ids) as `spec` says.
pub fn make_split(spec: &SplitSpec, speakers: &[String]) -> Result<Split> {
    let mut all: Vec<String> = speakers.to_vec();
    all.sort();
    all.dedup();
    let mut split = match spec {
        SplitSpec::Random { seed } => {
            check(all.len() >= 3, || {
                format!("a random split needs at least 3 speakers, the data has {}", all.len())
            })?;
            let mut shuffled = all.clone();
            shuffled.shuffle(&mut StdRng::seed_from_u64(*seed));
            let n_test = ((all.len() as f64 * 0.15).round() as usize).max(1);
            let n_val = ((all.len() as f64 * 0.15).round() as usize).max(1);
            Split {
                test: shuffled[..n_test].to_vec(),
                val: shuffled[n_test..n_test + n_val].to_vec(),
                train: shuffled[n_test + n_val..].to_vec(),
            }
        }
        SplitSpec::Paper(k) => {
            let folds: PaperFolds = serde_json::from_str(PAPER_SPLITS)
                .map_err(|e| Error::Split(format!("built-in paper folds: {e}")))?;
            let f = folds.folds.get(*k).ok_or_else(|| {
                Error::Split(format!(
                    "paper fold {k} does not exist: the folds are 0-{}",
                    folds.folds.len() - 1
                ))
            })?;
            let ids = |v: &[u32]| {
                v.iter().map(|s| format!("{s:02}")).filter(|s| all.contains(s)).collect::<Vec<_>>()
            };
            let split = Split { train: ids(&f.train), val: ids(&f.validate), test: ids(&f.test) };
            let (tr, va, te) = (split.train.len(), split.val.len(), split.test.len());
            check(tr > 0 && va > 0 && te > 0, || {
                format!(
                    "paper fold {k} needs AudioMNIST speakers 01-60; this data has {} of them \
                     ({tr} train, {va} val, {te} test)",
                    tr + va + te
                )
            })?;
            split
        }
        SplitSpec::NoTest { val } => {
            for s in val {
                check(all.contains(s), || {
                    format!("speaker {s:?} is not in the data (speakers: {})", all.join(", "))
                })?;
            }
            let train: Vec<String> = all.iter().filter(|s| !val.contains(s)).cloned().collect();
            check(!train.is_empty(), || "no speakers left to train on".into())?;
            check(!val.is_empty(), || "need at least one validation speaker".into())?;
            Split { train, val: val.clone(), test: vec![] }
        }
        SplitSpec::Explicit { test, val } => {
            for s in test.iter().chain(val) {
                check(all.contains(s), || {
                    format!("speaker {s:?} is not in the data (speakers: {})", all.join(", "))
                })?;
            }
            if let Some(s) = test.iter().find(|s| val.contains(s)) {
                return Err(Error::Split(format!("speaker {s:?} is both a test and a validation speaker")));
            }
            let train: Vec<String> =
                all.iter().filter(|s| !test.contains(s) && !val.contains(s)).cloned().collect();
            check(!train.is_empty(), || "no speakers left to train on".into())?;
            check(!test.is_empty() && !val.is_empty(), || {
                "need at least one test and one validation speaker".into()
            })?;
            Split { train, val: val.clone(), test: test.clone() }
        }
    };
    split.train.sort();
    split.val.sort();
    split.test.sort();
    Ok(split)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("{i:02}")).collect()
    }

    #[test]
    fn random_split_is_seeded_disjoint_and_70_15_15() {
        let a = make_split(&SplitSpec::Random { seed: 42 }, &ids(60)).unwrap();
        let b = make_split(&SplitSpec::Random { seed: 42 }, &ids(60)).unwrap();
        let c = make_split(&SplitSpec::Random { seed: 7 }, &ids(60)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!((a.train.len(), a.val.len(), a.test.len()), (42, 9, 9));
        assert!(a.test.iter().all(|s| !a.train.contains(s) && !a.val.contains(s)));
    }

    #[test]
    fn paper_folds_match_the_published_lists() {
        let s = make_split(&SplitSpec::Paper(0), &ids(60)).unwrap();
        assert_eq!((s.train.len(), s.val.len(), s.test.len()), (36, 12, 12));
        assert!(s.test.contains(&"26".to_string()) && s.val.contains(&"12".to_string()));
        for k in 0..5 {
            let s = make_split(&SplitSpec::Paper(k), &ids(60)).unwrap();
            let mut all: Vec<_> = s.train.iter().chain(&s.val).chain(&s.test).cloned().collect();
            all.sort();
            all.dedup();
            assert_eq!(all.len(), 60, "fold {k} covers every speaker once");
        }
        assert!(make_split(&SplitSpec::Paper(0), &["george".into(), "theo".into()]).is_err());
    }

    #[test]
    fn explicit_split_checks_names() {
        let spk: Vec<String> =
            ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"].map(String::from).to_vec();
        let s = SplitSpec::from_args("random", 1, Some("theo"), Some("nicolas")).unwrap();
        let split = make_split(&s, &spk).unwrap();
        assert_eq!(split.train, vec!["george", "jackson", "lucas", "yweweler"]);
        let bad = SplitSpec::Explicit { test: vec!["bob".into()], val: vec!["theo".into()] };
        assert!(make_split(&bad, &spk).unwrap_err().to_string().contains("bob"));
        assert!(SplitSpec::from_args("paper:7", 1, None, None).is_err());
        assert!(SplitSpec::from_args("papers", 1, None, None).is_err());
    }
}
