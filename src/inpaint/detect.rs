//! Automatic mask of burned-in annotations: near-saturated marks that stand out from their
//! surroundings (white top-hat), solid label boxes, and coloured marks in a grey radiograph.
//!
//! Works on an 8-bit grey copy shrunk by an integer factor to at most [`WORK_SIDE`] px, so the
//! cost is bounded whatever the input size; the mask is mapped back to full size and widened
//! by the shrink factor so anti-aliased rims are inside it.
//!
//! Pipeline: white top-hat (square opening, van Herk/Gil-Werman, O(1) per pixel per pass: a
//! 25-px disk opening through imageproc costs ~40 ms at 1024², far over budget) → seeds:
//! bright ∧ top-hat, or saturated, or coloured → 8-connected components kept by shape (not
//! anatomy-sized blobs unless box-shaped, not long edges) → grown into their anti-aliased rims
//! (neighbours clearly brighter than their surroundings) → holes of solid boxes filled (dark text
//! on a white label) → dilated.

/// Largest side the detector works at.
pub const WORK_SIDE: usize = 1024;

/// What detection found.
#[derive(Debug, Clone, Default)]
pub struct Detection {
    /// Full-size mask, 255 = annotation.
    pub mask: Vec<u8>,
    /// Connected components kept.
    pub components: usize,
}

/// Detect annotations on a `width`×`height` image given as 8-bit grey, plus, for colour images,
/// the per-pixel channel spread (max - min over R, G, B).
pub fn detect(grey: &[u8], spread: Option<&[u8]>, width: usize, height: usize) -> Detection {
    let f = width.max(height).div_ceil(WORK_SIDE).max(1);
    let (w, h) = (width.div_ceil(f), height.div_ceil(f));
    let g = shrink(grey, width, height, f);
    let sp = spread.map(|s| shrink_max(s, width, height, f));
    // Scale of the work image relative to a 1024-px radiograph.
    let scale = w.max(h) as f32 / 1024.0;
    let r = ((12.0 * scale).round() as usize).max(3);
    let opened = open(&g, w, h, r);
    let tophat: Vec<u8> = g.iter().zip(&opened).map(|(a, b)| a - b).collect();

    let mut hist = [0usize; 256];
    for &v in &g {
        hist[v as usize] += 1;
    }
    let p99 = percentile(&hist, 0.99);
    let hi = p99.max(200);
    let mut seed = vec![0u8; w * h];
    for i in 0..w * h {
        let bright = (g[i] >= hi && tophat[i] >= 40) || g[i] >= 250;
        let colour = sp.as_ref().is_some_and(|s| s[i] >= 60);
        if bright || colour {
            seed[i] = 1;
        }
    }
    let comps = components(&seed, w, h);
    let min_area = ((4.0 * scale * scale).round() as usize).max(2);
    let max_area = w * h / 100;
    let big = w * h / 500;
    let mut keep = vec![0u8; w * h];
    let mut kept = 0usize;
    for c in &comps {
        let area = c.pixels.len();
        let (bw, bh) = (c.x1 - c.x0 + 1, c.y1 - c.y0 + 1);
        if area < min_area || area > max_area {
            continue;
        }
        if bw.max(bh) as f32 > 0.35 * w.max(h) as f32 {
            continue; // long bright structures: collimator edges, bones
        }
        let fill = area as f32 / (bw * bh) as f32;
        let boxy = bw as f32 > 8.0 * scale && bh as f32 > 8.0 * scale && fill > 0.6;
        if area > big && !boxy {
            continue; // anatomy-sized blob
        }
        // A component that is only near-white along the image edge is film border, not a mark.
        let on_edge = c.x0 == 0 || c.y0 == 0 || c.x1 + 1 == w || c.y1 + 1 == h;
        if on_edge && (bw <= 2 || bh <= 2) {
            continue;
        }
        kept += 1;
        for &p in &c.pixels {
            keep[p as usize] = 1;
        }
        if boxy {
            fill_holes(&mut keep, w, c);
        }
    }
    // Grow into the anti-aliased rims: neighbours clearly brighter than their surroundings.
    let grow = ((2.0 * scale).round() as usize).max(1);
    for _ in 0..grow {
        let prev = keep.clone();
        for y in 1..h.saturating_sub(1) {
            for x in 1..w - 1 {
                let i = y * w + x;
                if prev[i] != 0 || tophat[i] < 12 {
                    continue;
                }
                if prev[i - 1] | prev[i + 1] | prev[i - w] | prev[i + w] != 0 {
                    keep[i] = 1;
                }
            }
        }
    }
    let keep = dilate(&keep, w, h, 1);
    // Back to full size, widened by the shrink factor.
    let mut mask = vec![0u8; width * height];
    for y in 0..height {
        let row = (y / f) * w;
        for x in 0..width {
            if keep[row + x / f] != 0 {
                mask[y * width + x] = 255;
            }
        }
    }
    if f > 1 {
        mask = dilate(&mask, width, height, f / 2);
        mask.iter_mut().for_each(|v| *v = if *v != 0 { 255 } else { 0 });
    }
    Detection {
        mask,
        components: kept,
    }
}

fn percentile(hist: &[usize; 256], q: f64) -> u8 {
    let total: usize = hist.iter().sum();
    let target = (total as f64 * q).ceil() as usize;
    let mut acc = 0;
    for (v, &n) in hist.iter().enumerate() {
        acc += n;
        if acc >= target {
            return v as u8;
        }
    }
    255
}

/// Mean of each f×f block.
fn shrink(src: &[u8], width: usize, height: usize, f: usize) -> Vec<u8> {
    if f == 1 {
        return src.to_vec();
    }
    let (w, h) = (width.div_ceil(f), height.div_ceil(f));
    let mut sum = vec![0u32; w * h];
    let mut cnt = vec![0u32; w * h];
    for y in 0..height {
        let row = (y / f) * w;
        for x in 0..width {
            sum[row + x / f] += src[y * width + x] as u32;
            cnt[row + x / f] += 1;
        }
    }
    sum.iter().zip(&cnt).map(|(s, c)| (s / c) as u8).collect()
}

/// Max of each f×f block (a coloured stroke must not be averaged away).
fn shrink_max(src: &[u8], width: usize, height: usize, f: usize) -> Vec<u8> {
    if f == 1 {
        return src.to_vec();
    }
    let (w, h) = (width.div_ceil(f), height.div_ceil(f));
    let mut out = vec![0u8; w * h];
    for y in 0..height {
        let row = (y / f) * w;
        for x in 0..width {
            let o = &mut out[row + x / f];
            *o = (*o).max(src[y * width + x]);
        }
    }
    out
}

/// van Herk/Gil-Werman running min or max over windows of 2r+1 along a strided line.
fn line_minmax(src: &[u8], dst: &mut [u8], r: usize, max: bool, g: &mut [u8], hbuf: &mut [u8]) {
    let n = src.len();
    let k = 2 * r + 1;
    let pad = if max { 0u8 } else { 255u8 };
    let op = |a: u8, b: u8| if max { a.max(b) } else { a.min(b) };
    // padded line: r on each side
    let m = n + 2 * r;
    let get = |i: usize| {
        if i < r || i >= r + n {
            pad
        } else {
            src[i - r]
        }
    };
    for start in (0..m).step_by(k) {
        let end = (start + k).min(m);
        let mut acc = pad;
        for i in start..end {
            acc = op(acc, get(i));
            g[i] = acc;
        }
        let mut acc = pad;
        for i in (start..end).rev() {
            acc = op(acc, get(i));
            hbuf[i] = acc;
        }
    }
    for (x, d) in dst.iter_mut().enumerate() {
        // window [x, x + 2r] in padded coordinates
        *d = op(hbuf[x], g[x + 2 * r]);
    }
}

fn morph(src: &[u8], w: usize, h: usize, r: usize, max: bool) -> Vec<u8> {
    let m = w.max(h) + 2 * r;
    let (mut g, mut hb) = (vec![0u8; m], vec![0u8; m]);
    let mut tmp = vec![0u8; w * h];
    for y in 0..h {
        let (s, d) = (&src[y * w..(y + 1) * w], &mut tmp[y * w..(y + 1) * w]);
        line_minmax(s, d, r, max, &mut g, &mut hb);
    }
    let mut out = vec![0u8; w * h];
    let mut col = vec![0u8; h];
    let mut res = vec![0u8; h];
    for x in 0..w {
        for y in 0..h {
            col[y] = tmp[y * w + x];
        }
        line_minmax(&col, &mut res, r, max, &mut g, &mut hb);
        for y in 0..h {
            out[y * w + x] = res[y];
        }
    }
    out
}

/// Grey opening with a (2r+1)² square.
fn open(src: &[u8], w: usize, h: usize, r: usize) -> Vec<u8> {
    let e = morph(src, w, h, r, false);
    morph(&e, w, h, r, true)
}

/// Binary dilation with a (2r+1)² square.
pub fn dilate(src: &[u8], w: usize, h: usize, r: usize) -> Vec<u8> {
    if r == 0 {
        return src.to_vec();
    }
    morph(src, w, h, r, true)
}

fn components(seed: &[u8], w: usize, h: usize) -> Vec<super::Hole> {
    super::holes(seed, w, h)
}

/// Fill the enclosed background of a component (dark text on a white box) inside its box.
fn fill_holes(keep: &mut [u8], w: usize, c: &super::Hole) {
    let (bw, bh) = (c.x1 - c.x0 + 1, c.y1 - c.y0 + 1);
    let mut outside = vec![false; bw * bh];
    let mut stack = Vec::new();
    let at = |x: usize, y: usize| (c.y0 + y) * w + c.x0 + x;
    for y in 0..bh {
        for x in 0..bw {
            if (x == 0 || y == 0 || x + 1 == bw || y + 1 == bh) && keep[at(x, y)] == 0 {
                outside[y * bw + x] = true;
                stack.push((x, y));
            }
        }
    }
    while let Some((x, y)) = stack.pop() {
        let mut visit = |nx: usize, ny: usize| {
            if !outside[ny * bw + nx] && keep[at(nx, ny)] == 0 {
                outside[ny * bw + nx] = true;
                stack.push((nx, ny));
            }
        };
        if x > 0 {
            visit(x - 1, y);
        }
        if y > 0 {
            visit(x, y - 1);
        }
        if x + 1 < bw {
            visit(x + 1, y);
        }
        if y + 1 < bh {
            visit(x, y + 1);
        }
    }
    for y in 0..bh {
        for x in 0..bw {
            if !outside[y * bw + x] {
                keep[at(x, y)] = 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(src: &[u8], w: usize, h: usize, r: usize, max: bool) -> Vec<u8> {
        let mut out = vec![0u8; w * h];
        for y in 0..h {
            for x in 0..w {
                let mut acc = if max { 0 } else { 255 };
                for yy in y.saturating_sub(r)..(y + r + 1).min(h) {
                    for xx in x.saturating_sub(r)..(x + r + 1).min(w) {
                        let v = src[yy * w + xx];
                        acc = if max { acc.max(v) } else { acc.min(v) };
                    }
                }
                out[y * w + x] = acc;
            }
        }
        out
    }

    #[test]
    fn van_herk_matches_naive_min_max() {
        let (w, h) = (37, 23);
        let src: Vec<u8> = (0..w * h)
            .map(|i| ((i * 7919) % 251) as u8)
            .collect();
        for r in [1, 2, 5, 12] {
            assert_eq!(morph(&src, w, h, r, true), naive(&src, w, h, r, true), "max r={r}");
            assert_eq!(morph(&src, w, h, r, false), naive(&src, w, h, r, false), "min r={r}");
        }
    }

    #[test]
    fn finds_white_text_and_boxes_but_not_smooth_anatomy() {
        let (w, h) = (256, 256);
        // smooth "anatomy": a broad bright blob
        let mut g: Vec<u8> = (0..w * h)
            .map(|i| {
                let (x, y) = ((i % w) as f32, (i / w) as f32);
                let d = ((x - 128.0).powi(2) + (y - 150.0).powi(2)).sqrt();
                (60.0 + 120.0 * (-d * d / 3000.0).exp()) as u8
            })
            .collect();
        let clean = detect(&g, None, w, h);
        assert_eq!(clean.mask.iter().filter(|&&v| v != 0).count(), 0);
        // a white "L" and a solid box with a dark hole
        for y in 20..50 {
            for x in 200..204 {
                g[y * w + x] = 255;
            }
        }
        for x in 200..215 {
            for y in 46..50 {
                g[y * w + x] = 255;
            }
        }
        for y in 220..240 {
            for x in 150..200 {
                g[y * w + x] = if (170..175).contains(&x) && (225..235).contains(&y) { 0 } else { 255 };
            }
        }
        let d = detect(&g, None, w, h);
        assert_eq!(d.components, 2);
        assert_eq!(d.mask[30 * w + 201], 255);
        assert_eq!(d.mask[230 * w + 172], 255, "dark text inside the box is filled");
        assert_eq!(d.mask[100 * w + 100], 0);
    }
}
