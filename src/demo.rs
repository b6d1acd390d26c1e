//! `prep demo`: the embedded default. Generates a small synthetic dataset laid out like the real
//! sources, runs `pipelines/demo.toml` on it, verifies every bag and says where everything is.

use crate::error::{Error, Result};
use crate::manifest::verify_bag;
use crate::pipeline::{self, PipelineFile};
use crate::synth;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The demo pipeline, compiled in so `prep demo` works from any folder.
pub const DEMO_PIPELINE: &str = include_str!("../pipelines/demo.toml");

pub struct DemoOutcome {
    pub datasets: PathBuf,
    /// Every stage with its output and whether it ran (false: up to date, skipped).
    pub stages: Vec<(String, PathBuf, bool)>,
    pub report: PathBuf,
}

/// Generate the synthetic datasets under `out/datasets`, then run the demo pipeline with its
/// bags under `out/bags`, and verify every bag.
pub fn run(out: &Path, seed: u64, side: u32, log: &mut dyn FnMut(&str)) -> Result<DemoOutcome> {
    let datasets = out.join("datasets");
    let cohen = datasets.join("cohen");
    let normal = datasets.join("normal");
    // Regenerating gives the same bytes; skip it when the data is there so that mtimes (and so
    // the pipeline's input fingerprints) stay put and finished stages are not redone.
    let stamp = datasets.join(format!(".prep-demo-v3-seed{seed}-size{side}"));
    if !stamp.exists() {
        if datasets.exists() {
            std::fs::remove_dir_all(&datasets).map_err(|e| Error::write(&datasets, e))?;
        }
        synth::cohen_like(&cohen, seed, side)?;
        // The sources carry their real counterparts' signatures, so the first audit has
        // something to find: COVID figures of many sizes, mostly JPEG, washed-out scans (with a
        // real signal: bilateral peripheral opacities); controls of one size in a dark frame.
        use synth::SourceKind::{CovidFigures, FramedControls};
        synth::demo_source(
            &normal,
            seed,
            "normal",
            24,
            side,
            FramedControls { disease: 0.0 },
        )?;
        synth::demo_source(
            &datasets.join("covid-cohort"),
            seed,
            "cohort",
            48,
            side,
            CovidFigures,
        )?;
        synth::demo_source(
            &datasets.join("other-disease"),
            seed,
            "disease",
            24,
            side,
            FramedControls { disease: 0.6 },
        )?;
        std::fs::write(&stamp, b"").map_err(|e| Error::write(&stamp, e))?;
    }
    let pipeline: PipelineFile = toml::from_str(DEMO_PIPELINE)
        .map_err(|e| Error::bad_input("pipelines/demo.toml (built in)", e.to_string()))?;
    let sets = BTreeMap::from([
        ("data".to_string(), datasets.to_string_lossy().into_owned()),
        (
            "out".to_string(),
            out.join("bags").to_string_lossy().into_owned(),
        ),
        (
            "runs".to_string(),
            out.join("runs").to_string_lossy().into_owned(),
        ),
    ]);
    let plan = pipeline.plan(&sets)?;
    let mut exec = pipeline::exec_child;
    let done = pipeline::run(&plan, None, None, &mut exec, log)?;
    let mut stages = Vec::new();
    for (st, (_, ran)) in plan.iter().zip(done) {
        if st.out.join("bagit.txt").is_file() {
            verify_bag(&st.out)?.into_result(&st.out)?;
        }
        stages.push((st.name.clone(), st.out.clone(), ran));
    }
    // The auditor's page, for the last stage (the training run and its whole lineage).
    let report = out.join("report.html");
    if let Some((_, last, _)) = stages.last() {
        crate::report::write(last, &report)?;
    }
    Ok(DemoOutcome {
        datasets,
        stages,
        report,
    })
}
