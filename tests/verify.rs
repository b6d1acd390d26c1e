//! `prep verify`: an intact bag passes; a flipped byte, a deleted file, an added file, a
//! changed tag file and a wrong Payload-Oxum are each reported by name with exit code 4.

mod common;

use common::*;
use predicates::prelude::*;
use std::fs;
use std::path::{Path, PathBuf};
use tempfile::{tempdir, TempDir};

fn make_bag() -> (TempDir, PathBuf) {
    filtered_synthetic_cohen(9, 48)
}

fn first_image(bag: &Path) -> String {
    read_csv(&bag.join("data/records.csv"))[0]["path"].clone()
}

fn bagit_agrees(bag: &Path, valid: bool) {
    if let Some(py) = python_with("bagit") {
        let o = std::process::Command::new(py)
            .args(["-m", "bagit", "--validate"])
            .arg(bag)
            .output()
            .unwrap();
        assert_eq!(
            o.status.success(),
            valid,
            "python bagit: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn intact_bag_passes() {
    let (_t, bag) = make_bag();
    prep()
        .arg("verify")
        .arg(&bag)
        .assert()
        .success()
        .stdout(predicate::str::contains("intact"));
    bagit_agrees(&bag, true);
}

#[test]
fn flipped_byte_is_named() {
    let (_t, bag) = make_bag();
    let img = first_image(&bag);
    let p = bag.join(&img);
    let mut bytes = fs::read(&p).unwrap();
    let k = bytes.len() / 2;
    bytes[k] ^= 0x01;
    fs::write(&p, bytes).unwrap();
    prep()
        .arg("verify")
        .arg(&bag)
        .assert()
        .code(4)
        .stdout(predicate::str::contains(format!("altered: {img}")));
    bagit_agrees(&bag, false);
}

#[test]
fn deleted_file_is_named() {
    let (_t, bag) = make_bag();
    let img = first_image(&bag);
    fs::remove_file(bag.join(&img)).unwrap();
    prep().arg("verify").arg(&bag).assert().code(4).stdout(
        predicate::str::contains(format!("missing: {img}"))
            .and(predicate::str::contains("Payload-Oxum")),
    );
    bagit_agrees(&bag, false);
}

#[test]
fn added_file_is_named() {
    let (_t, bag) = make_bag();
    fs::write(bag.join("data/images/covid/intruder.png"), b"not listed").unwrap();
    prep()
        .arg("verify")
        .arg(&bag)
        .assert()
        .code(4)
        .stdout(predicate::str::contains(
            "extra: data/images/covid/intruder.png",
        ));
    bagit_agrees(&bag, false);
}

#[test]
fn changed_tag_file_and_oxum_are_named() {
    let (_t, bag) = make_bag();
    let c = bag.join("croissant.json");
    let text = fs::read_to_string(&c)
        .unwrap()
        .replace("prep-filter-cohen", "tampered");
    fs::write(&c, text).unwrap();
    let info = bag.join("bag-info.txt");
    let text = fs::read_to_string(&info).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("Payload-Oxum") {
                "Payload-Oxum: 1.1".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    fs::write(&info, text + "\n").unwrap();
    prep().arg("verify").arg(&bag).assert().code(4).stdout(
        predicate::str::contains("altered: croissant.json")
            .and(predicate::str::contains("Payload-Oxum is 1.1")),
    );
}

#[test]
fn not_a_bag_is_bad_input_or_failure() {
    let t = tempdir().unwrap();
    prep()
        .arg("verify")
        .arg(t.path().join("nope"))
        .assert()
        .code(3);
    prep()
        .arg("verify")
        .arg(t.path())
        .assert()
        .code(4)
        .stdout(predicate::str::contains("bagit.txt: missing"));
}

#[test]
fn bag_croissant_is_accepted_by_mlcroissant() {
    let (_t, bag) = make_bag();
    let Some((ok, err)) = croissant_validate(&bag.join("croissant.json")) else {
        return;
    };
    assert!(ok, "mlcroissant: {err}");
}
