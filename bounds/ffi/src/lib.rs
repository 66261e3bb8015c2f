//! `certify-ffi`: the C API of certify, for edge deployment apps.
//!
//! A device loads a compact model (written by `certify export --format compact`), and for each
//! input gets, in one allocation-free call, the predicted class, the logits, the margin, the
//! exact `‖J(x)‖_F`, the Prop. 3 bound and the Cor. 2 estimate of Jakubovitz & Giryes. Prop. 3
//! and Cor. 2 are **first-order estimates** of the distance to the nearest decision boundary,
//! not sound certificates: a small value flags an input the device should not trust.
//!
//! The header `include/certify.h` is generated from this crate by cbindgen and committed; a test
//! fails when it drifts (`CERTIFY_BLESS=1 cargo test -p certify-ffi` rewrites it).
//!
//! Contracts common to every function:
//! - every function returns a [`CertifyStatus`] (or a size, 0 on a null handle) and never
//!   unwinds into C: a Rust panic is caught and reported as [`CertifyStatus::Internal`];
//! - on failure, [`certify_last_error`] gives a message for the calling thread;
//! - handles are opaque; a handle may be used from several threads at once (it is read-only),
//!   each thread with its own scratch buffer;
//! - only [`certify_model_load`], [`certify_model_borrow`] and [`certify_model_free`] allocate
//!   or free; [`certify_model_certify`] and [`certify_model_infer`] work inside the caller's
//!   scratch buffer.
#![warn(missing_docs)]

mod model;
mod status;

pub use model::*;
pub use status::{certify_last_error, certify_version, CertifyStatus};
