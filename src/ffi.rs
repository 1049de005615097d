//! The one crossing of the C++ boundary's error convention: every shim function (csrc/*.cpp) catches
//! its C++ exceptions and returns NULL on success or a malloc'd message, which Rust turns into a
//! `Result` here and frees with `condenser_free_error` (declared once, defined in csrc/fused_adamw.cpp).

use std::ffi::{c_char, CStr};

extern "C" {
    fn condenser_free_error(message: *mut c_char);
}

/// The shim's returned message (NULL on success) as a `Result`, the message freed.
pub fn check(err: *mut c_char) -> Result<(), String> {
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null return is a NUL-terminated string from strdup, owned by us until freed once
    // here.
    let msg = unsafe { CStr::from_ptr(err) }
        .to_string_lossy()
        .into_owned();
    unsafe { condenser_free_error(err) };
    Err(msg)
}
