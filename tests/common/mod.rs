//! Helpers shared by the integration tests.
#![allow(dead_code)]

use assert_cmd::Command;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The real binary.
pub fn prep() -> Command {
    let mut c = Command::cargo_bin("prep").expect("binary built");
    c.env_remove("SOURCE_DATE_EPOCH");
    c
}

/// ../shared/data beside the repository, or None with a printed reason.
pub fn shared_data() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!(
            "SKIP: {} is absent (the real data is not in this checkout)",
            p.display()
        );
        None
    }
}

/// A Python interpreter that can import `module`: $PREP_PYTHON, then the repo's .venv (made by
/// `make test`), then python3. None with a printed reason.
pub fn python_with(module: &str) -> Option<PathBuf> {
    let mut cands = Vec::new();
    if let Ok(p) = std::env::var("PREP_PYTHON") {
        cands.push(PathBuf::from(p));
    }
    cands.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    cands.push(PathBuf::from("python3"));
    for c in cands {
        let ok = std::process::Command::new(&c)
            .args(["-c", &format!("import {module}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return Some(c);
        }
    }
    eprintln!("SKIP: no Python with `{module}` (run `make test`, which installs it into .venv)");
    None
}

/// sha256 of every file under `dir`, by path relative to it.
pub fn tree_hashes(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let rel = e
                .path()
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.insert(
                rel,
                hex::encode(Sha256::digest(std::fs::read(e.path()).unwrap())),
            );
        }
    }
    out
}

/// Every file of a bag except bag-info.txt (the one file allowed to differ: Bagging-Date).
pub fn bag_without_date(bag: &Path) -> BTreeMap<String, String> {
    let mut t = tree_hashes(bag);
    t.remove("bag-info.txt");
    t
}

pub fn read_csv(path: &Path) -> Vec<BTreeMap<String, String>> {
    let mut rdr = csv::Reader::from_path(path).unwrap();
    let headers = rdr.headers().unwrap().clone();
    rdr.records()
        .map(|r| {
            let r = r.unwrap();
            headers
                .iter()
                .zip(r.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// Run `mlcroissant validate --jsonld FILE`; None (with a printed reason) when not installed.
/// Returns (accepted, stderr). Warnings are fine; errors are not.
pub fn croissant_validate(file: &Path) -> Option<(bool, String)> {
    let py = python_with("mlcroissant")?;
    let script = match py.parent() {
        Some(dir) if dir.join("mlcroissant").is_file() => dir.join("mlcroissant"),
        _ => PathBuf::from("mlcroissant"),
    };
    let o = std::process::Command::new(script)
        .args(["validate", "--jsonld"])
        .arg(file)
        .output()
        .ok()?;
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    Some((o.status.success() && !err.contains("error(s)"), err))
}

/// A small synthetic radiograph as PNG bytes.
pub fn small_png(side: u32, seed: u64, id: &str) -> Vec<u8> {
    prep::synth::encode_png(&prep::synth::chest_image(
        side,
        side,
        seed,
        id,
        0.0,
        Default::default(),
    ))
    .unwrap()
}

/// A synthetic Cohen-layout dataset at `TMP/cohen` filtered by the real binary into `TMP/bag`.
/// Returns the temp folder (keep it alive) and the bag.
pub fn filtered_synthetic_cohen(seed: u64, side: u32) -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let ds = t.path().join("cohen");
    prep::synth::cohen_like(&ds, seed, side).unwrap();
    let out = t.path().join("bag");
    prep()
        .args(["filter", "--source", "cohen", "--dataset"])
        .arg(&ds)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    (t, out)
}

/// `prep filter` of a folder into a bag labelled `label`.
pub fn folder_bag(dataset: &Path, label: &str, out: &Path) {
    prep()
        .args([
            "filter",
            "--source",
            "folder",
            "--label",
            label,
            "--dataset",
        ])
        .arg(dataset)
        .arg("--out")
        .arg(out)
        .assert()
        .success();
}

/// A test bag from payload files (relative to `data/`) and their bytes.
pub fn bag_of(out: &Path, files: &[(String, Vec<u8>)]) {
    let w = prep::manifest::BagWriter::create(out, false).unwrap();
    for (rel, bytes) in files {
        w.write_payload(rel, bytes).unwrap();
    }
    w.finish(prep::manifest::StageInfo {
        name: "test".into(),
        description: "test bag".into(),
        croissant: prep::manifest::CroissantSpec {
            license: String::new(),
            url: String::new(),
            cite_as: String::new(),
            table: "data/records.csv".into(),
            columns: Vec::new(),
            image_globs: Vec::new(),
        },
    })
    .unwrap();
}
