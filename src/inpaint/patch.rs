//! Exemplar fill of one hole: multi-scale PatchMatch with EM voting (Wexler et al. 2007,
//! Barnes et al. 2009), on f32, inside a bounded search window around the hole.
//!
//! The hole's padded box is the search window. A pyramid of the box is built by 2×2 means; at
//! every level each hole pixel gets a nearest-neighbour field entry (the centre of a 3×3 source
//! patch made only of known film: no pixel of this or any other hole, none outside the image),
//! improved by PatchMatch (propagation + random search), and the hole is re-estimated by
//! letting every overlapping patch vote for its pixels (weighted by patch similarity). The field
//! is upsampled to the next finer level. The coarsest level starts from an onion-peel fill
//! (layer by layer from the border, each pixel the mean of its filled neighbours). Every random
//! choice comes from the hole's seed, so the result does not depend on thread order.
//!
//! Why by hand: no maintained Rust crate offers PatchMatch inpainting.

use super::{Local, EXCLUDED, KNOWN};

/// Patch radius: 3×3 patches. Measured on the harness cases (PSNR in the mask): 3×3 40.6 dB
/// synthetic / 35.5 dB real at 1024², 5×5 39.4 / 34.2, 7×7 38.9 / 32.1; small patches keep
/// the fill closest to the film right at the hole's edge, and the pyramid supplies the larger
/// structure.
const R: usize = 1;
/// Fewest valid source patches a level needs; with fewer the fill falls back (level 0) or
/// the pyramid stops (coarser levels).
const MIN_SOURCES: usize = 16;

/// Search window: how far around the hole's box source patches are looked for. Wide enough to
/// see the film above and below a label box, small enough that the sources share the hole's
/// neighbourhood (exposure, anatomy).
pub(crate) fn pad_for(box_w: usize, box_h: usize) -> usize {
    (box_w.max(box_h) / 2).clamp(24, 96)
}

const DATA: u8 = 0;
const FILL: u8 = 1;
const OFF: u8 = 2;

/// One pyramid level, with an R-pixel margin of OFF pixels around the box so that patch
/// offsets never need bounds checks.
struct Level {
    /// Width and height including the margins.
    w: usize,
    h: usize,
    c: usize,
    v: Vec<f32>,
    st: Vec<u8>,
    /// Known film: may lie inside a source patch.
    film: Vec<bool>,
    /// Valid source centres (every pixel of the patch is film), and the same as a map.
    centres: Vec<u32>,
    ok: Vec<bool>,
    /// Pixels to fill, raster order.
    fill: Vec<u32>,
}

impl Level {
    /// A `w`×`h`×`c` level with every pixel off the search area and no fields yet.
    fn blank(w: usize, h: usize, c: usize) -> Level {
        Level {
            w,
            h,
            c,
            v: vec![0.0; w * h * c],
            st: vec![OFF; w * h],
            film: vec![false; w * h],
            centres: Vec::new(),
            ok: Vec::new(),
            fill: Vec::new(),
        }
    }

    fn finish(&mut self) {
        let (w, h) = (self.w, self.h);
        // Integral image of `film` for the all-film test of each patch.
        let mut sat = vec![0u32; (w + 1) * (h + 1)];
        for y in 0..h {
            let mut row = 0u32;
            for x in 0..w {
                row += u32::from(self.film[y * w + x]);
                sat[(y + 1) * (w + 1) + x + 1] = sat[y * (w + 1) + x + 1] + row;
            }
        }
        let full = ((2 * R + 1) * (2 * R + 1)) as u32;
        self.ok = vec![false; w * h];
        self.centres.clear();
        for y in R..h.saturating_sub(R) {
            for x in R..w - R {
                let (xa, ya, xb, yb) = (x - R, y - R, x + R + 1, y + R + 1);
                let s = sat[yb * (w + 1) + xb] + sat[ya * (w + 1) + xa]
                    - sat[ya * (w + 1) + xb]
                    - sat[yb * (w + 1) + xa];
                if s == full {
                    self.ok[y * w + x] = true;
                    self.centres.push((y * w + x) as u32);
                }
            }
        }
        self.fill = (0..w * h)
            .filter(|&q| self.st[q] == FILL)
            .map(|q| q as u32)
            .collect();
    }

    /// The half-resolution level: a coarse pixel is to be filled if any child is, else data if
    /// it has data children; its value is the mean of its usable children (hole pixels carry
    /// their starting estimate); it is film only if all four children are film.
    fn coarser(&self) -> Level {
        let (iw, ih) = (self.w - 2 * R, self.h - 2 * R);
        let (cw, chh) = (iw.div_ceil(2), ih.div_ceil(2));
        let (w, h, c) = (cw + 2 * R, chh + 2 * R, self.c);
        let mut out = Level::blank(w, h, c);
        let mut acc = vec![0f32; c];
        for cy in 0..chh {
            for cx in 0..cw {
                let (mut nfill, mut ndata, mut nfilm, mut nall) = (0, 0, 0, 0);
                acc.iter_mut().for_each(|a| *a = 0.0);
                for y in 2 * cy..(2 * cy + 2).min(ih) {
                    for x in 2 * cx..(2 * cx + 2).min(iw) {
                        let q = (y + R) * self.w + x + R;
                        nall += 1;
                        match self.st[q] {
                            FILL => nfill += 1,
                            DATA => ndata += 1,
                            _ => continue,
                        }
                        for ch in 0..c {
                            acc[ch] += self.v[q * c + ch];
                        }
                        nfilm += usize::from(self.film[q]);
                    }
                }
                let q = (cy + R) * w + cx + R;
                if nfill + ndata > 0 {
                    out.st[q] = if nfill > 0 { FILL } else { DATA };
                    for ch in 0..c {
                        out.v[q * c + ch] = acc[ch] / (nfill + ndata) as f32;
                    }
                }
                out.film[q] = nfilm == 4 && nall == 4;
            }
        }
        out.finish();
        out
    }
}

/// splitmix64: small, fast, and fixed forever (the fill of a seed must not change with a
/// dependency's version).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        ((self.next() >> 32) * n as u64 >> 32) as usize
    }
}

/// Patch offsets (linear, in a level of width `w`).
fn offsets(w: usize) -> Vec<isize> {
    let r = R as isize;
    let mut o = Vec::with_capacity((2 * R + 1) * (2 * R + 1));
    for dy in -r..=r {
        for dx in -r..=r {
            o.push(dy * w as isize + dx);
        }
    }
    o
}

/// Sum of squared differences between the target patch at `p` (its non-OFF pixels: data, and
/// the current estimate of hole pixels) and the source patch at `s`; stops early above `cap`.
#[inline]
fn dist(l: &Level, offs: &[isize], p: usize, s: usize, cap: f32) -> f32 {
    let c = l.c;
    let mut d = 0f32;
    for &o in offs {
        let q = (p as isize + o) as usize;
        if l.st[q] == OFF {
            continue;
        }
        let k = (s as isize + o) as usize;
        for ch in 0..c {
            let e = l.v[q * c + ch] - l.v[k * c + ch];
            d += e * e;
        }
        if d > cap {
            return d;
        }
    }
    d
}

/// PatchMatch sweeps over the level's hole pixels: propagation from the previous pixel in
/// scan order (row and column), then random search around the best match with a halving
/// radius.
fn patchmatch(
    l: &Level,
    offs: &[isize],
    nnf: &mut [u32],
    nd: &mut [f32],
    rng: &mut Rng,
    sweeps: usize,
) {
    let w = l.w as isize;
    for &p in &l.fill {
        let p = p as usize;
        nd[p] = dist(l, offs, p, nnf[p] as usize, f32::INFINITY);
    }
    let maxr = l.w.max(l.h) as isize;
    for sweep in 0..sweeps {
        let fwd = sweep % 2 == 0;
        let step: isize = if fwd { 1 } else { -1 };
        let n = l.fill.len();
        for i in 0..n {
            let p = l.fill[if fwd { i } else { n - 1 - i }] as usize;
            let mut best = nnf[p] as usize;
            let mut bd = nd[p];
            for nb in [p as isize - step, p as isize - step * w] {
                let nb = nb as usize;
                if l.st[nb] != FILL {
                    continue;
                }
                let cand = (nnf[nb] as isize + (p as isize - nb as isize)) as usize;
                if cand < l.ok.len() && l.ok[cand] && cand != best {
                    let d = dist(l, offs, p, cand, bd);
                    if d < bd {
                        bd = d;
                        best = cand;
                    }
                }
            }
            let (bx, by) = ((best % l.w) as isize, (best / l.w) as isize);
            let mut r = maxr;
            while r >= 1 {
                let x = bx + (rng.below(2 * r as usize + 1) as isize - r);
                let y = by + (rng.below(2 * r as usize + 1) as isize - r);
                if x >= 0 && y >= 0 && (x as usize) < l.w && (y as usize) < l.h {
                    let cand = y as usize * l.w + x as usize;
                    if l.ok[cand] && cand != best {
                        let d = dist(l, offs, p, cand, bd);
                        if d < bd {
                            bd = d;
                            best = cand;
                        }
                    }
                }
                r /= 2;
            }
            nnf[p] = best as u32;
            nd[p] = bd;
        }
    }
}

/// Re-estimate every hole pixel as the weighted mean of what the overlapping hole-centred
/// patches' sources say about it; weights fall with patch distance (scale: the median
/// distance per pixel of this level), so good matches dominate and the texture stays sharp.
fn vote(l: &mut Level, offs: &[isize], nnf: &[u32], nd: Option<&[f32]>) {
    let c = l.c;
    let npx = offs.len() as f32;
    let scale = match nd {
        Some(nd) => {
            let mut v: Vec<f32> = l.fill.iter().map(|&p| nd[p as usize] / npx).collect();
            let mid = v.len() / 2;
            let m = *v.select_nth_unstable_by(mid, f32::total_cmp).1;
            m.max(1e-6)
        }
        None => 1.0,
    };
    let mut acc = vec![0f32; c];
    let mut out = vec![0f32; l.fill.len() * c];
    for (i, &q) in l.fill.iter().enumerate() {
        let q = q as usize;
        acc.iter_mut().for_each(|a| *a = 0.0);
        let mut ws = 0f32;
        for &o in offs {
            let p = (q as isize - o) as usize;
            if l.st[p] != FILL {
                continue;
            }
            let wgt = match nd {
                Some(nd) => (-(nd[p] / npx) / (2.0 * scale)).exp(),
                None => 1.0,
            };
            let k = (nnf[p] as isize + o) as usize;
            for ch in 0..c {
                acc[ch] += wgt * l.v[k * c + ch];
            }
            ws += wgt;
        }
        for ch in 0..c {
            out[i * c + ch] = if ws > 0.0 {
                acc[ch] / ws
            } else {
                l.v[q * c + ch]
            };
        }
    }
    for (i, &q) in l.fill.iter().enumerate() {
        let q = q as usize;
        l.v[q * c..q * c + c].copy_from_slice(&out[i * c..i * c + c]);
    }
}

/// Onion peel: fill the hole layer by layer from its border, each pixel the mean of its
/// already-known 8-neighbours. The coarsest level's starting point.
fn onion(l: &mut Level) {
    let (w, c) = (l.w, l.c);
    let mut known: Vec<bool> = l.st.iter().map(|&s| s == DATA).collect();
    let mut todo: Vec<usize> = l.fill.iter().map(|&p| p as usize).collect();
    let mut acc = vec![0f32; c];
    while !todo.is_empty() {
        let mut layer = Vec::new();
        let mut rest = Vec::new();
        for &p in &todo {
            let mut n = 0;
            acc.iter_mut().for_each(|a| *a = 0.0);
            for q in [
                p - w - 1,
                p - w,
                p - w + 1,
                p - 1,
                p + 1,
                p + w - 1,
                p + w,
                p + w + 1,
            ] {
                if known[q] {
                    n += 1;
                    for ch in 0..c {
                        acc[ch] += l.v[q * c + ch];
                    }
                }
            }
            if n > 0 {
                layer.push((p, acc.iter().map(|a| a / n as f32).collect::<Vec<_>>()));
            } else {
                rest.push(p);
            }
        }
        if layer.is_empty() {
            break; // no data anywhere near: leave as is (the caller checked for sources)
        }
        for (p, v) in layer {
            l.v[p * c..p * c + c].copy_from_slice(&v);
            known[p] = true;
        }
        todo = rest;
    }
}

/// Fill `unknown` (local indices) in `local` by exemplar synthesis. `local.inside` pixels not
/// in `unknown` are data (e.g. film kept) but never sources. With `start`, the values already
/// in `local` at `unknown` (a smooth fill) are the coarsest level's starting point, else an
/// onion peel is. Returns false, leaving `local` untouched, when the window holds too few
/// source patches (the caller falls back to a smooth fill).
pub(crate) fn fill(local: &mut Local, unknown: &[usize], start: bool, seed: u64, max: f32) -> bool {
    if unknown.is_empty() {
        return true;
    }
    let (lw, lh, c) = (local.w, local.h, local.c);
    let (w, h) = (lw + 2 * R, lh + 2 * R);
    let mut in_hole = vec![false; lw * lh];
    for &p in &local.inside {
        in_hole[p as usize] = true;
    }
    let mut base = Level::blank(w, h, c);
    let to_level = |p: usize| (p / lw + R) * w + p % lw + R;
    for p in 0..lw * lh {
        let q = to_level(p);
        if local.flag[p] != EXCLUDED {
            base.st[q] = DATA;
            base.v[q * c..q * c + c].copy_from_slice(&local.vals[p * c..p * c + c]);
            base.film[q] = local.flag[p] == KNOWN && !in_hole[p];
        }
        // Other flags (telea's BAND) only occur on known pixels: they were set above.
    }
    for &p in unknown {
        let q = to_level(p);
        base.st[q] = FILL;
        base.film[q] = false;
        if start {
            base.v[q * c..q * c + c].copy_from_slice(&local.vals[p * c..p * c + c]);
        }
    }
    // Hole pixels of this hole that are data (kept film) are not film sources either.
    for &p in &local.inside {
        base.film[to_level(p as usize)] = false;
    }
    base.finish();
    if base.centres.len() < MIN_SOURCES {
        return false;
    }

    // Depth: halve until the hole is a few pixels deep, keeping enough sources per level.
    let depth = hole_depth(&base);
    let mut levels = vec![base];
    let mut d = depth;
    while d > 4.0 && levels.len() < 5 {
        let next = levels.last().expect("one level").coarser();
        if next.centres.len() < MIN_SOURCES || next.fill.is_empty() {
            break;
        }
        levels.push(next);
        d /= 2.0;
    }

    let mut rng = Rng(seed ^ 0x5851_F42D_4C95_7F2D);
    let top = levels.len() - 1;
    let mut prev: Option<(Vec<u32>, usize)> = None; // (nnf, width) of the coarser level
    for li in (0..=top).rev() {
        let l = &mut levels[li];
        let offs = offsets(l.w);
        let mut nnf = vec![u32::MAX; l.w * l.h];
        let mut nd = vec![f32::INFINITY; l.w * l.h];
        match &prev {
            None => {
                if !start {
                    onion(l);
                }
                for &p in &l.fill {
                    nnf[p as usize] = l.centres[rng.below(l.centres.len())];
                }
            }
            Some((cnnf, cw)) => {
                for &p in &l.fill {
                    let p = p as usize;
                    let (x, y) = (p % l.w - R, p / l.w - R);
                    let cq = (y / 2 + R) * cw + x / 2 + R;
                    let cs = cnnf[cq];
                    let mut s = usize::MAX;
                    if cs != u32::MAX {
                        let (sx, sy) = (cs as usize % cw - R, cs as usize / cw - R);
                        let (fx, fy) = (2 * sx + x % 2 + R, 2 * sy + y % 2 + R);
                        if fx < l.w && fy < l.h && l.ok[fy * l.w + fx] {
                            s = fy * l.w + fx;
                        }
                    }
                    if s == usize::MAX {
                        s = l.centres[rng.below(l.centres.len())] as usize;
                    }
                    nnf[p] = s as u32;
                }
                vote(l, &offs, &nnf, None);
            }
        }
        let (em, sweeps) = match (li == top, li == 0) {
            (true, _) => (6, 2),
            (false, false) => (3, 2),
            (false, true) => (2, 2),
        };
        for _ in 0..em {
            patchmatch(l, &offs, &mut nnf, &mut nd, &mut rng, sweeps);
            vote(l, &offs, &nnf, Some(&nd));
        }
        prev = Some((nnf, l.w));
    }

    let l = &levels[0];
    for &p in unknown {
        let q = to_level(p);
        for ch in 0..c {
            local.vals[p * c + ch] = l.v[q * c + ch].clamp(0.0, max);
        }
        if local.flag[p] != KNOWN {
            local.flag[p] = KNOWN; // filled (Local::store writes every non-INSIDE hole pixel)
        }
    }
    true
}

/// Largest chamfer distance (3-4 metric, in pixels) from a hole pixel to the nearest pixel
/// that is not to be filled: how deep the hole is, whatever its shape.
fn hole_depth(l: &Level) -> f32 {
    let (w, h) = (l.w, l.h);
    let mut d: Vec<u32> =
        l.st.iter()
            .map(|&s| if s == FILL { u32::MAX / 2 } else { 0 })
            .collect();
    super::chamfer_depth(&mut d, w, h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inpaint::{inpaint, Method, Options};

    #[test]
    fn rng_below_stays_in_range_and_repeats() {
        let mut a = Rng(3);
        let mut b = Rng(3);
        for n in [1usize, 2, 7, 1000] {
            for _ in 0..200 {
                let x = a.below(n);
                assert!(x < n);
                assert_eq!(x, b.below(n));
            }
        }
    }

    /// Film with texture at several scales: a gradient, diagonal stripes and deterministic
    /// grain (sd ~5 levels, near-Gaussian like quantum noise: a sum of three uniforms), 8-bit.
    fn textured(w: usize, h: usize) -> Vec<u8> {
        let hash = |i: u32, k: u32| {
            let mut z = i.wrapping_mul(2_654_435_761) ^ k.wrapping_mul(0x9E37_79B9);
            z ^= z >> 15;
            z = z.wrapping_mul(2_246_822_519);
            z ^= z >> 13;
            (z % 1000) as f32 / 1000.0 - 0.5
        };
        (0..w * h)
            .map(|i| {
                let (x, y) = ((i % w) as f32, (i / w) as f32);
                let grain = (hash(i as u32, 1) + hash(i as u32, 2) + hash(i as u32, 3)) * 10.0;
                let v = 90.0 + 0.3 * x + 0.2 * y + 12.0 * ((x + y) * 0.35).sin() + grain;
                v.round().clamp(0.0, 255.0) as u8
            })
            .collect()
    }

    /// The harness's texture measure: std of x - gauss(x, 1.5) over `sel`.
    fn fine_sd(x: &[u8], w: usize, h: usize, sel: &[bool]) -> f64 {
        let k: Vec<f64> = (-4i32..=4)
            .map(|d| (-(d * d) as f64 / (2.0 * 1.5 * 1.5)).exp())
            .collect();
        let ks: f64 = k.iter().sum();
        let at = |v: &[f64], x: i32, y: i32| {
            v[(y.clamp(0, h as i32 - 1) as usize) * w + x.clamp(0, w as i32 - 1) as usize]
        };
        let f: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let mut t = vec![0f64; w * h];
        for y in 0..h as i32 {
            for xx in 0..w as i32 {
                t[y as usize * w + xx as usize] = (-4..=4)
                    .map(|d| k[(d + 4) as usize] * at(&f, xx + d, y))
                    .sum::<f64>()
                    / ks;
            }
        }
        let mut r = Vec::new();
        for y in 0..h as i32 {
            for xx in 0..w as i32 {
                let q = y as usize * w + xx as usize;
                if sel[q] {
                    let b = (-4..=4)
                        .map(|d| k[(d + 4) as usize] * at(&t, xx, y + d))
                        .sum::<f64>()
                        / ks;
                    r.push(f[q] - b);
                }
            }
        }
        let m = r.iter().sum::<f64>() / r.len() as f64;
        (r.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / r.len() as f64).sqrt()
    }

    /// A solid white label box on textured film: the patch fill brings back film-like texture
    /// (fine-scale strength within 0.85-1.15 of the truth's), a plausible level, no white left,
    /// and nothing copied from another hole (a brighter mark next to the box).
    #[test]
    fn solid_box_on_texture_gets_texture_and_never_copies_masked_pixels() {
        let (w, h) = (200, 140);
        let clean = textured(w, h);
        let film_max = *clean.iter().max().unwrap();
        let mut img = clean.clone();
        let mut mask = vec![0u8; w * h];
        let mut boxm = vec![false; w * h];
        for y in 50..90 {
            for x in 60..140 {
                img[y * w + x] = 255;
                mask[y * w + x] = 255;
                boxm[y * w + x] = true;
            }
        }
        // a separate bright mark 4 px right of the box: masked, so never a source
        for y in 40..100 {
            for x in 144..150 {
                img[y * w + x] = 255;
                mask[y * w + x] = 255;
            }
        }
        let opts = Options {
            method: Method::Patch,
            seed: 11,
            ..Options::default()
        };
        let before = img.clone();
        let f = inpaint(&mut img, w, h, 1, &mask, &opts);
        assert_eq!(f.holes, 2);
        assert_eq!(f.patch_holes, 2, "{f:?}");
        assert_eq!(f.method_name(), "patch");
        for i in 0..w * h {
            if mask[i] == 0 {
                assert_eq!(img[i], before[i], "pixel {i} outside the mask changed");
            } else {
                assert!(
                    img[i] <= film_max,
                    "pixel {i} = {} brighter than any film",
                    img[i]
                );
            }
        }
        let ratio = fine_sd(&img, w, h, &boxm) / fine_sd(&clean, w, h, &boxm);
        assert!((0.85..=1.15).contains(&ratio), "texture ratio {ratio}");
        let mean = |v: &[u8]| {
            v.iter()
                .zip(&boxm)
                .filter(|(_, &b)| b)
                .map(|(&x, _)| x as f64)
                .sum::<f64>()
                / boxm.iter().filter(|&&b| b).count() as f64
        };
        let (mo, mc) = (mean(&img), mean(&clean));
        assert!((mo - mc).abs() < 8.0, "mean {mo} vs truth {mc}");
        // same seed, same output
        let mut again = before.clone();
        inpaint(&mut again, w, h, 1, &mask, &opts);
        assert_eq!(again, img);
    }

    /// A hole covering all but a 2-px frame leaves fewer than 16 3×3 patches of film: the
    /// patch fill declines and the hole is filled smoothly instead, outside pixels untouched.
    #[test]
    fn no_source_patches_falls_back_to_the_smooth_fill() {
        let (w, h) = (48, 40);
        let clean = textured(w, h);
        let mut img = clean.clone();
        let mut mask = vec![0u8; w * h];
        for y in 2..h - 2 {
            for x in 2..w - 2 {
                mask[y * w + x] = 255;
                img[y * w + x] = 0;
            }
        }
        let opts = Options {
            method: Method::Patch,
            ..Options::default()
        };
        let f = inpaint(&mut img, w, h, 1, &mask, &opts);
        assert_eq!((f.patch_holes, f.biharmonic_holes), (0, 1));
        assert_eq!(f.method_name(), "biharmonic");
        let (lo, hi) = (*clean.iter().min().unwrap(), *clean.iter().max().unwrap());
        for i in 0..w * h {
            if mask[i] == 0 {
                assert_eq!(img[i], clean[i]);
            } else {
                assert!(img[i] >= lo.saturating_sub(20) && img[i] <= hi.saturating_add(20));
            }
        }
    }

    #[test]
    fn hole_depth_is_half_the_narrow_side() {
        let hs = crate::inpaint::holes(
            &{
                let mut m = vec![0u8; 60 * 40];
                for y in 10..20 {
                    for x in 5..55 {
                        m[y * 60 + x] = 1;
                    }
                }
                m
            },
            60,
            40,
        );
        let d = crate::inpaint::hole_depth(&hs[0], 60);
        assert!((4.5..=6.0).contains(&d), "depth {d}");
    }
}
