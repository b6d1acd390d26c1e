//! `prep audit`: a size-confounded set is called confounded with width/height among the top
//! features, an unconfounded one ok; byte-identical with 1 or 2 threads; bad input (one class,
//! no labels, a corrupt image) is a clear error with exit code 3; --fail-on gives exit 5; and
//! the paper-style split of real Cohen COVID films against real NIH films is confounded.

mod common;

use common::*;
use predicates::prelude::*;
use prep::synth::{chest_image, encode_png, Burn};
use std::fs;
use std::path::{Path, PathBuf};
use tempfile::tempdir;

/// A folder of `n` synthetic films named `<prefix>-NNN.png`; `size(i)` gives each one's size.
pub fn films(dir: &Path, prefix: &str, n: usize, size: impl Fn(usize) -> (u32, u32)) {
    fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let (w, h) = size(i);
        let name = format!("{prefix}-{i:03}");
        let img = chest_image(w, h, 5, &name, 0.0, Burn::default());
        fs::write(dir.join(format!("{name}.png")), encode_png(&img).unwrap()).unwrap();
    }
}

/// COVID films of many sizes against controls all 160x160: nothing but size tells them apart.
fn size_confounded(root: &Path) -> (PathBuf, PathBuf) {
    films(&root.join("c"), "cov", 24, |i| {
        let w = [110, 130, 190, 210][i % 4] + i as u32;
        (w, [120, 140, 200, 220][(i / 4) % 4])
    });
    films(&root.join("h"), "ctl", 24, |_| (160, 160));
    let (c, h) = (root.join("bag-c"), root.join("bag-h"));
    folder_bag(&root.join("c"), "covid", &c);
    folder_bag(&root.join("h"), "healthy", &h);
    (c, h)
}

fn audit_json(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(dir.join("audit.json")).unwrap()).unwrap()
}

#[test]
fn size_confounded_set_is_confounded_with_size_on_top() {
    let t = tempdir().unwrap();
    let (c, h) = size_confounded(t.path());
    let out = t.path().join("audit");
    prep()
        .arg("audit")
        .arg(&c)
        .arg(&h)
        .arg("--out")
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::contains("verdict: confounded"));
    let a = audit_json(&out);
    assert_eq!(a["verdict"], "confounded");
    let ci = a["probe"]["ci"].as_array().unwrap();
    assert!(ci[0].as_f64().unwrap() >= 0.75, "{ci:?}");
    let top: Vec<&str> = a["probe"]["top_features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        top.iter().any(|f| *f == "width" || *f == "height"),
        "top features {top:?}"
    );
    assert!(a["source_probe"]["auc"].is_number());
    assert!(
        a["tables"]["label_by_source"]["cramers_v"]
            .as_f64()
            .unwrap()
            > 0.99
    );
    // Both classes come from their own source: total confounding, said in words.
    let warnings = a["warnings"].to_string();
    assert!(warnings.contains("total confounding"), "{warnings}");
    for f in [
        "audit.md",
        "features.csv",
        "probe-roc.png",
        "probe-features.png",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    // --fail-on confounded: exit 5.
    prep()
        .arg("audit")
        .arg(&c)
        .arg(&h)
        .arg("--out")
        .arg(&out)
        .args(["--force", "--fail-on", "confounded"])
        .assert()
        .code(5);
}

#[test]
fn unconfounded_set_is_ok_and_fail_on_passes() {
    let t = tempdir().unwrap();
    // The same generator, size and format for both classes: a coin decides the label.
    films(&t.path().join("a"), "a", 30, |_| (96, 96));
    films(&t.path().join("b"), "b", 30, |_| (96, 96));
    folder_bag(&t.path().join("a"), "covid", &t.path().join("bag-a"));
    folder_bag(&t.path().join("b"), "healthy", &t.path().join("bag-b"));
    let out = t.path().join("audit");
    prep()
        .arg("audit")
        .arg(t.path().join("bag-a"))
        .arg(t.path().join("bag-b"))
        .arg("--out")
        .arg(&out)
        .args(["--fail-on", "confounded"])
        .assert()
        .success()
        .stdout(predicate::str::contains("verdict: ok"));
    let a = audit_json(&out);
    assert_eq!(a["verdict"], "ok");
    assert!(a["probe"]["ci"][0].as_f64().unwrap() < 0.75);
    let constant = a["probe"]["constant_features"].to_string();
    assert!(constant.contains("width") && constant.contains("height"));
}

#[test]
fn audit_is_byte_identical_with_one_or_two_threads() {
    let t = tempdir().unwrap();
    let (c, h) = size_confounded(t.path());
    let mut outs = Vec::new();
    for threads in ["1", "2"] {
        let out = t.path().join(format!("audit-{threads}"));
        prep()
            .env("RAYON_NUM_THREADS", threads)
            .arg("audit")
            .arg(&c)
            .arg(&h)
            .arg("--out")
            .arg(&out)
            .args(["--seed", "3"])
            .assert()
            .success();
        outs.push(out);
    }
    for f in ["audit.json", "audit.md", "features.csv"] {
        assert_eq!(
            fs::read(outs[0].join(f)).unwrap(),
            fs::read(outs[1].join(f)).unwrap(),
            "{f} differs between 1 and 2 threads"
        );
    }
}

/// A copy of `bag` whose records.csv is `edit(records)` and with `extra` payload files.
fn rebag(bag: &Path, out: &Path, edit: impl Fn(String) -> String, extra: &[(&str, &[u8])]) {
    let mut files = Vec::new();
    for e in walkdir::WalkDir::new(bag.join("data")) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let rel = e.path().strip_prefix(bag.join("data")).unwrap();
            let rel = rel.to_string_lossy().into_owned();
            let bytes = fs::read(e.path()).unwrap();
            let bytes = if rel == "records.csv" {
                edit(String::from_utf8(bytes).unwrap()).into_bytes()
            } else {
                bytes
            };
            files.push((rel, bytes));
        }
    }
    files.extend(extra.iter().map(|(r, b)| (r.to_string(), b.to_vec())));
    bag_of(out, &files);
}

#[test]
fn bad_input_is_a_clear_error() {
    let t = tempdir().unwrap();
    let (c, h) = size_confounded(t.path());
    let out = t.path().join("audit");
    // One class.
    prep()
        .arg("audit")
        .arg(&c)
        .arg("--out")
        .arg(&out)
        .assert()
        .code(3)
        .stderr(predicate::str::contains("one class only (covid)"));
    // No labels: the label column removed, or emptied.
    let nolabel = t.path().join("nolabel");
    rebag(&h, &nolabel, |s| s.replace(",label,", ",tag,"), &[]);
    prep()
        .arg("audit")
        .arg(&c)
        .arg(&nolabel)
        .arg("--out")
        .arg(&out)
        .assert()
        .code(3)
        .stderr(predicate::str::contains("no labels"));
    let empty = t.path().join("emptylabel");
    rebag(&h, &empty, |s| s.replace(",healthy,", ",,"), &[]);
    prep()
        .arg("audit")
        .arg(&c)
        .arg(&empty)
        .arg("--out")
        .arg(&out)
        .assert()
        .code(3)
        .stderr(predicate::str::contains("row 2").and(predicate::str::contains("no label")));
    // A corrupt image: a truncated PNG listed in records.csv.
    let corrupt = t.path().join("corrupt");
    let good = fs::read(h.join("data/images/healthy/ctl-000.png")).unwrap();
    rebag(
        &h,
        &corrupt,
        |s| {
            s.replace(
                "data/images/healthy/ctl-001.png",
                "data/images/healthy/broken.png",
            )
        },
        &[("images/healthy/broken.png", &good[..good.len() / 3])],
    );
    prep()
        .arg("audit")
        .arg(&c)
        .arg(&corrupt)
        .arg("--out")
        .arg(&out)
        .assert()
        .code(3)
        .stderr(predicate::str::contains("broken.png").and(predicate::str::contains("corrupt")));
    assert!(!out.exists(), "nothing is left behind on error");
    // A damaged bag is refused before anything is read.
    fs::write(c.join("data/images/covid/cov-000.png"), b"tampered").unwrap();
    prep()
        .arg("audit")
        .arg(&c)
        .arg(&h)
        .arg("--out")
        .arg(&out)
        .assert()
        .code(4);
}

/// The paper's design on real films: Cohen COVID films against NIH ChestX-ray14 films (diseased
/// and No Finding), split 70/30 by patient. The probe must find it confounded by size.
#[test]
fn real_paper_style_split_is_confounded_by_size() {
    let Some(data) = shared_data() else { return };
    let nih_table = data.join("nih/Data_Entry_2017_v2020.csv.gz");
    if !nih_table.is_file() || !data.join("samples/cohen/metadata_subset.csv").is_file() {
        eprintln!("SKIP: the NIH table or the Cohen sample metadata is absent");
        return;
    }
    let t = tempdir().unwrap();
    let table = t.path().join("Data_Entry_2017.csv");
    let gz = std::process::Command::new("gzip")
        .arg("-dc")
        .arg(&nih_table)
        .output()
        .unwrap();
    if !gz.status.success() {
        eprintln!("SKIP: gzip could not unpack {}", nih_table.display());
        return;
    }
    fs::write(&table, gz.stdout).unwrap();
    let bags = t.path().join("bags");
    prep()
        .args(["filter", "--source", "cohen", "--dataset"])
        .arg(data.join("samples/cohen"))
        .arg("--metadata")
        .arg(data.join("samples/cohen/metadata_subset.csv"))
        .arg("--out")
        .arg(bags.join("covid"))
        .assert()
        .success();
    prep()
        .args(["filter", "--source", "nih", "--label-others", "--dataset"])
        .arg(data.join("nih/images"))
        .arg("--metadata")
        .arg(&table)
        .arg("--out")
        .arg(bags.join("nih"))
        .assert()
        .success();
    prep()
        .args(["split", "--train", "0.7", "--seed", "1", "--covid"])
        .arg(bags.join("covid"))
        .arg("--healthy")
        .arg(bags.join("nih"))
        .arg("--diseased")
        .arg(bags.join("nih"))
        .arg("--out")
        .arg(bags.join("split"))
        .assert()
        .success();
    let out = t.path().join("audit");
    prep()
        .arg("audit")
        .arg(bags.join("split"))
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let a = audit_json(&out);
    eprintln!("real split: verdict {}, probe {}", a["verdict"], a["probe"]);
    assert_eq!(a["verdict"], "confounded");
    let top = a["probe"]["top_features"].to_string();
    assert!(
        top.contains("\"width\"") || top.contains("\"height\""),
        "top features {top}"
    );
    // Sex and age come back from the source tables through the lineage.
    let sex = a["tables"]["label_by_sex"]["columns"].to_string();
    assert!(sex.contains("\"M\"") && sex.contains("\"F\""), "{sex}");
}
