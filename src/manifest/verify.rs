//! `prep verify`: re-hash a bag and name every missing, extra or altered file.

use super::bag::hash_file_with;
use super::decode_manifest_path;
use crate::error::{Error, Result};
use crate::progress;
use rayon::prelude::*;
use sha2::{Digest, Sha256, Sha512};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

#[derive(Debug, Default)]
pub struct VerifyReport {
    pub payload_files: u64,
    pub payload_bytes: u64,
    /// One line per problem, each naming the file; empty when the bag is intact.
    pub problems: Vec<String>,
}

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }

    /// Turn a damaged bag into an error (for stages that read bags).
    pub fn into_result(self, bag: &Path) -> Result<VerifyReport> {
        if self.is_intact() {
            Ok(self)
        } else {
            Err(Error::Verification {
                path: bag.to_path_buf(),
                problems: self.problems,
            })
        }
    }
}

#[derive(Clone, Copy)]
enum Algo {
    Sha256,
    Sha512,
}

fn hash_with(algo: Algo, path: &Path) -> Result<(String, u64)> {
    match algo {
        Algo::Sha256 => hash_file_with::<Sha256>(path),
        Algo::Sha512 => hash_file_with::<Sha512>(path),
    }
}

/// Parse a manifest; entries that escape the bag are reported as problems, not followed.
fn parse_manifest(
    bag: &Path,
    name: &str,
    problems: &mut Vec<String>,
) -> Result<BTreeMap<String, String>> {
    let path = bag.join(name);
    let text = fs::read_to_string(&path).map_err(|e| Error::read(&path, e))?;
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut parts = line.splitn(2, |c: char| c == ' ' || c == '\t');
        let hash = parts.next().unwrap_or("").to_ascii_lowercase();
        let file = decode_manifest_path(parts.next().unwrap_or("").trim_start());
        if hash.is_empty() || file.is_empty() {
            problems.push(format!("{name} line {}: malformed entry {line:?}", i + 1));
            continue;
        }
        if file.starts_with('/') || file.split('/').any(|c| c == "..") {
            problems.push(format!(
                "{name} line {}: path {file:?} escapes the bag",
                i + 1
            ));
            continue;
        }
        out.insert(file, hash);
    }
    Ok(out)
}

fn algo_of(name: &str) -> Option<Algo> {
    match name {
        "sha256" => Some(Algo::Sha256),
        "sha512" => Some(Algo::Sha512),
        _ => None,
    }
}

/// Check every payload and tag manifest entry, the payload file set and the Payload-Oxum.
pub fn verify_bag(bag: &Path) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let problems = &mut report.problems;
    if !bag.is_dir() {
        return Err(Error::bad_input(bag, "not a folder"));
    }
    match fs::read_to_string(bag.join("bagit.txt")) {
        Ok(t) if t.lines().any(|l| l.starts_with("BagIt-Version:")) => {}
        Ok(_) => problems.push("bagit.txt: no BagIt-Version line".into()),
        Err(_) => problems.push("bagit.txt: missing".into()),
    }

    let mut top: Vec<String> = Vec::new();
    for e in fs::read_dir(bag).map_err(|e| Error::read(bag, e))? {
        let e = e.map_err(|e| Error::read(bag, e))?;
        top.push(e.file_name().to_string_lossy().into_owned());
    }
    top.sort();
    let manifests: Vec<(String, Algo)> = top
        .iter()
        .filter_map(|n| {
            let alg = n.strip_prefix("manifest-")?.strip_suffix(".txt")?;
            Some((n.clone(), algo_of(alg)?))
        })
        .collect();
    for n in &top {
        if let Some(alg) = n
            .strip_prefix("manifest-")
            .and_then(|s| s.strip_suffix(".txt"))
        {
            if algo_of(alg).is_none() {
                problems.push(format!(
                    "{n}: checksum algorithm {alg:?} is not supported (sha256, sha512)"
                ));
            }
        }
    }
    if manifests.is_empty() {
        problems.push("manifest-sha256.txt: missing (no payload manifest)".into());
    }

    // Every file actually under data/.
    let data = bag.join("data");
    let mut on_disk: BTreeMap<String, u64> = BTreeMap::new();
    if data.is_dir() {
        for entry in walkdir::WalkDir::new(&data).sort_by_file_name() {
            let entry = entry.map_err(|e| Error::read(&data, e.into()))?;
            if entry.file_type().is_file() || entry.file_type().is_symlink() {
                let rel = entry.path().strip_prefix(bag).expect("under bag");
                let rel = rel
                    .to_string_lossy()
                    .replace(std::path::MAIN_SEPARATOR, "/");
                let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
                on_disk.insert(rel, len);
            }
        }
    } else {
        problems.push("data/: missing".into());
    }

    // Hash every (manifest, file) pair in one parallel pass.
    let mut jobs: Vec<(String, Algo, String, String)> = Vec::new(); // manifest, algo, file, expected
    let mut listed: BTreeSet<String> = BTreeSet::new();
    for (name, algo) in &manifests {
        for (file, hash) in parse_manifest(bag, name, problems)? {
            if !file.starts_with("data/") {
                problems.push(format!("{name}: {file:?} is outside data/"));
                continue;
            }
            listed.insert(file.clone());
            jobs.push((name.clone(), *algo, file, hash));
        }
    }
    let tag_manifests: Vec<(String, Algo)> = top
        .iter()
        .filter_map(|n| {
            let alg = n.strip_prefix("tagmanifest-")?.strip_suffix(".txt")?;
            Some((n.clone(), algo_of(alg)?))
        })
        .collect();
    let mut tag_listed: BTreeSet<String> = BTreeSet::new();
    for (name, algo) in &tag_manifests {
        for (file, hash) in parse_manifest(bag, name, problems)? {
            tag_listed.insert(file.clone());
            jobs.push((name.clone(), *algo, file, hash));
        }
    }

    let pb = progress::bar(jobs.len() as u64, "verifying");
    let results: Vec<Option<String>> = jobs
        .par_iter()
        .map(|(manifest, algo, file, expected)| {
            let p = bag.join(file);
            let r = if !p.is_file() {
                Some(format!("missing: {file} (listed in {manifest})"))
            } else {
                match hash_with(*algo, &p) {
                    Ok((got, _)) if &got == expected => None,
                    Ok((got, _)) => Some(format!(
                        "altered: {file} ({manifest} says {expected}, file hashes to {got})"
                    )),
                    Err(e) => Some(format!("unreadable: {file} ({e})")),
                }
            };
            pb.inc(1);
            r
        })
        .collect();
    pb.finish_and_clear();
    problems.extend(results.into_iter().flatten());

    for file in on_disk.keys() {
        if !listed.contains(file) {
            problems.push(format!("extra: {file} (not in any payload manifest)"));
        }
    }
    for n in &top {
        let known = n == "bag-info.txt" || n == "data" || n.starts_with("tagmanifest-");
        if !known && !tag_listed.contains(n) && !manifests.iter().any(|(m, _)| m == n) {
            problems.push(format!(
                "extra: {n} (top-level file not in any tag manifest)"
            ));
        }
    }

    report.payload_files = on_disk.len() as u64;
    report.payload_bytes = on_disk.values().sum();
    match fs::read_to_string(bag.join("bag-info.txt")) {
        Ok(info) => {
            let oxum = info
                .lines()
                .find_map(|l| l.strip_prefix("Payload-Oxum:"))
                .map(|s| s.trim().to_string());
            match oxum {
                Some(o) => {
                    let want = format!("{}.{}", report.payload_bytes, report.payload_files);
                    if o != want {
                        problems.push(format!(
                            "bag-info.txt: Payload-Oxum is {o} but the payload holds {} bytes in {} files",
                            report.payload_bytes, report.payload_files
                        ));
                    }
                }
                None => problems.push("bag-info.txt: no Payload-Oxum".into()),
            }
        }
        Err(_) => problems.push("bag-info.txt: missing".into()),
    }
    Ok(report)
}

/// sha256 of a bag's payload manifest: the identity later stages record for their inputs.
pub fn manifest_sha256(bag: &Path) -> Result<String> {
    let p = bag.join("manifest-sha256.txt");
    let bytes = fs::read(&p).map_err(|e| Error::read(&p, e))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}
