//! Data sources described by TOML files in `metadata/` (column names, label and view
//! vocabularies, how files are located), and the adapters that turn a source's metadata into
//! candidate images with a verdict for each.

mod folder;
mod table;

use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub use folder::read_folder;
pub use table::{decode_text, read_table, Encoding};

/// The descriptions shipped with prep, compiled in so the binary works from anywhere.
const BUILTIN: &[(&str, &str)] = &[
    ("cohen", include_str!("../../metadata/cohen.toml")),
    ("nih", include_str!("../../metadata/nih-chestxray14.toml")),
    ("folder", include_str!("../../metadata/image-folder.toml")),
    (
        "dicom-folder",
        include_str!("../../metadata/dicom-folder.toml"),
    ),
    ("rsna", include_str!("../../metadata/rsna-pneumonia.toml")),
];

/// Names accepted by `--source` besides a path to a `.toml` file.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(n, _)| *n).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A metadata table with one row per image.
    Table,
    /// Every image under a folder, one label for all.
    Folder,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceDesc {
    pub name: String,
    pub title: String,
    pub url: String,
    pub license: String,
    /// How to cite the source (Croissant `citeAs`).
    #[serde(default)]
    pub citation: String,
    pub kind: Kind,
    /// Default metadata file name inside the dataset folder.
    #[serde(default)]
    pub metadata_file: Option<String>,
    #[serde(default)]
    pub columns: Columns,
    #[serde(default)]
    pub files: Files,
    #[serde(default)]
    pub findings: Findings,
    #[serde(default)]
    pub views: Views,
    #[serde(default)]
    pub modality: Option<Modality>,
    #[serde(default)]
    pub pcr: Option<Pcr>,
    #[serde(default)]
    pub patients: Patients,
    /// Present for sources whose files are DICOM objects (see `crate::dicom`).
    #[serde(default)]
    pub dicom: Option<DicomDesc>,
}

/// How a DICOM source's films are judged on their tags. Modality (0008,0060) is checked against
/// `[modality] xray` and ViewPosition (0018,5101) against `[views] frontal` of the description.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DicomDesc {
    /// Accepted BodyPartExamined (0018,0015) values, compared case-insensitively; `""` accepts a
    /// film without the tag. Empty list: any body part.
    #[serde(default)]
    pub body_parts: Vec<String>,
    /// A tag (keyword such as `StudyDescription` or `(gggg,eeee)`) whose value is the finding,
    /// classified with `[findings]`; without it a folder source takes `--label NAME`.
    #[serde(default)]
    pub label_tag: Option<String>,
    /// Name the bag's images (and write `source_file`) by a salted hash of their path instead of
    /// the path itself: hospital exports put patient names and ids in file names, and RSNA's
    /// file names are its PatientID.
    #[serde(default = "yes")]
    pub pseudonymise_files: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Columns {
    pub file: Option<String>,
    pub folder: Option<String>,
    pub patient_id: Option<String>,
    pub view: Option<String>,
    pub modality: Option<String>,
    pub finding: Option<String>,
    pub pcr: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Locate {
    /// `DIR/<folder column>/<file column>` (or `DIR/<file column>` without a folder column).
    #[default]
    Column,
    /// Find the file by name anywhere under DIR (ChestX-ray14 ships in 12 sub-folders).
    Search,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Files {
    #[serde(default)]
    pub locate: Locate,
    /// File extensions (lower case) counted as images by folder sources; `"*"` counts every
    /// file (DICOM exports often have no extension, or a UID for a name).
    #[serde(default)]
    pub extensions: Vec<String>,
    /// Appended to the file column's value (RSNA's table names `<patientId>`, its film is
    /// `<patientId>.dcm`).
    #[serde(default)]
    pub suffix: String,
    /// Rows naming the same file are one image (RSNA: one row per box): the first row speaks for
    /// it, the others are listed as `duplicate-row`; rows that disagree on the finding exclude
    /// the image as `conflicting-labels`.
    #[serde(default)]
    pub one_image_per_file: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Findings {
    /// Legacy spelling of one term separator (older description files); it is judged exactly
    /// like an entry of `term_separators`.
    #[serde(default)]
    pub segment_separator: Option<String>,
    /// Strings that split a finding into terms, each judged on its own
    /// (`COVID-19, ARDS` and `Pneumonia/Viral/COVID-19` both hold the term `COVID-19`).
    /// See [`SourceDesc::judge`] for the rule.
    #[serde(default)]
    pub term_separators: Vec<String>,
    #[serde(default)]
    pub covid: Vec<String>,
    #[serde(default)]
    pub healthy: Vec<String>,
    /// Findings that mean "not labelled" (`todo`, `Unknown`, blank): never used as negatives.
    #[serde(default)]
    pub unlabelled: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Views {
    /// Frontal projections, compared case-insensitively after trimming.
    #[serde(default)]
    pub frontal: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Modality {
    pub xray: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pcr {
    pub positive: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Patients {
    /// Groups of patient ids that are the same person (used by `prep split`).
    #[serde(default)]
    pub aliases: Vec<Vec<String>>,
}

/// What a finding means for labelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    Covid,
    Healthy,
    Diseased,
    Unlabelled,
}

impl Class {
    pub fn label(self) -> &'static str {
        match self {
            Class::Covid => "covid",
            Class::Healthy => "healthy",
            Class::Diseased => "diseased",
            Class::Unlabelled => "unlabelled",
        }
    }
}

fn eq_ci(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

impl SourceDesc {
    /// A built-in name (`cohen`, `nih`, `folder`) or a path to a description file.
    pub fn load(name_or_path: &str) -> Result<SourceDesc> {
        if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            return toml::from_str(text).map_err(|source| Error::SourceDescription {
                path: PathBuf::from(format!("metadata/{name_or_path}.toml (built in)")),
                source,
            });
        }
        let path = Path::new(name_or_path);
        if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            let text = std::fs::read_to_string(path).map_err(|e| Error::read(path, e))?;
            return toml::from_str(&text).map_err(|source| Error::SourceDescription {
                path: path.to_path_buf(),
                source,
            });
        }
        Err(Error::Usage(format!(
            "unknown source {name_or_path:?}: use one of {} or a path to a .toml description",
            builtin_names().join(", ")
        )))
    }

    /// Classify a finding with the source's vocabulary.
    pub fn classify(&self, finding: &str) -> Class {
        self.judge(finding).0
    }

    /// The finding's terms: split on every separator, trimmed, empty pieces dropped.
    pub fn terms<'a>(&self, finding: &'a str) -> Vec<&'a str> {
        let f = &self.findings;
        let seps: Vec<&str> = f
            .term_separators
            .iter()
            .chain(&f.segment_separator)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .collect();
        let mut terms = vec![finding.trim()];
        for sep in seps {
            terms = terms.iter().flat_map(|t| t.split(sep)).collect();
        }
        terms
            .into_iter()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect()
    }

    /// Classify a finding and name the term that decided it. Rule, in order: the whole finding
    /// unlabelled (blank, `todo`) → unlabelled; any term covid → covid (that term); any term
    /// unlabelled → unlabelled (the labelling is unfinished); every term healthy → healthy;
    /// else diseased, decided by the last term that is not healthy (the most specific one of a
    /// `Pneumonia/Viral/SARS` path). A finding of separators only is unlabelled.
    pub fn judge(&self, finding: &str) -> (Class, String) {
        let f = &self.findings;
        let whole = finding.trim();
        let any = |list: &[String], v: &str| list.iter().any(|x| eq_ci(x, v));
        if any(&f.unlabelled, whole) {
            return (Class::Unlabelled, whole.to_string());
        }
        if any(&f.covid, whole) {
            return (Class::Covid, whole.to_string());
        }
        let terms = self.terms(whole);
        if terms.is_empty() {
            // Only separators: nothing to judge.
            return (Class::Unlabelled, whole.to_string());
        }
        let first = |list: &[String]| terms.iter().find(|t| any(list, t)).map(|t| t.to_string());
        if let Some(t) = first(&f.covid) {
            return (Class::Covid, t);
        }
        if let Some(t) = first(&f.unlabelled) {
            return (Class::Unlabelled, t);
        }
        if any(&f.healthy, whole) {
            return (Class::Healthy, whole.to_string());
        }
        match terms.iter().rev().find(|t| !any(&f.healthy, t)) {
            Some(t) => (Class::Diseased, t.to_string()),
            None => (Class::Healthy, terms[0].to_string()),
        }
    }

    pub fn is_frontal(&self, view: &str) -> bool {
        self.views.frontal.iter().any(|v| eq_ci(v, view))
    }

    pub fn is_xray(&self, modality: &str) -> bool {
        match &self.modality {
            Some(m) => m.xray.iter().any(|v| eq_ci(v, modality)),
            None => true,
        }
    }

    pub fn is_pcr_positive(&self, value: &str) -> bool {
        match &self.pcr {
            Some(p) => p.positive.iter().any(|v| eq_ci(v, value)),
            None => false,
        }
    }
}

/// What a stage wants from a source: which classes to keep and the extra rules.
#[derive(Debug, Clone)]
pub struct Selection {
    pub keep: BTreeSet<Class>,
    pub require_pcr: bool,
    /// File names to drop (e.g. the images CheXNet was pre-trained on).
    pub exclude_list: BTreeSet<String>,
    /// For folder sources: the label of every image.
    pub folder_label: Option<String>,
}

/// One image a source names, before its file is looked at.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Line of the metadata file (header = line 1); empty for folder sources.
    pub source_row: String,
    /// The path as the metadata gives it, relative to the dataset folder, `/`-separated.
    pub file: String,
    pub patient_id: String,
    pub view: String,
    pub finding: String,
    /// `Ok(label)` to keep, or `Err((reason code, detail))` when metadata rules drop it.
    pub verdict: std::result::Result<String, (String, String)>,
}

impl Candidate {
    pub fn drop(&mut self, code: &str, detail: impl Into<String>) {
        self.verdict = Err((code.to_string(), detail.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cohen_vocabulary() {
        let s = SourceDesc::load("cohen").unwrap();
        assert_eq!(s.classify("Pneumonia/Viral/COVID-19"), Class::Covid);
        assert_eq!(s.classify("COVID-19"), Class::Covid);
        assert_eq!(s.classify(" Pneumonia/Viral/COVID-19 "), Class::Covid);
        assert_eq!(s.classify("No Finding"), Class::Healthy);
        assert_eq!(s.classify("todo"), Class::Unlabelled);
        assert_eq!(s.classify("Unknown"), Class::Unlabelled);
        assert_eq!(s.classify(""), Class::Unlabelled);
        assert_eq!(s.classify("Pneumonia/Viral/Herpes "), Class::Diseased);
        assert_eq!(s.classify("Pneumonia/Viral/SARS"), Class::Diseased);
        // Older copies list several findings in one cell.
        for (f, class, term) in [
            ("COVID-19, ARDS", Class::Covid, "COVID-19"),
            ("ARDS, COVID-19", Class::Covid, "COVID-19"),
            ("COVID-19/ARDS", Class::Covid, "COVID-19"),
            ("Pneumonia/Viral/COVID-19", Class::Covid, "COVID-19"),
            ("ARDS", Class::Diseased, "ARDS"),
            ("Pneumonia/Viral/SARS", Class::Diseased, "SARS"),
            ("SARS, ARDS", Class::Diseased, "ARDS"),
            ("No Finding", Class::Healthy, "No Finding"),
            ("No Finding, Pneumonia", Class::Diseased, "Pneumonia"),
            ("Pneumonia/todo", Class::Unlabelled, "todo"),
            ("COVID-19, todo", Class::Covid, "COVID-19"),
            (" , ", Class::Unlabelled, ","),
            ("COVID-19-like", Class::Diseased, "COVID-19-like"),
        ] {
            assert_eq!(s.judge(f), (class, term.to_string()), "{f:?}");
        }
        for v in [
            "PA",
            "AP",
            "AP Supine",
            "AP Erect",
            "ap erect",
            "AP semi erect",
            "APS",
        ] {
            assert!(s.is_frontal(v), "{v}");
        }
        for v in ["L", "Axial", "Coronal", ""] {
            assert!(!s.is_frontal(v), "{v}");
        }
        assert!(s.is_xray("X-ray") && !s.is_xray("CT"));
        assert!(s.is_pcr_positive("Y") && !s.is_pcr_positive("Unclear") && !s.is_pcr_positive(""));
    }

    #[test]
    fn nih_vocabulary() {
        let s = SourceDesc::load("nih").unwrap();
        assert_eq!(s.classify("No Finding"), Class::Healthy);
        assert_eq!(s.classify("Cardiomegaly|Effusion"), Class::Diseased);
        assert!(s.is_frontal("PA") && s.is_frontal("AP") && !s.is_frontal("LL"));
    }

    #[test]
    fn rsna_vocabulary() {
        let s = SourceDesc::load("rsna").unwrap();
        assert_eq!(s.classify("Normal"), Class::Healthy);
        assert_eq!(s.classify("Lung Opacity"), Class::Diseased);
        assert_eq!(s.classify("No Lung Opacity / Not Normal"), Class::Diseased);
        assert_eq!(s.classify(""), Class::Unlabelled);
        assert!(s.is_xray("CR") && s.is_xray("DX") && !s.is_xray("CT"));
        assert!(s.dicom.as_ref().unwrap().pseudonymise_files);
        let f = SourceDesc::load("dicom-folder").unwrap();
        assert!(f.is_frontal("PA") && f.is_frontal("ap") && !f.is_frontal("LL"));
        assert!(f.is_xray("DX") && !f.is_xray("CT") && !f.is_xray("MR"));
    }

    #[test]
    fn unknown_source_is_a_usage_error() {
        assert!(matches!(SourceDesc::load("nope"), Err(Error::Usage(_))));
    }
}
