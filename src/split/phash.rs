//! Near-duplicate detection that survives re-encoding, contrast changes, annotation arrows and
//! re-cropping (Cohen republished Hannover images cropped to 2000×2000 squares; journals crop
//! figures differently).
//!
//! A plain whole-image pHash fails on re-crops: a 10–20 % crop moves every low DCT frequency.
//! And chest X-rays all look alike, so a loose Hamming threshold merges different patients.
//! So matching is done in two steps:
//!
//! 1. Candidates. Each image gets one *probe* hash (DCT pHash of its centre square, 60 % of the
//!    short side) and a dense set of *window* hashes (squares of 58–100 % of the short side at
//!    steps of 5 % of their side). If two images show the same picture cropped differently,
//!    one image's probe content lies inside the other image, near one of its windows. A pair
//!    is a candidate when either probe is within `max_hamming` bits of one of the other's windows.
//! 2. Verification. Each candidate window pair is compared pixel by pixel at 48×48 after a rank
//!    transform (Spearman correlation, blind to contrast and gamma), searching small shifts and
//!    scales around the window; the pair is a near-duplicate when the best correlation reaches
//!    `min_correlation`. Different X-rays that share a hash by chance fail here.
//!
//! Written by hand: hash crates (image_hasher, img_hash) hash whole images one at a time; here
//! hundreds of windows per image are cut from one integral image, which is what makes it cheap.

use rayon::prelude::*;
use std::f32::consts::PI;

/// Side of the square grid a window is sampled to before the DCT.
const HASH_GRID: usize = 32;
/// Side of the grid windows are compared on in verification.
const VERIFY_GRID: usize = 48;
/// Short side of the thumbnail all work is done on.
const THUMB_SHORT: u32 = 160;
/// Window sides, as fractions of the short side.
const SCALES: &[f32] = &[1.0, 0.9, 0.81, 0.73, 0.65, 0.58];
/// Probe window side (fraction of the short side), centred.
const PROBE_SCALE: f32 = 0.6;
/// Window step, as a fraction of the window side.
const STEP: f32 = 0.05;

/// Tunable thresholds (from the split rules file).
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct NearDupParams {
    /// Largest Hamming distance (of 63 bits) between a probe and a window to look closer.
    pub max_hamming: u32,
    /// Smallest Spearman correlation of the aligned windows to call two images the same.
    pub min_correlation: f32,
    /// Smallest high-passed correlation at the coarse alignment for the fine alignment search
    /// to be run: chance candidates (different films whose hashes are close) stop there at a
    /// tenth of the cost. -1 verifies every candidate fully.
    #[serde(default = "default_gate")]
    pub gate_correlation: f32,
}

/// Below every same-picture hit measured, with a margin: `bench-split real` on the 123 real
/// films in ../shared and an altered copy of each (re-crop, rescale, gamma, marker, JPEG): the
/// 362 hits whose final score reaches 0.75 had coarse correlations of 0.479 and more, while
/// half of the chance hits between different films are below 0.31 and three quarters below 0.39.
fn default_gate() -> f32 {
    0.4
}

impl Default for NearDupParams {
    fn default() -> Self {
        NearDupParams {
            max_hamming: 8,
            min_correlation: 0.75,
            gate_correlation: default_gate(),
        }
    }
}

/// A square window of the thumbnail, in thumbnail pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rect {
    x: f32,
    y: f32,
    side: f32,
}

/// The hashes of one image: what the candidate search needs, kept in memory for every image
/// (about 4 KB each). Window rectangles are not stored: they follow from (w, h), see [`layout`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashes {
    /// Thumbnail size.
    pub w: usize,
    pub h: usize,
    /// pHash of the centred probe window.
    pub probe: u64,
    /// pHash of every window, in [`layout`] order.
    pub windows: Vec<u64>,
}

/// What near-duplicate matching keeps of one image: the window hashes and the grey thumbnail
/// (~30 KB; its summed-area table is rebuilt only for candidate pairs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub hashes: Hashes,
    /// Grey thumbnail, row-major, `hashes.w × hashes.h`.
    pub thumb: Vec<u8>,
}

/// A thumbnail's summed-area table, (w+1)×(h+1): any box mean in four lookups.
struct Plane {
    w: usize,
    h: usize,
    integral: Vec<u32>,
}

impl Plane {
    fn new(w: usize, h: usize, px: &[u8]) -> Plane {
        let mut integral = vec![0u32; (w + 1) * (h + 1)];
        for y in 0..h {
            let mut row = 0u32;
            for x in 0..w {
                row += px[y * w + x] as u32;
                integral[(y + 1) * (w + 1) + x + 1] = integral[y * (w + 1) + x + 1] + row;
            }
        }
        Plane { w, h, integral }
    }
}

/// A near-duplicate pair with its evidence.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    pub a: usize,
    pub b: usize,
    pub hamming: u32,
    pub correlation: f32,
}

/// What verifying one probe/window hit measured: the high-passed correlation at the coarse
/// alignment, and the final score (equal to it when the gate stopped the search there).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    pub coarse: f32,
    pub fin: f32,
}

/// Thumbnail size for an image of `w0 × h0` pixels (short side scaled down to 160).
pub fn thumb_size(w0: u32, h0: u32) -> (usize, usize) {
    let s = THUMB_SHORT as f32 / w0.min(h0).max(1) as f32;
    let (w, h) = if s < 1.0 {
        (
            ((w0 as f32 * s).round() as u32).max(1),
            ((h0 as f32 * s).round() as u32).max(1),
        )
    } else {
        (w0, h0)
    };
    (w as usize, h as usize)
}

/// The probe window and every hashed window of a `w × h` thumbnail, in hash order.
fn layout(w: usize, h: usize) -> (Rect, Vec<Rect>) {
    let short = w.min(h) as f32;
    let side = (short * PROBE_SCALE).max(1.0);
    let probe = Rect {
        x: (w as f32 - side) / 2.0,
        y: (h as f32 - side) / 2.0,
        side,
    };
    let mut windows = Vec::new();
    for &sc in SCALES {
        let side = (short * sc).max(1.0);
        let step = (side * STEP).max(1.0);
        let (fx, fy) = (w as f32 - side, h as f32 - side);
        let nx = (fx / step).ceil() as usize + 1;
        let ny = (fy / step).ceil() as usize + 1;
        for iy in 0..ny {
            for ix in 0..nx {
                let x = if nx > 1 {
                    fx * ix as f32 / (nx - 1) as f32
                } else {
                    0.0
                };
                let y = if ny > 1 {
                    fy * iy as f32 / (ny - 1) as f32
                } else {
                    0.0
                };
                windows.push(Rect { x, y, side });
            }
        }
    }
    (probe, windows)
}

/// The window of a `w × h` thumbnail that best covers the probe region (largest overlap): where
/// an exact copy's probe hash lands (for benchmarks that plant copies).
pub fn window_over_probe(w: usize, h: usize) -> usize {
    let (p, windows) = layout(w, h);
    let overlap = |r: &Rect| {
        let ix = (p.x + p.side).min(r.x + r.side) - p.x.max(r.x);
        let iy = (p.y + p.side).min(r.y + r.side) - p.y.max(r.y);
        let i = ix.max(0.0) * iy.max(0.0);
        i / (p.side * p.side + r.side * r.side - i)
    };
    (0..windows.len())
        .max_by(|&a, &b| overlap(&windows[a]).total_cmp(&overlap(&windows[b])))
        .unwrap_or(0)
}

/// Number of windows a `w × h` thumbnail has (to check a cached fingerprint's shape).
pub fn window_count(w: usize, h: usize) -> usize {
    layout(w, h).1.len()
}

/// A tag of every constant the hashes depend on: a cached fingerprint made with other
/// constants is stale.
pub fn algorithm_tag() -> String {
    format!(
        "phash grid {HASH_GRID} thumb {THUMB_SHORT} scales {SCALES:?} probe {PROBE_SCALE} step {STEP}"
    )
}

impl Fingerprint {
    /// Fingerprint a decoded image (any colour type; alpha is ignored).
    pub fn new(img: &image::DynamicImage) -> Fingerprint {
        let grey = img.to_luma8();
        let (w0, h0) = grey.dimensions();
        let (w, h) = thumb_size(w0, h0);
        // Area-averaging downscale: no aliasing from JPEG noise or burned-in text.
        let thumb = if (w as u32, h as u32) == (w0, h0) {
            grey
        } else {
            image::imageops::thumbnail(&grey, w as u32, h as u32)
        };
        let thumb = thumb.into_raw();
        let plane = Plane::new(w, h, &thumb);
        let (probe, windows) = layout(w, h);
        let hashes = Hashes {
            w,
            h,
            probe: plane.hash(probe),
            windows: windows.into_iter().map(|r| plane.hash(r)).collect(),
        };
        Fingerprint { hashes, thumb }
    }
}

impl Plane {
    /// Mean grey level over a box of the thumbnail (fractional edges rounded to pixels).
    #[cfg(test)]
    fn box_mean(&self, x0: f32, y0: f32, x1: f32, y1: f32) -> f32 {
        let ((xa, xb), (ya, yb)) = (span(x0, x1, self.w), span(y0, y1, self.h));
        let i = |x: usize, y: usize| self.integral[y * (self.w + 1) + x];
        let sum = i(xb, yb) + i(xa, ya) - i(xa, yb) - i(xb, ya);
        sum as f32 / ((xb - xa) * (yb - ya)) as f32
    }

    /// A window sampled to n×n cells by area averaging. The same arithmetic as
    /// [`Plane::box_mean`] per cell, with each column's and row's pixel bounds worked out once
    /// (verification samples ~100 windows per candidate).
    fn sample(&self, r: Rect, n: usize) -> Vec<f32> {
        let cell = r.side / n as f32;
        let bounds = |o: f32, m: usize| -> Vec<(usize, usize)> {
            (0..n)
                .map(|i| {
                    let v0 = o + i as f32 * cell;
                    span(v0, v0 + cell, m)
                })
                .collect()
        };
        let (cols, rows) = (bounds(r.x, self.w), bounds(r.y, self.h));
        let stride = self.w + 1;
        let mut out = Vec::with_capacity(n * n);
        for &(ya, yb) in &rows {
            let (top, bottom) = (&self.integral[ya * stride..], &self.integral[yb * stride..]);
            for &(xa, xb) in &cols {
                let sum = bottom[xb] + top[xa] - bottom[xa] - top[xb];
                out.push(sum as f32 / ((xb - xa) * (yb - ya)) as f32);
            }
        }
        out
    }

    /// 63-bit DCT pHash of a window: the 8×8 lowest frequencies but DC, against their median.
    fn hash(&self, r: Rect) -> u64 {
        let n = HASH_GRID;
        let px = self.sample(r, n);
        let cos = dct_table();
        let mut rows = [0f32; HASH_GRID * 8];
        for y in 0..n {
            for k in 0..8 {
                let mut acc = 0.0;
                for x in 0..n {
                    acc += px[y * n + x] * cos[k * n + x];
                }
                rows[y * 8 + k] = acc;
            }
        }
        let mut coef = [0f32; 64];
        for k in 0..8 {
            for l in 0..8 {
                let mut acc = 0.0;
                for y in 0..n {
                    acc += rows[y * 8 + l] * cos[k * n + y];
                }
                coef[k * 8 + l] = acc;
            }
        }
        let mut ac: Vec<f32> = coef[1..].to_vec();
        ac.sort_by(f32::total_cmp);
        let median = ac[ac.len() / 2];
        let mut h = 0u64;
        for (i, c) in coef.iter().enumerate().skip(1) {
            if *c > median {
                h |= 1 << i;
            }
        }
        h
    }

    /// Best correlation between `mine` and `theirs` shifted and scaled slightly: a coarse
    /// Pearson search at 24×24, a fine one at 48×48, then Spearman at the best place. When the
    /// high-passed correlation at the coarse place is below `gate`, the fine search is skipped
    /// and that correlation returned (see [`NearDupParams::gate_correlation`]).
    fn correlate(&self, mine: Rect, other: &Plane, theirs: Rect, gate: f32) -> Scores {
        let fits = |r: &Rect| {
            r.x >= -0.5
                && r.y >= -0.5
                && r.x + r.side <= other.w as f32 + 0.5
                && r.y + r.side <= other.h as f32 + 0.5
        };
        let around = |c: Rect, scales: &[f32], step: f32, reach: i32| {
            let mut out = Vec::new();
            let (cx, cy) = (c.x + c.side / 2.0, c.y + c.side / 2.0);
            for &ds in scales {
                let side = c.side * ds;
                for dy in -reach..=reach {
                    for dx in -reach..=reach {
                        let r = Rect {
                            x: cx - side / 2.0 + dx as f32 * step * c.side,
                            y: cy - side / 2.0 + dy as f32 * step * c.side,
                            side,
                        };
                        if fits(&r) {
                            out.push(r);
                        }
                    }
                }
            }
            out
        };
        let a24 = Centred::new(&self.sample(mine, VERIFY_GRID / 2));
        let Some((_, coarse)) = around(theirs, &[0.96, 1.0, 1.04], 0.03, 2)
            .into_iter()
            .map(|r| (a24.pearson(&other.sample(r, VERIFY_GRID / 2)), r))
            .max_by(|x, y| x.0.total_cmp(&y.0))
        else {
            return Scores {
                coarse: -1.0,
                fin: -1.0,
            };
        };
        // Shared anatomy makes any two chest X-rays correlate at coarse scale; only the fine
        // detail (ribs, vessels, wires) tells one picture from another. So the alignment is
        // refined on high-passed images, and the final score is the correlation of high-passed
        // rank images (blind to contrast and gamma) at that alignment.
        let mine48 = self.sample(mine, VERIFY_GRID);
        let a = Centred::new(&high_pass(&mine48, VERIFY_GRID));
        let score = |r: Rect| a.pearson(&high_pass(&other.sample(r, VERIFY_GRID), VERIFY_GRID));
        let mut best = (score(coarse), coarse);
        let at_coarse = best.0;
        if at_coarse < gate {
            return Scores {
                coarse: at_coarse,
                fin: at_coarse,
            };
        }
        for step in [0.01f32, 0.004] {
            let centre = best.1;
            for r in around(centre, &[1.0 - 2.0 * step, 1.0, 1.0 + 2.0 * step], step, 1) {
                let c = score(r);
                if c > best.0 {
                    best = (c, r);
                }
            }
        }
        let fin = pearson(
            &high_pass(&ranks(&mine48), VERIFY_GRID),
            &high_pass(&ranks(&other.sample(best.1, VERIFY_GRID)), VERIFY_GRID),
        );
        Scores {
            coarse: at_coarse,
            fin,
        }
    }
}

/// The pixel columns (or rows) `[a, b)` a box edge pair covers: rounded, clamped to `0..=m`,
/// at least one pixel wide.
fn span(v0: f32, v1: f32, m: usize) -> (usize, usize) {
    let cl = |v: f32| (v.round().max(0.0) as usize).min(m);
    let (mut a, mut b) = (cl(v0), cl(v1));
    if b <= a {
        b = (a + 1).min(m);
        a = b - 1;
    }
    (a, b)
}

/// Subtract a 7×7 box blur (separable, edges clamped): keeps the detail that differs between
/// two chest X-rays. Each blurred value is the plain sum of its 7 (fewer at edges) neighbours
/// in order, divided by their count: the same floats a running sum would round differently.
fn high_pass(v: &[f32], n: usize) -> Vec<f32> {
    const K: usize = 3;
    let mut rows = vec![0f32; n * n];
    for y in 0..n {
        let row = &v[y * n..(y + 1) * n];
        for x in 0..n {
            let (lo, hi) = (x.saturating_sub(K), (x + K).min(n - 1));
            let mut acc = 0f32;
            for &p in &row[lo..=hi] {
                acc += p;
            }
            rows[y * n + x] = acc / (hi - lo + 1) as f32;
        }
    }
    let mut out = vec![0f32; n * n];
    for y in 0..n {
        let (lo, hi) = (y.saturating_sub(K), (y + K).min(n - 1));
        let count = (hi - lo + 1) as f32;
        for x in 0..n {
            let mut acc = 0f32;
            for yy in lo..=hi {
                acc += rows[yy * n + x];
            }
            out[y * n + x] = v[y * n + x] - acc / count;
        }
    }
    out
}

fn dct_table() -> &'static [f32] {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let n = HASH_GRID;
        (0..8)
            .flat_map(|k| {
                (0..n).map(move |i| ((2 * i + 1) as f32 * k as f32 * PI / (2.0 * n as f32)).cos())
            })
            .collect()
    })
}

/// Ranks (ties averaged), so that correlation ignores contrast and gamma.
fn ranks(v: &[f32]) -> Vec<f32> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&i, &j| v[i].total_cmp(&v[j]).then(i.cmp(&j)));
    let mut out = vec![0f32; v.len()];
    let mut k = 0;
    while k < idx.len() {
        let mut e = k;
        while e + 1 < idx.len() && v[idx[e + 1]] == v[idx[k]] {
            e += 1;
        }
        let r = (k + e) as f32 / 2.0;
        for &i in &idx[k..=e] {
            out[i] = r;
        }
        k = e + 1;
    }
    out
}

fn pearson(a: &[f32], b: &[f32]) -> f32 {
    Centred::new(a).pearson(b)
}

/// One side of many correlations, centred once (the search correlates one window with ~80
/// places); the same sums in the same order as computing both sides each time.
struct Centred {
    d: Vec<f64>,
    ss: f64,
}

impl Centred {
    fn new(a: &[f32]) -> Centred {
        let n = a.len() as f64;
        let m = a.iter().map(|&x| x as f64).sum::<f64>() / n;
        let d: Vec<f64> = a.iter().map(|&x| x as f64 - m).collect();
        let ss = d.iter().fold(0f64, |s, &x| s + x * x);
        Centred { d, ss }
    }

    fn pearson(&self, b: &[f32]) -> f32 {
        let n = b.len() as f64;
        let mb = b.iter().map(|&x| x as f64).sum::<f64>() / n;
        let (mut sab, mut sbb) = (0f64, 0f64);
        for (&dx, &y) in self.d.iter().zip(b) {
            let dy = y as f64 - mb;
            sab += dx * dy;
            sbb += dy * dy;
        }
        if self.ss == 0.0 || sbb == 0.0 {
            return 0.0;
        }
        (sab / (self.ss * sbb).sqrt()) as f32
    }
}

/// Windows of `other` within `max` bits of this image's probe: (hamming, window index).
/// Brute force over one pair; [`super::index`] finds the same hits for many images at once.
pub fn probe_hits(me: &Hashes, other: &Hashes, max: u32) -> Vec<(u32, u32)> {
    other
        .windows
        .iter()
        .enumerate()
        .filter_map(|(k, h)| {
            let d = (h ^ me.probe).count_ones();
            (d <= max).then_some((d, k as u32))
        })
        .collect()
}

/// The three closest hit windows, best first (ties by side, y, x: the same whatever order the
/// hits were found in).
fn best_hits(other: &Hashes, mut hits: Vec<(u32, u32)>) -> Vec<(u32, Rect)> {
    if hits.is_empty() {
        return Vec::new();
    }
    let rects = layout(other.w, other.h).1;
    hits.sort_unstable_by_key(|&(d, k)| (d, k));
    hits.dedup();
    let mut hits: Vec<(u32, Rect)> = hits
        .into_iter()
        .map(|(d, k)| (d, rects[k as usize]))
        .collect();
    hits.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(a.1.side.total_cmp(&b.1.side))
            .then(a.1.y.total_cmp(&b.1.y))
            .then(a.1.x.total_cmp(&b.1.x))
    });
    hits.truncate(3);
    hits
}

/// Verify a candidate pair from its probe hits both ways (`ab`: a's probe in b's windows):
/// Some((hamming, correlation)) when they show the same picture.
pub fn verify(
    a: (&Hashes, &[u8]),
    b: (&Hashes, &[u8]),
    ab: Vec<(u32, u32)>,
    ba: Vec<(u32, u32)>,
    p: NearDupParams,
) -> Option<(u32, f32)> {
    let mut best: Option<(u32, f32)> = None;
    for (d, s) in hit_scores(a, b, ab, ba, p.gate_correlation) {
        if best.is_none_or(|(_, bc)| s.fin > bc) {
            best = Some((d, s.fin));
        }
    }
    best.filter(|&(_, c)| c >= p.min_correlation)
}

/// The scores of a candidate pair's best hits (up to three each way), in verification order,
/// with the hit's Hamming distance: what [`verify`] decides on, exposed for the benchmark's
/// check of the gate.
pub fn hit_scores(
    a: (&Hashes, &[u8]),
    b: (&Hashes, &[u8]),
    ab: Vec<(u32, u32)>,
    ba: Vec<(u32, u32)>,
    gate: f32,
) -> Vec<(u32, Scores)> {
    let mut out = Vec::new();
    let mut planes: Option<(Plane, Plane)> = None;
    for (me, other, hits, flip) in [(a, b, ab, false), (b, a, ba, true)] {
        let probe = layout(me.0.w, me.0.h).0;
        for (d, r) in best_hits(other.0, hits) {
            let (pa, pb) = planes.get_or_insert_with(|| {
                (Plane::new(a.0.w, a.0.h, a.1), Plane::new(b.0.w, b.0.h, b.1))
            });
            let (pm, po) = if flip { (&*pb, &*pa) } else { (&*pa, &*pb) };
            out.push((d, pm.correlate(probe, po, r, gate)));
        }
    }
    out
}

/// Compare two fingerprints; Some(match) when they show the same picture.
pub fn compare(a: &Fingerprint, b: &Fingerprint, p: NearDupParams) -> Option<(u32, f32)> {
    let (ha, hb) = (&a.hashes, &b.hashes);
    verify(
        (ha, &a.thumb),
        (hb, &b.thumb),
        probe_hits(ha, hb, p.max_hamming),
        probe_hits(hb, ha, p.max_hamming),
        p,
    )
}

/// Where candidate verification gets thumbnails from: memory, or a fingerprint file read on
/// demand (112k thumbnails are 3 GB; only candidates' are ever needed).
pub trait Thumbs: Sync {
    fn thumb(&self, i: usize) -> crate::Result<std::borrow::Cow<'_, [u8]>>;
}

impl Thumbs for [Option<Fingerprint>] {
    fn thumb(&self, i: usize) -> crate::Result<std::borrow::Cow<'_, [u8]>> {
        Ok(std::borrow::Cow::Borrowed(
            self[i].as_ref().map(|f| f.thumb.as_slice()).unwrap_or(&[]),
        ))
    }
}

/// Every near-duplicate pair (a < b), in (a, b) order whatever the thread count.
pub fn find_matches(fps: &[Option<Fingerprint>], p: NearDupParams) -> Vec<Match> {
    let hashes: Vec<Option<&Hashes>> = fps.iter().map(|f| f.as_ref().map(|f| &f.hashes)).collect();
    find_matches_in(&hashes, fps, p).expect("thumbnails in memory")
}

/// Every near-duplicate pair among `hashes` (a < b), in (a, b) order: candidates from the
/// multi-index ([`super::index`]), verified pixel by pixel with thumbnails from `thumbs`.
pub fn find_matches_in<T: Thumbs + ?Sized>(
    hashes: &[Option<&Hashes>],
    thumbs: &T,
    p: NearDupParams,
) -> crate::Result<Vec<Match>> {
    let pairs = super::index::candidate_pairs(hashes, p.max_hamming);
    verify_candidates(hashes, thumbs, pairs, p)
}

/// Verify candidate pairs pixel by pixel (in parallel; output in the pairs' order).
pub fn verify_candidates<T: Thumbs + ?Sized>(
    hashes: &[Option<&Hashes>],
    thumbs: &T,
    pairs: Vec<super::index::Candidate>,
    p: NearDupParams,
) -> crate::Result<Vec<Match>> {
    let pb = crate::progress::bar(pairs.len() as u64, "near-duplicates");
    let out = pairs
        .into_par_iter()
        .map(|c| {
            pb.inc(1);
            let (ha, hb) = (hashes[c.a].expect("indexed"), hashes[c.b].expect("indexed"));
            let (ta, tb) = (thumbs.thumb(c.a)?, thumbs.thumb(c.b)?);
            Ok(
                verify((ha, &ta), (hb, &tb), c.ab, c.ba, p).map(|(hamming, correlation)| Match {
                    a: c.a,
                    b: c.b,
                    hamming,
                    correlation,
                }),
            )
        })
        .collect::<crate::Result<Vec<_>>>()?;
    pb.finish_and_clear();
    Ok(out.into_iter().flatten().collect())
}

/// Best (hamming, correlation) between two images whatever the thresholds, for tuning.
pub fn score(a: &Fingerprint, b: &Fingerprint) -> (u32, f32) {
    let loose = NearDupParams {
        max_hamming: 64,
        min_correlation: -2.0,
        gate_correlation: -2.0,
    };
    let mut best_h = u32::MAX;
    for (me, other) in [(&a.hashes, &b.hashes), (&b.hashes, &a.hashes)] {
        for h in &other.windows {
            best_h = best_h.min((h ^ me.probe).count_ones());
        }
    }
    let c = compare(
        a,
        b,
        NearDupParams {
            max_hamming: best_h + 2,
            ..loose
        },
    )
    .map(|m| m.1)
    .unwrap_or(-1.0);
    (best_h, c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{DynamicImage, GrayImage, Luma};

    /// A synthetic "X-ray": smooth blobs seeded by `k`, so different k give different pictures.
    pub(crate) fn synthetic(k: u32, w: u32, h: u32) -> GrayImage {
        let mut s = k.wrapping_mul(2654435761).wrapping_add(12345);
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s
        };
        let blobs: Vec<(f32, f32, f32, f32)> = (0..12)
            .map(|_| {
                (
                    (next() % 1000) as f32 / 1000.0,
                    (next() % 1000) as f32 / 1000.0,
                    0.05 + (next() % 200) as f32 / 1000.0,
                    (next() % 200) as f32 - 100.0,
                )
            })
            .collect();
        GrayImage::from_fn(w, h, |x, y| {
            let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
            let mut val = 128.0;
            for (bx, by, r, a) in &blobs {
                let d2 = (u - bx).powi(2) + (v - by).powi(2);
                val += a * (-d2 / (r * r)).exp();
            }
            Luma([val.clamp(0.0, 255.0) as u8])
        })
    }

    #[test]
    fn recrop_and_contrast_change_match_but_different_pictures_do_not() {
        let p = NearDupParams::default();
        let base = synthetic(1, 640, 560);
        // Re-crop (drop 12 % on the right, 8 % at the bottom), rescale, change gamma.
        let crop = image::imageops::crop_imm(&base, 0, 0, 563, 515).to_image();
        let mut crop =
            image::imageops::resize(&crop, 900, 823, image::imageops::FilterType::Triangle);
        for px in crop.pixels_mut() {
            px[0] = (255.0 * (px[0] as f32 / 255.0).powf(0.8)) as u8;
        }
        let fa = Fingerprint::new(&DynamicImage::ImageLuma8(base));
        let fb = Fingerprint::new(&DynamicImage::ImageLuma8(crop));
        assert!(compare(&fa, &fb, p).is_some(), "{:?}", score(&fa, &fb));
        for k in 2..6 {
            let other = Fingerprint::new(&DynamicImage::ImageLuma8(synthetic(k, 640, 560)));
            assert!(
                compare(&fa, &other, p).is_none(),
                "{k}: {:?}",
                score(&fa, &other)
            );
        }
    }

    /// The verification code before it was sped up, kept as the reference it must equal.
    fn high_pass_reference(v: &[f32], n: usize) -> Vec<f32> {
        let k = 3usize;
        let blur_1d = |get: &dyn Fn(usize) -> f32| -> Vec<f32> {
            (0..n)
                .map(|i| {
                    let (lo, hi) = (i.saturating_sub(k), (i + k).min(n - 1));
                    (lo..=hi).map(get).sum::<f32>() / (hi - lo + 1) as f32
                })
                .collect()
        };
        let mut rows = vec![0f32; n * n];
        for y in 0..n {
            let r = blur_1d(&|x| v[y * n + x]);
            rows[y * n..(y + 1) * n].copy_from_slice(&r);
        }
        let mut out = vec![0f32; n * n];
        for x in 0..n {
            let c = blur_1d(&|y| rows[y * n + x]);
            for y in 0..n {
                out[y * n + x] = v[y * n + x] - c[y];
            }
        }
        out
    }

    fn pearson_reference(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len() as f64;
        let ma = a.iter().map(|&x| x as f64).sum::<f64>() / n;
        let mb = b.iter().map(|&x| x as f64).sum::<f64>() / n;
        let (mut sab, mut saa, mut sbb) = (0f64, 0f64, 0f64);
        for (&x, &y) in a.iter().zip(b) {
            let (dx, dy) = (x as f64 - ma, y as f64 - mb);
            sab += dx * dy;
            saa += dx * dx;
            sbb += dy * dy;
        }
        if saa == 0.0 || sbb == 0.0 {
            return 0.0;
        }
        (sab / (saa * sbb).sqrt()) as f32
    }

    #[test]
    fn fast_sampling_high_pass_and_correlation_equal_the_reference_bit_for_bit() {
        let img = synthetic(7, 203, 171);
        let plane = Plane::new(203, 171, img.as_raw());
        for (k, r) in layout(203, 171).1.into_iter().step_by(7).enumerate() {
            let r = Rect {
                x: r.x - 0.7 + k as f32 * 0.013,
                ..r
            };
            for n in [24, 48] {
                let fast = plane.sample(r, n);
                let cell = r.side / n as f32;
                let slow: Vec<f32> = (0..n * n)
                    .map(|c| {
                        let (x0, y0) = (r.x + (c % n) as f32 * cell, r.y + (c / n) as f32 * cell);
                        plane.box_mean(x0, y0, x0 + cell, y0 + cell)
                    })
                    .collect();
                assert_eq!(fast, slow);
                let hp = high_pass(&fast, n);
                assert_eq!(hp, high_pass_reference(&fast, n));
                let other = high_pass(&ranks(&fast), n);
                assert_eq!(
                    pearson(&hp, &other).to_bits(),
                    pearson_reference(&hp, &other).to_bits()
                );
            }
        }
    }

    /// A synthetic picture with film-like fine detail (seeded 16-px texture cells over the
    /// blobs): smooth blobs alone share their high-passed shape whatever the seed.
    fn textured(k: u32) -> GrayImage {
        let mut img = synthetic(k, 640, 560);
        let mut s = k.wrapping_mul(747796405).wrapping_add(1);
        let cells: Vec<i32> = (0..41 * 36)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 61) as i32 - 30
            })
            .collect();
        for (x, y, px) in img.enumerate_pixels_mut() {
            let v = px[0] as i32 + cells[(y / 16 * 41 + x / 16) as usize];
            px[0] = v.clamp(0, 255) as u8;
        }
        img
    }

    #[test]
    fn the_gate_stops_different_pictures_early_but_not_a_recrop() {
        let base = textured(1);
        let crop = image::imageops::crop_imm(&base, 40, 30, 540, 500).to_image();
        let fa = Fingerprint::new(&DynamicImage::ImageLuma8(base));
        let fb = Fingerprint::new(&DynamicImage::ImageLuma8(crop));
        let hits = |a: &Fingerprint, b: &Fingerprint, gate| {
            hit_scores(
                (&a.hashes, &a.thumb),
                (&b.hashes, &b.thumb),
                probe_hits(&a.hashes, &b.hashes, 63),
                Vec::new(),
                gate,
            )
        };
        let gate = NearDupParams::default().gate_correlation;
        // The re-crop: its best hit is verified fully, to the same score as without the gate.
        let best = |v: Vec<(u32, Scores)>| v.iter().map(|x| x.1.fin).fold(f32::MIN, f32::max);
        let (gated, full) = (best(hits(&fa, &fb, gate)), best(hits(&fa, &fb, -2.0)));
        assert!(full >= 0.75 && gated == full, "{gated} {full}");
        // A different picture: stopped at the coarse alignment, below the gate.
        let other = Fingerprint::new(&DynamicImage::ImageLuma8(textured(3)));
        let s = hits(&fa, &other, gate);
        assert!(!s.is_empty());
        assert!(
            s.iter().all(|x| x.1.coarse < gate && x.1.fin == x.1.coarse),
            "{s:?}"
        );
    }

    #[test]
    fn ranks_average_ties() {
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), vec![2.5, 0.0, 2.5, 1.0]);
        assert!((pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]) - 1.0).abs() < 1e-6);
    }

    /// Tuning aid: `cargo test --lib split::phash::tests::sample_scores -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn sample_scores() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/samples");
        let mut files: Vec<_> = walkdir::WalkDir::new(&root)
            .sort_by_file_name()
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| {
                let n = e.file_name().to_string_lossy().to_lowercase();
                n.ends_with(".png") || n.ends_with(".jpg") || n.ends_with(".jpeg")
            })
            .map(|e| e.path().to_path_buf())
            .collect();
        files.sort();
        let t = std::time::Instant::now();
        let fps: Vec<Fingerprint> = files
            .par_iter()
            .map(|f| Fingerprint::new(&image::open(f).unwrap()))
            .collect();
        eprintln!(
            "fingerprints: {:?}, windows {:?}",
            t.elapsed(),
            fps.iter().map(|f| f.hashes.windows.len()).sum::<usize>()
        );
        let t = std::time::Instant::now();
        let mut rows = Vec::new();
        for i in 0..fps.len() {
            for j in i + 1..fps.len() {
                let (h, c) = score(&fps[i], &fps[j]);
                rows.push((c, h, i, j));
            }
        }
        eprintln!("scores: {:?}", t.elapsed());
        rows.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (c, h, i, j) in rows.iter().take(15) {
            let n = |k: usize| files[k].strip_prefix(&root).unwrap().display().to_string();
            eprintln!("{c:.3} {h:2} {} {}", n(*i), n(*j));
        }
    }
}
