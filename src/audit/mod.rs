//! `prep audit`: does a training set teach the disease, or the source? Before anything trains,
//! the audit reads one or more labelled bags (a split bag, or the bags a split will be made from)
//! and answers with design tables (label × source, view, sex, age band; Cramér's V; the
//! pediatric-controls and total-confounding traps in words) and a *trivial-feature probe*: a
//! classifier that sees only what carries no disease signal (file size and format, intensity
//! statistics, the film border, black/white pixel shares, the inpainted mask share) and tries to
//! predict the label, cross-validated by patient group. If it can, the set is `confounded`.
//!
//! Steps: read and verify the bags → gather one item per image (lineage for sex, age and mask
//! share) → features from each file → tables → probes → verdict → write audit.json, audit.md
//! and the plots into the output folder (staged beside it, renamed into place).

pub mod features;
mod lineage;
mod plot;
pub mod probe;
pub mod tables;

use crate::error::{Error, Result};
use crate::manifest::{manifest_sha256, verify_bag};
use crate::progress;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Built-in rules (metadata/audit-rules.toml).
const BUILTIN_RULES: &str = include_str!("../../metadata/audit-rules.toml");

/// Thresholds and probe settings, from metadata/audit-rules.toml or `--rules`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    pub confounded_ci_lower: f64,
    pub folds: usize,
    pub bootstrap: usize,
    pub tree_max_depth: usize,
    pub forest_trees: usize,
    pub tree_min_leaf: f32,
    pub logistic_alpha: f64,
    pub logistic_max_iterations: u64,
    pub top_features: usize,
    pub border_fraction: f64,
    pub adult_age: f64,
    pub age_bands: Vec<f64>,
    #[serde(default)]
    pub demographics: BTreeMap<String, Demographics>,
}

/// Column names of sex and age in a source's metadata table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Demographics {
    pub sex: String,
    pub age: String,
}

impl Rules {
    pub fn builtin() -> Rules {
        toml::from_str(BUILTIN_RULES).expect("built-in audit rules parse")
    }
    pub fn load(path: &Path) -> Result<Rules> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::read(path, e))?;
        let r: Rules = toml::from_str(&text).map_err(|source| Error::SourceDescription {
            path: path.to_path_buf(),
            source,
        })?;
        r.check(path)?;
        Ok(r)
    }
    fn check(&self, path: &Path) -> Result<()> {
        let bad = |why: &str| Err(Error::bad_input(path, why.to_string()));
        if !(0.5..=1.0).contains(&self.confounded_ci_lower) {
            return bad("confounded_ci_lower must be between 0.5 and 1");
        }
        if self.folds < 2
            || self.bootstrap < 100
            || self.tree_max_depth == 0
            || self.forest_trees == 0
        {
            return bad("folds must be >= 2, bootstrap >= 100, tree_max_depth >= 1");
        }
        if !(0.0..0.5).contains(&self.border_fraction) {
            return bad("border_fraction must be in [0, 0.5)");
        }
        Ok(())
    }
}

/// A checked `prep audit` invocation.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub bags: Vec<PathBuf>,
    pub out: PathBuf,
    /// The class the probe tries to tell from the rest.
    pub positive: String,
    pub seed: u64,
    pub rules: Rules,
    pub rules_file: Option<PathBuf>,
    pub force: bool,
    pub argv: Vec<String>,
}

/// One image under audit.
#[derive(Debug, Clone)]
pub struct Item {
    pub bag: usize,
    pub id: String,
    /// Path relative to its bag root.
    pub rel: String,
    pub file: PathBuf,
    /// The value of the target column (`class` in a split bag, else `label`).
    pub class: String,
    pub label: String,
    pub source: String,
    pub view: String,
    /// Cross-validation group: the split's patient group, else source + patient id, else id.
    pub group: String,
    pub sex: String,
    pub age: Option<f64>,
    /// Share of the image inpainted by `prep inpaint`, where the lineage has one.
    pub mask_fraction: Option<f64>,
}

impl Item {
    pub fn positive(&self, positive: &str) -> bool {
        self.class == positive
    }
}

pub struct AuditOutcome {
    pub verdict: String,
    pub probe_auc: f64,
    pub ci: [f64; 2],
    pub top_features: Vec<String>,
    pub warnings: Vec<String>,
    pub out: PathBuf,
}

impl AuditOutcome {
    pub fn confounded(&self) -> bool {
        self.verdict == "confounded"
    }
}

/// records.csv is data: never follow a path out of the bag's payload.
fn safe_rel(p: &str) -> bool {
    p.starts_with("data/")
        && !p.contains('\\')
        && Path::new(p)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// Every folder source is called `folder` in its records: name it by the folder it read.
fn source_name(source: &str, dataset: Option<&str>) -> String {
    match dataset {
        Some(d) if source == "folder" => {
            let name = Path::new(d)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| d.to_string());
            format!("folder:{name}")
        }
        _ => source.to_string(),
    }
}

/// Step 1: verify each bag and take one item per record.
pub fn read_items(cfg: &AuditConfig) -> Result<(Vec<Item>, Vec<Value>, Vec<String>)> {
    let mut items = Vec::new();
    let mut bags = Vec::new();
    let mut warnings = Vec::new();
    let mut lin = lineage::Lineage::new(&cfg.rules);
    let mut target_cols = BTreeSet::new();
    for (b, bag) in cfg.bags.iter().enumerate() {
        verify_bag(bag)?.into_result(bag)?;
        let records = bag.join("data/records.csv");
        let rows = crate::report::read_rows(&records)?;
        if rows.is_empty() {
            return Err(Error::bad_input(&records, "the bag holds no images"));
        }
        let has = |c: &str| rows[0].contains_key(c);
        let target = if has("class") {
            "class"
        } else if has("label") {
            "label"
        } else {
            return Err(Error::bad_input(
                &records,
                "no labels: records.csv has neither a `class` nor a `label` column",
            ));
        };
        target_cols.insert(target);
        bags.push(json!({
            "path": bag.to_string_lossy(),
            "manifest_sha256": manifest_sha256(bag)?,
            "target_column": target,
        }));
        for (i, r) in rows.iter().enumerate() {
            let get = |c: &str| r.get(c).cloned().unwrap_or_default();
            let class = get(target);
            if class.trim().is_empty() {
                return Err(Error::BadRow {
                    path: records.clone(),
                    row: i as u64 + 2,
                    reason: format!("no label: the `{target}` column is empty"),
                });
            }
            let rel = get("path");
            if !safe_rel(&rel) {
                return Err(Error::BadRow {
                    path: records.clone(),
                    row: i as u64 + 2,
                    reason: format!("path {rel:?} leaves the bag's data/ folder"),
                });
            }
            let origin = lin.origin(bag, r, &mut warnings);
            let source = source_name(&get("source"), origin.dataset.as_deref());
            let patient = get("patient_id");
            let group = match r.get("group").filter(|g| !g.is_empty()) {
                Some(g) => format!("{b}:{g}"),
                None if !patient.is_empty() => format!("{source}:{patient}"),
                None => format!("{b}:id:{}", get("id")),
            };
            items.push(Item {
                bag: b,
                id: get("id"),
                file: bag.join(&rel),
                rel,
                label: r.get("label").cloned().unwrap_or_else(|| class.clone()),
                class,
                source,
                view: get("view"),
                group,
                sex: origin.sex,
                age: origin.age,
                mask_fraction: origin.mask_fraction,
            });
        }
    }
    if target_cols.len() > 1 {
        warnings.push(
            "the bags name their classes in different columns (class in a split bag, label elsewhere); each bag's own column is used".into(),
        );
    }
    warnings.extend(lin.finish());
    Ok((items, bags, warnings))
}

/// Step 2: the probe needs both sides.
fn check_classes(items: &[Item], positive: &str, bags: &[PathBuf]) -> Result<()> {
    let classes: BTreeSet<&str> = items.iter().map(|i| i.class.as_str()).collect();
    let list = classes.iter().copied().collect::<Vec<_>>().join(", ");
    if classes.len() < 2 {
        let names: Vec<String> = bags.iter().map(|b| b.display().to_string()).collect();
        return Err(Error::bad_input(
            names.join(", "),
            format!(
                "one class only ({list}): the audit compares classes, give bags with at least two"
            ),
        ));
    }
    if !classes.contains(positive) {
        return Err(Error::Usage(format!(
            "no image has class {positive:?} (classes: {list}); pass --positive CLASS"
        )));
    }
    Ok(())
}

fn verdict(probe: &probe::ProbeResult, rules: &Rules) -> &'static str {
    if probe.ci[0] >= rules.confounded_ci_lower {
        "confounded"
    } else {
        "ok"
    }
}

pub fn run(cfg: &AuditConfig) -> Result<AuditOutcome> {
    let (items, bags, mut warnings) = read_items(cfg)?;
    check_classes(&items, &cfg.positive, &cfg.bags)?;
    let staging = Staging::create(&cfg.out, cfg.force)?;

    let pb = progress::bar(items.len() as u64, "auditing");
    let mut feats: Vec<features::Features> = items
        .par_iter()
        .map(|it| {
            let f = features::compute(it, cfg.rules.border_fraction);
            pb.inc(1);
            f
        })
        .collect::<Result<_>>()?;
    pb.finish_and_clear();
    features::fill_size_share(&mut feats);

    let tabs = tables::build(&items, &cfg.rules);
    warnings.extend(tabs.warnings.iter().cloned());
    let y: Vec<bool> = items.iter().map(|i| i.positive(&cfg.positive)).collect();
    let groups: Vec<&str> = items.iter().map(|i| i.group.as_str()).collect();
    let matrix = features::Matrix::new(&feats, &features::ALL);
    let label_probe = probe::probe(&matrix, &y, &groups, &cfg.rules, cfg.seed)?;
    let source_probe = source_probe(&items, &feats, &groups, cfg)?;
    let verdict = verdict(&label_probe, &cfg.rules);
    if verdict == "confounded" {
        warnings.push(format!(
            "the trivial-feature probe tells {} from the rest at AUC {:.3} (95 % CI {:.3}-{:.3}) without looking at any disease: {}",
            cfg.positive,
            label_probe.auc,
            label_probe.ci[0],
            label_probe.ci[1],
            label_probe.describe_top(&cfg.positive)
        ));
    }

    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for it in &items {
        *counts.entry(it.class.as_str()).or_insert(0) += 1;
    }
    let doc = json!({
        "verdict": verdict,
        "positive": cfg.positive,
        "images": items.len(),
        "classes": counts,
        "probe": label_probe.to_json(),
        "source_probe": source_probe,
        "tables": tabs.json,
        "warnings": warnings,
        "bags": bags,
        "seed": cfg.seed,
        "rules": cfg.rules,
        "rules_file": cfg.rules_file.as_ref().map(|p| p.to_string_lossy().into_owned()),
        "argv": crate::manifest::Provenance::new("audit", cfg.argv.clone(), &cfg.out).argv,
        "prep_version": env!("CARGO_PKG_VERSION"),
    });
    let mut bytes = serde_json::to_vec_pretty(&doc).expect("audit serialises");
    bytes.push(b'\n');
    staging.write("audit.json", &bytes)?;
    staging.write("audit.md", markdown(&doc).as_bytes())?;
    staging.write("features.csv", &features::to_csv(&items, &feats)?)?;
    plot::roc(&staging.path("probe-roc.png"), &label_probe, &cfg.positive)?;
    plot::importance(&staging.path("probe-features.png"), &label_probe)?;
    staging.finish()?;
    Ok(AuditOutcome {
        verdict: verdict.into(),
        probe_auc: label_probe.auc,
        ci: label_probe.ci,
        top_features: label_probe.top_features.clone(),
        warnings,
        out: cfg.out.clone(),
    })
}

/// The same probe predicting the source, from the pixel-only features: one source against the
/// rest for each source, averaged.
fn source_probe(
    items: &[Item],
    feats: &[features::Features],
    groups: &[&str],
    cfg: &AuditConfig,
) -> Result<Value> {
    let sources: BTreeSet<&str> = items.iter().map(|i| i.source.as_str()).collect();
    if sources.len() < 2 {
        return Ok(json!({
            "auc": null,
            "note": format!("one source only ({}): nothing to tell apart", sources.into_iter().collect::<Vec<_>>().join(", ")),
        }));
    }
    let matrix = features::Matrix::new(feats, &features::PIXEL_ONLY);
    let mut per = serde_json::Map::new();
    let mut sum = 0.0;
    let mut n = 0;
    for s in &sources {
        let y: Vec<bool> = items.iter().map(|i| i.source == *s).collect();
        match probe::probe(&matrix, &y, groups, &cfg.rules, cfg.seed) {
            Ok(p) => {
                sum += p.auc;
                n += 1;
                per.insert(
                    s.to_string(),
                    json!({"auc": p.auc, "ci": p.ci, "top_features": p.top_features}),
                );
            }
            Err(e) => {
                per.insert(s.to_string(), json!({"auc": null, "note": e.to_string()}));
            }
        }
    }
    Ok(json!({
        "auc": if n > 0 { json!(sum / n as f64) } else { Value::Null },
        "features": "pixel-only",
        "feature_names": features::PIXEL_ONLY.iter().map(|f| f.name()).collect::<Vec<_>>(),
        "per_source": per,
    }))
}

/// audit.md: the same findings for people.
fn markdown(doc: &Value) -> String {
    let mut s = String::new();
    let probe = &doc["probe"];
    s.push_str(&format!(
        "# prep audit: {}\n\n{} images; classes {}.\n\n",
        doc["verdict"].as_str().unwrap_or("?"),
        doc["images"],
        doc["classes"]
    ));
    s.push_str(&format!(
        "Trivial-feature probe ({}, {} patient-grouped folds): AUC {:.3}, 95 % CI {:.3}-{:.3} ({} bootstrap resamples). Verdict `confounded` when the CI's lower end is at least {}.\n\n",
        probe["model"].as_str().unwrap_or("?"),
        probe["folds"],
        probe["auc"].as_f64().unwrap_or(f64::NAN),
        probe["ci"][0].as_f64().unwrap_or(f64::NAN),
        probe["ci"][1].as_f64().unwrap_or(f64::NAN),
        probe["bootstrap"],
        doc["rules"]["confounded_ci_lower"]
    ));
    s.push_str("| feature | importance | AUC alone | positive median | others median |\n|---|---|---|---|---|\n");
    for f in probe["features"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "| {} | {:.3} | {:.3} | {} | {} |\n",
            f["name"].as_str().unwrap_or(""),
            f["importance"].as_f64().unwrap_or(0.0),
            f["auc_alone"].as_f64().unwrap_or(f64::NAN),
            f["positive_median"],
            f["others_median"]
        ));
    }
    if let Some(c) = probe["constant_features"]
        .as_array()
        .filter(|c| !c.is_empty())
    {
        s.push_str(&format!(
            "\nConstant over every image (carry nothing): {}.\n",
            c.iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    s.push_str(&format!(
        "\nSource probe (pixel-only features): mean AUC {}.\n\n",
        doc["source_probe"]["auc"]
    ));
    s.push_str(&tables::markdown(&doc["tables"]));
    let warnings = doc["warnings"].as_array().cloned().unwrap_or_default();
    if !warnings.is_empty() {
        s.push_str("\n## Warnings\n\n");
        for w in warnings {
            s.push_str(&format!("- {}\n", w.as_str().unwrap_or("")));
        }
    }
    s
}

/// The output folder, built beside OUT and renamed into place (like a bag).
struct Staging {
    out: PathBuf,
    tmp: PathBuf,
    done: bool,
}

impl Staging {
    fn create(out: &Path, force: bool) -> Result<Staging> {
        let tmp = crate::manifest::staging_dir(out, force)?;
        Ok(Staging {
            out: out.to_path_buf(),
            tmp,
            done: false,
        })
    }
    fn path(&self, name: &str) -> PathBuf {
        self.tmp.join(name)
    }
    fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let p = self.path(name);
        std::fs::write(&p, bytes).map_err(|e| Error::write(&p, e))
    }
    fn finish(mut self) -> Result<()> {
        if self.out.exists() {
            let old = self.tmp.with_extension("old");
            std::fs::rename(&self.out, &old).map_err(|e| Error::write(&self.out, e))?;
            std::fs::remove_dir_all(&old).map_err(|e| Error::write(&old, e))?;
        }
        std::fs::rename(&self.tmp, &self.out).map_err(|e| Error::write(&self.out, e))?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}
