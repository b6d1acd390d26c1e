//! `prep filter` on generated datasets (every trap of the real Cohen file), on the real Cohen
//! metadata and on the real sample images in ../shared.

mod common;

use common::*;
use predicates::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use tempfile::tempdir;

fn synth_cohen(dir: &Path) -> Vec<prep::synth::SynthRow> {
    prep::synth::cohen_like(dir, 3, 64).unwrap()
}

fn filter(dataset: &Path, out: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    prep()
        .args(["filter", "--source", "cohen", "--dataset"])
        .arg(dataset)
        .arg("--out")
        .arg(out)
        .args(extra)
        .assert()
}

#[test]
fn covid_mode_keeps_and_excludes_exactly_what_the_rules_say() {
    let t = tempdir().unwrap();
    let ds = t.path().join("cohen");
    let rows = synth_cohen(&ds);
    let out = t.path().join("bag");
    filter(&ds, &out, &[])
        .success()
        .stdout(predicate::str::contains("bag: "));

    let records = read_csv(&out.join("data/records.csv"));
    let excluded = read_csv(&out.join("data/excluded.csv"));
    assert_eq!(
        records.len() + excluded.len(),
        rows.len(),
        "every row kept or excluded exactly once"
    );

    let kept: BTreeSet<String> = records.iter().map(|r| r["source_file"].clone()).collect();
    let want_kept: BTreeSet<String> = rows
        .iter()
        .filter(|r| r.expect_covid.is_ok())
        .map(|r| format!("images/{}", r.filename))
        .collect();
    assert_eq!(kept, want_kept);

    let got: BTreeMap<String, String> = excluded
        .iter()
        .map(|e| (e["source_row"].clone(), e["reason"].clone()))
        .collect();
    for r in &rows {
        if let Err(reason) = &r.expect_covid {
            assert_eq!(
                got.get(&r.line.to_string()),
                Some(reason),
                "row {} ({})",
                r.line,
                r.filename
            );
        }
    }
    // Every kept record points at a file in the bag with the recorded hash and size.
    for r in &records {
        let bytes = fs::read(out.join(&r["path"])).unwrap();
        assert_eq!(r["bytes"], bytes.len().to_string());
        assert_eq!(
            r["sha256"],
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
        );
        assert_eq!(r["label"], "covid");
        assert!(r["path"].starts_with("data/images/covid/"));
        // Source file names are kept.
        assert!(r["path"].ends_with(r["source_file"].rsplit('/').next().unwrap()));
        assert_eq!(r["width"], "64");
    }
    prep().arg("verify").arg(&out).assert().success();
}

#[test]
fn label_others_keeps_healthy_and_diseased_and_drops_unlabelled() {
    let t = tempdir().unwrap();
    let ds = t.path().join("cohen");
    let rows = synth_cohen(&ds);
    let out = t.path().join("bag");
    filter(&ds, &out, &["--label-others"]).success();
    let records = read_csv(&out.join("data/records.csv"));
    let got: BTreeMap<String, String> = records
        .iter()
        .map(|r| (r["source_file"].clone(), r["label"].clone()))
        .collect();
    let want: BTreeMap<String, String> = rows
        .iter()
        .filter_map(|r| {
            r.expect_others
                .as_ref()
                .ok()
                .map(|l| (format!("images/{}", r.filename), l.clone()))
        })
        .collect();
    assert_eq!(got, want);
    let excluded = read_csv(&out.join("data/excluded.csv"));
    for r in &rows {
        if let Err(reason) = &r.expect_others {
            let e = excluded
                .iter()
                .find(|e| e["source_row"] == r.line.to_string())
                .unwrap();
            assert_eq!(&e["reason"], reason, "{}", r.filename);
        }
    }
    assert!(out.join("data/images/healthy").is_dir() && out.join("data/images/diseased").is_dir());
}

#[test]
fn require_pcr_drops_unconfirmed_covid() {
    let t = tempdir().unwrap();
    let ds = t.path().join("cohen");
    let rows = synth_cohen(&ds);
    let out = t.path().join("bag");
    filter(&ds, &out, &["--require-pcr"]).success();
    let excluded = read_csv(&out.join("data/excluded.csv"));
    let no_pcr: BTreeSet<String> = excluded
        .iter()
        .filter(|e| e["reason"] == "no-pcr")
        .map(|e| e["source_row"].clone())
        .collect();
    let want: BTreeSet<String> = rows
        .iter()
        .filter(|r| r.expect_covid.is_ok() && r.pcr != "Y")
        .map(|r| r.line.to_string())
        .collect();
    assert!(!want.is_empty());
    assert_eq!(no_pcr, want);
}

#[test]
fn two_runs_and_thread_counts_give_identical_bags_and_inputs_are_untouched() {
    let t = tempdir().unwrap();
    let ds = t.path().join("cohen");
    synth_cohen(&ds);
    let before = tree_hashes(&ds);
    let a = t.path().join("a");
    let b = t.path().join("sub/b");
    prep()
        .env("RAYON_NUM_THREADS", "1")
        .args(["filter", "--source", "cohen", "--dataset"])
        .arg(&ds)
        .arg("--out")
        .arg(&a)
        .assert()
        .success();
    prep()
        .env("RAYON_NUM_THREADS", "2")
        .args(["filter", "--source", "cohen", "--dataset"])
        .arg(&ds)
        .arg("--out")
        .arg(&b)
        .assert()
        .success();
    assert_eq!(bag_without_date(&a), bag_without_date(&b));
    assert_eq!(
        tree_hashes(&ds),
        before,
        "the input dataset must not change"
    );
    // Only bag-info.txt may differ, and only in its Bagging-Date line.
    let strip = |p: &Path| {
        fs::read_to_string(p.join("bag-info.txt"))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("Bagging-Date"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&a), strip(&b));
    // No staging folder is left behind.
    let leftovers: Vec<_> = fs::read_dir(t.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("prep-tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn hostile_paths_never_leave_the_dataset() {
    let t = tempdir().unwrap();
    let ds = t.path().join("ds");
    fs::create_dir_all(ds.join("images")).unwrap();
    // A real image outside the dataset that the metadata tries to reach three ways.
    let img = small_png(32, 1, "x");
    fs::write(t.path().join("secret.png"), &img).unwrap();
    std::os::unix::fs::symlink(t.path().join("secret.png"), ds.join("images/link.png")).unwrap();
    let abs = t.path().join("secret.png");
    fs::write(
        ds.join("metadata.csv"),
        format!(
            "patientid,finding,view,modality,folder,filename\n\
             1,COVID-19,PA,X-ray,images,../../secret.png\n\
             2,COVID-19,PA,X-ray,,{}\n\
             3,COVID-19,PA,X-ray,images,link.png\n\
             4,COVID-19,PA,X-ray,..,secret.png\n",
            abs.display()
        ),
    )
    .unwrap();
    let out = t.path().join("bag");
    filter(&ds, &out, &[])
        .success()
        .stdout(predicate::str::contains("unsafe-path"));
    let excluded = read_csv(&out.join("data/excluded.csv"));
    assert_eq!(excluded.len(), 4);
    assert!(
        excluded.iter().all(|e| e["reason"] == "unsafe-path"),
        "{excluded:?}"
    );
    assert!(read_csv(&out.join("data/records.csv")).is_empty());
}

#[test]
fn damaged_and_crafted_images_are_excluded_with_their_reason() {
    let t = tempdir().unwrap();
    let ds = t.path().join("ds");
    fs::create_dir_all(ds.join("images")).unwrap();
    let g = prep::synth::chest_image(96, 96, 2, "y", 0.0, Default::default());
    let png = prep::synth::encode_png(&g).unwrap();
    let mut jpg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpg, 90)
        .encode_image(&g)
        .unwrap();
    fs::write(ds.join("images/ok.png"), &png).unwrap();
    fs::write(ds.join("images/trunc.png"), &png[..png.len() * 2 / 3]).unwrap();
    fs::write(ds.join("images/trunc.jpg"), &jpg[..jpg.len() / 3]).unwrap();
    fs::write(ds.join("images/empty.png"), b"").unwrap();
    fs::write(ds.join("images/text.png"), b"this is not an image at all").unwrap();
    let huge = prep::synth::png_header_only(100_000, 100_000);
    fs::write(ds.join("images/huge.png"), &huge).unwrap();
    let mut csv = String::from("patientid,finding,view,modality,folder,filename\n");
    for (i, f) in [
        "ok.png",
        "trunc.png",
        "trunc.jpg",
        "empty.png",
        "text.png",
        "huge.png",
    ]
    .iter()
    .enumerate()
    {
        csv.push_str(&format!("{i},COVID-19,PA,X-ray,images,{f}\n"));
    }
    fs::write(ds.join("metadata.csv"), csv).unwrap();
    let out = t.path().join("bag");
    filter(&ds, &out, &[]).success();
    let reasons: BTreeMap<String, String> = read_csv(&out.join("data/excluded.csv"))
        .into_iter()
        .map(|e| (e["file"].clone(), e["reason"].clone()))
        .collect();
    assert_eq!(reasons["images/trunc.png"], "unreadable-image");
    assert_eq!(reasons["images/trunc.jpg"], "unreadable-image");
    assert_eq!(reasons["images/empty.png"], "unreadable-image");
    assert_eq!(reasons["images/text.png"], "unreadable-image");
    assert_eq!(reasons["images/huge.png"], "image-too-large");
    assert_eq!(read_csv(&out.join("data/records.csv")).len(), 1);
}

#[test]
fn bad_metadata_and_bad_invocations_fail_clearly() {
    let t = tempdir().unwrap();
    let ds = t.path().join("ds");
    fs::create_dir_all(&ds).unwrap();
    // Missing required column: exit 3 naming the column.
    fs::write(
        ds.join("metadata.csv"),
        "patientid,finding,view,modality,folder\n1,COVID-19,PA,X-ray,images\n",
    )
    .unwrap();
    filter(&ds, &t.path().join("o1"), &[])
        .code(3)
        .stderr(predicate::str::contains("filename"));
    // Missing dataset: exit 3 naming it.
    prep()
        .args([
            "filter",
            "--source",
            "cohen",
            "--dataset",
            "/nonexistent/ds",
            "--out",
        ])
        .arg(t.path().join("o2"))
        .assert()
        .code(3)
        .stderr(predicate::str::contains("/nonexistent/ds"));
    // Unknown source and conflicting flags: usage errors (exit 2), each naming what is wrong.
    let meta = ds.join("metadata.csv").to_string_lossy().into_owned();
    let usage: [(&str, &[&str], &str); 4] = [
        ("o3", &["--source", "nope"], "nope"),
        ("o4", &["--source", "folder", "--label-others"], "--label"),
        ("o5", &["--source", "folder", "--label", "../x"], "../x"),
        (
            "o6",
            &["--source", "nih", "--metadata", &meta],
            "--label-healthy",
        ),
    ];
    for (out, args, says) in usage {
        prep()
            .arg("filter")
            .args(args)
            .arg("--dataset")
            .arg(&ds)
            .arg("--out")
            .arg(t.path().join(out))
            .assert()
            .code(2)
            .stderr(predicate::str::contains(says));
    }
    assert!(!t.path().join("o1").exists() && !t.path().join("o3").exists());
}

#[test]
fn existing_output_is_refused_unless_forced() {
    let t = tempdir().unwrap();
    let ds = t.path().join("cohen");
    synth_cohen(&ds);
    let out = t.path().join("bag");
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("keep.txt"), "mine").unwrap();
    filter(&ds, &out, &[])
        .code(2)
        .stderr(predicate::str::contains("--force"));
    assert_eq!(fs::read_to_string(out.join("keep.txt")).unwrap(), "mine");
    filter(&ds, &out, &["--force"]).success();
    assert!(!out.join("keep.txt").exists());
    prep().arg("verify").arg(&out).assert().success();
}

#[test]
fn windows_1252_metadata_is_read_with_a_warning_or_refused() {
    let t = tempdir().unwrap();
    let ds = t.path().join("ds");
    fs::create_dir_all(ds.join("images")).unwrap();
    let img = small_png(32, 1, "z");
    fs::write(ds.join("images/a.png"), &img).unwrap();
    let mut meta = b"patientid,finding,view,modality,folder,filename,notes\n".to_vec();
    meta.extend(b"1,COVID-19,PA,X-ray,images,a.png,temp 38\xB0C\n");
    fs::write(ds.join("metadata.csv"), &meta).unwrap();
    filter(&ds, &t.path().join("o1"), &[]).success().stderr(
        predicate::str::contains("not valid UTF-8").and(predicate::str::contains("Windows-1252")),
    );
    filter(&ds, &t.path().join("o2"), &["--encoding", "utf-8"])
        .code(3)
        .stderr(predicate::str::contains("metadata.csv"));
    filter(&ds, &t.path().join("o3"), &["--encoding", "windows-1252"])
        .success()
        .stderr(predicate::str::contains("warning").not());
}

#[test]
fn folder_source_takes_every_image_and_records_the_rest() {
    let t = tempdir().unwrap();
    let ds = t.path().join("NORMAL");
    let names = prep::synth::image_folder(&ds, 1, "n", 4, 48, 0.0).unwrap();
    fs::create_dir_all(ds.join("sub")).unwrap();
    fs::copy(ds.join(&names[0]), ds.join("sub").join(&names[0])).unwrap(); // same name, same bytes
    fs::write(ds.join("README.txt"), "not an image").unwrap();
    let out = t.path().join("bag");
    prep()
        .args([
            "filter",
            "--source",
            "folder",
            "--label",
            "healthy",
            "--dataset",
        ])
        .arg(&ds)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let records = read_csv(&out.join("data/records.csv"));
    assert_eq!(records.len(), 4);
    assert!(records
        .iter()
        .all(|r| r["label"] == "healthy" && r["source"] == "folder"));
    let reasons: BTreeMap<String, String> = read_csv(&out.join("data/excluded.csv"))
        .into_iter()
        .map(|e| (e["file"].clone(), e["reason"].clone()))
        .collect();
    assert_eq!(reasons["README.txt"], "not-image");
    assert_eq!(reasons[&format!("sub/{}", names[0])], "duplicate-file");
}

#[test]
fn nih_layout_with_sub_folders_and_exclude_list() {
    let t = tempdir().unwrap();
    let ds = t.path().join("nih");
    for (i, sub) in ["images_001/images", "images_002/images"]
        .iter()
        .enumerate()
    {
        prep::synth::image_folder(&ds.join(sub), 5 + i as u64, &format!("0000{i}"), 2, 32, 0.0)
            .unwrap();
    }
    let meta = t.path().join("Data_Entry_2017.csv");
    fs::write(
        &meta,
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position\n\
         00000-000.png,No Finding,0,1,50,M,PA\n\
         00000-001.png,Cardiomegaly|Effusion,1,1,50,M,AP\n\
         00001-000.png,Infiltration,0,2,60,F,PA\n\
         00001-001.png,Mass,0,3,61,F,LL\n\
         00009-000.png,Nodule,0,4,30,F,PA\n",
    )
    .unwrap();
    let list = t.path().join("chexnet-train.txt");
    fs::write(&list, "# CheXNet training images\n00001-000.png\n").unwrap();
    let out = t.path().join("bag");
    prep()
        .args(["filter", "--source", "nih", "--label-diseased", "--dataset"])
        .arg(&ds)
        .arg("--metadata")
        .arg(&meta)
        .arg("--exclude-list")
        .arg(&list)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let records = read_csv(&out.join("data/records.csv"));
    assert_eq!(
        records
            .iter()
            .map(|r| r["source_file"].as_str())
            .collect::<Vec<_>>(),
        vec!["00000-001.png"]
    );
    assert_eq!(records[0]["patient_id"], "1");
    let reasons: BTreeMap<String, String> = read_csv(&out.join("data/excluded.csv"))
        .into_iter()
        .map(|e| (e["file"].clone(), e["reason"].clone()))
        .collect();
    assert_eq!(reasons["00000-000.png"], "not-diseased");
    assert_eq!(reasons["00001-000.png"], "exclude-list");
    assert_eq!(reasons["00001-001.png"], "not-frontal");
    assert_eq!(reasons["00009-000.png"], "file-missing");
    let prov: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("data/provenance.json")).unwrap()).unwrap();
    let kinds: Vec<&str> = prov["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["metadata", "exclude-list"]);
}

#[test]
fn real_cohen_metadata_without_images() {
    let Some(shared) = shared_data() else { return };
    let ds = shared.join("cohen");
    let t = tempdir().unwrap();
    for (extra, want_missing, want_patients) in
        [(vec![], 478, 295), (vec!["--require-pcr"], 284, 185)]
    {
        let out = t.path().join(format!("bag{}", extra.len()));
        filter(&ds, &out, &extra).success();
        let excluded = read_csv(&out.join("data/excluded.csv"));
        assert_eq!(excluded.len(), 950);
        let missing: Vec<_> = excluded
            .iter()
            .filter(|e| e["reason"] == "file-missing")
            .collect();
        assert_eq!(missing.len(), want_missing, "{extra:?}");
        // Patients of those rows, read independently from the metadata by line number.
        let text = fs::read_to_string(ds.join("metadata.csv")).unwrap();
        let mut rdr = csv::Reader::from_reader(text.as_bytes());
        let mut by_line = BTreeMap::new();
        for r in rdr.records() {
            let r = r.unwrap();
            by_line.insert(r.position().unwrap().line().to_string(), r[0].to_string());
        }
        let patients: BTreeSet<&String> =
            missing.iter().map(|e| &by_line[&e["source_row"]]).collect();
        assert_eq!(patients.len(), want_patients, "{extra:?}");
    }
}

#[test]
fn real_samples_kept_set_matches_an_independent_reading() {
    let Some(shared) = shared_data() else { return };
    let ds = shared.join("samples/cohen");
    let meta = ds.join("metadata_subset.csv");
    let t = tempdir().unwrap();
    let before = tree_hashes(&shared.join("samples"));
    for (flag, out) in [
        (None, t.path().join("covid")),
        (Some("--label-others"), t.path().join("others")),
    ] {
        let mut cmd = prep();
        cmd.args(["filter", "--source", "cohen", "--dataset"])
            .arg(&ds)
            .arg("--metadata")
            .arg(&meta)
            .arg("--out")
            .arg(&out);
        if let Some(f) = flag {
            cmd.arg(f);
        }
        cmd.assert().success();
        // Independent rule: modality X-ray, view frontal, finding's last segment.
        let mut want = BTreeMap::new();
        for r in read_csv(&meta) {
            let last = r["finding"].rsplit('/').next().unwrap().trim().to_string();
            let frontal = ["pa", "ap", "ap supine", "ap erect"]
                .contains(&r["view"].trim().to_lowercase().as_str());
            if r["modality"].trim() != "X-ray" || !frontal {
                continue;
            }
            let label = match last.as_str() {
                "COVID-19" => "covid",
                "No Finding" => "healthy",
                "todo" | "Unknown" | "" => continue,
                _ => "diseased",
            };
            let keep = if flag.is_none() {
                label == "covid"
            } else {
                label != "covid"
            };
            if keep {
                want.insert(
                    format!("images/{}", r["filename"].trim()),
                    label.to_string(),
                );
            }
        }
        let got: BTreeMap<String, String> = read_csv(&out.join("data/records.csv"))
            .into_iter()
            .map(|r| (r["source_file"].clone(), r["label"].clone()))
            .collect();
        assert_eq!(got, want, "{flag:?}");
        prep().arg("verify").arg(&out).assert().success();
        if let Some(py) = python_with("bagit") {
            let o = std::process::Command::new(&py)
                .args(["-m", "bagit", "--validate"])
                .arg(&out)
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "bagit: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        if let Some((ok, err)) = croissant_validate(&out.join("croissant.json")) {
            assert!(ok, "mlcroissant: {err}");
        }
    }
    // The whole sample set, as folders.
    let out = t.path().join("txv");
    prep()
        .args([
            "filter",
            "--source",
            "folder",
            "--label",
            "mixed",
            "--dataset",
        ])
        .arg(shared.join("samples/torchxrayvision_tests"))
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    assert_eq!(read_csv(&out.join("data/records.csv")).len(), 5);
    assert_eq!(
        tree_hashes(&shared.join("samples")),
        before,
        "inputs must stay byte-identical"
    );
}

/// An older (mid-2020) copy of the Cohen metadata: no RT_PCR_positive column, several findings
/// in one cell (`COVID-19, ARDS`), legacy one-term findings beside the current path schema.
/// Each term is judged, the deciding term is recorded, and the duplicate-file rule still holds.
#[test]
fn older_cohen_copy_with_multi_term_findings() {
    let t = tempdir().unwrap();
    let ds = t.path().join("cohen-2020");
    fs::create_dir_all(ds.join("images")).unwrap();
    // (finding, view, modality, file, seed of its pixels: equal seeds = the same bytes)
    let rows: &[(&str, &str, &str, &str, u64)] = &[
        ("COVID-19", "PA", "X-ray", "a.png", 1),
        ("COVID-19, ARDS", "AP", "X-ray", "b.png", 2),
        ("COVID-19, ARDS", "AP Supine", "X-ray", "c.png", 3),
        ("ARDS", "PA", "X-ray", "d.png", 4),
        ("SARS", "PA", "X-ray", "e.png", 5),
        ("Pneumonia/Viral/COVID-19", "PA", "X-ray", "f.png", 6),
        ("COVID-19/ARDS", "AP", "X-ray", "g.png", 7),
        ("No Finding", "PA", "X-ray", "h.png", 8),
        ("COVID-19, ARDS", "L", "X-ray", "i.png", 9),
        ("COVID-19, ARDS", "AP", "X-ray", "j.png", 2), // same bytes as b.png
        ("COVID-19, ARDS", "Axial", "CT", "k.png", 11),
        ("todo", "PA", "X-ray", "l.png", 12),
        ("Streptococcus", "PA", "X-ray", "m.png", 13),
        ("ARDS, COVID-19", "PA", "X-ray", "n.png", 14),
    ];
    let mut csv = String::from(
        "patientid,offset,sex,age,finding,survival,intubated,went_icu,needed_supplemental_O2,extubated,temperature,pO2_saturation,leukocyte_count,neutrophil_count,lymphocyte_count,view,modality,date,location,folder,filename,doi,url,license,clinical_notes,other_notes,Unnamed: 29\n",
    );
    for (i, (finding, view, modality, file, seed)) in rows.iter().enumerate() {
        fs::write(ds.join("images").join(file), small_png(32, *seed, "old")).unwrap();
        csv.push_str(&format!(
            "{},0,M,60,\"{finding}\",,,,,,,,,,,{view},{modality},2020,\"Somewhere, Italy\",images,{file},,,,,,\n",
            100 + i
        ));
    }
    fs::write(ds.join("metadata.csv"), csv).unwrap();

    let out = t.path().join("covid");
    filter(&ds, &out, &[]).success();
    let records = read_csv(&out.join("data/records.csv"));
    let kept: BTreeMap<String, (String, String)> = records
        .iter()
        .map(|r| {
            let f = r["source_file"].trim_start_matches("images/").to_string();
            (f, (r["label"].clone(), r["finding_term"].clone()))
        })
        .collect();
    let covid = |f: &str| (f.to_string(), ("covid".to_string(), "COVID-19".to_string()));
    let want: BTreeMap<_, _> = ["a.png", "b.png", "c.png", "f.png", "g.png", "n.png"]
        .into_iter()
        .map(covid)
        .collect();
    assert_eq!(kept, want);
    let excluded = read_csv(&out.join("data/excluded.csv"));
    let reasons: BTreeMap<String, String> = excluded
        .iter()
        .map(|e| {
            (
                e["file"].trim_start_matches("images/").to_string(),
                e["reason"].clone(),
            )
        })
        .collect();
    let want: BTreeMap<String, String> = [
        ("d.png", "not-covid"),
        ("e.png", "not-covid"),
        ("h.png", "not-covid"),
        ("i.png", "not-frontal"),
        ("j.png", "duplicate-file"),
        ("k.png", "not-xray"),
        ("l.png", "unlabelled"),
        ("m.png", "not-covid"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(reasons, want);
    let detail = |f: &str| {
        excluded
            .iter()
            .find(|e| e["file"] == format!("images/{f}"))
            .unwrap()["detail"]
            .clone()
    };
    assert!(
        detail("d.png").contains("(term \"ARDS\")"),
        "{}",
        detail("d.png")
    );
    assert!(detail("j.png").contains("same bytes as images/b.png"));
    prep().arg("verify").arg(&out).assert().success();

    // The other labels: the deciding term of each kept row.
    let out = t.path().join("others");
    filter(&ds, &out, &["--label-others"]).success();
    let got: BTreeMap<String, (String, String)> = read_csv(&out.join("data/records.csv"))
        .iter()
        .map(|r| {
            let f = r["source_file"].trim_start_matches("images/").to_string();
            (f, (r["label"].clone(), r["finding_term"].clone()))
        })
        .collect();
    let want: BTreeMap<String, (String, String)> = [
        ("d.png", "diseased", "ARDS"),
        ("e.png", "diseased", "SARS"),
        ("h.png", "healthy", "No Finding"),
        ("m.png", "diseased", "Streptococcus"),
    ]
    .into_iter()
    .map(|(f, l, t)| (f.to_string(), (l.to_string(), t.to_string())))
    .collect();
    assert_eq!(got, want);
}
