//! `prep evaluate --explain N`: Grad-CAM (as `prep explain` computes it) for every evaluated
//! image, ranked worst error first (largest |y - p|), written as
//!
//! ```text
//! DIR/explain/cams.csv              every evaluated image: rank, id, ..., abs_error, lung_field_share, overlay
//! DIR/explain/NNN-<stem>.cam.png    overlays of the N worst errors (NNN = rank)
//! DIR/explain/NNN-<stem>.cam.json   their maps, as prep explain writes them
//! ```
//!
//! and summarised in metrics.json as `explain` (the share of attribution inside the lung field
//! per source). The lung field is the box `--occlude` uses, carried through the validation
//! transform. The report shows the overlays worst first and the per-source shares.

use super::occlude;
use super::run::Scorer;
use super::Prediction;
use crate::error::{Error, Result};
use crate::train::data::{self, Sample};
use crate::train::run::write_json;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use tch::Tensor;

/// One evaluated image with its Grad-CAM.
#[derive(Debug, Clone)]
pub struct Explained {
    pub row: Prediction,
    /// |y - p|: how wrong the model was about this image.
    pub abs_error: f64,
    pub cam: Vec<f32>,
    pub height: usize,
    pub width: usize,
    pub lung_field_share: Option<f64>,
}

/// Grad-CAM of every row (batched), ranked worst error first, ties by path.
pub fn explain_rows(
    sc: &Scorer,
    bag: &Path,
    rows: &[Prediction],
    batch_size: usize,
) -> Result<Vec<Explained>> {
    let samples: Vec<Sample> = rows
        .iter()
        .map(|r| Sample {
            id: r.path.clone(),
            path: bag.join(&r.path),
            label: 0,
        })
        .collect();
    let size = sc.tf.size;
    let paths: Vec<_> = samples.iter().map(|s| s.path.clone()).collect();
    let n = samples.len();
    let pb = crate::progress::bar(n.div_ceil(batch_size.max(1)) as u64, "Grad-CAM");
    let mut out = Vec::with_capacity(n);
    let s = size as i64;
    for b in data::batches(
        Arc::new(samples),
        (0..n).collect(),
        batch_size,
        sc.tf,
        0,
        0,
        4,
    ) {
        let b = b?;
        let x = Tensor::from_slice(&b.x)
            .view([b.y.len() as i64, 3, s, s])
            .to_device(sc.net.device());
        let (maps, h, w, _) = super::explain::grad_cam_batch(sc.net, &x, sc.positive as i64)?;
        for (i, cam) in b.indices.into_iter().zip(maps) {
            let (fw, fh) = image::image_dimensions(&paths[i])
                .map_err(|e| Error::bad_input(&paths[i], e.to_string()))?;
            let up = super::explain::upsample(&cam, h, w, size);
            let share = occlude::share_inside(&up, size, occlude::lung_box_in_input(fw, fh, size));
            let row = rows[i].clone();
            out.push(Explained {
                abs_error: (row.y as f64 - row.probability).abs(),
                row,
                cam,
                height: h,
                width: w,
                lung_field_share: share,
            });
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    rank(&mut out);
    Ok(out)
}

/// Worst error first; ties by path, so the order never depends on batching.
pub fn rank(v: &mut [Explained]) {
    v.sort_by(|a, b| {
        b.abs_error
            .total_cmp(&a.abs_error)
            .then_with(|| a.row.path.cmp(&b.row.path))
    });
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// metrics.json's `explain`: overall and per source, the mean share of attribution inside the
/// lung field, and how many images hold most of it (> 0.5) there.
pub fn summary(ranked: &[Explained], overlays: usize) -> Value {
    let block = |v: &[&Explained]| {
        let s: Vec<f64> = v.iter().filter_map(|e| e.lung_field_share).collect();
        json!({
            "n": v.len(),
            "with_a_map": s.len(),
            "mean_lung_field_share": mean(&s),
            "share_of_images_mostly_inside": (!s.is_empty()).then(|| s.iter().filter(|x| **x > 0.5).count() as f64 / s.len() as f64),
        })
    };
    let mut by: BTreeMap<String, Vec<&Explained>> = BTreeMap::new();
    for e in ranked {
        by.entry(e.row.source.clone()).or_default().push(e);
    }
    let all: Vec<&Explained> = ranked.iter().collect();
    json!({
        "method": "Grad-CAM of the positive class's logit at features.norm5 (prep explain), every evaluated image",
        "lung_field": "the --occlude box (76 % x 84 % of the film) carried through Resize + CenterCrop; share = sum of the bilinearly upsampled map inside it / sum over the input",
        "ranking": "worst error first: largest |y - p|, ties by path",
        "overlays": overlays.min(ranked.len()),
        "all": block(&all),
        "by_source": by.iter().map(|(k, v)| (k.clone(), block(v))).collect::<serde_json::Map<_, _>>(),
        "folder": "explain",
    })
}

/// The overlay's file name for rank `k` (1-based).
fn overlay_stem(k: usize, path: &str) -> String {
    let stem = Path::new(path)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{k:03}-{}", crate::pipeline::safe(&stem))
}

/// Write `dir/explain/`: cams.csv for every image, overlays and maps for the first `n`.
pub fn write(dir: &Path, sc: &Scorer, bag: &Path, ranked: &[Explained], n: usize) -> Result<()> {
    let ex = dir.join("explain");
    std::fs::create_dir_all(&ex).map_err(|e| Error::write(&ex, e))?;
    let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
    let err = |e: csv::Error| Error::Usage(format!("cams.csv: {e}"));
    w.write_record([
        "rank",
        "id",
        "path",
        "source",
        "split",
        "external",
        "label",
        "y",
        "probability",
        "abs_error",
        "lung_field_share",
        "overlay",
    ])
    .map_err(err)?;
    let size = sc.tf.size;
    for (k, e) in ranked.iter().enumerate() {
        let r = &e.row;
        let overlay = if k < n {
            let stem = overlay_stem(k + 1, &r.path);
            let img = data::load_rgb(&bag.join(&r.path))?;
            let v = sc.tf.apply(&img, &mut data::item_rng(0, 0, ""));
            let up = super::explain::upsample(&e.cam, e.height, e.width, size);
            let png = ex.join(format!("{stem}.cam.png"));
            super::explain::overlay(&v, size, &up)
                .save(&png)
                .map_err(|er| Error::write(&png, std::io::Error::other(er.to_string())))?;
            write_json(
                &ex.join(format!("{stem}.cam.json")),
                &json!({
                    "image": r.path,
                    "id": r.id,
                    "source": r.source,
                    "label": r.label,
                    "rank": k + 1,
                    "abs_error": e.abs_error,
                    "positive_class": sc.classes[sc.positive],
                    "probability": r.probability,
                    "layer": "features.norm5",
                    "input_size": size,
                    "height": e.height,
                    "width": e.width,
                    "cam": e.cam.chunks(e.width).map(|c| c.iter().map(|v| *v as f64).collect::<Vec<f64>>()).collect::<Vec<_>>(),
                    "lung_field_share": e.lung_field_share,
                    "occlude": sc.tf.occlude.map(|o| o.describe()),
                }),
            )?;
            format!("{stem}.cam.png")
        } else {
            String::new()
        };
        w.write_record([
            (k + 1).to_string(),
            r.id.clone(),
            r.path.clone(),
            r.source.clone(),
            r.split.clone(),
            (r.external as u8).to_string(),
            r.label.clone(),
            r.y.to_string(),
            format!("{:?}", r.probability),
            format!("{:?}", e.abs_error),
            e.lung_field_share
                .map(|s| format!("{s:?}"))
                .unwrap_or_default(),
            overlay,
        ])
        .map_err(err)?;
    }
    let p = ex.join("cams.csv");
    let bytes = w
        .into_inner()
        .map_err(|e| Error::Usage(format!("cams.csv: {e}")))?;
    std::fs::write(&p, bytes).map_err(|e| Error::write(&p, e))
}
