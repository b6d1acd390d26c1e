//! prep: audited, leak-free chest X-ray training sets, and CheXNet fine-tuning on them.
//!
//! One module per concern: `manifest` (bags: BagIt, records, provenance, Croissant, verify),
//! `source` (source descriptions and metadata adapters), `filter` (the filter stage), and
//! `train` (the model side, behind the `train` feature).

pub mod audit;
pub mod demo;
pub mod dicom;
pub mod error;
pub mod evaluate;
pub mod export;
pub mod filter;
pub mod harmonize;
pub mod inpaint;
pub mod manifest;
pub mod pipeline;
pub mod plotting;
pub mod progress;
pub mod report;
pub mod source;
pub mod split;
pub mod synth;
#[cfg(feature = "train")]
pub mod train;

pub use error::{Error, Result};
