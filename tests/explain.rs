//! `prep explain`: Grad-CAM at features.norm5, against a Python Grad-CAM on the same weights
//! (hooks on torchvision's `features.norm5`, the forward ending in ReLU, adaptive pool,
//! classifier), and the files it writes.
#![cfg(feature = "train")]

mod common;

use common::*;
use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

fn fixture_weights() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/densenet-tiny-weights.safetensors")
}

/// Colour noise with a few blobs, at the network's input size (so Resize and CenterCrop are the
/// identity and both sides see the same pixels).
fn images(dir: &Path, n: usize, side: u32) -> Vec<PathBuf> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    (0..n)
        .map(|i| {
            let blobs: Vec<(f64, f64, f64, [f64; 3])> = (0..3)
                .map(|_| {
                    (
                        rng.gen_range(0.0..side as f64),
                        rng.gen_range(0.0..side as f64),
                        rng.gen_range(3.0..side as f64 / 3.0),
                        [
                            rng.gen_range(-90.0..90.0),
                            rng.gen_range(-90.0..90.0),
                            rng.gen_range(-90.0..90.0),
                        ],
                    )
                })
                .collect();
            let img = RgbImage::from_fn(side, side, |x, y| {
                let mut px = [0u8; 3];
                for (c, p) in px.iter_mut().enumerate() {
                    let mut v = 128.0 + rng.gen_range(-40.0..40.0);
                    for (bx, by, r, col) in &blobs {
                        if (x as f64 - bx).powi(2) + (y as f64 - by).powi(2) < r * r {
                            v += col[c];
                        }
                    }
                    *p = v.clamp(0.0, 255.0) as u8;
                }
                Rgb(px)
            });
            let p = dir.join(format!("img{i}.png"));
            img.save(&p).unwrap();
            p
        })
        .collect()
}

/// Grad-CAM by hand in PyTorch: a forward hook on features.norm5 keeps its output and a hook on
/// that tensor its gradient; the hook hands the rest of the forward a copy, so the forward's
/// in-place ReLU cannot overwrite the kept activations.
const PY_GRADCAM: &str = r#"
import json, sys
import numpy as np, torch, torchvision
from PIL import Image
from safetensors.torch import load_file
torch.set_num_threads(2)
m = torchvision.models.DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16, bn_size=2, num_classes=2)
m.load_state_dict(load_file(sys.argv[1]), strict=True)
m.eval()
mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
saved = {}
def fwd(mod, inp, out):
    saved["a"] = out.detach().clone()
    out.register_hook(lambda g: saved.__setitem__("g", g.detach().clone()))
    return out.clone()
m.features.norm5.register_forward_hook(fwd)
res = {}
for path in sys.argv[2:]:
    x = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)
    x = ((x - mean) / std).unsqueeze(0)
    logits = m(x)
    m.zero_grad()
    logits[0, 0].backward()
    a, g = saved["a"][0], saved["g"][0]
    w = g.mean(dim=(1, 2))
    cam = torch.relu((w[:, None, None] * a).sum(0))
    if cam.max() > 0:
        cam = cam / cam.max()
    res[path] = {"cam": cam.tolist(), "p": torch.softmax(logits, -1)[0, 0].item()}
print(json.dumps(res))
"#;

#[test]
fn grad_cam_matches_a_pytorch_grad_cam_on_the_same_weights() {
    let t = tempfile::tempdir().unwrap();
    let imgs = images(t.path(), 4, 128);
    let out = t.path().join("cams");
    let o = prep()
        .arg("explain")
        .arg("--model")
        .arg(fixture_weights())
        .args([
            "--classes",
            "bright,dark",
            "--image-size",
            "128",
            "--device",
            "cpu",
        ])
        .arg("--out")
        .arg(&out)
        .args(&imgs)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    println!("{}", String::from_utf8_lossy(&o.stdout));
    let mut ours = Vec::new();
    for p in &imgs {
        let stem = p.file_stem().unwrap().to_string_lossy();
        let j: Value = serde_json::from_str(
            &fs::read_to_string(out.join(format!("{stem}.cam.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(j["layer"], "features.norm5");
        assert_eq!(
            (j["height"].as_u64(), j["width"].as_u64()),
            (Some(4), Some(4)),
            "128 px / 32"
        );
        let ov = image::open(out.join(format!("{stem}.cam.png"))).unwrap();
        assert_eq!((ov.width(), ov.height()), (128, 128));
        let share = j["lung_field_share"].as_f64();
        assert!(share.is_none_or(|s| (0.0..=1.0).contains(&s)));
        ours.push(j);
    }
    // Not all-zero maps: the comparison below is about real maps.
    let maxes: Vec<f64> = ours
        .iter()
        .map(|j| {
            j["cam"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
                .fold(0.0, f64::max)
        })
        .collect();
    assert!(maxes.contains(&1.0), "{maxes:?}");

    let Some(py) = python_with("torch, torchvision, safetensors, PIL") else {
        return;
    };
    let o = std::process::Command::new(py)
        .args(["-c", PY_GRADCAM])
        .arg(fixture_weights())
        .args(&imgs)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let theirs: Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut worst = 0f64;
    for (p, j) in imgs.iter().zip(&ours) {
        let th = &theirs[p.to_str().unwrap()];
        let (a, b) = (j["cam"].as_array().unwrap(), th["cam"].as_array().unwrap());
        assert_eq!(a.len(), b.len());
        for (ra, rb) in a.iter().zip(b) {
            for (x, y) in ra.as_array().unwrap().iter().zip(rb.as_array().unwrap()) {
                worst = worst.max((x.as_f64().unwrap() - y.as_f64().unwrap()).abs());
            }
        }
        let dp = (j["probability"].as_f64().unwrap() - th["p"].as_f64().unwrap()).abs();
        assert!(dp <= 1e-5, "probability differs by {dp}");
    }
    println!("Grad-CAM max abs difference from PyTorch: {worst:e}");
    assert!(worst <= 1e-4, "Grad-CAM differs from PyTorch by {worst}");
}

#[test]
fn two_images_with_one_stem_are_refused() {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir_all(t.path().join("a")).unwrap();
    fs::create_dir_all(t.path().join("b")).unwrap();
    let a = images(&t.path().join("a"), 1, 40);
    let b = images(&t.path().join("b"), 1, 40);
    let o = prep()
        .arg("explain")
        .arg("--model")
        .arg(fixture_weights())
        .args([
            "--classes",
            "x,y",
            "--image-size",
            "40",
            "--device",
            "cpu",
            "--out",
        ])
        .arg(t.path().join("cams"))
        .arg(&a[0])
        .arg(&b[0])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("img0"));
    assert!(!t.path().join("cams").exists(), "nothing written on error");
}
