//! The model handle and the calls that classify and certify one input.

use std::slice;

use certify_core::compact::{AlignedModel, Certificate, CompactModel, MAX_CLASSES};

use crate::status::{fail, fail_with, guarded, CertifyStatus};

/// The most classes a compact model may have (the length of [`CertifyResult::logits`]).
pub const CERTIFY_MAX_CLASSES: usize = 128;
const _: () = assert!(CERTIFY_MAX_CLASSES == MAX_CLASSES);

/// A loaded, validated compact model (opaque to C).
pub struct CertifyModel {
    /// The model's bytes when [`certify_model_load`] copied them; `None` when borrowed.
    _owned: Option<AlignedModel>,
    /// A view into `_owned`'s heap buffer, or into the caller's bytes for
    /// [`certify_model_borrow`]. The `'static` is a promise kept by this struct (the buffer is
    /// never moved or freed while the handle lives) or by the caller (borrowed bytes).
    model: CompactModel<'static>,
}

/// What [`certify_model_certify`] computes for one input.
///
/// `prop3_bound` and `cor2_estimate` are first-order estimates (Jakubovitz & Giryes, Prop. 3 and
/// Cor. 2) of the ℓ2 distance to the nearest decision boundary, in the units of the model's
/// input; they are `INFINITY` when the Jacobian is zero.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CertifyResult {
    /// The predicted class (the largest logit; the lowest index on ties).
    pub predicted: u32,
    /// The class with the second-largest logit.
    pub runner_up: u32,
    /// The number of classes `K`: `logits[0..K]` are set, the rest are zero.
    pub classes: u32,
    /// The class attaining `cor2_estimate`, or -1 when it is infinite.
    pub cor2_class: i32,
    /// `z_predicted − z_runner_up` (≥ 0).
    pub margin: f64,
    /// `‖∂z/∂x‖_F`, the Frobenius norm of the exact logit Jacobian.
    pub jacobian_fro: f64,
    /// Prop. 3: `margin / (√2·‖J‖_F)`.
    pub prop3_bound: f64,
    /// Cor. 2: `min_{k≠k*} |z_k* − z_k| / ‖∇z_k* − ∇z_k‖₂`.
    pub cor2_estimate: f64,
    /// The logits (pre-softmax).
    pub logits: [f32; CERTIFY_MAX_CLASSES],
}

impl From<&Certificate> for CertifyResult {
    fn from(c: &Certificate) -> Self {
        let mut logits = [0f32; CERTIFY_MAX_CLASSES];
        logits[..c.classes].copy_from_slice(c.logits());
        CertifyResult {
            // Class indices are < MAX_CLASSES = 128, so these conversions are exact.
            predicted: c.predicted as u32,
            runner_up: c.runner_up as u32,
            classes: c.classes as u32,
            cor2_class: c.cor2_class.map_or(-1, |k| k as i32),
            margin: c.margin,
            jacobian_fro: c.jacobian_fro,
            prop3_bound: c.prop3_bound,
            cor2_estimate: c.cor2_estimate,
            logits,
        }
    }
}

/// # Safety
/// `ptr` is null or points to `len` readable bytes.
unsafe fn bytes_arg<'a>(ptr: *const u8, len: usize) -> Option<&'a [u8]> {
    if ptr.is_null() {
        None
    } else {
        // SAFETY: the caller's contract.
        Some(unsafe { slice::from_raw_parts(ptr, len) })
    }
}

/// Validates `len` bytes at `bytes` as a compact model and copies them into a new handle.
///
/// The bytes need no particular alignment and may be freed once this returns. On success
/// `*out` holds the handle (free it with [`certify_model_free`]); on failure `*out` is set to
/// null and the status says why ([`CertifyStatus::InvalidModel`] for any defect in the bytes).
///
/// # Safety
/// `bytes` points to `len` readable bytes; `out` points to writable storage for a pointer.
#[no_mangle]
pub unsafe extern "C" fn certify_model_load(
    bytes: *const u8,
    len: usize,
    out: *mut *mut CertifyModel,
) -> CertifyStatus {
    guarded(|| {
        if out.is_null() {
            return fail(CertifyStatus::NullArgument, "certify_model_load: `out` is null");
        }
        // SAFETY: `out` is non-null and writable by the contract.
        unsafe { *out = std::ptr::null_mut() };
        // SAFETY: the contract on `bytes`.
        let Some(bytes) = (unsafe { bytes_arg(bytes, len) }) else {
            return fail(CertifyStatus::NullArgument, "certify_model_load: `bytes` is null");
        };
        let owned = AlignedModel::new(bytes);
        // SAFETY: the view borrows the heap buffer of `owned`, which moves into the handle
        // with it and is neither changed nor freed before the handle is.
        let view: &'static [u8] = unsafe { slice::from_raw_parts(owned.as_bytes().as_ptr(), owned.as_bytes().len()) };
        match CompactModel::load(view) {
            Ok(model) => {
                let handle = Box::new(CertifyModel { _owned: Some(owned), model });
                // SAFETY: as above.
                unsafe { *out = Box::into_raw(handle) };
                CertifyStatus::Ok
            }
            Err(e) => fail_with(&e),
        }
    })
}

/// Validates `len` bytes at `bytes` as a compact model and uses them in place, without a copy
/// (e.g. a model in flash).
///
/// `bytes` must be 4-byte aligned ([`CertifyStatus::InvalidModel`] otherwise). On failure
/// `*out` is set to null.
///
/// # Safety
/// `bytes` points to `len` readable bytes that stay valid and unchanged until the handle is
/// freed with [`certify_model_free`]; `out` points to writable storage for a pointer.
#[no_mangle]
pub unsafe extern "C" fn certify_model_borrow(
    bytes: *const u8,
    len: usize,
    out: *mut *mut CertifyModel,
) -> CertifyStatus {
    guarded(|| {
        if out.is_null() {
            return fail(CertifyStatus::NullArgument, "certify_model_borrow: `out` is null");
        }
        // SAFETY: `out` is non-null and writable by the contract.
        unsafe { *out = std::ptr::null_mut() };
        // SAFETY: the caller keeps the bytes alive and unchanged for the handle's life.
        let Some(bytes) = (unsafe { bytes_arg::<'static>(bytes, len) }) else {
            return fail(CertifyStatus::NullArgument, "certify_model_borrow: `bytes` is null");
        };
        match CompactModel::load(bytes) {
            Ok(model) => {
                // SAFETY: as above.
                unsafe { *out = Box::into_raw(Box::new(CertifyModel { _owned: None, model })) };
                CertifyStatus::Ok
            }
            Err(e) => fail_with(&e),
        }
    })
}

/// Frees a handle from [`certify_model_load`] or [`certify_model_borrow`]; null is ignored.
///
/// # Safety
/// `model` is null or a handle not freed before; it must not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn certify_model_free(model: *mut CertifyModel) {
    if !model.is_null() {
        // SAFETY: the handle came from Box::into_raw and is freed once (the contract).
        drop(unsafe { Box::from_raw(model) });
    }
}

/// # Safety
/// `model` is null or a live handle.
unsafe fn model_ref<'a>(model: *const CertifyModel) -> Option<&'a CompactModel<'static>> {
    // SAFETY: the caller's contract.
    unsafe { model.as_ref() }.map(|m| &m.model)
}

/// The number of `float` values one input has (`D`, the product of the input shape); 0 for a
/// null handle.
///
/// # Safety
/// `model` is null or a live handle.
#[no_mangle]
pub unsafe extern "C" fn certify_model_input_len(model: *const CertifyModel) -> usize {
    // SAFETY: the contract.
    unsafe { model_ref(model) }.map_or(0, |m| m.input_len())
}

/// The number of classes `K`; 0 for a null handle.
///
/// # Safety
/// `model` is null or a live handle.
#[no_mangle]
pub unsafe extern "C" fn certify_model_num_classes(model: *const CertifyModel) -> usize {
    // SAFETY: the contract.
    unsafe { model_ref(model) }.map_or(0, |m| m.num_classes())
}

/// The scratch bytes [`certify_model_certify`] needs (any alignment); 0 for a null handle.
///
/// # Safety
/// `model` is null or a live handle.
#[no_mangle]
pub unsafe extern "C" fn certify_model_scratch_size(model: *const CertifyModel) -> usize {
    // SAFETY: the contract.
    unsafe { model_ref(model) }.map_or(0, |m| m.scratch_size())
}

/// The scratch bytes [`certify_model_infer`] needs (at most the certify size); 0 for a null
/// handle.
///
/// # Safety
/// `model` is null or a live handle.
#[no_mangle]
pub unsafe extern "C" fn certify_model_infer_scratch_size(model: *const CertifyModel) -> usize {
    // SAFETY: the contract.
    unsafe { model_ref(model) }.map_or(0, |m| m.infer_scratch_size())
}

/// Classifies one input and computes its first-order robustness figures in one call: the
/// forward pass, the exact logit Jacobian, `‖J‖_F`, Prop. 3 and Cor. 2, into `*out`.
///
/// `x` holds `x_len` = [`certify_model_input_len`] floats in the layout the model was exported
/// with (e.g. `[1, 28, 28]` for an MNIST convnet), already scaled as the model expects. The
/// scratch buffer (any alignment, contents on entry irrelevant) needs
/// [`certify_model_scratch_size`] bytes. Allocates nothing.
///
/// # Safety
/// `model` is a live handle; `x` points to `x_len` floats; `scratch` to `scratch_len` writable
/// bytes not used by another thread during the call; `out` to a writable `CertifyResult`.
#[no_mangle]
pub unsafe extern "C" fn certify_model_certify(
    model: *const CertifyModel,
    x: *const f32,
    x_len: usize,
    scratch: *mut u8,
    scratch_len: usize,
    out: *mut CertifyResult,
) -> CertifyStatus {
    guarded(|| {
        // SAFETY: the contract on `model`.
        let Some(m) = (unsafe { model_ref(model) }) else {
            return fail(CertifyStatus::NullArgument, "certify_model_certify: `model` is null");
        };
        if x.is_null() || scratch.is_null() || out.is_null() {
            return fail(CertifyStatus::NullArgument, "certify_model_certify: `x`, `scratch` or `out` is null");
        }
        // SAFETY: non-null, with the lengths of the contract.
        let (x, scratch) =
            unsafe { (slice::from_raw_parts(x, x_len), slice::from_raw_parts_mut(scratch, scratch_len)) };
        match m.certify(x, scratch) {
            Ok(c) => {
                // SAFETY: `out` is non-null and writable.
                unsafe { out.write(CertifyResult::from(&c)) };
                CertifyStatus::Ok
            }
            Err(e) => fail_with(&e),
        }
    })
}

/// Computes the logits of one input only (no Jacobian): `logits_len` must equal
/// [`certify_model_num_classes`], and the scratch needs [`certify_model_infer_scratch_size`]
/// bytes. Allocates nothing.
///
/// # Safety
/// `model` is a live handle; `x` points to `x_len` floats; `scratch` to `scratch_len` writable
/// bytes; `logits` to `logits_len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn certify_model_infer(
    model: *const CertifyModel,
    x: *const f32,
    x_len: usize,
    scratch: *mut u8,
    scratch_len: usize,
    logits: *mut f32,
    logits_len: usize,
) -> CertifyStatus {
    guarded(|| {
        // SAFETY: the contract on `model`.
        let Some(m) = (unsafe { model_ref(model) }) else {
            return fail(CertifyStatus::NullArgument, "certify_model_infer: `model` is null");
        };
        if x.is_null() || scratch.is_null() || logits.is_null() {
            return fail(CertifyStatus::NullArgument, "certify_model_infer: `x`, `scratch` or `logits` is null");
        }
        // SAFETY: non-null, with the lengths of the contract.
        let (x, scratch, logits) = unsafe {
            (
                slice::from_raw_parts(x, x_len),
                slice::from_raw_parts_mut(scratch, scratch_len),
                slice::from_raw_parts_mut(logits, logits_len),
            )
        };
        match m.infer(x, scratch, logits) {
            Ok(()) => CertifyStatus::Ok,
            Err(e) => fail_with(&e),
        }
    })
}
