//! Near-duplicate candidates without comparing all pairs: multi-index hashing (Norouzi et al.,
//! "Fast Search in Hamming Space with Multi-Index Hashing"; FAISS's IndexBinaryMultiHash).
//!
//! A pair is a candidate when one image's probe hash is within `max` bits of one of the other's
//! window hashes (see [`super::phash`]). The 63 used bits of a hash (bit 0 is always clear) are
//! cut into [`BLOCKS`] blocks of 21 bits. If two hashes differ in at most `max` bits, one block
//! differs in at most `max / BLOCKS` bits (pigeonhole), so every window is filed under each of
//! its blocks, and each probe looks up, per block, the keys within `max / BLOCKS` bits of its
//! own: 232 keys for the default `max` of 8. Every window found is then checked on all 63 bits,
//! so the index returns exactly the hits brute force would (a property test below holds it to
//! that). One block's table is built, queried and dropped at a time, so the peak is one table
//! (12 bytes per window) beside the hashes.
//!
//! Written by hand: no maintained crate does multi-index Hamming search over one set of keys
//! (probes) against another (windows); the tables are a counting sort.

use super::phash::Hashes;
use rayon::prelude::*;

/// Number of blocks the 63 hash bits are cut into.
pub const BLOCKS: u32 = 3;
/// Bits per block (3 × 21 = 63: bits 1..=63).
const BLOCK_BITS: u32 = 21;
/// Largest per-block radius the index enumerates (1,562 keys at 3); beyond it (max ≥ 12) the
/// candidates come from brute force, which is what such a loose threshold costs anyway.
const MAX_BLOCK_RADIUS: u32 = 3;

/// A candidate pair a < b with the probe hits both ways, as (hamming, window index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub a: usize,
    pub b: usize,
    /// a's probe within `max` of b's windows.
    pub ab: Vec<(u32, u32)>,
    /// b's probe within `max` of a's windows.
    pub ba: Vec<(u32, u32)>,
}

/// One probe hit: the probe of image `of` is `d` bits from window `win` of image `img`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Hit {
    of: u32,
    img: u32,
    win: u32,
    d: u32,
}

fn block(h: u64, k: u32) -> u32 {
    ((h >> (1 + k * BLOCK_BITS)) & ((1 << BLOCK_BITS) - 1)) as u32
}

/// Every 21-bit mask with at most `r` bits set.
fn masks(r: u32) -> Vec<u32> {
    let mut out = vec![0u32];
    let mut frontier = vec![(0u32, 0u32)]; // (mask, lowest bit allowed next)
    for _ in 0..r {
        let mut next = Vec::new();
        for &(m, lo) in &frontier {
            for b in lo..BLOCK_BITS {
                next.push((m | 1 << b, b + 1));
            }
        }
        out.extend(next.iter().map(|x| x.0));
        frontier = next;
    }
    out
}

/// All windows filed under one block: a counting sort by block key (CSR layout). Each entry
/// keeps its full hash inline, so checking a bucket reads memory in order.
struct Table {
    start: Vec<u32>,
    hash: Vec<u64>,
    /// Global window number (see `Windows`).
    global: Vec<u32>,
}

/// Global window numbering: image i's windows are `first[i]..first[i + 1]`.
struct Windows {
    first: Vec<u64>,
}

impl Windows {
    fn new(hashes: &[Option<&Hashes>]) -> Windows {
        let mut first = Vec::with_capacity(hashes.len() + 1);
        let mut n = 0u64;
        first.push(0);
        for h in hashes {
            n += h.map_or(0, |h| h.windows.len() as u64);
            first.push(n);
        }
        Windows { first }
    }
    fn total(&self) -> u64 {
        *self.first.last().expect("non-empty")
    }
    /// (image, window) of a global window number.
    fn locate(&self, g: u32) -> (u32, u32) {
        let g = g as u64;
        let i = self.first.partition_point(|&f| f <= g) - 1;
        (i as u32, (g - self.first[i]) as u32)
    }
}

impl Table {
    /// Counting sort in parallel: histograms over image ranges, then each thread scatters the
    /// windows of one range of keys (a disjoint part of the output) in window order, so the
    /// table is the same whatever the thread count.
    fn build(hashes: &[Option<&Hashes>], k: u32) -> Table {
        let buckets = 1usize << BLOCK_BITS;
        let parts = rayon::current_num_threads().clamp(1, 16);
        let span = hashes.len().div_ceil(parts).max(1);
        let hists: Vec<Vec<u32>> = hashes
            .par_chunks(span)
            .map(|chunk| {
                let mut c = vec![0u32; buckets];
                for h in chunk.iter().flatten() {
                    for &w in &h.windows {
                        c[block(w, k) as usize] += 1;
                    }
                }
                c
            })
            .collect();
        let mut start = vec![0u32; buckets + 1];
        for b in 0..buckets {
            start[b + 1] = start[b] + hists.iter().map(|c| c[b]).sum::<u32>();
        }
        drop(hists);
        let n = start[buckets] as usize;
        let mut hash = vec![0u64; n];
        let mut global = vec![0u32; n];
        // Key ranges [lo, hi) and their disjoint output slices.
        let key_span = buckets.div_ceil(parts);
        let mut jobs = Vec::new();
        let (mut hrest, mut grest) = (&mut hash[..], &mut global[..]);
        for p in 0..parts {
            let (lo, hi) = (p * key_span, ((p + 1) * key_span).min(buckets));
            let len = (start[hi] - start[lo]) as usize;
            let (h, hr) = hrest.split_at_mut(len);
            let (g, gr) = grest.split_at_mut(len);
            (hrest, grest) = (hr, gr);
            jobs.push((lo as u32, hi as u32, h, g));
        }
        jobs.into_par_iter().for_each(|(lo, hi, hout, gout)| {
            let base = start[lo as usize];
            let mut fill: Vec<u32> = start[lo as usize..hi as usize]
                .iter()
                .map(|s| s - base)
                .collect();
            let mut g = 0u32;
            for h in hashes {
                for &w in h.map_or(&[][..], |h| &h.windows[..]) {
                    let key = block(w, k);
                    if key >= lo && key < hi {
                        let slot = &mut fill[(key - lo) as usize];
                        hout[*slot as usize] = w;
                        gout[*slot as usize] = g;
                        *slot += 1;
                    }
                    g += 1;
                }
            }
        });
        Table {
            start,
            hash,
            global,
        }
    }

    /// Windows within `max` bits of `probe` among those whose block k is within the masks.
    fn query(&self, probe: u64, k: u32, masks: &[u32], max: u32, out: &mut Vec<(u32, u32)>) {
        let key = block(probe, k);
        for &m in masks {
            let b = (key ^ m) as usize;
            let (lo, hi) = (self.start[b] as usize, self.start[b + 1] as usize);
            for e in lo..hi {
                let d = (self.hash[e] ^ probe).count_ones();
                if d <= max {
                    out.push((self.global[e], d));
                }
            }
        }
    }
}

/// Every probe hit of every image in any other image's windows, sorted and without repeats.
fn hits(hashes: &[Option<&Hashes>], max: u32) -> Vec<Hit> {
    let windows = Windows::new(hashes);
    assert!(
        windows.total() < u32::MAX as u64,
        "more than 4 billion windows"
    );
    let r = max / BLOCKS;
    let mut all: Vec<Hit> = if r > MAX_BLOCK_RADIUS {
        brute_hits(hashes, max)
    } else {
        let masks = masks(r);
        let windows = &windows;
        let mut all = Vec::new();
        for k in 0..BLOCKS {
            let table = Table::build(hashes, k);
            let found: Vec<Hit> = (0..hashes.len())
                .into_par_iter()
                .flat_map_iter(|a| {
                    let mut raw = Vec::new();
                    if let Some(h) = hashes[a] {
                        table.query(h.probe, k, &masks, max, &mut raw);
                    }
                    raw.into_iter().filter_map(move |(g, d)| {
                        let (img, win) = windows.locate(g);
                        (img as usize != a).then_some(Hit {
                            of: a as u32,
                            img,
                            win,
                            d,
                        })
                    })
                })
                .collect();
            all.extend(found);
        }
        all
    };
    all.par_sort_unstable();
    all.dedup();
    all
}

/// The same hits by comparing every probe with every window.
fn brute_hits(hashes: &[Option<&Hashes>], max: u32) -> Vec<Hit> {
    (0..hashes.len())
        .into_par_iter()
        .flat_map_iter(|a| {
            let mut out = Vec::new();
            if let Some(ha) = hashes[a] {
                for (b, hb) in hashes.iter().enumerate() {
                    let Some(hb) = hb else { continue };
                    if a == b {
                        continue;
                    }
                    for (win, d) in super::phash::probe_hits(ha, hb, max)
                        .into_iter()
                        .map(|(d, k)| (k, d))
                    {
                        out.push(Hit {
                            of: a as u32,
                            img: b as u32,
                            win,
                            d,
                        });
                    }
                }
            }
            out
        })
        .collect()
}

/// Candidate pairs (a < b, sorted) with their hits both ways.
pub fn candidate_pairs(hashes: &[Option<&Hashes>], max: u32) -> Vec<Candidate> {
    let mut by_pair: std::collections::BTreeMap<(usize, usize), Candidate> = Default::default();
    for h in hits(hashes, max) {
        let (of, img) = (h.of as usize, h.img as usize);
        let (a, b) = (of.min(img), of.max(img));
        let c = by_pair.entry((a, b)).or_insert_with(|| Candidate {
            a,
            b,
            ab: Vec::new(),
            ba: Vec::new(),
        });
        if of == a {
            c.ab.push((h.d, h.win));
        } else {
            c.ba.push((h.d, h.win));
        }
    }
    by_pair.into_values().collect()
}

/// Candidate pairs by brute force, for tests and the benchmark's cross-check.
pub fn candidate_pairs_brute(hashes: &[Option<&Hashes>], max: u32) -> Vec<Candidate> {
    let mut out = Vec::new();
    for a in 0..hashes.len() {
        for b in a + 1..hashes.len() {
            let (Some(ha), Some(hb)) = (hashes[a], hashes[b]) else {
                continue;
            };
            let ab = super::phash::probe_hits(ha, hb, max);
            let ba = super::phash::probe_hits(hb, ha, max);
            if !ab.is_empty() || !ba.is_empty() {
                out.push(Candidate { a, b, ab, ba });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn masks_count_every_word_within_the_radius() {
        assert_eq!(masks(0), vec![0]);
        assert_eq!(masks(1).len(), 22);
        assert_eq!(masks(2).len(), 1 + 21 + 210);
        let m3 = masks(3);
        assert_eq!(m3.len(), 1 + 21 + 210 + 1330);
        let set: std::collections::BTreeSet<u32> = m3.iter().copied().collect();
        assert_eq!(set.len(), m3.len());
        assert!(m3.iter().all(|m| m.count_ones() <= 3 && *m < 1 << 21));
    }

    /// Hashes clustered like real ones: windows of an image are a base hash with a few flips,
    /// and some images copy another's base, so near hits across images are common.
    fn clustered(seed: u64, images: usize, windows: usize) -> Vec<Option<Hashes>> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut bases: Vec<u64> = Vec::new();
        (0..images)
            .map(|i| {
                if i % 7 == 6 {
                    return None;
                }
                let base = if !bases.is_empty() && rng.gen_bool(0.4) {
                    bases[rng.gen_range(0..bases.len())] ^ flips(&mut rng, 6)
                } else {
                    rng.gen::<u64>() & !1
                };
                bases.push(base);
                let win = (0..windows).map(|_| base ^ flips(&mut rng, 7)).collect();
                Some(Hashes {
                    w: 8,
                    h: 8,
                    probe: base ^ flips(&mut rng, 5),
                    windows: win,
                })
            })
            .collect()
    }

    fn flips(rng: &mut impl rand::Rng, n: u32) -> u64 {
        let mut m = 0u64;
        for _ in 0..rng.gen_range(0..=n) {
            m |= 1 << rng.gen_range(1..64);
        }
        m
    }

    fn sorted(mut c: Vec<Candidate>) -> Vec<Candidate> {
        for x in &mut c {
            x.ab.sort_unstable();
            x.ba.sort_unstable();
        }
        c
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        /// The index returns exactly the pairs (and hits) brute force finds within the threshold.
        #[test]
        fn index_finds_exactly_what_brute_force_finds(
            seed in any::<u64>(),
            images in 2usize..40,
            windows in 1usize..30,
            max in 0u32..14,
        ) {
            let owned = clustered(seed, images, windows);
            let hashes: Vec<Option<&Hashes>> = owned.iter().map(|h| h.as_ref()).collect();
            let fast = sorted(candidate_pairs(&hashes, max));
            let slow = sorted(candidate_pairs_brute(&hashes, max));
            prop_assert_eq!(fast, slow);
        }
    }

    #[test]
    fn the_property_test_sees_candidates() {
        // Guard against a vacuous property: the generator makes many near pairs at max 8.
        let owned = clustered(1, 40, 20);
        let hashes: Vec<Option<&Hashes>> = owned.iter().map(|h| h.as_ref()).collect();
        assert!(candidate_pairs_brute(&hashes, 8).len() > 20);
    }
}
