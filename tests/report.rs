//! `prep report`: the page names the lineage, exclusions and counts, flags a damaged bag, and
//! renders in a real headless browser (Debian's chromium) when one is installed.

mod common;

use common::*;
use predicates::prelude::*;
use std::fs;
use std::path::Path;
use tempfile::tempdir;

fn demo(dir: &Path) {
    prep()
        .args(["demo", "--size", "64", "--out"])
        .arg(dir)
        .assert()
        .success();
}

/// Render `html` with headless chromium: (screenshot PNG, DOM text), or None when absent.
pub fn chromium(html: &Path, dir: &Path) -> Option<(image::DynamicImage, String)> {
    let bin = ["chromium", "chromium-browser"].into_iter().find(|b| {
        std::process::Command::new(b)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    });
    let Some(bin) = bin else {
        eprintln!("SKIP: no chromium (apt-get install chromium; .ci/run does)");
        return None;
    };
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ];
    let shot = dir.join("shot.png");
    let url = format!("file://{}", html.canonicalize().unwrap().display());
    let o = std::process::Command::new(bin)
        .args(flags)
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1200,2400")
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let dom = std::process::Command::new(bin)
        .args(flags)
        .arg(format!(
            "--user-data-dir={}",
            dir.join("profile2").display()
        ))
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .unwrap();
    Some((
        image::open(&shot).unwrap(),
        String::from_utf8_lossy(&dom.stdout).into_owned(),
    ))
}

#[test]
fn report_of_a_bag_shows_lineage_exclusions_and_counts() {
    let t = tempdir().unwrap();
    demo(&t.path().join("d"));
    let bag = t.path().join("d/bags/covid");
    let out = t.path().join("r.html");
    prep()
        .arg("report")
        .arg(&bag)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let html = fs::read_to_string(&out).unwrap();
    for want in [
        "Lineage",
        "intact",
        "prep filter",
        "unsafe-path",
        "duplicate-file",
        "distinct patient_id",
    ] {
        assert!(html.contains(want), "missing {want:?}");
    }
    // Self-contained: nothing is fetched from elsewhere.
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "report must not load remote resources"
    );

    if let Some((shot, dom)) = chromium(&out, t.path()) {
        assert!(dom.contains("Lineage") && dom.contains("unreadable-image"));
        // The page really drew something: many distinct grey levels, not a blank canvas.
        let g = shot.to_luma8();
        let mut levels = std::collections::BTreeSet::new();
        for p in g.pixels() {
            levels.insert(p[0]);
        }
        assert!(
            levels.len() > 20,
            "screenshot looks blank ({} grey levels)",
            levels.len()
        );
    }
}

#[test]
fn damaged_bag_is_flagged_in_the_report() {
    let t = tempdir().unwrap();
    demo(&t.path().join("d"));
    let bag = t.path().join("d/bags/covid");
    let img = read_csv(&bag.join("data/records.csv"))[0]["path"].clone();
    fs::write(bag.join(&img), b"tampered").unwrap();
    let out = t.path().join("r.html");
    prep()
        .arg("report")
        .arg(&bag)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let html = fs::read_to_string(&out).unwrap();
    assert!(html.contains("problem(s)") && html.contains(&format!("altered: {img}")));
    prep()
        .arg("report")
        .arg(t.path().join("nope"))
        .arg("--out")
        .arg(&out)
        .assert()
        .code(3)
        .stderr(predicate::str::contains("nope"));
}
