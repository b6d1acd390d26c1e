//! Dataset bags: BagIt (RFC 8493) directories with records, exclusions, provenance and
//! Croissant metadata, written atomically and verified by re-hashing.
//!
//! Layout of a bag written by any prep stage:
//! ```text
//! OUT/bagit.txt  bag-info.txt  manifest-sha256.txt  tagmanifest-sha256.txt  croissant.json
//! OUT/data/records.csv  excluded.csv  provenance.json  images/<label>/<file>...
//! ```

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

mod bag;
mod croissant;
mod provenance;
mod records;
mod verify;

pub use bag::{hash_bytes, hash_file, BagWriter, FinishedBag, StageInfo};
pub use croissant::{image_globs, ColumnType, CroissantSpec};
pub use provenance::{InputRef, Provenance};
pub use records::{
    append_source_columns, describe_columns, read_records, read_records_with_source, record_column,
    source_header, write_csv, Excluded, Record, SourceValues, EXCLUDED_COLUMNS, RECORD_COLUMNS,
    SOURCE_COLUMNS,
};
pub use verify::{manifest_sha256, verify_bag, VerifyReport};

/// Percent-encode a payload path for a manifest line, as RFC 8493 §2.1.3 requires for
/// CR, LF and '%'.
pub(crate) fn encode_manifest_path(p: &str) -> String {
    p.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

pub(crate) fn decode_manifest_path(p: &str) -> String {
    p.replace("%0D", "\r")
        .replace("%0d", "\r")
        .replace("%0A", "\n")
        .replace("%0a", "\n")
        .replace("%25", "%")
}

/// A fresh folder beside OUT for an output that is not a bag (a training run, an audit, an
/// evaluation), renamed into place when done; refuses a non-empty OUT unless --force.
pub(crate) fn staging_dir(out: &Path, force: bool) -> Result<PathBuf> {
    if out.exists() && !force {
        let empty = out.is_dir()
            && std::fs::read_dir(out)
                .map_err(|e| Error::read(out, e))?
                .next()
                .is_none();
        if !empty {
            return Err(Error::OutputExists {
                path: out.to_path_buf(),
            });
        }
    }
    let name = out
        .file_name()
        .ok_or_else(|| Error::Usage(format!("--out {} has no folder name", out.display())))?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| Error::write(&parent, e))?;
    let staging = parent.join(format!(
        ".{}.prep-tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| Error::write(&staging, e))?;
    }
    std::fs::create_dir_all(&staging).map_err(|e| Error::write(&staging, e))?;
    Ok(staging)
}
