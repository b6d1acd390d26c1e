//! Classification metrics (loss, accuracy, one-vs-rest AUC, sensitivity, specificity, confusion
//! matrix) and the PNG plots of their curves.

use crate::error::{Error, Result};
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Metrics {
    pub images: usize,
    /// Mean cross-entropy.
    pub loss: f64,
    pub accuracy: f64,
    /// ROC AUC of the positive class against the rest; None when one side is absent.
    pub auc: Option<f64>,
    /// Recall of the positive class.
    pub sensitivity: Option<f64>,
    /// Recall of the other classes taken together (true negative rate).
    pub specificity: Option<f64>,
    /// confusion[true][predicted].
    pub confusion: Vec<Vec<u64>>,
}

/// `probs`: per image, class probabilities; `loss_sum`: summed per-image cross-entropy.
pub fn compute(
    probs: &[Vec<f64>],
    labels: &[i64],
    loss_sum: f64,
    classes: usize,
    positive: usize,
) -> Metrics {
    let n = labels.len();
    let mut confusion = vec![vec![0u64; classes]; classes];
    let mut correct = 0;
    for (p, &y) in probs.iter().zip(labels) {
        let pred = argmax(p);
        confusion[y as usize][pred] += 1;
        if pred == y as usize {
            correct += 1;
        }
    }
    let pos = positive;
    let tp = confusion[pos][pos] as f64;
    let fn_: f64 = (0..classes)
        .filter(|&j| j != pos)
        .map(|j| confusion[pos][j] as f64)
        .sum();
    let fp: f64 = (0..classes)
        .filter(|&i| i != pos)
        .map(|i| confusion[i][pos] as f64)
        .sum();
    let tn = n as f64 - tp - fn_ - fp;
    let ratio = |a: f64, b: f64| if a + b > 0.0 { Some(a / (a + b)) } else { None };
    let scores: Vec<(f64, bool)> = probs
        .iter()
        .zip(labels)
        .map(|(p, &y)| (p[pos], y as usize == pos))
        .collect();
    Metrics {
        images: n,
        loss: if n > 0 { loss_sum / n as f64 } else { f64::NAN },
        accuracy: if n > 0 {
            correct as f64 / n as f64
        } else {
            f64::NAN
        },
        auc: auc(&scores),
        sensitivity: ratio(tp, fn_),
        specificity: ratio(tn, fp),
        confusion,
    }
}

/// First maximum, so ties resolve like torch.argmax on CPU.
pub(crate) fn argmax(p: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in p.iter().enumerate() {
        if *v > p[best] {
            best = i;
        }
    }
    best
}

/// ROC AUC by the Mann-Whitney statistic with tied scores sharing their average rank.
/// Written here: a few lines, and the metric crates on crates.io pull in far more than this.
pub fn auc(scores: &[(f64, bool)]) -> Option<f64> {
    let npos = scores.iter().filter(|s| s.1).count();
    let nneg = scores.len() - npos;
    if npos == 0 || nneg == 0 {
        return None;
    }
    let mut s: Vec<(f64, bool)> = scores.to_vec();
    s.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < s.len() {
        let mut j = i;
        while j + 1 < s.len() && s[j + 1].0 == s[i].0 {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += avg * s[i..=j].iter().filter(|x| x.1).count() as f64;
        i = j + 1;
    }
    Some((rank_sum - (npos * (npos + 1)) as f64 / 2.0) / (npos as f64 * nneg as f64))
}

/// A line chart of named series over epochs 1..; `y_range` fixes the axis (e.g. 0..1).
pub fn plot(
    path: &Path,
    title: &str,
    y_label: &str,
    series: &[(&str, Vec<f64>)],
    y_range: Option<(f64, f64)>,
) -> Result<()> {
    use plotters::prelude::*;
    let err = |e: String| Error::write(path, std::io::Error::other(e));
    let epochs = series.iter().map(|s| s.1.len()).max().unwrap_or(0).max(1);
    let finite = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .filter(|v| v.is_finite());
    let (lo, hi) = y_range.unwrap_or_else(|| {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in finite {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if !lo.is_finite() {
            (0.0, 1.0)
        } else {
            let pad = ((hi - lo) * 0.05).max(1e-3);
            ((lo - pad).max(0.0), hi + pad)
        }
    });
    let have_font = font::ensure();
    let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut b = ChartBuilder::on(&root);
    b.margin(15);
    if have_font {
        b.caption(title, ("sans-serif", 22))
            .x_label_area_size(40)
            .y_label_area_size(60);
    }
    let mut chart = b
        .build_cartesian_2d(1f64..(epochs as f64).max(2.0), lo..hi)
        .map_err(|e| err(e.to_string()))?;
    let mut mesh = chart.configure_mesh();
    if have_font {
        mesh.x_desc("epoch").y_desc(y_label);
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|e| err(e.to_string()))?;
    let colours = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    for (k, (name, ys)) in series.iter().enumerate() {
        let c = colours[k % colours.len()];
        let pts: Vec<(f64, f64)> = ys
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, v)| ((i + 1) as f64, *v))
            .collect();
        let s = chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?;
        if have_font {
            s.label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
        }
    }
    if have_font {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(e.to_string()))?;
    }
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

pub(crate) use crate::plotting::font;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_known_values() {
        assert_eq!(auc(&[(0.9, true), (0.1, false)]), Some(1.0));
        assert_eq!(auc(&[(0.1, true), (0.9, false)]), Some(0.0));
        assert_eq!(auc(&[(0.5, true), (0.5, false)]), Some(0.5));
        // sklearn.metrics.roc_auc_score([1,0,1,0,1], [.8,.4,.4,.2,.9]) == 0.9166666...
        let a = auc(&[
            (0.8, true),
            (0.4, false),
            (0.4, true),
            (0.2, false),
            (0.9, true),
        ])
        .unwrap();
        assert!((a - 11.0 / 12.0).abs() < 1e-12);
        assert_eq!(auc(&[(0.5, true)]), None);
    }

    #[test]
    fn confusion_sensitivity_specificity() {
        let probs = vec![
            vec![0.9, 0.1],
            vec![0.2, 0.8],
            vec![0.6, 0.4],
            vec![0.3, 0.7],
        ];
        let labels = [0, 0, 1, 1];
        let m = compute(&probs, &labels, 2.0, 2, 0);
        assert_eq!(m.confusion, vec![vec![1, 1], vec![1, 1]]);
        assert_eq!(m.accuracy, 0.5);
        assert_eq!(m.sensitivity, Some(0.5));
        assert_eq!(m.specificity, Some(0.5));
        assert_eq!(m.loss, 0.5);
        assert_eq!(m.auc, Some(0.5));
    }
}
