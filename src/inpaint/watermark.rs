//! `--source-watermarks`: a per-source estimate of semi-transparent watermarks.
//!
//! A 35 %-alpha watermark is neither near-saturated nor a strong top-hat peak in any one image,
//! so [`super::detect`] cannot tell it from anatomy. Across many images of one source it is the
//! one bright detail that stays put while the anatomy moves: the per-pixel median of the white
//! top-hat over a group of images (same source, same size) is raised there and near the noise
//! floor elsewhere (the lower quartile is used, see [`estimate`]). Pixels whose median clears a robust threshold (and their faint rims, by
//! hysteresis) form the source's watermark mask, which is OR-ed into every image of the group.
//!
//! Cost: one extra decode and top-hat (at detection scale, ≤ 1024 px) of at most
//! [`MAX_SAMPLE`] images per group, and one median per pixel.

use super::detect;
use super::io;
use crate::manifest::Record;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Fewest images of one (source, size) group for an estimate: with fewer, a mark that happens
/// to sit at the same place in half of them would pass for a watermark.
pub const MIN_IMAGES: usize = 8;
/// Most images an estimate reads (evenly spaced in id order): the median is stable long before,
/// and memory stays at MAX_SAMPLE top-hats of ≤ 1024² bytes.
pub const MAX_SAMPLE: usize = 32;
/// Threshold on the lower-quartile top-hat: at least this many grey levels (ribs at the same
/// place in every film of a synthetic source reach ~15; a 35 % watermark over mid-grey film
/// ~50)...
pub const MIN_RAISE: f32 = 24.0;
/// ...and this many robust standard deviations (1.4826 × MAD) above the median of the map.
pub const SIGMAS: f32 = 6.0;

/// Group key: source name, image width and height.
pub type Key = (String, u32, u32);

/// What the estimate found for one group; one row of `data/source_watermarks.csv`.
#[derive(Debug, Clone, Serialize)]
pub struct SourceEstimate {
    pub source: String,
    pub width: u32,
    pub height: u32,
    /// Records of the group in the bag.
    pub images: usize,
    /// Images the estimate read (0 when not estimated).
    pub used: usize,
    /// `estimated` or `too-few-images`.
    pub status: String,
    /// Threshold applied to the median top-hat (grey levels at 8 bits; 0 when not estimated).
    pub threshold: f32,
    /// Pixels of the source mask (full size).
    pub mask_pixels: u64,
    /// The source mask, relative to the bag root (empty when not estimated).
    pub mask_path: String,
}

pub const COLUMNS: &[&str] = &[
    "source",
    "width",
    "height",
    "images",
    "used",
    "status",
    "threshold",
    "mask_pixels",
    "mask_path",
];

/// Every group's estimate (sorted by key) and the masks of the estimated groups (full size,
/// 0/255; empty masks included).
pub struct Estimates {
    pub rows: Vec<SourceEstimate>,
    pub masks: BTreeMap<Key, Vec<u8>>,
}

/// File name of a group's mask under `data/masks/sources/`: the source name reduced to
/// [A-Za-z0-9_-] (it comes from metadata) plus the size.
pub fn mask_name(key: &Key) -> String {
    let s: String = key
        .0
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s = if s.is_empty() { "unknown".into() } else { s };
    format!("{s}_{}x{}.png", key.1, key.2)
}

/// Group the bag's records by (source, width, height) as recorded, estimate each group with at
/// least [`MIN_IMAGES`] images from the images that decode to the recorded size. `safe` says
/// whether a record's path may be read (the stage's own check).
pub fn estimate_bag(
    bag: &Path,
    records: &[Record],
    safe: &(dyn Fn(&str) -> bool + Sync),
) -> Estimates {
    let mut groups: BTreeMap<Key, Vec<&Record>> = BTreeMap::new();
    for r in records {
        groups
            .entry((r.source.clone(), r.width, r.height))
            .or_default()
            .push(r);
    }
    let mut rows = Vec::new();
    let mut masks = BTreeMap::new();
    for (key, mut group) in groups {
        group.sort_by(|a, b| a.id.cmp(&b.id));
        let mut row = SourceEstimate {
            source: key.0.clone(),
            width: key.1,
            height: key.2,
            images: group.len(),
            used: 0,
            status: "too-few-images".into(),
            threshold: 0.0,
            mask_pixels: 0,
            mask_path: String::new(),
        };
        if group.len() >= MIN_IMAGES && key.1 > 0 && key.2 > 0 {
            let n = group.len().min(MAX_SAMPLE);
            let pick: Vec<&Record> = (0..n).map(|i| group[i * group.len() / n]).collect();
            let (width, height) = (key.1 as usize, key.2 as usize);
            let tophats: Vec<Vec<u8>> = pick
                .par_iter()
                .filter_map(|r| {
                    if !safe(&r.path) {
                        return None;
                    }
                    let p = bag.join(&r.path);
                    let bytes = std::fs::read(&p).ok()?;
                    let img = io::decode(&p, &bytes).ok()?;
                    if (img.width(), img.height()) != (key.1, key.2) {
                        return None;
                    }
                    Some(detail(&io::grey8(&img), width, height))
                })
                .collect();
            if tophats.len() >= MIN_IMAGES {
                let (mask, threshold) = estimate(&tophats, width, height);
                row.used = tophats.len();
                row.status = "estimated".into();
                row.threshold = threshold;
                row.mask_pixels = mask.iter().filter(|&&v| v != 0).count() as u64;
                row.mask_path = format!("data/masks/sources/{}", mask_name(&key));
                masks.insert(key, mask);
            }
        }
        rows.push(row);
    }
    Estimates { rows, masks }
}

/// One image's contribution: its white top-hat at detection scale, zero where the per-image
/// detector's near-saturated pass ([`detect::detect_strict`]) already finds a mark. A watermark is what that detector cannot see; markers that
/// a source puts at roughly the same place on every film are found image by image, and must
/// not pile up into a "watermark" where they overlap.
pub fn detail(grey: &[u8], width: usize, height: usize) -> Vec<u8> {
    let (mut th, w, h, f) = detect::tophat(grey, width, height);
    let marks = detect::detect_strict(grey, width, height).mask;
    for y in 0..h {
        for x in 0..w {
            if marks[(y * f) * width + x * f] != 0 {
                th[y * w + x] = 0;
            }
        }
    }
    th
}

/// The watermark mask (full `width`×`height`, 0/255) from the top-hats of a group's images
/// (each at detection scale, as [`detect::tophat`] returns them), and the threshold used.
pub fn estimate(tophats: &[Vec<u8>], width: usize, height: usize) -> (Vec<u8>, f32) {
    let f = width.max(height).div_ceil(detect::WORK_SIDE).max(1);
    let (w, h) = (width.div_ceil(f), height.div_ceil(f));
    let n = tophats.len();
    assert!(
        n > 0 && tophats.iter().all(|t| t.len() == w * h),
        "top-hat sizes"
    );
    // Per-pixel lower quartile: a pixel counts only if it is raised in at least three images
    // out of four. A watermark is in every image; anatomy at roughly the same place (a ridge
    // along the lung edge in one hospital's positioning) shifts enough from film to film to
    // fall below it.
    let mut med = vec![0u8; w * h];
    let mut vals = vec![0u8; n];
    for (p, m) in med.iter_mut().enumerate() {
        for (v, t) in vals.iter_mut().zip(tophats) {
            *v = t[p];
        }
        let k = (n - 1) / 4;
        *m = *vals.select_nth_unstable(k).1;
    }
    // Robust threshold over the quartile map: its median + SIGMAS · 1.4826 · MAD, at least
    // MIN_RAISE.
    let mut hist = [0usize; 256];
    for &v in &med {
        hist[v as usize] += 1;
    }
    let centre = hist_median(&hist);
    let mut dev = [0usize; 256];
    for (v, &c) in hist.iter().enumerate() {
        dev[(v as i32 - centre as i32).unsigned_abs() as usize] += c;
    }
    let mad = hist_median(&dev) as f32;
    let threshold = (centre as f32 + SIGMAS * 1.4826 * mad.max(1.0)).max(MIN_RAISE);
    let low = threshold * 0.33;
    // Seeds above the threshold, grown (8-connected) into pixels above a third of it: the
    // faint anti-aliased rims of the watermark's strokes.
    let mut on = vec![0u8; w * h];
    let mut stack: Vec<usize> = Vec::new();
    for p in 0..w * h {
        if med[p] as f32 >= threshold {
            on[p] = 1;
            stack.push(p);
        }
    }
    while let Some(p) = stack.pop() {
        let (x, y) = (p % w, p / w);
        for yy in y.saturating_sub(1)..(y + 2).min(h) {
            for xx in x.saturating_sub(1)..(x + 2).min(w) {
                let q = yy * w + xx;
                if on[q] == 0 && med[q] as f32 >= low {
                    on[q] = 1;
                    stack.push(q);
                }
            }
        }
    }
    // Isolated specks are noise that happened to agree, not a watermark.
    let scale = w.max(h) as f32 / 1024.0;
    let min_area = ((12.0 * scale * scale).round() as usize).max(3);
    let mut list = Vec::new();
    for c in super::holes(&on, w, h) {
        if c.pixels.len() >= min_area {
            list.extend_from_slice(&c.pixels);
        }
    }
    list.sort_unstable();
    (
        detect::dilate_to_full(&list, w, h, f, width, height),
        threshold,
    )
}

fn hist_median(hist: &[usize; 256]) -> u8 {
    let total: usize = hist.iter().sum();
    let mut acc = 0;
    for (v, &c) in hist.iter().enumerate() {
        acc += c;
        if 2 * acc >= total {
            return v as u8;
        }
    }
    255
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{chest_image, Burn};

    /// The shared 35 %-alpha block-letter watermark (true where it is drawn).
    fn wm(x: usize, y: usize) -> bool {
        crate::synth::watermark_at(x as u32, y as u32)
    }

    #[test]
    fn finds_a_shared_watermark_and_nothing_in_a_clean_group() {
        let (side, n) = (256usize, 10usize);
        let mut with = Vec::new();
        let mut without = Vec::new();
        for i in 0..n {
            let id = format!("img-{i}");
            let burn = Burn {
                text: i % 2 == 0,
                marker: true,
                arrow: i % 3 == 0,
            };
            let img = chest_image(side as u32, side as u32, 11, &id, 0.3, burn);
            without.push(detail(img.as_raw(), side, side));
            let mut g = img.into_raw();
            for (p, v) in g.iter_mut().enumerate() {
                if wm(p % side, p / side) {
                    *v = (*v as f32 * 0.65 + 255.0 * 0.35).round() as u8;
                }
            }
            with.push(detail(&g, side, side));
        }
        let (mask, _) = estimate(&with, side, side);
        let truth: Vec<bool> = (0..side * side).map(|p| wm(p % side, p / side)).collect();
        let total = truth.iter().filter(|&&t| t).count();
        let hit = (0..side * side)
            .filter(|&p| truth[p] && mask[p] != 0)
            .count();
        let false_px = (0..side * side)
            .filter(|&p| !truth[p] && mask[p] != 0)
            .count();
        assert!(hit as f64 >= 0.9 * total as f64, "recall {hit}/{total}");
        assert!(
            false_px <= total,
            "{false_px} false pixels for {total} watermark pixels"
        );
        let (clean, _) = estimate(&without, side, side);
        assert_eq!(clean.iter().filter(|&&v| v != 0).count(), 0);
    }
}
