//! `prep inpaint`: find burned-in annotations (text, L/R markers, arrows, label boxes) and erase
//! them by inpainting, keeping every pixel outside the mask bit-for-bit.
//!
//! Layout: [`holes`] splits a mask into connected holes, each worked on in its own padded
//! bounding box ([`Local`]) so the cost follows the masked area, not the image size;
//! [`telea`] and [`biharmonic`] fill a hole; [`detect`] builds masks; [`io`] decodes and encodes
//! images keeping bit depth and colour type; [`stage`] is the bag-to-bag stage.
//!
//! imageproc has no inpainting and the one crate that does (EUPL, Telea) is slower than OpenCV,
//! so the fills are written here, on f32.

pub mod annotations;
pub mod biharmonic;
pub mod detect;
pub mod io;
pub mod patch;
pub mod shapes;
pub mod stage;
pub mod telea;
pub mod watermark;

/// How to fill holes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// The recommended fill for training data: per hole, from its depth (distance transform)
    /// and the film around it; see docs/inpaint.md for the rule.
    Auto,
    /// Fast marching (Telea 2004): fastest, slightly streaky in wide holes.
    Telea,
    /// Smooth biharmonic fill (conjugate gradient warm-started from telea), plus film grain
    /// matched to the hole's surroundings.
    Biharmonic,
    /// Exemplar fill (multi-scale PatchMatch): copies film texture from near the hole; made
    /// for wide holes such as solid label boxes.
    Patch,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Auto => "auto",
            Method::Telea => "telea",
            Method::Biharmonic => "biharmonic",
            Method::Patch => "patch",
        }
    }
}

/// A pixel sample type the fills read and write (8- and 16-bit integers).
pub trait Sample: Copy + Send + Sync + 'static {
    const MAX: f32;
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
}

impl Sample for u8 {
    const MAX: f32 = 255.0;
    #[inline]
    fn to_f32(self) -> f32 {
        self as f32
    }
    #[inline]
    fn from_f32(v: f32) -> Self {
        v.round().clamp(0.0, 255.0) as u8
    }
}

impl Sample for u16 {
    const MAX: f32 = 65535.0;
    #[inline]
    fn to_f32(self) -> f32 {
        self as f32
    }
    #[inline]
    fn from_f32(v: f32) -> Self {
        v.round().clamp(0.0, 65535.0) as u16
    }
}

/// One connected (8-neighbour) hole of a mask: its pixels (row-major indices, flood-fill order) and bounding box
/// (inclusive).
#[derive(Debug, Clone)]
pub struct Hole {
    pub pixels: Vec<u32>,
    pub x0: usize,
    pub y0: usize,
    pub x1: usize,
    pub y1: usize,
}

/// Split a mask (non-zero = hole) into 8-connected holes, in raster order of their first pixel.
/// Only masked pixels are visited after one quick scan for non-zero bytes.
pub fn holes(mask: &[u8], width: usize, height: usize) -> Vec<Hole> {
    assert_eq!(mask.len(), width * height, "mask size");
    // non-zero = masked and not yet assigned to a hole
    find_holes(&mut Copied(mask.to_vec()), width, height)
}

/// [`holes`] of a mask whose values are all below 128, without copying it: pixels are marked
/// as taken in their top bit while flooding, and the mask is restored before returning.
pub(crate) fn holes_in_place(mask: &mut [u8], width: usize, height: usize) -> Vec<Hole> {
    assert_eq!(mask.len(), width * height, "mask size");
    let out = find_holes(&mut TopBit(mask), width, height);
    for &p in out.iter().flat_map(|h| &h.pixels) {
        mask[p as usize] &= 0x7f;
    }
    out
}

/// How [`find_holes`] marks the pixels it has taken.
trait Pixels {
    /// Take pixel `i` if it is masked and not yet taken.
    fn take(&mut self, i: usize) -> bool;
    fn bytes(&self) -> &[u8];
    /// The 8 bytes from `i` on: 0 when none of them is masked.
    fn block(&self, i: usize) -> u64 {
        u64::from_ne_bytes(self.bytes()[i..i + 8].try_into().expect("8 bytes"))
    }
}

/// A copy of the mask, zeroed where taken.
struct Copied(Vec<u8>);

impl Pixels for Copied {
    #[inline]
    fn take(&mut self, i: usize) -> bool {
        std::mem::replace(&mut self.0[i], 0) != 0
    }
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The mask itself (values below 128), top bit set where taken.
struct TopBit<'a>(&'a mut [u8]);

impl Pixels for TopBit<'_> {
    #[inline]
    fn take(&mut self, i: usize) -> bool {
        let v = &mut self.0[i];
        let free = *v != 0 && *v & 0x80 == 0;
        *v |= (free as u8) << 7;
        free
    }
    fn bytes(&self) -> &[u8] {
        self.0
    }
}

fn find_holes(todo: &mut impl Pixels, width: usize, height: usize) -> Vec<Hole> {
    let mut out = Vec::new();
    let mut stack = Vec::new();
    let mut start = 0usize;
    let n = width * height;
    while start < n {
        // Skip zero runs eight bytes at a time: masks are mostly empty.
        if start % 8 == 0 && start + 8 <= n && todo.block(start) == 0 {
            start += 8;
            continue;
        }
        let i = start;
        start += 1;
        if !todo.take(i) {
            continue;
        }
        stack.push(i);
        let mut hole = Hole {
            pixels: Vec::new(),
            x0: usize::MAX,
            y0: usize::MAX,
            x1: 0,
            y1: 0,
        };
        while let Some(p) = stack.pop() {
            let (x, y) = (p % width, p / width);
            hole.pixels.push(p as u32);
            hole.x0 = hole.x0.min(x);
            hole.x1 = hole.x1.max(x);
            hole.y0 = hole.y0.min(y);
            hole.y1 = hole.y1.max(y);
            if x > 0 && y > 0 && x + 1 < width && y + 1 < height {
                // Inside the image: the 8 neighbours without clipping, in the same raster
                // order as below (p itself is taken already).
                let (a, b) = (p - width, p + width);
                for q in [a - 1, a, a + 1, p - 1, p + 1, b - 1, b, b + 1] {
                    if todo.take(q) {
                        stack.push(q);
                    }
                }
                continue;
            }
            let (xa, xb) = (x.saturating_sub(1), (x + 1).min(width - 1));
            let (ya, yb) = (y.saturating_sub(1), (y + 1).min(height - 1));
            for yy in ya..=yb {
                let row = yy * width;
                for q in row + xa..=row + xb {
                    if todo.take(q) {
                        stack.push(q);
                    }
                }
            }
        }
        out.push(hole);
    }
    out
}

/// Flags of a local box pixel.
pub(crate) const KNOWN: u8 = 0;
pub(crate) const BAND: u8 = 1;
pub(crate) const INSIDE: u8 = 2;
/// Outside the image, or in another hole: neither a source nor to be filled.
pub(crate) const EXCLUDED: u8 = 3;

/// A hole's padded bounding box, copied to f32 (interleaved channels). The padding lies partly
/// outside the image when the hole touches a border; those pixels are EXCLUDED, so neighbour
/// offsets never need bounds checks.
pub(crate) struct Local {
    /// Global coordinates of the box's top-left corner (may be negative).
    pub x0: isize,
    pub y0: isize,
    pub w: usize,
    pub h: usize,
    pub c: usize,
    pub flag: Vec<u8>,
    pub vals: Vec<f32>,
    /// Local indices of the hole's pixels (flood-fill order, deterministic).
    pub inside: Vec<u32>,
    /// The hole's original values, parallel to `inside` (c per pixel).
    pub orig: Vec<f32>,
    /// Local indices of hole pixels kept as they were (they already look like the film).
    pub kept: Vec<u32>,
}

impl Local {
    pub fn new<T: Sample>(
        data: &[T],
        width: usize,
        height: usize,
        c: usize,
        mask: &[u8],
        hole: &Hole,
        pad: usize,
    ) -> Local {
        let x0 = hole.x0 as isize - pad as isize;
        let y0 = hole.y0 as isize - pad as isize;
        let w = hole.x1 - hole.x0 + 1 + 2 * pad;
        let h = hole.y1 - hole.y0 + 1 + 2 * pad;
        let mut flag = vec![EXCLUDED; w * h];
        let mut vals = vec![0f32; w * h * c];
        let gx0 = x0.max(0) as usize;
        let gx1 = ((x0 + w as isize) as usize).min(width);
        for ly in 0..h {
            let gy = y0 + ly as isize;
            if gy < 0 || gy >= height as isize {
                continue;
            }
            let gy = gy as usize;
            for gx in gx0..gx1 {
                let g = gy * width + gx;
                let l = ly * w + (gx as isize - x0) as usize;
                if mask[g] == 0 {
                    flag[l] = KNOWN;
                    for ch in 0..c {
                        vals[l * c + ch] = data[g * c + ch].to_f32();
                    }
                }
            }
        }
        let mut inside = Vec::with_capacity(hole.pixels.len());
        let mut orig = Vec::with_capacity(hole.pixels.len() * c);
        for &g in &hole.pixels {
            let g = g as usize;
            for ch in 0..c {
                orig.push(data[g * c + ch].to_f32());
            }
            let (gx, gy) = ((g % width) as isize, (g / width) as isize);
            let l = (gy - y0) as usize * w + (gx - x0) as usize;
            flag[l] = INSIDE;
            inside.push(l as u32);
        }
        Local {
            x0,
            y0,
            w,
            h,
            c,
            flag,
            vals,
            inside,
            orig,
            kept: Vec::new(),
        }
    }

    /// Write the hole's filled values back; nothing else in `data` is touched. Pixels no fill
    /// could reach (no known pixel anywhere near) keep their value.
    pub fn store<T: Sample>(&self, data: &mut [T], width: usize) {
        for &l in &self.inside {
            let l = l as usize;
            if self.flag[l] == INSIDE {
                continue;
            }
            let gx = (self.x0 + (l % self.w) as isize) as usize;
            let gy = (self.y0 + (l / self.w) as isize) as usize;
            let g = gy * width + gx;
            for ch in 0..self.c {
                data[g * self.c + ch] = T::from_f32(self.vals[l * self.c + ch]);
            }
        }
    }
}

/// Options of one inpainting run.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub method: Method,
    /// Telea neighbourhood radius in pixels.
    pub radius: f32,
    /// Seed of the grain re-synthesis (mixed with each hole's position).
    pub seed: u64,
    /// Biharmonic: keep masked pixels that already look like the film around them (within
    /// a few grain standard deviations of the smooth fill) instead of inventing them.
    pub keep_film: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            method: Method::Auto,
            radius: 3.0,
            seed: 0,
            keep_film: true,
        }
    }
}

/// What was filled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filled {
    pub holes: usize,
    /// Masked pixels.
    pub pixels: usize,
    /// Masked pixels kept as they were (see [`Options::keep_film`]), row-major indices.
    pub kept: Vec<u32>,
    /// Holes filled by telea, biharmonic and patch.
    pub telea_holes: usize,
    pub biharmonic_holes: usize,
    pub patch_holes: usize,
}

impl Filled {
    /// The fills used, as recorded in records.csv: `telea`, `biharmonic`, `patch`, or several
    /// joined by `+` (auto mixes them per hole); `none` when nothing was filled.
    pub fn method_name(&self) -> String {
        let used: Vec<&str> = [
            (self.telea_holes, "telea"),
            (self.biharmonic_holes, "biharmonic"),
            (self.patch_holes, "patch"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(_, s)| *s)
        .collect();
        if used.is_empty() {
            "none".into()
        } else {
            used.join("+")
        }
    }
}

/// `auto` fills a hole by exemplar (patch) when it is at least this deep (pixels from its
/// deepest pixel to the nearest pixel outside it) and by biharmonic + grain otherwise.
/// Measured on the harness (docs/inpaint.md): up to a depth of ~50 px (a 2048-px label box)
/// the patch fill loses PSNR to biharmonic + grain at the same fine-scale texture (−2.3 dB at
/// depth 25, −0.85 dB at depth 50) and costs more time, so it is kept for holes deeper than
/// that (redaction blocks, stickers: over ~128 px across), where a smooth fill is a visibly
/// blurred blob without the film's mid-scale texture.
pub const AUTO_PATCH_DEPTH: f32 = 64.0;

/// Depth of a hole: the largest chamfer (3-4) distance from one of its pixels to the nearest
/// pixel outside it (pixels beyond the image border count as outside).
pub fn hole_depth(hole: &Hole, width: usize) -> f32 {
    let (w, h) = (hole.x1 - hole.x0 + 3, hole.y1 - hole.y0 + 3);
    let mut d = vec![0u32; w * h];
    for &g in &hole.pixels {
        let g = g as usize;
        let (x, y) = (g % width - hole.x0 + 1, g / width - hole.y0 + 1);
        d[y * w + x] = u32::MAX / 2;
    }
    chamfer_depth(&mut d, w, h)
}

/// Two-pass 3-4 chamfer distance transform in place on a `w`×`h` grid whose outer ring is not
/// updated (callers pad by one pixel or keep their hole off it): `d` is 0 outside the hole and
/// large inside. Returns the largest distance, in pixels.
pub(crate) fn chamfer_depth(d: &mut [u32], w: usize, h: usize) -> f32 {
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let q = y * w + x;
            if d[q] != 0 {
                let m = (d[q - 1] + 3)
                    .min(d[q - w] + 3)
                    .min(d[q - w - 1] + 4)
                    .min(d[q - w + 1] + 4);
                d[q] = d[q].min(m);
            }
        }
    }
    let mut best = 0;
    for y in (1..h - 1).rev() {
        for x in (1..w - 1).rev() {
            let q = y * w + x;
            if d[q] != 0 {
                let m = (d[q + 1] + 3)
                    .min(d[q + w] + 3)
                    .min(d[q + w + 1] + 4)
                    .min(d[q + w - 1] + 4);
                d[q] = d[q].min(m);
                best = best.max(d[q]);
            }
        }
    }
    best as f32 / 3.0
}

/// A hole's own seed: from the run's seed (already mixed with the image id in bag mode) and
/// the hole's index in raster order, never from thread order.
fn hole_seed(seed: u64, index: usize) -> u64 {
    let mut z = seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fill every masked pixel of an interleaved `width`×`height`×`c` raster in place. Pixels where
/// `mask` is 0 are never written. Single-threaded (the bag stage runs images in parallel).
pub fn inpaint<T: Sample>(
    data: &mut [T],
    width: usize,
    height: usize,
    c: usize,
    mask: &[u8],
    opts: &Options,
) -> Filled {
    assert_eq!(data.len(), width * height * c, "raster size");
    let hs = holes(mask, width, height);
    let mut filled = Filled::default();
    // Telea reads `radius` around every hole pixel (also as biharmonic's warm start).
    let telea_pad = opts.radius.ceil() as usize + 2;
    for (index, hole) in hs.iter().enumerate() {
        filled.holes += 1;
        filled.pixels += hole.pixels.len();
        let method = match opts.method {
            Method::Auto if hole_depth(hole, width) >= AUTO_PATCH_DEPTH => Method::Patch,
            Method::Auto => Method::Biharmonic,
            m => m,
        };
        if method == Method::Telea {
            let mut local = Local::new(data, width, height, c, mask, hole, telea_pad);
            telea::fill(&mut local, opts.radius);
            local.store(data, width);
            filled.telea_holes += 1;
            continue;
        }
        let mut pad = biharmonic::PAD.max(telea_pad);
        if method == Method::Patch {
            pad = pad.max(patch::pad_for(hole.x1 - hole.x0 + 1, hole.y1 - hole.y0 + 1));
        }
        let mut local = Local::new(data, width, height, c, mask, hole, pad);
        let seed = hole_seed(opts.seed, index);
        let used_patch = match method {
            Method::Patch => biharmonic::fill_patch(&mut local, opts, seed, T::MAX),
            _ => {
                biharmonic::fill(&mut local, opts, T::MAX);
                false
            }
        };
        if used_patch {
            filled.patch_holes += 1;
        } else {
            filled.biharmonic_holes += 1;
        }
        local.store(data, width);
        for &l in &local.kept {
            let l = l as usize;
            let gx = (local.x0 + (l % local.w) as isize) as usize;
            let gy = (local.y0 + (l / local.w) as isize) as usize;
            filled.kept.push((gy * width + gx) as u32);
        }
    }
    filled.kept.sort_unstable();
    filled
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_are_8_connected_components() {
        #[rustfmt::skip]
        let mask = [
            1, 0, 0, 0, 1,
            0, 1, 0, 0, 1,
            0, 0, 0, 0, 0,
            1, 1, 0, 1, 0,
        ];
        let hs = holes(&mask, 5, 4);
        assert_eq!(hs.len(), 4);
        let sorted = |h: &Hole| {
            let mut p = h.pixels.clone();
            p.sort_unstable();
            p
        };
        assert_eq!(sorted(&hs[0]), vec![0, 6]);
        assert_eq!((hs[0].x0, hs[0].y0, hs[0].x1, hs[0].y1), (0, 0, 1, 1));
        assert_eq!(sorted(&hs[1]), vec![4, 9]);
        assert_eq!(sorted(&hs[2]), vec![15, 16]);
        assert_eq!(sorted(&hs[3]), vec![18]);
    }

    /// The in-place labelling (used by the detector) must give the same holes, pixel for
    /// pixel and in the same order, and leave the mask as it was.
    #[test]
    fn holes_in_place_match_holes_and_restore_the_mask() {
        let (w, h) = (61, 37);
        for seed in 0..20u64 {
            let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mask: Vec<u8> = (0..w * h)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    if x % 100 < 20 + 2 * seed {
                        (1 + x % 3) as u8
                    } else {
                        0
                    }
                })
                .collect();
            let want = holes(&mask, w, h);
            let mut m = mask.clone();
            let got = holes_in_place(&mut m, w, h);
            assert_eq!(m, mask, "mask restored (seed {seed})");
            assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(&want) {
                assert_eq!(a.pixels, b.pixels, "seed {seed}");
                assert_eq!((a.x0, a.y0, a.x1, a.y1), (b.x0, b.y0, b.x1, b.y1));
            }
        }
    }

    #[test]
    fn large_empty_mask_has_no_holes() {
        let mask = vec![0u8; 1001 * 7];
        assert!(holes(&mask, 1001, 7).is_empty());
    }

    fn ramp(w: usize, h: usize) -> Vec<u8> {
        (0..w * h)
            .map(|i| (40 + (i % w) * 2 + (i / w)) as u8)
            .collect()
    }

    #[test]
    fn every_method_keeps_outside_pixels_and_fills_smooth_ramps() {
        let (w, h) = (64, 48);
        let clean = ramp(w, h);
        let mut mask = vec![0u8; w * h];
        for y in 20..26 {
            for x in 0..30 {
                mask[y * w + x] = 255; // touches the left border
            }
        }
        mask[0] = 255; // a corner pixel
        for method in [
            Method::Telea,
            Method::Biharmonic,
            Method::Patch,
            Method::Auto,
        ] {
            let mut img = clean.clone();
            for (i, m) in mask.iter().enumerate() {
                if *m != 0 {
                    img[i] = 255;
                }
            }
            let opts = Options {
                method,
                ..Options::default()
            };
            let f = inpaint(&mut img, w, h, 1, &mask, &opts);
            assert_eq!(f.holes, 2);
            let mut worst = 0i32;
            for i in 0..w * h {
                if mask[i] == 0 {
                    assert_eq!(img[i], clean[i], "{method:?} changed an outside pixel");
                } else {
                    worst = worst.max((img[i] as i32 - clean[i] as i32).abs());
                }
            }
            // An exemplar fill has no exact source on a ramp (every patch of film sits at
            // another level), so only the smooth fills are held to the ramp here; the patch
            // fill's quality is tested on texture in patch.rs.
            if method != Method::Patch {
                assert!(worst <= 6, "{method:?}: worst error {worst} on a ramp");
            }
        }
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]
            /// Whatever the mask (holes touching borders, holes touching each other, a mask
            /// covering everything), outside pixels never change, nothing panics, and the same
            /// input gives the same output.
            #[test]
            fn outside_pixels_never_change(
                w in 3usize..40,
                h in 3usize..40,
                c in 1usize..5,
                seed in any::<u64>(),
                density in 0u32..100,
                pick in 0usize..3,
            ) {
                let mut s = seed | 1;
                let mut next = move || {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    s
                };
                let data: Vec<u16> = (0..w * h * c).map(|_| (next() % 65536) as u16).collect();
                let mask: Vec<u8> = (0..w * h)
                    .map(|_| if (next() % 100) < density as u64 { 255 } else { 0 })
                    .collect();
                let opts = Options {
                    method: [Method::Telea, Method::Auto, Method::Patch][pick],
                    seed,
                    radius: 1.0 + (seed % 12) as f32,
                    ..Options::default()
                };
                let mut a = data.clone();
                let fa = inpaint(&mut a, w, h, c, &mask, &opts);
                let mut b = data.clone();
                let fb = inpaint(&mut b, w, h, c, &mask, &opts);
                prop_assert_eq!(&a, &b);
                prop_assert_eq!(fa, fb);
                for i in 0..w * h {
                    if mask[i] == 0 {
                        prop_assert_eq!(&a[i * c..(i + 1) * c], &data[i * c..(i + 1) * c]);
                    }
                }
            }
        }
    }
}
