//! `prep split`: patient-grouped, duplicate-aware, deterministic train/val(/test) sets in a
//! torchvision ImageFolder layout, optionally balanced to a class ratio; and `prep split
//! --check`, which re-derives the groups of a split and fails if any crosses splits.
//!
//! Steps: read and verify the input bags → group images (union-find over patients, aliases,
//! exact and near duplicates, cross-references) → drop same-class copies → balance → assign
//! whole groups to splits per class → copy or link the files → write the bag.

pub mod assign;
mod external;
pub mod fingerprints;
pub mod group;
pub mod index;
pub mod phash;
mod steps;
pub use steps::FingerprintStats;

use crate::error::{Error, Result};
use crate::manifest::{verify_bag, BagWriter, ColumnType, FinishedBag, Provenance};
use crate::source::SourceDesc;
use assign::Fine;
use group::{Aliases, Link, Member, Reason};
use phash::NearDupParams;
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
    /// Wall time of each step, seconds (for `PREP_TIMINGS=1` and the benchmark).
    pub phases: Vec<(String, f64)>,
    pub fingerprints: FingerprintStats,
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
pub(crate) fn safe_bag_path(bag: &Path, rel: &str) -> Result<PathBuf> {
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

pub fn run(cfg: &SplitConfig) -> Result<SplitOutcome> {
    let mut clock = steps::Clock::new();
    let mut warnings = Vec::new();
    let mut prov = Provenance::new("split", cfg.argv.clone(), &cfg.out);
    prov.seed = Some(cfg.seed);
    let inputs = steps::read_inputs(cfg, &mut prov, &mut warnings)?;
    clock.lap("read inputs");
    let (links, fp_stats, computed) = steps::link(cfg, &inputs, &mut warnings, &mut clock)?;
    let grouping = group::group(&inputs.members(), links);
    let dup_rows = steps::duplicate_rows(&inputs, &grouping, &mut warnings);
    clock.lap("group");
    let (alive, mut excluded) = steps::drop_copies(&inputs, &grouping.group_of);
    let balanced = steps::balance(cfg, &inputs, &grouping.group_of, &alive, &mut excluded)?;
    let split_of = steps::assign(cfg, &balanced);
    clock.lap("balance and assign");
    let rows = steps::name_outputs(cfg, &inputs, &grouping.group_of, &balanced, &split_of);
    let mut ext = external::place(cfg, &rows, &mut prov)?;
    warnings.append(&mut ext.warnings);
    let writer = BagWriter::create(&cfg.out, cfg.force)?;
    steps::copy_files(cfg, &inputs, &writer, &rows)?;
    external::copy(cfg, &writer, &mut ext, &rows)?;
    clock.lap("copy");
    steps::write_fingerprints(&inputs, &rows, &computed, &writer)?;
    drop(computed);
    clock.lap("write fingerprints");
    let mut records = steps::sort_records(cfg, rows);
    excluded.append(&mut ext.excluded);
    excluded.sort_by(|a, b| {
        (&a.source_bag, a.bag_row, &a.class).cmp(&(&b.source_bag, b.bag_row, &b.class))
    });
    // Fractions stay those of the internal images; external ones only add to the counts.
    let mut summary = steps::summarize(cfg, &records, &excluded, &grouping);
    external::add_to(&mut summary, &mut records, ext.rows);
    let mut sources = inputs.sources.clone();
    sources.append(&mut ext.sources);
    let bag = steps::write_bag(
        cfg, writer, prov, &balanced, &summary, &records, &excluded, &dup_rows, &sources,
    )?;
    clock.lap("write bag");
    Ok(SplitOutcome {
        bag,
        merges: summary.merges,
        groups: summary.groups,
        counts: summary.counts,
        fractions: summary.fractions,
        excluded_by_reason: summary.by_reason,
        warnings,
        phases: clock.laps,
        fingerprints: fp_stats,
    })
}

fn split_columns(source_cols: &[&str]) -> Vec<(String, ColumnType, String)> {
    use ColumnType::*;
    SPLIT_COLUMNS
        .iter()
        .chain(source_cols)
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
                _ => crate::dicom::column(c).unwrap_or((Text, "As in the input bag's records.")),
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
    /// Where the near-duplicate fingerprints came from (None: no near-duplicate search).
    pub fingerprints: Option<FingerprintStats>,
    pub warnings: Vec<String>,
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
    let (width_c, height_c) = (col(&["width"]), col(&["height"]));
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
    // What a cached fingerprint must agree with: sha256, width, height.
    let mut shapes: Vec<(String, u32, u32)> = Vec::new();
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
        let dim = |c: Option<usize>| get(c).trim().parse::<u32>().unwrap_or(0);
        shapes.push((get(sha_c).to_ascii_lowercase(), dim(width_c), dim(height_c)));
    }
    let mut warnings = Vec::new();
    let mut fingerprints = None;
    let sources: BTreeSet<String> = members.iter().map(|m| m.source.clone()).collect();
    let aliases = aliases_for(&sources, &mut warnings);
    let mut links = group::record_links(&members, &aliases);
    links.extend(cross_reference_links(&members, rules));
    if let (Some(bag), true) = (bag, near_duplicates) {
        let files: Vec<PathBuf> = paths
            .iter()
            .map(|p| safe_bag_path(bag, p.as_deref().unwrap_or("")))
            .collect::<Result<_>>()?;
        let images: Vec<steps::Image> = files
            .into_iter()
            .zip(shapes)
            .map(|(file, (sha256, width, height))| steps::Image {
                bag: Some(0),
                file,
                sha256,
                width,
                height,
            })
            .collect();
        let (near, stats) =
            steps::near_duplicate_links(&images, Some(bag), rules.near_duplicates, &mut warnings)?;
        fingerprints = Some(stats);
        links.extend(near);
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
        fingerprints,
        warnings,
    })
}
