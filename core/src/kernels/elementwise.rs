//! Pointwise activations: values and derivatives.

use crate::layer::Layer;
use crate::scalar::Float;

fn sigmoid<T: Float>(x: T) -> T {
    if x >= T::ZERO {
        T::ONE / (T::ONE + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::ONE + e)
    }
}

/// The activation's value at `x`. Only called for pointwise nonlinear layers.
#[inline]
pub(crate) fn value<T: Float>(layer: &Layer<T>, x: T) -> T {
    match layer {
        Layer::Relu => x.max(T::ZERO),
        Layer::LeakyRelu { alpha } => {
            if x > T::ZERO {
                x
            } else {
                *alpha * x
            }
        }
        Layer::Sigmoid => sigmoid(x),
        Layer::Tanh => x.tanh(),
        Layer::Clip { min, max } => x.max(*min).min(*max),
        _ => x,
    }
}

/// Calls `f(j, idx[j], derivative(x[idx[j]]))` for every `j`, with the layer dispatch outside
/// the loop (a select for ReLU).
#[inline]
pub(crate) fn for_derivatives_at<T: Float>(
    layer: &Layer<T>,
    x: &[T],
    idx: &[usize],
    mut f: impl FnMut(usize, usize, T),
) {
    match layer {
        Layer::Relu => {
            for (j, &i) in idx.iter().enumerate() {
                f(j, i, if x[i] > T::ZERO { T::ONE } else { T::ZERO });
            }
        }
        _ => {
            for (j, &i) in idx.iter().enumerate() {
                f(j, i, derivative(layer, x[i]));
            }
        }
    }
}

/// Clears the flags `d[i]` where the activation's derivative at `primal[i]` is zero
/// (branch-free for ReLU, whose derivative is zero exactly where `x ≤ 0`).
pub(crate) fn clear_where_flat<T: Float>(layer: &Layer<T>, primal: &[T], d: &mut [u8]) {
    if let Layer::Relu = layer {
        d.iter_mut().zip(primal).for_each(|(v, &x)| *v &= u8::from(x > T::ZERO));
        return;
    }
    for (v, &x) in d.iter_mut().zip(primal) {
        if *v != 0 && derivative(layer, x) == T::ZERO {
            *v = 0;
        }
    }
}

/// The activation's derivative at `x` (ReLU and Clip: 0 at the kinks, as PyTorch).
#[inline]
pub(crate) fn derivative<T: Float>(layer: &Layer<T>, x: T) -> T {
    match layer {
        Layer::Relu => {
            if x > T::ZERO {
                T::ONE
            } else {
                T::ZERO
            }
        }
        Layer::LeakyRelu { alpha } => {
            if x > T::ZERO {
                T::ONE
            } else {
                *alpha
            }
        }
        Layer::Sigmoid => {
            let s = sigmoid(x);
            s * (T::ONE - s)
        }
        Layer::Tanh => {
            let t = x.tanh();
            T::ONE - t * t
        }
        Layer::Clip { min, max } => {
            if x > *min && x < *max {
                T::ONE
            } else {
                T::ZERO
            }
        }
        _ => T::ONE,
    }
}

/// `out[i] = value(x[i])`, with the layer dispatch outside the loop.
pub(crate) fn map_values<T: Float>(layer: &Layer<T>, x: &[T], out: &mut [T]) {
    let it = out.iter_mut().zip(x);
    match layer {
        Layer::Relu => it.for_each(|(o, &v)| *o = relu(v)),
        _ => it.for_each(|(o, &v)| *o = value(layer, v)),
    }
}

/// ReLU as [`map_values`] stores it (a select, so loops over it vectorise).
#[inline(always)]
pub(crate) fn relu<T: Float>(v: T) -> T {
    if v > T::ZERO {
        v
    } else {
        T::ZERO
    }
}

/// `g[i] *= derivative(p[i])`, with the layer dispatch outside the loop.
pub(crate) fn scale_by_derivative<T: Float>(layer: &Layer<T>, p: &[T], g: &mut [T]) {
    let it = g.iter_mut().zip(p);
    match layer {
        // A select, not a conditional store, so the loop vectorises.
        Layer::Relu => it.for_each(|(o, &v)| *o = if v > T::ZERO { *o } else { T::ZERO }),
        _ => it.for_each(|(o, &v)| *o *= derivative(layer, v)),
    }
}
