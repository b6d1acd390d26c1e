//! `prep run` with real training stages: a grid with three values and two repeats yields a table
//! of six runs summarised, and a run killed with SIGKILL mid-pipeline resumes without redoing
//! finished stages and ends with the same bytes as an uninterrupted run.
#![cfg(feature = "train")]

mod common;

use common::*;
use predicates::prelude::*;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};
use tempfile::tempdir;

fn pipeline(dir: &Path, grid: bool) -> std::path::PathBuf {
    prep::synth::image_folder(&dir.join("data/covid"), 3, "c", 10, 48, 0.9).unwrap();
    prep::synth::image_folder(&dir.join("data/healthy"), 3, "h", 5, 48, 0.0).unwrap();
    prep::synth::image_folder(&dir.join("data/diseased"), 3, "d", 5, 48, 0.45).unwrap();
    let train_tail = if grid {
        "epochs = 2\nrepeats = 2\n[stage.grid]\nlr = [0.01, 0.001, 0.0001]\n"
    } else {
        "epochs = 3\nrepeats = 1\nlr = 0.001\n"
    };
    let p = dir.join("p.toml");
    let mut text = format!(
        "[vars]\ndata = \"{}\"\nout = \"{}\"\n",
        dir.join("data").display(),
        dir.join("out").display()
    );
    for class in ["covid", "healthy", "diseased"] {
        text.push_str(&format!(
            "\n[[stage]]\nname = \"{class}\"\ncommand = \"filter\"\nout = \"${{out}}/{class}\"\n[stage.args]\nsource = \"folder\"\ndataset = \"${{data}}/{class}\"\nlabel = \"{class}\"\n"
        ));
    }
    text.push_str(
        "\n[[stage]]\nname = \"split\"\ncommand = \"split\"\nout = \"${out}/split\"\n[stage.args]\ncovid = [\"${covid}\"]\nhealthy = [\"${healthy}\"]\ndiseased = [\"${diseased}\"]\nbalanced = true\nseed = 1\n",
    );
    text.push_str(&format!(
        "\n[[stage]]\nname = \"train\"\ncommand = \"train\"\nout = \"${{out}}/runs\"\n[stage.args]\ndata = \"${{split}}\"\narch = \"densenet:4,1-1-1-1,8,2\"\nimage_size = 32\nbatch_size = 4\nunfreeze = \"all\"\nthreads = 1\nseed = 1\n{train_tail}"
    ));
    fs::write(&p, text).unwrap();
    p
}

#[test]
fn grid_of_three_values_with_two_repeats_gives_a_six_run_table() {
    let t = tempdir().unwrap();
    let p = pipeline(t.path(), true);
    prep()
        .arg("run")
        .arg(&p)
        .assert()
        .success()
        .stdout(predicate::str::contains("grid table: "));
    let table = read_csv(&t.path().join("out/runs/grid-summary.csv"));
    assert_eq!(table.len(), 3, "one row per grid point");
    let lrs: Vec<&str> = table.iter().map(|r| r["lr"].as_str()).collect();
    assert_eq!(
        lrs,
        vec!["0.01", "0.001", "0.0001"],
        "in the order the pipeline lists them"
    );
    let runs: usize = table
        .iter()
        .map(|r| r["repeats"].parse::<usize>().unwrap())
        .sum();
    assert_eq!(runs, 6, "three values x two repeats");
    for r in &table {
        let acc: f64 = r["max_val_accuracy_mean"].parse().unwrap();
        assert!((0.0..=1.0).contains(&acc));
        assert!(
            !r["max_val_accuracy_std"].is_empty(),
            "std over two repeats"
        );
        assert!(Path::new(&r["run"]).join("repeat-2/metrics.csv").is_file());
    }
    let md = fs::read_to_string(t.path().join("out/runs/grid-summary.md")).unwrap();
    assert_eq!(md.lines().count(), 2 + 3);
    // Nothing changed: the second run skips all stages and rewrites the same table.
    prep()
        .arg("run")
        .arg(&p)
        .assert()
        .success()
        .stdout(predicate::str::contains("0 stage(s) run"));
}

#[test]
fn sigkill_mid_run_resumes_without_redoing_finished_stages() {
    let t = tempdir().unwrap();
    let p = pipeline(t.path(), false);
    prep().arg("run").arg(&p).assert().success();
    let out = t.path().join("out");
    let reference: Vec<_> = ["covid", "healthy", "diseased", "split"]
        .iter()
        .map(|b| bag_without_date(&out.join(b)))
        .collect();
    let metrics = fs::read(out.join("runs/metrics.csv")).unwrap();

    // Start again from the split, and kill the whole process group while it works.
    for b in ["split", "runs"] {
        let _ = fs::remove_dir_all(out.join(b));
        let _ = fs::remove_file(out.join(format!(".{b}.prep-stage.json")));
    }
    let bin = assert_cmd::cargo::cargo_bin("prep");
    let mut child = std::process::Command::new(&bin)
        .arg("run")
        .arg(&p)
        .stdout(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let start = Instant::now();
    // Kill as soon as the split or the training has begun writing (or after 2 s).
    loop {
        let busy = fs::read_dir(&out).unwrap().flatten().any(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.contains("prep-tmp") || n == "runs" || n.starts_with(".runs")
        });
        if busy || start.elapsed() > Duration::from_secs(2) {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    let _ = child.wait();

    // The resume skips the three filter bags and finishes the rest.
    prep().arg("run").arg(&p).assert().success().stdout(
        predicate::str::contains("covid: up to date")
            .and(predicate::str::contains("healthy: up to date")),
    );
    let after: Vec<_> = ["covid", "healthy", "diseased", "split"]
        .iter()
        .map(|b| bag_without_date(&out.join(b)))
        .collect();
    assert_eq!(after, reference, "bags identical to the uninterrupted run");
    assert_eq!(
        fs::read(out.join("runs/metrics.csv")).unwrap(),
        metrics,
        "training reproduces"
    );
    prep()
        .arg("verify")
        .arg(out.join("split"))
        .assert()
        .success();
}

use std::os::unix::process::CommandExt;

#[test]
fn changing_an_inpaint_parameter_reruns_inpaint_split_and_train_only() {
    let t = tempdir().unwrap();
    let d = t.path().join("demo");
    prep()
        .args(["demo", "--size", "64", "--out"])
        .arg(&d)
        .assert()
        .success();
    let pipeline = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/demo.toml");
    let sets = |extra: &[&str]| {
        let mut v = vec![
            "--set".to_string(),
            format!("data={}", d.join("datasets").display()),
            "--set".to_string(),
            format!("out={}", d.join("bags").display()),
            "--set".to_string(),
            format!("runs={}", d.join("runs").display()),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    // The demo's own run is current.
    prep()
        .arg("run")
        .arg(&pipeline)
        .args(sets(&[]))
        .assert()
        .success()
        .stdout(predicate::str::contains("0 stage(s) run"));
    let out = prep()
        .arg("run")
        .arg(&pipeline)
        .args(sets(&["--set", "inpaint_method=telea"]))
        .assert()
        .success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    for stage in ["covid", "others", "normal", "cohort", "disease"] {
        assert!(
            text.contains(&format!("] {stage}: up to date")),
            "{stage} must be skipped:\n{text}"
        );
    }
    for stage in ["covid_clean", "normal_clean", "split", "train"] {
        assert!(
            text.contains(&format!("] {stage}: running")),
            "{stage} must re-run:\n{text}"
        );
    }
}

#[test]
fn leave_one_source_out_grid_writes_internal_vs_external_auc_per_held_out_source() {
    let t = tempdir().unwrap();
    let d = t.path();
    let mut text = format!(
        "[vars]\ndata = \"{}\"\nout = \"{}\"\n",
        d.join("data").display(),
        d.join("out").display()
    );
    // Three sites, each with COVID and healthy films of its own.
    for (k, site) in ["a", "b", "c"].into_iter().enumerate() {
        for (class, disease) in [("covid", 0.9), ("healthy", 0.0)] {
            let name = format!("{site}_{class}");
            prep::synth::image_folder(
                &d.join("data").join(&name),
                10 + k as u64,
                &name,
                12,
                48,
                disease,
            )
            .unwrap();
            text.push_str(&format!(
                "\n[[stage]]\nname = \"{name}\"\ncommand = \"filter\"\nout = \"${{out}}/{name}\"\n[stage.args]\nsource = \"folder\"\ndataset = \"${{data}}/{name}\"\nlabel = \"{class}\"\n"
            ));
        }
    }
    text.push_str(
        "\n[[stage]]\nname = \"split\"\ncommand = \"split\"\nout = \"${out}/split\"\n[stage.args]\ncovid = [\"${a_covid}\", \"${b_covid}\", \"${c_covid}\"]\nhealthy = [\"${a_healthy}\", \"${b_healthy}\", \"${c_healthy}\"]\ntrain = 0.5\nval = 0.25\ntest = 0.25\nno_near_duplicates = true\nseed = 1\n[stage.grid]\nhold_out = [[\"${a_covid}\", \"${a_healthy}\"], [\"${b_covid}\", \"${b_healthy}\"]]\n",
    );
    text.push_str("\n[[stage]]\nname = \"loso\"\ncommand = \"train\"\nout = \"${out}/runs\"\neach = \"split\"\n[stage.args]\ndata = \"${split}\"\narch = \"densenet:4,1-1-1-1,8,2\"\nimage_size = 32\nbatch_size = 4\nunfreeze = \"all\"\nthreads = 1\nseed = 1\nepochs = 2\nrepeats = 1\n");
    let p = d.join("loso.toml");
    fs::write(&p, text).unwrap();
    prep()
        .arg("run")
        .arg(&p)
        .assert()
        .success()
        .stdout(predicate::str::contains("internal vs external table: "));
    let table = read_csv(&d.join("out/runs/external-summary.csv"));
    assert_eq!(table.len(), 2, "one row per held-out site");
    let held: Vec<&str> = table.iter().map(|r| r["hold_out"].as_str()).collect();
    assert_eq!(held, ["a_covid+a_healthy", "b_covid+b_healthy"]);
    for (r, site) in table.iter().zip(["a", "b"]) {
        let run = Path::new(&r["run"]);
        assert!(run.ends_with(format!("hold_out-{site}_covid_{site}_healthy")));
        let m: serde_json::Value =
            serde_json::from_slice(&fs::read(run.join("test-metrics.json")).unwrap()).unwrap();
        assert_eq!(
            r["external_n"], "24",
            "the held-out site's 24 films, all in test"
        );
        assert_eq!(m["external"]["n"], 24);
        for (col, v) in [
            ("internal_auc", &m["internal"]["auc"]),
            ("external_auc", &m["external"]["auc"]),
            ("internal_ci_lo", &m["internal"]["auc_ci"][0]),
            ("external_ci_hi", &m["external"]["auc_ci"][1]),
            ("auc_gap", &m["auc_gap_internal_minus_external"]),
        ] {
            let ours: f64 = r[col].parse().unwrap();
            assert!(
                (ours - v.as_f64().unwrap()).abs() < 1e-6,
                "{col}: {ours} vs {v}"
            );
        }
        let gap: f64 = r["auc_gap"].parse().unwrap();
        let (i, e): (f64, f64) = (
            r["internal_auc"].parse().unwrap(),
            r["external_auc"].parse().unwrap(),
        );
        assert!((gap - (i - e)).abs() < 2e-6);
        println!("held out {site}: internal {i:.3}, external {e:.3}, gap {gap:.3}");
        // The held-out site's films are nowhere in train or val.
        let recs = read_csv(&d.join(format!(
            "out/split/hold_out-{site}_covid_{site}_healthy/data/records.csv"
        )));
        assert!(recs
            .iter()
            .filter(|x| x["source_bag"].contains(&format!("/{site}_")))
            .all(|x| x["split"] == "test" && x["group"].starts_with("external:")));
    }
    let md = fs::read_to_string(d.join("out/runs/external-summary.md")).unwrap();
    assert_eq!(md.lines().count(), 2 + 2);
    // The report reads it.
    let html = d.join("loso.html");
    prep()
        .arg("report")
        .arg(d.join("out/runs"))
        .arg("--out")
        .arg(&html)
        .assert()
        .success();
    let text = fs::read_to_string(&html).unwrap();
    assert!(text.contains("Leave one source out: internal vs external"));
    assert!(text.contains("Leaving each of 2 source(s) out in turn"));
}
