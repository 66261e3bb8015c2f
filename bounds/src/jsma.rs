//! JSMA (Papernot et al.): saliency-map attack toward a target class, in ℓ0.

use alloc::vec::Vec;

use certify_core::{Float, Network};

use crate::domain::InputDomain;
use crate::error::{Error, Result};
use crate::fgsm::check_labels;
use crate::point::top2;

/// Which pixels each step changes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum JsmaSearch {
    /// The original's pixel-pair search: each step changes the pair `(p, q)` that maximises
    /// `−α·β` with `α > 0, β < 0` (for a positive change).
    Pairs,
    /// The paper's form: each step changes the one pixel maximising `α·|β|` with the same signs.
    SinglePixel,
}

/// Which class the attack steers toward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsmaTarget {
    /// The class with the second-largest logit at the clean input.
    RunnerUp,
    /// A fixed class.
    Class(usize),
}

/// JSMA parameters. The saliency map is computed from the logits' gradients
/// (`α_i = ∂z_t/∂x_i`, `β_i = Σ_{j≠t} ∂z_j/∂x_i`).
#[derive(Clone, Debug, PartialEq)]
pub struct JsmaConfig {
    /// Pair or single-pixel search.
    pub search: JsmaSearch,
    /// Change per step and pixel, in pixel units (θ of the original, ε of the paper; +1 by
    /// default: a pixel goes to its maximum). Negative values decrease pixels.
    pub theta: f64,
    /// At most this many steps (the paper: 80 single-pixel steps on MNIST); never more than
    /// `8·D`, so that the attack ends on unbounded domains.
    pub max_iter: usize,
    /// At most this fraction of the input elements may be changed (γ of the original, 0.145).
    pub max_distortion: f64,
    /// Target class.
    pub target: JsmaTarget,
}

impl Default for JsmaConfig {
    fn default() -> Self {
        JsmaConfig {
            search: JsmaSearch::SinglePixel,
            theta: 1.0,
            max_iter: 80,
            max_distortion: 1.0,
            target: JsmaTarget::RunnerUp,
        }
    }
}

impl JsmaConfig {
    /// The original attack of Papernot et al.: pixel pairs, θ = +1, γ = 14.5 %.
    pub fn original() -> Self {
        JsmaConfig {
            search: JsmaSearch::Pairs,
            theta: 1.0,
            max_iter: usize::MAX,
            max_distortion: 0.145,
            target: JsmaTarget::RunnerUp,
        }
    }
}

/// The outcome of JSMA on one input.
#[derive(Clone, Debug, PartialEq)]
pub struct JsmaResult {
    /// The class steered toward.
    pub target: usize,
    /// Whether the final point is classified as the target.
    pub success: bool,
    /// Whether the final point is still classified as the true label.
    pub still_correct: bool,
    /// Distinct input elements changed.
    pub pixels_changed: usize,
    /// Steps taken.
    pub iterations: usize,
    /// The class at the final point.
    pub final_class: usize,
}

struct State {
    target: usize,
    domain: Vec<bool>,
    changed: Vec<bool>,
    n_changed: usize,
    iterations: usize,
    done: Option<(bool, usize)>,
}

/// Runs JSMA on every sample of `x` (`[batch, D]`) with true labels `labels`.
pub fn jsma<T: Float>(
    net: &Network<T>,
    x: &[T],
    labels: &[usize],
    domain: &InputDomain,
    cfg: &JsmaConfig,
) -> Result<Vec<JsmaResult>> {
    let d = net.input_len();
    let k = net.num_classes();
    let batch = labels.len();
    check_labels(labels, k)?;
    if domain.len() != d {
        return Err(Error::Config("input domain length differs from the network input size"));
    }
    if !cfg.theta.is_finite() || cfg.theta == 0.0 {
        return Err(Error::Config("JSMA θ must be finite and non-zero"));
    }
    if !(cfg.max_distortion > 0.0 && cfg.max_distortion <= 1.0) {
        return Err(Error::Config("JSMA maximum distortion must be in (0, 1]"));
    }
    if let JsmaTarget::Class(t) = cfg.target {
        if t >= k {
            return Err(Error::Config("JSMA target class is out of range"));
        }
    }
    let max_pixels = (libm::floor(cfg.max_distortion * d as f64) as usize).max(1);
    // Termination guard for unbounded domains, where a pixel never leaves the search domain.
    let iter_cap = cfg.max_iter.min(8 * d);
    let up = cfg.theta > 0.0;
    let mut cur: Vec<f64> = x.iter().map(|v| v.to_f64()).collect();
    let z0 = net.forward(x, batch)?;
    let mut states: Vec<State> = (0..batch)
        .map(|b| {
            let zb = &z0[b * k..(b + 1) * k];
            let (best, second) = top2(zb);
            let target = match cfg.target {
                JsmaTarget::RunnerUp => {
                    if best == labels[b] {
                        second
                    } else {
                        best
                    }
                }
                JsmaTarget::Class(t) => t,
            };
            // An element can move only if it is not already at the bound it moves toward.
            let dom = (0..d)
                .map(|i| {
                    let v = cur[b * d + i];
                    if up {
                        v < domain.hi[i] as f64
                    } else {
                        v > domain.lo[i] as f64
                    }
                })
                .collect();
            State { target, domain: dom, changed: alloc::vec![false; d], n_changed: 0, iterations: 0, done: None }
        })
        .collect();
    let mut active: Vec<usize> = (0..batch).collect();
    loop {
        let pts: Vec<T> =
            active.iter().flat_map(|&b| cur[b * d..(b + 1) * d].iter().map(|&v| T::from_f64(v))).collect();
        let n = active.len();
        let trace = net.trace(&pts, n)?;
        let z = trace.logits();
        let mut cot = alloc::vec![T::ZERO; n * 2 * k];
        for (slot, &b) in active.iter().enumerate() {
            let t = states[b].target;
            for c in 0..k {
                cot[(slot * 2) * k + c] = if c == t { T::ONE } else { T::ZERO };
                cot[(slot * 2 + 1) * k + c] = if c == t { T::ZERO } else { T::ONE };
            }
        }
        let g = net.vjp(&trace, &cot, 2)?;
        let mut still = Vec::new();
        for (slot, &b) in active.iter().enumerate() {
            let st = &mut states[b];
            let cls = top2(&z[slot * k..(slot + 1) * k]).0;
            if cls == st.target || st.iterations >= iter_cap || st.n_changed >= max_pixels {
                st.done = Some((cls == st.target, cls));
                continue;
            }
            let alpha = &g[(slot * 2) * d..(slot * 2 + 1) * d];
            let beta = &g[(slot * 2 + 1) * d..(slot * 2 + 2) * d];
            let sign = if up { 1.0 } else { -1.0 };
            // Scores for a change in direction `sign`: need sign·α > 0 and sign·β < 0.
            let a = |i: usize| sign * alpha[i].to_f64();
            let bt = |i: usize| sign * beta[i].to_f64();
            let picked: Option<(usize, Option<usize>)> = match cfg.search {
                JsmaSearch::SinglePixel => {
                    let mut best: Option<(f64, usize)> = None;
                    for i in (0..d).filter(|&i| st.domain[i]) {
                        let (ai, bi) = (a(i), bt(i));
                        if ai > 0.0 && bi < 0.0 {
                            let s = ai * -bi;
                            if best.is_none_or(|(bs, _)| s > bs) {
                                best = Some((s, i));
                            }
                        }
                    }
                    best.map(|(_, i)| (i, None))
                }
                JsmaSearch::Pairs => {
                    let idx: Vec<usize> = (0..d).filter(|&i| st.domain[i]).collect();
                    let mut best: Option<(f64, usize, usize)> = None;
                    for (pi, &p) in idx.iter().enumerate() {
                        let (ap, bp) = (a(p), bt(p));
                        for &q in &idx[pi + 1..] {
                            let (al, be) = (ap + a(q), bp + bt(q));
                            if al > 0.0 && be < 0.0 {
                                let s = al * -be;
                                if best.is_none_or(|(bs, _, _)| s > bs) {
                                    best = Some((s, p, q));
                                }
                            }
                        }
                    }
                    best.map(|(_, p, q)| (p, Some(q)))
                }
            };
            let Some((p, q)) = picked else {
                st.done = Some((false, cls));
                continue;
            };
            for i in core::iter::once(p).chain(q) {
                let v = domain.clamp(i, cur[b * d + i] + cfg.theta * domain.unit[i] as f64);
                cur[b * d + i] = v;
                if !st.changed[i] {
                    st.changed[i] = true;
                    st.n_changed += 1;
                }
                let at_bound = if up { v >= domain.hi[i] as f64 } else { v <= domain.lo[i] as f64 };
                if at_bound {
                    st.domain[i] = false;
                }
            }
            st.iterations += 1;
            still.push(b);
        }
        if still.is_empty() {
            break;
        }
        active = still;
    }
    Ok(states
        .into_iter()
        .zip(labels)
        .map(|(st, &label)| {
            let (success, final_class) = st.done.expect("every sample finishes");
            JsmaResult {
                target: st.target,
                success,
                still_correct: final_class == label,
                pixels_changed: st.n_changed,
                iterations: st.iterations,
                final_class,
            }
        })
        .collect())
}
