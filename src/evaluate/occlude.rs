//! Shortcut controls: black out the central lung field of a film (`lungs`), or everything but it
//! (`border`), before any transform, in training and in evaluation alike.
//!
//! The lung field is a fixed central box, the same fraction of every film: 76 % of the width
//! (12 % margins left and right) and 84 % of the height (8 % margins top and bottom), the box
//! that covered both lung fields on the Cohen and NIH films of issue #15. A fixed box rather than
//! a per-image lung segmentation: it needs no model, cannot fail on an odd film, and what a
//! lungs-occluded model still learns then comes from outside a box that holds the lungs on a
//! centred PA/AP film (markers, text, borders, collimation, body outline).

use serde::{Deserialize, Serialize};

/// Left/right margin of the lung-field box, as a fraction of the width.
pub const LUNG_MARGIN_X: f64 = 0.12;
/// Top/bottom margin of the lung-field box, as a fraction of the height.
pub const LUNG_MARGIN_Y: f64 = 0.08;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Occlusion {
    /// The central lung-field box is black: what is left is the border.
    Lungs,
    /// Everything outside the lung-field box is black: only the lung field is seen.
    Border,
}

impl Occlusion {
    pub fn parse(s: &str) -> Option<Option<Occlusion>> {
        match s {
            "none" => Some(None),
            "lungs" => Some(Some(Occlusion::Lungs)),
            "border" => Some(Some(Occlusion::Border)),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Occlusion::Lungs => "lungs",
            Occlusion::Border => "border",
        }
    }

    /// One line for model cards and metrics.
    pub fn describe(self) -> String {
        format!(
            "{}: the central box of {:.0} % x {:.0} % of each film ({:.0} % side margins, {:.0} % top/bottom) {}",
            self.name(),
            100.0 * (1.0 - 2.0 * LUNG_MARGIN_X),
            100.0 * (1.0 - 2.0 * LUNG_MARGIN_Y),
            100.0 * LUNG_MARGIN_X,
            100.0 * LUNG_MARGIN_Y,
            match self {
                Occlusion::Lungs => "set to black before any transform",
                Occlusion::Border => "kept, everything outside it set to black before any transform",
            }
        )
    }

    /// Black out the occluded part of an 8-bit image of any channel count (the loader passes
    /// grey films as one channel).
    pub fn apply<P: image::Pixel<Subpixel = u8>>(self, img: &mut image::ImageBuffer<P, Vec<u8>>) {
        let (w, h) = img.dimensions();
        let (x0, x1, y0, y1) = lung_box(w, h);
        for (x, y, p) in img.enumerate_pixels_mut() {
            let inside = x >= x0 && x < x1 && y >= y0 && y < y1;
            if inside == (self == Occlusion::Lungs) {
                p.channels_mut().fill(0);
            }
        }
    }
}

/// The lung-field box of a `w` x `h` film: columns x0..x1, rows y0..y1 (half-open).
pub fn lung_box(w: u32, h: u32) -> (u32, u32, u32, u32) {
    let r = |f: f64, n: u32| ((f * n as f64).round() as u32).min(n);
    (
        r(LUNG_MARGIN_X, w),
        r(1.0 - LUNG_MARGIN_X, w),
        r(LUNG_MARGIN_Y, h),
        r(1.0 - LUNG_MARGIN_Y, h),
    )
}

/// The lung-field box of a `w` x `h` film carried through the validation transform (Resize of
/// the shorter side to `size`, as torchvision rounds it, then CenterCrop(size)): [x0, x1, y0, y1]
/// in the `size` x `size` network input, clipped to it. What `--occlude` blacks out, where the
/// network sees it: Grad-CAM's lung-field share is measured inside this box.
pub fn lung_box_in_input(w: u32, h: u32, size: u32) -> [f64; 4] {
    let (x0, x1, y0, y1) = lung_box(w, h);
    let (nw, nh) = if w <= h {
        (size as u64, size as u64 * h as u64 / w.max(1) as u64)
    } else {
        (size as u64 * w as u64 / h.max(1) as u64, size as u64)
    };
    let (sx, sy) = (nw as f64 / w.max(1) as f64, nh as f64 / h.max(1) as f64);
    let left = (nw.saturating_sub(size as u64) as f64 / 2.0).round();
    let top = (nh.saturating_sub(size as u64) as f64 / 2.0).round();
    let clip = |v: f64| v.clamp(0.0, size as f64);
    [
        clip(x0 as f64 * sx - left),
        clip(x1 as f64 * sx - left),
        clip(y0 as f64 * sy - top),
        clip(y1 as f64 * sy - top),
    ]
}

/// Share of a non-negative `size` x `size` map (row-major) whose pixel centres lie inside `bx`
/// (from [`lung_box_in_input`]); None when the map is all zero.
pub fn share_inside(map: &[f32], size: u32, bx: [f64; 4]) -> Option<f64> {
    let (mut inside, mut total) = (0f64, 0f64);
    for (i, v) in map.iter().enumerate() {
        let (x, y) = (
            (i as u32 % size) as f64 + 0.5,
            (i as u32 / size) as f64 + 0.5,
        );
        let v = v.max(0.0) as f64;
        total += v;
        if x >= bx[0] && x < bx[1] && y >= bx[2] && y < bx[3] {
            inside += v;
        }
    }
    (total > 0.0).then(|| inside / total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::RgbImage;

    #[test]
    fn lungs_and_border_are_complements() {
        let img = RgbImage::from_pixel(100, 50, image::Rgb([200, 100, 50]));
        let (mut a, mut b) = (img.clone(), img.clone());
        Occlusion::Lungs.apply(&mut a);
        Occlusion::Border.apply(&mut b);
        assert_eq!(lung_box(100, 50), (12, 88, 4, 46));
        let mut black = 0;
        for (pa, pb) in a.pixels().zip(b.pixels()) {
            assert!((pa[0] == 0) != (pb[0] == 0));
            black += (pa[0] == 0) as usize;
        }
        assert_eq!(black, 76 * 42);
        assert_eq!(a.get_pixel(0, 0)[0], 200);
        assert_eq!(b.get_pixel(50, 25)[0], 200);
        assert_eq!(Occlusion::parse("none"), Some(None));
        assert_eq!(Occlusion::parse("lungs"), Some(Some(Occlusion::Lungs)));
        assert_eq!(Occlusion::parse("x"), None);
    }

    #[test]
    fn lung_box_follows_resize_and_centre_crop() {
        // Square film: the box scales with the film.
        assert_eq!(lung_box_in_input(200, 200, 100), [12.0, 88.0, 8.0, 92.0]);
        // A wide film 400 x 200 at 100 px: resized to 200 x 100, cropped 50 px from the left;
        // the box (48..352 of 400) lands at -26..126, clipped to the input.
        assert_eq!(lung_box_in_input(400, 200, 100), [0.0, 100.0, 8.0, 92.0]);
        // A tall film 100 x 300 at 100 px: no resize, cropped 100 px from the top.
        assert_eq!(lung_box_in_input(100, 300, 100), [12.0, 88.0, 0.0, 100.0]);
        let bx = [0.0, 2.0, 0.0, 4.0];
        let map = [
            1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
        ];
        assert_eq!(share_inside(&map, 4, bx), Some(6.0 / 12.0));
        assert_eq!(share_inside(&[0.0; 16], 4, bx), None);
    }
}
