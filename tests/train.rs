//! `prep train` / `prep predict` and the DenseNet behind them.
//!
//! Parity with torchvision: a committed reduced-DenseNet fixture made by
//! scripts/make-parity-fixture.py, and (when PyTorch is importable) the full densenet121.

use prep::train::optim::{Adam, AdamConfig};
use prep::train::{DenseNet, DenseNetConfig, Unfreeze};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn read(path: &Path) -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .collect()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// Eval logits, then one Adam step in the paper's set-up, against PyTorch's numbers.
fn check_parity(weights: &Path, expected: &Path) {
    tch::set_num_threads(2);
    let exp = read(expected);
    let shapes = DenseNet::read_shapes(weights).unwrap();
    let cfg = DenseNetConfig::infer(&shapes, weights).unwrap();
    let mut net = DenseNet::new(cfg, Device::Cpu);
    let report = net.load_weights(weights, false).unwrap();
    assert!(
        report.new_head.is_none() && report.unused.is_empty(),
        "{report:?}"
    );

    let x = &exp["input"];
    let y = &exp["labels"];
    let logits = tch::no_grad(|| net.forward_t(x, false));
    let d = max_abs(&logits, &exp["logits_eval"]);
    println!("eval logits max abs diff {d:e}");
    assert!(d <= 1e-4, "eval logits differ from torchvision by {d}");

    net.set_trainable(&Unfreeze::parse("denseblock4")).unwrap();
    // With a frozen prefix (eval mode, no_grad), exact and --fast-frozen (folded BatchNorm,
    // channels-last) paths: the same eval logits.
    for fast in [false, true] {
        net.set_fast_frozen(fast);
        let lf = tch::no_grad(|| net.forward_t(x, false));
        let d = max_abs(&lf, &exp["logits_eval"]);
        println!("eval logits with frozen prefix, fast={fast}: max abs diff {d:e}");
        assert!(
            d <= 1e-4,
            "fast={fast}: eval logits differ from torchvision by {d}"
        );
    }
    net.set_fast_frozen(false);
    let mut opt = Adam::new(&net, AdamConfig::default()).unwrap();
    let loss0 = net.forward_t(x, true).cross_entropy_for_logits(y);
    let l0 = loss0.double_value(&[]);
    opt.backward_step(&loss0).unwrap();
    let (l1, logits1) = tch::no_grad(|| {
        let lg = net.forward_t(x, false);
        (lg.cross_entropy_for_logits(y).double_value(&[]), lg)
    });
    let e0 = exp["loss_step0"].double_value(&[0]);
    let e1 = exp["loss_step1"].double_value(&[0]);
    println!("loss before step {l0} (torch {e0}), after {l1} (torch {e1})");
    assert!((l0 - e0).abs() <= 1e-4, "training loss {l0} vs torch {e0}");
    assert!(
        (l1 - e1).abs() <= 1e-4,
        "loss after one Adam step {l1} vs torch {e1}"
    );
    let d1 = max_abs(&logits1, &exp["logits_step1"]);
    assert!(d1 <= 1e-4, "logits after one Adam step differ by {d1}");
    // The step really moved something, so the comparison above is not vacuous.
    assert!(max_abs(&logits1, &logits) > 1e-4);

    // For the record (docs/train.md): the same step through --fast-frozen. Not asserted: one
    // Adam step from a batch of 2 amplifies rounding differences (torchvision itself moves by
    // ~8e-5 with 1 thread instead of 2), which is why the fast path is opt-in.
    let mut net = DenseNet::new(
        DenseNetConfig::infer(&shapes, weights).unwrap(),
        Device::Cpu,
    );
    net.load_weights(weights, false).unwrap();
    net.set_trainable(&Unfreeze::parse("denseblock4")).unwrap();
    net.set_fast_frozen(true);
    let mut opt = Adam::new(&net, AdamConfig::default()).unwrap();
    let loss0 = net.forward_t(x, true).cross_entropy_for_logits(y);
    let f0 = loss0.double_value(&[]);
    opt.backward_step(&loss0).unwrap();
    let lg = tch::no_grad(|| net.forward_t(x, false));
    let f1 = lg.cross_entropy_for_logits(y).double_value(&[]);
    println!(
        "--fast-frozen (not asserted): |dloss| before {:e}, after {:e}, logits after step {:e}",
        (f0 - e0).abs(),
        (f1 - e1).abs(),
        max_abs(&lg, &exp["logits_step1"])
    );
}

#[test]
fn parity_with_torchvision_reduced_fixture() {
    let f = fixtures();
    check_parity(
        &f.join("densenet-tiny-weights.safetensors"),
        &f.join("densenet-tiny-expected.safetensors"),
    );
}

/// A python with PyTorch, torchvision and safetensors, or None after printing why `what` is
/// skipped.
fn python(what: &str) -> Option<String> {
    let py = std::env::var("PREP_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = std::process::Command::new(&py)
        .args(["-c", "import torch, torchvision, safetensors"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        println!("skipped {what}: PyTorch + torchvision + safetensors not importable (set PREP_TEST_PYTHON to a python that has them)");
    }
    ok.then_some(py)
}

#[test]
fn parity_with_torchvision_full_densenet121() {
    let Some(py) = python("the full densenet121 parity check") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-parity-fixture.py");
    let st = std::process::Command::new(&py)
        .arg(&script)
        .arg("--full")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(st.success(), "make-parity-fixture.py --full failed");
    check_parity(
        &dir.path().join("densenet121-weights.safetensors"),
        &dir.path().join("densenet121-expected.safetensors"),
    );
}

/// best.safetensors carries torchvision's `num_batches_tracked` counters, so torchvision's
/// strict `load_state_dict` takes it; trainable BatchNorm counters count the train batches,
/// frozen ones stay as loaded. Also exercises --fast-frozen through the binary.
#[test]
fn best_weights_load_strictly_into_torchvision() {
    let dir = tempfile::tempdir().unwrap();
    let bag = make_bag(
        dir.path(),
        &BagSpec {
            train: 10,
            val: 4,
            test: 0,
            size: 48,
            seed: 5,
        },
        |_| {},
    );
    let weights = fixtures().join("densenet-tiny-weights.safetensors");
    let init = read(&weights);
    for fast in [false, true] {
        let run = dir.path().join(format!("run-{fast}"));
        let mut c = prep();
        c.args(set(
            set(train_args(&bag, &run), "--image-size", "48"),
            "--batch-size",
            "8",
        ))
        .args(["--epochs", "1"])
        .args(["--weights", weights.to_str().unwrap()]);
        if fast {
            c.arg("--fast-frozen");
        }
        c.assert().success();
        let card = json(&run.join("model.json"));
        let math = card["frozen_math"].as_str().unwrap();
        assert!(
            math.starts_with(if fast { "fast" } else { "exact" }),
            "{math}"
        );
        let best = read(&run.join("best.safetensors"));
        let counters: Vec<&String> = best
            .keys()
            .filter(|k| k.ends_with(".num_batches_tracked"))
            .collect();
        // tiny: norm0, 4 blocks x 2 layers x 2 norms, 3 transitions, norm5
        assert_eq!(counters.len(), 1 + 16 + 3 + 1);
        for name in counters {
            let t = &best[name];
            assert_eq!(t.kind(), Kind::Int64, "{name}");
            assert!(t.size().is_empty(), "{name} is not a scalar");
            let n = t.int64_value(&[]);
            if name.starts_with("features.denseblock4.") {
                assert_eq!(n, 3, "{name}: 20 train images in batches of 8 = 3 batches");
            } else {
                assert_eq!(
                    n,
                    init[name].int64_value(&[]),
                    "{name} of a frozen stage moved"
                );
            }
        }
        let Some(py) = python("torchvision strict load") else {
            continue;
        };
        let code = r#"
import sys, torch, torchvision
from safetensors.torch import load_file
sd = load_file(sys.argv[1])
m = torchvision.models.DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16, bn_size=2, num_classes=2)
m.load_state_dict(sd, strict=True)
assert m.features.denseblock4.denselayer1.norm1.num_batches_tracked.item() == 3
print("strict load ok")
"#;
        let out = std::process::Command::new(&py)
            .args(["-c", code])
            .arg(run.join("best.safetensors"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "torchvision strict load failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Files without the counters (older prep runs, other tools) still load.
    let stripped: Vec<(String, Tensor)> = read(&weights)
        .into_iter()
        .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
        .collect();
    let path = dir.path().join("no-counters.safetensors");
    Tensor::write_safetensors(&stripped, &path).unwrap();
    let cfg = DenseNetConfig::infer(&DenseNet::read_shapes(&path).unwrap(), &path).unwrap();
    let mut net = DenseNet::new(cfg, Device::Cpu);
    let report = net.load_weights(&path, false).unwrap();
    assert!(report.unused.is_empty() && report.new_head.is_none());
}

#[test]
fn misshapen_and_missing_weights_are_named() {
    let f = fixtures().join("densenet-tiny-weights.safetensors");
    // Another growth rate: every conv has another shape.
    let mut net = DenseNet::new(
        DenseNetConfig::parse("densenet:4,2-2-2-2,16,2", 2).unwrap(),
        Device::Cpu,
    );
    let err = net.load_weights(&f, false).unwrap_err().to_string();
    assert!(
        err.contains("tensor classifier.weight has shape [2, 32]") && err.contains("needs [2, 17]"),
        "{err}"
    );
    // More layers than the file has.
    let mut net = DenseNet::new(
        DenseNetConfig::parse("densenet:8,2-2-2-3,16,2", 2).unwrap(),
        Device::Cpu,
    );
    let err = net.load_weights(&f, false).unwrap_err().to_string();
    assert!(
        err.contains(
            "missing tensors features.denseblock4.denselayer3.conv1.weight [16, 32, 1, 1]"
        ),
        "{err}"
    );
    // A new head is allowed when fine-tuning, not for prediction.
    let mut net = DenseNet::new(
        DenseNetConfig::parse("densenet:8,2-2-2-2,16,2", 3).unwrap(),
        Device::Cpu,
    );
    assert!(net
        .load_weights(&f, false)
        .unwrap_err()
        .to_string()
        .contains("tensor classifier.bias has shape [2]"));
    let r = net.load_weights(&f, true).unwrap();
    assert!(r.new_head.is_some());
    let _ = Kind::Float;
}

#[test]
fn convert_weights_renames_chexnet_layouts() {
    let Some(py) = python("convert-weights.py self-test") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/convert-weights.py");
    let st = std::process::Command::new(&py)
        .arg(&script)
        .arg("--self-test")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(st.success(), "convert-weights.py --self-test failed");
    // What it wrote loads, by name, into our DenseNet (a 14-finding CheXNet head).
    for f in [
        "model.pth.tar.safetensors",
        "checkpoint.safetensors",
        "densenet121-old.pth.safetensors",
    ] {
        let p = dir.path().join(f);
        let cfg = DenseNetConfig::infer(&DenseNet::read_shapes(&p).unwrap(), &p).unwrap();
        assert_eq!(cfg.num_classes, 14);
        let mut net = DenseNet::new(cfg, Device::Cpu);
        let r = net.load_weights(&p, false).unwrap();
        assert!(r.unused.is_empty(), "{f}: {:?}", r.unused);
    }
}

// ---------------------------------------------------------------------------------------------
// The binary on synthetic split bags.

use assert_cmd::Command;
use image::{GrayImage, Luma};
use prep::manifest::{BagWriter, ColumnType, CroissantSpec, StageInfo};
use rand::{Rng, SeedableRng};

const TINY: &str = "densenet:8,2-2-2-2,16,2";

/// A grey 64 px image: noise on a background whose level varies per image, with a disc that is
/// brighter (class `bright`) or darker (class `dark`) than its surroundings. The mean intensity
/// alone does not separate the classes; the local contrast does.
fn disc_image(bright: bool, rng: &mut impl Rng, size: u32) -> Vec<u8> {
    let bg: f64 = rng.gen_range(70.0..185.0);
    let r: f64 = rng.gen_range(size as f64 * 0.2..size as f64 * 0.32);
    let cx: f64 = rng.gen_range(r..size as f64 - r);
    let cy: f64 = rng.gen_range(r..size as f64 - r);
    let contrast = if bright { 55.0 } else { -55.0 };
    let img = GrayImage::from_fn(size, size, |x, y| {
        let d = ((x as f64 - cx).powi(2) + (y as f64 - cy).powi(2)).sqrt();
        let mut v = bg + rng.gen_range(-35.0..35.0);
        if d < r {
            v += contrast;
        }
        Luma([v.clamp(0.0, 255.0) as u8])
    });
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

struct BagSpec {
    train: usize,
    val: usize,
    test: usize,
    size: u32,
    seed: u64,
}

fn finish(w: BagWriter) -> PathBuf {
    w.finish(StageInfo {
        name: "synthetic-split".into(),
        description: "Synthetic discs for prep train tests.".into(),
        croissant: CroissantSpec {
            license: "CC0-1.0".into(),
            url: "https://example.org/none".into(),
            cite_as: String::new(),
            table: "data/records.csv".into(),
            columns: vec![("path".into(), ColumnType::Text, "image path".into())],
            image_globs: vec![("data/**/*.png".into(), "image/png".into())],
        },
    })
    .unwrap()
    .path
}

/// A split bag in the ImageFolder layout `prep split` writes, with a minimal records.csv.
fn make_bag(root: &Path, spec: &BagSpec, extra: impl FnOnce(&BagWriter)) -> PathBuf {
    let out = root.join("split");
    let w = BagWriter::create(&out, false).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(spec.seed);
    let mut records = String::from("path\n");
    for (split, n) in [
        ("train", spec.train),
        ("val", spec.val),
        ("test", spec.test),
    ] {
        for class in ["bright", "dark"] {
            for i in 0..n {
                let rel = format!("{split}/{class}/{class}-{i:03}.png");
                w.write_payload(&rel, &disc_image(class == "bright", &mut rng, spec.size))
                    .unwrap();
                records.push_str(&format!("data/{rel}\n"));
            }
        }
    }
    w.write_payload("records.csv", records.as_bytes()).unwrap();
    extra(&w);
    finish(w)
}

fn prep() -> Command {
    let mut c = Command::cargo_bin("prep").unwrap();
    c.env("RAYON_NUM_THREADS", "2");
    c
}

fn train_args(bag: &Path, out: &Path) -> Vec<String> {
    [
        "train",
        "--data",
        bag.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--arch",
        TINY,
        "--image-size",
        "64",
        "--batch-size",
        "16",
        "--threads",
        "2",
        "--device",
        "cpu",
        "--seed",
        "7",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Replace a flag's value in `train_args`' list.
fn set(mut args: Vec<String>, flag: &str, value: &str) -> Vec<String> {
    let i = args.iter().position(|a| a == flag).unwrap();
    args[i + 1] = value.into();
    args
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn learns_synthetic_discs_and_writes_every_output() {
    let dir = tempfile::tempdir().unwrap();
    let bag = make_bag(
        dir.path(),
        &BagSpec {
            train: 48,
            val: 20,
            test: 10,
            size: 64,
            seed: 1,
        },
        |_| {},
    );
    let run = dir.path().join("run");
    let t = std::time::Instant::now();
    let out = prep()
        .args(train_args(&bag, &run))
        .args([
            "--unfreeze",
            "all",
            "--no-augment",
            "--epochs",
            "12",
            "--patience",
            "12",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "{}\n{stderr}\ntrained in {:.1} s",
        String::from_utf8_lossy(&out.stdout),
        t.elapsed().as_secs_f64()
    );
    assert!(out.status.success());
    assert!(
        stderr.contains("random initialisation"),
        "random init must be announced"
    );
    let m = json(&run.join("metrics.json"));
    let best = m["max_val_accuracy"].as_f64().unwrap();
    assert!(best >= 0.95, "max val accuracy {best}");
    // Every file the run promises.
    for f in [
        "metrics.csv",
        "metrics.json",
        "timing.csv",
        "loss.png",
        "accuracy.png",
        "best.safetensors",
        "model.json",
        "test.json",
        "summary.json",
        "summary.md",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    for f in ["loss.png", "accuracy.png"] {
        let img = image::open(run.join(f)).unwrap();
        assert_eq!((img.width(), img.height()), (800, 500));
    }
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert!(csv.starts_with("epoch,train_loss,train_accuracy,train_auc,train_sensitivity,train_specificity,train_confusion,val_loss,"));
    assert_eq!(
        csv.lines().count(),
        1 + m["epochs"].as_array().unwrap().len()
    );
    assert!(
        !csv.contains("seconds"),
        "wall-clock times stay out of metrics.csv"
    );
    let card = json(&run.join("model.json"));
    assert_eq!(card["classes"], serde_json::json!(["bright", "dark"]));
    assert_eq!(card["arch"], TINY);
    assert_eq!(card["image_size"], 64);
    assert_eq!(card["seed"], 7);
    assert_eq!(card["frozen_stages"], serde_json::json!([]));
    assert_eq!(
        card["data"]["manifest_sha256"],
        prep::manifest::manifest_sha256(&bag).unwrap()
    );
    assert_eq!(
        card["normalisation"]["mean"][0].as_f64().unwrap(),
        0.485f32 as f64
    );
    let test = json(&run.join("test.json"));
    assert!(test["test"]["accuracy"].as_f64().unwrap() >= 0.8, "{test}");
    assert_eq!(test["test"]["images"], 20);
    // The evaluation `prep evaluate` writes, for the test split, and the summary using it.
    for f in [
        "test-predictions.csv",
        "test-metrics.json",
        "test-metrics.md",
        "test-reliability.png",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let tm = json(&run.join("test-metrics.json"));
    assert_eq!(tm["n"], 20);
    assert_eq!(tm["positive_class"], "bright");
    let auc = tm["auc"].as_f64().unwrap();
    assert!(auc >= 0.8, "test AUC {auc}");
    assert_eq!(tm["thresholds"][0]["chosen_on"], "val");
    let summary = json(&run.join("summary.json"));
    assert_eq!(summary["test_auc"]["mean"].as_f64(), Some(auc));
    assert!(std::fs::read_to_string(run.join("summary.md"))
        .unwrap()
        .contains("test AUC (DeLong 95 % CI)"));

    // predict: the run folder, JSON, input order kept.
    let imgs: Vec<PathBuf> = [
        "test/bright/bright-000.png",
        "test/dark/dark-000.png",
        "test/bright/bright-001.png",
        "test/dark/dark-001.png",
    ]
    .iter()
    .map(|p| bag.join("data").join(p))
    .collect();
    let out = prep()
        .arg("predict")
        .arg("--model")
        .arg(&run)
        .arg("--json")
        .arg("--device")
        .arg("cpu")
        .args(&imgs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let preds: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let preds = preds.as_array().unwrap();
    assert_eq!(preds.len(), 4);
    let mut right = 0;
    for (p, img) in preds.iter().zip(&imgs) {
        assert_eq!(p["image"], img.display().to_string());
        assert_eq!(p["logits"].as_array().unwrap().len(), 2);
        let b = p["probabilities"]["bright"].as_f64().unwrap();
        let d = p["probabilities"]["dark"].as_f64().unwrap();
        assert!((b + d - 1.0).abs() < 1e-5);
        if (b > d) == img.to_string_lossy().contains("/bright/") {
            right += 1;
        }
    }
    assert!(right >= 3, "{preds:?}");
    // A bare weights file needs --classes, of the right count.
    let w = run.join("best.safetensors");
    prep()
        .args([
            "predict",
            "--model",
            w.to_str().unwrap(),
            imgs[0].to_str().unwrap(),
        ])
        .assert()
        .code(2);
    prep()
        .args([
            "predict",
            "--model",
            w.to_str().unwrap(),
            "--classes",
            "a,b,c",
            imgs[0].to_str().unwrap(),
        ])
        .assert()
        .code(2);
    let out = prep()
        .args([
            "predict",
            "--model",
            w.to_str().unwrap(),
            "--image-size",
            "64",
            "--classes",
            "bright,dark",
            imgs[0].to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("bright"));
}

#[test]
fn same_seed_same_metrics_whatever_the_rayon_threads() {
    let dir = tempfile::tempdir().unwrap();
    let bag = make_bag(
        dir.path(),
        &BagSpec {
            train: 12,
            val: 6,
            test: 0,
            size: 48,
            seed: 2,
        },
        |_| {},
    );
    let mut csvs = Vec::new();
    for (i, threads) in ["1", "2", "2"].iter().enumerate() {
        let run = dir.path().join(format!("run{i}"));
        // With augmentation on (the default), so the seeded crops and flips are covered too.
        prep()
            .env("RAYON_NUM_THREADS", threads)
            .args(set(train_args(&bag, &run), "--image-size", "48"))
            .args(["--epochs", "2", "--unfreeze", "denseblock4,norm5"])
            .assert()
            .success();
        csvs.push(std::fs::read(run.join("metrics.csv")).unwrap());
    }
    assert_eq!(
        csvs[0], csvs[1],
        "metrics.csv differs between RAYON_NUM_THREADS=1 and 2"
    );
    assert_eq!(
        csvs[1], csvs[2],
        "metrics.csv differs between two identical runs"
    );
    // Another seed gives other numbers: the comparison above is not vacuous.
    let run = dir.path().join("other-seed");
    prep()
        .args(set(
            set(train_args(&bag, &run), "--image-size", "48"),
            "--seed",
            "8",
        ))
        .args(["--epochs", "2", "--unfreeze", "denseblock4,norm5"])
        .assert()
        .success();
    assert_ne!(std::fs::read(run.join("metrics.csv")).unwrap(), csvs[0]);
    let card = json(&dir.path().join("run0/model.json"));
    assert_eq!(
        card["trainable_stages"],
        serde_json::json!(["denseblock4", "norm5"])
    );
    assert_eq!(card["frozen_stages"].as_array().unwrap().len(), 7);
}

#[test]
fn repeats_summarise_mean_and_std_and_cache_features_matches() {
    let dir = tempfile::tempdir().unwrap();
    let bag = make_bag(
        dir.path(),
        &BagSpec {
            train: 10,
            val: 6,
            test: 0,
            size: 48,
            seed: 3,
        },
        |_| {},
    );
    let weights = fixtures().join("densenet-tiny-weights.safetensors");
    let run = dir.path().join("rep");
    let out = prep()
        .args(set(train_args(&bag, &run), "--image-size", "48"))
        .args([
            "--epochs",
            "2",
            "--repeats",
            "2",
            "--weights",
            weights.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("mean ± std"), "{stdout}");
    for r in ["repeat-1", "repeat-2"] {
        assert!(run.join(r).join("best.safetensors").is_file());
    }
    let s = json(&run.join("summary.json"));
    assert_eq!(s["repeats"], 2);
    let runs = s["runs"].as_array().unwrap();
    assert_eq!(runs[0]["seed"], 7);
    assert_eq!(runs[1]["seed"], 8);
    let accs: Vec<f64> = runs
        .iter()
        .map(|r| r["max_val_accuracy"].as_f64().unwrap())
        .collect();
    let mean = (accs[0] + accs[1]) / 2.0;
    assert!((s["max_val_accuracy"]["mean"].as_f64().unwrap() - mean).abs() < 1e-12);
    let sd = ((accs[0] - mean).powi(2) + (accs[1] - mean).powi(2)).sqrt(); // n - 1 = 1
    assert!((s["max_val_accuracy"]["std"].as_f64().unwrap() - sd).abs() < 1e-12);
    let card = json(&run.join("repeat-1/model.json"));
    assert_eq!(
        card["initial_weights"]["sha256"],
        prep::manifest::hash_file(&weights).unwrap().0
    );
    // Frozen stages (everything but denseblock4 and the classifier) come out exactly as they
    // went in, BatchNorm running statistics included; denseblock4's statistics did move.
    let init = read(&weights);
    let best = read(&run.join("repeat-1/best.safetensors"));
    for (name, t) in &best {
        let frozen = !name.starts_with("features.denseblock4.") && !name.starts_with("classifier.");
        if frozen {
            assert!(t.equal(&init[name]), "frozen tensor {name} changed");
        }
    }
    let rm = "features.denseblock4.denselayer1.norm1.running_mean";
    assert!(
        !best[rm].equal(&init[rm]),
        "trainable BatchNorm statistics should update"
    );
    let cw = "features.denseblock4.denselayer1.conv1.weight";
    assert!(!best[cw].equal(&init[cw]));

    // --cache-features: same math as recomputing the frozen stages each time.
    let mut vals = Vec::new();
    for cache in [false, true] {
        let run = dir.path().join(format!("cache-{cache}"));
        let mut c = prep();
        c.args(set(train_args(&bag, &run), "--image-size", "48"))
            .args([
                "--epochs",
                "2",
                "--no-augment",
                "--weights",
                weights.to_str().unwrap(),
            ]);
        if cache {
            c.arg("--cache-features");
        }
        c.assert().success();
        let m = json(&run.join("metrics.json"));
        vals.push(
            m["epochs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["val"]["loss"].as_f64().unwrap())
                .collect::<Vec<_>>(),
        );
    }
    for (a, b) in vals[0].iter().zip(&vals[1]) {
        assert!(
            (a - b).abs() < 1e-4,
            "val loss with cache {b} vs without {a}"
        );
    }
}

fn stderr_of(c: &mut Command) -> (i32, String) {
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn bad_inputs_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let spec = BagSpec {
        train: 3,
        val: 2,
        test: 0,
        size: 40,
        seed: 4,
    };
    let small = |name: &str, extra: &dyn Fn(&BagWriter)| {
        let root = dir.path().join(name);
        std::fs::create_dir_all(&root).unwrap();
        make_bag(&root, &spec, extra)
    };
    let run = dir.path().join("run");

    // An empty class folder.
    let bag = small("empty", &|w| {
        std::fs::create_dir_all(w.staged_path("train/empty-class")).unwrap()
    });
    let (code, err) = stderr_of(prep().args(train_args(&bag, &run)));
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("empty-class") && err.contains("class folder holds no images"),
        "{err}"
    );

    // A corrupt image: named, before any training.
    let bag = small("corrupt", &|w| {
        w.write_payload("train/bright/broken.png", b"\x89PNG\r\n\x1a\nnot really")
            .unwrap();
    });
    let (code, err) = stderr_of(prep().args(train_args(&bag, &run)));
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("broken.png") && err.contains("not a readable image"),
        "{err}"
    );
    assert!(!err.contains("epoch"), "must fail before training: {err}");

    // A bag that fails verification (a payload file altered after the bag was written).
    let bag = small("tampered", &|_| {});
    std::fs::write(bag.join("data/val/dark/dark-000.png"), b"changed").unwrap();
    let (code, err) = stderr_of(prep().args(train_args(&bag, &run)));
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("verification failed") && err.contains("dark-000.png"),
        "{err}"
    );

    // Not a split bag.
    let root = dir.path().join("nosplit");
    let w = BagWriter::create(&root, false).unwrap();
    w.write_payload(
        "images/a/x.png",
        &disc_image(true, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0), 40),
    )
    .unwrap();
    let bag = finish(w);
    let (code, err) = stderr_of(prep().args(train_args(&bag, &run)));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no data/train folder"), "{err}");

    // Wrong-shape weights: the fixture with conv0 of another shape.
    let good = small("ok", &|_| {});
    let f = fixtures().join("densenet-tiny-weights.safetensors");
    let mut tensors: Vec<(String, Tensor)> = Tensor::read_safetensors(&f).unwrap();
    for (n, t) in tensors.iter_mut() {
        if n == "features.conv0.weight" {
            *t = Tensor::zeros([16, 3, 5, 5], (Kind::Float, Device::Cpu));
        }
    }
    let bad = dir.path().join("bad.safetensors");
    Tensor::write_safetensors(&tensors, &bad).unwrap();
    let mut args = train_args(&good, &run);
    args.retain(|a| a != "--arch" && a != TINY);
    let (code, err) = stderr_of(
        prep()
            .args(&args)
            .args(["--weights", bad.to_str().unwrap()]),
    );
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("features.conv0.weight has shape [16, 3, 5, 5]")
            && err.contains("[16, 3, 7, 7]"),
        "{err}"
    );
    // Not a safetensors file at all.
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"nope").unwrap();
    let (code, err) = stderr_of(
        prep()
            .args(&args)
            .args(["--weights", junk.to_str().unwrap()]),
    );
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("junk.safetensors") && err.contains("not a readable safetensors file"),
        "{err}"
    );

    // Usage errors, before any work.
    let (code, err) = stderr_of(prep().args(train_args(&good, &run)).arg("--cache-features"));
    assert_eq!(code, 2);
    assert!(err.contains("--no-augment"), "{err}");
    let (code, err) = stderr_of(
        prep()
            .args(train_args(&good, &run))
            .args(["--unfreeze", "denseblock9"]),
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("denseblock9") && err.contains("denseblock4"),
        "{err}"
    );
    let (code, err) = stderr_of(prep().args(train_args(&good, &run)).args([
        "--unfreeze",
        "all",
        "--fast-frozen",
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--fast-frozen") && err.contains("nothing is frozen"),
        "{err}"
    );
    let (code, err) = stderr_of(
        prep()
            .args(train_args(&good, &run))
            .args(["--arch", "resnet50"]),
    );
    assert_eq!(code, 2, "{err}");
    assert!(!run.exists(), "no output after failures");
    // An existing output is kept unless --force.
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("keep"), b"x").unwrap();
    let (code, err) = stderr_of(prep().args(train_args(&good, &run)).args(["--epochs", "1"]));
    assert_eq!(code, 2, "{err}");
    assert!(run.join("keep").exists());
}

#[test]
fn cuda_without_gpu_is_a_clear_error_and_auto_falls_back() {
    if tch::Cuda::is_available() {
        println!("skipped: a CUDA GPU is visible");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bag = make_bag(
        dir.path(),
        &BagSpec {
            train: 3,
            val: 2,
            test: 0,
            size: 40,
            seed: 5,
        },
        |_| {},
    );
    let run = dir.path().join("run");
    let mut args = train_args(&bag, &run);
    let d = args.iter().position(|a| a == "--device").unwrap();
    args[d + 1] = "cuda".into();
    let (code, err) = stderr_of(prep().args(&args).args(["--epochs", "1"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--device cuda"), "{err}");
    args[d + 1] = "auto".into();
    let (code, err) = stderr_of(
        prep()
            .args(set(args, "--image-size", "40"))
            .args(["--epochs", "1"]),
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("running on the CPU"), "{err}");
}

#[test]
fn val_transform_matches_torchvision_pil() {
    let Some(py) = python("the torchvision validation-transform check") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    // Grey and colour, landscape and portrait, shrinking by non-integer factors.
    let cases: Vec<(PathBuf, u32)> = [(301u32, 203u32, true), (150, 260, false), (97, 97, true)]
        .iter()
        .enumerate()
        .map(|(i, &(w, h, grey))| {
            let p = dir.path().join(format!("img{i}.png"));
            if grey {
                GrayImage::from_fn(w, h, |x, y| {
                    Luma([((x * 7 + y * 3) % 256) as u8 ^ rng.gen::<u8>() / 4])
                })
                .save(&p)
                .unwrap();
            } else {
                image::RgbImage::from_fn(w, h, |x, y| {
                    image::Rgb([(x % 256) as u8, (y % 256) as u8, rng.gen()])
                })
                .save(&p)
                .unwrap();
            }
            (p, 64)
        })
        .collect();
    let script = r#"
import sys, torch
from PIL import Image
from torchvision import transforms
from safetensors.torch import save_file
tf = transforms.Compose([transforms.Resize(64), transforms.CenterCrop(64), transforms.ToTensor(),
                         transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
out = {f"img{i}": tf(Image.open(p).convert("RGB")).contiguous() for i, p in enumerate(sys.argv[2:])}
save_file(out, sys.argv[1])
"#;
    let expected = dir.path().join("expected.safetensors");
    let st = std::process::Command::new(&py)
        .arg("-c")
        .arg(script)
        .arg(&expected)
        .args(cases.iter().map(|c| &c.0))
        .status()
        .unwrap();
    assert!(st.success());
    let exp = read(&expected);
    let level = 1.0 / 255.0 / 0.224; // one 8-bit level, in normalised units (mid std)
    for (i, (p, size)) in cases.iter().enumerate() {
        let img = prep::train::data::load_rgb(p).unwrap();
        let tf = prep::train::data::Transform {
            size: *size,
            augment: false,
            occlude: None,
        };
        let v = tf.apply(&img, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0));
        let ours = Tensor::from_slice(&v).view([3, 64, 64]);
        let d = (&ours - &exp[&format!("img{i}")]).abs();
        let (max, mean) = (
            d.max().double_value(&[]) / level,
            d.mean(Kind::Float).double_value(&[]) / level,
        );
        println!("img{i}: max {max:.2} levels, mean {mean:.3} levels from torchvision (PIL)");
        assert!(
            max <= 1.01 && mean <= 0.25,
            "img{i}: val transform differs from torchvision's by max {max} / mean {mean} levels"
        );
    }
}

// --- precision, loader, gpu-check.sh (issue 13) -------------------------------------------------

/// A split bag with train and val only.
fn train_val_bag(root: &Path, train: usize, val: usize, size: u32, seed: u64) -> PathBuf {
    let spec = BagSpec {
        train,
        val,
        test: 0,
        size,
        seed,
    };
    make_bag(root, &spec, |_| {})
}

#[test]
fn precision_and_loader_flags_are_checked_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let bag = train_val_bag(dir.path(), 3, 2, 40, 6);
    let run = dir.path().join("run");
    // fp16 is CUDA-only: a usage error naming the alternative, on --device cpu.
    for (extra, expect) in [
        (
            ["--precision", "int8"],
            &["--precision \"int8\"", "bf16"][..],
        ),
        (
            ["--precision", "fp16"],
            &["fp16 runs on CUDA only", "--precision bf16"][..],
        ),
        (["--loader-threads", "0"], &["--loader-threads"][..]),
    ] {
        let (code, err) = stderr_of(prep().args(train_args(&bag, &run)).args(extra));
        assert_eq!(code, 2, "{extra:?}: {err}");
        assert!(expect.iter().all(|e| err.contains(e)), "{extra:?}: {err}");
    }
    assert!(!run.exists(), "no output after usage errors");
}

/// bf16 autocast trains on the CPU: finite losses close to fp32's, recorded in the model card;
/// fp32 with --prefetch 0 and one loader thread gives byte-identical metrics to the default
/// loader (the pipeline changes nothing but speed); channels-last trains too.
#[test]
fn bf16_trains_on_the_cpu_close_to_fp32() {
    let dir = tempfile::tempdir().unwrap();
    let bag = train_val_bag(dir.path(), 16, 6, 48, 8);
    let weights = fixtures().join("densenet-tiny-weights.safetensors");
    let train = |name: &str, extra: &[&str]| {
        let run = dir.path().join(name);
        let mut args = set(
            set(train_args(&bag, &run), "--image-size", "48"),
            "--batch-size",
            "8",
        );
        args.retain(|a| a != "--arch" && a != TINY);
        prep()
            .args(&args)
            .args(["--epochs", "2"])
            .args(["--weights", weights.to_str().unwrap()])
            .args(extra)
            .assert()
            .success();
        run
    };
    let fp32 = train("fp32", &[]);
    let bf16 = train("bf16", &["--precision", "bf16"]);
    let sync = train("sync", &["--prefetch", "0", "--loader-threads", "1"]);
    let cl = train("cl", &["--channels-last", "--precision", "bf16"]);
    assert_eq!(
        std::fs::read(fp32.join("metrics.csv")).unwrap(),
        std::fs::read(sync.join("metrics.csv")).unwrap(),
        "--prefetch 0 --loader-threads 1 changed the numbers"
    );
    let losses = |run: &Path| -> Vec<f64> {
        json(&run.join("metrics.json"))["epochs"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|e| {
                [
                    e["train"]["loss"].as_f64().unwrap(),
                    e["val"]["loss"].as_f64().unwrap(),
                ]
            })
            .collect()
    };
    let (a, b) = (losses(&fp32), losses(&bf16));
    println!(
        "fp32 losses {a:?}\nbf16 losses {b:?}\nchannels-last bf16 {:?}",
        losses(&cl)
    );
    for (x, y) in a.iter().zip(&b) {
        assert!(y.is_finite(), "bf16 loss {y}");
        assert!(
            (x - y).abs() <= 0.01 * x.abs().max(0.1),
            "bf16 loss {y} too far from fp32's {x}"
        );
    }
    // bf16 really ran in bf16: not the fp32 numbers.
    assert_ne!(a, b);
    assert!(losses(&cl).iter().all(|l| l.is_finite()));
    let card = json(&bf16.join("model.json"));
    assert!(card["precision"].as_str().unwrap().starts_with("bf16"));
    assert_eq!(json(&fp32.join("model.json"))["precision"], "fp32");
    assert_eq!(json(&cl.join("model.json"))["channels_last"], true);
}

/// scripts/gpu-check.sh end to end with --device cpu on a tiny set (reduced DenseNet, 64 px):
/// doctor first, every configuration trained on both sides, a ratio for each, fp16 refused on the
/// CPU, the CPU logits of prep and PyTorch compared.
#[test]
fn gpu_check_script_runs_on_the_cpu() {
    let Some(py) = python("gpu-check.sh --device cpu") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("bash")
        .arg(root.join("scripts/gpu-check.sh"))
        .args(["--device", "cpu", "--images", "8", "--source-size", "64"])
        .args(["--image-size", "64", "--epochs", "1", "--batch-size", "4"])
        .args(["--workers", "2", "--arch", TINY, "--python", &py])
        .arg("--prep")
        .arg(assert_cmd::cargo::cargo_bin("prep"))
        .arg("--work")
        .arg(dir.path().join("work"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{text}\n{err}");
    assert!(text.starts_with("== prep doctor\nprep "), "{text}");
    assert!(!text.contains("failed"), "{text}\n{err}");
    let ratios = text
        .split("ratio prep / pytorch")
        .nth(1)
        .unwrap_or_default();
    for label in [
        "fp32 unfreeze denseblock4",
        "fp32 unfreeze all",
        "bf16 unfreeze denseblock4",
        "bf16 unfreeze all",
        "bf16 unfreeze all channels-last",
    ] {
        assert!(
            ratios
                .lines()
                .any(|l| l.trim_start().starts_with(label) && l.contains('x')),
            "no ratio for {label}:\n{text}"
        );
    }
    assert!(
        text.contains("bf16 unfreeze denseblock4 cache-features no-augment"),
        "{text}"
    );
    assert!(
        err.contains("fp16 runs on CUDA only") && text.contains("   exit 2"),
        "{text}\n{err}"
    );
    assert!(text.contains("prep CPU vs PyTorch CPU"), "{text}");
}
