//! MLCommons Croissant 1.1 metadata (`croissant.json`) for a bag: the table of records as a
//! FileObject with its sha256, the images as FileSets, and a RecordSet over the table's columns.
//! Hand-written JSON-LD: no Rust crate writes Croissant, and the document is small and fixed.

use crate::error::Result;
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    Integer,
    Float,
    Boolean,
}

impl ColumnType {
    fn schema_type(self) -> &'static str {
        match self {
            ColumnType::Text => "sc:Text",
            ColumnType::Integer => "sc:Integer",
            ColumnType::Float => "sc:Float",
            ColumnType::Boolean => "sc:Boolean",
        }
    }
}

/// What a stage says about its table and files; the writer adds hashes and sizes.
#[derive(Debug, Clone)]
pub struct CroissantSpec {
    /// Licence of the dataset as a whole (per-image licences stay in the records).
    pub license: String,
    /// Where the original data lives, for people; never fetched.
    pub url: String,
    /// Citation of the underlying data (`citeAs`); empty when unknown.
    pub cite_as: String,
    /// The table, relative to the bag root (e.g. `data/records.csv`).
    pub table: String,
    /// Columns of the table with their types and a description.
    pub columns: Vec<(String, ColumnType, String)>,
    /// Image files as (glob relative to the bag root, MIME type), one FileSet per MIME type.
    pub image_globs: Vec<(String, String)>,
}

/// FileSet patterns for the images at `paths` (bag-relative): one `<dir_glob>/*.<ext>` per
/// extension present, with its MIME type. The writer sorts and deduplicates them.
pub fn image_globs<'a>(
    dir_glob: &str,
    paths: impl IntoIterator<Item = &'a str>,
) -> Vec<(String, String)> {
    paths
        .into_iter()
        .map(|p| {
            let ext = p.rsplit('.').next().unwrap_or("");
            let mime = match ext.to_ascii_lowercase().as_str() {
                "jpg" | "jpeg" => "image/jpeg",
                "png" => "image/png",
                "bmp" => "image/bmp",
                "tif" | "tiff" => "image/tiff",
                _ => "application/octet-stream",
            };
            (format!("{dir_glob}/*.{ext}"), mime.to_string())
        })
        .collect()
}

impl CroissantSpec {
    /// Render the JSON-LD; `lookup` gives (sha256, bytes) of a file by bag-relative path.
    pub(crate) fn to_json(
        &self,
        name: &str,
        description: &str,
        lookup: &dyn Fn(&str) -> Option<(String, u64)>,
    ) -> Result<Vec<u8>> {
        let (sha, size) = lookup(&self.table).unwrap_or_default();
        let table_id = "records-table";
        let mut distribution = vec![json!({
            "@type": "cr:FileObject",
            "@id": table_id,
            "name": table_id,
            "description": "One row per image in the bag.",
            "contentUrl": self.table,
            "contentSize": format!("{size} B"),
            "encodingFormat": "text/csv",
            "sha256": sha,
        })];
        let mut by_mime: Vec<(String, Vec<String>)> = Vec::new();
        for (glob, mime) in &self.image_globs {
            match by_mime.iter_mut().find(|(m, _)| m == mime) {
                Some((_, g)) => g.push(glob.clone()),
                None => by_mime.push((mime.clone(), vec![glob.clone()])),
            }
        }
        by_mime.sort();
        for (mime, mut globs) in by_mime {
            globs.sort();
            globs.dedup();
            let id = format!("images-{}", mime.rsplit('/').next().unwrap_or("files"));
            distribution.push(json!({
                "@type": "cr:FileSet",
                "@id": id,
                "name": id,
                "description": format!("Images of type {mime}."),
                "encodingFormat": mime,
                "includes": globs,
            }));
        }
        let fields: Vec<Value> = self
            .columns
            .iter()
            .map(|(col, ty, desc)| {
                json!({
                    "@type": "cr:Field",
                    "@id": format!("records/{col}"),
                    "name": col,
                    "description": desc,
                    "dataType": ty.schema_type(),
                    "source": { "fileObject": { "@id": table_id }, "extract": { "column": col } },
                })
            })
            .collect();
        let doc = json!({
            "@context": context(),
            "@type": "sc:Dataset",
            "conformsTo": "http://mlcommons.org/croissant/1.1",
            "name": name,
            "description": description,
            "license": self.license,
            "url": self.url,
            "version": "1.0.0",
            "creator": { "@type": "sc:Organization", "name": "prep" },
            "distribution": distribution,
            "recordSet": [{
                "@type": "cr:RecordSet",
                "@id": "records",
                "name": "records",
                "description": "The images of this bag with their labels and provenance.",
                "key": { "@id": "records/id" },
                "field": fields,
            }],
        });
        let mut doc = doc;
        if !self.cite_as.is_empty() {
            doc["citeAs"] = json!(self.cite_as);
        }
        let mut v = serde_json::to_vec_pretty(&doc).expect("croissant serialises");
        v.push(b'\n');
        Ok(v)
    }
}

fn context() -> Value {
    json!({
        "@language": "en",
        "@vocab": "https://schema.org/",
        "citeAs": "cr:citeAs",
        "column": "cr:column",
        "conformsTo": "dct:conformsTo",
        "cr": "http://mlcommons.org/croissant/",
        "rai": "http://mlcommons.org/croissant/RAI/",
        "data": { "@id": "cr:data", "@type": "@json" },
        "dataType": { "@id": "cr:dataType", "@type": "@vocab" },
        "dct": "http://purl.org/dc/terms/",
        "equivalentProperty": "cr:equivalentProperty",
        "examples": { "@id": "cr:examples", "@type": "@json" },
        "extract": "cr:extract",
        "field": "cr:field",
        "fileProperty": "cr:fileProperty",
        "fileObject": "cr:fileObject",
        "fileSet": "cr:fileSet",
        "format": "cr:format",
        "includes": "cr:includes",
        "isLiveDataset": "cr:isLiveDataset",
        "jsonPath": "cr:jsonPath",
        "key": "cr:key",
        "md5": "cr:md5",
        "parentField": "cr:parentField",
        "path": "cr:path",
        "recordSet": "cr:recordSet",
        "references": "cr:references",
        "regex": "cr:regex",
        "repeated": "cr:repeated",
        "replace": "cr:replace",
        "sc": "https://schema.org/",
        "samplingRate": "cr:samplingRate",
        "separator": "cr:separator",
        "source": "cr:source",
        "subField": "cr:subField",
        "transform": "cr:transform",
    })
}
