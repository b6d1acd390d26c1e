//! Command-line syntax. Doc comments here are the `--help` text.

use clap::{Args, Parser, Subcommand};
use prep::source::Encoding;
use std::path::PathBuf;

/// Turn messy public chest X-ray collections into audited, leak-free training sets.
///
/// Every stage writes a BagIt bag (data/records.csv, data/excluded.csv, data/provenance.json,
/// croissant.json) that `prep verify` can check. Exit codes: 0 success, 1 internal or write
/// error, 2 usage error, 3 bad input, 4 verification failed, 5 `audit --fail-on confounded`
/// found the set confounded.
#[derive(Debug, Parser)]
#[command(name = "prep", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pick the images a study wants from one source and write them, with every exclusion and
    /// its reason, into a bag.
    ///
    /// Examples:
    ///   prep filter --source cohen --dataset covid-chestxray-dataset --out bags/covid
    ///   prep filter --source cohen --dataset covid-chestxray-dataset --label-others --out bags/others
    ///   prep filter --source nih --dataset chestxray14 --metadata Data_Entry_2017.csv --label-diseased --out bags/nih
    ///   prep filter --source folder --dataset chest_xray/train/NORMAL --label healthy --out bags/normal
    ///   prep filter --source rsna --dataset rsna-pneumonia --label-others --salt-file ~/salt.txt --out bags/rsna
    ///   prep filter --source dicom-folder --dataset export/ --label healthy --salt-file ~/salt.txt --dicom-output raw16 --out bags/pacs
    Filter(FilterArgs),
    /// Split bags into leak-free train/val(/test) sets: whole patient groups per split
    /// (patients, aliases, exact and near duplicates, cross-references), optionally balanced
    /// to a class ratio; written as a bag in torchvision ImageFolder layout.
    ///
    /// Examples:
    ///   prep split --balanced --covid bags/covid --healthy bags/others --diseased bags/others --out bags/split
    ///   prep split --covid bags/covid --healthy bags/normal --diseased bags/nih --train 0.7 --val 0.15 --test 0.15 --classes three --out bags/split3
    ///   prep split --check bags/split
    #[command(verbatim_doc_comment)]
    Split(SplitArgs),
    /// Re-hash a bag and report every missing, extra or altered file by name (exit 4 if any).
    Verify(VerifyArgs),
    /// Export a split bag for PyTorch's own data engines: WebDataset shards per split
    /// (`{split}-000000.tar`, uncompressed ustar, samples shuffled with the seed; each sample
    /// `<key>.png|jpg` with the bag's bytes unchanged, `<key>.cls`, `<key>.json` with the real
    /// id), a wids index `{split}.json` per split, all in a bag of its own.
    ///
    /// Read the shards with `webdataset`, `wids` or `datasets.load_dataset("OUT/data")` (the
    /// export holds a dataset card), or train on them with scripts/train_ddp.py under torchrun.
    ///
    /// Examples:
    ///   prep export bags/split --format webdataset --out bags/shards
    ///   prep export bags/split --format webdataset --shard-size 64MB --min-shards 8 --out bags/shards
    #[command(verbatim_doc_comment)]
    Export(ExportArgs),
    /// Does the set teach the disease, or the source? Design tables (label x source, view, sex,
    /// age band, with Cramer's V) and a trivial-feature probe: a classifier that sees only file
    /// size and format, intensity statistics, the border and black/white shares, and predicts
    /// the label, cross-validated by patient group. Verdict `confounded` when the probe's AUC
    /// 95 % CI lower end reaches the rule (0.75). Writes DIR/audit.json, audit.md,
    /// features.csv and plots. Exit 5 with --fail-on confounded when confounded.
    ///
    /// Examples:
    ///   prep audit bags/split --out audits/split
    ///   prep audit bags/covid-clean bags/nih-clean --out audits/sources --fail-on confounded
    #[command(verbatim_doc_comment)]
    Audit(AuditArgs),
    /// Take away what the audit's probe can use: every image to one size (aspect kept by
    /// centre crop or padding), 8-bit grey PNG, film borders and black frames cropped by
    /// detection, intensity normalised (histogram equalisation or CLAHE). All recorded per
    /// image in records.csv. Several input bags are pooled into one (labels kept), so a split
    /// can take its classes from it.
    ///
    /// Examples:
    ///   prep harmonize bags/covid-clean bags/nih-clean --out bags/harmonized
    ///   prep harmonize bags/split-input --out bags/h --size 512 --fit pad --intensity clahe
    #[command(verbatim_doc_comment)]
    Harmonize(HarmonizeArgs),
    /// Show how prep was built and what libtorch sees (threads, CUDA devices).
    Doctor,
    /// Find burned-in annotations (text, L/R markers, arrows, label boxes) and erase them by
    /// inpainting; every pixel outside the mask is kept bit-for-bit.
    ///
    /// Bag mode writes a new bag with the cleaned images (same bit depth and colour type, PNG
    /// when a pixel changed), the masks used under data/masks/, and per-image mask statistics
    /// in records.csv; images with nothing to erase are passed through byte-identical.
    /// Single-image mode is for trying masks and for benchmarks.
    ///
    /// Examples:
    ///   prep inpaint bags/covid --out bags/covid-clean
    ///   prep inpaint bags/covid --out bags/covid-clean --masks my-masks/ --method telea
    ///   prep inpaint --image x.png --detect auto --output clean.png --save-mask mask.png
    ///   prep inpaint --image x.png --mask m.png --output clean.png --bench-repeat 6
    Inpaint(InpaintArgs),
    /// Write one self-contained HTML page for an auditor: the lineage of bags with their
    /// hashes, commands and parameters, exclusions per reason, class and patient counts per
    /// split, the leakage check, before/after/mask thumbnails of inpainted images, training
    /// curves, confusion matrix and repeats.
    Report(ReportArgs),
    /// Run a pipeline file: every stage in order, skipping those whose output is current.
    ///
    /// A stage is skipped when its command line, the prep build and the fingerprints of its
    /// inputs match the stamp left beside its output when it last finished, and its output is
    /// unchanged (bags are re-verified). So an interrupted run resumes where it stopped, and a
    /// changed parameter re-runs that stage and the stages downstream of it.
    #[command(after_help = "Examples:
  prep run pipelines/demo.toml
  prep run pipelines/perez-bir-2020.toml --set cohen=/data/covid-chestxray-dataset
  prep run pipelines/demo.toml --from split      # re-run split and everything after it
  prep run pipelines/demo.toml --only inpaint --dry-run")]
    Run(RunArgs),
    /// Generate a small synthetic dataset laid out like the real sources (with their traps),
    /// run pipelines/demo.toml on it, verify every bag, and print where everything is.
    ///
    /// Running it again re-runs only what changed (like `prep run`).
    Demo(DemoArgs),
    /// Fine-tune a DenseNet-121 (CheXNet) classifier on a split bag and write metrics, plots,
    /// the chosen weights and a model card.
    ///
    /// The bag holds the ImageFolder layout `prep split` writes (data/train/<class>/...,
    /// data/val/<class>/..., optional data/test/<class>/...) and is verified first.
    /// Defaults are the paper's: Adam lr 1e-3, weight decay 1e-4, 20 epochs, patience 10,
    /// only denseblock4 and the classifier trainable (frozen BatchNorm stays in eval mode).
    ///
    /// Examples:
    ///   prep train --data bags/split --weights chexnet.safetensors --out runs/chexnet
    ///   prep train --data bags/split --weights chexnet.safetensors --repeats 5 --out runs/table2
    ///   prep train --data bags/split --weights chexnet.safetensors --unfreeze none --no-augment --cache-features --out runs/head
    #[cfg(feature = "train")]
    #[command(verbatim_doc_comment)]
    Train(TrainArgs),
    /// Classify images with a trained model (the validation transform), printing class
    /// probabilities.
    ///
    /// Examples:
    ///   prep predict --model runs/chexnet xray1.png xray2.jpg
    ///   prep predict --model best.safetensors --classes covid,no-covid --json xray.png
    #[cfg(feature = "train")]
    #[command(verbatim_doc_comment)]
    Predict(PredictArgs),
    /// Evaluate a trained model on a split bag the way a clinical-ML reviewer asks: per-image
    /// predictions, AUC with DeLong and patient-grouped bootstrap 95 % CIs, sensitivity and
    /// specificity (Wilson CIs) at thresholds chosen on val (Youden; 0.90 and 0.95 sensitivity)
    /// applied unchanged, expected calibration error with a reliability diagram, all per source
    /// and per view, internal vs external sources side by side.
    ///
    /// Writes DIR/predictions.csv, metrics.json, metrics.md, reliability.png
    /// (and counterfactual.csv with --counterfactual).
    ///
    /// Examples:
    ///   prep evaluate --model runs/chexnet --data bags/split --out eval/test
    ///   prep evaluate --model runs/chexnet --data bags/split --split val --out eval/val
    ///   prep evaluate --model runs/chexnet --data bags/split --occlude lungs --out eval/no-lungs
    ///   prep evaluate --model runs/chexnet --data bags/split --counterfactual bags/covid --out eval/cf
    #[cfg(feature = "train")]
    #[command(verbatim_doc_comment)]
    Evaluate(EvaluateArgs),
    /// Grad-CAM of the positive class at features.norm5 for each image: DIR/<stem>.cam.json
    /// (the map before upsampling, ReLU'd and normalised to maximum 1, the class probability,
    /// the share inside the lung field) and DIR/<stem>.cam.png (an overlay on the network input).
    ///
    /// Examples:
    ///   prep explain --model runs/chexnet xray1.png xray2.png --out cams
    #[cfg(feature = "train")]
    #[command(verbatim_doc_comment)]
    Explain(ExplainArgs),
}

/// `--occlude`: a shortcut control applied to every film before any transform.
#[cfg(feature = "train")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OccludeArg {
    /// No occlusion.
    None,
    /// Black out the central lung-field box (76 % x 84 % of the film).
    Lungs,
    /// Keep only the lung-field box; black out the border around it.
    Border,
}

#[cfg(feature = "train")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SplitArg {
    Test,
    Val,
    All,
}

#[cfg(feature = "train")]
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// A run folder from `prep train` (model.json + best.safetensors) or a weights file.
    #[arg(long, value_name = "RUN|FILE.safetensors")]
    pub model: PathBuf,

    /// Class names in output order, for a bare weights file [evaluate: the bag's classes].
    #[arg(long, value_delimiter = ',', value_name = "A,B,..")]
    pub classes: Option<Vec<String>>,

    /// Input side for a bare weights file [default: the run's, or 224].
    #[arg(long)]
    pub image_size: Option<u32>,

    /// The positive class [default: the run's positive class, or the first class].
    #[arg(long, value_name = "CLASS")]
    pub positive: Option<String>,

    /// Occlude every film: lungs (black central box), border (only the box kept), none
    /// [default: as the model was trained].
    #[arg(long, value_enum)]
    pub occlude: Option<OccludeArg>,

    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceArg,

    /// Replace an existing output folder.
    #[arg(long)]
    pub force: bool,
}

#[cfg(feature = "train")]
#[derive(Debug, Args)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Split bag to evaluate on (records.csv with split and class columns).
    #[arg(long, value_name = "BAG")]
    pub data: PathBuf,

    /// Which images are scored; thresholds always come from val.
    #[arg(long, value_enum, default_value = "test")]
    pub split: SplitArg,

    /// Output folder (refused if it exists and is not empty, unless --force).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// The bag before inpainting: predict each image before and after and report the flip
    /// rate (at the Youden threshold chosen on val, and at 0.5) and the mean |Δp| (matched by
    /// source and id).
    #[arg(long, value_name = "ORIGINAL_BAG")]
    pub counterfactual: Option<PathBuf>,

    /// Grad-CAM of every evaluated image (as prep explain): DIR/explain/cams.csv ranks them
    /// worst error first (largest |label - p|) with each one's share of attribution inside the
    /// lung field, and overlays of the N worst go beside it; the report shows them.
    #[arg(long, value_name = "N")]
    pub explain: Option<usize>,

    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,

    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Bootstrap resamples.
    #[arg(long, default_value_t = 2000)]
    pub resamples: usize,
}

#[cfg(feature = "train")]
#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Output folder (refused if it exists and is not empty, unless --force).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Images to explain.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Source description: a built-in name (cohen, nih, folder, dicom-folder, rsna) or a path to a .toml file
    /// laid out like those in metadata/.
    #[arg(long, value_name = "NAME|FILE.toml")]
    pub source: String,

    /// Dataset folder; image paths in the metadata are relative to it, and nothing outside it
    /// is ever read.
    #[arg(long, value_name = "DIR")]
    pub dataset: PathBuf,

    /// Metadata table [default: DIR/<the source's metadata file>, e.g. DIR/metadata.csv].
    #[arg(long, value_name = "CSV")]
    pub metadata: Option<PathBuf>,

    /// Output bag folder (refused if it exists and is not empty, unless --force).
    #[arg(long, value_name = "BAG")]
    pub out: PathBuf,

    /// Keep COVID-19 images only when RT-PCR positive is `Y`.
    #[arg(long)]
    pub require_pcr: bool,

    /// Keep the non-COVID images instead, labelled healthy (No Finding) or diseased; unlabelled
    /// findings (todo, Unknown) are dropped, never used as negatives.
    #[arg(long)]
    pub label_others: bool,

    /// Keep the healthy (No Finding) images only.
    #[arg(long)]
    pub label_healthy: bool,

    /// Keep the diseased (any finding) images only.
    #[arg(long)]
    pub label_diseased: bool,

    /// Label for every image of a folder source (letters, digits, '-', '_').
    #[arg(long, value_name = "NAME")]
    pub label: Option<String>,

    /// File of image names to drop, one per line (e.g. the images CheXNet was trained on).
    #[arg(long, value_name = "FILE")]
    pub exclude_list: Option<PathBuf>,

    /// How to read the metadata file's text.
    #[arg(long, value_enum, default_value = "auto")]
    pub encoding: Encoding,

    /// Hard-link images into the bag where the filesystem allows (copies otherwise).
    #[arg(long)]
    pub link: bool,

    /// Replace an existing output bag.
    #[arg(long)]
    pub force: bool,

    /// DICOM sources (dicom-folder, rsna): the PNG each film becomes. window8: 8-bit after the
    /// rescale and the film's first VOI LUT or window (or --window), MONOCHROME1 inverted;
    /// raw16: the stored values, lossless 16-bit (MONOCHROME1 inverted, left-aligned) [default:
    /// window8].
    #[arg(long, value_enum, value_name = "FORM")]
    pub dicom_output: Option<prep::dicom::Output>,

    /// DICOM sources, window8: window centre and width replacing the films' own VOI (LINEAR),
    /// in modality units, e.g. --window 2048,4096.
    #[arg(long, value_name = "C,W", allow_hyphen_values = true)]
    pub window: Option<String>,

    /// DICOM sources: a private file of at least 16 random bytes; patient ids (and, for sources
    /// whose paths identify patients, file paths) are written only as hashes salted with it.
    /// Keep it outside the bag and reuse it for every bag of a study so `prep split` groups a
    /// patient's films. Make one with: head -c 32 /dev/urandom | base64 > salt.txt
    #[arg(long, value_name = "FILE")]
    pub salt_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Labelled bags to audit together: a split bag (its `class` column is the target), or
    /// the bags a split will be made from (their `label` column).
    #[arg(value_name = "BAG", required = true)]
    pub bags: Vec<PathBuf>,

    /// Output folder for audit.json, audit.md, features.csv and the plots (refused if it
    /// exists and is not empty, unless --force).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// The class the probe tells from the rest.
    #[arg(long, default_value = "covid", value_name = "CLASS")]
    pub positive: String,

    /// Seed of the folds and the bootstrap.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Verdict thresholds and probe settings [default: the built-in metadata/audit-rules.toml].
    #[arg(long, value_name = "FILE.toml")]
    pub rules: Option<PathBuf>,

    /// Exit with code 5 when the verdict is this (for CI and pipelines).
    #[arg(long, value_enum, value_name = "VERDICT")]
    pub fail_on: Option<FailOn>,

    /// Replace an existing output folder.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailOn {
    Confounded,
}

#[derive(Debug, Args)]
pub struct HarmonizeArgs {
    /// Input bags (verified first; never modified). Several are pooled into one output bag.
    #[arg(value_name = "BAG", required = true)]
    pub bags: Vec<PathBuf>,

    /// Output bag (refused if it exists and is not empty, unless --force).
    #[arg(long, value_name = "BAG")]
    pub out: PathBuf,

    /// Side of the square output images, in pixels.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(16..=8192))]
    pub size: u32,

    /// How the aspect ratio is kept: crop = centre crop to a square (nothing added), pad =
    /// pad to a square with the image's own border level (nothing lost).
    #[arg(long, value_enum, default_value = "crop")]
    pub fit: prep::harmonize::Fit,

    /// Intensity normalisation: hist = exact histogram equalisation (the same flat histogram for
    /// every image), clahe = contrast-limited
    /// adaptive equalisation (8x8 tiles), none.
    #[arg(long, value_enum, default_value = "hist")]
    pub intensity: prep::harmonize::Intensity,

    /// Keep film borders and black frames (by default they are found and cropped).
    #[arg(long)]
    pub no_crop_borders: bool,

    /// Replace an existing output bag.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The bag folder to check.
    #[arg(value_name = "BAG")]
    pub bag: PathBuf,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Folder for the synthetic datasets (datasets/) and the bags (bags/).
    #[arg(long, value_name = "DIR", default_value = "demo-out")]
    pub out: PathBuf,

    /// Seed of the synthetic data.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,

    /// Side of the synthetic images in pixels.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(32..=4096))]
    pub size: u32,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The pipeline file (see pipelines/).
    #[arg(value_name = "PIPELINE.toml")]
    pub pipeline: PathBuf,

    /// Set a pipeline variable, e.g. --set cohen=/data/covid-chestxray-dataset (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub sets: Vec<String>,

    /// Run this stage (whatever its state) and every stage after it.
    #[arg(long, value_name = "STAGE", conflicts_with = "only")]
    pub from: Option<String>,

    /// Run only this stage (whatever its state).
    #[arg(long, value_name = "STAGE")]
    pub only: Option<String>,

    /// Print the plan and what would run, run nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A bag, or a training run folder (its data bag and that bag's lineage are followed).
    #[arg(value_name = "BAG|RUN")]
    pub target: PathBuf,

    /// The HTML file to write.
    #[arg(long, value_name = "FILE.html", default_value = "report.html")]
    pub out: PathBuf,

    /// Ground-truth boxes of the films (CSV `image,x0,y0,x1,y1,class`, as for
    /// `prep inpaint --annotations`): the inpaint gallery then shows, per source, the three worst
    /// films by the annotation measure (boxes are matched to records by file name).
    #[arg(long, value_name = "CSV")]
    pub annotations: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SplitArgs {
    /// Bags of COVID-19 images (a bag with several labels gives its `covid` records).
    #[arg(long, value_name = "BAG", num_args = 1.., action = clap::ArgAction::Append)]
    pub covid: Vec<PathBuf>,

    /// Bags of healthy images (a bag from `filter --label-others` gives its `healthy` records).
    #[arg(long, value_name = "BAG", num_args = 1.., action = clap::ArgAction::Append)]
    pub healthy: Vec<PathBuf>,

    /// Bags of other-disease images (a bag from `filter --label-others` gives its `diseased`
    /// records).
    #[arg(long, value_name = "BAG", num_args = 1.., action = clap::ArgAction::Append)]
    pub diseased: Vec<PathBuf>,

    /// Output bag folder (refused if it exists and is not empty, unless --force).
    #[arg(long, value_name = "BAG")]
    pub out: Option<PathBuf>,

    /// Fraction of each class for training.
    #[arg(long, value_name = "F", default_value_t = 0.7)]
    pub train: f64,

    /// Fraction for validation [default: what train and test leave].
    #[arg(long, value_name = "F")]
    pub val: Option<f64>,

    /// Fraction for a test split [default: none].
    #[arg(long, value_name = "F")]
    pub test: Option<f64>,

    /// Down-sample to the largest set meeting --ratio exactly, dropping whole patients where
    /// possible (what was left out goes to excluded.csv). Without it everything is kept and the
    /// class proportions are reported.
    #[arg(long)]
    pub balanced: bool,

    /// Class ratio covid:healthy:diseased for --balanced (2:1:1 = as many COVID images as
    /// healthy and diseased together, the paper's best; 1:1:1 its other composition).
    #[arg(long, value_name = "C:H:D", default_value = "2:1:1")]
    pub ratio: String,

    /// Class folders: `two` = covid / no-covid, `three` = covid / healthy / diseased.
    #[arg(long, value_enum, default_value = "two")]
    pub classes: ClassesArg,

    /// Seed of every choice (balancing, assignment); same inputs and seed give the same bag.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Hard-link images into the bag where the filesystem allows (copies otherwise).
    #[arg(long)]
    pub link: bool,

    /// Replace an existing output bag.
    #[arg(long)]
    pub force: bool,

    /// Skip perceptual near-duplicate detection (faster; exact duplicates are still found).
    #[arg(long)]
    pub no_near_duplicates: bool,

    /// Grouping rules (near-duplicate thresholds, cross-references) [default: the built-in
    /// metadata/split-rules.toml].
    #[arg(long, value_name = "FILE.toml")]
    pub rules: Option<PathBuf>,

    /// Bags of a source the model must never see: every image goes, whole, to the test split,
    /// recorded as external (labels from their records: covid, healthy, diseased).
    #[arg(long, value_name = "BAG", num_args = 1.., action = clap::ArgAction::Append)]
    pub external: Vec<PathBuf>,

    /// Leave a source out: one of the --covid/--healthy/--diseased bags to treat as --external
    /// instead (the same path, given again). A pipeline grid over `hold_out` lists every bag once
    /// and leaves each out in turn (pipelines/leave-one-source-out.toml).
    #[arg(long, value_name = "BAG", num_args = 1.., action = clap::ArgAction::Append)]
    pub hold_out: Vec<PathBuf>,

    /// Check a split instead of making one: re-derive the groups of a bag (or of a records CSV
    /// with `split` and `patient_id` columns) and fail with exit code 4 if any group is in more
    /// than one split.
    #[arg(long, value_name = "BAG|CSV")]
    pub check: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ClassesArg {
    Two,
    Three,
}

#[cfg(feature = "train")]
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Split bag: ImageFolder layout under data/ (train, val, optional test).
    #[arg(long, value_name = "BAG")]
    pub data: PathBuf,

    /// Output folder for the run (refused if it exists and is not empty, unless --force).
    #[arg(long, value_name = "RUN")]
    pub out: PathBuf,

    /// Initial weights: safetensors with torchvision DenseNet names (make one from a CheXNet
    /// checkpoint with scripts/convert-weights.py). A classifier of another size is replaced by
    /// a fresh one. Without it the network starts from random weights (a warning says so).
    #[arg(long, value_name = "FILE.safetensors")]
    pub weights: Option<PathBuf>,

    /// Network when no --weights: densenet121, or a reduced densenet:GROWTH,B1-B2-..,INIT,BN_SIZE
    /// (e.g. densenet:8,2-2-2-2,16,2) [default: densenet121; with --weights, the weights' shape].
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<String>,

    /// Stages that train, comma-separated (conv0, denseblock1..4, transition1..3, norm5), or
    /// `all`, or `none` (classifier only). The classifier always trains.
    #[arg(long, default_value = "denseblock4", value_name = "LIST")]
    pub unfreeze: String,

    #[arg(long, default_value_t = 20)]
    pub epochs: usize,

    /// Stop after this many epochs without a better val accuracy.
    #[arg(long, default_value_t = 10)]
    pub patience: usize,

    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,

    /// Adam weight decay (L2, as torch.optim.Adam applies it).
    #[arg(long, default_value_t = 1e-4)]
    pub weight_decay: f64,

    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,

    /// Seed for initialisation, shuffling and augmentation (repeat k uses SEED + k - 1).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Side of the square network input, in pixels.
    #[arg(long, default_value_t = 224)]
    pub image_size: u32,

    /// auto: CUDA when available, else the CPU (and says so).
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceArg,

    /// Compute the frozen stages' output once and train the rest on it (needs --no-augment).
    #[arg(long)]
    pub cache_features: bool,

    /// Train on the validation transform (Resize + CenterCrop) instead of RandomResizedCrop + flip.
    #[arg(long)]
    pub no_augment: bool,

    /// Run the frozen stages faster (~1.8x on a CPU): BatchNorm folded into the convolutions,
    /// pool-then-conv transitions, channels-last tensors. Same function up to float rounding
    /// (eval logits within ~1e-5), but not bit-identical to torchvision's kernels.
    #[arg(long)]
    pub fast_frozen: bool,

    /// Train this many times with seeds SEED, SEED+1, ... and summarise mean ± std.
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,

    /// Class whose recall is reported as sensitivity [default: the first class].
    #[arg(long, value_name = "CLASS")]
    pub positive: Option<String>,

    /// libtorch threads [default: libtorch's choice].
    #[arg(long)]
    pub threads: Option<i32>,

    /// Forward-pass arithmetic: fp32 (bit-identical to prep without the flag), bf16 (autocast
    /// to bfloat16, CPU or CUDA) or fp16 (autocast to float16 with dynamic loss scaling, CUDA
    /// only). Weights, optimiser state and the loss stay fp32.
    #[arg(long, default_value = "fp32", value_name = "fp32|bf16|fp16")]
    pub precision: String,

    /// Feed the network channels-last (NHWC-strided) tensors, the layout GPU tensor cores and
    /// oneDNN prefer. Same function, other kernels: not bit-identical to the default.
    #[arg(long)]
    pub channels_last: bool,

    /// Batches a background thread prepares ahead of the model (0: decode each batch when the
    /// model asks for it).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub prefetch: usize,

    /// Threads that decode, resize and augment images [default: RAYON_NUM_THREADS, else every
    /// core]. Batches are the same whatever the number.
    #[arg(long, value_name = "N")]
    pub loader_threads: Option<usize>,

    /// Replace an existing output folder.
    #[arg(long)]
    pub force: bool,

    /// Shortcut control: train with the central lung-field box (76 % x 84 % of every film)
    /// blacked out (lungs), or with only that box kept (border).
    #[arg(long, value_enum, default_value = "none")]
    pub occlude: OccludeArg,
}

#[cfg(feature = "train")]
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DeviceArg {
    Auto,
    Cpu,
    Cuda,
}

#[cfg(feature = "train")]
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// A run folder from `prep train` (model.json + best.safetensors) or a weights file.
    #[arg(long, value_name = "RUN|FILE.safetensors")]
    pub model: PathBuf,

    /// Class names in output order (needed for a bare weights file).
    #[arg(long, value_delimiter = ',', value_name = "A,B,..")]
    pub classes: Option<Vec<String>>,

    /// Input side for a bare weights file [default: the run's, or 224].
    #[arg(long)]
    pub image_size: Option<u32>,

    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceArg,

    /// Print one JSON array instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Images to classify.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InpaintArgs {
    /// Input bag (bag mode). Verified before anything is read.
    #[arg(
        value_name = "IN_BAG",
        required_unless_present_any = ["image", "annotations"],
        conflicts_with_all = ["image", "annotations"]
    )]
    pub bag: Option<PathBuf>,

    /// Output bag (bag mode; refused if it exists and is not empty, unless --force).
    #[arg(long, value_name = "OUT_BAG", requires = "bag")]
    pub out: Option<PathBuf>,

    /// How masks are found: auto = detect annotations (OR-ed with any user mask), none = user
    /// masks only [default: auto, or none when --mask is given].
    #[arg(long, value_enum)]
    pub detect: Option<prep::inpaint::stage::Detect>,

    /// Folder of user masks named <image id>.png (bag mode); non-zero = erase.
    #[arg(long, value_name = "DIR", requires = "bag")]
    pub masks: Option<PathBuf>,

    /// Fill: auto (per hole: biharmonic with matched film grain, patch for very wide holes),
    /// telea (fastest), biharmonic, or patch (exemplar fill copying film texture from near
    /// the hole).
    #[arg(long, value_enum, default_value = "auto")]
    pub method: prep::inpaint::Method,

    /// Telea neighbourhood radius in pixels.
    #[arg(long, default_value_t = 3.0, value_name = "PX")]
    pub radius: f32,

    /// Replace every masked pixel. By default the biharmonic fill keeps masked pixels that
    /// already match the film around them (within 2.5 grain standard deviations of the fill),
    /// such as the safety rim of a dilated mask; the saved mask shows what was replaced.
    #[arg(long)]
    pub replace_all: bool,

    /// Seed of the film-grain re-synthesis (mixed with each image id).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Single-image mode: the image to clean (PNG, JPEG, BMP, TIFF; 8/16-bit grey, RGB, RGBA).
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,

    /// Single-image mode: mask of the image's size; non-zero = erase.
    #[arg(long, value_name = "FILE", requires = "image")]
    pub mask: Option<PathBuf>,

    /// Single-image mode: where to write the cleaned PNG.
    #[arg(long, value_name = "FILE.png", requires = "image")]
    pub output: Option<PathBuf>,

    /// Single-image mode: also write the mask used (8-bit grey PNG, 255 = inpainted).
    #[arg(long, value_name = "FILE.png", requires = "image")]
    pub save_mask: Option<PathBuf>,

    /// Single-image mode: inpaint N times in-process and print `inpaint_ms=<float>` per run
    /// (inpainting only, not decode, detection or encode).
    #[arg(long, value_name = "N", requires = "image")]
    pub bench_repeat: Option<usize>,

    /// Replace an existing output bag.
    #[arg(long)]
    pub force: bool,

    /// Bag mode: estimate each source's semi-transparent watermark from all its images of one
    /// size (lower quartile of the white top-hat; groups of at least 8 images) and OR it into
    /// the mask of every image of the group. Masks go to data/masks/sources/, the table to
    /// data/source_watermarks.csv.
    #[arg(long, requires = "bag")]
    pub source_watermarks: bool,

    /// Measure mode: score the detector against ground-truth boxes (CSV
    /// `image,x0,y0,x1,y1,class`, image relative to --root; class text|marker|arrow|device|border|other).
    /// Prints recall per mark class, the share of device and border pixels masked and the share of
    /// films without marks that get any mask (docs/inpaint.md states the rules). Writes nothing.
    #[arg(long, value_name = "CSV", requires = "root", conflicts_with = "image")]
    pub annotations: Option<PathBuf>,

    /// Measure mode: the folder the box file's image paths are relative to; every image under
    /// it is measured (a film with no box is a film without marks).
    #[arg(long, value_name = "DIR", requires = "annotations")]
    pub root: Option<PathBuf>,

    /// Measure mode: only the films listed in FILE (one path relative to --root a line), e.g.
    /// the films reviewed so far.
    #[arg(long, value_name = "FILE", requires = "annotations")]
    pub films: Option<PathBuf>,

    /// Measure mode: also list the N worst films (missed marks, devices and borders touched).
    #[arg(long, value_name = "N", requires = "annotations", default_value_t = 0)]
    pub worst: usize,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Split bag (made by `prep split`).
    #[arg(value_name = "BAG")]
    pub bag: PathBuf,

    /// Output format.
    #[arg(long, value_enum, default_value = "webdataset")]
    pub format: ExportFormatArg,

    /// Output bag folder (refused if it exists and is not empty, unless --force).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Largest shard (a shard always holds at least one sample): bytes, or with a unit
    /// KB, MB, GB (powers of 1000) or KiB, MiB, GiB.
    #[arg(long, value_name = "SIZE", default_value = "256MB")]
    pub shard_size: String,

    /// At least this many shards per split (fewer only if the split has fewer samples), so
    /// that every rank and loader worker gets shards: ranks × workers.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub min_shards: usize,

    /// Seed of the sample order (the same seed gives byte-identical shards).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Replace an existing output bag.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ExportFormatArg {
    Webdataset,
}
