//! `prep train`: fine-tune a DenseNet on a split bag, the paper's way minus its faults (weight
//! decay applied, frozen BatchNorm really frozen, the checkpoint chosen on val and the test split
//! evaluated once, separately).
//!
//! Output folder (written beside RUN and renamed into place at the end):
//! ```text
//! RUN/metrics.csv  metrics.json  timing.csv  loss.png  accuracy.png  best.safetensors  model.json
//! RUN/test.json (when the bag has a test split)  summary.json  summary.csv  summary.md
//! ```
//! With `--repeats K > 1`, each run goes in RUN/repeat-N/ and the summary sits in RUN/.

use super::data::{self, Sample, SplitData, Transform, IMAGENET_MEAN, IMAGENET_STD};
use super::densenet::{self as dn, DenseNet, DenseNetConfig, Unfreeze};
use super::device::{self, DeviceChoice};
use super::loader::{self, Job, LoaderConfig};
use super::metrics::{self, Metrics};
use super::optim::{Adam, AdamConfig};
use super::precision::{self, GradScaler, Precision};
use crate::error::{Error, Result};
use crate::manifest::{hash_file, staging_dir};
use crate::progress;
use rand::seq::SliceRandom;
use serde::Serialize;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub data: PathBuf,
    pub out: PathBuf,
    pub weights: Option<PathBuf>,
    /// Architecture when no weights are given (`densenet121` or `densenet:G,B-..,INIT,BN`).
    pub arch: Option<String>,
    pub unfreeze: Unfreeze,
    pub epochs: usize,
    pub patience: usize,
    pub adam: AdamConfig,
    pub batch_size: usize,
    pub seed: u64,
    pub image_size: u32,
    pub device: DeviceChoice,
    pub cache_features: bool,
    /// Frozen stages through `DenseNet::set_fast_frozen` (folded BatchNorm, channels-last).
    pub fast_frozen: bool,
    /// RandomResizedCrop + flip on the training images (off: the validation transform).
    pub augment: bool,
    pub repeats: usize,
    /// Class whose recall is the sensitivity (default: the first class).
    pub positive: Option<String>,
    /// libtorch intra-op threads (None: libtorch's default).
    pub threads: Option<i32>,
    /// Forward-pass arithmetic (autocast); fp32 is the bit-exact default path.
    pub precision: Precision,
    /// Feed the network channels-last (NHWC-strided) batches.
    pub channels_last: bool,
    /// Decoding threads and how many batches are prepared ahead of the model.
    pub loader: LoaderConfig,
    pub force: bool,
    pub argv: Vec<String>,
    /// Shortcut control: black out the lung field or the border of every film (`--occlude`).
    pub occlude: Option<crate::evaluate::occlude::Occlusion>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub seed: u64,
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub max_val_accuracy: f64,
    pub min_val_loss: f64,
    /// Validation metrics of the chosen (best) checkpoint.
    pub best_val: Metrics,
    /// The chosen checkpoint on the test split, when the bag has one.
    pub test: Option<Metrics>,
    /// Test AUC of the positive class and its DeLong 95 % CI (test-metrics.json).
    pub test_auc: Option<f64>,
    pub test_auc_ci: Option<[f64; 2]>,
}

#[derive(Debug)]
pub struct TrainOutcome {
    pub out: PathBuf,
    pub device: String,
    pub runs: Vec<RunSummary>,
    /// Things the user must know (random init, new head, CPU fallback).
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
struct EpochRecord {
    epoch: usize,
    train: Metrics,
    val: Metrics,
    /// This epoch's weights are (so far) the chosen ones.
    best: bool,
}

#[derive(Debug, Clone, Serialize)]
struct EpochTiming {
    epoch: usize,
    train_seconds: f64,
    val_seconds: f64,
    train_images_per_second: f64,
    /// Time the model spent waiting for decoded batches (the first one included).
    data_wait_seconds: f64,
}

/// Train `cfg.repeats` models and write everything under `cfg.out`.
pub fn run(cfg: &TrainConfig) -> Result<TrainOutcome> {
    if let Some(t) = cfg.threads {
        tch::set_num_threads(t);
    }
    let data = data::open_split_bag(&cfg.data)?;
    let (device, fallback) = device::resolve(cfg.device)?;
    cfg.precision.check_device(device)?;
    if device.is_cuda() {
        // Fixed input sizes: let cuDNN time its algorithms once and keep the fastest (GPU
        // convolutions are not bit-reproducible anyway; the CPU path is untouched).
        tch::Cuda::cudnn_set_benchmark(true);
    }
    let mut notes: Vec<String> = fallback.into_iter().collect();
    let positive = match &cfg.positive {
        Some(p) => data.classes.iter().position(|c| c == p).ok_or_else(|| {
            Error::Usage(format!(
                "--positive {p}: no such class (classes: {})",
                data.classes.join(", ")
            ))
        })?,
        None => 0,
    };
    if cfg.weights.is_none() {
        notes.push(format!(
            "no --weights: the network starts from random initialisation ({}), not from CheXNet",
            cfg.arch.as_deref().unwrap_or("densenet121")
        ));
    }
    let staging = staging_dir(&cfg.out, cfg.force)?;
    let result = (|| -> Result<Vec<RunSummary>> {
        let mut runs = Vec::new();
        for r in 0..cfg.repeats {
            let dir = if cfg.repeats == 1 {
                staging.clone()
            } else {
                staging.join(format!("repeat-{}", r + 1))
            };
            std::fs::create_dir_all(&dir).map_err(|e| Error::write(&dir, e))?;
            let seed = cfg.seed + r as u64;
            if cfg.repeats > 1 {
                eprintln!("repeat {}/{} (seed {seed})", r + 1, cfg.repeats);
            }
            let (summary, run_notes) = train_one(cfg, &data, device, positive, seed, &dir)?;
            for n in run_notes {
                if !notes.contains(&n) {
                    notes.push(n);
                }
            }
            runs.push(summary);
        }
        write_summary(&staging, &runs)?;
        Ok(runs)
    })();
    let runs = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    if cfg.out.exists() {
        std::fs::remove_dir_all(&cfg.out).map_err(|e| Error::write(&cfg.out, e))?;
    }
    std::fs::rename(&staging, &cfg.out).map_err(|e| Error::write(&cfg.out, e))?;
    Ok(TrainOutcome {
        out: cfg.out.clone(),
        device: format!("{device:?}"),
        runs,
        notes,
    })
}

/// Build the network for `classes` outputs: the weights' architecture, or `arch`.
pub fn build_model(
    weights: Option<&Path>,
    arch: Option<&str>,
    classes: i64,
    device: Device,
    notes: &mut Vec<String>,
) -> Result<DenseNet> {
    match weights {
        Some(w) => {
            let mut c = DenseNetConfig::infer(&DenseNet::read_shapes(w)?, w)?;
            c.num_classes = classes;
            if let Some(a) = arch {
                let want = DenseNetConfig::parse(a, classes)?;
                if want != c {
                    return Err(Error::Usage(format!(
                        "--arch {a} but {} holds a {} network",
                        w.display(),
                        c.spec()
                    )));
                }
            }
            let mut net = DenseNet::new(c, device);
            let r = net.load_weights(w, true)?;
            if let Some(h) = r.new_head {
                notes.push(format!("{}: {h}", w.display()));
            }
            if !r.unused.is_empty() {
                notes.push(format!(
                    "{}: {} tensor(s) not used by the model, e.g. {}",
                    w.display(),
                    r.unused.len(),
                    r.unused[0]
                ));
            }
            Ok(net)
        }
        None => Ok(DenseNet::new(
            DenseNetConfig::parse(arch.unwrap_or("densenet121"), classes)?,
            device,
        )),
    }
}

fn train_one(
    cfg: &TrainConfig,
    data: &SplitData,
    device: Device,
    positive: usize,
    seed: u64,
    dir: &Path,
) -> Result<(RunSummary, Vec<String>)> {
    let mut notes = Vec::new();
    // Seeds libtorch's generator: the fresh classifier (and any random init) depend on it only.
    tch::manual_seed(seed as i64);
    let ncls = data.classes.len();
    let mut net = build_model(
        cfg.weights.as_deref(),
        cfg.arch.as_deref(),
        ncls as i64,
        device,
        &mut notes,
    )?;
    net.set_trainable(&cfg.unfreeze)?;
    net.set_fast_frozen(cfg.fast_frozen);
    let mut opt = Adam::new(&net, cfg.adam)?;
    let size = cfg.image_size;
    let train_tf = Transform {
        size,
        augment: cfg.augment,
        occlude: cfg.occlude,
    };
    let val_tf = Transform {
        size,
        augment: false,
        occlude: cfg.occlude,
    };
    let train_samples = Arc::new(data.train.clone());
    let val_samples = Arc::new(data.val.clone());

    let exec = Exec {
        device,
        precision: cfg.precision,
        channels_last: cfg.channels_last,
        loader: cfg.loader,
    };
    let mut scaler = (cfg.precision == Precision::Fp16).then(|| GradScaler::new(device));
    let cache = if cfg.cache_features {
        let t = Instant::now();
        let ft = frozen_features(
            &net,
            &train_samples,
            val_tf,
            cfg.batch_size,
            exec,
            "caching train",
            &mut notes,
        )?;
        let fv = frozen_features(
            &net,
            &val_samples,
            val_tf,
            cfg.batch_size,
            exec,
            "caching val",
            &mut notes,
        )?;
        notes.push(format!(
            "cached the frozen stages' output ({} stage(s)) for {} images in {:.1} s ({:.2} GB, {:?}, on {:?})",
            net.frozen_prefix_len(),
            data.train.len() + data.val.len(),
            t.elapsed().as_secs_f64(),
            (ft.numel() * ft.kind().elt_size_in_bytes() + fv.numel() * fv.kind().elt_size_in_bytes()) as f64 / 1e9,
            ft.kind(),
            ft.device()
        ));
        Some((ft, fv))
    } else {
        None
    };

    let mut records: Vec<EpochRecord> = Vec::new();
    let mut timings: Vec<EpochTiming> = Vec::new();
    let mut best: Option<(usize, f64, f64, Vec<(String, Tensor)>)> = None; // epoch, acc, loss, state
    for epoch in 1..=cfg.epochs {
        let t0 = Instant::now();
        let mut order: Vec<usize> = (0..train_samples.len()).collect();
        order.shuffle(&mut data::item_rng(seed, epoch as u64, "\0shuffle"));
        let pb = progress::bar(
            order.len().div_ceil(cfg.batch_size) as u64,
            &format!("epoch {epoch}/{}", cfg.epochs),
        );
        let mut acc = Accumulator::default();
        let mut data_wait = 0.0;
        let mut step = |x: &Tensor, y: &Tensor, yv: &[i64], from_cache: bool| -> Result<()> {
            let logits = exec.logits(&net, x, true, from_cache);
            let loss = logits.cross_entropy_for_logits(y);
            match scaler.as_mut() {
                Some(s) => {
                    opt.backward_step_scaled(&loss, s)?;
                }
                None => opt.backward_step(&loss)?,
            }
            acc.add(&logits.detach(), &loss.detach(), yv)?;
            pb.inc(1);
            Ok(())
        };
        match &cache {
            Some((ft, _)) => {
                for chunk in order.chunks(cfg.batch_size) {
                    let idx: Vec<i64> = chunk.iter().map(|&i| i as i64).collect();
                    let x = ft
                        .index_select(0, &Tensor::from_slice(&idx).to_device(ft.device()))
                        .to_device(device);
                    let y: Vec<i64> = chunk.iter().map(|&i| train_samples[i].label).collect();
                    step(&x, &Tensor::from_slice(&y).to_device(device), &y, true)?;
                }
            }
            None => {
                let job = Job {
                    samples: train_samples.clone(),
                    order,
                    batch_size: cfg.batch_size,
                    transform: train_tf,
                    seed,
                    epoch: epoch as u64,
                };
                let mut rx = loader::tensor_batches(job, cfg.loader, device)?;
                loop {
                    // Honest data wait: the time this thread is blocked until the next batch
                    // is ready (with --prefetch 0, the whole decode).
                    let tw = Instant::now();
                    let Some(b) = rx.next() else { break };
                    data_wait += tw.elapsed().as_secs_f64();
                    let b = b?;
                    let (x, y) = b.to_device(device);
                    step(&x, &y, &b.y, false)?;
                }
            }
        }
        pb.finish_and_clear();
        // CUDA runs asynchronously: the epoch ends when the GPU is done.
        exec.sync();
        let train_seconds = t0.elapsed().as_secs_f64();
        let train_m = acc.metrics(ncls, positive)?;
        let t1 = Instant::now();
        let val_m = match &cache {
            Some((_, fv)) => evaluate_cached(
                &net,
                fv,
                &val_samples,
                cfg.batch_size,
                exec,
                (ncls, positive),
            )?,
            None => evaluate_with(
                &net,
                &val_samples,
                val_tf,
                cfg.batch_size,
                exec,
                ncls,
                positive,
            )?,
        };
        let val_seconds = t1.elapsed().as_secs_f64();
        let improved = match &best {
            None => true,
            Some((_, a, l, _)) => val_m.accuracy > *a || (val_m.accuracy == *a && val_m.loss < *l),
        };
        if improved {
            best = Some((epoch, val_m.accuracy, val_m.loss, net.state_dict()));
        }
        eprintln!(
            "epoch {epoch:>3}: train loss {:.4} acc {:.4} | val loss {:.4} acc {:.4} auc {}{}",
            train_m.loss,
            train_m.accuracy,
            val_m.loss,
            val_m.accuracy,
            val_m
                .auc
                .map(|a| format!("{a:.4}"))
                .unwrap_or_else(|| "-".into()),
            if improved { "  *" } else { "" }
        );
        records.push(EpochRecord {
            epoch,
            train: train_m,
            val: val_m,
            best: improved,
        });
        timings.push(EpochTiming {
            epoch,
            train_seconds,
            val_seconds,
            train_images_per_second: train_samples.len() as f64 / train_seconds.max(1e-9),
            data_wait_seconds: data_wait,
        });
        let best_epoch = best.as_ref().map(|b| b.0).unwrap_or(epoch);
        if epoch - best_epoch >= cfg.patience {
            eprintln!(
                "early stop: no better val accuracy for {} epochs",
                cfg.patience
            );
            break;
        }
    }
    if let Some(s) = scaler.as_ref().filter(|s| s.skipped > 0) {
        notes.push(format!(
            "fp16: {} step(s) skipped for inf/NaN gradients (loss scale now {})",
            s.skipped,
            s.scale_value()
        ));
    }
    let (best_epoch, _, _, state) =
        best.ok_or_else(|| Error::Usage("--epochs must be at least 1".into()))?;
    net.load_state_dict(&state)?;
    net.save_safetensors(&dir.join("best.safetensors"))?;
    let test = if data.test.is_empty() {
        None
    } else {
        let m = evaluate_with(
            &net,
            &Arc::new(data.test.clone()),
            val_tf,
            cfg.batch_size,
            exec,
            ncls,
            positive,
        )?;
        write_json(
            &dir.join("test.json"),
            &json!({
                "note": "the checkpoint chosen on val (best.safetensors), evaluated once on the test split",
                "best_epoch": best_epoch,
                "classes": data.classes,
                "positive_class": data.classes[positive],
                "test": m,
            }),
        )?;
        Some(m)
    };
    // The evaluation `prep evaluate` writes, for the test split: test-metrics.json etc.
    let test_metrics = if data.test.is_empty() {
        None
    } else {
        let sc = crate::evaluate::run::Scorer {
            net: &net,
            classes: &data.classes,
            positive,
            tf: val_tf,
        };
        let name = cfg.out.display().to_string();
        Some(crate::evaluate::run::train_test_metrics(
            dir,
            &name,
            &sc,
            &cfg.data,
            &data.val,
            &data.test,
            cfg.batch_size,
            seed,
        )?)
    };
    let best_val = records[best_epoch - 1].val.clone();
    let summary = RunSummary {
        seed,
        epochs_run: records.len(),
        best_epoch,
        max_val_accuracy: records
            .iter()
            .map(|r| r.val.accuracy)
            .fold(f64::NEG_INFINITY, f64::max),
        min_val_loss: records
            .iter()
            .map(|r| r.val.loss)
            .fold(f64::INFINITY, f64::min),
        best_val,
        test,
        test_auc: test_metrics.as_ref().and_then(|m| m["auc"].as_f64()),
        test_auc_ci: test_metrics
            .as_ref()
            .and_then(|m| serde_json::from_value(m["auc_ci"].clone()).ok()),
    };
    write_metrics(dir, data, positive, &records, &summary)?;
    write_timing(dir, &timings)?;
    plots(dir, &records)?;
    write_model_card(dir, cfg, data, &net, positive, seed, best_epoch)?;
    Ok((summary, notes))
}

/// How batches go through the network: device, autocast precision, memory format, loader.
#[derive(Debug, Clone, Copy)]
pub struct Exec {
    pub device: Device,
    pub precision: Precision,
    pub channels_last: bool,
    pub loader: LoaderConfig,
}

impl Exec {
    /// fp32, NCHW, the default loader: the plain path.
    pub fn plain(device: Device) -> Exec {
        Exec {
            device,
            precision: Precision::Fp32,
            channels_last: false,
            loader: LoaderConfig::default(),
        }
    }

    fn input(&self, x: &Tensor) -> Tensor {
        if self.channels_last {
            dn::channels_last(x)
        } else {
            x.shallow_clone()
        }
    }

    /// Logits as fp32 whatever the precision (loss and metrics are computed in fp32);
    /// `from_cache`: `x` is the frozen prefix's output.
    pub fn logits(&self, net: &DenseNet, x: &Tensor, train: bool, from_cache: bool) -> Tensor {
        precision::autocast(self.precision, self.device, || {
            // The frozen prefix hands back NCHW; the trainable rest gets the format again.
            let f = if from_cache {
                x.shallow_clone()
            } else {
                net.forward_frozen(&self.input(x))
            };
            net.forward_rest(&self.input(&f), train)
                .to_kind(Kind::Float)
        })
    }

    fn frozen(&self, net: &DenseNet, x: &Tensor) -> Tensor {
        precision::autocast(self.precision, self.device, || {
            net.forward_frozen(&self.input(x))
        })
    }

    fn sync(&self) {
        if let Device::Cuda(i) = self.device {
            tch::Cuda::synchronize(i as i64);
        }
    }

    fn job(&self, samples: &Arc<Vec<Sample>>, tf: Transform, batch_size: usize) -> Job {
        Job {
            samples: samples.clone(),
            order: (0..samples.len()).collect(),
            batch_size,
            transform: tf,
            seed: 0,
            epoch: 0,
        }
    }
}

/// Per-batch probabilities and losses, kept where they were computed (on a GPU: no
/// synchronisation per step) and read back once by `metrics`.
#[derive(Default)]
struct Accumulator {
    probs: Vec<Tensor>,
    losses: Vec<Tensor>,
    labels: Vec<i64>,
}

impl Accumulator {
    /// `loss` is the batch mean; weighted back to a sum so the epoch loss is per image.
    fn add(&mut self, logits: &Tensor, loss: &Tensor, y: &[i64]) -> Result<()> {
        self.probs.push(logits.f_softmax(-1, Kind::Float)?);
        self.losses.push(loss.shallow_clone());
        self.labels.extend_from_slice(y);
        Ok(())
    }

    fn metrics(&self, classes: usize, positive: usize) -> Result<Metrics> {
        let mut probs = Vec::with_capacity(self.labels.len());
        let mut loss_sum = 0.0;
        if !self.probs.is_empty() {
            let p = Tensor::f_cat(&self.probs, 0)?.f_to_device(Device::Cpu)?;
            let c = p.size()[1] as usize;
            let flat = Vec::<f32>::try_from(p.flatten(0, -1))?;
            for row in flat.chunks(c) {
                probs.push(row.iter().map(|v| *v as f64).collect());
            }
            let l = Tensor::f_stack(&self.losses, 0)?
                .f_to_kind(Kind::Double)?
                .f_to_device(Device::Cpu)?;
            let losses = Vec::<f64>::try_from(l)?;
            // Summed in batch order, as the batches came: the same f64 sum as ever.
            let mut at = 0;
            for (l, p) in losses.iter().zip(&self.probs) {
                let n = p.size()[0] as usize;
                loss_sum += l * n as f64;
                at += n;
            }
            debug_assert_eq!(at, self.labels.len());
        }
        Ok(metrics::compute(
            &probs,
            &self.labels,
            loss_sum,
            classes,
            positive,
        ))
    }
}

/// Eval mode, no_grad, in sample order (fp32, the default loader).
pub fn evaluate(
    net: &DenseNet,
    samples: &Arc<Vec<Sample>>,
    tf: Transform,
    batch_size: usize,
    device: Device,
    classes: usize,
    positive: usize,
) -> Result<Metrics> {
    evaluate_with(
        net,
        samples,
        tf,
        batch_size,
        Exec::plain(device),
        classes,
        positive,
    )
}

/// `evaluate` at `exec`'s precision and memory format, through its loader.
pub fn evaluate_with(
    net: &DenseNet,
    samples: &Arc<Vec<Sample>>,
    tf: Transform,
    batch_size: usize,
    exec: Exec,
    classes: usize,
    positive: usize,
) -> Result<Metrics> {
    let batches =
        loader::tensor_batches(exec.job(samples, tf, batch_size), exec.loader, exec.device)?
            .map(|b| b.map(|b| (b.to_device(exec.device).0, b.y)));
    eval_batches(net, exec, batches, false)?.metrics(classes, positive)
}

/// `evaluate` on cached frozen-prefix features (sample order).
fn evaluate_cached(
    net: &DenseNet,
    feats: &Tensor,
    samples: &[Sample],
    batch_size: usize,
    exec: Exec,
    (classes, positive): (usize, usize),
) -> Result<Metrics> {
    let batches = samples.chunks(batch_size).enumerate().map(|(i, chunk)| {
        let x = feats.narrow(0, (i * batch_size) as i64, chunk.len() as i64);
        Ok((
            x.to_device(exec.device),
            chunk.iter().map(|s| s.label).collect(),
        ))
    });
    eval_batches(net, exec, batches, true)?.metrics(classes, positive)
}

/// Eval mode, no_grad, over (input, labels) batches.
fn eval_batches(
    net: &DenseNet,
    exec: Exec,
    batches: impl Iterator<Item = Result<(Tensor, Vec<i64>)>>,
    from_cache: bool,
) -> Result<Accumulator> {
    let mut acc = Accumulator::default();
    for b in batches {
        let (x, y) = b?;
        tch::no_grad(|| -> Result<()> {
            let logits = exec.logits(net, &x, false, from_cache);
            let loss =
                logits.cross_entropy_for_logits(&Tensor::from_slice(&y).to_device(exec.device));
            acc.add(&logits, &loss, &y)
        })?;
    }
    Ok(acc)
}

/// The frozen prefix's output for every sample (validation transform), in sample order, in one
/// tensor on the model's device when it fits there (a GPU's memory can be too small for a big
/// split: then in pinned CPU memory, and a note says so).
fn frozen_features(
    net: &DenseNet,
    samples: &Arc<Vec<Sample>>,
    tf: Transform,
    batch_size: usize,
    exec: Exec,
    msg: &str,
    notes: &mut Vec<String>,
) -> Result<Tensor> {
    let pb = progress::bar(samples.len().div_ceil(batch_size) as u64, msg);
    let mut cache: Option<Tensor> = None;
    let mut start = 0i64;
    for b in loader::tensor_batches(exec.job(samples, tf, batch_size), exec.loader, exec.device)? {
        let b = b?;
        let f = exec.frozen(net, &b.to_device(exec.device).0);
        let n = f.size()[0];
        if cache.is_none() {
            cache = Some(feature_cache(&f, samples.len(), exec.device, notes)?);
        }
        let c = cache.as_ref().expect("just set");
        c.narrow(0, start, n).f_copy_(&f)?;
        start += n;
        pb.inc(1);
    }
    pb.finish_and_clear();
    cache.ok_or_else(|| Error::Usage("internal: no images to cache".into()))
}

/// Room for `n` feature maps shaped like `first`'s rows, on `device` or, when that allocation
/// fails, in pinned host memory.
fn feature_cache(
    first: &Tensor,
    n: usize,
    device: Device,
    notes: &mut Vec<String>,
) -> Result<Tensor> {
    let mut shape = first.size();
    shape[0] = n as i64;
    let kind = first.kind();
    match Tensor::f_empty(shape.as_slice(), (kind, device)) {
        Ok(t) => Ok(t),
        Err(e) if device != Device::Cpu => {
            let gb = shape.iter().product::<i64>() as f64 * kind.elt_size_in_bytes() as f64 / 1e9;
            notes.push(format!(
                "the feature cache ({gb:.2} GB) does not fit on {device:?} ({e}): kept in pinned CPU memory"
            ));
            Ok(Tensor::f_empty(shape.as_slice(), (kind, Device::Cpu))?.f_pin_memory(device)?)
        }
        Err(e) => Err(e.into()),
    }
}

fn opt_num(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.6}")).unwrap_or_default()
}

fn confusion_str(c: &[Vec<u64>]) -> String {
    c.iter()
        .map(|r| {
            r.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn write_metrics(
    dir: &Path,
    data: &SplitData,
    positive: usize,
    records: &[EpochRecord],
    s: &RunSummary,
) -> Result<()> {
    let path = dir.join("metrics.csv");
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["epoch".to_string()];
    for split in ["train", "val"] {
        for m in [
            "loss",
            "accuracy",
            "auc",
            "sensitivity",
            "specificity",
            "confusion",
        ] {
            header.push(format!("{split}_{m}"));
        }
    }
    header.push("best".into());
    let csv_err = |e: csv::Error| Error::write(&path, std::io::Error::other(e.to_string()));
    w.write_record(&header).map_err(csv_err)?;
    for r in records {
        let mut row = vec![r.epoch.to_string()];
        for m in [&r.train, &r.val] {
            row.push(format!("{:.6}", m.loss));
            row.push(format!("{:.6}", m.accuracy));
            row.push(opt_num(m.auc));
            row.push(opt_num(m.sensitivity));
            row.push(opt_num(m.specificity));
            row.push(confusion_str(&m.confusion));
        }
        row.push(if r.best { "1" } else { "0" }.into());
        w.write_record(&row).map_err(csv_err)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| Error::write(&path, std::io::Error::other(e.to_string())))?;
    std::fs::write(&path, bytes).map_err(|e| Error::write(&path, e))?;
    write_json(
        &dir.join("metrics.json"),
        &json!({
            "classes": data.classes,
            "positive_class": data.classes[positive],
            "confusion": "confusion[true class][predicted class], classes in the order above",
            "best_epoch": s.best_epoch,
            "max_val_accuracy": s.max_val_accuracy,
            "min_val_loss": s.min_val_loss,
            "epochs": records,
        }),
    )
}

fn write_timing(dir: &Path, timings: &[EpochTiming]) -> Result<()> {
    let path = dir.join("timing.csv");
    let mut s =
        String::from("epoch,train_seconds,val_seconds,train_images_per_second,data_wait_seconds\n");
    for t in timings {
        s.push_str(&format!(
            "{},{:.3},{:.3},{:.2},{:.3}\n",
            t.epoch, t.train_seconds, t.val_seconds, t.train_images_per_second, t.data_wait_seconds
        ));
    }
    std::fs::write(&path, s).map_err(|e| Error::write(&path, e))
}

fn plots(dir: &Path, records: &[EpochRecord]) -> Result<()> {
    let col = |f: &dyn Fn(&EpochRecord) -> f64| records.iter().map(f).collect::<Vec<f64>>();
    metrics::plot(
        &dir.join("loss.png"),
        "Cross-entropy loss",
        "loss",
        &[
            ("train", col(&|r| r.train.loss)),
            ("val", col(&|r| r.val.loss)),
        ],
        None,
    )?;
    metrics::plot(
        &dir.join("accuracy.png"),
        "Accuracy and val AUC",
        "",
        &[
            ("train accuracy", col(&|r| r.train.accuracy)),
            ("val accuracy", col(&|r| r.val.accuracy)),
            ("val AUC", col(&|r| r.val.auc.unwrap_or(f64::NAN))),
        ],
        Some((0.0, 1.0)),
    )
}

fn write_model_card(
    dir: &Path,
    cfg: &TrainConfig,
    data: &SplitData,
    net: &DenseNet,
    positive: usize,
    seed: u64,
    best_epoch: usize,
) -> Result<()> {
    let initial = match &cfg.weights {
        Some(w) => {
            let (sha, bytes) = hash_file(w)?;
            json!({"path": w.display().to_string(), "sha256": sha, "bytes": bytes})
        }
        None => serde_json::Value::Null,
    };
    let commit = option_env!("PREP_GIT_COMMIT").filter(|c| !c.is_empty());
    write_json(
        &dir.join("model.json"),
        &json!({
            "format": "prep-model/1",
            "weights": "best.safetensors",
            "arch": net.config.spec(),
            "densenet": net.config,
            "classes": data.classes,
            "positive_class": data.classes[positive],
            "image_size": cfg.image_size,
            "normalisation": {"mean": IMAGENET_MEAN, "std": IMAGENET_STD},
            "transforms": {
                "train": if cfg.augment {
                    format!("RandomResizedCrop({0}, scale=(0.08, 1.0), ratio=(3/4, 4/3)), RandomHorizontalFlip(0.5), ToTensor, Normalize", cfg.image_size)
                } else {
                    format!("Resize({0}), CenterCrop({0}), ToTensor, Normalize", cfg.image_size)
                },
                "val": format!("Resize({0}), CenterCrop({0}), ToTensor, Normalize", cfg.image_size),
                "grey": "replicated to 3 channels",
            },
            "frozen_stages": net.frozen_stages(),
            "trainable_stages": net.trainable_stages(),
            "frozen_batchnorm": "eval mode: running statistics never updated",
            "optimizer": {"name": "Adam", "lr": cfg.adam.lr, "betas": [cfg.adam.beta1, cfg.adam.beta2], "weight_decay": cfg.adam.weight_decay, "eps": cfg.adam.eps},
            "loss": "cross-entropy",
            "batch_size": cfg.batch_size,
            "epochs": cfg.epochs,
            "patience": cfg.patience,
            "cache_features": cfg.cache_features,
            "precision": match cfg.precision {
                Precision::Fp32 => "fp32",
                Precision::Bf16 => "bf16 autocast (fp32 master weights, optimiser and loss)",
                Precision::Fp16 => "fp16 autocast with dynamic loss scaling (fp32 master weights, optimiser and loss)",
            },
            "channels_last": cfg.channels_last,
            "frozen_math": if cfg.fast_frozen {
                "fast: BatchNorm folded into convolutions, pool-then-conv transitions, channels-last (equal up to float rounding)"
            } else {
                "exact: torchvision's operations in torchvision's order"
            },
            "seed": seed,
            "occlude": cfg.occlude.map(|o| o.name()),
            "occlusion": cfg.occlude.map(|o| o.describe()),
            "best_epoch": best_epoch,
            "selection": "highest val accuracy (ties: lower val loss)",
            "initial_weights": initial,
            "data": {
                "bag": cfg.data.display().to_string(),
                "manifest_sha256": data.manifest_sha256,
                "train_images": data.train.len(),
                "val_images": data.val.len(),
                "test_images": data.test.len(),
            },
            "prep_version": env!("CARGO_PKG_VERSION"),
            "git_commit": commit,
            "argv": cfg.argv,
        }),
    )
}

fn mean_std(v: &[f64]) -> (f64, Option<f64>) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let std = (v.len() > 1)
        .then(|| (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    (mean, std)
}

/// The paper's table: mean ± sample std over the repeats of max val accuracy and min val loss.
fn write_summary(dir: &Path, runs: &[RunSummary]) -> Result<()> {
    let acc: Vec<f64> = runs.iter().map(|r| r.max_val_accuracy).collect();
    let loss: Vec<f64> = runs.iter().map(|r| r.min_val_loss).collect();
    let (am, asd) = mean_std(&acc);
    let (lm, lsd) = mean_std(&loss);
    let test_acc: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.test.as_ref().map(|t| t.accuracy))
        .collect();
    let test = (!test_acc.is_empty()).then(|| mean_std(&test_acc));
    let test_aucs: Vec<f64> = runs.iter().filter_map(|r| r.test_auc).collect();
    let test_auc = (!test_aucs.is_empty()).then(|| mean_std(&test_aucs));
    write_json(
        &dir.join("summary.json"),
        &json!({
            "repeats": runs.len(),
            "std": "sample standard deviation (n - 1); null for one run",
            "max_val_accuracy": {"mean": am, "std": asd},
            "min_val_loss": {"mean": lm, "std": lsd},
            "test_accuracy": test.map(|(m, s)| json!({"mean": m, "std": s})),
            "test_auc": test_auc.map(|(m, s)| json!({"mean": m, "std": s, "ci_of_first_run": runs[0].test_auc_ci})),
            "runs": runs,
        }),
    )?;
    let pm = |m: f64, s: Option<f64>| match s {
        Some(s) => format!("{m:.4} ± {s:.4}"),
        None => format!("{m:.4}"),
    };
    let mut csv = String::from(
        "repeat,seed,epochs_run,best_epoch,max_val_accuracy,min_val_loss,test_accuracy,test_auc,test_auc_ci_lo,test_auc_ci_hi\n",
    );
    let mut md = String::from("| repeat | seed | best epoch | max val accuracy | min val loss | test accuracy | test AUC (DeLong 95 % CI) |\n|---|---|---|---|---|---|---|\n");
    for (i, r) in runs.iter().enumerate() {
        let t = r
            .test
            .as_ref()
            .map(|t| format!("{:.6}", t.accuracy))
            .unwrap_or_default();
        let ci = r
            .test_auc_ci
            .map(|c| [format!("{:.6}", c[0]), format!("{:.6}", c[1])]);
        csv.push_str(&format!(
            "{},{},{},{},{:.6},{:.6},{},{},{},{}\n",
            i + 1,
            r.seed,
            r.epochs_run,
            r.best_epoch,
            r.max_val_accuracy,
            r.min_val_loss,
            t,
            opt_num(r.test_auc),
            ci.as_ref().map(|c| c[0].as_str()).unwrap_or(""),
            ci.as_ref().map(|c| c[1].as_str()).unwrap_or(""),
        ));
        md.push_str(&format!(
            "| {} | {} | {} | {:.4} | {:.4} | {} | {} |\n",
            i + 1,
            r.seed,
            r.best_epoch,
            r.max_val_accuracy,
            r.min_val_loss,
            if t.is_empty() {
                "-".into()
            } else {
                t[..6.min(t.len())].to_string()
            },
            match (r.test_auc, r.test_auc_ci) {
                (Some(a), Some(c)) => format!("{a:.4} [{:.4}, {:.4}]", c[0], c[1]),
                (Some(a), None) => format!("{a:.4}"),
                _ => "-".into(),
            }
        ));
    }
    md.push_str(&format!(
        "| **mean ± std** | | | **{}** | **{}** | {} | {} |\n",
        pm(am, asd),
        pm(lm, lsd),
        test.map(|(m, s)| pm(m, s)).unwrap_or_else(|| "-".into()),
        test_auc
            .map(|(m, s)| pm(m, s))
            .unwrap_or_else(|| "-".into())
    ));
    std::fs::write(dir.join("summary.csv"), csv)
        .map_err(|e| Error::write(dir.join("summary.csv"), e))?;
    std::fs::write(dir.join("summary.md"), md).map_err(|e| Error::write(dir.join("summary.md"), e))
}

pub(crate) fn write_json(path: &Path, v: &impl Serialize) -> Result<()> {
    let mut bytes =
        serde_json::to_vec_pretty(v).map_err(|e| Error::write(path, std::io::Error::other(e)))?;
    bytes.push(b'\n');
    std::fs::write(path, bytes).map_err(|e| Error::write(path, e))
}
