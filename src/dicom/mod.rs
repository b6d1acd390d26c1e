//! DICOM films: read an object's header, judge it, decode its pixel data (dicom-rs), and render
//! the grey image prep writes into a bag as PNG.
//!
//! Transfer syntaxes decoded (dicom-pixeldata 0.10): Implicit and Explicit VR Little Endian,
//! Explicit VR Big Endian, Deflated Explicit VR Little Endian, RLE Lossless, JPEG Baseline
//! (1.2.840.10008.1.2.4.50), JPEG Extended 8-bit (.51), JPEG Lossless (.57, .70) with
//! jpeg-decoder, JPEG 2000 (.90, .91) with the openjp2 port of OpenJPEG, JPEG-LS (.80, .81) with
//! CharLS (C++, built with cmake); 12-bit JPEG Extended, which jpeg-decoder refuses, with
//! libjpeg-turbo 3 ([`jpeg12`]). See docs/dicom.md.
//!
//! Nothing a header holds about the patient leaves this module except the PatientID, and that
//! only to be hashed with the user's salt (see [`Salt`]).

mod jpeg12;
pub mod pixels;
mod stage;

pub use stage::{column, run, DicomRecord, DICOM_COLUMNS};

use crate::error::{Error, Result};
use crate::filter::{MAX_ALLOC, MAX_SIDE};
use dicom_core::dictionary::DataDictionary;
use dicom_core::Tag;
use dicom_dictionary_std::{tags, StandardDataDictionary};
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use dicom_pixeldata::PixelDecoder;
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};
use pixels::{Lut, Samples, Transform, Voi, VoiFunction};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Which image a film becomes in the bag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Output {
    /// Lossless 16-bit grey PNG of the stored values (MONOCHROME1 inverted, left-aligned to 16
    /// bits); the rescale and window are recorded, not applied.
    Raw16,
    /// 8-bit grey PNG after the modality LUT and the VOI (the film's first VOI LUT or window, or
    /// --window), as a reader sees it.
    Window8,
}

/// A checked DICOM configuration for `prep filter`.
#[derive(Debug, Clone)]
pub struct DicomOptions {
    pub output: Output,
    /// `--window C,W`: replaces the films' own VOI (LINEAR function).
    pub window: Option<(f64, f64)>,
    pub salt: Salt,
}

/// The secret that patient ids and file paths are hashed with. It comes from a file the data
/// holder keeps (`--salt-file`), never from the bag: a salt stored beside the hashes would let
/// anyone holding the bag test guesses of a hospital's (guessable) patient numbers, and a random
/// one per run would make every run's output different and split two runs' bags of the same
/// patient apart. Same salt ⇒ same hashes ⇒ `prep split` groups a patient's films across bags.
#[derive(Clone)]
pub struct Salt {
    key: Vec<u8>,
    pub file: PathBuf,
}

impl std::fmt::Debug for Salt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Salt({}, {})", self.file.display(), self.fingerprint())
    }
}

/// Shortest salt accepted: 16 bytes is 128 bits if random, and refuses `--salt-file` on an
/// empty or one-word file.
pub const MIN_SALT_BYTES: usize = 16;

impl Salt {
    pub fn read(path: &Path) -> Result<Salt> {
        let bytes = std::fs::read(path).map_err(|e| Error::read(path, e))?;
        let key = bytes.trim_ascii().to_vec();
        if key.len() < MIN_SALT_BYTES {
            return Err(Error::bad_input(
                path,
                format!(
                    "salt is {} bytes; use at least {MIN_SALT_BYTES} random bytes (e.g. `head -c 32 /dev/urandom | base64 > salt.txt`) and keep the file private",
                    key.len()
                ),
            ));
        }
        Ok(Salt {
            key,
            file: path.to_path_buf(),
        })
    }

    fn hash(&self, domain: &str, value: &str) -> String {
        let mut h = Sha256::new();
        h.update(&self.key);
        h.update([0u8]);
        h.update(domain.as_bytes());
        h.update([0u8]);
        h.update(value.as_bytes());
        hex::encode(h.finalize())[..16].to_string()
    }

    /// The patient id written to records.csv: `p` and 16 hex digits; empty stays empty.
    pub fn patient(&self, id: &str) -> String {
        let id = id.trim();
        if id.is_empty() {
            String::new()
        } else {
            format!("p{}", self.hash("patient", id))
        }
    }

    /// The name that stands for a file's path in the bag.
    pub fn file(&self, path: &str) -> String {
        format!("f{}", self.hash("file", path))
    }

    /// Recorded in provenance so two bags can be seen to share a salt; a one-way hash of a
    /// secret of at least 128 bits says nothing about it.
    pub fn fingerprint(&self) -> String {
        self.hash("fingerprint", "")
    }
}

/// A reason code and a sentence, as excluded.csv writes them.
pub type Reject = (String, String);

fn reject(code: &str, detail: impl Into<String>) -> Reject {
    (code.to_string(), detail.into())
}

/// What prep uses from a header. PHI tags are not kept, except the PatientID to be hashed.
#[derive(Debug, Clone)]
pub struct Header {
    pub transfer_syntax: String,
    pub modality: String,
    pub view: String,
    pub body_part: String,
    /// BurnedInAnnotation (0028,0301): YES, NO, or empty when absent.
    pub burned_in: String,
    pub photometric: String,
    pub rows: u32,
    pub cols: u32,
    pub frames: u32,
    pub samples_per_pixel: u16,
    pub bits_allocated: u16,
    pub bits_stored: u16,
    pub high_bit: u16,
    pub signed: bool,
    pub rescale: Option<(f64, f64)>,
    pub voi: Voi,
    pub patient_id: String,
    /// The value of the source's label tag, when it names one.
    pub label_value: Option<String>,
    pub has_pixels: bool,
}

/// Tags whose values identify a person (PS3.15 Annex E basic profile, the ones radiograph
/// headers carry): never written anywhere, and refused as a label tag.
pub const PHI_TAGS: &[Tag] = &[
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_BIRTH_TIME,
    tags::PATIENT_ADDRESS,
    tags::PATIENT_TELEPHONE_NUMBERS,
    Tag(0x0010, 0x1000), // OtherPatientIDs (retired, still seen)
    tags::OTHER_PATIENT_NAMES,
    tags::PATIENT_BIRTH_NAME,
    tags::PATIENT_MOTHER_BIRTH_NAME,
    Tag(0x0010, 0x1090), // MedicalRecordLocator (retired)
    tags::ACCESSION_NUMBER,
    tags::INSTITUTION_NAME,
    tags::INSTITUTION_ADDRESS,
    tags::INSTITUTIONAL_DEPARTMENT_NAME,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::PERFORMING_PHYSICIAN_NAME,
    tags::OPERATORS_NAME,
    tags::NAME_OF_PHYSICIANS_READING_STUDY,
    tags::STATION_NAME,
    tags::DEVICE_SERIAL_NUMBER,
    tags::STUDY_ID,
    tags::STUDY_DATE,
    tags::STUDY_TIME,
    tags::STUDY_INSTANCE_UID,
    tags::SERIES_INSTANCE_UID,
    tags::SOP_INSTANCE_UID,
];

/// A tag named in a source description: a keyword (`StudyDescription`) or `(gggg,eeee)`.
pub fn parse_tag(s: &str) -> Result<Tag> {
    let tag = StandardDataDictionary
        .parse_tag(s.trim())
        .ok_or_else(|| Error::Usage(format!("{s:?} is not a DICOM tag keyword or (gggg,eeee)")))?;
    if PHI_TAGS.contains(&tag) {
        return Err(Error::Usage(format!(
            "{s:?} identifies the patient and cannot be a label tag"
        )));
    }
    Ok(tag)
}

/// Parse the bytes of a file: the 128-byte preamble, `DICM`, the file meta group, the data set.
pub fn open(bytes: &[u8]) -> std::result::Result<DefaultDicomObject, Reject> {
    if bytes.len() < 132 || &bytes[128..132] != b"DICM" {
        return Err(reject(
            "not-dicom",
            "no DICOM preamble (the bytes 128..132 are not \"DICM\")",
        ));
    }
    check_lengths(&bytes[132..]).map_err(|d| reject("unreadable-dicom", d))?;
    OpenFileOptions::new()
        .read_preamble(dicom_object::file::ReadPreamble::Never)
        .from_reader(&bytes[128..])
        .map_err(|e| reject("unreadable-dicom", format!("cannot parse: {}", chain(&e))))
}

/// Refuse an element that claims more bytes than the file holds, before dicom-rs reads it: its
/// parser zero-fills a buffer of the declared length first, so a 3 KB file claiming 4 GB would
/// take 4 GB. Walks the element headers (file meta group, then the data set in its transfer
/// syntax), into sequences, items and encapsulated pixel data. Written by hand because
/// dicom-parser offers no length limit. Deflated data sets are not scanned (their bytes are
/// compressed); implicit-VR sequences of defined length are checked as a whole.
fn check_lengths(body: &[u8]) -> std::result::Result<(), String> {
    const LONG_VRS: &[&[u8; 2]] = &[
        b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV",
    ];
    const UNDEFINED: u32 = 0xFFFF_FFFF;
    let (mut p, mut ts, mut in_meta) = (0usize, String::new(), true);
    let (mut explicit, mut big, mut in_pixels) = (true, false, false);
    while p + 8 <= body.len() {
        let u16_at = |i: usize, big: bool| {
            let b = [body[i], body[i + 1]];
            if big {
                u16::from_be_bytes(b)
            } else {
                u16::from_le_bytes(b)
            }
        };
        let u32_at = |i: usize, big: bool| {
            let b = [body[i], body[i + 1], body[i + 2], body[i + 3]];
            if big {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        // The file meta group is explicit VR little endian; the data set follows its syntax.
        if in_meta && u16::from_le_bytes([body[p], body[p + 1]]) != 0x0002 {
            in_meta = false;
            match ts.trim_end_matches(['\0', ' ']) {
                "1.2.840.10008.1.2" => explicit = false,
                "1.2.840.10008.1.2.2" => big = true,
                "1.2.840.10008.1.2.1.99" => return Ok(()),
                _ => {}
            }
        }
        let (group, elem) = (u16_at(p, big), u16_at(p + 2, big));
        let (vr, len, header) = if group == 0xFFFE {
            (None, u32_at(p + 4, big), 8)
        } else if explicit {
            let vr = [body[p + 4], body[p + 5]];
            if LONG_VRS.contains(&&vr) {
                if p + 12 > body.len() {
                    return Ok(());
                }
                (Some(vr), u32_at(p + 8, big), 12)
            } else {
                (Some(vr), u16_at(p + 6, big) as u32, 8)
            }
        } else {
            (None, u32_at(p + 4, big), 8)
        };
        p += header;
        let left = body.len() - p;
        if in_meta && (group, elem) == (0x0002, 0x0010) && (len as usize) <= left {
            ts = String::from_utf8_lossy(&body[p..p + len as usize]).into_owned();
        }
        match (group, elem) {
            (0xFFFE, 0xE000) if in_pixels && len != UNDEFINED => {} // a fragment: skip it
            (0xFFFE, 0xE0DD) => {
                in_pixels = false;
                continue;
            }
            (0xFFFE, _) => continue, // an item or item delimiter: look inside
            _ if len == UNDEFINED => {
                in_pixels = (group, elem) == (0x7FE0, 0x0010);
                continue;
            }
            _ if vr == Some(*b"SQ") => continue,
            _ => {}
        }
        if len as usize > left {
            return Err(format!(
                "element ({group:04X},{elem:04X}) claims {len} bytes, the file has {left} left"
            ));
        }
        p += len as usize;
    }
    Ok(())
}

/// An error and its causes, one sentence (dicom-rs puts the useful part in the sources).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let c_s = c.to_string();
        if !out.contains(&c_s) {
            out.push_str(": ");
            out.push_str(&c_s);
        }
        cur = c.source();
    }
    out
}

fn text(obj: &InMemDicomObject, tag: Tag) -> String {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim().trim_end_matches('\0').trim().to_string())
        .unwrap_or_default()
}

fn uint(obj: &InMemDicomObject, tag: Tag) -> Option<u32> {
    obj.get(tag).and_then(|e| e.to_int::<u32>().ok())
}

fn floats(obj: &InMemDicomObject, tag: Tag) -> Vec<f64> {
    obj.get(tag)
        .and_then(|e| e.to_multi_float64().ok())
        .unwrap_or_default()
}

/// Read what prep needs from the header; `label_tag` is the source's label tag, if any.
pub fn read_header(
    file: &DefaultDicomObject,
    label_tag: Option<Tag>,
) -> std::result::Result<Header, Reject> {
    let obj: &InMemDicomObject = file;
    let need = |tag: Tag, name: &str| {
        uint(obj, tag).ok_or_else(|| reject("bad-header", format!("no {name}")))
    };
    let has_pixels = obj.get(tags::PIXEL_DATA).is_some();
    let (rows, cols, spp, ba, bs, hb, pr) = if has_pixels {
        let ba = need(tags::BITS_ALLOCATED, "BitsAllocated (0028,0100)")? as u16;
        let bs = uint(obj, tags::BITS_STORED).map_or(ba, |v| v as u16);
        (
            need(tags::ROWS, "Rows (0028,0010)")?,
            need(tags::COLUMNS, "Columns (0028,0011)")?,
            uint(obj, tags::SAMPLES_PER_PIXEL).map_or(1, |v| v as u16),
            ba,
            bs,
            uint(obj, tags::HIGH_BIT).map_or(bs.saturating_sub(1), |v| v as u16),
            uint(obj, tags::PIXEL_REPRESENTATION).map_or(0, |v| v as u16),
        )
    } else {
        (0, 0, 0, 0, 0, 0, 0)
    };
    let slope = floats(obj, tags::RESCALE_SLOPE).first().copied();
    let intercept = floats(obj, tags::RESCALE_INTERCEPT).first().copied();
    let rescale = match (slope, intercept) {
        (Some(m), Some(b)) if m.is_finite() && b.is_finite() => Some((m, b)),
        _ => None,
    };
    let signed = pr == 1;
    Ok(Header {
        transfer_syntax: file
            .meta()
            .transfer_syntax()
            .trim_end_matches('\0')
            .to_string(),
        modality: text(obj, tags::MODALITY),
        view: text(obj, tags::VIEW_POSITION),
        body_part: text(obj, tags::BODY_PART_EXAMINED),
        burned_in: text(obj, tags::BURNED_IN_ANNOTATION).to_ascii_uppercase(),
        photometric: text(obj, tags::PHOTOMETRIC_INTERPRETATION).to_ascii_uppercase(),
        rows,
        cols,
        frames: text(obj, tags::NUMBER_OF_FRAMES).parse().unwrap_or(1),
        samples_per_pixel: spp,
        bits_allocated: ba,
        bits_stored: bs,
        high_bit: hb,
        signed,
        rescale,
        voi: read_voi(obj, signed)?,
        patient_id: text(obj, tags::PATIENT_ID),
        label_value: label_tag.map(|t| text(obj, t)),
        has_pixels,
    })
}

/// The first VOI LUT if there is one, else the first window (pydicom's `prefer_lut`).
fn read_voi(obj: &InMemDicomObject, signed: bool) -> std::result::Result<Voi, Reject> {
    if let Some(item) = obj
        .get(tags::VOILUT_SEQUENCE)
        .and_then(|e| e.items())
        .and_then(|i| i.first())
    {
        let desc: Vec<i64> = item
            .get(tags::LUT_DESCRIPTOR)
            .and_then(|e| e.to_multi_int::<i64>().ok())
            .unwrap_or_default();
        let data: Vec<u16> = item
            .get(tags::LUT_DATA)
            .and_then(|e| e.to_multi_int::<u16>().ok())
            .unwrap_or_default();
        if desc.len() == 3 && !data.is_empty() {
            let entries = if desc[0] == 0 {
                65536
            } else {
                desc[0] as usize
            };
            // The first mapped value is US or SS as the pixel data is.
            let first = if signed && desc[1] > 32767 {
                desc[1] - 65536
            } else {
                desc[1]
            };
            let bits = desc[2] as u16;
            if !(bits == 8 || (10..=16).contains(&bits)) {
                return Err(reject(
                    "unsupported-voi",
                    format!("VOI LUT of {bits} bits per entry (8 or 10-16 expected)"),
                ));
            }
            let mut data = data;
            data.truncate(entries);
            return Ok(Voi::Lut(Lut {
                first_mapped: first,
                bits,
                data,
            }));
        }
    }
    let (c, w) = (
        floats(obj, tags::WINDOW_CENTER),
        floats(obj, tags::WINDOW_WIDTH),
    );
    match (c.first(), w.first()) {
        (Some(&center), Some(&width)) => {
            let f = text(obj, tags::VOILUT_FUNCTION);
            let function = VoiFunction::parse(&f).ok_or_else(|| {
                reject(
                    "unsupported-voi",
                    format!("VOI LUT function {f:?} (LINEAR, LINEAR_EXACT or SIGMOID expected)"),
                )
            })?;
            pixels::check_window(center, width, function).map_err(|d| reject("bad-window", d))?;
            Ok(Voi::Window {
                center,
                width,
                function,
            })
        }
        _ => Ok(Voi::None),
    }
}

/// Is this a single grey frame prep can decode, of a sane size? Checked before any pixel memory
/// is taken (a header may claim 60000×60000 with no pixels behind it).
pub fn check_image(h: &Header) -> std::result::Result<(), Reject> {
    if !h.has_pixels {
        return Err(reject(
            "no-pixel-data",
            "not an image: no Pixel Data (7FE0,0010) (a report, presentation state or other non-image object)",
        ));
    }
    if h.frames > 1 {
        return Err(reject(
            "multi-frame",
            format!("{} frames; a radiograph is one", h.frames),
        ));
    }
    if h.samples_per_pixel != 1 || !matches!(h.photometric.as_str(), "MONOCHROME1" | "MONOCHROME2")
    {
        return Err(reject(
            "not-greyscale",
            format!(
                "{} with {} sample(s) per pixel; radiographs are MONOCHROME1 or MONOCHROME2",
                if h.photometric.is_empty() {
                    "no photometric interpretation"
                } else {
                    &h.photometric
                },
                h.samples_per_pixel
            ),
        ));
    }
    if h.rows == 0 || h.cols == 0 {
        return Err(reject(
            "bad-header",
            format!("{}x{} image has no pixels", h.cols, h.rows),
        ));
    }
    if h.rows > MAX_SIDE || h.cols > MAX_SIDE {
        return Err(reject(
            "image-too-large",
            format!("{}x{} exceeds {MAX_SIDE} px per side", h.cols, h.rows),
        ));
    }
    if !matches!(h.bits_allocated, 8 | 16) || h.bits_stored == 0 || h.bits_stored > h.bits_allocated
    {
        return Err(reject(
            "unsupported-bits",
            format!(
                "{} bits stored in {} allocated (8 or 16 allocated expected)",
                h.bits_stored, h.bits_allocated
            ),
        ));
    }
    if h.high_bit >= h.bits_allocated || h.high_bit + 1 < h.bits_stored {
        return Err(reject(
            "bad-header",
            format!(
                "high bit {} does not fit {} bits stored in {} allocated",
                h.high_bit, h.bits_stored, h.bits_allocated
            ),
        ));
    }
    // JPEG Extended samples are 8 or 12 bits (ISO 10918-1 B.2.2).
    if h.transfer_syntax == JPEG_EXTENDED && h.bits_stored > 12 {
        return Err(reject(
            "unsupported-bits",
            format!(
                "JPEG Extended with {} bits stored ({JPEG_EXTENDED}): at most 12",
                h.bits_stored
            ),
        ));
    }
    match TransferSyntaxRegistry.get(&h.transfer_syntax) {
        Some(ts) if ts.can_decode_all() => Ok(()),
        Some(ts) => Err(reject(
            "unsupported-transfer-syntax",
            format!(
                "{} ({}) is not decoded by this build",
                ts.name(),
                h.transfer_syntax
            ),
        )),
        None => Err(reject(
            "unsupported-transfer-syntax",
            format!("unknown transfer syntax {:?}", h.transfer_syntax),
        )),
    }
}

const JPEG_EXTENDED: &str = "1.2.840.10008.1.2.4.51";

/// The name of a transfer syntax UID, for records.
pub fn transfer_syntax_name(uid: &str) -> String {
    TransferSyntaxRegistry
        .get(uid)
        .map(|ts| ts.name().to_string())
        .unwrap_or_else(|| uid.to_string())
}

/// Decode the pixel data of a checked film into stored sample values.
pub fn decode(file: &DefaultDicomObject, h: &Header) -> std::result::Result<Samples, Reject> {
    let n = h.rows as usize * h.cols as usize;
    let bytes_per = (h.bits_allocated / 8) as usize;
    if (n * bytes_per) as u64 > MAX_ALLOC {
        return Err(reject(
            "image-too-large",
            format!("{} bytes of pixels exceed {MAX_ALLOC}", n * bytes_per),
        ));
    }
    let native = !matches!(
        file.get(tags::PIXEL_DATA).map(|e| e.value()),
        Some(dicom_core::DicomValue::PixelSequence(_))
    );
    // jpeg-decoder has no 12-bit DCT: those frames go to libjpeg-turbo.
    let (decoded, twelve);
    let data: &[u8] = if h.transfer_syntax == JPEG_EXTENDED && h.bits_stored > 8 {
        twelve = jpeg12::decode(file, h)?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>();
        &twelve
    } else {
        decoded = file.decode_pixel_data().map_err(|e| {
            reject(
                "unreadable-dicom",
                format!("cannot decode pixel data: {}", chain(&e)),
            )
        })?;
        decoded.data()
    };
    if data.len() < n * bytes_per {
        return Err(reject(
            "truncated-pixel-data",
            format!(
                "{} bytes of pixel data for {}x{} at {} bits ({} needed)",
                data.len(),
                h.cols,
                h.rows,
                h.bits_allocated,
                n * bytes_per
            ),
        ));
    }
    // Native data keeps its bits where HighBit says (other bits may hold overlays); the codecs
    // hand back samples in the low bits.
    let shift = if native {
        (h.high_bit + 1 - h.bits_stored) as u32
    } else {
        0
    };
    let bs = h.bits_stored as u32;
    let mask: u32 = if bs >= 32 { u32::MAX } else { (1 << bs) - 1 };
    let sign = 1u32 << (bs - 1);
    let value = |raw: u32| -> i32 {
        let v = (raw >> shift) & mask;
        if h.signed && v & sign != 0 {
            v as i32 - (1i64 << bs) as i32
        } else {
            v as i32
        }
    };
    let values: Vec<i32> = if bytes_per == 1 {
        data[..n].iter().map(|&b| value(b as u32)).collect()
    } else {
        data[..2 * n]
            .chunks_exact(2)
            .map(|c| value(u16::from_le_bytes([c[0], c[1]]) as u32))
            .collect()
    };
    Ok(Samples {
        width: h.cols,
        height: h.rows,
        bits_stored: h.bits_stored,
        signed: h.signed,
        values,
    })
}

/// The encapsulated bytes of a single-frame film (its fragments, in order).
fn frame_bytes(file: &DefaultDicomObject) -> std::result::Result<Vec<u8>, Reject> {
    match file.get(tags::PIXEL_DATA).map(|e| e.value()) {
        Some(dicom_core::DicomValue::PixelSequence(seq)) => Ok(seq.fragments().concat()),
        _ => Err(reject(
            "unreadable-dicom",
            "compressed transfer syntax without encapsulated pixel data",
        )),
    }
}

/// How a film was rendered, for its record.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub image: image::DynamicImage,
    /// The VOI applied (`window8`), empty for `raw16`.
    pub voi: String,
    /// Bits the stored values were shifted left by (`raw16`), 0 for `window8`.
    pub shift: u32,
}

/// The image of a decoded film in the chosen output form.
pub fn render(s: &Samples, h: &Header, opts: &DicomOptions) -> Rendered {
    let monochrome1 = h.photometric == "MONOCHROME1";
    match opts.output {
        Output::Raw16 => {
            let (v, shift) = pixels::raw16(s, monochrome1);
            Rendered {
                image: image::DynamicImage::ImageLuma16(
                    image::ImageBuffer::from_raw(s.width, s.height, v).expect("sized"),
                ),
                voi: String::new(),
                shift,
            }
        }
        Output::Window8 => {
            let voi = match opts.window {
                Some((center, width)) => Voi::Window {
                    center,
                    width,
                    function: VoiFunction::Linear,
                },
                None => h.voi.clone(),
            };
            let t = Transform {
                rescale: h.rescale,
                voi,
                monochrome1,
            };
            let v = pixels::window8(s, &t);
            Rendered {
                image: image::DynamicImage::ImageLuma8(
                    image::ImageBuffer::from_raw(s.width, s.height, v).expect("sized"),
                ),
                voi: t.voi.describe(),
                shift: 0,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn salt(key: &str) -> Salt {
        Salt {
            key: key.as_bytes().to_vec(),
            file: PathBuf::from("salt.txt"),
        }
    }

    #[test]
    fn hashes_depend_on_the_salt_and_nothing_else() {
        let (a, b) = (salt("0123456789abcdef-a"), salt("0123456789abcdef-b"));
        assert_eq!(a.patient("MRN-1"), a.patient(" MRN-1 "));
        assert_ne!(a.patient("MRN-1"), b.patient("MRN-1"));
        assert_ne!(a.patient("MRN-1"), a.patient("MRN-2"));
        assert_ne!(a.patient("x"), a.file("x"), "domains are separate");
        assert_eq!(a.patient(""), "");
        assert!(a.patient("MRN-1").starts_with('p') && a.patient("MRN-1").len() == 17);
        assert!(a.file("a/b.dcm").starts_with('f') && a.file("a/b.dcm").len() == 17);
    }

    #[test]
    fn identifying_tags_cannot_be_label_tags() {
        assert!(parse_tag("PatientName").is_err());
        assert!(parse_tag("(0010,0020)").is_err());
        assert!(parse_tag("NoSuchKeyword").is_err());
        assert_eq!(
            parse_tag("StudyDescription").unwrap(),
            tags::STUDY_DESCRIPTION
        );
    }

    #[test]
    fn an_element_claiming_more_than_the_file_is_refused_before_parsing() {
        let mut b = vec![0u8; 128];
        b.extend_from_slice(b"DICM");
        let ts = b"1.2.840.10008.1.2.1\0";
        b.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I', ts.len() as u8, 0]);
        b.extend_from_slice(ts);
        b.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0]);
        b.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        b.extend_from_slice(&[0u8; 64]);
        let (code, detail) = open(&b).unwrap_err();
        assert_eq!(code, "unreadable-dicom");
        assert!(
            detail.contains("(7FE0,0010) claims 4294967280 bytes"),
            "{detail}"
        );
    }

    #[test]
    fn files_without_the_preamble_are_not_dicom() {
        assert_eq!(open(b"").unwrap_err().0, "not-dicom");
        let mut b = vec![0u8; 200];
        b[128..132].copy_from_slice(b"DICM");
        assert_eq!(open(&b).unwrap_err().0, "unreadable-dicom");
    }
}
