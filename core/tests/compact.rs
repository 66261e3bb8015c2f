//! The compact format and engine (`certify_core::compact`):
//! - on random small networks of every supported layer kind (and mixtures), `certify`,
//!   `jacobian` and `infer` of the compact model equal the `Network<f32>` path
//!   (`Network::jacobian` + `first_order`) within 1e-5 relative, in `f32` and, against a network
//!   whose weights were rounded to `f16`, in `f16`;
//! - writing refuses unsupported layers naming the node; loading refuses misaligned bytes;
//! - every truncation and every single-byte change of a small model is rejected or runs
//!   without panicking (structure checked with the checksum re-stamped, so the checks behind it
//!   are exercised).

use certify_core::compact::format::{model_crc, CRC_FIELD};
use certify_core::compact::{to_compact, AlignedModel, CompactModel, Precision};
use certify_core::{first_order, Conv2d, Dense, Error, Layer, Network, Pad, Pool2d};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::checks::near_kink;
use crate::strategies::{block, build, config, inputs, kind_case, Block, Case, Kind};

/// The layer kinds the compact format supports.
const SUPPORTED: [Kind; 14] = [
    Kind::Conv2d,
    Kind::MaxPool2d,
    Kind::AvgPool2d,
    Kind::GlobalAvgPool,
    Kind::Dense,
    Kind::Add,
    Kind::Affine,
    Kind::BatchNorm,
    Kind::Relu,
    Kind::LeakyRelu,
    Kind::Clip,
    Kind::Reshape,
    Kind::Pad,
    Kind::Identity,
];

/// Relative tolerance of every comparison.
const TOL: f64 = 1e-5;

/// How many times the `f32` reference's own rounding error a difference may reach on top of
/// `TOL` (two evaluations in different summation orders; see [`close_vec`]).
const ROUNDING: f64 = 8.0;

/// A network of 1–4 supported blocks after a channel mix.
fn mixed_case() -> impl Strategy<Value = Case> {
    let blocks = proptest::sample::select(SUPPORTED.to_vec()).prop_flat_map(block);
    (crate::strategies::input_shape(), 1..=3usize, prop::collection::vec(blocks, 1..=4), 3..=5usize, any::<u64>())
        .prop_map(|(input, mix, rest, classes, seed)| {
            let mut blocks = vec![Block::Mix { out: mix }];
            blocks.extend(rest);
            Case { input, blocks, classes, seed }
        })
}

/// The network with every convolution and dense weight rounded to `f16` (what the `f16`
/// compact model computes with).
fn rounded_to_f16(net: &Network<f32>) -> Network<f32> {
    let mut out = net.clone();
    let r = |w: &mut Vec<f32>| w.iter_mut().for_each(|v| *v = half::f16::from_f32(*v).to_f32());
    for id in 0..out.nodes().len() {
        match out.layer_params_mut(id) {
            Some(Layer::Conv2d(c)) => r(&mut c.weight),
            Some(Layer::Dense(d)) => r(&mut d.weight),
            _ => {}
        }
    }
    out
}

fn max_abs(v: &[f32]) -> f64 {
    v.iter().fold(0.0f64, |m, &x| m.max((x as f64).abs()))
}

/// `‖a − b‖∞ ≤ TOL·‖b‖∞ + ROUNDING·noise` (plus a floor for all-zero vectors), where `noise` is
/// the `f32` reference's own rounding error (its largest difference from the same network in
/// `f64`). The noise term matters when an entry is a sum of terms that nearly cancel: then two
/// correct `f32` evaluations that sum in different orders differ by `ε·Σ|term|`, which can
/// exceed `TOL·‖b‖∞` (CI once saw a 1.06e-5 relative difference on a two-channel 1×1
/// convolution whose products cancelled to 1% of their size).
fn close_vec(what: &str, a: &[f32], b: &[f32], noise: f64) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.len(), b.len(), "{} lengths", what);
    let scale = max_abs(b).max(1e-6);
    let allowed = TOL * scale + ROUNDING * noise;
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        prop_assert!(
            ((x - y) as f64).abs() <= allowed,
            "{}[{}]: compact {} vs network {} (scale {}, f32 rounding noise {})",
            what,
            i,
            x,
            y,
            scale,
            noise
        );
    }
    Ok(())
}

/// `max_i |a_i − b_i|`: how far an `f32` evaluation is from the `f64` one.
fn rounding_noise(a: &[f32], b: &[f64]) -> f64 {
    a.iter().zip(b).fold(0.0f64, |m, (&x, &y)| m.max((x as f64 - y).abs()))
}

/// `|a − b| ≤ TOL·(|b| + floor)`, equal when infinite.
fn close(what: &str, a: f64, b: f64, floor: f64) -> Result<(), TestCaseError> {
    if a.is_infinite() || b.is_infinite() {
        prop_assert_eq!(a, b, "{}", what);
    } else {
        prop_assert!((a - b).abs() <= TOL * (b.abs() + floor), "{}: compact {} vs network {}", what, a, b);
    }
    Ok(())
}

/// Compares the compact model of `net` (in `precision`) with `reference` (the network the
/// compact model should compute exactly) at `x`.
fn compare(net: &Network<f32>, reference: &Network<f32>, precision: Precision, x: &[f32]) -> Result<(), TestCaseError> {
    let bytes = to_compact(net, precision).map_err(|e| TestCaseError::fail(format!("to_compact: {e}")))?;
    let aligned = AlignedModel::new(&bytes);
    let model = CompactModel::load(aligned.as_bytes()).map_err(|e| TestCaseError::fail(format!("load: {e}")))?;
    prop_assert_eq!(model.precision(), precision);
    prop_assert_eq!((model.input_len(), model.num_classes()), (net.input_len(), net.num_classes()));
    let mut scratch = vec![0xA5u8; model.scratch_size() + 1];
    // An odd start: the engine aligns the scratch itself.
    let cert = model.certify(x, &mut scratch[1..]).map_err(|e| TestCaseError::fail(format!("certify: {e}")))?;
    let j = reference.jacobian(x, 1).map_err(|e| TestCaseError::fail(format!("jacobian: {e}")))?;
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let j64 = reference.cast::<f64>().jacobian(&x64, 1).map_err(|e| TestCaseError::fail(format!("jacobian: {e}")))?;
    let logit_noise = rounding_noise(j.logits_of(0), j64.logits_of(0));
    let jacobian_noise = rounding_noise(j.jacobian_of(0), j64.jacobian_of(0));
    let want = first_order(j.logits_of(0), j.jacobian_of(0));
    close_vec("logits", cert.logits(), j.logits_of(0), logit_noise)?;
    let (k, d) = (net.num_classes(), net.input_len());
    let mut logits = vec![0f32; k];
    let mut jac = vec![0f32; k * d];
    model.jacobian(x, &mut scratch, &mut logits, &mut jac).map_err(|e| TestCaseError::fail(format!("{e}")))?;
    close_vec("jacobian", &jac, j.jacobian_of(0), jacobian_noise)?;
    prop_assert_eq!(&logits[..], cert.logits());
    let mut small = vec![0u8; model.infer_scratch_size()];
    let mut z = vec![0f32; k];
    model.infer(x, &mut small, &mut z).map_err(|e| TestCaseError::fail(format!("infer: {e}")))?;
    prop_assert_eq!(&z[..], cert.logits());
    let zscale = max_abs(j.logits_of(0));
    let margin_gap = (want.margin - first_order(&logits, &jac).margin).abs();
    if want.margin < 1e-3 * zscale.max(1e-3) || margin_gap > 0.0 && want.predicted != cert.predicted {
        // A near tie: the predicted class is not stable under rounding.
        return Err(TestCaseError::reject("near tie between the top two logits"));
    }
    prop_assert_eq!((cert.predicted, cert.runner_up), (want.predicted, want.runner_up));
    close("margin", cert.margin, want.margin, zscale)?;
    close("jacobian_fro", cert.jacobian_fro, want.jacobian_fro, 0.0)?;
    let fro = want.jacobian_fro.max(1e-12);
    close("prop3_bound", cert.prop3_bound, want.prop3_bound, zscale / fro)?;
    close("cor2_estimate", cert.cor2_estimate, want.cor2_estimate, zscale / fro)?;
    Ok(())
}

fn check_case(case: &Case) -> Result<(), TestCaseError> {
    let net64 = build(case);
    let x64 = inputs(case, &net64, 1);
    let trace = net64.trace(&x64, 1).map_err(|e| TestCaseError::fail(format!("{e}")))?;
    if let Some(why) = near_kink(&net64, &trace) {
        return Err(TestCaseError::reject(why));
    }
    let net = net64.cast::<f32>();
    let x: Vec<f32> = x64.iter().map(|&v| v as f32).collect();
    compare(&net, &net, Precision::F32, &x)?;
    compare(&net, &rounded_to_f16(&net), Precision::F16, &x)
}

macro_rules! per_kind {
    ($($name:ident => $kind:expr;)*) => {
        proptest! {
            #![proptest_config(config())]
            $(
                #[test]
                fn $name(case in kind_case($kind)) {
                    check_case(&case)?;
                }
            )*

            #[test]
            fn mixed(case in mixed_case()) {
                check_case(&case)?;
            }
        }
    };
}

per_kind! {
    conv2d => Kind::Conv2d;
    max_pool2d => Kind::MaxPool2d;
    avg_pool2d => Kind::AvgPool2d;
    global_avg_pool => Kind::GlobalAvgPool;
    dense => Kind::Dense;
    add => Kind::Add;
    affine => Kind::Affine;
    batch_norm => Kind::BatchNorm;
    relu => Kind::Relu;
    leaky_relu => Kind::LeakyRelu;
    clip => Kind::Clip;
    reshape => Kind::Reshape;
    pad => Kind::Pad;
    identity => Kind::Identity;
}

/// A small network with every structural feature: conv (padding, stride, bias), pooling of both
/// kinds, pad, a residual add, dense.
fn small_net() -> Network<f32> {
    let mut net = Network::<f32>::new(&[1, 6, 6]).unwrap();
    let w = |n: usize| (0..n).map(|i| ((i * 7 % 11) as f32 - 5.0) / 8.0).collect::<Vec<f32>>();
    let conv = Conv2d {
        weight: w(2 * 9),
        bias: Some(vec![0.1, -0.2]),
        out_channels: 2,
        in_channels: 1,
        kernel: [3, 3],
        stride: [1, 1],
        padding: [1, 1, 1, 1],
        dilation: [1, 1],
        groups: 1,
    };
    let c = net.then("conv", Layer::Conv2d(conv)).unwrap();
    let r = net.then("relu", Layer::Relu).unwrap();
    net.push("add", Layer::Add, &[c, r]).unwrap();
    let pool = Pool2d { kernel: [2, 2], stride: [2, 2], padding: [0; 4], count_include_pad: false, ceil_mode: false };
    net.then("max", Layer::MaxPool2d(pool.clone())).unwrap();
    net.then("pad", Layer::Pad(Pad { begin: vec![0, 1, 0], end: vec![0, 0, 1], value: 0.5 })).unwrap();
    net.then("avg", Layer::AvgPool2d(pool)).unwrap();
    net.then("flat", Layer::Reshape { shape: vec![8] }).unwrap();
    net.then("fc", Layer::Dense(Dense { weight: w(24), bias: Some(vec![0.0, 0.1, 0.2]), inputs: 8, outputs: 3 }))
        .unwrap();
    net
}

fn input(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 5 % 13) as f32) / 13.0).collect()
}

#[test]
fn small_net_matches_network_in_both_precisions() {
    let net = small_net();
    let x = input(net.input_len());
    compare(&net, &net, Precision::F32, &x).unwrap();
    compare(&net, &rounded_to_f16(&net), Precision::F16, &x).unwrap();
}

#[test]
fn f16_model_is_about_half_the_size() {
    let mut net = Network::<f32>::new(&[64]).unwrap();
    net.then("fc", Layer::Dense(Dense { weight: vec![0.5; 64 * 64], bias: None, inputs: 64, outputs: 64 })).unwrap();
    net.then("fc2", Layer::Dense(Dense { weight: vec![0.5; 64 * 2], bias: None, inputs: 64, outputs: 2 })).unwrap();
    let f32_len = to_compact(&net, Precision::F32).unwrap().len();
    let f16_len = to_compact(&net, Precision::F16).unwrap().len();
    assert!(f32_len > 4 * 64 * 66 && f16_len < f32_len / 2 + 512, "{f32_len} {f16_len}");
}

#[test]
fn unsupported_layers_are_named() {
    let mut net = Network::<f32>::new(&[4]).unwrap();
    net.then("squash", Layer::Sigmoid).unwrap();
    net.then("fc", Layer::Dense(Dense { weight: vec![1.0; 8], bias: None, inputs: 4, outputs: 2 })).unwrap();
    let e = to_compact(&net, Precision::F32).unwrap_err();
    assert!(matches!(&e, Error::CompactUnsupported { node, kind: "Sigmoid", .. } if node == "squash"), "{e}");
    assert!(e.to_string().contains("node `squash` (Sigmoid)"), "{e}");

    let mut net = Network::<f32>::new(&[2]).unwrap();
    net.then("fc", Layer::Dense(Dense { weight: vec![1e6, 0.0, 0.0, 1.0], bias: None, inputs: 2, outputs: 2 }))
        .unwrap();
    let e = to_compact(&net, Precision::F16).unwrap_err();
    assert!(e.to_string().contains("outside the f16 range"), "{e}");
    assert!(to_compact(&net, Precision::F32).is_ok());
}

#[test]
fn bad_buffers_are_errors() {
    let net = small_net();
    let bytes = to_compact(&net, Precision::F32).unwrap();
    let mut words = vec![0u32; bytes.len() / 4 + 2];
    let raw: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
    raw[1..1 + bytes.len()].copy_from_slice(&bytes);
    let e = CompactModel::load(&raw[1..1 + bytes.len()]).unwrap_err();
    assert!(matches!(e, Error::Misaligned { align: 4, offset: 1, .. }), "{e}");
    assert!(e.to_string().contains("4-byte aligned"), "{e}");

    let aligned = AlignedModel::new(&bytes);
    let model = CompactModel::load(aligned.as_bytes()).unwrap();
    let x = input(net.input_len());
    let mut scratch = vec![0u8; model.scratch_size() - 1];
    assert!(matches!(model.certify(&x, &mut scratch), Err(Error::ScratchTooSmall { .. })));
    let mut scratch = vec![0u8; model.scratch_size()];
    assert!(matches!(model.certify(&x[1..], &mut scratch), Err(Error::DataLength { .. })));
    let mut bad = x.clone();
    bad[3] = f32::NAN;
    assert_eq!(model.certify(&bad, &mut scratch), Err(Error::NonFinite { index: 3 }));
    let mut logits = [0f32; 2];
    assert!(matches!(model.infer(&x, &mut scratch, &mut logits), Err(Error::DataLength { .. })));
    // Trailing bytes (flash padding) are ignored.
    let mut padded = bytes.clone();
    padded.extend_from_slice(&[0xFF; 16]);
    let padded = AlignedModel::new(&padded);
    assert!(CompactModel::load(padded.as_bytes()).is_ok());
}

/// Loads the (possibly corrupt) bytes and, when they validate, runs every entry point.
fn exercise(bytes: &[u8], x: &[f32]) -> bool {
    let aligned = AlignedModel::new(bytes);
    match CompactModel::load(aligned.as_bytes()) {
        Err(e) => {
            assert!(!e.to_string().is_empty());
            false
        }
        Ok(m) => {
            let mut scratch = vec![0u8; m.scratch_size()];
            if x.len() == m.input_len() {
                let _ = m.certify(x, &mut scratch);
                let mut z = vec![0f32; m.num_classes()];
                let _ = m.infer(x, &mut scratch, &mut z);
            }
            true
        }
    }
}

fn restamp(bytes: &mut [u8]) {
    if bytes.len() >= 64 {
        let crc = model_crc(bytes);
        bytes[CRC_FIELD..CRC_FIELD + 4].copy_from_slice(&crc.to_le_bytes());
    }
}

#[test]
fn every_truncation_is_rejected() {
    for precision in [Precision::F32, Precision::F16] {
        let bytes = to_compact(&small_net(), precision).unwrap();
        for n in 0..bytes.len() {
            assert!(!exercise(&bytes[..n], &[]), "truncation to {n} bytes loaded");
            let mut cut = bytes[..n].to_vec();
            restamp(&mut cut);
            assert!(!exercise(&cut, &[]), "truncation to {n} bytes with a fresh checksum loaded");
        }
    }
}

#[test]
fn every_byte_change_is_rejected_or_safe() {
    let net = small_net();
    let x = input(net.input_len());
    for precision in [Precision::F32, Precision::F16] {
        let bytes = to_compact(&net, precision).unwrap();
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xFF, 0x10] {
                let mut b = bytes.clone();
                b[i] ^= flip;
                // The checksum catches every change of a byte.
                assert!(!exercise(&b, &x), "byte {i} ^ {flip:#x} passed the checksum");
                // With the checksum re-stamped the structural checks must hold the line: the
                // change is rejected, or it is one that describes another valid model (a weight,
                // a float parameter, a tensor offset moved inside the data), which then runs.
                restamp(&mut b);
                exercise(&b, &x);
            }
        }
    }
}
