//! Data-pipeline throughput: decode + RandomResizedCrop + flip + normalise of a split bag's
//! training images through `prep train`'s loader, in images/s, for each thread count, best of
//! ROUNDS (alternating). No model runs: this is the most the loader can feed.
//!
//!   cargo run --release --example bench-loader -- BAG [THREADS,..] [BATCH] [ROUNDS] [SIZE]

use prep::train::data::{open_split_bag, Transform};
use prep::train::loader::{throughput, Job, LoaderConfig};
use std::path::PathBuf;
use std::sync::Arc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bag = PathBuf::from(
        args.first()
            .expect("usage: bench-loader BAG [THREADS,..] [BATCH] [ROUNDS] [SIZE]"),
    );
    let threads: Vec<usize> = args
        .get(1)
        .map(|s| s.as_str())
        .unwrap_or("1,2")
        .split(',')
        .map(|t| t.parse().expect("THREADS is a comma list of integers"))
        .collect();
    let num = |i: usize, d: u32| {
        args.get(i)
            .map(|s| s.parse().expect("an integer"))
            .unwrap_or(d)
    };
    let (batch, rounds, size) = (num(2, 16) as usize, num(3, 3), num(4, 224));
    let data = open_split_bag(&bag).expect("a split bag");
    let samples = Arc::new(data.train);
    println!(
        "{} training images of {}, batch {batch}, RandomResizedCrop({size}) + flip, prefetch 4",
        samples.len(),
        bag.display()
    );
    let mut best = vec![0f64; threads.len()];
    for r in 0..rounds {
        let mut line = Vec::new();
        for (i, &t) in threads.iter().enumerate() {
            let job = Job {
                samples: samples.clone(),
                order: (0..samples.len()).collect(),
                batch_size: batch,
                transform: Transform {
                    size,
                    augment: true,
                    occlude: None,
                },
                seed: 0,
                epoch: r as u64,
            };
            let cfg = LoaderConfig {
                prefetch: 4,
                threads: Some(t),
            };
            let ips = throughput(job, cfg).expect("loading");
            best[i] = best[i].max(ips);
            line.push(format!("{t} thread(s) {ips:.1}"));
        }
        println!("round {}: {} images/s", r + 1, line.join(", "));
    }
    for (t, b) in threads.iter().zip(&best) {
        println!("{t} thread(s): {b:.1} images/s (best of {rounds})");
    }
    if best.len() > 1 {
        println!(
            "speed-up {}->{} threads: {:.2}x",
            threads[0],
            threads[threads.len() - 1],
            best[best.len() - 1] / best[0]
        );
    }
}
