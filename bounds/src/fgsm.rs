//! FGSM (Goodfellow et al.): one signed-gradient step of the cross-entropy.

use alloc::vec::Vec;

use certify_core::{Float, Network};

use crate::domain::InputDomain;
use crate::error::{Error, Result};
use crate::math::exp;
use crate::point::top2;

/// `∇_x CE(z(x), label)` for every sample of the batch (`[batch, D]`), and the logits.
pub fn cross_entropy_input_gradient<T: Float>(net: &Network<T>, x: &[T], labels: &[usize]) -> Result<(Vec<T>, Vec<T>)> {
    let batch = labels.len();
    let k = net.num_classes();
    check_labels(labels, k)?;
    let trace = net.trace(x, batch)?;
    let z = trace.logits();
    let mut cot = alloc::vec![T::ZERO; batch * k];
    for (b, &label) in labels.iter().enumerate() {
        let zb = &z[b * k..(b + 1) * k];
        let m = zb.iter().fold(f64::NEG_INFINITY, |m, v| m.max(v.to_f64()));
        let s: f64 = zb.iter().map(|v| exp(v.to_f64() - m)).sum();
        for c in 0..k {
            let p = exp(zb[c].to_f64() - m) / s;
            cot[b * k + c] = T::from_f64(p - if c == label { 1.0 } else { 0.0 });
        }
    }
    let g = net.vjp(&trace, &cot, 1)?;
    Ok((g, z.to_vec()))
}

pub(crate) fn check_labels(labels: &[usize], classes: usize) -> Result<()> {
    match labels.iter().position(|&l| l >= classes) {
        Some(index) => Err(Error::LabelOutOfRange { index, label: labels[index], classes }),
        None => Ok(()),
    }
}

/// For each `ε` in `eps` (pixel units) and each sample: whether the network still predicts the
/// true label at `clip(x + ε·unit·sign(∇_x CE))`. Returns `[eps.len()][batch]`.
pub fn fgsm<T: Float>(
    net: &Network<T>,
    x: &[T],
    labels: &[usize],
    eps: &[f64],
    domain: &InputDomain,
) -> Result<Vec<Vec<bool>>> {
    let d = net.input_len();
    if domain.len() != d {
        return Err(Error::Config("input domain length differs from the network input size"));
    }
    if eps.iter().any(|e| !e.is_finite() || *e < 0.0) {
        return Err(Error::Config("FGSM ε must be finite and ≥ 0"));
    }
    let batch = labels.len();
    let (g, _) = cross_entropy_input_gradient(net, x, labels)?;
    let k = net.num_classes();
    let mut out = Vec::with_capacity(eps.len());
    let mut adv = alloc::vec![T::ZERO; batch * d];
    for &e in eps {
        for b in 0..batch {
            for i in 0..d {
                let gi = g[b * d + i].to_f64();
                let s = if gi > 0.0 {
                    1.0
                } else if gi < 0.0 {
                    -1.0
                } else {
                    0.0
                };
                let v = x[b * d + i].to_f64() + e * domain.unit[i] as f64 * s;
                adv[b * d + i] = T::from_f64(domain.clamp(i, v));
            }
        }
        let z = net.forward(&adv, batch)?;
        out.push((0..batch).map(|b| top2(&z[b * k..(b + 1) * k]).0 == labels[b]).collect());
    }
    Ok(out)
}
