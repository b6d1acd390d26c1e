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
    Tensor::read_safetensors(path).unwrap().into_iter().collect()
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
    assert!(report.new_head.is_none() && report.unused.is_empty(), "{report:?}");

    let x = &exp["input"];
    let y = &exp["labels"];
    let logits = tch::no_grad(|| net.forward_t(x, false));
    let d = max_abs(&logits, &exp["logits_eval"]);
    println!("eval logits max abs diff {d:e}");
    assert!(d <= 1e-4, "eval logits differ from torchvision by {d}");

    net.set_trainable(&Unfreeze::parse("denseblock4")).unwrap();
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
    assert!((l1 - e1).abs() <= 1e-4, "loss after one Adam step {l1} vs torch {e1}");
    let d1 = max_abs(&logits1, &exp["logits_step1"]);
    assert!(d1 <= 1e-4, "logits after one Adam step differ by {d1}");
    // The step really moved something, so the comparison above is not vacuous.
    assert!(max_abs(&logits1, &logits) > 1e-4);
}

#[test]
fn parity_with_torchvision_reduced_fixture() {
    let f = fixtures();
    check_parity(
        &f.join("densenet-tiny-weights.safetensors"),
        &f.join("densenet-tiny-expected.safetensors"),
    );
}

fn python() -> Option<String> {
    let py = std::env::var("PREP_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = std::process::Command::new(&py)
        .args(["-c", "import torch, torchvision, safetensors"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    ok.then_some(py)
}

#[test]
fn parity_with_torchvision_full_densenet121() {
    let Some(py) = python() else {
        println!("skipped: PyTorch + torchvision + safetensors not importable (set PREP_TEST_PYTHON to a python that has them)");
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

#[test]
fn misshapen_and_missing_weights_are_named() {
    let f = fixtures().join("densenet-tiny-weights.safetensors");
    // Another growth rate: every conv has another shape.
    let mut net = DenseNet::new(DenseNetConfig::parse("densenet:4,2-2-2-2,16,2", 2).unwrap(), Device::Cpu);
    let err = net.load_weights(&f, false).unwrap_err().to_string();
    assert!(err.contains("tensor classifier.weight has shape [2, 32]") && err.contains("needs [2, 17]"), "{err}");
    // More layers than the file has.
    let mut net = DenseNet::new(DenseNetConfig::parse("densenet:8,2-2-2-3,16,2", 2).unwrap(), Device::Cpu);
    let err = net.load_weights(&f, false).unwrap_err().to_string();
    assert!(err.contains("missing tensors features.denseblock4.denselayer3.conv1.weight [16, 32, 1, 1]"), "{err}");
    // A new head is allowed when fine-tuning, not for prediction.
    let mut net = DenseNet::new(DenseNetConfig::parse("densenet:8,2-2-2-2,16,2", 3).unwrap(), Device::Cpu);
    assert!(net.load_weights(&f, false).unwrap_err().to_string().contains("tensor classifier.bias has shape [2]"));
    let r = net.load_weights(&f, true).unwrap();
    assert!(r.new_head.is_some());
    let _ = Kind::Float;
}

#[test]
fn convert_weights_renames_chexnet_layouts() {
    let Some(py) = python() else {
        println!("skipped: PyTorch + torchvision + safetensors not importable (set PREP_TEST_PYTHON to a python that has them)");
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
    for f in ["model.pth.tar.safetensors", "checkpoint.safetensors", "densenet121-old.pth.safetensors"] {
        let p = dir.path().join(f);
        let cfg = DenseNetConfig::infer(&DenseNet::read_shapes(&p).unwrap(), &p).unwrap();
        assert_eq!(cfg.num_classes, 14);
        let mut net = DenseNet::new(cfg, Device::Cpu);
        let r = net.load_weights(&p, false).unwrap();
        assert!(r.unused.is_empty(), "{f}: {:?}", r.unused);
    }
}
