//! Dataset bags: BagIt (RFC 8493) directories with records, exclusions, provenance and
//! Croissant metadata, written atomically and verified by re-hashing.
//!
//! Layout of a bag written by any prep stage:
//! ```text
//! OUT/bagit.txt  bag-info.txt  manifest-sha256.txt  tagmanifest-sha256.txt  croissant.json
//! OUT/data/records.csv  excluded.csv  provenance.json  images/<label>/<file>...
//! ```

mod bag;
mod croissant;
mod provenance;
mod records;
mod verify;

pub use bag::{hash_bytes, hash_file, BagWriter, FinishedBag, StageInfo};
pub use croissant::{image_globs, ColumnType, CroissantSpec};
pub use provenance::{InputRef, Provenance};
pub use records::{
    describe_columns, read_records, record_column, write_csv, Excluded, Record, EXCLUDED_COLUMNS,
    RECORD_COLUMNS,
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
