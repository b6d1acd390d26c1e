//! Balancing to a class ratio and stratified assignment of whole groups to splits.
//!
//! Every random-looking choice is a sort by sha256(seed, purpose, id): the result depends only
//! on the seed, the group ids and the fractions, never on input order or thread scheduling.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The three classes a split balances and stratifies over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fine {
    Covid,
    Healthy,
    Diseased,
}

impl Fine {
    pub const ALL: [Fine; 3] = [Fine::Covid, Fine::Healthy, Fine::Diseased];
    pub fn label(self) -> &'static str {
        match self {
            Fine::Covid => "covid",
            Fine::Healthy => "healthy",
            Fine::Diseased => "diseased",
        }
    }
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A seeded sort key.
pub fn seeded(seed: u64, purpose: &str, id: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(purpose.as_bytes());
    h.update([0]);
    h.update(id.as_bytes());
    h.finalize().into()
}

/// One image as balancing and assignment see it.
#[derive(Debug, Clone)]
pub struct Unit {
    pub class: Fine,
    pub group: String,
    /// A stable id of the image (unique), for choosing images inside a group.
    pub key: String,
}

/// Why balancing left an image out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub unit: usize,
    pub reason: String,
    pub detail: String,
}

/// Per-class targets of a balanced set: the largest k with k·ratio fitting every class.
pub fn balance_targets(counts: [usize; 3], ratio: [u32; 3]) -> [usize; 3] {
    let k = (0..3)
        .filter(|&c| ratio[c] > 0)
        .map(|c| counts[c] / ratio[c] as usize)
        .min()
        .unwrap_or(0);
    [0, 1, 2].map(|c| k * ratio[c] as usize)
}

/// Down-sample each class to its target, dropping whole groups where that allows it; at most
/// one group per class is cut to meet the target exactly. Returns (kept flags, drops).
pub fn balance(
    units: &[Unit],
    ratio: [u32; 3],
    seed: u64,
) -> (Vec<bool>, Vec<Dropped>, [usize; 3]) {
    let mut counts = [0usize; 3];
    for u in units {
        counts[u.class.index()] += 1;
    }
    let targets = balance_targets(counts, ratio);
    let ratio_s = format!("{}:{}:{}", ratio[0], ratio[1], ratio[2]);
    let mut keep = vec![false; units.len()];
    let mut drops = Vec::new();
    for class in Fine::ALL {
        let c = class.index();
        // The class's part of each group, groups in seeded order.
        let mut parts: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, u) in units.iter().enumerate() {
            if u.class == class {
                parts.entry(&u.group).or_default().push(i);
            }
        }
        let mut order: Vec<(&str, Vec<usize>)> = parts.into_iter().collect();
        order.sort_by_key(|(g, _)| seeded(seed, &format!("balance-{}", class.label()), g));
        let sizes: Vec<usize> = order.iter().map(|(_, m)| m.len()).collect();
        let chosen = pick_whole_groups(&sizes, targets[c]);
        let mut left = targets[c];
        let mut skipped: Vec<usize> = Vec::new(); // positions in `order`
        for (pos, (_, members)) in order.iter().enumerate() {
            if chosen[pos] {
                left -= members.len();
                for &i in members {
                    keep[i] = true;
                }
            } else {
                skipped.push(pos);
            }
        }
        let why = format!(
            "{} down-sampled from {} to {} images for ratio covid:healthy:diseased = {ratio_s}",
            class.label(),
            counts[c],
            targets[c]
        );
        if left > 0 {
            // No combination of whole groups meets the target: cut the first skipped group
            // (it is larger than what is left, or the whole-group pick would have taken it).
            let pos = skipped.remove(0);
            let (g, members) = &order[pos];
            let mut m = members.clone();
            m.sort_by_key(|&i| seeded(seed, "balance-image", &units[i].key));
            for (k, &i) in m.iter().enumerate() {
                if k < left {
                    keep[i] = true;
                } else {
                    drops.push(Dropped {
                        unit: i,
                        reason: "balance-partial-group".into(),
                        detail: format!(
                            "{why}; whole groups could not meet it exactly, so {} of {} images of group {g} were kept",
                            left,
                            m.len()
                        ),
                    });
                }
            }
        }
        for pos in skipped {
            let (g, members) = &order[pos];
            for &i in members {
                drops.push(Dropped {
                    unit: i,
                    reason: if ratio[c] == 0 {
                        "ratio-zero".into()
                    } else {
                        "balance".into()
                    },
                    detail: format!("{why}; group {g} left out whole"),
                });
            }
        }
    }
    drops.sort_by_key(|d| d.unit);
    (keep, drops, targets)
}

/// Which groups (sizes in seeded order) to keep so their sizes add up to `target`, or to the
/// largest sum below it that whole groups can make. Subset sum by dynamic programming over
/// suffixes, then a walk in seeded order that takes a group whenever the rest can still make
/// the remainder: the earliest groups in seeded order win. Greedy above a size bound.
pub fn pick_whole_groups(sizes: &[usize], target: usize) -> Vec<bool> {
    let n = sizes.len();
    let mut take = vec![false; n];
    if (n as u64) * (target as u64 + 1) > 200_000_000 {
        let mut left = target;
        for (i, &s) in sizes.iter().enumerate() {
            if s <= left {
                left -= s;
                take[i] = true;
            }
        }
        return take;
    }
    // can[i][t]: groups i.. can make exactly t.
    let w = target + 1;
    let mut can = vec![false; (n + 1) * w];
    can[n * w] = true;
    for i in (0..n).rev() {
        for t in 0..w {
            can[i * w + t] =
                can[(i + 1) * w + t] || (sizes[i] <= t && can[(i + 1) * w + t - sizes[i]]);
        }
    }
    let best = (0..w).rev().find(|&t| can[t]).unwrap_or(0);
    let mut left = best;
    for i in 0..n {
        if sizes[i] <= left && can[(i + 1) * w + left - sizes[i]] {
            take[i] = true;
            left -= sizes[i];
        }
    }
    take
}

/// Assign whole groups to splits so each class meets the fractions as closely as whole groups
/// allow. Returns the split index of each unit.
///
/// Greedy, largest groups first (ties in seeded order), each to the split where it reduces the
/// class-weighted squared deviation most; then single-group moves while they improve it.
pub fn assign(units: &[Unit], fractions: &[f64], seed: u64) -> Vec<usize> {
    let k = fractions.len();
    let mut totals = [0f64; 3];
    let mut groups: BTreeMap<&str, [f64; 3]> = BTreeMap::new();
    for u in units {
        totals[u.class.index()] += 1.0;
        groups.entry(&u.group).or_insert([0.0; 3])[u.class.index()] += 1.0;
    }
    let target: Vec<[f64; 3]> = fractions
        .iter()
        .map(|f| [0, 1, 2].map(|c| f * totals[c]))
        .collect();
    let weight = [0, 1, 2].map(|c| {
        if totals[c] > 0.0 {
            1.0 / totals[c]
        } else {
            0.0
        }
    });
    let mut order: Vec<(&str, [f64; 3], [u8; 32])> = groups
        .iter()
        .map(|(g, n)| (*g, *n, seeded(seed, "assign", g)))
        .collect();
    order.sort_by(|a, b| {
        let (sa, sb) = (a.1.iter().sum::<f64>(), b.1.iter().sum::<f64>());
        sb.total_cmp(&sa).then(a.2.cmp(&b.2))
    });
    let mut have = vec![[0f64; 3]; k];
    // Cost change of adding (sign +1) or removing (-1) group counts n to split s.
    let delta = |have: &Vec<[f64; 3]>, s: usize, n: &[f64; 3], sign: f64| -> f64 {
        (0..3)
            .map(|c| {
                let d = have[s][c] - target[s][c];
                let nd = d + sign * n[c];
                weight[c] * (nd * nd - d * d)
            })
            .sum()
    };
    let mut chosen: BTreeMap<&str, usize> = BTreeMap::new();
    for (g, n, _) in &order {
        let mut best: Option<(f64, [u8; 32], usize)> = None;
        for (s, &f) in fractions.iter().enumerate() {
            if f <= 0.0 {
                continue;
            }
            let cost = delta(&have, s, n, 1.0);
            let tie = seeded(seed, &format!("assign-tie-{s}"), g);
            let better = match &best {
                None => true,
                Some((bc, bt, _)) => cost < bc - 1e-12 || ((cost - bc).abs() <= 1e-12 && tie < *bt),
            };
            if better {
                best = Some((cost, tie, s));
            }
        }
        let s = best.map(|b| b.2).unwrap_or(0);
        for c in 0..3 {
            have[s][c] += n[c];
        }
        chosen.insert(g, s);
    }
    // Improve by moving single groups; each move strictly lowers the cost, so this ends.
    for _round in 0..50 {
        let mut moved = false;
        for (g, n, _) in &order {
            let from = chosen[g];
            let mut best = (0f64, from);
            for (to, &f) in fractions.iter().enumerate() {
                if to == from || f <= 0.0 {
                    continue;
                }
                let mut after = have.clone();
                for c in 0..3 {
                    after[from][c] -= n[c];
                }
                let gain = delta(&have, from, n, -1.0) + delta(&after, to, n, 1.0);
                if gain < best.0 - 1e-9 {
                    best = (gain, to);
                }
            }
            if best.1 != from {
                for c in 0..3 {
                    have[from][c] -= n[c];
                    have[best.1][c] += n[c];
                }
                chosen.insert(g, best.1);
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    units.iter().map(|u| chosen[u.group.as_str()]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(spec: &[(Fine, &str)]) -> Vec<Unit> {
        spec.iter()
            .enumerate()
            .map(|(i, (c, g))| Unit {
                class: *c,
                group: g.to_string(),
                key: format!("img{i}"),
            })
            .collect()
    }

    #[test]
    fn targets_meet_the_ratio_exactly() {
        assert_eq!(balance_targets([164, 200, 90], [2, 1, 1]), [164, 82, 82]);
        assert_eq!(balance_targets([100, 30, 90], [2, 1, 1]), [60, 30, 30]);
        assert_eq!(balance_targets([101, 60, 90], [1, 1, 1]), [60, 60, 60]);
        assert_eq!(balance_targets([10, 60, 0], [1, 1, 0]), [10, 10, 0]);
    }

    #[test]
    fn balance_drops_whole_groups_when_it_can() {
        // covid: groups of 3,1,1,1 (6 images); healthy 2 singletons; diseased 2 singletons.
        let mut spec = vec![
            (Fine::Covid, "p1"),
            (Fine::Covid, "p1"),
            (Fine::Covid, "p1"),
        ];
        spec.extend([(Fine::Covid, "a"), (Fine::Covid, "b"), (Fine::Covid, "c")]);
        spec.extend([(Fine::Healthy, "h1"), (Fine::Healthy, "h2")]);
        spec.extend([(Fine::Diseased, "d1"), (Fine::Diseased, "d2")]);
        let u = units(&spec);
        for seed in 0..20 {
            let (keep, drops, t) = balance(&u, [2, 1, 1], seed);
            assert_eq!(t, [4, 2, 2]);
            let kept_covid = (0..u.len())
                .filter(|&i| keep[i] && u[i].class == Fine::Covid)
                .count();
            assert_eq!(kept_covid, 4);
            // 4 = 3+1 or 1+1+1+(cut), but whole groups can always make 4 here: never cut.
            assert!(
                drops.iter().all(|d| d.reason == "balance"),
                "{seed}: {drops:?}"
            );
            assert_eq!(drops.len(), 2);
        }
    }

    #[test]
    fn whole_groups_meet_targets_when_any_combination_can() {
        assert_eq!(
            pick_whole_groups(&[1, 1, 1, 3], 4),
            vec![true, false, false, true]
        );
        assert_eq!(pick_whole_groups(&[3, 3], 4), vec![true, false]);
        assert_eq!(pick_whole_groups(&[2, 5, 2], 4), vec![true, false, true]);
        assert_eq!(pick_whole_groups(&[2, 2], 0), vec![false, false]);
    }

    #[test]
    fn assignment_keeps_groups_whole_and_meets_fractions() {
        let mut spec = Vec::new();
        let names: Vec<String> = (0..200).map(|i| format!("g{i}")).collect();
        for (i, g) in names.iter().enumerate() {
            let c = Fine::ALL[i % 3];
            for _ in 0..(1 + i % 4) {
                spec.push((c, g.as_str()));
            }
        }
        let u = units(&spec);
        let a = assign(&u, &[0.7, 0.3], 1);
        let mut per: BTreeMap<&str, usize> = BTreeMap::new();
        for (x, s) in u.iter().zip(&a) {
            assert_eq!(*per.entry(&x.group).or_insert(*s), *s);
        }
        for c in Fine::ALL {
            let n = u.iter().filter(|x| x.class == c).count() as f64;
            let tr = u
                .iter()
                .zip(&a)
                .filter(|(x, s)| x.class == c && **s == 0)
                .count() as f64;
            assert!((tr / n - 0.7).abs() <= 4.0 / n, "{c:?} {}", tr / n);
        }
        let b = assign(&u, &[0.7, 0.3], 2);
        assert_ne!(a, b, "a different seed gives a different assignment");
        assert_eq!(a, assign(&u, &[0.7, 0.3], 1));
    }
}
