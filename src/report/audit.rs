//! The report's audit section, shown first: for every `prep audit` of a bag in the lineage, its
//! verdict, the probe's AUC with its CI and the features carrying it, the design tables and
//! warnings, and the probe's plots. Self-contained: [`find`] locates the audits, [`section`]
//! writes them into any page.
//!
//! An audit is not a bag and no later stage names it as an input, so it is found beside the
//! bags: any `<folder>/audit.json` next to a lineage bag whose audited bags include that bag
//! (matched by manifest sha256, so a moved or re-made bag is not mistaken for the audited one).

use super::html::{esc, table, Page};
use base64::Engine;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// One audit found for the lineage.
pub struct Found {
    pub dir: PathBuf,
    pub doc: Value,
}

/// Audits of any of `bags` (path, manifest sha256), earliest in the lineage first.
pub fn find(bags: &[(PathBuf, String)]) -> Vec<Found> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    // The lineage lists the newest bag first; audits read best in pipeline order.
    for (bag, manifest) in bags.iter().rev() {
        let parent = match bag.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let Ok(entries) = std::fs::read_dir(&parent) else {
            continue;
        };
        let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        dirs.sort();
        for d in dirs {
            let file = d.join("audit.json");
            let Some(doc) = std::fs::read(&file)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            else {
                continue;
            };
            let audits_it = doc["bags"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|b| b["manifest_sha256"].as_str() == Some(manifest.as_str()));
            let key = d.canonicalize().unwrap_or_else(|_| d.clone());
            if audits_it && seen.insert(key) {
                out.push(Found { dir: d, doc });
            }
        }
    }
    out
}

fn png_inline(path: &Path, alt: &str) -> String {
    match std::fs::read(path) {
        Ok(bytes) => format!(
            "<img alt=\"{}\" src=\"data:image/png;base64,{}\" style=\"max-width:520px;margin-right:12px\">",
            esc(alt),
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ),
        Err(_) => String::new(),
    }
}

fn num(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.fract() == 0.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.3}"),
        None => "n/a".into(),
    }
}

/// Write the audit section (nothing when there is no audit).
pub fn section(page: &mut Page, audits: &[Found]) {
    if audits.is_empty() {
        return;
    }
    page.h2("Audit: does the set teach the disease, or the source?");
    for a in audits {
        let d = &a.doc;
        let p = &d["probe"];
        let verdict = d["verdict"].as_str().unwrap_or("?");
        let bags: Vec<String> = d["bags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| {
                b["path"]
                    .as_str()
                    .map(|s| format!("<code>{}</code>", esc(s)))
            })
            .collect();
        page.h3(&format!("{} — {verdict}", a.dir.display()));
        page.p(&format!(
            "<span class={}>{}</span>: the trivial-feature probe ({}, {} patient-grouped folds) tells <b>{}</b> from the rest at AUC <b>{}</b> (95 % CI {}–{}, {} bootstrap resamples) from file size, format and intensity statistics alone. Verdict <code>confounded</code> when the CI's lower end is at least {}. Audited: {}.",
            if verdict == "ok" { "ok" } else { "bad" },
            esc(verdict),
            esc(p["model"].as_str().unwrap_or("?")),
            p["folds"],
            esc(d["positive"].as_str().unwrap_or("")),
            num(&p["auc"]),
            num(&p["ci"][0]),
            num(&p["ci"][1]),
            p["bootstrap"],
            num(&d["rules"]["confounded_ci_lower"]),
            bags.join(", ")
        ));
        let rows: Vec<Vec<String>> = p["features"]
            .as_array()
            .into_iter()
            .flatten()
            .take(10)
            .map(|f| {
                vec![
                    esc(f["name"].as_str().unwrap_or("")),
                    num(&f["importance"]),
                    num(&f["auc_alone"]),
                    num(&f["positive_median"]),
                    num(&f["others_median"]),
                ]
            })
            .collect();
        let pos = d["positive"].as_str().unwrap_or("positive");
        page.raw(&table(
            &[
                "feature (top first)",
                "importance",
                "AUC alone",
                &format!("{pos} median"),
                "others median",
            ],
            &rows,
        ));
        let constant: Vec<&str> = p["constant_features"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .collect();
        if !constant.is_empty() {
            page.p(&format!(
                "Same value in every image (nothing to learn): {}.",
                esc(&constant.join(", "))
            ));
        }
        page.p(&format!(
            "Source probe (pixel-only features): mean AUC {}.",
            num(&d["source_probe"]["auc"])
        ));
        page.raw(&format!(
            "<div>{}{}</div>",
            png_inline(&a.dir.join("probe-roc.png"), "probe ROC"),
            png_inline(&a.dir.join("probe-features.png"), "probe features")
        ));
        for w in d["warnings"].as_array().into_iter().flatten() {
            page.raw(&format!(
                "<p class=bad>warning: {}</p>",
                esc(w.as_str().unwrap_or(""))
            ));
        }
        let mut tables_html = String::new();
        for (key, title) in crate::audit::tables::TITLES {
            let t = &d["tables"][key];
            let cols = crate::audit::tables::strings(&t["columns"]);
            let rows: Vec<Vec<String>> = crate::audit::tables::strings(&t["rows"])
                .iter()
                .zip(t["counts"].as_array().into_iter().flatten())
                .map(|(r, c)| {
                    let mut row = vec![esc(r)];
                    row.extend(c.as_array().into_iter().flatten().map(|v| v.to_string()));
                    row
                })
                .collect();
            let mut head = vec!["label"];
            head.extend(cols.iter().map(String::as_str));
            tables_html.push_str(&format!(
                "<p>{} (Cramér's V {})</p>{}",
                esc(title),
                num(&t["cramers_v"]),
                table(&head, &rows)
            ));
        }
        page.details("design tables", &tables_html);
    }
}
