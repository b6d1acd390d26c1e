//! Patient groups: the closure of every reason two images must stay in the same split.
//!
//! Union-find over images; each reason links images in a fixed order so that the per-reason
//! merge counts (and everything else) are the same on every run. Union-find is a dozen lines;
//! the crates that offer it (petgraph, partitions) bring far more than is needed here.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Why two images were put in the same group. Order = the order reasons are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// Same patient id within a source.
    Patient,
    /// Patient ids the source description lists as the same person.
    Alias,
    /// Byte-identical files (same sha256).
    ExactDuplicate,
    /// A cross-reference rule (e.g. Cohen file stem = Hannover image id).
    CrossReference,
    /// Perceptual hash plus pixel correlation.
    NearDuplicate,
    /// The input already said so (a `group` column of a records CSV under --check).
    Declared,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Patient => "patient",
            Reason::Alias => "alias",
            Reason::ExactDuplicate => "exact-duplicate",
            Reason::CrossReference => "cross-reference",
            Reason::NearDuplicate => "near-duplicate",
            Reason::Declared => "declared",
        }
    }
}

/// One image as grouping sees it.
#[derive(Debug, Clone, Default)]
pub struct Member {
    pub source: String,
    pub patient_id: String,
    pub sha256: String,
    /// File name stem in the source (for cross-reference rules).
    pub stem: String,
    /// A group the input declared (only when checking other tools' splits).
    pub declared: String,
}

impl Member {
    /// The member's own name for a group: its patient, else its file content.
    pub fn key(&self) -> String {
        if !self.patient_id.trim().is_empty() {
            format!("{}:{}", self.source, self.patient_id.trim())
        } else if !self.sha256.is_empty() {
            format!("sha256:{}", &self.sha256[..self.sha256.len().min(16)])
        } else {
            format!("{}:file:{}", self.source, self.stem)
        }
    }
}

/// A link between two members and why; `detail` is for the duplicates report.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub a: usize,
    pub b: usize,
    pub reason: Reason,
    pub detail: String,
}

pub struct UnionFind {
    parent: Vec<usize>,
    rank: Vec<u8>,
}

impl UnionFind {
    pub fn new(n: usize) -> Self {
        UnionFind {
            parent: (0..n).collect(),
            rank: vec![0; n],
        }
    }

    pub fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    /// Join the sets of a and b; true when they were separate.
    pub fn union(&mut self, a: usize, b: usize) -> bool {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return false;
        }
        match self.rank[ra].cmp(&self.rank[rb]) {
            std::cmp::Ordering::Less => self.parent[ra] = rb,
            std::cmp::Ordering::Greater => self.parent[rb] = ra,
            std::cmp::Ordering::Equal => {
                self.parent[rb] = ra;
                self.rank[ra] += 1;
            }
        }
        true
    }
}

/// The result of grouping: a group id per member and the merge counts per reason.
#[derive(Debug, Clone)]
pub struct Grouping {
    /// Group id of each member: the smallest member key in the group, so it depends on the
    /// group's content and never on input order.
    pub group_of: Vec<String>,
    /// Number of links that joined two previously separate groups, per reason.
    pub merges: BTreeMap<Reason, usize>,
    /// Every link found (including those inside an already joined group), in order.
    pub links: Vec<Link>,
}

/// Alias table: (source, patient id) -> canonical id of its alias set.
pub type Aliases = BTreeMap<(String, String), String>;

/// Build alias lookups from a source's `[patients] aliases` lists.
pub fn alias_table(source: &str, lists: &[Vec<String>], into: &mut Aliases) {
    for list in lists {
        if let Some(first) = list.iter().map(|s| s.trim()).min() {
            for id in list {
                into.insert(
                    (source.to_string(), id.trim().to_string()),
                    first.to_string(),
                );
            }
        }
    }
}

/// Links from the records alone: same patient, aliases, exact duplicates, declared groups.
/// (Cross-reference and near-duplicate links are found elsewhere and passed to [`group`].)
pub fn record_links(members: &[Member], aliases: &Aliases) -> Vec<Link> {
    let mut links = Vec::new();
    let mut by_key: BTreeMap<(Reason, String), Vec<usize>> = BTreeMap::new();
    for (i, m) in members.iter().enumerate() {
        let pid = m.patient_id.trim();
        if !pid.is_empty() {
            by_key
                .entry((Reason::Patient, format!("{}\u{0}{pid}", m.source)))
                .or_default()
                .push(i);
            if let Some(canon) = aliases.get(&(m.source.clone(), pid.to_string())) {
                by_key
                    .entry((Reason::Alias, format!("{}\u{0}{canon}", m.source)))
                    .or_default()
                    .push(i);
            }
        }
        if !m.sha256.is_empty() {
            by_key
                .entry((Reason::ExactDuplicate, m.sha256.clone()))
                .or_default()
                .push(i);
        }
        if !m.declared.trim().is_empty() {
            by_key
                .entry((Reason::Declared, m.declared.trim().to_string()))
                .or_default()
                .push(i);
        }
    }
    for ((reason, key), idx) in by_key {
        for w in idx.windows(2) {
            let detail = match reason {
                Reason::ExactDuplicate => format!("sha256 {key}"),
                Reason::Alias => {
                    let (src, canon) = key.split_once('\u{0}').unwrap_or(("", &key));
                    format!("{src} patient aliases of {canon}")
                }
                _ => key.replace('\u{0}', ":"),
            };
            links.push(Link {
                a: w[0],
                b: w[1],
                reason,
                detail,
            });
        }
    }
    links
}

/// Close the links into groups. Links are applied by reason in [`Reason`] order, then in
/// the order given, so merge counts are reproducible.
pub fn group(members: &[Member], mut links: Vec<Link>) -> Grouping {
    links.sort_by_key(|l| l.reason); // stable: keeps the given order within a reason
    let mut uf = UnionFind::new(members.len());
    let mut merges: BTreeMap<Reason, usize> = BTreeMap::new();
    for l in &links {
        if uf.union(l.a, l.b) {
            *merges.entry(l.reason).or_default() += 1;
        }
    }
    let mut name: BTreeMap<usize, String> = BTreeMap::new();
    for (i, m) in members.iter().enumerate() {
        let r = uf.find(i);
        let k = m.key();
        let e = name.entry(r).or_insert_with(|| k.clone());
        if k < *e {
            *e = k;
        }
    }
    let group_of = (0..members.len())
        .map(|i| name[&uf.find(i)].clone())
        .collect();
    Grouping {
        group_of,
        merges,
        links,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(source: &str, pid: &str, sha: &str) -> Member {
        Member {
            source: source.into(),
            patient_id: pid.into(),
            sha256: sha.into(),
            stem: String::new(),
            declared: String::new(),
        }
    }

    #[test]
    fn patients_aliases_and_duplicates_close_transitively() {
        let members = vec![
            m("cohen", "87", "aa"),
            m("cohen", "462", "bb"),
            m("cohen", "87", "cc"),
            m("nih", "87", "dd"),  // same id, other source: another person
            m("folder", "", "cc"), // exact copy of member 2
            m("folder", "", "ee"), // alone
        ];
        let mut aliases = Aliases::new();
        alias_table("cohen", &[vec!["87".into(), "462".into()]], &mut aliases);
        let g = group(&members, record_links(&members, &aliases));
        let gid = &g.group_of;
        assert_eq!(gid[0], gid[1]);
        assert_eq!(gid[0], gid[2]);
        assert_eq!(gid[0], gid[4]);
        assert_ne!(gid[0], gid[3]);
        assert_ne!(gid[5], gid[0]);
        assert_eq!(gid[0], "cohen:462"); // smallest member key
        assert_eq!(gid[5], "sha256:ee");
        assert_eq!(g.merges[&Reason::Patient], 1);
        assert_eq!(g.merges[&Reason::Alias], 1);
        assert_eq!(g.merges[&Reason::ExactDuplicate], 1);
    }

    #[test]
    fn group_ids_do_not_depend_on_input_order() {
        let a = vec![m("s", "1", "x"), m("s", "2", "x"), m("t", "", "y")];
        let b = vec![a[2].clone(), a[1].clone(), a[0].clone()];
        let ga = group(&a, record_links(&a, &Aliases::new()));
        let gb = group(&b, record_links(&b, &Aliases::new()));
        assert_eq!(ga.group_of[0], gb.group_of[2]);
        assert_eq!(ga.group_of[2], gb.group_of[0]);
        assert_eq!(ga.merges, gb.merges);
    }
}
