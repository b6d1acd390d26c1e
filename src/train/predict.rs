//! `prep predict`: the validation transform and a trained model, image by image.

use super::data::{self, Transform};
use super::densenet::{DenseNet, DenseNetConfig};
use crate::error::{Error, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub image: String,
    pub logits: Vec<f64>,
    /// Class name -> softmax probability, in class order.
    pub probabilities: serde_json::Map<String, serde_json::Value>,
}

pub struct Model {
    pub net: DenseNet,
    pub classes: Vec<String>,
    pub image_size: u32,
}

/// A run folder (model.json + best.safetensors) or a bare weights file (needs `classes`).
pub fn load_model(
    model: &Path,
    classes: Option<Vec<String>>,
    image_size: Option<u32>,
    device: Device,
) -> Result<Model> {
    let (weights, card_classes, card_size): (PathBuf, Option<Vec<String>>, Option<u32>) = if model
        .is_dir()
    {
        let card_path = model.join("model.json");
        let text = std::fs::read_to_string(&card_path).map_err(|e| Error::read(&card_path, e))?;
        let card: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::bad_input(&card_path, format!("not JSON: {e}")))?;
        let cls = card["classes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .ok_or_else(|| Error::bad_input(&card_path, "no \"classes\" list"))?;
        let size = card["image_size"].as_u64().map(|s| s as u32);
        let w = card["weights"].as_str().unwrap_or("best.safetensors");
        (model.join(w), Some(cls), size)
    } else {
        (model.to_path_buf(), None, None)
    };
    let classes = match (classes, card_classes) {
        (Some(c), _) => c,
        (None, Some(c)) => c,
        (None, None) => {
            return Err(Error::Usage(format!(
                "{} is a bare weights file: pass --classes a,b,... (in the order of its outputs)",
                model.display()
            )))
        }
    };
    let cfg = DenseNetConfig::infer(&DenseNet::read_shapes(&weights)?, &weights)?;
    if cfg.num_classes as usize != classes.len() {
        return Err(Error::Usage(format!(
            "{} has {} output(s) but {} class name(s) were given ({})",
            weights.display(),
            cfg.num_classes,
            classes.len(),
            classes.join(",")
        )));
    }
    let mut net = DenseNet::new(cfg, device);
    net.load_weights(&weights, false)?;
    Ok(Model {
        net,
        classes,
        image_size: image_size.or(card_size).unwrap_or(224),
    })
}

/// Probabilities for each image, in input order.
pub fn predict(model: &Model, images: &[PathBuf]) -> Result<Vec<Prediction>> {
    let tf = Transform {
        size: model.image_size,
        augment: false,
        occlude: None,
    };
    let s = model.image_size as i64;
    let mut out = Vec::new();
    for img_path in images {
        let img = data::load_rgb(img_path)?;
        let v = tf.apply(&img, &mut data::item_rng(0, 0, ""));
        let x = Tensor::from_slice(&v)
            .view([1, 3, s, s])
            .to_device(model.net.device());
        let logits = tch::no_grad(|| model.net.forward_t(&x, false)).to_device(Device::Cpu);
        let probs = logits.softmax(-1, Kind::Float);
        let l = Vec::<f32>::try_from(logits.flatten(0, -1))?;
        let p = Vec::<f32>::try_from(probs.flatten(0, -1))?;
        let mut map = serde_json::Map::new();
        for (c, pv) in model.classes.iter().zip(&p) {
            map.insert(c.clone(), serde_json::json!(*pv as f64));
        }
        out.push(Prediction {
            image: img_path.display().to_string(),
            logits: l.iter().map(|v| *v as f64).collect(),
            probabilities: map,
        });
    }
    Ok(out)
}
