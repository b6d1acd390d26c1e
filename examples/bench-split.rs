//! Near-duplicate search at scale, for scripts/bench-split.sh (which builds and runs this).
//!
//!   bench-split search --images N [--work DIR] [--bases DIR] [--gate G]
//!       N synthetic fingerprints written to a cache file, then timed: reading the cache,
//!       the multi-index candidate search, pixel verification of the candidates (`--gate -1`:
//!       every candidate verified fully, as before the gate).
//!   bench-split real DIR
//!       fingerprints of every image under DIR (real films), the index's candidates checked
//!       against brute force, full verification against gated, the matches found; then every
//!       film beside an altered copy (re-crop, rescale, gamma, marker, JPEG): the gate must stop
//!       none that full verification matches. Exits 1 on any difference.
//!   bench-split bag --images N --table NIH.csv --out BAG [--bases DIR]
//!       a prep bag shaped like ChestX-ray14 (N records with the real table's patient ids and
//!       follow-ups, 256-px PNG stand-ins, a fingerprint cache) for timing a whole `prep split`.
//!
//! Synthetic fingerprints: each is a real film's fingerprint (from --bases, else synthetic
//! pictures) with every hash XOR-ed with a per-image random mask of 16 bits and 0-2 bits of
//! per-window noise, and its thumbnail overlaid with per-image noise; so the hashes keep the
//! structure of real ones (biased bits, neighbouring windows alike) while images differ. Every
//! 50th image is a planted copy of the one before it (same mask and thumbnail; its probe hash is
//! the original's window over the probe region ± 2 bits, as a re-encoded copy's would be), which
//! the search must find.

use prep::split::fingerprints::{self, CacheFile, Cached};
use prep::split::index;
use prep::split::phash::{self, Fingerprint, Hashes, NearDupParams, Thumbs};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn images_under(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().to_lowercase();
            n.ends_with(".png") || n.ends_with(".jpg") || n.ends_with(".jpeg")
        })
        .map(|e| e.path().to_path_buf())
        .collect();
    v.sort();
    v
}

/// Base fingerprints with a 160×160 thumbnail (what a 256-px or 1024-px square film gives).
fn bases(dir: Option<&str>) -> Vec<Fingerprint> {
    let mut out: Vec<Fingerprint> = match dir {
        Some(d) => images_under(Path::new(d))
            .par_iter()
            .filter_map(|f| image::open(f).ok().map(|i| Fingerprint::new(&i)))
            .filter(|f| (f.hashes.w, f.hashes.h) == (160, 160))
            .collect(),
        None => Vec::new(),
    };
    if out.is_empty() {
        eprintln!("no real 160x160 bases: synthetic pictures instead");
        out = (0..64u32)
            .into_par_iter()
            .map(|k| {
                let mut rng = ChaCha8Rng::seed_from_u64(k as u64);
                let blobs: Vec<(f32, f32, f32, f32)> = (0..12)
                    .map(|_| {
                        (
                            rng.gen(),
                            rng.gen(),
                            0.05 + rng.gen::<f32>() * 0.2,
                            rng.gen_range(-100.0..100.0),
                        )
                    })
                    .collect();
                let img = image::GrayImage::from_fn(256, 256, |x, y| {
                    let (u, v) = (x as f32 / 256.0, y as f32 / 256.0);
                    let mut val = 128.0;
                    for (bx, by, r, a) in &blobs {
                        val += a * (-((u - bx).powi(2) + (v - by).powi(2)) / (r * r)).exp();
                    }
                    image::Luma([val.clamp(0.0, 255.0) as u8])
                });
                Fingerprint::new(&image::DynamicImage::ImageLuma8(img))
            })
            .collect();
    }
    eprintln!("{} base fingerprints", out.len());
    out
}

fn flips(rng: &mut ChaCha8Rng, n: u32) -> u64 {
    let mut m = 0u64;
    while m.count_ones() < n {
        m |= 1 << rng.gen_range(1..64);
    }
    m
}

/// Synthetic fingerprint i (planted copies: i % 50 == 49 copies i - 1).
fn synthetic(bases: &[Fingerprint], i: usize) -> Fingerprint {
    let orig = if i % 50 == 49 { i - 1 } else { i };
    let mut rng = ChaCha8Rng::seed_from_u64(orig as u64);
    let base = &bases[orig % bases.len()];
    let mask = flips(&mut rng, 16);
    let mut noise = ChaCha8Rng::seed_from_u64(i as u64 ^ 0x5eed);
    let planted = orig != i;
    let mut jitter = |h: u64| {
        let k = if planted { 0 } else { noise.gen_range(0..=2) };
        h ^ mask ^ if k > 0 { flips(&mut noise, k) } else { 0 }
    };
    let mut hashes = Hashes {
        w: base.hashes.w,
        h: base.hashes.h,
        probe: jitter(base.hashes.probe),
        windows: base.hashes.windows.iter().map(|&h| jitter(h)).collect(),
    };
    if planted {
        // A re-encoded copy: its probe hash is the original's hash of the window over the
        // probe region, give or take 2 bits.
        let j = phash::window_over_probe(hashes.w, hashes.h);
        hashes.probe = hashes.windows[j] ^ flips(&mut noise, 2);
    }
    // Per-image texture on 4-px cells: different images differ in the detail verification
    // looks at; a planted copy has its original's.
    let w = base.hashes.w;
    let cells: Vec<i16> = (0..(w / 4 + 1) * (base.hashes.h / 4 + 1))
        .map(|_| rng.gen_range(-40..=40))
        .collect();
    let thumb = base
        .thumb
        .iter()
        .enumerate()
        .map(|(k, &v)| {
            let (x, y) = (k % w, k / w);
            (v as i16 + cells[(y / 4) * (w / 4 + 1) + x / 4]).clamp(0, 255) as u8
        })
        .collect();
    Fingerprint { hashes, thumb }
}

fn synthetic_sha(i: usize) -> String {
    prep::manifest::hash_bytes(format!("synthetic image {i}").as_bytes())
}

/// Write fingerprints for `shas[i]` = synthetic(i) to `path`, in chunks, in parallel.
fn write_cache(path: &Path, bases: &[Fingerprint], shas: &[String]) {
    let mut w = fingerprints::FileWriter::create(path, shas.len() as u64).unwrap();
    for chunk in (0..shas.len()).collect::<Vec<_>>().chunks(4096) {
        let bytes: Vec<Vec<u8>> = chunk
            .par_iter()
            .map(|&i| fingerprints::entry_bytes(&shas[i], &synthetic(bases, i)))
            .collect();
        for b in bytes {
            w.raw(&b).unwrap();
        }
    }
    w.finish().unwrap();
}

struct CacheThumbs<'a> {
    file: &'a CacheFile,
    entries: Vec<&'a Cached>,
}

impl Thumbs for CacheThumbs<'_> {
    fn thumb(&self, i: usize) -> prep::Result<Cow<'_, [u8]>> {
        Ok(Cow::Owned(self.file.thumb(self.entries[i])?))
    }
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn search(args: &[String]) {
    let n: usize = arg(args, "--images").expect("--images N").parse().unwrap();
    let work = PathBuf::from(arg(args, "--work").unwrap_or_else(|| "/tmp/prep-bench-split".into()));
    let bag = work.join(format!("synthetic-{n}"));
    std::fs::create_dir_all(bag.join("data")).unwrap();
    let path = bag.join("data").join(fingerprints::FILE);
    let shas: Vec<String> = (0..n).map(synthetic_sha).collect();
    let t = Instant::now();
    let b = bases(arg(args, "--bases").as_deref());
    write_cache(&path, &b, &shas);
    let size = std::fs::metadata(&path).unwrap().len();
    println!(
        "generate:       {n} synthetic fingerprints, {:.0} MB cache, {:.1} s (not part of the search)",
        size as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    drop(b);
    let t0 = Instant::now();
    let file = CacheFile::open(&bag).unwrap().unwrap().unwrap();
    let entries: Vec<&Cached> = shas
        .iter()
        .map(|s| file.get(s, 160, 160).expect("entry"))
        .collect();
    let t_read = t0.elapsed().as_secs_f64();
    let hashes: Vec<Option<&Hashes>> = entries.iter().map(|e| Some(&e.hashes)).collect();
    let mut p = NearDupParams::default();
    if let Some(g) = arg(args, "--gate") {
        p.gate_correlation = g.parse().expect("--gate G");
    }
    let t1 = Instant::now();
    let pairs = index::candidate_pairs(&hashes, p.max_hamming);
    let t_cand = t1.elapsed().as_secs_f64();
    let n_pairs = pairs.len();
    let t2 = Instant::now();
    let thumbs = CacheThumbs {
        file: &file,
        entries: entries.clone(),
    };
    let matches = phash::verify_candidates(&hashes, &thumbs, pairs, p).unwrap();
    let t_verify = t2.elapsed().as_secs_f64();
    let planted = (0..n).filter(|i| i % 50 == 49).count();
    let found = matches
        .iter()
        .filter(|m| m.b == m.a + 1 && m.b % 50 == 49)
        .count();
    println!("read cache:     {t_read:8.2} s");
    println!("candidates:     {t_cand:8.2} s  ({n_pairs} candidate pairs)");
    println!(
        "verify:         {t_verify:8.2} s  ({} matches; planted copies found {found} of {planted})",
        matches.len()
    );
    println!("peak RSS:       {:8.0} MB", rss_mb());
    println!(
        "near-duplicate search: {n} images in {:.2} s",
        t_read + t_cand + t_verify
    );
    std::fs::remove_dir_all(&bag).ok();
}

/// A re-crop, rescale, gamma change, burned-in marker and JPEG re-encode of `img`, seeded by
/// `k`: what journals and collections do to a film they republish.
fn altered(img: &image::DynamicImage, k: u64) -> image::DynamicImage {
    let mut rng = ChaCha8Rng::seed_from_u64(k ^ 0xa17e);
    let g = img.to_luma8();
    let (w, h) = g.dimensions();
    let cut = |rng: &mut ChaCha8Rng, n: u32| (n as f32 * rng.gen_range(0.0..0.12)) as u32;
    let (l, t, r, b) = (
        cut(&mut rng, w),
        cut(&mut rng, h),
        cut(&mut rng, w),
        cut(&mut rng, h),
    );
    let crop = image::imageops::crop_imm(&g, l, t, w - l - r, h - t - b).to_image();
    let s = rng.gen_range(0.5..1.2f32);
    let (cw, ch) = crop.dimensions();
    let mut out = image::imageops::resize(
        &crop,
        ((cw as f32 * s) as u32).max(64),
        ((ch as f32 * s) as u32).max(64),
        image::imageops::FilterType::Triangle,
    );
    let gamma = rng.gen_range(0.7..1.4f32);
    for px in out.pixels_mut() {
        px[0] = (255.0 * (px[0] as f32 / 255.0).powf(gamma)) as u8;
    }
    // A burned-in marker: a white bar in a corner, as annotation arrows and letters are.
    let (ow, oh) = out.dimensions();
    for y in oh / 12..oh / 12 + oh / 40 + 1 {
        for x in ow / 14..ow / 14 + ow / 6 {
            out.put_pixel(x.min(ow - 1), y.min(oh - 1), image::Luma([255]));
        }
    }
    let mut jpg = Vec::new();
    let q = rng.gen_range(60..90u8);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpg, q)
        .encode_image(&out)
        .unwrap();
    image::load_from_memory(&jpg).unwrap()
}

/// Scores of every hit of the candidate pairs, fully verified (no gate): (pair, hamming, scores).
fn full_scores(
    hashes: &[Option<&Hashes>],
    fps: &[Option<Fingerprint>],
    pairs: &[index::Candidate],
) -> Vec<(usize, u32, phash::Scores)> {
    pairs
        .par_iter()
        .enumerate()
        .flat_map_iter(|(k, c)| {
            let (a, b) = (fps[c.a].as_ref().unwrap(), fps[c.b].as_ref().unwrap());
            phash::hit_scores(
                (hashes[c.a].unwrap(), &a.thumb),
                (hashes[c.b].unwrap(), &b.thumb),
                c.ab.clone(),
                c.ba.clone(),
                -2.0,
            )
            .into_iter()
            .map(move |(d, s)| (k, d, s))
        })
        .collect()
}

/// Pairs (a, b) whose best full score reaches the threshold.
fn matched_pairs(
    pairs: &[index::Candidate],
    scores: &[(usize, u32, phash::Scores)],
    min: f32,
) -> Vec<(usize, usize)> {
    let mut best = vec![f32::MIN; pairs.len()];
    for &(k, _, s) in scores {
        best[k] = best[k].max(s.fin);
    }
    (0..pairs.len())
        .filter(|&k| best[k] >= min)
        .map(|k| (pairs[k].a, pairs[k].b))
        .collect()
}

/// Gate statistics over fully verified hits: the smallest coarse correlation of a hit whose
/// final score reaches `min`, and how many hits the gate would stop.
fn gate_report(name: &str, scores: &[(usize, u32, phash::Scores)], p: NearDupParams) {
    let same: Vec<f32> = scores
        .iter()
        .filter(|x| x.2.fin >= p.min_correlation)
        .map(|x| x.2.coarse)
        .collect();
    let stopped = scores
        .iter()
        .filter(|x| x.2.coarse < p.gate_correlation)
        .count();
    let mut other: Vec<f32> = scores
        .iter()
        .filter(|x| x.2.fin < p.min_correlation)
        .map(|x| x.2.coarse)
        .collect();
    other.sort_by(f32::total_cmp);
    let q = |f: f64| {
        other
            .get(((other.len() as f64 - 1.0) * f) as usize)
            .copied()
            .unwrap_or(f32::NAN)
    };
    println!(
        "gate ({name}):  coarse correlation of the {} hits below {}: quartiles {:.3} {:.3} {:.3}, 90 % {:.3}, max {:.3}",
        other.len(),
        p.min_correlation,
        q(0.25),
        q(0.5),
        q(0.75),
        q(0.9),
        q(1.0)
    );
    let lift = scores
        .iter()
        .map(|x| x.2.fin - x.2.coarse)
        .fold(f32::MIN, f32::max);
    println!(
        "gate ({name}):  {} hits; {} reach {} finally, their coarse correlation >= {:.3}; the gate at {} stops {} hits ({:.1} %); largest lift coarse -> final {:.3}",
        scores.len(),
        same.len(),
        p.min_correlation,
        same.iter().copied().fold(f32::MAX, f32::min),
        p.gate_correlation,
        stopped,
        100.0 * stopped as f64 / scores.len().max(1) as f64,
        lift
    );
}

fn real(args: &[String]) {
    let dir = args.get(1).expect("real DIR");
    let files = images_under(Path::new(dir));
    let t = Instant::now();
    let imgs: Vec<Option<image::DynamicImage>> =
        files.par_iter().map(|f| image::open(f).ok()).collect();
    let fps: Vec<Option<Fingerprint>> = imgs
        .par_iter()
        .map(|i| i.as_ref().map(Fingerprint::new))
        .collect();
    let t_fp = t.elapsed().as_secs_f64();
    let hashes: Vec<Option<&Hashes>> = fps.iter().map(|f| f.as_ref().map(|f| &f.hashes)).collect();
    let p = NearDupParams::default();
    let t = Instant::now();
    let fast = index::candidate_pairs(&hashes, p.max_hamming);
    let t_idx = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let slow = index::candidate_pairs_brute(&hashes, p.max_hamming);
    let t_brute = t.elapsed().as_secs_f64();
    let key = |c: &index::Candidate| (c.a, c.b);
    let same = fast.iter().map(key).eq(slow.iter().map(key));
    let t = Instant::now();
    let full = full_scores(&hashes, &fps, &fast);
    let t_full = t.elapsed().as_secs_f64();
    let want = matched_pairs(&fast, &full, p.min_correlation);
    let t = Instant::now();
    let matches = phash::find_matches(&fps, p);
    let t_all = t.elapsed().as_secs_f64();
    let got: Vec<(usize, usize)> = matches.iter().map(|m| (m.a, m.b)).collect();
    let n_pairs = files.len() * files.len().saturating_sub(1) / 2;
    println!("real films:     {} files under {dir}", files.len());
    println!("fingerprints:   {t_fp:8.2} s (decode + hash)");
    println!(
        "candidates:     {t_idx:8.3} s index, {t_brute:8.3} s brute force: {} pairs of {n_pairs} ({:.2} %), {}",
        fast.len(),
        100.0 * fast.len() as f64 / n_pairs.max(1) as f64,
        if same { "identical" } else { "DIFFERENT" }
    );
    println!(
        "verify, full:   {t_full:8.3} s, {} hits verified, {} matches",
        full.len(),
        want.len()
    );
    println!(
        "search+verify:  {t_all:8.3} s (index + gated verification), {} matches: {} full verification's",
        matches.len(),
        if got == want { "the same as" } else { "DIFFERENT FROM" }
    );
    gate_report("real pairs", &full, p);
    for m in &matches {
        let n = |k: usize| {
            files[k]
                .strip_prefix(dir)
                .unwrap_or(&files[k])
                .display()
                .to_string()
        };
        println!(
            "  {} ~ {} ({} bits, r {:.3})",
            n(m.a),
            n(m.b),
            m.hamming,
            m.correlation
        );
    }
    // Every film beside an altered copy of itself: pairs the gate must not stop.
    let copies: Vec<Option<Fingerprint>> = imgs
        .par_iter()
        .enumerate()
        .map(|(k, i)| i.as_ref().map(|i| Fingerprint::new(&altered(i, k as u64))))
        .collect();
    let mut both: Vec<Option<Fingerprint>> = Vec::new();
    let mut cands = Vec::new();
    for (f, c) in fps.iter().zip(&copies) {
        let (Some(f), Some(c)) = (f, c) else { continue };
        let (ab, ba) = (
            phash::probe_hits(&f.hashes, &c.hashes, p.max_hamming),
            phash::probe_hits(&c.hashes, &f.hashes, p.max_hamming),
        );
        let n = both.len();
        both.push(Some(f.clone()));
        both.push(Some(c.clone()));
        if !ab.is_empty() || !ba.is_empty() {
            cands.push(index::Candidate {
                a: n,
                b: n + 1,
                ab,
                ba,
            });
        }
    }
    let hb: Vec<Option<&Hashes>> = both.iter().map(|f| f.as_ref().map(|f| &f.hashes)).collect();
    let full_c = full_scores(&hb, &both, &cands);
    let want_c = matched_pairs(&cands, &full_c, p.min_correlation);
    let got_c: Vec<(usize, usize)> = phash::verify_candidates(&hb, &both[..], cands.clone(), p)
        .unwrap()
        .iter()
        .map(|m| (m.a, m.b))
        .collect();
    println!(
        "altered copies: {} films re-cropped, rescaled, gamma-changed, marked, JPEG re-encoded: {} candidates, {} matched fully verified, {} gated ({})",
        both.len() / 2,
        cands.len(),
        want_c.len(),
        got_c.len(),
        if got_c == want_c { "the same" } else { "DIFFERENT" }
    );
    gate_report("altered copies", &full_c, p);
    if !same || got != want || got_c != want_c {
        std::process::exit(1);
    }
}

/// A ChestX-ray14-shaped bag: records from the real table (ids, patients, follow-ups, labels),
/// 256-px PNG stand-ins (flat grey with the row number stamped in: only their bytes matter to
/// the phases this times once fingerprints are cached), synthetic fingerprints keyed by the
/// stand-ins' sha256.
fn bag(args: &[String]) {
    use prep::manifest::{write_csv, BagWriter, CroissantSpec, Record, StageInfo, RECORD_COLUMNS};
    let n: usize = arg(args, "--images").expect("--images N").parse().unwrap();
    let table = arg(args, "--table").expect("--table Data_Entry_2017.csv");
    let out = PathBuf::from(arg(args, "--out").expect("--out BAG"));
    let mut rdr = csv::Reader::from_path(&table).unwrap();
    let rows: Vec<csv::StringRecord> = rdr.records().take(n).map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), n, "the table has fewer than {n} rows");
    let writer = BagWriter::create(&out, true).unwrap();
    let records: Vec<Record> = rows
        .par_iter()
        .enumerate()
        .map(|(i, row)| {
            let id = row[0].trim_end_matches(".png").to_string();
            let mut img = image::GrayImage::from_pixel(256, 256, image::Luma([100]));
            for (k, b) in (i as u64).to_le_bytes().iter().enumerate() {
                img.put_pixel(k as u32, 0, image::Luma([*b]));
            }
            let mut png = Vec::new();
            image::DynamicImage::ImageLuma8(img)
                .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                .unwrap();
            let sha = writer
                .write_payload(&format!("images/{id}.png"), &png)
                .unwrap();
            let finding = row[1].to_string();
            Record {
                id: id.clone(),
                path: format!("data/images/{id}.png"),
                sha256: sha,
                bytes: png.len() as u64,
                width: 256,
                height: 256,
                source: "nih".into(),
                patient_id: row[3].to_string(),
                view: row[6].to_string(),
                label: if finding == "No Finding" {
                    "healthy"
                } else {
                    "diseased"
                }
                .into(),
                finding,
                source_file: format!("images/{}", &row[0]),
                source_row: (i + 2).to_string(),
            }
        })
        .collect();
    let shas: Vec<String> = records.iter().map(|r| r.sha256.clone()).collect();
    let b = bases(arg(args, "--bases").as_deref());
    write_cache(&writer.staged_path(fingerprints::FILE), &b, &shas);
    writer
        .write_payload("records.csv", &write_csv(&records, RECORD_COLUMNS).unwrap())
        .unwrap();
    writer
        .write_payload("excluded.csv", b"source_row,file,reason,detail\n")
        .unwrap();
    writer
        .write_payload("provenance.json", b"{\"stage\": \"bench-split bag\"}\n")
        .unwrap();
    let info = StageInfo {
        name: "bench-split".into(),
        description: format!("{n} ChestX-ray14-shaped stand-ins for the split benchmark"),
        croissant: CroissantSpec {
            license: "synthetic".into(),
            url: String::new(),
            cite_as: String::new(),
            table: "data/records.csv".into(),
            columns: Vec::new(),
            image_globs: vec![("data/images/*.png".into(), "image/png".into())],
        },
    };
    let done = writer.finish(info).unwrap();
    println!("bag: {} ({} records)", done.path.display(), n);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("search") => search(&args),
        Some("real") => real(&args),
        Some("bag") => bag(&args),
        _ => {
            eprintln!("usage: bench-split search --images N | real DIR | bag --images N --table CSV --out BAG");
            std::process::exit(2);
        }
    }
}
