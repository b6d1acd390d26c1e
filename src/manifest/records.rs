//! The per-image table (`data/records.csv`) and the exclusion table (`data/excluded.csv`).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One kept image. `path` is relative to the bag root; `source_row` is the line of the source
/// metadata file the image came from (empty for sources without metadata).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
    pub width: u32,
    pub height: u32,
    pub source: String,
    pub patient_id: String,
    pub view: String,
    pub label: String,
    pub finding: String,
    pub source_file: String,
    pub source_row: String,
}

/// Column order of `records.csv`, for Croissant and for readers that check the header.
pub const RECORD_COLUMNS: &[&str] = &[
    "id",
    "path",
    "sha256",
    "bytes",
    "width",
    "height",
    "source",
    "patient_id",
    "view",
    "label",
    "finding",
    "source_file",
    "source_row",
];

/// One dropped input with a machine-readable reason code and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Excluded {
    pub source_row: String,
    pub file: String,
    pub reason: String,
    pub detail: String,
}

/// Serialise rows to CSV bytes (header first). Built in memory: the bag writer stores bytes.
pub fn write_csv<T: Serialize>(rows: &[T], header_if_empty: &[&str]) -> Result<Vec<u8>> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(!rows.is_empty())
        .from_writer(Vec::new());
    if rows.is_empty() {
        w.write_record(header_if_empty)
            .map_err(|e| csv_err("<memory>", e))?;
    }
    for r in rows {
        w.serialize(r).map_err(|e| csv_err("<memory>", e))?;
    }
    w.into_inner()
        .map_err(|e| Error::Usage(format!("csv buffer: {e}")))
}

/// Read `data/records.csv` of a bag.
pub fn read_records(bag: &Path) -> Result<Vec<Record>> {
    let path = bag.join("data").join("records.csv");
    let mut rdr = csv::Reader::from_path(&path).map_err(|e| csv_err(&path, e))?;
    let mut out = Vec::new();
    for row in rdr.deserialize() {
        out.push(row.map_err(|e| csv_err(&path, e))?);
    }
    Ok(out)
}

fn csv_err(path: impl AsRef<Path>, source: csv::Error) -> Error {
    Error::Csv {
        path: path.as_ref().to_path_buf(),
        source,
    }
}
