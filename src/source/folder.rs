//! Folder sources: every image file under a folder gets one label.

use super::{Candidate, Selection, SourceDesc};
use crate::error::{Error, Result};
use std::path::Path;

/// List every file under `root` (not following links), sorted, judged by extension.
pub fn read_folder(desc: &SourceDesc, root: &Path, sel: &Selection) -> Result<Vec<Candidate>> {
    let label = sel
        .folder_label
        .clone()
        .ok_or_else(|| Error::Usage("a folder source needs --label NAME".into()))?;
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(root).sort_by_file_name() {
        let entry = entry.map_err(|e| Error::read(root, e.into()))?;
        if entry.file_type().is_dir() {
            continue;
        }
        let rel = entry.path().strip_prefix(root).expect("under root");
        let rel_s = rel
            .to_string_lossy()
            .replace(std::path::MAIN_SEPARATOR, "/");
        let ext = rel
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let mut cand = Candidate {
            source_row: String::new(),
            file: rel_s,
            patient_id: String::new(),
            view: String::new(),
            finding: label.clone(),
            verdict: Ok(label.clone()),
        };
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if rel.to_str().is_none() {
            cand.drop("unsafe-path", "file name is not UTF-8");
        } else if name.starts_with('.') {
            cand.drop("hidden-file", "hidden file");
        } else if !desc.files.extensions.iter().any(|e| *e == ext || e == "*") {
            cand.drop(
                "not-image",
                format!("extension {ext:?} is not an image type"),
            );
        } else if sel.exclude_list.contains(&name) {
            cand.drop("exclude-list", "named in the --exclude-list file");
        }
        out.push(cand);
    }
    Ok(out)
}
