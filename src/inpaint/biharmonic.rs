//! Biharmonic fill of one hole, then film grain matched to the hole's surroundings.
//!
//! The smooth part minimises Σ (Δu)² over every 5-point Laplacian that touches the hole and lies
//! wholly on image pixels (skimage's `inpaint_biharmonic` solves the same equations with a direct
//! sparse solver). Here: conjugate gradient on the hole's pixels, warm-started from telea, and for
//! wide holes from the solution at half resolution (coarse to fine), so the iteration count stays
//! small. A smooth fill is itself a visible patch (and a shortcut a classifier can learn), so
//! white noise is added whose fine-scale strength tops the fill's own up to what the film around
//! the hole shows.

use super::{telea, Local, Options, EXCLUDED, INSIDE, KNOWN};

/// Box padding: 2 for the 13-point stencil, 7 for the grain ring and its blur.
pub(crate) const PAD: usize = 9;
/// Width of the ring of known pixels whose grain is measured.
const RING: usize = 6;
/// Fine-scale residual of unit white noise under `x - gauss(x, 1.5)`:
/// sqrt(1 - 2 g0 + Σg²) with g0 = 1/(2πσ²), Σg² = 1/(4πσ²).
const WHITE_HP: f32 = 0.9455;

/// Fill `local`'s hole: telea warm start, biharmonic CG, grain.
pub(crate) fn fill(local: &mut Local, opts: &Options, max: f32) {
    telea::fill(local, opts.radius);
    let unknown: Vec<usize> = local
        .inside
        .iter()
        .map(|&p| p as usize)
        .filter(|&p| local.flag[p] != INSIDE)
        .collect();
    if unknown.is_empty() {
        return;
    }
    smooth(local, &unknown);
    grain(local, &unknown, opts.seed, max);
}

/// Conjugate gradient on the normal equations of the Laplacians that touch the hole.
fn smooth(local: &mut Local, unknown: &[usize]) {
    let (w, h, c) = (local.w, local.h, local.c);
    let n = w * h;
    // is_unknown and the Laplacian rows used: the hole and its 4-neighbours whose whole stencil
    // lies on image pixels.
    let mut is_unknown = vec![false; n];
    for &p in unknown {
        is_unknown[p] = true;
    }
    let usable = |q: usize| local.flag[q] != EXCLUDED && local.flag[q] != INSIDE;
    let mut rows = Vec::with_capacity(unknown.len() * 2);
    let mut in_rows = vec![false; n];
    for &p in unknown {
        for q in [p, p - w, p - 1, p + 1, p + w] {
            if in_rows[q] {
                continue;
            }
            in_rows[q] = true;
            let qx = q % w;
            let qy = q / w;
            if qx == 0 || qy == 0 || qx + 1 >= w || qy + 1 >= h {
                continue;
            }
            if [q, q - w, q - 1, q + 1, q + w].iter().all(|&k| usable(k)) {
                rows.push(q);
            }
        }
    }
    rows.sort_unstable();

    let lap = |x: &[f32], q: usize| 4.0 * x[q] - x[q - 1] - x[q + 1] - x[q - w] - x[q + w];
    let mut u = vec![0f32; n];
    let mut v = vec![0f32; n];
    let mut d = vec![0f32; n];
    let mut r = vec![0f32; unknown.len()];
    let mut ad = vec![0f32; unknown.len()];
    // Iterations: thin strokes converge in a few dozen; the cap bounds wide holes.
    let max_iter = 400;
    for ch in 0..c {
        for q in 0..n {
            u[q] = local.vals[q * c + ch];
        }
        // r = -A u (with the known pixels in u)
        for &q in &rows {
            v[q] = lap(&u, q);
        }
        for (i, &p) in unknown.iter().enumerate() {
            r[i] = -lap(&v, p);
        }
        let mut rs: f64 = r.iter().map(|&x| (x as f64) * (x as f64)).sum();
        let rs0 = rs;
        if rs0 == 0.0 {
            continue;
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
            if rs_new < rs0 * 1e-6 {
                break;
            }
            let beta = (rs_new / rs) as f32;
            rs = rs_new;
            for (i, &p) in unknown.iter().enumerate() {
                d[p] = r[i] + beta * d[p];
            }
        }
        for &p in unknown {
            local.vals[p * c + ch] = u[p];
            d[p] = 0.0;
        }
        for &q in &rows {
            v[q] = 0.0;
        }
    }
}

/// Gaussian (σ = 1.5) of `x` weighted by `wt` (normalised convolution), separable.
fn blur_weighted(x: &[f32], wt: &[f32], w: usize, h: usize) -> Vec<f32> {
    const R: usize = 4;
    let k: Vec<f32> = (0..=2 * R)
        .map(|i| {
            let d = i as f32 - R as f32;
            (-d * d / (2.0 * 1.5 * 1.5)).exp()
        })
        .collect();
    let conv = |src: &[f32]| -> Vec<f32> {
        let mut tmp = vec![0f32; w * h];
        for y in 0..h {
            for x in 0..w {
                let mut s = 0.0;
                for (i, kk) in k.iter().enumerate() {
                    let xx = x as isize + i as isize - R as isize;
                    if xx >= 0 && (xx as usize) < w {
                        s += kk * src[y * w + xx as usize];
                    }
                }
                tmp[y * w + x] = s;
            }
        }
        let mut out = vec![0f32; w * h];
        for y in 0..h {
            for x in 0..w {
                let mut s = 0.0;
                for (i, kk) in k.iter().enumerate() {
                    let yy = y as isize + i as isize - R as isize;
                    if yy >= 0 && (yy as usize) < h {
                        s += kk * tmp[yy as usize * w + x];
                    }
                }
                out[y * w + x] = s;
            }
        }
        out
    };
    let xw: Vec<f32> = x.iter().zip(wt).map(|(a, b)| a * b).collect();
    let num = conv(&xw);
    let den = conv(wt);
    num.iter()
        .zip(&den)
        .map(|(a, b)| if *b > 1e-3 { a / b } else { 0.0 })
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

/// Add white noise so the hole's fine-scale residual matches the ring of film around it.
fn grain(local: &mut Local, unknown: &[usize], seed: u64, max: f32) {
    let (w, h, c) = (local.w, local.h, local.c);
    let n = w * h;
    // Ring: known pixels within RING (Chebyshev) of the hole, found by dilating the hole.
    let mut dist = vec![u8::MAX; n];
    let mut frontier: Vec<usize> = unknown.to_vec();
    for &p in unknown {
        dist[p] = 0;
    }
    let mut ring = Vec::new();
    for step in 1..=RING as u8 {
        let mut next = Vec::new();
        for &p in &frontier {
            let (px, py) = (p % w, p / w);
            for dy in -1isize..=1 {
                for dx in -1isize..=1 {
                    let (x, y) = (px as isize + dx, py as isize + dy);
                    if x < 0 || y < 0 || x >= w as isize || y >= h as isize {
                        continue;
                    }
                    let q = y as usize * w + x as usize;
                    if dist[q] == u8::MAX && local.flag[q] == KNOWN {
                        dist[q] = step;
                        next.push(q);
                        ring.push(q);
                    }
                }
            }
        }
        frontier = next;
    }
    if ring.len() < 16 {
        return;
    }
    let mut is_unknown = vec![false; n];
    for &p in unknown {
        is_unknown[p] = true;
    }
    // Film pixels only (not the hole, not other holes) for the ring's residual.
    let film: Vec<f32> = (0..n)
        .map(|q| {
            if local.flag[q] == KNOWN && !is_unknown[q] {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    let all: Vec<f32> = (0..n)
        .map(|q| if local.flag[q] == KNOWN { 1.0 } else { 0.0 })
        .collect();
    let mut rng = Gauss(seed ^ ((local.x0 as u64) << 32 ^ local.y0 as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let mut noise = vec![0f32; unknown.len()];
    for v in noise.iter_mut() {
        *v = rng.normal();
    }
    let mut x = vec![0f32; n];
    for ch in 0..c {
        for q in 0..n {
            x[q] = local.vals[q * c + ch];
        }
        let bf = blur_weighted(&x, &film, w, h);
        let ring_sd = std_dev(ring.iter().map(|&q| x[q] - bf[q]));
        let ba = blur_weighted(&x, &all, w, h);
        let fill_sd = std_dev(unknown.iter().map(|&p| x[p] - ba[p]));
        let add = (ring_sd * ring_sd - fill_sd * fill_sd).max(0.0).sqrt() / WHITE_HP;
        if add <= 0.0 {
            continue;
        }
        for (i, &p) in unknown.iter().enumerate() {
            local.vals[p * c + ch] = (x[p] + add * noise[i]).clamp(0.0, max);
        }
    }
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
