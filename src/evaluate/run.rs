//! `prep evaluate`: predict a split bag's images with a trained model, then write
//! predictions.csv, metrics.json, metrics.md and reliability.png (and, with
//! `--counterfactual`, counterfactual.csv; with `--explain N`, explain/), built in a folder
//! beside DIR and renamed into place.
//!
//! Steps: load the model → read and verify the bag → choose the images (the evaluated split and
//! val, whose predictions alone choose the thresholds) → predict → metrics → write.

use super::occlude::Occlusion;
use super::{BagImage, Context, Prediction};
use crate::error::{Error, Result};
use crate::manifest::staging_dir;
use crate::manifest::verify_bag;
use crate::train::data::{self, Sample, Transform};
use crate::train::densenet::DenseNet;
use crate::train::device::{self, DeviceChoice};
use crate::train::predict::{load_model, Model};
use crate::train::run::write_json;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

/// Which images `prep evaluate` scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitChoice {
    Test,
    Val,
    All,
}

impl SplitChoice {
    pub fn name(self) -> &'static str {
        match self {
            SplitChoice::Test => "test",
            SplitChoice::Val => "val",
            SplitChoice::All => "all",
        }
    }
    fn takes(self, split: &str) -> bool {
        match self {
            SplitChoice::All => true,
            s => s.name() == split,
        }
    }
}

#[derive(Debug, Clone)]
pub struct EvaluateConfig {
    pub model: PathBuf,
    /// Class names, for a bare weights file [default: the bag's class folders].
    pub classes: Option<Vec<String>>,
    pub image_size: Option<u32>,
    pub positive: Option<String>,
    pub data: PathBuf,
    pub split: SplitChoice,
    pub out: PathBuf,
    /// None: as the model was trained (its card's `occlude`); Some(None): no occlusion.
    pub occlude: Option<Option<Occlusion>>,
    pub counterfactual: Option<PathBuf>,
    /// Grad-CAM of every evaluated image, overlays of this many worst errors (`--explain N`).
    pub explain: Option<usize>,
    pub device: DeviceChoice,
    pub batch_size: usize,
    pub seed: u64,
    pub resamples: usize,
    pub force: bool,
}

#[derive(Debug)]
pub struct EvaluateOutcome {
    pub out: PathBuf,
    pub metrics: Value,
    pub notes: Vec<String>,
}

/// A model with what evaluation needs to know about it.
pub struct Loaded {
    pub model: Model,
    pub positive: usize,
    pub occlude: Option<Occlusion>,
}

/// The model card of a run folder, if there is one.
fn card(model: &Path) -> Option<Value> {
    let p = model.join("model.json");
    serde_json::from_slice(&std::fs::read(p).ok()?).ok()
}

/// Load a run folder or weights file; the positive class and occlusion default to the card's.
pub fn load(
    model: &Path,
    classes: Option<Vec<String>>,
    image_size: Option<u32>,
    positive: Option<&str>,
    occlude: Option<Option<Occlusion>>,
    device: Device,
) -> Result<Loaded> {
    let model_loaded = load_model(model, classes, image_size, device)?;
    let card = card(model);
    let want = positive
        .map(String::from)
        .or_else(|| card.as_ref()?["positive_class"].as_str().map(String::from));
    let positive = match want {
        Some(p) => model_loaded
            .classes
            .iter()
            .position(|c| *c == p)
            .ok_or_else(|| {
                Error::Usage(format!(
                    "--positive {p}: no such class (classes: {})",
                    model_loaded.classes.join(", ")
                ))
            })?,
        None => 0,
    };
    let occlude = match occlude {
        Some(o) => o,
        None => card
            .as_ref()
            .and_then(|c| c["occlude"].as_str())
            .and_then(Occlusion::parse)
            .flatten(),
    };
    Ok(Loaded {
        model: model_loaded,
        positive,
        occlude,
    })
}

/// Softmax probabilities of every sample (validation transform), in sample order.
pub fn probabilities(
    net: &DenseNet,
    samples: Vec<Sample>,
    tf: Transform,
    batch_size: usize,
) -> Result<Vec<Vec<f64>>> {
    let n = samples.len();
    let pb = crate::progress::bar(n.div_ceil(batch_size.max(1)) as u64, "predicting");
    let mut out = Vec::with_capacity(n);
    let s = tf.size as i64;
    for b in data::batches(Arc::new(samples), (0..n).collect(), batch_size, tf, 0, 0, 4) {
        let b = b?;
        let x = Tensor::from_slice(&b.x)
            .view([b.y.len() as i64, 3, s, s])
            .to_device(net.device());
        let p = tch::no_grad(|| net.forward_t(&x, false))
            .f_softmax(-1, Kind::Float)?
            .f_to_device(Device::Cpu)?;
        let c = p.size()[1] as usize;
        let flat = Vec::<f32>::try_from(p.flatten(0, -1))?;
        out.extend(
            flat.chunks(c)
                .map(|r| r.iter().map(|v| *v as f64).collect::<Vec<f64>>()),
        );
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(out)
}

/// What scoring an image needs: the network, its classes, the positive one, the transform.
pub struct Scorer<'a> {
    pub net: &'a DenseNet,
    pub classes: &'a [String],
    pub positive: usize,
    pub tf: Transform,
}

impl Loaded {
    pub fn scorer(&self) -> Scorer<'_> {
        Scorer {
            net: &self.model.net,
            classes: &self.model.classes,
            positive: self.positive,
            tf: Transform {
                size: self.model.image_size,
                augment: false,
                occlude: self.occlude,
            },
        }
    }
}

/// Predict `images` of `bag` and turn them into prediction rows.
pub fn predict_images(
    sc: &Scorer,
    bag: &Path,
    images: &[&BagImage],
    batch_size: usize,
) -> Result<Vec<Prediction>> {
    let samples: Vec<Sample> = images
        .iter()
        .map(|im| Sample {
            id: im.path.clone(),
            path: bag.join(&im.path),
            label: 0,
        })
        .collect();
    let probs = probabilities(sc.net, samples, sc.tf, batch_size)?;
    Ok(images
        .iter()
        .zip(probs)
        .map(|(im, p)| Prediction {
            id: im.id.clone(),
            path: im.path.clone(),
            source: im.source.clone(),
            patient_id: im.patient_id.clone(),
            group: im.group_key(),
            view: im.view.clone(),
            split: im.split.clone(),
            external: im.external,
            label: im.class.clone(),
            y: (im.class == sc.classes[sc.positive]) as u8,
            probability: p[sc.positive],
            predicted: sc.classes[crate::train::metrics::argmax(&p)].clone(),
        })
        .collect())
}

/// Every class of the bag's images must be one the model knows.
fn check_classes(bag: &Path, images: &[BagImage], classes: &[String]) -> Result<()> {
    for im in images {
        if !classes.contains(&im.class) {
            return Err(Error::bad_input(
                bag.join("data/records.csv"),
                format!(
                    "image {} has class {:?}, which the model does not know (classes: {})",
                    im.path,
                    im.class,
                    classes.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Run `prep evaluate`.
pub fn run(cfg: &EvaluateConfig) -> Result<EvaluateOutcome> {
    let (device, fallback) = device::resolve(cfg.device)?;
    let mut notes: Vec<String> = fallback.into_iter().collect();
    verify_bag(&cfg.data)?.into_result(&cfg.data)?;
    let images = super::read_bag_images(&cfg.data)?;
    let classes = match (&cfg.classes, cfg.model.is_file()) {
        (None, true) => {
            let mut c: Vec<String> = images.iter().map(|i| i.class.clone()).collect();
            c.sort();
            c.dedup();
            Some(c)
        }
        (c, _) => c.clone(),
    };
    let loaded = load(
        &cfg.model,
        classes,
        cfg.image_size,
        cfg.positive.as_deref(),
        cfg.occlude,
        device,
    )?;
    check_classes(&cfg.data, &images, &loaded.model.classes)?;
    let chosen: Vec<&BagImage> = images
        .iter()
        .filter(|i| cfg.split.takes(&i.split))
        .collect();
    if chosen.is_empty() {
        return Err(Error::bad_input(
            &cfg.data,
            format!(
                "no images in split {:?} (splits present: {})",
                cfg.split.name(),
                images
                    .iter()
                    .map(|i| i.split.as_str())
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let val_imgs: Vec<&BagImage> = images.iter().filter(|i| i.split == "val").collect();
    if val_imgs.is_empty() {
        notes.push("the bag has no val split: no operating thresholds are reported".into());
    }
    // One pass over the union; val rows are then picked out for the thresholds.
    let union: Vec<&BagImage> = images
        .iter()
        .filter(|i| cfg.split.takes(&i.split) || i.split == "val")
        .collect();
    let preds = predict_images(&loaded.scorer(), &cfg.data, &union, cfg.batch_size)?;
    let rows: Vec<Prediction> = preds
        .iter()
        .filter(|p| cfg.split.takes(&p.split))
        .cloned()
        .collect();
    let val: Vec<Prediction> = preds.iter().filter(|p| p.split == "val").cloned().collect();
    let ctx = Context {
        model: cfg.model.display().to_string(),
        data: cfg.data.display().to_string(),
        split: cfg.split.name().into(),
        positive_class: loaded.model.classes[loaded.positive].clone(),
        classes: loaded.model.classes.clone(),
        occlude: loaded.occlude.map(|o| o.describe()),
        seed: cfg.seed,
    };
    let mut metrics = super::metrics(&ctx, &rows, &val, cfg.resamples);
    let cf = match &cfg.counterfactual {
        Some(orig) => Some(counterfactual(
            &loaded,
            orig,
            &images,
            &rows,
            cfg.batch_size,
            youden(&metrics),
        )?),
        None => None,
    };
    if let Some((v, _)) = &cf {
        metrics["counterfactual"] = v.clone();
    }
    let sc = loaded.scorer();
    let explained = match cfg.explain {
        Some(n) => {
            let ranked = super::cams::explain_rows(&sc, &cfg.data, &rows, cfg.batch_size)?;
            metrics["explain"] = super::cams::summary(&ranked, n);
            Some((ranked, n))
        }
        None => None,
    };
    build_into(&cfg.out, cfg.force, |dir| {
        write_outputs(dir, "", &rows, &metrics)?;
        if let Some((ranked, n)) = &explained {
            super::cams::write(dir, &sc, &cfg.data, ranked, *n)?;
        }
        if let Some((_, cf_rows)) = &cf {
            let mut s = String::from("id,p_before,p_after,abs_delta_p\n");
            for (id, b, a) in cf_rows {
                s.push_str(&format!("{id},{b:?},{a:?},{:?}\n", (a - b).abs()));
            }
            let p = dir.join("counterfactual.csv");
            std::fs::write(&p, s).map_err(|e| Error::write(&p, e))?;
        }
        Ok(())
    })?;
    Ok(EvaluateOutcome {
        out: cfg.out.clone(),
        metrics,
        notes,
    })
}

/// Build an output folder beside `out` with `f`, then rename it into place (refusing a
/// non-empty `out` unless `force`); on error the half-built folder is removed.
pub(crate) fn build_into<T>(
    out: &Path,
    force: bool,
    f: impl FnOnce(&Path) -> Result<T>,
) -> Result<T> {
    let staging = staging_dir(out, force)?;
    let v = match f(&staging) {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(|e| Error::write(out, e))?;
    }
    std::fs::rename(&staging, out).map_err(|e| Error::write(out, e))?;
    Ok(v)
}

/// `PREFIXpredictions.csv`, `PREFIXmetrics.json`, `PREFIXmetrics.md`, `PREFIXreliability.png`.
pub fn write_outputs(dir: &Path, prefix: &str, rows: &[Prediction], metrics: &Value) -> Result<()> {
    let p = dir.join(format!("{prefix}predictions.csv"));
    std::fs::write(&p, super::predictions_csv(rows)?).map_err(|e| Error::write(&p, e))?;
    write_json(&dir.join(format!("{prefix}metrics.json")), metrics)?;
    let p = dir.join(format!("{prefix}metrics.md"));
    std::fs::write(&p, super::markdown(metrics)).map_err(|e| Error::write(&p, e))?;
    reliability_plot(&dir.join(format!("{prefix}reliability.png")), metrics)
}

/// Predict the original (pre-inpainting) films of the evaluated images and compare. A film
/// whose bytes are unchanged (same sha256) keeps its probability: only changed films are
/// scored again.
fn counterfactual(
    loaded: &Loaded,
    original: &Path,
    images: &[BagImage],
    rows: &[Prediction],
    batch_size: usize,
    val_threshold: Option<f64>,
) -> Result<(Value, Vec<super::Counterfactual>)> {
    verify_bag(original)?.into_result(original)?;
    let orig = super::read_bag_images(original)?;
    let key = |i: &BagImage| (i.source.clone(), i.id.clone());
    let after: BTreeMap<(String, String), &BagImage> = images.iter().map(|i| (key(i), i)).collect();
    let evaluated: BTreeMap<(String, String), f64> = rows
        .iter()
        .map(|r| ((r.source.clone(), r.id.clone()), r.probability))
        .collect();
    let mut before: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut changed: Vec<&BagImage> = Vec::new();
    for o in &orig {
        let k = key(o);
        let (Some(a), Some(p)) = (after.get(&k), evaluated.get(&k)) else {
            continue;
        };
        if !o.sha256.is_empty() && o.sha256 == a.sha256 {
            before.insert(k, *p);
        } else {
            changed.push(o);
        }
    }
    for p in predict_images(&loaded.scorer(), original, &changed, batch_size)? {
        before.insert((p.source, p.id), p.probability);
    }
    Ok(super::counterfactual(
        rows,
        &before,
        &original.display().to_string(),
        val_threshold,
    ))
}

/// The Youden threshold a metrics document chose on val (None without a val split).
fn youden(m: &Value) -> Option<f64> {
    m["thresholds"]
        .as_array()?
        .iter()
        .find(|t| t["rule"] == "youden")?["threshold"]
        .as_f64()
}

/// The metrics `prep train` writes for its test split (test-predictions.csv, test-metrics.json,
/// test-metrics.md, test-reliability.png in the run folder): the chosen checkpoint's
/// predictions on val (which alone choose the thresholds) and on test. Source, patient and
/// group come from the bag's records.csv where it describes the image.
#[allow(clippy::too_many_arguments)]
pub fn train_test_metrics(
    dir: &Path,
    model_name: &str,
    sc: &Scorer,
    bag: &Path,
    val: &[Sample],
    test: &[Sample],
    batch_size: usize,
    seed: u64,
) -> Result<Value> {
    let described: BTreeMap<String, BagImage> = super::read_bag_images(bag)
        .unwrap_or_default()
        .into_iter()
        .map(|i| (i.path.clone(), i))
        .collect();
    let images = |split: &str, samples: &[Sample]| -> Vec<BagImage> {
        samples
            .iter()
            .map(|s| {
                let class = sc.classes[s.label as usize].clone();
                match described.get(&s.id) {
                    Some(d) => BagImage {
                        class,
                        split: split.into(),
                        ..d.clone()
                    },
                    None => BagImage {
                        id: s.id.clone(),
                        path: s.id.clone(),
                        split: split.into(),
                        class,
                        source: String::new(),
                        patient_id: String::new(),
                        group: String::new(),
                        view: String::new(),
                        external: false,
                        sha256: String::new(),
                    },
                }
            })
            .collect()
    };
    let (vi, ti) = (images("val", val), images("test", test));
    let val = predict_images(sc, bag, &vi.iter().collect::<Vec<_>>(), batch_size)?;
    let test = predict_images(sc, bag, &ti.iter().collect::<Vec<_>>(), batch_size)?;
    let ctx = Context {
        model: model_name.to_string(),
        data: bag.display().to_string(),
        split: "test".into(),
        positive_class: sc.classes[sc.positive].clone(),
        classes: sc.classes.to_vec(),
        occlude: sc.tf.occlude.map(|o| o.describe()),
        seed,
    };
    let m = super::metrics(&ctx, &test, &val, super::RESAMPLES);
    write_outputs(dir, "test-", &test, &m)?;
    Ok(m)
}

/// Reliability diagram: observed share of positives against mean predicted probability per bin.
fn reliability_plot(path: &Path, m: &Value) -> Result<()> {
    use plotters::prelude::*;
    let err = |e: String| Error::write(path, std::io::Error::other(e));
    let pts: Vec<(f64, f64, u64)> = m["reliability"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| {
            Some((
                b["mean_probability"].as_f64()?,
                b["fraction_positive"].as_f64()?,
                b["n"].as_u64()?,
            ))
        })
        .collect();
    let have_font = crate::train::metrics::font::ensure();
    let root = BitMapBackend::new(path, (600, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut b = ChartBuilder::on(&root);
    b.margin(15);
    if have_font {
        b.caption(
            format!(
                "Reliability (ECE {})",
                m["ece"]
                    .as_f64()
                    .map(|e| format!("{e:.3}"))
                    .unwrap_or_else(|| "-".into())
            ),
            ("sans-serif", 22),
        )
        .x_label_area_size(40)
        .y_label_area_size(50);
    }
    let mut chart = b
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)
        .map_err(|e| err(e.to_string()))?;
    let mut mesh = chart.configure_mesh();
    if have_font {
        mesh.x_desc("mean predicted probability")
            .y_desc("share positive");
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|e| err(e.to_string()))?;
    chart
        .draw_series(LineSeries::new(
            vec![(0.0, 0.0), (1.0, 1.0)],
            BLACK.mix(0.4),
        ))
        .map_err(|e| err(e.to_string()))?;
    chart
        .draw_series(LineSeries::new(
            pts.iter().map(|p| (p.0, p.1)),
            BLUE.stroke_width(2),
        ))
        .map_err(|e| err(e.to_string()))?;
    let max_n = pts.iter().map(|p| p.2).max().unwrap_or(1) as f64;
    chart
        .draw_series(pts.iter().map(|p| {
            // Marker area grows with the bin's count.
            let r = 3.0 + 9.0 * (p.2 as f64 / max_n).sqrt();
            Circle::new((p.0, p.1), r as i32, BLUE.filled())
        }))
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// Summary line values for the CLI.
pub fn headline(m: &Value) -> String {
    use super::{interval, num};
    format!(
        "AUC {} (DeLong 95 % CI {}, bootstrap {}), ECE {}, n {}",
        num(&m["auc"], 4),
        interval(&m["auc_ci"], 4),
        interval(&m["auc_ci_bootstrap"], 4),
        num(&m["ece"], 4),
        m["n"]
    )
}
