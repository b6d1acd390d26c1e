//! `prep run`: a pipeline file names its inputs, each stage's command and parameters, and its
//! outputs. Stages run in order as separate `prep` processes; a stage whose command line, prep
//! build and inputs are unchanged since its output was made is skipped, so an interrupted run
//! resumes where it stopped and a changed parameter re-runs exactly the stages downstream of it.
//!
//! ```toml
//! [vars]
//! data = "datasets"                 # override with --set data=/elsewhere
//!
//! [[stage]]
//! name = "covid"
//! command = "filter"                # any prep subcommand
//! out = "bags/covid"                # becomes --out; other stages refer to it as ${covid}
//! [stage.args]                      # key = value becomes --key value; true becomes --key
//! source = "cohen"
//! dataset = "${data}/cohen"
//!
//! [stage.grid]                      # optional: one run per combination, out/<key>-<value>_...
//! lr = [0.01, 0.001]
//! ```
//!
//! A stage with `each = "NAME"` runs once per grid point of the earlier stage NAME, with
//! `${NAME}` meaning that point's output and the point carried into its own folder name (a
//! leave-one-source-out grid: `split` over `hold_out`, then `train` with `each = "split"`). A
//! grid value written `${name}` names its folder by `name`, not by the path it stands for.

pub mod loso;

use crate::error::{Error, Result};
use crate::manifest::{hash_bytes, hash_file, manifest_sha256, verify_bag};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub vars: BTreeMap<String, toml::Value>,
    #[serde(rename = "stage", default)]
    pub stages: Vec<StageSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    pub name: String,
    pub command: String,
    pub out: String,
    #[serde(default)]
    pub args: BTreeMap<String, toml::Value>,
    /// Positional arguments, after the subcommand.
    #[serde(default)]
    pub positional: Vec<String>,
    #[serde(default)]
    pub grid: BTreeMap<String, Vec<toml::Value>>,
    /// Run once per grid point of this earlier stage (see the module documentation).
    #[serde(default)]
    pub each: Option<String>,
}

/// One concrete process to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStage {
    /// The stage's name, with its grid point when it has one (`train[lr=0.01]`).
    pub name: String,
    pub stage: String,
    pub out: PathBuf,
    /// Arguments after `prep`, including `--out OUT`.
    pub argv: Vec<String>,
    /// Paths among the arguments that exist or are other stages' outputs: what the stage reads.
    pub inputs: Vec<PathBuf>,
    /// The grid point (key, value) pairs; empty without a grid.
    pub grid_point: Vec<(String, String)>,
    /// The stage's `out` before the grid point is appended.
    pub base_out: PathBuf,
}

/// What a stamp beside a finished output records; a stage is skipped only when all of it
/// matches again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub prep_version: String,
    pub git_commit: String,
    pub argv: Vec<String>,
    pub inputs: BTreeMap<String, String>,
    pub output: String,
}

fn value_str(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Replace `${name}` by vars and by earlier stages' outputs.
fn substitute(text: &str, vars: &BTreeMap<String, String>, ctx: &str) -> Result<String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(k) = rest.find("${") {
        out.push_str(&rest[..k]);
        let end = rest[k..]
            .find('}')
            .ok_or_else(|| Error::Usage(format!("{ctx}: unclosed ${{ in {text:?}")))?;
        let key = &rest[k + 2..k + end];
        let v = vars.get(key).ok_or_else(|| {
            Error::Usage(format!(
                "{ctx}: unknown variable ${{{key}}} (known: {})",
                vars.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        out.push_str(v);
        rest = &rest[k + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

impl PipelineFile {
    pub fn load(path: &Path) -> Result<PipelineFile> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::read(path, e))?;
        toml::from_str(&text)
            .map_err(|e| Error::bad_input(path, format!("not a valid pipeline: {e}")))
    }

    /// Expand variables (`sets` override `[vars]`) and grids into the processes to run, in order.
    /// Relative paths are taken relative to `base` (the folder prep run was started in).
    pub fn plan(&self, sets: &BTreeMap<String, String>) -> Result<Vec<PlannedStage>> {
        let mut vars: BTreeMap<String, String> = self
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), value_str(v)))
            .collect();
        for (k, v) in sets {
            if !vars.contains_key(k) {
                return Err(Error::Usage(format!(
                    "--set {k}=...: the pipeline has no variable {k:?}"
                )));
            }
            vars.insert(k.clone(), v.clone());
        }
        let mut planned = Vec::new();
        let mut outs: BTreeMap<String, PathBuf> = BTreeMap::new();
        // Each stage's grid points (names, output), for later stages' `each`.
        let mut grid_outs: BTreeMap<String, Vec<(Vec<(String, String)>, PathBuf)>> =
            BTreeMap::new();
        for (i, st) in self.stages.iter().enumerate() {
            let ctx = format!("stage {} ({})", i + 1, st.name);
            if vars.contains_key(&st.name) || outs.contains_key(&st.name) {
                return Err(Error::Usage(format!(
                    "{ctx}: the name {:?} is already used",
                    st.name
                )));
            }
            let out = PathBuf::from(substitute(&st.out, &vars, &ctx)?);
            // `each`: one copy of this stage per grid point of an earlier stage.
            let upstream: Vec<(Vec<(String, String)>, Option<PathBuf>)> = match &st.each {
                None => vec![(vec![], None)],
                Some(e) => {
                    let pts = grid_outs
                        .get(e)
                        .filter(|p| p.iter().any(|(g, _)| !g.is_empty()))
                        .ok_or_else(|| {
                            Error::Usage(format!(
                                "{ctx}: each = {e:?} names no earlier stage with a grid"
                            ))
                        })?;
                    pts.iter()
                        .map(|(g, o)| (g.clone(), Some(o.clone())))
                        .collect()
                }
            };
            // Grid: the cartesian product, in key order then value order.
            let mut points: Vec<Vec<(String, toml::Value)>> = vec![vec![]];
            for (k, values) in &st.grid {
                if values.is_empty() {
                    return Err(Error::Usage(format!("{ctx}: grid {k} has no values")));
                }
                points = points
                    .into_iter()
                    .flat_map(|p| {
                        values.iter().map(move |v| {
                            let mut q = p.clone();
                            q.push((k.clone(), v.clone()));
                            q
                        })
                    })
                    .collect();
            }
            let mut my_points = Vec::new();
            for ((up_point, up_out), point) in upstream
                .iter()
                .flat_map(|u| points.iter().map(move |p| (u, p)))
            {
                let mut args = st.args.clone();
                for (k, v) in point {
                    args.insert(k.clone(), v.clone());
                }
                let grid_point: Vec<(String, String)> = up_point
                    .iter()
                    .cloned()
                    .chain(point.iter().map(|(k, v)| (k.clone(), grid_name(v))))
                    .collect();
                let mut scope = vars_with(&vars, &outs);
                if let (Some(e), Some(o)) = (&st.each, up_out) {
                    scope.insert(e.clone(), o.to_string_lossy().into_owned());
                }
                let suffix: Vec<String> = grid_point
                    .iter()
                    .map(|(k, v)| format!("{k}-{}", safe(v)))
                    .collect();
                let this_out = if suffix.is_empty() {
                    out.clone()
                } else {
                    out.join(suffix.join("_"))
                };
                let mut argv = vec![st.command.clone()];
                let mut inputs = Vec::new();
                for p in &st.positional {
                    let v = substitute(p, &scope, &ctx)?;
                    note_input(&v, &mut inputs);
                    argv.push(v);
                }
                for (k, v) in &args {
                    let flag = format!("--{}", k.replace('_', "-"));
                    let values: Vec<String> = match v {
                        toml::Value::Boolean(true) => {
                            argv.push(flag);
                            continue;
                        }
                        toml::Value::Boolean(false) => continue,
                        toml::Value::Array(a) => a.iter().map(value_str).collect(),
                        other => vec![value_str(other)],
                    };
                    for raw in values {
                        let v = substitute(&raw, &scope, &ctx)?;
                        note_input(&v, &mut inputs);
                        argv.push(flag.clone());
                        argv.push(v);
                    }
                }
                argv.push("--out".into());
                argv.push(this_out.to_string_lossy().into_owned());
                my_points.push((grid_point.clone(), this_out.clone()));
                let name = if grid_point.is_empty() {
                    st.name.clone()
                } else {
                    format!(
                        "{}[{}]",
                        st.name,
                        grid_point
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(",")
                    )
                };
                planned.push(PlannedStage {
                    name,
                    stage: st.name.clone(),
                    out: this_out,
                    argv,
                    inputs,
                    grid_point,
                    base_out: out.clone(),
                });
            }
            outs.insert(st.name.clone(), out);
            grid_outs.insert(st.name.clone(), my_points);
        }
        Ok(planned)
    }
}

fn vars_with(
    vars: &BTreeMap<String, String>,
    outs: &BTreeMap<String, PathBuf>,
) -> BTreeMap<String, String> {
    let mut v = vars.clone();
    for (k, p) in outs {
        v.insert(k.clone(), p.to_string_lossy().into_owned());
    }
    v
}

fn note_input(v: &str, inputs: &mut Vec<PathBuf>) {
    let p = PathBuf::from(v);
    if (v.contains('/') || p.exists()) && !inputs.contains(&p) {
        inputs.push(p);
    }
}

/// A grid value as it names a folder and a table row: `${name}` is named `name`, a list by its
/// items joined with `+`.
fn grid_name(v: &toml::Value) -> String {
    if let toml::Value::Array(a) = v {
        return a.iter().map(grid_name).collect::<Vec<_>>().join("+");
    }
    let s = value_str(v);
    match s.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        Some(name) if !name.contains(['$', '{', '}']) => name.to_string(),
        _ => s,
    }
}

/// A value as a file-name part: ASCII letters, digits, `.` and `-` kept, all else `_`.
pub(crate) fn safe(v: &str) -> String {
    v.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Identity of an input: a bag's manifest hash, a file's hash, or for a raw folder the hash of
/// its sorted (path, size, modification time) listing — cheap, and changes when files do.
pub fn fingerprint(path: &Path) -> Result<String> {
    if path.join("manifest-sha256.txt").is_file() {
        return Ok(format!("bag:{}", manifest_sha256(path)?));
    }
    if path.is_file() {
        return Ok(format!("file:{}", hash_file(path)?.0));
    }
    if path.is_dir() {
        let mut listing = String::new();
        for e in walkdir::WalkDir::new(path).sort_by_file_name() {
            let e = e.map_err(|e| Error::read(path, e.into()))?;
            if e.file_type().is_file() {
                let m = e
                    .metadata()
                    .map_err(|er| Error::read(e.path(), er.into()))?;
                let mtime = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                listing.push_str(&format!(
                    "{}\t{}\t{}\n",
                    e.path().strip_prefix(path).unwrap_or(e.path()).display(),
                    m.len(),
                    mtime
                ));
            }
        }
        return Ok(format!("dir:{}", hash_bytes(listing.as_bytes())));
    }
    Ok("absent".into())
}

/// Where the stamp of an output lives: beside it, hidden, so the output itself stays as the
/// stage wrote it.
pub fn stamp_path(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.with_file_name(format!(".{name}.prep-stage.json"))
}

pub fn current_stamp(stage: &PlannedStage) -> Result<Stamp> {
    let mut inputs = BTreeMap::new();
    for p in &stage.inputs {
        inputs.insert(p.to_string_lossy().into_owned(), fingerprint(p)?);
    }
    Ok(Stamp {
        prep_version: env!("CARGO_PKG_VERSION").into(),
        git_commit: env!("PREP_GIT_COMMIT").into(),
        argv: stage.argv.clone(),
        inputs,
        output: String::new(),
    })
}

/// Why a stage must run, or None when its output is current.
pub fn needs_run(stage: &PlannedStage) -> Result<Option<String>> {
    if !stage.out.exists() {
        return Ok(Some("no output yet".into()));
    }
    let sp = stamp_path(&stage.out);
    let Ok(text) = std::fs::read_to_string(&sp) else {
        return Ok(Some(
            "output has no stamp (interrupted or made by hand)".into(),
        ));
    };
    let Ok(old) = serde_json::from_str::<Stamp>(&text) else {
        return Ok(Some("stamp unreadable".into()));
    };
    let mut now = current_stamp(stage)?;
    if old.prep_version != now.prep_version || old.git_commit != now.git_commit {
        return Ok(Some("prep changed".into()));
    }
    if old.argv != now.argv {
        return Ok(Some("parameters changed".into()));
    }
    if let Some((k, _)) = now
        .inputs
        .iter()
        .find(|(k, v)| old.inputs.get(*k) != Some(v))
    {
        return Ok(Some(format!("input {k} changed")));
    }
    if stage.out.join("bagit.txt").is_file() {
        if !verify_bag(&stage.out)?.is_intact() {
            return Ok(Some("output bag fails verification".into()));
        }
    }
    now.output = fingerprint(&stage.out)?;
    if now.output != old.output {
        return Ok(Some("output changed since it was made".into()));
    }
    Ok(None)
}

/// Record that `stage` finished, with the identity of what it read and wrote.
pub fn write_stamp(stage: &PlannedStage) -> Result<()> {
    let mut s = current_stamp(stage)?;
    s.output = fingerprint(&stage.out)?;
    let p = stamp_path(&stage.out);
    let tmp = p.with_extension("tmp");
    let mut bytes = serde_json::to_vec_pretty(&s).expect("stamp serialises");
    bytes.push(b'\n');
    std::fs::write(&tmp, bytes).map_err(|e| Error::write(&tmp, e))?;
    std::fs::rename(&tmp, &p).map_err(|e| Error::write(&p, e))
}

/// Run every planned stage in order (`from`/`only` select by stage name). `exec` runs one
/// stage's argv and fails if the stage fails.
pub fn run(
    plan: &[PlannedStage],
    from: Option<&str>,
    only: Option<&str>,
    exec: &mut dyn FnMut(&PlannedStage) -> Result<()>,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<(String, bool)>> {
    for sel in [from, only].into_iter().flatten() {
        if !plan.iter().any(|p| p.stage == sel) {
            return Err(Error::Usage(format!("no stage named {sel:?}")));
        }
    }
    let mut started = from.is_none();
    let mut done = Vec::new();
    let total = plan.len();
    for (i, st) in plan.iter().enumerate() {
        if from == Some(st.stage.as_str()) {
            started = true;
        }
        let selected = match only {
            Some(o) => o == st.stage,
            None => started,
        };
        let forced = from == Some(st.stage.as_str()) || only == Some(st.stage.as_str());
        let reason = if forced {
            Some("selected with --from/--only".to_string())
        } else {
            needs_run(st)?
        };
        match (selected, reason) {
            (false, _) => {
                log(&format!("[{}/{total}] {}: not selected", i + 1, st.name));
                done.push((st.name.clone(), false));
            }
            (true, None) => {
                log(&format!(
                    "[{}/{total}] {}: up to date, skipped ({})",
                    i + 1,
                    st.name,
                    st.out.display()
                ));
                done.push((st.name.clone(), false));
            }
            (true, Some(why)) => {
                log(&format!("[{}/{total}] {}: running ({why})", i + 1, st.name));
                let _ = std::fs::remove_file(stamp_path(&st.out));
                exec(st)?;
                write_stamp(st)?;
                done.push((st.name.clone(), true));
            }
        }
    }
    Ok(done)
}

/// Every stage with a grid (or `each`), in plan order, with its points.
pub(crate) fn grid_stages(plan: &[PlannedStage]) -> Vec<(&str, Vec<&PlannedStage>)> {
    let mut stages: Vec<&str> = plan
        .iter()
        .filter(|p| !p.grid_point.is_empty())
        .map(|p| p.stage.as_str())
        .collect();
    stages.dedup();
    stages
        .into_iter()
        .map(|s| (s, plan.iter().filter(|p| p.stage == s).collect()))
        .collect()
}

/// For every stage with a grid whose runs left a `summary.json` (prep train), write one table
/// in the paper's format: a row per grid point with the mean and std over its repeats of max val
/// accuracy and min val loss, and the epochs run. Written as `OUT/grid-summary.{csv,md}` of the
/// stage. Returns the tables written.
pub fn write_grid_tables(plan: &[PlannedStage]) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (_, points) in grid_stages(plan) {
        let keys: Vec<String> = points[0]
            .grid_point
            .iter()
            .map(|(k, _)| k.clone())
            .collect();
        let mut csv = keys.join(",");
        csv.push_str(",repeats,max_val_accuracy_mean,max_val_accuracy_std,min_val_loss_mean,min_val_loss_std,epochs_run_mean,test_auc_mean,test_auc_std,test_auc_ci_lo,test_auc_ci_hi,run\n");
        let mut md = format!("| {} | repeats | max val accuracy | min val loss | epochs run | test AUC |\n|{}---|---|---|---|---|\n", keys.join(" | "), "---|".repeat(keys.len()));
        let mut rows = 0;
        for p in &points {
            let Ok(bytes) = std::fs::read(p.out.join("summary.json")) else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| Error::bad_input(p.out.join("summary.json"), e.to_string()))?;
            let f = |a: &str, b: &str| v[a][b].as_f64();
            let epochs: Vec<f64> = v["runs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["epochs_run"].as_f64())
                .collect();
            let ep = if epochs.is_empty() {
                f64::NAN
            } else {
                epochs.iter().sum::<f64>() / epochs.len() as f64
            };
            let num = |x: Option<f64>| x.map(|x| format!("{x:.6}")).unwrap_or_default();
            let values: Vec<&str> = p.grid_point.iter().map(|(_, v)| v.as_str()).collect();
            // Test AUC (prep train's test-metrics.json): mean ± std over repeats, and the first
            // run's DeLong CI, the one that counts for a single run.
            let ci = |k: usize| v["test_auc"]["ci_of_first_run"][k].as_f64();
            csv.push_str(&format!(
                "{},{},{},{},{},{},{:.1},{},{},{},{},{}\n",
                values.join(","),
                v["repeats"],
                num(f("max_val_accuracy", "mean")),
                num(f("max_val_accuracy", "std")),
                num(f("min_val_loss", "mean")),
                num(f("min_val_loss", "std")),
                ep,
                num(f("test_auc", "mean")),
                num(f("test_auc", "std")),
                num(ci(0)),
                num(ci(1)),
                p.out.display()
            ));
            let pm = |m: Option<f64>, s: Option<f64>| match (m, s) {
                (Some(m), Some(s)) => format!("{m:.4} ± {s:.4}"),
                (Some(m), None) => format!("{m:.4}"),
                _ => "-".into(),
            };
            let auc = match (f("test_auc", "mean"), f("test_auc", "std"), ci(0), ci(1)) {
                (Some(m), None, Some(lo), Some(hi)) => format!("{m:.4} [{lo:.4}, {hi:.4}]"),
                (m, s, _, _) => pm(m, s),
            };
            md.push_str(&format!(
                "| {} | {} | {} | {} | {:.1} | {} |\n",
                values.join(" | "),
                v["repeats"],
                pm(f("max_val_accuracy", "mean"), f("max_val_accuracy", "std")),
                pm(f("min_val_loss", "mean"), f("min_val_loss", "std")),
                ep,
                auc
            ));
            rows += 1;
        }
        if rows == 0 {
            continue;
        }
        let dir = points[0].base_out.clone();
        std::fs::create_dir_all(&dir).map_err(|e| Error::write(&dir, e))?;
        for (name, text) in [("grid-summary.csv", &csv), ("grid-summary.md", &md)] {
            let p = dir.join(name);
            std::fs::write(&p, text).map_err(|e| Error::write(&p, e))?;
            written.push(p);
        }
    }
    Ok(written)
}

/// Run one stage as a child `prep` process (the same executable), adding `--force` when an
/// earlier, stale output is in the way.
pub fn exec_child(st: &PlannedStage) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| Error::read("/proc/self/exe", e))?;
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(&st.argv);
    if st.out.exists() {
        cmd.arg("--force");
    }
    let status = cmd.status().map_err(|e| Error::read(&exe, e))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::StageFailed {
            stage: st.name.clone(),
            status: status.to_string(),
            argv: st.argv.join(" "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = r#"
[vars]
data = "d"
[[stage]]
name = "covid"
command = "filter"
out = "o/covid"
[stage.args]
source = "cohen"
dataset = "${data}/cohen"
require_pcr = true
label_others = false
[[stage]]
name = "train"
command = "train"
out = "o/runs"
[stage.args]
data = "${covid}"
[stage.grid]
lr = [0.01, 0.001]
epochs = [5, 10, 20]
"#;

    #[test]
    fn plans_vars_outputs_and_grids() {
        let p: PipelineFile = toml::from_str(P).unwrap();
        let plan = p
            .plan(&BTreeMap::from([("data".into(), "/x".into())]))
            .unwrap();
        assert_eq!(plan.len(), 1 + 6);
        assert_eq!(
            plan[0].argv,
            [
                "filter",
                "--dataset",
                "/x/cohen",
                "--require-pcr",
                "--source",
                "cohen",
                "--out",
                "o/covid"
            ]
        );
        assert_eq!(
            plan[1].argv,
            [
                "train",
                "--data",
                "o/covid",
                "--epochs",
                "5",
                "--lr",
                "0.01",
                "--out",
                "o/runs/epochs-5_lr-0.01"
            ]
        );
        assert_eq!(plan[1].name, "train[epochs=5,lr=0.01]");
        assert!(plan[1].inputs.contains(&PathBuf::from("o/covid")));
        assert!(p
            .plan(&BTreeMap::from([("nope".into(), "1".into())]))
            .is_err());
    }

    #[test]
    fn each_runs_a_stage_once_per_grid_point_of_an_earlier_one() {
        let p: PipelineFile = toml::from_str(
            r#"
[vars]
a = "bags/a"
b = "bags/b"
[[stage]]
name = "split"
command = "split"
out = "o/split"
[stage.args]
covid = ["${a}", "${b}"]
[stage.grid]
hold_out = ["${a}", "${b}"]
[[stage]]
name = "train"
command = "train"
out = "o/runs"
each = "split"
[stage.args]
data = "${split}"
[stage.grid]
lr = [0.1]
"#,
        )
        .unwrap();
        let plan = p.plan(&BTreeMap::new()).unwrap();
        assert_eq!(plan.len(), 4);
        assert_eq!(plan[0].out, PathBuf::from("o/split/hold_out-a"));
        assert!(plan[0]
            .argv
            .windows(2)
            .any(|w| w == ["--hold-out", "bags/a"]));
        assert_eq!(
            plan[0].grid_point,
            [("hold_out".to_string(), "a".to_string())]
        );
        assert_eq!(plan[3].out, PathBuf::from("o/runs/hold_out-b_lr-0.1"));
        assert!(plan[3]
            .argv
            .windows(2)
            .any(|w| w == ["--data", "o/split/hold_out-b"]));
        assert!(plan[3]
            .inputs
            .contains(&PathBuf::from("o/split/hold_out-b")));
        assert_eq!(plan[3].name, "train[hold_out=b,lr=0.1]");
        let bad: PipelineFile = toml::from_str(
            "[[stage]]\nname='s'\ncommand='split'\nout='o'\n[[stage]]\nname='t'\ncommand='train'\nout='r'\neach='s'\n",
        )
        .unwrap();
        assert!(matches!(bad.plan(&BTreeMap::new()), Err(Error::Usage(m)) if m.contains("each")));
    }

    #[test]
    fn unknown_variable_is_a_usage_error() {
        let p: PipelineFile =
            toml::from_str("[[stage]]\nname='a'\ncommand='filter'\nout='${missing}/x'\n").unwrap();
        assert!(matches!(p.plan(&BTreeMap::new()), Err(Error::Usage(m)) if m.contains("missing")));
    }
}
