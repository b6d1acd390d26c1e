//! The Validity section's Grad-CAM part and its leave-one-source-out table.
//!
//! Grad-CAM: from `prep evaluate --explain N` (DIR/explain/cams.csv, every evaluated image
//! ranked worst error first, and the overlays of the N worst): per source the share of
//! attribution inside the lung field, and a gallery of the overlays, worst errors first, never
//! more than [`CAM_GALLERY_MAX`] cards (each a <= 192 px thumbnail, ~30-60 KB of base64, so the
//! gallery stays under ~2 MB whatever N was).
//!
//! Leave-one-source-out: the `external-summary.csv` a pipeline grid over `hold_out` leaves
//! beside its runs (src/pipeline/loso.rs), read in words.

use super::html::{esc, table, Page};
use super::read_rows;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Most overlays the page shows.
pub const CAM_GALLERY_MAX: usize = 24;
/// Thumbnail side of an overlay on the page.
const CAM_THUMB: u32 = 192;

fn parse(r: &BTreeMap<String, String>, k: &str) -> Option<f64> {
    r.get(k).and_then(|v| v.parse::<f64>().ok())
}

/// The explain/cams.csv of an evaluation folder (or of the target itself).
pub fn find(dirs: &[&Path]) -> Option<PathBuf> {
    dirs.iter()
        .map(|d| d.join("explain/cams.csv"))
        .find(|p| p.is_file())
}

/// Per source (and all): images, mean share inside the lung field, share of images with most
/// of their attribution inside.
fn shares(rows: &super::Rows) -> Vec<Vec<String>> {
    let mut by: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut n: BTreeMap<String, usize> = BTreeMap::new();
    for r in rows {
        let s = r.get("source").cloned().unwrap_or_default();
        for key in ["(all)".to_string(), s] {
            *n.entry(key.clone()).or_default() += 1;
            if let Some(v) = parse(r, "lung_field_share") {
                by.entry(key).or_default().push(v);
            }
        }
    }
    n.into_iter()
        .map(|(k, count)| {
            let v = by.get(&k).cloned().unwrap_or_default();
            let mean = (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
            let most = (!v.is_empty())
                .then(|| v.iter().filter(|x| **x > 0.5).count() as f64 / v.len() as f64);
            let f = |x: Option<f64>| x.map(|x| format!("{x:.3}")).unwrap_or_else(|| "-".into());
            vec![
                esc(if k.is_empty() { "(no source)" } else { &k }),
                count.to_string(),
                f(mean),
                f(most),
            ]
        })
        .collect()
}

/// Write the Grad-CAM part: per-source shares and the bounded worst-first gallery.
pub fn section(page: &mut Page, cams: &Path) {
    let Ok(rows) = read_rows(cams) else {
        return;
    };
    let dir = cams.parent().unwrap_or(Path::new("."));
    page.h3("Grad-CAM: where the model looked");
    page.p(&format!(
        "Grad-CAM of the positive class at features.norm5 for every evaluated image (<code>{}</code>). Share of attribution inside the lung field (the <code>--occlude</code> box, 76 % × 84 % of the film, carried through Resize + CenterCrop); a model reading the disease should put most of it there. Saliency alone is weak evidence (Saporta et al. 2022): read it beside the shortcut controls.",
        esc(&cams.display().to_string())
    ));
    page.raw(&table(
        &[
            "source",
            "images",
            "mean share inside the lung field",
            "images with most attribution inside",
        ],
        &shares(&rows),
    ));
    let mut with: Vec<&BTreeMap<String, String>> = rows
        .iter()
        .filter(|r| r.get("overlay").is_some_and(|o| !o.is_empty()))
        .collect();
    with.sort_by_key(|r| {
        r.get("rank")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(usize::MAX)
    });
    let shown = with.len().min(CAM_GALLERY_MAX);
    page.p(&format!(
        "Worst errors first (largest |label − p|): {shown} of {} images shown (at most {CAM_GALLERY_MAX}); every image's rank, error and share is in cams.csv.",
        rows.len()
    ));
    let mut s = String::from("<div class=gallery>");
    for r in with.into_iter().take(CAM_GALLERY_MAX) {
        let g = |k: &str| esc(r.get(k).map(String::as_str).unwrap_or(""));
        let Some(src) = r
            .get("overlay")
            .and_then(|o| super::html::thumb_as(&dir.join(o), CAM_THUMB, true))
        else {
            continue;
        };
        let f = |k: &str| {
            parse(r, k)
                .map(|x| format!("{x:.3}"))
                .unwrap_or_else(|| "-".into())
        };
        s.push_str(&format!(
            "<div class=card><img style=\"width:{CAM_THUMB}px\" alt=\"Grad-CAM {id}\" src=\"{src}\"><br>#{rank} <code>{id}</code><br>{source} · {split}{ext} · label {label}<br>p {p} · |error| {err} · in lung field {share}</div>",
            id = g("id"),
            rank = g("rank"),
            source = g("source"),
            split = g("split"),
            ext = if r.get("external").map(String::as_str) == Some("1") { " (external)" } else { "" },
            label = g("label"),
            p = f("probability"),
            err = f("abs_error"),
            share = f("lung_field_share"),
        ));
    }
    s.push_str("</div>");
    page.raw(&s);
}

/// A leave-one-source-out table at any of `dirs` or up to two folders above each.
pub fn external_table(dirs: &[&Path]) -> Option<(PathBuf, super::Rows)> {
    for start in dirs {
        let mut dir = Some(*start);
        for _ in 0..3 {
            let d = dir?;
            let p = d.join("external-summary.csv");
            if let Ok(rows) = read_rows(&p) {
                if !rows.is_empty() {
                    return Some((p, rows));
                }
            }
            dir = d.parent();
        }
    }
    None
}

/// The grid point of a row: its columns that are not the table's own (`hold_out=a_covid+a_normal`).
fn point(r: &BTreeMap<String, String>) -> String {
    let own = crate::pipeline::loso::COLUMNS;
    r.iter()
        .filter(|(k, _)| !own.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Write the leave-one-source-out table and its reading.
pub fn external_section(page: &mut Page, p: &Path, rows: &super::Rows) {
    page.h3("Leave one source out: internal vs external");
    let f = |r: &BTreeMap<String, String>, k: &str| {
        parse(r, k)
            .map(|x| format!("{x:.3}"))
            .unwrap_or_else(|| "-".into())
    };
    let ci = |r: &BTreeMap<String, String>, lo: &str, hi: &str| match (parse(r, lo), parse(r, hi)) {
        (Some(a), Some(b)) => format!("[{a:.3}, {b:.3}]"),
        _ => "-".into(),
    };
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let g = |k: &str| esc(r.get(k).map(String::as_str).unwrap_or(""));
            vec![
                esc(&point(r)),
                g("external_sources"),
                format!(
                    "{} {} (n {})",
                    f(r, "internal_auc"),
                    ci(r, "internal_ci_lo", "internal_ci_hi"),
                    g("internal_n")
                ),
                format!(
                    "{} {} (n {})",
                    f(r, "external_auc"),
                    ci(r, "external_ci_lo", "external_ci_hi"),
                    g("external_n")
                ),
                f(r, "auc_gap"),
            ]
        })
        .collect();
    page.raw(&table(
        &[
            "grid point",
            "held-out source(s)",
            "internal test AUC, DeLong 95 % CI",
            "external (held-out) AUC, DeLong 95 % CI",
            "gap (internal − external)",
        ],
        &body,
    ));
    page.raw(&format!(
        "<p class=verdict>{}</p><p>(from <code>{}</code>)</p>",
        esc(&loso_verdict(rows)),
        esc(&p.display().to_string())
    ));
}

/// The table in words: the mean gap and the worst held-out source.
pub fn loso_verdict(rows: &super::Rows) -> String {
    let gaps: Vec<(f64, String)> = rows
        .iter()
        .filter_map(|r| {
            let sources = r.get("external_sources").cloned().unwrap_or_default();
            Some((
                parse(r, "auc_gap")?,
                format!("{} (sources: {sources})", point(r)),
            ))
        })
        .collect();
    if gaps.is_empty() {
        return "No held-out source had both classes: the external AUCs are undefined.".into();
    }
    let mean = gaps.iter().map(|g| g.0).sum::<f64>() / gaps.len() as f64;
    let worst = gaps
        .iter()
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .expect("non-empty");
    format!(
        "Leaving each of {} source(s) out in turn, the AUC on the held-out source was on average {:.3} {} the internal test AUC (largest gap {:.3}, holding out {}){}",
        gaps.len(),
        mean.abs(),
        if mean >= 0.0 { "below" } else { "above" },
        worst.0,
        worst.1,
        if worst.0 > 0.05 {
            ": the model does worse on sources it never saw, so its internal AUC overstates how it would do at a new site."
        } else {
            ": no sign that the model depends on the sources it was trained on."
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(hold: &str, gap: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("hold_out".to_string(), hold.to_string()),
            ("external_sources".to_string(), "cohen".to_string()),
            ("auc_gap".to_string(), gap.to_string()),
        ])
    }

    #[test]
    fn leave_one_source_out_in_words() {
        let s = loso_verdict(&vec![row("a", "0.20"), row("b", "0.10")]);
        assert!(s.contains("Leaving each of 2 source(s) out"), "{s}");
        assert!(s.contains("on average 0.150 below"), "{s}");
        assert!(
            s.contains("largest gap 0.200, holding out hold_out=a (sources: cohen)"),
            "{s}"
        );
        assert!(s.contains("does worse on sources it never saw"), "{s}");
        let s = loso_verdict(&vec![row("a", "-0.02"), row("b", "0.01")]);
        assert!(s.contains("0.005 above") && s.contains("no sign"), "{s}");
        assert!(loso_verdict(&vec![row("a", "")]).contains("undefined"));
    }
}
