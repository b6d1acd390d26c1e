//! Choosing the device. The binary links the CPU libtorch; when CUDA is wanted,
//! `libtorch_cuda.so` is dlopen-ed (RTLD_NOW | RTLD_GLOBAL) so its CUDA hooks register and the
//! same binary runs on a GPU machine with PyTorch's lib folder on LD_LIBRARY_PATH.

use crate::error::{Error, Result};
use tch::Device;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    Auto,
    Cpu,
    Cuda,
}

/// Try to load libtorch's CUDA part; Err carries dlerror's text.
fn load_cuda() -> std::result::Result<(), String> {
    use std::ffi::{CStr, CString};
    let mut last = String::new();
    for name in ["libtorch_cuda.so"] {
        let c = CString::new(name).expect("no NUL");
        // SAFETY: dlopen with a valid C string; the handle is deliberately never closed, the
        // library stays loaded for the life of the process.
        let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if !h.is_null() {
            return Ok(());
        }
        // SAFETY: dlerror returns a thread-local C string or null.
        let e = unsafe { libc::dlerror() };
        if !e.is_null() {
            last = unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned();
        }
    }
    Err(last)
}

/// The device to run on, and a note for the user when `auto` fell back to the CPU.
pub fn resolve(choice: DeviceChoice) -> Result<(Device, Option<String>)> {
    if choice == DeviceChoice::Cpu {
        return Ok((Device::Cpu, None));
    }
    let loaded = load_cuda();
    let available = tch::Cuda::is_available();
    match (choice, loaded, available) {
        (_, Ok(()), true) => Ok((Device::Cuda(0), None)),
        (DeviceChoice::Cuda, Err(e), _) => Err(Error::Usage(format!(
            "--device cuda: cannot load libtorch_cuda.so ({e}); put the lib folder of a CUDA PyTorch 2.11 (python -c 'import torch, os; print(os.path.dirname(torch.__file__) + \"/lib\")') on LD_LIBRARY_PATH"
        ))),
        (DeviceChoice::Cuda, Ok(()), false) => Err(Error::Usage(
            "--device cuda: libtorch_cuda.so loaded but no CUDA GPU is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)".into(),
        )),
        (_, Err(e), _) => Ok((
            Device::Cpu,
            Some(format!("no CUDA (cannot load libtorch_cuda.so: {e}); running on the CPU")),
        )),
        (_, Ok(()), false) => Ok((
            Device::Cpu,
            Some("libtorch_cuda.so loaded but no CUDA GPU is visible; running on the CPU".into()),
        )),
    }
}
