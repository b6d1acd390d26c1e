//! Command-line syntax. Doc comments here are the `--help` text.

use clap::{Args, Parser, Subcommand};
use prep::source::Encoding;
use std::path::PathBuf;

/// Turn messy public chest X-ray collections into audited, leak-free training sets.
///
/// Every stage writes a BagIt bag (data/records.csv, data/excluded.csv, data/provenance.json,
/// croissant.json) that `prep verify` can check. Exit codes: 0 success, 1 internal or write
/// error, 2 usage error, 3 bad input, 4 verification failed.
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
    /// Show how prep was built and what libtorch sees (threads, CUDA devices).
    Doctor,
}

#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Source description: a built-in name (cohen, nih, folder) or a path to a .toml file
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
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The bag folder to check.
    #[arg(value_name = "BAG")]
    pub bag: PathBuf,
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
