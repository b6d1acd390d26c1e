//! 12-bit JPEG Extended (1.2.840.10008.1.2.4.51, SamplePrecision 12), which dicom-pixeldata's
//! jpeg-decoder refuses: decoded with libjpeg-turbo 3 (`tj3Decompress12`), vendored and built by
//! `turbojpeg-sys`. Hand-written FFI because the safe `turbojpeg` crate decodes 8-bit only.

use super::{frame_bytes, reject, Header, Reject};
use dicom_object::DefaultDicomObject;
use std::ffi::CStr;
use turbojpeg_sys as tj;

/// A TurboJPEG decompressor, destroyed on drop.
struct Handle(tj::tjhandle);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from tj3Init and is destroyed once.
        unsafe { tj::tj3Destroy(self.0) }
    }
}

impl Handle {
    fn error(&self) -> String {
        // SAFETY: tj3GetErrorStr returns a NUL-terminated static or per-handle buffer.
        unsafe { CStr::from_ptr(tj::tj3GetErrorStr(self.0)) }
            .to_string_lossy()
            .into_owned()
    }
}

/// The 12-bit samples of the film's one frame, in row order.
pub fn decode(file: &DefaultDicomObject, h: &Header) -> Result<Vec<u16>, Reject> {
    let jpeg = frame_bytes(file)?;
    let bad = |d: String| {
        reject(
            "unreadable-dicom",
            format!("cannot decode 12-bit JPEG: {d}"),
        )
    };
    // SAFETY: tj3Init takes no pointers; a null result is checked.
    let handle = Handle(unsafe { tj::tj3Init(tj::TJINIT_TJINIT_DECOMPRESS as i32) });
    if handle.0.is_null() {
        return Err(bad("libjpeg-turbo could not start".into()));
    }
    // SAFETY: the buffer and its length describe one live slice.
    if unsafe { tj::tj3DecompressHeader(handle.0, jpeg.as_ptr(), jpeg.len() as _) } != 0 {
        return Err(bad(handle.error()));
    }
    let get = |p: tj::TJPARAM| unsafe { tj::tj3Get(handle.0, p as i32) };
    let (w, hgt, bits) = (
        get(tj::TJPARAM_TJPARAM_JPEGWIDTH),
        get(tj::TJPARAM_TJPARAM_JPEGHEIGHT),
        get(tj::TJPARAM_TJPARAM_PRECISION),
    );
    if (w, hgt) != (h.cols as i32, h.rows as i32) || bits != 12 {
        return Err(bad(format!(
            "the stream is {w}x{hgt} at {bits} bits, the header says {}x{} at 12",
            h.cols, h.rows
        )));
    }
    let mut out = vec![0i16; w as usize * hgt as usize];
    // SAFETY: `out` holds width × height grey samples, the size TJPF_GRAY with pitch 0 writes.
    let rc = unsafe {
        tj::tj3Decompress12(
            handle.0,
            jpeg.as_ptr(),
            jpeg.len() as _,
            out.as_mut_ptr(),
            0,
            tj::TJPF_TJPF_GRAY,
        )
    };
    if rc != 0 {
        return Err(bad(handle.error()));
    }
    Ok(out.into_iter().map(|v| v as u16).collect())
}
