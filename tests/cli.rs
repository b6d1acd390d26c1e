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
fn demo_builds_and_verifies_every_bag() {
    let t = tempdir().unwrap();
    let out = t.path().join("demo");
    prep()
        .args(["demo", "--size", "64", "--out"])
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::contains("(verified)"));
    for bag in ["covid", "cohen-others", "normal"] {
        prep()
            .arg("verify")
            .arg(out.join("bags").join(bag))
            .assert()
            .success();
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
