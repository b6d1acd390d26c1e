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

#[cfg(feature = "train")]
pub fn device_choice(d: crate::cli::DeviceArg) -> prep::train::device::DeviceChoice {
    use crate::cli::DeviceArg;
    use prep::train::device::DeviceChoice;
    match d {
        DeviceArg::Auto => DeviceChoice::Auto,
        DeviceArg::Cpu => DeviceChoice::Cpu,
        DeviceArg::Cuda => DeviceChoice::Cuda,
    }
}

#[cfg(feature = "train")]
pub fn train_config(
    a: crate::cli::TrainArgs,
    argv: Vec<String>,
) -> Result<prep::train::run::TrainConfig> {
    use prep::train::optim::AdamConfig;
    use prep::train::{DenseNetConfig, Unfreeze};
    if !a.data.is_dir() {
        return Err(Error::bad_input(
            &a.data,
            "data bag does not exist or is not a folder",
        ));
    }
    if let Some(w) = &a.weights {
        if !w.is_file() {
            return Err(Error::bad_input(w, "weights file does not exist"));
        }
    }
    if let Some(arch) = &a.arch {
        DenseNetConfig::parse(arch, 2)?;
    }
    let positive_number = |name: &str, v: f64| {
        if v.is_finite() && v >= 0.0 {
            Ok(())
        } else {
            Err(Error::Usage(format!(
                "--{name} must be a non-negative number, not {v}"
            )))
        }
    };
    positive_number("lr", a.lr)?;
    positive_number("weight-decay", a.weight_decay)?;
    if a.lr == 0.0 {
        return Err(Error::Usage("--lr must be above 0".into()));
    }
    for (name, v) in [
        ("epochs", a.epochs),
        ("batch-size", a.batch_size),
        ("repeats", a.repeats),
        ("patience", a.patience),
    ] {
        if v == 0 {
            return Err(Error::Usage(format!("--{name} must be at least 1")));
        }
    }
    if a.image_size < 32 {
        return Err(Error::Usage(format!(
            "--image-size {} is too small: DenseNet needs at least 32 pixels",
            a.image_size
        )));
    }
    if a.cache_features && !a.no_augment {
        return Err(Error::Usage(
            "--cache-features computes the frozen stages once, which random augmentation forbids: add --no-augment (training then uses Resize + CenterCrop)".into(),
        ));
    }
    let unfreeze = Unfreeze::parse(&a.unfreeze);
    if a.cache_features && unfreeze == Unfreeze::All {
        return Err(Error::Usage(
            "--cache-features with --unfreeze all: nothing is frozen, nothing to cache".into(),
        ));
    }
    if let Some(t) = a.threads {
        if t < 1 {
            return Err(Error::Usage("--threads must be at least 1".into()));
        }
    }
    Ok(prep::train::run::TrainConfig {
        data: a.data,
        out: a.out,
        weights: a.weights,
        arch: a.arch,
        unfreeze,
        epochs: a.epochs,
        patience: a.patience,
        adam: AdamConfig {
            lr: a.lr,
            weight_decay: a.weight_decay,
            ..AdamConfig::default()
        },
        batch_size: a.batch_size,
        seed: a.seed,
        image_size: a.image_size,
        device: device_choice(a.device),
        cache_features: a.cache_features,
        augment: !a.no_augment,
        repeats: a.repeats,
        positive: a.positive,
        threads: a.threads,
        force: a.force,
        argv,
    })
}
