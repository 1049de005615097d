//! `bench train --profile FILE`: libtorch's Kineto profiler around the timed steps (csrc/profiler.cpp),
//! saved as a Chrome trace; `pipelines/trace_summary.py` sums device time per kernel, the same way for
//! the PyTorch reference's trace.

use std::ffi::{c_char, c_int, CString};
use std::path::Path;

use anyhow::Result;

mod ffi {
    use std::ffi::{c_char, c_int};
    extern "C" {
        pub fn condenser_profiler_start(cuda: c_int) -> *mut c_char;
        pub fn condenser_profiler_stop(path: *const c_char) -> *mut c_char;
    }
}

/// A message the shim returned (malloc'd), freed by `crate::ffi::check`.
fn check(err: *mut c_char) -> Result<()> {
    crate::ffi::check(err).map_err(|msg| anyhow::anyhow!("profiler: {msg}"))
}

/// Starts recording CPU ops, and CUDA kernels when `cuda`.
pub fn start(cuda: bool) -> Result<()> {
    // SAFETY: plain call into the shim, which catches C++ exceptions.
    check(unsafe { ffi::condenser_profiler_start(cuda as c_int) })
}

/// Stops recording and writes the Chrome trace.
pub fn stop(path: &Path) -> Result<()> {
    let p = CString::new(path.to_string_lossy().as_bytes())?;
    // SAFETY: `p` outlives the call; the shim catches C++ exceptions.
    check(unsafe { ffi::condenser_profiler_stop(p.as_ptr()) })
}
