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
//! that). Each block's keys are cut into ranges; per range, the windows and the probes' masked
//! keys that fall in it are bucketed by key and joined bucket by bucket, so memory is read in
//! order (one table of all 53 M windows of 100k images, probed at random, took 2.4× as long) and the
//! peak is a few ranges' windows (12 bytes each) beside the hashes.
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

/// All windows filed under one block, for the keys of one range: a counting sort by block key
/// (CSR layout). Each entry keeps its full hash inline, so checking a bucket reads memory in
/// order.
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

/// Counting sort of `(key - lo, value)` pairs into buckets `0..span`: (start, values in key
/// order, stable).
fn bucket<T: Copy + Default>(span: usize, items: &[(u32, T)]) -> (Vec<u32>, Vec<T>) {
    let mut start = vec![0u32; span + 1];
    for &(k, _) in items {
        start[k as usize + 1] += 1;
    }
    for b in 0..span {
        start[b + 1] += start[b];
    }
    let mut fill = start.clone();
    let mut out = vec![T::default(); items.len()];
    for &(k, v) in items {
        let slot = &mut fill[k as usize];
        out[*slot as usize] = v;
        *slot += 1;
    }
    (start, out)
}

impl Table {
    /// The windows whose block k lies in `lo..hi`, bucketed by key: one pass over all windows.
    fn build(hashes: &[Option<&Hashes>], k: u32, lo: u32, hi: u32) -> Table {
        let mut found: Vec<(u32, (u64, u32))> = Vec::new();
        let mut g = 0u32;
        for h in hashes {
            for &w in h.map_or(&[][..], |h| &h.windows[..]) {
                let key = block(w, k);
                if key >= lo && key < hi {
                    found.push((key - lo, (w, g)));
                }
                g += 1;
            }
        }
        let (start, entries) = bucket((hi - lo) as usize, &found);
        drop(found);
        Table {
            start,
            hash: entries.iter().map(|e| e.0).collect(),
            global: entries.iter().map(|e| e.1).collect(),
        }
    }
}

/// Number of key ranges a block's search is cut into: each range's table is built, joined and
/// dropped by one thread, so the peak is a few ranges' windows (~4 M each), not all of them;
/// each range costs one pass over the window hashes.
fn ranges(total_windows: u64) -> u32 {
    (total_windows.div_ceil(4 << 20) as u32).clamp(1, 32)
}

/// What one range's join needs: block `k`'s keys `range.0..range.1`.
struct Job<'a> {
    hashes: &'a [Option<&'a Hashes>],
    k: u32,
    range: (u32, u32),
    masks: &'a [u32],
    max: u32,
    windows: &'a Windows,
}

/// Probe hits found through block `k` for the keys in `lo..hi`: the probes' keys within the
/// masks of `lo..hi`, bucketed like the windows, then each key's probes checked against each
/// key's windows on all 63 bits (both sides read in key order).
fn range_hits(job: &Job) -> Vec<Hit> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("popcnt") {
        // SAFETY: the CPU has POPCNT, checked just above.
        return unsafe { range_hits_popcnt(job) };
    }
    range_hits_with(job)
}

/// [`range_hits_with`] compiled with the POPCNT instruction: x86-64's baseline lacks it, and
/// the software bit count is most of the join's time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
fn range_hits_popcnt(job: &Job) -> Vec<Hit> {
    range_hits_with(job)
}

#[inline(always)]
fn range_hits_with(job: &Job) -> Vec<Hit> {
    let &Job {
        hashes,
        k,
        range: (lo, hi),
        masks,
        max,
        windows,
    } = job;
    let table = Table::build(hashes, k, lo, hi);
    let mut keys: Vec<(u32, u32)> = Vec::new();
    for (a, h) in hashes.iter().enumerate() {
        let Some(h) = h else { continue };
        let key = block(h.probe, k);
        for &m in masks {
            let q = key ^ m;
            if q >= lo && q < hi {
                keys.push((q - lo, a as u32));
            }
        }
    }
    let (pstart, probes) = bucket((hi - lo) as usize, &keys);
    drop(keys);
    let mut out = Vec::new();
    for b in 0..(hi - lo) as usize {
        let (p0, p1) = (pstart[b] as usize, pstart[b + 1] as usize);
        let (w0, w1) = (table.start[b] as usize, table.start[b + 1] as usize);
        if p0 == p1 || w0 == w1 {
            continue;
        }
        for &a in &probes[p0..p1] {
            let probe = hashes[a as usize].expect("probed").probe;
            for e in w0..w1 {
                let d = (table.hash[e] ^ probe).count_ones();
                if d <= max {
                    let (img, win) = windows.locate(table.global[e]);
                    if img != a {
                        out.push(Hit { of: a, img, win, d });
                    }
                }
            }
        }
    }
    out
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
        let buckets = 1u32 << BLOCK_BITS;
        let n = ranges(windows.total());
        let span = buckets.div_ceil(n);
        let jobs: Vec<(u32, (u32, u32))> = (0..BLOCKS)
            .flat_map(|k| (0..n).map(move |j| (k, (j * span, ((j + 1) * span).min(buckets)))))
            .collect();
        jobs.into_par_iter()
            .flat_map_iter(|(k, range)| {
                range_hits(&Job {
                    hashes,
                    k,
                    range,
                    masks: &masks,
                    max,
                    windows: &windows,
                })
            })
            .collect()
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
