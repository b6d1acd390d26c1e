//! The leave-one-source-out table: for every grid stage whose runs evaluated images from a
//! source they never saw (`prep split --external` / `--hold-out`, then `prep train`'s
//! test-metrics.json or `prep evaluate`'s metrics.json), one row per grid point with the
//! internal and external test AUC, their DeLong 95 % CIs and the gap, written as
//! `OUT/external-summary.{csv,md}` beside the stage's grid-summary. `prep report` reads it.

use super::PlannedStage;
use crate::error::{Error, Result};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The evaluation a run folder holds (the first repeat's when repeated), with its predictions.
fn evaluation(run: &Path) -> Option<(Value, PathBuf)> {
    for (m, p) in [
        ("test-metrics.json", "test-predictions.csv"),
        (
            "repeat-1/test-metrics.json",
            "repeat-1/test-predictions.csv",
        ),
        ("metrics.json", "predictions.csv"),
    ] {
        let Ok(bytes) = std::fs::read(run.join(m)) else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
            continue;
        };
        if v["format"] == "prep-evaluation/1" {
            return Some((v, run.join(p)));
        }
    }
    None
}

/// Sources of the external images in a predictions.csv, sorted.
fn external_sources(predictions: &Path) -> Result<Vec<String>> {
    let rows = crate::report::read_rows(predictions)?;
    let s: BTreeSet<String> = rows
        .into_iter()
        .filter(|r| r.get("external").map(String::as_str) == Some("1"))
        .filter_map(|r| r.get("source").cloned())
        .collect();
    Ok(s.into_iter().collect())
}

pub const COLUMNS: &[&str] = &[
    "external_sources",
    "internal_n",
    "internal_auc",
    "internal_ci_lo",
    "internal_ci_hi",
    "external_n",
    "external_auc",
    "external_ci_lo",
    "external_ci_hi",
    "auc_gap",
    "run",
];

/// Write `external-summary.{csv,md}` for every grid stage with external test images.
pub fn write_tables(plan: &[PlannedStage]) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (_, points) in super::grid_stages(plan) {
        let keys: Vec<&str> = points[0]
            .grid_point
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
        let e = |e: csv::Error| Error::Usage(format!("external-summary.csv: {e}"));
        w.write_record(keys.iter().copied().chain(COLUMNS.iter().copied()))
            .map_err(e)?;
        let mut md = format!(
            "| {} | external sources | internal AUC (n) | external AUC (n) | gap (internal - external) |\n|{}---|---|---|---|\n",
            keys.join(" | "),
            "---|".repeat(keys.len())
        );
        let mut rows = 0;
        for p in &points {
            let Some((m, preds)) = evaluation(&p.out) else {
                continue;
            };
            if m["external"]["n"].as_u64().unwrap_or(0) == 0 {
                continue;
            }
            let sources = external_sources(&preds)?.join(" ");
            let num = |v: &Value| v.as_f64().map(|x| format!("{x:.6}")).unwrap_or_default();
            let block = |k: &str| {
                let b = &m[k];
                [
                    b["n"].to_string(),
                    num(&b["auc"]),
                    num(&b["auc_ci"][0]),
                    num(&b["auc_ci"][1]),
                ]
            };
            let (i, x) = (block("internal"), block("external"));
            let gap = num(&m["auc_gap_internal_minus_external"]);
            let run = p.out.display().to_string();
            let values = p.grid_point.iter().map(|(_, v)| v.as_str());
            w.write_record(
                values
                    .clone()
                    .chain([sources.as_str()])
                    .chain(i.iter().map(String::as_str))
                    .chain(x.iter().map(String::as_str))
                    .chain([gap.as_str(), run.as_str()]),
            )
            .map_err(e)?;
            let cell = |b: &[String; 4]| match b[1].is_empty() {
                true => format!("- ({})", b[0]),
                false => format!(
                    "{:.3} [{:.3}, {:.3}] ({})",
                    b[1].parse::<f64>().unwrap_or(f64::NAN),
                    b[2].parse::<f64>().unwrap_or(f64::NAN),
                    b[3].parse::<f64>().unwrap_or(f64::NAN),
                    b[0]
                ),
            };
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                values.collect::<Vec<_>>().join(" | "),
                sources,
                cell(&i),
                cell(&x),
                crate::evaluate::num(&m["auc_gap_internal_minus_external"], 3)
            ));
            rows += 1;
        }
        if rows == 0 {
            continue;
        }
        let csv = w
            .into_inner()
            .map_err(|e| Error::Usage(format!("external-summary.csv: {e}")))?;
        let dir = points[0].base_out.clone();
        std::fs::create_dir_all(&dir).map_err(|e| Error::write(&dir, e))?;
        for (name, bytes) in [
            ("external-summary.csv", csv),
            ("external-summary.md", md.into_bytes()),
        ] {
            let p = dir.join(name);
            std::fs::write(&p, bytes).map_err(|e| Error::write(&p, e))?;
            written.push(p);
        }
    }
    Ok(written)
}
