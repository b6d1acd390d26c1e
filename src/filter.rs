//! `prep filter`: pick the images a study wants from one source, check each file, and write
//! them with their records and every exclusion into a bag.

use crate::error::{Error, Result};
use crate::manifest::{
    describe_columns, hash_bytes, write_csv, BagWriter, ColumnType, CroissantSpec, Excluded,
    FinishedBag, InputRef, Provenance, Record, StageInfo, RECORD_COLUMNS,
};
use crate::progress;
use crate::source::{self, Candidate, Encoding, Kind, Locate, Selection, SourceDesc};
use crate::split::{fingerprints, phash::Fingerprint};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::{Component, Path, PathBuf};

/// Largest accepted image side. Chest X-rays are at most ~4300 px; a crafted header claiming
/// 100000×100000 is refused before any pixel memory is taken.
pub const MAX_SIDE: u32 = 16_384;
/// Largest decode allocation (bytes).
pub const MAX_ALLOC: u64 = 1 << 30;

/// A checked `prep filter` invocation.
#[derive(Debug, Clone)]
pub struct FilterConfig {
    pub source_arg: String,
    pub source: SourceDesc,
    pub dataset: PathBuf,
    /// Metadata table (table sources); None for folder sources.
    pub metadata: Option<PathBuf>,
    pub out: PathBuf,
    pub selection: Selection,
    pub exclude_list_file: Option<PathBuf>,
    pub encoding: Encoding,
    pub link: bool,
    pub force: bool,
    pub argv: Vec<String>,
    /// Set for DICOM sources (`[dicom]` in the description): how films are rendered and hashed.
    pub dicom: Option<crate::dicom::DicomOptions>,
}

/// What a filter run produced, for the summary table.
#[derive(Debug)]
pub struct FilterOutcome {
    pub bag: FinishedBag,
    pub kept: usize,
    pub excluded_by_reason: BTreeMap<String, usize>,
    pub warnings: Vec<String>,
}

/// The result of looking at one file.
struct Probe {
    sha256: String,
    bytes: u64,
    width: u32,
    height: u32,
}

/// Decode with the image crate's limits; only width and height are kept. The decode proves the
/// whole file is readable (a truncated file fails here), and the pixels are never re-encoded.
pub fn probe_image(bytes: &[u8]) -> std::result::Result<(u32, u32), (String, String)> {
    decode_checked(bytes).map(|img| (img.width(), img.height()))
}

/// The decode behind [`probe_image`], keeping the pixels (for the near-duplicate fingerprint).
pub fn decode_checked(bytes: &[u8]) -> std::result::Result<image::DynamicImage, (String, String)> {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    let reader = |bytes| {
        let mut r = image::ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| ("unreadable-image".to_string(), e.to_string()))?;
        if r.format().is_none() {
            return Err((
                "unreadable-image".to_string(),
                "not a recognised image format".to_string(),
            ));
        }
        r.limits(limits.clone());
        Ok(r)
    };
    let classify = |e: image::ImageError| match e {
        image::ImageError::Limits(l) => ("image-too-large".to_string(), l.to_string()),
        other => ("unreadable-image".to_string(), other.to_string()),
    };
    let r = reader(bytes)?;
    // The JPEG decoder fills a cut-off scan with grey instead of failing: check for the
    // end-of-image marker after the last start-of-scan ourselves.
    if r.format() == Some(image::ImageFormat::Jpeg) && !jpeg_complete(bytes) {
        return Err((
            "unreadable-image".into(),
            "truncated JPEG: no end-of-image marker after the last scan".into(),
        ));
    }
    let (w, h) = r.into_dimensions().map_err(classify)?;
    if w > MAX_SIDE || h > MAX_SIDE {
        return Err((
            "image-too-large".into(),
            format!("{w}x{h} exceeds {MAX_SIDE} px per side"),
        ));
    }
    if w == 0 || h == 0 {
        return Err((
            "unreadable-image".into(),
            format!("{w}x{h} image has no pixels"),
        ));
    }
    reader(bytes)?.decode().map_err(classify)
}

/// Entropy-coded data stuffs every 0xFF with 0x00, so 0xFFD9 after the last 0xFFDA can only be
/// the real end-of-image marker.
fn jpeg_complete(bytes: &[u8]) -> bool {
    let last = |m: u8| bytes.windows(2).rposition(|w| w[0] == 0xFF && w[1] == m);
    match (last(0xDA), last(0xD9)) {
        (Some(sos), Some(eoi)) => eoi > sos,
        _ => false,
    }
}

/// A metadata path made safe: relative, no `..`, no root, no drive. None when unsafe.
fn safe_relative(file: &str) -> Option<PathBuf> {
    if file.contains('\\') || file.contains('\0') {
        return None;
    }
    let p = Path::new(file);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Label names become folder names: keep them plain.
pub fn check_label(label: &str) -> Result<()> {
    let ok = !label.is_empty()
        && label.len() <= 64
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !label.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "label {label:?} must be letters, digits, '-' or '_' (it names a folder)"
        )))
    }
}

/// What the first steps of a filter run produced: the provenance so far, the
/// warnings, every candidate with its metadata verdict, and where each kept one's file is.
pub(crate) struct Located {
    pub prov: Provenance,
    pub warnings: Vec<String>,
    pub candidates: Vec<Candidate>,
    pub files: Vec<Option<PathBuf>>,
}

pub fn run(cfg: &FilterConfig) -> Result<FilterOutcome> {
    if let Some(opts) = &cfg.dicom {
        return crate::dicom::run(cfg, opts);
    }
    let Located {
        prov,
        warnings,
        mut candidates,
        files: located,
    } = read_and_locate(cfg)?;

    // Read, hash and decode every located file in parallel; order of results follows input.
    let todo: Vec<usize> = (0..candidates.len())
        .filter(|&i| located[i].is_some())
        .collect();
    // Each decoded image is fingerprinted for prep split's near-duplicate search on the way.
    let pb = progress::bar(todo.len() as u64, "checking");
    let spill = fingerprints::Spill::new()?;
    let probes: Vec<(usize, std::result::Result<Probe, (String, String)>)> = todo
        .par_iter()
        .map(|&i| {
            let path = located[i].as_ref().expect("located");
            let r = match std::fs::read(path) {
                Err(e) => Err(("unreadable-image".to_string(), format!("cannot read: {e}"))),
                Ok(bytes) => decode_checked(&bytes).map(|img| {
                    let probe = Probe {
                        sha256: hash_bytes(&bytes),
                        bytes: bytes.len() as u64,
                        width: img.width(),
                        height: img.height(),
                    };
                    (probe, Fingerprint::new(&img))
                }),
            };
            pb.inc(1);
            let r = match r {
                Ok((p, fp)) => {
                    spill.add(&p.sha256, &fp)?;
                    Ok(p)
                }
                Err(e) => Err(e),
            };
            Ok((i, r))
        })
        .collect::<Result<_>>()?;
    pb.finish_and_clear();

    // Sequential, in source order: drop exact duplicate files and give each kept file its name.
    let mut seen: BTreeMap<String, String> = BTreeMap::new(); // sha -> first file
    let mut taken: BTreeSet<String> = BTreeSet::new(); // lower-cased output paths
    let mut kept: Vec<(usize, Probe, String, String)> = Vec::new(); // idx, probe, rel path, id
    for (i, res) in probes {
        let cand = &mut candidates[i];
        match res {
            Err((code, detail)) => cand.drop(&code, detail),
            Ok(p) => {
                if let Some(first) = seen.get(&p.sha256) {
                    let d = format!("same bytes as {first}");
                    cand.drop("duplicate-file", d);
                    continue;
                }
                seen.insert(p.sha256.clone(), cand.file.clone());
                let label = cand.verdict.clone().expect("kept");
                let (rel, id) =
                    unique_name(&label, located[i].as_ref().expect("located"), &mut taken);
                kept.push((i, p, rel, id));
            }
        }
    }

    let writer = BagWriter::create(&cfg.out, cfg.force)?;
    let pb = progress::bar(kept.len() as u64, "copying");
    kept.par_iter()
        .map(|(i, p, rel, _)| {
            let src = located[*i].as_ref().expect("located");
            let bytes = std::fs::read(src).map_err(|e| Error::read(src, e))?;
            if hash_bytes(&bytes) != p.sha256 {
                return Err(Error::bad_input(
                    src,
                    "file changed while prep was reading it",
                ));
            }
            writer.add_file(src, &format!("images/{rel}"), &bytes, &p.sha256, cfg.link)?;
            pb.inc(1);
            Ok(())
        })
        .collect::<Result<()>>()?;
    pb.finish_and_clear();
    let kept_shas: BTreeSet<String> = kept.iter().map(|k| k.1.sha256.clone()).collect();
    spill.write(&writer.staged_path(fingerprints::FILE), Some(&kept_shas))?;

    let mut records: Vec<Record> = kept
        .iter()
        .map(|(i, p, rel, id)| {
            let c = &candidates[*i];
            Record {
                id: id.clone(),
                path: format!("data/images/{rel}"),
                sha256: p.sha256.clone(),
                bytes: p.bytes,
                width: p.width,
                height: p.height,
                source: cfg.source.name.clone(),
                patient_id: c.patient_id.clone(),
                view: c.view.clone(),
                label: c.verdict.clone().expect("kept"),
                finding: c.finding.clone(),
                source_file: c.file.clone(),
                source_row: c.source_row.clone(),
            }
        })
        .collect();
    records.sort_by(|a, b| a.path.cmp(&b.path));
    let records: Vec<(Record, FindingTerm)> = records
        .into_iter()
        .map(|r| {
            let term = finding_term(&cfg.source, &r.finding);
            (r, term)
        })
        .collect();

    let files: Vec<KeptFile> = records
        .iter()
        .map(|(r, _)| KeptFile {
            sha256: &r.sha256,
            source_file: &r.source_file,
            path: &r.path,
        })
        .collect();
    let header: Vec<&str> = RECORD_COLUMNS
        .iter()
        .chain(FILTER_COLUMNS)
        .copied()
        .collect();
    let out = FilterBag {
        candidates: &candidates,
        files: &files,
        header: &header,
        columns: record_columns(&header),
    };
    write_bag(cfg, writer, prov, &out, &records, warnings)
}

/// The column `prep filter` adds to the shared record columns.
pub const FILTER_COLUMNS: &[&str] = &["finding_term"];

/// Which term of the finding decided the label (`COVID-19` of `COVID-19, ARDS`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct FindingTerm {
    pub finding_term: String,
}

/// A table source judges the finding term by term ([`SourceDesc::judge`]); a folder source's
/// finding is its label.
fn finding_term(source: &SourceDesc, finding: &str) -> FindingTerm {
    let finding_term = match source.kind {
        Kind::Table => source.judge(finding).1,
        Kind::Folder => finding.to_string(),
    };
    FindingTerm { finding_term }
}

/// A kept image as the bag's listing and globs need it: the hash of the file read from the
/// dataset, its source path and its path in the bag.
pub(crate) struct KeptFile<'a> {
    pub sha256: &'a str,
    pub source_file: &'a str,
    pub path: &'a str,
}

/// What the last step of a filter run writes besides the records.
pub(crate) struct FilterBag<'a> {
    pub candidates: &'a [Candidate],
    pub files: &'a [KeptFile<'a>],
    pub header: &'a [&'a str],
    pub columns: Vec<(String, ColumnType, String)>,
}

/// The last step of every filter run: exclusions and parameters recorded, records.csv,
/// excluded.csv and provenance.json written, the bag finished.
pub(crate) fn write_bag<R: serde::Serialize>(
    cfg: &FilterConfig,
    writer: BagWriter,
    mut prov: Provenance,
    out: &FilterBag,
    records: &[R],
    warnings: Vec<String>,
) -> Result<FilterOutcome> {
    let (excluded, by_reason) = exclusions(out.candidates);
    record_parameters(
        cfg,
        &mut prov,
        out.files.iter().map(|f| (f.sha256, f.source_file)),
    );
    writer.write_payload("records.csv", &write_csv(records, out.header)?)?;
    writer.write_payload(
        "excluded.csv",
        &write_csv(&excluded, crate::manifest::EXCLUDED_COLUMNS)?,
    )?;
    writer.write_payload("provenance.json", &prov.to_bytes())?;
    let globs = crate::manifest::image_globs("data/images/**", out.files.iter().map(|f| f.path));
    let info = stage_info(cfg, records.len(), globs, out.columns.clone());
    let bag = writer.finish(info)?;
    Ok(FilterOutcome {
        bag,
        kept: records.len(),
        excluded_by_reason: by_reason,
        warnings,
    })
}

/// Every candidate dropped, in source order, and the count per reason.
fn exclusions(candidates: &[Candidate]) -> (Vec<Excluded>, BTreeMap<String, usize>) {
    let mut excluded: Vec<Excluded> = candidates
        .iter()
        .filter_map(|c| {
            c.verdict.as_ref().err().map(|(code, detail)| Excluded {
                source_row: c.source_row.clone(),
                file: c.file.clone(),
                reason: code.clone(),
                detail: detail.clone(),
            })
        })
        .collect();
    excluded.sort_by(|a, b| {
        let n = |s: &str| s.parse::<u64>().unwrap_or(u64::MAX);
        (n(&a.source_row), &a.file).cmp(&(n(&b.source_row), &b.file))
    });
    let mut by_reason = BTreeMap::new();
    for e in &excluded {
        *by_reason.entry(e.reason.clone()).or_insert(0usize) += 1;
    }

    (excluded, by_reason)
}

/// The parameters every filter run records; `files` are the kept (sha256, source_file) pairs,
/// the identity of a folder dataset.
fn record_parameters<'a>(
    cfg: &FilterConfig,
    prov: &mut Provenance,
    files: impl Iterator<Item = (&'a str, &'a str)>,
) {
    // A folder dataset has no metadata file: its identity is the list of files and hashes read.
    if cfg.source.kind == Kind::Folder {
        let listing: String = files.map(|(sha, f)| format!("{sha}  {f}\n")).collect();
        prov.inputs.push(InputRef {
            kind: "dataset".into(),
            path: cfg.dataset.to_string_lossy().into_owned(),
            sha256: hash_bytes(listing.as_bytes()),
        });
    }
    let keep: Vec<_> = cfg.selection.keep.iter().map(|c| c.label()).collect();
    prov.param("source", &cfg.source_arg)
        .param("dataset", cfg.dataset.to_string_lossy())
        .param(
            "metadata",
            cfg.metadata
                .as_ref()
                .map(|m| m.to_string_lossy().into_owned()),
        )
        .param("keep_labels", keep)
        .param("folder_label", &cfg.selection.folder_label)
        .param("require_pcr", cfg.selection.require_pcr)
        .param(
            "exclude_list",
            cfg.exclude_list_file
                .as_ref()
                .map(|m| m.to_string_lossy().into_owned()),
        )
        .param("encoding", cfg.encoding)
        .param("link", cfg.link)
        .param("max_image_side", MAX_SIDE)
        .param("max_decode_bytes", MAX_ALLOC);
}

/// Bag-level description of a filter bag (Croissant and bag-info).
fn stage_info(
    cfg: &FilterConfig,
    kept: usize,
    image_globs: Vec<(String, String)>,
    columns: Vec<(String, ColumnType, String)>,
) -> StageInfo {
    StageInfo {
        name: format!("prep-filter-{}", cfg.source.name),
        description: format!(
            "{} images from {} kept by prep filter (labels: {}); every dropped row is listed in data/excluded.csv with its reason.",
            kept,
            cfg.source.title,
            cfg.selection
                .folder_label
                .clone()
                .unwrap_or_else(|| cfg.selection.keep.iter().map(|c| c.label()).collect::<Vec<_>>().join(", "))
        ),
        croissant: CroissantSpec {
            license: cfg.source.license.clone(),
            url: cfg.source.url.clone(),
            cite_as: cfg.source.citation.clone(),
            table: "data/records.csv".into(),
            columns,
            image_globs,
        },
    }
}

/// Read the source's candidates, judge them on metadata, and find each one's file inside the
/// dataset root (never outside it).
pub(crate) fn read_and_locate(cfg: &FilterConfig) -> Result<Located> {
    let root = cfg
        .dataset
        .canonicalize()
        .map_err(|e| Error::read(&cfg.dataset, e))?;
    if !root.is_dir() {
        return Err(Error::bad_input(&cfg.dataset, "dataset is not a folder"));
    }
    let mut warnings = Vec::new();
    let mut prov = Provenance::new("filter", cfg.argv.clone(), &cfg.out);

    let mut candidates: Vec<Candidate> = match cfg.source.kind {
        Kind::Table => {
            let meta = cfg
                .metadata
                .as_ref()
                .expect("config resolves metadata for table sources");
            let raw = std::fs::read(meta).map_err(|e| Error::read(meta, e))?;
            let (text, warn) = source::decode_text(meta, &raw, cfg.encoding)?;
            warnings.extend(warn);
            prov.inputs.push(InputRef {
                kind: "metadata".into(),
                path: meta.to_string_lossy().into_owned(),
                sha256: hash_bytes(&raw),
            });
            source::read_table(&cfg.source, meta, &text, &cfg.selection)?
        }
        Kind::Folder => source::read_folder(&cfg.source, &root, &cfg.selection)?,
    };
    if let Some(list) = &cfg.exclude_list_file {
        let raw = std::fs::read(list).map_err(|e| Error::read(list, e))?;
        prov.inputs.push(InputRef {
            kind: "exclude-list".into(),
            path: list.to_string_lossy().into_owned(),
            sha256: hash_bytes(&raw),
        });
    }

    // Resolve each candidate's file inside the dataset root; never outside it.
    let index = if cfg.source.files.locate == Locate::Search {
        Some(file_index(&root)?)
    } else {
        None
    };
    let mut located: Vec<Option<PathBuf>> = vec![None; candidates.len()];
    for (cand, loc) in candidates.iter_mut().zip(located.iter_mut()) {
        if cand.verdict.is_err() {
            continue;
        }
        let Some(rel) = safe_relative(&cand.file) else {
            cand.drop(
                "unsafe-path",
                format!(
                    "path {:?} is absolute or leaves the dataset folder",
                    cand.file
                ),
            );
            continue;
        };
        let rel = match &index {
            Some(idx) => match rel
                .file_name()
                .and_then(|n| idx.get(&n.to_string_lossy().into_owned()))
            {
                Some(found) => found.clone(),
                None => {
                    cand.drop(
                        "file-missing",
                        format!("no file named {:?} under the dataset", cand.file),
                    );
                    continue;
                }
            },
            None => rel,
        };
        let full = root.join(&rel);
        match full.canonicalize() {
            Err(_) => cand.drop(
                "file-missing",
                format!("{} is not in the dataset folder", rel.display()),
            ),
            Ok(real) if !real.starts_with(&root) => cand.drop(
                "unsafe-path",
                format!("{:?} resolves outside the dataset folder", cand.file),
            ),
            Ok(real) if !real.is_file() => {
                cand.drop("file-missing", format!("{} is not a file", rel.display()))
            }
            Ok(real) => *loc = Some(real),
        }
    }

    Ok(Located {
        prov,
        warnings,
        candidates,
        files: located,
    })
}

fn record_columns(header: &[&str]) -> Vec<(String, ColumnType, String)> {
    describe_columns(header, |c| {
        (c == "finding_term").then_some((
            ColumnType::Text,
            "The term of the finding that decided the label (a finding is split into terms at the source's term separators: `COVID-19` of `COVID-19, ARDS`).",
        ))
    })
}

/// `label/<file name>`, made unique (case-insensitively, for case-folding filesystems) by a
/// numeric suffix only when two files share a name. Returns (path under images/, id).
pub(crate) fn unique_name(
    label: &str,
    src: &Path,
    taken: &mut BTreeSet<String>,
) -> (String, String) {
    let name = src
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (stem, ext) = match name.rfind('.') {
        Some(k) if k > 0 => (name[..k].to_string(), name[k..].to_string()),
        _ => (name.clone(), String::new()),
    };
    let mut n = 1;
    loop {
        let s = if n == 1 {
            stem.clone()
        } else {
            format!("{stem}-{n}")
        };
        let rel = format!("{label}/{s}{ext}");
        // ids are unique across labels too: masks and splits look images up by id.
        let id_key = format!("id:{}", s.to_lowercase());
        if !taken.contains(&rel.to_lowercase()) && !taken.contains(&id_key) {
            taken.insert(rel.to_lowercase());
            taken.insert(id_key);
            return (rel, s);
        }
        n += 1;
    }
}

/// Map file name → path relative to root, for sources that scatter files over sub-folders.
/// The first path in sorted order wins when two share a name.
fn file_index(root: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut idx = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).sort_by_file_name() {
        let entry = entry.map_err(|e| Error::read(root, e.into()))?;
        if entry.file_type().is_file() {
            let rel = entry
                .path()
                .strip_prefix(root)
                .expect("under root")
                .to_path_buf();
            idx.entry(entry.file_name().to_string_lossy().into_owned())
                .or_insert(rel);
        }
    }
    Ok(idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_paths_are_refused() {
        for bad in [
            "/etc/passwd",
            "../x.png",
            "images/../../x.png",
            "a\\..\\b.png",
            "",
        ] {
            assert!(safe_relative(bad).is_none(), "{bad}");
        }
        assert_eq!(
            safe_relative("images/./a.png").unwrap(),
            PathBuf::from("images/a.png")
        );
    }

    #[test]
    fn names_are_made_unique_only_on_collision() {
        let mut taken = BTreeSet::new();
        assert_eq!(
            unique_name("covid", Path::new("/a/x.png"), &mut taken).0,
            "covid/x.png"
        );
        assert_eq!(
            unique_name("covid", Path::new("/b/X.png"), &mut taken),
            ("covid/X-2.png".into(), "X-2".into())
        );
        assert_eq!(
            unique_name("covid", Path::new("/b/y.png"), &mut taken).0,
            "covid/y.png"
        );
    }

    #[test]
    fn labels_must_be_plain() {
        assert!(check_label("healthy").is_ok());
        for bad in ["", "../x", "a/b", "-x", "a b"] {
            assert!(check_label(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn huge_header_is_refused_without_allocating() {
        let png = crate::synth::png_header_only(100_000, 100_000);
        let (code, _) = probe_image(&png).unwrap_err();
        assert_eq!(code, "image-too-large");
    }
}
