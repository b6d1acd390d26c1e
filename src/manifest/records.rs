//! The per-image table (`data/records.csv`) and the exclusion table (`data/excluded.csv`).

use super::croissant::ColumnType;
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

/// Type and description of a `records.csv` column that every stage shares (Croissant fields).
pub fn record_column(col: &str) -> Option<(ColumnType, &'static str)> {
    use ColumnType::*;
    Some(match col {
        "id" => (
            Text,
            "Image id, unique in the bag (the file name without extension).",
        ),
        "path" => (Text, "Path of the image relative to the bag root."),
        "sha256" => (Text, "SHA-256 of the image file."),
        "bytes" => (Integer, "Size of the image file in bytes."),
        "width" => (Integer, "Image width in pixels."),
        "height" => (Integer, "Image height in pixels."),
        "source" => (Text, "Source the image came from."),
        "patient_id" => (
            Text,
            "Patient id within the source (empty when the source has none).",
        ),
        "view" => (Text, "Radiographic projection as the source gives it."),
        "label" => (
            Text,
            "Label assigned by prep (covid, healthy, diseased or a folder label).",
        ),
        "finding" => (Text, "Finding as the source gives it."),
        "source_file" => (Text, "Path of the file inside the source dataset."),
        "source_row" => (
            Text,
            "Line of the source metadata file the image came from.",
        ),
        _ => return None,
    })
}

/// Croissant columns for `names`: a stage's own descriptions first, then the shared ones.
pub fn describe_columns(
    names: &[&str],
    own: impl Fn(&str) -> Option<(ColumnType, &'static str)>,
) -> Vec<(String, ColumnType, String)> {
    names
        .iter()
        .map(|c| {
            let (t, d) = own(c)
                .or_else(|| record_column(c))
                .or_else(|| crate::dicom::column(c))
                .unwrap_or((ColumnType::Text, ""));
            (c.to_string(), t, d.to_string())
        })
        .collect()
}

/// Columns a source's filter writes after the shared ones (a DICOM film's: what it was, how it
/// was rendered, its BurnedInAnnotation flag) that every later stage writing records.csv
/// (inpaint, split) carries unchanged after its own, so the bag a model is trained on still says
/// it. Named here rather than "every column an input has": a stage's own columns (an inpaint
/// bag's `mask_path`) describe that bag and would be wrong in the next one.
pub const SOURCE_COLUMNS: &[&str] = crate::dicom::DICOM_COLUMNS;

/// The source columns one record has ([`SOURCE_COLUMNS`] order; none for PNG-born bags).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceValues(pub Vec<(String, String)>);

/// [`read_records`] with each row's source columns.
pub fn read_records_with_source(bag: &Path) -> Result<Vec<(Record, SourceValues)>> {
    let path = bag.join("data").join("records.csv");
    let mut rdr = csv::Reader::from_path(&path).map_err(|e| csv_err(&path, e))?;
    let headers = rdr.headers().map_err(|e| csv_err(&path, e))?.clone();
    let at: Vec<(usize, &str)> = SOURCE_COLUMNS
        .iter()
        .filter_map(|c| headers.iter().position(|h| h == *c).map(|i| (i, *c)))
        .collect();
    let mut out = Vec::new();
    for row in rdr.records() {
        let row = row.map_err(|e| csv_err(&path, e))?;
        let rec: Record = row
            .deserialize(Some(&headers))
            .map_err(|e| csv_err(&path, e))?;
        let vals = at
            .iter()
            .map(|&(i, c)| (c.to_string(), row.get(i).unwrap_or("").to_string()))
            .collect();
        out.push((rec, SourceValues(vals)));
    }
    Ok(out)
}

/// The source columns any of `rows` has, in [`SOURCE_COLUMNS`] order.
pub fn source_header<'a>(rows: impl IntoIterator<Item = &'a SourceValues>) -> Vec<&'static str> {
    let mut have = std::collections::BTreeSet::new();
    for r in rows {
        have.extend(r.0.iter().map(|(c, _)| c.clone()));
    }
    SOURCE_COLUMNS
        .iter()
        .copied()
        .filter(|c| have.contains(*c))
        .collect()
}

/// CSV bytes made by [`write_csv`] with `header`'s source columns appended: row i gets
/// `values[i]`'s (empty where it has none). With no source columns, `csv` is returned as it is.
pub fn append_source_columns(
    csv: Vec<u8>,
    header: &[&str],
    values: &[&SourceValues],
) -> Result<Vec<u8>> {
    if header.is_empty() {
        return Ok(csv);
    }
    let mut rdr = csv::Reader::from_reader(csv.as_slice());
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut head = rdr.headers().map_err(|e| csv_err("<memory>", e))?.clone();
    head.extend(header.iter().copied());
    w.write_record(&head).map_err(|e| csv_err("<memory>", e))?;
    for (i, row) in rdr.records().enumerate() {
        let mut row = row.map_err(|e| csv_err("<memory>", e))?;
        let v = values.get(i).map(|v| v.0.as_slice()).unwrap_or(&[]);
        for c in header {
            row.push_field(
                v.iter()
                    .find(|(n, _)| n.as_str() == *c)
                    .map_or("", |(_, x)| x),
            );
        }
        w.write_record(&row).map_err(|e| csv_err("<memory>", e))?;
    }
    w.into_inner()
        .map_err(|e| Error::Usage(format!("csv buffer: {e}")))
}

/// One dropped input with a machine-readable reason code and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Excluded {
    pub source_row: String,
    pub file: String,
    pub reason: String,
    pub detail: String,
}

/// Column order of `excluded.csv`.
pub const EXCLUDED_COLUMNS: &[&str] = &["source_row", "file", "reason", "detail"];

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

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> SourceValues {
        SourceValues(
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        )
    }

    #[test]
    fn source_columns_are_appended_in_order_and_empty_where_a_row_has_none() {
        let csv = b"id,path\na,data/a.png\nb,data/b.png\n".to_vec();
        let none = SourceValues::default();
        assert_eq!(
            append_source_columns(csv.clone(), &[], &[&none, &none]).unwrap(),
            csv,
            "no source columns: the same bytes"
        );
        let a = values(&[
            ("burned_in_annotation", "YES"),
            ("dicom_modality", "CR, \"x\""),
        ]);
        let header = source_header([&a, &none]);
        assert_eq!(header, vec!["dicom_modality", "burned_in_annotation"]);
        let out = append_source_columns(csv, &header, &[&a, &none]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "id,path,dicom_modality,burned_in_annotation\na,data/a.png,\"CR, \"\"x\"\"\",YES\nb,data/b.png,,\n"
        );
    }

    #[test]
    fn records_are_read_with_their_source_columns() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("data")).unwrap();
        let mut head = RECORD_COLUMNS.join(",");
        head.push_str(",mask_path,dicom_output");
        let row = "i,data/i.png,s,1,2,3,src,p,PA,healthy,,f,,m.png,raw16";
        std::fs::write(
            t.path().join("data/records.csv"),
            format!("{head}\n{row}\n"),
        )
        .unwrap();
        let got = read_records_with_source(t.path()).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.id, "i");
        // A stage's own column (mask_path) is not a source column.
        assert_eq!(got[0].1, values(&[("dicom_output", "raw16")]));
    }
}
