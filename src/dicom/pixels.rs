//! From stored sample values to the grey image prep writes: the modality LUT (rescale), the VOI
//! (a VOI LUT or a window), MONOCHROME1 inversion, and the two output forms.
//!
//! Written here rather than taken from dicom-pixeldata's conversions because the bag must hold
//! exactly what pydicom's `apply_modality_lut` → `apply_voi_lut` give (PS3.3 C.11.2, with
//! pydicom's output range), and the 16-bit form must be lossless; the crate decodes, we map.

/// The stored samples of one frame, masked to BitsStored and sign-extended.
#[derive(Debug, Clone)]
pub struct Samples {
    pub width: u32,
    pub height: u32,
    pub bits_stored: u16,
    pub signed: bool,
    pub values: Vec<i32>,
}

/// The VOI LUT function (0028,1056) of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoiFunction {
    Linear,
    LinearExact,
    Sigmoid,
}

impl VoiFunction {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "" | "LINEAR" => Some(VoiFunction::Linear),
            "LINEAR_EXACT" => Some(VoiFunction::LinearExact),
            "SIGMOID" => Some(VoiFunction::Sigmoid),
            _ => None,
        }
    }
}

/// A VOI LUT (0028,3010) item: descriptor (entries, first mapped value, bits) and data.
#[derive(Debug, Clone, PartialEq)]
pub struct Lut {
    pub first_mapped: i64,
    pub bits: u16,
    pub data: Vec<u16>,
}

/// The value-of-interest transform applied after the modality LUT.
#[derive(Debug, Clone, PartialEq)]
pub enum Voi {
    Window {
        center: f64,
        width: f64,
        function: VoiFunction,
    },
    Lut(Lut),
    /// Neither present: the modality values over their whole range.
    None,
}

impl Voi {
    /// How the record names it: `window C,W`, `window C,W sigmoid`, `voi-lut`, `none`.
    pub fn describe(&self) -> String {
        match self {
            Voi::Window {
                center,
                width,
                function,
            } => {
                let f = match function {
                    VoiFunction::Linear => "",
                    VoiFunction::LinearExact => " linear-exact",
                    VoiFunction::Sigmoid => " sigmoid",
                };
                format!("window {center},{width}{f}")
            }
            Voi::Lut(l) => format!("voi-lut {} entries from {}", l.data.len(), l.first_mapped),
            Voi::None => "none".into(),
        }
    }
}

/// Modality LUT (rescale) and VOI of a film.
#[derive(Debug, Clone, PartialEq)]
pub struct Transform {
    /// (slope, intercept) when both tags are present.
    pub rescale: Option<(f64, f64)>,
    pub voi: Voi,
    pub monochrome1: bool,
}

impl Transform {
    /// pydicom's output range of the window: the stored range, through the rescale.
    fn range(&self, s: &Samples) -> (f64, f64) {
        let bs = s.bits_stored as i32;
        let (lo, hi) = if s.signed {
            (-(2f64.powi(bs - 1)), 2f64.powi(bs - 1) - 1.0)
        } else {
            (0.0, 2f64.powi(bs) - 1.0)
        };
        match self.rescale {
            Some((m, b)) => (lo * m + b, hi * m + b),
            None => (lo, hi),
        }
    }
}

/// Lossless 16-bit: the stored values, shifted to be non-negative (signed data) and inverted for
/// MONOCHROME1 within the stored range, then left-aligned to 16 bits (`<< (16 - BitsStored)`,
/// the PNG convention for fewer significant bits) so 8-bit readers see the full range.
/// Returns the samples and the shift.
pub fn raw16(s: &Samples, monochrome1: bool) -> (Vec<u16>, u32) {
    let bs = s.bits_stored.clamp(1, 16) as u32;
    let max = (1u32 << bs) - 1;
    let offset: i64 = if s.signed { 1 << (bs - 1) } else { 0 };
    let shift = 16 - bs;
    let out = s
        .values
        .iter()
        .map(|&v| {
            let u = (v as i64 + offset).clamp(0, max as i64) as u32;
            let u = if monochrome1 { max - u } else { u };
            (u << shift) as u16
        })
        .collect();
    (out, shift)
}

/// The modality value of one sample (pydicom `apply_modality_lut` with a rescale).
fn modality(v: i32, rescale: Option<(f64, f64)>) -> f64 {
    match rescale {
        Some((m, b)) => v as f64 * m + b,
        None => v as f64,
    }
}

/// 8-bit after the VOI: the VOI output scaled from its range to 0..=255 and rounded; MONOCHROME1
/// is inverted (255 - x) so that bone is white in every film.
pub fn window8(s: &Samples, t: &Transform) -> Vec<u8> {
    let (y_min, y_max) = t.range(s);
    let to8 = |y: f64, lo: f64, hi: f64| -> u8 {
        let r = if hi != lo { (y - lo) / (hi - lo) } else { 0.0 };
        let v = (r * 255.0).round().clamp(0.0, 255.0) as u8;
        if t.monochrome1 {
            255 - v
        } else {
            v
        }
    };
    match &t.voi {
        Voi::None => s
            .values
            .iter()
            .map(|&v| to8(modality(v, t.rescale), y_min, y_max))
            .collect(),
        Voi::Window {
            center,
            width,
            function,
        } => {
            let range = y_max - y_min;
            let (c, w) = match function {
                VoiFunction::Linear => (center - 0.5, width - 1.0),
                _ => (*center, *width),
            };
            s.values
                .iter()
                .map(|&v| {
                    let x = modality(v, t.rescale);
                    let y = match function {
                        VoiFunction::Sigmoid => range / (1.0 + (-4.0 * (x - c) / w).exp()) + y_min,
                        _ if x <= c - w / 2.0 => y_min,
                        _ if x > c + w / 2.0 => y_max,
                        _ => ((x - c) / w + 0.5) * range + y_min,
                    };
                    to8(y, y_min, y_max)
                })
                .collect()
        }
        Voi::Lut(lut) => {
            let top = ((1u32 << lut.bits.clamp(1, 16)) - 1) as f64;
            let last = lut.data.len().saturating_sub(1) as f64;
            s.values
                .iter()
                .map(|&v| {
                    let x = modality(v, t.rescale);
                    let i = if x < lut.first_mapped as f64 {
                        0
                    } else {
                        (x - lut.first_mapped as f64).trunc().clamp(0.0, last) as usize
                    };
                    to8(lut.data.get(i).copied().unwrap_or(0) as f64, 0.0, top)
                })
                .collect()
        }
    }
}

/// Check a window before use: pydicom refuses these too.
pub fn check_window(center: f64, width: f64, f: VoiFunction) -> Result<(), String> {
    if !center.is_finite() || !width.is_finite() {
        return Err(format!("window {center},{width} is not a number"));
    }
    match f {
        VoiFunction::Linear if width < 1.0 => Err(format!(
            "window width {width} is below 1 (LINEAR needs at least 1)"
        )),
        VoiFunction::LinearExact | VoiFunction::Sigmoid if width <= 0.0 => {
            Err(format!("window width {width} must be above 0"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(values: Vec<i32>, bits: u16, signed: bool) -> Samples {
        Samples {
            width: values.len() as u32,
            height: 1,
            bits_stored: bits,
            signed,
            values,
        }
    }

    #[test]
    fn raw16_is_lossless_and_inverts_monochrome1() {
        let s = samples(vec![0, 1, 2048, 4095], 12, false);
        let (v, shift) = raw16(&s, false);
        assert_eq!(shift, 4);
        assert_eq!(v, vec![0, 16, 32768, 65520]);
        let (inv, _) = raw16(&s, true);
        assert_eq!(inv, vec![65520, 65520 - 16, 65520 - 32768, 0]);
        let signed = samples(vec![-32768, -1, 0, 32767], 16, true);
        assert_eq!(raw16(&signed, false).0, vec![0, 32767, 32768, 65535]);
    }

    #[test]
    fn linear_window_matches_the_standard_formula() {
        // 12-bit, window 2048/1000: below c - 0.5 - (w-1)/2 is black, above is white.
        let s = samples(vec![0, 1548, 2048, 2547, 4095], 12, false);
        let t = Transform {
            rescale: None,
            voi: Voi::Window {
                center: 2048.0,
                width: 1000.0,
                function: VoiFunction::Linear,
            },
            monochrome1: false,
        };
        let v = window8(&s, &t);
        assert_eq!(v[0], 0);
        assert_eq!(v[4], 255);
        assert_eq!(v[2], 128); // (0.5/999 + 0.5) * 255 rounds to 128
        assert!(v[1] <= 1 && v[3] >= 254);
        let t1 = Transform {
            monochrome1: true,
            ..t
        };
        assert_eq!(window8(&s, &t1)[0], 255);
    }

    #[test]
    fn rescale_moves_the_window_range() {
        // CT-like: stored 0..4095, intercept -1024; window 40/400 in HU.
        let s = samples(vec![1024 + 40, 0, 4095], 12, false);
        let t = Transform {
            rescale: Some((1.0, -1024.0)),
            voi: Voi::Window {
                center: 40.0,
                width: 400.0,
                function: VoiFunction::LinearExact,
            },
            monochrome1: false,
        };
        assert_eq!(window8(&s, &t), vec![128, 0, 255]);
    }

    #[test]
    fn voi_lut_indexes_from_the_first_mapped_value() {
        let s = samples(vec![5, 10, 11, 12, 100], 8, false);
        let t = Transform {
            rescale: None,
            voi: Voi::Lut(Lut {
                first_mapped: 10,
                bits: 8,
                data: vec![0, 100, 255],
            }),
            monochrome1: false,
        };
        assert_eq!(window8(&s, &t), vec![0, 0, 100, 255, 255]);
    }

    #[test]
    fn bad_windows_are_refused() {
        assert!(check_window(100.0, 0.5, VoiFunction::Linear).is_err());
        assert!(check_window(100.0, 0.0, VoiFunction::Sigmoid).is_err());
        assert!(check_window(f64::NAN, 10.0, VoiFunction::Linear).is_err());
        assert!(check_window(100.0, 1.0, VoiFunction::Linear).is_ok());
    }
}
