//! Ground-truth boxes of what is burned into real films (text, markers, arrows) and of what
//! must be left alone (devices, film borders), and how well a detection mask matches them.
//!
//! Box file: CSV `image,x0,y0,x1,y1,class`, `image` relative to a root folder, x0,y0 inclusive,
//! x1,y1 exclusive (original pixel coordinates), class `text|marker|arrow|device|border|other`.
//!
//! The rule for a found mark (text, marker, arrow, other), stated in docs/inpaint.md: the film
//! level under each box pixel is interpolated (inverse-distance weights) from the four sides of
//! a band 3 px wide that starts 2 px outside the box (per row for the left and right sides, per
//! column for top and bottom, the median across the band; pixels outside the image or inside
//! the film's other mark boxes are left out, unless that leaves a box pixel no side at all); each box pixel's contrast is |grey − film level|; the mark's pixels are those with
//! contrast ≥ max(12, 0.4 × the box's 99th-percentile contrast), i.e. its bright or dark
//! strokes AND a backing plate that differs from the film (a black disk, a white label); the
//! box is found when the mask covers at least 90 % of them. A box with no contrast above 12 is
//! found when half of it is masked. Devices and borders: the share of their pixels (union of
//! boxes per film, less the pixels inside the film's mark boxes: a mark over the edge strip is
//! to be erased) the mask touches.

use crate::error::{Error, Result};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// Share of a mark's pixels the mask must cover.
pub const COVER: f64 = 0.9;
/// Contrast below which a pixel is film, whatever the box holds.
pub const MIN_CONTRAST: u8 = 12;
/// A mark pixel's contrast relative to the box's 99th percentile.
pub const REL_CONTRAST: f32 = 0.4;

/// The class of a ground-truth box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BoxClass {
    Text,
    Marker,
    Arrow,
    Device,
    Border,
    Other,
}

impl BoxClass {
    pub const ALL: [BoxClass; 6] = [
        BoxClass::Text,
        BoxClass::Marker,
        BoxClass::Arrow,
        BoxClass::Device,
        BoxClass::Border,
        BoxClass::Other,
    ];
    pub fn name(self) -> &'static str {
        match self {
            BoxClass::Text => "text",
            BoxClass::Marker => "marker",
            BoxClass::Arrow => "arrow",
            BoxClass::Device => "device",
            BoxClass::Border => "border",
            BoxClass::Other => "other",
        }
    }
    fn parse(s: &str) -> Option<BoxClass> {
        BoxClass::ALL.into_iter().find(|c| c.name() == s.trim())
    }
    /// Burned-in marks that must be erased (recall is measured on these).
    pub fn is_mark(self) -> bool {
        matches!(
            self,
            BoxClass::Text | BoxClass::Marker | BoxClass::Arrow | BoxClass::Other
        )
    }
}

/// One ground-truth box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnotBox {
    pub image: String,
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
    pub class: BoxClass,
}

/// Read a box file; a bad row is an error naming the file, its line and what is wrong.
pub fn read_boxes(path: &Path) -> Result<Vec<AnnotBox>> {
    let csv_err = |source| Error::Csv {
        path: path.to_path_buf(),
        source,
    };
    let mut rdr = csv::Reader::from_path(path).map_err(csv_err)?;
    let headers = rdr.headers().map_err(csv_err)?.clone();
    let want = ["image", "x0", "y0", "x1", "y1", "class"];
    if headers.iter().map(str::trim).collect::<Vec<_>>() != want {
        return Err(Error::bad_input(
            path,
            format!("header must be {}", want.join(",")),
        ));
    }
    let mut out = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(csv_err)?;
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        let bad = |why: String| Error::bad_input(path, format!("line {line}: {why}"));
        let num = |i: usize| -> Result<u32> {
            rec[i].trim().parse().map_err(|_| {
                bad(format!(
                    "{} {:?} is not a pixel coordinate",
                    want[i], &rec[i]
                ))
            })
        };
        let image = rec[0].trim().to_string();
        if image.is_empty() || image.starts_with('/') || image.split('/').any(|c| c == "..") {
            return Err(bad(format!(
                "image {image:?} must be a path inside the root"
            )));
        }
        let (x0, y0, x1, y1) = (num(1)?, num(2)?, num(3)?, num(4)?);
        if x1 <= x0 || y1 <= y0 {
            return Err(bad(format!("empty box {x0},{y0},{x1},{y1}")));
        }
        let class = BoxClass::parse(&rec[5]).ok_or_else(|| {
            bad(format!(
                "class {:?} is not text|marker|arrow|device|border|other",
                &rec[5]
            ))
        })?;
        out.push(AnnotBox {
            image,
            x0,
            y0,
            x1,
            y1,
            class,
        });
    }
    Ok(out)
}

/// How one film's mask matches its boxes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FilmScore {
    pub image: String,
    /// Per mark class: (found, boxes).
    pub marks: BTreeMap<BoxClass, (usize, usize)>,
    /// (device pixels touched by the mask, device pixels), over the union of device boxes.
    pub device: (u64, u64),
    /// The same for film borders.
    pub border: (u64, u64),
    /// Mask pixels in the whole film.
    pub masked: u64,
}

impl FilmScore {
    /// A film with no burned-in mark (devices and borders are not annotations).
    pub fn annotated(&self) -> bool {
        self.marks.values().any(|&(_, n)| n > 0)
    }
    /// Badness, for choosing the worst films to show: marks missed, plus the shares of device
    /// and border pixels touched, plus 1 when a film without marks got any mask.
    pub fn badness(&self) -> f64 {
        let missed: usize = self.marks.values().map(|&(f, n)| n - f).sum();
        let share = |(t, n): (u64, u64)| if n == 0 { 0.0 } else { t as f64 / n as f64 };
        let spurious = (!self.annotated() && self.masked > 0) as u8 as f64;
        missed as f64 + share(self.device) + share(self.border) + spurious
    }
}

/// Pixels of a box clipped to the image, as (x0, y0, x1, y1) exclusive; None when outside.
fn clip(b: &AnnotBox, w: usize, h: usize) -> Option<(usize, usize, usize, usize)> {
    let (x0, y0) = (b.x0 as usize, b.y0 as usize);
    let (x1, y1) = ((b.x1 as usize).min(w), (b.y1 as usize).min(h));
    (x0 < x1 && y0 < y1).then_some((x0, y0, x1, y1))
}

fn median(v: &mut [u8]) -> u8 {
    let k = v.len() / 2;
    *v.select_nth_unstable(k).1
}

/// Median of the band from 2 to 4 px outside the box on one side, for each row (left, right)
/// or column (top, bottom) of the box; None where that side is outside the image or wholly
/// inside another mark's box (`film` says which pixels may be read).
fn side_levels(
    g: &[u8],
    w: usize,
    h: usize,
    b: (usize, usize, usize, usize),
    film: &dyn Fn(usize, usize) -> bool,
) -> [Vec<Option<u8>>; 4] {
    let (x0, y0, x1, y1) = b;
    let med = |mut v: Vec<u8>| (!v.is_empty()).then(|| median(&mut v));
    let at = |x: isize, y: isize| {
        (x >= 0 && y >= 0 && (x as usize) < w && (y as usize) < h && film(x as usize, y as usize))
            .then(|| g[y as usize * w + x as usize])
    };
    let left = (y0..y1)
        .map(|y| {
            med((2..5)
                .filter_map(|d| at(x0 as isize - d, y as isize))
                .collect())
        })
        .collect();
    let right = (y0..y1)
        .map(|y| {
            med((1..4)
                .filter_map(|d| at((x1 + d) as isize, y as isize))
                .collect())
        })
        .collect();
    let top = (x0..x1)
        .map(|x| {
            med((2..5)
                .filter_map(|d| at(x as isize, y0 as isize - d))
                .collect())
        })
        .collect();
    let bottom = (x0..x1)
        .map(|x| {
            med((1..4)
                .filter_map(|d| at(x as isize, (y1 + d) as isize))
                .collect())
        })
        .collect();
    [left, right, top, bottom]
}

/// Inverse-distance mean of the side levels at box pixel (x, y) of a bw×bh box; None when no
/// side has a level there.
fn film_level(
    sides: &[Vec<Option<u8>>; 4],
    x: usize,
    y: usize,
    bw: usize,
    bh: usize,
) -> Option<f32> {
    let [left, right, top, bottom] = sides;
    let near = [
        (left[y], x as f32 + 3.0),
        (right[y], (bw - x) as f32 + 2.0),
        (top[x], y as f32 + 3.0),
        (bottom[x], (bh - y) as f32 + 2.0),
    ];
    let (mut s, mut n) = (0f32, 0f32);
    for (v, d) in near {
        if let Some(v) = v {
            s += v as f32 / d;
            n += 1.0 / d;
        }
    }
    (n > 0.0).then(|| s / n)
}

/// Whether the mask covers a mark (the rule in the module comment). `others`: the film's other
/// mark boxes, whose pixels are not read as film (a marker's L just above a text box).
pub fn mark_found(
    grey: &[u8],
    mask: &[u8],
    w: usize,
    h: usize,
    b: &AnnotBox,
    others: &[&AnnotBox],
) -> bool {
    let Some((x0, y0, x1, y1)) = clip(b, w, h) else {
        return true; // nothing of it is in the image
    };
    let inside = |o: &AnnotBox, x: usize, y: usize| {
        (o.x0 as usize..o.x1 as usize).contains(&x) && (o.y0 as usize..o.y1 as usize).contains(&y)
    };
    let film = |x: usize, y: usize| !others.iter().any(|o| inside(o, x, y));
    let sides = side_levels(grey, w, h, (x0, y0, x1, y1), &film);
    // Where every side there lies in other marks, those sides are read after all.
    let any = side_levels(grey, w, h, (x0, y0, x1, y1), &|_, _| true);
    // The film level under each box pixel, interpolated from the four sides (inverse-distance
    // weights), so a box across a film gradient does not count the gradient as the mark.
    let (bw, bh) = (x1 - x0, y1 - y0);
    let mut contrast = Vec::with_capacity(bw * bh);
    let mut whole: Vec<u8> = Vec::new();
    for y in 0..bh {
        for x in 0..bw {
            let v = grey[(y0 + y) * w + x0 + x];
            match film_level(&sides, x, y, bw, bh).or_else(|| film_level(&any, x, y, bw, bh)) {
                Some(f) => contrast.push((v as f32 - f).abs()),
                None => {
                    whole.push(v);
                    contrast.push(f32::NAN);
                }
            }
        }
    }
    if !whole.is_empty() {
        // The box covers the whole image: its median is the film.
        let m = median(&mut whole.clone()) as f32;
        for (c, v) in contrast.iter_mut().filter(|c| c.is_nan()).zip(&whole) {
            *c = (*v as f32 - m).abs();
        }
    }
    let mut sorted = contrast.clone();
    sorted.sort_by(f32::total_cmp);
    let p99 = sorted[((sorted.len() - 1) as f32 * 0.99) as usize];
    let at = |i: usize| (y0 + i / bw) * w + x0 + i % bw;
    let covered = |i: usize| mask[at(i)] != 0;
    if p99 < MIN_CONTRAST as f32 {
        let on = (0..contrast.len()).filter(|&i| covered(i)).count();
        return 2 * on >= contrast.len();
    }
    let t = (MIN_CONTRAST as f32).max(REL_CONTRAST * p99);
    let (mut n, mut on) = (0usize, 0usize);
    for (i, &c) in contrast.iter().enumerate() {
        if c >= t {
            n += 1;
            on += covered(i) as usize;
        }
    }
    on as f64 >= COVER * n as f64
}

/// (touched, total) pixels of the union of `boxes`.
fn touched<'a>(
    mask: &[u8],
    w: usize,
    h: usize,
    boxes: impl Iterator<Item = &'a AnnotBox>,
    marks: &[&AnnotBox],
) -> (u64, u64) {
    // A pixel in a mark's box is the mark's: it is to be erased, so masking it is no fault
    // (a letter printed over the film's edge strip lies in both boxes).
    let in_mark = |x: usize, y: usize| {
        marks.iter().any(|m| {
            (m.x0 as usize..m.x1 as usize).contains(&x)
                && (m.y0 as usize..m.y1 as usize).contains(&y)
        })
    };
    let mut seen = BTreeSet::new();
    let (mut t, mut n) = (0u64, 0u64);
    for b in boxes {
        let Some((x0, y0, x1, y1)) = clip(b, w, h) else {
            continue;
        };
        for y in y0..y1 {
            for x in x0..x1 {
                let p = y * w + x;
                if !in_mark(x, y) && seen.insert(p) {
                    n += 1;
                    t += (mask[p] != 0) as u64;
                }
            }
        }
    }
    (t, n)
}

/// Score one film's mask against its boxes (`grey` and `mask` are w×h).
pub fn score_film(
    image: &str,
    grey: &[u8],
    mask: &[u8],
    w: usize,
    h: usize,
    boxes: &[&AnnotBox],
) -> FilmScore {
    let mut marks = BTreeMap::new();
    let all: Vec<&AnnotBox> = boxes
        .iter()
        .copied()
        .filter(|b| b.class.is_mark())
        .collect();
    for (i, b) in all.iter().enumerate() {
        let others: Vec<&AnnotBox> = (all.iter().enumerate())
            .filter(|&(j, _)| j != i)
            .map(|(_, o)| *o)
            .collect();
        let e = marks.entry(b.class).or_insert((0, 0));
        e.1 += 1;
        e.0 += mark_found(grey, mask, w, h, b, &others) as usize;
    }
    let of = |c: BoxClass| boxes.iter().copied().filter(move |b| b.class == c);
    FilmScore {
        image: image.to_string(),
        marks,
        device: touched(mask, w, h, of(BoxClass::Device), &all),
        border: touched(mask, w, h, of(BoxClass::Border), &all),
        masked: mask.iter().filter(|&&m| m != 0).count() as u64,
    }
}

/// Every image file under `root`, as `/`-separated paths relative to it, sorted.
pub fn images_under(root: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.map_err(|e| Error::read(root, e.into()))?;
        let ext = e
            .path()
            .extension()
            .map(|x| x.to_string_lossy().to_lowercase());
        let is_image = matches!(
            ext.as_deref(),
            Some("png" | "jpg" | "jpeg" | "bmp" | "tif" | "tiff")
        );
        if e.file_type().is_file() && is_image {
            let rel = e.path().strip_prefix(root).expect("under root");
            let parts: Vec<_> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect();
            out.push(parts.join("/"));
        }
    }
    Ok(out)
}

/// Decode each film under `root`, run the detector, and score its mask; sorted by image.
/// `films`: the films to measure (paths relative to root).
pub fn measure(root: &Path, boxes: &[AnnotBox], films: &[String]) -> Result<Vec<FilmScore>> {
    let mut by_image: BTreeMap<&str, Vec<&AnnotBox>> = BTreeMap::new();
    for b in boxes {
        by_image.entry(b.image.as_str()).or_default().push(b);
    }
    let mut out: Vec<FilmScore> = films
        .par_iter()
        .map(|f| {
            let path: PathBuf = root.join(f);
            let bytes = std::fs::read(&path).map_err(|e| Error::read(&path, e))?;
            let img = super::io::decode(&path, &bytes)?;
            let info = super::stage::build_mask(&img, None, true);
            let grey = super::io::grey8(&img);
            let (w, h) = (img.width() as usize, img.height() as usize);
            let mine = by_image.get(f.as_str()).map(Vec::as_slice).unwrap_or(&[]);
            Ok(score_film(f, &grey, &info.mask, w, h, mine))
        })
        .collect::<Result<_>>()?;
    out.sort_by(|a, b| a.image.cmp(&b.image));
    Ok(out)
}

/// The measures over many films.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub films: usize,
    pub marks: BTreeMap<BoxClass, (usize, usize)>,
    pub device: (u64, u64),
    pub border: (u64, u64),
    /// (films without marks that got any mask, films without marks).
    pub unannotated_masked: (usize, usize),
}

impl Summary {
    pub fn of(scores: &[FilmScore]) -> Summary {
        let mut s = Summary {
            films: scores.len(),
            ..Summary::default()
        };
        for f in scores {
            for (c, &(found, n)) in &f.marks {
                let e = s.marks.entry(*c).or_insert((0, 0));
                e.0 += found;
                e.1 += n;
            }
            s.device.0 += f.device.0;
            s.device.1 += f.device.1;
            s.border.0 += f.border.0;
            s.border.1 += f.border.1;
            if !f.annotated() {
                s.unannotated_masked.1 += 1;
                s.unannotated_masked.0 += (f.masked > 0) as usize;
            }
        }
        s
    }
    /// Recall of a mark class (None without boxes of it).
    pub fn recall(&self, c: BoxClass) -> Option<f64> {
        self.marks
            .get(&c)
            .filter(|(_, n)| *n > 0)
            .map(|&(f, n)| f as f64 / n as f64)
    }
    pub fn device_touched(&self) -> Option<f64> {
        ratio(self.device.0, self.device.1)
    }
    pub fn border_touched(&self) -> Option<f64> {
        ratio(self.border.0, self.border.1)
    }
    pub fn unannotated_masked_share(&self) -> Option<f64> {
        ratio(
            self.unannotated_masked.0 as u64,
            self.unannotated_masked.1 as u64,
        )
    }
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// Targets of issue #12: (measure, target, higher is better).
pub const TARGETS: &[(&str, f64, bool)] = &[
    ("recall text", 0.95, true),
    ("recall marker", 0.95, true),
    ("recall arrow", 0.90, true),
    ("device pixels touched", 0.02, false),
    ("border pixels touched", 0.05, false),
    ("no-annotation films masked", 0.05, false),
];

impl Summary {
    /// (name, value, target, higher is better) for each measure with data.
    pub fn rows(&self) -> Vec<(&'static str, Option<f64>, f64, bool)> {
        let vals = [
            self.recall(BoxClass::Text),
            self.recall(BoxClass::Marker),
            self.recall(BoxClass::Arrow),
            self.device_touched(),
            self.border_touched(),
            self.unannotated_masked_share(),
        ];
        TARGETS
            .iter()
            .zip(vals)
            .map(|(&(n, t, up), v)| (n, v, t, up))
            .collect()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "films measured: {}", self.films)?;
        writeln!(f, "| measure | value | count | target | met |")?;
        writeln!(f, "|---|---|---|---|---|")?;
        let counts = [
            self.marks.get(&BoxClass::Text).copied().unwrap_or_default(),
            self.marks
                .get(&BoxClass::Marker)
                .copied()
                .unwrap_or_default(),
            self.marks
                .get(&BoxClass::Arrow)
                .copied()
                .unwrap_or_default(),
        ];
        for (i, (name, v, t, up)) in self.rows().into_iter().enumerate() {
            let count = match i {
                0..=2 => format!("{}/{} boxes", counts[i].0, counts[i].1),
                3 => format!("{}/{} px", self.device.0, self.device.1),
                4 => format!("{}/{} px", self.border.0, self.border.1),
                _ => format!(
                    "{}/{} films",
                    self.unannotated_masked.0, self.unannotated_masked.1
                ),
            };
            let (val, met) = match v {
                Some(v) => {
                    let ok = if up { v >= t } else { v <= t };
                    (format!("{v:.3}"), if ok { "yes" } else { "NO" })
                }
                None => ("-".into(), "-"),
            };
            let cmp = if up { "≥" } else { "≤" };
            writeln!(f, "| {name} | {val} | {count} | {cmp} {t} | {met} |")?;
        }
        if let Some(r) = self.recall(BoxClass::Other) {
            let (a, n) = self.marks[&BoxClass::Other];
            writeln!(f, "(other marks: recall {r:.3}, {a}/{n} boxes; no target)")?;
        }
        Ok(())
    }
}

/// A checked `prep inpaint --annotations CSV --root DIR` invocation.
#[derive(Debug, Clone)]
pub struct MeasureConfig {
    pub annotations: PathBuf,
    pub root: PathBuf,
    /// Only these films (one path relative to root a line); else every image under root.
    pub films: Option<PathBuf>,
    /// How many of the worst films to list.
    pub worst: usize,
}

/// Read the box file and film list, measure, and return the printed summary: the table of
/// measures, then the worst films when asked.
pub fn run(cfg: &MeasureConfig) -> Result<String> {
    let boxes = read_boxes(&cfg.annotations)?;
    let films = match &cfg.films {
        Some(list) => {
            let text = std::fs::read_to_string(list).map_err(|e| Error::read(list, e))?;
            let set: BTreeSet<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect();
            set.into_iter().collect()
        }
        None => images_under(&cfg.root)?,
    };
    // A box naming a film that is not measured is a typo or a missing file: say so.
    let known: BTreeSet<&str> = films.iter().map(String::as_str).collect();
    let boxes: Vec<AnnotBox> = if cfg.films.is_some() {
        boxes
            .into_iter()
            .filter(|b| known.contains(b.image.as_str()))
            .collect()
    } else {
        if let Some(b) = boxes.iter().find(|b| !known.contains(b.image.as_str())) {
            return Err(Error::bad_input(
                &cfg.annotations,
                format!(
                    "box for {:?}, which is not an image under the root",
                    b.image
                ),
            ));
        }
        boxes
    };
    let scores = measure(&cfg.root, &boxes, &films)?;
    let mut out = Summary::of(&scores).to_string();
    if cfg.worst > 0 {
        out.push_str(&format!(
            "\nworst {} film(s):\n",
            cfg.worst.min(scores.len())
        ));
        for f in worst(&scores, cfg.worst) {
            out.push_str(&format!("{}\n", describe(f)));
        }
    }
    Ok(out)
}

/// The `n` worst films by [`FilmScore::badness`], worst first (ties by image path).
pub fn worst(scores: &[FilmScore], n: usize) -> Vec<&FilmScore> {
    let mut v: Vec<&FilmScore> = scores.iter().filter(|f| f.badness() > 0.0).collect();
    v.sort_by(|a, b| {
        b.badness()
            .total_cmp(&a.badness())
            .then_with(|| a.image.cmp(&b.image))
    });
    v.truncate(n);
    v
}

/// One line about a film: its badness and what makes it.
pub fn describe(f: &FilmScore) -> String {
    let marks: Vec<String> = f
        .marks
        .iter()
        .map(|(c, (found, n))| format!("{} {found}/{n}", c.name()))
        .collect();
    let pct = |(t, n): (u64, u64)| {
        if n == 0 {
            "-".to_string()
        } else {
            format!("{:.1}%", 100.0 * t as f64 / n as f64)
        }
    };
    format!(
        "{:.2}  {}  found: {}; device px masked {}; border px masked {}; mask {} px",
        f.badness(),
        f.image,
        if marks.is_empty() {
            "no marks".to_string()
        } else {
            marks.join(", ")
        },
        pct(f.device),
        pct(f.border),
        f.masked
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bx(class: BoxClass, x0: u32, y0: u32, x1: u32, y1: u32) -> AnnotBox {
        AnnotBox {
            image: "a.png".into(),
            x0,
            y0,
            x1,
            y1,
            class,
        }
    }

    /// A white L on a black disk on mid-grey film: the mark is the glyph AND the disk, so a
    /// mask of the glyph alone does not find it.
    #[test]
    fn a_marker_needs_its_plate() {
        let (w, h) = (64, 64);
        let mut g = vec![120u8; w * h];
        let mut glyph = vec![0u8; w * h];
        let mut plate = vec![0u8; w * h];
        for y in 0..h {
            for x in 0..w {
                let d = ((x as f32 - 32.0).powi(2) + (y as f32 - 32.0).powi(2)).sqrt();
                if d < 12.0 {
                    g[y * w + x] = 10;
                    plate[y * w + x] = 255;
                }
                if (27..30).contains(&x) && (25..40).contains(&y)
                    || (27..37).contains(&x) && (37..40).contains(&y)
                {
                    g[y * w + x] = 250;
                    glyph[y * w + x] = 255;
                }
            }
        }
        let b = bx(BoxClass::Marker, 19, 19, 46, 46);
        assert!(!mark_found(&g, &glyph, w, h, &b, &[]));
        assert!(mark_found(&g, &plate, w, h, &b, &[]));
        assert!(!mark_found(&g, &vec![0; w * h], w, h, &b, &[]));
        let s = score_film("a.png", &g, &glyph, w, h, &[&b]);
        assert_eq!(s.marks[&BoxClass::Marker], (0, 1));
        assert!(s.annotated());
    }

    /// A text box drawn tight under a marker's white bar: the bar is not the film around the
    /// text, so the dark film between bar and text is not counted as the text's plate.
    #[test]
    fn another_marks_pixels_are_not_film() {
        let (w, h) = (64, 64);
        let mut g = vec![60u8; w * h];
        let mut mask = vec![0u8; w * h];
        for y in 0..h {
            for x in 0..w {
                let bar = (10..50).contains(&x) && (10..20).contains(&y);
                let glyph = (25..30).contains(&x) && (30..40).contains(&y);
                if bar || glyph {
                    g[y * w + x] = 240;
                }
                if glyph {
                    mask[y * w + x] = 255;
                }
            }
        }
        let marker = bx(BoxClass::Marker, 10, 10, 50, 20);
        let text = bx(BoxClass::Text, 15, 21, 45, 45);
        assert!(!mark_found(&g, &mask, w, h, &text, &[]));
        assert!(mark_found(&g, &mask, w, h, &text, &[&marker]));
        // The text alone is found; the marker, unmasked, is not.
        let s = score_film("a.png", &g, &mask, w, h, &[&marker, &text]);
        assert_eq!(s.marks[&BoxClass::Text], (1, 1));
        assert_eq!(s.marks[&BoxClass::Marker], (0, 1));
    }

    /// A letter printed over the film's edge strip lies in its text box and the border box:
    /// those pixels are the mark's, left out of the border's count.
    #[test]
    fn a_border_leaves_out_the_pixels_of_mark_boxes_over_it() {
        let (w, h) = (20, 20);
        let g = vec![100u8; w * h];
        let mut mask = vec![0u8; w * h];
        mask[5 * w + 15..5 * w + 20].fill(255); // row 5, x 15..20
        let border = bx(BoxClass::Border, 15, 0, 20, 20);
        let text = bx(BoxClass::Text, 10, 4, 18, 7);
        assert_eq!(
            score_film("a.png", &g, &mask, w, h, &[&border]).border,
            (5, 100)
        );
        let s = score_film("a.png", &g, &mask, w, h, &[&border, &text]);
        assert_eq!(s.border, (2, 91), "x 18, 19 of row 5 outside the text box");
    }

    #[test]
    fn devices_and_borders_count_touched_pixels_once() {
        let (w, h) = (20, 20);
        let g = vec![100u8; w * h];
        let mut mask = vec![0u8; w * h];
        mask[5 * w..6 * w].fill(255); // row 5
        let d1 = bx(BoxClass::Device, 0, 0, 10, 10);
        let d2 = bx(BoxClass::Device, 5, 0, 10, 10); // inside d1: counted once
        let e = bx(BoxClass::Border, 0, 18, 20, 25); // clipped at the bottom
        let s = score_film("a.png", &g, &mask, w, h, &[&d1, &d2, &e]);
        assert_eq!(s.device, (10, 100));
        assert_eq!(s.border, (0, 40));
        assert!(!s.annotated());
        let sum = Summary::of(&[s]);
        assert_eq!(sum.unannotated_masked, (1, 1));
        assert_eq!(sum.device_touched(), Some(0.1));
    }

    #[test]
    fn bad_rows_name_the_line() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("b.csv");
        std::fs::write(
            &p,
            "image,x0,y0,x1,y1,class\na.png,1,2,3,4,text\na.png,5,5,5,9,text\n",
        )
        .unwrap();
        let e = read_boxes(&p).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("empty box"), "{e}");
        std::fs::write(&p, "image,x0,y0,x1,y1,class\n../a.png,1,2,3,4,text\n").unwrap();
        assert!(read_boxes(&p).is_err());
        std::fs::write(&p, "image,x0,y0,x1,y1,class\na.png,1,2,3,4,logo\n").unwrap();
        assert!(read_boxes(&p).unwrap_err().to_string().contains("logo"));
        std::fs::write(&p, "image,x0,y0,x1,y1,class\nb/a.png,1,2,3,4,arrow\n").unwrap();
        assert_eq!(read_boxes(&p).unwrap()[0].class, BoxClass::Arrow);
    }
}
