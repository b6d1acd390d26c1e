//! `prep evaluate` and `prep explain`: the evidence a clinical-ML reviewer asks for.
//!
//! - `stats`: AUC, DeLong CI, grouped bootstrap, Wilson CIs, thresholds, calibration (no libtorch);
//! - `occlude`: the shortcut controls `--occlude lungs|border` (no libtorch);
//! - this file: the per-image prediction table, reading a split bag's records, and the metrics
//!   document (metrics.json / metrics.md) built from predictions alone (no libtorch);
//! - `run` (train feature): predicting a bag's images with a model and writing DIR/;
//! - `explain` (train feature): Grad-CAM at `features.norm5`.
//!
//! Output of `prep evaluate --out DIR`:
//! ```text
//! DIR/predictions.csv  metrics.json  metrics.md  reliability.png  [counterfactual.csv]
//!     [explain/cams.csv explain/NNN-<stem>.cam.{png,json}]
//! ```

pub mod occlude;
pub mod stats;

#[cfg(feature = "train")]
pub mod cams;
#[cfg(feature = "train")]
pub mod explain;
#[cfg(feature = "train")]
pub mod run;

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use stats::{Scored, RULES};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Bootstrap resamples (issue #15: 2,000).
pub const RESAMPLES: usize = 2000;
/// Calibration bins (equal width).
pub const ECE_BINS: usize = 15;

/// One row of predictions.csv.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub id: String,
    pub path: String,
    pub source: String,
    pub patient_id: String,
    /// The patient group the split kept together (bootstrap resamples these).
    pub group: String,
    pub view: String,
    pub split: String,
    /// From a bag given to `prep split --external`: a source the model never saw.
    pub external: bool,
    /// True class name.
    pub label: String,
    /// 1 when `label` is the positive class.
    pub y: u8,
    /// Probability of the positive class.
    pub probability: f64,
    /// Class with the highest probability.
    pub predicted: String,
}

pub const PREDICTION_COLUMNS: &[&str] = &[
    "id",
    "path",
    "source",
    "patient_id",
    "group",
    "view",
    "split",
    "external",
    "label",
    "y",
    "probability",
    "predicted",
];

impl Prediction {
    fn scored(&self) -> Scored {
        Scored {
            p: self.probability,
            positive: self.y == 1,
            group: self.group.clone(),
        }
    }
}

/// One image of a split bag as its records.csv describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct BagImage {
    pub id: String,
    /// Relative to the bag root (`data/test/covid/x.png`).
    pub path: String,
    pub split: String,
    pub class: String,
    pub source: String,
    pub patient_id: String,
    pub group: String,
    pub view: String,
    pub external: bool,
    /// As the records give it (empty when they do not).
    pub sha256: String,
}

/// Read a bag's records.csv: a split bag (`split`, `class` columns) or any bag with a `label`
/// (its images then form the split `all`). Rows come back sorted by path. The bag is not
/// verified here (callers do that first).
pub fn read_bag_images(bag: &Path) -> Result<Vec<BagImage>> {
    let table = bag.join("data/records.csv");
    let rows = crate::report::read_rows(&table)?;
    if let Some(first) = rows.first().filter(|r| !r.contains_key("path")) {
        return Err(Error::MissingColumn {
            path: table,
            column: "path".into(),
            present: first.keys().cloned().collect::<Vec<_>>().join(", "),
        });
    }
    let external = external_bags(bag)?;
    let mut out = Vec::new();
    for (n, row) in rows.into_iter().enumerate() {
        let get = |c: &str| row.get(c).cloned().unwrap_or_default();
        let bad = |reason: String| Error::BadRow {
            path: table.clone(),
            row: n as u64 + 2,
            reason,
        };
        let path = get("path");
        let p = Path::new(&path);
        let safe = path.starts_with("data/")
            && !path.contains('\\')
            && p.components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !safe {
            return Err(bad(format!("path {path:?} is not a file under data/")));
        }
        // Without split/class columns, the ImageFolder layout data/<split>/<class>/<file> says.
        let parts: Vec<&str> = path.split('/').collect();
        let folder = (parts.len() == 4 && ["train", "val", "test"].contains(&parts[1]))
            .then(|| (parts[1].to_string(), parts[2].to_string()));
        let class = [get("class"), get("label")]
            .into_iter()
            .find(|c| !c.is_empty())
            .or_else(|| folder.as_ref().map(|f| f.1.clone()))
            .ok_or_else(|| {
                bad("no class: no class or label value and the path is not data/<split>/<class>/<file>".into())
            })?;
        let source_bag = get("source_bag");
        out.push(BagImage {
            id: Some(get("id"))
                .filter(|i| !i.is_empty())
                .unwrap_or_else(|| path.clone()),
            split: Some(get("split"))
                .filter(|s| !s.is_empty())
                .or_else(|| folder.map(|f| f.0))
                .unwrap_or_else(|| "all".into()),
            class,
            source: get("source"),
            patient_id: get("patient_id"),
            group: get("group"),
            view: get("view"),
            external: !source_bag.is_empty() && external.contains(&source_bag),
            sha256: get("sha256"),
            path,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Input bags `prep split --external` put in the test split, as its provenance names them.
pub fn external_bags(bag: &Path) -> Result<BTreeSet<String>> {
    let p = bag.join("data/provenance.json");
    let Ok(bytes) = std::fs::read(&p) else {
        return Ok(BTreeSet::new());
    };
    let v: Value =
        serde_json::from_slice(&bytes).map_err(|e| Error::bad_input(&p, e.to_string()))?;
    Ok(v["parameters"]["external_bags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(String::from))
        .collect())
}

impl BagImage {
    /// The unit the bootstrap resamples: the split's patient group, else source + patient id,
    /// else the image itself.
    pub fn group_key(&self) -> String {
        if !self.group.is_empty() {
            self.group.clone()
        } else if !self.patient_id.is_empty() {
            format!("{}:{}", self.source, self.patient_id)
        } else {
            format!("image:{}", self.id)
        }
    }
}

fn r6(x: f64) -> f64 {
    (x * 1e12).round() / 1e12
}

/// AUC, DeLong CI and counts of a subset, as metrics.json writes it.
fn auc_block(rows: &[&Prediction]) -> Value {
    let s: Vec<Scored> = rows.iter().map(|r| r.scored()).collect();
    let (pos, neg) = stats::by_class(&s);
    let d = stats::delong(&pos, &neg);
    json!({
        "n": rows.len(),
        "n_positive": pos.len(),
        "n_negative": neg.len(),
        "auc": d.map(|d| d.auc),
        "auc_ci": d.map(|d| d.ci),
    })
}

fn by_key(rows: &[&Prediction], key: impl Fn(&Prediction) -> String) -> Value {
    let mut m: BTreeMap<String, Vec<&Prediction>> = BTreeMap::new();
    for r in rows {
        m.entry(key(r)).or_default().push(r);
    }
    Value::Object(m.into_iter().map(|(k, v)| (k, auc_block(&v))).collect())
}

/// What metrics.json says about the run besides the numbers.
#[derive(Debug, Clone, Serialize)]
pub struct Context {
    pub model: String,
    pub data: String,
    pub split: String,
    pub positive_class: String,
    pub classes: Vec<String>,
    pub occlude: Option<String>,
    pub seed: u64,
}

/// The metrics document for `rows` (the evaluated images), with thresholds chosen on `val` (the
/// validation images' predictions) and applied unchanged to `rows`.
pub fn metrics(ctx: &Context, rows: &[Prediction], val: &[Prediction], resamples: usize) -> Value {
    let all: Vec<&Prediction> = rows.iter().collect();
    let s: Vec<Scored> = rows.iter().map(|r| r.scored()).collect();
    let (pos, neg) = stats::by_class(&s);
    let d = stats::delong(&pos, &neg);
    let boot = stats::bootstrap_auc(&s, resamples, ctx.seed);
    let val_s: Vec<Scored> = val.iter().map(|r| r.scored()).collect();
    let thresholds: Vec<Value> = RULES
        .iter()
        .map(|rule| {
            let t = stats::choose_threshold(&val_s, *rule);
            json!({
                "rule": rule.name(),
                "chosen_on": "val",
                "threshold": t,
                "val": t.map(|t| stats::at_threshold(&val_s, t)),
                "evaluated": t.map(|t| stats::at_threshold(&s, t)),
            })
        })
        .collect();
    let cal = stats::calibration(&s, ECE_BINS);
    let internal: Vec<&Prediction> = rows.iter().filter(|r| !r.external).collect();
    let external: Vec<&Prediction> = rows.iter().filter(|r| r.external).collect();
    let (ib, eb) = (auc_block(&internal), auc_block(&external));
    let gap = match (ib["auc"].as_f64(), eb["auc"].as_f64()) {
        (Some(i), Some(e)) => Some(r6(i - e)),
        _ => None,
    };
    let correct = rows.iter().filter(|r| r.predicted == r.label).count();
    json!({
        "format": "prep-evaluation/1",
        "model": ctx.model,
        "data": ctx.data,
        "split": ctx.split,
        "classes": ctx.classes,
        "positive_class": ctx.positive_class,
        "occlude": ctx.occlude,
        "n": rows.len(),
        "n_positive": pos.len(),
        "n_negative": neg.len(),
        "accuracy": (!rows.is_empty()).then(|| correct as f64 / rows.len() as f64),
        "auc": d.map(|d| d.auc),
        "auc_ci": d.map(|d| d.ci),
        "auc_ci_method": "DeLong (midrank), 95 %, clipped to [0, 1]",
        "auc_variance": d.map(|d| d.variance),
        "auc_ci_bootstrap": boot.ci,
        "bootstrap": {
            "resamples": boot.resamples,
            "valid_resamples": boot.valid,
            "seed": boot.seed,
            "groups": boot.groups,
            "method": "patient groups drawn with replacement, groups with a positive image and groups without as two strata; 2.5th/97.5th percentiles",
        },
        "thresholds": thresholds,
        "threshold_note": "positive when the probability is at least the threshold; thresholds are chosen on the val split only and applied unchanged here; sensitivity/specificity CIs are Wilson 95 %",
        "ece": cal.ece,
        "ece_bins": ECE_BINS,
        "reliability": cal.bins,
        "by_source": by_key(&all, |r| r.source.clone()),
        "by_view": by_key(&all, |r| r.view.clone()),
        "internal": ib,
        "external": eb,
        "auc_gap_internal_minus_external": gap,
    })
}

/// A number of a metrics document with `digits` decimals, or "-" when it is null.
pub fn num(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

/// A `[lo, hi]` interval of a metrics document, or "-".
pub fn interval(v: &Value, digits: usize) -> String {
    match v.as_array() {
        Some(a) if a.len() == 2 => format!("[{}, {}]", num(&a[0], digits), num(&a[1], digits)),
        _ => "-".into(),
    }
}

fn f4(v: &Value) -> String {
    num(v, 4)
}

fn ci4(v: &Value) -> String {
    interval(v, 4)
}

/// metrics.md: the same numbers for people.
pub fn markdown(m: &Value) -> String {
    let mut s = format!(
        "# Evaluation: {} on the {} split of {}\n\nPositive class `{}`{}; {} images ({} positive, {} negative).\n\n",
        m["model"].as_str().unwrap_or("?"),
        m["split"].as_str().unwrap_or("?"),
        m["data"].as_str().unwrap_or("?"),
        m["positive_class"].as_str().unwrap_or("?"),
        m["occlude"]
            .as_str()
            .map(|o| format!(", films occluded: {o}"))
            .unwrap_or_default(),
        m["n"],
        m["n_positive"],
        m["n_negative"]
    );
    s.push_str(&format!(
        "| metric | value | 95 % CI |\n|---|---|---|\n| AUC | {} | {} (DeLong) |\n| AUC | | {} (bootstrap, {} resamples by patient group) |\n| ECE ({} bins) | {} | |\n| accuracy (argmax) | {} | |\n\n",
        f4(&m["auc"]),
        ci4(&m["auc_ci"]),
        ci4(&m["auc_ci_bootstrap"]),
        m["bootstrap"]["resamples"],
        m["ece_bins"],
        f4(&m["ece"]),
        f4(&m["accuracy"]),
    ));
    s.push_str("Operating points chosen on val, applied unchanged:\n\n| rule | threshold | sensitivity | 95 % CI | specificity | 95 % CI |\n|---|---|---|---|---|---|\n");
    for t in m["thresholds"].as_array().into_iter().flatten() {
        let e = &t["evaluated"];
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            t["rule"].as_str().unwrap_or(""),
            f4(&t["threshold"]),
            f4(&e["sensitivity"]["value"]),
            ci4(&e["sensitivity"]["ci"]),
            f4(&e["specificity"]["value"]),
            ci4(&e["specificity"]["ci"]),
        ));
    }
    for (title, key) in [("source", "by_source"), ("view", "by_view")] {
        s.push_str(&format!(
            "\nBy {title}:\n\n| {title} | n | positive | AUC | 95 % CI |\n|---|---|---|---|---|\n"
        ));
        for (k, v) in m[key].as_object().into_iter().flatten() {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                if k.is_empty() { "(none)" } else { k },
                v["n"],
                v["n_positive"],
                f4(&v["auc"]),
                ci4(&v["auc_ci"])
            ));
        }
    }
    if m["external"]["n"].as_u64().unwrap_or(0) > 0 {
        s.push_str(&format!(
            "\nInternal vs external (sources the model never saw):\n\n| | n | AUC | 95 % CI |\n|---|---|---|---|\n| internal | {} | {} | {} |\n| external | {} | {} | {} |\n\nAUC gap (internal - external): {}\n",
            m["internal"]["n"],
            f4(&m["internal"]["auc"]),
            ci4(&m["internal"]["auc_ci"]),
            m["external"]["n"],
            f4(&m["external"]["auc"]),
            ci4(&m["external"]["auc_ci"]),
            f4(&m["auc_gap_internal_minus_external"]),
        ));
    }
    if let Some(c) = m.get("counterfactual").filter(|c| !c.is_null()) {
        s.push_str(&format!(
            "\nAnnotation counterfactual (the same films before inpainting, {}): {} image(s) matched, {} changed by inpainting; flip rate {} at the val-chosen threshold {} ({} at 0.5), mean |Δp| {} (over all matched), max |Δp| {}.\n",
            c["original_bag"].as_str().unwrap_or("?"),
            c["matched"],
            c["changed"],
            f4(&c["flip_rate"]),
            f4(&c["threshold"]),
            f4(&c["flip_rate_at_0.5"]),
            f4(&c["mean_abs_delta_p"]),
            f4(&c["max_abs_delta_p"]),
        ));
    }
    if let Some(x) = m.get("explain").filter(|x| !x.is_null()) {
        s.push_str(&format!(
            "\nGrad-CAM (features.norm5) of every evaluated image; share of attribution inside the lung field (explain/cams.csv ranks the images worst error first, {} overlays):\n\n| source | n | mean share inside | images mostly inside |\n|---|---|---|---|\n| all | {} | {} | {} |\n",
            x["overlays"],
            x["all"]["n"],
            f4(&x["all"]["mean_lung_field_share"]),
            f4(&x["all"]["share_of_images_mostly_inside"]),
        ));
        for (k, v) in x["by_source"].as_object().into_iter().flatten() {
            s.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                if k.is_empty() { "(none)" } else { k },
                v["n"],
                f4(&v["mean_lung_field_share"]),
                f4(&v["share_of_images_mostly_inside"]),
            ));
        }
    }
    s
}

/// predictions.csv bytes, rows in the order given.
pub fn predictions_csv(rows: &[Prediction]) -> Result<Vec<u8>> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    let e = |e: csv::Error| Error::Usage(format!("predictions.csv: {e}"));
    w.write_record(PREDICTION_COLUMNS).map_err(e)?;
    for r in rows {
        w.write_record([
            r.id.as_str(),
            &r.path,
            &r.source,
            &r.patient_id,
            &r.group,
            &r.view,
            &r.split,
            if r.external { "1" } else { "0" },
            &r.label,
            &r.y.to_string(),
            // Shortest text that reads back to the same f64: outside tools see our exact numbers.
            &format!("{:?}", r.probability),
            &r.predicted,
        ])
        .map_err(e)?;
    }
    w.into_inner()
        .map_err(|e| Error::Usage(format!("predictions.csv: {e}")))
}

/// One counterfactual row: image id, probability before inpainting, after.
pub type Counterfactual = (String, f64, f64);

/// Annotation counterfactual: the same images' predictions before (original) and after
/// (inpainted) inpainting, matched by source and id. A flip is counted at the operating
/// threshold chosen on val (Youden; `val_threshold`, None without a val split) and, named
/// apart, at 0.5 (the argmax of two classes).
pub fn counterfactual(
    after: &[Prediction],
    before: &BTreeMap<(String, String), f64>,
    original_bag: &str,
    val_threshold: Option<f64>,
) -> (Value, Vec<Counterfactual>) {
    let mut rows = Vec::new();
    for a in after {
        if let Some(&b) = before.get(&(a.source.clone(), a.id.clone())) {
            rows.push((a.id.clone(), b, a.probability));
        }
    }
    let n = rows.len();
    let flips_at = |t: f64| {
        rows.iter()
            .filter(|(_, b, a)| (*b >= t) != (*a >= t))
            .count()
    };
    let rate = |k: usize| (n > 0).then(|| k as f64 / n as f64);
    let at_val = val_threshold.map(flips_at);
    let at_half = flips_at(0.5);
    let changed = rows.iter().filter(|(_, b, a)| b != a).count();
    let deltas: Vec<f64> = rows.iter().map(|(_, b, a)| (a - b).abs()).collect();
    let v = json!({
        "original_bag": original_bag,
        "evaluated": after.len(),
        "matched": n,
        "changed": changed,
        "threshold": val_threshold,
        "threshold_rule": "youden, chosen on the val split (the operating point metrics.json reports)",
        "flips": at_val,
        "flip_rate": at_val.and_then(rate),
        "flips_at_0.5": at_half,
        "flip_rate_at_0.5": rate(at_half),
        "mean_abs_delta_p": (n > 0).then(|| deltas.iter().sum::<f64>() / n as f64),
        "max_abs_delta_p": deltas.iter().copied().fold(None, |m: Option<f64>, d| Some(m.map_or(d, |m| m.max(d)))),
        "flip_rule": "the positive-class probability is on different sides of the threshold before and after (positive when p >= threshold); flips/flip_rate at the val-chosen Youden threshold (null without a val split), flips_at_0.5/flip_rate_at_0.5 at 0.5",
        "matched_by": "source and id of the image in the original bag's records.csv; films with unchanged bytes keep their probability, changed ones are scored again",
    });
    (v, rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pred(id: &str, y: u8, p: f64, external: bool) -> Prediction {
        Prediction {
            id: id.into(),
            path: format!("data/test/x/{id}.png"),
            source: if external { "ext" } else { "int" }.into(),
            patient_id: id.into(),
            group: id.into(),
            view: "PA".into(),
            split: "test".into(),
            external,
            label: if y == 1 { "covid" } else { "no-covid" }.into(),
            y,
            probability: p,
            predicted: if p >= 0.5 { "covid" } else { "no-covid" }.into(),
        }
    }

    fn ctx() -> Context {
        Context {
            model: "m".into(),
            data: "d".into(),
            split: "test".into(),
            positive_class: "covid".into(),
            classes: vec!["covid".into(), "no-covid".into()],
            occlude: None,
            seed: 0,
        }
    }

    #[test]
    fn metrics_document_has_the_promised_fields_and_gap() {
        let rows = vec![
            pred("a", 1, 0.9, false),
            pred("b", 0, 0.2, false),
            pred("c", 1, 0.4, true),
            pred("d", 0, 0.6, true),
        ];
        let val = vec![pred("v1", 1, 0.7, false), pred("v2", 0, 0.3, false)];
        let m = metrics(&ctx(), &rows, &val, 200);
        for f in ["auc", "auc_ci", "auc_ci_bootstrap", "ece", "n", "by_source"] {
            assert!(m.get(f).is_some(), "{f} missing");
        }
        assert_eq!(m["n"], 4);
        assert_eq!(m["by_source"]["int"]["auc"], 1.0);
        assert_eq!(m["by_source"]["ext"]["auc"], 0.0);
        assert_eq!(m["auc_gap_internal_minus_external"], 1.0);
        assert_eq!(m["thresholds"][0]["threshold"], 0.7);
        let md = markdown(&m);
        assert!(md.contains("Internal vs external") && md.contains("| youden | 0.7000 |"));
        let csv = String::from_utf8(predictions_csv(&rows).unwrap()).unwrap();
        assert!(csv.starts_with(
            "id,path,source,patient_id,group,view,split,external,label,y,probability,predicted\n"
        ));
        assert!(csv.contains(",0.9,"));
    }

    #[test]
    fn counterfactual_flips_and_deltas() {
        let after = vec![
            pred("a", 1, 0.9, false),
            pred("b", 0, 0.45, false),
            pred("z", 0, 0.1, false),
        ];
        let before = BTreeMap::from([
            (("int".to_string(), "a".to_string()), 0.9),
            (("int".to_string(), "b".to_string()), 0.65),
        ]);
        let (v, rows) = counterfactual(&after, &before, "orig", Some(0.7));
        assert_eq!(rows.len(), 2);
        assert_eq!(v["matched"], 2);
        // 0.65 -> 0.45 crosses 0.5 but not the val threshold 0.7.
        assert_eq!(v["flips"], 0);
        assert_eq!(v["flips_at_0.5"], 1);
        let (v, _) = counterfactual(&after, &before, "orig", Some(0.6));
        assert_eq!(v["flips"], 1);
        assert_eq!(v["flip_rate"], 0.5);
        let (v, _) = counterfactual(&after, &before, "orig", None);
        assert!(v["flips"].is_null() && v["flip_rate"].is_null());
        assert_eq!(v["changed"], 1);
        assert!((v["mean_abs_delta_p"].as_f64().unwrap() - 0.1).abs() < 1e-12);
    }
}
