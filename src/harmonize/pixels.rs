//! The pixel steps of `prep harmonize`, each alone testable: find the film's content inside
//! its borders and frames, make it square (centre crop or pad), resize, normalise intensity.

use image::{imageops::FilterType, GrayImage, Luma};

/// A rectangle in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl Rect {
    pub fn text(&self) -> String {
        format!("{},{},{},{}", self.x, self.y, self.w, self.h)
    }
}

/// Most of an edge a border may take (a frame thicker than this is film, not border).
const MAX_BORDER: f64 = 0.25;

/// A line is border when it is nearly uniform and near black or near white: film edges, a
/// scanner's black frame, the white margin of a figure cut from a paper.
fn is_border(px: impl Iterator<Item = u8> + Clone) -> bool {
    let n = px.clone().count().max(1) as f64;
    let mean = px.clone().map(|v| v as f64).sum::<f64>() / n;
    let var = px.map(|v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    var.sqrt() <= 12.0 && !(24.0..=232.0).contains(&mean)
}

/// The content rectangle: rows and columns peeled from each edge while they are border.
pub fn content(img: &GrayImage) -> Rect {
    let (w, h) = img.dimensions();
    let max_x = (w as f64 * MAX_BORDER) as u32;
    let max_y = (h as f64 * MAX_BORDER) as u32;
    let row = |y: u32, x0: u32, x1: u32| (x0..x1).map(move |x| img.get_pixel(x, y)[0]);
    let col = |x: u32, y0: u32, y1: u32| (y0..y1).map(move |y| img.get_pixel(x, y)[0]);
    let (mut top, mut bottom, mut left, mut right) = (0, 0, 0, 0);
    // Alternate sides until none moves, so a frame is peeled evenly from its four edges and
    // corners do not stop it.
    loop {
        let (x0, x1, y0, y1) = (left, w - right, top, h - bottom);
        let mut moved = false;
        if top < max_y && is_border(row(y0, x0, x1)) {
            top += 1;
            moved = true;
        }
        if bottom < max_y && is_border(row(y1 - 1, x0, x1)) {
            bottom += 1;
            moved = true;
        }
        if left < max_x && is_border(col(x0, y0, y1)) {
            left += 1;
            moved = true;
        }
        if right < max_x && is_border(col(x1 - 1, y0, y1)) {
            right += 1;
            moved = true;
        }
        if !moved {
            break;
        }
    }
    Rect {
        x: left,
        y: top,
        w: w - left - right,
        h: h - top - bottom,
    }
}

pub fn crop(img: &GrayImage, r: Rect) -> GrayImage {
    image::imageops::crop_imm(img, r.x, r.y, r.w, r.h).to_image()
}

/// How a non-square image is made square.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    /// Centre crop to the shorter side: nothing added that a model could learn from.
    Crop,
    /// Pad to the longer side with the image's median edge level: nothing lost.
    Pad,
}

/// Median of the outermost ring of pixels.
fn edge_level(img: &GrayImage) -> u8 {
    let (w, h) = img.dimensions();
    let mut hist = [0u64; 256];
    for (x, y, p) in img.enumerate_pixels() {
        if x == 0 || y == 0 || x + 1 == w || y + 1 == h {
            hist[p[0] as usize] += 1;
        }
    }
    let half = hist.iter().sum::<u64>().div_ceil(2);
    let mut cum = 0;
    for (v, c) in hist.iter().enumerate() {
        cum += c;
        if cum >= half {
            return v as u8;
        }
    }
    0
}

pub fn square(img: &GrayImage, fit: Fit) -> GrayImage {
    let (w, h) = img.dimensions();
    if w == h {
        return img.clone();
    }
    match fit {
        Fit::Crop => {
            let s = w.min(h);
            crop(
                img,
                Rect {
                    x: (w - s) / 2,
                    y: (h - s) / 2,
                    w: s,
                    h: s,
                },
            )
        }
        Fit::Pad => {
            let s = w.max(h);
            let mut out = GrayImage::from_pixel(s, s, Luma([edge_level(img)]));
            image::imageops::replace(&mut out, img, ((s - w) / 2) as i64, ((s - h) / 2) as i64);
            out
        }
    }
}

pub fn resize(img: &GrayImage, side: u32) -> GrayImage {
    if img.dimensions() == (side, side) {
        return img.clone();
    }
    image::imageops::resize(img, side, side, FilterType::CatmullRom)
}

/// Intensity normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Intensity {
    /// Exact histogram equalisation: every output level holds the same share of pixels (ties
    /// broken by the 3x3 neighbourhood mean, then position), so no intensity statistic differs
    /// between images.
    Hist,
    /// Contrast-limited adaptive histogram equalisation, 8x8 tiles, clip limit 2.
    Clahe,
    None,
}

pub fn normalise(img: &mut GrayImage, how: Intensity) {
    match how {
        Intensity::Hist => exact_equalise(img),
        Intensity::Clahe => clahe(img, 8, 2.0),
        Intensity::None => {}
    }
}

/// Exact histogram equalisation (Coltuc, Bolon & Chassery 2006, with the 3x3 mean as the
/// only tie-breaking filter): pixels ranked by (level, 3x3 mean, position) and the k-th of n
/// given level floor(256 k / n). Plain equalisation (imageproc's) keeps ties together, so an
/// image with few grey levels (a scanned print) keeps a histogram, mean and spread of its own
/// after it; this one leaves every image with the same flat histogram. Written by hand: no
/// crate has it.
pub fn exact_equalise(img: &mut GrayImage) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let px = img.as_raw().clone();
    let n = px.len();
    if n == 0 {
        return;
    }
    let mean3 = |i: usize| -> u16 {
        let (x, y) = (i % w, i / w);
        let mut s = 0u16;
        for dy in [-1i64, 0, 1] {
            for dx in [-1i64, 0, 1] {
                let xx = (x as i64 + dx).clamp(0, w as i64 - 1) as usize;
                let yy = (y as i64 + dy).clamp(0, h as i64 - 1) as usize;
                s += px[yy * w + xx] as u16;
            }
        }
        s
    };
    let mut order: Vec<(u8, u16, u32)> = (0..n).map(|i| (px[i], mean3(i), i as u32)).collect();
    order.sort_unstable();
    let out = img.as_mut();
    for (k, &(_, _, i)) in order.iter().enumerate() {
        out[i as usize] = ((k * 256) / n) as u8;
    }
}

/// CLAHE (Zuiderveld 1994): per-tile histograms clipped at `clip` times the mean bin count,
/// the excess spread evenly, and each pixel mapped by bilinear interpolation of the four
/// nearest tiles' CDFs. Written by hand: neither image nor imageproc has it.
pub fn clahe(img: &mut GrayImage, tiles: u32, clip: f64) {
    let (w, h) = img.dimensions();
    let (tx, ty) = (tiles.min(w).max(1), tiles.min(h).max(1));
    let tile_w = w.div_ceil(tx);
    let tile_h = h.div_ceil(ty);
    let mut maps = vec![[0u8; 256]; (tx * ty) as usize];
    for j in 0..ty {
        for i in 0..tx {
            let (x0, y0) = (i * tile_w, j * tile_h);
            let (x1, y1) = ((x0 + tile_w).min(w), (y0 + tile_h).min(h));
            let mut hist = [0f64; 256];
            for y in y0..y1 {
                for x in x0..x1 {
                    hist[img.get_pixel(x, y)[0] as usize] += 1.0;
                }
            }
            let n = ((x1 - x0) * (y1 - y0)).max(1) as f64;
            let limit = (clip * n / 256.0).max(1.0);
            let mut excess = 0.0;
            for c in hist.iter_mut() {
                if *c > limit {
                    excess += *c - limit;
                    *c = limit;
                }
            }
            let mut cum = 0.0;
            let map = &mut maps[(j * tx + i) as usize];
            for (v, c) in hist.iter().enumerate() {
                cum += c + excess / 256.0;
                map[v] = (255.0 * cum / n).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    let src = img.clone();
    for (x, y, p) in img.enumerate_pixels_mut() {
        let v = src.get_pixel(x, y)[0] as usize;
        let fx = ((x as f64 - tile_w as f64 / 2.0) / tile_w as f64).clamp(0.0, (tx - 1) as f64);
        let fy = ((y as f64 - tile_h as f64 / 2.0) / tile_h as f64).clamp(0.0, (ty - 1) as f64);
        let (i0, j0) = (fx.floor() as u32, fy.floor() as u32);
        let (i1, j1) = ((i0 + 1).min(tx - 1), (j0 + 1).min(ty - 1));
        let (ax, ay) = (fx - i0 as f64, fy - j0 as f64);
        let m = |i: u32, j: u32| maps[(j * tx + i) as usize][v] as f64;
        let top = m(i0, j0) * (1.0 - ax) + m(i1, j0) * ax;
        let bottom = m(i0, j1) * (1.0 - ax) + m(i1, j1) * ax;
        p[0] = (top * (1.0 - ay) + bottom * ay).round().clamp(0.0, 255.0) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(w: u32, h: u32, frame: u32) -> GrayImage {
        GrayImage::from_fn(w, h, |x, y| {
            if x < frame || y < frame || x >= w - frame || y >= h - frame {
                Luma([((x + y) % 3) as u8]) // a black frame with a little noise
            } else {
                Luma([60 + ((x * 7 + y * 13) % 120) as u8])
            }
        })
    }

    #[test]
    fn black_frame_is_found() {
        let r = content(&framed(100, 80, 9));
        assert_eq!(
            r,
            Rect {
                x: 9,
                y: 9,
                w: 82,
                h: 62
            }
        );
    }

    #[test]
    fn textured_film_is_not_cropped() {
        let img = framed(64, 64, 0);
        assert_eq!(
            content(&img),
            Rect {
                x: 0,
                y: 0,
                w: 64,
                h: 64
            }
        );
    }

    #[test]
    fn square_by_crop_and_pad() {
        let img = framed(60, 40, 0);
        assert_eq!(square(&img, Fit::Crop).dimensions(), (40, 40));
        let p = square(&img, Fit::Pad);
        assert_eq!(p.dimensions(), (60, 60));
        assert_eq!(p.get_pixel(30, 30), img.get_pixel(30, 20));
    }

    #[test]
    fn clahe_spreads_a_narrow_histogram() {
        let mut img = GrayImage::from_fn(64, 64, |x, y| Luma([100 + ((x + y) % 20) as u8]));
        clahe(&mut img, 8, 2.0);
        let (lo, hi) = img
            .pixels()
            .fold((255u8, 0u8), |(l, h), p| (l.min(p[0]), h.max(p[0])));
        assert!(hi - lo > 60, "range {lo}..{hi}");
    }
}
