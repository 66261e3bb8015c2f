//! The GPU path against the CPU reference on random inputs and random small networks.
//!
//! Tolerance: a GPU value `g` agrees with the CPU value `c` when `|g − c| ≤ 1e-4·max(|c|, f)`,
//! where the floor `f` is 1% of the largest `|c|` of that array (so that entries cancelling to
//! nearly zero, whose rounding differs with the summation order, are measured against the
//! array's scale). Per-input figures (margin, ‖J‖_F, Prop. 3, Cor. 2) are compared elementwise
//! at 1e-4 relative, and predicted / runner-up / Cor. 2 classes exactly.

use std::io::Read;
use std::path::PathBuf;

use certify_core::train::Rng;
use certify_core::{Affine, BatchNorm, Conv2d, Dense, Layer, Network, Pool2d};
use certify_gpu::{Error, GpuCertifier, GpuContext};

/// The device, or `None` (with the reason printed) when there is none and `REQUIRE_GPU` is not 1.
pub(crate) fn context() -> Option<GpuContext> {
    match GpuContext::new() {
        Ok(c) => Some(c),
        Err(e) => {
            if std::env::var("REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("REQUIRE_GPU=1 but no usable GPU: {e}");
            }
            eprintln!("skipping GPU test: {e}");
            None
        }
    }
}

pub(crate) fn uniform(rng: &mut Rng, n: usize, s: f64) -> Vec<f32> {
    (0..n).map(|_| ((rng.uniform() * 2.0 - 1.0) * s) as f32).collect()
}

pub(crate) fn assert_close(what: &str, gpu: &[f32], cpu: &[f32]) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths");
    let scale = cpu.iter().fold(0f32, |m, v| m.max(v.abs()));
    let floor = 1e-2 * scale;
    for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
        let tol = 1e-4 * c.abs().max(floor).max(f32::MIN_POSITIVE);
        assert!((g - c).abs() <= tol, "{what}[{i}]: GPU {g} vs CPU {c} (tolerance {tol}, array scale {scale})");
    }
}

fn assert_rel(what: &str, g: f64, c: f64) {
    if c.is_infinite() || g.is_infinite() {
        assert_eq!(g, c, "{what}");
        return;
    }
    assert!((g - c).abs() <= 1e-4 * c.abs().max(1e-12), "{what}: GPU {g} vs CPU {c}");
}

/// Logits and Jacobians of `net` on `batch` random inputs, GPU against CPU.
fn check_jacobians(ctx: &GpuContext, net: &Network<f32>, batch: usize, seed: u64, what: &str) {
    let mut rng = Rng::new(seed);
    let x = uniform(&mut rng, batch * net.input_len(), 1.0);
    let gpu = GpuCertifier::new(ctx, net).unwrap_or_else(|e| panic!("{what}: {e}"));
    let g = gpu.jacobians(&x, batch).unwrap_or_else(|e| panic!("{what}: {e}"));
    let c = net.jacobian(&x, batch).unwrap();
    assert_close(&format!("{what}: logits"), &g.logits, &c.logits);
    assert_close(&format!("{what}: jacobian"), &g.jacobian, &c.jacobian);
}

fn single(input: &[usize], layer: Layer<f32>) -> Network<f32> {
    let mut net = Network::new(input).unwrap();
    net.then("layer", layer).unwrap();
    net
}

pub(crate) fn conv(rng: &mut Rng, cin: usize, cout: usize, k: [usize; 2], groups: usize, bias: bool) -> Conv2d<f32> {
    Conv2d {
        weight: uniform(rng, cout * (cin / groups) * k[0] * k[1], 0.5),
        bias: bias.then(|| uniform(rng, cout, 0.5)),
        out_channels: cout,
        in_channels: cin,
        kernel: k,
        stride: [1, 1],
        padding: [0; 4],
        dilation: [1, 1],
        groups,
    }
}

fn pool(kernel: [usize; 2], stride: [usize; 2], padding: [usize; 4], include: bool, ceil: bool) -> Pool2d {
    Pool2d { kernel, stride, padding, count_include_pad: include, ceil_mode: ceil }
}

#[test]
fn conv2d_forward_and_input_gradient() {
    let Some(ctx) = context() else { return };
    let mut rng = Rng::new(1);
    let plain = conv(&mut rng, 2, 3, [3, 3], 1, true);
    check_jacobians(&ctx, &single(&[2, 6, 6], Layer::Conv2d(plain)), 3, 10, "conv 3x3");
    let mut strided = conv(&mut rng, 4, 6, [3, 2], 2, false);
    strided.stride = [2, 1];
    strided.padding = [1, 0, 2, 1];
    strided.dilation = [1, 2];
    check_jacobians(&ctx, &single(&[4, 7, 6], Layer::Conv2d(strided)), 2, 11, "conv strided/padded/dilated/grouped");
    let mut depthwise = conv(&mut rng, 3, 3, [2, 2], 3, true);
    depthwise.stride = [2, 2];
    depthwise.padding = [1, 1, 1, 1];
    check_jacobians(&ctx, &single(&[3, 5, 5], Layer::Conv2d(depthwise)), 2, 12, "conv depthwise");
}

#[test]
fn dense_forward_and_input_gradient() {
    let Some(ctx) = context() else { return };
    let mut rng = Rng::new(2);
    let d =
        Dense { weight: uniform(&mut rng, 7 * 13, 0.5), bias: Some(uniform(&mut rng, 7, 0.5)), inputs: 13, outputs: 7 };
    check_jacobians(&ctx, &single(&[13], Layer::Dense(d)), 4, 20, "dense");
    // On the last axis of a rank-2 sample, without bias.
    let d = Dense { weight: uniform(&mut rng, 5 * 4, 0.5), bias: None, inputs: 4, outputs: 5 };
    check_jacobians(&ctx, &single(&[3, 4], Layer::Dense(d)), 2, 21, "dense on the last axis");
}

#[test]
fn activations_forward_and_input_gradient() {
    let Some(ctx) = context() else { return };
    for (name, layer) in [
        ("relu", Layer::Relu),
        ("leaky relu", Layer::LeakyRelu { alpha: 0.1 }),
        ("clip", Layer::Clip { min: -0.3, max: 0.6 }),
        ("identity", Layer::Identity),
    ] {
        check_jacobians(&ctx, &single(&[2, 3, 3], layer), 3, 30, name);
    }
    check_jacobians(&ctx, &single(&[2, 3, 3], Layer::Reshape { shape: vec![18] }), 2, 31, "reshape");
}

#[test]
fn pooling_forward_and_input_gradient() {
    let Some(ctx) = context() else { return };
    let cases = [
        ("max 2x2/2", true, pool([2, 2], [2, 2], [0; 4], false, false), [2, 6, 6]),
        ("max 3x3/2 padded ceil", true, pool([3, 3], [2, 2], [1, 1, 1, 1], false, true), [2, 7, 6]),
        ("max 3x2/1 overlapping", true, pool([3, 2], [1, 1], [0, 1, 0, 0], false, false), [1, 5, 5]),
        ("avg 2x2/2", false, pool([2, 2], [2, 2], [0; 4], false, false), [2, 6, 6]),
        ("avg 3x3/2 padded, pad counted, ceil", false, pool([3, 3], [2, 2], [1, 1, 1, 1], true, true), [2, 6, 7]),
        ("avg 3x3/2 padded, pad not counted", false, pool([3, 3], [2, 2], [1, 0, 2, 1], false, false), [1, 7, 7]),
    ];
    for (name, max, p, shape) in cases {
        let layer = if max { Layer::MaxPool2d(p) } else { Layer::AvgPool2d(p) };
        check_jacobians(&ctx, &single(&shape, layer), 3, 40, name);
    }
}

#[test]
fn affine_batchnorm_add_forward_and_input_gradient() {
    let Some(ctx) = context() else { return };
    let mut rng = Rng::new(5);
    let a = Affine { scale: uniform(&mut rng, 18, 2.0), shift: uniform(&mut rng, 18, 1.0) };
    check_jacobians(&ctx, &single(&[2, 3, 3], Layer::Affine(a)), 3, 50, "affine");
    let bn = BatchNorm {
        gamma: uniform(&mut rng, 3, 2.0),
        beta: uniform(&mut rng, 3, 1.0),
        mean: uniform(&mut rng, 3, 1.0),
        var: uniform(&mut rng, 3, 1.0).iter().map(|v| v.abs() + 0.1).collect(),
        epsilon: 1e-5,
    };
    check_jacobians(&ctx, &single(&[3, 2, 4], Layer::BatchNorm(bn)), 3, 51, "batch norm");
    // A residual block: the input reaches the sum directly and through a convolution.
    let mut net = Network::new(&[2, 5, 5]).unwrap();
    let mut c = conv(&mut rng, 2, 2, [3, 3], 1, true);
    c.padding = [1, 1, 1, 1];
    let body = net.then("conv", Layer::Conv2d(c)).unwrap();
    net.push("sum", Layer::Add, &[body, 0]).unwrap();
    check_jacobians(&ctx, &net, 2, 52, "residual add");
    // A node feeding the same sum twice.
    let mut net = Network::new(&[6]).unwrap();
    net.push("double", Layer::Add, &[0, 0]).unwrap();
    check_jacobians(&ctx, &net, 2, 53, "x + x");
}

/// A random convolutional classifier over `[c, h, w]` inputs using most layer kinds.
fn random_convnet(rng: &mut Rng, c: usize, h: usize, classes: usize) -> Network<f32> {
    let mut net = Network::new(&[c, h, h]).unwrap();
    let n = c * h * h;
    net.then("normalise", Layer::Affine(Affine { scale: uniform(rng, n, 2.0), shift: uniform(rng, n, 0.5) })).unwrap();
    let mut c1 = conv(rng, c, 4, [3, 3], 1, true);
    c1.padding = [1, 1, 1, 1];
    let x1 = net.then("conv1", Layer::Conv2d(c1)).unwrap();
    let bn = BatchNorm {
        gamma: uniform(rng, 4, 2.0),
        beta: uniform(rng, 4, 0.5),
        mean: uniform(rng, 4, 0.5),
        var: uniform(rng, 4, 1.0).iter().map(|v| v.abs() + 0.2).collect(),
        epsilon: 1e-5,
    };
    net.then("bn", Layer::BatchNorm(bn)).unwrap();
    let a1 = net.then("relu1", Layer::Relu).unwrap();
    let mut c2 = conv(rng, 4, 4, [3, 3], 2, true);
    c2.padding = [1, 1, 1, 1];
    let x2 = net.then("conv2", Layer::Conv2d(c2)).unwrap();
    let s = net.push("skip", Layer::Add, &[x2, a1]).unwrap();
    let _ = x1;
    net.push("leaky", Layer::LeakyRelu { alpha: 0.05 }, &[s]).unwrap();
    net.then("maxpool", Layer::MaxPool2d(pool([2, 2], [2, 2], [0; 4], false, true))).unwrap();
    let hp = h.div_ceil(2);
    let mut c3 = conv(rng, 4, 3, [2, 2], 1, false);
    c3.stride = [1, 1];
    net.then("conv3", Layer::Conv2d(c3)).unwrap();
    net.then("clip", Layer::Clip { min: -1.0, max: 1.0 }).unwrap();
    net.then("avgpool", Layer::AvgPool2d(pool([2, 2], [1, 1], [0; 4], false, false))).unwrap();
    let hq = hp - 2;
    net.then("flatten", Layer::Reshape { shape: vec![3 * hq * hq] }).unwrap();
    net.then(
        "fc1",
        Layer::Dense(Dense {
            weight: uniform(rng, 12 * 3 * hq * hq, 0.5),
            bias: Some(uniform(rng, 12, 0.5)),
            inputs: 3 * hq * hq,
            outputs: 12,
        }),
    )
    .unwrap();
    net.then("relu2", Layer::Relu).unwrap();
    net.then("drop", Layer::Identity).unwrap();
    net.then(
        "fc2",
        Layer::Dense(Dense {
            weight: uniform(rng, classes * 12, 0.5),
            bias: Some(uniform(rng, classes, 0.5)),
            inputs: 12,
            outputs: classes,
        }),
    )
    .unwrap();
    net
}

fn check_certify(ctx: &GpuContext, gpu: &GpuCertifier, net: &Network<f32>, x: &[f32], batch: usize, what: &str) {
    let _ = ctx;
    let g = gpu.certify(x, batch).unwrap_or_else(|e| panic!("{what}: {e}"));
    let c = certify_bounds::certify_batch(net, x, batch).unwrap();
    assert_eq!(g.len(), batch);
    for (i, (g, c)) in g.iter().zip(&c).enumerate() {
        let w = format!("{what}, input {i}");
        assert_eq!((g.predicted, g.runner_up), (c.predicted, c.runner_up), "{w}: classes");
        assert_eq!(g.cor2_class, c.cor2_class, "{w}: Cor. 2 class");
        assert_rel(&format!("{w}: margin"), g.margin, c.margin);
        assert_rel(&format!("{w}: ‖J‖_F"), g.jacobian_fro, c.jacobian_fro);
        assert_rel(&format!("{w}: Prop. 3"), g.prop3_bound, c.prop3_bound);
        assert_rel(&format!("{w}: Cor. 2"), g.cor2_estimate, c.cor2_estimate);
        assert_rel(&format!("{w}: x_norm"), g.x_norm, c.x_norm);
        assert_rel(&format!("{w}: curvature bound"), g.curvature_bound, c.curvature_bound);
    }
}

#[test]
fn certification_of_random_networks_matches_the_cpu() {
    let Some(ctx) = context() else { return };
    for seed in 0..4u64 {
        let mut rng = Rng::new(100 + seed);
        let (c, h, k) = [(1, 8, 10), (2, 6, 3), (3, 7, 5), (1, 9, 2)][seed as usize];
        let net = random_convnet(&mut rng, c, h, k);
        let batch = 3 + seed as usize;
        let x = uniform(&mut rng, batch * net.input_len(), 1.0);
        let gpu = GpuCertifier::new(&ctx, &net).unwrap();
        check_certify(&ctx, &gpu, &net, &x, batch, &format!("random convnet {seed}"));
        check_jacobians(&ctx, &net, batch, 200 + seed, &format!("random convnet {seed}"));
    }
}

#[test]
fn chunked_batches_equal_one_chunk() {
    let Some(ctx) = context() else { return };
    let mut rng = Rng::new(7);
    let net = random_convnet(&mut rng, 1, 6, 4);
    let x = uniform(&mut rng, 7 * net.input_len(), 1.0);
    let whole = GpuCertifier::new(&ctx, &net).unwrap();
    assert!(whole.chunk_size() >= 7);
    let chunked = GpuCertifier::new(&ctx, &net).unwrap().with_chunk_size(2);
    assert_eq!(chunked.chunk_size(), 2);
    let a = whole.jacobians(&x, 7).unwrap();
    let b = chunked.jacobians(&x, 7).unwrap();
    assert_eq!(a.logits, b.logits);
    assert_eq!(a.jacobian, b.jacobian);
    check_certify(&ctx, &chunked, &net, &x, 7, "chunked");
}

#[test]
fn unsupported_layers_and_bad_inputs_are_errors() {
    let Some(ctx) = context() else { return };
    let mut net = Network::<f32>::new(&[4]).unwrap();
    net.then("squash", Layer::Sigmoid).unwrap();
    match GpuCertifier::new(&ctx, &net) {
        Err(Error::Unsupported { node, layer }) => {
            assert_eq!((node.as_str(), layer), ("squash", "Sigmoid"));
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    let e = GpuCertifier::new(&ctx, &net).unwrap_err().to_string();
    assert!(e.contains("squash") && e.contains("--device cpu"), "{e}");
    // A dead branch with an unsupported layer does not matter.
    let mut net = Network::<f32>::new(&[4]).unwrap();
    net.then("unused", Layer::Tanh).unwrap();
    net.push("fc", Layer::Dense(Dense { weight: vec![0.5; 8], bias: None, inputs: 4, outputs: 2 }), &[0]).unwrap();
    let gpu = GpuCertifier::new(&ctx, &net).unwrap();
    assert!(matches!(gpu.jacobians(&[1.0; 7], 2), Err(Error::Input(_))));
    assert!(matches!(gpu.jacobians(&[1.0, f32::NAN, 0.0, 0.0], 1), Err(Error::Input(_))));
    check_certify(&ctx, &gpu, &net, &[1.0, -2.0, 0.5, 3.0], 1, "dead branch");
    // One output is not a classifier.
    let one = single(&[3], Layer::Dense(Dense { weight: vec![1.0; 3], bias: None, inputs: 3, outputs: 1 }));
    let gpu = GpuCertifier::new(&ctx, &one).unwrap();
    assert!(matches!(gpu.certify(&[1.0; 3], 1), Err(Error::NotAClassifier { classes: 1 })));
    assert_eq!(gpu.jacobians(&[1.0, 2.0, 3.0], 1).unwrap().jacobian, vec![1.0; 3]);
}

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The first `n` images of the shipped MNIST sample, scaled to [0, 1].
fn mnist(n: usize) -> Vec<f32> {
    let f = std::fs::File::open(root().join("examples/data/mnist-1k/t10k-images-idx3-ubyte.gz")).unwrap();
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(f).read_to_end(&mut bytes).unwrap();
    bytes[16..16 + n * 784].iter().map(|&p| p as f32 / 255.0).collect()
}

#[test]
fn shipped_mnist_convnet_matches_the_cpu() {
    let Some(ctx) = context() else { return };
    let net = certify_onnx::import_path(&root().join("examples/models/mnist-convnet-maxpool.onnx")).unwrap().network;
    assert_eq!(net.input_len(), 784);
    let n = 6;
    let x = mnist(n);
    let gpu = GpuCertifier::new(&ctx, &net).unwrap();
    check_certify(&ctx, &gpu, &net, &x, n, "mnist-convnet-maxpool");
    let g = gpu.jacobians(&x, n).unwrap();
    let c = net.jacobian(&x, n).unwrap();
    assert_close("mnist logits", &g.logits, &c.logits);
    assert_close("mnist jacobian", &g.jacobian, &c.jacobian);
}
