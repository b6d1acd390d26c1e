//! Decoding images with their bit depth and colour type kept, and writing PNGs the same way
//! every time (fixed compression and filter settings, no timestamps).

use crate::error::{Error, Result};
use crate::filter::{MAX_ALLOC, MAX_SIDE};
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{DynamicImage, ImageEncoder};
use std::borrow::Cow;
use std::io::Cursor;
use std::path::Path;

/// Smallest side the fills and the detector work on.
pub const MIN_SIDE: u32 = 3;

/// Decode `bytes` (named `path` in errors) with the size limits of `prep filter`. Palette images
/// come out as RGB(A) 8-bit; float images are refused (X-rays are integer data).
pub fn decode(path: &Path, bytes: &[u8]) -> Result<DynamicImage> {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    let mut r = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::bad_input(path, format!("unreadable image: {e}")))?;
    if r.format().is_none() {
        return Err(Error::bad_input(path, "not a recognised image format"));
    }
    r.limits(limits);
    let img = r
        .decode()
        .map_err(|e| Error::bad_input(path, format!("cannot decode image: {e}")))?;
    if img.width() < MIN_SIDE || img.height() < MIN_SIDE {
        return Err(Error::bad_input(
            path,
            format!(
                "{}x{} image is too small to inpaint (at least {MIN_SIDE}x{MIN_SIDE})",
                img.width(),
                img.height()
            ),
        ));
    }
    match img {
        DynamicImage::ImageRgb32F(_) | DynamicImage::ImageRgba32F(_) => Err(Error::bad_input(
            path,
            "floating-point images are not supported (8- or 16-bit only)",
        )),
        other => Ok(other),
    }
}

/// The samples of an image, interleaved, with their channel count.
pub enum SamplesMut<'a> {
    U8(&'a mut [u8], usize),
    U16(&'a mut [u16], usize),
}

pub fn samples_mut(img: &mut DynamicImage) -> SamplesMut<'_> {
    use DynamicImage::*;
    match img {
        ImageLuma8(b) => SamplesMut::U8(b, 1),
        ImageLumaA8(b) => SamplesMut::U8(b, 2),
        ImageRgb8(b) => SamplesMut::U8(b, 3),
        ImageRgba8(b) => SamplesMut::U8(b, 4),
        ImageLuma16(b) => SamplesMut::U16(b, 1),
        ImageLumaA16(b) => SamplesMut::U16(b, 2),
        ImageRgb16(b) => SamplesMut::U16(b, 3),
        ImageRgba16(b) => SamplesMut::U16(b, 4),
        _ => unreachable!("decode refuses float images"),
    }
}

/// Short name of the colour type, for records and messages.
pub fn color_name(img: &DynamicImage) -> &'static str {
    use DynamicImage::*;
    match img {
        ImageLuma8(_) => "L8",
        ImageLumaA8(_) => "LA8",
        ImageRgb8(_) => "RGB8",
        ImageRgba8(_) => "RGBA8",
        ImageLuma16(_) => "L16",
        ImageLumaA16(_) => "LA16",
        ImageRgb16(_) => "RGB16",
        ImageRgba16(_) => "RGBA16",
        _ => "other",
    }
}

/// PNG bytes of `img` in its own colour type and bit depth, deterministic for the same pixels.
pub fn encode_png(img: &DynamicImage) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let enc = PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive);
    img.write_with_encoder(enc)
        .map_err(|e| Error::Usage(format!("cannot encode PNG: {e}")))?;
    Ok(out)
}

/// PNG bytes of an 8-bit grey mask.
pub fn encode_mask(mask: &[u8], width: u32, height: u32) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive)
        .write_image(mask, width, height, image::ExtendedColorType::L8)
        .map_err(|e| Error::Usage(format!("cannot encode PNG: {e}")))?;
    Ok(out)
}

/// Read a mask file: any image of exactly `width`×`height`; non-zero (in any channel of its grey
/// rendering) means "inpaint here".
pub fn read_mask(path: &Path, width: u32, height: u32) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| Error::read(path, e))?;
    let img = decode(path, &bytes)?;
    if img.width() != width || img.height() != height {
        return Err(Error::bad_input(
            path,
            format!(
                "mask is {}x{} but the image is {width}x{height}",
                img.width(),
                img.height()
            ),
        ));
    }
    let g = img.to_luma16();
    Ok(g.into_raw()
        .into_iter()
        .map(|v| if v > 0 { 255 } else { 0 })
        .collect())
}

/// 8-bit grey rendering for the detector (16-bit scaled down, colour averaged; alpha ignored).
pub fn grey8(img: &DynamicImage) -> Vec<u8> {
    img.to_luma8().into_raw()
}

/// The detector's inputs: 8-bit grey ([`grey8`], borrowed when the image already is) and, for
/// colour images, the per-pixel channel spread (max - min over R, G, B). The spread of an 8-bit
/// RGB(A) film is read straight from its bytes: converting it with `to_rgb8` first took ~6 ms of
/// a 1024² colour film's detection. (The grey stays the image crate's colour-space-aware luma.)
pub fn grey_and_spread(img: &DynamicImage) -> (Cow<'_, [u8]>, Option<Vec<u8>>) {
    let grey = match img.as_luma8() {
        Some(g) => Cow::Borrowed(g.as_raw().as_slice()),
        None => Cow::Owned(grey8(img)),
    };
    let spread_of = |raw: &[u8], c: usize| raw.chunks_exact(c).map(spread_of).collect();
    let spread = match img {
        DynamicImage::ImageRgb8(rgb) => Some(spread_of(rgb.as_raw(), 3)),
        DynamicImage::ImageRgba8(rgba) => Some(spread_of(rgba.as_raw(), 4)),
        _ => img
            .color()
            .has_color()
            .then(|| spread_of(img.to_rgb8().as_raw(), 3)),
    };
    (grey, spread)
}

fn spread_of(p: &[u8]) -> u8 {
    let [r, g, b] = [p[0], p[1], p[2]];
    r.max(g).max(b) - r.min(g).min(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spread read from the raw bytes must be that of the image crate's RGB conversion.
    #[test]
    fn spread_of_rgb_and_rgba_matches_the_image_crates_conversion() {
        let (w, h) = (37u32, 11u32);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut byte = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        };
        let rgba: Vec<u8> = (0..w * h * 4).map(|_| byte()).collect();
        let rgb: Vec<u8> = rgba
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect();
        for img in [
            DynamicImage::ImageRgba8(image::RgbaImage::from_raw(w, h, rgba).unwrap()),
            DynamicImage::ImageRgb8(image::RgbImage::from_raw(w, h, rgb).unwrap()),
        ] {
            let (g, s) = grey_and_spread(&img);
            assert_eq!(*g, *img.to_luma8().into_raw());
            let want: Vec<u8> = img
                .to_rgb8()
                .as_raw()
                .chunks_exact(3)
                .map(|p| p.iter().max().unwrap() - p.iter().min().unwrap())
                .collect();
            assert_eq!(s, Some(want));
            assert!(s.as_ref().unwrap().iter().any(|&v| v > 100));
        }
    }
}
