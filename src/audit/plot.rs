//! The audit's two PNG charts: the probe's ROC curve and the features carrying it.

use super::probe::ProbeResult;
use crate::error::{Error, Result};
use crate::plotting::font;
use plotters::prelude::*;
use std::path::Path;

fn err(path: &Path) -> impl Fn(String) -> Error + '_ {
    move |e| Error::write(path, std::io::Error::other(e))
}

/// Out-of-fold ROC of the probe, with the chance diagonal.
pub fn roc(path: &Path, p: &ProbeResult, positive: &str) -> Result<()> {
    let e = err(path);
    let text = font::ensure();
    let root = BitMapBackend::new(path, (520, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let mut b = ChartBuilder::on(&root);
    b.margin(15);
    if text {
        b.caption(
            format!(
                "probe ROC ({positive}): AUC {:.3} [{:.3}, {:.3}]",
                p.auc, p.ci[0], p.ci[1]
            ),
            ("sans-serif", 18),
        )
        .x_label_area_size(40)
        .y_label_area_size(50);
    }
    let mut chart = b
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)
        .map_err(|x| e(x.to_string()))?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("false positive rate")
            .y_desc("true positive rate");
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|x| e(x.to_string()))?;
    chart
        .draw_series(LineSeries::new(
            vec![(0.0, 0.0), (1.0, 1.0)],
            BLACK.mix(0.4),
        ))
        .map_err(|x| e(x.to_string()))?;
    chart
        .draw_series(LineSeries::new(p.roc.clone(), RED.stroke_width(3)))
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))?;
    Ok(())
}

/// Horizontal bars: each varying feature's share of the probe's importance.
pub fn importance(path: &Path, p: &ProbeResult) -> Result<()> {
    let e = err(path);
    let text = font::ensure();
    let feats: Vec<_> = p.features.iter().take(12).collect();
    let n = feats.len().max(1);
    let root = BitMapBackend::new(path, (640, 60 + 30 * n as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let mut b = ChartBuilder::on(&root);
    b.margin(10);
    if text {
        b.caption(
            format!("what the probe ({}) uses", p.model),
            ("sans-serif", 18),
        )
        .x_label_area_size(30)
        .y_label_area_size(150);
    }
    let mut chart = b
        // Segmented rows, so each name sits at the centre of its bar (and once).
        .build_cartesian_2d(0f64..1f64, (0i32..n as i32 - 1).into_segmented())
        .map_err(|x| e(x.to_string()))?;
    let names: Vec<String> = feats.iter().map(|f| f.name.clone()).collect();
    let label = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(y) if (0..n as i32).contains(y) => {
            names[(n as i32 - 1 - *y) as usize].clone()
        }
        _ => String::new(),
    };
    let mut mesh = chart.configure_mesh();
    mesh.disable_y_mesh().y_labels(n);
    if text {
        mesh.x_desc("share of importance").y_label_formatter(&label);
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|x| e(x.to_string()))?;
    chart
        .draw_series(feats.iter().enumerate().map(|(i, f)| {
            let y = n as i32 - 1 - i as i32;
            Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(y)),
                    (f.importance.clamp(0.0, 1.0), SegmentValue::Exact(y + 1)),
                ],
                BLUE.mix(0.7).filled(),
            )
        }))
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))?;
    Ok(())
}
