//! Mixed precision for `prep train --precision bf16|fp16|fp32`: libtorch's own autocast around
//! the forward pass (master weights, optimiser state and the loss stay fp32), and for fp16 a
//! dynamic gradient scaler.
//!
//! Why by hand: `tch::autocast` (0.24) only toggles libtorch's deprecated CUDA-only switch
//! (`at::autocast::set_enabled`) at its default dtype (fp16); it cannot enable CPU autocast nor
//! choose bf16. The per-device switches `at::autocast::set_autocast_enabled(DeviceType, bool)`
//! and `set_autocast_dtype(DeviceType, ScalarType)` are exported by libtorch_cpu.so (TORCH_API)
//! but are C++ functions, so we bind them by their Itanium-mangled names: both enums are
//! `enum class : int8_t` and pass as a C `int8_t`, and `bool` as a C `bool`, on x86-64 and
//! aarch64 Linux. The names are checked by a unit test (`autocast_really_lowers_convolutions`),
//! so a libtorch that changed them fails loudly instead of silently training in fp32.
//! tch has no gradient scaler either; `GradScaler` is PyTorch's `torch.amp.GradScaler` on the same
//! libtorch kernels (`_amp_foreach_non_finite_check_and_unscale_`, `_amp_update_scale_`).

use crate::error::{Error, Result};
use tch::{Device, Kind, Tensor};

/// The arithmetic of the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in fp32: bit-identical to prep without the flag (the parity tests' path).
    Fp32,
    /// Autocast to bfloat16 (fp32's exponent range: no loss scaling needed). CPU and CUDA.
    Bf16,
    /// Autocast to float16 with dynamic loss scaling. CUDA only.
    Fp16,
}

impl Precision {
    pub fn parse(s: &str) -> Result<Precision> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fp32" | "float32" => Ok(Precision::Fp32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "fp16" | "float16" | "half" => Ok(Precision::Fp16),
            other => Err(Error::Usage(format!(
                "--precision {other:?}: use fp32 (default), bf16 or fp16 (fp16 needs --device cuda)"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
            Precision::Fp16 => "fp16",
        }
    }

    /// The lowered kind, or None for fp32.
    pub fn kind(self) -> Option<Kind> {
        match self {
            Precision::Fp32 => None,
            Precision::Bf16 => Some(Kind::BFloat16),
            Precision::Fp16 => Some(Kind::Half),
        }
    }

    /// Refuse combinations libtorch cannot run well: fp16 on the CPU (oneDNN has no fast fp16
    /// convolutions on most CPUs, and CPU autocast's fp16 support is partial; bf16 is the CPU's
    /// reduced precision).
    pub fn check_device(self, device: Device) -> Result<()> {
        if self == Precision::Fp16 && device == Device::Cpu {
            return Err(Error::Usage(
                "--precision fp16 runs on CUDA only (this run is on the CPU): use --precision bf16 on a CPU, or --device cuda".into(),
            ));
        }
        Ok(())
    }
}

// libtorch's DeviceType and ScalarType values (c10/core/DeviceType.h, ScalarType.h).
const DEVICE_CPU: i8 = 0;
const DEVICE_CUDA: i8 = 1;
const SCALAR_HALF: i8 = 5;
const SCALAR_BFLOAT16: i8 = 15;

extern "C" {
    #[link_name = "_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb"]
    fn at_set_autocast_enabled(device: i8, enabled: bool);
    #[link_name = "_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE"]
    fn at_is_autocast_enabled(device: i8) -> bool;
    #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
    fn at_set_autocast_dtype(device: i8, dtype: i8);
    #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
    fn at_get_autocast_dtype(device: i8) -> i8;
    #[link_name = "_ZN2at8autocast17increment_nestingEv"]
    fn at_autocast_increment_nesting() -> i32;
    #[link_name = "_ZN2at8autocast17decrement_nestingEv"]
    fn at_autocast_decrement_nesting() -> i32;
    #[link_name = "_ZN2at8autocast11clear_cacheEv"]
    fn at_autocast_clear_cache();
}

fn device_type(device: Device) -> i8 {
    match device {
        Device::Cuda(_) => DEVICE_CUDA,
        _ => DEVICE_CPU,
    }
}

/// Whether libtorch's autocast is on for `device` (on this thread).
pub fn autocast_enabled(device: Device) -> bool {
    // SAFETY: a plain getter of libtorch's thread-local autocast state.
    unsafe { at_is_autocast_enabled(device_type(device)) }
}

/// Restores the previous autocast state on drop (also when `f` panics).
struct AutocastGuard {
    device: i8,
    was_enabled: bool,
    was_dtype: i8,
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        // SAFETY: libtorch thread-local state setters, as torch.autocast's __exit__ calls them.
        unsafe {
            if at_autocast_decrement_nesting() == 0 {
                at_autocast_clear_cache();
            }
            at_set_autocast_enabled(self.device, self.was_enabled);
            at_set_autocast_dtype(self.device, self.was_dtype);
        }
    }
}

/// Run `f` under autocast to `precision` on `device`, as `with torch.autocast(device, dtype)`
/// does. fp32: `f` runs untouched.
pub fn autocast<T>(precision: Precision, device: Device, f: impl FnOnce() -> T) -> T {
    let dtype = match precision {
        Precision::Fp32 => return f(),
        Precision::Bf16 => SCALAR_BFLOAT16,
        Precision::Fp16 => SCALAR_HALF,
    };
    let dev = device_type(device);
    // SAFETY: thread-local state setters with valid enum values; undone by the guard.
    let _guard = unsafe {
        let was_enabled = at_is_autocast_enabled(dev);
        let was_dtype = at_get_autocast_dtype(dev);
        at_set_autocast_dtype(dev, dtype);
        at_set_autocast_enabled(dev, true);
        at_autocast_increment_nesting();
        AutocastGuard {
            device: dev,
            was_enabled,
            was_dtype,
        }
    };
    f()
}

/// Dynamic loss scaling for fp16 (PyTorch's `GradScaler` defaults): the loss is multiplied by
/// `scale` before backward so small gradients survive fp16; the gradients are unscaled before
/// the optimiser step; a step whose gradients hold an inf or NaN is skipped and the scale halved;
/// after `growth_interval` clean steps in a row the scale doubles.
pub struct GradScaler {
    scale: Tensor,
    growth_tracker: Tensor,
    pub growth_factor: f64,
    pub backoff_factor: f64,
    pub growth_interval: i64,
    /// Steps skipped because of inf/NaN gradients, for the user.
    pub skipped: usize,
}

impl GradScaler {
    pub fn new(device: Device) -> Self {
        Self::with_scale(65536.0, device)
    }

    pub fn with_scale(init: f64, device: Device) -> Self {
        GradScaler {
            scale: Tensor::from_slice(&[init as f32]).to_device(device),
            growth_tracker: Tensor::zeros([1], (Kind::Int, device)),
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
            skipped: 0,
        }
    }

    pub fn scale_value(&self) -> f64 {
        self.scale.double_value(&[0])
    }

    /// `loss * scale`.
    pub fn scale(&self, loss: &Tensor) -> Tensor {
        loss * &self.scale.to_kind(loss.kind())
    }

    /// Divide every gradient by the scale in place; true when one of them is not finite.
    pub fn unscale(&self, params: &[Tensor]) -> Result<bool> {
        let inv = self
            .scale
            .to_kind(Kind::Double)
            .reciprocal()
            .to_kind(Kind::Float);
        let mut found_inf = Tensor::zeros([1], (Kind::Float, self.scale.device()));
        for p in params {
            let mut g = p.grad();
            if g.defined() {
                g.f_internal_amp_non_finite_check_and_unscale(&mut found_inf, &inv)?;
            }
        }
        Ok(found_inf.f_double_value(&[0])? != 0.0)
    }

    /// Grow or back off the scale after a step (`found_inf`: that step was skipped).
    pub fn update(&mut self, found_inf: bool) -> Result<()> {
        let f = Tensor::from_slice(&[if found_inf { 1.0f32 } else { 0.0 }])
            .to_device(self.scale.device());
        if found_inf {
            self.skipped += 1;
        }
        let _ = self.scale.f_internal_amp_update_scale_(
            &self.growth_tracker,
            &f,
            self.growth_factor,
            self.backoff_factor,
            self.growth_interval,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_refuses_others() {
        assert_eq!(Precision::parse("bf16").unwrap(), Precision::Bf16);
        assert_eq!(Precision::parse("FP16").unwrap(), Precision::Fp16);
        assert_eq!(Precision::parse("fp32").unwrap(), Precision::Fp32);
        assert!(Precision::parse("int8").is_err());
        assert!(Precision::Fp16.check_device(Device::Cpu).is_err());
        assert!(Precision::Bf16.check_device(Device::Cpu).is_ok());
        assert!(Precision::Fp16.check_device(Device::Cuda(0)).is_ok());
    }

    /// The mangled bindings really reach libtorch: inside, a convolution comes out bf16 and
    /// autocast reports itself on; outside, fp32 again and off.
    #[test]
    fn autocast_really_lowers_convolutions() {
        let x = Tensor::randn([1, 3, 8, 8], (Kind::Float, Device::Cpu));
        let w = Tensor::randn([4, 3, 3, 3], (Kind::Float, Device::Cpu));
        let conv = |x: &Tensor| x.conv2d(&w, None::<&Tensor>, [1, 1], [1, 1], [1, 1], 1);
        assert!(!autocast_enabled(Device::Cpu));
        let (k, on) = autocast(Precision::Bf16, Device::Cpu, || {
            (conv(&x).kind(), autocast_enabled(Device::Cpu))
        });
        assert_eq!(k, Kind::BFloat16);
        assert!(on);
        assert!(!autocast_enabled(Device::Cpu));
        assert_eq!(conv(&x).kind(), Kind::Float);
        assert_eq!(
            autocast(Precision::Fp32, Device::Cpu, || conv(&x).kind()),
            Kind::Float
        );
    }

    /// Finite gradients: unscaled exactly, the step counts towards growth; an inf: reported,
    /// the scale halves. growth_interval 2: two clean steps double the scale.
    #[test]
    fn grad_scaler_unscales_skips_and_grows() {
        let p = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let mut s = GradScaler::with_scale(1024.0, Device::Cpu);
        s.growth_interval = 2;
        let loss = (&p * &p).sum(Kind::Float); // grad = 2p
        s.scale(&loss).backward();
        assert!(!s.unscale(std::slice::from_ref(&p)).unwrap());
        assert_eq!(Vec::<f32>::try_from(p.grad()).unwrap(), vec![2.0, 4.0]);
        s.update(false).unwrap();
        assert_eq!(s.scale_value(), 1024.0);
        s.update(false).unwrap();
        assert_eq!(s.scale_value(), 2048.0);
        let mut g = p.grad();
        let _ = g.fill_(f64::INFINITY);
        assert!(s.unscale(std::slice::from_ref(&p)).unwrap());
        s.update(true).unwrap();
        assert_eq!(s.scale_value(), 1024.0);
        assert_eq!(s.skipped, 1);
    }
}
