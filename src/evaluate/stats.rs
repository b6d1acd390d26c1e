//! The statistics of `prep evaluate`, on plain numbers (no libtorch), so each is tested alone:
//! ROC AUC (Mann-Whitney, tied scores share their rank), DeLong's variance and 95 % CI, a
//! seeded patient-grouped stratified bootstrap, Wilson intervals, threshold choice on one set
//! applied unchanged to another, and expected calibration error with its reliability bins.
//!
//! Written here rather than taken from a crate: these are a few dozen lines each, and no
//! maintained Rust crate offers DeLong's CI or a grouped bootstrap; scikit-learn and a
//! textbook DeLong in the tests check them.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::BTreeMap;

/// The standard normal 0.975 quantile (scipy.stats.norm.ppf(0.975)).
pub const Z95: f64 = 1.959_963_984_540_054;

/// One scored image: the probability of the positive class, whether it is positive, and the
/// group (patient) it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub p: f64,
    pub positive: bool,
    pub group: String,
}

/// Midranks (1-based, ties share their average rank) of `v`.
fn midranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// ROC AUC: P(score of a positive > score of a negative) + ½ P(equal). None without both classes.
pub fn auc(pos: &[f64], neg: &[f64]) -> Option<f64> {
    let (m, n) = (pos.len(), neg.len());
    if m == 0 || n == 0 {
        return None;
    }
    let all: Vec<f64> = pos.iter().chain(neg).copied().collect();
    let r = midranks(&all);
    let rank_sum: f64 = r[..m].iter().sum();
    Some((rank_sum - (m * (m + 1)) as f64 / 2.0) / (m as f64 * n as f64))
}

/// Split scores into (positives, negatives).
pub fn by_class(s: &[Scored]) -> (Vec<f64>, Vec<f64>) {
    let pos = s.iter().filter(|x| x.positive).map(|x| x.p).collect();
    let neg = s.iter().filter(|x| !x.positive).map(|x| x.p).collect();
    (pos, neg)
}

/// AUC with DeLong's variance (DeLong, DeLong & Clarke-Pearson 1988, computed with midranks as
/// Sun & Xu 2014): the structural components V10 (per positive) and V01 (per negative), their
/// sample variances S10, S01 (n - 1), Var = S10/m + S01/n.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DeLong {
    pub auc: f64,
    pub variance: f64,
    /// AUC ± z·√Var, clipped to [0, 1].
    pub ci: [f64; 2],
}

pub fn delong(pos: &[f64], neg: &[f64]) -> Option<DeLong> {
    let (m, n) = (pos.len(), neg.len());
    let a = auc(pos, neg)?;
    let all: Vec<f64> = pos.iter().chain(neg).copied().collect();
    let r = midranks(&all);
    let rx = midranks(pos);
    let ry = midranks(neg);
    // V10_i = (R_i - Rx_i) / n: the share of negatives below positive i (ties ½).
    let v10: Vec<f64> = (0..m).map(|i| (r[i] - rx[i]) / n as f64).collect();
    // V01_j = 1 - (R_j - Ry_j) / m: the share of positives above negative j (ties ½).
    let v01: Vec<f64> = (0..n)
        .map(|j| 1.0 - (r[m + j] - ry[j]) / m as f64)
        .collect();
    let var = |v: &[f64]| {
        if v.len() < 2 {
            return 0.0;
        }
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64
    };
    let variance = var(&v10) / m as f64 + var(&v01) / n as f64;
    let half = Z95 * variance.max(0.0).sqrt();
    Some(DeLong {
        auc: a,
        variance,
        ci: [(a - half).clamp(0.0, 1.0), (a + half).clamp(0.0, 1.0)],
    })
}

/// What the bootstrap did, for metrics.json.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Bootstrap {
    pub resamples: usize,
    pub seed: u64,
    /// Resamples in which both classes were present (the AUC was defined).
    pub valid: usize,
    /// 2.5th and 97.5th percentiles of the resampled AUCs (linear interpolation, as numpy).
    pub ci: Option<[f64; 2]>,
    pub groups: usize,
}

/// Seeded stratified bootstrap grouped by patient: groups are drawn with replacement, those
/// holding a positive image and those holding none as two strata of fixed size, so every
/// resample keeps the set's mix of groups and a patient's images always travel together.
/// Groups are sorted by name before drawing: the result depends on the seed and the data only.
pub fn bootstrap_auc(s: &[Scored], resamples: usize, seed: u64) -> Bootstrap {
    let mut groups: BTreeMap<&str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for x in s {
        let g = groups.entry(x.group.as_str()).or_default();
        if x.positive {
            g.0.push(x.p);
        } else {
            g.1.push(x.p);
        }
    }
    let list: Vec<&(Vec<f64>, Vec<f64>)> = groups.values().collect();
    let strata: [Vec<usize>; 2] = [
        (0..list.len()).filter(|&i| !list[i].0.is_empty()).collect(),
        (0..list.len()).filter(|&i| list[i].0.is_empty()).collect(),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut aucs = Vec::with_capacity(resamples);
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    for _ in 0..resamples {
        pos.clear();
        neg.clear();
        for stratum in &strata {
            for _ in 0..stratum.len() {
                let g = list[stratum[rng.gen_range(0..stratum.len())]];
                pos.extend_from_slice(&g.0);
                neg.extend_from_slice(&g.1);
            }
        }
        if let Some(a) = auc(&pos, &neg) {
            aucs.push(a);
        }
    }
    aucs.sort_by(f64::total_cmp);
    let ci = (!aucs.is_empty()).then(|| [quantile(&aucs, 0.025), quantile(&aucs, 0.975)]);
    Bootstrap {
        resamples,
        seed,
        valid: aucs.len(),
        ci,
        groups: list.len(),
    }
}

/// numpy's default (linear) quantile of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// A proportion k/n with its Wilson score 95 % interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Proportion {
    pub k: usize,
    pub n: usize,
    pub value: Option<f64>,
    pub ci: Option<[f64; 2]>,
}

pub fn wilson(k: usize, n: usize) -> Proportion {
    if n == 0 {
        return Proportion {
            k,
            n,
            value: None,
            ci: None,
        };
    }
    let (kf, nf, z2) = (k as f64, n as f64, Z95 * Z95);
    let p = kf / nf;
    let centre = (p + z2 / (2.0 * nf)) / (1.0 + z2 / nf);
    let half = Z95 / (1.0 + z2 / nf) * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt();
    Proportion {
        k,
        n,
        value: Some(p),
        ci: Some([(centre - half).max(0.0), (centre + half).min(1.0)]),
    }
}

/// Sensitivity and specificity at "positive when p ≥ threshold".
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AtThreshold {
    pub sensitivity: Proportion,
    pub specificity: Proportion,
}

pub fn at_threshold(s: &[Scored], t: f64) -> AtThreshold {
    let tp = s.iter().filter(|x| x.positive && x.p >= t).count();
    let npos = s.iter().filter(|x| x.positive).count();
    let tn = s.iter().filter(|x| !x.positive && x.p < t).count();
    let nneg = s.len() - npos;
    AtThreshold {
        sensitivity: wilson(tp, npos),
        specificity: wilson(tn, nneg),
    }
}

/// How an operating threshold is chosen on the validation set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Maximises sensitivity + specificity - 1 (ties: the highest threshold).
    Youden,
    /// The highest threshold whose sensitivity reaches the target.
    Sensitivity(f64),
}

impl Rule {
    pub fn name(&self) -> String {
        match self {
            Rule::Youden => "youden".into(),
            Rule::Sensitivity(t) => format!("sensitivity_{t:.2}"),
        }
    }
}

/// The rules metrics.json reports: Youden, and sensitivity 0.90 and 0.95.
pub const RULES: [Rule; 3] = [
    Rule::Youden,
    Rule::Sensitivity(0.90),
    Rule::Sensitivity(0.95),
];

/// The threshold `rule` picks on `val`: one of val's own scores (positive when p ≥ it). None when
/// val lacks a class.
pub fn choose_threshold(val: &[Scored], rule: Rule) -> Option<f64> {
    let npos = val.iter().filter(|x| x.positive).count();
    let nneg = val.len() - npos;
    if npos == 0 || nneg == 0 {
        return None;
    }
    let mut cands: Vec<f64> = val.iter().map(|x| x.p).collect();
    cands.sort_by(|a, b| b.total_cmp(a));
    cands.dedup();
    // From the highest threshold down, sensitivity only grows and specificity only falls.
    let mut best: Option<(f64, f64)> = None; // (threshold, J)
    for &t in &cands {
        let tp = val.iter().filter(|x| x.positive && x.p >= t).count() as f64;
        let tn = val.iter().filter(|x| !x.positive && x.p < t).count() as f64;
        let (sens, spec) = (tp / npos as f64, tn / nneg as f64);
        match rule {
            Rule::Sensitivity(target) => {
                if sens >= target - 1e-12 {
                    return Some(t);
                }
            }
            Rule::Youden => {
                let j = sens + spec - 1.0;
                if best.is_none_or(|(_, bj)| j > bj + 1e-12) {
                    best = Some((t, j));
                }
            }
        }
    }
    best.map(|b| b.0)
}

/// Expected calibration error over `bins` equal-width bins of the positive-class probability
/// (bin k holds p in [k/B, (k+1)/B), the last bin includes 1): Σ n_k/N · |mean p - share positive|.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    pub ece: Option<f64>,
    pub bins: Vec<CalibrationBin>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CalibrationBin {
    pub lo: f64,
    pub hi: f64,
    pub n: usize,
    pub mean_probability: Option<f64>,
    pub fraction_positive: Option<f64>,
}

pub fn calibration(s: &[Scored], bins: usize) -> Calibration {
    let mut sum_p = vec![0.0; bins];
    let mut pos = vec![0usize; bins];
    let mut cnt = vec![0usize; bins];
    for x in s {
        let k = ((x.p * bins as f64).floor().max(0.0) as usize).min(bins - 1);
        sum_p[k] += x.p;
        pos[k] += x.positive as usize;
        cnt[k] += 1;
    }
    let n = s.len() as f64;
    let mut ece = 0.0;
    let out = (0..bins)
        .map(|k| {
            let (mp, fp) = if cnt[k] > 0 {
                let c = cnt[k] as f64;
                ece += c / n * (sum_p[k] / c - pos[k] as f64 / c).abs();
                (Some(sum_p[k] / c), Some(pos[k] as f64 / c))
            } else {
                (None, None)
            };
            CalibrationBin {
                lo: k as f64 / bins as f64,
                hi: (k + 1) as f64 / bins as f64,
                n: cnt[k],
                mean_probability: mp,
                fraction_positive: fp,
            }
        })
        .collect();
    Calibration {
        ece: (!s.is_empty()).then_some(ece),
        bins: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sc(v: &[(f64, bool)]) -> Vec<Scored> {
        v.iter()
            .enumerate()
            .map(|(i, &(p, positive))| Scored {
                p,
                positive,
                group: format!("g{i}"),
            })
            .collect()
    }

    /// The textbook O(m·n) definitions, to check the rank formulas against.
    fn naive(pos: &[f64], neg: &[f64]) -> (f64, f64) {
        let psi = |x: f64, y: f64| {
            if x > y {
                1.0
            } else if x == y {
                0.5
            } else {
                0.0
            }
        };
        let (m, n) = (pos.len() as f64, neg.len() as f64);
        let v10: Vec<f64> = pos
            .iter()
            .map(|&x| neg.iter().map(|&y| psi(x, y)).sum::<f64>() / n)
            .collect();
        let v01: Vec<f64> = neg
            .iter()
            .map(|&y| pos.iter().map(|&x| psi(x, y)).sum::<f64>() / m)
            .collect();
        let a = v10.iter().sum::<f64>() / m;
        let s = |v: &[f64]| {
            let mu = v.iter().sum::<f64>() / v.len() as f64;
            v.iter().map(|x| (x - mu).powi(2)).sum::<f64>() / (v.len() as f64 - 1.0)
        };
        (a, s(&v10) / m + s(&v01) / n)
    }

    #[test]
    fn auc_known_values_and_ties() {
        assert_eq!(auc(&[0.9], &[0.1]), Some(1.0));
        assert_eq!(auc(&[0.5], &[0.5]), Some(0.5));
        // sklearn.metrics.roc_auc_score([1,0,1,0,1], [.8,.4,.4,.2,.9]) == 11/12
        let a = auc(&[0.8, 0.4, 0.9], &[0.4, 0.2]).unwrap();
        assert!((a - 11.0 / 12.0).abs() < 1e-12);
        assert_eq!(auc(&[], &[0.1]), None);
    }

    proptest! {
        #[test]
        fn delong_matches_the_definition(
            pos in proptest::collection::vec(0u8..12, 2..30),
            neg in proptest::collection::vec(0u8..12, 2..30),
        ) {
            // Few distinct values: many ties.
            let pos: Vec<f64> = pos.iter().map(|&v| v as f64 / 11.0).collect();
            let neg: Vec<f64> = neg.iter().map(|&v| v as f64 / 11.0).collect();
            let d = delong(&pos, &neg).unwrap();
            let (a, v) = naive(&pos, &neg);
            prop_assert!((d.auc - a).abs() < 1e-12);
            prop_assert!((d.variance - v).abs() < 1e-12);
            prop_assert!(d.ci[0] >= 0.0 && d.ci[1] <= 1.0 && d.ci[0] <= d.auc && d.auc <= d.ci[1]);
        }
    }

    #[test]
    fn wilson_known_value() {
        // statsmodels proportion_confint(8, 10, method="wilson") = (0.4901625, 0.9433178)
        let w = wilson(8, 10);
        let ci = w.ci.unwrap();
        assert!((ci[0] - 0.490_162_5).abs() < 1e-6, "{ci:?}");
        assert!((ci[1] - 0.943_317_8).abs() < 1e-6, "{ci:?}");
        assert_eq!(wilson(0, 0).ci, None);
        let z = wilson(0, 5).ci.unwrap();
        assert_eq!(z[0], 0.0);
    }

    #[test]
    fn thresholds_come_from_val_only() {
        let val = sc(&[
            (0.9, true),
            (0.8, true),
            (0.7, false),
            (0.6, true),
            (0.3, false),
            (0.2, false),
        ]);
        let youden = choose_threshold(&val, Rule::Youden).unwrap();
        // At 0.8: sens 2/3, spec 1 (J 0.667); at 0.6: sens 1, spec 2/3 (J 0.667): ties take the higher.
        assert_eq!(youden, 0.8);
        assert_eq!(choose_threshold(&val, Rule::Sensitivity(0.9)), Some(0.6));
        let test = sc(&[(0.85, true), (0.5, true), (0.1, false)]);
        let flipped = sc(&[(0.85, false), (0.5, false), (0.1, true)]);
        let a = at_threshold(&test, youden);
        let b = at_threshold(&flipped, youden);
        assert_eq!((a.sensitivity.k, a.specificity.k), (1, 1));
        assert_eq!((b.sensitivity.k, b.specificity.k), (0, 1));
        assert_eq!(choose_threshold(&sc(&[(0.5, true)]), Rule::Youden), None);
    }

    #[test]
    fn ece_of_perfect_and_overconfident() {
        // 15 bins; 0.25 falls in bin 3 ([0.2, 0.2667)), a quarter of which are positive.
        let mut v = vec![(0.25, true)];
        v.extend(std::iter::repeat_n((0.25, false), 3));
        let c = calibration(&sc(&v), 15);
        assert!(c.ece.unwrap().abs() < 1e-12);
        assert_eq!(c.bins[3].n, 4);
        let c = calibration(&sc(&[(1.0, false), (1.0, false)]), 15);
        assert_eq!(c.ece, Some(1.0));
        assert_eq!(c.bins[14].n, 2);
    }

    #[test]
    fn bootstrap_is_seeded_grouped_and_keeps_both_classes() {
        let mut s = Vec::new();
        for i in 0..40 {
            let positive = i % 2 == 0;
            for k in 0..3 {
                s.push(Scored {
                    p: if positive { 0.45 } else { 0.4 } + 0.01 * ((i * 7 + k) % 13) as f64,
                    positive,
                    group: format!("patient{i}"),
                });
            }
        }
        let a = bootstrap_auc(&s, 500, 3);
        assert_eq!(a, bootstrap_auc(&s, 500, 3));
        assert_ne!(a.ci, bootstrap_auc(&s, 500, 4).ci);
        assert_eq!(a.valid, 500);
        assert_eq!(a.groups, 40);
        let ci = a.ci.unwrap();
        assert!(ci[0] < ci[1], "{ci:?}");
        let point = auc(&by_class(&s).0, &by_class(&s).1).unwrap();
        assert!(ci[0] <= point && point <= ci[1], "{ci:?} {point}");
    }
}
