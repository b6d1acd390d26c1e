//! From parsed arguments to checked stage configurations, before any work starts.

use crate::cli::{FilterArgs, InpaintArgs};
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

/// A checked `prep inpaint` invocation: one image or a whole bag.
pub enum InpaintConfig {
    Single(prep::inpaint::stage::SingleConfig),
    Bag(prep::inpaint::stage::BagConfig),
}

pub fn inpaint_config(a: InpaintArgs, argv: Vec<String>) -> Result<InpaintConfig> {
    use prep::inpaint::stage::{BagConfig, Detect, SingleConfig};
    use prep::inpaint::Options;
    if !(a.radius >= 1.0 && a.radius <= 20.0) {
        return Err(Error::Usage(format!(
            "--radius {} must be between 1 and 20 px",
            a.radius
        )));
    }
    let opts = Options {
        method: a.method,
        radius: a.radius,
        seed: a.seed,
        keep_film: !a.replace_all,
    };
    if let Some(image) = a.image {
        let output = a
            .output
            .ok_or_else(|| Error::Usage("--image needs --output FILE.png".into()))?;
        let is_png =
            |p: &std::path::Path| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
        if !is_png(&output) || a.save_mask.as_deref().is_some_and(|p| !is_png(p)) {
            return Err(Error::Usage(
                "--output and --save-mask are written as PNG: give them a .png name".into(),
            ));
        }
        let detect = a.detect.unwrap_or(if a.mask.is_some() {
            Detect::None
        } else {
            Detect::Auto
        });
        if detect == Detect::None && a.mask.is_none() {
            return Err(Error::Usage(
                "nothing to inpaint: give --mask FILE, --detect auto, or both".into(),
            ));
        }
        if !image.is_file() {
            return Err(Error::bad_input(&image, "image file does not exist"));
        }
        if let Some(m) = &a.mask {
            if !m.is_file() {
                return Err(Error::bad_input(m, "mask file does not exist"));
            }
        }
        let n = a.bench_repeat.unwrap_or(1);
        if n == 0 || n > 1000 {
            return Err(Error::Usage("--bench-repeat must be 1..=1000".into()));
        }
        return Ok(InpaintConfig::Single(SingleConfig {
            image,
            mask: a.mask,
            output,
            detect,
            save_mask: a.save_mask,
            bench_repeat: n,
            opts,
        }));
    }
    let input = a
        .bag
        .ok_or_else(|| Error::Usage("give an input bag, or --image FILE".into()))?;
    let out = a
        .out
        .ok_or_else(|| Error::Usage("bag mode needs --out OUT_BAG".into()))?;
    if !input.is_dir() {
        return Err(Error::bad_input(
            &input,
            "input bag does not exist or is not a folder",
        ));
    }
    if let Some(m) = &a.masks {
        if !m.is_dir() {
            return Err(Error::bad_input(m, "masks folder does not exist"));
        }
    }
    let (ci, co) = (input.canonicalize().ok(), out.canonicalize().ok());
    if ci.is_some() && ci == co {
        return Err(Error::Usage("--out must differ from the input bag".into()));
    }
    let detect = a.detect.unwrap_or(Detect::Auto);
    if detect == Detect::None && a.masks.is_none() {
        return Err(Error::Usage(
            "--detect none needs --masks DIR (otherwise nothing would be inpainted)".into(),
        ));
    }
    Ok(InpaintConfig::Bag(BagConfig {
        input,
        out,
        detect,
        masks: a.masks,
        opts,
        force: a.force,
        argv,
    }))
}
