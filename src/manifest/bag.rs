//! Writing a bag: payload files go into a staging folder beside OUT; `finish` hashes what is
//! not yet hashed, writes the tag files and renames the folder into place, so a crash never
//! leaves a half-written bag at OUT.

use super::croissant::CroissantSpec;
use super::encode_manifest_path;
use crate::error::{Error, Result};
use crate::progress;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What the stage tells the writer about the bag as a whole.
pub struct StageInfo {
    /// Short name of the dataset (Croissant `name`).
    pub name: String,
    /// One paragraph for people (Croissant `description`, bag-info `External-Description`).
    pub description: String,
    pub croissant: CroissantSpec,
}

/// A bag that is complete and in place.
#[derive(Debug, Clone)]
pub struct FinishedBag {
    pub path: PathBuf,
    /// sha256 of manifest-sha256.txt: the identity of the payload, used to chain bags.
    pub manifest_sha256: String,
    pub payload_files: u64,
    pub payload_bytes: u64,
}

pub struct BagWriter {
    out: PathBuf,
    staging: PathBuf,
    /// Hashes already known (computed while copying), keyed by path relative to the bag root.
    known: Mutex<BTreeMap<String, (String, u64)>>,
    finished: bool,
}

pub fn hash_bytes(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Streaming sha256 of a file and its length.
pub fn hash_file(path: &Path) -> Result<(String, u64)> {
    hash_file_with::<Sha256>(path)
}

/// Streaming hash of a file with any digest, and its length.
pub(crate) fn hash_file_with<D: Digest>(path: &Path) -> Result<(String, u64)> {
    let mut f = fs::File::open(path).map_err(|e| Error::read(path, e))?;
    let mut h = D::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).map_err(|e| Error::read(path, e))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

impl BagWriter {
    /// Prepare to write a bag at `out`. Refuses an existing non-empty `out` unless `force`.
    pub fn create(out: &Path, force: bool) -> Result<Self> {
        if out.exists() {
            if !out.is_dir() {
                return Err(Error::bad_input(out, "output exists and is not a folder"));
            }
            let empty = fs::read_dir(out)
                .map_err(|e| Error::read(out, e))?
                .next()
                .is_none();
            if !empty && !force {
                return Err(Error::OutputExists {
                    path: out.to_path_buf(),
                });
            }
        }
        let name = out.file_name().ok_or_else(|| {
            Error::Usage(format!("output path {} has no folder name", out.display()))
        })?;
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).map_err(|e| Error::write(&parent, e))?;
        let staging = parent.join(format!(
            ".{}.prep-tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(|e| Error::write(&staging, e))?;
        }
        fs::create_dir_all(staging.join("data")).map_err(|e| Error::write(&staging, e))?;
        Ok(BagWriter {
            out: out.to_path_buf(),
            staging,
            known: Mutex::new(BTreeMap::new()),
            finished: false,
        })
    }

    /// Where a payload file `rel` (relative to `data/`) is being staged.
    pub fn staged_path(&self, rel: &str) -> PathBuf {
        self.staging.join("data").join(rel)
    }

    /// Write a payload file from memory; `rel` is relative to `data/`, with `/` separators.
    pub fn write_payload(&self, rel: &str, bytes: &[u8]) -> Result<String> {
        let dest = self.prepare(rel)?;
        fs::write(&dest, bytes).map_err(|e| Error::write(&dest, e))?;
        let sha = hash_bytes(bytes);
        self.remember(rel, sha.clone(), bytes.len() as u64);
        Ok(sha)
    }

    /// Put an input file into the payload: a hard link when `link` is set and the filesystem
    /// allows it, else the bytes already read. `sha` must be the hash of `bytes`.
    pub fn add_file(
        &self,
        src: &Path,
        rel: &str,
        bytes: &[u8],
        sha: &str,
        link: bool,
    ) -> Result<()> {
        let dest = self.prepare(rel)?;
        if !(link && fs::hard_link(src, &dest).is_ok()) {
            fs::write(&dest, bytes).map_err(|e| Error::write(&dest, e))?;
        }
        self.remember(rel, sha.to_string(), bytes.len() as u64);
        Ok(())
    }

    fn prepare(&self, rel: &str) -> Result<PathBuf> {
        let dest = self.staged_path(rel);
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir).map_err(|e| Error::write(dir, e))?;
        }
        Ok(dest)
    }

    fn remember(&self, rel: &str, sha: String, len: u64) {
        self.known
            .lock()
            .expect("hash map lock")
            .insert(format!("data/{rel}"), (sha, len));
    }

    /// Hash the payload, write the tag files and Croissant metadata, and move the bag to OUT.
    pub fn finish(mut self, info: StageInfo) -> Result<FinishedBag> {
        let data = self.staging.join("data");
        let mut files = Vec::new();
        for entry in walkdir::WalkDir::new(&data).sort_by_file_name() {
            let entry = entry.map_err(|e| Error::read(&data, e.into()))?;
            if entry.file_type().is_file() {
                let rel = entry
                    .path()
                    .strip_prefix(&self.staging)
                    .expect("under staging");
                let rel = rel
                    .to_str()
                    .ok_or_else(|| Error::bad_input(entry.path(), "file name is not UTF-8"))?
                    .replace(std::path::MAIN_SEPARATOR, "/");
                files.push(rel);
            }
        }
        files.sort();
        let known = std::mem::take(&mut *self.known.lock().expect("hash map lock"));
        let pb = progress::bar(files.len() as u64, "hashing");
        let hashed: Vec<(String, String, u64)> = files
            .par_iter()
            .map(|rel| {
                let r = match known.get(rel) {
                    Some((sha, n)) => Ok((rel.clone(), sha.clone(), *n)),
                    None => hash_file(&self.staging.join(rel)).map(|(s, n)| (rel.clone(), s, n)),
                };
                pb.inc(1);
                r
            })
            .collect::<Result<_>>()?;
        pb.finish_and_clear();

        let mut manifest = String::new();
        let mut total = 0u64;
        for (rel, sha, n) in &hashed {
            manifest.push_str(&format!("{sha}  {}\n", encode_manifest_path(rel)));
            total += n;
        }
        let lookup = |rel: &str| {
            hashed
                .iter()
                .find(|(r, _, _)| r == rel)
                .map(|(_, s, n)| (s.clone(), *n))
        };
        let croissant = info
            .croissant
            .to_json(&info.name, &info.description, &lookup)?;

        let bagit = "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n".to_string();
        let desc = info.description.replace(['\r', '\n'], " ");
        let bag_info = format!(
            "Bag-Software-Agent: prep {}\nBagging-Date: {}\nExternal-Description: {}\nPayload-Oxum: {}.{}\nSource-Organization: prep\n",
            env!("CARGO_PKG_VERSION"),
            bagging_date(),
            desc,
            total,
            hashed.len()
        );
        self.write_tag("bagit.txt", bagit.as_bytes())?;
        self.write_tag("bag-info.txt", bag_info.as_bytes())?;
        self.write_tag("manifest-sha256.txt", manifest.as_bytes())?;
        self.write_tag("croissant.json", &croissant)?;
        // bag-info.txt is left out of the tag manifest on purpose: it holds the only timestamp
        // (Bagging-Date), and every other file must be byte-identical across runs. RFC 8493
        // makes listing it optional; `prep verify` checks its Payload-Oxum itself.
        let mut tag = String::new();
        for (name, bytes) in [
            ("bagit.txt", bagit.into_bytes()),
            ("croissant.json", croissant),
            ("manifest-sha256.txt", manifest.clone().into_bytes()),
        ] {
            tag.push_str(&format!("{}  {name}\n", hash_bytes(&bytes)));
        }
        self.write_tag("tagmanifest-sha256.txt", tag.as_bytes())?;

        self.move_into_place()?;
        self.finished = true;
        Ok(FinishedBag {
            path: self.out.clone(),
            manifest_sha256: hash_bytes(manifest.as_bytes()),
            payload_files: hashed.len() as u64,
            payload_bytes: total,
        })
    }

    fn write_tag(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let p = self.staging.join(name);
        fs::write(&p, bytes).map_err(|e| Error::write(&p, e))
    }

    fn move_into_place(&self) -> Result<()> {
        let mut old = None;
        if self.out.exists() {
            // create() checked it is empty, or that --force was given.
            let trash = self.staging.with_extension("old");
            fs::rename(&self.out, &trash).map_err(|e| Error::write(&self.out, e))?;
            old = Some(trash);
        }
        fs::rename(&self.staging, &self.out).map_err(|e| Error::write(&self.out, e))?;
        if let Some(trash) = old {
            fs::remove_dir_all(&trash).map_err(|e| Error::write(&trash, e))?;
        }
        Ok(())
    }
}

impl Drop for BagWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

/// Today's date, or the day of SOURCE_DATE_EPOCH when set (reproducible-builds convention).
fn bagging_date() -> String {
    if let Some(secs) = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
    {
        if let Some(t) = chrono::DateTime::from_timestamp(secs, 0) {
            return t.format("%Y-%m-%d").to_string();
        }
    }
    chrono::Local::now().format("%Y-%m-%d").to_string()
}
