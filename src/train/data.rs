//! Reading a split bag (torchvision ImageFolder layout under `data/`), torchvision's transforms,
//! and a loader that decodes and augments batches in parallel ahead of the model.
//!
//! Layout: `BAG/data/train/<class>/<image>`, `BAG/data/val/<class>/<image>`, optionally
//! `BAG/data/test/<class>/<image>`. Classes are the sorted folder names under `data/train`, as
//! torchvision's `ImageFolder` orders them, so class indices agree with PyTorch code.

use crate::error::{Error, Result};
use crate::manifest::{manifest_sha256, verify_bag};
use image::imageops::{self, FilterType};
use image::{GrayImage, ImageBuffer, Pixel, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// ImageNet normalisation, as torchvision's pretrained models (and CheXNet) expect.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// torchvision's IMG_EXTENSIONS (the image ones prep's stages write).
const IMAGE_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp", "pgm", "ppm",
];

#[derive(Debug, Clone)]
pub struct Sample {
    /// Path relative to the bag root (`data/train/covid/x.png`): the image's stable id.
    pub id: String,
    pub path: PathBuf,
    pub label: i64,
}

#[derive(Debug, Clone)]
pub struct SplitData {
    pub bag: PathBuf,
    pub manifest_sha256: String,
    pub classes: Vec<String>,
    pub train: Vec<Sample>,
    pub val: Vec<Sample>,
    /// Empty when the bag has no test split.
    pub test: Vec<Sample>,
}

/// Verify the bag, then read its train/val/(test) folders. Every image is probed (format and
/// dimensions) up front, so a corrupt file stops the run before training, named.
pub fn open_split_bag(bag: &Path) -> Result<SplitData> {
    verify_bag(bag)?.into_result(bag)?;
    let manifest = manifest_sha256(bag)?;
    let data = bag.join("data");
    let train_dir = data.join("train");
    if !train_dir.is_dir() {
        return Err(Error::bad_input(
            bag,
            "not a split bag: no data/train folder (make one with `prep split`, ImageFolder layout data/train/<class>/...)",
        ));
    }
    let classes = class_folders(&train_dir)?;
    if classes.len() < 2 {
        return Err(Error::bad_input(
            &train_dir,
            format!(
                "needs at least two class folders, found {}: {:?}",
                classes.len(),
                classes
            ),
        ));
    }
    let train = read_split(bag, "train", &classes, true)?;
    let val_dir = data.join("val");
    if !val_dir.is_dir() {
        return Err(Error::bad_input(bag, "not a split bag: no data/val folder"));
    }
    let val = read_split(bag, "val", &classes, true)?;
    let test = if data.join("test").is_dir() {
        read_split(bag, "test", &classes, false)?
    } else {
        Vec::new()
    };
    let all: Vec<&Sample> = train.iter().chain(&val).chain(&test).collect();
    all.par_iter().try_for_each(|s| probe(&s.path))?;
    Ok(SplitData {
        bag: bag.to_path_buf(),
        manifest_sha256: manifest,
        classes,
        train,
        val,
        test,
    })
}

fn class_folders(dir: &Path) -> Result<Vec<String>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::read(dir, e))? {
        let e = e.map_err(|e| Error::read(dir, e))?;
        let name = e.file_name().to_string_lossy().to_string();
        if e.path().is_dir() && !name.starts_with('.') {
            v.push(name);
        }
    }
    v.sort();
    Ok(v)
}

/// One split's samples, sorted by id. `every_class`: each training class must have a folder.
fn read_split(
    bag: &Path,
    split: &str,
    classes: &[String],
    every_class: bool,
) -> Result<Vec<Sample>> {
    let dir = bag.join("data").join(split);
    let present = class_folders(&dir)?;
    for c in &present {
        if !classes.contains(c) {
            return Err(Error::bad_input(
                dir.join(c),
                format!(
                    "class folder not in data/train (classes: {})",
                    classes.join(", ")
                ),
            ));
        }
    }
    let mut out = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let cdir = dir.join(class);
        if !cdir.is_dir() {
            if every_class {
                return Err(Error::bad_input(
                    &cdir,
                    format!("missing: every class needs a {split} folder"),
                ));
            }
            continue;
        }
        let mut n = 0;
        for e in walkdir::WalkDir::new(&cdir).sort_by_file_name() {
            let e = e.map_err(|e| Error::read(&cdir, e.into()))?;
            if !e.file_type().is_file() {
                continue;
            }
            let ext = e
                .path()
                .extension()
                .map(|x| x.to_string_lossy().to_ascii_lowercase())
                .unwrap_or_default();
            if !IMAGE_EXTENSIONS.contains(&ext.as_str()) {
                continue;
            }
            let id = e
                .path()
                .strip_prefix(bag)
                .expect("under bag")
                .to_string_lossy()
                .replace(std::path::MAIN_SEPARATOR, "/");
            out.push(Sample {
                id,
                path: e.path().to_path_buf(),
                label: label as i64,
            });
            n += 1;
        }
        if n == 0 {
            return Err(Error::bad_input(&cdir, "class folder holds no images"));
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

fn probe(path: &Path) -> Result<()> {
    image::ImageReader::open(path)
        .map_err(|e| Error::read(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::read(path, e))?
        .into_dimensions()
        .map_err(|e| Error::bad_input(path, format!("not a readable image: {e}")))?;
    Ok(())
}

/// Decode to 8-bit RGB; grey (8 or 16 bit) becomes three equal channels, like PIL's convert("RGB").
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    Ok(decode(path)?.to_rgb8())
}

fn decode(path: &Path) -> Result<image::DynamicImage> {
    image::ImageReader::open(path)
        .map_err(|e| Error::read(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::read(path, e))?
        .decode()
        .map_err(|e| Error::bad_input(path, format!("cannot decode image: {e}")))
}

/// A decoded image: grey stays one channel (see `Transform::apply`), anything else is RGB.
pub enum Decoded {
    Grey(GrayImage),
    Rgb(RgbImage),
}

/// Decode like `load_rgb`, keeping grey (8 or 16 bit, alpha dropped) as one channel: the same
/// values `load_rgb` would put in each of its three channels.
pub fn load_decoded(path: &Path) -> Result<Decoded> {
    let img = decode(path)?;
    Ok(if img.color().has_color() {
        Decoded::Rgb(img.to_rgb8())
    } else {
        Decoded::Grey(img.to_luma8())
    })
}

impl Decoded {
    pub fn transform(&self, t: &Transform, rng: &mut impl Rng) -> Vec<f32> {
        match self {
            Decoded::Grey(g) => t.apply(g, rng),
            Decoded::Rgb(c) => t.apply(c, rng),
        }
    }
}

/// The image transforms of the paper (torchvision definitions).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Transform {
    pub size: u32,
    /// Train: RandomResizedCrop(size, scale 0.08-1, ratio 3/4-4/3) + RandomHorizontalFlip(0.5).
    /// Off: Resize(size) + CenterCrop(size), the validation transform.
    pub augment: bool,
    /// A shortcut control applied to the decoded film before anything else (`--occlude`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub occlude: Option<crate::evaluate::occlude::Occlusion>,
}

/// Where torchvision's `RandomResizedCrop.get_params` would crop: (top, left, height, width).
pub fn random_resized_crop_params(
    width: u32,
    height: u32,
    rng: &mut impl Rng,
) -> (u32, u32, u32, u32) {
    let (w0, h0) = (width as f64, height as f64);
    let area = w0 * h0;
    let (lr0, lr1) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
    for _ in 0..10 {
        let target = area * rng.gen_range(0.08..1.0);
        let aspect = rng.gen_range(lr0..lr1).exp();
        let w = (target * aspect).sqrt().round();
        let h = (target / aspect).sqrt().round();
        if 0.0 < w && w <= w0 && 0.0 < h && h <= h0 {
            let (w, h) = (w as u32, h as u32);
            let top = rng.gen_range(0..=height - h);
            let left = rng.gen_range(0..=width - w);
            return (top, left, h, w);
        }
    }
    // Fallback: a central crop at the nearest allowed ratio.
    let in_ratio = w0 / h0;
    let (w, h) = if in_ratio < 0.75 {
        (width, (w0 / 0.75).round() as u32)
    } else if in_ratio > 4.0 / 3.0 {
        ((h0 * 4.0 / 3.0).round() as u32, height)
    } else {
        (width, height)
    };
    let (w, h) = (w.min(width), h.min(height));
    ((height - h) / 2, (width - w) / 2, h, w)
}

/// Resize(size): shorter side to `size`, longer side `int(size * long / short)` as torchvision.
fn resize_shorter<P: Pixel<Subpixel = u8> + 'static>(
    img: &ImageBuffer<P, Vec<u8>>,
    size: u32,
) -> ImageBuffer<P, Vec<u8>> {
    let (w, h) = img.dimensions();
    let (nw, nh) = if w <= h {
        (size, ((size as u64 * h as u64) / w as u64) as u32)
    } else {
        (((size as u64 * w as u64) / h as u64) as u32, size)
    };
    if (nw, nh) == (w, h) {
        return img.clone();
    }
    // Triangle = bilinear with a support widened by the scale factor when shrinking: PIL's
    // antialiased bilinear, what torchvision applies to PIL images.
    imageops::resize(img, nw, nh, FilterType::Triangle)
}

/// CenterCrop(size) as torchvision rounds it.
fn center_crop<P: Pixel<Subpixel = u8> + 'static>(
    img: &ImageBuffer<P, Vec<u8>>,
    size: u32,
) -> ImageBuffer<P, Vec<u8>> {
    let (w, h) = img.dimensions();
    let top = ((h.saturating_sub(size)) as f64 / 2.0).round() as u32;
    let left = ((w.saturating_sub(size)) as f64 / 2.0).round() as u32;
    imageops::crop_imm(img, left, top, size.min(w), size.min(h)).to_image()
}

/// Seeded from (seed, epoch, image id) only: the same augmentation whatever the thread count.
pub fn item_rng(seed: u64, epoch: u64, id: &str) -> ChaCha8Rng {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(epoch.to_le_bytes());
    h.update(id.as_bytes());
    ChaCha8Rng::from_seed(h.finalize().into())
}

impl Transform {
    /// The transformed image as normalised CHW f32. Grey images may come as `GrayImage`: every
    /// step (crop, resize, flip) works per channel, so this gives the same numbers as the RGB
    /// copy would, in a third of the resizing work.
    pub fn apply<P>(&self, img: &ImageBuffer<P, Vec<u8>>, rng: &mut impl Rng) -> Vec<f32>
    where
        P: Pixel<Subpixel = u8> + 'static,
    {
        let s = self.size;
        let occluded;
        let img = match self.occlude {
            Some(o) => {
                let mut c = img.clone();
                o.apply(&mut c);
                occluded = c;
                &occluded
            }
            None => img,
        };
        let out = if self.augment {
            let (w, h) = img.dimensions();
            let (top, left, ch, cw) = random_resized_crop_params(w, h, rng);
            let crop = imageops::crop_imm(img, left, top, cw, ch).to_image();
            let mut r = imageops::resize(&crop, s, s, FilterType::Triangle);
            if rng.gen_bool(0.5) {
                imageops::flip_horizontal_in_place(&mut r);
            }
            r
        } else {
            center_crop(&resize_shorter(img, s), s)
        };
        to_chw(&out)
    }
}

/// ToTensor + Normalize(ImageNet mean, std); one channel is replicated to three.
fn to_chw<P: Pixel<Subpixel = u8>>(img: &ImageBuffer<P, Vec<u8>>) -> Vec<f32> {
    let (w, h) = img.dimensions();
    let n = (w * h) as usize;
    let mut v = vec![0f32; 3 * n];
    for (i, p) in img.pixels().enumerate() {
        let ch = p.channels();
        for c in 0..3 {
            let x = ch[if ch.len() == 1 { 0 } else { c }];
            v[c * n + i] = (x as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        }
    }
    v
}

/// A batch ready for `Tensor::from_slice(..).view([n, 3, size, size])`.
pub struct Batch {
    pub x: Vec<f32>,
    pub y: Vec<i64>,
    /// Positions of the samples in the split.
    pub indices: Vec<usize>,
}

/// Batches of `order` (positions into `samples`), decoded and transformed in parallel on rayon's
/// pool by a feeder thread that stays at most `prefetch` batches ahead (see `loader`). Each
/// image's randomness comes from (seed, epoch, id), so batches are identical whatever the thread
/// count.
pub fn batches(
    samples: Arc<Vec<Sample>>,
    order: Vec<usize>,
    batch_size: usize,
    transform: Transform,
    seed: u64,
    epoch: u64,
    prefetch: usize,
) -> super::loader::Loader<Batch> {
    let job = super::loader::Job {
        samples,
        order,
        batch_size,
        transform,
        seed,
        epoch,
    };
    let cfg = super::loader::LoaderConfig {
        prefetch: prefetch.max(1),
        threads: None,
    };
    // Without a pool of its own the only failure is spawning the feeder thread, which
    // std::thread::spawn would also have panicked on.
    super::loader::vec_batches(job, cfg).expect("start the loader thread")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_params_stay_inside_and_follow_bounds() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for (w, h) in [(100, 100), (300, 50), (50, 300), (1, 1), (64, 48)] {
            for _ in 0..200 {
                let (t, l, ch, cw) = random_resized_crop_params(w, h, &mut rng);
                assert!(
                    ch >= 1 && cw >= 1 && t + ch <= h && l + cw <= w,
                    "{w}x{h}: {t} {l} {ch} {cw}"
                );
            }
        }
    }

    #[test]
    fn val_transform_shapes_and_normalises() {
        let img = RgbImage::from_pixel(80, 40, image::Rgb([255, 255, 255]));
        let t = Transform {
            size: 32,
            augment: false,
            occlude: None,
        };
        let v = t.apply(&img, &mut ChaCha8Rng::seed_from_u64(0));
        assert_eq!(v.len(), 3 * 32 * 32);
        assert!((v[0] - (1.0 - 0.485) / 0.229).abs() < 1e-5);
        let r = resize_shorter(&img, 32);
        assert_eq!(r.dimensions(), (64, 32));
    }

    /// Grey images go through the transforms as one channel (a third of the work): the same
    /// numbers as their RGB copy, 8 and 16 bit, with and without augmentation.
    #[test]
    fn grey_path_equals_rgb_path() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let g8 = GrayImage::from_fn(97, 61, |_, _| image::Luma([rng.gen::<u8>()]));
        let g16 = image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(80, 120, |_, _| {
            image::Luma([rng.gen::<u16>()])
        });
        let p8 = dir.path().join("g8.png");
        let p16 = dir.path().join("g16.png");
        g8.save(&p8).unwrap();
        g16.save(&p16).unwrap();
        for p in [&p8, &p16] {
            let d = load_decoded(p).unwrap();
            assert!(matches!(d, Decoded::Grey(_)), "{}", p.display());
            let rgb = load_rgb(p).unwrap();
            let occlusions = [None, Some(crate::evaluate::occlude::Occlusion::Lungs)];
            for (augment, occlude) in [false, true].into_iter().zip(occlusions) {
                let t = Transform {
                    size: 32,
                    augment,
                    occlude,
                };
                for seed in 0..5 {
                    let a = d.transform(&t, &mut item_rng(seed, 1, "x"));
                    let b = t.apply(&rgb, &mut item_rng(seed, 1, "x"));
                    assert_eq!(a, b, "{} augment={augment} seed={seed}", p.display());
                }
            }
        }
        let c = dir.path().join("c.png");
        RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3]))
            .save(&c)
            .unwrap();
        assert!(matches!(load_decoded(&c).unwrap(), Decoded::Rgb(_)));
    }

    #[test]
    fn item_rng_depends_on_all_three() {
        let a: u64 = item_rng(1, 1, "a").gen();
        assert_eq!(a, item_rng(1, 1, "a").gen::<u64>());
        assert_ne!(a, item_rng(2, 1, "a").gen::<u64>());
        assert_ne!(a, item_rng(1, 2, "a").gen::<u64>());
        assert_ne!(a, item_rng(1, 1, "b").gen::<u64>());
    }
}
