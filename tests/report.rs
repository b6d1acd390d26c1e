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

/// A bag with thousands of inpainted records (two sources, noisy images that compress badly):
/// the gallery shows a bounded choice per source with counts for the rest, and the page stays
/// under 20 MB.
#[test]
fn gallery_of_many_inpainted_films_is_bounded() {
    use prep::manifest::{write_csv, BagWriter, ColumnType, CroissantSpec, StageInfo};
    let t = tempdir().unwrap();
    let bag = t.path().join("bag");
    let w = BagWriter::create(&bag, false).unwrap();
    // Noise thumbnails are the worst case for PNG size.
    let noisy = |k: u64| {
        let mut s = k.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let img = image::GrayImage::from_fn(600, 600, |_, _| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            image::Luma([(s >> 32) as u8])
        });
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        png
    };
    for k in 0..4u64 {
        w.write_payload(&format!("images/f{k}.png"), &noisy(k))
            .unwrap();
        w.write_payload(&format!("masks/f{k}.png"), &noisy(k + 10))
            .unwrap();
    }
    #[derive(serde::Serialize)]
    struct Row {
        id: String,
        path: String,
        source: String,
        mask_pixels: u64,
        mask_path: String,
        method: String,
    }
    let n = 3000u64;
    let rows: Vec<Row> = (0..n)
        .map(|i| Row {
            id: format!("film.{i:05}"),
            path: format!("data/images/f{}.png", i % 4),
            source: if i % 3 == 0 { "nih" } else { "cohen" }.into(),
            mask_pixels: (i * 7919) % 100_000,
            mask_path: format!("data/masks/f{}.png", i % 4),
            method: "telea".into(),
        })
        .collect();
    let cols = ["id", "path", "source", "mask_pixels", "mask_path", "method"];
    w.write_payload("records.csv", &write_csv(&rows, &cols).unwrap())
        .unwrap();
    w.finish(StageInfo {
        name: "test".into(),
        description: "many inpainted films".into(),
        croissant: CroissantSpec {
            license: "test".into(),
            url: String::new(),
            cite_as: String::new(),
            table: "data/records.csv".into(),
            columns: cols
                .iter()
                .map(|c| (c.to_string(), ColumnType::Text, String::new()))
                .collect(),
            image_globs: vec![("data/images/*.png".into(), "image/png".into())],
        },
    })
    .unwrap();
    let out = t.path().join("r.html");
    prep()
        .arg("report")
        .arg(&bag)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let html = fs::read_to_string(&out).unwrap();
    let size = html.len();
    assert!(size < 20_000_000, "page is {size} bytes");
    let cards = html.matches("<div class=card>").count();
    assert_eq!(cards, 2 * 9, "3 worst + 6 sampled per source");
    let nih = (0..n).filter(|i| i % 3 == 0).count();
    assert!(
        html.contains(&format!("nih — 9 shown, {} more not shown", nih - 9)),
        "nih counts"
    );
    assert!(html.contains(&format!(
        "cohen — 9 shown, {} more not shown",
        n as usize - nih - 9
    )));
    // The largest masks of each source are among those shown.
    let worst_nih = (0..n)
        .filter(|i| i % 3 == 0)
        .max_by_key(|i| ((i * 7919) % 100_000, std::cmp::Reverse(*i)))
        .unwrap();
    assert!(
        html.contains(&format!("<b>film.{worst_nih:05}</b>")),
        "worst nih film shown"
    );
    // Seeded: the same bag gives the same page.
    let again = t.path().join("r2.html");
    prep()
        .arg("report")
        .arg(&bag)
        .arg("--out")
        .arg(&again)
        .assert()
        .success();
    let cards_of = |h: &str| -> Vec<String> {
        h.match_indices("<div class=card><div><b>")
            .map(|(k, _)| h[k..k + 40].to_string())
            .collect()
    };
    assert_eq!(
        cards_of(&html),
        cards_of(&fs::read_to_string(&again).unwrap())
    );
}
