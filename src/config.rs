//! From parsed arguments to checked stage configurations, before any work starts.

use crate::cli::{FilterArgs, InpaintArgs};
use prep::filter::{check_label, FilterConfig};
use prep::source::{Class, Kind, Selection, SourceDesc};
use prep::{Error, Result};
use std::collections::BTreeSet;

pub fn filter_config(a: FilterArgs, argv: Vec<String>) -> Result<FilterConfig> {
    let source = SourceDesc::load(&a.source)?;
    let dicom = dicom_options(&a, &source)?;
    // A DICOM folder labelled from a tag needs no --label; its films' labels come from the tag.
    let tag_label = source.dicom.as_ref().and_then(|d| d.label_tag.clone());
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
            let label = match (&a.label, &tag_label) {
                (Some(_), Some(t)) => {
                    return Err(Error::Usage(format!(
                        "source {} labels films from their {t} tag: drop --label",
                        source.name
                    )))
                }
                (None, Some(t)) => format!("<{t}>"),
                (l, None) => {
                    let label = l
                        .clone()
                        .ok_or_else(|| Error::Usage("a folder source needs --label NAME".into()))?;
                    check_label(&label)?;
                    label
                }
            };
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
        dicom,
    })
}

/// The DICOM flags, checked against the source: they belong to DICOM sources only, which need
/// a salt.
fn dicom_options(a: &FilterArgs, source: &SourceDesc) -> Result<Option<prep::dicom::DicomOptions>> {
    use prep::dicom::{parse_tag, DicomOptions, Output, Salt};
    let Some(desc) = &source.dicom else {
        if a.dicom_output.is_some() || a.window.is_some() || a.salt_file.is_some() {
            return Err(Error::Usage(format!(
                "--dicom-output, --window and --salt-file are for DICOM sources (dicom-folder, rsna); {} is not one",
                source.name
            )));
        }
        return Ok(None);
    };
    if let Some(t) = &desc.label_tag {
        parse_tag(t)?;
    }
    let output = a.dicom_output.unwrap_or(Output::Window8);
    let window = match &a.window {
        None => None,
        Some(_) if output == Output::Raw16 => {
            return Err(Error::Usage(
                "--window applies to --dicom-output window8 (raw16 keeps the stored values)".into(),
            ))
        }
        Some(w) => {
            let parts: Vec<Option<f64>> = w.split(',').map(|p| p.trim().parse().ok()).collect();
            match parts.as_slice() {
                [Some(c), Some(w)] => {
                    prep::dicom::pixels::check_window(
                        *c,
                        *w,
                        prep::dicom::pixels::VoiFunction::Linear,
                    )
                    .map_err(|e| Error::Usage(format!("--window: {e}")))?;
                    Some((*c, *w))
                }
                _ => {
                    return Err(Error::Usage(format!(
                        "--window {w:?} must be CENTRE,WIDTH, e.g. 2048,4096"
                    )))
                }
            }
        }
    };
    let salt_file = a.salt_file.as_ref().ok_or_else(|| {
        Error::Usage(format!(
            "source {} reads DICOM films: pass --salt-file FILE (a private file of random bytes, e.g. `head -c 32 /dev/urandom | base64 > salt.txt`); patient ids are written only as hashes salted with it",
            source.name
        ))
    })?;
    Ok(Some(DicomOptions {
        output,
        window,
        salt: Salt::read(salt_file)?,
    }))
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
    for b in &a.external {
        if !b.is_dir() {
            return Err(Error::bad_input(
                b,
                "external bag does not exist or is not a folder",
            ));
        }
    }
    if let Some(target) = a.check {
        if any_input
            || a.out.is_some()
            || a.balanced
            || !a.external.is_empty()
            || !a.hold_out.is_empty()
        {
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
    // Rounded so that `--train 0.7` records val 0.3, not 0.30000000000000004.
    let val = a
        .val
        .unwrap_or(((1.0 - a.train - test) * 1e12).round() / 1e12);
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
    let mut external = a.external;
    hold_out(&a.hold_out, &mut inputs, &mut external)?;
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
        external,
    }))
}

/// `--hold-out BAG`: move an input bag (the same folder, however the path is written) from the
/// internal inputs to the external ones. A bag that is not an input, or holding out every bag
/// of the inputs, is a usage error.
fn hold_out(
    bags: &[std::path::PathBuf],
    inputs: &mut Vec<(prep::split::assign::Fine, std::path::PathBuf)>,
    external: &mut Vec<std::path::PathBuf>,
) -> Result<()> {
    let same = |a: &std::path::Path, b: &std::path::Path| match (a.canonicalize(), b.canonicalize())
    {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    };
    for b in bags {
        let before = inputs.len();
        inputs.retain(|(_, i)| !same(i, b));
        if inputs.len() == before {
            return Err(Error::Usage(format!(
                "--hold-out {}: not one of the --covid/--healthy/--diseased bags",
                b.display()
            )));
        }
        if !external.iter().any(|e| same(e, b)) {
            external.push(b.clone());
        }
    }
    if inputs.is_empty() {
        return Err(Error::Usage(
            "--hold-out leaves no internal bag to train on".into(),
        ));
    }
    Ok(())
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
    if a.fast_frozen && unfreeze == Unfreeze::All {
        return Err(Error::Usage(
            "--fast-frozen with --unfreeze all: nothing is frozen, nothing to speed up".into(),
        ));
    }
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
    let precision = prep::train::precision::Precision::parse(&a.precision)?;
    if matches!(a.device, crate::cli::DeviceArg::Cpu) {
        precision.check_device(tch::Device::Cpu)?;
    }
    if a.loader_threads == Some(0) {
        return Err(Error::Usage("--loader-threads must be at least 1".into()));
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
        fast_frozen: a.fast_frozen,
        augment: !a.no_augment,
        repeats: a.repeats,
        positive: a.positive,
        threads: a.threads,
        precision,
        channels_last: a.channels_last,
        loader: prep::train::loader::LoaderConfig {
            prefetch: a.prefetch,
            threads: a.loader_threads,
        },
        force: a.force,
        argv,
        occlude: occlusion(a.occlude),
    })
}

#[cfg(feature = "train")]
fn occlusion(o: crate::cli::OccludeArg) -> Option<prep::evaluate::occlude::Occlusion> {
    use crate::cli::OccludeArg;
    use prep::evaluate::occlude::Occlusion;
    match o {
        OccludeArg::None => None,
        OccludeArg::Lungs => Some(Occlusion::Lungs),
        OccludeArg::Border => Some(Occlusion::Border),
    }
}

/// The model, resolved device and options shared by `prep evaluate` and `prep explain`.
#[cfg(feature = "train")]
fn check_model_args(m: &crate::cli::ModelArgs) -> Result<()> {
    if !m.model.exists() {
        return Err(Error::bad_input(
            &m.model,
            "no such run folder or weights file",
        ));
    }
    if m.model.is_dir() && !m.model.join("model.json").is_file() {
        return Err(Error::bad_input(
            &m.model,
            "not a run folder of `prep train` (no model.json); give the run folder or a .safetensors file",
        ));
    }
    if let Some(s) = m.image_size {
        if s < 32 {
            return Err(Error::Usage(format!(
                "--image-size {s} is too small: DenseNet needs at least 32 pixels"
            )));
        }
    }
    Ok(())
}

#[cfg(feature = "train")]
pub fn evaluate_config(a: crate::cli::EvaluateArgs) -> Result<prep::evaluate::run::EvaluateConfig> {
    use crate::cli::SplitArg;
    use prep::evaluate::run::{EvaluateConfig, SplitChoice};
    check_model_args(&a.model)?;
    if !a.data.is_dir() {
        return Err(Error::bad_input(
            &a.data,
            "data bag does not exist or is not a folder",
        ));
    }
    if let Some(c) = &a.counterfactual {
        if !c.is_dir() {
            return Err(Error::bad_input(
                c,
                "counterfactual (original) bag does not exist or is not a folder",
            ));
        }
    }
    if a.batch_size == 0 {
        return Err(Error::Usage("--batch-size must be at least 1".into()));
    }
    if a.resamples < 100 {
        return Err(Error::Usage(format!(
            "--resamples {} is too few for a 95 % interval: use at least 100 (default 2000)",
            a.resamples
        )));
    }
    Ok(EvaluateConfig {
        classes: a.model.classes,
        image_size: a.model.image_size,
        positive: a.model.positive,
        occlude: a.model.occlude.map(occlusion),
        device: device_choice(a.model.device),
        force: a.model.force,
        model: a.model.model,
        data: a.data,
        split: match a.split {
            SplitArg::Test => SplitChoice::Test,
            SplitArg::Val => SplitChoice::Val,
            SplitArg::All => SplitChoice::All,
        },
        out: a.out,
        counterfactual: a.counterfactual,
        explain: a.explain,
        batch_size: a.batch_size,
        seed: a.seed,
        resamples: a.resamples,
    })
}

/// `prep explain`: (model options, images, out), checked.
#[cfg(feature = "train")]
pub fn explain_config(a: &crate::cli::ExplainArgs) -> Result<()> {
    check_model_args(&a.model)?;
    for i in &a.images {
        if !i.is_file() {
            return Err(Error::bad_input(i, "image file does not exist"));
        }
    }
    Ok(())
}

#[cfg(feature = "train")]
pub fn occlusion_choice(
    o: Option<crate::cli::OccludeArg>,
) -> Option<Option<prep::evaluate::occlude::Occlusion>> {
    o.map(occlusion)
}

/// A checked `prep inpaint` invocation: one image or a whole bag.
pub enum InpaintConfig {
    Single(prep::inpaint::stage::SingleConfig),
    Bag(prep::inpaint::stage::BagConfig),
    Measure(prep::inpaint::annotations::MeasureConfig),
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
    if let Some(annotations) = a.annotations {
        return measure_config(annotations, a.root, a.films, a.worst).map(InpaintConfig::Measure);
    }
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
    if detect == Detect::None && a.masks.is_none() && !a.source_watermarks {
        return Err(Error::Usage(
            "--detect none needs --masks DIR or --source-watermarks (otherwise nothing would be inpainted)".into(),
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
        source_watermarks: a.source_watermarks,
    }))
}

/// `prep inpaint --annotations CSV --root DIR [--films FILE]`: files checked before any work.
fn measure_config(
    annotations: std::path::PathBuf,
    root: Option<std::path::PathBuf>,
    films: Option<std::path::PathBuf>,
    worst: usize,
) -> Result<prep::inpaint::annotations::MeasureConfig> {
    let root = root.ok_or_else(|| Error::Usage("--annotations needs --root DIR".into()))?;
    if !annotations.is_file() {
        return Err(Error::bad_input(&annotations, "box file does not exist"));
    }
    if !root.is_dir() {
        return Err(Error::bad_input(&root, "root is not a folder"));
    }
    if let Some(f) = &films {
        if !f.is_file() {
            return Err(Error::bad_input(f, "film list does not exist"));
        }
    }
    Ok(prep::inpaint::annotations::MeasureConfig {
        annotations,
        root,
        films,
        worst,
    })
}

/// A size such as `256MB`, `64MiB` or `1000000`.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "mb" | "m" => 1_000_000,
        "gb" | "g" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        u => return Err(Error::Usage(format!("size {s:?}: unknown unit {u:?}"))),
    };
    let v: f64 = num.parse().map_err(|_| {
        Error::Usage(format!(
            "size {s:?}: expected a number with an optional unit"
        ))
    })?;
    let bytes = (v * mult as f64).round();
    if !(bytes >= 1.0 && bytes < 1e18) {
        return Err(Error::Usage(format!("size {s:?} must be at least 1 byte")));
    }
    Ok(bytes as u64)
}

pub fn export_config(
    a: crate::cli::ExportArgs,
    argv: Vec<String>,
) -> Result<prep::export::ExportConfig> {
    if a.min_shards == 0 {
        return Err(Error::Usage("--min-shards must be at least 1".into()));
    }
    if !a.bag.is_dir() {
        return Err(Error::Usage(format!(
            "{} is not a bag folder",
            a.bag.display()
        )));
    }
    Ok(prep::export::ExportConfig {
        bag: a.bag,
        out: a.out,
        format: match a.format {
            crate::cli::ExportFormatArg::Webdataset => prep::export::Format::Webdataset,
        },
        shard_size: parse_size(&a.shard_size)?,
        min_shards: a.min_shards,
        seed: a.seed,
        force: a.force,
        argv,
    })
}

pub fn audit_config(
    a: crate::cli::AuditArgs,
    argv: Vec<String>,
) -> Result<prep::audit::AuditConfig> {
    use prep::audit::{AuditConfig, Rules};
    let rules = match &a.rules {
        Some(p) => Rules::load(p)?,
        None => Rules::builtin(),
    };
    for b in &a.bags {
        if !b.is_dir() {
            return Err(Error::bad_input(b, "bag does not exist or is not a folder"));
        }
        let (cb, co) = (b.canonicalize().ok(), a.out.canonicalize().ok());
        if cb.is_some() && cb == co {
            return Err(Error::Usage(
                "--out must differ from the audited bags".into(),
            ));
        }
    }
    if a.positive.trim().is_empty() {
        return Err(Error::Usage("--positive must name a class".into()));
    }
    Ok(AuditConfig {
        bags: a.bags,
        out: a.out,
        positive: a.positive,
        seed: a.seed,
        rules,
        rules_file: a.rules,
        force: a.force,
        argv,
    })
}

pub fn harmonize_config(
    a: crate::cli::HarmonizeArgs,
    argv: Vec<String>,
) -> Result<prep::harmonize::HarmonizeConfig> {
    for b in &a.bags {
        if !b.is_dir() {
            return Err(Error::bad_input(
                b,
                "input bag does not exist or is not a folder",
            ));
        }
        let (cb, co) = (b.canonicalize().ok(), a.out.canonicalize().ok());
        if cb.is_some() && cb == co {
            return Err(Error::Usage("--out must differ from the input bags".into()));
        }
    }
    let mut seen = BTreeSet::new();
    for b in &a.bags {
        if !seen.insert(b.canonicalize().unwrap_or_else(|_| b.clone())) {
            return Err(Error::Usage(format!("bag {} is given twice", b.display())));
        }
    }
    Ok(prep::harmonize::HarmonizeConfig {
        inputs: a.bags,
        out: a.out,
        size: a.size,
        fit: a.fit,
        intensity: a.intensity,
        crop_borders: !a.no_crop_borders,
        force: a.force,
        argv,
    })
}
