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

/// `prep split`: either a check or a split configuration.
pub enum SplitMode {
    Check {
        target: std::path::PathBuf,
        rules: prep::split::Rules,
        near_duplicates: bool,
    },
    Split(prep::split::SplitConfig),
}

pub fn split_config(a: crate::cli::SplitArgs, argv: Vec<String>) -> Result<SplitMode> {
    use prep::split::{assign::Fine, ClassMode, Rules, SplitConfig};
    let rules = match &a.rules {
        Some(p) => Rules::load(p)?,
        None => Rules::builtin(),
    };
    let any_input = !(a.covid.is_empty() && a.healthy.is_empty() && a.diseased.is_empty());
    if let Some(target) = a.check {
        if any_input || a.out.is_some() || a.balanced {
            return Err(Error::Usage(
                "--check takes a bag or CSV only, not --covid/--healthy/--diseased/--out/--balanced".into(),
            ));
        }
        if !target.exists() {
            return Err(Error::bad_input(&target, "does not exist"));
        }
        return Ok(SplitMode::Check {
            target,
            rules,
            near_duplicates: !a.no_near_duplicates,
        });
    }
    let out = a
        .out
        .ok_or_else(|| Error::Usage("prep split needs --out BAG (or --check BAG)".into()))?;
    if !any_input {
        return Err(Error::Usage(
            "prep split needs input bags: --covid BAG... and --healthy/--diseased BAG...".into(),
        ));
    }
    let frac_ok = |f: f64| f.is_finite() && (0.0..=1.0).contains(&f);
    let test = a.test.unwrap_or(0.0);
    let val = a.val.unwrap_or(1.0 - a.train - test);
    for (n, f) in [("--train", a.train), ("--val", val), ("--test", test)] {
        if !frac_ok(f) {
            return Err(Error::Usage(format!(
                "{n} must be between 0 and 1 (got {f})"
            )));
        }
    }
    if a.train <= 0.0 || (a.train + val + test - 1.0).abs() > 1e-6 {
        return Err(Error::Usage(format!(
            "--train, --val and --test must add up to 1 with --train > 0 (got {} + {} + {})",
            a.train, val, test
        )));
    }
    let mut splits = vec![("train".to_string(), a.train), ("val".to_string(), val)];
    if a.test.is_some() {
        splits.push(("test".to_string(), test));
    }
    let ratio_given = argv
        .iter()
        .any(|x| x == "--ratio" || x.starts_with("--ratio="));
    if ratio_given && !a.balanced {
        return Err(Error::Usage(
            "--ratio applies with --balanced (without it every image is kept)".into(),
        ));
    }
    let balance = if a.balanced {
        let parts: Vec<&str> = a.ratio.split(':').collect();
        let nums: Option<Vec<u32>> = parts.iter().map(|p| p.trim().parse().ok()).collect();
        match nums {
            Some(v) if v.len() == 3 && v.iter().any(|&x| x > 0) && v.iter().all(|&x| x <= 1000) => {
                Some([v[0], v[1], v[2]])
            }
            _ => {
                return Err(Error::Usage(format!(
                    "--ratio {:?} must be three whole numbers covid:healthy:diseased, e.g. 2:1:1",
                    a.ratio
                )))
            }
        }
    } else {
        None
    };
    let mut inputs = Vec::new();
    for (class, bags) in [
        (Fine::Covid, &a.covid),
        (Fine::Healthy, &a.healthy),
        (Fine::Diseased, &a.diseased),
    ] {
        for b in bags {
            if !b.is_dir() {
                return Err(Error::bad_input(
                    b,
                    "input bag does not exist or is not a folder",
                ));
            }
            inputs.push((class, b.clone()));
        }
    }
    Ok(SplitMode::Split(SplitConfig {
        inputs,
        out,
        splits,
        balance,
        classes: match a.classes {
            crate::cli::ClassesArg::Two => ClassMode::Two,
            crate::cli::ClassesArg::Three => ClassMode::Three,
        },
        seed: a.seed,
        link: a.link,
        force: a.force,
        near_duplicates: !a.no_near_duplicates,
        rules,
        rules_file: a.rules,
        argv,
    }))
}
