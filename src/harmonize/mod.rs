//! `prep harmonize`: take away what the audit's probe can use. Every image becomes one size
//! (aspect kept by centre crop or padding), 8-bit grey PNG, with film borders and black frames
//! cropped by detection and its intensity normalised; each step's outcome is recorded per image.
//!
//! Steps: read and verify the input bags → name each output (ids and paths must not collide)
//! → per image: decode, find content, crop, square, resize, normalise, encode → write the bag.
//! Every input column is kept (a split bag stays a split bag, an inpaint bag keeps its mask
//! statistics); path, hash, size and dimensions describe the new file.

pub mod pixels;

pub use pixels::{Fit, Intensity};

use crate::error::{Error, Result};
use crate::manifest::{
    describe_columns, hash_bytes, manifest_sha256, verify_bag, BagWriter, ColumnType,
    CroissantSpec, Excluded, FinishedBag, InputRef, Provenance, StageInfo, RECORD_COLUMNS,
};
use crate::progress;
use crate::report::{read_rows, Rows};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A checked `prep harmonize` invocation.
#[derive(Debug, Clone)]
pub struct HarmonizeConfig {
    pub inputs: Vec<PathBuf>,
    pub out: PathBuf,
    pub size: u32,
    pub fit: Fit,
    pub intensity: Intensity,
    pub crop_borders: bool,
    pub force: bool,
    pub argv: Vec<String>,
}

pub struct HarmonizeOutcome {
    pub bag: FinishedBag,
    pub images: usize,
    pub cropped: usize,
    pub excluded: usize,
    pub size: u32,
    pub warnings: Vec<String>,
}

/// Columns this stage adds after the input's own.
pub const HARMONIZE_COLUMNS: &[&str] = &[
    "input_sha256",
    "original_width",
    "original_height",
    "original_format",
    "original_colour",
    "content_box",
    "border_cropped",
    "fit",
    "intensity",
];

/// Where a record's image came from, for records without their own `source_bag`.
const LINEAGE_COLUMNS: &[&str] = &["source_bag", "bag_row"];

/// One record to harmonize.
struct Job {
    bag: usize,
    /// Line of the input records.csv (header = 1).
    line: usize,
    row: BTreeMap<String, String>,
    out_rel: String,
}

/// What was done to one image.
struct Done {
    png: Vec<u8>,
    extra: BTreeMap<&'static str, String>,
}

/// records.csv is data: never follow a path out of the bag's payload.
fn safe_rel(p: &str) -> bool {
    p.starts_with("data/")
        && !p.contains('\\')
        && Path::new(p)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// The same relative path, as a PNG.
fn png_path(rel: &str) -> String {
    let stem = match rel.rfind('.') {
        Some(k) if k > rel.rfind('/').map_or(0, |s| s + 1) => &rel[..k],
        _ => rel,
    };
    format!("{stem}.png")
}

/// Step 1: read every input, check ids and output paths do not collide, fix the column order.
fn plan(cfg: &HarmonizeConfig) -> Result<(Vec<Job>, Vec<String>, Vec<InputRef>)> {
    let mut jobs = Vec::new();
    let mut columns: Vec<String> = Vec::new();
    let mut inputs = Vec::new();
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    let mut paths: BTreeMap<String, String> = BTreeMap::new();
    for (b, bag) in cfg.inputs.iter().enumerate() {
        verify_bag(bag)?.into_result(bag)?;
        let records = bag.join("data/records.csv");
        let rows: Rows = read_rows(&records)?;
        inputs.push(InputRef {
            kind: "bag".into(),
            path: bag.to_string_lossy().into_owned(),
            sha256: manifest_sha256(bag)?,
        });
        if let Some(first) = rows.first() {
            for need in ["id", "path"] {
                if !first.contains_key(need) {
                    return Err(Error::MissingColumn {
                        path: records.clone(),
                        column: need.into(),
                        present: first.keys().cloned().collect::<Vec<_>>().join(", "),
                    });
                }
            }
            for c in first.keys() {
                if !columns.contains(c) {
                    columns.push(c.clone());
                }
            }
        }
        for (i, row) in rows.into_iter().enumerate() {
            let line = i + 2;
            let rel = row["path"].clone();
            if !safe_rel(&rel) {
                return Err(Error::BadRow {
                    path: records.clone(),
                    row: line as u64,
                    reason: format!("path {rel:?} leaves the bag's data/ folder"),
                });
            }
            let here = format!("{}:{}", bag.display(), row["id"]);
            if let Some(prev) = ids.insert(row["id"].to_lowercase(), here.clone()) {
                return Err(Error::Usage(format!(
                    "image id {:?} is in two input bags ({prev} and {here}): harmonize them into separate bags",
                    row["id"]
                )));
            }
            let out_rel = png_path(&rel);
            if let Some(prev) = paths.insert(out_rel.to_lowercase(), here.clone()) {
                return Err(Error::Usage(format!(
                    "{prev} and {here} would both be written to {out_rel}"
                )));
            }
            jobs.push(Job {
                bag: b,
                line,
                row,
                out_rel,
            });
        }
    }
    // Shared columns first in their usual order, then the inputs' own, then this stage's.
    let mut ordered: Vec<String> = RECORD_COLUMNS
        .iter()
        .filter(|c| columns.iter().any(|x| x == *c))
        .map(|c| c.to_string())
        .collect();
    for c in columns {
        if !ordered.contains(&c) && !HARMONIZE_COLUMNS.contains(&c.as_str()) {
            ordered.push(c);
        }
    }
    for c in LINEAGE_COLUMNS.iter().chain(HARMONIZE_COLUMNS) {
        if !ordered.iter().any(|x| x == c) {
            ordered.push(c.to_string());
        }
    }
    jobs.sort_by(|a, b| a.out_rel.cmp(&b.out_rel));
    Ok((jobs, ordered, inputs))
}

fn format_name(bytes: &[u8]) -> &'static str {
    match image::guess_format(bytes) {
        Ok(image::ImageFormat::Png) => "png",
        Ok(image::ImageFormat::Jpeg) => "jpeg",
        Ok(image::ImageFormat::Bmp) => "bmp",
        Ok(image::ImageFormat::Tiff) => "tiff",
        _ => "other",
    }
}

/// Step 2, one image: decode → content → crop → square → resize → normalise → PNG.
fn one(cfg: &HarmonizeConfig, src: &Path) -> Result<std::result::Result<Done, String>> {
    let bytes = std::fs::read(src).map_err(|e| Error::read(src, e))?;
    let img = match crate::inpaint::io::decode(src, &bytes) {
        Ok(i) => i,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let mut extra = BTreeMap::new();
    extra.insert("input_sha256", hash_bytes(&bytes));
    extra.insert("original_width", img.width().to_string());
    extra.insert("original_height", img.height().to_string());
    extra.insert("original_format", format_name(&bytes).to_string());
    extra.insert(
        "original_colour",
        crate::inpaint::io::color_name(&img).to_string(),
    );
    let grey = img.to_luma8();
    let full = pixels::Rect {
        x: 0,
        y: 0,
        w: grey.width(),
        h: grey.height(),
    };
    let content = if cfg.crop_borders {
        pixels::content(&grey)
    } else {
        full
    };
    extra.insert("content_box", content.text());
    extra.insert("border_cropped", (content != full).to_string());
    let cropped = if content != full {
        pixels::crop(&grey, content)
    } else {
        grey
    };
    let mut out = pixels::resize(&pixels::square(&cropped, cfg.fit), cfg.size);
    pixels::normalise(&mut out, cfg.intensity);
    extra.insert("fit", fit_name(cfg.fit).into());
    extra.insert("intensity", intensity_name(cfg.intensity).into());
    let png = crate::inpaint::io::encode_png(&image::DynamicImage::ImageLuma8(out))?;
    Ok(Ok(Done { png, extra }))
}

fn fit_name(f: Fit) -> &'static str {
    match f {
        Fit::Crop => "crop",
        Fit::Pad => "pad",
    }
}

fn intensity_name(i: Intensity) -> &'static str {
    match i {
        Intensity::Hist => "hist",
        Intensity::Clahe => "clahe",
        Intensity::None => "none",
    }
}

pub fn run(cfg: &HarmonizeConfig) -> Result<HarmonizeOutcome> {
    let (jobs, columns, inputs) = plan(cfg)?;
    let writer = BagWriter::create(&cfg.out, cfg.force)?;
    let pb = progress::bar(jobs.len() as u64, "harmonizing");
    let results: Vec<std::result::Result<Done, String>> = jobs
        .par_iter()
        .map(|j| {
            let src = cfg.inputs[j.bag].join(&j.row["path"]);
            let r = one(cfg, &src)?;
            if let Ok(d) = &r {
                writer.write_payload(j.out_rel.strip_prefix("data/").expect("safe"), &d.png)?;
            }
            pb.inc(1);
            Ok(r)
        })
        .collect::<Result<_>>()?;
    pb.finish_and_clear();

    let mut table = csv::Writer::from_writer(Vec::new());
    let csv_err = |e: csv::Error| Error::Csv {
        path: cfg.out.join("data/records.csv"),
        source: e,
    };
    table.write_record(&columns).map_err(csv_err)?;
    let mut excluded = Vec::new();
    let mut images = 0;
    let mut cropped = 0;
    for (j, r) in jobs.iter().zip(results) {
        let done = match r {
            Ok(d) => d,
            Err(why) => {
                excluded.push(Excluded {
                    source_row: j.row.get("source_row").cloned().unwrap_or_default(),
                    file: format!("{}:{}", cfg.inputs[j.bag].display(), j.row["path"]),
                    reason: "unreadable-image".into(),
                    detail: why,
                });
                continue;
            }
        };
        images += 1;
        cropped += (done.extra["border_cropped"] == "true") as usize;
        let mut row = j.row.clone();
        row.insert("path".into(), j.out_rel.clone());
        row.insert("sha256".into(), hash_bytes(&done.png));
        row.insert("bytes".into(), done.png.len().to_string());
        row.insert("width".into(), cfg.size.to_string());
        row.insert("height".into(), cfg.size.to_string());
        if row.get("source_bag").is_none_or(|s| s.is_empty()) {
            row.insert(
                "source_bag".into(),
                cfg.inputs[j.bag].to_string_lossy().into_owned(),
            );
            row.insert("bag_row".into(), j.line.to_string());
        }
        for (k, v) in done.extra {
            row.insert(k.into(), v);
        }
        let cells: Vec<&str> = columns
            .iter()
            .map(|c| row.get(c).map(String::as_str).unwrap_or(""))
            .collect();
        table.write_record(&cells).map_err(csv_err)?;
    }
    let table = table
        .into_inner()
        .map_err(|e| Error::Usage(format!("csv buffer: {e}")))?;
    excluded.sort_by(|a, b| a.file.cmp(&b.file));

    let mut prov = Provenance::new("harmonize", cfg.argv.clone(), &cfg.out);
    prov.inputs = inputs;
    prov.param("size", cfg.size)
        .param("fit", fit_name(cfg.fit))
        .param("intensity", intensity_name(cfg.intensity))
        .param("crop_borders", cfg.crop_borders)
        .param(
            "border_rule",
            "rows/columns peeled from each edge while their std <= 12 and mean < 24 or > 232, at most 25 % of a side",
        )
        .param("output", "8-bit grey PNG")
        .param("resize_filter", "Catmull-Rom");
    writer.write_payload("records.csv", &table)?;
    writer.write_payload(
        "excluded.csv",
        &crate::manifest::write_csv(&excluded, crate::manifest::EXCLUDED_COLUMNS)?,
    )?;
    writer.write_payload("provenance.json", &prov.to_bytes())?;
    let col_refs: Vec<&str> = columns.iter().map(String::as_str).collect();
    let dirs: BTreeSet<String> = jobs
        .iter()
        .filter_map(|j| j.out_rel.rsplit_once('/').map(|(d, _)| d.to_string()))
        .collect();
    let globs = dirs
        .into_iter()
        .map(|d| (format!("{d}/*.png"), "image/png".to_string()))
        .collect();
    let info = StageInfo {
        name: "prep-harmonize".into(),
        description: format!(
            "{images} images of {} harmonized by prep harmonize: {}x{} 8-bit grey PNG ({} fit), borders {}, intensity {}.",
            cfg.inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            cfg.size,
            cfg.size,
            fit_name(cfg.fit),
            if cfg.crop_borders { "cropped by detection" } else { "kept" },
            intensity_name(cfg.intensity)
        ),
        croissant: CroissantSpec {
            license: "See the input bags' licences; harmonizing does not change them.".into(),
            url: String::new(),
            cite_as: String::new(),
            table: "data/records.csv".into(),
            columns: describe(&col_refs),
            image_globs: globs,
        },
    };
    let bag = writer.finish(info)?;
    let mut warnings = Vec::new();
    if !excluded.is_empty() {
        warnings.push(format!(
            "{} image(s) could not be decoded and are listed in data/excluded.csv",
            excluded.len()
        ));
    }
    Ok(HarmonizeOutcome {
        bag,
        images,
        cropped,
        excluded: excluded.len(),
        size: cfg.size,
        warnings,
    })
}

fn describe(cols: &[&str]) -> Vec<(String, ColumnType, String)> {
    use ColumnType::*;
    describe_columns(cols, |c| {
        Some(match c {
            "path" => (Text, "Path of the harmonized PNG relative to the bag root."),
            "sha256" => (Text, "SHA-256 of the harmonized PNG."),
            "width" | "height" => (Integer, "Side of the harmonized image in pixels."),
            "input_sha256" => (Text, "SHA-256 of the image in the input bag."),
            "original_width" => (Integer, "Width of the input image."),
            "original_height" => (Integer, "Height of the input image."),
            "original_format" => (Text, "File format of the input image."),
            "original_colour" => (Text, "Colour type and bit depth of the input image."),
            "content_box" => (
                Text,
                "x,y,w,h of the film inside its detected borders, in input pixels.",
            ),
            "border_cropped" => (Boolean, "Whether a border or frame was cropped."),
            "fit" => (Text, "How the image was made square: crop or pad."),
            "intensity" => (
                Text,
                "Intensity normalisation: hist (exact histogram equalisation), clahe or none.",
            ),
            "source_bag" => (Text, "Bag the image was read from."),
            "bag_row" => (Integer, "Line of that bag's records.csv (header = 1)."),
            _ => return None,
        })
    })
}
