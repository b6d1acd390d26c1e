//! Automatic mask of burned-in annotations: near-saturated marks that stand out from their
//! surroundings (white top-hat), solid label boxes, and coloured marks in a grey radiograph.
//!
//! Works on an 8-bit grey copy shrunk by an integer factor to at most [`WORK_SIDE`] px, so the
//! cost is bounded whatever the input size; the mask is mapped back to full size and widened
//! by the shrink factor so anti-aliased rims are inside it.
//!
//! Pipeline: white top-hat (square opening at half resolution by running min/max on whole rows:
//! a 25-px disk opening through imageproc costs ~40 ms at 1024², far over budget) → seeds:
//! bright ∧ top-hat, or saturated, or coloured → 8-connected components kept by shape (strokes
//! and boxes; not compact anatomy-sized blobs, not long edges) → grown into their anti-aliased
//! rims (neighbours clearly brighter than their surroundings) → holes of solid boxes filled (dark
//! text on a white label) → dilated.
//!
//! Cost: two whole-image passes at work size (histogram + 2×2 min-pool, then the seed test with
//! the top-hat computed on the fly); everything after the seeds visits only the marks.

use super::shapes;
use std::borrow::Cow;

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

/// The grey opening used by the top-hat, stored at `step`× lower resolution.
struct Opening {
    o: Vec<u8>,
    ow: usize,
    step: usize,
}

impl Opening {
    /// Opening value at a work pixel (never above the pixel: use with `saturating_sub`).
    #[inline]
    fn at(&self, x: usize, y: usize) -> u8 {
        self.o[(y / self.step) * self.ow + x / self.step]
    }
    /// The opening's row `y` at work resolution, into `buf` (len w).
    fn row_into(&self, y: usize, buf: &mut [u8]) {
        let row = &self.o[(y / self.step) * self.ow..][..self.ow];
        if self.step == 1 {
            buf.copy_from_slice(row);
        } else {
            // Pairs written by hand: a `fill` per 2-byte chunk was a memset call each.
            let (pairs, odd) = buf.split_at_mut(buf.len() & !1);
            for (ch, &v) in pairs.chunks_exact_mut(2).zip(row) {
                ch[0] = v;
                ch[1] = v;
            }
            if let Some(last) = odd.first_mut() {
                *last = row[self.ow - 1]; // odd width: the last block is one column
            }
        }
    }
}

/// The grey image at detection scale: shrunk by the smallest integer factor that brings it to
/// at most [`WORK_SIDE`] px (borrowed when already small). Returns (image, width, height, factor).
fn to_work_scale(grey: &[u8], width: usize, height: usize) -> (Cow<'_, [u8]>, usize, usize, usize) {
    assert_eq!(grey.len(), width * height, "grey size");
    let f = width.max(height).div_ceil(WORK_SIDE).max(1);
    let (w, h) = (width.div_ceil(f), height.div_ceil(f));
    let g: Cow<[u8]> = if f == 1 {
        Cow::Borrowed(grey)
    } else {
        Cow::Owned(shrink(grey, width, height, f))
    };
    (g, w, h, f)
}

/// Which marks a pass looks for: bright ones on the film, or dark ones (found as bright marks
/// of the inverted film).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Polarity {
    Bright,
    Dark,
}

impl Polarity {
    /// How far a mark's mean must clear the film around it. Dark marks must stand out twice as
    /// far, on every side (dark film between bright vessels clears the film on some sides only).
    fn need(self) -> f32 {
        match self {
            Polarity::Bright => 30.0,
            Polarity::Dark => 60.0,
        }
    }
}

/// Detect annotations on a `width`×`height` image given as 8-bit grey, plus, for colour images,
/// the per-pixel channel spread (max - min over R, G, B).
pub fn detect(grey: &[u8], spread: Option<&[u8]>, width: usize, height: usize) -> Detection {
    detect_with(grey, spread, width, height, true)
}

/// Only the near-saturated (or coloured) marks, without the contrast-only and dark passes: what
/// the per-source watermark estimate removes from each film (a faint watermark is exactly what
/// this must not see).
pub fn detect_strict(grey: &[u8], width: usize, height: usize) -> Detection {
    detect_with(grey, None, width, height, false)
}

fn detect_with(
    grey: &[u8],
    spread: Option<&[u8]>,
    width: usize,
    height: usize,
    all: bool,
) -> Detection {
    let (g, w, h, f) = to_work_scale(grey, width, height);
    let sp: Option<Cow<[u8]>> = spread.map(|s| {
        if f == 1 {
            Cow::Borrowed(s)
        } else {
            Cow::Owned(shrink_max(s, width, height, f))
        }
    });
    let pass = |g: &[u8], sp, polarity, skip| marks(g, sp, w, h, polarity, all, skip);
    let (mut list, mut kept) = pass(&g, sp.as_deref(), Polarity::Bright, None);
    if all {
        // Dark marks (black asterisks, dark arrows, dark text) are bright marks of the inverted
        // film; dark text inside a white label already found is not counted again.
        let mut on = vec![false; w * h];
        for &p in &list {
            on[p as usize] = true;
        }
        let inv: Vec<u8> = g.iter().map(|&v| 255 - v).collect();
        let (dark, n) = pass(&inv, None, Polarity::Dark, Some(&on));
        kept += n;
        list.extend(dark.into_iter().filter(|&p| !on[p as usize]));
    }
    // Safety rim of one work pixel (f full-size pixels), then back to full size. The fill keeps
    // rim pixels that turn out to be plain film, and measures the film's grain robustly, so
    // JPEG ringing around white text does not leave a dark ghost.
    let mask = dilate_to_full(&list, w, h, f, width, height);
    Detection {
        mask,
        components: kept,
    }
}

/// Whether to print why each component was kept or dropped (`PREP_DETECT_TRACE` set).
fn trace() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("PREP_DETECT_TRACE").is_some())
}

/// Whether to print each component's shape and contrast figures too (`PREP_DETECT_TRACE=feat`).
fn trace_features() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("PREP_DETECT_TRACE").is_some_and(|v| v == "feat"))
}

/// How far below the film around a mark its dark outline (or drop shadow) lies.
const SHADOW: i32 = 25;

/// A lone marker ([`Pass::is_lone_marker`]): the least area (px per 1024² of film) and the least
/// clearance of the film on every side.
const LONE_AREA: f32 = 100.0;
const LONE_CLEAR: f32 = 45.0;

/// A soft glyph ([`marks`]): the least crisp-boundary share and the least plateau share.
const SOFT_SHARP: f32 = 0.45;
const SOFT_PLATEAU: f32 = 0.85;

/// Where a component came from, which decides the rules it is judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A component of the seeds, or the saturated part of one: judged by every rule.
    Seeds,
    /// Split off a graded component's flat top ([`top_plateau`]): kept only as a flat glyph,
    /// and not split so again.
    Top,
    /// Split off an anatomy-sized component at its mid level ([`mid_split`]): kept only as a
    /// glyph, and not split so again.
    Half,
    /// The saturated part of a wire: faint, kept only beside a mark.
    OffWire,
    /// A part of a wire clear of the film's edge band ([`off_edge_parts`]): faint, kept only
    /// beside a mark, and then grown back over the band pixels of `parent` (its index among
    /// the judged components) next to it.
    OffEdge { parent: usize },
}

impl Origin {
    /// Parted from a wire: faint, and not parted from it again.
    fn off_wire(self) -> bool {
        matches!(self, Origin::OffWire | Origin::OffEdge { .. })
    }
}

/// Why a component was dropped, and the parts of it to judge in its place.
struct Rejected {
    why: &'static str,
    parts: Vec<(super::Hole, Origin)>,
}

impl Rejected {
    fn new(why: &'static str) -> Self {
        Rejected {
            why,
            parts: Vec::new(),
        }
    }

    fn with(why: &'static str, parts: impl IntoIterator<Item = super::Hole>, o: Origin) -> Self {
        Rejected {
            why,
            parts: parts.into_iter().map(|p| (p, o)).collect(),
        }
    }
}

/// A component that passed the rules: the film's level around it, whether it is a solid box
/// (its holes are filled), its mean grey level, and whether it is faint (kept only beside a
/// clear mark, [`promote_faint`]).
#[derive(Debug, Clone, Copy)]
struct Candidate {
    around: u8,
    boxy: bool,
    level: f32,
    faint: bool,
    /// A lone marker ([`Pass::is_lone_marker`]): its dimmer parts are grown into it.
    lone: bool,
}

/// One component's figures that several rules ask for. The crisp-boundary share is computed
/// lazily: it walks the boundary, and most components are dropped before a rule asks for it.
struct Look<'c> {
    c: &'c super::Hole,
    area: usize,
    /// A solid box or disk: a label, a disk marker.
    boxy: bool,
    /// Most of it coloured, in a grey radiograph.
    coloured: bool,
    /// Contrast-only seeds throughout, or any dark mark: must show the crisp edges of a
    /// burned-in mark.
    weak: bool,
    /// Larger than a mark usually is, and neither a box nor coloured.
    anatomy_sized: bool,
    /// The crisp-boundary share a weak or anatomy-sized one needs.
    crisp: f32,
    /// Half or more of it at full white.
    saturated: bool,
    /// A flat plateau with a little soft edges: kept only beside a clear mark.
    soft_glyph: bool,
    sharp: std::cell::OnceCell<f32>,
}

/// How far a component stands out of the film around it.
struct Contrast {
    /// Its mean grey level.
    level: f32,
    /// The film's, on the ring around it.
    around: f32,
    /// The least clearance over the ring's four sides, when all four are there.
    least: Option<f32>,
}

/// What the glyph rules found of a component that passed them.
struct GlyphLook {
    /// Mean top-hat over its pixels.
    mean_th: u32,
    /// One flat plateau with crisp sides, outside the film's middle: a clear mark.
    flat_glyph: bool,
    /// Contrast-only of middling top-hat: kept only beside a clear mark.
    faint_tophat: bool,
    /// Wholly in the middle of the film, not drawn: the patient's unless beside a mark.
    central: bool,
}

/// Marks kept by one pass (work-size flags and the list of their pixels, which is all that is
/// visited from there on), the film level around each (carried into its rim while growing),
/// and how many marks.
struct Kept {
    keep: Vec<u8>,
    list: Vec<u32>,
    bg: Vec<u8>,
    count: usize,
}

/// One pass of the detector at work size: the film, its openings and seeds, and the sizes the
/// rules use.
struct Pass<'a> {
    g: &'a [u8],
    sp: Option<&'a [u8]>,
    w: usize,
    h: usize,
    polarity: Polarity,
    /// Work pixels already kept by another pass (a mark entirely inside them is skipped).
    skip: Option<&'a [bool]>,
    /// Scale of the work image relative to a 1024-px radiograph.
    scale: f32,
    opening: Opening,
    /// A wider opening (3× the window): it sees plates and disk markers too wide for the first.
    wide: Option<Opening>,
    seed: Vec<u8>,
    /// Seed pixels cleared from the film's edge bands ([`shapes::clear_edge_bands`]).
    cleared: Vec<bool>,
    min_area: usize,
    /// The least size of a letter (60 px at 1024, and in plain pixels on a smaller film: fewer
    /// is a fleck of bone).
    glyph_area: f32,
    max_area: usize,
    /// Anatomy size.
    big: usize,
    /// Widest stroke the top-hat can see (its window); wider bright shapes are anatomy or boxes.
    window: f32,
    t0: std::time::Instant,
}

/// One pass of the detector at work size: the work pixels of the marks kept (with their plates
/// and rims) and how many marks.
/// `contrast`: also the contrast-only seeds (else only near-saturated and coloured ones);
/// `skip`: work pixels already kept by another pass (a mark entirely inside them is skipped).
fn marks(
    g: &[u8],
    sp: Option<&[u8]>,
    w: usize,
    h: usize,
    polarity: Polarity,
    contrast: bool,
    skip: Option<&[bool]>,
) -> (Vec<u32>, usize) {
    let (pass, comps) = Pass::new(g, sp, w, h, polarity, contrast, skip);
    let (mut comps, judged) = pass.judge_all(comps);
    let (faints, mut cands): (Vec<_>, Vec<_>) = judged.into_iter().partition(|(_, m)| m.faint);
    if contrast {
        // Marker disks (a faint glyph beside one is kept with it) and drawn shapes join the
        // candidates as clear marks.
        for (c, around, boxy) in pass.shapes_found() {
            let sum: f32 = c.pixels.iter().map(|&p| g[p as usize] as f32).sum();
            let level = sum / c.pixels.len() as f32;
            let faint = false;
            cands.push((
                comps.len(),
                Candidate {
                    around,
                    boxy,
                    level,
                    faint,
                    lone: false,
                },
            ));
            comps.push(c);
        }
    }
    promote_faint(&comps, &mut cands, &faints);
    pass.tick("judged");
    let cands: Vec<(&super::Hole, Candidate)> =
        cands.iter().map(|&(i, m)| (&comps[i], m)).collect();
    let mut kept = pass.keep(&cands);
    pass.grow_rims(&mut kept);
    pass.grow_colour(&mut kept);
    pass.tick("grown");
    // The plate behind a glyph (an NIH white L on a black disk, a white label): the uniform
    // region closed around the marks, when it differs from the film outside it.
    shapes::add_plates(g, w, h, pass.scale, &mut kept.keep, &mut kept.list);
    pass.tick("plates");
    (kept.list, kept.count)
}

impl<'a> Pass<'a> {
    /// Read the film: its openings, its seeds (edge bands cleared) and their components.
    fn new(
        g: &'a [u8],
        sp: Option<&'a [u8]>,
        w: usize,
        h: usize,
        polarity: Polarity,
        contrast: bool,
        skip: Option<&'a [bool]>,
    ) -> (Self, Vec<super::Hole>) {
        let t0 = std::time::Instant::now();
        let scale = w.max(h) as f32 / 1024.0;
        let r = ((12.0 * scale).round() as usize).max(3);
        // Pass 1: the 2×2 min-pool both openings start from, fused with the histogram (for
        // p99, which only the bright seeds use).
        let (hist, pool) = hist_and_pool(g, w, h, polarity == Polarity::Bright);
        let mut bufs = MorphBufs::default();
        let opening = grey_opening(g, &pool, w, h, r, &mut bufs);
        let hi = hist.map_or(255, |hist| percentile(&hist, 0.99).max(200));
        let wide =
            (polarity == Polarity::Bright).then(|| grey_opening(g, &pool, w, h, 3 * r, &mut bufs));
        drop((pool, bufs)); // freed before the seed buffer is allocated, which can reuse them
        let openings = [&opening, wide.as_ref().unwrap_or(&opening)];
        let mut seed = seeds(g, sp, w, h, openings, hi, polarity);
        if !contrast {
            seed.iter_mut().for_each(|v| *v &= 2);
        }
        let cleared = shapes::clear_edge_bands(&mut seed, w, h, scale);
        let comps = components(&mut seed, w, h);
        let pass = Pass {
            g,
            sp,
            w,
            h,
            polarity,
            skip,
            scale,
            opening,
            wide,
            seed,
            cleared,
            min_area: ((4.0 * scale * scale).round() as usize).max(2),
            glyph_area: 60f32.max(60.0 * scale * scale),
            max_area: w * h / 100,
            big: w * h / 500,
            window: (2 * r + 1) as f32,
            t0,
        };
        pass.tick("components");
        (pass, comps)
    }

    /// Time since the pass began, when PREP_DETECT_TRACE is set.
    fn tick(&self, what: &str) {
        if trace() {
            let ms = self.t0.elapsed().as_secs_f64() * 1e3;
            eprintln!("time {:?} {what}: {ms:.2} ms", self.polarity);
        }
    }

    fn wide(&self) -> &Opening {
        self.wide.as_ref().unwrap_or(&self.opening)
    }

    /// White top-hat of work pixel `p`.
    fn tophat(&self, p: usize) -> u8 {
        self.g[p].saturating_sub(self.opening.at(p % self.w, p / self.w))
    }

    /// A bright seed at full white: burned-in marks are drawn so, anatomy rarely saturates.
    fn white(&self, p: u32) -> bool {
        self.seed[p as usize] >= 2 && self.g[p as usize] >= 250
    }

    /// The parts of `c` at full white, when it has some pixels that are and some that are not.
    fn white_parts(&self, c: &super::Hole) -> Option<Vec<super::Hole>> {
        let strict = c.pixels.iter().filter(|&&p| self.white(p)).count();
        if strict == 0 || strict == c.pixels.len() {
            return None;
        }
        Some(components_within(c, self.w, |p| self.white(p)))
    }

    fn sharp(&self, look: &Look) -> f32 {
        let (g, seed, w, h) = (self.g, &self.seed, self.w, self.h);
        *look
            .sharp
            .get_or_init(|| sharp_fraction(g, seed, w, h, look.c))
    }

    /// Judge every component, and the parts split off those dropped, in turn: the candidates
    /// (by index into the components returned) in the order found.
    fn judge_all(&self, seeds: Vec<super::Hole>) -> (Vec<super::Hole>, Vec<(usize, Candidate)>) {
        let mut comps: Vec<(super::Hole, Origin)> =
            seeds.into_iter().map(|c| (c, Origin::Seeds)).collect();
        let mut cands = Vec::new();
        let mut next = 0;
        while next < comps.len() {
            let (c, origin) = &comps[next];
            let (at, area) = ((c.x0, c.y0, c.x1, c.y1), c.pixels.len());
            if trace_features() && area >= 2 {
                let mean_th = mean_tophat(self.g, self.w, c, &self.opening, self.wide());
                print_features(
                    self.g,
                    &self.seed,
                    self.w,
                    self.h,
                    c,
                    self.polarity,
                    mean_th,
                );
            }
            // Why a component was kept or dropped, when PREP_DETECT_TRACE is set (tuning on
            // real films).
            let polarity = self.polarity;
            let origin = *origin;
            match self.judge(c, origin) {
                Ok(m) => {
                    if trace() {
                        let what = if m.faint {
                            "faint, kept if beside a mark"
                        } else if m.lone {
                            "lone marker in a corner: candidate"
                        } else {
                            "candidate"
                        };
                        eprintln!("detect {polarity:?} {at:?} area {area}: {what}");
                    }
                    if let Origin::OffEdge { parent } = origin {
                        let grown = grow_over_band(self.g, self.w, self.h, c, &comps[parent].0);
                        comps[next].0 = grown;
                    }
                    cands.push((next, m));
                }
                Err(r) => {
                    if trace() {
                        eprintln!("detect {polarity:?} {at:?} area {area}: {}", r.why);
                    }
                    // Parts off the edge band remember the component they were parted from.
                    let of_this = |o: Origin| match o {
                        Origin::OffEdge { .. } => Origin::OffEdge { parent: next },
                        o => o,
                    };
                    comps.extend(r.parts.into_iter().map(|(p, o)| (p, of_this(o))));
                }
            }
            next += 1;
        }
        (comps.into_iter().map(|(c, _)| c).collect(), cands)
    }

    /// The rules, in order: size and place, shape, glyph, contrast, then how sure.
    fn judge(&self, c: &super::Hole, origin: Origin) -> Result<Candidate, Rejected> {
        self.judge_size(c)?;
        let look = self.look(c);
        self.judge_shape(&look, origin)?;
        let glyph = self.judge_glyph(&look, origin)?;
        let contrast = self.judge_contrast(&look, origin)?;
        let doubtful = self.is_faint(&look, &glyph, &contrast);
        let lone = doubtful && self.is_lone_marker(&look, &glyph, &contrast);
        let doubtful = doubtful && !lone;
        Ok(Candidate {
            around: contrast.around.round() as u8,
            boxy: look.boxy,
            level: contrast.level,
            faint: origin.off_wire() || doubtful,
            lone: !origin.off_wire() && lone,
        })
    }

    /// Too large (its saturated parts are judged instead), too small, too long, or border.
    fn judge_size(&self, c: &super::Hole) -> Result<(), Rejected> {
        let (w, h) = (self.w, self.h);
        let area = c.pixels.len();
        if area > self.max_area {
            let parts = self.white_parts(c).into_iter().flatten();
            return Err(Rejected::with("too-large", parts, Origin::Seeds));
        }
        if area < self.min_area {
            return Err(Rejected::new("too-small"));
        }
        let (bw, bh) = (c.x1 - c.x0 + 1, c.y1 - c.y0 + 1);
        if bw.max(bh) as f32 > 0.35 * w.max(h) as f32 {
            // long bright structures: collimator edges, bones
            return Err(Rejected::new("too-long"));
        }
        if shapes::is_border(c, w, h, self.scale) {
            return Err(Rejected::new("border"));
        }
        Ok(())
    }

    /// The figures the later rules share.
    fn look<'c>(&self, c: &'c super::Hole) -> Look<'c> {
        let (g, w, h, scale) = (self.g, self.w, self.h, self.scale);
        let bright = self.polarity == Polarity::Bright;
        let area = c.pixels.len();
        let (bw, bh) = (c.x1 - c.x0 + 1, c.y1 - c.y0 + 1);
        let fill = area as f32 / (bw * bh) as f32;
        // Larger boxes must be rectangles (labels, their dark text counted as filled): a
        // pacemaker is a large rounded bright shape.
        let boxy = bw as f32 > 8.0 * scale
            && bh as f32 > 8.0 * scale
            && fill > 0.75
            && (bw.max(bh) as f32 <= 80.0 * scale
                || (area + shapes::enclosed(w, c)) as f32 > 0.9 * (bw * bh) as f32);
        let coloured = self
            .sp
            .is_some_and(|s| 2 * c.pixels.iter().filter(|&&p| s[p as usize] >= 60).count() > area);
        let weak = !bright || c.pixels.iter().all(|&p| self.seed[p as usize] < 2);
        // Anatomy-sized: kept only if it is a stroke (bold marker, arrow) or a solid box, with
        // the crisp edges of a burned-in mark; colour in a grey radiograph is evidence enough.
        let anatomy_sized = area > self.big && !boxy && !coloured;
        // Contrast-only bright marks need 60 % of their boundary crisp: on the real films the
        // contrast-only candidates under that were film edges, bone and devices (82 of 85).
        let crisp = if weak && bright && !anatomy_sized {
            0.6
        } else {
            0.5
        };
        let saturated = 2 * c.pixels.iter().filter(|&&p| g[p as usize] >= 250).count() >= area;
        let mut look = Look {
            c,
            area,
            boxy,
            coloured,
            weak,
            anatomy_sized,
            crisp,
            saturated,
            soft_glyph: false,
            sharp: std::cell::OnceCell::new(),
        };
        // A flat plateau whose edges are a little soft (a lead letter blurred on bright film,
        // NIH's) is glyph-like but not clear: kept only beside a clear mark (as faint).
        look.soft_glyph = bright
            && weak
            && !anatomy_sized
            && !coloured
            && (SOFT_SHARP..crisp).contains(&self.sharp(&look))
            && !shapes::is_central(c, w, h)
            && shapes::plateau(g, c) >= SOFT_PLATEAU;
        look
    }

    /// Dark marks too big for a drawn shape, marks another pass kept, anatomy and blurred
    /// shapes (their saturated parts and light letters are judged instead), bright film.
    fn judge_shape(&self, look: &Look, origin: Origin) -> Result<(), Rejected> {
        let (c, area) = (look.c, look.area);
        let bright = self.polarity == Polarity::Bright;
        // Dark marks are small, except drawn arrows and other drawn shapes (a head, or crisp
        // edges all round; up to the bright pass's anatomy size): dark anatomy that clears the
        // dark seeds is air, in large pockets with soft edges.
        if !bright
            && area > self.big / 4
            && (area > self.big || !shapes::has_head(self.w, c) && self.sharp(look) < 0.9)
        {
            return Err(Rejected::new("dark-too-big"));
        }
        if self
            .skip
            .is_some_and(|on| c.pixels.iter().all(|&p| on[p as usize]))
        {
            return Err(Rejected::new("skip"));
        }
        let stroke = || stroke_like(&self.seed, self.w, self.h, c, self.window);
        if look.anatomy_sized && !stroke()
            || (look.anatomy_sized || look.weak && !look.coloured)
                && self.sharp(look) < look.crisp
                && !look.soft_glyph
        {
            let parts = self.anatomy_parts(look, origin);
            return Err(Rejected {
                why: "anatomy-or-blurred",
                parts,
            });
        }
        // The film's brightest pixels (bright seeds by the 99th percentile, not saturated) with
        // hardly a crisp edge are film next to a dark border or bone, not a printed mark.
        if bright && !look.weak && !look.coloured && !look.saturated && self.sharp(look) < 0.3 {
            return Err(Rejected::new("bright film, not crisp"));
        }
        Ok(())
    }

    /// What to judge in place of a dropped anatomy-like component. Anatomy-sized: its
    /// saturated parts, and its light (not white) letters parted from the rest at its mid
    /// level. Otherwise, or when there are none: its flat top, if any.
    fn anatomy_parts(&self, look: &Look, origin: Origin) -> Vec<(super::Hole, Origin)> {
        let c = look.c;
        let mut parts = Vec::new();
        if look.anatomy_sized {
            let white = self.white_parts(c).into_iter().flatten();
            parts.extend(white.map(|p| (p, Origin::Seeds)));
            if origin != Origin::Half {
                let rest = super::Hole {
                    pixels: c
                        .pixels
                        .iter()
                        .copied()
                        .filter(|&p| !self.white(p))
                        .collect(),
                    ..*c
                };
                let halves = mid_split(self.g, self.w, self.h, &rest)
                    .into_iter()
                    .flatten();
                parts.extend(halves.map(|p| (p, Origin::Half)));
            }
        }
        if parts.is_empty() && origin != Origin::Top {
            let tops = top_plateau(self.g, self.w, c).into_iter().flatten();
            parts.extend(tops.map(|p| (p, Origin::Top)));
        }
        parts
    }

    /// Tops and halves that are no glyph, faint top-hats, and wires (their saturated parts
    /// are judged instead, as faint).
    fn judge_glyph(&self, look: &Look, origin: Origin) -> Result<GlyphLook, Rejected> {
        let (g, w, h, c, area) = (self.g, self.w, self.h, look.c, look.area);
        let bright = self.polarity == Polarity::Bright;
        // Devices are radiopaque (bright); a dark mark in the middle is drawn. A bright mark
        // wholly in the middle of the film that is not an arrow, nor drawn at full white, is
        // the patient's (a port, a pacemaker, an electrode) unless it continues a line of
        // clear marks.
        let central = bright
            && !look.coloured
            && !look.saturated
            && shapes::is_central(c, w, h)
            && !shapes::has_head(w, c);
        // Contrast-only marks stand far out of the film (glyphs: 100+ levels); vessels seen
        // end-on and bone edges only just clear the seed threshold. A fainter one (a grey
        // letter beside white ones, a low-contrast NIH marker) is kept only beside a mark that
        // is kept: text and markers come in groups, vessels do not.
        let mean_th = mean_tophat(g, w, c, &self.opening, self.wide());
        // A lead letter or a printed glyph is one flat plateau with crisp sides, whatever its
        // contrast (an NIH L on dark film clears it by 50 levels only); vessels, bone edges and
        // device fragments are graded or thin. Outside the film's middle, such a shape is a
        // clear mark, not a faint one.
        let flat_glyph = bright
            && !shapes::is_central(c, w, h)
            && area as f32 >= self.glyph_area
            && area <= self.big
            && shapes::stroke(&self.seed, w, h, c).0 >= 3.0 * self.scale
            && self.sharp(look) >= 0.7
            && shapes::plateau(g, c) >= 0.8;
        if origin == Origin::Top && !flat_glyph {
            return Err(Rejected::new("top of graded film, not a glyph"));
        }
        // An upper half parted from anatomy must be a glyph: flat, or crisp almost all round.
        if origin == Origin::Half && !(flat_glyph || area <= self.big && self.sharp(look) >= 0.85) {
            return Err(Rejected::new("upper half of anatomy, not a glyph"));
        }
        let faint_tophat = look.weak && bright && !look.coloured && !flat_glyph && mean_th < 72;
        if faint_tophat && mean_th < FAINT_TOPHAT {
            return Err(Rejected::new("faint"));
        }
        if !look.coloured
            && !flat_glyph
            && !shapes::is_glyph_not_wire(w, h, c, self.scale, mean_th)
            && shapes::is_wire(&self.seed, w, h, c, self.scale)
        {
            // ECG lead, tube, line: the patient's, not an annotation. A glyph the contrast
            // seeds joined to a line of bright anatomy (a white letter on a rib's edge) is its
            // saturated pixels: judged alone, and kept only beside a clear mark (a wire's
            // saturated stretch, an electrode's tip, is alone).
            // A glyph printed at the film's edge can merge with the bright band along it (an
            // NIH letter touching the edge strip, one long 'wire'): judged again off the band.
            return Err(match self.white_parts(c) {
                Some(white) => Rejected::with("wire", white, Origin::OffWire),
                None if !origin.off_wire() => {
                    // The parent's index is set where the parts are queued (judge_all).
                    let parts = off_edge_parts(g, w, h, c);
                    Rejected::with("wire", parts, Origin::OffEdge { parent: 0 })
                }
                None => Rejected::new("wire"),
            });
        }
        Ok(GlyphLook {
            mean_th,
            flat_glyph,
            faint_tophat,
            central,
        })
    }

    /// Whether it stands out of the film around it, on enough sides.
    fn judge_contrast(&self, look: &Look, origin: Origin) -> Result<Contrast, Rejected> {
        let (g, c, area) = (self.g, look.c, look.area);
        // Burned-in marks are far brighter than the film around them; saturated anatomy fades
        // into bright surroundings.
        let mean_in = c.pixels.iter().map(|&p| g[p as usize] as f32).sum::<f32>() / area as f32;
        let ring = shapes::ring_of_film(g, self.w, self.h, c, 2, |p| self.seed[p] < 2);
        let need = self.polarity.need();
        // A coloured shape of some size (a yellow or red arrow on a figure) is a mark by its
        // colour alone: its grey level may be the film's.
        let colour_mark = look.coloured && area >= 100;
        let around = match ring.mean {
            Some(m) if mean_in - m >= need || colour_mark => m,
            _ => {
                // Anatomy-sized: white text the contrast seeds joined to the film around it.
                let parts = look.anatomy_sized.then(|| self.white_parts(c)).flatten();
                return Err(Rejected::with(
                    "no-contrast",
                    parts.into_iter().flatten(),
                    Origin::Seeds,
                ));
            }
        };
        // A flat top split off graded film must stand far out of the film around it: a glyph
        // printed over bone clears it by 100+ levels, the flat tops of electrodes, tubes and
        // film edges found on the real films by 40–58.
        if origin == Origin::Half && mean_in - around < 80.0 {
            return Err(Rejected::new(
                "upper half of anatomy, too faint for a glyph",
            ));
        }
        if origin == Origin::Top {
            if mean_in - around < 80.0 {
                return Err(Rejected::new(
                    "flat top of graded film, too faint for a glyph",
                ));
            }
            if trace() {
                let at = (c.x0, c.y0, c.x1, c.y1);
                let polarity = self.polarity;
                eprintln!("detect {polarity:?} {at:?} area {area}: flat top of a graded component");
            }
        }
        // It must also stand out on at least half of the sides of that ring: a bright band of
        // film along a dark border (the ramp of an edge-enhanced CR plate) is far brighter than
        // the border on one side only, while a mark crossing bright anatomy still clears the
        // film on its other sides.
        let present = ring.sides.iter().flatten().count();
        let clear = ring
            .sides
            .iter()
            .flatten()
            .filter(|&&side| mean_in - side >= need)
            .count();
        let dark = self.polarity == Polarity::Dark;
        if !colour_mark && (2 * clear < present || dark && clear < present) {
            return Err(Rejected::new("one-sided"));
        }
        let least = (present == 4).then(|| {
            let sides = ring.sides.iter().flatten();
            sides
                .map(|&side| mean_in - side)
                .fold(f32::INFINITY, f32::min)
        });
        Ok(Contrast {
            level: mean_in,
            around,
            least,
        })
    }

    /// Whether a component that passed is doubtful: kept only beside a clear mark.
    fn is_faint(&self, look: &Look, glyph: &GlyphLook, contrast: &Contrast) -> bool {
        let (c, area, scale) = (look.c, look.area, self.scale);
        let (mean_in, around) = (contrast.level, contrast.around);
        let bright = self.polarity == Polarity::Bright;
        // Marks of middling top-hat that barely clear the film around them are what bone edges
        // of an edge-enhanced film and device fragments look like (on the real films, 2 in 3
        // such candidates were those, 1 in 40 marks). Saturated marks are exempt (anatomy
        // rarely reaches full white), and so are sizeable crisp ones that are bright seeds
        // throughout (above the film's 99th percentile).
        let white = look.saturated
            || glyph.flat_glyph
            || area as f32 >= 100.0 * scale * scale
                && 10
                    * c.pixels
                        .iter()
                        .filter(|&&p| self.seed[p as usize] >= 2)
                        .count()
                    >= 9 * area
                && self.sharp(look) >= 0.75;
        // A thin graded line of middling top-hat (bone's cortical edge, a vessel wall: at
        // most 2.5 px wide, not one plateau, not saturated, no head, mean top-hat under 80)
        // is doubtful: printed strokes that thin stand further out, or come in words.
        let thin_graded = bright
            && !look.coloured
            && !look.saturated
            && !glyph.flat_glyph
            && glyph.mean_th < 80
            && shapes::stroke(&self.seed, self.w, self.h, c).0 <= 2.5
            && shapes::plateau(self.g, c) < 0.8
            && !shapes::has_head(self.w, c);
        glyph.faint_tophat
            || thin_graded
            || look.soft_glyph
            || glyph.central
            || bright && !look.coloured && !white && glyph.mean_th < 80 && mean_in - around < 50.0
    }

    /// A lone lead marker (an NIH L or R, alone in its corner: nothing beside it vouches for
    /// it). A flat glyph of some size and stroke in a corner of the film, crisp almost all
    /// round, clear of the film by 45+ levels on all four sides, without holes: of the 498
    /// doubtful components left alone on the 123 real films, the three like that were NIH
    /// markers (two lone Ls, a plate too far below its text to be beside it), while the devices near a corner (ECG clips) enclose holes or lie
    /// outside the corners.
    fn is_lone_marker(&self, look: &Look, glyph: &GlyphLook, contrast: &Contrast) -> bool {
        let (c, area, scale) = (look.c, look.area, self.scale);
        self.polarity == Polarity::Bright
            && !look.coloured
            && shapes::is_in_corner(c, self.w, self.h)
            && area as f32 >= LONE_AREA * scale * scale
            && glyph.mean_th >= 60
            && contrast.least.is_some_and(|least| least >= LONE_CLEAR)
            && self.sharp(look) >= 0.75
            && shapes::stroke(&self.seed, self.w, self.h, c).0 >= 5.0 * scale
            && shapes::enclosed(self.w, c) as f32 <= 0.05 * area as f32
    }

    /// Marker disks (a faint glyph beside one is kept with it), dim glyphs on the unexposed
    /// film and, on the dark pass, drawn shapes: (shape, film level around it, solid box).
    fn shapes_found(&self) -> Vec<(super::Hole, u8, bool)> {
        let (g, w, h, scale) = (self.g, self.w, self.h, self.scale);
        let mut found = Vec::new();
        if let Some(wide) = &self.wide {
            let disks = marker_disks(g, w, h, wide, scale, &self.seed);
            found.extend(disks.into_iter().map(|(d, around)| (d, around, true)));
            let sizes = (self.glyph_area, self.big);
            let dim = dim_glyphs(g, w, h, wide, scale, &self.seed, sizes);
            found.extend(dim.into_iter().map(|(d, around)| (d, around, true)));
        }
        if self.polarity == Polarity::Dark {
            let drawn = drawn_shapes(g, w, h, &self.opening, scale);
            found.extend(drawn.into_iter().map(|(s, around)| (s, around, false)));
        }
        found
    }

    /// Keep the candidates but ring electrodes (a device, alone), each regrown into the edge
    /// band it was cut at, a solid box with its holes filled.
    fn keep(&self, cands: &[(&super::Hole, Candidate)]) -> Kept {
        let (w, h) = (self.w, self.h);
        let boxes: Vec<(usize, usize, usize, usize)> = cands
            .iter()
            .map(|(c, _)| (c.x0, c.y0, c.x1, c.y1))
            .collect();
        let mut k = Kept {
            keep: vec![0u8; w * h],
            list: Vec::new(),
            bg: vec![0u8; w * h],
            count: 0,
        };
        for (i, &(c, m)) in cands.iter().enumerate() {
            let b = m.around;
            if shapes::is_ring_electrode(w, c, self.scale, &boxes, i) {
                if trace() {
                    let at = (c.x0, c.y0, c.x1, c.y1);
                    eprintln!("detect {:?} {at:?}: ring electrode", self.polarity);
                }
                continue;
            }
            k.count += 1;
            let add = |k: &mut Kept, p: u32| {
                k.keep[p as usize] = 1;
                k.bg[p as usize] = b;
                k.list.push(p);
            };
            c.pixels.iter().for_each(|&p| add(&mut k, p));
            // After the mark's own pixels: the regrowth leaves out what is kept.
            let need = self.polarity.need();
            let regrown =
                shapes::regrow_into_band(self.g, w, h, &self.cleared, &k.keep, c, b, need);
            regrown.into_iter().for_each(|p| add(&mut k, p));
            if m.boxy {
                fill_holes(&mut k.keep, &mut k.list, w, c);
            }
            if m.lone {
                self.grow_lone(&mut k, c, &m);
            }
        }
        k
    }

    /// A lone marker's dimmer parts (the thinner arm of a lead L, the plate under it where it
    /// fades): flooded from its pixels over what clears the film around it by a third of the
    /// marker's own clearance (15 levels at least), within its box widened by half its size;
    /// then the holes of all it covers are filled (a plate's punched holes).
    fn grow_lone(&self, k: &mut Kept, c: &super::Hole, m: &Candidate) {
        let (g, w, h) = (self.g, self.w, self.h);
        let lift = ((m.level - m.around as f32) / 3.0).max(15.0);
        let floor = (m.around as f32 + lift).min(255.0) as u8;
        let reach = (c.x1 - c.x0).max(c.y1 - c.y0) / 2 + 1;
        let (bx0, by0) = (c.x0.saturating_sub(reach), c.y0.saturating_sub(reach));
        let (bx1, by1) = ((c.x1 + reach).min(w - 1), (c.y1 + reach).min(h - 1));
        let mut grown = super::Hole {
            pixels: Vec::new(),
            ..*c
        };
        let mut stack: Vec<usize> = c.pixels.iter().map(|&p| p as usize).collect();
        while let Some(p) = stack.pop() {
            for q in shapes::neighbours(p % w, p / w, w, h) {
                let (x, y) = (q % w, q / w);
                let inside = (bx0..=bx1).contains(&x) && (by0..=by1).contains(&y);
                if inside && k.keep[q] == 0 && g[q] >= floor {
                    k.keep[q] = 1;
                    k.bg[q] = m.around;
                    k.list.push(q as u32);
                    grown.pixels.push(q as u32);
                    grown.x0 = grown.x0.min(x);
                    grown.x1 = grown.x1.max(x);
                    grown.y0 = grown.y0.min(y);
                    grown.y1 = grown.y1.max(y);
                    stack.push(q);
                }
            }
        }
        fill_holes(&mut k.keep, &mut k.list, w, &grown);
    }

    /// Grow the marks into their rims: anti-aliased edges (clearly brighter than their
    /// surroundings) and the dark outline some scanners draw around white text (far darker
    /// than the film around the mark). Frontier-based, so the cost follows the kept area.
    fn grow_rims(&self, k: &mut Kept) {
        let (g, w, h) = (self.g, self.w, self.h);
        let grow = (self.scale.round() as usize).max(1);
        let mut from = 0;
        // The dark outline (a drop shadow offset below and right of NIH's white letters) runs
        // up to twice as far as the anti-aliased edge: left, it dots the fill at each letter's
        // foot.
        for step in 0..2 * grow {
            let to = k.list.len();
            for i in from..to {
                let p = k.list[i] as usize;
                let b = k.bg[p];
                for q in shapes::neighbours(p % w, p / w, w, h) {
                    let edge = step < grow && self.tophat(q) >= 12;
                    if k.keep[q] == 0 && (edge || (g[q] as i32) + SHADOW <= b as i32) {
                        k.keep[q] = 1;
                        k.bg[q] = b;
                        k.list.push(q as u32);
                    }
                }
            }
            from = to;
        }
    }

    /// A coloured mark's JPEG colour bleeds a few pixels past its edge, at the film's grey:
    /// left as film, the fill would carry the tint into the hole. Grown over pixels with some
    /// colour (spread ≥ 12; a grey radiograph has none), a few pixels at most.
    fn grow_colour(&self, k: &mut Kept) {
        let Some(s) = self.sp else { return };
        let (w, h) = (self.w, self.h);
        let grow = (self.scale.round() as usize).max(1);
        let mut frontier: Vec<usize> = k.list.iter().map(|&p| p as usize).collect();
        for _ in 0..2 * grow + 1 {
            let mut next = Vec::new();
            for &p in &frontier {
                for q in shapes::neighbours(p % w, p / w, w, h) {
                    if k.keep[q] == 0 && s[q] >= 12 {
                        k.keep[q] = 1;
                        k.list.push(q as u32);
                        next.push(q);
                    }
                }
            }
            frontier = next;
        }
    }
}

/// One component's figures, for `PREP_DETECT_TRACE=feat`: what the rules below judge.
fn print_features(
    g: &[u8],
    seed: &[u8],
    w: usize,
    h: usize,
    c: &super::Hole,
    polarity: Polarity,
    mean_th: u32,
) {
    let area = c.pixels.len();
    let (sw, sl) = shapes::stroke(seed, w, h, c);
    let mean_in = c.pixels.iter().map(|&p| g[p as usize] as f32).sum::<f32>() / area as f32;
    let rg = shapes::ring(g, w, h, c, 2);
    let strong = c.pixels.iter().filter(|&&p| seed[p as usize] >= 2).count();
    let pr = shapes::profile(w, c);
    eprintln!(
        "feat {polarity:?} {:?} area {area} strong {strong} th {mean_th} sharp {:.2} sw {sw:.1} sl {sl:.0} in {mean_in:.0} ring {:?} sides {:?} head {} sol {:.2} encl {} flat {:.2}",
        (c.x0, c.y0, c.x1, c.y1),
        sharp_fraction(g, seed, w, h, c),
        rg.mean.map(|m| m.round()),
        rg.sides.map(|s| s.map(|v| v.round() as i32)),
        pr.head,
        pr.solidity,
        shapes::enclosed(w, c),
        shapes::plateau(g, c)
    );
}

/// The flat top of a graded component, as its own components: a mark merged with the bone it
/// crosses (a light L printed over a rib) is the plateau at the component's top, within 8
/// levels of its 90th-percentile grey, while bone has no such plateau with crisp sides (the
/// parts are judged like any component). None when the component is one plateau already, or
/// its top is most of it (so splitting ends).
fn top_plateau(g: &[u8], w: usize, c: &super::Hole) -> Option<Vec<super::Hole>> {
    if shapes::plateau(g, c) >= 0.8 {
        return None;
    }
    parts_above(g, w, c, p90(g, c).saturating_sub(8))
}

/// The 90th-percentile grey level of a component's pixels (it has some).
fn p90(g: &[u8], c: &super::Hole) -> u8 {
    let mut v: Vec<u8> = c.pixels.iter().map(|&p| g[p as usize]).collect();
    let k = (v.len() - 1) * 9 / 10;
    *v.select_nth_unstable(k).1
}

/// The parts of a component at or above `level`, when they are under 80 % of it (else it does
/// not part there).
fn parts_above(g: &[u8], w: usize, c: &super::Hole, level: u8) -> Option<Vec<super::Hole>> {
    let upper = c.pixels.iter().filter(|&&p| g[p as usize] >= level).count();
    (5 * upper < 4 * c.pixels.len()).then(|| components_within(c, w, |p| g[p as usize] >= level))
}

/// The parts of an anatomy-sized component above the level midway between the film around it
/// and its own 90th percentile: light letters (NIH's, at 220–240, not saturated) touching a
/// bright bone edge merge with it through the contrast seeds, and part from it there. Each
/// part is judged as a component of its own: a letter keeps its crisp edges, a piece of bone
/// cut at a level has none. None when nothing parts (the upper half is 80 % of it or more).
fn mid_split(g: &[u8], w: usize, h: usize, c: &super::Hole) -> Option<Vec<super::Hole>> {
    if c.pixels.is_empty() {
        return None;
    }
    let film = shapes::ring(g, w, h, c, 2).mean?;
    let top = p90(g, c) as f32;
    let level = ((film + top) / 2.0).round() as u8;
    if trace() {
        eprintln!(
            "detect mid split {:?} at {level} (film {film:.0}, p90 {top})",
            (c.x0, c.y0, c.x1, c.y1)
        );
    }
    parts_above(g, w, c, level)
}

/// Least top-hat of a drawn shape's seed pixels, its least step over the film on every side
/// of it (drawn to be seen: the dark-grey arrows on the real figures clear the film by 83+
/// levels, the dark film between bright device parts by 57 at most), and the widest 3×3
/// spread (JPEG noise included) of a pixel inside its flat fill.
const DRAWN_SEED: u8 = 40;
const DRAWN_STEP: f32 = 70.0;
const DRAWN_FLAT: u8 = 8;

/// Shapes drawn on journal figures at one mid-grey level (an arrow filled dark grey on the
/// lung): too light for the dark seeds, which take near-black only (so a near-black shape is
/// left to them). On the inverted film (`g`): pixels at least [`DRAWN_SEED`] above the
/// opening whose 3×3 neighbourhood is flat, grown over the pixels at their level (an
/// arrowhead wider than the window), kept when the shape is big (200 px per 1024² px of
/// film), one plateau ([`shapes::plateau`] ≥ 0.9), and clears the film by [`DRAWN_STEP`] on
/// every side. Returned with the film level around each.
fn drawn_shapes(
    g: &[u8],
    w: usize,
    h: usize,
    opening: &Opening,
    scale: f32,
) -> Vec<(super::Hole, u8)> {
    let flat = |p: usize| {
        let (mut lo, mut hi) = (255u8, 0u8);
        for row in [p - w, p, p + w] {
            for &v in &g[row - 1..=row + 1] {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
        hi - lo <= DRAWN_FLAT
    };
    // Seeds on every other row and column (the shapes sought are big; this pass cost a
    // quarter of the detector at full density), mapped back to work pixels.
    let (cw, ch) = (w / 2, h / 2);
    let mut seed = vec![0u8; cw * ch];
    let mut up = vec![0u8; w];
    for cy in 1..ch.saturating_sub(1) {
        opening.row_into(2 * cy, &mut up);
        let row = &g[2 * cy * w..];
        for cx in 1..cw.saturating_sub(1) {
            if row[2 * cx].saturating_sub(up[2 * cx]) >= DRAWN_SEED && flat(2 * cy * w + 2 * cx) {
                seed[cy * cw + cx] = 1;
            }
        }
    }
    let min_area = (200.0 * scale * scale).max(60.0) as usize;
    let mut out = Vec::new();
    let mut on = vec![false; w * h];
    for mut c in super::holes_in_place(&mut seed, cw, ch) {
        // Judged on the seed first (cheap), then grown: mid-grey and one plateau.
        if 16 * c.pixels.len() < min_area {
            continue;
        }
        for p in &mut c.pixels {
            let (x, y) = (*p as usize % cw, *p as usize / cw);
            *p = (2 * y * w + 2 * x) as u32;
        }
        (c.x0, c.y0, c.x1, c.y1) = (2 * c.x0, 2 * c.y0, 2 * c.x1, 2 * c.y1);
        if shapes::plateau(g, &c) < 0.9 {
            continue;
        }
        let mut v: Vec<u8> = c.pixels.iter().map(|&p| g[p as usize]).collect();
        let k = v.len() / 2;
        let level = *v.select_nth_unstable(k).1;
        if level >= 225 {
            continue; // near-black: the dark seeds' own
        }
        // A plateau of film (which would grow to the size limit) is at the level of the film
        // around its seed; a drawn shape's seed already clears it by half the step.
        if shapes::ring(g, w, h, &c, 2)
            .mean
            .is_none_or(|m| (level as f32) - m < DRAWN_STEP / 2.0)
        {
            continue;
        }
        let c = grow_plateau(g, w, h, c, level, w * h / 100 + 1, &mut on);
        let area = c.pixels.len();
        if area < min_area || area > w * h / 100 || shapes::is_border(&c, w, h, scale) {
            continue;
        }
        if shapes::plateau(g, &c) < 0.9 {
            continue;
        }
        let mean_in = c.pixels.iter().map(|&p| g[p as usize] as f32).sum::<f32>() / area as f32;
        let ring = shapes::ring(g, w, h, &c, 2);
        let sides: Vec<f32> = ring.sides.iter().flatten().copied().collect();
        let (Some(around), true) = (ring.mean, sides.len() >= 3) else {
            continue;
        };
        if sides.iter().all(|&s| mean_in - s >= DRAWN_STEP) {
            if trace() {
                eprintln!(
                    "detect drawn {:?} area {area}: candidate",
                    (c.x0, c.y0, c.x1, c.y1)
                );
            }
            out.push((c, around.round() as u8));
        }
    }
    out
}

/// A component grown (4-connected) over the pixels within 8 levels of `level`, up to `cap`
/// pixels (a plateau that keeps growing is film, and the caller drops it as too large).
/// `on`: a w×h scratch of false, left so.
fn grow_plateau(
    g: &[u8],
    w: usize,
    h: usize,
    mut c: super::Hole,
    level: u8,
    cap: usize,
    on: &mut [bool],
) -> super::Hole {
    for &p in &c.pixels {
        on[p as usize] = true;
    }
    let mut i = 0;
    while i < c.pixels.len() && c.pixels.len() < cap {
        let p = c.pixels[i] as usize;
        i += 1;
        for q in shapes::neighbours(p % w, p / w, w, h) {
            if !on[q] && g[q].abs_diff(level) <= 8 {
                on[q] = true;
                c.pixels.push(q as u32);
                let (qx, qy) = (q % w, q / w);
                c.x0 = c.x0.min(qx);
                c.x1 = c.x1.max(qx);
                c.y0 = c.y0.min(qy);
                c.y1 = c.y1.max(qy);
            }
        }
    }
    for &p in &c.pixels {
        on[p as usize] = false;
    }
    c.pixels.sort_unstable();
    c
}

/// Share of a component's boundary pixels whose grey drops by at least 15 levels two pixels
/// outward (across the boundary).
fn rim_drop_share(g: &[u8], w: usize, h: usize, c: &super::Hole) -> f32 {
    let (bw, bh) = (c.x1 - c.x0 + 1, c.y1 - c.y0 + 1);
    let mut mine = vec![false; bw * bh];
    for &p in &c.pixels {
        mine[(p as usize / w - c.y0) * bw + p as usize % w - c.x0] = true;
    }
    let inside = |x: isize, y: isize| {
        x >= c.x0 as isize
            && y >= c.y0 as isize
            && x <= c.x1 as isize
            && y <= c.y1 as isize
            && mine[(y as usize - c.y0) * bw + x as usize - c.x0]
    };
    let (mut edge, mut drop) = (0usize, 0usize);
    for &p in &c.pixels {
        let (x, y) = ((p as usize % w) as isize, (p as usize / w) as isize);
        let mut on_edge = false;
        let mut best = i32::MIN;
        for (dx, dy) in [(-1isize, 0isize), (1, 0), (0, -1), (0, 1)] {
            if inside(x + dx, y + dy) {
                continue;
            }
            on_edge = true;
            let (fx, fy) = (x + 2 * dx, y + 2 * dy);
            if fx >= 0 && fy >= 0 && (fx as usize) < w && (fy as usize) < h {
                best = best.max(g[p as usize] as i32 - g[fy as usize * w + fx as usize] as i32);
            }
        }
        if on_edge {
            edge += 1;
            drop += (best >= 15) as usize;
        }
    }
    drop as f32 / edge.max(1) as f32
}

/// The parts of a component (of a grid `w` wide) left by an opening of radius `r` (square):
/// eroded, split into 8-connected parts, and each part dilated back within the component.
fn opened_parts(c: &super::Hole, w: usize, r: usize) -> Vec<super::Hole> {
    let (bw, bh) = (c.x1 - c.x0 + 1, c.y1 - c.y0 + 1);
    let mut on = vec![false; bw * bh];
    for &p in &c.pixels {
        on[(p as usize / w - c.y0) * bw + p as usize % w - c.x0] = true;
    }
    let all = |x: usize, y: usize| {
        (y.saturating_sub(r)..(y + r + 1).min(bh))
            .all(|yy| (x.saturating_sub(r)..(x + r + 1).min(bw)).all(|xx| on[yy * bw + xx]))
            && x >= r
            && y >= r
            && x + r < bw
            && y + r < bh
    };
    let mut core: Vec<u8> = (0..bw * bh).map(|i| all(i % bw, i / bw) as u8).collect();
    let mut parts = super::holes_in_place(&mut core, bw, bh);
    for part in &mut parts {
        // Dilate back by r, inside the component.
        let mut mine = vec![false; bw * bh];
        for &p in &part.pixels {
            let (x, y) = (p as usize % bw, p as usize / bw);
            for yy in y.saturating_sub(r)..(y + r + 1).min(bh) {
                for xx in x.saturating_sub(r)..(x + r + 1).min(bw) {
                    mine[yy * bw + xx] |= on[yy * bw + xx];
                }
            }
        }
        part.pixels.clear();
        (part.x0, part.y0, part.x1, part.y1) = (usize::MAX, usize::MAX, 0, 0);
        for (i, _) in mine.iter().enumerate().filter(|(_, &m)| m) {
            let (x, y) = (i % bw + c.x0, i / bw + c.y0);
            part.pixels.push((y * w + x) as u32);
            (part.x0, part.y0) = (part.x0.min(x), part.y0.min(y));
            (part.x1, part.y1) = (part.x1.max(x), part.y1.max(y));
        }
    }
    parts
}

/// How far from the film's black edge (grey under [`EDGE_BLACK`]) the bright band along it
/// reaches: NIH films have a band 5 px wide, rising toward the edge, at 220–250.
const EDGE_BAND: usize = 6;
const EDGE_BLACK: u8 = 30;

/// Whether a pixel lies within [`EDGE_BAND`] px (along a row or a column) of the film's black
/// edge.
fn on_band(g: &[u8], w: usize, h: usize, p: u32) -> bool {
    let (x, y, p) = (p as usize % w, p as usize / w, p as usize);
    (1..=EDGE_BAND).any(|k| {
        x + k < w && g[p + k] < EDGE_BLACK
            || x >= k && g[p - k] < EDGE_BLACK
            || y + k < h && g[p + k * w] < EDGE_BLACK
            || y >= k && g[p - k * w] < EDGE_BLACK
    })
}

/// The parts of a component clear of the film's edge band, when it reaches the band and is
/// not all band (none otherwise).
fn off_edge_parts(g: &[u8], w: usize, h: usize, c: &super::Hole) -> Vec<super::Hole> {
    let band = c.pixels.iter().filter(|&&p| on_band(g, w, h, p)).count();
    if band == 0 || band == c.pixels.len() {
        return Vec::new();
    }
    components_within(c, w, |p| !on_band(g, w, h, p))
}

/// A part kept off the edge band, grown back over the band pixels of the component it was
/// parted from within [`EDGE_BAND`] px of it: a glyph keeps the strokes that touch the band,
/// the band's stretch away from it stays out.
fn grow_over_band(
    g: &[u8],
    w: usize,
    h: usize,
    part: &super::Hole,
    parent: &super::Hole,
) -> super::Hole {
    let r = EDGE_BAND;
    let (bx0, by0) = (part.x0.saturating_sub(r), part.y0.saturating_sub(r));
    let (bw, bh) = (part.x1 + r + 1 - bx0, part.y1 + r + 1 - by0);
    // The part dilated by r (square), in its widened box.
    let mut shape = vec![0u8; bw * bh];
    for &p in &part.pixels {
        shape[(p as usize / w - by0) * bw + p as usize % w - bx0] = 1;
    }
    let near = dilate(&shape, bw, bh, r);
    let mut grown = part.clone();
    for &q in &parent.pixels {
        let (x, y) = (q as usize % w, q as usize / w);
        let inside = (bx0..bx0 + bw).contains(&x) && (by0..by0 + bh).contains(&y);
        if inside && near[(y - by0) * bw + x - bx0] != 0 && on_band(g, w, h, q) {
            grown.pixels.push(q);
            (grown.x0, grown.y0) = (grown.x0.min(x), grown.y0.min(y));
            (grown.x1, grown.y1) = (grown.x1.max(x), grown.y1.max(y));
        }
    }
    grown
}

/// A dim glyph on the unexposed film: its least level, the most the black film around it may
/// be, the least share of its ring (2–4 px out) that must be that black, the widest spread of
/// its level (p90 − p10), and its largest box side at 1024 px.
const DIM_LEVEL: u8 = 22;
const DIM_BLACK: u8 = 10;
const DIM_RING_BLACK: f32 = 0.95;
const DIM_SPREAD: u8 = 20;
const DIM_SIDE: f32 = 80.0;

/// Glyphs printed dim on the unexposed (black) film outside the collimated field: an NIH
/// lead L at 46 on 0–4 (top-hat 44, under the seeds' 56), the grey top of a marker holder.
/// Pixels at least [`DIM_LEVEL`] where the wide opening is at most [`DIM_BLACK`] (a shape
/// narrower than its window, on black film), grouped; kept when glyph-sized (from the glyph
/// area to anatomy size, box sides at most [`DIM_SIDE`] px at 1024 px), clear of the image's
/// edge, without a seed (the seeds' own), flat, and ringed by black film: unexposed film is
/// black all round; devices and anatomy that reach it (a lead running out of the field, the
/// field's edge) are long or reach the exposed film. On the 123 real films of the measure this
/// found one missed marker and one holder top, nothing else. Returned with the film level
/// around each.
fn dim_glyphs(
    g: &[u8],
    w: usize,
    h: usize,
    wide: &Opening,
    scale: f32,
    seed: &[u8],
    area: (f32, usize),
) -> Vec<(super::Hole, u8)> {
    let mut on = vec![0u8; w * h];
    let mut up = vec![0u8; w];
    for y in 0..h {
        wide.row_into(y, &mut up);
        let (gr, or) = (&g[y * w..(y + 1) * w], &mut on[y * w..(y + 1) * w]);
        for x in 0..w {
            or[x] = (gr[x] >= DIM_LEVEL) as u8 & (up[x] <= DIM_BLACK) as u8;
        }
    }
    let side = DIM_SIDE * scale;
    let margin = 4;
    let mut out = Vec::new();
    for c in components(&mut on, w, h) {
        let n = c.pixels.len();
        let (bw, bh) = (c.x1 - c.x0 + 1, c.y1 - c.y0 + 1);
        let inside = c.x0 >= margin && c.y0 >= margin && c.x1 + margin < w && c.y1 + margin < h;
        if (n as f32) < area.0 || n > area.1 || bw.max(bh) as f32 > side || !inside {
            continue;
        }
        if c.pixels.iter().any(|&p| seed[p as usize] != 0) {
            continue;
        }
        let mut v: Vec<u8> = c.pixels.iter().map(|&p| g[p as usize]).collect();
        v.sort_unstable();
        if v[n * 9 / 10] - v[n / 10] > DIM_SPREAD {
            continue;
        }
        let Some(around) = black_ring(g, w, &c, margin) else {
            continue;
        };
        if trace() {
            eprintln!(
                "detect dim {:?} area {n}: candidate",
                (c.x0, c.y0, c.x1, c.y1)
            );
        }
        out.push((c, around));
    }
    out
}

/// The median of the ring 2–4 px out of a component (its shape dilated, square), when
/// [`DIM_RING_BLACK`] of it is at most [`DIM_BLACK`]. `m`: the ring's reach (the box is
/// widened by it; the caller keeps the component that far from the image's edge).
fn black_ring(g: &[u8], w: usize, c: &super::Hole, m: usize) -> Option<u8> {
    let (x0, y0) = (c.x0 - m, c.y0 - m);
    let (bw, bh) = (c.x1 - c.x0 + 1 + 2 * m, c.y1 - c.y0 + 1 + 2 * m);
    let mut shape = vec![0u8; bw * bh];
    for &p in &c.pixels {
        shape[(p as usize / w - y0) * bw + p as usize % w - x0] = 1;
    }
    // The ring: within m of the shape (square), but not within 1.
    let (far, near) = (dilate(&shape, bw, bh, m), dilate(&shape, bw, bh, 1));
    let mut ring: Vec<u8> = Vec::new();
    for (i, (&f, &n)) in far.iter().zip(&near).enumerate() {
        if f != 0 && n == 0 {
            ring.push(g[(y0 + i / bw) * w + x0 + i % bw]);
        }
    }
    let black = ring.iter().filter(|&&v| v <= DIM_BLACK).count();
    if ring.is_empty() || (black as f32) < DIM_RING_BLACK * ring.len() as f32 {
        return None;
    }
    let k = ring.len() / 2;
    Some(*ring.select_nth_unstable(k).1)
}

/// Least rise of a marker disk over the wide opening.
const DISK_RISE: u8 = 25;

/// The lead disks NIH films carry beside their L/R glyph: flat light ellipses (24–80 px per
/// 1024 px of side) in the film's outer band, only 25–40 levels above the film, too low and too
/// wide for the top-hat seeds. Components of flat pixels at least [`DISK_RISE`] above the wide
/// opening, at most half of them seeds (a disk's rim can clear the seed threshold), kept when
/// [`shapes::is_marker_disk`] holds; returned with the film level around each. Looked for on
/// a 4× coarser grid first (a whole-image flood of smooth raised film cost more than the rest
/// of the pass), then measured at work size in each candidate's box. Coarse regions too large
/// for a disk are opened ([`opened_parts`]); a part is measured within its cells and needs a
/// rim ([`rim_drop_share`] ≥ 0.5) instead of the seed and box tests.
fn marker_disks(
    g: &[u8],
    w: usize,
    h: usize,
    wide: &Opening,
    scale: f32,
    seed: &[u8],
) -> Vec<(super::Hole, u8)> {
    const S: usize = 4;
    // Flat (within 6 levels of the pixels left and above) as well as raised: the disk's steep
    // rim then parts its inside from film that happens to be raised too.
    let raised = |x: usize, y: usize| {
        let v = g[y * w + x];
        let flat = v.abs_diff(g[y * w + x - 1]) <= 6 && v.abs_diff(g[(y - 1) * w + x]) <= 6;
        flat && v.saturating_sub(wide.at(x, y)) >= DISK_RISE
    };
    let (cw, ch) = (w / S, h / S);
    let mut coarse = vec![0u8; cw * ch];
    let (mx0, mx1) = ((0.15 * w as f32) as usize, (0.85 * w as f32) as usize);
    let (my0, my1) = ((0.15 * h as f32) as usize, (0.85 * h as f32) as usize);
    for by in 0..ch {
        for bx in 0..cw {
            let (x, y) = (bx * S + S / 2, by * S + S / 2);
            let central = (mx0..mx1).contains(&x) && (my0..my1).contains(&y);
            coarse[by * cw + bx] = (!central && raised(x, y)) as u8;
        }
    }
    let (lo, hi) = (24.0 * scale, 80.0 * scale);
    let mut out = Vec::new();
    let mut cands = components(&mut coarse, cw, ch);
    // A disk beside raised flat film (a marker holder's band, the L on it) joins it on the
    // coarse grid: what is too large is opened by 2 cells, which parts the disk from thin
    // joins, and its parts are judged too.
    let too_large =
        |c: &super::Hole| (c.x1 - c.x0 + 1).max(c.y1 - c.y0 + 1) * S > hi as usize + 2 * S;
    let parts: Vec<super::Hole> = cands
        .iter()
        .filter(|c| too_large(c))
        .flat_map(|c| opened_parts(c, cw, 1))
        .collect();
    let whole = cands.len();
    cands.extend(parts);
    for (ci, c) in cands.into_iter().enumerate() {
        let part = ci >= whole;
        let (bw, bh) = ((c.x1 - c.x0 + 1) * S, (c.y1 - c.y0 + 1) * S);
        if (bw.min(bh) as f32) < lo - 2.0 * S as f32 || bw.max(bh) as f32 > hi + 2.0 * S as f32 {
            continue;
        }
        // The candidate's box at work size, with a margin: its component must not reach it.
        let m = S + 2;
        let (x0, y0) = (
            (c.x0 * S).saturating_sub(m).max(1),
            (c.y0 * S).saturating_sub(m).max(1),
        );
        let (x1, y1) = (
            ((c.x1 + 1) * S + m).min(w - 1),
            ((c.y1 + 1) * S + m).min(h - 1),
        );
        let (rw, rh) = (x1 - x0, y1 - y0);
        // A part is measured within its cells (and the cells beside them: the disk's rim).
        let mut cells = vec![false; cw * ch];
        if part {
            for &p in &c.pixels {
                let (x, y) = (p as usize % cw, p as usize / cw);
                for yy in y.saturating_sub(1)..(y + 2).min(ch) {
                    for xx in x.saturating_sub(1)..(x + 2).min(cw) {
                        cells[yy * cw + xx] = true;
                    }
                }
            }
        }
        let inside =
            |x: usize, y: usize| !part || cells[(y / S).min(ch - 1) * cw + (x / S).min(cw - 1)];
        let mut fine: Vec<u8> = (0..rw * rh)
            .map(|i| {
                let (x, y) = (x0 + i % rw, y0 + i / rw);
                (inside(x, y) && raised(x, y)) as u8
            })
            .collect();
        let Some(mut disk) = super::holes_in_place(&mut fine, rw, rh)
            .into_iter()
            .max_by_key(|d| d.pixels.len())
        else {
            continue;
        };
        if !part && (disk.x0 == 0 || disk.y0 == 0 || disk.x1 + 1 == rw || disk.y1 + 1 == rh) {
            continue; // cut by the box: part of something larger
        }
        for p in &mut disk.pixels {
            *p = ((y0 + *p as usize / rw) * w + x0 + *p as usize % rw) as u32;
        }
        (disk.x0, disk.x1, disk.y0, disk.y1) =
            (disk.x0 + x0, disk.x1 + x0, disk.y0 + y0, disk.y1 + y0);
        let seeded = disk
            .pixels
            .iter()
            .filter(|&&p| seed[p as usize] != 0)
            .count();
        if !part && 2 * seeded >= disk.pixels.len() || shapes::is_central(&disk, w, h) {
            continue;
        }
        // A part carved from raised film by the opening has cut sides with no rim: a disk's
        // rim drops on most of its boundary.
        let rim = if part {
            rim_drop_share(g, w, h, &disk)
        } else {
            1.0
        };
        if trace() && part {
            eprintln!(
                "detect disk part {:?} rim {rim:.2}",
                (disk.x0, disk.y0, disk.x1, disk.y1)
            );
        }
        let level = (rim >= 0.5)
            .then(|| shapes::is_marker_disk(g, w, h, &disk, scale))
            .flatten();
        if trace() {
            let at = (disk.x0, disk.y0, disk.x1, disk.y1);
            eprintln!("detect disk {at:?} area {}: {level:?}", disk.pixels.len());
        }
        if let Some(level) = level {
            out.push((disk, level));
        }
    }
    out
}

/// Least mean top-hat of a faint component that may be kept beside a mark.
const FAINT_TOPHAT: u32 = 50;

/// Mean top-hat of a component at the larger of the two windows.
fn mean_tophat(g: &[u8], w: usize, c: &super::Hole, opening: &Opening, wide: &Opening) -> u32 {
    let sum: u32 = c
        .pixels
        .iter()
        .map(|&p| {
            let (x, y) = (p as usize % w, p as usize / w);
            let v = g[p as usize];
            v.saturating_sub(opening.at(x, y))
                .max(v.saturating_sub(wide.at(x, y))) as u32
        })
        .sum();
    sum / c.pixels.len() as u32
}

/// Keep a faint component that lies beside a kept mark (within the shorter one's height, at a
/// grey level within 40 of it): the grey letters of a word whose other letters are white, an
/// NIH marker's low-contrast disk beside its glyph. Repeated until nothing changes, so a word
/// is kept letter by letter from its one clear letter; the fixed point does not depend on the
/// order the faint components are looked at.
fn promote_faint(
    comps: &[super::Hole],
    cands: &mut Vec<(usize, Candidate)>,
    faints: &[(usize, Candidate)],
) {
    let mut kept: Vec<(usize, f32)> = cands.iter().map(|(i, m)| (*i, m.level)).collect();
    let mut waiting: Vec<&(usize, Candidate)> = faints.iter().collect();
    loop {
        let beside = |&&(fi, m): &&(usize, Candidate)| {
            let f = &comps[fi];
            kept.iter().any(|&(ki, kl)| {
                let k = &comps[ki];
                let reach = (f.y1 - f.y0 + 1).min(k.y1 - k.y0 + 1);
                (m.level - kl).abs() <= 40.0
                    && f.x0 <= k.x1 + reach
                    && k.x0 <= f.x1 + reach
                    && f.y0 <= k.y1 + reach
                    && k.y0 <= f.y1 + reach
            })
        };
        let (now, still): (Vec<_>, Vec<_>) = waiting.into_iter().partition(|f| beside(f));
        if now.is_empty() {
            break;
        }
        for &&(fi, m) in &now {
            if trace() {
                let f = &comps[fi];
                eprintln!(
                    "detect {:?}: faint, beside a mark: candidate",
                    (f.x0, f.y0, f.x1, f.y1)
                );
            }
            cands.push((fi, m));
            kept.push((fi, m.level));
        }
        waiting = still;
    }
}

/// Seed pixels: 2 = bright (near-saturated, or above the film's 99th percentile with a clear
/// top-hat) or coloured; 1 = contrast only: a top-hat of at least 56 levels at either window
/// (mid-grey NIH markers, white glyphs on bright film, disk markers); 0 = film. The dark pass (inverted film) takes only
/// strong top-hats (80 levels) of pixels that were near black (at most 30), on film of at
/// least 105 (the closing), and its marks must be small (at most a quarter of the bright pass's
/// anatomy size) with crisp edges.
fn seeds(
    g: &[u8],
    sp: Option<&[u8]>,
    w: usize,
    h: usize,
    [opening, wide]: [&Opening; 2],
    hi: u8,
    polarity: Polarity,
) -> Vec<u8> {
    let mut seed = vec![0u8; w * h];
    let mut up = vec![0u8; w];
    let mut upw = vec![0u8; w];
    for y in 0..h {
        opening.row_into(y, &mut up);
        wide.row_into(y, &mut upw);
        let gr = &g[y * w..(y + 1) * w];
        let sr = &mut seed[y * w..(y + 1) * w];
        // Branch-free byte logic so the loop vectorises.
        match (polarity, sp) {
            (Polarity::Bright, Some(s)) => {
                let s = &s[y * w..(y + 1) * w];
                for x in 0..w {
                    let v = gr[x];
                    let th = v.saturating_sub(up[x]);
                    let strong = ((v >= hi) as u8 & (th >= 40) as u8)
                        | (v >= 250) as u8
                        | (s[x] >= 60) as u8;
                    let weak = (th >= 56) as u8 | (v.saturating_sub(upw[x]) >= 56) as u8;
                    sr[x] = (strong << 1) | (weak & (strong ^ 1));
                }
            }
            (Polarity::Bright, None) => {
                for x in 0..w {
                    let v = gr[x];
                    let th = v.saturating_sub(up[x]);
                    let strong = ((v >= hi) as u8 & (th >= 40) as u8) | (v >= 250) as u8;
                    let weak = (th >= 56) as u8 | (v.saturating_sub(upw[x]) >= 56) as u8;
                    sr[x] = (strong << 1) | (weak & (strong ^ 1));
                }
            }
            (Polarity::Dark, _) => {
                // Inverted: v >= 225 was at most 30 (near black); up <= 150 means film of at
                // least 105 around it.
                for x in 0..w {
                    let v = gr[x];
                    let th = v.saturating_sub(up[x]);
                    sr[x] = (v >= 225) as u8 & (th >= 80) as u8 & (up[x] <= 150) as u8;
                }
            }
        }
    }
    seed
}

/// White top-hat of an 8-bit grey image at detection scale (shrunk by an integer factor to at
/// most [`WORK_SIDE`] px, the same window as [`detect`]): returns (top-hat, work width, work
/// height, factor). Used by the per-source watermark estimate.
pub(crate) fn tophat(grey: &[u8], width: usize, height: usize) -> (Vec<u8>, usize, usize, usize) {
    let (g, w, h, f) = to_work_scale(grey, width, height);
    let scale = w.max(h) as f32 / 1024.0;
    let r = ((12.0 * scale).round() as usize).max(3);
    let (_, pool) = hist_and_pool(&g, w, h, false);
    let opening = grey_opening(&g, &pool, w, h, r, &mut MorphBufs::default());
    let mut th = vec![0u8; w * h];
    let mut up = vec![0u8; w];
    for y in 0..h {
        opening.row_into(y, &mut up);
        for ((t, &v), &o) in th[y * w..(y + 1) * w]
            .iter_mut()
            .zip(&g[y * w..(y + 1) * w])
            .zip(&up)
        {
            *t = v.saturating_sub(o);
        }
    }
    (th, w, h, f)
}

/// A stroke (letter, arrow, bold marker) rather than a compact blob: narrow compared with the
/// top-hat window and long compared with its width. Width = 2·area / boundary pixels (a band
/// of width t and length L has ~2L boundary pixels; a disk of radius R gives R).
fn stroke_like(seed: &[u8], w: usize, h: usize, c: &super::Hole, window: f32) -> bool {
    let (width, _) = shapes::stroke(seed, w, h, c);
    let length = (c.x1 - c.x0 + 1).max(c.y1 - c.y0 + 1) as f32;
    width <= window && length >= 4.0 * width
}

/// Fraction of a component's boundary pixels that drop by at least 30 grey levels two pixels
/// outward: burned-in marks have crisp edges, bright anatomy fades into its surroundings.
fn sharp_fraction(g: &[u8], seed: &[u8], w: usize, h: usize, c: &super::Hole) -> f32 {
    let (mut edge, mut sharp) = (0usize, 0usize);
    for &p in &c.pixels {
        let p = p as usize;
        let (x, y) = (p % w, p / w);
        let v = g[p] as i32;
        let mut best = i32::MIN;
        let mut on_edge = false;
        for (dx, dy) in [(-1isize, 0isize), (1, 0), (0, -1), (0, 1)] {
            let (nx, ny) = (x as isize + dx, y as isize + dy);
            if nx < 0 || ny < 0 || nx >= w as isize || ny >= h as isize {
                continue;
            }
            if seed[ny as usize * w + nx as usize] != 0 {
                continue;
            }
            on_edge = true;
            let (fx, fy) = (
                (x as isize + 2 * dx).clamp(0, w as isize - 1) as usize,
                (y as isize + 2 * dy).clamp(0, h as isize - 1) as usize,
            );
            best = best.max(v - g[fy * w + fx] as i32);
        }
        if on_edge {
            edge += 1;
            sharp += (best >= 30) as usize;
        }
    }
    sharp as f32 / edge.max(1) as f32
}

/// Dilate the listed work pixels by one (3×3) and map them to a full-size 0/255 mask, visiting
/// only the rows that hold marks.
pub(crate) fn dilate_to_full(
    list: &[u32],
    w: usize,
    h: usize,
    f: usize,
    width: usize,
    height: usize,
) -> Vec<u8> {
    let mut d = vec![0u8; w * h];
    let mut rows = vec![false; h];
    for &p in list {
        let p = p as usize;
        let (x, y) = (p % w, p / w);
        let (xa, xb) = (x.saturating_sub(1), (x + 2).min(w));
        for yy in y.saturating_sub(1)..(y + 2).min(h) {
            d[yy * w + xa..yy * w + xb].fill(255);
            rows[yy] = true;
        }
    }
    if f == 1 {
        return d;
    }
    let mut mask = vec![0u8; width * height];
    for (by, _) in rows.iter().enumerate().filter(|(_, &r)| r) {
        let k = &d[by * w..(by + 1) * w];
        for y in by * f..((by + 1) * f).min(height) {
            for (bx, chunk) in mask[y * width..(y + 1) * width].chunks_mut(f).enumerate() {
                if k[bx] != 0 {
                    chunk.fill(255);
                }
            }
        }
    }
    mask
}

/// Histogram of the work image (only when `with_hist`: the bright pass's 99th percentile) and
/// its 2×2 min-pool, from one pass over the image. Both openings of a pass start from the same
/// min-pool, so it is computed once.
fn hist_and_pool(g: &[u8], w: usize, h: usize, with_hist: bool) -> (Option<[usize; 256]>, Vec<u8>) {
    // Four sub-histograms: runs of equal values would otherwise serialise on one counter.
    let mut hs = [[0u32; 256]; 4];
    let mut count = |line: &[u8]| {
        if !with_hist {
            return;
        }
        let mut it = line.chunks_exact(4);
        for q in &mut it {
            hs[0][q[0] as usize] += 1;
            hs[1][q[1] as usize] += 1;
            hs[2][q[2] as usize] += 1;
            hs[3][q[3] as usize] += 1;
        }
        for &v in it.remainder() {
            hs[0][v as usize] += 1;
        }
    };
    let (hw, hh) = (w.div_ceil(2), h.div_ceil(2));
    let mut small = vec![255u8; hw * hh];
    let mut m = vec![0u8; w + 1];
    for by in 0..hh {
        let a = &g[2 * by * w..(2 * by + 1) * w];
        count(a);
        if 2 * by + 1 < h {
            let b = &g[(2 * by + 1) * w..(2 * by + 2) * w];
            count(b);
            for x in 0..w {
                m[x] = a[x].min(b[x]);
            }
        } else {
            m[..w].copy_from_slice(a);
        }
        m[w] = m[w - 1]; // odd width: the last block is one column
        let row = &mut small[by * hw..(by + 1) * hw];
        for (o, pair) in row.iter_mut().zip(m.chunks_exact(2)) {
            *o = pair[0].min(pair[1]);
        }
        if w % 2 == 1 {
            row[hw - 1] = m[w - 1];
        }
    }
    let hist = with_hist.then(|| {
        let mut hist = [0usize; 256];
        for sub in &hs {
            for (t, &n) in hist.iter_mut().zip(sub) {
                *t += n as usize;
            }
        }
        hist
    });
    (hist, small)
}

/// The grey opening of the top-hat: a ~(2r+1)² square computed at half resolution from the
/// 2×2 min-pool `pool` (opening with r/2): the min-pool keeps thin bright strokes out of the
/// opening (so they stay in the top-hat) at a quarter of the cost. It is then dilated by one
/// half-res pixel: a bright pixel beside a dark edge shares its min-pool block with the edge,
/// and the neighbouring block is the one a square window fits in (without this, film along a
/// black border lights up). Windows under 4 px are opened at full resolution instead.
fn grey_opening(
    g: &[u8],
    pool: &[u8],
    w: usize,
    h: usize,
    r: usize,
    bufs: &mut MorphBufs,
) -> Opening {
    let (src, ow, oh, or, step) = if r < 4 {
        (g, w, h, r, 1)
    } else {
        (pool, w.div_ceil(2), h.div_ceil(2), r / 2, 2)
    };
    let mut eroded = std::mem::take(&mut bufs.tmp);
    morph_into(src, ow, oh, or, false, bufs, &mut eroded);
    let mut o = Vec::new();
    morph_into(&eroded, ow, oh, or, true, bufs, &mut o);
    if step == 2 {
        morph_into(&o, ow, oh, 1, true, bufs, &mut eroded);
        std::mem::swap(&mut o, &mut eroded);
    }
    bufs.tmp = eroded;
    Opening { o, ow, step }
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

/// Mean of each f×f block (blocks cut by the border average what they hold). Whole source
/// rows are summed first (a vectorised add per row), then each block's f columns.
fn shrink(src: &[u8], width: usize, height: usize, f: usize) -> Vec<u8> {
    if f == 1 {
        return src.to_vec();
    }
    let (w, h) = (width.div_ceil(f), height.div_ceil(f));
    let mut out = vec![0u8; w * h];
    let mut acc = vec![0u32; width];
    for by in 0..h {
        acc.fill(0);
        let rows = (by * f..((by + 1) * f).min(height)).len();
        for y in by * f..by * f + rows {
            for (a, &v) in acc.iter_mut().zip(&src[y * width..(y + 1) * width]) {
                *a += v as u32;
            }
        }
        for (bx, chunk) in acc.chunks(f).enumerate() {
            let n = (rows * chunk.len()) as u32;
            out[by * w + bx] = (chunk.iter().sum::<u32>() / n) as u8;
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

/// `dst[i] = op(src[i], src[i + s])`: distinct slices, so it vectorises.
#[inline]
fn shift_op<const MAX: bool>(dst: &mut [u8], src: &[u8], s: usize) {
    let n = src.len() - s;
    for ((d, &a), &b) in dst[..n].iter_mut().zip(&src[..n]).zip(&src[s..]) {
        *d = op::<MAX>(a, b);
    }
}

/// Offsets of the passes that turn a line into its running min/max over windows of k:
/// doubling (1, 2, 4, ...), then one pass that overlaps the last power of two with itself.
/// log2(k) + 1 passes of plain element-wise min/max, which SIMD does 16-32 at a time; for
/// the small windows used here that beats van Herk/Gil-Werman's 3 scalar ops per sample.
fn window_steps(k: usize) -> Vec<usize> {
    let mut steps = Vec::new();
    let mut p = 1;
    while 2 * p <= k {
        steps.push(p);
        p *= 2;
    }
    if p < k {
        steps.push(k - p);
    }
    steps
}

/// Grey erosion (min) or dilation (max) with a (2r+1)² square; the window is clipped at the
/// image border.
/// Buffers the running min/max reuses from one call to the next within a detection pass:
/// fresh image-sized buffers cost more in page faults and fills than the min/max passes.
#[derive(Default)]
struct MorphBufs {
    cols: Vec<u8>,
    other: Vec<u8>,
    /// An opening's intermediate image.
    tmp: Vec<u8>,
}

fn morph_t<const MAX: bool>(
    src: &[u8],
    w: usize,
    h: usize,
    r: usize,
    bufs: &mut MorphBufs,
    out: &mut Vec<u8>,
) {
    let pad = if MAX { 0u8 } else { 255u8 };
    let steps = window_steps(2 * r + 1);
    // Columns first, whole rows at a time: row y of the padded buffer becomes op(rows y..y+k).
    // Each pass ping-pongs between two buffers (row y ← op(row y, row y + s)) so it is one
    // element-wise op over distinct slices, which vectorises (in place it stayed scalar).
    let mh = h + 2 * r;
    let MorphBufs {
        cols: buf, other, ..
    } = bufs;
    buf.clear();
    buf.resize(mh * w, pad);
    buf[r * w..(r + h) * w].copy_from_slice(src);
    other.resize(mh * w, pad); // every byte is written by each pass
    for &s in &steps {
        let n = (mh - s) * w;
        shift_op::<MAX>(other, buf, s * w);
        other[n..].copy_from_slice(&buf[n..]); // the last s rows have no partner yet
        std::mem::swap(buf, other);
    }
    // Rows: each padded line ping-pongs between two buffers.
    let m = w + 2 * r;
    let (mut l0, mut l1) = (vec![pad; m], vec![pad; m]);
    out.clear();
    for y in 0..h {
        l0[r..r + w].copy_from_slice(&buf[y * w..(y + 1) * w]);
        let (mut cur, mut nxt) = (&mut l0, &mut l1);
        for &s in &steps {
            shift_op::<MAX>(nxt, cur, s);
            std::mem::swap(&mut cur, &mut nxt);
        }
        out.extend_from_slice(&cur[..w]);
        // Restore the pads the passes overwrote.
        l0[..r].fill(pad);
        l0[r + w..].fill(pad);
        l1.fill(pad);
    }
}

fn morph(src: &[u8], w: usize, h: usize, r: usize, max: bool) -> Vec<u8> {
    let mut out = Vec::new();
    morph_into(src, w, h, r, max, &mut MorphBufs::default(), &mut out);
    out
}

/// [`morph`] into `out`, with buffers reused from earlier calls.
fn morph_into(
    src: &[u8],
    w: usize,
    h: usize,
    r: usize,
    max: bool,
    bufs: &mut MorphBufs,
    out: &mut Vec<u8>,
) {
    if r == 0 {
        out.clear();
        out.extend_from_slice(src);
    } else if max {
        morph_t::<true>(src, w, h, r, bufs, out)
    } else {
        morph_t::<false>(src, w, h, r, bufs, out)
    }
}

/// Binary dilation with a (2r+1)² square.
pub fn dilate(src: &[u8], w: usize, h: usize, r: usize) -> Vec<u8> {
    morph(src, w, h, r, true)
}

fn components(seed: &mut [u8], w: usize, h: usize) -> Vec<super::Hole> {
    super::holes_in_place(seed, w, h)
}

/// The 8-connected components of the pixels of `c` for which `keep` holds, found in `c`'s
/// bounding box only (a whole-image buffer per split cost a megabyte of zeroing each time).
fn components_within(c: &super::Hole, w: usize, keep: impl Fn(u32) -> bool) -> Vec<super::Hole> {
    let (bw, bh) = (c.x1 - c.x0 + 1, c.y1 - c.y0 + 1);
    let mut sub = vec![0u8; bw * bh];
    for &p in c.pixels.iter().filter(|&&p| keep(p)) {
        let (x, y) = (p as usize % w, p as usize / w);
        sub[(y - c.y0) * bw + x - c.x0] = 1;
    }
    let mut parts = super::holes(&sub, bw, bh);
    for part in &mut parts {
        for p in &mut part.pixels {
            let (x, y) = (*p as usize % bw, *p as usize / bw);
            *p = ((y + c.y0) * w + x + c.x0) as u32;
        }
        part.x0 += c.x0;
        part.x1 += c.x0;
        part.y0 += c.y0;
        part.y1 += c.y0;
    }
    parts
}

/// Fill the enclosed background of a component (dark text on a white box) inside its box.
fn fill_holes(keep: &mut [u8], list: &mut Vec<u32>, w: usize, c: &super::Hole) {
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
            if !outside[y * bw + x] && keep[at(x, y)] == 0 {
                keep[at(x, y)] = 1;
                list.push(at(x, y) as u32);
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
    fn running_min_max_matches_naive() {
        let (w, h) = (37, 23);
        let src: Vec<u8> = (0..w * h).map(|i| ((i * 7919) % 251) as u8).collect();
        for r in [1, 2, 3, 5, 6, 12, 40] {
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

    /// The demo's synthetic films (crate::synth) burn in text, a bold L/R marker and a thick
    /// arrow; each must be found on its own (they were once dropped as "anatomy-sized"), and
    /// the same film without them must come out clean.
    #[test]
    fn finds_the_synthetic_films_bold_markers_and_arrows() {
        use crate::synth::{chest_image, Burn};
        for side in [256u32, 512] {
            for (kind, burn) in [
                (
                    "text",
                    Burn {
                        text: true,
                        ..Burn::default()
                    },
                ),
                (
                    "marker",
                    Burn {
                        marker: true,
                        ..Burn::default()
                    },
                ),
                (
                    "arrow",
                    Burn {
                        arrow: true,
                        ..Burn::default()
                    },
                ),
            ] {
                for i in 0..3 {
                    let id = format!("film-{i}.png");
                    let clean = chest_image(side, side, 7, &id, 0.5, Burn::default());
                    let marked = chest_image(side, side, 7, &id, 0.5, burn);
                    let n = (side * side) as usize;
                    let d = detect(marked.as_raw(), None, side as usize, side as usize);
                    let (mut hit, mut total) = (0, 0);
                    for p in 0..n {
                        if marked.as_raw()[p] != clean.as_raw()[p] {
                            total += 1;
                            hit += (d.mask[p] != 0) as usize;
                        }
                    }
                    assert!(total > 0);
                    assert!(
                        hit as f64 >= 0.95 * total as f64,
                        "{kind} at {side} px, film {i}: recall {hit}/{total}"
                    );
                    let c = detect(clean.as_raw(), None, side as usize, side as usize);
                    assert!(
                        c.mask.iter().all(|&v| v == 0),
                        "clean film {i} at {side} px flagged"
                    );
                }
            }
        }
    }

    /// A smooth film of `side` px (90..130 left to right) for the rule tests below.
    fn plain_film(side: usize) -> Vec<u8> {
        (0..side * side)
            .map(|i| 90 + (i % side * 40 / side) as u8)
            .collect()
    }

    fn paint(g: &mut [u8], side: usize, (x0, y0, x1, y1): (usize, usize, usize, usize), v: u8) {
        for y in y0..y1 {
            g[y * side + x0..y * side + x1].fill(v);
        }
    }

    /// A grey letter (64 levels above the film: a faint mark) is kept beside the light letters
    /// of its word (220, within 40 levels of it, as NIH's are), and not alone.
    #[test]
    fn a_grey_letter_is_kept_beside_light_ones_not_alone() {
        let side = 512;
        let grey = (420, 20, 424, 34);
        let level = |g: &[u8]| g[27 * side + 421] + 64;
        let mut word = plain_film(side);
        let v = level(&word);
        paint(&mut word, side, (400, 20, 404, 34), 220);
        paint(&mut word, side, (410, 20, 414, 34), 220);
        paint(&mut word, side, grey, v);
        let d = detect(&word, None, side, side);
        assert_eq!(
            d.mask[27 * side + 421],
            255,
            "grey letter beside light ones"
        );
        let mut alone = plain_film(side);
        paint(&mut alone, side, grey, v);
        let d = detect(&alone, None, side, side);
        assert!(
            d.mask.iter().all(|&m| m == 0),
            "a lone faint mark is left alone"
        );
    }

    /// A small bright (not full-white) solid shape is a label at the film's margin and the
    /// patient's (a port, an electrode) in its middle; drawn at full white, it is a mark there
    /// too.
    #[test]
    fn a_bright_shape_in_the_middle_of_the_film_is_left_alone() {
        let side = 512;
        let mut margin = plain_film(side);
        paint(&mut margin, side, (30, 440, 44, 454), 235);
        assert_eq!(detect(&margin, None, side, side).mask[447 * side + 37], 255);
        let mut middle = plain_film(side);
        paint(&mut middle, side, (250, 250, 264, 264), 235);
        let d = detect(&middle, None, side, side);
        assert!(d.mask.iter().all(|&m| m == 0));
        paint(&mut middle, side, (250, 250, 264, 264), 255);
        assert_eq!(
            detect(&middle, None, side, side).mask[257 * side + 257],
            255
        );
    }

    /// A dark-grey arrow drawn on a journal figure (one flat level, 100 below the film, too
    /// light for the dark seeds) is found; the same shape only 50 below the film (the step of
    /// dark film between bright device parts) is not.
    #[test]
    fn a_dark_grey_drawn_arrow_is_found_not_a_shallow_plateau() {
        let side = 512;
        let arrow = |level: u8| {
            let mut g: Vec<u8> = (0..side * side)
                .map(|i| 170 + (i % side * 20 / side) as u8)
                .collect();
            paint(&mut g, side, (200, 300, 250, 306), level); // shaft
            for k in 0..14 {
                paint(&mut g, side, (250 + k, 289 + k, 251 + k, 317 - k), level);
                // head
            }
            detect(&g, None, side, side)
        };
        let d = arrow(80);
        assert_eq!(d.mask[303 * side + 220], 255, "shaft");
        assert_eq!(d.mask[303 * side + 255], 255, "head");
        let d = arrow(130);
        assert!(d.mask.iter().all(|&m| m == 0), "a shallow plateau is film");
    }

    /// A lone lead L only 62 levels above the film (NIH's low-contrast markers) is kept: one
    /// flat plateau with crisp sides. The same L graded along its length (as bone and vessels
    /// are) is a faint component with no clear mark beside it, and left alone (at the film's
    /// side, mid-height: in a corner, a lone marker, see the test below).
    #[test]
    fn a_flat_lone_glyph_is_a_mark_a_graded_one_is_not() {
        let side = 512;
        let film = |graded: bool| {
            let mut g = plain_film(side);
            let base = g[240 * side + 460];
            for y in 230..252 {
                for x in 455..470 {
                    let stem = x < 460;
                    let foot = y >= 47;
                    if stem || foot {
                        let level = if graded {
                            56 + ((y - 230) * 18 / 21) as u8
                        } else {
                            62
                        };
                        g[y * side + x] = base + level;
                    }
                }
            }
            detect(&g, None, side, side)
        };
        assert_eq!(film(false).mask[240 * side + 457], 255);
        assert!(film(true).mask.iter().all(|&m| m == 0));
    }

    /// A lone graded lead L (faint: 56–74 levels above the film, as NIH's lone markers are) is
    /// kept in a corner of the film, with its dim arm (30 levels up, too faint to seed) grown
    /// in; the same L at the film's side, or a clip with a hole in the corner, is not.
    #[test]
    fn a_lone_marker_in_a_corner_is_kept_whole() {
        let side = 512;
        let film = |(x0, y0): (usize, usize), hole: bool| {
            let mut g = plain_film(side);
            let base = g[(y0 + 10) * side + x0 + 5];
            for y in y0..y0 + 22 {
                for x in x0..x0 + 15 {
                    let shape = if hole {
                        !(x0 + 5..x0 + 10).contains(&x) || !(y0 + 8..y0 + 14).contains(&y)
                    } else {
                        x < x0 + 5 || y >= y0 + 17
                    };
                    if shape {
                        g[y * side + x] = base + 56 + ((y - y0) * 18 / 21) as u8;
                    }
                }
            }
            // The dim arm: up from the stem's top.
            if !hole {
                paint(&mut g, side, (x0, y0 - 8, x0 + 5, y0), base + 30);
            }
            detect(&g, None, side, side)
        };
        let corner = film((455, 30), false);
        assert_eq!(corner.mask[40 * side + 457], 255, "the L in its corner");
        assert_eq!(corner.mask[25 * side + 457], 255, "its dim arm");
        assert!(
            film((455, 230), false).mask.iter().all(|&m| m == 0),
            "at the side"
        );
        assert!(
            film((455, 30), true).mask.iter().all(|&m| m == 0),
            "a clip with a hole"
        );
    }

    /// A light lead disk joined to a raised marker-holder band: the flat raised region is too
    /// large for a disk, and opening it parts the disk from the band.
    #[test]
    fn a_disk_joined_to_a_holder_band_is_found() {
        let side = 512;
        let mut g = plain_film(side);
        let base = g[60 * side + 470];
        let (cx, cy, r) = (470.0f32, 60.0f32, 13.0f32);
        for y in 40..220 {
            for x in 450..490 {
                let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt();
                if d <= r {
                    g[y * side + x] = base + 45;
                } else if (470..478).contains(&x) && y > 60 {
                    g[y * side + x] = base + 30; // the band, 8 px wide, down from the disk
                }
            }
        }
        let d = detect(&g, None, side, side);
        assert_eq!(d.mask[60 * side + 470], 255, "disk centre");
        assert_eq!(d.mask[180 * side + 474], 0, "the band far from the disk");
    }

    /// A yellow arrow whose grey level is the film's (a coloured mark on a figure) is found by
    /// its colour, and so is the colour bleeding a pixel past its edge.
    #[test]
    fn a_coloured_mark_at_the_films_grey_is_found() {
        let side = 512;
        let g = vec![150u8; side * side];
        let mut spread = vec![0u8; side * side];
        paint(&mut spread, side, (100, 200, 140, 210), 200); // shaft
        for k in 0..10 {
            paint(&mut spread, side, (140 + k, 192 + k, 141 + k, 218 - k), 200);
            // head
        }
        paint(&mut spread, side, (100, 199, 140, 200), 20); // the bleed above the shaft
        let d = detect(&g, Some(&spread), side, side);
        assert_eq!(d.mask[205 * side + 120], 255, "shaft");
        assert_eq!(d.mask[199 * side + 120], 255, "bleed");
        assert_eq!(d.mask[100 * side + 300], 0, "film");
    }

    /// A white letter the contrast seeds join to a thin line of bright film (a rib's edge
    /// under a word) makes a wire-like component; its saturated pixels are judged alone and kept
    /// beside the word's other letters. On the line alone, that white stretch is left (a wire's
    /// saturated part, an electrode's tip).
    #[test]
    fn a_white_letter_on_a_line_of_film_is_split_off_beside_its_word() {
        let side = 512;
        let film = |word: bool| {
            let mut g = plain_film(side);
            let base = g[40 * side + 300];
            for x in 250..350 {
                // The line, 2 px thick, graded along its length as film is.
                paint(
                    &mut g,
                    side,
                    (x, 47, x + 1, 49),
                    base + 70 + (x - 250) as u8 * 2 / 5,
                );
            }
            paint(&mut g, side, (300, 40, 305, 48), 255); // the letter on it
            if word {
                paint(&mut g, side, (290, 40, 295, 46), 255);
                paint(&mut g, side, (310, 40, 315, 46), 255);
            }
            detect(&g, None, side, side)
        };
        assert_eq!(
            film(true).mask[42 * side + 302],
            255,
            "the letter on the line"
        );
        assert_eq!(
            film(false).mask[42 * side + 302],
            0,
            "a white stretch of a line alone"
        );
    }

    /// An L whose stem runs into a bright band along the film's top edge: the band's seeds are
    /// cleared (it is film border), and the stem is grown back into it at the L's own level;
    /// the band stays.
    #[test]
    fn a_marker_running_into_the_top_band_is_found_whole() {
        let side = 512;
        let mut g = plain_film(side);
        paint(&mut g, side, (0, 0, side, 8), 205); // the band
        paint(&mut g, side, (400, 0, 406, 24), 255); // stem, from the edge
        paint(&mut g, side, (400, 18, 416, 24), 255); // foot
        let d = detect(&g, None, side, side);
        assert_eq!(d.mask[20 * side + 410], 255, "foot");
        assert_eq!(d.mask[3 * side + 403], 255, "stem inside the band");
        assert_eq!(d.mask[3 * side + 200], 0, "the band");
    }

    /// NIH letters printed at the film's edge touch the bright band along its black edge (a
    /// 5-px strip rising to 245): letter and band seed one long component, judged a wire. Off
    /// the band, the letter is judged alone (faint: beside the marker above it, kept) and grown
    /// back over the band beside it; the band's stretch away from it stays film.
    #[test]
    fn a_letter_touching_the_films_edge_band_is_parted_from_it() {
        let side = 1024;
        let mut g = vec![180u8; side * side];
        for y in 0..side {
            for x in 970..side {
                let lit = (100..300).contains(&y);
                g[y * side + x] = match x {
                    976.. => 12,
                    _ if lit => 215 + 6 * (x - 970) as u8,
                    _ => 200,
                };
            }
        }
        paint(&mut g, side, (950, 85, 966, 176), 252); // the marker's stem
        paint(&mut g, side, (925, 160, 966, 176), 252); // its foot

        // A letter (an E): its bars run into the band.
        paint(&mut g, side, (950, 181, 954, 201), 240);
        for y0 in [181, 189, 197] {
            paint(&mut g, side, (950, y0, 973, y0 + 4), 240);
        }
        let d = detect(&g, None, side, side);
        assert_eq!(d.mask[120 * side + 958], 255, "the marker");
        assert_eq!(d.mask[183 * side + 960], 255, "the letter's bar");
        assert_eq!(d.mask[192 * side + 952], 255, "the letter's stem");
        assert_eq!(d.mask[191 * side + 971], 255, "its bar in the band");
        assert_eq!(d.mask[280 * side + 972], 0, "the band away from it");
    }

    /// An NIH lead L printed dim (46) on the unexposed black film outside the field (0–4): too
    /// faint to seed, found as a dim glyph; a lead wire as dim on the black film (long) and a
    /// grey patch where the black film meets the exposed field are not.
    #[test]
    fn a_dim_glyph_on_the_unexposed_film_is_found_a_dim_wire_is_not() {
        let side = 1024;
        let mut g = plain_film(side);
        paint(&mut g, side, (0, 0, side - 1, 120), 3); // unexposed film along the top
        paint(&mut g, side, (930, 40, 938, 72), 46); // the L's stem
        paint(&mut g, side, (930, 64, 960, 72), 46); // its foot
        paint(&mut g, side, (100, 60, 400, 64), 46); // a lead, 300 px long
        paint(&mut g, side, (600, 100, 630, 125), 46); // grey film at the field's edge
        let d = detect(&g, None, side, side);
        assert_eq!(d.mask[50 * side + 934], 255, "the L's stem");
        assert_eq!(d.mask[68 * side + 955], 255, "its foot");
        assert_eq!(d.mask[62 * side + 250], 0, "the lead");
        assert_eq!(d.mask[110 * side + 615], 0, "the field's edge");
    }

    /// A flat lead L whose stem has soft sides (a 4-px ramp on its left and the lower half of
    /// its right: blurred on the film, as NIH's are) is too soft to keep alone, and kept beside
    /// a clear mark.
    #[test]
    fn a_soft_edged_flat_glyph_is_kept_beside_a_mark_only() {
        let side = 512;
        let film = |company: bool| {
            let mut g = plain_film(side);
            let base = g[40 * side + 460];
            for y in 26..52 {
                for x in 451..470 {
                    let in_l = (455..460).contains(&x) && y >= 30 || y >= 47 && x >= 455;
                    // Distance outside the L to its left or the stem's right, for the ramp.
                    let d = if x < 455 && y >= 30 {
                        455 - x
                    } else if (460..465).contains(&x) && (38..47).contains(&y) {
                        x - 459
                    } else {
                        0
                    };
                    let v = if in_l {
                        62
                    } else if d > 0 && d <= 4 {
                        62 - 12 * d as u8
                    } else {
                        0
                    };
                    g[y * side + x] = base + v;
                }
            }
            if company {
                paint(&mut g, side, (475, 36, 481, 52), 220); // a light letter beside it
            }
            detect(&g, None, side, side)
        };
        assert!(film(false).mask.iter().all(|&m| m == 0), "alone");
        assert_eq!(
            film(true).mask[40 * side + 457],
            255,
            "beside a light letter"
        );
    }

    /// A lone short thin line graded along its length (a cortical edge of bone: 2 × 20 px, a mean
    /// top-hat under 80) is doubtful, and left alone; the same line drawn at full white is a
    /// mark.
    #[test]
    fn a_lone_thin_graded_line_is_left_alone() {
        let side = 512;
        let film = |white: bool| {
            let mut g = plain_film(side);
            for x in 100..120 {
                let base = g[40 * side + x];
                let v = if white {
                    255
                } else {
                    base + 68 + (x - 100) as u8
                };
                paint(&mut g, side, (x, 40, x + 1, 42), v);
            }
            detect(&g, None, side, side)
        };
        assert!(film(false).mask.iter().all(|&m| m == 0), "graded line");
        assert_eq!(film(true).mask[41 * side + 110], 255, "white line");
    }

    /// A white letter's drop shadow (2 px below it, 30 levels under the film) is masked with
    /// it, so the fill does not carry the shadow into the hole; film 4 px below is not.
    #[test]
    fn a_white_letters_drop_shadow_is_masked_with_it() {
        let side = 512;
        let mut g = vec![120u8; side * side];
        paint(&mut g, side, (100, 40, 106, 60), 255);
        paint(&mut g, side, (101, 60, 107, 62), 90); // the shadow, offset right and down
        let d = detect(&g, None, side, side);
        assert_eq!(d.mask[50 * side + 103], 255, "letter");
        assert_eq!(d.mask[61 * side + 104], 255, "shadow, 2 px below");
        assert_eq!(d.mask[64 * side + 104], 0, "film below");
    }

    /// A soft bright blob of film (the brightest pixels of the film, not saturated, fading
    /// over many pixels, as film beside a dark border does) is not a mark; the same blob cut
    /// with crisp sides is.
    #[test]
    fn a_soft_bright_blob_of_film_is_not_a_mark() {
        let side = 512;
        let film = |crisp: bool| {
            let mut g = plain_film(side);
            for y in 20..80 {
                for x in 20..80 {
                    let d2 = (x as f32 - 50.0).powi(2) + (y as f32 - 50.0).powi(2);
                    let base = g[y * side + x] as f32;
                    let v = if crisp {
                        if d2 <= 100.0 {
                            225.0
                        } else {
                            base
                        }
                    } else {
                        base + (225.0 - base) * (-d2 / 128.0).exp()
                    };
                    g[y * side + x] = v as u8;
                }
            }
            detect(&g, None, side, side)
        };
        assert!(film(false).mask.iter().all(|&m| m == 0), "soft blob");
        assert_eq!(film(true).mask[50 * side + 50], 255, "crisp disk");
    }

    /// A light letter graded across its width (205-245, as NIH's lead letters are) and a white
    /// one, both on soft bright ridges of bone (up to 170): one anatomy-sized component. Its
    /// saturated part is the white letter; the light one parts from the bone at the mid level,
    /// crisp all round, and is kept too. The bone stays.
    #[test]
    fn a_light_graded_letter_merged_with_bone_parts_at_the_mid_level() {
        let side = 512;
        let mut g = vec![100u8; side * side];
        // Soft ridges 13 px across, rising 12 levels a pixel to 170 on their crest.
        let ridge = |d: usize| 170 - 12 * d.abs_diff(6) as u8;
        for x in 360..500 {
            for d in 0..13 {
                g[(56 + d) * side + x] = ridge(d);
            }
        }
        for y in 0..56 {
            for d in 0..13 {
                g[y * side + 476 + d] = ridge(d);
            }
        }
        for y in 30..63 {
            for x in 436..446 {
                g[y * side + x] = 205 + (x - 436) as u8 * 4; // the light letter
            }
        }
        paint(&mut g, side, (460, 40, 468, 63), 255); // the white letter
        let d = detect(&g, None, side, side);
        assert_eq!(d.mask[45 * side + 440], 255, "the light letter");
        assert_eq!(d.mask[50 * side + 464], 255, "the white letter");
        assert_eq!(d.mask[62 * side + 380], 0, "the bone away from the letters");
    }

    /// A light L printed over a graded bright bone band merges with it into one component too
    /// soft-edged to keep; its flat top, far above the film, is the L, and is kept. The bone
    /// alone stays.
    #[test]
    fn a_flat_glyph_merged_with_graded_bone_is_split_off() {
        let side = 512;
        let film = |with_l: bool| {
            let mut g = plain_film(side);
            for y in 0..120 {
                for x in 380..500 {
                    // A bone band along the diagonal, 24 px across, ramping up to 200.
                    let d = (x as f32 - 380.0 - y as f32).abs();
                    if d < 12.0 {
                        let base = g[y * side + x] as f32;
                        g[y * side + x] = (base + (200.0 - base) * (1.0 - d / 12.0)) as u8;
                    }
                }
            }
            if with_l {
                paint(&mut g, side, (436, 30, 442, 64), 240);
                paint(&mut g, side, (436, 58, 458, 64), 240);
            }
            detect(&g, None, side, side)
        };
        let d = film(true);
        assert_eq!(d.mask[40 * side + 439], 255, "the L's stem");
        assert_eq!(d.mask[100 * side + 480], 0, "the bone away from the L");
        assert!(film(false).mask.iter().all(|&m| m == 0), "bone alone");
    }
}
