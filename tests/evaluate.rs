//! `prep evaluate`: AUC and DeLong CI recomputed from predictions.csv by scikit-learn and an
//! independent DeLong (numpy/scipy); thresholds chosen on val only; external bags from
//! `prep split --external` reported apart; the counterfactual against the bag before
//! inpainting; and the shortcut controls (`prep train --occlude`, a pipeline grid, the report)
//! on synthetic tasks with and without a planted border shortcut.
#![cfg(feature = "train")]

mod common;

use common::*;
use image::{GrayImage, Luma};
use prep::manifest::{BagWriter, ColumnType, CroissantSpec, StageInfo};
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

const TINY: &str = "densenet:8,2-2-2-2,16,2";

fn fixture_weights() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/densenet-tiny-weights.safetensors")
}

fn json(p: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap()
}

fn png(img: &GrayImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// One image of a synthetic split bag.
struct Img {
    split: &'static str,
    class: &'static str,
    id: String,
    source: String,
    patient: String,
    bytes: Vec<u8>,
}

/// A split bag laid out as `prep split` writes it (records.csv with split, class, group, ...).
fn write_bag(out: &Path, images: &[Img]) -> PathBuf {
    let w = BagWriter::create(out, false).unwrap();
    let mut rows = String::from(
        "split,class,subclass,group,id,path,sha256,bytes,width,height,source,patient_id,view,label,finding,source_file,source_row,source_bag,bag_row\n",
    );
    for im in images {
        let rel = format!("{}/{}/{}.png", im.split, im.class, im.id);
        let sha = w.write_payload(&rel, &im.bytes).unwrap();
        rows.push_str(&format!(
            "{},{},{},{}:{},{},data/{rel},{sha},{},64,64,{},{},PA,{},,,,in,2\n",
            im.split,
            im.class,
            im.class,
            im.source,
            im.patient,
            im.id,
            im.bytes.len(),
            im.source,
            im.patient,
            im.class
        ));
    }
    w.write_payload("records.csv", rows.as_bytes()).unwrap();
    w.finish(StageInfo {
        name: "synthetic-split".into(),
        description: "Synthetic split for prep evaluate tests.".into(),
        croissant: CroissantSpec {
            license: "CC0-1.0".into(),
            url: "https://example.org/none".into(),
            cite_as: String::new(),
            table: "data/records.csv".into(),
            columns: vec![("path".into(), ColumnType::Text, "image path".into())],
            image_globs: vec![("data/**/*.png".into(), "image/png".into())],
        },
    })
    .unwrap()
    .path
}

/// Noise with a disc of random contrast: what the fixture network scores varies per image.
fn noise_image(rng: &mut impl Rng, side: u32, bright: bool) -> GrayImage {
    let bg: f64 = rng.gen_range(60.0..190.0);
    let r = side as f64 * rng.gen_range(0.15..0.3);
    let (cx, cy) = (
        rng.gen_range(r..side as f64 - r),
        rng.gen_range(r..side as f64 - r),
    );
    let contrast = if bright { 50.0 } else { -50.0 };
    GrayImage::from_fn(side, side, |x, y| {
        let d = ((x as f64 - cx).powi(2) + (y as f64 - cy).powi(2)).sqrt();
        let v = bg + rng.gen_range(-30.0..30.0) + if d < r { contrast } else { 0.0 };
        Luma([v.clamp(0.0, 255.0) as u8])
    })
}

/// val and test images of two classes from two sources, two images per patient.
fn scored_bag(seed: u64) -> Vec<Img> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut v = Vec::new();
    for (split, n) in [("train", 4), ("val", 14), ("test", 20)] {
        for class in ["bright", "dark"] {
            for i in 0..n {
                let source = if i % 3 == 0 { "other" } else { "main" };
                // Mostly the class's contrast, sometimes the other: an imperfect score.
                let bright = (class == "bright") != (i % 5 == 4);
                v.push(Img {
                    split,
                    class,
                    id: format!("{split}-{class}-{i:02}"),
                    source: source.into(),
                    patient: format!("{split}-{class}-p{}", i / 2),
                    bytes: png(&noise_image(&mut rng, 40, bright)),
                });
            }
        }
    }
    v
}

fn evaluate(model: &Path, bag: &Path, out: &Path, extra: &[&str]) -> Value {
    let o = prep()
        .arg("evaluate")
        .arg("--model")
        .arg(model)
        .arg("--data")
        .arg(bag)
        .arg("--out")
        .arg(out)
        .args(["--device", "cpu"])
        .args(extra)
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "prep evaluate failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    println!("{}", String::from_utf8_lossy(&o.stdout));
    json(&out.join("metrics.json"))
}

const FIXTURE_ARGS: &[&str] = &["--classes", "bright,dark", "--image-size", "40"];

/// scikit-learn's roc_auc_score and a textbook DeLong (pairwise kernel, numpy, scipy's normal
/// quantile) on predictions.csv, overall and per source; and ECE over 15 bins.
const OUTSIDE: &str = r#"
import csv, json, sys
import numpy as np
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

rows = list(csv.DictReader(open(sys.argv[1])))

def delong(y, p):
    pos, neg = p[y == 1], p[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    auc = psi.mean()
    var = v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg)
    h = norm.ppf(0.975) * np.sqrt(var)
    return auc, [max(0.0, auc - h), min(1.0, auc + h)]

def block(rs):
    y = np.array([int(r["y"]) for r in rs])
    p = np.array([float(r["probability"]) for r in rs])
    auc, ci = delong(y, p)
    return {"sklearn_auc": roc_auc_score(y, p), "delong_auc": auc, "delong_ci": ci, "n": len(rs)}

y = np.array([int(r["y"]) for r in rows])
p = np.array([float(r["probability"]) for r in rows])
bins = np.minimum((p * 15).astype(int), 14)
ece = sum(abs(p[bins == k].mean() - y[bins == k].mean()) * (bins == k).sum() / len(p) for k in range(15) if (bins == k).any())
out = {"all": block(rows), "ece": ece, "by_source": {}}
for s in sorted({r["source"] for r in rows}):
    out["by_source"][s] = block([r for r in rows if r["source"] == s])
print(json.dumps(out))
"#;

#[test]
fn auc_and_delong_ci_agree_with_scikit_learn_and_an_independent_delong() {
    let t = tempfile::tempdir().unwrap();
    let bag = write_bag(&t.path().join("split"), &scored_bag(3));
    let out = t.path().join("eval");
    let m = evaluate(&fixture_weights(), &bag, &out, FIXTURE_ARGS);
    for f in ["auc", "auc_ci", "auc_ci_bootstrap", "ece", "n", "by_source"] {
        assert!(!m[f].is_null(), "metrics.json lacks {f}: {m}");
    }
    assert_eq!(m["n"], 40);
    assert_eq!(
        m["by_source"]["main"]["n"].as_u64().unwrap()
            + m["by_source"]["other"]["n"].as_u64().unwrap(),
        40
    );
    let auc = m["auc"].as_f64().unwrap();
    assert!(auc > 0.0 && auc < 1.0, "a vacuous AUC {auc}");
    let boot = m["auc_ci_bootstrap"].as_array().unwrap();
    assert!(boot[0].as_f64().unwrap() <= auc && auc <= boot[1].as_f64().unwrap());
    assert_eq!(m["bootstrap"]["resamples"], 2000);
    for f in ["predictions.csv", "metrics.md", "reliability.png"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let img = image::open(out.join("reliability.png")).unwrap();
    assert_eq!((img.width(), img.height()), (600, 600));
    let preds = read_csv(&out.join("predictions.csv"));
    assert_eq!(preds.len(), 40);
    assert!(preds.iter().all(|r| r["split"] == "test"));

    let Some(py) = python_with("sklearn, scipy, numpy") else {
        return;
    };
    let o = std::process::Command::new(py)
        .args(["-c", OUTSIDE])
        .arg(out.join("predictions.csv"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let py: Value = serde_json::from_slice(&o.stdout).unwrap();
    let close = |a: &Value, b: &Value, tol: f64, what: &str| {
        let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
        println!(
            "{what}: prep {a:.12} outside {b:.12} (diff {:e})",
            (a - b).abs()
        );
        assert!((a - b).abs() <= tol, "{what}: prep {a} vs outside {b}");
    };
    for (ours, theirs, name) in [
        (&m, &py["all"], "all".to_string()),
        (
            &m["by_source"]["main"],
            &py["by_source"]["main"],
            "main".into(),
        ),
        (
            &m["by_source"]["other"],
            &py["by_source"]["other"],
            "other".into(),
        ),
    ] {
        close(
            &ours["auc"],
            &theirs["sklearn_auc"],
            1e-9,
            &format!("{name} AUC vs sklearn"),
        );
        close(
            &ours["auc"],
            &theirs["delong_auc"],
            1e-9,
            &format!("{name} AUC vs DeLong kernel"),
        );
        close(
            &ours["auc_ci"][0],
            &theirs["delong_ci"][0],
            1e-6,
            &format!("{name} DeLong CI low"),
        );
        close(
            &ours["auc_ci"][1],
            &theirs["delong_ci"][1],
            1e-6,
            &format!("{name} DeLong CI high"),
        );
    }
    close(&m["ece"], &py["ece"], 1e-9, "ECE");
}

#[test]
fn thresholds_are_chosen_on_val_only() {
    let t = tempfile::tempdir().unwrap();
    let images = scored_bag(5);
    let base = write_bag(&t.path().join("a"), &images);
    // The same films, with half the test labels moved to the other class; and the control,
    // half the val labels moved instead.
    let moved = |split: &str| -> Vec<Img> {
        scored_bag(5)
            .into_iter()
            .enumerate()
            .map(|(i, mut im)| {
                if im.split == split && i % 2 == 0 {
                    im.class = if im.class == "bright" {
                        "dark"
                    } else {
                        "bright"
                    };
                }
                im
            })
            .collect()
    };
    let test_moved = write_bag(&t.path().join("b"), &moved("test"));
    let val_moved = write_bag(&t.path().join("c"), &moved("val"));
    let w = fixture_weights();
    let ma = evaluate(&w, &base, &t.path().join("ea"), FIXTURE_ARGS);
    let mb = evaluate(&w, &test_moved, &t.path().join("eb"), FIXTURE_ARGS);
    let mc = evaluate(&w, &val_moved, &t.path().join("ec"), FIXTURE_ARGS);
    let th = |m: &Value| -> Vec<Value> {
        m["thresholds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["threshold"].clone())
            .collect()
    };
    assert_eq!(th(&ma).len(), 3);
    assert!(th(&ma).iter().all(|t| t.is_f64()), "{:?}", th(&ma));
    assert_eq!(th(&ma), th(&mb), "moving test labels moved a threshold");
    assert_eq!(ma["thresholds"][0]["rule"], "youden");
    assert_eq!(ma["thresholds"][1]["rule"], "sensitivity_0.90");
    // The test labels did change what is measured at those thresholds ...
    assert_ne!(
        ma["thresholds"][0]["evaluated"], mb["thresholds"][0]["evaluated"],
        "the moved labels should change test sensitivity/specificity"
    );
    assert_ne!(ma["auc"], mb["auc"]);
    // ... and val labels do move the thresholds: the comparison above can fail.
    assert_ne!(
        th(&ma),
        th(&mc),
        "moving val labels should move a threshold"
    );
    // The sensitivity targets hold on val.
    let s90 = ma["thresholds"][1]["val"]["sensitivity"]["value"]
        .as_f64()
        .unwrap();
    assert!(s90 >= 0.9, "{s90}");
}

fn filter_folder(dir: &Path, label: &str, out: &Path) {
    prep()
        .args([
            "filter",
            "--source",
            "folder",
            "--label",
            label,
            "--dataset",
        ])
        .arg(dir)
        .arg("--out")
        .arg(out)
        .assert()
        .success();
}

/// `n` distinct 96 px films `PREFIX-NNN.png` in `dir`: smooth random blobs over light noise,
/// structured enough for the perceptual hashes, no two of them near duplicates.
fn blob_folder(dir: &Path, prefix: &str, n: usize, seed: u64) {
    fs::create_dir_all(dir).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for i in 0..n {
        let bg: f64 = rng.gen_range(60.0..190.0);
        let blobs: Vec<[f64; 4]> = (0..6)
            .map(|_| {
                [
                    rng.gen_range(0.0..96.0),
                    rng.gen_range(0.0..96.0),
                    rng.gen_range(5.0..25.0),
                    rng.gen_range(-70.0..70.0),
                ]
            })
            .collect();
        let img = GrayImage::from_fn(96, 96, |x, y| {
            let mut v = bg + rng.gen_range(-8.0..8.0);
            for [cx, cy, r, c] in &blobs {
                let d2 = (x as f64 - cx).powi(2) + (y as f64 - cy).powi(2);
                v += c * (-d2 / (2.0 * r * r)).exp();
            }
            Luma([v.clamp(0.0, 255.0) as u8])
        });
        img.save(dir.join(format!("{prefix}-{i:03}.png"))).unwrap();
    }
}

#[test]
fn external_bags_go_whole_to_test_and_are_reported_apart() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    blob_folder(&d.join("ds/covid"), "c", 12, 1);
    blob_folder(&d.join("ds/healthy"), "h", 12, 2);
    blob_folder(&d.join("ds/ext-covid"), "xc", 6, 3);
    blob_folder(&d.join("ds/ext-healthy"), "xh", 6, 4);
    // An external film that is an internal one a little brighter: a near duplicate, left out.
    let mut near = image::open(d.join("ds/covid/c-000.png"))
        .unwrap()
        .to_luma8();
    near.pixels_mut()
        .for_each(|p| p[0] = p[0].saturating_add(3));
    near.save(d.join("ds/ext-covid/xc-near.png")).unwrap();
    for (name, label) in [
        ("covid", "covid"),
        ("healthy", "healthy"),
        ("ext-covid", "covid"),
        ("ext-healthy", "healthy"),
    ] {
        filter_folder(&d.join("ds").join(name), label, &d.join("bags").join(name));
    }
    let split = d.join("bags/split");
    let o = prep()
        .arg("split")
        .arg("--covid")
        .arg(d.join("bags/covid"))
        .arg("--healthy")
        .arg(d.join("bags/healthy"))
        .arg("--external")
        .arg(d.join("bags/ext-covid"))
        .arg(d.join("bags/ext-healthy"))
        .args(["--train", "0.5", "--val", "0.25", "--test", "0.25"])
        .arg("--out")
        .arg(&split)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let recs = read_csv(&split.join("data/records.csv"));
    let ext: Vec<_> = recs
        .iter()
        .filter(|r| r["source_bag"].contains("ext-"))
        .collect();
    assert_eq!(
        ext.len(),
        12,
        "every external image but the near duplicate, none balanced away"
    );
    assert!(ext.iter().all(|r| r["split"] == "test"));
    let ex = read_csv(&split.join("data/excluded.csv"));
    let near: Vec<_> = ex
        .iter()
        .filter(|r| r["reason"] == "external-near-duplicate")
        .collect();
    assert_eq!(near.len(), 1, "{ex:?}");
    assert_eq!(near[0]["id"], "xc-near");
    assert!(near[0]["detail"].contains("c-000"), "{:?}", near[0]);
    assert!(ext.iter().all(|r| r["group"].starts_with("external:")));
    let prov = json(&split.join("data/provenance.json"));
    assert_eq!(
        prov["parameters"]["external_bags"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(recs
        .iter()
        .any(|r| r["split"] == "test" && !r["source_bag"].contains("ext-")));
    prep().arg("verify").arg(&split).assert().success();
    prep()
        .arg("split")
        .arg("--check")
        .arg(&split)
        .assert()
        .success();

    let out = d.join("eval");
    let m = evaluate(
        &fixture_weights(),
        &split,
        &out,
        &["--classes", "covid,no-covid", "--image-size", "48"],
    );
    assert_eq!(m["external"]["n"], 12);
    assert_eq!(
        m["internal"]["n"].as_u64().unwrap() + 12,
        m["n"].as_u64().unwrap()
    );
    let gap = m["auc_gap_internal_minus_external"].as_f64().unwrap();
    let (i, e) = (
        m["internal"]["auc"].as_f64().unwrap(),
        m["external"]["auc"].as_f64().unwrap(),
    );
    assert!((gap - (i - e)).abs() < 1e-9);
    let preds = read_csv(&out.join("predictions.csv"));
    assert_eq!(preds.iter().filter(|r| r["external"] == "1").count(), 12);
    let md = fs::read_to_string(out.join("metrics.md")).unwrap();
    assert!(md.contains("Internal vs external"), "{md}");

    // An external image that is also internal is left out, with its reason.
    let split2 = d.join("bags/split2");
    prep()
        .arg("split")
        .arg("--covid")
        .arg(d.join("bags/covid"))
        .arg("--healthy")
        .arg(d.join("bags/healthy"))
        .arg("--external")
        .arg(d.join("bags/covid"))
        .args(["--no-near-duplicates", "--out"])
        .arg(&split2)
        .assert()
        .success();
    let ex = read_csv(&split2.join("data/excluded.csv"));
    assert_eq!(
        ex.iter()
            .filter(|r| r["reason"] == "external-duplicate")
            .count(),
        12
    );

    // Counterfactual: the same films scored against themselves flip nothing.
    let cf = d.join("cf");
    let m = evaluate(
        &fixture_weights(),
        &split,
        &cf,
        &[
            "--classes",
            "covid,no-covid",
            "--image-size",
            "48",
            "--counterfactual",
            d.join("bags/covid").to_str().unwrap(),
        ],
    );
    let c = &m["counterfactual"];
    assert!(c["matched"].as_u64().unwrap() > 0, "{c}");
    assert_eq!(c["flips"], 0);
    assert_eq!(c["mean_abs_delta_p"], 0.0);
    assert!(cf.join("counterfactual.csv").is_file());
}

#[test]
fn counterfactual_measures_what_inpainting_changed() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    prep::synth::image_folder(&d.join("ds/covid"), 1, "c", 10, 48, 0.9).unwrap();
    prep::synth::image_folder(&d.join("ds/healthy"), 2, "h", 10, 48, 0.0).unwrap();
    filter_folder(&d.join("ds/covid"), "covid", &d.join("bags/covid"));
    filter_folder(&d.join("ds/healthy"), "healthy", &d.join("bags/healthy"));
    prep()
        .arg("inpaint")
        .arg(d.join("bags/covid"))
        .arg("--out")
        .arg(d.join("bags/covid-clean"))
        .assert()
        .success();
    let split = d.join("bags/split");
    prep()
        .arg("split")
        .arg("--covid")
        .arg(d.join("bags/covid-clean"))
        .arg("--healthy")
        .arg(d.join("bags/healthy"))
        .args([
            "--train",
            "0.4",
            "--val",
            "0.3",
            "--test",
            "0.3",
            "--no-near-duplicates",
            "--out",
        ])
        .arg(&split)
        .assert()
        .success();
    let m = evaluate(
        &fixture_weights(),
        &split,
        &d.join("cf"),
        &[
            "--classes",
            "covid,no-covid",
            "--image-size",
            "48",
            "--split",
            "all",
            "--counterfactual",
            d.join("bags/covid").to_str().unwrap(),
        ],
    );
    let c = &m["counterfactual"];
    println!("counterfactual: {c}");
    assert_eq!(
        c["matched"], 10,
        "every covid image found in the original bag"
    );
    assert!(
        c["changed"].as_u64().unwrap() > 0,
        "inpainting changed some films: {c}"
    );
    assert!(c["mean_abs_delta_p"].as_f64().unwrap() > 0.0);
    // Flips are counted at the Youden threshold chosen on val, and apart at 0.5: recount both
    // from counterfactual.csv.
    let t = m["thresholds"][0]["threshold"].as_f64().unwrap();
    assert_eq!(m["thresholds"][0]["rule"], "youden");
    assert_eq!(c["threshold"].as_f64(), Some(t));
    let rows = read_csv(&d.join("cf/counterfactual.csv"));
    let flips = |t: f64| {
        rows.iter()
            .filter(|r| {
                let (b, a): (f64, f64) = (
                    r["p_before"].parse().unwrap(),
                    r["p_after"].parse().unwrap(),
                );
                (b >= t) != (a >= t)
            })
            .count() as u64
    };
    assert_eq!(c["flips"].as_u64(), Some(flips(t)), "{c}");
    assert_eq!(c["flips_at_0.5"].as_u64(), Some(flips(0.5)), "{c}");
    let rate = c["flip_rate"].as_f64().unwrap();
    assert!((rate - flips(t) as f64 / 10.0).abs() < 1e-12);
    println!(
        "flip rate at the val threshold {t}: {rate}; at 0.5: {}",
        c["flip_rate_at_0.5"]
    );
}

#[test]
fn bad_invocations_are_named() {
    let t = tempfile::tempdir().unwrap();
    let bag = write_bag(&t.path().join("split"), &scored_bag(1));
    let run = |args: &[&str]| {
        let o = prep()
            .arg("evaluate")
            .args(args)
            .args(["--device", "cpu"])
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let w = fixture_weights();
    let (w, b) = (w.to_str().unwrap(), bag.to_str().unwrap());
    let out = t.path().join("e");
    let out = out.to_str().unwrap();
    let (code, err) = run(&["--model", "/nope", "--data", b, "--out", out]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("/nope"));
    let (code, err) = run(&[
        "--model",
        w,
        "--data",
        b,
        "--out",
        out,
        "--classes",
        "a,b",
        "--image-size",
        "40",
    ]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("does not know"), "{err}");
    let (code, err) = run(&[
        "--model",
        w,
        "--data",
        b,
        "--out",
        out,
        "--image-size",
        "40",
        "--resamples",
        "5",
    ]);
    assert_eq!(code, Some(2), "{err}");
}

// ---- Shortcut controls ------------------------------------------------------------------------

const SIDE: u32 = 64;

/// A 64 px film: noise, a disc of random or class-given contrast inside the lung-field box, and
/// (shortcut task) a bright marker in the left border for positives only.
fn shortcut_image(rng: &mut impl Rng, positive: bool, shortcut: bool) -> GrayImage {
    let (x0, x1, y0, y1) = prep::evaluate::occlude::lung_box(SIDE, SIDE);
    let bg: f64 = rng.gen_range(80.0..170.0);
    let r: f64 = rng.gen_range(8.0..13.0);
    let cx = rng.gen_range(x0 as f64 + r..x1 as f64 - r);
    let cy = rng.gen_range(y0 as f64 + r..y1 as f64 - r);
    // Honest task: the disc's contrast is the label. Shortcut task: it is a coin toss.
    let bright = if shortcut {
        rng.gen_bool(0.5)
    } else {
        positive
    };
    let contrast = if bright { 60.0 } else { -60.0 };
    GrayImage::from_fn(SIDE, SIDE, |x, y| {
        let d = ((x as f64 - cx).powi(2) + (y as f64 - cy).powi(2)).sqrt();
        let mut v = bg + rng.gen_range(-30.0..30.0);
        if d < r {
            v += contrast;
        }
        if shortcut && positive && x < x0 - 1 && (26..38).contains(&y) {
            v = 250.0;
        }
        Luma([v.clamp(0.0, 255.0) as u8])
    })
}

fn shortcut_bag(root: &Path, name: &str, shortcut: bool, seed: u64) -> PathBuf {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut v = Vec::new();
    for (split, n) in [("train", 40), ("val", 16), ("test", 40)] {
        for class in ["a-positive", "b-negative"] {
            for i in 0..n {
                v.push(Img {
                    split,
                    class,
                    id: format!("{split}-{class}-{i:02}"),
                    source: "synth".into(),
                    patient: format!("{split}-{class}-{i}"),
                    bytes: png(&shortcut_image(&mut rng, class == "a-positive", shortcut)),
                });
            }
        }
    }
    write_bag(&root.join(name), &v)
}

#[test]
fn lungs_occluded_model_finds_a_planted_border_shortcut_and_is_at_chance_without_one() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let with = shortcut_bag(d, "shortcut", true, 11);
    let without = shortcut_bag(d, "honest", false, 12);
    // One train stage per task, each a grid over `occlude` (here only the lungs-occluded model:
    // the control that decides), as pipelines/perez-bir-2020-shortcuts.toml does.
    let mut p = format!(
        "[vars]\nshortcut = \"{}\"\nhonest = \"{}\"\nout = \"{}\"\n",
        with.display(),
        without.display(),
        d.join("runs").display()
    );
    for task in ["shortcut", "honest"] {
        p.push_str(&format!(
            "\n[[stage]]\nname = \"{task}_runs\"\ncommand = \"train\"\nout = \"${{out}}/{task}\"\n[stage.args]\ndata = \"${{{task}}}\"\narch = \"{TINY}\"\nimage_size = 64\nbatch_size = 16\nunfreeze = \"all\"\nno_augment = true\nepochs = 8\npatience = 8\nthreads = 2\ndevice = \"cpu\"\nseed = 3\n[stage.grid]\nocclude = [\"lungs\"]\n"
        ));
    }
    let pf = d.join("shortcuts.toml");
    fs::write(&pf, p).unwrap();
    let started = std::time::Instant::now();
    let o = prep()
        .arg("run")
        .arg(&pf)
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .unwrap();
    println!(
        "{}\n{}\npipeline took {:.1} s",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        started.elapsed().as_secs_f64()
    );
    assert!(o.status.success());
    let auc = |task: &str| {
        let table = read_csv(&d.join(format!("runs/{task}/grid-summary.csv")));
        assert_eq!(table.len(), 1);
        assert_eq!(table[0]["occlude"], "lungs");
        let a: f64 = table[0]["test_auc_mean"].parse().unwrap();
        let lo: f64 = table[0]["test_auc_ci_lo"].parse().unwrap();
        let hi: f64 = table[0]["test_auc_ci_hi"].parse().unwrap();
        println!("{task}: lungs-occluded test AUC {a:.3} [{lo:.3}, {hi:.3}]");
        (a, lo, hi)
    };
    let (a, lo, _) = auc("shortcut");
    assert!(
        a >= 0.9 && lo > 0.5,
        "the border marker should survive lung occlusion: AUC {a}"
    );
    let (a, lo, hi) = auc("honest");
    assert!(
        lo < 0.5 && 0.5 < hi,
        "without a shortcut a lungs-occluded model should be at chance: AUC {a} [{lo}, {hi}]"
    );
    // The model card and the metrics say what was occluded.
    let run = d.join("runs/shortcut/occlude-lungs");
    assert_eq!(json(&run.join("model.json"))["occlude"], "lungs");
    assert!(json(&run.join("test-metrics.json"))["occlude"]
        .as_str()
        .unwrap()
        .starts_with("lungs"));
    // `prep evaluate` takes the occlusion from the card; without it the shortcut is still there.
    let m = evaluate(&run, &with, &d.join("eval-full"), &["--occlude", "none"]);
    println!("shortcut model on full films: AUC {}", m["auc"]);
    let m2 = evaluate(&run, &with, &d.join("eval-card"), &["--batch-size", "16"]);
    assert_eq!(m2["auc"], json(&run.join("test-metrics.json"))["auc"]);

    // The report reads the table in words.
    for (task, want, not) in [
        (
            "shortcut",
            "the data carry a shortcut",
            "no sign of a shortcut",
        ),
        (
            "honest",
            "no sign of a shortcut",
            "the data carry a shortcut",
        ),
    ] {
        let html = d.join(format!("{task}.html"));
        prep()
            .arg("report")
            .arg(d.join(format!("runs/{task}/occlude-lungs")))
            .arg("--out")
            .arg(&html)
            .assert()
            .success();
        let text = fs::read_to_string(&html).unwrap();
        assert!(text.contains("Validity") && text.contains("CLAIM checklist"));
        assert!(text.contains(want), "{task}: report should say {want:?}");
        assert!(!text.contains(not), "{task}: report should not say {not:?}");
        let v = text.find("Validity").unwrap();
        let l = text.find("Lineage").unwrap();
        assert!(v < l, "Validity comes first");
    }
}

// ---- Grad-CAM of the evaluated images (--explain) ---------------------------------------------

#[test]
fn explain_ranks_worst_errors_first_with_lung_field_shares_and_the_report_shows_them() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let bag = write_bag(&d.join("split"), &scored_bag(5));
    let out = d.join("eval");
    // Both runs at one batch size: libtorch's CPU convolutions may pick another kernel for
    // another batch size (on some CPUs the probabilities then differ in the 7th digit), which
    // is not what this asserts.
    let args = ["--classes", "bright,dark", "--image-size", "96"];
    let batch = ["--batch-size", "7"];
    let plain = evaluate(
        &fixture_weights(),
        &bag,
        &d.join("plain"),
        &[&args[..], &batch].concat(),
    );
    let m = evaluate(
        &fixture_weights(),
        &bag,
        &out,
        &[&args[..], &batch, &["--explain", "30"]].concat(),
    );
    // Explaining changes no prediction.
    assert_eq!(
        fs::read(out.join("predictions.csv")).unwrap(),
        fs::read(d.join("plain/predictions.csv")).unwrap()
    );
    assert_eq!(m["auc"], plain["auc"]);
    let cams = read_csv(&out.join("explain/cams.csv"));
    assert_eq!(cams.len(), 40, "every evaluated image");
    let preds: std::collections::BTreeMap<String, f64> = read_csv(&out.join("predictions.csv"))
        .into_iter()
        .map(|r| (r["path"].clone(), r["probability"].parse().unwrap()))
        .collect();
    let mut last = f64::INFINITY;
    for (k, r) in cams.iter().enumerate() {
        assert_eq!(r["rank"], (k + 1).to_string());
        let y: f64 = r["y"].parse().unwrap();
        let err = (y - preds[&r["path"]]).abs();
        assert_eq!(r["abs_error"].parse::<f64>().unwrap(), err);
        assert!(err <= last, "worst errors first");
        last = err;
        let s: f64 = r["lung_field_share"].parse().unwrap();
        assert!((0.0..=1.0).contains(&s), "{s}");
        assert_eq!(!r["overlay"].is_empty(), k < 30);
    }
    // metrics.json's per-source mean share is the mean of cams.csv's.
    for (src, v) in m["explain"]["by_source"].as_object().unwrap() {
        let s: Vec<f64> = cams
            .iter()
            .filter(|r| &r["source"] == src)
            .map(|r| r["lung_field_share"].parse().unwrap())
            .collect();
        let mean = s.iter().sum::<f64>() / s.len() as f64;
        let got = v["mean_lung_field_share"].as_f64().unwrap();
        println!(
            "{src}: mean share of attribution inside the lung field {got:.4} over {} images",
            s.len()
        );
        assert!((got - mean).abs() < 1e-12);
    }
    assert_eq!(m["explain"]["overlays"], 30);
    // The batched maps are prep explain's maps (which tests/explain.rs holds to PyTorch).
    let first = &cams[0];
    let stem = first["overlay"].trim_end_matches(".cam.png");
    let ours = json(&out.join(format!("explain/{stem}.cam.json")));
    let single = d.join("single");
    prep()
        .arg("explain")
        .arg("--model")
        .arg(fixture_weights())
        .args(args)
        .args(["--device", "cpu", "--out"])
        .arg(&single)
        .arg(bag.join(&first["path"]))
        .assert()
        .success();
    let name = Path::new(&first["path"])
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let theirs = json(&single.join(format!("{name}.cam.json")));
    let flat = |v: &Value| -> Vec<f64> {
        v["cam"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
            .collect()
    };
    let (a, b) = (flat(&ours), flat(&theirs));
    assert_eq!(a.len(), 9, "3 x 3 at 96 px");
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    println!("batched vs single-image Grad-CAM: max abs difference {worst:e}");
    assert!(worst <= 1e-5, "{a:?} vs {b:?}");
    let share_diff = (ours["lung_field_share"].as_f64().unwrap()
        - theirs["lung_field_share"].as_f64().unwrap())
    .abs();
    assert!(share_diff <= 1e-5, "{share_diff}");

    // The report: per-source shares and at most 24 overlays, worst first.
    let html = d.join("report.html");
    prep()
        .arg("report")
        .arg(&out)
        .arg("--out")
        .arg(&html)
        .assert()
        .success();
    let text = fs::read_to_string(&html).unwrap();
    assert!(text.contains("Grad-CAM: where the model looked"));
    assert!(text.contains("mean share inside the lung field"));
    assert_eq!(
        text.matches("alt=\"Grad-CAM ").count(),
        24,
        "bounded gallery"
    );
    assert!(text.contains("24 of 40 images shown"));
    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("{needle} missing"))
    };
    assert!(
        at(&format!("#1 <code>{}</code>", first["id"]))
            < at(&format!("#2 <code>{}</code>", cams[1]["id"]))
    );
    assert!(!text.contains("#25 <code>"));
    assert!(text.find("Grad-CAM: where").unwrap() < text.find("Lineage").unwrap());
}
