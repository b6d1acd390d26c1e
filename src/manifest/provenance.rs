//! `data/provenance.json`: what made a bag, from what, with which parameters.

use serde::{Deserialize, Serialize};

/// Everything needed to re-run a stage and to chain bags into a lineage. No timestamps here:
/// the only time in a bag is `Bagging-Date` in bag-info.txt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Provenance {
    pub prep_version: String,
    /// Commit prep was built from, `-dirty` when the tree had changes; None outside git.
    pub git_commit: Option<String>,
    pub stage: String,
    /// The command line, with the output path replaced by `$OUT` and `--force` left out, so
    /// that two runs into different folders, or a re-run over an old bag, produce identical bags.
    pub argv: Vec<String>,
    /// Every parameter of the stage, defaults resolved.
    pub parameters: serde_json::Map<String, serde_json::Value>,
    pub seed: Option<u64>,
    pub inputs: Vec<InputRef>,
}

/// One input: a bag (sha256 of its manifest-sha256.txt), a metadata file (its sha256), or a
/// dataset folder (sha256 over the sorted list of files read from it and their hashes).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InputRef {
    pub kind: String,
    pub path: String,
    pub sha256: String,
}

impl Provenance {
    pub fn new(stage: &str, argv: Vec<String>, out: &std::path::Path) -> Self {
        let out_s = out.to_string_lossy();
        let argv = argv
            .into_iter()
            .filter(|a| a != "--force")
            .map(|a| {
                if a == out_s {
                    "$OUT".to_string()
                } else if let Some(v) = a.strip_prefix("--out=") {
                    if v == out_s {
                        "--out=$OUT".to_string()
                    } else {
                        a
                    }
                } else {
                    a
                }
            })
            .collect();
        let commit = env!("PREP_GIT_COMMIT");
        Provenance {
            prep_version: env!("CARGO_PKG_VERSION").to_string(),
            git_commit: (!commit.is_empty()).then(|| commit.to_string()),
            stage: stage.to_string(),
            argv,
            parameters: serde_json::Map::new(),
            seed: None,
            inputs: Vec::new(),
        }
    }

    pub fn param(&mut self, key: &str, value: impl Serialize) -> &mut Self {
        self.parameters.insert(
            key.to_string(),
            serde_json::to_value(value).expect("parameters serialise"),
        );
        self
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("provenance serialises");
        v.push(b'\n');
        v
    }
}
