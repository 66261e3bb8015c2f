//! Status codes, the per-thread last-error message, and panic containment.

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use certify_core::Error;

/// The result of a C API call.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertifyStatus {
    /// Success.
    Ok = 0,
    /// A pointer argument that must not be null was null.
    NullArgument = 1,
    /// The model bytes failed validation (corrupt, truncated, another format version), or they
    /// are not 4-byte aligned for [`certify_model_borrow`](crate::certify_model_borrow).
    InvalidModel = 2,
    /// The input has the wrong length or holds NaN or infinity, or an output buffer has the
    /// wrong length.
    BadInput = 3,
    /// The scratch buffer is smaller than the model's scratch size.
    ScratchTooSmall = 4,
    /// A defect inside the library (a caught panic). Please report it with the model.
    Internal = 5,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    // Interior NULs cannot occur in our messages; replace them rather than lose the message.
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = text);
}

/// Records `message` as the calling thread's last error and returns `status`.
pub(crate) fn fail(status: CertifyStatus, message: &str) -> CertifyStatus {
    set_last_error(message);
    status
}

/// Maps a library error to its status, recording its message.
pub(crate) fn fail_with(err: &Error) -> CertifyStatus {
    let status = match err {
        Error::CompactInvalid { .. } | Error::Misaligned { .. } => CertifyStatus::InvalidModel,
        Error::ScratchTooSmall { .. } => CertifyStatus::ScratchTooSmall,
        Error::DataLength { .. } | Error::NonFinite { .. } => CertifyStatus::BadInput,
        _ => CertifyStatus::Internal,
    };
    fail(status, &err.to_string())
}

/// Runs `body`, turning a panic into [`CertifyStatus::Internal`] and clearing the last error
/// on success.
pub(crate) fn guarded(body: impl FnOnce() -> CertifyStatus) -> CertifyStatus {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(CertifyStatus::Ok) => {
            set_last_error("");
            CertifyStatus::Ok
        }
        Ok(status) => status,
        Err(_) => fail(CertifyStatus::Internal, "internal error (a panic was caught); please report it"),
    }
}

/// The calling thread's message for its last failed call, or `""` after a successful one.
///
/// The pointer stays valid until the next `certify_*` call on the same thread; never null.
#[no_mangle]
pub extern "C" fn certify_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// The library version, e.g. `"0.1.0"` (a static NUL-terminated string).
#[no_mangle]
pub extern "C" fn certify_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
