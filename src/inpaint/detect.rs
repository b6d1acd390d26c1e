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
    let opened = open_half(&g, w, h, r);
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
    // Film level around each kept component, carried into its rim while growing.
    let mut bg = vec![0u8; w * h];
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
        let boxy = bw as f32 > 8.0 * scale && bh as f32 > 8.0 * scale && fill > 0.75;
        if area > big && !boxy {
            continue; // anatomy-sized blob
        }
        // A component that is only near-white along the image edge is film border, not a mark.
        let on_edge = c.x0 == 0 || c.y0 == 0 || c.x1 + 1 == w || c.y1 + 1 == h;
        if on_edge && (bw <= 2 || bh <= 2) {
            continue;
        }
        // Burned-in marks are far brighter than the film around them; saturated anatomy fades
        // into bright surroundings.
        let mean_in = c.pixels.iter().map(|&p| g[p as usize] as f32).sum::<f32>() / area as f32;
        let around = match ring_mean(&g, w, h, c, 2) {
            Some(m) if mean_in - m >= 30.0 => m,
            _ => continue,
        };
        kept += 1;
        for &p in &c.pixels {
            keep[p as usize] = 1;
            bg[p as usize] = around.round() as u8;
        }
        if boxy {
            fill_holes(&mut keep, w, c);
        }
    }
    // Grow into the rims: anti-aliased edges (clearly brighter than their surroundings) and the
    // dark outline some scanners draw around white text (far darker than the film around the
    // mark). Frontier-based, so the cost follows the kept area.
    let grow = (scale.round() as usize).max(1);
    let mut frontier: Vec<usize> = (0..w * h).filter(|&i| keep[i] != 0).collect();
    for _ in 0..grow {
        let mut next = Vec::new();
        for &p in &frontier {
            let (x, y) = (p % w, p / w);
            let b = bg[p];
            let mut try_add = |q: usize| {
                if keep[q] == 0 && (tophat[q] >= 12 || (g[q] as i32) + 40 <= b as i32) {
                    keep[q] = 1;
                    bg[q] = b;
                    next.push(q);
                }
            };
            if x > 0 {
                try_add(p - 1);
            }
            if x + 1 < w {
                try_add(p + 1);
            }
            if y > 0 {
                try_add(p - w);
            }
            if y + 1 < h {
                try_add(p + w);
            }
        }
        frontier = next;
    }
    // Safety rim of one work pixel (f full-size pixels). The fill keeps rim pixels that turn
    // out to be plain film, and measures the film's grain robustly, so JPEG ringing around
    // white text does not leave a dark ghost.
    let keep = dilate_sparse(&keep, w, h, 1);
    // Back to full size.
    let mut mask = vec![0u8; width * height];
    for y in 0..height {
        let k = &keep[(y / f) * w..(y / f + 1) * w];
        for (bx, chunk) in mask[y * width..(y + 1) * width].chunks_mut(f).enumerate() {
            if k[bx] != 0 {
                chunk.fill(255);
            }
        }
    }
    Detection {
        mask,
        components: kept,
    }
}

/// Mean grey level on the rectangle `gap` pixels outside a component's bounding box (the sides
/// that lie inside the image); None when no side does.
fn ring_mean(g: &[u8], w: usize, h: usize, c: &super::Hole, gap: usize) -> Option<f32> {
    let (x0, y0) = (c.x0 as isize - gap as isize, c.y0 as isize - gap as isize);
    let (x1, y1) = ((c.x1 + gap) as isize, (c.y1 + gap) as isize);
    let (mut s, mut n) = (0f64, 0usize);
    let mut add = |x: isize, y: isize| {
        if x >= 0 && y >= 0 && (x as usize) < w && (y as usize) < h {
            s += g[y as usize * w + x as usize] as f64;
            n += 1;
        }
    };
    for x in x0..=x1 {
        add(x, y0);
        add(x, y1);
    }
    for y in y0 + 1..y1 {
        add(x0, y);
        add(x1, y);
    }
    (n >= 8).then(|| (s / n as f64) as f32)
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
    let mut out = vec![0u8; w * h];
    let mut sum = vec![0u32; w];
    for by in 0..h {
        sum.fill(0);
        let rows = (by * f..((by + 1) * f).min(height)).len();
        for y in by * f..by * f + rows {
            let line = &src[y * width..(y + 1) * width];
            for (bx, chunk) in line.chunks(f).enumerate() {
                sum[bx] += chunk.iter().map(|&v| v as u32).sum::<u32>();
            }
        }
        for bx in 0..w {
            let cols = (bx * f..((bx + 1) * f).min(width)).len();
            out[by * w + bx] = (sum[bx] / (rows * cols) as u32) as u8;
        }
    }
    out
}

/// Max of each f×f block (a coloured stroke must not be averaged away).
fn shrink_max(src: &[u8], width: usize, height: usize, f: usize) -> Vec<u8> {
    if f == 1 {
        return src.to_vec();
    }
    let (w, h) = (width.div_ceil(f), height.div_ceil(f));
    let mut out = vec![0u8; w * h];
    for y in 0..height {
        let o = &mut out[(y / f) * w..(y / f + 1) * w];
        for (bx, chunk) in src[y * width..(y + 1) * width].chunks(f).enumerate() {
            o[bx] = o[bx].max(*chunk.iter().max().expect("non-empty"));
        }
    }
    out
}

#[inline(always)]
fn op<const MAX: bool>(a: u8, b: u8) -> u8 {
    if MAX {
        a.max(b)
    } else {
        a.min(b)
    }
}

/// van Herk/Gil-Werman running min or max over windows of 2r+1: 3 comparisons per sample
/// whatever r. `buf` holds the line padded by r on each side; `g`/`hb` are scratch.
fn line_minmax<const MAX: bool>(buf: &[u8], dst: &mut [u8], r: usize, g: &mut [u8], hb: &mut [u8]) {
    let k = 2 * r + 1;
    let m = buf.len();
    let mut start = 0;
    while start < m {
        let end = (start + k).min(m);
        let mut acc = buf[start];
        g[start] = acc;
        for i in start + 1..end {
            acc = op::<MAX>(acc, buf[i]);
            g[i] = acc;
        }
        let mut acc = buf[end - 1];
        hb[end - 1] = acc;
        for i in (start..end - 1).rev() {
            acc = op::<MAX>(acc, buf[i]);
            hb[i] = acc;
        }
        start = end;
    }
    for (x, d) in dst.iter_mut().enumerate() {
        *d = op::<MAX>(hb[x], g[x + 2 * r]);
    }
}

fn morph_t<const MAX: bool>(src: &[u8], w: usize, h: usize, r: usize) -> Vec<u8> {
    let pad = if MAX { 0u8 } else { 255u8 };
    // Rows.
    let m = w + 2 * r;
    let (mut buf, mut g, mut hb) = (vec![pad; m], vec![0u8; m], vec![0u8; m]);
    let mut tmp = vec![0u8; w * h];
    for y in 0..h {
        buf[r..r + w].copy_from_slice(&src[y * w..(y + 1) * w]);
        line_minmax::<MAX>(&buf, &mut tmp[y * w..(y + 1) * w], r, &mut g, &mut hb);
    }
    // Columns, a whole row at a time (cache-friendly, vectorises): the same block scheme with
    // rows as samples.
    let k = 2 * r + 1;
    let mh = h + 2 * r;
    let row = |y: usize| -> Option<&[u8]> {
        (y >= r && y < r + h).then(|| &tmp[(y - r) * w..(y - r + 1) * w])
    };
    let mut gg = vec![0u8; mh * w];
    let mut hh = vec![0u8; mh * w];
    let mut start = 0;
    while start < mh {
        let end = (start + k).min(mh);
        for y in start..end {
            let (prev, cur) = gg.split_at_mut(y * w);
            let cur = &mut cur[..w];
            match row(y) {
                Some(s) => cur.copy_from_slice(s),
                None => cur.fill(pad),
            }
            if y > start {
                let p = &prev[(y - 1) * w..];
                for x in 0..w {
                    cur[x] = op::<MAX>(cur[x], p[x]);
                }
            }
        }
        for y in (start..end).rev() {
            let (cur, next) = hh.split_at_mut((y + 1) * w);
            let cur = &mut cur[y * w..];
            match row(y) {
                Some(s) => cur.copy_from_slice(s),
                None => cur.fill(pad),
            }
            if y + 1 < end {
                let n = &next[..w];
                for x in 0..w {
                    cur[x] = op::<MAX>(cur[x], n[x]);
                }
            }
        }
        start = end;
    }
    let mut out = vec![0u8; w * h];
    for y in 0..h {
        let (a, b) = (
            &hh[y * w..(y + 1) * w],
            &gg[(y + 2 * r) * w..(y + 2 * r + 1) * w],
        );
        let o = &mut out[y * w..(y + 1) * w];
        for x in 0..w {
            o[x] = op::<MAX>(a[x], b[x]);
        }
    }
    out
}

fn morph(src: &[u8], w: usize, h: usize, r: usize, max: bool) -> Vec<u8> {
    if max {
        morph_t::<true>(src, w, h, r)
    } else {
        morph_t::<false>(src, w, h, r)
    }
}

/// Grey opening with a ~(2r+1)² square, computed at half resolution: 2×2 min-pool, opening
/// with r/2, nearest upsampling. The min-pool keeps thin bright strokes out of the opening
/// (so they stay in the top-hat) at a quarter of the cost.
fn open_half(src: &[u8], w: usize, h: usize, r: usize) -> Vec<u8> {
    if r < 4 {
        return open(src, w, h, r);
    }
    let (hw, hh) = (w.div_ceil(2), h.div_ceil(2));
    let mut small = vec![255u8; hw * hh];
    for y in 0..h {
        let row = &mut small[(y / 2) * hw..(y / 2 + 1) * hw];
        for (bx, ch) in src[y * w..(y + 1) * w].chunks(2).enumerate() {
            row[bx] = row[bx].min(*ch.iter().min().expect("non-empty"));
        }
    }
    let o = open(&small, hw, hh, r / 2);
    let mut out = vec![0u8; w * h];
    for y in 0..h {
        let row = &o[(y / 2) * hw..(y / 2 + 1) * hw];
        for (bx, ch) in out[y * w..(y + 1) * w].chunks_mut(2).enumerate() {
            ch.fill(row[bx]);
        }
    }
    // The opening never exceeds the image.
    for (o, s) in out.iter_mut().zip(src) {
        *o = (*o).min(*s);
    }
    out
}

/// Grey opening with a (2r+1)² square.
fn open(src: &[u8], w: usize, h: usize, r: usize) -> Vec<u8> {
    let e = morph(src, w, h, r, false);
    morph(&e, w, h, r, true)
}

/// Binary dilation with a (2r+1)² square, visiting only set pixels (masks are sparse).
fn dilate_sparse(src: &[u8], w: usize, h: usize, r: usize) -> Vec<u8> {
    let mut out = src.to_vec();
    for y in 0..h {
        for x in 0..w {
            if src[y * w + x] == 0 {
                continue;
            }
            for yy in y.saturating_sub(r)..(y + r + 1).min(h) {
                out[yy * w + x.saturating_sub(r)..yy * w + (x + r + 1).min(w)].fill(1);
            }
        }
    }
    out
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
        let src: Vec<u8> = (0..w * h).map(|i| ((i * 7919) % 251) as u8).collect();
        for r in [1, 2, 5, 12] {
            assert_eq!(
                morph(&src, w, h, r, true),
                naive(&src, w, h, r, true),
                "max r={r}"
            );
            assert_eq!(
                morph(&src, w, h, r, false),
                naive(&src, w, h, r, false),
                "min r={r}"
            );
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
        // a white "L" and a solid label box with dark text (sizes as on a 1024-px film / 4)
        for y in 20..34 {
            for x in 200..202 {
                g[y * w + x] = 255;
            }
        }
        for x in 200..208 {
            for y in 32..34 {
                g[y * w + x] = 255;
            }
        }
        for y in 220..230 {
            for x in 150..180 {
                g[y * w + x] = if (160..164).contains(&x) && (223..227).contains(&y) {
                    0
                } else {
                    255
                };
            }
        }
        let d = detect(&g, None, w, h);
        assert_eq!(d.components, 2);
        assert_eq!(d.mask[25 * w + 201], 255);
        assert_eq!(
            d.mask[225 * w + 162],
            255,
            "dark text inside the box is filled"
        );
        assert_eq!(d.mask[100 * w + 100], 0);
    }
}
