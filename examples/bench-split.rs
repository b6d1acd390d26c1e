//! Near-duplicate search at scale, for scripts/bench-split.sh (which builds and runs this).
//!
//!   bench-split search --images N [--work DIR] [--bases DIR]
//!       N synthetic fingerprints written to a cache file, then timed: reading the cache,
//!       the multi-index candidate search, pixel verification of the candidates.
//!   bench-split real DIR
//!       fingerprints of every image under DIR (real films), the index's candidates checked
//!       against brute force, the matches found.
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
    let p = NearDupParams::default();
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

fn real(args: &[String]) {
    let dir = args.get(1).expect("real DIR");
    let files = images_under(Path::new(dir));
    let t = Instant::now();
    let fps: Vec<Option<Fingerprint>> = files
        .par_iter()
        .map(|f| image::open(f).ok().map(|i| Fingerprint::new(&i)))
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
    let matches = phash::find_matches(&fps, p);
    let t_all = t.elapsed().as_secs_f64();
    println!("real films:     {} files under {dir}", files.len());
    println!("fingerprints:   {t_fp:8.2} s (decode + hash)");
    println!(
        "candidates:     {t_idx:8.3} s index, {t_brute:8.3} s brute force: {} pairs, {}",
        fast.len(),
        if same { "identical" } else { "DIFFERENT" }
    );
    println!("search+verify:  {t_all:8.2} s, {} matches:", matches.len());
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
    if !same {
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
