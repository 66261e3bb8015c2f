//! The numerical properties every test network must satisfy.

use certify_core::{Layer, Network, Trace};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::strategies::Rng;

/// Pre-activations closer than this to a kink of ReLU / LeakyReLU / Clip make a case too
/// fragile for finite differences; it is skipped.
pub const KINK_MARGIN: f64 = 1e-4;

/// Finite-difference step.
pub const STEP: f64 = 1e-6;

fn fail<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> TestCaseError + '_ {
    move |e| TestCaseError::fail(format!("{what}: {e}"))
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// Whether some input of a piecewise-linear activation lies within [`KINK_MARGIN`] of a kink
/// (values exactly on a kink come from constant cells such as dead ReLUs, and are stable).
pub fn near_kink(net: &Network<f64>, trace: &Trace<f64>) -> Option<String> {
    for (id, node) in net.nodes().iter().enumerate().skip(1) {
        let kinks: Vec<f64> = match node.layer {
            Layer::Relu | Layer::LeakyRelu { .. } => vec![0.0],
            Layer::Clip { min, max } => vec![min, max],
            _ => continue,
        };
        let input = trace.value(node.inputs[0]);
        for (i, &v) in input.iter().enumerate() {
            for &k in &kinks {
                let d = (v - k).abs();
                if d > 0.0 && d < KINK_MARGIN {
                    return Some(format!("node {id} ({}) input {i} = {v} is {d:e} from the kink {k}", node.name));
                }
            }
        }
    }
    None
}

/// Central finite differences of the logits of sample `x` (`D` values): `[K, D]`, computed with
/// one batched forward pass over the `2·D` perturbed inputs.
pub fn finite_differences(net: &Network<f64>, x: &[f64], step: f64) -> Vec<f64> {
    let d = x.len();
    let k = net.num_classes();
    let mut batch = Vec::with_capacity(2 * d * d);
    for i in 0..d {
        for sign in [1.0, -1.0] {
            let mut xp = x.to_vec();
            xp[i] += sign * step;
            batch.extend(xp);
        }
    }
    let z = net.forward(&batch, 2 * d).expect("forward of perturbed inputs");
    let mut j = vec![0.0; k * d];
    for i in 0..d {
        for c in 0..k {
            let plus = z[(2 * i) * k + c];
            let minus = z[(2 * i + 1) * k + c];
            j[c * d + i] = (plus - minus) / (2.0 * step);
        }
    }
    j
}

/// The exact Jacobian of one sample equals central finite differences of `forward` within
/// 1e-5 relative (to the largest entry). Cases near a kink are rejected, as are cases where
/// finite differences with two step sizes disagree (a kink crossed by the step).
pub fn jacobian_matches_fd(net: &Network<f64>, x: &[f64]) -> Result<(), TestCaseError> {
    let trace = net.trace(x, 1).map_err(fail("trace"))?;
    if let Some(why) = near_kink(net, &trace) {
        return Err(TestCaseError::reject(why));
    }
    let jac = net.jacobian(x, 1).map_err(fail("jacobian"))?;
    let (k, d) = (net.num_classes(), net.input_len());
    prop_assert_eq!((jac.batch, jac.classes, jac.inputs), (1, k, d));
    prop_assert_eq!(&jac.logits, &net.forward(x, 1).map_err(fail("forward"))?, "jacobian logits ≠ forward");
    prop_assert_eq!(trace.logits(), &jac.logits[..], "trace logits ≠ jacobian logits");
    let exact = jac.jacobian_of(0);
    let fd = finite_differences(net, x, STEP);
    let fd_small = finite_differences(net, x, STEP / 4.0);
    let scale = max_abs(exact).max(max_abs(&fd)).max(1e-3);
    for i in 0..k * d {
        if (fd[i] - fd_small[i]).abs() > 1e-6 * scale {
            return Err(TestCaseError::reject(format!(
                "finite differences with two steps disagree at [{}, {}] ({} vs {}): a kink",
                i / d,
                i % d,
                fd[i],
                fd_small[i]
            )));
        }
    }
    for i in 0..k * d {
        prop_assert!(
            (exact[i] - fd[i]).abs() <= 1e-5 * scale,
            "J[{}, {}] = {} but finite differences give {} (scale {})",
            i / d,
            i % d,
            exact[i],
            fd[i],
            scale
        );
    }
    Ok(())
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `uᵀ(J v) = (uᵀJ) v` for random `u`, `v` (several per sample, a batch of samples), and both
/// products agree with the full Jacobian.
pub fn jvp_vjp_adjoint(net: &Network<f64>, xs: &[f64], batch: usize, seed: u64) -> Result<(), TestCaseError> {
    let (k, d) = (net.num_classes(), net.input_len());
    let rows = 3;
    let mut rng = Rng::new(seed ^ 0xA5A5_5A5A_0F0F_F0F0);
    let v = rng.vec(batch * rows * d, -1.0, 1.0);
    let u = rng.vec(batch * rows * k, -1.0, 1.0);
    let trace = net.trace(xs, batch).map_err(fail("trace"))?;
    let jv = net.jvp(&trace, &v, rows).map_err(fail("jvp"))?;
    let uj = net.vjp(&trace, &u, rows).map_err(fail("vjp"))?;
    prop_assert_eq!(jv.len(), batch * rows * k);
    prop_assert_eq!(uj.len(), batch * rows * d);
    let jac = net.jacobian_at(&trace).map_err(fail("jacobian_at"))?;
    for b in 0..batch {
        let j = jac.jacobian_of(b);
        let scale = max_abs(j).max(1e-3);
        for r in 0..rows {
            let row = b * rows + r;
            let (vr, ur) = (&v[row * d..(row + 1) * d], &u[row * k..(row + 1) * k]);
            let (jvr, ujr) = (&jv[row * k..(row + 1) * k], &uj[row * d..(row + 1) * d]);
            let lhs = dot(ur, jvr);
            let rhs = dot(ujr, vr);
            let tol = 1e-10 * scale * (d * k) as f64;
            prop_assert!((lhs - rhs).abs() <= tol, "sample {b} row {r}: uᵀ(Jv) = {lhs} but (uᵀJ)v = {rhs}");
            for c in 0..k {
                let want = dot(&j[c * d..(c + 1) * d], vr);
                prop_assert!(
                    (jvr[c] - want).abs() <= 1e-10 * scale * d as f64,
                    "sample {b} row {r}: (Jv)[{c}] = {} but J·v = {want}",
                    jvr[c]
                );
            }
            for i in 0..d {
                let want: f64 = (0..k).map(|c| ur[c] * j[c * d + i]).sum();
                prop_assert!(
                    (ujr[i] - want).abs() <= 1e-10 * scale * k as f64,
                    "sample {b} row {r}: (uᵀJ)[{i}] = {} but uᵀ·J = {want}",
                    ujr[i]
                );
            }
        }
    }
    Ok(())
}

/// A batch gives the same logits and Jacobians as its samples one at a time.
pub fn batch_matches_single(net: &Network<f64>, xs: &[f64], batch: usize) -> Result<(), TestCaseError> {
    let (k, d) = (net.num_classes(), net.input_len());
    let all = net.jacobian(xs, batch).map_err(fail("batched jacobian"))?;
    let logits = net.forward(xs, batch).map_err(fail("batched forward"))?;
    prop_assert_eq!(logits.len(), batch * k);
    for b in 0..batch {
        let x = &xs[b * d..(b + 1) * d];
        let one = net.jacobian(x, 1).map_err(fail("jacobian"))?;
        let z = &one.logits;
        let zs = max_abs(z).max(1.0);
        for c in 0..k {
            prop_assert!(
                (logits[b * k + c] - z[c]).abs() <= 1e-12 * zs,
                "sample {b}: batched logit {c} = {} vs {}",
                logits[b * k + c],
                z[c]
            );
            prop_assert!((all.logits_of(b)[c] - z[c]).abs() <= 1e-12 * zs, "sample {b}: batched jacobian logit {c}");
        }
        let (jb, j1) = (all.jacobian_of(b), one.jacobian_of(0));
        let js = max_abs(j1).max(1e-3);
        for i in 0..k * d {
            prop_assert!(
                (jb[i] - j1[i]).abs() <= 1e-12 * js,
                "sample {b}: batched J[{}, {}] = {} vs {}",
                i / d,
                i % d,
                jb[i],
                j1[i]
            );
        }
        prop_assert!((all.frobenius(b) - one.frobenius(0)).abs() <= 1e-12 * one.frobenius(0).max(1e-3));
    }
    Ok(())
}

/// The `f32` network (`cast`) computes the same logits as the `f64` one within 1e-4 relative.
pub fn f32_matches_f64(net: &Network<f64>, xs: &[f64], batch: usize) -> Result<(), TestCaseError> {
    let net32: Network<f32> = net.cast();
    prop_assert_eq!(net32.nodes().len(), net.nodes().len());
    let x32: Vec<f32> = xs.iter().map(|&v| v as f32).collect();
    let z64 = net.forward(xs, batch).map_err(fail("f64 forward"))?;
    let z32 = net32.forward(&x32, batch).map_err(fail("f32 forward"))?;
    let scale = max_abs(&z64).max(1.0);
    for (i, (&a, &b)) in z32.iter().zip(&z64).enumerate() {
        prop_assert!((a as f64 - b).abs() <= 1e-4 * scale, "logit {i}: f32 {a} vs f64 {b}");
    }
    // Casting back and forth keeps the structure.
    let back: Network<f64> = net32.cast();
    prop_assert_eq!(back.output_shape(), net.output_shape());
    Ok(())
}
