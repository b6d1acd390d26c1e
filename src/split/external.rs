//! `prep split --external BAG…`: whole bags of sources the model must never see, put in the
//! test split of the output, recorded in the provenance as `external_bags` (and by each row's
//! `source_bag`), so `prep evaluate` reports them apart from the internal test images.
//!
//! External images are never balanced or split: every record of the bag goes to `test`. An
//! external image whose bytes equal a kept internal image's, or whose (source, patient id) is
//! an internal patient's, would leak: it is left out with the reason in excluded.csv; so is one
//! linked to an internal image by a patient alias, a cross-reference rule or a chain of such
//! links (`external-linked-patient`, the same closure `prep split` groups internal images by).

use super::phash::Fingerprint;
use super::steps::Summary;
use super::{safe_bag_path, ClassMode, SplitConfig, SplitExcluded, SplitRecord};
use crate::error::{Error, Result};
use crate::manifest::{
    manifest_sha256, read_records_with_source, verify_bag, BagWriter, InputRef, Provenance, Record,
    SourceValues,
};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// What the external bags add to the split.
#[derive(Default)]
pub(super) struct External {
    /// (source file, output record), sorted by output path.
    pub rows: Vec<(PathBuf, SplitRecord)>,
    pub excluded: Vec<SplitExcluded>,
    pub warnings: Vec<String>,
    /// Source columns by (source_bag, bag_row), carried into records.csv.
    pub sources: BTreeMap<(String, usize), SourceValues>,
}

fn folder_of(classes: ClassMode, label: &str) -> Option<&'static str> {
    use super::assign::Fine;
    let fine = Fine::ALL.into_iter().find(|f| f.label() == label)?;
    Some(classes.folder(fine))
}

/// Read, verify and place the external bags (`cfg.external`) beside the kept internal `rows`.
pub(super) fn place(
    cfg: &SplitConfig,
    rows: &[(usize, SplitRecord)],
    prov: &mut Provenance,
) -> Result<External> {
    let (bags, classes) = (&cfg.external, cfg.classes);
    let internal: Vec<&SplitRecord> = rows.iter().map(|(_, r)| r).collect();
    // Output paths already used, lower-cased and without `data/`, as name_outputs keeps them.
    let mut taken: BTreeSet<String> = internal
        .iter()
        .map(|r| {
            r.path
                .strip_prefix("data/")
                .unwrap_or(&r.path)
                .to_lowercase()
        })
        .collect();
    let taken = &mut taken;
    let mut out = External::default();
    if bags.is_empty() {
        return Ok(out);
    }
    let shas: BTreeSet<&str> = internal.iter().map(|r| r.sha256.as_str()).collect();
    let patients: BTreeSet<(&str, &str)> = internal
        .iter()
        .filter(|r| !r.patient_id.is_empty())
        .map(|r| (r.source.as_str(), r.patient_id.as_str()))
        .collect();
    let sources: BTreeSet<&str> = internal.iter().map(|r| r.source.as_str()).collect();
    let mut read = Vec::new();
    let mut values = Vec::new();
    for bag in bags {
        verify_bag(bag)?.into_result(bag)?;
        let (records, v): (Vec<Record>, Vec<SourceValues>) =
            read_records_with_source(bag)?.into_iter().unzip();
        read.push(records);
        values.push(v);
    }
    let linked = linked_to_internal(cfg, &internal, &read);
    let mut names = Vec::new();
    for ((bag, values), (records, linked)) in
        bags.iter().zip(values).zip(read.into_iter().zip(linked))
    {
        let name = bag.to_string_lossy().into_owned();
        prov.inputs.push(InputRef {
            kind: "bag".into(),
            path: name.clone(),
            sha256: manifest_sha256(bag)?,
        });
        let mut seen_sources = BTreeSet::new();
        for (i, ((rec, link), values)) in records.into_iter().zip(linked).zip(values).enumerate() {
            let row = i + 2;
            out.sources.insert((name.clone(), row), values);
            let exclude = |reason: &str, detail: String| SplitExcluded {
                id: rec.id.clone(),
                source_bag: name.clone(),
                bag_row: row,
                class: rec.label.clone(),
                group: String::new(),
                reason: reason.into(),
                detail,
            };
            let folder = folder_of(classes, &rec.label).ok_or_else(|| Error::BadRow {
                path: bag.join("data/records.csv"),
                row: row as u64,
                reason: format!(
                    "label {:?}: an external image needs covid, healthy or diseased",
                    rec.label
                ),
            })?;
            if shas.contains(rec.sha256.as_str()) {
                out.excluded.push(exclude(
                    "external-duplicate",
                    "the same file is in the internal train/val/test images".into(),
                ));
                continue;
            }
            if patients.contains(&(rec.source.as_str(), rec.patient_id.as_str())) {
                out.excluded.push(exclude(
                    "external-patient-overlap",
                    format!(
                        "patient {} of {} is also among the internal images",
                        rec.patient_id, rec.source
                    ),
                ));
                continue;
            }
            if let Some(detail) = link {
                out.excluded
                    .push(exclude("external-linked-patient", detail));
                continue;
            }
            if sources.contains(rec.source.as_str()) && seen_sources.insert(rec.source.clone()) {
                out.warnings.push(format!(
                    "external bag {name}: source {} is also an internal source, so this is not an external test of a new source",
                    rec.source
                ));
            }
            let src = safe_bag_path(bag, &rec.path)?;
            let rel = unique_path(taken, folder, &rec.id, &rec.path);
            let who = if rec.patient_id.is_empty() {
                format!("image {}", rec.id)
            } else {
                rec.patient_id.clone()
            };
            out.rows.push((
                src,
                SplitRecord {
                    split: "test".into(),
                    class: folder.into(),
                    subclass: rec.label.clone(),
                    group: format!("external:{}:{who}", rec.source),
                    id: rec.id.clone(),
                    path: format!("data/{rel}"),
                    sha256: rec.sha256.clone(),
                    bytes: rec.bytes,
                    width: rec.width,
                    height: rec.height,
                    source: rec.source.clone(),
                    patient_id: rec.patient_id.clone(),
                    view: rec.view.clone(),
                    label: rec.label.clone(),
                    finding: rec.finding.clone(),
                    source_file: rec.source_file.clone(),
                    source_row: rec.source_row.clone(),
                    source_bag: name.clone(),
                    bag_row: row,
                },
            ));
        }
        names.push(name);
    }
    out.rows.sort_by(|a, b| a.1.path.cmp(&b.1.path));
    prov.param("external_bags", &names);
    Ok(out)
}

/// For each external record (bag by bag, row by row): why it is the same patient or image as a
/// kept internal one by a link the exact checks above miss (a patient alias from the source
/// description, a cross-reference rule, or a chain of links through other images), or None.
/// The same union-find closure `prep split` groups internal images with.
fn linked_to_internal(
    cfg: &SplitConfig,
    internal: &[&SplitRecord],
    external: &[Vec<crate::manifest::Record>],
) -> Vec<Vec<Option<String>>> {
    use super::group::{self, Member};
    let mut members: Vec<Member> = internal
        .iter()
        .map(|r| Member {
            source: r.source.clone(),
            patient_id: r.patient_id.clone(),
            sha256: r.sha256.clone(),
            stem: super::file_stem(&r.source_file),
            declared: String::new(),
        })
        .collect();
    let n = members.len();
    for rec in external.iter().flatten() {
        members.push(Member {
            source: rec.source.clone(),
            patient_id: rec.patient_id.clone(),
            sha256: rec.sha256.clone(),
            stem: super::file_stem(&rec.source_file),
            declared: String::new(),
        });
    }
    let sources: BTreeSet<String> = members.iter().map(|m| m.source.clone()).collect();
    // Sources without a description have no aliases; the split already warned about them.
    let aliases = super::aliases_for(&sources, &mut Vec::new());
    let mut links = group::record_links(&members, &aliases);
    links.extend(super::cross_reference_links(&members, &cfg.rules));
    let g = group::group(&members, links.clone());
    // Per group: one internal image in it, and the reasons of the links inside it.
    let mut internal_of: BTreeMap<&str, usize> = BTreeMap::new();
    for i in 0..n {
        internal_of.entry(g.group_of[i].as_str()).or_insert(i);
    }
    let mut reasons: BTreeMap<&str, BTreeSet<&'static str>> = BTreeMap::new();
    for l in &links {
        reasons
            .entry(g.group_of[l.a].as_str())
            .or_default()
            .insert(l.reason.as_str());
    }
    let mut k = n;
    external
        .iter()
        .map(|recs| {
            recs.iter()
                .map(|_| {
                    let gid = g.group_of[k].as_str();
                    k += 1;
                    let i = *internal_of.get(gid)?;
                    let why: Vec<&str> = reasons.get(gid).into_iter().flatten().copied().collect();
                    Some(format!(
                        "linked to internal image {} ({} patient {}) by {}",
                        internal[i].id,
                        internal[i].source,
                        internal[i].patient_id,
                        why.join(", ")
                    ))
                })
                .collect()
        })
        .collect()
}

/// `test/<folder>/<id><ext>`, with `-2`, `-3`, ... until unused (case-insensitively).
fn unique_path(taken: &mut BTreeSet<String>, folder: &str, id: &str, path: &str) -> String {
    let ext = match path.rsplit_once('.') {
        Some((_, e)) if !e.contains('/') => format!(".{}", e.to_ascii_lowercase()),
        _ => String::new(),
    };
    let base: String = id
        .chars()
        .map(|c| match c {
            c if c.is_ascii_alphanumeric() || "-_.".contains(c) => c,
            _ => '_',
        })
        .collect();
    (1..)
        .map(|n| match n {
            1 => format!("test/{folder}/{base}{ext}"),
            n => format!("test/{folder}/{base}-{n}{ext}"),
        })
        .find(|rel| taken.insert(rel.to_lowercase()))
        .expect("an unused name")
}

/// Leave out external images that are near duplicates of internal ones (perceptual hashes as
/// the split uses them; the internal images are read from the bag being written), then copy (or
/// link) the rest into the bag, checking each against its record's hash.
pub(super) fn copy(
    cfg: &SplitConfig,
    writer: &BagWriter,
    ext: &mut External,
    internal: &[(usize, SplitRecord)],
) -> Result<()> {
    let near = cfg.near_duplicates.then_some(cfg.rules.near_duplicates);
    let link = cfg.link;
    use rayon::prelude::*;
    if let (Some(p), false) = (near, ext.rows.is_empty()) {
        let n = internal.len();
        let files: Vec<PathBuf> = internal
            .iter()
            .map(|(_, r)| writer.staged_path(r.path.strip_prefix("data/").unwrap_or(&r.path)))
            .chain(ext.rows.iter().map(|(src, _)| src.clone()))
            .collect();
        let fps = fingerprints(&files)?;
        let mut near_of: BTreeMap<usize, String> = BTreeMap::new();
        for m in super::phash::find_matches(&fps, p) {
            let (a, b) = (m.a.min(m.b), m.a.max(m.b));
            if a < n && b >= n {
                near_of.entry(b - n).or_insert_with(|| {
                    format!(
                        "near duplicate of internal {} (hash distance {} bits, correlation {:.3})",
                        internal[a].1.id, m.hamming, m.correlation
                    )
                });
            }
        }
        let rows = std::mem::take(&mut ext.rows);
        for (k, (src, r)) in rows.into_iter().enumerate() {
            match near_of.remove(&k) {
                Some(detail) => ext.excluded.push(SplitExcluded {
                    id: r.id,
                    source_bag: r.source_bag,
                    bag_row: r.bag_row,
                    class: r.subclass,
                    group: String::new(),
                    reason: "external-near-duplicate".into(),
                    detail,
                }),
                None => ext.rows.push((src, r)),
            }
        }
    }
    ext.rows.par_iter().try_for_each(|(src, r)| {
        let bytes = std::fs::read(src).map_err(|e| Error::read(src, e))?;
        if crate::manifest::hash_bytes(&bytes) != r.sha256 {
            return Err(Error::bad_input(
                src,
                "file does not match the sha256 of its record",
            ));
        }
        let rel = r.path.strip_prefix("data/").expect("data/ path");
        writer.add_file(src, rel, &bytes, &r.sha256, link)
    })
}

/// Fingerprints of a few files (the external check reads no cache: it is one pass over the
/// external images and the internal ones just written).
fn fingerprints(files: &[PathBuf]) -> Result<Vec<Option<Fingerprint>>> {
    use rayon::prelude::*;
    files
        .par_iter()
        .map(|f| {
            image::open(f)
                .map(|img| Some(Fingerprint::new(&img)))
                .map_err(|e| Error::bad_input(f, format!("cannot decode image: {e}")))
        })
        .collect()
}

/// Append the external rows (after the internal records) and count them per (split, class).
pub(super) fn add_to(
    summary: &mut Summary,
    records: &mut Vec<SplitRecord>,
    rows: Vec<(PathBuf, SplitRecord)>,
) {
    for (_, r) in rows {
        *summary
            .counts
            .entry((r.split.clone(), r.class.clone()))
            .or_default() += 1;
        records.push(r);
    }
    summary.groups = records
        .iter()
        .map(|r| r.group.as_str())
        .collect::<BTreeSet<_>>()
        .len();
}
