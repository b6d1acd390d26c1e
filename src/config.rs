//! From parsed arguments to checked stage configurations, before any work starts.

use crate::cli::FilterArgs;
use prep::filter::{check_label, FilterConfig};
use prep::source::{Class, Kind, Selection, SourceDesc};
use prep::{Error, Result};
use std::collections::BTreeSet;

pub fn filter_config(a: FilterArgs, argv: Vec<String>) -> Result<FilterConfig> {
    let source = SourceDesc::load(&a.source)?;
    if !a.dataset.is_dir() {
        return Err(Error::bad_input(
            &a.dataset,
            "dataset folder does not exist or is not a folder",
        ));
    }
    let label_flags = a.label_others || a.label_healthy || a.label_diseased;
    let (keep, folder_label, metadata) = match source.kind {
        Kind::Folder => {
            if label_flags || a.require_pcr || a.metadata.is_some() {
                return Err(Error::Usage(
                    "a folder source takes --label NAME, not --label-others/--label-healthy/--label-diseased/--require-pcr/--metadata".into(),
                ));
            }
            let label = a
                .label
                .clone()
                .ok_or_else(|| Error::Usage("a folder source needs --label NAME".into()))?;
            check_label(&label)?;
            (BTreeSet::new(), Some(label), None)
        }
        Kind::Table => {
            if a.label.is_some() {
                return Err(Error::Usage(format!(
                    "--label is for folder sources; {} labels images from its metadata (use --label-others, --label-healthy or --label-diseased)",
                    source.name
                )));
            }
            let mut keep = BTreeSet::new();
            if a.label_others || a.label_healthy {
                keep.insert(Class::Healthy);
            }
            if a.label_others || a.label_diseased {
                keep.insert(Class::Diseased);
            }
            if keep.is_empty() {
                if source.findings.covid.is_empty() {
                    return Err(Error::Usage(format!(
                        "source {} has no COVID-19 label: choose --label-healthy, --label-diseased or --label-others",
                        source.name
                    )));
                }
                keep.insert(Class::Covid);
            }
            if a.require_pcr && (source.columns.pcr.is_none() || !keep.contains(&Class::Covid)) {
                return Err(Error::Usage(format!(
                    "--require-pcr applies to COVID-19 images of a source with an RT-PCR column ({} {})",
                    source.name,
                    if source.columns.pcr.is_none() { "has none" } else { "keeps no COVID-19 images here" }
                )));
            }
            let metadata = match &a.metadata {
                Some(m) => m.clone(),
                None => a
                    .dataset
                    .join(source.metadata_file.as_deref().ok_or_else(|| {
                        Error::Usage(format!(
                            "source {} names no default metadata file: pass --metadata",
                            source.name
                        ))
                    })?),
            };
            if !metadata.is_file() {
                return Err(Error::bad_input(&metadata, "metadata file does not exist"));
            }
            (keep, None, Some(metadata))
        }
    };
    let exclude_list = match &a.exclude_list {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| Error::read(p, e))?;
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from)
                .collect()
        }
        None => BTreeSet::new(),
    };
    Ok(FilterConfig {
        source_arg: a.source,
        source,
        dataset: a.dataset,
        metadata,
        out: a.out,
        selection: Selection {
            keep,
            require_pcr: a.require_pcr,
            exclude_list,
            folder_label,
        },
        exclude_list_file: a.exclude_list,
        encoding: a.encoding,
        link: a.link,
        force: a.force,
        argv,
    })
}

/// `--set NAME=VALUE` pairs.
pub fn parse_sets(sets: &[String]) -> Result<std::collections::BTreeMap<String, String>> {
    sets.iter()
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| Error::Usage(format!("--set {s:?}: expected NAME=VALUE")))
        })
        .collect()
}
