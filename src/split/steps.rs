//! The steps of `prep split`, in the order [`super::run`] calls them: read the inputs → link
//! (record links, cross-references, near-duplicates) → group → drop same-class copies →
//! balance → assign whole groups → name the outputs → copy → summarise → write the bag.
//! Each is a function of what the steps before it produced, so each can be tested alone, and a
//! new step (e.g. whole external bags as a test split of their own) slots in between.

use super::fingerprints::{self, CacheFile, Cached};
use super::group::{self, Grouping, Link, Member, Reason};
use super::phash::{self, Fingerprint, Hashes, NearDupParams, Thumbs};
use super::{
    aliases_for, assign, cross_reference_links, file_stem, safe_bag_path, split_columns, ClassMode,
    DuplicateRow, SplitConfig, SplitExcluded, SplitRecord, SPLIT_COLUMNS,
};
use crate::error::{Error, Result};
use crate::manifest::{
    append_source_columns, manifest_sha256, read_records_with_source, source_header, verify_bag,
    write_csv, BagWriter, CroissantSpec, FinishedBag, InputRef, Provenance, Record, SourceValues,
    StageInfo,
};
use crate::progress;
use assign::{Fine, Unit};
use rayon::prelude::*;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Wall time per step.
pub(crate) struct Clock {
    at: Instant,
    pub laps: Vec<(String, f64)>,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            at: Instant::now(),
            laps: Vec::new(),
        }
    }
    pub fn lap(&mut self, name: &str) {
        let now = Instant::now();
        self.laps
            .push((name.to_string(), (now - self.at).as_secs_f64()));
        self.at = now;
    }
}

/// One image taken from an input bag.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub class: Fine,
    pub bag: usize,
    /// Line of the input bag's records.csv (header = 1).
    pub row: usize,
    pub rec: Record,
}

/// The input bags and the images taken from them, in content order.
pub(crate) struct Inputs {
    /// Canonical path of each distinct bag.
    pub paths: Vec<PathBuf>,
    /// Each bag's path as given (for records and messages).
    pub names: Vec<String>,
    pub items: Vec<Item>,
    /// Source columns by (source_bag, bag_row), carried into records.csv.
    pub sources: BTreeMap<(String, usize), SourceValues>,
}

impl Inputs {
    pub fn members(&self) -> Vec<Member> {
        self.items
            .iter()
            .map(|it| Member {
                source: it.rec.source.clone(),
                patient_id: it.rec.patient_id.clone(),
                sha256: it.rec.sha256.clone(),
                stem: file_stem(&it.rec.source_file),
                declared: String::new(),
            })
            .collect()
    }
    fn name_of(&self, i: usize) -> String {
        format!("{}:{}", self.names[self.items[i].bag], self.items[i].rec.id)
    }
    fn excluded(&self, i: usize, group: &str, reason: String, detail: String) -> SplitExcluded {
        let it = &self.items[i];
        SplitExcluded {
            id: it.rec.id.clone(),
            source_bag: self.names[it.bag].clone(),
            bag_row: it.row,
            class: it.class.label().into(),
            group: group.to_string(),
            reason,
            detail,
        }
    }
}

/// Read and verify each input bag once; take the records its flag asks for.
pub(crate) fn read_inputs(
    cfg: &SplitConfig,
    prov: &mut Provenance,
    warnings: &mut Vec<String>,
) -> Result<Inputs> {
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut bag_records: Vec<Vec<Record>> = Vec::new();
    let mut items: Vec<Item> = Vec::new();
    let mut sources = BTreeMap::new();
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
        let b = match paths.iter().position(|p| *p == canon) {
            Some(b) => b,
            None => {
                verify_bag(path)?.into_result(path)?;
                let name = path.to_string_lossy().into_owned();
                let (recs, values): (Vec<Record>, Vec<SourceValues>) =
                    read_records_with_source(path)?.into_iter().unzip();
                for (i, v) in values.into_iter().enumerate() {
                    sources.insert((name.clone(), i + 2), v);
                }
                prov.inputs.push(InputRef {
                    kind: "bag".into(),
                    path: path.to_string_lossy().into_owned(),
                    sha256: manifest_sha256(path)?,
                });
                paths.push(canon);
                names.push(name);
                bag_records.push(recs);
                paths.len() - 1
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
            &names[x.bag],
            x.row,
        )
            .cmp(&(
                &y.rec.source,
                &y.rec.id,
                &y.rec.sha256,
                y.class,
                &names[y.bag],
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
    Ok(Inputs {
        paths,
        names,
        items,
        sources,
    })
}

/// Every reason two images must share a split: patients and aliases, exact copies,
/// cross-references, near-duplicates.
pub(crate) fn link(
    cfg: &SplitConfig,
    inputs: &Inputs,
    warnings: &mut Vec<String>,
    clock: &mut Clock,
) -> Result<(Vec<Link>, FingerprintStats, Computed)> {
    let members = inputs.members();
    let sources: BTreeSet<String> = members.iter().map(|m| m.source.clone()).collect();
    let aliases = aliases_for(&sources, warnings);
    let mut links = group::record_links(&members, &aliases);
    links.extend(cross_reference_links(&members, &cfg.rules));
    clock.lap("record links");
    let mut stats = FingerprintStats::default();
    let mut computed = Computed::new();
    if cfg.near_duplicates {
        let images: Vec<Image> = inputs
            .items
            .iter()
            .map(|it| {
                Ok(Image {
                    bag: Some(it.bag),
                    file: safe_bag_path(&inputs.paths[it.bag], &it.rec.path)?,
                    sha256: it.rec.sha256.clone(),
                    width: it.rec.width,
                    height: it.rec.height,
                })
            })
            .collect::<Result<_>>()?;
        let caches = open_caches(&inputs.paths, &inputs.names, warnings)?;
        let store = FingerprintStore::load(&images, &caches, &inputs.names, warnings)?;
        stats = store.stats;
        clock.lap("fingerprints");
        links.extend(near_links(&store, cfg.rules.near_duplicates)?);
        clock.lap("near-duplicate search");
        computed = store.into_computed(&images);
    }
    Ok((links, stats, computed))
}

/// Fingerprints made from the images because no cache had them, by sha256.
pub(crate) type Computed = BTreeMap<String, Fingerprint>;

/// `data/fingerprints.bin` of the split bag: the kept images' fingerprints, from the input
/// bags' caches or as computed, so that `prep split --check` (and a later split of this bag)
/// decodes no film again. Images with neither are left out (the cache is optional).
pub(crate) fn write_fingerprints(
    inputs: &Inputs,
    rows: &[(usize, SplitRecord)],
    computed: &Computed,
    writer: &BagWriter,
) -> Result<usize> {
    let mut scratch = Vec::new();
    let caches = open_caches(&inputs.paths, &inputs.names, &mut scratch)?;
    // Sorted by sha256 (lower-case hex sorts as the bytes do), each image once.
    let wanted: BTreeMap<&str, usize> = rows.iter().map(|(i, r)| (r.sha256.as_str(), *i)).collect();
    let found: Vec<(&str, Source)> = wanted
        .into_iter()
        .filter_map(|(sha, i)| {
            if let Some(f) = computed.get(sha) {
                return Some((sha, Source::Fresh(f)));
            }
            let it = &inputs.items[i];
            let c = caches.get(it.bag)?.as_ref()?;
            let e = c.get(sha, it.rec.width, it.rec.height)?;
            Some((sha, Source::Cached(c, e)))
        })
        .collect();
    if found.is_empty() {
        return Ok(0);
    }
    let mut w = fingerprints::FileWriter::create(
        &writer.staged_path(fingerprints::FILE),
        found.len() as u64,
    )?;
    for (sha, held) in &found {
        let bytes = match held {
            Source::Fresh(f) => fingerprints::entry_bytes(sha, f),
            Source::Cached(file, e) => fingerprints::entry_bytes(
                sha,
                &Fingerprint {
                    hashes: e.hashes.clone(),
                    thumb: file.thumb(e)?,
                },
            ),
        };
        w.raw(&bytes)?;
    }
    w.finish()?;
    Ok(found.len())
}

/// An image to fingerprint: its file, and what a cached fingerprint must agree with.
pub(crate) struct Image {
    /// Index of its bag (for the bag's fingerprint cache); None: no cache.
    pub bag: Option<usize>,
    pub file: PathBuf,
    pub sha256: String,
    pub width: u32,
    pub height: u32,
}

/// How many fingerprints came from the bags' caches and how many were computed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FingerprintStats {
    pub cached: usize,
    pub computed: usize,
}

/// Each bag's `data/fingerprints.bin`, where present and trusted.
fn open_caches(
    bags: &[PathBuf],
    names: &[String],
    warnings: &mut Vec<String>,
) -> Result<Vec<Option<CacheFile>>> {
    let mut out = Vec::new();
    for (b, name) in bags.iter().zip(names) {
        out.push(match CacheFile::open(b)? {
            None => None,
            Some(Ok(c)) => Some(c),
            Some(Err(why)) => {
                warnings.push(format!(
                    "{name}: fingerprint cache not used ({why}); fingerprints recomputed from the images"
                ));
                None
            }
        });
    }
    Ok(out)
}

enum Held<'a> {
    Cached(&'a CacheFile, &'a Cached),
    Computed(Fingerprint),
}

/// Where an output fingerprint comes from: computed by this split, or an input bag's cache.
enum Source<'a> {
    Fresh(&'a Fingerprint),
    Cached(&'a CacheFile, &'a Cached),
}

/// Every image's hashes, from a cache or freshly computed, and where its thumbnail is.
struct FingerprintStore<'a> {
    held: Vec<Held<'a>>,
    stats: FingerprintStats,
}

impl<'a> FingerprintStore<'a> {
    fn load(
        images: &[Image],
        caches: &'a [Option<CacheFile>],
        names: &[String],
        warnings: &mut Vec<String>,
    ) -> Result<FingerprintStore<'a>> {
        let cached: Vec<Option<Held<'a>>> = images
            .iter()
            .map(|im| {
                let c = caches.get(im.bag?)?.as_ref()?;
                let e = c.get(&im.sha256, im.width, im.height)?;
                Some(Held::Cached(c, e))
            })
            .collect();
        // A cache that misses records of its own bag, or names images the bag does not hold,
        // is stale: what it lacks is recomputed, what it holds for others is ignored.
        for (b, cache) in caches.iter().enumerate() {
            let Some(cache) = cache else { continue };
            let mine: Vec<usize> = (0..images.len())
                .filter(|&i| images[i].bag == Some(b))
                .collect();
            let missing = mine.iter().filter(|&&i| cached[i].is_none()).count();
            let strangers = cache.strangers(mine.iter().map(|&i| images[i].sha256.as_str()));
            if missing > 0 || strangers > 0 {
                warnings.push(format!(
                    "{}: fingerprint cache is stale ({missing} image(s) without a fitting entry, {strangers} entr(ies) for no image of the bag); those images were fingerprinted again",
                    names[b]
                ));
            }
        }
        let todo: Vec<usize> = (0..images.len()).filter(|&i| cached[i].is_none()).collect();
        let pb = progress::bar(todo.len() as u64, "fingerprints");
        let fresh: Vec<Fingerprint> = todo
            .par_iter()
            .map(|&i| {
                let f = &images[i].file;
                let r = image::open(f)
                    .map(|img| Fingerprint::new(&img))
                    .map_err(|e| Error::bad_input(f, format!("cannot decode image: {e}")));
                pb.inc(1);
                r
            })
            .collect::<Result<_>>()?;
        pb.finish_and_clear();
        let stats = FingerprintStats {
            cached: images.len() - todo.len(),
            computed: todo.len(),
        };
        let mut fresh = fresh.into_iter();
        let held = cached
            .into_iter()
            .map(|c| c.unwrap_or_else(|| Held::Computed(fresh.next().expect("one per todo"))))
            .collect();
        Ok(FingerprintStore { held, stats })
    }

    /// The fingerprints computed from images (not read from a cache), by sha256.
    fn into_computed(self, images: &[Image]) -> Computed {
        self.held
            .into_iter()
            .zip(images)
            .filter_map(|(h, im)| match h {
                Held::Computed(f) if !im.sha256.is_empty() => Some((im.sha256.clone(), f)),
                _ => None,
            })
            .collect()
    }

    fn hashes(&self) -> Vec<Option<&Hashes>> {
        self.held
            .iter()
            .map(|h| {
                Some(match h {
                    Held::Cached(_, c) => &c.hashes,
                    Held::Computed(f) => &f.hashes,
                })
            })
            .collect()
    }
}

impl Thumbs for FingerprintStore<'_> {
    fn thumb(&self, i: usize) -> Result<Cow<'_, [u8]>> {
        Ok(match &self.held[i] {
            Held::Cached(file, c) => Cow::Owned(file.thumb(c)?),
            Held::Computed(f) => Cow::Borrowed(&f.thumb),
        })
    }
}

fn near_links(store: &FingerprintStore, p: NearDupParams) -> Result<Vec<Link>> {
    Ok(phash::find_matches_in(&store.hashes(), store, p)?
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
        .collect())
}

/// Near-duplicate links among `images`: for `--check`. Fingerprints come from `bag`'s cache
/// (images with `bag: Some(0)` and their sha256 and size) where it has them.
pub(crate) fn near_duplicate_links(
    images: &[Image],
    bag: Option<&Path>,
    p: NearDupParams,
    warnings: &mut Vec<String>,
) -> Result<(Vec<Link>, FingerprintStats)> {
    let (paths, names): (Vec<PathBuf>, Vec<String>) = bag
        .map(|b| (b.to_path_buf(), b.display().to_string()))
        .into_iter()
        .unzip();
    let caches = open_caches(&paths, &names, warnings)?;
    let store = FingerprintStore::load(images, &caches, &names, warnings)?;
    Ok((near_links(&store, p)?, store.stats))
}

/// The duplicates report, and a warning for each copy found under two classes.
pub(crate) fn duplicate_rows(
    inputs: &Inputs,
    grouping: &Grouping,
    warnings: &mut Vec<String>,
) -> Vec<DuplicateRow> {
    let (items, names, gid) = (&inputs.items, &inputs.names, &grouping.group_of);
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
                inputs.name_of(l.a),
                a.class.label(),
                inputs.name_of(l.b),
                b.class.label(),
                l.reason.as_str(),
                gid[l.a]
            ));
        }
        dup_rows.push(DuplicateRow {
            reason: l.reason.as_str().into(),
            a_bag: names[a.bag].clone(),
            a_id: a.rec.id.clone(),
            a_class: a.class.label().into(),
            b_bag: names[b.bag].clone(),
            b_id: b.rec.id.clone(),
            b_class: b.class.label().into(),
            group: gid[l.a].clone(),
            detail: l.detail.clone(),
        });
    }
    dup_rows
}

/// Same-class copies of one file: keep the first (content order), record the others.
pub(crate) fn drop_copies(inputs: &Inputs, gid: &[String]) -> (Vec<bool>, Vec<SplitExcluded>) {
    let mut excluded = Vec::new();
    let mut alive = vec![true; inputs.items.len()];
    let mut first_copy: BTreeMap<(Fine, &str), usize> = BTreeMap::new();
    for (i, it) in inputs.items.iter().enumerate() {
        if let Some(&k) = first_copy.get(&(it.class, it.rec.sha256.as_str())) {
            alive[i] = false;
            excluded.push(inputs.excluded(
                i,
                &gid[i],
                "duplicate-file".into(),
                format!("same bytes as {} (kept)", inputs.name_of(k)),
            ));
        } else {
            first_copy.insert((it.class, it.rec.sha256.as_str()), i);
        }
    }
    (alive, excluded)
}

/// What balancing kept: `units[kept[k]]` is the k-th image to assign, `live[u]` its item.
pub(crate) struct Balanced {
    pub live: Vec<usize>,
    pub units: Vec<Unit>,
    pub kept: Vec<usize>,
    pub targets: Option<[usize; 3]>,
}

/// Balance the live images to the ratio of `--balanced` (all kept without it).
pub(crate) fn balance(
    cfg: &SplitConfig,
    inputs: &Inputs,
    gid: &[String],
    alive: &[bool],
    excluded: &mut Vec<SplitExcluded>,
) -> Result<Balanced> {
    let items = &inputs.items;
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
    let kept: Vec<usize> = match cfg.balance {
        Some(ratio) => {
            let (keep, drops, t) = assign::balance(&units, ratio, cfg.seed);
            targets = Some(t);
            for d in drops {
                let i = live[d.unit];
                excluded.push(inputs.excluded(i, &gid[i], d.reason, d.detail));
            }
            (0..units.len()).filter(|&u| keep[u]).collect()
        }
        None => (0..units.len()).collect(),
    };
    if kept.is_empty() {
        return Err(Error::Usage(
            "nothing left to split (a class with a non-zero ratio has no images?)".into(),
        ));
    }
    Ok(Balanced {
        live,
        units,
        kept,
        targets,
    })
}

/// Assign whole groups to splits per class: the split index of each kept unit.
pub(crate) fn assign(cfg: &SplitConfig, b: &Balanced) -> Vec<usize> {
    let sel: Vec<Unit> = b.kept.iter().map(|&u| b.units[u].clone()).collect();
    let fractions: Vec<f64> = cfg.splits.iter().map(|s| s.1).collect();
    assign::assign(&sel, &fractions, cfg.seed)
}

/// Output names: data/<split>/<class>/<id><ext>, unique per folder (case-insensitively).
/// Returns (item, record) per kept image.
pub(crate) fn name_outputs(
    cfg: &SplitConfig,
    inputs: &Inputs,
    gid: &[String],
    b: &Balanced,
    split_of: &[usize],
) -> Vec<(usize, SplitRecord)> {
    let mut taken: BTreeSet<String> = BTreeSet::new();
    let mut rows = Vec::new();
    for (k, &u) in b.kept.iter().enumerate() {
        let i = b.live[u];
        let it = &inputs.items[i];
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
        rows.push((i, split_record(inputs, i, split, folder, &gid[i], rel)));
    }
    rows
}

fn split_record(
    inputs: &Inputs,
    i: usize,
    split: &str,
    folder: &str,
    group: &str,
    rel: String,
) -> SplitRecord {
    let it = &inputs.items[i];
    SplitRecord {
        split: split.to_string(),
        class: folder.into(),
        subclass: it.class.label().into(),
        group: group.to_string(),
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
        source_bag: inputs.names[it.bag].clone(),
        bag_row: it.row,
    }
}

/// Copy or link every kept image into the bag, in parallel, checking its bytes.
pub(crate) fn copy_files(
    cfg: &SplitConfig,
    inputs: &Inputs,
    writer: &BagWriter,
    rows: &[(usize, SplitRecord)],
) -> Result<()> {
    let pb = progress::bar(rows.len() as u64, "copying");
    rows.par_iter()
        .map(|(i, r)| {
            let it = &inputs.items[*i];
            let src = safe_bag_path(&inputs.paths[it.bag], &it.rec.path)?;
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
    Ok(())
}

/// Records in split order (as given on the command line), then path.
pub(crate) fn sort_records(cfg: &SplitConfig, rows: Vec<(usize, SplitRecord)>) -> Vec<SplitRecord> {
    let mut records: Vec<SplitRecord> = rows.into_iter().map(|(_, r)| r).collect();
    let split_rank = |s: &str| {
        cfg.splits
            .iter()
            .position(|x| x.0 == s)
            .unwrap_or(usize::MAX)
    };
    records.sort_by(|a, b| (split_rank(&a.split), &a.path).cmp(&(split_rank(&b.split), &b.path)));
    records
}

/// Summary figures of a split.
pub(crate) struct Summary {
    pub counts: BTreeMap<(String, String), usize>,
    pub fractions: BTreeMap<(String, String), f64>,
    pub by_reason: BTreeMap<String, usize>,
    pub groups: usize,
    pub merges: BTreeMap<String, usize>,
}

pub(crate) fn summarize(
    cfg: &SplitConfig,
    records: &[SplitRecord],
    excluded: &[SplitExcluded],
    grouping: &Grouping,
) -> Summary {
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut per_sub: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut sub_total: BTreeMap<String, usize> = BTreeMap::new();
    for r in records {
        *counts
            .entry((r.split.clone(), r.class.clone()))
            .or_default() += 1;
        *per_sub
            .entry((r.subclass.clone(), r.split.clone()))
            .or_default() += 1;
        *sub_total.entry(r.subclass.clone()).or_default() += 1;
    }
    let mut fractions = BTreeMap::new();
    for (sub, total) in &sub_total {
        for (s, _) in &cfg.splits {
            let n = per_sub.get(&(sub.clone(), s.clone())).copied().unwrap_or(0);
            fractions.insert((sub.clone(), s.clone()), n as f64 / *total as f64);
        }
    }
    let mut by_reason: BTreeMap<String, usize> = BTreeMap::new();
    for e in excluded {
        *by_reason.entry(e.reason.clone()).or_default() += 1;
    }
    let groups: BTreeSet<&str> = records.iter().map(|r| r.group.as_str()).collect();
    let merges = grouping
        .merges
        .iter()
        .map(|(r, n)| (r.as_str().to_string(), *n))
        .collect();
    Summary {
        counts,
        fractions,
        by_reason,
        groups: groups.len(),
        merges,
    }
}

/// Provenance, the tables and the bag.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_bag(
    cfg: &SplitConfig,
    writer: BagWriter,
    mut prov: Provenance,
    balanced: &Balanced,
    summary: &Summary,
    records: &[SplitRecord],
    excluded: &[SplitExcluded],
    dup_rows: &[DuplicateRow],
    sources: &BTreeMap<(String, usize), SourceValues>,
) -> Result<FinishedBag> {
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
    .param("balance_targets", balanced.targets)
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
    .param("merges_by_reason", &summary.merges)
    .param("groups", summary.groups)
    .param(
        "achieved_fractions",
        summary
            .fractions
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
    let none = SourceValues::default();
    let carried: Vec<&SourceValues> = records
        .iter()
        .map(|r| {
            sources
                .get(&(r.source_bag.clone(), r.bag_row))
                .unwrap_or(&none)
        })
        .collect();
    let source_cols = source_header(carried.iter().copied());
    let table = append_source_columns(write_csv(records, SPLIT_COLUMNS)?, &source_cols, &carried)?;
    writer.write_payload("records.csv", &table)?;
    writer.write_payload(
        "excluded.csv",
        &write_csv(
            excluded,
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
            dup_rows,
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
            summary.groups,
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
            columns: split_columns(&source_cols),
            image_globs: globs,
        },
    };
    writer.finish(info)
}
