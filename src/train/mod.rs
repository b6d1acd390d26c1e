//! The model side, on libtorch through tch: our DenseNet (`densenet`), data and transforms
//! (`data`), Adam (`optim`), metrics and plots (`metrics`), device choice (`device`), the
//! training run (`run`) and prediction (`predict`); and `torch_info` for `prep doctor`.

pub use densenet::{DenseNet, DenseNetConfig, Unfreeze};

use crate::error::Result;
use tch::{Device, Kind, Tensor};

/// What libtorch reports about itself on this machine.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TorchInfo {
    pub threads: i32,
    pub cuda_available: bool,
    pub cuda_devices: i64,
    /// A small computation on the CPU (sum of 1..=4), proving the library really runs.
    pub self_test: f64,
}

pub fn torch_info() -> Result<TorchInfo> {
    let t = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).to_device(Device::Cpu);
    let self_test = t.f_sum(Kind::Float)?.f_double_value(&[])?;
    Ok(TorchInfo {
        threads: tch::get_num_threads(),
        cuda_available: tch::Cuda::is_available(),
        cuda_devices: tch::Cuda::device_count(),
        self_test,
    })
}

pub mod data;
pub mod densenet;
pub mod device;
pub mod loader;
pub mod metrics;
pub mod optim;
pub mod precision;
pub mod predict;
pub mod run;
