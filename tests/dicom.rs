//! `prep filter` on DICOM sources: films made with pydicom (tests/dicom/films.py) decoded to
//! pydicom's values, an RSNA-shaped table filtered to the right counts, hostile objects excluded
//! with reasons, no PHI in any output, and DICOM-born bags through inpaint and split.
//! Every test skips with a printed reason when no Python with pydicom is found.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const SALT: &str = "9f1c7e0b5a2d4e6f8a3b1c0d9e7f6a5b";
/// The PHI films.py plants in every film (and, for the name, in a folder name).
const PHI: &[&str] = &[
    "Zyxwort",
    "Quillamina",
    "MRN-99887766",
    "99887766",
    "19230417",
    "ACC5550123",
    "St Quillamina Infirmary",
    "Drvolkonsky",
];

fn films_py() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dicom/films.py")
}

/// Run films.py with `args`; None (printed) when no Python has pydicom.
fn make(args: &[&str]) -> Option<PathBuf> {
    let py = python_with("pydicom")?;
    let o = std::process::Command::new(&py)
        .arg(films_py())
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "films.py {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Some(py)
}

fn salt(dir: &Path) -> PathBuf {
    let p = dir.join("salt.txt");
    std::fs::write(&p, SALT).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn cases(dir: &Path) -> BTreeMap<String, String> {
    serde_json::from_slice(&std::fs::read(dir.join("cases.json")).unwrap()).unwrap()
}

type Rows = Vec<BTreeMap<String, String>>;

/// Filter a films folder with `source` and return (records, excluded).
fn filter_films(source: &str, films: &Path, out: &Path, extra: &[&str]) -> (Rows, Rows) {
    let salt = salt(out.parent().unwrap());
    prep()
        .args(["filter", "--source", source, "--dataset", s(films)])
        .args(["--out", s(out), "--salt-file", s(&salt)])
        .args(extra)
        .assert()
        .success();
    prep().args(["verify", s(out)]).assert().success();
    (
        read_csv(&out.join("data/records.csv")),
        read_csv(&out.join("data/excluded.csv")),
    )
}

fn parity(mode: &str, window: Option<&str>) {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("parity");
    let Some(py) = make(&["parity", s(&dir)]) else {
        return;
    };
    let films = dir.join("films");
    let out = t.path().join("bag");
    let toml = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dicom/any-film.toml");
    let mut args = vec!["--label", "film", "--dicom-output", mode];
    if let Some(w) = window {
        args.extend(["--window", w]);
    }
    let (records, excluded) = filter_films(s(&toml), &films, &out, &args);
    // Every film kept or excluded for the reason films.py expects.
    let mut got: BTreeMap<String, String> = BTreeMap::new();
    for r in &records {
        got.insert(r["source_file"].clone(), "kept".into());
        assert_eq!(r["dicom_output"], mode);
    }
    for e in &excluded {
        got.insert(e["file"].clone(), e["reason"].clone());
    }
    assert_eq!(got, cases(&dir), "outcome per film");
    // Decoded values equal pydicom's (raw16 exactly, window8 within one level).
    let o = std::process::Command::new(&py)
        .arg(films_py())
        .args(["check", s(&out), s(&films)])
        .args(window)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&o.stdout);
    eprintln!("{report}{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "pixel values differ from pydicom's");
    assert!(report.contains(&format!("checked {} film(s), 0 mismatch", records.len())));
}

#[test]
fn raw16_equals_pydicom_stored_values_exactly() {
    parity("raw16", None);
}

#[test]
fn window8_equals_pydicom_modality_and_voi_luts_within_one_level() {
    parity("window8", None);
}

#[test]
fn window_flag_replaces_every_films_own_voi() {
    parity("window8", Some("700,900"));
}

#[test]
fn hostile_films_are_excluded_with_reasons_and_no_phi_reaches_any_output() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("hostile");
    if make(&["hostile", s(&dir)]).is_none() {
        return;
    }
    let out = t.path().join("bag");
    let (records, excluded) = filter_films(
        "dicom-folder",
        &dir.join("films"),
        &out,
        &["--label", "healthy"],
    );
    let want = cases(&dir);
    let kept = want.values().filter(|v| *v == "kept").count();
    assert_eq!(records.len(), kept, "{records:?}");
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for e in &excluded {
        *reasons.entry(e["reason"].clone()).or_default() += 1;
        assert!(!e["detail"].is_empty());
        // Paths are pseudonymised: f + 16 hex digits.
        assert!(
            e["file"].len() == 17 && e["file"].starts_with('f'),
            "{}",
            e["file"]
        );
    }
    let mut want_reasons: BTreeMap<String, usize> = BTreeMap::new();
    for v in want.values().filter(|v| *v != "kept") {
        *want_reasons.entry(v.clone()).or_default() += 1;
    }
    assert_eq!(reasons, want_reasons, "{excluded:#?}");
    // Pseudonymising a path leaves the rest of a sentence alone (report.dcm vs "a report").
    for e in excluded.iter().filter(|e| e["reason"] == "no-pixel-data") {
        assert!(
            e["detail"].contains("(a report, presentation state"),
            "{}",
            e["detail"]
        );
    }
    // The BurnedInAnnotation flag is recorded; patient ids are salted hashes.
    let burned: Vec<&str> = records
        .iter()
        .map(|r| r["burned_in_annotation"].as_str())
        .collect();
    assert_eq!(burned.iter().filter(|b| **b == "YES").count(), 1);
    for r in &records {
        assert!(r["patient_id"].starts_with('p') && r["patient_id"].len() == 17);
        assert_eq!(r["label"], "healthy");
    }
    // The report shows the flag.
    let html = t.path().join("report.html");
    prep()
        .args(["report", s(&out), "--out", s(&html)])
        .assert()
        .success();
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("BurnedInAnnotation"), "report shows the flag");
    // No planted PHI in any byte of the bag or the report.
    assert_no_phi(&[out, html]);
}

/// No planted PHI in any byte of any file under `paths` (files or folders, compared without
/// case); returns the number of files read, so a caller can see the scan saw something.
fn assert_no_phi(paths: &[PathBuf]) -> usize {
    let mut files: Vec<PathBuf> = Vec::new();
    for p in paths {
        assert!(p.exists(), "{} was not written", p.display());
        files.extend(
            walkdir::WalkDir::new(p)
                .into_iter()
                .map(|e| e.unwrap().into_path())
                .filter(|p| p.is_file()),
        );
    }
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        for phi in PHI {
            let hit = bytes
                .windows(phi.len())
                .any(|w| w.eq_ignore_ascii_case(phi.as_bytes()));
            assert!(!hit, "{phi:?} found in {}", f.display());
        }
    }
    files.len()
}

#[test]
fn rsna_table_is_filtered_to_the_right_counts() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("rsna");
    if make(&["rsna", s(&dir), "300"]).is_none() {
        return;
    }
    let want: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let out = t.path().join("bag");
    let (records, excluded) = filter_films("rsna", &dir, &out, &["--label-others"]);
    let n = |l: &str| records.iter().filter(|r| r["label"] == l).count() as u64;
    assert_eq!(n("healthy"), want["healthy"].as_u64().unwrap());
    assert_eq!(n("diseased"), want["diseased"].as_u64().unwrap());
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for e in &excluded {
        *reasons.entry(e["reason"].clone()).or_default() += 1;
    }
    let want_reasons: BTreeMap<String, u64> = want["excluded"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .filter(|(_, v)| *v > 0)
        .collect();
    assert_eq!(reasons, want_reasons);
    assert_eq!(
        (records.len() + excluded.len()) as u64,
        want["rows"].as_u64().unwrap(),
        "every row kept or excluded once"
    );
    // RSNA file names are patient ids: neither they nor the ids appear in the bag.
    let table = std::fs::read_to_string(dir.join("stage_2_detailed_class_info.csv")).unwrap();
    let pid = table.lines().nth(1).unwrap().split(',').next().unwrap();
    for f in ["records.csv", "excluded.csv", "provenance.json"] {
        let text = std::fs::read_to_string(out.join("data").join(f)).unwrap();
        assert!(!text.contains(pid), "{pid} in {f}");
    }
    // --label-healthy keeps the Normal films only.
    let out2 = t.path().join("bag-healthy");
    let (healthy, _) = filter_films("rsna", &dir, &out2, &["--label-healthy"]);
    assert_eq!(healthy.len() as u64, want["healthy"].as_u64().unwrap());
}

#[test]
fn dicom_bags_flow_through_inpaint_and_split_and_are_deterministic() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("rsna");
    if make(&["rsna", s(&dir), "60"]).is_none() {
        return;
    }
    let salt = salt(t.path());
    let run = |out: &Path, threads: &str, extra: &[&str]| {
        prep()
            .env("RAYON_NUM_THREADS", threads)
            .args(["filter", "--source", "rsna", "--dataset", s(&dir)])
            .args(["--out", s(out), "--salt-file", s(&salt)])
            .args(extra)
            .assert()
            .success();
    };
    let a = t.path().join("a");
    let b = t.path().join("b");
    run(&a, "1", &["--label-healthy", "--dicom-output", "raw16"]);
    run(&b, "2", &["--label-healthy", "--dicom-output", "raw16"]);
    assert_eq!(bag_without_date(&a), bag_without_date(&b), "1 vs 2 threads");
    let d = t.path().join("d");
    run(&d, "2", &["--label-diseased", "--dicom-output", "raw16"]);
    // 16-bit PNGs pass through inpaint (bit depth kept) and split.
    let clean = t.path().join("clean");
    prep()
        .args(["inpaint", s(&a), "--out", s(&clean)])
        .assert()
        .success();
    for r in read_csv(&clean.join("data/records.csv")) {
        let img = image::open(clean.join(&r["path"])).unwrap();
        assert!(matches!(img, image::DynamicImage::ImageLuma16(_)));
    }
    let split = t.path().join("split");
    prep()
        .args(["split", "--classes", "three", "--healthy", s(&clean)])
        .args(["--diseased", s(&d), "--out", s(&split)])
        .assert()
        .success();
    prep().args(["verify", s(&split)]).assert().success();
    let recs = read_csv(&split.join("data/records.csv"));
    assert_eq!(
        recs.len(),
        read_csv(&a.join("data/records.csv")).len() + read_csv(&d.join("data/records.csv")).len()
    );
}

/// The DICOM columns of `rows`, by image id.
fn dicom_columns(rows: &Rows) -> BTreeMap<String, Vec<(String, String)>> {
    rows.iter()
        .map(|r| {
            let cols = prep::dicom::DICOM_COLUMNS
                .iter()
                .map(|c| {
                    let v = r.get(*c).unwrap_or_else(|| panic!("no {c} column"));
                    (c.to_string(), v.clone())
                })
                .collect();
            (r["id"].clone(), cols)
        })
        .collect()
}

#[test]
fn dicom_bags_go_through_every_later_stage_with_their_columns_and_no_phi() {
    let t = tempfile::tempdir().unwrap();
    let films = t.path().join("films");
    if make(&["pipeline", s(&films), "24"]).is_none() {
        return;
    }
    let bags = t.path().join("bags");
    std::fs::create_dir_all(&bags).unwrap();
    let bag = |n: &str| bags.join(n);
    let mut filtered: Rows = Vec::new();
    for label in ["healthy", "diseased"] {
        let (records, excluded) = filter_films(
            "dicom-folder",
            &films.join(label),
            &bag(label),
            &["--label", label, "--dicom-output", "raw16"],
        );
        assert_eq!((records.len(), excluded.len()), (24, 0), "{excluded:?}");
        filtered.extend(records);
        prep()
            .args([
                "inpaint",
                s(&bag(label)),
                "--out",
                s(&bag(&format!("{label}-clean"))),
            ])
            .assert()
            .success();
    }
    let want = dicom_columns(&filtered);
    let syntaxes: std::collections::BTreeSet<&str> = filtered
        .iter()
        .map(|r| r["dicom_transfer_syntax"].as_str())
        .collect();
    assert_eq!(syntaxes.len(), 4, "{syntaxes:?}");
    // inpaint carries every DICOM column of every film.
    let mut inpainted: Rows = Vec::new();
    for label in ["healthy", "diseased"] {
        inpainted.extend(read_csv(
            &bag(&format!("{label}-clean")).join("data/records.csv"),
        ));
    }
    assert_eq!(dicom_columns(&inpainted), want, "inpaint");
    assert!(
        inpainted.iter().any(|r| r["mask_pixels"] != "0"),
        "the burned-in labels were inpainted"
    );
    // split carries them too (ids are unique across the two bags here).
    let split = bag("split");
    prep()
        .args(["split", "--classes", "three", "--seed", "3"])
        .args(["--healthy", s(&bag("healthy-clean"))])
        .args(["--diseased", s(&bag("diseased-clean"))])
        .args(["--out", s(&split)])
        .assert()
        .success();
    prep().args(["verify", s(&split)]).assert().success();
    let split_rows = read_csv(&split.join("data/records.csv"));
    assert_eq!(split_rows.len(), 48);
    assert_eq!(dicom_columns(&split_rows), want, "split");
    for r in &split_rows {
        assert!(r["patient_id"].starts_with('p') && r["patient_id"].len() == 17);
    }
    // Two films per patient: a patient's films are in one split.
    let mut split_of: BTreeMap<&str, &str> = BTreeMap::new();
    for r in &split_rows {
        let prev = split_of.insert(&r["patient_id"], &r["split"]);
        assert!(
            prev.is_none_or(|p| p == r["split"]),
            "patient across splits"
        );
    }
    assert_eq!(split_of.len(), 24);
    // Croissant describes the carried columns.
    let croissant = std::fs::read_to_string(split.join("croissant.json")).unwrap();
    assert!(croissant.contains("BurnedInAnnotation (0028,0301)"));
    // train (tiny network, 1 epoch, 32 px) on the 16-bit PNGs, then audit and the report.
    let run = t.path().join("run");
    prep()
        .args(["train", "--data", s(&split), "--out", s(&run)])
        .args(["--arch", "densenet:8,2-2-2-2,16,2", "--image-size", "32"])
        .args(["--epochs", "1", "--batch-size", "8", "--threads", "2"])
        .args(["--device", "cpu", "--seed", "7", "--positive", "diseased"])
        .assert()
        .success();
    let audit = t.path().join("audit");
    prep()
        .args([
            "audit",
            s(&split),
            "--out",
            s(&audit),
            "--positive",
            "diseased",
        ])
        .assert()
        .success();
    assert!(audit.join("audit.json").is_file());
    let html = t.path().join("report.html");
    prep()
        .args(["report", s(&run), "--out", s(&html)])
        .assert()
        .success();
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("BurnedInAnnotation"),
        "report follows the lineage"
    );
    // No planted PHI in any output of any stage: the 7 bags (images, masks, records, provenance,
    // Croissant, fingerprints), the train run, the audit and the report.
    for f in [
        "model.json",
        "metrics.json",
        "metrics.csv",
        "summary.md",
        "best.safetensors",
    ] {
        assert!(run.join(f).is_file(), "run/{f}");
    }
    for f in ["audit.md", "features.csv", "probe-roc.png"] {
        assert!(audit.join(f).is_file(), "audit/{f}");
    }
    let n = assert_no_phi(&[bags, run, audit, html]);
    assert!(n > 200, "{n} files scanned");
}

#[test]
fn dicom_flags_are_checked() {
    let t = tempfile::tempdir().unwrap();
    let ds = t.path().join("ds");
    std::fs::create_dir_all(&ds).unwrap();
    let out = t.path().join("bag");
    let filter = |source: &str, extra: &[&str]| {
        prep()
            .args(["filter", "--source", source, "--label", "healthy"])
            .args(["--dataset", s(&ds), "--out", s(&out)])
            .args(extra)
            .assert()
    };
    // A DICOM source needs a salt, of at least 16 bytes.
    filter("dicom-folder", &[])
        .code(2)
        .stderr(predicates::str::contains("--salt-file"));
    let short = t.path().join("short.txt");
    std::fs::write(&short, "abc").unwrap();
    filter("dicom-folder", &["--salt-file", s(&short)]).code(3);
    // DICOM flags on a PNG source, and bad windows, are usage errors.
    filter("folder", &["--dicom-output", "raw16"]).code(2);
    let salt = salt(t.path());
    for bad in [
        &["--dicom-output", "raw16", "--window", "10,20"][..],
        &["--window", "abc"][..],
        &["--window", "10,0"][..],
    ] {
        filter(
            "dicom-folder",
            &[&["--salt-file", s(&salt)][..], bad].concat(),
        )
        .code(2);
    }
}
