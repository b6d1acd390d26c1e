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
    /// Re-hash a bag and report every missing, extra or altered file by name (exit 4 if any).
    Verify(VerifyArgs),
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
pub struct InpaintArgs {
    /// Input bag (bag mode). Verified before anything is read.
    #[arg(
        value_name = "IN_BAG",
        required_unless_present = "image",
        conflicts_with = "image"
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

    /// Fill: auto (biharmonic with matched film grain), telea (fastest) or biharmonic.
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
}
