//! The `prep inpaint` stage: one image (for users and benchmarks) or a whole bag.

use super::io::{self, SamplesMut};
use super::{detect, inpaint, watermark, Filled, Options};
use crate::error::{Error, Result};
use crate::manifest::{
    append_source_columns, hash_bytes, manifest_sha256, read_records_with_source, source_header,
    verify_bag, write_csv, BagWriter, ColumnType, CroissantSpec, Excluded, FinishedBag, InputRef,
    Provenance, Record, SourceValues, StageInfo,
};
use crate::progress;
use crate::split::{fingerprints, phash::Fingerprint};
use image::DynamicImage;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Which masks to build for an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Detect {
    /// Find annotations automatically (OR-ed with any user mask).
    Auto,
    /// Use the user's masks only.
    None,
}

/// The mask of one image and where it came from.
pub struct MaskInfo {
    pub mask: Vec<u8>,
    pub components: usize,
    pub pixels: usize,
    pub detect_ms: f64,
}

/// Build the mask of `img`: detection (if asked) OR the user mask.
pub fn build_mask(img: &DynamicImage, user: Option<Vec<u8>>, detect_on: bool) -> MaskInfo {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut components = 0;
    let mut detect_ms = 0.0;
    let mut mask = if detect_on {
        let t = Instant::now();
        // 8-bit grey images are read in place, not copied.
        let (grey, spread) = io::grey_and_spread(img);
        let d = detect::detect(&grey, spread.as_deref(), w, h);
        components = d.components;
        let mut mask = d.mask;
        if let Some(u) = user {
            for (m, a) in mask.iter_mut().zip(&u) {
                *m |= *a;
            }
        }
        detect_ms = t.elapsed().as_secs_f64() * 1000.0;
        mask
    } else {
        user.unwrap_or_else(|| vec![0u8; w * h])
    };
    let mut pixels = 0;
    for m in mask.iter_mut() {
        let on = *m != 0;
        *m = if on { 255 } else { 0 };
        pixels += on as usize;
    }
    MaskInfo {
        mask,
        components,
        pixels,
        detect_ms,
    }
}

/// Fill the masked pixels of `img` in place.
pub fn apply(img: &mut DynamicImage, mask: &[u8], opts: &Options) -> Filled {
    let (w, h) = (img.width() as usize, img.height() as usize);
    match io::samples_mut(img) {
        SamplesMut::U8(d, c) => inpaint(d, w, h, c, mask, opts),
        SamplesMut::U16(d, c) => inpaint(d, w, h, c, mask, opts),
    }
}

/// A checked single-image invocation.
#[derive(Debug, Clone)]
pub struct SingleConfig {
    pub image: PathBuf,
    pub mask: Option<PathBuf>,
    pub output: PathBuf,
    pub detect: Detect,
    pub save_mask: Option<PathBuf>,
    pub bench_repeat: usize,
    pub opts: Options,
}

pub struct SingleOutcome {
    pub filled: Filled,
    pub components: usize,
    /// Inpainting time of each run, ms (decode, detection and encode excluded).
    pub inpaint_ms: Vec<f64>,
    pub detect_ms: f64,
}

pub fn run_single(cfg: &SingleConfig) -> Result<SingleOutcome> {
    let bytes = std::fs::read(&cfg.image).map_err(|e| Error::read(&cfg.image, e))?;
    let img = io::decode(&cfg.image, &bytes)?;
    let user = match &cfg.mask {
        Some(m) => Some(io::read_mask(m, img.width(), img.height())?),
        None => None,
    };
    let m = build_mask(&img, user, cfg.detect == Detect::Auto);
    let mut times = Vec::new();
    let mut out = img.clone();
    let mut filled = Filled::default();
    for _ in 0..cfg.bench_repeat.max(1) {
        let mut work = img.clone();
        let t = Instant::now();
        filled = apply(&mut work, &m.mask, &cfg.opts);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        out = work;
    }
    let png = io::encode_png(&out)?;
    write_atomic(&cfg.output, &png)?;
    if let Some(p) = &cfg.save_mask {
        let used = used_mask(&m.mask, &filled);
        write_atomic(p, &io::encode_mask(&used, img.width(), img.height())?)?;
    }
    Ok(SingleOutcome {
        filled,
        components: m.components,
        inpaint_ms: times,
        detect_ms: m.detect_ms,
    })
}

/// The mask of the pixels really inpainted: the mask less the pixels kept as film.
pub fn used_mask(mask: &[u8], filled: &Filled) -> Vec<u8> {
    let mut used = mask.to_vec();
    for &k in &filled.kept {
        used[k as usize] = 0;
    }
    used
}

/// Write to a temporary file beside `path`, then rename it into place.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(|e| Error::write(&dir, e))?;
    std::io::Write::write_all(&mut tmp, bytes).map_err(|e| Error::write(path, e))?;
    tmp.persist(path).map_err(|e| Error::write(path, e.error))?;
    Ok(())
}

/// A checked bag invocation.
#[derive(Debug, Clone)]
pub struct BagConfig {
    pub input: PathBuf,
    pub out: PathBuf,
    pub detect: Detect,
    pub masks: Option<PathBuf>,
    pub opts: Options,
    pub force: bool,
    pub argv: Vec<String>,
    /// Estimate each source's semi-transparent watermark (see [`super::watermark`]).
    pub source_watermarks: bool,
}

/// One row of the output records.csv: the input record (path, hash and size of the new file)
/// plus what was done to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InpaintRecord {
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
    /// sha256 of the image in the input bag.
    pub input_sha256: String,
    /// Pixels inpainted (0 = passed through byte-identical).
    pub mask_pixels: u64,
    /// Masked pixels kept because they already matched the film around them.
    pub film_kept: u64,
    /// Annotation components found by detection.
    pub components: u64,
    /// User mask used (`DIR/<id>.png`).
    pub user_mask: bool,
    /// Fill used: telea, biharmonic, or none (passed through).
    pub method: String,
    /// The mask used, relative to the bag root (empty when nothing was inpainted).
    pub mask_path: String,
}

pub const INPAINT_COLUMNS: &[&str] = &[
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
    "input_sha256",
    "mask_pixels",
    "film_kept",
    "components",
    "user_mask",
    "method",
    "mask_path",
];

pub struct BagOutcome {
    pub bag: FinishedBag,
    pub images: usize,
    pub inpainted: usize,
    pub passed: usize,
    pub excluded: usize,
    pub warnings: Vec<String>,
}

/// Seed of an image's grain: from the run seed and the image id, never from thread order.
fn image_seed(seed: u64, id: &str) -> u64 {
    let h = hash_bytes(id.as_bytes());
    seed ^ u64::from_str_radix(&h[..16], 16).expect("hex")
}

pub fn run_bag(cfg: &BagConfig) -> Result<BagOutcome> {
    verify_bag(&cfg.input)?.into_result(&cfg.input)?;
    let (records, sources): (Vec<Record>, Vec<SourceValues>) =
        read_records_with_source(&cfg.input)?.into_iter().unzip();
    let mut warnings = Vec::new();
    let mut prov = Provenance::new("inpaint", cfg.argv.clone(), &cfg.out);
    prov.inputs.push(InputRef {
        kind: "bag".into(),
        path: cfg.input.to_string_lossy().into_owned(),
        sha256: manifest_sha256(&cfg.input)?,
    });
    // User masks: DIR/<id>.png; any file naming no image is reported, not silently ignored.
    let mut mask_listing = String::new();
    if let Some(dir) = &cfg.masks {
        let ids: BTreeSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
        let mut names = Vec::new();
        for e in std::fs::read_dir(dir).map_err(|e| Error::read(dir, e))? {
            let e = e.map_err(|e| Error::read(dir, e))?;
            names.push(e.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        for n in &names {
            match n.strip_suffix(".png") {
                Some(id) if ids.contains(id) => {
                    let (sha, _) = crate::manifest::hash_file(&dir.join(n))?;
                    mask_listing.push_str(&format!("{sha}  {n}\n"));
                }
                _ => warnings.push(format!(
                    "{}: names no image of the bag (masks are <image id>.png)",
                    dir.join(n).display()
                )),
            }
        }
        prov.inputs.push(InputRef {
            kind: "masks".into(),
            path: dir.to_string_lossy().into_owned(),
            sha256: hash_bytes(mask_listing.as_bytes()),
        });
    }

    let writer = BagWriter::create(&cfg.out, cfg.force)?;
    let wm = if cfg.source_watermarks {
        Some(source_watermarks(cfg, &writer, &records, &mut warnings)?)
    } else {
        None
    };
    let wm_masks = wm.as_ref().map(|e| &e.masks);
    let pb = progress::bar(records.len() as u64, "inpainting");
    let spill = fingerprints::Spill::new()?;
    let results: Vec<std::result::Result<InpaintRecord, Excluded>> = records
        .par_iter()
        .map(|r| {
            let res = one_image(cfg, &writer, r, wm_masks, &spill);
            pb.inc(1);
            res
        })
        .collect::<Result<Vec<_>>>()?;
    pb.finish_and_clear();
    spill.write(&writer.staged_path(fingerprints::FILE), None)?;

    let mut rows = Vec::new();
    let mut excluded = Vec::new();
    for r in results {
        match r {
            Ok(row) => rows.push(row),
            Err(e) => excluded.push(e),
        }
    }
    rows.sort_by(|a, b| a.path.cmp(&b.path));
    excluded.sort_by(|a, b| a.file.cmp(&b.file));
    let inpainted = rows.iter().filter(|r| r.mask_pixels > 0).count();
    prov.param("detect", cfg.detect)
        .param("method", cfg.opts.method)
        .param("telea_radius", cfg.opts.radius)
        .param("seed", cfg.opts.seed)
        .param(
            "masks",
            cfg.masks.as_ref().map(|m| m.to_string_lossy().into_owned()),
        );
    if cfg.source_watermarks {
        prov.param("source_watermarks", true)
            .param("source_watermarks_min_images", watermark::MIN_IMAGES)
            .param("source_watermarks_max_sample", watermark::MAX_SAMPLE)
            .param(
                "source_watermarks_threshold",
                format!(
                    "lower quartile of the white top-hat over the group >= max({}, median + {} * 1.4826 * MAD), grown into >= a third of it",
                    watermark::MIN_RAISE,
                    watermark::SIGMAS
                ),
            );
    }
    prov.seed = Some(cfg.opts.seed);
    // The source columns (a DICOM film's) follow each image, by id (unique in a bag).
    let by_id: BTreeMap<&str, &SourceValues> = records
        .iter()
        .map(|r| r.id.as_str())
        .zip(&sources)
        .collect();
    let carried: Vec<&SourceValues> = rows.iter().map(|r| by_id[r.id.as_str()]).collect();
    let source_cols = source_header(carried.iter().copied());
    let table = append_source_columns(write_csv(&rows, INPAINT_COLUMNS)?, &source_cols, &carried)?;
    writer.write_payload("records.csv", &table)?;
    writer.write_payload(
        "excluded.csv",
        &write_csv(&excluded, crate::manifest::EXCLUDED_COLUMNS)?,
    )?;
    writer.write_payload("provenance.json", &prov.to_bytes())?;
    let mut globs =
        crate::manifest::image_globs("data/images/**", rows.iter().map(|r| r.path.as_str()));
    if inpainted > 0 {
        globs.push(("data/masks/*.png".into(), "image/png".into()));
    }
    if wm.as_ref().is_some_and(|e| !e.masks.is_empty()) {
        globs.push(("data/masks/sources/*.png".into(), "image/png".into()));
    }
    let info = StageInfo {
        name: "prep-inpaint".into(),
        description: format!(
            "{} images of {} with burned-in annotations erased by prep inpaint ({} inpainted, {} passed through byte-identical); the masks used are in data/masks/.",
            rows.len(),
            cfg.input.display(),
            inpainted,
            rows.len() - inpainted
        ),
        croissant: CroissantSpec {
            license: "See the input bag's licence; inpainting does not change it.".into(),
            url: String::new(),
            cite_as: String::new(),
            table: "data/records.csv".into(),
            columns: columns(&source_cols),
            image_globs: globs,
        },
    };
    let bag = writer.finish(info)?;
    Ok(BagOutcome {
        bag,
        images: rows.len(),
        inpainted,
        passed: rows.len() - inpainted,
        excluded: excluded.len(),
        warnings,
    })
}

/// Process one record: Ok(Ok(row)) written, Ok(Err(exclusion)) unreadable input, Err(_) a
/// write failure that stops the run.
fn one_image(
    cfg: &BagConfig,
    writer: &BagWriter,
    r: &Record,
    wm: Option<&BTreeMap<watermark::Key, Vec<u8>>>,
    spill: &fingerprints::Spill,
) -> Result<std::result::Result<InpaintRecord, Excluded>> {
    let src = cfg.input.join(&r.path);
    let exclude = |reason: &str, detail: String| Excluded {
        source_row: r.source_row.clone(),
        file: r.path.clone(),
        reason: reason.into(),
        detail,
    };
    if !safe_path(&r.path) {
        return Ok(Err(exclude(
            "unsafe-path",
            format!("path {:?} leaves the bag's data/ folder", r.path),
        )));
    }
    let bytes = std::fs::read(&src).map_err(|e| Error::read(&src, e))?;
    let mut img = match io::decode(&src, &bytes) {
        Ok(i) => i,
        Err(e) => return Ok(Err(exclude("unreadable-image", e.to_string()))),
    };
    let user_path = cfg.masks.as_ref().map(|d| d.join(format!("{}.png", r.id)));
    let user = match &user_path {
        Some(p) if p.is_file() => match io::read_mask(p, img.width(), img.height()) {
            Ok(m) => Some(m),
            Err(e) => return Ok(Err(exclude("bad-mask", e.to_string()))),
        },
        _ => None,
    };
    let user_mask = user.is_some();
    // The source's watermark mask, if one was estimated for its size, is OR-ed in.
    let key = (r.source.clone(), img.width(), img.height());
    let user = match (user, wm.and_then(|m| m.get(&key))) {
        (Some(mut u), Some(s)) => {
            for (a, b) in u.iter_mut().zip(s) {
                *a |= *b;
            }
            Some(u)
        }
        (None, Some(s)) if s.iter().any(|&v| v != 0) => Some(s.clone()),
        (u, _) => u,
    };
    let m = build_mask(&img, user, cfg.detect == Detect::Auto);
    let rel_images = r.path.strip_prefix("data/").unwrap_or(&r.path).to_string();
    let mut row = InpaintRecord {
        id: r.id.clone(),
        path: r.path.clone(),
        sha256: r.sha256.clone(),
        bytes: r.bytes,
        width: r.width,
        height: r.height,
        source: r.source.clone(),
        patient_id: r.patient_id.clone(),
        view: r.view.clone(),
        label: r.label.clone(),
        finding: r.finding.clone(),
        source_file: r.source_file.clone(),
        source_row: r.source_row.clone(),
        input_sha256: r.sha256.clone(),
        mask_pixels: m.pixels as u64,
        film_kept: 0,
        components: m.components as u64,
        user_mask,
        method: "none".into(),
        mask_path: String::new(),
    };
    // The fingerprint is of the pixels written: the input's when passed through.
    let pass = |row: &mut InpaintRecord, img: &DynamicImage| -> Result<()> {
        let sha = hash_bytes(&bytes);
        writer.add_file(&src, &rel_images, &bytes, &sha, false)?;
        spill.add(&sha, &Fingerprint::new(img))?;
        row.sha256 = sha;
        Ok(())
    };
    if m.pixels == 0 {
        pass(&mut row, &img)?;
        return Ok(Ok(row));
    }
    let opts = Options {
        seed: image_seed(cfg.opts.seed, &r.id),
        ..cfg.opts
    };
    let filled = apply(&mut img, &m.mask, &opts);
    row.film_kept = filled.kept.len() as u64;
    row.mask_pixels = (m.pixels - filled.kept.len()) as u64;
    if row.mask_pixels == 0 {
        // Rare (all of the mask kept as film): decode again rather than trust `img` unchanged.
        let original = io::decode(&src, &bytes)?;
        pass(&mut row, &original)?;
        return Ok(Ok(row));
    }
    let used = used_mask(&m.mask, &filled);
    let png = io::encode_png(&img)?;
    // Lossless output whatever the input format: a re-encoded JPEG would change pixels
    // outside the mask.
    let stem = match rel_images.rfind('.') {
        Some(k) if k > rel_images.rfind('/').map_or(0, |s| s + 1) => &rel_images[..k],
        _ => rel_images.as_str(),
    };
    let rel_out = format!("{stem}.png");
    let sha = writer.write_payload(&rel_out, &png)?;
    // The PNG keeps img's colour type, so decoding it gives these pixels back.
    spill.add(&sha, &Fingerprint::new(&img))?;
    let mask_rel = format!("masks/{}.png", r.id);
    writer.write_payload(
        &mask_rel,
        &io::encode_mask(&used, img.width(), img.height())?,
    )?;
    row.path = format!("data/{rel_out}");
    row.sha256 = sha;
    row.bytes = png.len() as u64;
    row.method = filled.method_name();
    row.mask_path = format!("data/{mask_rel}");
    Ok(Ok(row))
}

/// `--source-watermarks`: estimate every (source, size) group, write the masks under
/// `data/masks/sources/` and the table `data/source_watermarks.csv`, and report the groups too
/// small for an estimate.
fn source_watermarks(
    cfg: &BagConfig,
    writer: &BagWriter,
    records: &[Record],
    warnings: &mut Vec<String>,
) -> Result<watermark::Estimates> {
    let est = watermark::estimate_bag(&cfg.input, records, &safe_path);
    let small: Vec<String> = est
        .rows
        .iter()
        .filter(|r| r.status != "estimated")
        .map(|r| {
            format!(
                "{:?} {}x{}: {} image(s)",
                r.source, r.width, r.height, r.images
            )
        })
        .collect();
    if !small.is_empty() {
        let shown = small.iter().take(5).cloned().collect::<Vec<_>>().join("; ");
        let more = if small.len() > 5 {
            format!("; and {} more", small.len() - 5)
        } else {
            String::new()
        };
        warnings.push(format!(
            "no watermark estimate for {} (source, size) group(s) with fewer than {} readable images ({shown}{more}); see data/source_watermarks.csv",
            small.len(),
            watermark::MIN_IMAGES
        ));
    }
    for (key, mask) in &est.masks {
        writer.write_payload(
            &format!("masks/sources/{}", watermark::mask_name(key)),
            &io::encode_mask(mask, key.1, key.2)?,
        )?;
    }
    writer.write_payload(
        "source_watermarks.csv",
        &write_csv(&est.rows, watermark::COLUMNS)?,
    )?;
    Ok(est)
}

/// records.csv is data: never follow a path out of the bag's payload.
fn safe_path(p: &str) -> bool {
    p.starts_with("data/")
        && !p.contains('\\')
        && Path::new(p)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

fn columns(source_cols: &[&str]) -> Vec<(String, ColumnType, String)> {
    use ColumnType::*;
    let header: Vec<&str> = INPAINT_COLUMNS.iter().chain(source_cols).copied().collect();
    crate::manifest::describe_columns(&header, |c| {
        Some(match c {
            "path" => (
                Text,
                "Path of the (cleaned) image relative to the bag root.",
            ),
            "sha256" => (Text, "SHA-256 of the image file in this bag."),
            "input_sha256" => (Text, "SHA-256 of the image in the input bag."),
            "mask_pixels" => (Integer, "Pixels inpainted (0: passed through unchanged)."),
            "film_kept" => (
                Integer,
                "Masked pixels kept because they already matched the film.",
            ),
            "components" => (Integer, "Annotation components found by detection."),
            "user_mask" => (Boolean, "Whether a user mask was OR-ed in."),
            "method" => (Text, "Fill used: telea, biharmonic, patch, several joined by + (auto picks per hole), or none."),
            "mask_path" => (Text, "The mask used, relative to the bag root."),
            _ => return None,
        })
    })
}
