//! `prep report`: one self-contained HTML page an auditor reads, built from what the stages left
//! behind: the lineage of bags (each with its manifest hash, command and parameters), exclusions
//! per reason, class and patient counts per split, the leakage check, a before/after/mask
//! gallery for inpainted images, training curves, confusion matrix and the repeats table.
//! Written by hand as plain HTML + inline SVG/PNG so it opens anywhere, offline.

pub(crate) mod audit;
mod cams;
mod html;
mod validity;

use crate::error::{Error, Result};
use crate::manifest::{manifest_sha256, verify_bag};
use html::{esc, table, Page};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A CSV read as rows of column → value (stages add their own columns to records.csv).
pub(crate) type Rows = Vec<BTreeMap<String, String>>;

pub(crate) fn read_rows(path: &Path) -> Result<Rows> {
    let mut rdr = csv::Reader::from_path(path).map_err(|source| Error::Csv {
        path: path.to_path_buf(),
        source,
    })?;
    let headers = rdr
        .headers()
        .map_err(|source| Error::Csv {
            path: path.to_path_buf(),
            source,
        })?
        .clone();
    let mut out = Vec::new();
    for r in rdr.records() {
        let r = r.map_err(|source| Error::Csv {
            path: path.to_path_buf(),
            source,
        })?;
        out.push(
            headers
                .iter()
                .zip(r.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect(),
        );
    }
    Ok(out)
}

/// One bag of the lineage.
struct Node {
    path: PathBuf,
    provenance: serde_json::Value,
    manifest: String,
    intact: bool,
    problems: Vec<String>,
}

/// Follow provenance inputs of kind "bag" from `start`, depth first, each bag once.
fn lineage(start: &Path) -> Result<Vec<Node>> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut todo = vec![start.to_path_buf()];
    while let Some(p) = todo.pop() {
        let key = p.canonicalize().unwrap_or_else(|_| p.clone());
        if !seen.insert(key) || !p.join("bagit.txt").is_file() {
            continue;
        }
        let prov_path = p.join("data/provenance.json");
        let provenance: serde_json::Value = match std::fs::read(&prov_path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| Error::bad_input(&prov_path, e.to_string()))?,
            Err(_) => serde_json::Value::Null,
        };
        if let Some(inputs) = provenance["inputs"].as_array() {
            for i in inputs.iter().rev() {
                if i["kind"] == "bag" {
                    if let Some(ip) = i["path"].as_str() {
                        todo.push(PathBuf::from(ip));
                    }
                }
            }
        }
        let report = verify_bag(&p)?;
        out.push(Node {
            manifest: manifest_sha256(&p).unwrap_or_default(),
            intact: report.is_intact(),
            problems: report.problems,
            path: p,
            provenance,
        });
    }
    Ok(out)
}

/// The bag a training run was made from: its model.json (or the first repeat's) names it.
fn run_data_bag(run: &Path) -> Option<PathBuf> {
    let card = [run.join("model.json"), run.join("repeat-1/model.json")]
        .into_iter()
        .find(|p| p.is_file())?;
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(card).ok()?).ok()?;
    let bag = v["data"]["bag"].as_str()?;
    Path::new(bag)
        .join("bagit.txt")
        .is_file()
        .then(|| PathBuf::from(bag))
}

fn counts<'a>(rows: &'a Rows, col: &str) -> BTreeMap<&'a str, usize> {
    let mut m = BTreeMap::new();
    for r in rows {
        if let Some(v) = r.get(col) {
            *m.entry(v.as_str()).or_insert(0) += 1;
        }
    }
    m
}

/// Build the page for a bag or a training run folder.
pub fn build(target: &Path) -> Result<String> {
    build_with(target, None)
}

/// [`build`], with ground-truth boxes for the inpaint gallery's choice of worst films.
pub fn build_with(target: &Path, annotations: Option<&Path>) -> Result<String> {
    let boxes = annotations
        .map(crate::inpaint::annotations::read_boxes)
        .transpose()?;
    if !target.exists() {
        return Err(Error::bad_input(target, "no such bag or run folder"));
    }
    let is_run = ["model.json", "metrics.csv", "summary.json"]
        .iter()
        .any(|f| target.join(f).is_file());
    let start = if is_run {
        run_data_bag(target)
    } else {
        Some(target.to_path_buf())
    };
    // An evaluation folder or a shortcut grid leads to its data bag.
    let start = start
        .filter(|s| s.join("bagit.txt").is_file())
        .or_else(|| validity::data_bag(target));
    let nodes = match &start {
        Some(s) => lineage(s)?,
        None => Vec::new(),
    };
    let mut page = Page::new(&format!("prep report: {}", target.display()));
    page.p(&format!(
        "Made by prep {} for <code>{}</code>. Every bag below was re-verified while this page was written.",
        env!("CARGO_PKG_VERSION"),
        esc(&target.display().to_string())
    ));
    // Audits of any bag in the lineage (audit folders beside the bags they audited).
    let lineage_bags: Vec<(PathBuf, String)> = nodes
        .iter()
        .map(|n| (n.path.clone(), n.manifest.clone()))
        .collect();
    let audits = audit::find(&lineage_bags);
    validity::section(&mut page, target, &nodes, &audits)?;

    // The audit next: whether the set can teach anything but its sources.
    audit::section(&mut page, &audits);

    // Lineage: newest first, each with the command that made it.
    page.h2("Lineage");
    if nodes.is_empty() {
        page.p("No bag found to trace.");
    }
    let mut rows = Vec::new();
    for n in &nodes {
        let argv: Vec<String> = n.provenance["argv"]
            .as_array()
            .map(|a| {
                a.iter()
                    .skip(1)
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        rows.push(vec![
            format!("<code>{}</code>", esc(&n.path.display().to_string())),
            esc(n.provenance["stage"].as_str().unwrap_or("?")),
            format!("<code>{}</code>", &n.manifest.get(..16).unwrap_or("")),
            if n.intact {
                "<span class=ok>intact</span>".into()
            } else {
                format!("<span class=bad>{} problem(s)</span>", n.problems.len())
            },
            format!("<code>prep {}</code>", esc(&argv.join(" "))),
        ]);
    }
    page.raw(&table(
        &["bag", "stage", "manifest sha256", "verify", "command"],
        &rows,
    ));
    for n in &nodes {
        page.h3(&format!(
            "{} ({})",
            n.path.display(),
            n.provenance["stage"].as_str().unwrap_or("?")
        ));
        if !n.problems.is_empty() {
            page.raw(&format!(
                "<pre class=bad>{}</pre>",
                esc(&n.problems.join("\n"))
            ));
        }
        if let Some(params) = n.provenance["parameters"].as_object() {
            let rows: Vec<Vec<String>> = params
                .iter()
                .map(|(k, v)| vec![esc(k), format!("<code>{}</code>", esc(&v.to_string()))])
                .collect();
            page.details("parameters", &table(&["parameter", "value"], &rows));
        }
        if let Some(inputs) = n.provenance["inputs"].as_array() {
            let rows: Vec<Vec<String>> = inputs
                .iter()
                .map(|i| {
                    vec![
                        esc(i["kind"].as_str().unwrap_or("")),
                        format!("<code>{}</code>", esc(i["path"].as_str().unwrap_or(""))),
                        format!("<code>{}</code>", esc(i["sha256"].as_str().unwrap_or(""))),
                    ]
                })
                .collect();
            page.details("inputs", &table(&["kind", "path", "sha256"], &rows));
        }
        bag_sections(&mut page, &n.path, boxes.as_deref())?;
    }
    if is_run {
        html::run_sections(&mut page, target)?;
    }
    Ok(page.finish())
}

/// Counts, exclusions, leakage and gallery of one bag.
fn bag_sections(
    page: &mut Page,
    bag: &Path,
    boxes: Option<&[crate::inpaint::annotations::AnnotBox]>,
) -> Result<()> {
    let records = match read_rows(&bag.join("data/records.csv")) {
        Ok(r) => r,
        Err(_) => return Ok(()),
    };
    let label_col = ["class", "label"]
        .into_iter()
        .find(|c| records.first().is_some_and(|r| r.contains_key(*c)))
        .unwrap_or("label");
    let patient_col = ["group", "patient_group", "patient_id"]
        .into_iter()
        .find(|c| records.first().is_some_and(|r| r.contains_key(*c)))
        .unwrap_or("patient_id");
    let has_split = records.first().is_some_and(|r| r.contains_key("split"));
    // Class and patient counts (per split when the bag is split).
    let mut rows = Vec::new();
    let splits: Vec<String> = if has_split {
        counts(&records, "split")
            .keys()
            .map(|s| s.to_string())
            .collect()
    } else {
        vec!["all".into()]
    };
    for s in &splits {
        let sub: Rows = records
            .iter()
            .filter(|r| !has_split || r.get("split") == Some(s))
            .cloned()
            .collect();
        for (class, n) in counts(&sub, label_col) {
            let patients: BTreeSet<&str> = sub
                .iter()
                .filter(|r| r.get(label_col).map(String::as_str) == Some(class))
                .filter_map(|r| r.get(patient_col))
                .map(String::as_str)
                .filter(|p| !p.is_empty())
                .collect();
            rows.push(vec![
                esc(s),
                esc(class),
                n.to_string(),
                patients.len().to_string(),
            ]);
        }
    }
    page.raw(&format!("<p>{} image(s).</p>", records.len()));
    page.raw(&table(
        &[
            "split",
            "class",
            "images",
            &format!("distinct {patient_col}"),
        ],
        &rows,
    ));
    // Leakage: no patient group in two splits.
    if has_split {
        let mut where_: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for r in &records {
            if let (Some(g), Some(s)) = (r.get(patient_col), r.get("split")) {
                if !g.is_empty() {
                    where_.entry(g).or_default().insert(s);
                }
            }
        }
        let crossing: Vec<&str> = where_
            .iter()
            .filter(|(_, s)| s.len() > 1)
            .map(|(g, _)| *g)
            .collect();
        if crossing.is_empty() {
            page.raw(&format!(
                "<p class=ok>Leakage check: none of {} {patient_col} values crosses splits.</p>",
                where_.len()
            ));
        } else {
            page.raw(&format!("<p class=bad>Leakage check FAILED: {} {patient_col} value(s) in more than one split: {}</p>", crossing.len(), esc(&crossing.join(", "))));
        }
    }
    // Exclusions per reason.
    if let Ok(ex) = read_rows(&bag.join("data/excluded.csv")) {
        let rows: Vec<Vec<String>> = counts(&ex, "reason")
            .into_iter()
            .map(|(r, n)| vec![esc(r), n.to_string()])
            .collect();
        if !rows.is_empty() {
            page.raw(&format!("<p>{} input(s) excluded:</p>", ex.len()));
            page.raw(&table(&["reason", "count"], &rows));
        }
    }
    dicom_section(page, &records);
    html::gallery(page, bag, &records, boxes)?;
    Ok(())
}

/// DICOM-born bags: the BurnedInAnnotation flag (text, possibly identifying, in the pixels) and
/// how the films were rendered.
fn dicom_section(page: &mut Page, records: &Rows) {
    if !records
        .first()
        .is_some_and(|r| r.contains_key("burned_in_annotation"))
    {
        return;
    }
    let flag = counts(records, "burned_in_annotation");
    let n = |k: &str| flag.get(k).copied().unwrap_or(0);
    let yes: Vec<&str> = records
        .iter()
        .filter(|r| r.get("burned_in_annotation").map(String::as_str) == Some("YES"))
        .filter_map(|r| r.get("id").map(String::as_str))
        .collect();
    let class = if yes.is_empty() { "ok" } else { "bad" };
    page.raw(&format!(
        "<p class={class}>DICOM BurnedInAnnotation (0028,0301): {} YES, {} NO, {} not stated.{}</p>",
        yes.len(),
        n("NO"),
        records.len() - yes.len() - n("NO"),
        if yes.is_empty() {
            String::new()
        } else {
            format!(
                " Films with text burned into their pixels (erase it with prep inpaint): {}",
                esc(&yes.join(", "))
            )
        }
    ));
    let rows: Vec<Vec<String>> = {
        let mut m: BTreeMap<(String, String, String), usize> = BTreeMap::new();
        for r in records {
            let g = |k: &str| r.get(k).cloned().unwrap_or_default();
            *m.entry((
                g("dicom_transfer_syntax"),
                g("dicom_photometric"),
                g("dicom_output"),
            ))
            .or_default() += 1;
        }
        m.into_iter()
            .map(|((ts, pi, o), k)| vec![esc(&ts), esc(&pi), esc(&o), k.to_string()])
            .collect()
    };
    page.raw(&table(
        &["transfer syntax", "photometric", "output", "films"],
        &rows,
    ));
}

/// Write the page atomically.
pub fn write(target: &Path, out: &Path) -> Result<()> {
    write_with(target, out, None)
}

/// [`write`], with ground-truth boxes for the gallery (see [`build_with`]).
pub fn write_with(target: &Path, out: &Path, annotations: Option<&Path>) -> Result<()> {
    let html = build_with(target, annotations)?;
    let tmp = out.with_extension("html.tmp");
    std::fs::write(&tmp, html).map_err(|e| Error::write(&tmp, e))?;
    std::fs::rename(&tmp, out).map_err(|e| Error::write(out, e))
}
