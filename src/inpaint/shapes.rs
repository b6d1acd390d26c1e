//! The shape rules of the detector that tell a burned-in mark from what must be left alone
//! (film borders, the patient's devices) and that widen a glyph to its backing plate. All work
//! at detection scale on one component at a time; sizes are for a 1024-px film and scale with
//! the image (`scale` = work side / 1024). The rules are stated in docs/inpaint.md.

use super::Hole;

/// Thin film border: a strip along an image edge, thin across it (at most 12 px): touching
/// (within 3 px of) the edge and at least twice as long as thick, or lying within 30 px of the
/// edge and six times longer along it than across.
pub fn is_border(c: &Hole, w: usize, h: usize, scale: f32) -> bool {
    let (bw, bh) = ((c.x1 - c.x0 + 1) as f32, (c.y1 - c.y0 + 1) as f32);
    let touch = 3.0 * scale;
    let thin = (12.0 * scale).max(2.0);
    let near = 30.0 * scale;
    let (left, top) = (c.x0 as f32, c.y0 as f32);
    let right = (w - 1 - c.x1) as f32;
    let bottom = (h - 1 - c.y1) as f32;
    let vertical_edge = left.min(right);
    let horizontal_edge = top.min(bottom);
    // A short piece touching the edge is a border only if it is a line (1–2 px): a thicker
    // one is a glyph the edge cuts (a letter half off an NIH film's side).
    let (short, line) = (16.0 * scale, 2.0 * scale.max(1.0));
    (vertical_edge <= touch && bw <= thin && bh >= 2.0 * bw && (bh >= short || bw <= line))
        || (horizontal_edge <= touch && bh <= thin && bw >= 2.0 * bh && (bw >= short || bh <= line))
        || (vertical_edge <= near && bw <= thin && bh >= 6.0 * bw)
        || (horizontal_edge <= near && bh <= thin && bw >= 6.0 * bh)
}

/// Clear the seeds of film border bands before components are formed, so text touching a
/// bright band along the top of the film is not merged into it: within 30 px of each edge,
/// every row (column) holding an unbroken run of seeds over 30 % of the image's width (height);
/// a line of text is broken between its letters. Returns which pixels were seeds and are
/// cleared (see [`regrow_into_band`]).
pub fn clear_edge_bands(seed: &mut [u8], w: usize, h: usize, scale: f32) -> Vec<bool> {
    let mut cleared = vec![false; w * h];
    let m = ((30.0 * scale).ceil() as usize).min(h / 4).min(w / 4);
    let longest = |row: &[u8]| {
        let (mut best, mut run) = (0usize, 0usize);
        for &v in row {
            run = if v != 0 { run + 1 } else { 0 };
            best = best.max(run);
        }
        best
    };
    for y in (0..m).chain(h.saturating_sub(m)..h) {
        let row = &mut seed[y * w..(y + 1) * w];
        if 10 * longest(row) >= 3 * w {
            for (x, v) in row.iter_mut().enumerate() {
                cleared[y * w + x] |= *v != 0;
                *v = 0;
            }
        }
    }
    // Columns: the runs of all edge columns at once, row by row (a walk down each column in
    // turn touches a new cache line at every pixel). Clearing a column changes no other
    // column's run, so they are cleared afterwards.
    let cols: Vec<usize> = (0..m).chain(w.saturating_sub(m)..w).collect();
    let (mut run, mut best) = (vec![0usize; cols.len()], vec![0usize; cols.len()]);
    for row in seed.chunks_exact(w) {
        for ((&x, r), b) in cols.iter().zip(&mut run).zip(&mut best) {
            *r = if row[x] != 0 { *r + 1 } else { 0 };
            *b = (*b).max(*r);
        }
    }
    for (&x, &b) in cols.iter().zip(&best) {
        if 10 * b >= 3 * h {
            for y in 0..h {
                cleared[y * w + x] |= seed[y * w + x] != 0;
                seed[y * w + x] = 0;
            }
        }
    }
    cleared
}

/// Grow a kept mark back into the edge-band seeds [`clear_edge_bands`] cleared (an NIH L whose
/// bar runs into a bright band at the film's top edge, or along its side): the cleared pixels
/// connected to it whose level stays within 20 of the mark pixel they grow from (the band's
/// film is far from a white glyph's level) and clear of the film around the mark (`film`) by
/// `need`. Abandoned when it would add more than 4× the mark's area: then it is a white border
/// strip, not the rest of a glyph. Returns the pixels added (not yet in `keep`).
pub fn regrow_into_band(
    g: &[u8],
    w: usize,
    h: usize,
    cleared: &[bool],
    keep: &[u8],
    mark: &Hole,
    film: u8,
    need: f32,
) -> Vec<u32> {
    let mut seen: std::collections::HashSet<usize> = std::collections::HashSet::new();
    let mut frontier: Vec<(usize, u8)> = (mark.pixels.iter())
        .map(|&p| (p as usize, g[p as usize]))
        .collect();
    let mut added = Vec::new();
    while !frontier.is_empty() {
        let mut next = Vec::new();
        for (p, level) in frontier {
            for q in neighbours(p % w, p / w, w, h) {
                let v = g[q];
                if cleared[q]
                    && keep[q] == 0
                    && (v as i32 - level as i32).abs() <= 20
                    && v as f32 - film as f32 >= need
                    && seen.insert(q)
                {
                    added.push(q as u32);
                    next.push((q, level));
                }
            }
        }
        if added.len() > 4 * mark.pixels.len() {
            return Vec::new();
        }
        frontier = next;
    }
    added
}

/// Mean stroke width (2·area / boundary pixels: a band of width t and length L has ~2L boundary
/// pixels, a disk of radius R gives R) and stroke length (area / width) of a seed component.
pub(crate) fn stroke(seed: &[u8], w: usize, h: usize, c: &Hole) -> (f32, f32) {
    let mut boundary = 0usize;
    for &p in &c.pixels {
        let p = p as usize;
        let (x, y) = (p % w, p / w);
        let inner = x > 0
            && y > 0
            && x + 1 < w
            && y + 1 < h
            && seed[p - 1] != 0
            && seed[p + 1] != 0
            && seed[p - w] != 0
            && seed[p + w] != 0;
        boundary += (!inner) as usize;
    }
    let width = (2.0 * c.pixels.len() as f32 / boundary.max(1) as f32).max(1.0);
    (width, c.pixels.len() as f32 / width)
}

/// A wire, lead, tube, line or pen (lengths: per 1024 px of side, and at least 30 and 40 px):
/// a thin stroke (at most 8 px wide, at least 6× longer than wide and 60 px long), solid ([`Profile`] solidity ≥ 0.7, unlike a line of text) and without
/// an arrowhead ([`has_head`]); or any thin stroke (4.5 px) that is
/// curved (bounding-box diagonal under 0.9 of its length, but over half of it: text folds
/// back far more) or very long (160 px), head or not.
/// Drawn arrows have heads; letters are shorter than 50 px.
pub fn is_wire(seed: &[u8], w: usize, h: usize, c: &Hole, scale: f32) -> bool {
    let (width, length) = stroke(seed, w, h, c);
    let s = scale.max(0.5);
    let (bw, bh) = ((c.x1 - c.x0 + 1) as f32, (c.y1 - c.y0 + 1) as f32);
    let diag = (bw * bw + bh * bh).sqrt();
    // Length floors in plain pixels too: on a small film a letter's strokes are a few pixels.
    let thin_long = width <= 4.5 * s && length >= (80.0 * scale).max(40.0);
    // A line of text has far more stroke than its box's diagonal (its strokes fold back); a
    // wire, even curved, less than twice.
    if thin_long && diag >= 0.5 * length && (diag < 0.9 * length || length >= 160.0 * scale) {
        return true;
    }
    if !(width <= 8.0 * s && length >= (60.0 * scale).max(30.0) && length >= 6.0 * width) {
        return false;
    }
    let p = profile(w, c);
    !p.head && p.solidity >= 0.7
}

/// Share of each side of the image, from its edges, outside which a component is central.
const CENTRAL_MARGIN: f32 = 0.15;

/// Whether a component lies wholly inside the central 70 % × 70 % of the image. Burned-in text
/// and L/R markers are printed at the film's margins: of the 224 text and marker boxes on the
/// 123 real films of tests/fixtures/real-annotations.csv none lies there, while half of the
/// device boxes do (ports, pacemakers, electrodes). Only arrows point into it.
pub fn is_central(c: &Hole, w: usize, h: usize) -> bool {
    let inside = |a0: usize, a1: usize, n: usize| {
        a0 as f32 >= CENTRAL_MARGIN * n as f32
            && (a1 + 1) as f32 <= (1.0 - CENTRAL_MARGIN) * n as f32
    };
    inside(c.x0, c.x1, w) && inside(c.y0, c.y1, h)
}

/// Whether a component lies in a corner of the film: outside the central band on both axes
/// (where markers are put, clear of the lungs).
pub fn is_in_corner(c: &Hole, w: usize, h: usize) -> bool {
    let outside = |a0: usize, a1: usize, n: usize| {
        (a1 + 1) as f32 <= CENTRAL_MARGIN * n as f32
            || a0 as f32 >= (1.0 - CENTRAL_MARGIN) * n as f32
    };
    outside(c.x0, c.x1, w) && outside(c.y0, c.y1, h)
}

/// A marker disk: 24–80 px across per 1024 px of side, aspect within 0.6–1.6, filling
/// 0.68–0.88 of its box (an ellipse fills π/4), flat inside (the inner half of its box within a
/// standard deviation of 8 levels) and at least 25 levels above the film on all four sides of
/// the ring 2 px outside its box. Returns the film level around it.
pub fn is_marker_disk(g: &[u8], w: usize, h: usize, c: &Hole, scale: f32) -> Option<u8> {
    let (bw, bh) = (c.x1 - c.x0 + 1, c.y1 - c.y0 + 1);
    let (lo, hi) = (24.0 * scale, 80.0 * scale);
    let aspect = bw as f32 / bh as f32;
    let fill = c.pixels.len() as f32 / (bw * bh) as f32;
    if (bw as f32) < lo || (bh as f32) < lo || bw.max(bh) as f32 > hi {
        return None;
    }
    if !(0.6..=1.6).contains(&aspect) || !(0.68..=0.88).contains(&fill) {
        return None;
    }
    let (mut n, mut s, mut s2) = (0f64, 0f64, 0f64);
    for y in c.y0 + bh / 4..c.y0 + 3 * bh / 4 {
        for x in c.x0 + bw / 4..c.x0 + 3 * bw / 4 {
            let v = g[y * w + x] as f64;
            n += 1.0;
            s += v;
            s2 += v * v;
        }
    }
    let mean = s / n;
    if s2 / n - mean * mean > 64.0 {
        return None;
    }
    // Film on each side of the box, 2 px out (sides outside the image do not count).
    let sides: Vec<f64> = ring(g, w, h, c, 2)
        .sides
        .iter()
        .flatten()
        .map(|&f| f as f64)
        .collect();
    let clear = !sides.is_empty() && sides.iter().all(|&f| mean - f >= 25.0);
    clear.then(|| (sides.iter().sum::<f64>() / sides.len() as f64).round() as u8)
}

/// The rectangle `gap` pixels outside a component's bounding box: the mean grey level over its
/// sides that lie inside the image (None when fewer than 8 pixels do), and the mean of each
/// side (top, bottom, left, right; None when outside the image).
pub(crate) struct Ring {
    pub mean: Option<f32>,
    pub sides: [Option<f32>; 4],
}

pub(crate) fn ring(g: &[u8], w: usize, h: usize, c: &Hole, gap: usize) -> Ring {
    ring_of_film(g, w, h, c, gap, |_| true)
}

/// [`ring`] over the pixels `film` admits only (not another mark's seeds: the next letter of
/// a word, 2 px to the right, is not the film an outlined letter must clear); the plain ring
/// when fewer than 8 of its pixels are admitted.
pub(crate) fn ring_of_film(
    g: &[u8],
    w: usize,
    h: usize,
    c: &Hole,
    gap: usize,
    film: impl Fn(usize) -> bool,
) -> Ring {
    let r = ring_over(g, w, h, c, gap, &film);
    if r.mean.is_none() {
        return ring_over(g, w, h, c, gap, &|_| true);
    }
    r
}

fn ring_over(
    g: &[u8],
    w: usize,
    h: usize,
    c: &Hole,
    gap: usize,
    film: &dyn Fn(usize) -> bool,
) -> Ring {
    let (x0, y0) = (c.x0 as isize - gap as isize, c.y0 as isize - gap as isize);
    let (x1, y1) = ((c.x1 + gap) as isize, (c.y1 + gap) as isize);
    let mut sums = [(0f64, 0usize); 4];
    let mut add = |side: usize, x: isize, y: isize| {
        if x >= 0
            && y >= 0
            && (x as usize) < w
            && (y as usize) < h
            && film(y as usize * w + x as usize)
        {
            sums[side].0 += g[y as usize * w + x as usize] as f64;
            sums[side].1 += 1;
        }
    };
    for x in x0..=x1 {
        add(0, x, y0);
        add(1, x, y1);
    }
    for y in y0 + 1..y1 {
        add(2, x0, y);
        add(3, x1, y);
    }
    let (s, n) = sums
        .iter()
        .fold((0f64, 0usize), |(s, n), &(a, b)| (s + a, n + b));
    Ring {
        mean: (n >= 8).then(|| (s / n as f64) as f32),
        sides: sums.map(|(s, n)| (n > 0).then(|| (s / n as f64) as f32)),
    }
}

/// What the wire rule must not take: a closed loop (a ring drawn around a marker's letter:
/// its hole is at least 30 % of its box; leads and tubes do not close on themselves), or a
/// bold stroke far brighter than the film (mean top-hat ≥ 100, as a white L marker or a letter
/// is; leads are fainter on real films) and short (at most 110 px) in the image's outer band
/// (outside the central 60 % × 60 %), where annotations are printed. A ring electrode is told
/// apart later, by being alone ([`is_ring_electrode`]).
pub fn is_glyph_not_wire(w: usize, h: usize, c: &Hole, scale: f32, mean_tophat: u32) -> bool {
    let (bw, bh) = (c.x1 - c.x0 + 1, c.y1 - c.y0 + 1);
    let (inside, holes) = enclosure(w, c);
    let closed = bw.min(bh) as f32 >= 6.0 * scale && inside as f32 >= 0.3 * (bw * bh) as f32;
    // A line of text merged into one component (small letters touching): the counters of
    // its letters are several holes; a lead or tube crossing itself makes one.
    let counters = holes >= 3;
    let central = |a0: usize, a1: usize, n: usize| 5 * a1 >= n && 5 * a0 <= 4 * n;
    let outer = !(central(c.x0, c.x1, w) && central(c.y0, c.y1, h));
    let short = bw.max(bh) as f32 <= 110.0 * scale;
    closed || counters || mean_tophat >= 100 && short && outer
}

/// Along a component's main axis: whether one end is a head, and how solid it is (area over
/// axis length × median width: about 1 for a pen or tube, far less for a line of text).
pub struct Profile {
    pub head: bool,
    pub solidity: f64,
}

/// An arrowhead (or the foot of an L): along the component's main axis, one end (its first or
/// last fifth) is at least 2.2× as wide as the median width.
pub fn has_head(w: usize, c: &Hole) -> bool {
    profile(w, c).head
}

pub(crate) fn profile(w: usize, c: &Hole) -> Profile {
    let n = c.pixels.len() as f64;
    let xy = |p: u32| ((p as usize % w) as f64, (p as usize / w) as f64);
    let (mut mx, mut my) = (0.0, 0.0);
    for &p in &c.pixels {
        let (x, y) = xy(p);
        mx += x;
        my += y;
    }
    (mx, my) = (mx / n, my / n);
    let (mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0);
    for &p in &c.pixels {
        let (x, y) = xy(p);
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
        sxy += (x - mx) * (y - my);
    }
    let angle = 0.5 * (2.0 * sxy).atan2(sxx - syy);
    let (ux, uy) = (angle.cos(), angle.sin());
    let proj: Vec<(f64, f64)> = c
        .pixels
        .iter()
        .map(|&p| {
            let (x, y) = xy(p);
            let (dx, dy) = (x - mx, y - my);
            (dx * ux + dy * uy, -dx * uy + dy * ux)
        })
        .collect();
    let (t0, t1) = proj
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &(t, _)| (a.min(t), b.max(t)));
    const BINS: usize = 10;
    let span = (t1 - t0).max(1.0);
    let mut lo = [f64::MAX; BINS];
    let mut hi = [f64::MIN; BINS];
    for &(t, s) in &proj {
        let b = (((t - t0) / span) * BINS as f64).min(BINS as f64 - 1.0) as usize;
        lo[b] = lo[b].min(s);
        hi[b] = hi[b].max(s);
    }
    let widths: Vec<f64> = (0..BINS)
        .map(|b| {
            if hi[b] >= lo[b] {
                hi[b] - lo[b] + 1.0
            } else {
                0.0
            }
        })
        .collect();
    let mut sorted = widths.clone();
    sorted.sort_by(f64::total_cmp);
    let core = sorted[BINS / 2].max(1.0);
    let head = widths[..2]
        .iter()
        .chain(&widths[BINS - 2..])
        .fold(0.0f64, |a, &b| a.max(b));
    Profile {
        head: head >= 2.2 * core,
        solidity: n / (span * core),
    }
}

/// An ECG ring electrode: a round ring (aspect within 0.6–1.6, 6–45 px across) whose enclosed
/// hole is at least 30 % of its box, with no other candidate mark within its own size (a
/// letter `O` or `D` has neighbours in its word; an `R` marker's bowl is far smaller).
pub fn is_ring_electrode(
    w: usize,
    c: &Hole,
    scale: f32,
    boxes: &[(usize, usize, usize, usize)],
    me: usize,
) -> bool {
    let (bw, bh) = (c.x1 - c.x0 + 1, c.y1 - c.y0 + 1);
    let aspect = bw as f32 / bh as f32;
    let side = bw.max(bh) as f32;
    if !(0.6..=1.6).contains(&aspect) || side < 6.0 * scale || side > 45.0 * scale {
        return false;
    }
    if (enclosed(w, c) as f32) < 0.3 * (bw * bh) as f32 {
        return false;
    }
    let gap = bw.max(bh);
    let (x0, y0) = (c.x0.saturating_sub(gap), c.y0.saturating_sub(gap));
    let (x1, y1) = (c.x1 + gap, c.y1 + gap);
    !boxes
        .iter()
        .enumerate()
        .any(|(i, b)| i != me && b.0 <= x1 && b.2 >= x0 && b.1 <= y1 && b.3 >= y0)
}

/// Share of a component's pixels within 6 levels of its median grey: a burned-in glyph is a
/// flat plateau (the lead letter or the printed text at one level), bone and devices are not.
pub(crate) fn plateau(g: &[u8], c: &Hole) -> f32 {
    let mut v: Vec<u8> = c.pixels.iter().map(|&p| g[p as usize]).collect();
    let k = v.len() / 2;
    let m = *v.select_nth_unstable(k).1 as i32;
    let near = v.iter().filter(|&&x| (x as i32 - m).abs() <= 6).count();
    near as f32 / v.len().max(1) as f32
}

/// Pixels of a component's box not reachable from the box's edge without crossing the
/// component (its holes).
pub(crate) fn enclosed(w: usize, c: &Hole) -> usize {
    enclosure(w, c).0
}

/// The enclosed pixels of a component (as [`enclosed`]) and how many separate holes they
/// form (4-connected).
pub(crate) fn enclosure(w: usize, c: &Hole) -> (usize, usize) {
    let (bw, bh) = (c.x1 - c.x0 + 1, c.y1 - c.y0 + 1);
    let mut mine = vec![false; bw * bh];
    for &p in &c.pixels {
        let p = p as usize;
        mine[(p / w - c.y0) * bw + p % w - c.x0] = true;
    }
    let mut outside = vec![false; bw * bh];
    let mut stack = Vec::new();
    for y in 0..bh {
        for x in 0..bw {
            if (x == 0 || y == 0 || x + 1 == bw || y + 1 == bh) && !mine[y * bw + x] {
                outside[y * bw + x] = true;
                stack.push((x, y));
            }
        }
    }
    flood_box(&mut outside, &mine, bw, bh, &mut stack);
    let mut pixels = 0;
    let mut holes = 0;
    for start in 0..bw * bh {
        if outside[start] || mine[start] {
            continue;
        }
        // A new hole: flood it (marking it as seen through `outside`).
        holes += 1;
        outside[start] = true;
        stack.push((start % bw, start / bw));
        pixels += flood_box(&mut outside, &mine, bw, bh, &mut stack);
    }
    (pixels, holes)
}

/// 4-connected flood of a bw×bh box from the pixels on `stack` (already marked in `seen`)
/// over those neither `seen` nor `mine`, marking them seen; how many pixels it popped.
fn flood_box(
    seen: &mut [bool],
    mine: &[bool],
    bw: usize,
    bh: usize,
    stack: &mut Vec<(usize, usize)>,
) -> usize {
    let mut n = 0;
    while let Some((x, y)) = stack.pop() {
        n += 1;
        for (dx, dy) in [(-1isize, 0isize), (1, 0), (0, -1), (0, 1)] {
            let (nx, ny) = (x as isize + dx, y as isize + dy);
            if nx < 0 || ny < 0 || nx >= bw as isize || ny >= bh as isize {
                continue;
            }
            let q = ny as usize * bw + nx as usize;
            if !seen[q] && !mine[q] {
                seen[q] = true;
                stack.push((nx as usize, ny as usize));
            }
        }
    }
    n
}

/// The box of each mark's group: marks are grouped (transitively) with those within the
/// larger one's size of them, as the letters of a line and the marker beside it are, so that
/// one plate behind a whole line is seen from each letter.
fn group_boxes(marks: &[Hole]) -> Vec<(usize, usize, usize, usize)> {
    let n = marks.len();
    let mut parent: Vec<usize> = (0..n).collect();
    fn root(p: &mut [usize], mut i: usize) -> usize {
        while p[i] != i {
            p[i] = p[p[i]];
            i = p[i];
        }
        i
    }
    let size = |c: &Hole| (c.x1 - c.x0 + 1).max(c.y1 - c.y0 + 1);
    for i in 0..n {
        for j in i + 1..n {
            let (a, b) = (&marks[i], &marks[j]);
            let reach = size(a).max(size(b));
            let near = a.x0 <= b.x1 + reach
                && b.x0 <= a.x1 + reach
                && a.y0 <= b.y1 + reach
                && b.y0 <= a.y1 + reach;
            if near {
                let (ri, rj) = (root(&mut parent, i), root(&mut parent, j));
                parent[ri] = rj;
            }
        }
    }
    let mut boxes = vec![(usize::MAX, usize::MAX, 0, 0); n];
    for (i, c) in marks.iter().enumerate() {
        let r = root(&mut parent, i);
        let b = &mut boxes[r];
        *b = (b.0.min(c.x0), b.1.min(c.y0), b.2.max(c.x1), b.3.max(c.y1));
    }
    (0..n).map(|i| boxes[root(&mut parent, i)]).collect()
}

/// Grey levels a plate may vary by around its median.
const PLATE_TOL: i32 = 22;
/// Least difference between a plate and the film around it.
const PLATE_CONTRAST: i32 = 25;

/// Largest step between 4-neighbours inside a grain-free plate (a printed plate is a smooth
/// ramp; film grain steps by more).
const SMOOTH_STEP: i32 = 2;

/// Add the backing plate of each kept mark: flood from the pixels just outside the mark over
/// grey levels within ±22 of their median, passing over other marks, inside the mark's box
/// widened by its own size (at least 6 px). The region is a plate when the flood closes before
/// that limit (at most 8× the mark's box) and its level differs by at least 25 from the film
/// just outside it. Failing that, a plate at the film's own level is told by its lack of grain
/// ([`smooth_plate`]: a Hannover L on a grey ramp as bright as the film). It is then added
/// with its outline and a rim of one pixel per 1024 px of side.
pub fn add_plates(g: &[u8], w: usize, h: usize, scale: f32, keep: &mut [u8], list: &mut Vec<u32>) {
    let marks = super::holes_in_place(keep, w, h);
    let groups = group_boxes(&marks);
    let mut done = vec![false; w * h];
    let ext_min = (6.0 * scale).ceil() as usize;
    for (c, &(gx0, gy0, gx1, gy1)) in marks.iter().zip(&groups) {
        let (bw, bh) = (c.x1 - c.x0 + 1, c.y1 - c.y0 + 1);
        let ext = bw.max(bh).max(ext_min);
        // The flood may reach the image's edge (a label in a figure's corner), not the limit
        // inside the image.
        let bounds = FloodBounds {
            x0: gx0.saturating_sub(ext),
            y0: gy0.saturating_sub(ext),
            x1: (gx1 + ext).min(w - 1),
            y1: (gy1 + ext).min(h - 1),
            edge: [gx0 < ext, gy0 < ext, gx1 + ext > w - 1, gy1 + ext > h - 1],
            limit: (8 * bw * bh).max(2 * (gx1 - gx0 + 1) * (gy1 - gy0 + 1)) + 64,
        };
        // Pixels just outside the mark: the plate's level.
        let mut start = Vec::new();
        for &p in &c.pixels {
            let p = p as usize;
            let (x, y) = (p % w, p / w);
            for q in neighbours(x, y, w, h) {
                if keep[q] == 0 && !done[q] {
                    start.push(q);
                }
            }
        }
        if start.is_empty() {
            continue;
        }
        start.sort_unstable();
        start.dedup();
        let plate = level_plate(g, w, h, keep, &start, &bounds)
            .or_else(|| smooth_plate(g, w, h, keep, c, &start, &bounds));
        if let Some((region, film)) = plate {
            add_plate(g, w, h, scale, &region, film, keep, list, &mut done);
        }
    }
}

/// Where a plate flood may go: a box (reaching an image edge only where `edge` says the box
/// was cut by it: left, top, right, bottom) and how many pixels it may gather.
struct FloodBounds {
    x0: usize,
    y0: usize,
    x1: usize,
    y1: usize,
    edge: [bool; 4],
    limit: usize,
}

/// Flood from `start` over the pixels `pass(from, to)` allows, passing over kept marks when
/// `over_marks`. The region gathered (kept marks excluded) and the pixels visited, or None when
/// the flood reached its bounds (then it is film, not a plate).
fn flood(
    w: usize,
    h: usize,
    keep: &[u8],
    start: &[usize],
    b: &FloodBounds,
    over_marks: bool,
    pass: impl Fn(usize, usize) -> bool,
) -> Option<(Vec<usize>, BoxFlags)> {
    let mut region: Vec<usize> = Vec::new();
    let mut seen = BoxFlags::new(b.x0, b.y0, b.x1, b.y1, w);
    let mut stack: Vec<usize> = start.iter().copied().filter(|&q| seen.insert(q)).collect();
    let [el, et, er, eb] = b.edge;
    while let Some(q) = stack.pop() {
        let (x, y) = (q % w, q / w);
        if x <= b.x0 && !el || y <= b.y0 && !et || x >= b.x1 && !er || y >= b.y1 && !eb {
            return None;
        }
        if keep[q] == 0 {
            region.push(q);
            if region.len() > b.limit {
                return None;
            }
        }
        for n in neighbours(x, y, w, h) {
            let passable = if keep[n] != 0 { over_marks } else { pass(q, n) };
            if passable && seen.insert(n) {
                stack.push(n);
            }
        }
    }
    (!region.is_empty()).then_some((region, seen))
}

/// Median level of the film just outside a flooded region (pixels next to it neither kept nor
/// visited).
fn film_outside(
    g: &[u8],
    w: usize,
    h: usize,
    keep: &[u8],
    region: &[usize],
    seen: &BoxFlags,
) -> Option<i32> {
    let mut film = Vec::new();
    for &q in region {
        for n in neighbours(q % w, q / w, w, h) {
            if keep[n] == 0 && !seen.contains(n) {
                film.push(g[n]);
            }
        }
    }
    let k = film.len() / 2;
    (!film.is_empty()).then(|| *film.select_nth_unstable(k).1 as i32)
}

/// A plate of one level: the flood over levels within ±[`PLATE_TOL`] of the start pixels'
/// median, closed, at least [`PLATE_CONTRAST`] from the film outside it. (region, film level).
fn level_plate(
    g: &[u8],
    w: usize,
    h: usize,
    keep: &[u8],
    start: &[usize],
    b: &FloodBounds,
) -> Option<(Vec<usize>, i32)> {
    let mut levels: Vec<u8> = start.iter().map(|&q| g[q]).collect();
    let k = levels.len() / 2;
    let level = *levels.select_nth_unstable(k).1 as i32;
    let near = |q: usize| (g[q] as i32 - level).abs() <= PLATE_TOL;
    let start: Vec<usize> = start.iter().copied().filter(|&q| near(q)).collect();
    let (region, seen) = flood(w, h, keep, &start, b, true, |_, n| near(n))?;
    let film = film_outside(g, w, h, keep, &region, &seen)?;
    ((film - level).abs() >= PLATE_CONTRAST).then_some((region, film))
}

/// A grain-free plate at any level: the flood over steps of at most [`SMOOTH_STEP`] between
/// neighbours, closed, solid (with the mark, at least 70 % of its box; a chance path through
/// film grain is thin and branching), at least the mark's size, on film whose own steps are
/// at least 3 levels and 3× the plate's. A smooth (JPEG-softened) film lets the flood out: no
/// plate. (region, film level).
fn smooth_plate(
    g: &[u8],
    w: usize,
    h: usize,
    keep: &[u8],
    mark: &Hole,
    start: &[usize],
    b: &FloodBounds,
) -> Option<(Vec<usize>, i32)> {
    let step = |a: usize, n: usize| (g[a] as i32 - g[n] as i32).abs();
    let (region, seen) = flood(w, h, keep, start, b, false, |q, n| {
        step(q, n) <= SMOOTH_STEP
    })?;
    if region.len() < mark.pixels.len() {
        return None;
    }
    let (mut x0, mut y0, mut x1, mut y1) = (mark.x0, mark.y0, mark.x1, mark.y1);
    for &q in &region {
        let (x, y) = (q % w, q / w);
        (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
    }
    let solid = region.len() + mark.pixels.len();
    if 10 * solid < 7 * (x1 - x0 + 1) * (y1 - y0 + 1) {
        return None;
    }
    // Mean step to the right neighbour: inside the plate, and over the film in a band 2 to 5
    // px outside the plate's box.
    let roughness = |pixels: &mut dyn Iterator<Item = usize>| {
        let (mut s, mut n) = (0u64, 0u64);
        for q in pixels {
            if q % w + 1 < w && keep[q] == 0 && keep[q + 1] == 0 {
                s += step(q, q + 1) as u64;
                n += 1;
            }
        }
        (n > 0).then(|| s as f32 / n as f32)
    };
    let in_region = |q: usize| q % w < b.x1 && seen.contains(q + 1);
    let inside = roughness(&mut region.iter().copied().filter(|&q| in_region(q)))?;
    let (bx0, by0) = (x0.saturating_sub(5), y0.saturating_sub(5));
    let (bx1, by1) = ((x1 + 5).min(w - 1), (y1 + 5).min(h - 1));
    let in_band = |q: usize| {
        let (x, y) = (q % w, q / w);
        x + 2 <= x0 || y + 2 <= y0 || x >= x1 + 2 || y >= y1 + 2
    };
    let mut band = (by0..=by1)
        .flat_map(|y| (bx0..=bx1).map(move |x| y * w + x))
        .filter(|&q| in_band(q));
    let outside = roughness(&mut band)?;
    if outside < 3.0 || outside < 3.0 * inside {
        return None;
    }
    let film = film_outside(g, w, h, keep, &region, &seen)?;
    Some((region, film))
}

/// Add a plate's region to the kept marks, with its outline (a dark ring drawn around a disk:
/// up to 3 px of pixels still far from the film level) and a rim.
#[allow(clippy::too_many_arguments)]
fn add_plate(
    g: &[u8],
    w: usize,
    h: usize,
    scale: f32,
    region: &[usize],
    film: i32,
    keep: &mut [u8],
    list: &mut Vec<u32>,
    done: &mut [bool],
) {
    let mut frontier = Vec::new();
    for &q in region {
        done[q] = true;
        keep[q] = 1;
        list.push(q as u32);
        frontier.push(q);
    }
    for _ in 0..(3.0 * scale).ceil() as usize {
        let mut next = Vec::new();
        for &q in &frontier {
            for n in neighbours(q % w, q / w, w, h) {
                if keep[n] == 0 && (g[n] as i32 - film).abs() >= PLATE_CONTRAST {
                    keep[n] = 1;
                    list.push(n as u32);
                    next.push(n);
                }
            }
        }
        if next.is_empty() {
            break;
        }
        frontier.extend(next);
    }
    // Two pixels per 1024 px of side: a plate's edge rings over more than one (JPEG), and a
    // left ring draws the plate's box on the filled film.
    for _ in 0..((2.0 * scale).round() as usize).max(1) {
        let mut next = Vec::new();
        for &q in &frontier {
            for n in neighbours(q % w, q / w, w, h) {
                if keep[n] == 0 {
                    keep[n] = 1;
                    list.push(n as u32);
                    next.push(n);
                }
            }
        }
        frontier = next;
    }
}

/// A set of image pixels inside one box, as a flag per box pixel: what a plate flood has
/// visited (it never leaves the mark's widened box). A hashed set cost more than the flood.
struct BoxFlags {
    x0: usize,
    y0: usize,
    bw: usize,
    w: usize,
    flags: Vec<bool>,
}

impl BoxFlags {
    fn new(x0: usize, y0: usize, x1: usize, y1: usize, w: usize) -> Self {
        let bw = x1 - x0 + 1;
        BoxFlags {
            x0,
            y0,
            bw,
            w,
            flags: vec![false; bw * (y1 - y0 + 1)],
        }
    }
    fn at(&self, q: usize) -> usize {
        (q / self.w - self.y0) * self.bw + q % self.w - self.x0
    }
    /// Adds `q`; whether it was new.
    fn insert(&mut self, q: usize) -> bool {
        let i = self.at(q);
        !std::mem::replace(&mut self.flags[i], true)
    }
    fn contains(&self, q: usize) -> bool {
        self.flags[self.at(q)]
    }
}

/// The 4-neighbours of (x, y) inside a w×h image, as indices: left, right, up, down.
pub(crate) fn neighbours(x: usize, y: usize, w: usize, h: usize) -> impl Iterator<Item = usize> {
    let p = y * w + x;
    [
        (x > 0).then(|| p - 1),
        (x + 1 < w).then(|| p + 1),
        (y > 0).then(|| p - w),
        (y + 1 < h).then(|| p + w),
    ]
    .into_iter()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hole(pixels: Vec<u32>, w: usize) -> Hole {
        let xs = pixels.iter().map(|&p| p as usize % w);
        let ys = pixels.iter().map(|&p| p as usize / w);
        Hole {
            x0: xs.clone().min().unwrap(),
            x1: xs.max().unwrap(),
            y0: ys.clone().min().unwrap(),
            y1: ys.max().unwrap(),
            pixels,
        }
    }

    #[test]
    fn strips_along_edges_are_borders_corner_glyphs_are_not() {
        let (w, h) = (100, 100);
        let strip: Vec<u32> = (0..60)
            .flat_map(|y| (0..3).map(move |x| y * 100 + x))
            .collect();
        assert!(is_border(&hole(strip, w), w, h, 1.0));
        let glyph: Vec<u32> = (0..6)
            .flat_map(|y| (94..100).map(move |x| y * 100 + x))
            .collect();
        assert!(!is_border(&hole(glyph, w), w, h, 1.0));
        // A letter the right edge cuts (4 px of it left, 10 tall) is a glyph; a 1-px line of
        // the same length there is a piece of border.
        let cut: Vec<u32> = (40..50)
            .flat_map(|y| (96..100).map(move |x| y * 100 + x))
            .collect();
        assert!(!is_border(&hole(cut, w), w, h, 1.0));
        let line: Vec<u32> = (40..50).map(|y| y * 100 + 99).collect();
        assert!(is_border(&hole(line, w), w, h, 1.0));
    }

    /// A line of small letters that touch (one thin component, like a lead) is not a wire
    /// when it holds several letter counters; a line with one loop is judged as a wire.
    #[test]
    fn merged_small_text_with_counters_is_not_a_wire() {
        let w = 200;
        // Bold 9×12 "o"s (3-px strokes) side by side, sharing their sides, at (20, 20).
        let text = |n: usize| -> Vec<u32> {
            let mut px = Vec::new();
            for y in 20..32 {
                for x in 20..20 + 6 * n + 3 {
                    let (cx, cy) = ((x - 20) % 6, y - 20);
                    if cx < 3 || cy < 3 || cy >= 9 {
                        px.push((y * w + x) as u32);
                    }
                }
            }
            px
        };
        assert!(is_glyph_not_wire(w, w, &hole(text(5), w), 1.0, 60));
        assert!(!is_glyph_not_wire(w, w, &hole(text(2), w), 1.0, 60));
    }

    /// The film ring around a letter leaves out the next letter's pixels (2 px to its right),
    /// and falls back to the whole ring when nothing else is left.
    #[test]
    fn the_film_ring_leaves_out_other_marks() {
        let w = 40;
        let mut g = vec![100u8; w * w];
        let letter: Vec<u32> = (10..20)
            .flat_map(|y| (10..16).map(move |x| (y * w + x) as u32))
            .collect();
        for y in 5..25 {
            g[y * w + 17] = 250; // the next letter's stem, on the ring's right side
        }
        let c = hole(letter, w);
        let plain = ring(&g, w, w, &c, 2);
        let film = ring_of_film(&g, w, w, &c, 2, |p| g[p] < 200);
        assert!(plain.sides[3].unwrap() > 200.0);
        assert_eq!(film.sides[3], None);
        assert_eq!(film.mean, Some(100.0));
        let all = ring_of_film(&g, w, w, &c, 2, |_| false);
        assert_eq!(all.mean, plain.mean);
    }

    /// Film grain: a deterministic ±12-level pattern.
    fn grainy(w: usize, h: usize, level: u8) -> Vec<u8> {
        let mut s = 12345u32;
        (0..w * h)
            .map(|_| {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                (level as i32 + (s >> 24) as i32 % 25 - 12) as u8
            })
            .collect()
    }

    /// A grain-free plate at the film's own level (a Hannover L on a smooth grey ramp) is added
    /// by its smoothness; the same glyph on the grainy film alone gets no plate, and neither
    /// does it on a film as smooth as the plate (nothing tells them apart).
    #[test]
    fn a_grain_free_plate_at_the_films_level_is_added() {
        let w = 100;
        let glyph = |g: &mut [u8], keep: &mut [u8], list: &mut Vec<u32>| {
            for y in 38..58 {
                for x in 44..56 {
                    if x < 48 || y >= 54 {
                        g[y * w + x] = 235; // an L, 12 × 20
                        keep[y * w + x] = 1;
                        list.push((y * w + x) as u32);
                    }
                }
            }
        };
        let run = |g: &mut Vec<u8>| {
            let (mut keep, mut list) = (vec![0u8; w * w], Vec::new());
            glyph(g, &mut keep, &mut list);
            let n = list.len();
            add_plates(g, w, w, 1.0, &mut keep, &mut list);
            (keep, list.len() - n)
        };
        let mut plated = grainy(w, w, 150);
        for y in 30..70 {
            for x in 38..62 {
                plated[y * w + x] = 138 + (x - 38) as u8; // a ramp 138..161, steps of 1
            }
        }
        let (keep, added) = run(&mut plated);
        assert!(added > 700, "plate added: {added}");
        assert_eq!(keep[32 * w + 40], 1, "plate corner");
        assert_eq!(keep[10 * w + 10], 0, "film");
        let (_, added) = run(&mut grainy(w, w, 150));
        assert_eq!(added, 0, "no plate on grainy film");
        let mut smooth: Vec<u8> = (0..w * w).map(|i| 120 + (i % w / 4) as u8).collect();
        let (_, added) = run(&mut smooth);
        assert_eq!(added, 0, "no plate on smooth film");
    }

    #[test]
    fn an_arrow_has_a_head_a_pen_does_not() {
        let w = 200;
        let mut shaft = Vec::new();
        for y in 50..54 {
            for x in 20..120 {
                shaft.push((y * w + x) as u32);
            }
        }
        let pen = hole(shaft.clone(), w);
        assert!(!has_head(w, &pen));
        let mut seed = vec![0u8; w * w];
        for &p in &pen.pixels {
            seed[p as usize] = 1;
        }
        assert!(is_wire(&seed, w, w, &pen, 1.0));
        let mut arrow = shaft;
        for x in 110..122 {
            let half = (122 - x) as i32;
            for y in 52 - half..=52 + half {
                arrow.push((y as usize * w + x) as u32);
            }
        }
        arrow.sort_unstable();
        arrow.dedup();
        let arrow = hole(arrow, w);
        assert!(has_head(w, &arrow));
        let mut seed = vec![0u8; w * w];
        for &p in &arrow.pixels {
            seed[p as usize] = 1;
        }
        assert!(!is_wire(&seed, w, w, &arrow, 1.0));
    }

    #[test]
    fn a_lone_ring_is_an_electrode_a_ring_in_a_word_is_a_letter() {
        let w = 64;
        let mut px = Vec::new();
        for y in 0..w {
            for x in 0..w {
                let d = ((x as f32 - 20.0).powi(2) + (y as f32 - 20.0).powi(2)).sqrt();
                if (6.0..9.0).contains(&d) {
                    px.push((y * w + x) as u32);
                }
            }
        }
        let c = hole(px, w);
        let me = (c.x0, c.y0, c.x1, c.y1);
        assert!(is_ring_electrode(w, &c, 1.0, &[me], 0));
        let letter = (c.x1 + 3, c.y0, c.x1 + 12, c.y1);
        assert!(!is_ring_electrode(w, &c, 1.0, &[me, letter], 0));
    }

    #[test]
    fn a_plate_closed_around_a_glyph_is_added_an_open_background_is_not() {
        let w = 80;
        // Film 120, a black disk (10) of radius 14 at (40, 40), a white bar glyph in it.
        let mut g = vec![120u8; w * w];
        let mut keep = vec![0u8; w * w];
        let mut list = Vec::new();
        for y in 0..w {
            for x in 0..w {
                let d = ((x as f32 - 40.0).powi(2) + (y as f32 - 40.0).powi(2)).sqrt();
                if d < 14.0 {
                    g[y * w + x] = 10;
                }
                if (38..42).contains(&x) && (32..48).contains(&y) {
                    g[y * w + x] = 250;
                    keep[y * w + x] = 1;
                    list.push((y * w + x) as u32);
                }
            }
        }
        let n = list.len();
        add_plates(&g, w, w, 1.0, &mut keep, &mut list);
        assert!(list.len() > n + 400, "disk added: {}", list.len() - n);
        assert_eq!(keep[40 * w + 30], 1);
        assert_eq!(keep[5 * w + 5], 0);
        // A rim of two pixels round the disk (its edge at x = 53 on this row), no more.
        assert_eq!(keep[40 * w + 55], 1, "second rim pixel");
        assert_eq!(keep[40 * w + 57], 0, "film beyond the rim");
        // The same glyph on plain film: no plate.
        let g2: Vec<u8> = g.iter().map(|&v| if v == 10 { 120 } else { v }).collect();
        let mut keep2 = vec![0u8; w * w];
        let mut list2: Vec<u32> = list[..n].to_vec();
        for &p in &list2 {
            keep2[p as usize] = 1;
        }
        add_plates(&g2, w, w, 1.0, &mut keep2, &mut list2);
        assert_eq!(list2.len(), n);
    }

    fn disk_pixels(w: usize, cx: f32, cy: f32, rx: f32, ry: f32) -> Vec<u32> {
        let mut px = Vec::new();
        for y in 0..w {
            for x in 0..w {
                let (dx, dy) = ((x as f32 - cx) / rx, (y as f32 - cy) / ry);
                if dx * dx + dy * dy <= 1.0 {
                    px.push((y * w + x) as u32);
                }
            }
        }
        px
    }

    #[test]
    fn only_what_lies_wholly_in_the_middle_is_central() {
        let w = 100;
        let mid = hole(disk_pixels(w, 50.0, 50.0, 10.0, 10.0), w);
        assert!(is_central(&mid, w, w));
        // Reaching into the outer 15 %: a line of text that starts at the margin.
        let edge = hole(disk_pixels(w, 20.0, 50.0, 8.0, 3.0), w);
        assert!(!is_central(&edge, w, w));
    }

    #[test]
    fn a_ring_around_a_letter_and_a_bold_margin_stroke_are_not_wires() {
        let w = 120;
        let ring: Vec<u32> = (0..w * w)
            .filter(|&i| {
                let (x, y) = ((i % w) as f32, (i / w) as f32);
                let d = ((x - 40.0).powi(2) + (y - 40.0).powi(2)).sqrt();
                (20.0..22.5).contains(&d)
            })
            .map(|i| i as u32)
            .collect();
        assert!(is_glyph_not_wire(w, w, &hole(ring, w), 1.0, 60));
        // A straight bar: bright and short at the margin is a glyph's stroke; faint, or in the
        // middle of the film, the wire rule judges it.
        let bar = |x0: usize, y0: usize| -> Hole {
            hole(
                (y0..y0 + 5)
                    .flat_map(|y| (x0..x0 + 60).map(move |x| (y * w + x) as u32))
                    .collect(),
                w,
            )
        };
        assert!(is_glyph_not_wire(w, w, &bar(2, 2), 1.0, 120));
        assert!(!is_glyph_not_wire(w, w, &bar(2, 2), 1.0, 70));
        assert!(!is_glyph_not_wire(w, w, &bar(30, 58), 1.0, 120));
    }

    #[test]
    fn a_flat_light_ellipse_is_a_marker_disk_a_textured_one_is_not() {
        let w = 160;
        // Film rising left to right (110..150); an ellipse 40 levels above it, flat inside.
        let film = |x: usize| 110 + (x * 40 / w) as u8;
        let mut g: Vec<u8> = (0..w * w).map(|i| film(i % w)).collect();
        let px = disk_pixels(w, 60.0, 60.0, 24.0, 20.0);
        for &p in &px {
            g[p as usize] = 200;
        }
        let c = hole(px.clone(), w);
        let level = is_marker_disk(&g, w, w, &c, 1.0).expect("a disk");
        assert!((115..150).contains(&level), "film level {level}");
        // The same ellipse with anatomy's texture inside (±20 levels) is not flat.
        let mut t = g.clone();
        for (k, &p) in px.iter().enumerate() {
            t[p as usize] = if k % 3 == 0 { 180 } else { 220 };
        }
        assert!(is_marker_disk(&t, w, w, &c, 1.0).is_none());
        // Too faint: 15 levels above the film.
        let mut f = g.clone();
        for &p in &px {
            f[p as usize] = film(p as usize % w) + 15;
        }
        assert!(is_marker_disk(&f, w, w, &c, 1.0).is_none());
        // A square is not an ellipse (it fills its box).
        let sq: Vec<u32> = (40..80)
            .flat_map(|y| (40..80).map(move |x| (y * w + x) as u32))
            .collect();
        let mut q = vec![120u8; w * w];
        for &p in &sq {
            q[p as usize] = 200;
        }
        assert!(is_marker_disk(&q, w, w, &hole(sq, w), 1.0).is_none());
    }
}
