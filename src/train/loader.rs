//! The data pipeline that feeds the model: each batch's images are decoded, resized and
//! augmented in parallel (rayon, all cores unless told otherwise) while a feeder thread keeps up
//! to `prefetch` finished batches queued ahead of the model (a bounded channel, so memory stays
//! bounded), each one already a tensor and, for a CUDA model, in page-locked (pinned) memory so
//! the copy to the GPU is asynchronous.
//!
//! Determinism: every image's randomness comes from (seed, epoch, image id) (`data::item_rng`)
//! and batches are assembled in `order`, so the bytes of every batch are the same whatever the
//! thread count or prefetch depth (tested).

use super::data::{item_rng, load_decoded, Batch, Sample, Transform};
use crate::error::{Error, Result};
use rayon::prelude::*;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

/// How batches are produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LoaderConfig {
    /// Batches queued ahead of the model by a feeder thread; 0: each batch is decoded when the
    /// model asks for it, on the asking thread (nothing overlaps).
    pub prefetch: usize,
    /// Decoding threads; None: rayon's global pool (RAYON_NUM_THREADS, else every core).
    pub threads: Option<usize>,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            prefetch: 4,
            threads: None,
        }
    }
}

/// What to load: positions `order` of `samples`, in batches of `batch_size`.
#[derive(Clone)]
pub struct Job {
    pub samples: Arc<Vec<Sample>>,
    pub order: Vec<usize>,
    pub batch_size: usize,
    pub transform: Transform,
    pub seed: u64,
    pub epoch: u64,
}

/// A batch as a tensor [n, 3, size, size] f32 on the CPU (pinned when loading for CUDA).
pub struct TensorBatch {
    pub x: Tensor,
    pub y: Vec<i64>,
    /// Positions of the samples in the split.
    pub indices: Vec<usize>,
}

impl TensorBatch {
    /// The images on `device` (asynchronous from pinned memory), and the labels there too.
    pub fn to_device(&self, device: Device) -> (Tensor, Tensor) {
        let y = Tensor::from_slice(&self.y);
        if device == Device::Cpu {
            return (self.x.shallow_clone(), y);
        }
        let non_blocking = self.x.is_pinned(device);
        (
            self.x.to_device_(device, Kind::Float, non_blocking, false),
            y.to_device_(device, Kind::Int64, false, false),
        )
    }
}

/// Decode and transform one batch, the images in parallel on the current rayon pool.
fn decode_batch(job: &Job, chunk: &[usize]) -> Result<Batch> {
    let imgs: Vec<Vec<f32>> = chunk
        .par_iter()
        .map(|&i| {
            let s = &job.samples[i];
            let img = load_decoded(&s.path)?;
            Ok(img.transform(&job.transform, &mut item_rng(job.seed, job.epoch, &s.id)))
        })
        .collect::<Result<_>>()?;
    Ok(Batch {
        x: imgs.concat(),
        y: chunk.iter().map(|&i| job.samples[i].label).collect(),
        indices: chunk.to_vec(),
    })
}

/// `Batch` -> tensor, pinned for `pin` when it is a CUDA device.
fn to_tensor(b: Batch, size: u32, pin: Device) -> Result<TensorBatch> {
    let n = b.y.len() as i64;
    let s = size as i64;
    let x = Tensor::f_from_slice(&b.x)?.f_view([n, 3, s, s])?;
    let x = match pin {
        Device::Cuda(_) => x.f_pin_memory(pin)?,
        _ => x,
    };
    Ok(TensorBatch {
        x,
        y: b.y,
        indices: b.indices,
    })
}

/// A pool of `n` threads, or None for rayon's global one.
fn pool(threads: Option<usize>) -> Result<Option<Arc<rayon::ThreadPool>>> {
    threads
        .map(|n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n.max(1))
                .thread_name(|i| format!("prep-loader-{i}"))
                .build()
                .map(Arc::new)
                .map_err(|e| Error::Usage(format!("cannot start {n} loader threads: {e}")))
        })
        .transpose()
}

type Finish<T> = Arc<dyn Fn(Batch) -> Result<T> + Send + Sync>;

/// The batches of a `Job`, in order; the first error ends the stream.
pub struct Loader<T: Send + 'static> {
    inner: Inner<T>,
}

enum Inner<T: Send + 'static> {
    Inline {
        job: Job,
        next: usize,
        pool: Option<Arc<rayon::ThreadPool>>,
        finish: Finish<T>,
    },
    Ahead(Receiver<Result<T>>),
    Done,
}

impl<T: Send + 'static> Loader<T> {
    fn new(job: Job, cfg: LoaderConfig, finish: Finish<T>) -> Result<Self> {
        let pool = pool(cfg.threads)?;
        if cfg.prefetch == 0 {
            return Ok(Loader {
                inner: Inner::Inline {
                    job,
                    next: 0,
                    pool,
                    finish,
                },
            });
        }
        let (tx, rx) = sync_channel(cfg.prefetch);
        std::thread::Builder::new()
            .name("prep-feeder".into())
            .spawn(move || {
                for chunk in job.order.chunks(job.batch_size.max(1)) {
                    let msg = run_in(&pool, || decode_batch(&job, chunk)).and_then(|b| finish(b));
                    let failed = msg.is_err();
                    if tx.send(msg).is_err() || failed {
                        return; // the consumer stopped, or we reported an error
                    }
                }
            })
            .map_err(|e| Error::Usage(format!("cannot start the loader thread: {e}")))?;
        Ok(Loader {
            inner: Inner::Ahead(rx),
        })
    }
}

fn run_in<R: Send>(pool: &Option<Arc<rayon::ThreadPool>>, f: impl FnOnce() -> R + Send) -> R {
    match pool {
        Some(p) => p.install(f),
        None => f(),
    }
}

impl<T: Send + 'static> Iterator for Loader<T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        let item = match &mut self.inner {
            Inner::Done => return None,
            Inner::Ahead(rx) => rx.recv().ok(),
            Inner::Inline {
                job,
                next,
                pool,
                finish,
            } => {
                let bs = job.batch_size.max(1);
                if *next >= job.order.len() {
                    None
                } else {
                    let end = (*next + bs).min(job.order.len());
                    let chunk = &job.order[*next..end];
                    *next = end;
                    Some(run_in(pool, || decode_batch(job, chunk)).and_then(|b| finish(b)))
                }
            }
        };
        match &item {
            None | Some(Err(_)) => self.inner = Inner::Done,
            Some(Ok(_)) => {}
        }
        item
    }
}

/// Batches as flat `Vec<f32>` (see `data::batches`).
pub fn vec_batches(job: Job, cfg: LoaderConfig) -> Result<Loader<Batch>> {
    Loader::new(job, cfg, Arc::new(Ok))
}

/// Batches as tensors, pinned for `device` when it is CUDA.
pub fn tensor_batches(job: Job, cfg: LoaderConfig, device: Device) -> Result<Loader<TensorBatch>> {
    let size = job.transform.size;
    Loader::new(job, cfg, Arc::new(move |b| to_tensor(b, size, device)))
}

/// Decode + transform throughput: images per second over `job`, for the benchmarks.
pub fn throughput(job: Job, cfg: LoaderConfig) -> Result<f64> {
    let n = job.order.len();
    let t = std::time::Instant::now();
    for b in vec_batches(job, cfg)? {
        b?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64().max(1e-9))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma};
    use rand::{Rng, SeedableRng};

    fn samples(dir: &std::path::Path, n: usize) -> Arc<Vec<Sample>> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let v = (0..n)
            .map(|i| {
                let path = dir.join(format!("{i:02}.png"));
                GrayImage::from_fn(40 + i as u32, 50, |_, _| Luma([rng.gen::<u8>()]))
                    .save(&path)
                    .unwrap();
                Sample {
                    id: format!("data/train/c/{i:02}.png"),
                    path,
                    label: (i % 2) as i64,
                }
            })
            .collect();
        Arc::new(v)
    }

    fn collect(
        job: &Job,
        prefetch: usize,
        threads: usize,
    ) -> Vec<(Vec<f32>, Vec<i64>, Vec<usize>)> {
        let cfg = LoaderConfig {
            prefetch,
            threads: Some(threads),
        };
        tensor_batches(job.clone(), cfg, Device::Cpu)
            .unwrap()
            .map(|b| {
                let b = b.unwrap();
                assert_eq!(b.x.size(), vec![b.y.len() as i64, 3, 24, 24]);
                (
                    Vec::<f32>::try_from(b.x.flatten(0, -1)).unwrap(),
                    b.y,
                    b.indices,
                )
            })
            .collect()
    }

    /// The same bytes in every batch with 1 or 2 decoding threads and prefetch 0 or 2; another
    /// epoch gives other crops (so the comparison is not vacuous).
    #[test]
    fn batches_do_not_depend_on_threads_or_prefetch() {
        let dir = tempfile::tempdir().unwrap();
        let s = samples(dir.path(), 11);
        let job = Job {
            samples: s,
            order: vec![3, 1, 4, 10, 5, 9, 2, 6, 0, 8, 7],
            batch_size: 4,
            transform: Transform {
                size: 24,
                augment: true,
                occlude: None,
            },
            seed: 5,
            epoch: 1,
        };
        let base = collect(&job, 0, 1);
        assert_eq!(base.len(), 3);
        assert_eq!(base[2].2, vec![0, 8, 7]);
        for (prefetch, threads) in [(0, 2), (2, 1), (2, 2), (1, 2)] {
            assert!(
                collect(&job, prefetch, threads) == base,
                "prefetch {prefetch}, {threads} thread(s) changed the batches"
            );
        }
        let other = collect(
            &Job {
                epoch: 2,
                ..job.clone()
            },
            2,
            2,
        );
        assert!(other != base);
        assert_eq!(
            other[0].1, base[0].1,
            "labels follow the order, not the epoch"
        );
    }

    /// A broken image ends the stream with its name, in both modes.
    #[test]
    fn a_bad_image_is_named_and_ends_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let s = samples(dir.path(), 6);
        std::fs::write(&s[4].path, b"not a png").unwrap();
        for prefetch in [0, 2] {
            let job = Job {
                samples: s.clone(),
                order: (0..6).collect(),
                batch_size: 2,
                transform: Transform {
                    size: 24,
                    augment: false,
                    occlude: None,
                },
                seed: 0,
                epoch: 0,
            };
            let cfg = LoaderConfig {
                prefetch,
                threads: Some(2),
            };
            let items: Vec<Result<TensorBatch>> =
                tensor_batches(job, cfg, Device::Cpu).unwrap().collect();
            assert_eq!(items.len(), 3, "prefetch {prefetch}");
            assert!(items[0].is_ok() && items[1].is_ok());
            let e = items[2].as_ref().err().unwrap().to_string();
            assert!(e.contains("04.png"), "{e}");
        }
    }
}
