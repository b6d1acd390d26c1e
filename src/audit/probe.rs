//! The trivial-feature probe: a random forest of shallow decision trees (linfa-trees) and an L2 logistic
//! regression (linfa-logistic) predict a binary target from the feature matrix, each scored
//! out-of-fold with stratified, patient-grouped folds; the better one is reported with a
//! stratified bootstrap 95 % CI of its AUC and the features that carry it.
//!
//! Every random choice is seeded from (seed, item): fold order from a hash of (seed, group),
//! bootstrap resample b from (seed, b). Nothing depends on thread order.

use super::features::Matrix;
use super::Rules;
use crate::error::{Error, Result};
use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use linfa_trees::{DecisionTree, TreeNode};
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// One feature's part in the probe.
#[derive(Debug, Clone)]
pub struct FeatureReport {
    pub name: String,
    /// Share of the chosen model's importance (sums to 1 over the features).
    pub importance: f64,
    /// AUC of the raw feature alone (above 0.5: higher in the positive class).
    pub auc_alone: f64,
    pub positive_median: f64,
    pub others_median: f64,
}

#[derive(Debug, Clone)]
pub struct ProbeResult {
    pub model: &'static str,
    pub auc: f64,
    pub ci: [f64; 2],
    /// Out-of-fold AUC of each model tried.
    pub models: BTreeMap<&'static str, f64>,
    pub folds: usize,
    pub bootstrap: usize,
    /// Features that vary, by importance (highest first).
    pub features: Vec<FeatureReport>,
    pub top_features: Vec<String>,
    /// Features with one value over all images: they carry nothing and were left out.
    pub constant_features: Vec<String>,
    /// ROC of the chosen model's out-of-fold scores: (false positive rate, true positive rate).
    pub roc: Vec<(f64, f64)>,
}

impl ProbeResult {
    pub fn to_json(&self) -> Value {
        json!({
            "auc": self.auc,
            "ci": self.ci,
            "model": self.model,
            "models": self.models,
            "folds": self.folds,
            "bootstrap": self.bootstrap,
            "top_features": self.top_features,
            "features": self.features.iter().map(|f| json!({
                "name": f.name,
                "importance": f.importance,
                "auc_alone": f.auc_alone,
                "positive_median": f.positive_median,
                "others_median": f.others_median,
            })).collect::<Vec<_>>(),
            "constant_features": self.constant_features,
        })
    }

    /// "width (covid median 880, others 1024); ..." for the top features.
    pub fn describe_top(&self, positive: &str) -> String {
        let parts: Vec<String> = self
            .top_features
            .iter()
            .filter_map(|n| self.features.iter().find(|f| &f.name == n))
            .map(|f| {
                format!(
                    "{} ({positive} median {}, others {})",
                    f.name,
                    short(f.positive_median),
                    short(f.others_median)
                )
            })
            .collect();
        if parts.is_empty() {
            "no single feature stands out".into()
        } else {
            parts.join("; ")
        }
    }
}

fn short(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// A number from a hash of `text`: the seed of everything keyed by an item.
fn key_hash(text: &str) -> u64 {
    let h = crate::manifest::hash_bytes(text.as_bytes());
    u64::from_str_radix(&h[..16], 16).expect("hex")
}

/// Stratified group folds: each group goes whole to one fold; groups of each class (by
/// majority) are dealt in seeded order to the fold holding the fewest images of that class.
/// Returns the fold of each image and the number of folds.
pub fn group_folds(
    y: &[bool],
    groups: &[&str],
    want: usize,
    seed: u64,
) -> Result<(Vec<usize>, usize)> {
    let mut members: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, g) in groups.iter().enumerate() {
        members.entry(g).or_default().push(i);
    }
    let mut sides: [Vec<(u64, &str)>; 2] = [Vec::new(), Vec::new()];
    for (g, m) in &members {
        let pos = m.iter().filter(|&&i| y[i]).count();
        sides[(2 * pos >= m.len()) as usize].push((key_hash(&format!("{seed}:{g}")), g));
    }
    let k = want.min(sides[0].len()).min(sides[1].len());
    if k < 2 {
        return Err(Error::Usage(format!(
            "too few patient groups for a cross-validated probe: {} group(s) of the positive class and {} of the others; at least 2 of each are needed",
            sides[1].len(),
            sides[0].len()
        )));
    }
    let mut fold = vec![0usize; y.len()];
    for side in sides.iter_mut() {
        side.sort();
        let mut load = vec![0usize; k];
        for (_, g) in side.iter() {
            let f = (0..k).min_by_key(|&f| (load[f], f)).expect("k >= 2");
            for &i in &members[g] {
                fold[i] = f;
            }
            load[f] += members[g].len();
        }
    }
    Ok((fold, k))
}

/// AUC of scores against labels with per-item weights (bootstrap counts): the Mann-Whitney
/// statistic, ties counted half. `order` sorts the items by score.
fn weighted_auc(scores: &[f64], y: &[bool], w: &[f64], order: &[usize]) -> f64 {
    let (mut neg_below, mut num) = (0.0, 0.0);
    let (mut wp, mut wn) = (0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        let (mut bp, mut bn) = (0.0, 0.0);
        while j < order.len() && scores[order[j]] == scores[order[i]] {
            let k = order[j];
            if y[k] {
                bp += w[k];
            } else {
                bn += w[k];
            }
            j += 1;
        }
        num += bp * (neg_below + 0.5 * bn);
        neg_below += bn;
        wp += bp;
        wn += bn;
        i = j;
    }
    if wp == 0.0 || wn == 0.0 {
        return f64::NAN;
    }
    num / (wp * wn)
}

fn score_order(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    order
}

pub fn auc(scores: &[f64], y: &[bool]) -> f64 {
    let w = vec![1.0; scores.len()];
    weighted_auc(scores, y, &w, &score_order(scores))
}

/// Stratified bootstrap: positives and negatives resampled separately, resample b seeded
/// from (seed, b). Returns the 2.5 % and 97.5 % points.
pub fn bootstrap_ci(scores: &[f64], y: &[bool], resamples: usize, seed: u64) -> [f64; 2] {
    let order = score_order(scores);
    let pos: Vec<usize> = (0..y.len()).filter(|&i| y[i]).collect();
    let neg: Vec<usize> = (0..y.len()).filter(|&i| !y[i]).collect();
    let mut aucs: Vec<f64> = (0..resamples)
        .into_par_iter()
        .map(|b| {
            let mut rng =
                rand_chacha::ChaCha8Rng::seed_from_u64(key_hash(&format!("{seed}:bootstrap:{b}")));
            let mut w = vec![0.0; y.len()];
            for side in [&pos, &neg] {
                for _ in 0..side.len() {
                    w[side[rng.gen_range(0..side.len())]] += 1.0;
                }
            }
            weighted_auc(scores, y, &w, &order)
        })
        .collect();
    aucs.sort_by(f64::total_cmp);
    let at = |p: f64| aucs[((p * resamples as f64).round() as usize).min(resamples - 1)];
    [at(0.025), at(0.975)]
}

/// Which leaf a row falls in, as the path taken (1 = root; left child 2n, right 2n+1).
fn leaf_of(node: &TreeNode<f64, usize>, x: &[f64]) -> u64 {
    let mut code = 1u64;
    let mut n = node;
    while !n.is_leaf() {
        let (feat, value, _) = n.split();
        let right = x[feat] >= value;
        let child = n.children()[right as usize];
        match child {
            Some(c) => n = c,
            None => break,
        }
        code = code * 2 + right as u64;
    }
    code
}

struct Fold<'a> {
    index: usize,
    seed: u64,
    train: Vec<usize>,
    test: Vec<usize>,
    m: &'a Matrix,
    y: &'a [bool],
}

impl Fold<'_> {
    fn xs(
        &self,
        idx: &[usize],
        cols: &[usize],
        scale: Option<&(Vec<f64>, Vec<f64>)>,
    ) -> Array2<f64> {
        Array2::from_shape_fn((idx.len(), cols.len()), |(r, c)| {
            let v = self.m.rows[idx[r]][cols[c]];
            match scale {
                Some((mu, sd)) => (v - mu[c]) / sd[c],
                None => v,
            }
        })
    }
    fn ys(&self) -> Array1<usize> {
        self.train.iter().map(|&i| self.y[i] as usize).collect()
    }

    /// Random-forest scores: `forest_trees` trees (linfa-trees), each grown on a bootstrap
    /// sample of the training rows with a random third of the features, scoring a row by the
    /// positive share (Laplace-smoothed) of its leaf's in-bag rows; the mean over trees. Many
    /// trees rank smoothly where one tree gives a few ties, and correlated features (width,
    /// height, aspect) share the importance instead of one hiding the others. Tree t of fold f
    /// is seeded from (seed, f, t).
    fn forest(&self, cols: &[usize], rules: &Rules) -> Result<(Vec<f64>, Vec<f64>)> {
        let take = cols.len().div_ceil(3).max(1);
        let mut scores = vec![0.0; self.test.len()];
        let mut imp = vec![0.0; cols.len()];
        for t in 0..rules.forest_trees {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(key_hash(&format!(
                "{}:forest:{}:{t}",
                self.seed, self.index
            )));
            let rows: Vec<usize> = (0..self.train.len())
                .map(|_| self.train[rng.gen_range(0..self.train.len())])
                .collect();
            let mut feats: Vec<usize> = (0..cols.len()).collect();
            for i in 0..take {
                let j = rng.gen_range(i..feats.len());
                feats.swap(i, j);
            }
            let mut feats: Vec<usize> = feats[..take].to_vec();
            feats.sort();
            let sub: Vec<usize> = feats.iter().map(|&f| cols[f]).collect();
            let y: Array1<usize> = rows.iter().map(|&i| self.y[i] as usize).collect();
            // linfa-trees picks a leaf's class (and so whether children are pruned into one)
            // from a HashMap, whose order changes with every process when the classes tie: a
            // weight of 1 + 2^-16 on positives means they never tie, and the trees never vary.
            let w: Array1<f32> = rows
                .iter()
                .map(|&i| if self.y[i] { 1.0 + 1.0 / 65536.0 } else { 1.0 })
                .collect();
            let ds = Dataset::new(self.xs(&rows, &sub, None), y).with_weights(w);
            let tree: DecisionTree<f64, usize> = DecisionTree::params()
                .max_depth(Some(rules.tree_max_depth))
                .min_weight_leaf(rules.tree_min_leaf)
                .fit(&ds)
                .map_err(|e| Error::Usage(format!("decision tree: {e}")))?;
            let row = |i: usize| -> Vec<f64> { sub.iter().map(|&c| self.m.rows[i][c]).collect() };
            let mut leaves: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
            for &i in &rows {
                let e = leaves
                    .entry(leaf_of(tree.root_node(), &row(i)))
                    .or_default();
                e.0 += self.y[i] as u8 as f64;
                e.1 += 1.0;
            }
            for (s, &i) in scores.iter_mut().zip(&self.test) {
                let (p, n) = leaves
                    .get(&leaf_of(tree.root_node(), &row(i)))
                    .copied()
                    .unwrap_or((0.0, 0.0));
                *s += (p + 1.0) / (n + 2.0) / rules.forest_trees as f64;
            }
            for (k, v) in feats.iter().zip(tree.feature_importance()) {
                if v.is_finite() {
                    imp[*k] += v;
                }
            }
        }
        Ok((scores, imp))
    }

    /// Logistic scores on features standardised with the training rows' mean and spread;
    /// importance = |coefficient|.
    fn logistic(&self, cols: &[usize], rules: &Rules) -> Result<(Vec<f64>, Vec<f64>)> {
        let n = self.train.len() as f64;
        let mut mu = vec![0.0; cols.len()];
        let mut sd = vec![0.0; cols.len()];
        for (c, &col) in cols.iter().enumerate() {
            mu[c] = self.train.iter().map(|&i| self.m.rows[i][col]).sum::<f64>() / n;
            let var = self
                .train
                .iter()
                .map(|&i| (self.m.rows[i][col] - mu[c]).powi(2))
                .sum::<f64>()
                / n;
            sd[c] = if var > 0.0 { var.sqrt() } else { 1.0 };
        }
        let scale = (mu, sd);
        let ds = Dataset::new(self.xs(&self.train, cols, Some(&scale)), self.ys());
        let model = LogisticRegression::default()
            .alpha(rules.logistic_alpha)
            .max_iterations(rules.logistic_max_iterations)
            .fit(&ds)
            .map_err(|e| Error::Usage(format!("logistic regression: {e}")))?;
        // linfa gives the probability of the *more frequent* training class: turn it into
        // the probability of the positive one.
        let p = model.predict_probabilities(&self.xs(&self.test, cols, Some(&scale)));
        let flip = model.labels().pos.class != 1;
        Ok((
            p.iter().map(|&v| if flip { 1.0 - v } else { v }).collect(),
            model.params().iter().map(|v| v.abs()).collect(),
        ))
    }
}

/// Out-of-fold scores and mean importance of one model over all folds.
type ModelFit = (Vec<f64>, Vec<f64>);

fn cross_validate(
    m: &Matrix,
    y: &[bool],
    fold: &[usize],
    k: usize,
    cols: &[usize],
    rules: &Rules,
    which: &'static str,
    seed: u64,
) -> Result<ModelFit> {
    let per_fold: Vec<(Vec<usize>, Vec<f64>, Vec<f64>)> = (0..k)
        .into_par_iter()
        .map(|f| {
            let fd = Fold {
                index: f,
                seed,
                train: (0..y.len()).filter(|&i| fold[i] != f).collect(),
                test: (0..y.len()).filter(|&i| fold[i] == f).collect(),
                m,
                y,
            };
            let (s, imp) = if which == "forest" {
                fd.forest(cols, rules)?
            } else {
                fd.logistic(cols, rules)?
            };
            Ok((fd.test, s, imp))
        })
        .collect::<Result<_>>()?;
    let mut scores = vec![0.0; y.len()];
    let mut imp = vec![0.0; cols.len()];
    for (test, s, fi) in per_fold {
        for (i, v) in test.into_iter().zip(s) {
            scores[i] = v;
        }
        let total: f64 = fi.iter().filter(|v| v.is_finite()).sum();
        if total > 0.0 {
            for (a, b) in imp.iter_mut().zip(fi) {
                *a += if b.is_finite() {
                    b / total / k as f64
                } else {
                    0.0
                };
            }
        }
    }
    Ok((scores, imp))
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn roc_points(scores: &[f64], y: &[bool]) -> Vec<(f64, f64)> {
    let mut order = score_order(scores);
    order.reverse();
    let p = y.iter().filter(|&&b| b).count().max(1) as f64;
    let n = y.iter().filter(|&&b| !b).count().max(1) as f64;
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut pts = vec![(0.0, 0.0)];
    let mut i = 0;
    while i < order.len() {
        let s = scores[order[i]];
        while i < order.len() && scores[order[i]] == s {
            if y[order[i]] {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            i += 1;
        }
        pts.push((fp / n, tp / p));
    }
    pts
}

/// Run the probe: both models cross-validated, the better reported.
pub fn probe(
    m: &Matrix,
    y: &[bool],
    groups: &[&str],
    rules: &Rules,
    seed: u64,
) -> Result<ProbeResult> {
    let (fold, k) = group_folds(y, groups, rules.folds, seed)?;
    let ncol = m.names.len();
    let varies = |c: usize| m.rows.iter().any(|r| r[c] != m.rows[0][c]);
    let cols: Vec<usize> = (0..ncol).filter(|&c| varies(c)).collect();
    let constant: Vec<String> = (0..ncol)
        .filter(|&c| !varies(c))
        .map(|c| m.names[c].to_string())
        .collect();
    let mut models = BTreeMap::new();
    let mut best: Option<(&'static str, f64, ModelFit)> = None;
    if cols.is_empty() {
        // Nothing varies: every image looks the same to the probe, which can only guess.
        let scores = vec![0.5; y.len()];
        best = Some(("none", 0.5, (scores, Vec::new())));
    } else {
        for which in ["forest", "logistic"] {
            match cross_validate(m, y, &fold, k, &cols, rules, which, seed) {
                Ok(fit) => {
                    let a = auc(&fit.0, y);
                    models.insert(which, a);
                    if best.as_ref().is_none_or(|(_, b, _)| a > *b) {
                        best = Some((which, a, fit));
                    }
                }
                Err(_) => {
                    models.insert(which, f64::NAN);
                }
            }
        }
    }
    let (model, auc_v, (scores, imp)) =
        best.ok_or_else(|| Error::Usage("neither probe model could be fitted".into()))?;
    let ci = bootstrap_ci(&scores, y, rules.bootstrap, seed);
    let mut features: Vec<FeatureReport> = cols
        .iter()
        .enumerate()
        .map(|(j, &c)| {
            let col: Vec<f64> = m.rows.iter().map(|r| r[c]).collect();
            FeatureReport {
                name: m.names[c].to_string(),
                importance: imp.get(j).copied().unwrap_or(0.0),
                auc_alone: auc(&col, y),
                positive_median: median((0..y.len()).filter(|&i| y[i]).map(|i| col[i]).collect()),
                others_median: median((0..y.len()).filter(|&i| !y[i]).map(|i| col[i]).collect()),
            }
        })
        .collect();
    features.sort_by(|a, b| b.importance.total_cmp(&a.importance));
    let top_features = features
        .iter()
        .filter(|f| f.importance > 1e-9)
        .take(rules.top_features)
        .map(|f| f.name.clone())
        .collect();
    Ok(ProbeResult {
        model,
        auc: auc_v,
        ci,
        models,
        folds: k,
        bootstrap: rules.bootstrap,
        features,
        top_features,
        constant_features: constant,
        roc: roc_points(&scores, y),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_matches_known_values() {
        // sklearn.metrics.roc_auc_score([1,0,1,0,1], [.8,.4,.4,.2,.9]) == 11/12
        let a = auc(
            &[0.8, 0.4, 0.4, 0.2, 0.9],
            &[true, false, true, false, true],
        );
        assert!((a - 11.0 / 12.0).abs() < 1e-12);
        assert_eq!(auc(&[0.1, 0.9], &[true, false]), 0.0);
    }

    #[test]
    fn folds_keep_groups_whole_and_both_classes_in_each() {
        let y: Vec<bool> = (0..40).map(|i| i % 3 == 0).collect();
        let groups: Vec<String> = (0..40).map(|i| format!("p{}", i / 2)).collect();
        let g: Vec<&str> = groups.iter().map(String::as_str).collect();
        let (fold, k) = group_folds(&y, &g, 5, 3).unwrap();
        assert_eq!(k, 5);
        for i in 0..40 {
            for j in 0..40 {
                if g[i] == g[j] {
                    assert_eq!(fold[i], fold[j]);
                }
            }
        }
        for f in 0..k {
            let test: Vec<usize> = (0..40).filter(|&i| fold[i] == f).collect();
            assert!(!test.is_empty());
        }
        assert_eq!(group_folds(&y, &g, 5, 3).unwrap().0, fold, "seeded");
        let one: Vec<&str> = vec!["a"; 40];
        assert!(group_folds(&y, &one, 5, 3).is_err());
    }

    /// The real design in miniature: a few positives of any size, many negatives all 1024.
    #[test]
    fn one_common_size_is_found_by_both_models() {
        let widths = [477.0, 522.0, 900.0, 440.0, 2000.0, 425.0, 1374.0, 1300.0];
        let mut rows = Vec::new();
        let mut y = Vec::new();
        let mut groups = Vec::new();
        for (i, w) in widths.iter().enumerate() {
            rows.push(vec![*w, 1.0 / 88.0, (i % 3) as f64]);
            y.push(true);
            groups.push(format!("c{i}"));
        }
        for i in 0..80 {
            rows.push(vec![1024.0, 80.0 / 88.0, (i % 3) as f64]);
            y.push(false);
            groups.push(format!("n{i}"));
        }
        let m = Matrix {
            names: vec!["width", "size_share", "noise"],
            rows,
        };
        let g: Vec<&str> = groups.iter().map(String::as_str).collect();
        let r = probe(&m, &y, &g, &crate::audit::Rules::builtin(), 1).unwrap();
        assert!(r.models["forest"] > 0.95, "{:?}", r.models);
        // Thresholds on width alone cannot carve out exactly 1024 from a few positives on both
        // sides of it; how common the image's size is in the set can.
        assert!(
            r.top_features.iter().any(|f| f == "size_share"),
            "{:?}",
            r.top_features
        );
        assert!(r.ci[0] >= 0.75, "{:?}", r.ci);
    }

    #[test]
    fn bootstrap_ci_brackets_the_auc_and_is_seeded() {
        let y: Vec<bool> = (0..60).map(|i| i % 2 == 0).collect();
        let s: Vec<f64> = (0..60)
            .map(|i| (i % 7) as f64 + if y[i] { 2.0 } else { 0.0 })
            .collect();
        let a = auc(&s, &y);
        let ci = bootstrap_ci(&s, &y, 500, 1);
        assert!(ci[0] <= a && a <= ci[1], "{ci:?} {a}");
        assert_eq!(ci, bootstrap_ci(&s, &y, 500, 1));
    }
}
