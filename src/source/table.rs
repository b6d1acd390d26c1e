//! Sources with a metadata table: read it robustly and judge each row by the description.

use super::{Candidate, Class, Selection, SourceDesc};
use crate::error::{Error, Result};
use std::path::Path;

/// How to read a metadata file's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Encoding {
    /// UTF-8; if the file is not valid UTF-8, read it as Windows-1252 and warn.
    #[serde(rename = "auto")]
    Auto,
    /// UTF-8 only: anything else is an error.
    #[value(name = "utf-8")]
    #[serde(rename = "utf-8")]
    Utf8,
    /// Windows-1252 (Figure1's metadata.csv).
    #[value(name = "windows-1252")]
    #[serde(rename = "windows-1252")]
    Windows1252,
}

/// Decode a metadata file. Returns the text and, when a fallback was used, a warning that names
/// the file and the first byte that is not UTF-8, so nothing is garbled silently.
pub fn decode_text(path: &Path, bytes: &[u8], enc: Encoding) -> Result<(String, Option<String>)> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match (enc, std::str::from_utf8(bytes)) {
        (Encoding::Windows1252, _) => {
            let (text, _, _) = encoding_rs::WINDOWS_1252.decode(bytes);
            Ok((text.into_owned(), None))
        }
        (_, Ok(s)) => Ok((s.to_string(), None)),
        (Encoding::Utf8, Err(e)) => Err(Error::bad_input(
            path,
            format!(
                "not valid UTF-8 (byte 0x{:02X} at offset {}); pass --encoding windows-1252 if it is a Windows file",
                bytes[e.valid_up_to()],
                e.valid_up_to()
            ),
        )),
        (Encoding::Auto, Err(e)) => {
            let at = e.valid_up_to();
            let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
            let (text, _, _) = encoding_rs::WINDOWS_1252.decode(bytes);
            Ok((
                text.into_owned(),
                Some(format!(
                    "{}: not valid UTF-8 (byte 0x{:02X} on line {line}); read as Windows-1252",
                    path.display(),
                    bytes[at]
                )),
            ))
        }
    }
}

/// Column positions, found by exact name, else by trimmed case-insensitive name.
fn find_col(path: &Path, headers: &csv::StringRecord, name: &str) -> Result<usize> {
    headers
        .iter()
        .position(|h| h == name)
        .or_else(|| {
            headers
                .iter()
                .position(|h| h.trim().eq_ignore_ascii_case(name.trim()))
        })
        .ok_or_else(|| Error::MissingColumn {
            path: path.to_path_buf(),
            column: name.to_string(),
            present: headers
                .iter()
                .filter(|h| !h.is_empty())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Read the metadata table and judge every row on its metadata alone, in this order:
/// modality, view, label, PCR, exclude list. File checks come later, in `filter`.
pub fn read_table(
    desc: &SourceDesc,
    path: &Path,
    text: &str,
    sel: &Selection,
) -> Result<Vec<Candidate>> {
    // flexible: rows with stray unquoted commas (Cohen's MERS rows) must not abort the read.
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers = rdr
        .headers()
        .map_err(|source| Error::Csv {
            path: path.to_path_buf(),
            source,
        })?
        .clone();
    let c = &desc.columns;
    let need = |name: &Option<String>, what: &str| -> Result<usize> {
        let n = name
            .as_deref()
            .ok_or_else(|| Error::Usage(format!("source {} names no {what} column", desc.name)))?;
        find_col(path, &headers, n)
    };
    let opt = |name: &Option<String>| -> Result<Option<usize>> {
        name.as_deref()
            .map(|n| find_col(path, &headers, n))
            .transpose()
    };
    let file_col = need(&c.file, "file")?;
    let finding_col = need(&c.finding, "finding")?;
    let folder_col = opt(&c.folder)?;
    let patient_col = opt(&c.patient_id)?;
    let view_col = opt(&c.view)?;
    let modality_col = if desc.modality.is_some() {
        opt(&c.modality)?
    } else {
        None
    };
    let pcr_col = if sel.require_pcr {
        Some(need(&c.pcr, "RT-PCR")?)
    } else {
        None
    };

    // Line numbers from byte offsets: the csv crate's own line count is off by one on CRLF
    // files (the Cohen subset is CRLF), and people look rows up by line in an editor.
    let newlines: Vec<usize> = text
        .bytes()
        .enumerate()
        .filter(|(_, b)| *b == b'\n')
        .map(|(i, _)| i)
        .collect();
    let bytes = text.as_bytes();
    let line_of = |mut byte: usize| {
        // A record's recorded start can sit on the line end that closed the previous record.
        while byte < bytes.len() && (bytes[byte] == b'\r' || bytes[byte] == b'\n') {
            byte += 1;
        }
        newlines.partition_point(|&nl| nl < byte) + 1
    };
    let mut out = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(source) => {
                return Err(Error::Csv {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
        let line = record
            .position()
            .map(|p| line_of(p.byte() as usize))
            .unwrap_or(0);
        let get = |i: Option<usize>| i.and_then(|i| record.get(i)).unwrap_or("").to_string();
        let mut file_name = get(Some(file_col));
        if !file_name.trim().is_empty() && !desc.files.suffix.is_empty() {
            file_name = format!("{}{}", file_name.trim(), desc.files.suffix);
        }
        let folder = get(folder_col);
        let file = if folder.trim().is_empty() {
            file_name.trim().to_string()
        } else {
            format!("{}/{}", folder.trim(), file_name.trim())
        };
        let mut cand = Candidate {
            source_row: line.to_string(),
            file,
            patient_id: get(patient_col).trim().to_string(),
            view: get(view_col).trim().to_string(),
            finding: get(Some(finding_col)).trim().to_string(),
            verdict: Err((String::new(), String::new())),
        };
        let modality = get(modality_col);
        let (class, term) = desc.judge(&cand.finding);
        if file_name.trim().is_empty() {
            cand.drop("no-file", "the row names no file");
        } else if modality_col.is_some() && !desc.is_xray(&modality) {
            cand.drop(
                "not-xray",
                format!("modality {:?} is not an X-ray", modality.trim()),
            );
        } else if view_col.is_some() && !desc.is_frontal(&cand.view) {
            cand.drop(
                "not-frontal",
                format!("view {:?} is not frontal", cand.view),
            );
        } else if class == Class::Unlabelled {
            cand.drop(
                "unlabelled",
                format!("finding {:?} is not a label (term {term:?})", cand.finding),
            );
        } else if !sel.keep.contains(&class) {
            let wanted: Vec<_> = sel.keep.iter().map(|c| c.label()).collect();
            let code = match sel.keep.iter().next() {
                Some(k) if sel.keep.len() == 1 => format!("not-{}", k.label()),
                _ => format!("is-{}", class.label()),
            };
            cand.drop(
                &code,
                format!(
                    "finding {:?} is {} (term {term:?}), not {}",
                    cand.finding,
                    class.label(),
                    wanted.join(" or ")
                ),
            );
        } else if class == Class::Covid && pcr_col.is_some() && !desc.is_pcr_positive(&get(pcr_col))
        {
            cand.drop(
                "no-pcr",
                format!(
                    "RT-PCR positive is {:?}, not confirmed",
                    get(pcr_col).trim()
                ),
            );
        } else if sel.exclude_list.contains(file_name.trim()) {
            cand.drop("exclude-list", "named in the --exclude-list file");
        } else {
            cand.verdict = Ok(class.label().to_string());
        }
        out.push(cand);
    }
    if desc.files.one_image_per_file {
        one_image_per_file(&mut out);
    }
    Ok(out)
}

/// Collapse rows that name the same file (RSNA lists one row per box) into the first of them;
/// the others stay listed, as `duplicate-row`. Rows that disagree on the finding make the image
/// ambiguous: its first row is then excluded too, as `conflicting-labels`.
fn one_image_per_file(cands: &mut [Candidate]) {
    let mut first: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut conflicts = std::collections::BTreeMap::new();
    for i in 0..cands.len() {
        if cands[i].file.is_empty() {
            continue;
        }
        match first.get(&cands[i].file) {
            None => {
                first.insert(cands[i].file.clone(), i);
            }
            Some(&j) => {
                let (lead, finding) = (cands[j].source_row.clone(), cands[j].finding.clone());
                if cands[i].finding != finding {
                    conflicts
                        .entry(j)
                        .or_insert_with(|| (finding, cands[i].finding.clone()));
                }
                cands[i].drop(
                    "duplicate-row",
                    format!("same image as line {lead} (one row per box)"),
                );
            }
        }
    }
    for (j, (a, b)) in conflicts {
        cands[j].drop(
            "conflicting-labels",
            format!("rows for this image disagree: finding {a:?} and {b:?}"),
        );
    }
}
