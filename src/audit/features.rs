//! Trivial features: what a file and its record say that carries no disease signal. Each is
//! computed from the file in the audited bag (what a network trained on the bag would see) and
//! from the record's lineage (the share inpainted).

use super::Item;
use crate::error::{Error, Result};
use image::ImageFormat;
use std::io::Cursor;

/// The features, in one list: the enum, [`ALL`] (declaration order) and the names cannot
/// drift apart.
macro_rules! features {
    ($($variant:ident => $name:literal,)*) => {
        /// One trivial feature. The order is the column order of the matrix, audit.json and
        /// features.csv.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Feature {
            $($variant,)*
        }

        pub const ALL: [Feature; [$(Feature::$variant),*].len()] = [$(Feature::$variant),*];

        impl Feature {
            pub fn name(self) -> &'static str {
                match self {
                    $(Feature::$variant => $name,)*
                }
            }
        }
    };
}

features! {
    Width => "width",
    Height => "height",
    Aspect => "aspect",
    SizeShare => "size_share",
    FormatJpeg => "format_jpeg",
    FormatPng => "format_png",
    BitDepth => "bit_depth",
    Channels => "channels",
    Alpha => "alpha",
    JpegQuality => "jpeg_quality",
    Mean => "intensity_mean",
    Std => "intensity_std",
    P01 => "intensity_p01",
    P05 => "intensity_p05",
    P25 => "intensity_p25",
    P50 => "intensity_p50",
    P75 => "intensity_p75",
    P95 => "intensity_p95",
    P99 => "intensity_p99",
    BorderMean => "border_mean",
    BorderStd => "border_std",
    BlackFraction => "black_fraction",
    WhiteFraction => "white_fraction",
    MaskFraction => "mask_fraction",
}

use Feature::*;

/// What is left when size, format and record are taken away: the source probe's view.
pub const PIXEL_ONLY: [Feature; 13] = [
    Mean,
    Std,
    P01,
    P05,
    P25,
    P50,
    P75,
    P95,
    P99,
    BorderMean,
    BorderStd,
    BlackFraction,
    WhiteFraction,
];

impl Feature {
    /// Position in [`ALL`]: the declaration order.
    fn index(self) -> usize {
        self as usize
    }
}

/// The values of every feature of one image, in [`ALL`] order.
#[derive(Debug, Clone, PartialEq)]
pub struct Features(pub [f64; ALL.len()]);

impl Features {
    pub fn get(&self, f: Feature) -> f64 {
        self.0[f.index()]
    }
}

/// Standard JPEG luminance quantisation table (ITU T.81 Annex K), whose scaling by the IJG
/// quality factor is what almost every encoder writes: the estimate inverts that scaling.
const STD_LUMA_SUM: f64 = {
    const T: [u16; 64] = [
        16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69,
        56, 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81,
        104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
    ];
    let mut s = 0u32;
    let mut i = 0;
    while i < 64 {
        s += T[i] as u32;
        i += 1;
    }
    s as f64
};

/// IJG quality (1..100) of a JPEG from its first luminance table; None when there is none.
/// Written by hand: no decoder crate exposes the tables. The sum of the table against the
/// standard one's sum gives the scale factor without needing the zig-zag order.
pub fn jpeg_quality(bytes: &[u8]) -> Option<f64> {
    let mut i = 2;
    while i + 4 <= bytes.len() {
        if bytes[i] != 0xFF {
            return None;
        }
        let marker = bytes[i + 1];
        if marker == 0xD8 || (0xD0..=0xD7).contains(&marker) || marker == 0x01 {
            i += 2;
            continue;
        }
        let len = u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]) as usize;
        if marker == 0xDA || len < 2 {
            return None; // start of scan: no table met before it
        }
        if marker == 0xDB {
            let seg = bytes.get(i + 4..i + 2 + len)?;
            let mut k = 0;
            while k < seg.len() {
                let (precision, id) = (seg[k] >> 4, seg[k] & 0x0F);
                let n = if precision == 0 { 64 } else { 128 };
                let table = seg.get(k + 1..k + 1 + n)?;
                if id == 0 {
                    let sum: f64 = if precision == 0 {
                        table.iter().map(|&v| v as f64).sum()
                    } else {
                        table
                            .chunks(2)
                            .map(|c| u16::from_be_bytes([c[0], c[1]]) as f64)
                            .sum()
                    };
                    let scale = 100.0 * sum / STD_LUMA_SUM;
                    let q = if scale <= 100.0 {
                        (200.0 - scale) / 2.0
                    } else {
                        5000.0 / scale
                    };
                    return Some(q.clamp(1.0, 100.0).round());
                }
                k += 1 + n;
            }
        }
        i += 2 + len;
    }
    None
}

/// How common each image's exact size is in the audited set: a single-size source (every NIH
/// film is 1024x1024) stands out even where its size sits between other sources' sizes, which
/// thresholds on width and height alone cannot carve out.
pub fn fill_size_share(feats: &mut [Features]) {
    let mut counts: std::collections::BTreeMap<(u64, u64), usize> = Default::default();
    for f in feats.iter() {
        *counts
            .entry((f.get(Width) as u64, f.get(Height) as u64))
            .or_insert(0) += 1;
    }
    let n = feats.len().max(1) as f64;
    for f in feats.iter_mut() {
        let c = counts[&(f.get(Width) as u64, f.get(Height) as u64)];
        f.0[SizeShare.index()] = c as f64 / n;
    }
}

/// Decode one image and measure it. A file that does not decode is an error naming it: the
/// audit's figures would be wrong without it.
pub fn compute(item: &Item, border_fraction: f64) -> Result<Features> {
    let bytes = std::fs::read(&item.file).map_err(|e| Error::read(&item.file, e))?;
    let reader = image::ImageReader::new(Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| Error::bad_input(&item.file, format!("cannot read image: {e}")))?;
    let format = reader.format();
    let img = reader.decode().map_err(|e| {
        Error::bad_input(
            &item.file,
            format!("corrupt or unsupported image (record {}): {e}", item.id),
        )
    })?;
    let colour = img.color();
    let (w, h) = (img.width(), img.height());
    let grey = img.to_luma8();
    let (hist, border) = histograms(grey.as_raw(), w as usize, h as usize, border_fraction);
    let mut v = [0.0f64; 24];
    let mut set = |f: Feature, x: f64| v[f.index()] = x;
    set(Width, w as f64);
    set(Height, h as f64);
    set(Aspect, w as f64 / h.max(1) as f64);
    set(FormatJpeg, (format == Some(ImageFormat::Jpeg)) as u8 as f64);
    set(FormatPng, (format == Some(ImageFormat::Png)) as u8 as f64);
    set(
        BitDepth,
        (colour.bits_per_pixel() / colour.channel_count() as u16) as f64,
    );
    set(Channels, colour.channel_count() as f64);
    set(Alpha, colour.has_alpha() as u8 as f64);
    // Lossless files count as the best quality: the feature says how much was thrown away.
    let q = if format == Some(ImageFormat::Jpeg) {
        jpeg_quality(&bytes).unwrap_or(f64::NAN)
    } else {
        100.0
    };
    set(JpegQuality, q);
    let n: u64 = hist.iter().sum();
    let (mean, std) = moments(&hist);
    set(Mean, mean);
    set(Std, std);
    for (f, p) in [
        (P01, 0.01),
        (P05, 0.05),
        (P25, 0.25),
        (P50, 0.5),
        (P75, 0.75),
        (P95, 0.95),
        (P99, 0.99),
    ] {
        set(f, percentile(&hist, p));
    }
    let (bm, bs) = moments(&border);
    set(BorderMean, bm);
    set(BorderStd, bs);
    set(BlackFraction, hist[0] as f64 / n.max(1) as f64);
    set(WhiteFraction, hist[255] as f64 / n.max(1) as f64);
    set(MaskFraction, item.mask_fraction.unwrap_or(0.0));
    Ok(Features(v))
}

/// Histograms of the whole image and of its outer border.
fn histograms(px: &[u8], w: usize, h: usize, frac: f64) -> ([u64; 256], [u64; 256]) {
    let mut all = [0u64; 256];
    let mut border = [0u64; 256];
    let bw = ((w as f64 * frac).ceil() as usize).max(1);
    let bh = ((h as f64 * frac).ceil() as usize).max(1);
    for y in 0..h {
        let edge_row = y < bh || y + bh >= h;
        for (x, &p) in px[y * w..(y + 1) * w].iter().enumerate() {
            all[p as usize] += 1;
            if edge_row || x < bw || x + bw >= w {
                border[p as usize] += 1;
            }
        }
    }
    (all, border)
}

fn moments(hist: &[u64; 256]) -> (f64, f64) {
    let n: u64 = hist.iter().sum();
    if n == 0 {
        return (0.0, 0.0);
    }
    let mean = hist
        .iter()
        .enumerate()
        .map(|(v, &c)| v as f64 * c as f64)
        .sum::<f64>()
        / n as f64;
    let var = hist
        .iter()
        .enumerate()
        .map(|(v, &c)| (v as f64 - mean).powi(2) * c as f64)
        .sum::<f64>()
        / n as f64;
    (mean, var.sqrt())
}

/// Smallest level whose cumulative share reaches `p`.
fn percentile(hist: &[u64; 256], p: f64) -> f64 {
    let n: u64 = hist.iter().sum();
    let want = (p * n as f64).ceil().max(1.0) as u64;
    let mut cum = 0;
    for (v, &c) in hist.iter().enumerate() {
        cum += c;
        if cum >= want {
            return v as f64;
        }
    }
    255.0
}

/// The feature matrix of a probe: rows = images, columns = the chosen features.
pub struct Matrix {
    pub names: Vec<&'static str>,
    pub rows: Vec<Vec<f64>>,
}

impl Matrix {
    pub fn new(feats: &[Features], which: &[Feature]) -> Matrix {
        Matrix {
            names: which.iter().map(|f| f.name()).collect(),
            rows: feats
                .iter()
                .map(|f| {
                    which
                        .iter()
                        .map(|&c| {
                            let v = f.get(c);
                            // A JPEG without a readable table: the median JPEG quality is unknown,
                            // so take the lowest.
                            if v.is_finite() {
                                v
                            } else {
                                0.0
                            }
                        })
                        .collect()
                })
                .collect(),
        }
    }
}

/// features.csv: every image's features, for anyone who wants to look for themselves.
pub fn to_csv(items: &[Item], feats: &[Features]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let csv_err = |e: csv::Error| Error::Csv {
        path: "features.csv".into(),
        source: e,
    };
    let mut head = vec!["bag", "id", "class", "source", "group"];
    head.extend(ALL.iter().map(|f| f.name()));
    w.write_record(&head).map_err(csv_err)?;
    for (it, f) in items.iter().zip(feats) {
        let mut row = vec![
            it.bag.to_string(),
            it.id.clone(),
            it.class.clone(),
            it.source.clone(),
            it.group.clone(),
        ];
        row.extend(f.0.iter().map(|v| v.to_string()));
        w.write_record(&row).map_err(csv_err)?;
    }
    w.into_inner()
        .map_err(|e| Error::Usage(format!("csv buffer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_quality_is_recovered() {
        let img = image::GrayImage::from_fn(32, 32, |x, y| image::Luma([(x * 7 + y * 3) as u8]));
        for q in [50u8, 75, 90] {
            let mut out = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, q)
                .encode_image(&img)
                .unwrap();
            let est = jpeg_quality(&out).unwrap();
            assert!(
                (est - q as f64).abs() <= 2.0,
                "quality {q}: estimated {est}"
            );
        }
        assert_eq!(jpeg_quality(b"\x89PNG...."), None);
    }

    #[test]
    fn percentiles_and_border() {
        let mut px = vec![100u8; 20 * 20];
        for x in 0..20 {
            px[x] = 0; // top row black
        }
        let (all, border) = histograms(&px, 20, 20, 0.05);
        assert_eq!(all[0], 20);
        assert_eq!(border.iter().sum::<u64>(), 20 * 4 - 4);
        assert_eq!(percentile(&all, 0.01), 0.0);
        assert_eq!(percentile(&all, 0.5), 100.0);
        let (m, s) = moments(&all);
        assert!((m - 95.0).abs() < 1e-9 && s > 0.0);
    }
}
