//! Near-duplicate fingerprints cached in a bag: `data/fingerprints.bin`, written by `prep filter`
//! and `prep inpaint` where each image is decoded anyway, read by `prep split` so it does not
//! decode every film again (decoding is most of the cost of a fingerprint).
//!
//! Layout (little-endian), one entry per distinct image sha256, sorted by sha256:
//!
//! ```text
//! magic "PREPFP01" | tag_len u32 | tag (utf-8: the hash constants, phash::algorithm_tag) | count u64
//! entry: sha256 [32] | w u32 | h u32 | probe u64 | windows u32 | window hashes u64 × windows | thumbnail w×h bytes
//! ```
//!
//! Trust: the file is a payload file, so the bag's manifest covers it. Beyond that an entry is
//! used only for a record whose sha256 it names, whose thumbnail size follows from the record's
//! width × height and whose window count follows from that size; a file made with other hash
//! constants is ignored whole. Anything else is recomputed from the image, and reported.
//!
//! Written by hand rather than with a serialisation crate: the point of the layout is that the
//! hashes (4 KB an image) are read in one pass while the thumbnails (25 KB) are skipped and
//! read back only for candidate pairs, by offset.

use super::phash::{self, Fingerprint, Hashes};
use crate::error::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Payload path of the cache, relative to `data/`.
pub const FILE: &str = "fingerprints.bin";
const MAGIC: &[u8; 8] = b"PREPFP01";

fn sha_bytes(sha: &str) -> Option<[u8; 32]> {
    let v = hex::decode(sha).ok()?;
    v.try_into().ok()
}

fn header(count: u64) -> Vec<u8> {
    let tag = phash::algorithm_tag();
    let mut out = MAGIC.to_vec();
    out.extend((tag.len() as u32).to_le_bytes());
    out.extend(tag.as_bytes());
    out.extend(count.to_le_bytes());
    out
}

/// The bytes of one entry.
pub fn entry_bytes(sha: &str, fp: &Fingerprint) -> Vec<u8> {
    let h = &fp.hashes;
    let mut out = Vec::with_capacity(60 + 8 * h.windows.len() + fp.thumb.len());
    out.extend(sha_bytes(sha).unwrap_or([0; 32]));
    out.extend((h.w as u32).to_le_bytes());
    out.extend((h.h as u32).to_le_bytes());
    out.extend(h.probe.to_le_bytes());
    out.extend((h.windows.len() as u32).to_le_bytes());
    for w in &h.windows {
        out.extend(w.to_le_bytes());
    }
    out.extend(&fp.thumb);
    out
}

/// Streams entries in sha256 order into a file (the benchmark writes millions this way).
pub struct FileWriter {
    out: BufWriter<File>,
    path: PathBuf,
}

impl FileWriter {
    pub fn create(path: &Path, count: u64) -> Result<FileWriter> {
        let f = File::create(path).map_err(|e| Error::write(path, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, f);
        out.write_all(&header(count))
            .map_err(|e| Error::write(path, e))?;
        Ok(FileWriter {
            out,
            path: path.to_path_buf(),
        })
    }
    pub fn raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| Error::write(&self.path, e))
    }
    pub fn finish(mut self) -> Result<()> {
        self.out.flush().map_err(|e| Error::write(&self.path, e))
    }
}

/// Fingerprints collected while a stage decodes images in parallel: each entry goes to an
/// anonymous temp file as soon as it is made (112k thumbnails would be 3 GB in memory), and
/// [`Spill::write`] copies the kept ones into the bag in sha256 order.
pub struct Spill {
    file: Mutex<(File, u64)>,
    at: Mutex<BTreeMap<[u8; 32], (u64, usize)>>,
}

impl Spill {
    pub fn new() -> Result<Spill> {
        let f = tempfile::tempfile().map_err(|e| Error::write(&std::env::temp_dir(), e))?;
        Ok(Spill {
            file: Mutex::new((f, 0)),
            at: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn add(&self, sha: &str, fp: &Fingerprint) -> Result<()> {
        let Some(key) = sha_bytes(sha) else {
            return Ok(());
        };
        let bytes = entry_bytes(sha, fp);
        let off = {
            let mut g = self.file.lock().expect("spill lock");
            let off = g.1;
            g.0.write_all(&bytes)
                .map_err(|e| Error::write(&std::env::temp_dir(), e))?;
            g.1 += bytes.len() as u64;
            off
        };
        self.at
            .lock()
            .expect("spill lock")
            .insert(key, (off, bytes.len()));
        Ok(())
    }

    /// Write the entries whose sha256 is in `keep` (all when None) to `path`.
    pub fn write(
        self,
        path: &Path,
        keep: Option<&std::collections::BTreeSet<String>>,
    ) -> Result<()> {
        let at = self.at.into_inner().expect("spill lock");
        let (mut f, _) = self.file.into_inner().expect("spill lock");
        let chosen: Vec<(u64, usize)> = at
            .iter()
            .filter(|(k, _)| keep.is_none_or(|s| s.contains(&hex::encode(k))))
            .map(|(_, v)| *v)
            .collect();
        let tmp = std::env::temp_dir();
        let mut w = FileWriter::create(path, chosen.len() as u64)?;
        let mut buf = Vec::new();
        for (off, len) in chosen {
            buf.resize(len, 0);
            f.seek(SeekFrom::Start(off))
                .and_then(|_| f.read_exact(&mut buf))
                .map_err(|e| Error::read(&tmp, e))?;
            w.raw(&buf)?;
        }
        w.finish()
    }
}

/// One cached entry: the hashes in memory, the thumbnail by offset.
#[derive(Debug, Clone)]
pub struct Cached {
    pub hashes: Hashes,
    thumb_at: u64,
}

/// An opened cache: every entry's hashes, thumbnails read on demand.
pub struct CacheFile {
    path: PathBuf,
    file: File,
    entries: HashMap<[u8; 32], Cached>,
}

/// Why a cache file was not used at all.
pub type Refusal = String;

impl CacheFile {
    /// Open `bag/data/fingerprints.bin`: Ok(None) when absent, Ok(Err(why)) when it cannot be
    /// trusted (other hash constants, truncated, malformed), Err on an I/O failure.
    pub fn open(bag: &Path) -> Result<Option<std::result::Result<CacheFile, Refusal>>> {
        let path = bag.join("data").join(FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let file = File::open(&path).map_err(|e| Error::read(&path, e))?;
        match Self::index(&file) {
            Ok(entries) => Ok(Some(Ok(CacheFile {
                path,
                file,
                entries,
            }))),
            Err(why) => Ok(Some(Err(format!("{}: {why}", path.display())))),
        }
    }

    fn index(file: &File) -> std::result::Result<HashMap<[u8; 32], Cached>, String> {
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        let mut r = BufReader::with_capacity(1 << 20, file);
        let io = |e: std::io::Error| format!("truncated or unreadable ({e})");
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic).map_err(io)?;
        if &magic != MAGIC {
            return Err("not a prep fingerprint file (bad magic)".into());
        }
        let tag_len = read_u32(&mut r).map_err(io)? as usize;
        if tag_len > 4096 {
            return Err("malformed header".into());
        }
        let mut tag = vec![0u8; tag_len];
        r.read_exact(&mut tag).map_err(io)?;
        if tag != phash::algorithm_tag().as_bytes() {
            return Err(format!(
                "made with other hash constants ({:?}; this prep uses {:?})",
                String::from_utf8_lossy(&tag),
                phash::algorithm_tag()
            ));
        }
        let count = read_u64(&mut r).map_err(io)?;
        let mut pos = 8 + 4 + tag_len as u64 + 8;
        let mut entries = HashMap::with_capacity(count.min(1 << 24) as usize);
        for _ in 0..count {
            let mut sha = [0u8; 32];
            r.read_exact(&mut sha).map_err(io)?;
            let w = read_u32(&mut r).map_err(io)? as usize;
            let h = read_u32(&mut r).map_err(io)? as usize;
            let probe = read_u64(&mut r).map_err(io)?;
            let n = read_u32(&mut r).map_err(io)? as usize;
            let thumb_at = pos + 32 + 4 + 4 + 8 + 4 + 8 * n as u64;
            let end = thumb_at + (w * h) as u64;
            if end > len || n > 1 << 20 {
                return Err("truncated or malformed entry".into());
            }
            let mut raw = vec![0u8; 8 * n];
            r.read_exact(&mut raw).map_err(io)?;
            let windows = raw
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect();
            r.seek_relative((w * h) as i64).map_err(io)?;
            pos = end;
            entries.insert(
                sha,
                Cached {
                    hashes: Hashes {
                        w,
                        h,
                        probe,
                        windows,
                    },
                    thumb_at,
                },
            );
        }
        if pos != len {
            return Err("trailing bytes after the last entry".into());
        }
        Ok(entries)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry for an image with this sha256 and size, if the file holds one that fits.
    pub fn get(&self, sha: &str, width: u32, height: u32) -> Option<&Cached> {
        let c = self.entries.get(&sha_bytes(sha)?)?;
        let (w, h) = phash::thumb_size(width, height);
        let fits = (c.hashes.w, c.hashes.h) == (w, h)
            && c.hashes.windows.len() == phash::window_count(w, h);
        fits.then_some(c)
    }

    /// Entries naming no image of `shas`: a sign of a stale file.
    pub fn strangers<'a>(&self, shas: impl IntoIterator<Item = &'a str>) -> usize {
        let known: std::collections::HashSet<[u8; 32]> =
            shas.into_iter().filter_map(sha_bytes).collect();
        self.entries.keys().filter(|k| !known.contains(*k)).count()
    }

    pub fn thumb(&self, c: &Cached) -> Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; c.hashes.w * c.hashes.h];
        self.file
            .read_exact_at(&mut buf, c.thumb_at)
            .map_err(|e| Error::read(&self.path, e))?;
        Ok(buf)
    }
}

fn read_u32(r: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64(r: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{DynamicImage, GrayImage, Luma};

    fn fp(k: u8, w: u32, h: u32) -> Fingerprint {
        let img = GrayImage::from_fn(w, h, |x, y| {
            Luma([((x * 7 + y * 3) as u8).wrapping_mul(k).wrapping_add(k)])
        });
        Fingerprint::new(&DynamicImage::ImageLuma8(img))
    }

    fn sha(k: u8) -> String {
        hex::encode([k; 32])
    }

    #[test]
    fn entries_round_trip_and_only_fitting_ones_are_used() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("data")).unwrap();
        let spill = Spill::new().unwrap();
        let (a, b) = (fp(3, 300, 200), fp(5, 120, 90));
        spill.add(&sha(2), &b).unwrap();
        spill.add(&sha(1), &a).unwrap();
        spill.add(&sha(9), &a).unwrap();
        let keep: std::collections::BTreeSet<String> = [sha(1), sha(2)].into();
        spill
            .write(&t.path().join("data").join(FILE), Some(&keep))
            .unwrap();
        let c = CacheFile::open(t.path()).unwrap().unwrap().unwrap();
        assert_eq!(c.len(), 2);
        let e = c.get(&sha(1), 300, 200).expect("entry a");
        assert_eq!(e.hashes, a.hashes);
        assert_eq!(c.thumb(e).unwrap(), a.thumb);
        let e = c.get(&sha(2), 120, 90).expect("entry b");
        assert_eq!(c.thumb(e).unwrap(), b.thumb);
        // A record of another size, or another sha, gets no entry.
        assert!(c.get(&sha(1), 301, 200).is_none());
        assert!(c.get(&sha(9), 300, 200).is_none());
        assert_eq!(c.strangers([sha(1).as_str()]), 1);
    }

    #[test]
    fn a_damaged_or_foreign_file_is_refused_not_trusted() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("data")).unwrap();
        assert!(CacheFile::open(t.path()).unwrap().is_none());
        let path = t.path().join("data").join(FILE);
        let mut bytes = header(1);
        bytes.extend(entry_bytes(&sha(1), &fp(3, 64, 64)));
        std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        let why = CacheFile::open(t.path()).unwrap().unwrap().err().unwrap();
        assert!(why.contains("truncated"), "{why}");
        let mut other = bytes.clone();
        let k = 8 + 4 + 7; // inside the tag
        other[k] ^= 1;
        std::fs::write(&path, &other).unwrap();
        let why = CacheFile::open(t.path()).unwrap().unwrap().err().unwrap();
        assert!(why.contains("other hash constants"), "{why}");
        std::fs::write(&path, &bytes).unwrap();
        assert!(CacheFile::open(t.path()).unwrap().unwrap().is_ok());
    }
}
