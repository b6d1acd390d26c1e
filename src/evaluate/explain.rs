//! `prep explain`: Grad-CAM (Selvaraju et al. 2017) of the positive class at `features.norm5`,
//! the layer pytorch-grad-cam uses for torchvision's DenseNet-121: the output of the final
//! BatchNorm, before the forward's ReLU, adaptive average pool and classifier.
//!
//! For activations A (C x h x w) and the positive class's logit y: weights α_c = mean over the
//! map of ∂y/∂A_c; map = ReLU(Σ_c α_c A_c), divided by its maximum (all zeros stay zeros).
//!
//! Output per image: `DIR/<stem>.cam.json` (the h x w map before upsampling, the class
//! probability, and the share of the upsampled map inside the lung-field box) and
//! `DIR/<stem>.cam.png` (the network's input with the upsampled map over it).

use super::occlude;
use super::run::Loaded;
use crate::error::{Error, Result};
use crate::train::data::{self, IMAGENET_MEAN, IMAGENET_STD};
use crate::train::run::write_json;
use image::imageops::{self, FilterType};
use image::{ImageBuffer, Luma, RgbImage};
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// Grad-CAM of one image.
#[derive(Debug, Clone, Serialize)]
pub struct Cam {
    pub image: String,
    pub positive_class: String,
    /// Softmax probability of the positive class.
    pub probability: f64,
    pub layer: &'static str,
    pub input_size: u32,
    /// Rows x columns of the map.
    pub height: usize,
    pub width: usize,
    /// The map, row by row: ReLU'd, normalised to maximum 1 (unless all zero).
    pub cam: Vec<Vec<f64>>,
    /// Share of the map (bilinearly upsampled to the input) inside the lung-field box (the
    /// film's box carried through Resize + CenterCrop, `occlude::lung_box_in_input`).
    pub lung_field_share: Option<f64>,
}

/// The normalised Grad-CAM map (h x w, row-major) and the positive-class probability for one
/// input batch of size 1 (already transformed).
pub fn grad_cam(
    net: &crate::train::DenseNet,
    x: &Tensor,
    positive: i64,
) -> Result<(Vec<f32>, usize, usize, f64)> {
    let (mut maps, h, w, probs) = grad_cam_batch(net, x, positive)?;
    Ok((maps.swap_remove(0), h, w, probs[0]))
}

/// Grad-CAM of every image of a batch at once: the positive logits are summed before the
/// backward pass, and since the head (ReLU, pool, linear; BatchNorm in eval mode) mixes no two
/// images, each image's gradient is its own. Per image: the normalised h x w map (row-major)
/// and the positive-class probability.
pub fn grad_cam_batch(
    net: &crate::train::DenseNet,
    x: &Tensor,
    positive: i64,
) -> Result<(Vec<Vec<f32>>, usize, usize, Vec<f64>)> {
    let feats = tch::no_grad(|| net.forward_trunk(x, false));
    let a = feats.detach().set_requires_grad(true);
    let logits = net.head(&a);
    let probs = Vec::<f64>::try_from(
        logits
            .f_softmax(-1, Kind::Double)?
            .f_select(1, positive)?
            .f_to_device(tch::Device::Cpu)?,
    )?;
    let score = logits.f_select(1, positive)?.f_sum(Kind::Float)?;
    let grads = Tensor::f_run_backward(&[&score], &[&a], false, false)?;
    let g = grads
        .into_iter()
        .next()
        .ok_or_else(|| Error::Usage("internal: no gradient for features.norm5".into()))?;
    let weights = g.f_mean_dim(&[2i64, 3][..], true, Kind::Float)?;
    let cam = (weights * a.detach())
        .f_sum_dim_intlist(&[1i64][..], false, Kind::Float)?
        .f_relu()?;
    let (b, h, w) = (
        cam.size()[0] as usize,
        cam.size()[1] as usize,
        cam.size()[2] as usize,
    );
    let flat = Vec::<f32>::try_from(
        cam.f_to_device(tch::Device::Cpu)?
            .f_contiguous()?
            .view([-1]),
    )?;
    let maps = flat
        .chunks(h * w)
        .take(b)
        .map(|m| {
            let max = m.iter().copied().fold(0f32, f32::max);
            m.iter()
                .map(|v| if max > 0.0 { v / max } else { *v })
                .collect()
        })
        .collect();
    Ok((maps, h, w, probs))
}

/// The h x w map bilinearly upsampled to the `size` x `size` input, row-major.
pub fn upsample(cam: &[f32], h: usize, w: usize, size: u32) -> Vec<f32> {
    let map: ImageBuffer<Luma<f32>, Vec<f32>> =
        ImageBuffer::from_raw(w as u32, h as u32, cam.to_vec()).expect("h*w values");
    imageops::resize(&map, size, size, FilterType::Triangle).into_raw()
}

/// A jet-like colour for t in [0, 1].
fn jet(t: f32) -> [f32; 3] {
    let c = |x: f32| x.clamp(0.0, 1.0);
    [
        c(1.5 - (4.0 * t - 3.0).abs()),
        c(1.5 - (4.0 * t - 2.0).abs()),
        c(1.5 - (4.0 * t - 1.0).abs()),
    ]
}

/// The network's input (undone normalisation) with the upsampled map blended over it.
pub fn overlay(input: &[f32], size: u32, up: &[f32]) -> RgbImage {
    let n = (size * size) as usize;
    RgbImage::from_fn(size, size, |x, y| {
        let i = (y * size + x) as usize;
        let col = jet(up[i].clamp(0.0, 1.0));
        let mut px = [0u8; 3];
        for c in 0..3 {
            let v = (input[c * n + i] * IMAGENET_STD[c] + IMAGENET_MEAN[c]).clamp(0.0, 1.0);
            px[c] = ((0.55 * v + 0.45 * col[c]) * 255.0).round() as u8;
        }
        image::Rgb(px)
    })
}

/// File stem of an image path; two images with one stem would overwrite each other.
fn stems(images: &[PathBuf]) -> Result<Vec<String>> {
    let mut seen = BTreeSet::new();
    images
        .iter()
        .map(|p| {
            let s = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .ok_or_else(|| Error::bad_input(p, "image path has no file name"))?;
            if !seen.insert(s.clone()) {
                return Err(Error::Usage(format!(
                    "two images are named {s:?} (by stem): DIR/{s}.cam.json would be written twice"
                )));
            }
            Ok(s)
        })
        .collect()
}

/// Explain every image into `out` (built beside it, renamed into place).
pub fn run(loaded: &Loaded, images: &[PathBuf], out: &Path, force: bool) -> Result<Vec<Cam>> {
    let stems = stems(images)?;
    let sc = loaded.scorer();
    let size = sc.tf.size;
    super::run::build_into(out, force, |staging| {
        let mut cams = Vec::new();
        for (path, stem) in images.iter().zip(&stems) {
            let img = data::load_rgb(path)?;
            let v = sc.tf.apply(&img, &mut data::item_rng(0, 0, ""));
            let x = Tensor::from_slice(&v)
                .view([1, 3, size as i64, size as i64])
                .to_device(sc.net.device());
            let (cam, h, w, prob) = grad_cam(sc.net, &x, sc.positive as i64)?;
            let up = upsample(&cam, h, w, size);
            let ov = overlay(&v, size, &up);
            let share = occlude::share_inside(
                &up,
                size,
                occlude::lung_box_in_input(img.width(), img.height(), size),
            );
            let png = staging.join(format!("{stem}.cam.png"));
            ov.save(&png)
                .map_err(|e| Error::write(&png, std::io::Error::other(e.to_string())))?;
            let c = Cam {
                image: path.display().to_string(),
                positive_class: sc.classes[sc.positive].clone(),
                probability: prob,
                layer: "features.norm5",
                input_size: size,
                height: h,
                width: w,
                cam: cam
                    .chunks(w)
                    .map(|r| r.iter().map(|v| *v as f64).collect())
                    .collect(),
                lung_field_share: share,
            };
            let mut doc = serde_json::to_value(&c).map_err(|e| Error::Usage(e.to_string()))?;
            doc["method"] = json!("Grad-CAM of the positive class's logit at features.norm5 (before the ReLU, pool and classifier): weights = spatial mean of the gradient; map = ReLU(weighted sum of activations) / its maximum");
            doc["occlude"] = json!(sc.tf.occlude.map(|o| o.describe()));
            write_json(&staging.join(format!("{stem}.cam.json")), &doc)?;
            cams.push(c);
        }
        Ok(cams)
    })
}
