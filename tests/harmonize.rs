//! `prep harmonize`: inputs untouched, the output verifies, one record per image with what was
//! done to it, frames cropped, every image the asked size in 8-bit grey PNG, unreadable images
//! excluded with their reason, and the audit's probe loses what it used.

mod common;

use common::*;
use predicates::prelude::*;
use prep::synth::{chest_image, encode_png, Burn};
use std::fs;
use std::path::Path;
use tempfile::tempdir;

/// COVID-like films of many sizes (some JPEG) and controls of one size with a black frame.
fn sources(root: &Path) {
    let c = root.join("c");
    let h = root.join("h");
    fs::create_dir_all(&c).unwrap();
    fs::create_dir_all(&h).unwrap();
    for i in 0..20u32 {
        let name = format!("cov-{i:03}");
        // Near-square, so that after cropping the film shows the same anatomy as a control.
        let side = 96 + 5 * i;
        let img = chest_image(side, side + i % 3, 9, &name, 0.0, Burn::default());
        if i % 2 == 0 {
            img.save(c.join(format!("{name}.jpg"))).unwrap();
        } else {
            fs::write(c.join(format!("{name}.png")), encode_png(&img).unwrap()).unwrap();
        }
        let name = format!("ctl-{i:03}");
        let mut img = chest_image(128, 128, 9, &name, 0.0, Burn::default());
        for (x, y, p) in img.enumerate_pixels_mut() {
            if x < 8 || y < 8 || x >= 120 || y >= 120 {
                p[0] = ((x + y) % 4) as u8;
            }
        }
        fs::write(h.join(format!("{name}.png")), encode_png(&img).unwrap()).unwrap();
    }
    folder_bag(&c, "covid", &root.join("bag-c"));
    folder_bag(&h, "healthy", &root.join("bag-h"));
}

#[test]
fn harmonize_records_every_image_and_leaves_inputs_alone() {
    let t = tempdir().unwrap();
    sources(t.path());
    let (c, h) = (t.path().join("bag-c"), t.path().join("bag-h"));
    let before = (tree_hashes(&c), tree_hashes(&h));
    let out = t.path().join("harm");
    prep()
        .arg("harmonize")
        .arg(&c)
        .arg(&h)
        .arg("--out")
        .arg(&out)
        .args(["--size", "64"])
        .assert()
        .success()
        .stdout(predicate::str::contains("40 image(s) harmonized to 64x64"));
    assert_eq!(before, (tree_hashes(&c), tree_hashes(&h)), "inputs changed");
    prep().arg("verify").arg(&out).assert().success();
    let rows = read_csv(&out.join("data/records.csv"));
    assert_eq!(rows.len(), 40);
    for r in &rows {
        assert_eq!((r["width"].as_str(), r["height"].as_str()), ("64", "64"));
        assert!(r["path"].ends_with(".png"));
        assert_eq!(r["fit"], "crop");
        assert_eq!(r["intensity"], "hist");
        let img = image::open(out.join(&r["path"])).unwrap();
        assert_eq!(img.color(), image::ColorType::L8);
        assert_eq!((img.width(), img.height()), (64, 64));
        let src_bag = if r["label"] == "covid" { &c } else { &h };
        assert_eq!(r["source_bag"], src_bag.to_string_lossy());
        if r["id"].starts_with("ctl") {
            // The 8-px black frame is found and cropped.
            assert_eq!(r["border_cropped"], "true", "{r:?}");
            assert_eq!(r["content_box"], "8,8,112,112", "{r:?}");
            assert_eq!(r["original_width"], "128");
        }
    }
    let prov: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("data/provenance.json")).unwrap()).unwrap();
    assert_eq!(prov["stage"], "harmonize");
    assert_eq!(prov["parameters"]["size"], 64);
    assert_eq!(prov["inputs"].as_array().unwrap().len(), 2);

    // Padding instead of cropping is chosen and recorded.
    let pad = t.path().join("pad");
    prep()
        .arg("harmonize")
        .arg(&c)
        .arg("--out")
        .arg(&pad)
        .args(["--size", "32", "--fit", "pad", "--intensity", "clahe"])
        .assert()
        .success();
    let rows = read_csv(&pad.join("data/records.csv"));
    assert!(rows
        .iter()
        .all(|r| r["fit"] == "pad" && r["intensity"] == "clahe"));

    // A split can take its classes from the pooled bag.
    prep()
        .args(["split", "--covid"])
        .arg(&out)
        .arg("--healthy")
        .arg(&out)
        .arg("--out")
        .arg(t.path().join("split"))
        .assert()
        .success();
}

#[test]
fn harmonize_takes_away_what_the_probe_used() {
    let t = tempdir().unwrap();
    sources(t.path());
    let (c, h) = (t.path().join("bag-c"), t.path().join("bag-h"));
    let before = t.path().join("audit-before");
    prep()
        .arg("audit")
        .arg(&c)
        .arg(&h)
        .arg("--out")
        .arg(&before)
        .assert()
        .success()
        .stdout(predicate::str::contains("verdict: confounded"));
    let out = t.path().join("harm");
    prep()
        .arg("harmonize")
        .arg(&c)
        .arg(&h)
        .arg("--out")
        .arg(&out)
        .args(["--size", "64"])
        .assert()
        .success();
    let after = t.path().join("audit-after");
    prep()
        .arg("audit")
        .arg(&out)
        .arg("--out")
        .arg(&after)
        .assert()
        .success();
    let read = |d: &Path| -> serde_json::Value {
        serde_json::from_slice(&fs::read(d.join("audit.json")).unwrap()).unwrap()
    };
    let (b, a) = (read(&before), read(&after));
    let auc = |v: &serde_json::Value| v["probe"]["auc"].as_f64().unwrap();
    // What the probe used before (size, format) is gone; what is left in these synthetic films
    // (their zoom after the frame crop, JPEG grain) may still tell them apart.
    assert!(auc(&a) <= auc(&b), "probe AUC {} -> {}", auc(&b), auc(&a));
    let constant = a["probe"]["constant_features"].to_string();
    for f in ["width", "height", "format_jpeg", "channels", "size_share"] {
        assert!(constant.contains(f), "{f} still varies: {constant}");
    }
    let top = a["probe"]["top_features"].to_string();
    assert!(!top.contains("\"width\"") && !top.contains("jpeg"), "{top}");
}

#[test]
fn unreadable_images_are_excluded_and_collisions_refused() {
    let t = tempdir().unwrap();
    sources(t.path());
    let c = t.path().join("bag-c");
    // A bag whose image does not decode (hashes valid): harmonize records it, loses nothing.
    let d = t.path().join("broken");
    fs::create_dir_all(&d).unwrap();
    let good = chest_image(40, 40, 1, "x", 0.0, Burn::default());
    fs::write(d.join("ok.png"), encode_png(&good).unwrap()).unwrap();
    let bag = t.path().join("bag-b");
    folder_bag(&d, "covid", &bag);
    let recs = fs::read_to_string(bag.join("data/records.csv")).unwrap();
    let broken_row = recs
        .lines()
        .nth(1)
        .unwrap()
        .replace("ok.png", "bad.png")
        .replacen("ok,", "bad,", 1);
    bag_of(
        &t.path().join("bag-b2"),
        &[
            (
                "records.csv".into(),
                format!("{recs}{broken_row}\n").into_bytes(),
            ),
            (
                "images/covid/ok.png".into(),
                fs::read(bag.join("data/images/covid/ok.png")).unwrap(),
            ),
            (
                "images/covid/bad.png".into(),
                b"\x89PNG\r\n\x1a\nnot really".to_vec(),
            ),
        ],
    );
    let out = t.path().join("hb");
    prep()
        .arg("harmonize")
        .arg(t.path().join("bag-b2"))
        .arg("--out")
        .arg(&out)
        .args(["--size", "32"])
        .assert()
        .success()
        .stderr(predicate::str::contains("could not be decoded"));
    let ex = read_csv(&out.join("data/excluded.csv"));
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0]["reason"], "unreadable-image");
    assert!(ex[0]["file"].contains("bad.png"));
    assert_eq!(read_csv(&out.join("data/records.csv")).len(), 1);
    // The same bag twice, or two bags sharing image ids, is refused.
    prep()
        .arg("harmonize")
        .arg(&c)
        .arg(&c)
        .arg("--out")
        .arg(t.path().join("x"))
        .assert()
        .code(2);
}
