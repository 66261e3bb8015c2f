//! DeepFool against the first-order estimates on random piecewise-linear networks (dense, ReLU,
//! convolution, max pooling).
//!
//! Inside one activation region (a fixed ReLU on/off pattern and a fixed max-pool winner per
//! window) such a network *is* its linearisation at `x`. So when DeepFool's final point `x + r`
//! has the same pattern as `x`, the segment between them lies in that convex region, the class
//! change at `x + r` is a class change of the linearised model, and `‖r‖ ≥ Cor. 2 ≥ Prop. 3`.
//! When it leaves the region nothing follows; those cases are counted, not checked.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use certify_bounds::{certify_batch, deepfool, top2, DeepFoolConfig};
use certify_core::{Conv2d, Dense, Layer, Network, Pool2d};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};

/// The structure of a random network; weights and the input come from `seed`.
#[derive(Clone, Debug)]
enum Spec {
    /// `[d] → (Dense → ReLU)×hidden.len() → Dense → k`.
    Mlp { d: usize, hidden: Vec<usize>, k: usize, seed: u64 },
    /// `[c, h, w] → Conv (stride 1) → [ReLU] → MaxPool → Flatten → [Dense → ReLU] → Dense → k`.
    Conv {
        c: usize,
        hw: [usize; 2],
        out: usize,
        kernel: usize,
        relu: bool,
        pool_stride: usize,
        hidden: Option<usize>,
        k: usize,
        seed: u64,
    },
}

fn spec() -> impl Strategy<Value = Spec> {
    let mlp = (2usize..7, prop::collection::vec(2usize..9, 1..3), 2usize..5, any::<u64>())
        .prop_map(|(d, hidden, k, seed)| Spec::Mlp { d, hidden, k, seed });
    let conv = (
        1usize..3,
        [3usize..6, 3usize..6],
        1usize..4,
        2usize..4,
        any::<bool>(),
        1usize..3,
        prop::option::of(2usize..8),
        2usize..5,
        any::<u64>(),
    )
        .prop_map(|(c, hw, out, kernel, relu, pool_stride, hidden, k, seed)| Spec::Conv {
            c,
            hw,
            out,
            kernel: kernel.min(hw[0] - 1).min(hw[1] - 1), // the pool needs a 2×2 conv output
            relu,
            pool_stride,
            hidden,
            k,
            seed,
        });
    prop_oneof![mlp, conv]
}

/// SplitMix64 for weights and inputs.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        lo + (hi - lo) * ((z >> 11) as f64 / (1u64 << 53) as f64)
    }

    fn vec(&mut self, n: usize, scale: f64) -> Vec<f64> {
        (0..n).map(|_| self.uniform(-scale, scale)).collect()
    }
}

fn dense(rng: &mut Rng, inputs: usize, outputs: usize) -> Layer<f64> {
    Layer::Dense(Dense {
        weight: rng.vec(inputs * outputs, 1.5 / (inputs as f64).sqrt()),
        bias: Some(rng.vec(outputs, 0.5)),
        inputs,
        outputs,
    })
}

/// The network and the input point of a spec.
fn build(spec: &Spec) -> (Network<f64>, Vec<f64>) {
    match spec {
        Spec::Mlp { d, hidden, k, seed } => {
            let mut rng = Rng(*seed);
            let mut net = Network::new(&[*d]).unwrap();
            let mut width = *d;
            for &h in hidden {
                net.then("fc", dense(&mut rng, width, h)).unwrap();
                net.then("relu", Layer::Relu).unwrap();
                width = h;
            }
            net.then("logits", dense(&mut rng, width, *k)).unwrap();
            let x = rng.vec(*d, 1.0);
            (net, x)
        }
        Spec::Conv { c, hw, out, kernel, relu, pool_stride, hidden, k, seed } => {
            let mut rng = Rng(*seed);
            let mut net = Network::new(&[*c, hw[0], hw[1]]).unwrap();
            let fan_in = c * kernel * kernel;
            net.then(
                "conv",
                Layer::Conv2d(Conv2d {
                    weight: rng.vec(out * fan_in, 1.5 / (fan_in as f64).sqrt()),
                    bias: Some(rng.vec(*out, 0.5)),
                    out_channels: *out,
                    in_channels: *c,
                    kernel: [*kernel; 2],
                    stride: [1, 1],
                    padding: [0; 4],
                    dilation: [1, 1],
                    groups: 1,
                }),
            )
            .unwrap();
            if *relu {
                net.then("relu", Layer::Relu).unwrap();
            }
            let pool = Pool2d {
                kernel: [2, 2],
                stride: [*pool_stride; 2],
                padding: [0; 4],
                count_include_pad: false,
                ceil_mode: false,
            };
            net.then("pool", Layer::MaxPool2d(pool)).unwrap();
            let n: usize = net.output_shape().iter().product();
            net.then("flatten", Layer::Reshape { shape: vec![n] }).unwrap();
            let mut width = n;
            if let Some(h) = hidden {
                net.then("fc", dense(&mut rng, n, *h)).unwrap();
                net.then("relu2", Layer::Relu).unwrap();
                width = *h;
            }
            net.then("logits", dense(&mut rng, width, *k)).unwrap();
            let x = rng.vec(c * hw[0] * hw[1], 1.0);
            (net, x)
        }
    }
}

/// The activation pattern at `x`, from the trace: for every ReLU whether each input is positive,
/// for every max pool which cell of each window wins (the first on ties).
fn pattern(net: &Network<f64>, x: &[f64]) -> Vec<usize> {
    let t = net.trace(x, 1).unwrap();
    let mut p = Vec::new();
    for node in net.nodes() {
        match &node.layer {
            Layer::Relu => p.extend(t.value(node.inputs[0]).iter().map(|&v| usize::from(v > 0.0))),
            Layer::MaxPool2d(pool) => {
                assert_eq!(pool.padding, [0; 4], "the pattern assumes unpadded pools");
                let input = t.value(node.inputs[0]);
                let (h, w) = {
                    let s = &net.nodes()[node.inputs[0]].shape;
                    (s[1], s[2])
                };
                let [ch, oh, ow] = [node.shape[0], node.shape[1], node.shape[2]];
                for c in 0..ch {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let mut best = (f64::NEG_INFINITY, usize::MAX);
                            for ky in 0..pool.kernel[0] {
                                for kx in 0..pool.kernel[1] {
                                    let (y, xx) = (oy * pool.stride[0] + ky, ox * pool.stride[1] + kx);
                                    let v = input[(c * h + y) * w + xx];
                                    if v > best.0 {
                                        best = (v, ky * pool.kernel[1] + kx);
                                    }
                                }
                            }
                            p.push(best.1);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    p
}

/// Case counts, printed at the end.
#[derive(Default)]
struct Counts {
    in_region: AtomicUsize,
    left_region: AtomicUsize,
    failed: AtomicUsize,
    first_step_in_region: AtomicUsize,
}

#[test]
fn deepfool_within_an_activation_region_respects_the_first_order_estimates() {
    // `Config::default()` honours PROPTEST_CASES (256 when unset).
    let config = Config {
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..Config::default()
    };
    let cases = config.cases;
    let mut runner = TestRunner::new(config);
    let counts = Counts::default();
    let dfc = DeepFoolConfig::default();
    let result = runner.run(&spec(), |spec| {
        let (net, x) = build(&spec);
        let z = net.forward(&x, 1).unwrap();
        let (s, r) = top2(&z);
        prop_assume!(z[s] - z[r] > 1e-9, "a point on a boundary has no well-defined class");
        let pb = &certify_batch(&net, &x, 1).unwrap()[0];
        prop_assume!(pb.cor2_estimate.is_finite(), "locally constant network");
        let scale = 1.0 + dfc.overshoot;
        let tol = |v: f64| 1e-9 * (1.0 + v);

        // DeepFool's first step goes to the linearised boundary of the Cor. 2 class, plus the
        // step epsilon, scaled by the overshoot: ‖r₁‖ = (1 + overshoot)·(Cor. 2 + ε).
        let first = &deepfool(&net, &x, 1, &DeepFoolConfig { max_iter: 1, ..dfc.clone() }).unwrap()[0];
        let expected = scale * (pb.cor2_estimate + dfc.step_epsilon);
        prop_assert_eq!(first.iterations, 1);
        prop_assert!(
            (first.distance - expected).abs() <= tol(expected),
            "first step {} vs (1 + overshoot)·(Cor. 2 + ε) = {}",
            first.distance,
            expected
        );

        let region = pattern(&net, &x);
        let at = |pert: &[f32]| -> Vec<f64> { x.iter().zip(pert).map(|(a, &p)| a + p as f64).collect() };
        let df = &deepfool(&net, &x, 1, &dfc).unwrap()[0];
        // A first step that stays in the region crosses the linearised boundary, which is the
        // network's boundary there: DeepFool stops after it.
        if pattern(&net, &at(&first.perturbation)) == region {
            counts.first_step_in_region.fetch_add(1, Relaxed);
            prop_assert!(df.success && df.iterations == 1, "{df:?}");
            prop_assert!((df.distance - first.distance).abs() <= tol(first.distance));
        }
        if !df.success {
            counts.failed.fetch_add(1, Relaxed);
        } else if pattern(&net, &at(&df.perturbation)) == region {
            counts.in_region.fetch_add(1, Relaxed);
            prop_assert!(
                df.distance >= pb.cor2_estimate * (1.0 - 1e-9),
                "DeepFool {} < Cor. 2 {} inside the region",
                df.distance,
                pb.cor2_estimate
            );
            prop_assert!(
                df.distance >= pb.prop3_bound * (1.0 - 1e-9),
                "DeepFool {} < Prop. 3 {} inside the region",
                df.distance,
                pb.prop3_bound
            );
        } else {
            counts.left_region.fetch_add(1, Relaxed);
        }
        Ok::<(), TestCaseError>(())
    });
    let (inside, left, failed, first) = (
        counts.in_region.load(Relaxed),
        counts.left_region.load(Relaxed),
        counts.failed.load(Relaxed),
        counts.first_step_in_region.load(Relaxed),
    );
    println!(
        "DeepFool on {} random piecewise-linear networks: final point inside the activation region {inside} \
         (checked), outside {left} (counted only), attack failed {failed}; first step inside the region {first}",
        inside + left + failed
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    if cases >= 64 {
        assert!(inside > 0, "no case stayed inside its region: the property was never checked");
    }
}
