//! `prep filter` on a DICOM source: the filter's metadata steps, then per film: look (read,
//! hash, header, judge the tags), name (in source order), convert (decode once, write the PNG).
//! A film's bytes are read twice (look, convert) so that no decoded image waits in memory.

use super::{check_image, read_header, render, DicomOptions, Header, Reject, Salt};
use crate::error::{Error, Result};
use crate::filter::{
    read_and_locate, unique_name, write_bag, FilterBag, FilterConfig, FilterOutcome, KeptFile,
    Located,
};
use crate::manifest::{
    describe_columns, hash_bytes, BagWriter, ColumnType, Record, RECORD_COLUMNS,
};
use crate::progress;
use crate::source::{Candidate, Class, DicomDesc, Kind};
use dicom_core::Tag;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What records.csv adds for a film, after the shared [`Record`] columns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DicomColumns {
    /// sha256 of the DICOM file the PNG was made from.
    pub dicom_sha256: String,
    pub dicom_bytes: u64,
    pub dicom_transfer_syntax: String,
    pub dicom_modality: String,
    pub dicom_body_part: String,
    pub dicom_photometric: String,
    pub dicom_bits_stored: u16,
    pub dicom_rescale_slope: Option<f64>,
    pub dicom_rescale_intercept: Option<f64>,
    pub dicom_output: super::Output,
    pub dicom_voi: String,
    pub dicom_png_shift: u32,
    pub burned_in_annotation: String,
}

/// One kept film: the shared record and the DICOM columns.
pub type DicomRecord = (Record, DicomColumns);

/// Column order of a DICOM filter bag's records.csv: the shared columns, then these.
pub const DICOM_COLUMNS: &[&str] = &[
    "dicom_sha256",
    "dicom_bytes",
    "dicom_transfer_syntax",
    "dicom_modality",
    "dicom_body_part",
    "dicom_photometric",
    "dicom_bits_stored",
    "dicom_rescale_slope",
    "dicom_rescale_intercept",
    "dicom_output",
    "dicom_voi",
    "dicom_png_shift",
    "burned_in_annotation",
];

/// A film looked at: its file's identity, header and the label its tags give.
struct Look {
    sha256: String,
    bytes: u64,
    header: Header,
    label: String,
    finding: String,
}

pub fn run(cfg: &FilterConfig, opts: &DicomOptions) -> Result<FilterOutcome> {
    let desc = cfg.source.dicom.clone().unwrap_or_default();
    let label_tag = desc
        .label_tag
        .as_deref()
        .map(super::parse_tag)
        .transpose()?;
    let Located {
        mut prov,
        warnings,
        mut candidates,
        files,
    } = read_and_locate(cfg)?;

    let looks = look_all(cfg, &desc, label_tag, &candidates, &files);
    let kept = name_films(&desc, &opts.salt, &mut candidates, looks);

    let writer = BagWriter::create(&cfg.out, cfg.force)?;
    let pb = progress::bar(kept.len() as u64, "converting");
    let converted: Vec<std::result::Result<DicomRecord, Reject>> = kept
        .par_iter()
        .map(|k| {
            let r = convert(cfg, opts, &writer, &candidates[k.index], k, &files);
            pb.inc(1);
            r
        })
        .collect::<Result<_>>()?;
    pb.finish_and_clear();
    let mut records = Vec::new();
    for (k, r) in kept.iter().zip(converted) {
        match r {
            Ok(rec) => records.push(rec),
            Err((code, detail)) => candidates[k.index].drop(&code, detail),
        }
    }
    records.sort_by(|a, b| a.0.path.cmp(&b.0.path));

    if desc.pseudonymise_files {
        pseudonymise(&opts.salt, &mut candidates);
    }
    prov.param("dicom_output", opts.output)
        .param("dicom_window", opts.window.map(|(c, w)| format!("{c},{w}")))
        .param("dicom_label_tag", &desc.label_tag)
        .param("dicom_body_parts", &desc.body_parts)
        .param("pseudonymise_files", desc.pseudonymise_files)
        .param("salt_file", opts.salt.file.to_string_lossy())
        .param("salt_fingerprint", opts.salt.fingerprint());
    let mut header: Vec<&str> = RECORD_COLUMNS.to_vec();
    header.extend_from_slice(DICOM_COLUMNS);
    let kept_files: Vec<KeptFile> = records
        .iter()
        .map(|(r, d)| KeptFile {
            sha256: &d.dicom_sha256,
            source_file: &r.source_file,
            path: &r.path,
        })
        .collect();
    let out = FilterBag {
        candidates: &candidates,
        files: &kept_files,
        header: &header,
        columns: columns(&header),
    };
    write_bag(cfg, writer, prov, &out, &records, warnings)
}

/// Read, hash and judge every located film in parallel (results in input order).
fn look_all(
    cfg: &FilterConfig,
    desc: &DicomDesc,
    label_tag: Option<Tag>,
    candidates: &[Candidate],
    files: &[Option<PathBuf>],
) -> Vec<(usize, std::result::Result<Look, Reject>)> {
    let todo: Vec<usize> = (0..candidates.len())
        .filter(|&i| files[i].is_some() && candidates[i].verdict.is_ok())
        .collect();
    let pb = progress::bar(todo.len() as u64, "reading headers");
    let out = todo
        .par_iter()
        .map(|&i| {
            let path = files[i].as_ref().expect("located");
            let r = match std::fs::read(path) {
                Err(e) => Err(("unreadable-dicom".to_string(), format!("cannot read: {e}"))),
                Ok(bytes) => look(cfg, desc, label_tag, &candidates[i], &bytes),
            };
            pb.inc(1);
            (i, r)
        })
        .collect();
    pb.finish_and_clear();
    out
}

/// One film's header, judged by the source's rules in this order: an image at all, modality,
/// view, body part, label, then what the decoder needs (frames, grey, size, bits, syntax).
fn look(
    cfg: &FilterConfig,
    desc: &DicomDesc,
    label_tag: Option<Tag>,
    cand: &Candidate,
    bytes: &[u8],
) -> std::result::Result<Look, Reject> {
    let obj = super::open(bytes)?;
    let phi = phi_values(&obj);
    let scrub = |(code, detail): Reject| (code, scrub(&detail, &phi));
    let h = read_header(&obj, label_tag).map_err(scrub)?;
    let (label, finding) = judge(cfg, desc, cand, &h).map_err(scrub)?;
    check_image(&h).map_err(scrub)?;
    Ok(Look {
        sha256: hash_bytes(bytes),
        bytes: bytes.len() as u64,
        header: h,
        label,
        finding,
    })
}

/// The tag rules of the source; Ok((label, finding)).
fn judge(
    cfg: &FilterConfig,
    desc: &DicomDesc,
    cand: &Candidate,
    h: &Header,
) -> std::result::Result<(String, String), Reject> {
    let src = &cfg.source;
    let r = |code: &str, detail: String| Err((code.to_string(), detail));
    if !h.has_pixels {
        return check_image(h).map(|_| unreachable!("no pixels is refused"));
    }
    if !src.is_xray(&h.modality) {
        return r(
            "not-xray",
            format!(
                "Modality (0008,0060) {:?} is not a radiograph ({})",
                h.modality,
                src.modality
                    .as_ref()
                    .map(|m| m.xray.join(", "))
                    .unwrap_or_default()
            ),
        );
    }
    if !src.views.frontal.is_empty() && !src.is_frontal(&h.view) {
        return r(
            "not-frontal",
            format!("ViewPosition (0018,5101) {:?} is not frontal", h.view),
        );
    }
    let body_ok = desc.body_parts.is_empty()
        || desc
            .body_parts
            .iter()
            .any(|b| b.trim().eq_ignore_ascii_case(h.body_part.trim()));
    if !body_ok {
        return r(
            "not-chest",
            format!(
                "BodyPartExamined (0018,0015) {:?} is not {}",
                h.body_part,
                desc.body_parts.join(" or ")
            ),
        );
    }
    match (&h.label_value, src.kind) {
        (Some(v), Kind::Folder) => match src.classify(v) {
            Class::Unlabelled => r(
                "unlabelled",
                format!("label tag value {v:?} is not a label"),
            ),
            c => Ok((c.label().to_string(), v.clone())),
        },
        _ => Ok((cand.verdict.clone().expect("kept"), cand.finding.clone())),
    }
}

/// A kept film and the name it gets.
struct Kept {
    index: usize,
    look: Look,
    rel: String,
    id: String,
}

/// In source order: apply each look's verdict, drop repeated files, give each film its name.
fn name_films(
    desc: &DicomDesc,
    salt: &Salt,
    candidates: &mut [Candidate],
    looks: Vec<(usize, std::result::Result<Look, Reject>)>,
) -> Vec<Kept> {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut taken = BTreeSet::new();
    let mut kept = Vec::new();
    for (i, res) in looks {
        let cand = &mut candidates[i];
        let look = match res {
            Err((code, detail)) => {
                cand.drop(&code, detail);
                continue;
            }
            Ok(l) => l,
        };
        let shown = if desc.pseudonymise_files {
            salt.file(&cand.file)
        } else {
            cand.file.clone()
        };
        if let Some(first) = seen.get(&look.sha256) {
            cand.drop("duplicate-file", format!("same bytes as {first}"));
            continue;
        }
        seen.insert(look.sha256.clone(), shown.clone());
        let stem = if desc.pseudonymise_files {
            shown
        } else {
            let name = Path::new(&cand.file)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let lower = name.to_ascii_lowercase();
            match [".dcm", ".dicom", ".dic"]
                .iter()
                .find(|e| lower.ends_with(*e))
            {
                Some(e) => name[..name.len() - e.len()].to_string(),
                None => name,
            }
        };
        let (rel, id) = unique_name(&look.label, Path::new(&format!("{stem}.png")), &mut taken);
        kept.push(Kept {
            index: i,
            look,
            rel,
            id,
        });
    }
    kept
}

/// Decode a kept film once, write its PNG, and make its record. Ok(Err) excludes the film
/// (its pixel data does not decode); Err stops the run (the file changed, a write failed).
fn convert(
    cfg: &FilterConfig,
    opts: &DicomOptions,
    writer: &BagWriter,
    cand: &Candidate,
    k: &Kept,
    files: &[Option<PathBuf>],
) -> Result<std::result::Result<DicomRecord, Reject>> {
    let src = files[k.index].as_ref().expect("located");
    let bytes = std::fs::read(src).map_err(|e| Error::read(src, e))?;
    if hash_bytes(&bytes) != k.look.sha256 {
        return Err(Error::bad_input(
            src,
            "file changed while prep was reading it",
        ));
    }
    let obj = match super::open(&bytes) {
        Ok(o) => o,
        Err(e) => return Ok(Err(e)),
    };
    let phi = phi_values(&obj);
    let h = &k.look.header;
    let samples = match super::decode(&obj, h) {
        Ok(s) => s,
        Err((code, detail)) => return Ok(Err((code, scrub(&detail, &phi)))),
    };
    drop(obj);
    let out = render(&samples, h, opts);
    let png = crate::inpaint::io::encode_png(&out.image)?;
    let sha = writer.write_payload(&format!("images/{}", k.rel), &png)?;
    let record = Record {
        id: k.id.clone(),
        path: format!("data/images/{}", k.rel),
        sha256: sha,
        bytes: png.len() as u64,
        width: samples.width,
        height: samples.height,
        source: cfg.source.name.clone(),
        patient_id: {
            // The table's patient column when it has one (the dataset's own key), else the tag.
            let raw = if cand.patient_id.is_empty() {
                &h.patient_id
            } else {
                &cand.patient_id
            };
            opts.salt.patient(raw)
        },
        view: h.view.clone(),
        label: k.look.label.clone(),
        finding: k.look.finding.clone(),
        source_file: match cfg
            .source
            .dicom
            .as_ref()
            .is_some_and(|d| d.pseudonymise_files)
        {
            true => opts.salt.file(&cand.file),
            false => cand.file.clone(),
        },
        source_row: cand.source_row.clone(),
    };
    let cols = DicomColumns {
        dicom_sha256: k.look.sha256.clone(),
        dicom_bytes: k.look.bytes,
        dicom_transfer_syntax: super::transfer_syntax_name(&h.transfer_syntax),
        dicom_modality: h.modality.clone(),
        dicom_body_part: h.body_part.clone(),
        dicom_photometric: h.photometric.clone(),
        dicom_bits_stored: h.bits_stored,
        dicom_rescale_slope: h.rescale.map(|r| r.0),
        dicom_rescale_intercept: h.rescale.map(|r| r.1),
        dicom_output: opts.output,
        dicom_voi: out.voi,
        dicom_png_shift: out.shift,
        burned_in_annotation: h.burned_in.clone(),
    };
    Ok(Ok((record, cols)))
}

/// The values of a film's identifying tags (and the parts of person names), to keep them out of
/// any message written about the film.
fn phi_values(obj: &dicom_object::DefaultDicomObject) -> Vec<String> {
    let mut out = Vec::new();
    for &t in super::PHI_TAGS {
        let v = super::text(obj, t);
        for part in std::iter::once(v.as_str()).chain(v.split(['^', '\\', ' '])) {
            let part = part.trim();
            if part.len() >= 3 && !out.iter().any(|o: &String| o == part) {
                out.push(part.to_string());
            }
        }
    }
    // Longest first, so a full name goes before its parts.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out
}

fn scrub(detail: &str, phi: &[String]) -> String {
    let mut d = detail.to_string();
    for v in phi {
        d = d.replace(v.as_str(), "[removed]");
    }
    d
}

/// For sources whose paths may identify patients: every excluded row names its file by the
/// salted hash, in its `file` column and in its detail.
fn pseudonymise(salt: &Salt, candidates: &mut [Candidate]) {
    for c in candidates.iter_mut() {
        let shown = salt.file(&c.file);
        if let Err((_, detail)) = &mut c.verdict {
            let base = Path::new(&c.file)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            // The whole path, then the file name (a search source reports the name alone).
            let mut d = detail.replace(c.file.as_str(), &shown);
            if base.len() >= 3 {
                d = d.replace(base.as_str(), &shown);
            }
            *detail = d;
        }
        if !c.file.is_empty() {
            c.file = shown;
        }
    }
}

fn columns(header: &[&str]) -> Vec<(String, ColumnType, String)> {
    use ColumnType::*;
    describe_columns(header, |c| {
        Some(match c {
            "sha256" => (Text, "SHA-256 of the PNG the film became."),
            "bytes" => (Integer, "Size of the PNG in bytes."),
            "patient_id" => (
                Text,
                "Salted SHA-256 of the PatientID (p + 16 hex digits); the salt is the data holder's secret.",
            ),
            "source_file" => (
                Text,
                "Path of the film in the dataset, or its salted hash (f + 16 hex digits) for sources whose paths identify patients.",
            ),
            "view" => (Text, "ViewPosition (0018,5101) of the film."),
            _ => return column(c),
        })
    })
}

/// Type and description of a DICOM column of records.csv (any bag that carries them).
pub fn column(c: &str) -> Option<(ColumnType, &'static str)> {
    use ColumnType::*;
    Some(match c {
            "dicom_sha256" => (Text, "SHA-256 of the original DICOM file."),
            "dicom_bytes" => (Integer, "Size of the original DICOM file in bytes."),
            "dicom_transfer_syntax" => (Text, "Transfer syntax of the original."),
            "dicom_modality" => (Text, "Modality (0008,0060)."),
            "dicom_body_part" => (Text, "BodyPartExamined (0018,0015)."),
            "dicom_photometric" => (
                Text,
                "PhotometricInterpretation of the original (MONOCHROME1 films are inverted in the PNG).",
            ),
            "dicom_bits_stored" => (Integer, "BitsStored (0028,0101)."),
            "dicom_rescale_slope" => (Float, "RescaleSlope (0028,1053), empty when absent."),
            "dicom_rescale_intercept" => (
                Float,
                "RescaleIntercept (0028,1052), empty when absent.",
            ),
            "dicom_output" => (
                Text,
                "raw16: stored values, lossless 16-bit; window8: 8-bit after the modality LUT and VOI.",
            ),
            "dicom_voi" => (Text, "The VOI applied (window8): window C,W, voi-lut, or none."),
            "dicom_png_shift" => (
                Integer,
                "raw16: bits the stored values were shifted left by (stored = PNG >> shift).",
            ),
            "burned_in_annotation" => (
                Text,
                "BurnedInAnnotation (0028,0301): YES means text (possibly identifying) is in the pixels.",
            ),
            _ => return None,
    })
}
