//! `prep export`: hand a split bag to PyTorch's own data engines. WebDataset shards (what
//! `webdataset`, `wids`, Hugging Face `datasets` and torchrun/DDP jobs read) in a bag of their
//! own, so the export is verifiable and traceable like every stage.
//!
//! Layout of the output bag:
//!
//! ```text
//! data/{split}-000000.tar ...   uncompressed ustar shards, samples shuffled with the seed
//! data/{split}.json             wids index (wids-shard-index-v1, exact nsamples per shard)
//! data/samples.csv              key → split, shard, id, sha256 (the shard's member names)
//! data/README.md                Hugging Face dataset card: load_dataset("OUT/data") works
//! data/provenance.json
//! ```
//!
//! Each sample is three members: `<key>.<png|jpg>` (the split bag's bytes, unchanged),
//! `<key>.cls` (class index, ASCII) and `<key>.json` (id, patient_id, source, sha256, label,
//! split, group). WebDataset ends a key at the first dot of the member name and real ids hold
//! dots (Cohen's `radiol.2020200490.fig3`), so the key is `s<nnnnnnn>_<id with [^A-Za-z0-9_-]
//! as _>`, cut short to keep member names under 100 bytes (ustar's name field); the real id is
//! in the json.

use crate::error::{Error, Result};
use crate::manifest::{
    manifest_sha256, verify_bag, write_csv, BagWriter, ColumnType, CroissantSpec, FinishedBag,
    InputRef, Provenance, StageInfo,
};
use crate::split::{assign::seeded, SplitRecord};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Webdataset,
}

/// A checked `prep export` invocation.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    pub bag: PathBuf,
    pub out: PathBuf,
    pub format: Format,
    /// Largest shard in bytes (a shard holds at least one sample, whatever its size).
    pub shard_size: u64,
    /// At least this many shards per split (fewer only when a split has fewer samples), so
    /// that ranks × loader workers each get shards.
    pub min_shards: usize,
    pub seed: u64,
    pub force: bool,
    pub argv: Vec<String>,
}

/// What an export wrote.
#[derive(Debug)]
pub struct ExportOutcome {
    pub bag: FinishedBag,
    /// Per split (in split order): (name, samples, shards).
    pub splits: Vec<(String, usize, usize)>,
    pub classes: Vec<String>,
}

/// One sample as exported.
#[derive(Debug, Clone, Serialize)]
struct SampleRow {
    key: String,
    split: String,
    shard: String,
    id: String,
    class: String,
    cls: usize,
    sha256: String,
    bytes: u64,
}

const SAMPLE_COLUMNS: &[&str] = &[
    "key", "split", "shard", "id", "class", "cls", "sha256", "bytes",
];

/// The sample json.
#[derive(Serialize)]
struct SampleJson<'a> {
    id: &'a str,
    patient_id: &'a str,
    source: &'a str,
    sha256: &'a str,
    label: &'a str,
    cls: usize,
    split: &'a str,
    group: &'a str,
    subclass: &'a str,
}

/// Tar member size: 512 header + data rounded up to 512.
fn member_size(n: u64) -> u64 {
    512 + n.div_ceil(512) * 512
}

/// A WebDataset key: no dots (the key ends at the first), filesystem- and URL-safe, unique by
/// its running number, short enough that `<key>.json` stays under 100 bytes.
pub fn sample_key(n: usize, id: &str) -> String {
    let safe: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(72)
        .collect();
    format!("s{n:07}_{safe}")
}

fn read_split_records(bag: &Path) -> Result<Vec<SplitRecord>> {
    let path = bag.join("data").join("records.csv");
    let mut rdr = csv::Reader::from_path(&path).map_err(|source| Error::Csv {
        path: path.clone(),
        source,
    })?;
    let mut out = Vec::new();
    for (n, row) in rdr.deserialize::<SplitRecord>().enumerate() {
        let r = row.map_err(|e| Error::BadRow {
            path: path.clone(),
            row: n as u64 + 2,
            reason: format!(
                "not a split bag's record ({e}); export takes a bag made by prep split"
            ),
        })?;
        out.push(r);
    }
    if out.is_empty() {
        return Err(Error::bad_input(&path, "no images to export"));
    }
    Ok(out)
}

/// Split order as a split bag has it: train, val, test, then any other, by name.
fn split_names(records: &[SplitRecord]) -> Vec<String> {
    let names: BTreeSet<&str> = records.iter().map(|r| r.split.as_str()).collect();
    let rank = |s: &str| match s {
        "train" => 0,
        "val" => 1,
        "test" => 2,
        _ => 3,
    };
    let mut v: Vec<String> = names.into_iter().map(String::from).collect();
    v.sort_by(|a, b| (rank(a), a).cmp(&(rank(b), b)));
    v
}

/// Samples of one split in seeded order: by a hash of (seed, id, sha256), not by class, so no
/// shard holds one class only.
fn shuffled<'a>(records: &'a [SplitRecord], split: &str, seed: u64) -> Vec<&'a SplitRecord> {
    let mut v: Vec<(&SplitRecord, [u8; 32])> = records
        .iter()
        .filter(|r| r.split == split)
        .map(|r| {
            (
                r,
                seeded(seed, "export", &format!("{}\u{0}{}", r.id, r.sha256)),
            )
        })
        .collect();
    v.sort_by(|a, b| (a.1, &a.0.path).cmp(&(b.1, &b.0.path)));
    v.into_iter().map(|x| x.0).collect()
}

/// Cut `sizes` (bytes per sample, in order) into contiguous shards: greedy up to `max_bytes`,
/// then, if that gives fewer than `min_shards`, equal counts over min(min_shards, n) shards.
/// Returns the number of samples in each shard.
pub fn plan_shards(sizes: &[u64], max_bytes: u64, min_shards: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let (mut n, mut bytes) = (0usize, 0u64);
    for &s in sizes {
        if n > 0 && bytes + s > max_bytes {
            out.push(n);
            (n, bytes) = (0, 0);
        }
        n += 1;
        bytes += s;
    }
    if n > 0 {
        out.push(n);
    }
    let want = min_shards.min(sizes.len());
    if out.len() < want {
        let (q, r) = (sizes.len() / want, sizes.len() % want);
        out = (0..want).map(|k| q + usize::from(k < r)).collect();
    }
    out
}

fn extension(path: &str) -> String {
    match path.rsplit_once('.') {
        Some((_, e)) if !e.contains('/') => e.to_ascii_lowercase(),
        _ => "img".into(),
    }
}

fn tar_header(name: &str, size: u64) -> Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name)
        .map_err(|e| Error::Usage(format!("tar member name {name:?}: {e}")))?;
    h.set_size(size);
    h.set_mode(0o644);
    // Fixed owner and time: same inputs, same shard bytes.
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

/// Write one shard: every sample's image, class and json members, in order.
fn write_shard(bag: &Path, path: &Path, samples: &[(String, &SplitRecord, usize)]) -> Result<()> {
    let f = std::fs::File::create(path).map_err(|e| Error::write(path, e))?;
    let mut b = tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, f));
    let werr = |e: std::io::Error| Error::write(path, e);
    for (key, r, cls) in samples {
        let src = crate::split::safe_bag_path(bag, &r.path)?;
        let bytes = std::fs::read(&src).map_err(|e| Error::read(&src, e))?;
        if crate::manifest::hash_bytes(&bytes) != r.sha256 {
            return Err(Error::bad_input(
                &src,
                "file does not match the sha256 of its record",
            ));
        }
        let json = serde_json::to_vec(&SampleJson {
            id: &r.id,
            patient_id: &r.patient_id,
            source: &r.source,
            sha256: &r.sha256,
            label: &r.class,
            cls: *cls,
            split: &r.split,
            group: &r.group,
            subclass: &r.subclass,
        })
        .expect("json");
        let cls_text = cls.to_string();
        for (ext, data) in [
            (extension(&r.path), &bytes[..]),
            ("cls".to_string(), cls_text.as_bytes()),
            ("json".to_string(), &json[..]),
        ] {
            let name = format!("{key}.{ext}");
            debug_assert!(name.len() < 100);
            let h = tar_header(&name, data.len() as u64)?;
            b.append(&h, data).map_err(werr)?;
        }
    }
    let mut w = b.into_inner().map_err(werr)?;
    w.flush().map_err(werr)?;
    Ok(())
}

/// The wids index of one split: shard names relative to the index, exact sample counts.
fn wids_index(split: &str, shards: &[(String, usize, u64)]) -> Vec<u8> {
    let v = serde_json::json!({
        "__kind__": "wids-shard-index-v1",
        "wids_version": 1,
        "name": split,
        "shardlist": shards
            .iter()
            .map(|(url, n, size)| serde_json::json!({"url": url, "nsamples": n, "filesize": size}))
            .collect::<Vec<_>>(),
    });
    let mut out = serde_json::to_vec_pretty(&v).expect("json");
    out.push(b'\n');
    out
}

pub fn run(cfg: &ExportConfig) -> Result<ExportOutcome> {
    verify_bag(&cfg.bag)?.into_result(&cfg.bag)?;
    let records = read_split_records(&cfg.bag)?;
    let mut prov = Provenance::new("export", cfg.argv.clone(), &cfg.out);
    prov.seed = Some(cfg.seed);
    prov.inputs.push(InputRef {
        kind: "bag".into(),
        path: cfg.bag.to_string_lossy().into_owned(),
        sha256: manifest_sha256(&cfg.bag)?,
    });
    // Class indices as torchvision's ImageFolder (and prep train) give them: sorted names.
    let classes: Vec<String> = records
        .iter()
        .map(|r| r.class.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let cls_of = |c: &str| classes.iter().position(|x| x == c).expect("class");
    let writer = BagWriter::create(&cfg.out, cfg.force)?;
    let mut rows: Vec<SampleRow> = Vec::new();
    let mut summary = Vec::new();
    let mut split_params = BTreeMap::new();
    let mut next_key = 0usize;
    for split in split_names(&records) {
        let order = shuffled(&records, &split, cfg.seed);
        let samples: Vec<(String, &SplitRecord, usize)> = order
            .into_iter()
            .map(|r| {
                next_key += 1;
                (sample_key(next_key - 1, &r.id), r, cls_of(&r.class))
            })
            .collect();
        let sizes: Vec<u64> = samples
            .iter()
            .map(|(k, r, c)| {
                let json_guess = 400 + r.id.len() as u64 + k.len() as u64;
                member_size(r.bytes)
                    + member_size(c.to_string().len() as u64)
                    + member_size(json_guess)
            })
            .collect();
        let plan = plan_shards(&sizes, cfg.shard_size, cfg.min_shards);
        let mut shards = Vec::new();
        let mut at = 0;
        for (s, &n) in plan.iter().enumerate() {
            let name = format!("{split}-{s:06}.tar");
            let path = writer.staged_path(&name);
            let part = &samples[at..at + n];
            write_shard(&cfg.bag, &path, part)?;
            let size = std::fs::metadata(&path)
                .map_err(|e| Error::read(&path, e))?
                .len();
            for (key, r, cls) in part {
                rows.push(SampleRow {
                    key: key.clone(),
                    split: split.clone(),
                    shard: name.clone(),
                    id: r.id.clone(),
                    class: r.class.clone(),
                    cls: *cls,
                    sha256: r.sha256.clone(),
                    bytes: r.bytes,
                });
            }
            shards.push((name, n, size));
            at += n;
        }
        writer.write_payload(&format!("{split}.json"), &wids_index(&split, &shards))?;
        split_params.insert(
            split.clone(),
            serde_json::json!({"samples": samples.len(), "shards": shards.len()}),
        );
        summary.push((split.clone(), samples.len(), shards.len()));
    }
    prov.param("format", cfg.format)
        .param("shard_size", cfg.shard_size)
        .param("min_shards", cfg.min_shards)
        .param("classes", &classes)
        .param("splits", &split_params);
    let formats: BTreeSet<String> = records.iter().map(|r| extension(&r.path)).collect();
    writer.write_payload("README.md", &dataset_card(&summary, &classes, &formats))?;
    writer.write_payload("samples.csv", &write_csv(&rows, SAMPLE_COLUMNS)?)?;
    writer.write_payload("provenance.json", &prov.to_bytes())?;
    let info = StageInfo {
        name: "prep-export".into(),
        description: format!(
            "{} images of {} as WebDataset shards ({}), shuffled with seed {}; classes {}. data/<split>.json are wids indices, data/samples.csv maps each sample key to its image id.",
            rows.len(),
            cfg.bag.display(),
            summary
                .iter()
                .map(|(s, n, k)| format!("{s}: {n} samples in {k} shards"))
                .collect::<Vec<_>>()
                .join(", "),
            cfg.seed,
            classes.join(", ")
        ),
        croissant: CroissantSpec {
            license: "per image, as recorded by the input bag".into(),
            url: String::new(),
            cite_as: String::new(),
            table: "data/samples.csv".into(),
            columns: sample_columns(),
            image_globs: vec![("data/*.tar".into(), "application/x-tar".into())],
        },
    };
    let bag = writer.finish(info)?;
    Ok(ExportOutcome {
        bag,
        splits: summary,
        classes,
    })
}

/// A Hugging Face dataset card (YAML front matter): `datasets.load_dataset("OUT/data")` gives
/// the splits, one Image column per image format (None where a sample has the other), `cls` as
/// a ClassLabel with the class names, and the json as a struct. Without it, `load_dataset(
/// "webdataset", data_files=...)` infers columns from the first samples and refuses a split
/// that mixes PNG and JPEG members.
fn dataset_card(
    splits: &[(String, usize, usize)],
    classes: &[String],
    formats: &BTreeSet<String>,
) -> Vec<u8> {
    let q = |s: &str| serde_json::to_string(s).expect("json string"); // JSON strings are YAML
    let mut y = String::from("---\nconfigs:\n- config_name: default\n  data_files:\n");
    for (split, _, _) in splits {
        y += &format!(
            "  - split: {}\n    path: {}\n",
            q(split),
            q(&format!("{split}-*.tar"))
        );
    }
    y += "dataset_info:\n  features:\n";
    for f in formats {
        y += &format!("  - name: {}\n    dtype: image\n", q(f));
    }
    y += "  - name: cls\n    dtype:\n      class_label:\n        names:\n";
    for (k, c) in classes.iter().enumerate() {
        y += &format!("          '{k}': {}\n", q(c));
    }
    y += "  - name: json\n    struct:\n";
    for (name, t) in [
        ("id", "string"),
        ("patient_id", "string"),
        ("source", "string"),
        ("sha256", "string"),
        ("label", "string"),
        ("cls", "int64"),
        ("split", "string"),
        ("group", "string"),
        ("subclass", "string"),
    ] {
        y += &format!("    - name: {name}\n      dtype: {t}\n");
    }
    y += "  splits:\n";
    for (split, n, _) in splits {
        y += &format!("  - name: {}\n    num_examples: {n}\n", q(split));
    }
    y += "---\n\n# prep export (WebDataset shards)\n\nMade by `prep export`; see ../data/provenance.json. Load with\n`datasets.load_dataset(\"<this folder>\")`, `webdataset.WebDataset(\"<split>-{000000..N}.tar\")`\nor `wids.ShardListDataset(\"<split>.json\")`.\n";
    y.into_bytes()
}

fn sample_columns() -> Vec<(String, ColumnType, String)> {
    use ColumnType::*;
    SAMPLE_COLUMNS
        .iter()
        .map(|c| {
            let (t, d) = match *c {
                "key" => (
                    Text,
                    "WebDataset sample key (member names are <key>.<ext>).",
                ),
                "split" => (Text, "Split of the sample."),
                "shard" => (Text, "Shard file under data/."),
                "id" => (Text, "Image id in the split bag."),
                "class" => (Text, "Class folder name in the split bag."),
                "cls" => (
                    Integer,
                    "Class index (sorted class names), the .cls member.",
                ),
                "sha256" => (Text, "SHA-256 of the image member."),
                _ => (Integer, "Size of the image member in bytes."),
            };
            (c.to_string(), t, d.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_no_dots_and_member_names_fit_ustar() {
        let k = sample_key(12, "radiol.2020200490.fig3");
        assert_eq!(k, "s0000012_radiol_2020200490_fig3");
        let long = "x.".repeat(200);
        let k = sample_key(9_999_999, &long);
        assert!(!k.contains('.'));
        assert!(format!("{k}.json").len() < 100, "{}", k.len());
    }

    #[test]
    fn shards_respect_size_then_minimum_count() {
        assert_eq!(plan_shards(&[10, 10, 10, 10, 10], 25, 1), vec![2, 2, 1]);
        // One sample bigger than a shard still gets a shard of its own.
        assert_eq!(plan_shards(&[100, 10], 25, 1), vec![1, 1]);
        assert_eq!(plan_shards(&[1; 10], 1000, 4), vec![3, 3, 2, 2]);
        assert_eq!(plan_shards(&[1; 3], 1000, 8), vec![1, 1, 1]);
        assert_eq!(plan_shards(&[], 1000, 2), Vec::<usize>::new());
    }
}
