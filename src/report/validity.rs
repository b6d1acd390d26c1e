//! The report's "Validity" section, first on the page: whether the model learned the disease.
//! The audit verdict (when `prep audit` left an audit.json in the lineage), internal vs external
//! AUC with CIs (`prep evaluate` / `prep train` test metrics), the shortcut-control table (a
//! pipeline grid over `occlude`) read in words, calibration, and a CLAIM checklist (Mongan et al.
//! 2020) filled from the lineage, with what prep cannot know left "for the authors".

use super::html::{esc, table, Page};
use super::{read_rows, Node};
use crate::error::Result;
use base64::Engine;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn read_json(p: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(p).ok()?).ok()
}

fn f4(v: &Value) -> String {
    crate::evaluate::num(v, 3)
}

fn ci(v: &Value) -> String {
    crate::evaluate::interval(v, 3)
}

/// An evaluation document (prep evaluate's metrics.json, or prep train's test-metrics.json) of
/// the target, with the folder it is in.
fn evaluation(target: &Path) -> Option<(PathBuf, Value, &'static str)> {
    for (rel, prefix) in [
        ("metrics.json", ""),
        ("test-metrics.json", "test-"),
        ("repeat-1/test-metrics.json", "test-"),
    ] {
        let p = target.join(rel);
        if let Some(v) = read_json(&p) {
            if v["format"] == "prep-evaluation/1" {
                return Some((p.parent()?.to_path_buf(), v, prefix));
            }
        }
    }
    None
}

/// A grid table over `occlude` (the shortcut controls) at the target or up to two folders above.
fn shortcut_table(target: &Path) -> Option<(PathBuf, super::Rows)> {
    let mut dir = Some(target);
    for _ in 0..3 {
        let d = dir?;
        let p = d.join("grid-summary.csv");
        if let Ok(rows) = read_rows(&p) {
            if rows.first().is_some_and(|r| r.contains_key("occlude")) {
                return Some((p, rows));
            }
        }
        dir = d.parent();
    }
    None
}

/// The data bag of an evaluation folder or of a shortcut grid, for the lineage.
pub(super) fn data_bag(target: &Path) -> Option<PathBuf> {
    if let Some((_, v, _)) = evaluation(target) {
        let b = PathBuf::from(v["data"].as_str()?);
        if b.join("bagit.txt").is_file() {
            return Some(b);
        }
    }
    let (_, rows) = shortcut_table(target).or_else(|| super::cams::external_table(&[target]))?;
    rows.iter()
        .filter_map(|r| r.get("run"))
        .find_map(|run| super::run_data_bag(Path::new(run)))
}

/// One row of the shortcut table as numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct ShortcutRow {
    pub occlude: String,
    pub auc: Option<f64>,
    pub ci: Option<[f64; 2]>,
}

fn shortcut_rows(rows: &super::Rows) -> Vec<ShortcutRow> {
    let num = |r: &BTreeMap<String, String>, k: &str| r.get(k).and_then(|v| v.parse::<f64>().ok());
    rows.iter()
        .map(|r| ShortcutRow {
            occlude: r.get("occlude").cloned().unwrap_or_default(),
            auc: num(r, "test_auc_mean"),
            ci: num(r, "test_auc_ci_lo")
                .zip(num(r, "test_auc_ci_hi"))
                .map(|(a, b)| [a, b]),
        })
        .collect()
}

/// A lungs-occluded model at least this good (and above chance by its CI) means a shortcut.
pub const SHORTCUT_AUC: f64 = 0.70;

/// The shortcut table in words.
pub fn shortcut_verdict(rows: &[ShortcutRow]) -> String {
    let fmt = |r: &ShortcutRow| match (r.auc, r.ci) {
        (Some(a), Some(c)) => format!("AUC {a:.2} [{:.2}, {:.2}]", c[0], c[1]),
        (Some(a), None) => format!("AUC {a:.2}"),
        _ => "no test AUC".into(),
    };
    let mut s = Vec::new();
    let find = |o: &str| rows.iter().find(|r| r.occlude == o);
    if let Some(full) = find("none") {
        s.push(format!("On full films the model reached {}.", fmt(full)));
    }
    match find("lungs") {
        Some(l) => {
            let above_chance = l.ci.map_or(l.auc.is_some_and(|a| a >= SHORTCUT_AUC), |c| c[0] > 0.5);
            let a = l.auc.unwrap_or(f64::NAN);
            s.push(if above_chance && a >= SHORTCUT_AUC {
                format!("A model that never saw the lungs reached {}: the data carry a shortcut (the label can be read from outside the lung field).", fmt(l))
            } else if above_chance {
                format!("A model that never saw the lungs reached {}, above chance: the data carry a weak signal outside the lung field.", fmt(l))
            } else {
                format!("A model that never saw the lungs was at chance ({}): no sign of a shortcut outside the lung field.", fmt(l))
            });
        }
        None => s.push("No lungs-occluded model was trained (prep train --occlude lungs), so a shortcut outside the lung field is not ruled out.".into()),
    }
    if let Some(b) = find("border") {
        s.push(format!(
            "With only the lung field visible it reached {}.",
            fmt(b)
        ));
    }
    s.join(" ")
}

/// Every audit.json (written by `prep audit`) that bears on the target: in the target or a bag
/// of the lineage, else the audits found beside the lineage's bags, in pipeline order.
fn audits(target: &Path, nodes: &[Node], found: &[super::audit::Found]) -> Vec<(PathBuf, Value)> {
    let mut cands = vec![target.join("audit.json"), target.join("data/audit.json")];
    for n in nodes {
        cands.push(n.path.join("audit.json"));
        cands.push(n.path.join("data/audit.json"));
    }
    match cands
        .into_iter()
        .find_map(|p| read_json(&p).map(|v| (p, v)))
    {
        Some(own) => vec![own],
        None => found
            .iter()
            .map(|f| (f.dir.join("audit.json"), f.doc.clone()))
            .collect(),
    }
}

fn model_card(target: &Path) -> Option<Value> {
    read_json(&target.join("model.json")).or_else(|| read_json(&target.join("repeat-1/model.json")))
}

/// Write the section.
pub(super) fn section(
    page: &mut Page,
    target: &Path,
    nodes: &[Node],
    found: &[super::audit::Found],
) -> Result<()> {
    page.h2("Validity");
    // Audits.
    let audits = audits(target, nodes, found);
    if audits.is_empty() {
        page.p("Audit: no audit.json in the lineage (run <code>prep audit</code>).");
    }
    for (p, v) in audits {
        let probe = &v["probe"];
        let feats: Vec<String> = probe["top_features"]
            .as_array()
            .into_iter()
            .flatten()
            .take(5)
            .map(|f| {
                esc(f
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(|| f.to_string())
                    .as_str())
            })
            .collect();
        page.p(&format!(
                "Audit (<code>{}</code>): verdict <b>{}</b>; a probe on non-disease features reached AUC {} {}{}.",
                esc(&p.display().to_string()),
                esc(v["verdict"].as_str().unwrap_or("?")),
                f4(&probe["auc"]),
                ci(&probe["ci"]),
                if feats.is_empty() { String::new() } else { format!(" (top features: {})", feats.join(", ")) }
            ));
    }
    // Internal vs external.
    let eval = evaluation(target);
    match &eval {
        Some((dir, m, _)) => {
            let mut rows = vec![vec![
                "all".into(),
                m["n"].to_string(),
                f4(&m["auc"]),
                ci(&m["auc_ci"]),
                ci(&m["auc_ci_bootstrap"]),
            ]];
            for k in ["internal", "external"] {
                if m[k]["n"].as_u64().unwrap_or(0) > 0 {
                    rows.push(vec![
                        k.into(),
                        m[k]["n"].to_string(),
                        f4(&m[k]["auc"]),
                        ci(&m[k]["auc_ci"]),
                        "".into(),
                    ]);
                }
            }
            page.p(&format!(
                "Discrimination on the {} split (<code>{}</code>), positive class <code>{}</code>:",
                esc(m["split"].as_str().unwrap_or("?")),
                esc(&dir.display().to_string()),
                esc(m["positive_class"].as_str().unwrap_or("?"))
            ));
            page.raw(&table(
                &["images", "n", "AUC", "DeLong 95 % CI", "bootstrap 95 % CI (by patient)"],
                &rows,
            ));
            if let Some(g) = m["auc_gap_internal_minus_external"].as_f64() {
                page.p(&format!(
                    "Internal minus external AUC: <b>{g:.3}</b>{}.",
                    if g > 0.05 { ": the model does worse on sources it never saw" } else { "" }
                ));
            } else if m["external"]["n"].as_u64().unwrap_or(0) > 0 {
                page.p("External images hold one class only: their AUC, and so the gap, is undefined.");
            } else {
                page.p("No external test: every test image comes from a source the model trained on (<code>prep split --external BAG</code> adds one).");
            }
            // Calibration.
            page.p(&format!(
                "Calibration: expected calibration error {} over {} equal-width bins.",
                f4(&m["ece"]),
                m["ece_bins"]
            ));
        }
        None => page.p("No evaluation found (run <code>prep evaluate</code>, or train on a bag with a test split)."),
    }
    if let Some((dir, _, prefix)) = &eval {
        if let Ok(b) = std::fs::read(dir.join(format!("{prefix}reliability.png"))) {
            page.raw(&format!(
                "<figure><img style=\"max-width:360px\" alt=\"reliability diagram\" src=\"data:image/png;base64,{}\"><figcaption>reliability diagram</figcaption></figure>",
                base64::engine::general_purpose::STANDARD.encode(b)
            ));
        }
    }
    // Grad-CAM of the evaluated images (prep evaluate --explain).
    let eval_dir = eval.as_ref().map(|e| e.0.clone());
    let mut dirs: Vec<&Path> = vec![target];
    dirs.extend(eval_dir.as_deref());
    if let Some(c) = super::cams::find(&dirs) {
        super::cams::section(page, &c);
    }
    // The model's run folder, where an evaluation leads (for the grid tables beside it).
    let model_dir = eval
        .as_ref()
        .and_then(|e| e.1["model"].as_str().map(PathBuf::from))
        .filter(|m| m.is_dir());
    dirs.extend(model_dir.as_deref());
    // Leave one source out.
    if let Some((p, rows)) = super::cams::external_table(&dirs) {
        super::cams::external_section(page, &p, &rows);
    }
    // Shortcut controls.
    match dirs.iter().find_map(|d| shortcut_table(d)) {
        Some((p, rows)) => {
            let sr = shortcut_rows(&rows);
            page.h3("Shortcut controls");
            let body: Vec<Vec<String>> = rows
                .iter()
                .zip(&sr)
                .map(|(r, s)| {
                    vec![
                        esc(&s.occlude),
                        s.auc.map(|a| format!("{a:.3}")).unwrap_or_else(|| "-".into()),
                        s.ci.map(|c| format!("[{:.3}, {:.3}]", c[0], c[1])).unwrap_or_else(|| "-".into()),
                        esc(r.get("max_val_accuracy_mean").map(String::as_str).unwrap_or("")),
                    ]
                })
                .collect();
            page.raw(&table(
                &["occluded", "test AUC", "DeLong 95 % CI", "max val accuracy"],
                &body,
            ));
            page.raw(&format!(
                "<p class=verdict>{}</p><p>(from <code>{}</code>)</p>",
                esc(&shortcut_verdict(&sr)),
                esc(&p.display().to_string())
            ));
        }
        None => page.p("Shortcut controls: none found (a pipeline grid over <code>occlude = [\"none\", \"lungs\", \"border\"]</code>, see pipelines/perez-bir-2020-shortcuts.toml)."),
    }
    claim(page, target, nodes, eval.as_ref().map(|e| &e.1));
    Ok(())
}

/// The CLAIM items prep can fill from the lineage; the rest are for the authors.
fn claim(page: &mut Page, target: &Path, nodes: &[Node], eval: Option<&Value>) {
    const AUTHORS: &str = "<i>for the authors</i>";
    let mut items: Vec<(&str, String)> = Vec::new();
    let records = |n: &Node| read_rows(&n.path.join("data/records.csv")).unwrap_or_default();
    let split = nodes.iter().find(|n| n.provenance["stage"] == "split");
    // Data sources.
    let mut sources: BTreeMap<String, usize> = BTreeMap::new();
    if let Some(s) = split.or(nodes.first()) {
        for r in records(s) {
            *sources
                .entry(r.get("source").cloned().unwrap_or_default())
                .or_default() += 1;
        }
    }
    items.push((
        "Data sources",
        if sources.is_empty() {
            AUTHORS.into()
        } else {
            sources
                .iter()
                .map(|(s, n)| format!("{} ({n} images)", esc(s)))
                .collect::<Vec<_>>()
                .join(", ")
        },
    ));
    // Inclusion and exclusion.
    let mut inc = Vec::new();
    for n in nodes {
        let kept = records(n).len();
        let ex = read_rows(&n.path.join("data/excluded.csv")).unwrap_or_default();
        let mut by: BTreeMap<String, usize> = BTreeMap::new();
        for e in &ex {
            *by.entry(e.get("reason").cloned().unwrap_or_default())
                .or_default() += 1;
        }
        inc.push(format!(
            "{} <code>{}</code>: {kept} kept, {} excluded{}",
            esc(n.provenance["stage"].as_str().unwrap_or("?")),
            esc(&n.path.display().to_string()),
            ex.len(),
            if by.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    by.iter()
                        .map(|(r, c)| format!("{} {c}", esc(r)))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        ));
    }
    items.push((
        "Inclusion and exclusion, with counts",
        if inc.is_empty() {
            AUTHORS.into()
        } else {
            inc.join("<br>")
        },
    ));
    // De-identification.
    let inpainted: usize = nodes
        .iter()
        .filter(|n| n.provenance["stage"] == "inpaint")
        .map(|n| {
            records(n)
                .iter()
                .filter(|r| r.get("mask_path").is_some_and(|m| !m.is_empty()))
                .count()
        })
        .sum();
    let inpaint_stage = nodes.iter().any(|n| n.provenance["stage"] == "inpaint");
    items.push((
        "De-identification",
        if inpaint_stage {
            format!("burned-in annotations erased by inpainting in {inpainted} image(s) (prep inpaint); other de-identification (headers, faces, dates): {AUTHORS}")
        } else {
            format!("no inpainting stage in the lineage; de-identification of the sources: {AUTHORS}")
        },
    ));
    // Partition.
    items.push((
        "Partition method and the level at which partitions are disjoint",
        match split {
            Some(s) => {
                let p = &s.provenance["parameters"];
                let rows = records(s);
                let mut where_: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
                for r in &rows {
                    if let (Some(g), Some(sp)) = (r.get("group"), r.get("split")) {
                        where_.entry(g).or_default().insert(sp);
                    }
                }
                let crossing = where_.values().filter(|s| s.len() > 1).count();
                format!(
                    "prep split, fractions <code>{}</code>, seed {}, balanced {}; whole patient groups per split (patient ids, aliases, exact and near duplicates, cross-references): {} groups, {}",
                    esc(&p["splits"].to_string()),
                    esc(&s.provenance["seed"].to_string()),
                    esc(&p["balanced"].to_string()),
                    where_.len(),
                    if crossing == 0 { "none crosses splits".to_string() } else { format!("<span class=bad>{crossing} cross splits</span>") }
                )
            }
            None => AUTHORS.into(),
        },
    ));
    let card = model_card(target);
    items.push((
        "Model initialisation",
        match &card {
            Some(c) => match c["initial_weights"]["path"].as_str() {
                Some(w) => format!(
                    "{} from <code>{}</code> (sha256 {}), stages trained: {}",
                    esc(c["arch"].as_str().unwrap_or("?")),
                    esc(w),
                    esc(c["initial_weights"]["sha256"]
                        .as_str()
                        .unwrap_or("?")
                        .get(..16)
                        .unwrap_or("")),
                    esc(&c["trainable_stages"].to_string())
                ),
                None => format!(
                    "{}, random initialisation",
                    esc(c["arch"].as_str().unwrap_or("?"))
                ),
            },
            None => AUTHORS.into(),
        },
    ));
    items.push((
        "Model selection on validation data",
        match &card {
            Some(c) => format!(
                "{} (best epoch {}); the test split was not used for selection",
                esc(c["selection"].as_str().unwrap_or("?")),
                c["best_epoch"]
            ),
            None => AUTHORS.into(),
        },
    ));
    items.push((
        "Metrics with confidence intervals",
        match eval {
            Some(m) => format!(
                "AUC {} (DeLong {}, patient-grouped bootstrap {}); sensitivity and specificity with Wilson CIs at thresholds chosen on val; ECE {}",
                f4(&m["auc"]),
                ci(&m["auc_ci"]),
                ci(&m["auc_ci_bootstrap"]),
                f4(&m["ece"])
            ),
            None => AUTHORS.into(),
        },
    ));
    items.push((
        "External testing",
        match eval {
            Some(m) if m["external"]["n"].as_u64().unwrap_or(0) > 0 => format!(
                "{} external image(s), AUC {} {}; internal {} {}",
                m["external"]["n"],
                f4(&m["external"]["auc"]),
                ci(&m["external"]["auc_ci"]),
                f4(&m["internal"]["auc"]),
                ci(&m["internal"]["auc_ci"])
            ),
            Some(_) => "none: no source held out (prep split --external)".into(),
            None => AUTHORS.into(),
        },
    ));
    let cams = walkdir::WalkDir::new(target)
        .max_depth(2)
        .into_iter()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".cam.json"))
        .count();
    items.push((
        "Explainability method",
        if cams > 0 {
            format!("Grad-CAM of the positive class at features.norm5 ({cams} map(s), prep explain); saliency alone is weak evidence (Saporta et al. 2022)")
        } else {
            format!("not run here (prep explain); {AUTHORS}")
        },
    ));
    for item in [
        "Study design, intended use and clinical role",
        "Reference standard: how the labels were established, by whom",
        "Annotators and their qualifications",
        "Sample size justification",
        "Failure analysis and comparison with clinicians",
        "Code and data availability",
    ] {
        items.push((item, AUTHORS.into()));
    }
    page.h3("CLAIM checklist");
    let rows: Vec<Vec<String>> = items.into_iter().map(|(k, v)| vec![esc(k), v]).collect();
    page.raw(&table(&["item", "from the lineage"], &rows));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(o: &str, auc: f64, lo: f64, hi: f64) -> ShortcutRow {
        ShortcutRow {
            occlude: o.into(),
            auc: Some(auc),
            ci: Some([lo, hi]),
        }
    }

    #[test]
    fn verdict_in_words() {
        let s = shortcut_verdict(&[row("none", 0.95, 0.9, 1.0), row("lungs", 0.93, 0.88, 0.97)]);
        assert!(
            s.contains("never saw the lungs reached AUC 0.93") && s.contains("shortcut"),
            "{s}"
        );
        let s = shortcut_verdict(&[row("lungs", 0.52, 0.40, 0.64)]);
        assert!(
            s.contains("at chance") && s.contains("no sign of a shortcut"),
            "{s}"
        );
        let s = shortcut_verdict(&[row("lungs", 0.62, 0.55, 0.69)]);
        assert!(s.contains("weak signal"), "{s}");
        assert!(shortcut_verdict(&[]).contains("not ruled out"));
    }
}
