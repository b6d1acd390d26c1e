//! HTML pieces of the report: page shell, tables, thumbnails, SVG curves.

use super::{read_rows, Rows};
use crate::error::{Error, Result};
use base64::Engine;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = String::from("<table><tr>");
    for h in head {
        let _ = write!(s, "<th>{}</th>", esc(h));
    }
    s.push_str("</tr>");
    for r in rows {
        s.push_str("<tr>");
        for c in r {
            let _ = write!(s, "<td>{c}</td>");
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
    s
}

pub struct Page {
    body: String,
    title: String,
}

impl Page {
    pub fn new(title: &str) -> Page {
        let mut p = Page {
            body: String::new(),
            title: title.to_string(),
        };
        p.body.push_str(&format!("<h1>{}</h1>", esc(title)));
        p
    }
    pub fn h2(&mut self, t: &str) {
        let _ = write!(self.body, "<h2>{}</h2>", esc(t));
    }
    pub fn h3(&mut self, t: &str) {
        let _ = write!(self.body, "<h3>{}</h3>", esc(t));
    }
    /// A paragraph of trusted (already escaped) HTML.
    pub fn p(&mut self, html: &str) {
        let _ = write!(self.body, "<p>{html}</p>");
    }
    pub fn raw(&mut self, html: &str) {
        self.body.push_str(html);
    }
    pub fn details(&mut self, summary: &str, html: &str) {
        let _ = write!(
            self.body,
            "<details><summary>{}</summary>{html}</details>",
            esc(summary)
        );
    }
    pub fn finish(self) -> String {
        format!(
            "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>{}</title><style>{}</style></head><body>{}</body></html>\n",
            esc(&self.title),
            CSS,
            self.body
        )
    }
}

const CSS: &str = "body{font:14px/1.4 sans-serif;margin:24px;color:#222;max-width:1200px}\
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}\
th{background:#f0f0f0}code{font-size:12px;word-break:break-all}.ok{color:#186a18;font-weight:bold}.bad{color:#b00;font-weight:bold}\
.gallery{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #ccc;padding:6px}.card img{width:160px;height:auto;display:inline-block;margin-right:4px;background:#000}\
h2{border-bottom:2px solid #444;margin-top:32px}svg{background:#fafafa;border:1px solid #ddd}";

/// A PNG thumbnail (at most `side` px) as a data: URL, or None when the file is not an image.
fn thumb(path: &Path, side: u32) -> Option<String> {
    thumb_as(path, side, false)
}

/// [`thumb`], in colour when `colour` (Grad-CAM overlays), else grey.
pub(super) fn thumb_as(path: &Path, side: u32, colour: bool) -> Option<String> {
    let img = image::open(path).ok()?.thumbnail(side, side);
    let t = if colour {
        image::DynamicImage::ImageRgb8(img.to_rgb8())
    } else {
        image::DynamicImage::ImageLuma8(img.to_luma8())
    };
    let mut bytes = Vec::new();
    t.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .ok()?;
    Some(format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

/// Gallery bounds: per source the films with the largest masks, plus a seeded sample of the
/// rest; never more than `GALLERY_MAX_CARDS` cards in all (a card is ~3 × 30 KB of base64
/// thumbnails, so the page stays far under 20 MB at any bag size).
pub const GALLERY_WORST_PER_SOURCE: usize = 3;
pub const GALLERY_SAMPLE_PER_SOURCE: usize = 6;
pub const GALLERY_MAX_CARDS: usize = 60;

/// Which inpainted records the gallery shows: per source (sorted), the worst first (the
/// largest masks, or with `scores` the highest annotation badness, then the largest masks),
/// then a sample of the rest in a seeded order (by a hash of the id: the same bag gives the
/// same page). Returns (source, shown, how many of the source's films are not shown).
pub fn gallery_choice<'a>(
    inpainted: &[&'a BTreeMap<String, String>],
    scores: Option<&BTreeMap<String, f64>>,
) -> Vec<(String, Vec<&'a BTreeMap<String, String>>, usize)> {
    let mut by_source: BTreeMap<&str, Vec<&'a BTreeMap<String, String>>> = BTreeMap::new();
    for r in inpainted {
        by_source
            .entry(r.get("source").map(String::as_str).unwrap_or(""))
            .or_default()
            .push(r);
    }
    let mut budget = GALLERY_MAX_CARDS;
    let mut out = Vec::new();
    for (source, mut rows) in by_source {
        let id = |r: &BTreeMap<String, String>| r.get("id").cloned().unwrap_or_default();
        let px = |r: &BTreeMap<String, String>| {
            r.get("mask_pixels")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let bad = |r: &BTreeMap<String, String>| {
            scores.and_then(|s| s.get(&id(r)).copied()).unwrap_or(0.0)
        };
        rows.sort_by(|a, b| {
            bad(b)
                .total_cmp(&bad(a))
                .then_with(|| px(b).cmp(&px(a)))
                .then_with(|| id(a).cmp(&id(b)))
        });
        let worst = GALLERY_WORST_PER_SOURCE.min(rows.len()).min(budget);
        let mut rest: Vec<_> = rows.split_off(worst);
        // The sample is of inpainted films (with a mask) only.
        rest.retain(|r| r.get("mask_path").is_some_and(|m| !m.is_empty()));
        rest.sort_by_cached_key(|r| {
            (
                crate::manifest::hash_bytes(format!("report-gallery\u{0}{}", id(r)).as_bytes()),
                id(r),
            )
        });
        let sample = GALLERY_SAMPLE_PER_SOURCE
            .min(rest.len())
            .min(budget - worst);
        rows.extend(rest.drain(..sample));
        budget -= rows.len();
        out.push((source.to_string(), rows, rest.len()));
    }
    out
}

/// Annotation badness of every record whose source file has boxes (matched by file name):
/// its input image and the mask the bag used (none: nothing was erased), scored by
/// [`crate::inpaint::annotations::FilmScore::badness`]. Records whose file has no box are
/// films without marks. Keyed by record id.
fn badness(
    bag: &Path,
    input: Option<&Path>,
    before: &BTreeMap<String, String>,
    records: &Rows,
    boxes: &[crate::inpaint::annotations::AnnotBox],
) -> BTreeMap<String, (f64, String)> {
    use crate::inpaint::annotations::{describe, score_film};
    let name = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
    let mut by_name: BTreeMap<String, Vec<&crate::inpaint::annotations::AnnotBox>> =
        BTreeMap::new();
    for b in boxes {
        by_name.entry(name(&b.image)).or_default().push(b);
    }
    let mut out = BTreeMap::new();
    for r in records {
        let (Some(id), Some(file)) = (r.get("id"), r.get("source_file")) else {
            continue;
        };
        let Some(img) = input
            .zip(before.get(id))
            .and_then(|(p, rel)| image::open(p.join(rel)).ok())
        else {
            continue;
        };
        let (w, h) = (img.width() as usize, img.height() as usize);
        let grey = crate::inpaint::io::grey8(&img);
        let mask = r
            .get("mask_path")
            .filter(|m| !m.is_empty())
            .and_then(|m| image::open(bag.join(m)).ok())
            .map(|m| m.into_luma8().into_raw())
            .filter(|m| m.len() == w * h)
            .unwrap_or_else(|| vec![0; w * h]);
        let mine = by_name.get(&name(file)).cloned().unwrap_or_default();
        let score = score_film(file, &grey, &mask, w, h, &mine);
        out.insert(id.clone(), (score.badness(), describe(&score)));
    }
    out
}

/// Before / after / mask for a bounded choice of the inpainted images of a bag (records with
/// a `mask_path`), with counts for those not shown. With ground-truth `boxes`, every record is
/// scored and the worst films come first, inpainted or not.
pub fn gallery(
    page: &mut Page,
    bag: &Path,
    records: &Rows,
    boxes: Option<&[crate::inpaint::annotations::AnnotBox]>,
) -> Result<()> {
    let inpainted: Vec<_> = records
        .iter()
        .filter(|r| r.get("mask_path").is_some_and(|m| !m.is_empty()))
        .collect();
    let is_inpaint_bag = records.first().is_some_and(|r| r.contains_key("mask_path"));
    if inpainted.is_empty() && !(boxes.is_some() && is_inpaint_bag) {
        return Ok(());
    }
    // The image before inpainting is in the input bag, found by id.
    let prov: serde_json::Value = std::fs::read(bag.join("data/provenance.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let input: Option<PathBuf> = prov["inputs"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["kind"] == "bag"))
        .and_then(|i| i["path"].as_str())
        .map(PathBuf::from);
    let before: BTreeMap<String, String> = match &input {
        Some(p) => read_rows(&p.join("data/records.csv"))
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| Some((r.get("id")?.clone(), r.get("path")?.clone())))
            .collect(),
        None => BTreeMap::new(),
    };
    let scored = boxes.map(|b| badness(bag, input.as_deref(), &before, records, b));
    let scores: Option<BTreeMap<String, f64>> = scored
        .as_ref()
        .map(|s| s.iter().map(|(k, v)| (k.clone(), v.0)).collect());
    let pool: Vec<_> = match &scored {
        Some(_) => records.iter().collect(),
        None => inpainted.clone(),
    };
    let choice = gallery_choice(&pool, scores.as_ref());
    let shown: usize = choice.iter().map(|c| c.1.len()).sum();
    page.h3(&format!(
        "Inpainted images ({}): before, after, mask",
        inpainted.len()
    ));
    let worst_by = if scored.is_some() {
        "worst films by the annotation measure (marks missed + share of device and border pixels masked + 1 for a film without marks that got a mask; docs/inpaint.md), inpainted or not,"
    } else {
        "largest masks"
    };
    page.raw(&format!(
        "<p>Shown: {shown} of {}; per source the {GALLERY_WORST_PER_SOURCE} {worst_by} and a seeded sample of up to {GALLERY_SAMPLE_PER_SOURCE} more (at most {GALLERY_MAX_CARDS} in all). Every inpainted film and its mask is listed in the bag's data/records.csv.</p>",
        inpainted.len()
    ));
    for (source, rows, hidden) in choice {
        let mut s = format!(
            "<h4>{} — {} shown, {} more not shown</h4><div class=gallery>",
            esc(if source.is_empty() {
                "(no source)"
            } else {
                &source
            }),
            rows.len(),
            hidden
        );
        for r in rows {
            let note = scored
                .as_ref()
                .and_then(|m| m.get(r.get("id")?))
                .map(|(_, d)| d.as_str());
            card(&mut s, bag, input.as_deref(), &before, r, note);
        }
        s.push_str("</div>");
        page.raw(&s);
    }
    Ok(())
}

fn card(
    s: &mut String,
    bag: &Path,
    input: Option<&Path>,
    before: &BTreeMap<String, String>,
    r: &BTreeMap<String, String>,
    note: Option<&str>,
) {
    let id = r.get("id").cloned().unwrap_or_default();
    let b = input
        .zip(before.get(&id))
        .and_then(|(p, rel)| thumb(&p.join(rel), 200));
    let a = r.get("path").and_then(|p| thumb(&bag.join(p), 200));
    let m = r.get("mask_path").and_then(|p| thumb(&bag.join(p), 200));
    let _ = write!(
        s,
        "<div class=card><div><b>{}</b> ({} px, {})</div>",
        esc(&id),
        esc(r.get("mask_pixels").map(String::as_str).unwrap_or("?")),
        esc(r.get("method").map(String::as_str).unwrap_or(""))
    );
    if let Some(n) = note {
        let _ = write!(s, "<div><small>{}</small></div>", esc(n));
    }
    for (what, src) in [("before", b), ("after", a), ("mask", m)] {
        match src {
            Some(src) => {
                let _ = write!(
                    s,
                    "<img alt=\"{what} {}\" title=\"{what}\" src=\"{src}\">",
                    esc(&id)
                );
            }
            // A film the detector found nothing on is passed through without a mask file.
            None if what == "mask" && r.get("mask_pixels").is_some_and(|n| n == "0") => {
                s.push_str("<span>nothing masked</span>");
            }
            None => {
                let _ = write!(s, "<span class=bad>{what} missing</span>");
            }
        }
    }
    s.push_str("</div>");
}

/// Curves of several series over epochs, as inline SVG.
fn svg_curves(title: &str, series: &[(&str, Vec<f64>)]) -> String {
    let (w, h, m) = (420.0, 220.0, 36.0);
    let n = series.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    let vals: Vec<f64> = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|v| v.is_finite())
        .collect();
    if n == 0 || vals.is_empty() {
        return String::new();
    }
    let (lo, hi) = vals
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let (lo, hi) = if hi - lo < 1e-9 {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    };
    let x = |i: usize| {
        m + (w - 2.0 * m)
            * if n > 1 {
                i as f64 / (n - 1) as f64
            } else {
                0.5
            }
    };
    let y = |v: f64| h - m - (h - 2.0 * m) * (v - lo) / (hi - lo);
    let colours = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e"];
    let mut s = format!("<svg width={w} height={h} viewBox=\"0 0 {w} {h}\" role=img aria-label=\"{}\"><text x={m} y=16 font-size=13>{}</text>", esc(title), esc(title));
    let _ = write!(s, "<text x=4 y={} font-size=10>{hi:.3}</text><text x=4 y={} font-size=10>{lo:.3}</text><text x={} y={} font-size=10>epoch</text>", m, h - m, w / 2.0, h - 6.0);
    for (k, (name, v)) in series.iter().enumerate() {
        let pts: Vec<String> = v
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        let c = colours[k % colours.len()];
        let _ = write!(s, "<polyline fill=none stroke=\"{c}\" stroke-width=2 points=\"{}\"/><text x={} y={} font-size=11 fill=\"{c}\">{}</text>", pts.join(" "), w - m - 90.0, 30.0 + 14.0 * k as f64, esc(name));
    }
    s.push_str("</svg>");
    s
}

/// Training curves, confusion matrix, test result and repeats of a run folder.
pub fn run_sections(page: &mut Page, run: &Path) -> Result<()> {
    page.h2("Training");
    if let Ok(model) = std::fs::read(run.join("model.json")) {
        let v: serde_json::Value = serde_json::from_slice(&model)
            .map_err(|e| Error::bad_input(run.join("model.json"), e.to_string()))?;
        page.details(
            "model card (model.json)",
            &format!(
                "<pre>{}</pre>",
                esc(&serde_json::to_string_pretty(&v).unwrap_or_default())
            ),
        );
    }
    // metrics.csv of the run, or of each repeat below it.
    let mut metric_files: Vec<PathBuf> = Vec::new();
    for e in walkdir::WalkDir::new(run).max_depth(2).sort_by_file_name() {
        let e = e.map_err(|e| Error::read(run, e.into()))?;
        if e.file_name() == "metrics.csv" {
            metric_files.push(e.path().to_path_buf());
        }
    }
    for mf in &metric_files {
        let rows = read_rows(mf)?;
        let col = |name: &str| -> Vec<f64> {
            rows.iter()
                .map(|r| r.get(name).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN))
                .collect()
        };
        let rel = mf.strip_prefix(run).unwrap_or(mf).display().to_string();
        page.h3(&rel);
        let mut svg = svg_curves(
            "loss",
            &[("train", col("train_loss")), ("val", col("val_loss"))],
        );
        svg.push_str(&svg_curves(
            "accuracy",
            &[("train", col("train_acc")), ("val", col("val_acc"))],
        ));
        svg.push_str(&svg_curves("val AUC", &[("val", col("val_auc"))]));
        page.raw(&format!("<div>{svg}</div>"));
        let head: Vec<&str> = rows
            .first()
            .map(|r| r.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let body: Vec<Vec<String>> = rows
            .iter()
            .map(|r| head.iter().map(|h| esc(&r[*h])).collect())
            .collect();
        page.details("per-epoch metrics", &table(&head, &body));
    }
    // Confusion matrices and summaries from JSON files the run wrote.
    for name in ["metrics.json", "test.json", "summary.json"] {
        for e in walkdir::WalkDir::new(run)
            .max_depth(2)
            .sort_by_file_name()
            .into_iter()
            .flatten()
        {
            if e.file_name() != name {
                continue;
            }
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(
                &std::fs::read(e.path()).unwrap_or_default(),
            ) else {
                continue;
            };
            let rel = e
                .path()
                .strip_prefix(run)
                .unwrap_or(e.path())
                .display()
                .to_string();
            let classes: Vec<String> = v["classes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_str().map(String::from))
                .collect();
            if let Some(cm) = find_confusion(&v, &classes) {
                page.h3(&format!("Confusion matrix ({rel})"));
                page.raw(&cm);
            }
            if name == "summary.json" {
                page.details(
                    &format!("summary ({rel})"),
                    &format!(
                        "<pre>{}</pre>",
                        esc(&serde_json::to_string_pretty(&v).unwrap_or_default())
                    ),
                );
            }
        }
    }
    // Tables the run wrote in Markdown (the repeats summary), shown as text.
    for e in walkdir::WalkDir::new(run)
        .max_depth(1)
        .sort_by_file_name()
        .into_iter()
        .flatten()
    {
        if e.path().extension().is_some_and(|x| x == "md") {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            page.h3(&e.file_name().to_string_lossy());
            page.raw(&format!("<pre>{}</pre>", esc(&text)));
        }
    }
    // The run's own PNG plots, embedded.
    for e in walkdir::WalkDir::new(run)
        .max_depth(2)
        .sort_by_file_name()
        .into_iter()
        .flatten()
    {
        if e.path().extension().is_some_and(|x| x == "png") {
            if let Ok(b) = std::fs::read(e.path()) {
                let _ = write!(
                    page_raw(page),
                    "<figure><img style=\"max-width:600px\" alt=\"{0}\" src=\"data:image/png;base64,{1}\"><figcaption>{0}</figcaption></figure>",
                    esc(&e.path().strip_prefix(run).unwrap_or(e.path()).display().to_string()),
                    base64::engine::general_purpose::STANDARD.encode(b)
                );
            }
        }
    }
    Ok(())
}

fn page_raw(page: &mut Page) -> &mut String {
    &mut page.body
}

/// The last confusion matrix in a metrics document, as an HTML table.
fn find_confusion(v: &serde_json::Value, classes: &[String]) -> Option<String> {
    let mut found: Option<&serde_json::Value> = None;
    fn walk<'a>(v: &'a serde_json::Value, found: &mut Option<&'a serde_json::Value>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    if k.contains("confusion") && x.is_array() {
                        *found = Some(x);
                    } else {
                        walk(x, found);
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, found)),
            _ => {}
        }
    }
    walk(v, &mut found);
    let m = found?.as_array()?;
    let rows: Vec<Vec<String>> = m
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let name = classes.get(i).cloned().unwrap_or_else(|| i.to_string());
            let mut row = vec![format!("<b>true {}</b>", esc(&name))];
            row.extend(r.as_array().into_iter().flatten().map(|x| x.to_string()));
            row
        })
        .collect();
    let n = rows.first().map(|r| r.len() - 1).unwrap_or(0);
    let head: Vec<String> = std::iter::once(String::new())
        .chain((0..n).map(|j| format!("predicted {j}")))
        .collect();
    let head: Vec<&str> = head.iter().map(String::as_str).collect();
    Some(table(&head, &rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A film passed through untouched has no mask file: its card says so, and only a record
    /// that claims masked pixels without a readable mask is flagged.
    #[test]
    fn a_film_with_nothing_masked_is_not_flagged_as_missing_its_mask() {
        let dir = std::env::temp_dir();
        let rec = |px: &str| -> BTreeMap<String, String> {
            [("id", "f1"), ("mask_pixels", px), ("mask_path", "")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let mut s = String::new();
        card(&mut s, &dir, None, &BTreeMap::new(), &rec("0"), None);
        assert!(
            s.contains("nothing masked") && !s.contains("mask missing"),
            "{s}"
        );
        let mut s = String::new();
        card(&mut s, &dir, None, &BTreeMap::new(), &rec("120"), None);
        assert!(s.contains("mask missing"), "{s}");
    }
}
