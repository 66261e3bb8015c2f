//! The compact engine allocates nothing: `CompactModel::load`, `certify`, `jacobian` and `infer`
//! run under a counting global allocator (this file is its own test binary so the allocator
//! does not affect other tests) and must leave the count at zero.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use certify_core::compact::{to_compact, AlignedModel, CompactModel, Precision};
use certify_core::{Conv2d, Dense, Layer, Network, Pad, Pool2d};

/// Counts allocations and reallocations while `COUNTING` is set.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::SeqCst) {
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::SeqCst) {
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: forwarded contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Every layer kind the format supports, in one network.
fn net() -> Network<f32> {
    let mut net = Network::<f32>::new(&[1, 8, 8]).unwrap();
    let w = |n: usize| (0..n).map(|i| ((i * 7 % 11) as f32 - 5.0) / 8.0).collect::<Vec<f32>>();
    let conv = Conv2d {
        weight: w(3 * 9),
        bias: Some(vec![0.1, -0.2, 0.05]),
        out_channels: 3,
        in_channels: 1,
        kernel: [3, 3],
        stride: [1, 1],
        padding: [1, 1, 1, 1],
        dilation: [1, 1],
        groups: 1,
    };
    let c = net.then("conv", Layer::Conv2d(conv)).unwrap();
    let r = net.then("leaky", Layer::LeakyRelu { alpha: 0.1 }).unwrap();
    net.push("add", Layer::Add, &[c, r]).unwrap();
    net.then("clip", Layer::Clip { min: -1.0, max: 2.0 }).unwrap();
    let bn = certify_core::BatchNorm {
        gamma: vec![1.0, 0.5, 2.0],
        beta: vec![0.0, 0.1, -0.1],
        mean: vec![0.1, 0.0, 0.2],
        var: vec![1.0, 2.0, 0.5],
        epsilon: 1e-5,
    };
    net.then("bn", Layer::BatchNorm(bn)).unwrap();
    let pool = Pool2d { kernel: [2, 2], stride: [2, 2], padding: [0; 4], count_include_pad: false, ceil_mode: false };
    net.then("max", Layer::MaxPool2d(pool.clone())).unwrap();
    net.then("relu", Layer::Relu).unwrap();
    net.then("pad", Layer::Pad(Pad { begin: vec![0, 1, 1], end: vec![0, 1, 1], value: 0.0 })).unwrap();
    net.then("avg", Layer::AvgPool2d(pool)).unwrap();
    net.then("id", Layer::Identity).unwrap();
    let g = net.then("gap", Layer::GlobalAvgPool).unwrap();
    net.then("flat", Layer::Reshape { shape: vec![3] }).unwrap();
    let a = certify_core::Affine { scale: vec![1.0, 2.0, 0.5], shift: vec![0.0, 0.1, 0.2] };
    net.then("affine", Layer::Affine(a)).unwrap();
    net.then("fc", Layer::Dense(Dense { weight: w(12), bias: Some(vec![0.0, 0.1, 0.2, 0.3]), inputs: 3, outputs: 4 }))
        .unwrap();
    assert!(g > 0);
    net
}

#[test]
fn load_and_certify_allocate_nothing() {
    let net = net();
    let x: Vec<f32> = (0..net.input_len()).map(|i| (i % 9) as f32 / 9.0).collect();
    for precision in [Precision::F32, Precision::F16] {
        let aligned = AlignedModel::new(&to_compact(&net, precision).unwrap());
        let bytes = aligned.as_bytes();
        let mut scratch = vec![0u8; 1 << 16];
        let mut logits = vec![0f32; 4];
        let mut jac = vec![0f32; 4 * net.input_len()];
        ALLOCATIONS.store(0, Ordering::SeqCst);
        COUNTING.store(true, Ordering::SeqCst);
        let model = CompactModel::load(bytes).unwrap();
        let need = model.scratch_size();
        let cert = model.certify(&x, &mut scratch[..need]).unwrap();
        model.jacobian(&x, &mut scratch[..need], &mut logits, &mut jac).unwrap();
        model.infer(&x, &mut scratch[..model.infer_scratch_size()], &mut logits).unwrap();
        let bad = model.certify(&x[1..], &mut scratch[..need]);
        COUNTING.store(false, Ordering::SeqCst);
        assert!(bad.is_err());
        assert_eq!(ALLOCATIONS.load(Ordering::SeqCst), 0, "{precision:?}: the compact path allocated");
        assert!(cert.jacobian_fro > 0.0 && cert.prop3_bound.is_finite());
        assert!(need < 1 << 16);
    }
}
