//! What a record's ancestors know: the share inpainted (an inpaint bag's `mask_pixels`) and the
//! patient's sex and age (the source metadata row a filter bag's record came from).
//!
//! Sex and age are read back through the lineage rather than copied into every records.csv:
//! the shared record stays as every stage and existing bag has it, and the metadata table is
//! the one the filter bag's provenance names, checked against the sha256 recorded there. When
//! that table has moved or changed, the audit says so and treats sex and age as unknown.

use super::Rules;
use crate::report::{read_rows, Rows};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Clone)]
pub struct Origin {
    pub sex: String,
    pub age: Option<f64>,
    pub mask_fraction: Option<f64>,
    /// The folder a filter bag read (its `dataset` parameter): tells folder sources apart.
    pub dataset: Option<String>,
}

struct BagInfo {
    rows: Rows,
    by_id: BTreeMap<String, usize>,
    provenance: serde_json::Value,
}

/// (sex, age) by line of a metadata file.
type Demo = BTreeMap<usize, (String, Option<f64>)>;

pub struct Lineage<'a> {
    rules: &'a Rules,
    bags: BTreeMap<PathBuf, Option<BagInfo>>,
    tables: BTreeMap<(PathBuf, String), Option<Demo>>,
    problems: BTreeSet<String>,
}

/// Leading number of an age cell: `58`, `58.0`, `058Y` (older NIH tables).
fn parse_age(s: &str) -> Option<f64> {
    let t = s.trim();
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    t[..end]
        .parse::<f64>()
        .ok()
        .filter(|a| (0.0..130.0).contains(a))
}

impl<'a> Lineage<'a> {
    pub fn new(rules: &'a Rules) -> Self {
        Lineage {
            rules,
            bags: BTreeMap::new(),
            tables: BTreeMap::new(),
            problems: BTreeSet::new(),
        }
    }

    fn bag(&mut self, path: &Path) -> Option<&BagInfo> {
        let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        if !self.bags.contains_key(&key) {
            let info = (|| {
                let rows = read_rows(&path.join("data/records.csv")).ok()?;
                let provenance: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(path.join("data/provenance.json")).ok()?)
                        .ok()?;
                let by_id = rows
                    .iter()
                    .enumerate()
                    .filter_map(|(i, r)| r.get("id").map(|id| (id.clone(), i)))
                    .collect();
                Some(BagInfo {
                    rows,
                    by_id,
                    provenance,
                })
            })();
            if info.is_none() {
                self.problems.insert(format!(
                    "{}: an ancestor bag could not be read; sex, age and mask share of its images are unknown",
                    path.display()
                ));
            }
            self.bags.insert(key.clone(), info);
        }
        self.bags[&key].as_ref()
    }

    /// Follow one record up to its filter bag.
    pub fn origin(
        &mut self,
        bag: &Path,
        row: &BTreeMap<String, String>,
        _warnings: &mut Vec<String>,
    ) -> Origin {
        let mut out = Origin::default();
        let mut bag = bag.to_path_buf();
        let mut row = row.clone();
        for _ in 0..32 {
            if out.mask_fraction.is_none() {
                let num = |c: &str| row.get(c).and_then(|v| v.parse::<f64>().ok());
                if let (Some(m), Some(w), Some(h)) =
                    (num("mask_pixels"), num("width"), num("height"))
                {
                    // Harmonized bags keep the size the mask was counted on.
                    let (w, h) = match (num("original_width"), num("original_height")) {
                        (Some(ow), Some(oh)) => (ow, oh),
                        _ => (w, h),
                    };
                    out.mask_fraction = Some(m / (w * h).max(1.0));
                }
            }
            let Some(info) = self.bag(&bag) else {
                return out;
            };
            let prov = info.provenance.clone();
            if prov["stage"] == "filter" {
                out.dataset = prov["parameters"]["dataset"].as_str().map(String::from);
                let (sex, age) = self.demographics(&prov, &row);
                out.sex = sex;
                out.age = age;
                return out;
            }
            // The next ancestor: split and harmonize name it per record; inpaint has one.
            let next = match (row.get("source_bag"), row.get("bag_row")) {
                (Some(b), Some(r)) if !b.is_empty() => {
                    r.parse::<usize>().ok().map(|r| (PathBuf::from(b), Some(r)))
                }
                _ => {
                    let bags: Vec<&str> = prov["inputs"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|i| i["kind"] == "bag")
                        .filter_map(|i| i["path"].as_str())
                        .collect();
                    (bags.len() == 1).then(|| (PathBuf::from(bags[0]), None))
                }
            };
            let Some((next_bag, line)) = next else {
                return out;
            };
            let id = row.get("id").cloned().unwrap_or_default();
            let Some(parent) = self.bag(&next_bag) else {
                return out;
            };
            let found = match line {
                Some(l) if l >= 2 => parent.rows.get(l - 2).cloned(),
                _ => parent.by_id.get(&id).map(|&i| parent.rows[i].clone()),
            };
            match found {
                Some(r) => {
                    row = r;
                    bag = next_bag;
                }
                None => return out,
            }
        }
        out
    }

    /// Sex and age of a filter bag's record from the source table its provenance names.
    fn demographics(
        &mut self,
        prov: &serde_json::Value,
        row: &BTreeMap<String, String>,
    ) -> (String, Option<f64>) {
        let source = row.get("source").cloned().unwrap_or_default();
        let Some(cols) = self.rules.demographics.get(&source).cloned() else {
            return (String::new(), None);
        };
        let Some(meta) = prov["parameters"]["metadata"].as_str().map(PathBuf::from) else {
            return (String::new(), None);
        };
        let want_sha = prov["inputs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["kind"] == "metadata")
            .and_then(|i| i["sha256"].as_str())
            .unwrap_or("")
            .to_string();
        let key = (meta.clone(), source.clone());
        if !self.tables.contains_key(&key) {
            let t = self.read_table(&meta, &want_sha, &cols);
            self.tables.insert(key.clone(), t);
        }
        let line = row
            .get("source_row")
            .and_then(|l| l.parse::<usize>().ok())
            .unwrap_or(0);
        self.tables[&key]
            .as_ref()
            .and_then(|t| t.get(&line).cloned())
            .unwrap_or_default()
    }

    fn read_table(
        &mut self,
        meta: &Path,
        want_sha: &str,
        cols: &super::Demographics,
    ) -> Option<Demo> {
        let raw = match std::fs::read(meta) {
            Ok(r) => r,
            Err(_) => {
                self.problems.insert(format!(
                    "{}: the source table named in the filter bag's provenance is not there; sex and age of its images are unknown",
                    meta.display()
                ));
                return None;
            }
        };
        if !want_sha.is_empty() && crate::manifest::hash_bytes(&raw) != want_sha {
            self.problems.insert(format!(
                "{}: changed since the filter bag was made (sha256 differs from its provenance); sex and age of its images are unknown",
                meta.display()
            ));
            return None;
        }
        let (text, _) =
            crate::source::decode_text(meta, &raw, crate::source::Encoding::Auto).ok()?;
        let mut rdr = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(text.as_bytes());
        let headers = rdr.headers().ok()?.clone();
        let find = |name: &str| {
            headers.iter().position(|h| h == name).or_else(|| {
                headers
                    .iter()
                    .position(|h| h.trim().eq_ignore_ascii_case(name))
            })
        };
        let (sex_col, age_col) = (find(&cols.sex), find(&cols.age));
        if sex_col.is_none() && age_col.is_none() {
            self.problems.insert(format!(
                "{}: no {:?} or {:?} column; sex and age of its images are unknown",
                meta.display(),
                cols.sex,
                cols.age
            ));
            return None;
        }
        // Lines as `prep filter` counts them: from byte offsets, past the line end that closed
        // the previous record.
        let bytes = text.as_bytes();
        let newlines: Vec<usize> = (0..bytes.len()).filter(|&i| bytes[i] == b'\n').collect();
        let mut out = Demo::new();
        let mut rec = csv::StringRecord::new();
        while rdr.read_record(&mut rec).unwrap_or(false) {
            let mut b = rec.position().map_or(0, |p| p.byte() as usize);
            while b < bytes.len() && (bytes[b] == b'\r' || bytes[b] == b'\n') {
                b += 1;
            }
            let line = newlines.partition_point(|&nl| nl < b) + 1;
            let get = |c: Option<usize>| c.and_then(|i| rec.get(i)).unwrap_or("").to_string();
            out.insert(
                line,
                (get(sex_col).trim().to_string(), parse_age(&get(age_col))),
            );
        }
        Some(out)
    }

    pub fn finish(self) -> Vec<String> {
        self.problems.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ages_parse() {
        assert_eq!(super::parse_age("58"), Some(58.0));
        assert_eq!(super::parse_age("058Y"), Some(58.0));
        assert_eq!(super::parse_age(" 4.5 "), Some(4.5));
        assert_eq!(super::parse_age(""), None);
        assert_eq!(super::parse_age("412"), None);
    }
}
