//! The binary as a whole: help text, `prep doctor` (libtorch really loads), `prep demo`.

mod common;

use common::*;
use predicates::prelude::*;
use tempfile::tempdir;

#[test]
fn help_lists_the_subcommands_and_exit_codes() {
    prep().arg("--help").assert().success().stdout(
        predicate::str::contains("filter")
            .and(predicate::str::contains("verify"))
            .and(predicate::str::contains("verification failed")),
    );
    prep().args(["filter", "--help"]).assert().success().stdout(
        predicate::str::contains("--require-pcr").and(predicate::str::contains("Examples:")),
    );
    prep().arg("no-such-command").assert().code(2);
}

#[test]
fn doctor_runs_libtorch() {
    let a = prep().arg("doctor").assert().success();
    if cfg!(feature = "train") {
        a.stdout(predicate::str::contains(
            "libtorch: loaded (self-test sum = 10)",
        ));
    }
}

#[test]
fn demo_runs_every_stage_verifies_and_reports() {
    let t = tempdir().unwrap();
    let out = t.path().join("demo");
    prep()
        .args(["demo", "--size", "64", "--out"])
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::contains("report: "));
    for bag in [
        "covid",
        "cohen-others",
        "normal",
        "covid-cohort",
        "other-disease",
        "harmonized",
        "split",
    ] {
        prep()
            .arg("verify")
            .arg(out.join("bags").join(bag))
            .assert()
            .success();
    }
    let run = out.join("runs/demo");
    for f in [
        "summary.json",
        "summary.md",
        "repeat-1/metrics.csv",
        "repeat-1/best.safetensors",
        "repeat-2/model.json",
    ] {
        assert!(run.join(f).is_file(), "missing {f}");
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    for want in [
        "Lineage",
        "Leakage check: none",
        "Training",
        "Confusion matrix",
        "unsafe-path",
        "Audit: does the set teach the disease, or the source?",
        "audit-raw",
        "audit-harmonized",
    ] {
        assert!(html.contains(want), "report lacks {want:?}");
    }
    // A second run finds every stage up to date.
    prep()
        .args(["demo", "--size", "64", "--out"])
        .arg(&out)
        .assert()
        .success()
        .stdout(
            predicate::str::contains("up to date").and(predicate::str::contains("running").not()),
        );
}
