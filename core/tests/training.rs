//! Training foundations: parameter gradients of `Network::backward` against central finite
//! differences (every parameter of random small networks, for each trainable layer kind, with
//! one and several cotangent rows per sample), `backward` against `vjp`, the softmax
//! cross-entropy loss, the optimizers' update formulas, and a small end-to-end training run.

use certify_core::train::{softmax_cross_entropy, Adam, Optimizer, RmsProp, Sgd};
use certify_core::{Dense, Layer, LayerGrads, Network, ParamGrads};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};

use crate::checks::near_kink;
use crate::strategies::{build, inputs, kind_case, random_case, Kind, Rng};

/// Finite-difference step for parameters.
const STEP: f64 = 1e-6;
/// Allowed error, relative to the largest gradient entry (at least 1).
const TOL: f64 = 1e-6;

/// Fewer cases than the other properties: each case runs four forward passes per parameter.
fn config() -> Config {
    let mut c = crate::strategies::config();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = 16;
    }
    c
}

/// `L = Σ_{b,r} u_{b,r}·z(x_b)` for cotangents `u` (`[batch, rows, K]`).
fn loss(net: &Network<f64>, xs: &[f64], batch: usize, u: &[f64], rows: usize) -> f64 {
    let z = net.forward(xs, batch).expect("forward");
    let k = net.num_classes();
    (0..batch * rows).map(|r| (0..k).map(|c| u[r * k + c] * z[(r / rows) * k + c]).sum::<f64>()).sum()
}

/// `net` with element `j` of parameter tensor `t` moved by `h`.
fn perturbed(net: &Network<f64>, t: usize, j: usize, h: f64) -> Network<f64> {
    let mut n = net.clone();
    let zero = ParamGrads::zeros_like(&n);
    n.update_params(&zero, |i, p, _| {
        if i == t {
            p[j] += h;
        }
    })
    .expect("layout");
    n
}

/// Central differences of `L` with respect to every parameter, flattened in tensor order.
fn fd_param_grads(net: &Network<f64>, xs: &[f64], batch: usize, u: &[f64], rows: usize, h: f64) -> Vec<f64> {
    let lens: Vec<usize> = net.params().tensors().iter().map(|t| t.len()).collect();
    let mut out = Vec::new();
    for (t, &len) in lens.iter().enumerate() {
        for j in 0..len {
            let plus = loss(&perturbed(net, t, j, h), xs, batch, u, rows);
            let minus = loss(&perturbed(net, t, j, -h), xs, batch, u, rows);
            out.push((plus - minus) / (2.0 * h));
        }
    }
    out
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// `backward`'s parameter gradients equal central finite differences of `L` for every
/// parameter (cases near a kink, or where two step sizes disagree, are rejected), and its
/// input gradient equals `vjp`'s to rounding: the two may take different paths through a
/// convolution → activation → max pool block (`vjp` fuses it whenever the convolution is sparse
/// for `rows` rows, `backward` only when it is sparse for one row too), and overlapping pool
/// windows then add their cotangents in a different order.
fn params_match_fd(net: &Network<f64>, xs: &[f64], batch: usize, rows: usize, seed: u64) -> Result<(), TestCaseError> {
    let trace = net.trace(xs, batch).map_err(|e| TestCaseError::fail(format!("trace: {e}")))?;
    if let Some(why) = near_kink(net, &trace) {
        return Err(TestCaseError::reject(why));
    }
    let u = Rng::new(seed ^ 0xC0FF_EE00).vec(batch * rows * net.num_classes(), -1.0, 1.0);
    let (dx, grads) = net.backward(&trace, &u, rows).map_err(|e| TestCaseError::fail(format!("backward: {e}")))?;
    let vjp = net.vjp(&trace, &u, rows).map_err(|e| TestCaseError::fail(format!("vjp: {e}")))?;
    prop_assert_eq!(dx.len(), vjp.len());
    let dx_scale = max_abs(&vjp).max(1.0);
    for (i, (a, b)) in dx.iter().zip(&vjp).enumerate() {
        prop_assert!((a - b).abs() <= 1e-12 * dx_scale, "input gradient {}: backward {} vs vjp {}", i, a, b);
    }
    let exact: Vec<f64> = grads.tensors().concat();
    prop_assert_eq!(exact.len(), net.params().len());
    let fd = fd_param_grads(net, xs, batch, &u, rows, STEP);
    let fd2 = fd_param_grads(net, xs, batch, &u, rows, 2.0 * STEP);
    let scale = max_abs(&fd).max(1.0);
    for (i, (a, b)) in fd.iter().zip(&fd2).enumerate() {
        if (a - b).abs() > TOL * scale {
            return Err(TestCaseError::reject(format!("parameter {i}: finite differences unstable ({a} vs {b})")));
        }
    }
    for (i, (e, f)) in exact.iter().zip(&fd).enumerate() {
        prop_assert!(
            (e - f).abs() <= TOL * scale,
            "parameter {} of {}: backward {} vs finite differences {} (scale {})",
            i,
            exact.len(),
            e,
            f,
            scale
        );
    }
    Ok(())
}

macro_rules! param_properties {
    ($($module:ident => $case:expr;)*) => {$(
        mod $module {
            use super::*;

            proptest! {
                #![proptest_config(config())]

                #[test]
                fn param_grads_match_fd_one_row(case in $case) {
                    let net = build(&case);
                    params_match_fd(&net, &inputs(&case, &net, 3), 3, 1, case.seed)?;
                }

                #[test]
                fn param_grads_match_fd_three_rows(case in $case) {
                    let net = build(&case);
                    params_match_fd(&net, &inputs(&case, &net, 2), 2, 3, case.seed)?;
                }
            }
        }
    )*};
}

param_properties! {
    conv2d => kind_case(Kind::Conv2d);
    dense => kind_case(Kind::Dense);
    batch_norm => kind_case(Kind::BatchNorm);
    random_network => random_case();
}

/// A dense layer over the last axis of a `[3, 4]` input (so its weight gradient sums over the
/// leading axis), with and without bias, through a smooth activation.
#[test]
fn dense_over_leading_axis() {
    let mut rng = Rng::new(7);
    let mut net = Network::<f64>::new(&[3, 4]).unwrap();
    let d1 = Dense { weight: rng.weights(20, 4), bias: Some(rng.vec(5, -0.5, 0.5)), inputs: 4, outputs: 5 };
    net.then("fc1", Layer::Dense(d1)).unwrap();
    net.then("tanh", Layer::Tanh).unwrap();
    let d2 = Dense { weight: rng.weights(10, 5), bias: None, inputs: 5, outputs: 2 };
    net.then("fc2", Layer::Dense(d2)).unwrap();
    net.then("flat", Layer::Reshape { shape: vec![6] }).unwrap();
    let d3 = Dense { weight: rng.weights(18, 6), bias: Some(rng.vec(3, -0.5, 0.5)), inputs: 6, outputs: 3 };
    net.then("fc3", Layer::Dense(d3)).unwrap();
    let batch = 4;
    let xs = rng.vec(batch * 12, -1.0, 1.0);
    for rows in [1, 3] {
        params_match_fd(&net, &xs, batch, rows, 11 + rows as u64).unwrap();
    }
}

/// `L = ½·mean_i ‖z_i − y_i‖²` and its gradient with respect to the logits.
fn squared_loss(z: &[f64], y: &[f64], n: usize) -> (f64, Vec<f64>) {
    let l = z.iter().zip(y).map(|(a, b)| 0.5 * (a - b) * (a - b)).sum::<f64>() / n as f64;
    (l, z.iter().zip(y).map(|(a, b)| (a - b) / n as f64).collect())
}

#[test]
fn softmax_cross_entropy_matches_hand_computation() {
    let logits = [1.0f64, 2.0, 3.0, -1.0, 0.5, 0.0];
    let (l, g) = softmax_cross_entropy(&logits, &[2, 0], 3);
    let lse = |z: &[f64]| z.iter().map(|v| v.exp()).sum::<f64>().ln();
    let expected = ((lse(&logits[..3]) - 3.0) + (lse(&logits[3..]) + 1.0)) / 2.0;
    assert!((l - expected).abs() < 1e-14, "{l} vs {expected}");
    // Gradient: (softmax − onehot)/n.
    let s0: Vec<f64> = logits[..3].iter().map(|v| (v - lse(&logits[..3])).exp()).collect();
    assert!((g[0] - s0[0] / 2.0).abs() < 1e-15 && (g[2] - (s0[2] - 1.0) / 2.0).abs() < 1e-15);
    // Stable for huge logits.
    let (l, g) = softmax_cross_entropy(&[1000.0f64, 0.0, -1000.0], &[1], 3);
    assert!((l - 1000.0).abs() < 1e-9 && g.iter().all(|v| v.is_finite()), "{l} {g:?}");
    let (l, _) = softmax_cross_entropy(&[1000.0f32, 0.0], &[0], 2);
    assert!(l.is_finite() && l < 1e-6);
}

#[test]
fn softmax_cross_entropy_gradient_matches_fd() {
    let mut rng = Rng::new(3);
    let (n, k) = (4, 5);
    let logits = rng.vec(n * k, -3.0, 3.0);
    let labels = [0, 4, 2, 2];
    let (_, g) = softmax_cross_entropy(&logits, &labels, k);
    for i in 0..n * k {
        let mut p = logits.clone();
        p[i] += 1e-6;
        let mut m = logits.clone();
        m[i] -= 1e-6;
        let fd = (softmax_cross_entropy(&p, &labels, k).0 - softmax_cross_entropy(&m, &labels, k).0) / 2e-6;
        assert!((fd - g[i]).abs() < 1e-8, "logit {i}: {} vs {fd}", g[i]);
    }
}

/// A one-layer network `z = W·x + b` with `W = [0.5, −1]`, `b = [0.25]`, and a gradient of
/// `W`: `[0.2, −0.4]`, `b`: `[1.0]`.
fn tiny() -> (Network<f64>, ParamGrads<f64>) {
    let mut net = Network::<f64>::new(&[2]).unwrap();
    net.then("fc", Layer::Dense(Dense { weight: vec![0.5, -1.0], bias: Some(vec![0.25]), inputs: 2, outputs: 1 }))
        .unwrap();
    let g =
        ParamGrads { nodes: vec![None, Some(LayerGrads::Dense { weight: vec![0.2, -0.4], bias: Some(vec![1.0]) })] };
    (net, g)
}

fn flat_params(net: &Network<f64>) -> Vec<f64> {
    net.params().tensors().concat()
}

fn assert_close(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-12 * (1.0 + y.abs()), "{a:?} vs {b:?}");
    }
}

#[test]
fn sgd_steps_match_formula() {
    let (mut net, g) = tiny();
    let p0 = flat_params(&net);
    let gs = g.tensors().concat();
    let mut sgd = Sgd::new(0.1, 0.9);
    sgd.step(&mut net, &g).unwrap();
    // b₁ = g, θ₁ = θ₀ − lr·g
    let p1: Vec<f64> = p0.iter().zip(&gs).map(|(p, g)| p - 0.1 * g).collect();
    assert_close(&flat_params(&net), &p1);
    sgd.step(&mut net, &g).unwrap();
    // b₂ = 0.9·g + g
    let p2: Vec<f64> = p1.iter().zip(&gs).map(|(p, g)| p - 0.1 * 1.9 * g).collect();
    assert_close(&flat_params(&net), &p2);
    let mut plain = Sgd::new(0.5, 0.0);
    plain.step(&mut net, &g).unwrap();
    let p3: Vec<f64> = p2.iter().zip(&gs).map(|(p, g)| p - 0.5 * g).collect();
    assert_close(&flat_params(&net), &p3);
}

#[test]
fn adam_steps_match_formula() {
    let (mut net, g) = tiny();
    let p0 = flat_params(&net);
    let gs = g.tensors().concat();
    let (lr, b1, b2, eps) = (0.01, 0.9, 0.999, 1e-8);
    let mut adam = Adam::new(lr);
    assert_eq!((adam.beta1, adam.beta2, adam.eps), (b1, b2, eps));
    adam.step(&mut net, &g).unwrap();
    // Step 1: m̂ = g, v̂ = g², so θ₁ = θ₀ − lr·g/(|g| + ε).
    let p1: Vec<f64> = p0.iter().zip(&gs).map(|(p, g)| p - lr * g / (g.abs() + eps)).collect();
    assert_close(&flat_params(&net), &p1);
    // Step 2 with gradient 2g: m = 0.9·0.1·g + 0.1·2g, v = 0.999·0.001·g² + 0.001·4g².
    let mut g2 = g.clone();
    g2.scale(2.0);
    adam.step(&mut net, &g2).unwrap();
    let p2: Vec<f64> = p1
        .iter()
        .zip(&gs)
        .map(|(p, g)| {
            let m = b1 * (1.0 - b1) * g + (1.0 - b1) * 2.0 * g;
            let v = b2 * (1.0 - b2) * g * g + (1.0 - b2) * 4.0 * g * g;
            let (mh, vh) = (m / (1.0 - b1 * b1), v / (1.0 - b2 * b2));
            p - lr * mh / (vh.sqrt() + eps)
        })
        .collect();
    assert_close(&flat_params(&net), &p2);
    assert_eq!(adam.steps(), 2);
}

#[test]
fn rmsprop_step_matches_formula() {
    let (mut net, g) = tiny();
    let p0 = flat_params(&net);
    let gs = g.tensors().concat();
    let mut rms = RmsProp::new(0.01);
    assert_eq!((rms.alpha, rms.eps), (0.99, 1e-8));
    rms.step(&mut net, &g).unwrap();
    let p1: Vec<f64> = p0.iter().zip(&gs).map(|(p, g)| p - 0.01 * g / ((0.01 * g * g).sqrt() + 1e-8)).collect();
    assert_close(&flat_params(&net), &p1);
    rms.step(&mut net, &g).unwrap();
    let v2 = |g: f64| 0.99 * 0.01 * g * g + 0.01 * g * g;
    let p2: Vec<f64> = p1.iter().zip(&gs).map(|(p, g)| p - 0.01 * g / (v2(*g).sqrt() + 1e-8)).collect();
    assert_close(&flat_params(&net), &p2);
}

#[test]
fn optimizers_reject_mismatched_gradients() {
    let (mut net, _) = tiny();
    let wrong = ParamGrads { nodes: vec![None, Some(LayerGrads::Dense { weight: vec![0.0; 2], bias: None })] };
    let before = net.clone();
    assert!(Adam::new(0.1).step(&mut net, &wrong).is_err());
    assert!(Sgd::new(0.1, 0.9).step(&mut net, &wrong).is_err());
    assert!(RmsProp::new(0.1).step(&mut net, &wrong).is_err());
    assert!(net.apply_update(&ParamGrads { nodes: vec![None] }, 1.0).is_err());
    assert_eq!(net, before);
}

/// Least squares of a dense layer: a convex quadratic in its parameters.
fn quadratic_run(opt: &mut dyn Optimizer<f64>, steps: usize) -> (f64, f64, bool) {
    let mut rng = Rng::new(21);
    let mut net = Network::<f64>::new(&[3]).unwrap();
    let d = Dense { weight: rng.weights(6, 3), bias: Some(vec![0.0; 2]), inputs: 3, outputs: 2 };
    net.then("fc", Layer::Dense(d)).unwrap();
    let n = 16;
    let xs = rng.vec(n * 3, -1.0, 1.0);
    // Targets of a true affine map, so the minimum is 0.
    let (w, b) = (rng.vec(6, -2.0, 2.0), rng.vec(2, -1.0, 1.0));
    let ys: Vec<f64> =
        xs.chunks(3).flat_map(|x| (0..2).map(|o| b[o] + (0..3).map(|i| w[o * 3 + i] * x[i]).sum::<f64>())).collect();
    let mut first = f64::NAN;
    let mut last = f64::NAN;
    let mut monotone = true;
    for _ in 0..steps {
        let trace = net.trace(&xs, n).unwrap();
        let (l, dz) = squared_loss(trace.logits(), &ys, n);
        if first.is_nan() {
            first = l;
        }
        monotone &= last.is_nan() || l <= last + 1e-12;
        last = l;
        let (_, grads) = net.backward(&trace, &dz, 1).unwrap();
        opt.step(&mut net, &grads).unwrap();
    }
    (first, last, monotone)
}

#[test]
fn optimizers_decrease_a_convex_quadratic() {
    let (l0, l, monotone) = quadratic_run(&mut Sgd::new(0.1, 0.0), 300);
    assert!(monotone && l < 0.05 * l0, "sgd: {l0} → {l}");
    let (l0, l, _) = quadratic_run(&mut Sgd::new(0.05, 0.9), 300);
    assert!(l < 0.01 * l0, "sgd momentum: {l0} → {l}");
    let (l0, l, _) = quadratic_run(&mut Adam::new(0.05), 300);
    assert!(l < 0.01 * l0, "adam: {l0} → {l}");
    let (l0, l, _) = quadratic_run(&mut RmsProp::new(0.01), 300);
    assert!(l < 0.05 * l0, "rmsprop: {l0} → {l}");
}

/// A 2-16-2 tanh MLP in f32, trained with Adam on a linearly separable 2-class problem,
/// reaches at least 95% training accuracy.
#[test]
fn mlp_learns_separable_problem() {
    let mut rng = Rng::new(2018);
    let n = 200;
    let mut xs = Vec::new();
    let mut labels = Vec::new();
    while labels.len() < n {
        let (a, b) = (rng.uniform(-1.0, 1.0), rng.uniform(-1.0, 1.0));
        let m = a + 0.5 * b - 0.1;
        if m.abs() < 0.05 {
            continue;
        }
        xs.extend([a as f32, b as f32]);
        labels.push(usize::from(m > 0.0));
    }
    let mut net64 = Network::<f64>::new(&[2]).unwrap();
    net64
        .then(
            "fc1",
            Layer::Dense(Dense { weight: rng.weights(32, 2), bias: Some(vec![0.0; 16]), inputs: 2, outputs: 16 }),
        )
        .unwrap();
    net64.then("tanh", Layer::Tanh).unwrap();
    net64
        .then(
            "fc2",
            Layer::Dense(Dense { weight: rng.weights(32, 16), bias: Some(vec![0.0; 2]), inputs: 16, outputs: 2 }),
        )
        .unwrap();
    let mut net: Network<f32> = net64.cast();
    let accuracy = |net: &Network<f32>| {
        let z = net.forward(&xs, n).unwrap();
        z.chunks(2).zip(&labels).filter(|(z, &y)| usize::from(z[1] > z[0]) == y).count() as f64 / n as f64
    };
    let mut adam = Adam::new(0.01f32);
    let mut losses = Vec::new();
    for _ in 0..300 {
        let trace = net.trace(&xs, n).unwrap();
        let (l, dz) = softmax_cross_entropy(trace.logits(), &labels, 2);
        losses.push(l);
        let (_, grads) = net.backward(&trace, &dz, 1).unwrap();
        adam.step(&mut net, &grads).unwrap();
    }
    let acc = accuracy(&net);
    assert!(acc >= 0.95, "training accuracy {acc}, losses {:?} … {:?}", &losses[..3], &losses[losses.len() - 3..]);
    assert!(losses[losses.len() - 1] < 0.5 * losses[0]);
}

/// `ParamGrads` helpers: zeros, axpy, scale, dot, norm².
#[test]
fn param_grads_helpers() {
    let (net, g) = tiny();
    let mut z = ParamGrads::zeros_like(&net);
    assert_eq!(z.len(), 3);
    assert_eq!(z.norm2(), 0.0);
    z.add_assign(&g);
    z.add_assign(&g);
    z.scale(0.5);
    assert_eq!(z, g);
    assert!((g.norm2() - (0.04 + 0.16 + 1.0)).abs() < 1e-15);
    assert!((g.dot(&z) - g.norm2()).abs() < 1e-15);
    let mut moved = net.clone();
    moved.apply_update(&g, -1.0).unwrap();
    assert_close(&flat_params(&moved), &[0.3, -0.6, -0.75]);
}
