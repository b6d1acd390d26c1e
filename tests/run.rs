//! `prep run`: stages run in order, a finished stage is skipped, an interrupted or changed stage
//! re-runs with the stages downstream of it, and outputs are byte-identical after a resume.

mod common;

use common::*;
use predicates::prelude::*;
use std::fs;
use std::path::Path;
use tempfile::tempdir;

fn pipeline(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("p.toml");
    fs::write(
        &p,
        format!(
            r#"
description = "test pipeline"
[vars]
data = "{data}"
out = "{out}"
pcr = false

[[stage]]
name = "covid"
command = "filter"
out = "${{out}}/covid"
[stage.args]
source = "cohen"
dataset = "${{data}}/cohen"

[[stage]]
name = "others"
command = "filter"
out = "${{out}}/others"
[stage.args]
source = "cohen"
dataset = "${{data}}/cohen"
label_others = true

[[stage]]
name = "normal"
command = "filter"
out = "${{out}}/normal"
[stage.args]
source = "folder"
dataset = "${{data}}/normal"
label = "healthy"
"#,
            data = dir.join("data").display(),
            out = dir.join("bags").display()
        ),
    )
    .unwrap();
    prep::synth::cohen_like(&dir.join("data/cohen"), 1, 40).unwrap();
    prep::synth::image_folder(&dir.join("data/normal"), 1, "n", 3, 40, 0.0).unwrap();
    p
}

#[test]
fn runs_then_skips_then_resumes_only_what_changed() {
    let t = tempdir().unwrap();
    let p = pipeline(t.path());
    prep()
        .arg("run")
        .arg(&p)
        .assert()
        .success()
        .stdout(predicate::str::contains("3 stage(s) run, 0 skipped"));
    let first = tree_hashes(&t.path().join("bags/covid"));
    prep()
        .arg("run")
        .arg(&p)
        .assert()
        .success()
        .stdout(predicate::str::contains("0 stage(s) run, 3 skipped"));

    // An interrupted stage leaves no stamp: only it runs again, and its bag comes out the same.
    fs::remove_file(t.path().join("bags/.covid.prep-stage.json")).unwrap();
    prep().arg("run").arg(&p).assert().success().stdout(
        predicate::str::contains("covid: running")
            .and(predicate::str::contains("1 stage(s) run, 2 skipped")),
    );
    assert_eq!(bag_without_date(&t.path().join("bags/covid")), {
        let mut f = first.clone();
        f.remove("bag-info.txt");
        f
    });

    // A damaged output is noticed and rebuilt.
    let rec = t.path().join("bags/normal/data/records.csv");
    fs::write(&rec, "tampered").unwrap();
    prep()
        .arg("run")
        .arg(&p)
        .assert()
        .success()
        .stdout(predicate::str::contains("normal: running"));
    prep()
        .arg("verify")
        .arg(t.path().join("bags/normal"))
        .assert()
        .success();

    // A changed input file re-runs the stages that read it.
    let img = t.path().join("data/normal/n-000.png");
    fs::write(&img, small_png(40, 99, "changed")).unwrap();
    prep().arg("run").arg(&p).assert().success().stdout(
        predicate::str::contains("normal: running")
            .and(predicate::str::contains("1 stage(s) run, 2 skipped")),
    );

    // --only and --dry-run.
    prep()
        .arg("run")
        .arg(&p)
        .args(["--only", "others"])
        .assert()
        .success()
        .stdout(predicate::str::contains("1 stage(s) run"));
    prep()
        .arg("run")
        .arg(&p)
        .arg("--dry-run")
        .assert()
        .success()
        .stdout(predicate::str::contains("up to date"));
    prep()
        .arg("run")
        .arg(&p)
        .args(["--only", "nope"])
        .assert()
        .code(2);
    prep()
        .arg("run")
        .arg(&p)
        .args(["--set", "nope=1"])
        .assert()
        .code(2);
}

#[test]
fn a_failing_stage_stops_the_run_with_its_name() {
    let t = tempdir().unwrap();
    let p = pipeline(t.path());
    prep()
        .arg("run")
        .arg(&p)
        .args([
            "--set",
            &format!("data={}", t.path().join("nowhere").display()),
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains("stage covid failed"));
    assert!(!t.path().join("bags/.covid.prep-stage.json").exists());
}

#[test]
fn shipped_pipelines_parse_and_plan() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut n = 0;
    for e in fs::read_dir(&dir).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "toml") {
            let t = tempdir().unwrap();
            prep()
                .current_dir(t.path())
                .arg("run")
                .arg(e.path())
                .arg("--dry-run")
                .assert()
                .success()
                .stdout(predicate::str::contains("(no output yet)"));
            n += 1;
        }
    }
    assert!(n >= 3, "demo, perez-bir-2020 and its tables");
}
