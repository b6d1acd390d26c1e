//! `prep split` end to end: bags built by `prep filter` from fixtures made here, the real
//! samples in ../shared when present, determinism across runs and thread counts, `--check`,
//! and a property test that no group ever crosses splits.

mod common;

use assert_cmd::Command;
use image::{GrayImage, Luma};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

fn prep() -> Command {
    let mut c = Command::cargo_bin("prep").unwrap();
    c.env("SOURCE_DATE_EPOCH", "1700000000");
    c
}

/// A synthetic X-ray-like picture: smooth blobs plus fine texture, both from `k`, so that
/// different k give different pictures down to the detail the near-duplicate check looks at.
fn picture(k: u32, w: u32, h: u32) -> GrayImage {
    let mut s = k.wrapping_mul(2_654_435_761).wrapping_add(0x9e37_79b9);
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        s
    };
    let blobs: Vec<(f32, f32, f32, f32)> = (0..10)
        .map(|_| {
            (
                (next() % 1000) as f32 / 1000.0,
                (next() % 1000) as f32 / 1000.0,
                0.05 + (next() % 200) as f32 / 1000.0,
                (next() % 160) as f32 - 80.0,
            )
        })
        .collect();
    // Texture on a grid of 4 px cells, in normalised coordinates so crops keep it.
    let (gw, gh) = (64usize, 64usize);
    let tex: Vec<f32> = (0..gw * gh).map(|_| (next() % 61) as f32 - 30.0).collect();
    GrayImage::from_fn(w, h, |x, y| {
        let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
        let mut val = 120.0;
        for (bx, by, r, a) in &blobs {
            val += a * (-((u - bx).powi(2) + (v - by).powi(2)) / (r * r)).exp();
        }
        let (tx, ty) = ((u * gw as f32) as usize, (v * gh as f32) as usize);
        val += tex[ty.min(gh - 1) * gw + tx.min(gw - 1)];
        Luma([val.clamp(0.0, 255.0) as u8])
    })
}

/// The same picture re-cropped (10 % off the right and bottom) and enlarged, as a JPEG.
fn recrop_jpeg(img: &GrayImage, path: &Path) {
    let (w, h) = img.dimensions();
    let c = image::imageops::crop_imm(img, 0, 0, w * 9 / 10, h * 9 / 10).to_image();
    let big = image::imageops::resize(
        &c,
        w * 3 / 2,
        h * 3 / 2,
        image::imageops::FilterType::Triangle,
    );
    big.save_with_format(path, image::ImageFormat::Jpeg)
        .unwrap();
}

struct Fixture {
    _tmp: TempDir,
    root: PathBuf,
    covid: PathBuf,
    others: PathBuf,
    hannover: PathBuf,
    extra: PathBuf,
}

/// A Cohen-like source (patients with several images, a patient with COVID and a No Finding
/// prior, the alias pair 87/462), a Hannover-like folder holding a re-cropped copy of one Cohen
/// image under the same stem, and a folder with an exact copy of a Cohen image.
fn fixture() -> Fixture {
    let tmp = TempDir::new().unwrap();
    let root = tmp.path().to_path_buf();
    let ds = root.join("cohen");
    fs::create_dir_all(ds.join("images")).unwrap();
    let mut rows =
        vec!["patientid,finding,RT_PCR_positive,view,modality,folder,filename".to_string()];
    let mut k = 0u32;
    let mut add = |pid: &str, finding: &str, name: &str, rows: &mut Vec<String>| {
        k += 1;
        picture(k, 256, 240)
            .save(ds.join("images").join(name))
            .unwrap();
        rows.push(format!("{pid},{finding},Y,PA,X-ray,images,{name}"));
    };
    let covid = "Pneumonia/Viral/COVID-19";
    for (pid, n) in [("1", 3), ("2", 2), ("87", 1), ("462", 1)] {
        for i in 0..n {
            add(pid, covid, &format!("c{pid}-{i}.png"), &mut rows);
        }
    }
    for p in 3..=18 {
        add(&p.to_string(), covid, &format!("c{p}.png"), &mut rows);
    }
    add("5", covid, "abcdef01.png", &mut rows); // re-published by "hannover"
    add("1", "No Finding", "h1-prior.png", &mut rows); // leakage trap: patient 1 again
    for p in 20..=28 {
        add(
            &p.to_string(),
            "No Finding",
            &format!("h{p}.png"),
            &mut rows,
        );
    }
    for p in 40..=49 {
        add(
            &p.to_string(),
            "Pneumonia/Bacterial/Streptococcus",
            &format!("d{p}.png"),
            &mut rows,
        );
    }
    add(
        "40",
        "Pneumonia/Bacterial/Streptococcus",
        "d40-b.png",
        &mut rows,
    );
    fs::write(ds.join("metadata.csv"), rows.join("\n") + "\n").unwrap();

    let han = root.join("hannover");
    fs::create_dir_all(&han).unwrap();
    let src = image::open(ds.join("images/abcdef01.png"))
        .unwrap()
        .to_luma8();
    recrop_jpeg(&src, &han.join("abcdef01.jpg"));
    picture(900, 256, 256)
        .save(han.join("0f0f0f0f.png"))
        .unwrap();

    let extra = root.join("extra");
    fs::create_dir_all(&extra).unwrap();
    fs::copy(ds.join("images/h21.png"), extra.join("copy-of-h21.png")).unwrap();
    picture(901, 256, 240).save(extra.join("n1.png")).unwrap();

    let bags = root.join("bags");
    let run = |args: &[&str]| {
        prep().args(args).assert().success();
    };
    let d = ds.to_str().unwrap();
    let b = |n: &str| bags.join(n).to_string_lossy().into_owned();
    run(&[
        "filter",
        "--source",
        "cohen",
        "--dataset",
        d,
        "--out",
        &b("covid"),
    ]);
    run(&[
        "filter",
        "--source",
        "cohen",
        "--dataset",
        d,
        "--label-others",
        "--out",
        &b("others"),
    ]);
    run(&[
        "filter",
        "--source",
        "folder",
        "--dataset",
        han.to_str().unwrap(),
        "--label",
        "covid",
        "--out",
        &b("hannover"),
    ]);
    run(&[
        "filter",
        "--source",
        "folder",
        "--dataset",
        extra.to_str().unwrap(),
        "--label",
        "healthy",
        "--out",
        &b("extra"),
    ]);
    Fixture {
        covid: bags.join("covid"),
        others: bags.join("others"),
        hannover: bags.join("hannover"),
        extra: bags.join("extra"),
        root,
        _tmp: tmp,
    }
}

type Row = BTreeMap<String, String>;

fn read_csv(path: &Path) -> Vec<Row> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let h = r.headers().unwrap().clone();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            h.iter()
                .zip(rec.iter())
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        })
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn split_args<'a>(f: &'a Fixture, out: &'a Path) -> Vec<String> {
    [
        "split",
        "--balanced",
        "--covid",
        s(&f.covid),
        s(&f.hannover),
        "--healthy",
        s(&f.others),
        s(&f.extra),
        "--diseased",
        s(&f.others),
        "--out",
        s(out),
    ]
    .iter()
    .map(|x| x.to_string())
    .collect()
}

/// Every file of a bag, by relative path.
fn bag_files(bag: &Path) -> BTreeMap<String, Vec<u8>> {
    walkdir::WalkDir::new(bag)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            (
                e.path()
                    .strip_prefix(bag)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn balanced_split_is_leak_free_stratified_and_verifiable() {
    let f = fixture();
    let out = f.root.join("split");
    let assert = prep().args(split_args(&f, &out)).assert().success();
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    // Merges per reason are printed: 87/462 alias, the cross-source copy, the exact copy.
    for line in [
        "alias                 1",
        "exact-duplicate       1",
        "cross-reference       1",
        "near-duplicate        0",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    prep().args(["verify", s(&out)]).assert().success();

    let recs = read_csv(&out.join("data/records.csv"));
    let count = |sub: &str| recs.iter().filter(|r| r["subclass"] == sub).count();
    let (c, h, d) = (count("covid"), count("healthy"), count("diseased"));
    assert_eq!(c, h + d, "2:1:1: covid = healthy + diseased");
    assert_eq!(h, d);
    assert!(h >= 9, "the largest balanced set is used: {c}/{h}/{d}");
    // ImageFolder layout, files where records say.
    for r in &recs {
        let p = out.join(&r["path"]);
        assert!(p.is_file(), "{}", r["path"]);
        let want = format!("data/{}/{}/", r["split"], r["class"]);
        assert!(r["path"].starts_with(&want), "{} vs {want}", r["path"]);
        assert!(["covid", "no-covid"].contains(&r["class"].as_str()));
    }
    // No group in two splits; patient 1's COVID images and No Finding prior together; the
    // alias pair together; the Hannover copy with its Cohen original.
    let mut split_of: BTreeMap<&str, &str> = BTreeMap::new();
    for r in &recs {
        let prev = split_of.insert(&r["group"], &r["split"]);
        assert!(
            prev.is_none_or(|p| p == r["split"]),
            "group {} crosses splits",
            r["group"]
        );
    }
    let group_of = |id: &str, source: &str| {
        recs.iter()
            .find(|r| r["id"] == id && r["source"] == source)
            .map(|r| r["group"].clone())
    };
    if let (Some(a), Some(b)) = (group_of("c1-0", "cohen"), group_of("h1-prior", "cohen")) {
        assert_eq!(a, b);
    }
    if let (Some(a), Some(b)) = (group_of("c87-0", "cohen"), group_of("c462-0", "cohen")) {
        assert_eq!(a, b);
    }
    if let (Some(a), Some(b)) = (
        group_of("abcdef01", "cohen"),
        group_of("abcdef01", "folder"),
    ) {
        assert_eq!(a, b);
        assert_eq!(a, "cohen:5");
    }
    // Per-class train fraction 0.7 within one group.
    for sub in ["covid", "healthy", "diseased"] {
        let rs: Vec<&Row> = recs.iter().filter(|r| r["subclass"] == sub).collect();
        let n = rs.len() as f64;
        let train = rs.iter().filter(|r| r["split"] == "train").count() as f64;
        let mut sizes: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &rs {
            *sizes.entry(&r["group"]).or_default() += 1;
        }
        let biggest = *sizes.values().max().unwrap() as f64;
        assert!(
            (train / n - 0.7).abs() <= biggest / n + 1e-9,
            "{sub}: train fraction {} not within one group of 0.7",
            train / n
        );
    }
    // What balancing dropped is listed with its reason; the exact copy is recorded.
    let excl = read_csv(&out.join("data/excluded.csv"));
    assert!(excl.iter().any(|e| e["reason"] == "balance"));
    let dups = read_csv(&out.join("data/duplicates.csv"));
    assert!(dups.iter().any(|d| d["reason"] == "exact-duplicate"));
    assert!(dups
        .iter()
        .any(|d| d["reason"] == "cross-reference" && d["detail"].contains("abcdef01")));
    // Provenance: seed, parameters, every input bag's manifest hash.
    let prov: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("data/provenance.json")).unwrap()).unwrap();
    assert_eq!(prov["seed"], 0);
    assert_eq!(prov["parameters"]["ratio_covid_healthy_diseased"], "2:1:1");
    let inputs = prov["inputs"].as_array().unwrap();
    assert_eq!(inputs.len(), 4);
    for i in inputs {
        assert_eq!(i["sha256"].as_str().unwrap().len(), 64);
    }
    // The split checks clean.
    prep()
        .args(["split", "--check", s(&out)])
        .assert()
        .success();
}

#[test]
fn same_inputs_give_byte_identical_bags_whatever_the_thread_count() {
    let f = fixture();
    let mut bags = Vec::new();
    for (name, threads) in [("a", "2"), ("b", "2"), ("c", "1")] {
        let out = f.root.join("runs").join(name).join("split");
        prep()
            .env("RAYON_NUM_THREADS", threads)
            .args(split_args(&f, &out))
            .assert()
            .success();
        bags.push(bag_files(&out));
    }
    assert!(bags[0].len() > 10);
    assert_eq!(
        bags[0].keys().collect::<Vec<_>>(),
        bags[1].keys().collect::<Vec<_>>()
    );
    for (k, v) in &bags[0] {
        assert!(bags[1][k] == *v, "{k} differs between two runs");
        assert!(bags[2][k] == *v, "{k} differs between 1 and 2 threads");
    }
    // A different seed gives a different assignment.
    let out = f.root.join("runs/seed7/split");
    let mut args = split_args(&f, &out);
    // The fixture's only near-duplicate is also a cross-reference: the groups are the same
    // without the (slow, in debug builds) perceptual pass.
    args.extend([
        "--seed".to_string(),
        "7".to_string(),
        "--no-near-duplicates".to_string(),
    ]);
    prep().args(args).assert().success();
    let pick = |recs: Vec<Row>| -> BTreeSet<(String, String)> {
        recs.into_iter()
            .map(|r| (r["group"].clone(), r["split"].clone()))
            .collect()
    };
    let a = pick(read_csv(&f.root.join("runs/a/split/data/records.csv")));
    let b = pick(read_csv(&out.join("data/records.csv")));
    assert_ne!(a, b, "seed 7 gave the same assignment as seed 0");
}

#[test]
fn unbalanced_three_class_split_with_test_keeps_everything() {
    let f = fixture();
    let out = f.root.join("split3");
    prep()
        .args([
            "split",
            "--covid",
            s(&f.covid),
            "--healthy",
            s(&f.others),
            "--diseased",
            s(&f.others),
            "--train",
            "0.6",
            "--val",
            "0.2",
            "--test",
            "0.2",
            "--classes",
            "three",
            "--out",
            s(&out),
        ])
        .assert()
        .success();
    let recs = read_csv(&out.join("data/records.csv"));
    let covid_in = read_csv(&f.covid.join("data/records.csv")).len();
    let others_in = read_csv(&f.others.join("data/records.csv")).len();
    assert_eq!(
        recs.len(),
        covid_in + others_in,
        "without --balanced nothing is dropped"
    );
    let splits: BTreeSet<&str> = recs.iter().map(|r| r["split"].as_str()).collect();
    assert_eq!(splits, BTreeSet::from(["test", "train", "val"]));
    for r in &recs {
        assert_eq!(r["class"], r["subclass"]);
        assert!(out.join(&r["path"]).is_file());
    }
    // 1:1:1 is accepted too.
    prep()
        .args([
            "split",
            "--balanced",
            "--ratio",
            "1:1:1",
            "--covid",
            s(&f.covid),
            "--healthy",
            s(&f.others),
            "--diseased",
            s(&f.others),
            "--out",
            s(&f.root.join("split111")),
        ])
        .assert()
        .success();
    let recs = read_csv(&f.root.join("split111/data/records.csv"));
    let n = |c: &str| recs.iter().filter(|r| r["subclass"] == c).count();
    assert_eq!((n("covid"), n("healthy")), (n("diseased"), n("diseased")));
}

#[test]
fn check_fails_loudly_when_a_group_crosses_splits() {
    let f = fixture();
    let out = f.root.join("split");
    prep().args(split_args(&f, &out)).assert().success();
    // A records CSV from "another tool": move one image of a multi-image patient.
    let recs = read_csv(&out.join("data/records.csv"));
    let mut by_group: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, r) in recs.iter().enumerate() {
        by_group.entry(&r["group"]).or_default().push(i);
    }
    let (_, idx) = by_group
        .iter()
        .find(|(_, v)| v.len() >= 2)
        .expect("a multi-image group");
    let mut w = csv::Writer::from_path(f.root.join("other.csv")).unwrap();
    w.write_record(["image", "patientid", "source", "split"])
        .unwrap();
    for (i, r) in recs.iter().enumerate() {
        let mut split = r["split"].clone();
        if i == idx[0] {
            split = if split == "train" {
                "val".into()
            } else {
                "train".into()
            };
        }
        w.write_record([&r["id"], &r["patient_id"], &r["source"], &split])
            .unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let a = prep()
        .args(["split", "--check", s(&f.root.join("other.csv"))])
        .assert()
        .code(4);
    let err = String::from_utf8_lossy(&a.get_output().stderr).into_owned();
    assert!(err.contains("crosses splits"), "{err}");
    // Unchanged, the same CSV passes.
    let mut w = csv::Writer::from_path(f.root.join("same.csv")).unwrap();
    w.write_record(["image", "patientid", "source", "split"])
        .unwrap();
    for r in &recs {
        w.write_record([&r["id"], &r["patient_id"], &r["source"], &r["split"]])
            .unwrap();
    }
    w.flush().unwrap();
    drop(w);
    prep()
        .args(["split", "--check", s(&f.root.join("same.csv"))])
        .assert()
        .success();
}

#[test]
fn bad_invocations_are_usage_errors() {
    let f = fixture();
    let out = f.root.join("x");
    // A single-label bag under two flags would put one image in two classes.
    prep()
        .args([
            "split",
            "--covid",
            s(&f.covid),
            "--healthy",
            s(&f.covid),
            "--out",
            s(&out),
        ])
        .assert()
        .code(2);
    prep()
        .args([
            "split",
            "--covid",
            s(&f.covid),
            "--train",
            "0.8",
            "--val",
            "0.3",
            "--out",
            s(&out),
        ])
        .assert()
        .code(2);
    prep()
        .args([
            "split",
            "--balanced",
            "--ratio",
            "2:1",
            "--covid",
            s(&f.covid),
            "--out",
            s(&out),
        ])
        .assert()
        .code(2);
    prep()
        .args([
            "split",
            "--ratio",
            "1:1:1",
            "--covid",
            s(&f.covid),
            "--out",
            s(&out),
        ])
        .assert()
        .code(2);
    // --balanced needs every class with a non-zero ratio.
    prep()
        .args([
            "split",
            "--balanced",
            "--covid",
            s(&f.covid),
            "--healthy",
            s(&f.others),
            "--out",
            s(&out),
        ])
        .assert()
        .code(2);
    assert!(!out.exists());
    // A damaged input bag is refused (exit 4) before anything is written.
    fs::write(f.covid.join("data/records.csv"), "tampered").unwrap();
    prep()
        .args([
            "split",
            "--covid",
            s(&f.covid),
            "--healthy",
            s(&f.others),
            "--out",
            s(&out),
        ])
        .assert()
        .code(4);
}

/// The first Python that can import `module`: $PREP_PYTHON, the repo's .venv, python3.
fn python_with(module: &str) -> Option<PathBuf> {
    let mut cands: Vec<PathBuf> = std::env::var_os("PREP_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    cands.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    cands.push(PathBuf::from("python3"));
    cands.into_iter().find(|py| {
        std::process::Command::new(py)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[test]
fn python_bagit_and_torchvision_accept_the_split_bag() {
    let bagit = python_with("bagit");
    let tv = python_with("torchvision");
    if bagit.is_none() && tv.is_none() {
        eprintln!("skipped: neither `bagit` nor `torchvision` is importable (set PREP_PYTHON)");
        return;
    }
    let f = fixture();
    let out = f.root.join("split");
    prep().args(split_args(&f, &out)).assert().success();
    match bagit {
        Some(py) => {
            let o = std::process::Command::new(&py)
                .args(["-m", "bagit", "--validate", s(&out)])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        None => eprintln!("skipped: python package `bagit` is not importable"),
    }
    let Some(py) = tv else {
        eprintln!("skipped: torchvision is not importable; ImageFolder load not checked");
        return;
    };
    let recs = read_csv(&out.join("data/records.csv"));
    for split in ["train", "val"] {
        let code = format!(
            "from torchvision import datasets\nd = datasets.ImageFolder('{}/data/{split}')\nassert d.classes == ['covid', 'no-covid'], d.classes\nfor i in range(len(d)): d[i]\nprint(len(d))",
            s(&out)
        );
        let o = std::process::Command::new(&py)
            .args(["-c", &code])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let n: usize = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
        assert_eq!(n, recs.iter().filter(|r| r["split"] == split).count());
    }
}

fn samples() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/samples");
    if p.join("cohen/metadata_subset.csv").is_file() && p.join("hannover/png").is_dir() {
        Some(p)
    } else {
        eprintln!("skipped: {} is absent", p.display());
        None
    }
}

/// The real samples: Cohen's re-cropped copies of two Hannover images, a Cohen image published
/// twice under two patient ids, and patients with COVID and non-COVID images.
#[test]
fn real_samples_split_without_leaks_and_finds_the_known_duplicates() {
    let Some(sp) = samples() else { return };
    let tmp = TempDir::new().unwrap();
    let b = |n: &str| tmp.path().join(n);
    let cohen = sp.join("cohen");
    let meta = cohen.join("metadata_subset.csv");
    prep()
        .args([
            "filter",
            "--source",
            "cohen",
            "--dataset",
            s(&cohen),
            "--metadata",
            s(&meta),
            "--out",
            s(&b("covid")),
        ])
        .assert()
        .success();
    prep()
        .args([
            "filter",
            "--source",
            "cohen",
            "--dataset",
            s(&cohen),
            "--metadata",
            s(&meta),
            "--label-others",
            "--out",
            s(&b("others")),
        ])
        .assert()
        .success();
    prep()
        .args([
            "filter",
            "--source",
            "folder",
            "--dataset",
            s(&sp.join("hannover/png")),
            "--label",
            "covid",
            "--out",
            s(&b("hannover")),
        ])
        .assert()
        .success();
    let out = b("split");
    let a = prep()
        .args([
            "split",
            "--balanced",
            "--covid",
            s(&b("covid")),
            s(&b("hannover")),
            "--healthy",
            s(&b("others")),
            "--diseased",
            s(&b("others")),
            "--out",
            s(&out),
        ])
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&a.get_output().stdout).into_owned();
    assert!(stdout.contains("cross-reference       2"), "{stdout}");
    let dups = read_csv(&out.join("data/duplicates.csv"));
    let near: BTreeSet<(String, String)> = dups
        .iter()
        .filter(|d| d["reason"] == "near-duplicate")
        .map(|d| (d["a_id"].clone(), d["b_id"].clone()))
        .collect();
    let want: BTreeSet<(String, String)> = [
        ("2-chest-filmc", "7-fatal-covid19"),
        ("2c35005f", "2c35005f"),
        ("b343e657", "b343e657"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(near, want);
    let recs = read_csv(&out.join("data/records.csv"));
    let c = recs.iter().filter(|r| r["subclass"] == "covid").count();
    let h = recs.iter().filter(|r| r["subclass"] == "healthy").count();
    let d = recs.iter().filter(|r| r["subclass"] == "diseased").count();
    assert_eq!((c, h), (h + d, d));
    prep()
        .args(["split", "--check", s(&out)])
        .assert()
        .success();
    prep().args(["verify", s(&out)]).assert().success();
}

/// Every one of the 43 sample images against every other: only the three known pairs of the
/// same picture may be merged as near-duplicates.
#[test]
fn real_samples_have_no_false_near_duplicate_merges() {
    let Some(sp) = samples() else { return };
    let tmp = TempDir::new().unwrap();
    let mut bags = Vec::new();
    for (i, dir) in [
        "cohen/images",
        "hannover/png",
        "figure1/images",
        "actualmed/images",
        "torchxrayvision_tests",
    ]
    .iter()
    .enumerate()
    {
        let out = tmp.path().join(format!("b{i}"));
        prep()
            .args([
                "filter",
                "--source",
                "folder",
                "--dataset",
                s(&sp.join(dir)),
                "--label",
                "covid",
                "--out",
                s(&out),
            ])
            .assert()
            .success();
        bags.push(out);
    }
    let out = tmp.path().join("split");
    let mut args = vec!["split".to_string(), "--covid".into()];
    args.extend(bags.iter().map(|b| s(b).to_string()));
    args.extend(["--out".into(), s(&out).to_string()]);
    prep().args(args).assert().success();
    let recs = read_csv(&out.join("data/records.csv"));
    assert_eq!(recs.len(), 43);
    let dups = read_csv(&out.join("data/duplicates.csv"));
    let near: BTreeSet<(String, String)> = dups
        .iter()
        .filter(|d| d["reason"] == "near-duplicate")
        .map(|d| {
            let (a, b) = (d["a_id"].clone(), d["b_id"].clone());
            (a.clone().min(b.clone()), a.max(b))
        })
        .collect();
    let want: BTreeSet<(String, String)> = [
        ("2-chest-filmc", "7-fatal-covid19"),
        ("2c35005f", "2c35005f"),
        ("b343e657", "b343e657"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(near, want);
    let groups: BTreeSet<&str> = recs.iter().map(|r| r["group"].as_str()).collect();
    assert_eq!(groups.len(), 40, "43 images, 3 merged pairs");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Random patients, shared files, sources and classes: after grouping and assignment no
    /// group is in two splits, and `--check`'s re-derivation agrees.
    #[test]
    fn no_group_ever_crosses_splits(
        imgs in prop::collection::vec((0u8..3, prop::option::of(0u8..12), 0u8..40, 0u8..3), 1..80),
        seed in any::<u64>(),
        three in any::<bool>(),
    ) {
        use prep::split::assign::{assign, Fine, Unit};
        use prep::split::group::{group, record_links, Aliases, Member};
        let members: Vec<Member> = imgs.iter().map(|(src, pid, sha, _)| Member {
            source: format!("s{src}"),
            patient_id: pid.map(|p| p.to_string()).unwrap_or_default(),
            sha256: format!("{sha:064}"),
            stem: String::new(),
            declared: String::new(),
        }).collect();
        let g = group(&members, record_links(&members, &Aliases::new()));
        let units: Vec<Unit> = imgs.iter().enumerate().map(|(i, (_, _, _, c))| Unit {
            class: Fine::ALL[*c as usize],
            group: g.group_of[i].clone(),
            key: i.to_string(),
        }).collect();
        let fr: Vec<f64> = if three { vec![0.6, 0.2, 0.2] } else { vec![0.7, 0.3] };
        let split = assign(&units, &fr, seed);
        // Same patient (per source) or same file => same split, directly from the inputs.
        for i in 0..members.len() {
            for j in 0..members.len() {
                let same_patient = !members[i].patient_id.is_empty()
                    && members[i].source == members[j].source
                    && members[i].patient_id == members[j].patient_id;
                let same_file = members[i].sha256 == members[j].sha256;
                if same_patient || same_file {
                    prop_assert_eq!(split[i], split[j]);
                }
            }
        }
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (u, s) in units.iter().zip(&split) {
            prop_assert_eq!(*seen.entry(&u.group).or_insert(*s), *s);
            prop_assert!(*s < fr.len());
        }
    }

    /// `--check` agrees: the assignment passes, and moving any one image of a group with two
    /// or more images to another split is caught (as a verification failure, exit code 4).
    #[test]
    fn check_catches_any_single_moved_image(
        imgs in prop::collection::vec((0u8..2, prop::option::of(0u8..6), 0u8..30), 2..40),
        seed in any::<u64>(),
        pick in any::<prop::sample::Index>(),
    ) {
        use prep::split::assign::{assign, Fine, Unit};
        use prep::split::group::{group, record_links, Aliases, Member};
        let members: Vec<Member> = imgs.iter().map(|(src, pid, sha)| Member {
            source: format!("s{src}"),
            patient_id: pid.map(|p| p.to_string()).unwrap_or_default(),
            sha256: format!("{sha:064}"),
            stem: String::new(),
            declared: String::new(),
        }).collect();
        let g = group(&members, record_links(&members, &Aliases::new()));
        let units: Vec<Unit> = (0..members.len()).map(|i| Unit {
            class: Fine::ALL[i % 3],
            group: g.group_of[i].clone(),
            key: i.to_string(),
        }).collect();
        let split = assign(&units, &[0.5, 0.5], seed);
        let tmp = TempDir::new().unwrap();
        let write = |name: &str, splits: &[usize]| {
            let p = tmp.path().join(name);
            let mut w = csv::Writer::from_path(&p).unwrap();
            w.write_record(["id", "source", "patient_id", "sha256", "split"]).unwrap();
            for (i, m) in members.iter().enumerate() {
                let s = ["train", "val"][splits[i]];
                w.write_record([&format!("img{i}"), &m.source, &m.patient_id, &m.sha256, &s.to_string()]).unwrap();
            }
            w.flush().unwrap();
            p
        };
        let rules = prep::split::Rules::builtin();
        let ok = write("ok.csv", &split);
        prop_assert!(prep::split::check(&ok, &rules, false).is_ok());
        let multi: Vec<usize> = (0..members.len())
            .filter(|&i| g.group_of.iter().filter(|x| **x == g.group_of[i]).count() > 1)
            .collect();
        if !multi.is_empty() {
            let i = multi[pick.index(multi.len())];
            let mut moved = split.clone();
            moved[i] = 1 - moved[i];
            let bad = write("bad.csv", &moved);
            let is_verification = matches!(
                prep::split::check(&bad, &rules, false),
                Err(prep::Error::Verification { .. })
            );
            prop_assert!(is_verification);
        }
    }
}

/// `src`'s payload in a new bag at `out`, without its fingerprint cache (with `fp` instead).
fn rebag_without_cache(src: &Path, out: &Path, fp: Option<&Path>) {
    let data = src.join("data");
    let mut files: Vec<(String, Vec<u8>)> = walkdir::WalkDir::new(&data)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(&data).unwrap();
            (
                rel.to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .filter(|(rel, _)| rel != "fingerprints.bin")
        .collect();
    if let Some(fp) = fp {
        files.push(("fingerprints.bin".into(), fs::read(fp).unwrap()));
    }
    common::bag_of(out, &files);
}

/// Fingerprints cached by `prep filter` are used; a bag without them, or with a stale cache
/// (entries for other images), gets them recomputed, and said so; the split is the same.
#[test]
fn cached_missing_and_stale_fingerprints_give_the_same_split() {
    let t = TempDir::new().unwrap();
    let ds = t.path().join("ds");
    fs::create_dir_all(&ds).unwrap();
    for k in 0..6 {
        picture(k + 300, 256, 240)
            .save(ds.join(format!("p{k}.png")))
            .unwrap();
    }
    recrop_jpeg(&picture(302, 256, 240), &ds.join("p2-copy.jpg"));
    let other = t.path().join("other");
    fs::create_dir_all(&other).unwrap();
    picture(999, 256, 240).save(other.join("x.png")).unwrap();
    let filter = |dir: &Path, out: &Path| {
        prep()
            .args([
                "filter",
                "--source",
                "folder",
                "--label",
                "covid",
                "--dataset",
            ])
            .arg(dir)
            .arg("--out")
            .arg(out)
            .assert()
            .success();
    };
    let cached = t.path().join("cached");
    filter(&ds, &cached);
    filter(&other, &t.path().join("otherbag"));
    assert!(cached.join("data/fingerprints.bin").is_file());
    // The same payload re-bagged without the cache, and with another bag's cache.
    let rebag = |name: &str, fp: Option<&Path>| {
        let out = t.path().join(name);
        rebag_without_cache(&cached, &out, fp);
        out
    };
    let missing = rebag("missing", None);
    let stale = rebag(
        "stale",
        Some(&t.path().join("otherbag/data/fingerprints.bin")),
    );
    let mut results = Vec::new();
    for (bag, want_out, want_err) in [
        (&cached, "fingerprints: 7 read from the bags, 0 computed", ""),
        (&missing, "fingerprints: 0 read from the bags, 7 computed", ""),
        (
            &stale,
            "fingerprints: 0 read from the bags, 7 computed",
            "fingerprint cache is stale (7 image(s) without a fitting entry, 1 entr(ies) for no image",
        ),
    ] {
        let out = t.path().join(format!("split-{}", bag.file_name().unwrap().to_string_lossy()));
        let a = prep()
            .args(["split", "--covid"])
            .arg(bag)
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        let o = a.get_output();
        let (so, se) = (
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
        );
        assert!(so.contains(want_out), "{}: {so}", bag.display());
        assert!(se.contains(want_err), "{}: {se}", bag.display());
        let bag_s = bag.to_string_lossy().into_owned();
        let norm = |f: &str| fs::read_to_string(out.join("data").join(f)).unwrap().replace(&bag_s, "BAG");
        results.push((norm("records.csv"), norm("duplicates.csv")));
        // The split bag carries its images' fingerprints (from the cache or as computed), and
        // `--check` reads them instead of decoding the films.
        let kept = norm("records.csv").lines().count() - 1;
        assert!(out.join("data/fingerprints.bin").is_file());
        let a = prep().args(["split", "--check"]).arg(&out).assert().success();
        let so = String::from_utf8_lossy(&a.get_output().stdout).into_owned();
        let want = format!("fingerprints: {kept} read from the bag, 0 computed");
        assert!(so.contains(&want), "{}: {so}", out.display());
    }
    assert!(results[0].1.contains("near-duplicate"), "{}", results[0].1);
    assert_eq!(results[0], results[1]);
    assert_eq!(results[0], results[2]);
    // A split bag without the cache (as older prep wrote them): --check computes them all.
    let old = t.path().join("split-old");
    rebag_without_cache(&t.path().join("split-cached"), &old, None);
    let a = prep()
        .args(["split", "--check"])
        .arg(&old)
        .assert()
        .success();
    let so = String::from_utf8_lossy(&a.get_output().stdout).into_owned();
    assert!(so.contains("0 read from the bag,"), "{so}");
}

/// A Cohen-format dataset of COVID-19 films, one per (patient id, picture number).
fn cohen_dataset(dir: &Path, films: &[(&str, u32)]) {
    fs::create_dir_all(dir.join("images")).unwrap();
    let mut rows =
        vec!["patientid,finding,RT_PCR_positive,view,modality,folder,filename".to_string()];
    for (pid, k) in films {
        let name = format!("p{pid}-{k}.png");
        picture(*k, 256, 240)
            .save(dir.join("images").join(&name))
            .unwrap();
        rows.push(format!(
            "{pid},Pneumonia/Viral/COVID-19,Y,PA,X-ray,images,{name}"
        ));
    }
    fs::write(dir.join("metadata.csv"), rows.join("\n") + "\n").unwrap();
}

#[test]
fn external_images_linked_to_internal_ones_by_alias_or_cross_reference_are_left_out() {
    let f = fixture();
    let ex_reason = |bag: &Path| -> Vec<(String, String)> {
        read_csv(&bag.join("data/excluded.csv"))
            .into_iter()
            .filter(|r| r["reason"].starts_with("external"))
            .map(|r| (r["id"].clone(), format!("{} {}", r["reason"], r["detail"])))
            .collect()
    };
    // Cross-reference: Hannover's abcdef01 is a Cohen film re-published (Cohen patient 5).
    let o1 = f.root.join("split-xref");
    prep()
        .args(["split", "--covid", s(&f.covid), "--healthy", s(&f.extra)])
        .args(["--external", s(&f.hannover), "--no-near-duplicates"])
        .args(["--out", s(&o1)])
        .assert()
        .success();
    let ex = ex_reason(&o1);
    println!("{ex:?}");
    assert_eq!(ex.len(), 1, "{ex:?}");
    assert!(ex[0].0.contains("abcdef01"), "{ex:?}");
    assert!(
        ex[0].1.starts_with("external-linked-patient") && ex[0].1.contains("cross-reference"),
        "{ex:?}"
    );
    let ext: Vec<_> = read_csv(&o1.join("data/records.csv"))
        .into_iter()
        .filter(|r| r["group"].starts_with("external:"))
        .collect();
    assert_eq!(ext.len(), 1, "the other Hannover film stays");

    // --hold-out moves an input bag to the external ones: the same split as --external.
    let o2 = f.root.join("split-holdout");
    prep()
        .args(["split", "--covid", s(&f.covid), "--covid", s(&f.hannover)])
        .args(["--healthy", s(&f.extra), "--hold-out", s(&f.hannover)])
        .args(["--no-near-duplicates", "--out", s(&o2)])
        .assert()
        .success();
    for file in ["data/records.csv", "data/excluded.csv"] {
        assert_eq!(
            fs::read(o1.join(file)).unwrap(),
            fs::read(o2.join(file)).unwrap(),
            "{file}"
        );
    }
    prep()
        .args(["split", "--covid", s(&f.covid), "--healthy", s(&f.extra)])
        .args(["--hold-out", s(&f.hannover), "--out", s(&f.root.join("x"))])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("--hold-out"));

    // Alias: Cohen's patient 462 is patient 87 (metadata/cohen.toml), in two bags.
    cohen_dataset(
        &f.root.join("cohen-a"),
        &[("87", 700), ("50", 701), ("51", 702)],
    );
    cohen_dataset(&f.root.join("cohen-b"), &[("462", 703), ("300", 704)]);
    for n in ["a", "b"] {
        prep()
            .args(["filter", "--source", "cohen", "--dataset"])
            .arg(f.root.join(format!("cohen-{n}")))
            .arg("--out")
            .arg(f.root.join(format!("bags/cohen-{n}")))
            .assert()
            .success();
    }
    let o3 = f.root.join("split-alias");
    prep()
        .args(["split", "--covid"])
        .arg(f.root.join("bags/cohen-a"))
        .args(["--healthy", s(&f.extra), "--external"])
        .arg(f.root.join("bags/cohen-b"))
        .args(["--no-near-duplicates", "--out", s(&o3)])
        .assert()
        .success();
    let ex = ex_reason(&o3);
    println!("{ex:?}");
    assert_eq!(ex.len(), 1, "{ex:?}");
    assert!(
        ex[0].0.contains("462") || ex[0].1.contains("patient 87"),
        "{ex:?}"
    );
    assert!(ex[0].1.contains("alias"), "{ex:?}");
    let ext: Vec<_> = read_csv(&o3.join("data/records.csv"))
        .into_iter()
        .filter(|r| r["group"].starts_with("external:"))
        .collect();
    assert_eq!(ext.len(), 1);
    assert_eq!(ext[0]["patient_id"], "300");
    prep().args(["split", "--check", s(&o3)]).assert().success();
}
