//! The C API called from Rust: results equal the engine's, and every misuse gets its status and
//! a message.

use std::ffi::CStr;
use std::ptr;

use certify_core::compact::{AlignedModel, CompactModel, Precision};
use certify_ffi::*;

use crate::support::{compact_example, image, raw_idx_images};

fn last_error() -> String {
    // SAFETY: certify_last_error never returns null and the string lives until the next call.
    unsafe { CStr::from_ptr(certify_last_error()) }.to_string_lossy().into_owned()
}

fn load(bytes: &[u8]) -> (CertifyStatus, *mut CertifyModel) {
    let mut out = ptr::null_mut();
    // SAFETY: a valid slice and a valid out pointer.
    let status = unsafe { certify_model_load(bytes.as_ptr(), bytes.len(), &mut out) };
    (status, out)
}

fn certify(model: *const CertifyModel, x: &[f32], scratch: &mut [u8]) -> (CertifyStatus, CertifyResult) {
    let mut out = std::mem::MaybeUninit::<CertifyResult>::zeroed();
    // SAFETY: valid slices and out pointer; `model` is live.
    let status = unsafe {
        certify_model_certify(model, x.as_ptr(), x.len(), scratch.as_mut_ptr(), scratch.len(), out.as_mut_ptr())
    };
    // SAFETY: zeroed is a valid CertifyResult (plain numbers).
    (status, unsafe { out.assume_init() })
}

#[test]
fn results_equal_the_engine_for_both_precisions() {
    let raw = raw_idx_images();
    for precision in [Precision::F32, Precision::F16] {
        let bytes = compact_example(precision);
        let (status, handle) = load(&bytes);
        assert_eq!(status, CertifyStatus::Ok, "{}", last_error());
        let aligned = AlignedModel::new(&bytes);
        let engine = CompactModel::load(aligned.as_bytes()).unwrap();
        // SAFETY: live handle.
        let (d, k, scratch_len, infer_len) = unsafe {
            (
                certify_model_input_len(handle),
                certify_model_num_classes(handle),
                certify_model_scratch_size(handle),
                certify_model_infer_scratch_size(handle),
            )
        };
        assert_eq!((d, k, scratch_len, infer_len), (784, 10, engine.scratch_size(), engine.infer_scratch_size()));
        assert!(infer_len <= scratch_len);
        let mut scratch = vec![0u8; scratch_len];
        let mut engine_scratch = vec![0u8; scratch_len];
        for i in 0..10 {
            let x = image(&raw, i);
            let (status, r) = certify(handle, &x, &mut scratch);
            assert_eq!(status, CertifyStatus::Ok, "{}", last_error());
            assert_eq!(last_error(), "");
            let c = engine.certify(&x, &mut engine_scratch).unwrap();
            assert_eq!(
                (r.predicted as usize, r.runner_up as usize, r.classes as usize),
                (c.predicted, c.runner_up, 10)
            );
            assert_eq!(r.cor2_class, c.cor2_class.map_or(-1, |k| k as i32));
            assert_eq!(
                [r.margin, r.jacobian_fro, r.prop3_bound, r.cor2_estimate].map(f64::to_bits),
                [c.margin, c.jacobian_fro, c.prop3_bound, c.cor2_estimate].map(f64::to_bits)
            );
            assert_eq!(&r.logits[..10], c.logits());
            assert!(r.logits[10..].iter().all(|&v| v == 0.0));
            let mut logits = [0f32; 10];
            // SAFETY: valid buffers of the stated lengths.
            let status = unsafe {
                certify_model_infer(handle, x.as_ptr(), d, scratch.as_mut_ptr(), infer_len, logits.as_mut_ptr(), 10)
            };
            assert_eq!(status, CertifyStatus::Ok, "{}", last_error());
            assert_eq!(&logits[..], c.logits());
        }
        // SAFETY: freed once.
        unsafe { certify_model_free(handle) };
    }
}

#[test]
fn borrowing_uses_the_bytes_in_place_and_refuses_misaligned_ones() {
    let aligned = AlignedModel::new(&compact_example(Precision::F16));
    let bytes = aligned.as_bytes();
    let mut out = ptr::null_mut();
    // SAFETY: `aligned` outlives the handle (freed below).
    assert_eq!(unsafe { certify_model_borrow(bytes.as_ptr(), bytes.len(), &mut out) }, CertifyStatus::Ok);
    let x = image(&raw_idx_images(), 0);
    // SAFETY: live handle.
    let mut scratch = vec![0u8; unsafe { certify_model_scratch_size(out) }];
    assert_eq!(certify(out, &x, &mut scratch).0, CertifyStatus::Ok);
    // SAFETY: freed once.
    unsafe { certify_model_free(out) };

    // The same bytes one byte past an aligned address.
    let mut shifted = vec![0u32; bytes.len() / 4 + 2];
    let shifted_bytes = &mut bytemuck_bytes(&mut shifted)[1..=bytes.len()];
    shifted_bytes.copy_from_slice(bytes);
    let mut out = std::ptr::dangling_mut::<CertifyModel>(); // overwritten with null on failure
                                                            // SAFETY: valid slice; the call fails and keeps no reference.
    let status = unsafe { certify_model_borrow(shifted_bytes.as_ptr(), shifted_bytes.len(), &mut out) };
    assert_eq!(status, CertifyStatus::InvalidModel);
    assert!(out.is_null(), "a failed call sets *out to null");
    assert!(last_error().contains("aligned"), "{}", last_error());
    // Loading by copy accepts any alignment.
    let (status, handle) = load(shifted_bytes);
    assert_eq!(status, CertifyStatus::Ok, "{}", last_error());
    // SAFETY: freed once.
    unsafe { certify_model_free(handle) };
}

fn bytemuck_bytes(words: &mut [u32]) -> &mut [u8] {
    // SAFETY: u32 has no invalid bit patterns and u8 alignment is 1.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 4) }
}

#[test]
fn corrupt_and_truncated_models_are_refused_with_a_message() {
    let bytes = compact_example(Precision::F32);
    let mut bad_magic = bytes.clone();
    bad_magic[0] ^= 0xff;
    let cases: [(&str, &[u8]); 4] = [
        ("magic", &bad_magic),
        ("truncated", &bytes[..bytes.len() / 2]),
        ("header only", &bytes[..64]),
        ("empty", &[]),
    ];
    for (what, b) in cases {
        let (status, handle) = load(b);
        assert_eq!(status, CertifyStatus::InvalidModel, "{what}");
        assert!(handle.is_null(), "{what}");
        assert!(last_error().starts_with("invalid compact model"), "{what}: {}", last_error());
    }
    // A flipped weight byte is caught by the checksum.
    let mut flipped = bytes.clone();
    let at = bytes.len() - 5;
    flipped[at] ^= 0x10;
    assert_eq!(load(&flipped).0, CertifyStatus::InvalidModel, "{}", last_error());
}

#[test]
fn misuse_gets_its_status_and_message() {
    let bytes = compact_example(Precision::F32);
    let mut out = ptr::null_mut();
    // SAFETY: null pointers are part of what is being tested; the API checks them.
    unsafe {
        assert_eq!(certify_model_load(ptr::null(), 10, &mut out), CertifyStatus::NullArgument);
        assert!(last_error().contains("`bytes` is null"), "{}", last_error());
        assert_eq!(certify_model_load(bytes.as_ptr(), bytes.len(), ptr::null_mut()), CertifyStatus::NullArgument);
        assert_eq!(certify_model_scratch_size(ptr::null()), 0);
        assert_eq!(certify_model_input_len(ptr::null()), 0);
        certify_model_free(ptr::null_mut());
    }
    let (_, handle) = load(&bytes);
    // SAFETY: live handle.
    let mut scratch = vec![0u8; unsafe { certify_model_scratch_size(handle) }];
    let x = image(&raw_idx_images(), 3);

    let (status, _) = certify(handle, &x[..783], &mut scratch);
    assert_eq!(status, CertifyStatus::BadInput);
    assert!(last_error().contains("783") && last_error().contains("784"), "{}", last_error());

    let mut nan = x.clone();
    nan[100] = f32::NAN;
    assert_eq!(certify(handle, &nan, &mut scratch).0, CertifyStatus::BadInput);
    assert!(last_error().contains("100"), "{}", last_error());

    let short = scratch.len() - 1;
    assert_eq!(certify(handle, &x, &mut scratch[..short]).0, CertifyStatus::ScratchTooSmall);
    assert!(last_error().contains("scratch"), "{}", last_error());

    // SAFETY: null out pointer, checked by the API.
    let status = unsafe {
        certify_model_certify(handle, x.as_ptr(), x.len(), scratch.as_mut_ptr(), scratch.len(), ptr::null_mut())
    };
    assert_eq!(status, CertifyStatus::NullArgument);
    // SAFETY: null handle, checked by the API.
    let status = unsafe {
        let mut r = std::mem::MaybeUninit::<CertifyResult>::zeroed();
        certify_model_certify(ptr::null(), x.as_ptr(), x.len(), scratch.as_mut_ptr(), scratch.len(), r.as_mut_ptr())
    };
    assert_eq!(status, CertifyStatus::NullArgument);
    let mut logits = [0f32; 9];
    // SAFETY: valid buffers; the logits length is wrong on purpose.
    let status = unsafe {
        certify_model_infer(handle, x.as_ptr(), x.len(), scratch.as_mut_ptr(), scratch.len(), logits.as_mut_ptr(), 9)
    };
    assert_eq!(status, CertifyStatus::BadInput);

    // A success clears the message.
    assert_eq!(certify(handle, &x, &mut scratch).0, CertifyStatus::Ok);
    assert_eq!(last_error(), "");
    // SAFETY: freed once.
    unsafe { certify_model_free(handle) };
    // SAFETY: a static string.
    let version = unsafe { CStr::from_ptr(certify_version()) }.to_str().unwrap();
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
}

#[test]
fn one_handle_serves_several_threads() {
    let bytes = compact_example(Precision::F16);
    let (_, handle) = load(&bytes);
    let handle = handle as usize; // raw pointers are not Send; the handle is read-only
    let raw = raw_idx_images();
    let serial: Vec<u64> = (0..8)
        .map(|i| {
            // SAFETY: live handle.
            let mut scratch = vec![0u8; unsafe { certify_model_scratch_size(handle as *const _) }];
            certify(handle as *const _, &image(&raw, i), &mut scratch).1.prop3_bound.to_bits()
        })
        .collect();
    let parallel: Vec<u64> = std::thread::scope(|s| {
        let jobs: Vec<_> = (0..8)
            .map(|i| {
                let raw = &raw;
                s.spawn(move || {
                    // SAFETY: live handle; each thread has its own scratch.
                    let mut scratch = vec![0u8; unsafe { certify_model_scratch_size(handle as *const _) }];
                    certify(handle as *const _, &image(raw, i), &mut scratch).1.prop3_bound.to_bits()
                })
            })
            .collect();
        jobs.into_iter().map(|j| j.join().unwrap()).collect()
    });
    assert_eq!(serial, parallel);
    // SAFETY: freed once, after the threads ended.
    unsafe { certify_model_free(handle as *mut _) };
}

#[test]
fn scratch_contents_on_entry_do_not_matter() {
    let bytes = compact_example(Precision::F32);
    let (_, handle) = load(&bytes);
    let x = image(&raw_idx_images(), 0);
    // SAFETY: live handle.
    let len = unsafe { certify_model_scratch_size(handle) };
    let mut zeroed = vec![0u8; len];
    let mut dirty = vec![0x40u8; len]; // every f32 in it reads 3.0039
    let (a, b) = (certify(handle, &x, &mut zeroed).1, certify(handle, &x, &mut dirty).1);
    assert_eq!(
        [a.margin, a.jacobian_fro, a.prop3_bound, a.cor2_estimate].map(f64::to_bits),
        [b.margin, b.jacobian_fro, b.prop3_bound, b.cor2_estimate].map(f64::to_bits)
    );
    // SAFETY: freed once.
    unsafe { certify_model_free(handle) };
}
