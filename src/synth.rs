//! Synthetic data laid out like the real sources, for the demo and for tests: chest-like
//! radiographs (optionally with burned-in text, L/R markers and arrows) and a Cohen-style
//! metadata.csv that carries the real file's traps. Nothing here is downloaded.

use crate::error::{Error, Result};
use image::{GrayImage, Luma, RgbImage};
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// splitmix64: a tiny, fully specified generator. Written by hand (not `rand`) so that the
/// synthetic data stays byte-identical across crate upgrades and platforms.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded from (seed, item id): never from order or threads.
    pub fn new(seed: u64, id: &str) -> Rng {
        // FNV-1a of the id, combined with the fully mixed seed (a plain XOR of seed and id
        // bytes lets different (seed, id) pairs collide).
        let mut h = 0xCBF2_9CE4_8422_2325u64;
        for b in id.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01B3);
        }
        let mut s = Rng(seed);
        Rng(h ^ s.next_u64())
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }
    pub fn below(&mut self, n: u32) -> u32 {
        (self.next_u64() % n.max(1) as u64) as u32
    }
}

/// What to burn into a synthetic radiograph.
#[derive(Debug, Clone, Copy, Default)]
pub struct Burn {
    pub text: bool,
    pub marker: bool,
    pub arrow: bool,
}

/// Where a "SAMPLE"-like block-letter watermark is drawn on a 256-px film (five letters of
/// 6-px cells starting at (60, 180)): the shared fixture of the source-watermark tests, which
/// blend it in at 35 % alpha.
pub fn watermark_at(x: u32, y: u32) -> bool {
    let (x0, y0, s) = (60u32, 180u32, 6u32);
    if y < y0 || y >= y0 + 7 * s || x < x0 {
        return false;
    }
    let (cx, cy) = ((x - x0) / s, (y - y0) / s);
    let (letter, col) = (cx / 6, cx % 6);
    if letter >= 5 || col == 5 {
        return false;
    }
    match letter % 3 {
        0 => col == 0 || cy == 0 || cy == 6,
        1 => col == 0 || col == 4 || cy == 3,
        _ => cy == 0 || col == 2,
    }
}

/// A chest-like grey radiograph: body, two darker lung fields, spine, ribs, film grain.
/// `disease` adds a hazy opacity in one lung (so two classes can be told apart).
pub fn chest_image(w: u32, h: u32, seed: u64, id: &str, disease: f32, burn: Burn) -> GrayImage {
    let mut rng = Rng::new(seed, id);
    let (wf, hf) = (w as f32, h as f32);
    let cx = wf * rng.range(0.47, 0.53);
    let tilt = rng.range(-0.03, 0.03);
    let lung_w = wf * rng.range(0.15, 0.19);
    let lung_h = hf * rng.range(0.30, 0.36);
    let lung_y = hf * rng.range(0.42, 0.48);
    let opacity_side = if rng.unit() < 0.5 { -1.0 } else { 1.0 };
    let opacity_y = lung_y + lung_h * rng.range(-0.2, 0.4);
    // Any phase will do; 6.28 (not TAU) keeps every generated fixture byte-identical to the
    // ones earlier runs and snapshots were made from.
    #[allow(clippy::approx_constant)]
    let rib_phase = rng.range(0.0, 6.28);
    // Different people differ in rib spacing and curvature and in vessel markings: without this
    // variety every synthetic film would be a near-duplicate of every other.
    let rib_freq = rng.range(24.0, 48.0);
    let rib_curve = rng.range(8.0, 30.0);
    let blobs: Vec<(f32, f32, f32, f32)> = (0..(6 + rng.below(8)))
        .map(|_| {
            let side = if rng.unit() < 0.5 { -1.0 } else { 1.0 };
            (
                cx + side * wf * rng.range(0.08, 0.32),
                hf * rng.range(0.2, 0.75),
                wf * rng.range(0.015, 0.05),
                rng.range(-25.0, 25.0),
            )
        })
        .collect();
    let mut img = GrayImage::new(w, h);
    for y in 0..h {
        for x in 0..w {
            let (xf, yf) = (x as f32, y as f32);
            let dx = xf - cx - tilt * (yf - hf * 0.5);
            // Body: a bright ellipse fading to a dark background.
            let body =
                1.0 - ((dx / (wf * 0.42)).powi(2) + ((yf - hf * 0.55) / (hf * 0.55)).powi(2));
            let mut v = 40.0 + 120.0 * body.clamp(0.0, 1.0).sqrt();
            // Lungs: darker ellipses either side of the spine.
            for side in [-1.0f32, 1.0] {
                let lx = (dx - side * wf * 0.2) / lung_w;
                let ly = (yf - lung_y) / lung_h;
                let r = lx * lx + ly * ly;
                if r < 1.0 {
                    let depth = (1.0 - r).sqrt();
                    v -= 70.0 * depth;
                    // Ribs: bright bands curving across the lungs.
                    let rib = ((yf / hf * rib_freq + (dx / wf).powi(2) * rib_curve + rib_phase)
                        .sin())
                    .max(0.0);
                    v += 22.0 * rib.powi(3) * depth;
                    if disease > 0.0 && side == opacity_side {
                        let oy = (yf - opacity_y) / (lung_h * 0.5);
                        let od = 1.0 - (lx * lx * 1.5 + oy * oy);
                        if od > 0.0 {
                            v += disease * 60.0 * od;
                        }
                    }
                }
            }
            for &(bx, by, br, amp) in &blobs {
                let d = ((xf - bx).powi(2) + (yf - by).powi(2)) / (br * br);
                if d < 4.0 {
                    v += amp * (-d).exp();
                }
            }
            // Spine and mediastinum.
            let s = (dx / (wf * 0.05)).powi(2);
            if s < 1.0 {
                v += 45.0 * (1.0 - s);
            }
            v += rng.range(-6.0, 6.0);
            img.put_pixel(x, y, Luma([v.clamp(0.0, 255.0) as u8]));
        }
    }
    let white = Luma([rng.range(235.0, 255.0) as u8]);
    let scale = (w.min(h) / 128).max(1);
    if burn.text {
        let text = ["PORTABLE", "AP ERECT", "SUPINE", "MOBILE"][rng.below(4) as usize];
        let tx = (wf * rng.range(0.02, 0.10)) as u32;
        let ty = (hf * rng.range(0.02, 0.08)) as u32;
        draw_text(&mut img, tx, ty, scale, text, white);
        draw_text(&mut img, tx, ty + 9 * scale, scale, "2020-03-21", white);
    }
    if burn.marker {
        let m = if rng.unit() < 0.5 { "L" } else { "R" };
        let mx = (wf * rng.range(0.80, 0.90)) as u32;
        let my = (hf * rng.range(0.05, 0.15)) as u32;
        draw_text(&mut img, mx, my, scale * 2, m, white);
    }
    if burn.arrow {
        let (x0, y0) = (cx + wf * 0.32, lung_y - lung_h * 0.6);
        let (x1, y1) = (cx + wf * 0.22, lung_y - lung_h * 0.1);
        let t = scale.max(1) as f32;
        for k in 0..(2 * scale) {
            let o = k as f32 - t;
            imageproc::drawing::draw_line_segment_mut(&mut img, (x0 + o, y0), (x1 + o, y1), white);
            imageproc::drawing::draw_line_segment_mut(
                &mut img,
                (x1 + o, y1),
                (x1 + o + 6.0 * t, y1 - 2.0 * t),
                white,
            );
            imageproc::drawing::draw_line_segment_mut(
                &mut img,
                (x1 + o, y1),
                (x1 + o + 1.0 * t, y1 - 7.0 * t),
                white,
            );
        }
    }
    img
}

/// 5×7 bitmap glyphs for the few characters burned into radiographs. A font crate would need a
/// font file; these strokes are all the demo needs.
fn glyph(c: char) -> [u8; 7] {
    match c {
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x19, 0x15, 0x13, 0x11, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        _ => [0; 7],
    }
}

fn draw_text(img: &mut GrayImage, x: u32, y: u32, scale: u32, text: &str, color: Luma<u8>) {
    for (i, c) in text.chars().enumerate() {
        let g = glyph(c);
        for (row, bits) in g.iter().enumerate() {
            for col in 0..5u32 {
                if bits & (0x10 >> col) != 0 {
                    for sy in 0..scale {
                        for sx in 0..scale {
                            let px = x + (i as u32 * 6 + col) * scale + sx;
                            let py = y + row as u32 * scale + sy;
                            if px < img.width() && py < img.height() {
                                img.put_pixel(px, py, color);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One row of the synthetic Cohen metadata, with the verdict `prep filter` must reach.
#[derive(Debug, Clone)]
pub struct SynthRow {
    pub line: u64,
    pub patient_id: String,
    pub finding: String,
    pub pcr: String,
    pub view: String,
    pub modality: String,
    pub folder: String,
    pub filename: String,
    /// Expected outcome in the default (COVID) mode: Ok(label) or Err(reason code).
    pub expect_covid: std::result::Result<String, String>,
    /// Expected outcome with --label-others.
    pub expect_others: std::result::Result<String, String>,
}

/// A Cohen-layout dataset: DIR/metadata.csv and DIR/images/*. Carries the real file's traps:
/// lateral and CT rows (CT slices inside images/), several images per patient, string patient
/// ids, an alias pair, todo/Unknown findings, a trailing space, legacy `COVID-19` findings and
/// view spellings, PCR Y/Unclear/blank, unquoted commas, a missing file, a path that tries to
/// leave the dataset, a truncated image, an exact duplicate file, RGB and JPEG images.
pub fn cohen_like(dir: &Path, seed: u64, side: u32) -> Result<Vec<SynthRow>> {
    let images = dir.join("images");
    fs::create_dir_all(&images).map_err(|e| Error::write(&images, e))?;
    let covid = "Pneumonia/Viral/COVID-19";
    let ok = |l: &str| Ok(l.to_string());
    let no = |r: &str| Err(r.to_string());
    // (patient, finding, pcr, view, modality, file, kind of file, expect covid, expect others)
    type Spec<'a> = (
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        FileKind,
        std::result::Result<String, String>,
        std::result::Result<String, String>,
    );
    use FileKind::*;
    let specs: Vec<Spec> = vec![
        (
            "1",
            covid,
            "Y",
            "PA",
            "X-ray",
            "covid-1a.png",
            Png(0.8),
            ok("covid"),
            no("is-covid"),
        ),
        (
            "1",
            covid,
            "Y",
            "AP Supine",
            "X-ray",
            "covid-1b.jpg",
            Jpeg(0.9),
            ok("covid"),
            no("is-covid"),
        ),
        (
            "1",
            covid,
            "Y",
            "L",
            "X-ray",
            "covid-1-lateral.png",
            Png(0.8),
            no("not-frontal"),
            no("not-frontal"),
        ),
        (
            "2",
            covid,
            "Unclear",
            "AP",
            "X-ray",
            "covid-2.png",
            RgbPng(0.7),
            ok("covid"),
            no("is-covid"),
        ),
        (
            "311a",
            "COVID-19",
            "",
            "AP Erect",
            "X-ray",
            "legacy-311a.PNG",
            Png(0.9),
            ok("covid"),
            no("is-covid"),
        ),
        (
            "3",
            covid,
            "Y",
            "Axial",
            "CT",
            "ct-slice-3.png",
            Png(0.5),
            no("not-xray"),
            no("not-xray"),
        ),
        (
            "4",
            covid,
            "Y",
            "APS",
            "X-ray",
            "covid-4.png",
            Png(0.6),
            ok("covid"),
            no("is-covid"),
        ),
        (
            "87",
            covid,
            "Y",
            "PA",
            "X-ray",
            "alias-87.png",
            Png(0.7),
            ok("covid"),
            no("is-covid"),
        ),
        (
            "462",
            covid,
            "Y",
            "PA",
            "X-ray",
            "alias-462.png",
            Png(0.7),
            ok("covid"),
            no("is-covid"),
        ),
        (
            "5",
            "No Finding",
            "",
            "PA",
            "X-ray",
            "healthy-5.png",
            Png(0.0),
            no("not-covid"),
            ok("healthy"),
        ),
        (
            "1",
            "No Finding",
            "Y",
            "PA",
            "X-ray",
            "prior-1.png",
            Png(0.0),
            no("not-covid"),
            ok("healthy"),
        ),
        (
            "6",
            "Pneumonia/Bacterial/Klebsiella",
            "",
            "PA",
            "X-ray",
            "kleb-6.jpg",
            Jpeg(0.6),
            no("not-covid"),
            ok("diseased"),
        ),
        (
            "7",
            "Pneumonia/Viral/Herpes ",
            "",
            "AP",
            "X-ray",
            "herpes-7.png",
            Png(0.6),
            no("not-covid"),
            ok("diseased"),
        ),
        (
            "8",
            "todo",
            "",
            "AP",
            "X-ray",
            "todo-8.png",
            Png(0.4),
            no("unlabelled"),
            no("unlabelled"),
        ),
        (
            "9",
            "Unknown",
            "",
            "PA",
            "X-ray",
            "unknown-9.png",
            Png(0.4),
            no("unlabelled"),
            no("unlabelled"),
        ),
        (
            "10",
            covid,
            "Y",
            "PA",
            "X-ray",
            "missing-10.png",
            Missing,
            no("file-missing"),
            no("is-covid"),
        ),
        (
            "11",
            covid,
            "Y",
            "PA",
            "X-ray",
            "../../outside.png",
            Missing,
            no("unsafe-path"),
            no("is-covid"),
        ),
        (
            "12",
            covid,
            "Y",
            "PA",
            "X-ray",
            "truncated-12.png",
            Truncated,
            no("unreadable-image"),
            no("is-covid"),
        ),
        (
            "13",
            covid,
            "Y",
            "PA",
            "X-ray",
            "copy-of-covid-1a.png",
            CopyOf("covid-1a.png"),
            no("duplicate-file"),
            no("is-covid"),
        ),
        (
            "14",
            "Pneumonia/Viral/MERS-CoV",
            "",
            "PA",
            "X-ray",
            "mers-14.png",
            Png(0.5),
            no("not-covid"),
            ok("diseased"),
        ),
        (
            "15",
            covid,
            "",
            "Coronal",
            "CT",
            "ct-15.png",
            Png(0.5),
            no("not-xray"),
            no("not-xray"),
        ),
    ];
    let mut csv = String::from(
        "patientid,offset,sex,age,finding,RT_PCR_positive,view,modality,folder,filename,license,clinical_notes,other_notes,\n",
    );
    let mut rows = Vec::new();
    let mut written: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (i, (pid, finding, pcr, view, modality, file, kind, ec, eo)) in
        specs.into_iter().enumerate()
    {
        let line = i as u64 + 2;
        // The MERS row carries unquoted commas in its notes, as in the real file.
        let notes = if finding.contains("MERS") {
            "fever, cough, and dyspnea,,".to_string()
        } else {
            format!("\"synthetic case {pid}, image {}\",", i + 1)
        };
        csv.push_str(&format!(
            "{pid},{},M,{},{finding},{pcr},{view},{modality},images,{file},CC BY 4.0,{notes}\n",
            i,
            40 + i
        ));
        let path = images.join(file);
        let bytes = match kind {
            Png(d) => Some(encode_png(&chest_image(
                side,
                side,
                seed,
                file,
                d,
                Burn {
                    text: i % 2 == 0,
                    marker: true,
                    arrow: i % 3 == 0,
                },
            ))?),
            Jpeg(d) => Some(encode_jpeg(&chest_image(
                side,
                side,
                seed,
                file,
                d,
                Burn {
                    text: true,
                    marker: true,
                    arrow: false,
                },
            ))?),
            RgbPng(d) => {
                let g = chest_image(
                    side,
                    side,
                    seed,
                    file,
                    d,
                    Burn {
                        text: false,
                        marker: true,
                        arrow: true,
                    },
                );
                let rgb = RgbImage::from_fn(side, side, |x, y| {
                    let v = g.get_pixel(x, y)[0];
                    // A coloured (yellow) arrow, as in journal figures.
                    if x > side * 3 / 4 && y > side / 2 && (x + y) % 7 == 0 {
                        image::Rgb([240, 220, 20])
                    } else {
                        image::Rgb([v, v, v])
                    }
                });
                Some(encode_rgb_png(&rgb)?)
            }
            Truncated => {
                let full = encode_png(&chest_image(side, side, seed, file, 0.5, Burn::default()))?;
                Some(full[..full.len() / 2].to_vec())
            }
            CopyOf(src) => Some(
                written
                    .get(src)
                    .cloned()
                    .expect("copy source written first"),
            ),
            Missing => None,
        };
        if let Some(b) = bytes {
            fs::write(&path, &b).map_err(|e| Error::write(&path, e))?;
            written.insert(file.to_string(), b);
        }
        rows.push(SynthRow {
            line,
            patient_id: pid.into(),
            finding: finding.into(),
            pcr: pcr.into(),
            view: view.into(),
            modality: modality.into(),
            folder: "images".into(),
            filename: file.into(),
            expect_covid: ec,
            expect_others: eo,
        });
    }
    let meta = dir.join("metadata.csv");
    fs::write(&meta, csv).map_err(|e| Error::write(&meta, e))?;
    Ok(rows)
}

/// A plain folder of `n` images of one kind (healthy: no opacity), e.g. a Kaggle NORMAL folder.
pub fn image_folder(
    dir: &Path,
    seed: u64,
    prefix: &str,
    n: usize,
    side: u32,
    disease: f32,
) -> Result<Vec<String>> {
    fs::create_dir_all(dir).map_err(|e| Error::write(dir, e))?;
    let mut names = Vec::new();
    for i in 0..n {
        let name = format!("{prefix}-{i:03}.png");
        let img = chest_image(
            side,
            side,
            seed,
            &name,
            disease,
            Burn {
                text: i % 2 == 1,
                marker: true,
                arrow: false,
            },
        );
        let p = dir.join(&name);
        fs::write(&p, encode_png(&img)?).map_err(|e| Error::write(&p, e))?;
        names.push(name);
    }
    Ok(names)
}

enum FileKind {
    Png(f32),
    Jpeg(f32),
    RgbPng(f32),
    Truncated,
    CopyOf(&'static str),
    Missing,
}

pub fn encode_png(img: &GrayImage) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .map_err(|e| Error::Usage(format!("png encode: {e}")))?;
    Ok(out)
}

fn encode_rgb_png(img: &RgbImage) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .map_err(|e| Error::Usage(format!("png encode: {e}")))?;
    Ok(out)
}

fn encode_jpeg(img: &GrayImage) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(img)
        .map_err(|e| Error::Usage(format!("jpeg encode: {e}")))?;
    Ok(out)
}

/// A PNG that is only a signature and an IHDR chunk claiming `w`×`h` pixels: the crafted header
/// that must be refused before any pixel memory is taken.
pub fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(13u32.to_be_bytes());
    png.extend(&ihdr);
    png.extend(crc32(&ihdr).to_be_bytes());
    png
}

/// CRC-32 as PNG chunks use it (bitwise; only used for a 17-byte chunk).
fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// The demo's two kinds of source, each with its real counterpart's signature.
#[derive(Debug, Clone, Copy)]
pub enum SourceKind {
    /// Like Cohen's COVID figures: many sizes and aspect ratios, mostly JPEG at varying
    /// quality, the washed-out contrast of a scanned print, and a real signal: bilateral
    /// peripheral opacities of varying strength.
    CovidFigures,
    /// Like NIH controls: one size, PNG, full contrast, a dark frame around the film;
    /// `disease` > 0 adds the one-sided opacity of other disease.
    FramedControls { disease: f32 },
}

/// Bilateral peripheral (lateral, lower-zone) ground-glass opacities: two to three soft blobs
/// in the outer third of each lung, `strength` in 0..1.
pub fn add_peripheral_opacities(img: &mut GrayImage, seed: u64, id: &str, strength: f32) {
    let mut rng = Rng::new(seed, &format!("{id}/opacities"));
    let (wf, hf) = (img.width() as f32, img.height() as f32);
    let mut blobs = Vec::new();
    for side in [-1.0f32, 1.0] {
        for _ in 0..(2 + rng.below(2)) {
            blobs.push((
                wf * (0.5 + side * rng.range(0.25, 0.32)),
                hf * rng.range(0.45, 0.66),
                wf * rng.range(0.05, 0.08),
                hf * rng.range(0.07, 0.12),
            ));
        }
    }
    for (x, y, p) in img.enumerate_pixels_mut() {
        let mut add = 0.0;
        for &(bx, by, rx, ry) in &blobs {
            let d = ((x as f32 - bx) / rx).powi(2) + ((y as f32 - by) / ry).powi(2);
            if d < 6.0 {
                add += (-d).exp();
            }
        }
        p[0] = (p[0] as f32 + 65.0 * strength * add.min(1.2)).clamp(0.0, 255.0) as u8;
    }
}

/// A folder of `n` images of one demo source kind. Returns the file names.
pub fn demo_source(
    dir: &Path,
    seed: u64,
    prefix: &str,
    n: usize,
    side: u32,
    kind: SourceKind,
) -> Result<Vec<String>> {
    fs::create_dir_all(dir).map_err(|e| Error::write(dir, e))?;
    // No burned-in marks: the demo's inpainting stages show those on the Cohen-like data.
    let burn = Burn::default();
    let mut names = Vec::new();
    for i in 0..n {
        let key = format!("{prefix}-{i:03}");
        let mut rng = Rng::new(seed, &format!("{key}/source"));
        let (name, bytes) = match kind {
            SourceKind::CovidFigures => {
                // Many sizes, near-square: harmonize makes them one size without cutting
                // anatomy away (real figures vary in aspect too; see docs/audit.md).
                let w = (side as f32 * rng.range(0.6, 1.5)) as u32;
                let h = (w as f32 * rng.range(0.94, 1.06)) as u32;
                let mut img = chest_image(w, h, seed, &key, 0.0, burn);
                add_peripheral_opacities(&mut img, seed, &key, rng.range(0.45, 1.0));
                // A print scanned back: blacks lifted, contrast squeezed.
                let (lift, gain) = (rng.range(25.0, 55.0), rng.range(0.55, 0.75));
                for p in img.pixels_mut() {
                    p[0] = (lift + gain * p[0] as f32).clamp(0.0, 255.0) as u8;
                }
                if rng.unit() < 0.7 {
                    let q = 55 + rng.below(40) as u8;
                    let mut out = Vec::new();
                    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, q)
                        .encode_image(&img)
                        .map_err(|e| Error::Usage(format!("jpeg encode: {e}")))?;
                    (format!("{key}.jpg"), out)
                } else {
                    (format!("{key}.png"), encode_png(&img)?)
                }
            }
            SourceKind::FramedControls { disease } => {
                // The film inside a dark frame that brings it to the source's one size.
                let frame = (side as f32 * rng.range(0.04, 0.07)) as u32;
                let film = chest_image(
                    side - 2 * frame,
                    side - 2 * frame,
                    seed,
                    &key,
                    disease,
                    burn,
                );
                let mut img =
                    GrayImage::from_fn(side, side, |x, y| Luma([((x * 7 + y * 3) % 5) as u8]));
                image::imageops::replace(&mut img, &film, frame as i64, frame as i64);
                (format!("{key}.png"), encode_png(&img)?)
            }
        };
        let p = dir.join(&name);
        fs::write(&p, bytes).map_err(|e| Error::write(&p, e))?;
        names.push(name);
    }
    Ok(names)
}
