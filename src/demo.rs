//! `prep demo`: the embedded default. Generates a small synthetic dataset laid out like the real
//! sources, runs the stages on it, verifies every bag and says where everything is.

use crate::error::{Error, Result};
use crate::filter::{self, FilterConfig, FilterOutcome};
use crate::manifest::verify_bag;
use crate::source::{Class, Encoding, Selection, SourceDesc};
use crate::synth;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub struct DemoOutcome {
    pub datasets: PathBuf,
    /// (stage name, outcome) in the order run.
    pub stages: Vec<(String, FilterOutcome)>,
}

/// Build the synthetic datasets under `out/datasets` and the bags under `out/bags`.
pub fn run(out: &Path, seed: u64, side: u32, force: bool, argv: &[String]) -> Result<DemoOutcome> {
    let datasets = out.join("datasets");
    let bags = out.join("bags");
    if bags.exists()
        && !force
        && std::fs::read_dir(&bags)
            .map_err(|e| Error::read(&bags, e))?
            .next()
            .is_some()
    {
        return Err(Error::OutputExists { path: bags });
    }
    let cohen = datasets.join("cohen");
    synth::cohen_like(&cohen, seed, side)?;
    let normal = datasets.join("normal");
    synth::image_folder(&normal, seed, "normal", 12, side, 0.0)?;

    let base = |source: &str, dataset: &Path, out: PathBuf| -> Result<FilterConfig> {
        let desc = SourceDesc::load(source)?;
        let metadata = desc.metadata_file.as_ref().map(|m| dataset.join(m));
        Ok(FilterConfig {
            source_arg: source.to_string(),
            source: desc,
            dataset: dataset.to_path_buf(),
            metadata,
            out,
            selection: Selection {
                keep: BTreeSet::new(),
                require_pcr: false,
                exclude_list: BTreeSet::new(),
                folder_label: None,
            },
            exclude_list_file: None,
            encoding: Encoding::Auto,
            link: false,
            force: true,
            argv: argv.to_vec(),
        })
    };
    let mut covid = base("cohen", &cohen, bags.join("covid"))?;
    covid.selection.keep.insert(Class::Covid);
    let mut others = base("cohen", &cohen, bags.join("cohen-others"))?;
    others
        .selection
        .keep
        .extend([Class::Healthy, Class::Diseased]);
    let mut healthy = base("folder", &normal, bags.join("normal"))?;
    healthy.selection.folder_label = Some("healthy".into());

    let mut stages = Vec::new();
    for (name, cfg) in [
        ("filter covid", covid),
        ("filter others", others),
        ("filter normal", healthy),
    ] {
        let outcome = filter::run(&cfg)?;
        verify_bag(&outcome.bag.path)?.into_result(&outcome.bag.path)?;
        stages.push((name.to_string(), outcome));
    }
    Ok(DemoOutcome { datasets, stages })
}
