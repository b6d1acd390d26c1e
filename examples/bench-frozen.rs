//! Times the frozen prefix of densenet121 (everything before denseblock4, eval mode, no_grad),
//! torchvision's exact operations vs `--fast-frozen`, and prints their largest difference.
//!
//!   cargo run --release --example bench-frozen [-- THREADS BATCH ROUNDS]

use prep::train::{DenseNet, DenseNetConfig, Unfreeze};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn main() {
    let args: Vec<i64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("THREADS BATCH ROUNDS are integers"))
        .collect();
    let (threads, batch, rounds) = (
        *args.first().unwrap_or(&2),
        *args.get(1).unwrap_or(&8),
        *args.get(2).unwrap_or(&5),
    );
    tch::set_num_threads(threads as i32);
    tch::manual_seed(0);
    let mut net = DenseNet::new(DenseNetConfig::densenet121(2), Device::Cpu);
    // Non-trivial BatchNorm statistics, so folding them is really exercised.
    let sd: Vec<(String, Tensor)> = net
        .state_dict()
        .into_iter()
        .map(|(k, t)| {
            let t = if k.ends_with("running_var") {
                t.rand_like() + 0.5
            } else if k.ends_with("running_mean") || (k.contains("norm") && k.ends_with("bias")) {
                t.randn_like() * 0.1
            } else {
                t
            };
            (k, t)
        })
        .collect();
    net.load_state_dict(&sd).unwrap();
    net.set_trainable(&Unfreeze::parse("denseblock4")).unwrap();
    let x = Tensor::randn([batch, 3, 224, 224], (Kind::Float, Device::Cpu));
    let mut outs = Vec::new();
    for fast in [false, true] {
        net.set_fast_frozen(fast);
        let y = net.forward_frozen(&x);
        let mut times = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            let _ = net.forward_frozen(&x);
            times.push(t.elapsed().as_secs_f64());
        }
        let best = times.iter().cloned().fold(f64::INFINITY, f64::min);
        println!(
            "{}: {} s per batch of {batch} (best {best:.3})",
            if fast { "fast " } else { "exact" },
            times
                .iter()
                .map(|t| format!("{t:.3}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        outs.push((y, best));
    }
    let d = (&outs[0].0 - &outs[1].0).abs().max().double_value(&[]);
    println!(
        "max |exact - fast| = {d:.2e} over {:?}; speed-up {:.2}x",
        outs[0].0.size(),
        outs[0].1 / outs[1].1
    );
}
