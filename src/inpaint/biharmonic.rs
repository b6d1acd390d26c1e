//! Biharmonic fill of one hole, then film grain matched to the hole's surroundings.
//!
//! The smooth part minimises Σ (Δu)² over every 5-point Laplacian that touches the hole and lies
//! wholly on image pixels (skimage's `inpaint_biharmonic` solves the same equations with a direct
//! sparse solver). Here: conjugate gradient on the hole's pixels, warm-started from telea, and for
//! wide holes from the solution at half resolution (coarse to fine), so the iteration count stays
//! small. Masked pixels of the hole's outer layer that already match the film (within 2.5 grain
//! standard deviations of the smooth fill: the safety rim of a dilated mask) are kept and the hole is solved again
//! with them as data. A smooth fill is itself a visible patch (and a shortcut a classifier can learn), so
//! white noise is added whose fine-scale strength tops the fill's own up to what the film around
//! the hole shows.

use super::{patch, telea, Local, Options, EXCLUDED, INSIDE, KNOWN};

/// Box padding: 2 for the 13-point stencil, 7 for the grain ring and its blur.
pub(crate) const PAD: usize = 9;
/// Width of the ring of known pixels whose grain is measured.
const RING: usize = 6;
/// Fine-scale residual of unit white noise under `x - gauss(x, 1.5)`:
/// sqrt(1 - 2 g0 + Σg²) with g0 = 1/(2πσ²), Σg² = 1/(4πσ²).
const WHITE_HP: f32 = 0.9455;

/// How far (in grain standard deviations of the ring) a masked pixel may sit from the smooth
/// fill and still be kept as film.
const KEEP_SIGMAS: f32 = 2.5;
/// Fine-scale strength of the filled pixels relative to the ring's. A full match: the ring's
/// robust estimate already reads low on real X-rays (texture ratio 0.90 there, 1.04 on the
/// synthetic cases); 0.85 would save 0.15 dB but drop the real case to 0.79.
const GRAIN_FRACTION: f32 = 1.0;

/// Fill `local`'s hole: telea warm start, biharmonic CG, film kept, grain.
pub(crate) fn fill(local: &mut Local, opts: &Options, max: f32) {
    fill_with(local, opts, max, None);
}

/// Like [`fill`], but the pixels left to invent after the smooth solve and the film-kept step
/// are synthesised by exemplar ([`patch::fill`], started from the smooth fill) instead of
/// grain. Returns whether the patch fill ran (false: too few source patches near the hole, so
/// the smooth fill + grain was used).
pub(crate) fn fill_patch(local: &mut Local, opts: &Options, seed: u64, max: f32) -> bool {
    fill_with(local, opts, max, Some(seed))
}

fn fill_with(local: &mut Local, opts: &Options, max: f32, patch_seed: Option<u64>) -> bool {
    telea::fill(local, opts.radius);
    let pos: Vec<usize> = (0..local.inside.len())
        .filter(|&i| local.flag[local.inside[i] as usize] != INSIDE)
        .collect();
    let mut unknown: Vec<usize> = pos.iter().map(|&i| local.inside[i] as usize).collect();
    if unknown.is_empty() {
        return false;
    }
    smooth(local, &unknown);
    let ring_sd = ring_grain(local, &unknown);
    let Some(ring_sd) = ring_sd else {
        return match patch_seed {
            Some(seed) => patch::fill(local, &unknown, true, seed, max),
            None => false,
        };
    };
    if opts.keep_film {
        let c = local.c;
        let mut keep = vec![false; local.w * local.h];
        let mut any = false;
        let w = local.w;
        let mut in_hole = vec![false; local.w * local.h];
        for &p in &local.inside {
            in_hole[p as usize] = true;
        }
        for &i in &pos {
            let p = local.inside[i] as usize;
            // Only the hole's outer layer (4-neighbour of real film) may be kept: that is
            // the safety rim a dilated mask adds. Deeper pixels that merely sit near the
            // fill are faint annotation (a semi-transparent watermark, anti-aliased edges),
            // and keeping them cost 1-2 dB on the real harness image.
            if ![p - w, p - 1, p + 1, p + w]
                .iter()
                .any(|&q| !in_hole[q] && local.flag[q] != EXCLUDED)
            {
                continue;
            }
            let film = (0..c).all(|ch| {
                let thr = KEEP_SIGMAS * ring_sd[ch].max(0.5 * max / 255.0);
                (local.orig[i * c + ch] - local.vals[p * c + ch]).abs() <= thr
            });
            if film {
                for ch in 0..c {
                    local.vals[p * c + ch] = local.orig[i * c + ch];
                }
                keep[p] = true;
                local.kept.push(p as u32);
                any = true;
            }
        }
        if any {
            unknown.retain(|&p| !keep[p]);
            // The kept pixels are real data: solve again with them as boundary values.
            if !unknown.is_empty() {
                smooth(local, &unknown);
            }
        }
    }
    let patched = match patch_seed {
        Some(seed) => patch::fill(local, &unknown, true, seed, max),
        None => false,
    };
    // After a patch fill this only tops up what the vote averaged away (nothing where the
    // copied film already has the ring's fine-scale strength).
    grain(local, &unknown, &ring_sd, opts.seed, max);
    patched
}

/// Pixel status for the solver.
const S_KNOWN: u8 = 0;
const S_UNKNOWN: u8 = 1;
const S_OFF: u8 = 2;

/// CG iterations at the finest level; coarse levels (cheap) get more. The coarse levels have
/// already removed the slow, smooth error.
fn level_iters(depth: usize) -> usize {
    if depth == 0 {
        25
    } else {
        50
    }
}

/// Smooth every channel of the hole's `unknown` pixels.
fn smooth(local: &mut Local, unknown: &[usize]) {
    let (w, h, c) = (local.w, local.h, local.c);
    let n = w * h;
    let mut status: Vec<u8> = local
        .flag
        .iter()
        .map(|&f| {
            if f == EXCLUDED || f == INSIDE {
                S_OFF
            } else {
                S_KNOWN
            }
        })
        .collect();
    for &p in unknown {
        status[p] = S_UNKNOWN;
    }
    let mut u = vec![0f32; n];
    for ch in 0..c {
        for q in 0..n {
            u[q] = local.vals[q * c + ch];
        }
        solve_levels(&mut u, &status, w, h, 0);
        for &p in unknown {
            local.vals[p * c + ch] = u[p];
        }
    }
}

/// Coarse to fine: solve the hole at half resolution first (recursively), take the upsampled
/// solution as the starting point, then run CG at this level.
fn solve_levels(u: &mut [f32], status: &[u8], w: usize, h: usize, depth: usize) {
    let unknown: Vec<usize> = (0..w * h).filter(|&q| status[q] == S_UNKNOWN).collect();
    if unknown.is_empty() {
        return;
    }
    if unknown.len() >= 48 && depth < 5 && w >= 12 && h >= 12 {
        let (cw, chh) = (w.div_ceil(2), h.div_ceil(2));
        let mut cu = vec![0f32; cw * chh];
        let mut cs = vec![S_OFF; cw * chh];
        for cy in 0..chh {
            for cx in 0..cw {
                let (mut su, mut nu, mut sk, mut nk) = (0f32, 0, 0f32, 0);
                for y in 2 * cy..(2 * cy + 2).min(h) {
                    for x in 2 * cx..(2 * cx + 2).min(w) {
                        let q = y * w + x;
                        match status[q] {
                            S_UNKNOWN => {
                                su += u[q];
                                nu += 1;
                            }
                            S_KNOWN => {
                                sk += u[q];
                                nk += 1;
                            }
                            _ => {}
                        }
                    }
                }
                let i = cy * cw + cx;
                if nu > 0 {
                    cs[i] = S_UNKNOWN;
                    cu[i] = (su + sk) / (nu + nk) as f32;
                } else if nk > 0 {
                    cs[i] = S_KNOWN;
                    cu[i] = sk / nk as f32;
                }
            }
        }
        solve_levels(&mut cu, &cs, cw, chh, depth + 1);
        // Bilinear prolongation from coarse pixel centres, over usable coarse pixels only.
        for &p in &unknown {
            let (x, y) = (p % w, p / w);
            let fx = ((x as f32 - 0.5) * 0.5).clamp(0.0, (cw - 1) as f32);
            let fy = ((y as f32 - 0.5) * 0.5).clamp(0.0, (chh - 1) as f32);
            let (x0, y0) = (fx.floor() as usize, fy.floor() as usize);
            let (x1, y1) = ((x0 + 1).min(cw - 1), (y0 + 1).min(chh - 1));
            let (ax, ay) = (fx - x0 as f32, fy - y0 as f32);
            let (mut s, mut ws) = (0f32, 0f32);
            for (xx, yy, wt) in [
                (x0, y0, (1.0 - ax) * (1.0 - ay)),
                (x1, y0, ax * (1.0 - ay)),
                (x0, y1, (1.0 - ax) * ay),
                (x1, y1, ax * ay),
            ] {
                let i = yy * cw + xx;
                if cs[i] != S_OFF && wt > 0.0 {
                    s += wt * cu[i];
                    ws += wt;
                }
            }
            if ws > 0.0 {
                u[p] = s / ws;
            }
        }
    }
    cg(u, status, &unknown, w, h, level_iters(depth));
}

/// Conjugate gradient on the normal equations of the Laplacians that touch the unknowns and
/// lie wholly on usable pixels.
fn cg(u: &mut [f32], status: &[u8], unknown: &[usize], w: usize, h: usize, max_iter: usize) {
    let n = w * h;
    let mut in_rows = vec![false; n];
    let mut rows = Vec::with_capacity(unknown.len() * 2);
    for &p in unknown {
        let (px, py) = (p % w, p / w);
        let cand = [
            Some(p),
            (px > 0).then(|| p - 1),
            (px + 1 < w).then(|| p + 1),
            (py > 0).then(|| p - w),
            (py + 1 < h).then(|| p + w),
        ];
        for q in cand.into_iter().flatten() {
            if in_rows[q] {
                continue;
            }
            in_rows[q] = true;
            let (qx, qy) = (q % w, q / w);
            if qx == 0 || qy == 0 || qx + 1 >= w || qy + 1 >= h {
                continue;
            }
            if [q, q - w, q - 1, q + 1, q + w]
                .iter()
                .all(|&k| status[k] != S_OFF)
            {
                rows.push(q);
            }
        }
    }
    // Unknowns on the box edge cannot be reached by the stencils below; leave them be.
    let unknown: Vec<usize> = unknown
        .iter()
        .copied()
        .filter(|&p| {
            let (x, y) = (p % w, p / w);
            x > 0 && y > 0 && x + 1 < w && y + 1 < h
        })
        .collect();
    if rows.is_empty() || unknown.is_empty() {
        return;
    }
    let lap = |x: &[f32], q: usize| 4.0 * x[q] - x[q - 1] - x[q + 1] - x[q - w] - x[q + w];
    let mut v = vec![0f32; n];
    let mut d = vec![0f32; n];
    let mut r = vec![0f32; unknown.len()];
    let mut ad = vec![0f32; unknown.len()];
    for &q in &rows {
        v[q] = lap(u, q);
    }
    for (i, &p) in unknown.iter().enumerate() {
        r[i] = -lap(&v, p);
    }
    let mut rs: f64 = r.iter().map(|&x| (x as f64) * (x as f64)).sum();
    let rs0 = rs;
    if rs0 == 0.0 {
        return;
    }
    for (i, &p) in unknown.iter().enumerate() {
        d[p] = r[i];
    }
    for _ in 0..max_iter {
        for &q in &rows {
            v[q] = lap(&d, q);
        }
        let mut dad = 0f64;
        for (i, &p) in unknown.iter().enumerate() {
            ad[i] = lap(&v, p);
            dad += (d[p] as f64) * (ad[i] as f64);
        }
        if dad <= 0.0 {
            break;
        }
        let alpha = (rs / dad) as f32;
        let mut rs_new = 0f64;
        for (i, &p) in unknown.iter().enumerate() {
            u[p] += alpha * d[p];
            r[i] -= alpha * ad[i];
            rs_new += (r[i] as f64) * (r[i] as f64);
        }
        if rs_new < rs0 * 1e-8 {
            break;
        }
        let beta = (rs_new / rs) as f32;
        rs = rs_new;
        for (i, &p) in unknown.iter().enumerate() {
            d[p] = r[i] + beta * d[p];
        }
    }
}

/// Gaussian (σ = 1.5) of `x` weighted by `wt` (normalised convolution), evaluated at the
/// pixels `at` only: a full horizontal pass, then the vertical pass where it is needed.
fn blur_weighted(x: &[f32], wt: &[f32], w: usize, h: usize, at: &[usize]) -> Vec<f32> {
    const R: usize = 4;
    let k: [f32; 2 * R + 1] = std::array::from_fn(|i| {
        let d = i as f32 - R as f32;
        (-d * d / (2.0 * 1.5 * 1.5)).exp()
    });
    let mut num = vec![0f32; w * h];
    let mut den = vec![0f32; w * h];
    for y in 0..h {
        let row = y * w;
        for xx in 0..w {
            let (mut sn, mut sd) = (0f32, 0f32);
            let lo = xx.saturating_sub(R);
            let hi = (xx + R + 1).min(w);
            for j in lo..hi {
                let kk = k[j + R - xx];
                let wv = wt[row + j];
                sn += kk * wv * x[row + j];
                sd += kk * wv;
            }
            num[row + xx] = sn;
            den[row + xx] = sd;
        }
    }
    at.iter()
        .map(|&p| {
            let (px, py) = (p % w, p / w);
            let (mut sn, mut sd) = (0f32, 0f32);
            for j in py.saturating_sub(R)..(py + R + 1).min(h) {
                let kk = k[j + R - py];
                sn += kk * num[j * w + px];
                sd += kk * den[j * w + px];
            }
            if sd > 1e-3 {
                sn / sd
            } else {
                x[p]
            }
        })
        .collect()
}

/// Deterministic normal deviates (splitmix64 + Box–Muller). Written here rather than taken from
/// `rand`, so the grain of a given seed never changes with a dependency's version.
struct Gauss(u64);

impl Gauss {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f32 {
        let (a, b) = (self.uniform(), self.uniform());
        ((-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()) as f32
    }
}

/// Known pixels within RING (Chebyshev) of the hole.
fn ring_of(local: &Local, unknown: &[usize]) -> Vec<usize> {
    let (w, h) = (local.w, local.h);
    let mut dist = vec![false; w * h];
    let mut frontier: Vec<usize> = unknown.to_vec();
    for &p in unknown {
        dist[p] = true;
    }
    let mut ring = Vec::new();
    for _ in 0..RING {
        let mut next = Vec::new();
        for &p in &frontier {
            let (px, py) = (p % w, p / w);
            for y in py.saturating_sub(1)..(py + 2).min(h) {
                for x in px.saturating_sub(1)..(px + 2).min(w) {
                    let q = y * w + x;
                    if !dist[q] && local.flag[q] == KNOWN {
                        dist[q] = true;
                        next.push(q);
                        ring.push(q);
                    }
                }
            }
        }
        frontier = next;
    }
    ring
}

/// Fine-scale residual (x - gauss(x, 1.5), known film only) std on the ring, per channel.
fn ring_grain(local: &Local, unknown: &[usize]) -> Option<Vec<f32>> {
    let (w, h, c) = (local.w, local.h, local.c);
    let n = w * h;
    let ring = ring_of(local, unknown);
    if ring.len() < 16 {
        return None;
    }
    let mut is_unknown = vec![false; n];
    for &p in unknown {
        is_unknown[p] = true;
    }
    let film: Vec<f32> = (0..n)
        .map(|q| f32::from(u8::from(local.flag[q] == KNOWN && !is_unknown[q])))
        .collect();
    let mut x = vec![0f32; n];
    let mut out = Vec::with_capacity(c);
    for ch in 0..c {
        for q in 0..n {
            x[q] = local.vals[q * c + ch];
        }
        let bf = blur_weighted(&x, &film, w, h, &ring);
        out.push(robust_sd(
            ring.iter().zip(&bf).map(|(&q, b)| x[q] - b).collect(),
        ));
    }
    Some(out)
}

/// Add white noise to the filled pixels so their fine-scale residual tops up to the ring's.
fn grain(local: &mut Local, unknown: &[usize], ring_sd: &[f32], seed: u64, max: f32) {
    let (w, h, c) = (local.w, local.h, local.c);
    let n = w * h;
    if unknown.is_empty() {
        return;
    }
    let all: Vec<f32> = (0..n)
        .map(|q| f32::from(u8::from(local.flag[q] == KNOWN)))
        .collect();
    let mix = ((local.x0 as u64) << 32 ^ (local.y0 as u64 & 0xFFFF_FFFF))
        .wrapping_mul(0x2545_F491_4F6C_DD1D);
    let mut rng = Gauss(seed ^ mix);
    let noise: Vec<f32> = (0..unknown.len()).map(|_| rng.normal()).collect();
    let mut x = vec![0f32; n];
    for ch in 0..c {
        for q in 0..n {
            x[q] = local.vals[q * c + ch];
        }
        let ba = blur_weighted(&x, &all, w, h, unknown);
        let fill_sd = std_dev(unknown.iter().zip(&ba).map(|(&p, b)| x[p] - b));
        let target = ring_sd[ch] * GRAIN_FRACTION;
        let add = (target * target - fill_sd * fill_sd).max(0.0).sqrt() / WHITE_HP;
        if add <= 0.0 {
            continue;
        }
        for (i, &p) in unknown.iter().enumerate() {
            local.vals[p * c + ch] = (x[p] + add * noise[i]).clamp(0.0, max);
        }
    }
}

/// Standard deviation estimated from the median absolute deviation: edges, JPEG ringing and
/// stray marks in the ring inflate a plain std, the film's grain does not.
fn robust_sd(mut v: Vec<f32>) -> f32 {
    if v.len() < 2 {
        return 0.0;
    }
    let mid = v.len() / 2;
    let med = *v.select_nth_unstable_by(mid, f32::total_cmp).1;
    let mut dev: Vec<f32> = v.iter().map(|x| (x - med).abs()).collect();
    let mad = *dev.select_nth_unstable_by(mid, f32::total_cmp).1;
    1.4826 * mad
}

fn std_dev(it: impl Iterator<Item = f32>) -> f32 {
    let (mut n, mut s, mut s2) = (0f64, 0f64, 0f64);
    for v in it {
        n += 1.0;
        s += v as f64;
        s2 += (v as f64) * (v as f64);
    }
    if n < 2.0 {
        return 0.0;
    }
    let m = s / n;
    ((s2 / n - m * m).max(0.0)).sqrt() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauss_is_deterministic_and_standard() {
        let mut a = Gauss(7);
        let mut b = Gauss(7);
        let xs: Vec<f32> = (0..20000).map(|_| a.normal()).collect();
        let ys: Vec<f32> = (0..20000).map(|_| b.normal()).collect();
        assert_eq!(xs, ys);
        let sd = std_dev(xs.iter().copied());
        let mean: f32 = xs.iter().sum::<f32>() / xs.len() as f32;
        assert!((sd - 1.0).abs() < 0.03, "sd {sd}");
        assert!(mean.abs() < 0.03, "mean {mean}");
    }
}
