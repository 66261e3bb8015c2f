//! Error cases: bad data and invalid layers give an `Err`, never a panic.

use std::panic::{catch_unwind, AssertUnwindSafe};

use certify_core::{Affine, BatchNorm, Conv2d, Dense, Error, Layer, Network, Node, Pad, Pool2d};
use proptest::prelude::*;

use crate::strategies::{config, Rng};

/// `[1, 4, 4]` → Conv 3×3 (2 channels) → ReLU → MaxPool 2×2 → flatten → Dense to 3 logits.
fn small_net() -> Network<f64> {
    let mut rng = Rng::new(7);
    let mut net = Network::<f64>::new(&[1, 4, 4]).unwrap();
    net.then(
        "conv",
        Layer::Conv2d(Conv2d {
            weight: rng.vec(18, -1.0, 1.0),
            bias: Some(vec![0.1, -0.1]),
            out_channels: 2,
            in_channels: 1,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1; 4],
            dilation: [1, 1],
            groups: 1,
        }),
    )
    .unwrap();
    net.then("relu", Layer::Relu).unwrap();
    net.then("pool", Layer::MaxPool2d(pool([2, 2], [2, 2], [0; 4]))).unwrap();
    net.then("flat", Layer::Reshape { shape: vec![8] }).unwrap();
    net.then("fc", Layer::Dense(Dense { weight: rng.vec(24, -1.0, 1.0), bias: None, inputs: 8, outputs: 3 })).unwrap();
    net
}

fn pool(kernel: [usize; 2], stride: [usize; 2], padding: [usize; 4]) -> Pool2d {
    Pool2d { kernel, stride, padding, count_include_pad: false, ceil_mode: false }
}

#[test]
fn wrong_data_length() {
    let net = small_net();
    let x = vec![0.5; 16];
    assert!(net.forward(&x, 1).is_ok());
    let short = net.forward(&x[..15], 1).unwrap_err();
    assert!(matches!(short, Error::DataLength { got: 15, expected: 16, .. }), "{short}");
    assert!(matches!(net.forward(&x, 2), Err(Error::DataLength { got: 16, expected: 32, .. })));
    assert!(matches!(net.trace(&[], 1), Err(Error::DataLength { .. })));
    assert!(matches!(net.jacobian(&[0.0; 17], 1), Err(Error::DataLength { .. })));

    let trace = net.trace(&x, 1).unwrap();
    assert!(matches!(net.jvp(&trace, &[0.0; 15], 1), Err(Error::DataLength { .. })));
    assert!(matches!(net.jvp(&trace, &[0.0; 16], 2), Err(Error::DataLength { .. })));
    assert!(matches!(net.jvp(&trace, &[], 0), Err(Error::DataLength { .. })));
    assert!(matches!(net.vjp(&trace, &[0.0; 2], 1), Err(Error::DataLength { .. })));
    assert!(matches!(net.vjp(&trace, &[], 0), Err(Error::DataLength { .. })));
    assert_eq!(net.jvp(&trace, &[0.0; 32], 2).unwrap().len(), 6);
    assert_eq!(net.vjp(&trace, &[0.0; 6], 2).unwrap().len(), 32);
}

#[test]
fn non_finite_data() {
    let net = small_net();
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut x = vec![0.5; 32];
        x[21] = bad;
        assert!(matches!(net.forward(&x, 2), Err(Error::NonFinite { index: 21 })), "{bad}");
        assert!(matches!(net.trace(&x, 2), Err(Error::NonFinite { index: 21 })), "{bad}");
        assert!(matches!(net.jacobian(&x, 2), Err(Error::NonFinite { index: 21 })), "{bad}");
        let trace = net.trace(&[0.5; 16], 1).unwrap();
        let mut v = vec![0.0; 16];
        v[3] = bad;
        assert!(matches!(net.jvp(&trace, &v, 1), Err(Error::NonFinite { index: 3 })), "{bad}");
        let u = [0.0, bad, 0.0];
        assert!(matches!(net.vjp(&trace, &u, 1), Err(Error::NonFinite { index: 1 })), "{bad}");
    }
    // f32 too.
    let net32: Network<f32> = net.cast();
    assert!(matches!(net32.forward(&[f32::NAN; 16], 1), Err(Error::NonFinite { index: 0 })));
}

#[test]
fn empty_batch_does_not_panic() {
    let net = small_net();
    assert_eq!(net.forward(&[], 0).map(|z| z.len()).unwrap_or(0), 0);
    let _ = net.jacobian(&[], 0);
}

fn conv(c_in: usize, c_out: usize, kernel: [usize; 2], weights: usize, groups: usize) -> Layer<f64> {
    Layer::Conv2d(Conv2d {
        weight: vec![0.1; weights],
        bias: None,
        out_channels: c_out,
        in_channels: c_in,
        kernel,
        stride: [1, 1],
        padding: [0; 4],
        dilation: [1, 1],
        groups,
    })
}

#[test]
fn invalid_layers_are_errors() {
    type Case = (&'static str, Vec<usize>, Layer<f64>, Vec<usize>);
    let cases: Vec<Case> = vec![
        (
            "dense weight length",
            vec![4],
            Layer::Dense(Dense { weight: vec![0.0; 7], bias: None, inputs: 4, outputs: 2 }),
            vec![0],
        ),
        (
            "dense bias length",
            vec![4],
            Layer::Dense(Dense { weight: vec![0.0; 8], bias: Some(vec![0.0; 3]), inputs: 4, outputs: 2 }),
            vec![0],
        ),
        (
            "dense input features",
            vec![5],
            Layer::Dense(Dense { weight: vec![0.0; 8], bias: None, inputs: 4, outputs: 2 }),
            vec![0],
        ),
        ("conv weight length", vec![2, 5, 5], conv(2, 3, [3, 3], 53, 1), vec![0]),
        ("conv kernel larger than input", vec![2, 5, 5], conv(2, 3, [6, 3], 108, 1), vec![0]),
        ("conv channels", vec![3, 5, 5], conv(2, 3, [3, 3], 54, 1), vec![0]),
        ("conv groups", vec![2, 5, 5], conv(2, 3, [3, 3], 27, 2), vec![0]),
        ("conv zero groups", vec![2, 5, 5], conv(2, 2, [3, 3], 36, 0), vec![0]),
        ("conv zero kernel", vec![2, 5, 5], conv(2, 2, [0, 3], 0, 1), vec![0]),
        ("conv rank", vec![2, 5], conv(2, 2, [1, 1], 4, 1), vec![0]),
        ("pool window larger than input", vec![1, 3, 3], Layer::MaxPool2d(pool([4, 2], [1, 1], [0; 4])), vec![0]),
        ("pool zero stride", vec![1, 3, 3], Layer::AvgPool2d(pool([2, 2], [0, 1], [0; 4])), vec![0]),
        ("pool padding ≥ kernel", vec![1, 3, 3], Layer::MaxPool2d(pool([2, 2], [1, 1], [0, 0, 2, 0])), vec![0]),
        ("global pool rank", vec![4], Layer::GlobalAvgPool, vec![0]),
        ("transpose duplicate axis", vec![2, 3, 4], Layer::Transpose { perm: vec![0, 0, 1] }, vec![0]),
        ("transpose axis out of range", vec![2, 3, 4], Layer::Transpose { perm: vec![0, 1, 3] }, vec![0]),
        ("transpose length", vec![2, 3, 4], Layer::Transpose { perm: vec![1, 0] }, vec![0]),
        ("reshape size", vec![2, 3], Layer::Reshape { shape: vec![5] }, vec![0]),
        ("reshape zero axis", vec![2, 3], Layer::Reshape { shape: vec![0, 6] }, vec![0]),
        ("affine length", vec![2, 3], Layer::Affine(Affine { scale: vec![1.0; 6], shift: vec![0.0; 5] }), vec![0]),
        (
            "batchnorm length",
            vec![2, 3],
            Layer::BatchNorm(BatchNorm {
                gamma: vec![1.0; 3],
                beta: vec![0.0; 2],
                mean: vec![0.0; 2],
                var: vec![1.0; 2],
                epsilon: 1e-5,
            }),
            vec![0],
        ),
        (
            "batchnorm variance",
            vec![2, 3],
            Layer::BatchNorm(BatchNorm {
                gamma: vec![1.0; 2],
                beta: vec![0.0; 2],
                mean: vec![0.0; 2],
                var: vec![1.0, -1.0],
                epsilon: 1e-5,
            }),
            vec![0],
        ),
        ("clip min > max", vec![3], Layer::Clip { min: 1.0, max: 0.0 }, vec![0]),
        ("leaky relu alpha", vec![3], Layer::LeakyRelu { alpha: f64::NAN }, vec![0]),
        ("pad length", vec![2, 3], Layer::Pad(Pad { begin: vec![1], end: vec![1, 1], value: 0.0 }), vec![0]),
        ("concat axis", vec![2, 3], Layer::Concat { axis: 2 }, vec![0, 0]),
        ("concat no inputs", vec![2, 3], Layer::Concat { axis: 0 }, vec![]),
        ("add arity", vec![2, 3], Layer::Add, vec![0]),
        ("relu arity", vec![2, 3], Layer::Relu, vec![0, 0]),
        ("input layer", vec![2, 3], Layer::Input, vec![]),
        ("unknown input node", vec![2, 3], Layer::Relu, vec![1]),
    ];
    for (what, shape, layer, inputs) in cases {
        let mut net = Network::<f64>::new(&shape).unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| net.push(what, layer.clone(), &inputs)));
        match r {
            Ok(Err(e)) => {
                assert!(e.to_string().contains(what), "{what}: message `{e}` does not name the node");
            }
            Ok(Ok(_)) => panic!("{what}: {layer:?} on {shape:?} was accepted"),
            Err(_) => panic!("{what}: push panicked"),
        }
        assert_eq!(net.nodes().len(), 1, "{what}: a rejected node was kept");
    }
    // Shapes of different branches.
    let mut net = Network::<f64>::new(&[2, 3]).unwrap();
    let t = net.then("t", Layer::Transpose { perm: vec![1, 0] }).unwrap();
    assert!(matches!(net.push("add", Layer::Add, &[0, t]), Err(Error::Shape { .. })));
    assert!(matches!(net.push("cat", Layer::Concat { axis: 0 }, &[0, t]), Err(Error::Shape { .. })));
    assert!(net.push("cat", Layer::Concat { axis: 0 }, &[0, 0]).is_ok());
}

#[test]
fn invalid_networks_are_errors() {
    assert!(Network::<f64>::new(&[]).is_err());
    assert!(Network::<f64>::new(&[3, 0]).is_err());
    let node =
        |layer: Layer<f64>, inputs: Vec<usize>, shape: Vec<usize>| Node { name: "n".into(), layer, inputs, shape };
    assert!(Network::<f64>::from_nodes(vec![]).is_err());
    assert!(Network::from_nodes(vec![node(Layer::Relu, vec![], vec![2])]).is_err());
    let two_inputs = vec![node(Layer::Input, vec![], vec![2]), node(Layer::Input, vec![], vec![2])];
    assert!(Network::from_nodes(two_inputs).is_err());
    let forward_ref = vec![
        node(Layer::Input, vec![], vec![2]),
        node(Layer::Relu, vec![2], vec![2]),
        node(Layer::Relu, vec![1], vec![2]),
    ];
    assert!(matches!(Network::from_nodes(forward_ref), Err(Error::Topology { input: 2, .. })));
    // A round trip through nodes keeps the network.
    let net = small_net();
    assert_eq!(Network::from_nodes(net.nodes().to_vec()).unwrap(), net);
    // Classifier check.
    assert!(net.check_classifier().is_ok());
    let mut one = Network::<f64>::new(&[3]).unwrap();
    one.then("fc", Layer::Dense(Dense { weight: vec![1.0; 3], bias: None, inputs: 3, outputs: 1 })).unwrap();
    assert!(matches!(one.check_classifier(), Err(Error::NotAClassifier { .. })));
    let mut grid = Network::<f64>::new(&[2, 3]).unwrap();
    grid.then("id", Layer::Identity).unwrap();
    assert!(matches!(grid.check_classifier(), Err(Error::NotAClassifier { .. })));
}

/// A layer with small but otherwise arbitrary (often invalid) parameters.
fn arb_layer() -> impl Strategy<Value = Layer<f64>> {
    let small = || 0..=4usize;
    let pair = move || [small(), small()];
    let quad = move || [small(), small(), small(), small()];
    let conv = (0..=60usize, any::<bool>(), small(), small(), pair(), pair(), quad(), pair(), small()).prop_map(
        |(w, b, out_channels, in_channels, kernel, stride, padding, dilation, groups)| {
            Layer::Conv2d(Conv2d {
                weight: vec![0.5; w],
                bias: b.then(|| vec![0.1; out_channels]),
                out_channels,
                in_channels,
                kernel,
                stride,
                padding,
                dilation,
                groups,
            })
        },
    );
    let pool = (pair(), pair(), quad(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(kernel, stride, padding, count_include_pad, ceil_mode, max)| {
            let p = Pool2d { kernel, stride, padding, count_include_pad, ceil_mode };
            if max {
                Layer::MaxPool2d(p)
            } else {
                Layer::AvgPool2d(p)
            }
        },
    );
    let dense = (0..=20usize, small(), small(), prop::option::of(small())).prop_map(|(w, inputs, outputs, b)| {
        Layer::Dense(Dense { weight: vec![0.25; w], bias: b.map(|n| vec![0.0; n]), inputs, outputs })
    });
    let dims = || prop::collection::vec(small(), 0..=4);
    let vals = || prop::collection::vec(-2.0..2.0f64, 0..=8);
    prop_oneof![
        conv,
        pool,
        dense,
        Just(Layer::GlobalAvgPool),
        Just(Layer::Add),
        Just(Layer::Relu),
        Just(Layer::Sigmoid),
        Just(Layer::Tanh),
        Just(Layer::Identity),
        Just(Layer::Input),
        prop_oneof![Just(f64::NAN), -1.0..1.0f64].prop_map(|alpha| Layer::LeakyRelu { alpha }),
        (-1.0..1.0f64, -1.0..1.0f64).prop_map(|(min, max)| Layer::Clip { min, max }),
        (vals(), vals()).prop_map(|(scale, shift)| Layer::Affine(Affine { scale, shift })),
        (vals(), vals(), vals(), vals()).prop_map(|(gamma, beta, mean, var)| Layer::BatchNorm(BatchNorm {
            gamma,
            beta,
            mean,
            var,
            epsilon: 1e-3
        })),
        dims().prop_map(|shape| Layer::Reshape { shape }),
        small().prop_map(|axis| Layer::Concat { axis }),
        (dims(), dims(), -1.0..1.0f64).prop_map(|(begin, end, value)| Layer::Pad(Pad { begin, end, value })),
        dims().prop_map(|perm| Layer::Transpose { perm }),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Pushing a layer with arbitrary parameters returns `Ok` or `Err` without panicking, and a
    /// network that was accepted runs forward, reverse and tangent passes without panicking.
    #[test]
    fn arbitrary_layers_never_panic(
        shape in prop::collection::vec(1..=4usize, 1..=4),
        layers in prop::collection::vec((arb_layer(), prop::collection::vec(0..=3usize, 0..=3)), 1..=3),
        seed in any::<u64>(),
    ) {
        let mut net = Network::<f64>::new(&shape).unwrap();
        for (layer, inputs) in &layers {
            let before = net.nodes().len();
            let r = catch_unwind(AssertUnwindSafe(|| net.push("n", layer.clone(), inputs)));
            prop_assert!(r.is_ok(), "push panicked: {layer:?} with inputs {inputs:?} on {:?}", net.nodes());
            if r.unwrap().is_err() {
                prop_assert_eq!(net.nodes().len(), before);
            }
        }
        let d = net.input_len();
        let k = net.num_classes();
        let x = Rng::new(seed).vec(2 * d, -1.0, 1.0);
        let run = catch_unwind(AssertUnwindSafe(|| {
            let z = net.forward(&x, 2).unwrap();
            let j = net.jacobian(&x, 2).unwrap();
            let t = net.trace(&x, 2).unwrap();
            let jv = net.jvp(&t, &vec![1.0; 2 * d], 1).unwrap();
            (z.len(), j.jacobian.len(), jv.len())
        }));
        prop_assert!(run.is_ok(), "a pass panicked on {:?}", net.nodes());
        prop_assert_eq!(run.unwrap(), (2 * k, 2 * k * d, 2 * k));
    }
}

/// `batch · D` must not wrap around: an absurd batch size with a short buffer is a length error.
#[test]
fn huge_batch_is_a_length_error() {
    let mut net = Network::<f64>::new(&[2]).unwrap();
    net.push("cat", Layer::Concat { axis: 0 }, &[0, 0]).unwrap();
    let batch = usize::MAX / 2 + 1; // batch · 2 wraps to 0
    let r = catch_unwind(AssertUnwindSafe(|| net.forward(&[], batch)));
    assert!(matches!(r, Ok(Err(Error::DataLength { .. }))), "forward({batch}) did not return a length error");
}

/// Shape products must not wrap around: a reshape whose product overflows is an error.
#[test]
fn overflowing_reshape_is_an_error() {
    let mut net = Network::<f64>::new(&[12]).unwrap();
    // (2^63 + 1) · 12 ≡ 12 (mod 2^64).
    let shape = vec![(1usize << 63) + 1, 12];
    let r = catch_unwind(AssertUnwindSafe(|| net.push("reshape", Layer::Reshape { shape: shape.clone() }, &[0])));
    assert!(matches!(r, Ok(Err(_))), "Reshape to {shape:?} was not rejected");
}
