//! Design tables: label × source, view, sex and age band, each with Cramér's V, and the two
//! traps said in words (a pediatric class against adult ones; a class whose sources no other
//! class uses).

use super::{Item, Rules};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

pub struct Tables {
    pub json: Value,
    pub warnings: Vec<String>,
}

/// Cramér's V of a contingency table (rows × columns of counts); None when a side has one level.
pub fn cramers_v(counts: &[Vec<u64>]) -> Option<f64> {
    let r = counts.len();
    let c = counts.first().map_or(0, |row| row.len());
    if r < 2 || c < 2 {
        return None;
    }
    let n: u64 = counts.iter().flatten().sum();
    let rows: Vec<u64> = counts.iter().map(|row| row.iter().sum()).collect();
    let cols: Vec<u64> = (0..c)
        .map(|j| counts.iter().map(|row| row[j]).sum())
        .collect();
    let mut chi2 = 0.0;
    for i in 0..r {
        for j in 0..c {
            let e = rows[i] as f64 * cols[j] as f64 / n as f64;
            if e > 0.0 {
                chi2 += (counts[i][j] as f64 - e).powi(2) / e;
            }
        }
    }
    Some((chi2 / (n as f64 * (r.min(c) - 1) as f64)).sqrt())
}

fn crosstab(items: &[Item], col: impl Fn(&Item) -> String) -> Value {
    let mut cells: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut cols = BTreeSet::new();
    let mut rows = BTreeSet::new();
    for it in items {
        let v = col(it);
        rows.insert(it.label.clone());
        cols.insert(v.clone());
        *cells.entry((it.label.clone(), v)).or_insert(0) += 1;
    }
    let counts: Vec<Vec<u64>> = rows
        .iter()
        .map(|r| {
            cols.iter()
                .map(|c| cells.get(&(r.clone(), c.clone())).copied().unwrap_or(0))
                .collect()
        })
        .collect();
    json!({
        "rows": rows,
        "columns": cols,
        "counts": counts,
        "cramers_v": cramers_v(&counts),
    })
}

fn sex_of(s: &str) -> String {
    match s.trim().to_ascii_uppercase().as_str() {
        "M" | "MALE" => "M".into(),
        "F" | "FEMALE" => "F".into(),
        "" => "unknown".into(),
        other => other.to_string(),
    }
}

fn band(age: Option<f64>, bands: &[f64]) -> String {
    let Some(a) = age else {
        return "unknown".into();
    };
    let mut lo = 0.0;
    for &hi in bands {
        if a < hi {
            return format!("{lo:.0}-{}", hi - 1.0);
        }
        lo = hi;
    }
    format!("{lo:.0}+")
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

pub fn build(items: &[Item], rules: &Rules) -> Tables {
    let mut warnings = Vec::new();
    let labels: BTreeSet<&str> = items.iter().map(|i| i.label.as_str()).collect();
    let mut ages = serde_json::Map::new();
    let mut medians: BTreeMap<&str, f64> = BTreeMap::new();
    for l in &labels {
        let v: Vec<f64> = items
            .iter()
            .filter(|i| i.label == *l)
            .filter_map(|i| i.age)
            .collect();
        let m = median(v.clone());
        if let Some(m) = m {
            medians.insert(l, m);
        }
        ages.insert(l.to_string(), json!({"known": v.len(), "median": m}));
    }
    let (young, adult): (Vec<_>, Vec<_>) = medians.iter().partition(|(_, m)| **m < rules.adult_age);
    if !young.is_empty() && !adult.is_empty() {
        for (l, m) in &young {
            warnings.push(format!(
                "class {l} has median age {m:.0} while {} are adult (median {}): a model can learn child against adult anatomy instead of the disease (the Kaggle NORMAL trap)",
                adult.iter().map(|(a, _)| a.to_string()).collect::<Vec<_>>().join(", "),
                adult.iter().map(|(_, m)| format!("{m:.0}")).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    let unknown = items.iter().filter(|i| i.age.is_none()).count();
    if unknown > 0 {
        let srcs: BTreeSet<&str> = items
            .iter()
            .filter(|i| i.age.is_none())
            .map(|i| i.source.as_str())
            .collect();
        warnings.push(format!(
            "age unknown for {unknown} of {} image(s) (sources: {}); the age checks cover the rest",
            items.len(),
            srcs.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    // Total confounding: a class whose every image comes from sources no other class uses.
    let mut sources_of: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for it in items {
        sources_of
            .entry(it.label.as_str())
            .or_default()
            .insert(it.source.as_str());
    }
    for (l, s) in &sources_of {
        let others: BTreeSet<&str> = sources_of
            .iter()
            .filter(|(k, _)| k != &l)
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        if !others.is_empty() && s.is_disjoint(&others) {
            warnings.push(format!(
                "total confounding: every {l} image comes from {} and no other class uses {}: label and source are the same thing in these bags, so nothing trained on them can tell {l} from its source",
                s.iter().copied().collect::<Vec<_>>().join(", "),
                if s.len() == 1 { "it" } else { "them" }
            ));
        }
    }
    let json = json!({
        "label_by_source": crosstab(items, |i| i.source.clone()),
        "label_by_view": crosstab(items, |i| if i.view.is_empty() { "unknown".into() } else { i.view.clone() }),
        "label_by_sex": crosstab(items, |i| sex_of(&i.sex)),
        "label_by_age_band": crosstab(items, |i| band(i.age, &rules.age_bands)),
        "age": ages,
    });
    Tables { json, warnings }
}

/// The tables as Markdown (audit.md).
pub fn markdown(t: &Value) -> String {
    let mut s = String::new();
    for (key, title) in TITLES {
        let tab = &t[key];
        let cols: Vec<String> = strings(&tab["columns"]);
        s.push_str(&format!(
            "## {title} (Cramér's V {})\n\n| label | {} |\n|---|{}\n",
            tab["cramers_v"]
                .as_f64()
                .map_or("n/a".into(), |v| format!("{v:.2}")),
            cols.join(" | "),
            "---|".repeat(cols.len())
        ));
        for (r, row) in strings(&tab["rows"])
            .iter()
            .zip(tab["counts"].as_array().into_iter().flatten())
        {
            let cells: Vec<String> = row
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| v.to_string())
                .collect();
            s.push_str(&format!("| {r} | {} |\n", cells.join(" | ")));
        }
        s.push('\n');
    }
    s
}

pub const TITLES: [(&str, &str); 4] = [
    ("label_by_source", "Label × source"),
    ("label_by_view", "Label × view"),
    ("label_by_sex", "Label × sex"),
    ("label_by_age_band", "Label × age band"),
];

pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|x| x.as_str().unwrap_or("").to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cramers_v_extremes() {
        assert!((cramers_v(&[vec![10, 0], vec![0, 10]]).unwrap() - 1.0).abs() < 1e-12);
        assert!(cramers_v(&[vec![5, 5], vec![5, 5]]).unwrap().abs() < 1e-12);
        assert_eq!(cramers_v(&[vec![3, 4]]), None);
    }

    #[test]
    fn age_bands() {
        let b = [18.0, 40.0, 60.0, 80.0];
        assert_eq!(band(Some(3.0), &b), "0-17");
        assert_eq!(band(Some(45.0), &b), "40-59");
        assert_eq!(band(Some(90.0), &b), "80+");
        assert_eq!(band(None, &b), "unknown");
    }
}
