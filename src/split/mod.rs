//! `prep split`: patient-grouped, duplicate-aware, deterministic train/val(/test) sets in a
//! torchvision ImageFolder layout, optionally balanced to a class ratio; and `prep split
//! --check`, which re-derives the groups of a split and fails if any crosses splits.
//!
//! Steps: read and verify the input bags → group images (union-find over patients, aliases,
//! exact and near duplicates, cross-references) → drop same-class copies → balance → assign
//! whole groups to splits per class → copy or link the files → write the bag.

pub mod assign;
mod external;
pub mod group;
pub mod phash;

use crate::error::{Error, Result};
use crate::manifest::{
    manifest_sha256, read_records, verify_bag, write_csv, BagWriter, ColumnType, CroissantSpec,
    FinishedBag, InputRef, Provenance, Record, StageInfo,
};
use crate::progress;
use crate::source::SourceDesc;
use assign::{Fine, Unit};
use group::{Aliases, Link, Member, Reason};
use phash::{Fingerprint, NearDupParams};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

/// Built-in grouping rules (metadata/split-rules.toml).
const BUILTIN_RULES: &str = include_str!("../../metadata/split-rules.toml");

/// Grouping rules beyond patient ids: near-duplicate thresholds and cross-references.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    #[serde(default)]
    pub near_duplicates: NearDupParams,
    #[serde(default)]
    pub cross_reference: Vec<CrossReference>,
}

/// Records of different sources whose file stems are equal show the same image.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrossReference {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub sources: Vec<String>,
    #[serde(default)]
    pub other_sources: Vec<String>,
    #[serde(default)]
    pub stem_length: Option<usize>,
    #[serde(default)]
    pub stem_charset: Option<String>,
}

impl Rules {
    pub fn builtin() -> Rules {
        toml::from_str(BUILTIN_RULES).expect("built-in split rules parse")
    }
    pub fn load(path: &Path) -> Result<Rules> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::read(path, e))?;
        toml::from_str(&text).map_err(|source| Error::SourceDescription {
            path: path.to_path_buf(),
            source,
        })
    }
}

impl CrossReference {
    fn stem_ok(&self, stem: &str) -> bool {
        !stem.is_empty()
            && self.stem_length.is_none_or(|n| stem.chars().count() == n)
            && self
                .stem_charset
                .as_ref()
                .is_none_or(|cs| stem.chars().all(|c| cs.contains(c)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClassMode {
    /// covid / no-covid folders.
    Two,
    /// covid / healthy / diseased folders.
    Three,
}

impl ClassMode {
    fn folder(self, c: Fine) -> &'static str {
        match (self, c) {
            (ClassMode::Two, Fine::Covid) => "covid",
            (ClassMode::Two, _) => "no-covid",
            (ClassMode::Three, c) => c.label(),
        }
    }
}

/// A checked `prep split` invocation.
#[derive(Debug, Clone)]
pub struct SplitConfig {
    /// (class flag, bag) in command-line order.
    pub inputs: Vec<(Fine, PathBuf)>,
    pub out: PathBuf,
    /// Names and fractions of the splits, e.g. [("train", 0.7), ("val", 0.3)].
    pub splits: Vec<(String, f64)>,
    /// Some(ratio covid:healthy:diseased) with --balanced.
    pub balance: Option<[u32; 3]>,
    pub classes: ClassMode,
    pub seed: u64,
    pub link: bool,
    pub force: bool,
    pub near_duplicates: bool,
    pub rules: Rules,
    pub rules_file: Option<PathBuf>,
    pub argv: Vec<String>,
    /// Bags put whole into the test split as external sources (`--external`).
    pub external: Vec<PathBuf>,
}

/// What a split run produced, for the summary.
#[derive(Debug)]
pub struct SplitOutcome {
    pub bag: FinishedBag,
    pub merges: BTreeMap<String, usize>,
    pub groups: usize,
    /// images per (split, class label).
    pub counts: BTreeMap<(String, String), usize>,
    /// achieved fraction per (class label, split).
    pub fractions: BTreeMap<(String, String), f64>,
    pub excluded_by_reason: BTreeMap<String, usize>,
    pub warnings: Vec<String>,
}

/// One image taken from an input bag.
#[derive(Debug, Clone)]
struct Item {
    class: Fine,
    bag: usize,
    /// Line of the input bag's records.csv (header = 1).
    row: usize,
    rec: Record,
}

/// One row of the output `data/records.csv`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SplitRecord {
    pub split: String,
    pub class: String,
    pub subclass: String,
    pub group: String,
    pub id: String,
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
    pub width: u32,
    pub height: u32,
    pub source: String,
    pub patient_id: String,
    pub view: String,
    pub label: String,
    pub finding: String,
    pub source_file: String,
    pub source_row: String,
    pub source_bag: String,
    pub bag_row: usize,
}

pub const SPLIT_COLUMNS: &[&str] = &[
    "split",
    "class",
    "subclass",
    "group",
    "id",
    "path",
    "sha256",
    "bytes",
    "width",
    "height",
    "source",
    "patient_id",
    "view",
    "label",
    "finding",
    "source_file",
    "source_row",
    "source_bag",
    "bag_row",
];

#[derive(Debug, Clone, Serialize)]
struct SplitExcluded {
    id: String,
    source_bag: String,
    bag_row: usize,
    class: String,
    group: String,
    reason: String,
    detail: String,
}

#[derive(Debug, Clone, Serialize)]
struct DuplicateRow {
    reason: String,
    a_bag: String,
    a_id: String,
    a_class: String,
    b_bag: String,
    b_id: String,
    b_class: String,
    group: String,
    detail: String,
}

/// A bag-relative path from a records row, refused if it could leave the bag.
fn safe_bag_path(bag: &Path, rel: &str) -> Result<PathBuf> {
    let p = Path::new(rel);
    let ok = !rel.is_empty()
        && !rel.contains('\\')
        && p.components().all(|c| matches!(c, Component::Normal(_)))
        && rel.starts_with("data/");
    if !ok {
        return Err(Error::bad_input(
            bag.join("data/records.csv"),
            format!("path {rel:?} is not a file under data/"),
        ));
    }
    Ok(bag.join(p))
}

fn file_stem(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    match name.rfind('.') {
        Some(k) if k > 0 => name[..k].to_string(),
        _ => name.to_string(),
    }
}

/// Alias tables of every source named in the records (source descriptions by name).
fn aliases_for(sources: &BTreeSet<String>, warnings: &mut Vec<String>) -> Aliases {
    let mut aliases = Aliases::new();
    for s in sources {
        match SourceDesc::load(s) {
            Ok(desc) => group::alias_table(s, &desc.patients.aliases, &mut aliases),
            Err(_) => warnings.push(format!(
                "no source description named {s:?}: its patient ids are used as they are, without aliases"
            )),
        }
    }
    aliases
}

/// Cross-reference links: equal file stems across sources, per the rules.
fn cross_reference_links(members: &[Member], rules: &Rules) -> Vec<Link> {
    let mut links = Vec::new();
    for rule in &rules.cross_reference {
        let mut by_stem: BTreeMap<&str, (Vec<usize>, Vec<usize>)> = BTreeMap::new();
        for (i, m) in members.iter().enumerate() {
            if !rule.stem_ok(&m.stem) {
                continue;
            }
            let left = rule.sources.contains(&m.source);
            let right = if rule.other_sources.is_empty() {
                !left
            } else {
                rule.other_sources.contains(&m.source)
            };
            let e = by_stem.entry(&m.stem).or_default();
            if left {
                e.0.push(i);
            } else if right {
                e.1.push(i);
            }
        }
        for (stem, (l, r)) in by_stem {
            for &a in &l {
                for &b in &r {
                    links.push(Link {
                        a: a.min(b),
                        b: a.max(b),
                        reason: Reason::CrossReference,
                        detail: format!("{}: file stem {stem}", rule.name),
                    });
                }
            }
        }
    }
    links
}

/// Fingerprint every file in parallel (order of results = order of `files`).
fn fingerprints(files: &[PathBuf]) -> Result<Vec<Option<Fingerprint>>> {
    let pb = progress::bar(files.len() as u64, "fingerprints");
    let out = files
        .par_iter()
        .map(|f| {
            let r = image::open(f)
                .map(|img| Some(Fingerprint::new(&img)))
                .map_err(|e| Error::bad_input(f, format!("cannot decode image: {e}")));
            pb.inc(1);
            r
        })
        .collect::<Result<Vec<_>>>();
    pb.finish_and_clear();
    out
}

fn near_duplicate_links(fps: &[Option<Fingerprint>], p: NearDupParams) -> Vec<Link> {
    phash::find_matches(fps, p)
        .into_iter()
        .map(|m| Link {
            a: m.a,
            b: m.b,
            reason: Reason::NearDuplicate,
            detail: format!(
                "hash distance {} bits, correlation {:.3}",
                m.hamming, m.correlation
            ),
        })
        .collect()
}

pub fn run(cfg: &SplitConfig) -> Result<SplitOutcome> {
    let mut warnings = Vec::new();
    let mut prov = Provenance::new("split", cfg.argv.clone(), &cfg.out);
    prov.seed = Some(cfg.seed);

    // 1. Read and verify each input bag once; take the records its flag asks for.
    let mut bag_paths: Vec<PathBuf> = Vec::new();
    let mut bag_names: Vec<String> = Vec::new();
    let mut bag_records: Vec<Vec<Record>> = Vec::new();
    let mut items: Vec<Item> = Vec::new();
    let mut seen_flag: BTreeSet<(PathBuf, Fine)> = BTreeSet::new();
    let mut taken_rows: BTreeMap<(usize, usize), Fine> = BTreeMap::new();
    for (class, path) in &cfg.inputs {
        let canon = path.canonicalize().map_err(|e| Error::read(path, e))?;
        if !seen_flag.insert((canon.clone(), *class)) {
            return Err(Error::Usage(format!(
                "bag {} is given twice under --{}",
                path.display(),
                class.label()
            )));
        }
        let b = match bag_paths.iter().position(|p| *p == canon) {
            Some(b) => b,
            None => {
                verify_bag(path)?.into_result(path)?;
                let recs = read_records(path)?;
                prov.inputs.push(InputRef {
                    kind: "bag".into(),
                    path: path.to_string_lossy().into_owned(),
                    sha256: manifest_sha256(path)?,
                });
                bag_paths.push(canon);
                bag_names.push(path.to_string_lossy().into_owned());
                bag_records.push(recs);
                bag_paths.len() - 1
            }
        };
        let recs = &bag_records[b];
        let labels: BTreeSet<&str> = recs.iter().map(|r| r.label.as_str()).collect();
        let single = labels.len() == 1;
        if let (true, Some(only)) = (single, labels.iter().next()) {
            if *only != class.label() {
                warnings.push(format!(
                    "{}: every image is labelled {only:?}; taken as {} (given under --{})",
                    path.display(),
                    class.label(),
                    class.label()
                ));
            }
        }
        let mut n = 0;
        for (i, r) in recs.iter().enumerate() {
            if !(single || r.label == class.label()) {
                continue;
            }
            if let Some(prev) = taken_rows.insert((b, i), *class) {
                return Err(Error::Usage(format!(
                    "{}: image {} would be both {} and {} (a bag with one label can be given under one flag only)",
                    path.display(),
                    r.id,
                    prev.label(),
                    class.label()
                )));
            }
            safe_bag_path(path, &r.path)?;
            items.push(Item {
                class: *class,
                bag: b,
                row: i + 2,
                rec: r.clone(),
            });
            n += 1;
        }
        if n == 0 {
            return Err(Error::Usage(format!(
                "bag {} holds no {} images (its labels: {}); give it under the flag of one of those",
                path.display(),
                class.label(),
                labels.into_iter().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    // Content order, so nothing below depends on the order of flags or bags.
    items.sort_by(|x, y| {
        (
            &x.rec.source,
            &x.rec.id,
            &x.rec.sha256,
            x.class,
            &bag_names[x.bag],
            x.row,
        )
            .cmp(&(
                &y.rec.source,
                &y.rec.id,
                &y.rec.sha256,
                y.class,
                &bag_names[y.bag],
                y.row,
            ))
    });
    for c in Fine::ALL {
        if !items.iter().any(|i| i.class == c) && cfg.balance.is_some_and(|r| r[c.index()] > 0) {
            return Err(Error::Usage(format!(
                "--balanced with ratio {:?} needs {} images: pass a bag under --{}",
                cfg.balance.unwrap(),
                c.label(),
                c.label()
            )));
        }
    }

    // 2. Groups.
    let members: Vec<Member> = items
        .iter()
        .map(|it| Member {
            source: it.rec.source.clone(),
            patient_id: it.rec.patient_id.clone(),
            sha256: it.rec.sha256.clone(),
            stem: file_stem(&it.rec.source_file),
            declared: String::new(),
        })
        .collect();
    let sources: BTreeSet<String> = members.iter().map(|m| m.source.clone()).collect();
    let aliases = aliases_for(&sources, &mut warnings);
    let mut links = group::record_links(&members, &aliases);
    links.extend(cross_reference_links(&members, &cfg.rules));
    if cfg.near_duplicates {
        let files: Vec<PathBuf> = items
            .iter()
            .map(|it| safe_bag_path(&bag_paths[it.bag], &it.rec.path))
            .collect::<Result<_>>()?;
        let fps = fingerprints(&files)?;
        links.extend(near_duplicate_links(&fps, cfg.rules.near_duplicates));
    }
    let grouping = group::group(&members, links);
    let gid = &grouping.group_of;

    let name_of = |i: usize| format!("{}:{}", bag_names[items[i].bag], items[i].rec.id);
    let mut dup_rows = Vec::new();
    let mut conflicts: BTreeSet<(usize, usize)> = BTreeSet::new();
    for l in &grouping.links {
        if matches!(l.reason, Reason::Patient | Reason::Declared) {
            continue;
        }
        let (a, b) = (&items[l.a], &items[l.b]);
        if a.class != b.class && l.reason != Reason::Alias && conflicts.insert((l.a, l.b)) {
            warnings.push(format!(
                "the same image is {} as {} and {} as {} (found as {}); both stay in group {}",
                name_of(l.a),
                a.class.label(),
                name_of(l.b),
                b.class.label(),
                l.reason.as_str(),
                gid[l.a]
            ));
        }
        dup_rows.push(DuplicateRow {
            reason: l.reason.as_str().into(),
            a_bag: bag_names[a.bag].clone(),
            a_id: a.rec.id.clone(),
            a_class: a.class.label().into(),
            b_bag: bag_names[b.bag].clone(),
            b_id: b.rec.id.clone(),
            b_class: b.class.label().into(),
            group: gid[l.a].clone(),
            detail: l.detail.clone(),
        });
    }

    // 3. Same-class copies of one file: keep the first (content order), record the others.
    let mut excluded: Vec<SplitExcluded> = Vec::new();
    let mut alive = vec![true; items.len()];
    let mut first_copy: BTreeMap<(Fine, &str), usize> = BTreeMap::new();
    for (i, it) in items.iter().enumerate() {
        if let Some(&k) = first_copy.get(&(it.class, it.rec.sha256.as_str())) {
            alive[i] = false;
            excluded.push(SplitExcluded {
                id: it.rec.id.clone(),
                source_bag: bag_names[it.bag].clone(),
                bag_row: it.row,
                class: it.class.label().into(),
                group: gid[i].clone(),
                reason: "duplicate-file".into(),
                detail: format!("same bytes as {} (kept)", name_of(k)),
            });
        } else {
            first_copy.insert((it.class, it.rec.sha256.as_str()), i);
        }
    }

    // 4. Balance.
    let live: Vec<usize> = (0..items.len()).filter(|&i| alive[i]).collect();
    let units: Vec<Unit> = live
        .iter()
        .map(|&i| Unit {
            class: items[i].class,
            group: gid[i].clone(),
            key: format!(
                "{}\u{0}{}\u{0}{}",
                items[i].rec.source, items[i].rec.id, items[i].rec.sha256
            ),
        })
        .collect();
    let mut targets = None;
    let kept_units: Vec<usize> = match cfg.balance {
        Some(ratio) => {
            let (keep, drops, t) = assign::balance(&units, ratio, cfg.seed);
            targets = Some(t);
            for d in drops {
                let i = live[d.unit];
                excluded.push(SplitExcluded {
                    id: items[i].rec.id.clone(),
                    source_bag: bag_names[items[i].bag].clone(),
                    bag_row: items[i].row,
                    class: items[i].class.label().into(),
                    group: gid[i].clone(),
                    reason: d.reason,
                    detail: d.detail,
                });
            }
            (0..units.len()).filter(|&u| keep[u]).collect()
        }
        None => (0..units.len()).collect(),
    };
    if kept_units.is_empty() {
        return Err(Error::Usage(
            "nothing left to split (a class with a non-zero ratio has no images?)".into(),
        ));
    }

    // 5. Assign whole groups.
    let sel_units: Vec<Unit> = kept_units.iter().map(|&u| units[u].clone()).collect();
    let fractions: Vec<f64> = cfg.splits.iter().map(|s| s.1).collect();
    let split_of = assign::assign(&sel_units, &fractions, cfg.seed);

    // 6. Output names: data/<split>/<class>/<id><ext>, unique per folder (case-insensitively).
    let mut taken: BTreeSet<String> = BTreeSet::new();
    let mut rows: Vec<(usize, SplitRecord)> = Vec::new(); // (item, record)
    for (k, &u) in kept_units.iter().enumerate() {
        let i = live[u];
        let it = &items[i];
        let split = &cfg.splits[split_of[k]].0;
        let folder = cfg.classes.folder(it.class);
        let ext = match it.rec.path.rsplit_once('.') {
            Some((_, e)) if !e.contains('/') => format!(".{}", e.to_ascii_lowercase()),
            _ => String::new(),
        };
        let base: String = it
            .rec
            .id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut n = 1;
        let rel = loop {
            let stem = if n == 1 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            let rel = format!("{split}/{folder}/{stem}{ext}");
            if taken.insert(rel.to_lowercase()) {
                break rel;
            }
            n += 1;
        };
        rows.push((
            i,
            SplitRecord {
                split: split.clone(),
                class: folder.into(),
                subclass: it.class.label().into(),
                group: gid[i].clone(),
                id: it.rec.id.clone(),
                path: format!("data/{rel}"),
                sha256: it.rec.sha256.clone(),
                bytes: it.rec.bytes,
                width: it.rec.width,
                height: it.rec.height,
                source: it.rec.source.clone(),
                patient_id: it.rec.patient_id.clone(),
                view: it.rec.view.clone(),
                label: it.rec.label.clone(),
                finding: it.rec.finding.clone(),
                source_file: it.rec.source_file.clone(),
                source_row: it.rec.source_row.clone(),
                source_bag: bag_names[it.bag].clone(),
                bag_row: it.row,
            },
        ));
    }

    // 6b. Whole external bags into test.
    let internal: Vec<&SplitRecord> = rows.iter().map(|(_, r)| r).collect();
    let mut ext = external::place(&cfg.external, cfg.classes, &internal, &mut taken, &mut prov)?;
    warnings.append(&mut ext.warnings);

    // 7. Copy or link, in parallel.
    let writer = BagWriter::create(&cfg.out, cfg.force)?;
    let pb = progress::bar(rows.len() as u64, "copying");
    rows.par_iter()
        .map(|(i, r)| {
            let it = &items[*i];
            let src = safe_bag_path(&bag_paths[it.bag], &it.rec.path)?;
            let bytes = std::fs::read(&src).map_err(|e| Error::read(&src, e))?;
            if crate::manifest::hash_bytes(&bytes) != r.sha256 {
                return Err(Error::bad_input(
                    &src,
                    "file does not match the sha256 of its record (bag changed while reading?)",
                ));
            }
            let rel = r.path.strip_prefix("data/").expect("data/ path");
            writer.add_file(&src, rel, &bytes, &r.sha256, cfg.link)?;
            pb.inc(1);
            Ok(())
        })
        .collect::<Result<()>>()?;
    pb.finish_and_clear();
    let near = cfg.near_duplicates.then_some(cfg.rules.near_duplicates);
    external::copy(&writer, &mut ext, &rows, near, cfg.link)?;
    excluded.extend(ext.excluded);

    let mut records: Vec<SplitRecord> = rows.into_iter().map(|(_, r)| r).collect();
    let split_rank = |s: &str| {
        cfg.splits
            .iter()
            .position(|x| x.0 == s)
            .unwrap_or(usize::MAX)
    };
    records.sort_by(|a, b| (split_rank(&a.split), &a.path).cmp(&(split_rank(&b.split), &b.path)));
    excluded.sort_by(|a, b| {
        (&a.source_bag, a.bag_row, &a.class).cmp(&(&b.source_bag, b.bag_row, &b.class))
    });

    // 8. Summary figures.
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut per_sub: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut sub_total: BTreeMap<String, usize> = BTreeMap::new();
    for r in &records {
        *counts
            .entry((r.split.clone(), r.class.clone()))
            .or_default() += 1;
        *per_sub
            .entry((r.subclass.clone(), r.split.clone()))
            .or_default() += 1;
        *sub_total.entry(r.subclass.clone()).or_default() += 1;
    }
    let mut fractions_out = BTreeMap::new();
    for (sub, total) in &sub_total {
        for (s, _) in &cfg.splits {
            let n = per_sub.get(&(sub.clone(), s.clone())).copied().unwrap_or(0);
            fractions_out.insert((sub.clone(), s.clone()), n as f64 / *total as f64);
        }
    }
    let mut by_reason: BTreeMap<String, usize> = BTreeMap::new();
    for e in &excluded {
        *by_reason.entry(e.reason.clone()).or_default() += 1;
    }
    for (k, n) in external::counts(&ext.rows) {
        *counts.entry(k).or_default() += n;
    }
    records.extend(ext.rows.into_iter().map(|(_, r)| r));
    let groups: BTreeSet<&str> = records.iter().map(|r| r.group.as_str()).collect();
    let merges: BTreeMap<String, usize> = grouping
        .merges
        .iter()
        .map(|(r, n)| (r.as_str().to_string(), *n))
        .collect();

    // 9. Provenance and the bag.
    prov.param(
        "inputs",
        cfg.inputs
            .iter()
            .map(|(c, p)| (c.label(), p.to_string_lossy().into_owned()))
            .collect::<Vec<_>>(),
    )
    .param("splits", &cfg.splits)
    .param("balanced", cfg.balance.is_some())
    .param(
        "ratio_covid_healthy_diseased",
        cfg.balance.map(|r| format!("{}:{}:{}", r[0], r[1], r[2])),
    )
    .param("balance_targets", targets)
    .param("classes", cfg.classes)
    .param("link", cfg.link)
    .param("near_duplicates", cfg.near_duplicates)
    .param(
        "rules_file",
        cfg.rules_file
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned()),
    )
    .param("rules", &cfg.rules)
    .param("merges_by_reason", &merges)
    .param("groups", groups.len())
    .param(
        "achieved_fractions",
        fractions_out
            .iter()
            .map(|((c, s), f)| (format!("{c}/{s}"), (f * 1e6).round() / 1e6))
            .collect::<BTreeMap<_, _>>(),
    );
    if let Some(f) = &cfg.rules_file {
        let raw = std::fs::read(f).map_err(|e| Error::read(f, e))?;
        prov.inputs.push(InputRef {
            kind: "rules".into(),
            path: f.to_string_lossy().into_owned(),
            sha256: crate::manifest::hash_bytes(&raw),
        });
    }
    writer.write_payload("records.csv", &write_csv(&records, SPLIT_COLUMNS)?)?;
    writer.write_payload(
        "excluded.csv",
        &write_csv(
            &excluded,
            &[
                "id",
                "source_bag",
                "bag_row",
                "class",
                "group",
                "reason",
                "detail",
            ],
        )?,
    )?;
    writer.write_payload(
        "duplicates.csv",
        &write_csv(
            &dup_rows,
            &[
                "reason", "a_bag", "a_id", "a_class", "b_bag", "b_id", "b_class", "group", "detail",
            ],
        )?,
    )?;
    writer.write_payload("provenance.json", &prov.to_bytes())?;

    let globs = crate::manifest::image_globs("data/*/*", records.iter().map(|r| r.path.as_str()));
    let split_desc: Vec<String> = cfg.splits.iter().map(|(n, f)| format!("{n} {f}")).collect();
    let info = StageInfo {
        name: "prep-split".into(),
        description: format!(
            "{} images in {} patient groups split {} by whole groups per class ({}), seed {}{}; an ImageFolder layout under data/<split>/<class>/. data/excluded.csv lists what was left out and why; data/duplicates.csv the duplicate links.",
            records.len(),
            groups.len(),
            split_desc.join(" / "),
            match cfg.classes {
                ClassMode::Two => "covid / no-covid",
                ClassMode::Three => "covid / healthy / diseased",
            },
            cfg.seed,
            match cfg.balance {
                Some(r) => format!(", balanced to covid:healthy:diseased = {}:{}:{}", r[0], r[1], r[2]),
                None => String::new(),
            }
        ),
        croissant: CroissantSpec {
            license: "per image, as recorded by the input bags (see source_bag and their records)"
                .into(),
            url: String::new(),
            cite_as: String::new(),
            table: "data/records.csv".into(),
            columns: split_columns(),
            image_globs: globs,
        },
    };
    let bag = writer.finish(info)?;
    Ok(SplitOutcome {
        bag,
        merges,
        groups: groups.len(),
        counts,
        fractions: fractions_out,
        excluded_by_reason: by_reason,
        warnings,
    })
}

fn split_columns() -> Vec<(String, ColumnType, String)> {
    use ColumnType::*;
    SPLIT_COLUMNS
        .iter()
        .map(|c| {
            let (t, d) = match *c {
                "split" => (Text, "train, val or test."),
                "class" => (
                    Text,
                    "Class folder (covid/no-covid, or covid/healthy/diseased).",
                ),
                "subclass" => (Text, "covid, healthy or diseased."),
                "group" => (Text, "Patient group: images that must stay in one split."),
                "id" => (Text, "Image id in its input bag."),
                "path" => (Text, "Path of the image relative to the bag root."),
                "sha256" => (Text, "SHA-256 of the image file."),
                "bytes" | "width" | "height" => (Integer, "Size of the image (bytes, pixels)."),
                "bag_row" => (Integer, "Line of the input bag's data/records.csv."),
                "source_bag" => (Text, "Input bag the image came from."),
                _ => (Text, "As in the input bag's records."),
            };
            (c.to_string(), t, d.to_string())
        })
        .collect()
}

/// What `prep split --check` found.
#[derive(Debug)]
pub struct CheckReport {
    pub images: usize,
    pub groups: usize,
    pub merges: BTreeMap<String, usize>,
    pub splits: BTreeMap<String, usize>,
}

/// Re-derive the groups of a split bag (or of a records CSV with a `split` column) and fail
/// with a verification error naming every group found in more than one split.
pub fn check(target: &Path, rules: &Rules, near_duplicates: bool) -> Result<CheckReport> {
    let (table, bag) = if target.is_dir() {
        verify_bag(target)?.into_result(target)?;
        (target.join("data").join("records.csv"), Some(target))
    } else {
        (target.to_path_buf(), None)
    };
    let mut rdr = csv::Reader::from_path(&table).map_err(|source| Error::Csv {
        path: table.clone(),
        source,
    })?;
    let headers = rdr
        .headers()
        .map_err(|source| Error::Csv {
            path: table.clone(),
            source,
        })?
        .clone();
    let col = |names: &[&str]| {
        names.iter().find_map(|n| {
            headers
                .iter()
                .position(|h| h.trim().eq_ignore_ascii_case(n))
        })
    };
    let split_c = col(&["split"]).ok_or_else(|| Error::MissingColumn {
        path: table.clone(),
        column: "split".into(),
        present: headers.iter().collect::<Vec<_>>().join(", "),
    })?;
    let patient_c = col(&["patient_id", "patientid", "patient", "patient id"]);
    let source_c = col(&["source"]);
    let sha_c = col(&["sha256"]);
    let group_c = col(&["group"]);
    let file_c = col(&[
        "source_file",
        "filename",
        "file",
        "path",
        "image",
        "image index",
    ]);
    let path_c = col(&["path"]);
    let id_c = col(&["id", "image_id", "filename", "path"]);
    if patient_c.is_none() && sha_c.is_none() && group_c.is_none() {
        return Err(Error::MissingColumn {
            path: table.clone(),
            column: "patient_id (or sha256 or group)".into(),
            present: headers.iter().collect::<Vec<_>>().join(", "),
        });
    }
    let mut members = Vec::new();
    let mut splits: Vec<String> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut paths: Vec<Option<String>> = Vec::new();
    for (n, row) in rdr.records().enumerate() {
        let row = row.map_err(|source| Error::Csv {
            path: table.clone(),
            source,
        })?;
        let get = |c: Option<usize>| c.and_then(|c| row.get(c)).unwrap_or("").to_string();
        let split = get(Some(split_c));
        if split.trim().is_empty() {
            return Err(Error::BadRow {
                path: table.clone(),
                row: n as u64 + 2,
                reason: "empty split".into(),
            });
        }
        members.push(Member {
            source: get(source_c),
            patient_id: get(patient_c),
            sha256: get(sha_c).to_ascii_lowercase(),
            stem: file_stem(&get(file_c)),
            declared: get(group_c),
        });
        splits.push(split.trim().to_string());
        let id = get(id_c);
        names.push(if id.is_empty() {
            format!("row {}", n + 2)
        } else {
            id
        });
        paths.push(path_c.map(|_| get(path_c)));
    }
    let mut warnings = Vec::new();
    let sources: BTreeSet<String> = members.iter().map(|m| m.source.clone()).collect();
    let aliases = aliases_for(&sources, &mut warnings);
    let mut links = group::record_links(&members, &aliases);
    links.extend(cross_reference_links(&members, rules));
    if let (Some(bag), true) = (bag, near_duplicates) {
        let files: Vec<PathBuf> = paths
            .iter()
            .map(|p| safe_bag_path(bag, p.as_deref().unwrap_or("")))
            .collect::<Result<_>>()?;
        let fps = fingerprints(&files)?;
        links.extend(near_duplicate_links(&fps, rules.near_duplicates));
    }
    let g = group::group(&members, links);
    let mut where_: BTreeMap<&str, BTreeMap<&str, Vec<&str>>> = BTreeMap::new();
    for i in 0..members.len() {
        where_
            .entry(&g.group_of[i])
            .or_default()
            .entry(&splits[i])
            .or_default()
            .push(&names[i]);
    }
    let mut problems = Vec::new();
    for (gid, by_split) in &where_ {
        if by_split.len() > 1 {
            let parts: Vec<String> = by_split
                .iter()
                .map(|(s, ids)| format!("{s}: {}", ids.join(", ")))
                .collect();
            problems.push(format!("group {gid} crosses splits ({})", parts.join("; ")));
        }
    }
    let merges = g
        .merges
        .iter()
        .map(|(r, n)| (r.as_str().to_string(), *n))
        .collect();
    if !problems.is_empty() {
        return Err(Error::Verification {
            path: target.to_path_buf(),
            problems,
        });
    }
    let mut per_split = BTreeMap::new();
    for s in &splits {
        *per_split.entry(s.clone()).or_default() += 1;
    }
    Ok(CheckReport {
        images: members.len(),
        groups: where_.len(),
        merges,
        splits: per_split,
    })
}
