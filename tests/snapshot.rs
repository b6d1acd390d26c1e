//! Snapshots of what `prep filter` writes for the synthetic Cohen dataset: records, exclusions
//! and provenance (prep version, commit and temp paths redacted). A change to any of them is a
//! change users see, so it must be reviewed (`cargo insta review`).

mod common;

use common::*;
use std::fs;

#[test]
fn filter_outputs_are_stable() {
    let (t, out) = filtered_synthetic_cohen(3, 64);
    let tmp = t.path().to_string_lossy().into_owned();
    let clean = |s: String| s.replace(&tmp, "[TMP]");
    insta::assert_snapshot!(
        "records",
        clean(fs::read_to_string(out.join("data/records.csv")).unwrap())
    );
    insta::assert_snapshot!(
        "excluded",
        clean(fs::read_to_string(out.join("data/excluded.csv")).unwrap())
    );
    let mut prov: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("data/provenance.json")).unwrap()).unwrap();
    prov["prep_version"] = "[VERSION]".into();
    prov["git_commit"] = "[COMMIT]".into();
    prov["argv"][0] = "[BIN]".into();
    insta::assert_snapshot!(
        "provenance",
        clean(serde_json::to_string_pretty(&prov).unwrap())
    );
    let bagit = fs::read_to_string(out.join("bagit.txt")).unwrap();
    insta::assert_snapshot!("bagit", bagit);
    let info: String = fs::read_to_string(out.join("bag-info.txt"))
        .unwrap()
        .lines()
        .map(|l| {
            if l.starts_with("Bagging-Date:") {
                "Bagging-Date: [DATE]".to_string()
            } else {
                l.to_string()
            }
        })
        // The payload includes provenance.json, whose size follows the commit id.
        .map(|l| {
            if l.starts_with("Payload-Oxum:") {
                "Payload-Oxum: [BYTES].[FILES]".to_string()
            } else {
                l
            }
        })
        .map(|l| l.replace(env!("CARGO_PKG_VERSION"), "[VERSION]"))
        .collect::<Vec<_>>()
        .join("\n");
    insta::assert_snapshot!("bag_info", info);
}
