//! The closed set of layers a [`Network`](crate::Network) is built from.
//!
//! Shapes are *per sample*: the batch axis is never part of a layer's shape. Image tensors are
//! `[C, H, W]` (NCHW without the N); layout changes such as NHWC exports go through
//! [`Layer::Transpose`].

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::error::{Error, Result};
use crate::scalar::Float;

/// 2-D convolution (cross-correlation, as ONNX `Conv`).
#[derive(Clone, Debug, PartialEq)]
pub struct Conv2d<T> {
    /// Weights `[out_channels, in_channels / groups, kernel_h, kernel_w]`, row-major.
    pub weight: Vec<T>,
    /// One bias per output channel, or none.
    pub bias: Option<Vec<T>>,
    /// Output channels.
    pub out_channels: usize,
    /// Input channels (all groups together).
    pub in_channels: usize,
    /// Kernel `[h, w]`.
    pub kernel: [usize; 2],
    /// Stride `[h, w]`, each ≥ 1.
    pub stride: [usize; 2],
    /// Zero padding `[top, left, bottom, right]`.
    pub padding: [usize; 4],
    /// Dilation `[h, w]`, each ≥ 1.
    pub dilation: [usize; 2],
    /// Groups; divides both channel counts.
    pub groups: usize,
}

/// Window parameters shared by max and average pooling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool2d {
    /// Window `[h, w]`.
    pub kernel: [usize; 2],
    /// Stride `[h, w]`, each ≥ 1.
    pub stride: [usize; 2],
    /// Padding `[top, left, bottom, right]`; padded cells never win a max and, for average
    /// pooling, count in the divisor only when `count_include_pad`.
    pub padding: [usize; 4],
    /// Average pooling only: whether padded cells count in the divisor.
    pub count_include_pad: bool,
    /// Round the output size up instead of down (ONNX `ceil_mode`).
    pub ceil_mode: bool,
}

/// Fully connected layer applied to the last axis: `y = W·x + b`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dense<T> {
    /// Weights `[out, in]`, row-major.
    pub weight: Vec<T>,
    /// One bias per output, or none (ONNX `MatMul`).
    pub bias: Option<Vec<T>>,
    /// Input features.
    pub inputs: usize,
    /// Output features.
    pub outputs: usize,
}

/// Elementwise `y = x·scale + shift` with constants of the full per-sample size (input
/// normalisation such as `(x − mean) / std`, or a constant `Add`/`Mul`).
#[derive(Clone, Debug, PartialEq)]
pub struct Affine<T> {
    /// Per-element scale (per-sample size).
    pub scale: Vec<T>,
    /// Per-element shift (per-sample size).
    pub shift: Vec<T>,
}

/// Inference-mode batch normalisation over axis 0 of the per-sample shape (the channels):
/// `y = (x − mean)/sqrt(var + eps)·gamma + beta`.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNorm<T> {
    /// Scale per channel.
    pub gamma: Vec<T>,
    /// Shift per channel.
    pub beta: Vec<T>,
    /// Running mean per channel.
    pub mean: Vec<T>,
    /// Running variance per channel.
    pub var: Vec<T>,
    /// Added to the variance.
    pub epsilon: T,
}

impl<T: Float> BatchNorm<T> {
    /// Per-channel `(scale, shift)` such that `y = x·scale + shift`.
    pub fn folded(&self) -> (Vec<T>, Vec<T>) {
        let scale: Vec<T> = self.gamma.iter().zip(&self.var).map(|(&g, &v)| g / (v + self.epsilon).sqrt()).collect();
        let shift = self.beta.iter().zip(&self.mean).zip(&scale).map(|((&b, &m), &s)| b - m * s).collect();
        (scale, shift)
    }
}

/// Constant padding of the per-sample tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Pad<T> {
    /// Elements added before each per-sample axis.
    pub begin: Vec<usize>,
    /// Elements added after each per-sample axis.
    pub end: Vec<usize>,
    /// The fill value.
    pub value: T,
}

/// One layer. Each pass (forward, reverse, tangent, shape inference) matches on every variant,
/// so a new layer does not compile until every pass handles it.
#[derive(Clone, Debug, PartialEq)]
pub enum Layer<T> {
    /// The network input (node 0 only).
    Input,
    /// 2-D convolution.
    Conv2d(Conv2d<T>),
    /// Max pooling.
    MaxPool2d(Pool2d),
    /// Average pooling.
    AvgPool2d(Pool2d),
    /// Mean over the spatial axes: `[C, H, W] → [C, 1, 1]`.
    GlobalAvgPool,
    /// Fully connected (ONNX `Gemm`, or `MatMul` by a constant).
    Dense(Dense<T>),
    /// Sum of two inputs of equal shape (residual connections).
    Add,
    /// Elementwise constant scale and shift.
    Affine(Affine<T>),
    /// Batch normalisation (inference).
    BatchNorm(BatchNorm<T>),
    /// `max(x, 0)`.
    Relu,
    /// `x` for `x > 0`, `alpha·x` otherwise.
    LeakyRelu {
        /// Slope for negative inputs.
        alpha: T,
    },
    /// Logistic sigmoid.
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// `min(max(x, min), max)`.
    Clip {
        /// Lower limit.
        min: T,
        /// Upper limit.
        max: T,
    },
    /// Reinterprets the data with a new per-sample shape of the same size (ONNX `Flatten`,
    /// `Reshape`, `Squeeze`, `Unsqueeze`).
    Reshape {
        /// The new per-sample shape.
        shape: Vec<usize>,
    },
    /// Concatenation of the inputs along a per-sample axis.
    Concat {
        /// Per-sample axis.
        axis: usize,
    },
    /// Constant padding.
    Pad(Pad<T>),
    /// Permutes the per-sample axes: output axis `i` is input axis `perm[i]`.
    Transpose {
        /// The permutation.
        perm: Vec<usize>,
    },
    /// Passes its input through (ONNX `Identity`, inference-mode `Dropout`).
    Identity,
}

impl<T: Float> Layer<T> {
    /// Whether the layer has trainable parameters (see [`ParamGrads`](crate::ParamGrads)).
    pub fn has_params(&self) -> bool {
        matches!(self, Layer::Conv2d(_) | Layer::Dense(_) | Layer::BatchNorm(_))
    }

    /// Whether the layer is piecewise linear in its input (zero second derivative almost
    /// everywhere): everything but [`Sigmoid`](Layer::Sigmoid) and [`Tanh`](Layer::Tanh).
    pub fn is_piecewise_linear(&self) -> bool {
        !matches!(self, Layer::Sigmoid | Layer::Tanh)
    }

    /// A short name of the variant, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Input => "Input",
            Layer::Conv2d(_) => "Conv2d",
            Layer::MaxPool2d(_) => "MaxPool2d",
            Layer::AvgPool2d(_) => "AvgPool2d",
            Layer::GlobalAvgPool => "GlobalAvgPool",
            Layer::Dense(_) => "Dense",
            Layer::Add => "Add",
            Layer::Affine(_) => "Affine",
            Layer::BatchNorm(_) => "BatchNorm",
            Layer::Relu => "Relu",
            Layer::LeakyRelu { .. } => "LeakyRelu",
            Layer::Sigmoid => "Sigmoid",
            Layer::Tanh => "Tanh",
            Layer::Clip { .. } => "Clip",
            Layer::Reshape { .. } => "Reshape",
            Layer::Concat { .. } => "Concat",
            Layer::Pad(_) => "Pad",
            Layer::Transpose { .. } => "Transpose",
            Layer::Identity => "Identity",
        }
    }

    /// How many inputs the layer takes (`None`: one or more).
    pub fn arity(&self) -> Option<usize> {
        match self {
            Layer::Input => Some(0),
            Layer::Add => Some(2),
            Layer::Concat { .. } => None,
            _ => Some(1),
        }
    }

    /// Converts every parameter to another float type.
    pub fn cast<U: Float>(&self) -> Layer<U> {
        let v = |x: &Vec<T>| x.iter().map(|&a| U::from_f64(a.to_f64())).collect::<Vec<U>>();
        let s = |a: T| U::from_f64(a.to_f64());
        match self {
            Layer::Input => Layer::Input,
            Layer::Conv2d(c) => Layer::Conv2d(Conv2d {
                weight: v(&c.weight),
                bias: c.bias.as_ref().map(v),
                out_channels: c.out_channels,
                in_channels: c.in_channels,
                kernel: c.kernel,
                stride: c.stride,
                padding: c.padding,
                dilation: c.dilation,
                groups: c.groups,
            }),
            Layer::MaxPool2d(p) => Layer::MaxPool2d(p.clone()),
            Layer::AvgPool2d(p) => Layer::AvgPool2d(p.clone()),
            Layer::GlobalAvgPool => Layer::GlobalAvgPool,
            Layer::Dense(d) => Layer::Dense(Dense {
                weight: v(&d.weight),
                bias: d.bias.as_ref().map(v),
                inputs: d.inputs,
                outputs: d.outputs,
            }),
            Layer::Add => Layer::Add,
            Layer::Affine(a) => Layer::Affine(Affine { scale: v(&a.scale), shift: v(&a.shift) }),
            Layer::BatchNorm(b) => Layer::BatchNorm(BatchNorm {
                gamma: v(&b.gamma),
                beta: v(&b.beta),
                mean: v(&b.mean),
                var: v(&b.var),
                epsilon: s(b.epsilon),
            }),
            Layer::Relu => Layer::Relu,
            Layer::LeakyRelu { alpha } => Layer::LeakyRelu { alpha: s(*alpha) },
            Layer::Sigmoid => Layer::Sigmoid,
            Layer::Tanh => Layer::Tanh,
            Layer::Clip { min, max } => Layer::Clip { min: s(*min), max: s(*max) },
            Layer::Reshape { shape } => Layer::Reshape { shape: shape.clone() },
            Layer::Concat { axis } => Layer::Concat { axis: *axis },
            Layer::Pad(p) => Layer::Pad(Pad { begin: p.begin.clone(), end: p.end.clone(), value: s(p.value) }),
            Layer::Transpose { perm } => Layer::Transpose { perm: perm.clone() },
            Layer::Identity => Layer::Identity,
        }
    }
}

/// Output length of a (possibly dilated) convolution axis, or `None` when the window does not fit.
pub(crate) fn window_out(size: usize, kernel: usize, stride: usize, dilation: usize, pad: usize) -> Option<usize> {
    let span = dilation * (kernel - 1) + 1;
    let padded = size + pad;
    if padded < span {
        return None;
    }
    Some((padded - span) / stride + 1)
}

fn shape_err(node: &str, reason: String) -> Error {
    Error::Shape { node: node.into(), reason }
}
fn param_err(node: &str, reason: String) -> Error {
    Error::Parameter { node: node.into(), reason }
}

fn expect_rank(node: &str, shape: &[usize], rank: usize, what: &str) -> Result<()> {
    if shape.len() != rank {
        return Err(shape_err(node, format!("{what} needs a per-sample input of rank {rank}, got shape {shape:?}")));
    }
    Ok(())
}

fn check_window(node: &str, kernel: [usize; 2], stride: [usize; 2]) -> Result<()> {
    if kernel.contains(&0) || stride.contains(&0) {
        return Err(param_err(node, format!("kernel {kernel:?} and stride {stride:?} must be ≥ 1")));
    }
    Ok(())
}

/// Infers the per-sample output shape of `layer` applied to inputs of the given shapes, checking
/// every parameter on the way.
pub fn infer_shape<T: Float>(node: &str, layer: &Layer<T>, inputs: &[&[usize]]) -> Result<Vec<usize>> {
    check_limits(node, layer, inputs)?;
    let out = infer_shape_unchecked(node, layer, inputs)?;
    if checked_size(&out).is_none_or(|n| n > MAX_VALUES_PER_SAMPLE) {
        return Err(shape_err(node, format!("output shape {out:?} exceeds {MAX_VALUES_PER_SAMPLE} values per sample")));
    }
    Ok(out)
}

/// The most values one sample may have at any node (2³¹).
pub const MAX_VALUES_PER_SAMPLE: usize = 1 << 31;
/// The largest kernel, stride, padding, dilation or group count accepted (2²⁰).
const MAX_PARAM: usize = 1 << 20;

/// The product of the dimensions, or `None` when it overflows.
pub(crate) fn checked_size(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

/// Rejects inputs and parameters large enough to overflow the shape arithmetic, so that every
/// later product and sum of dimensions is exact.
fn check_limits<T: Float>(node: &str, layer: &Layer<T>, inputs: &[&[usize]]) -> Result<()> {
    for s in inputs {
        if checked_size(s).is_none_or(|n| n > MAX_VALUES_PER_SAMPLE) {
            return Err(shape_err(
                node,
                format!("input shape {s:?} exceeds {MAX_VALUES_PER_SAMPLE} values per sample"),
            ));
        }
    }
    let params: Vec<usize> = match layer {
        Layer::Conv2d(c) => {
            let mut v = alloc::vec![c.out_channels, c.in_channels, c.groups];
            v.extend(c.kernel.iter().chain(&c.stride).chain(&c.padding).chain(&c.dilation));
            v
        }
        Layer::MaxPool2d(p) | Layer::AvgPool2d(p) => {
            p.kernel.iter().chain(&p.stride).chain(&p.padding).copied().collect()
        }
        Layer::Dense(d) => alloc::vec![d.inputs, d.outputs],
        Layer::Pad(p) => p.begin.iter().chain(&p.end).copied().collect(),
        Layer::Reshape { shape } => {
            if checked_size(shape).is_none_or(|n| n > MAX_VALUES_PER_SAMPLE) {
                return Err(param_err(node, format!("shape {shape:?} exceeds {MAX_VALUES_PER_SAMPLE} values")));
            }
            Vec::new()
        }
        _ => Vec::new(),
    };
    if params.iter().any(|&p| p > MAX_VALUES_PER_SAMPLE) {
        return Err(param_err(node, format!("a size parameter of {} is out of range", layer.kind())));
    }
    if let Layer::Conv2d(c) = layer {
        if c.kernel.iter().chain(&c.stride).chain(&c.padding).chain(&c.dilation).any(|&p| p > MAX_PARAM) {
            return Err(param_err(node, format!("kernel, stride, padding and dilation must be at most {MAX_PARAM}")));
        }
    }
    if let Layer::MaxPool2d(p) | Layer::AvgPool2d(p) = layer {
        if p.kernel.iter().chain(&p.stride).chain(&p.padding).any(|&v| v > MAX_PARAM) {
            return Err(param_err(node, format!("kernel, stride and padding must be at most {MAX_PARAM}")));
        }
    }
    if let Layer::Pad(p) = layer {
        if p.begin.iter().chain(&p.end).any(|&v| v > MAX_VALUES_PER_SAMPLE / 4) {
            return Err(param_err(node, "padding out of range".into()));
        }
    }
    Ok(())
}

fn infer_shape_unchecked<T: Float>(node: &str, layer: &Layer<T>, inputs: &[&[usize]]) -> Result<Vec<usize>> {
    if let Some(n) = layer.arity() {
        if inputs.len() != n {
            return Err(shape_err(node, format!("{} takes {n} input(s), got {}", layer.kind(), inputs.len())));
        }
    } else if inputs.is_empty() {
        return Err(shape_err(node, format!("{} needs at least one input", layer.kind())));
    }
    let size = |s: &[usize]| checked_size(s).unwrap_or(usize::MAX);
    match layer {
        Layer::Input => Err(shape_err(node, "Input can only be node 0".into())),
        Layer::Conv2d(c) => {
            let x = inputs[0];
            expect_rank(node, x, 3, "Conv2d")?;
            check_window(node, c.kernel, c.stride)?;
            if c.dilation.contains(&0) || c.groups == 0 {
                return Err(param_err(node, "dilation and groups must be ≥ 1".into()));
            }
            if x[0] != c.in_channels {
                return Err(shape_err(
                    node,
                    format!("Conv2d expects {} input channels, input has shape {x:?}", c.in_channels),
                ));
            }
            if c.in_channels % c.groups != 0 || c.out_channels % c.groups != 0 {
                return Err(param_err(node, format!("groups {} must divide the channel counts", c.groups)));
            }
            let wlen = checked_size(&[c.out_channels, c.in_channels / c.groups, c.kernel[0], c.kernel[1]])
                .unwrap_or(usize::MAX);
            if c.weight.len() != wlen {
                return Err(param_err(node, format!("weight has {} values, expected {wlen}", c.weight.len())));
            }
            if let Some(b) = &c.bias {
                if b.len() != c.out_channels {
                    return Err(param_err(node, format!("bias has {} values, expected {}", b.len(), c.out_channels)));
                }
            }
            let ho = window_out(x[1], c.kernel[0], c.stride[0], c.dilation[0], c.padding[0] + c.padding[2]);
            let wo = window_out(x[2], c.kernel[1], c.stride[1], c.dilation[1], c.padding[1] + c.padding[3]);
            match (ho, wo) {
                (Some(h), Some(w)) => Ok(alloc::vec![c.out_channels, h, w]),
                _ => Err(shape_err(node, format!("kernel {:?} does not fit input {x:?}", c.kernel))),
            }
        }
        Layer::MaxPool2d(p) | Layer::AvgPool2d(p) => {
            let x = inputs[0];
            expect_rank(node, x, 3, layer.kind())?;
            check_window(node, p.kernel, p.stride)?;
            if p.padding[0] >= p.kernel[0]
                || p.padding[2] >= p.kernel[0]
                || p.padding[1] >= p.kernel[1]
                || p.padding[3] >= p.kernel[1]
            {
                return Err(param_err(
                    node,
                    format!("padding {:?} must be smaller than the kernel {:?}", p.padding, p.kernel),
                ));
            }
            let ho = pool_out(x[1], p.kernel[0], p.stride[0], p.padding[0], p.padding[2], p.ceil_mode);
            let wo = pool_out(x[2], p.kernel[1], p.stride[1], p.padding[1], p.padding[3], p.ceil_mode);
            match (ho, wo) {
                (Some(h), Some(w)) => Ok(alloc::vec![x[0], h, w]),
                _ => Err(shape_err(node, format!("window {:?} does not fit input {x:?}", p.kernel))),
            }
        }
        Layer::GlobalAvgPool => {
            let x = inputs[0];
            if x.len() < 2 {
                return Err(shape_err(node, format!("GlobalAvgPool needs [C, spatial…], got {x:?}")));
            }
            let mut out = alloc::vec![1; x.len()];
            out[0] = x[0];
            Ok(out)
        }
        Layer::Dense(d) => {
            let x = inputs[0];
            if x.last() != Some(&d.inputs) {
                return Err(shape_err(
                    node,
                    format!("Dense expects a last axis of {} features, input has shape {x:?}", d.inputs),
                ));
            }
            if Some(d.weight.len()) != d.inputs.checked_mul(d.outputs) {
                return Err(param_err(
                    node,
                    format!("weight has {} values, expected {}×{}", d.weight.len(), d.outputs, d.inputs),
                ));
            }
            if let Some(b) = &d.bias {
                if b.len() != d.outputs {
                    return Err(param_err(node, format!("bias has {} values, expected {}", b.len(), d.outputs)));
                }
            }
            let mut out = x.to_vec();
            *out.last_mut().unwrap_or(&mut 0) = d.outputs;
            Ok(out)
        }
        Layer::Add => {
            if inputs[0] != inputs[1] {
                return Err(shape_err(
                    node,
                    format!("Add needs equal shapes, got {:?} and {:?}", inputs[0], inputs[1]),
                ));
            }
            Ok(inputs[0].to_vec())
        }
        Layer::Affine(a) => {
            let n = size(inputs[0]);
            if a.scale.len() != n || a.shift.len() != n {
                return Err(param_err(
                    node,
                    format!("scale/shift must have {n} values, have {}/{}", a.scale.len(), a.shift.len()),
                ));
            }
            Ok(inputs[0].to_vec())
        }
        Layer::BatchNorm(b) => {
            let x = inputs[0];
            let c = x.first().copied().unwrap_or(0);
            if [b.gamma.len(), b.beta.len(), b.mean.len(), b.var.len()].iter().any(|&l| l != c) {
                return Err(param_err(
                    node,
                    format!("BatchNorm parameters must have one value per channel ({c}), input {x:?}"),
                ));
            }
            if b.var.iter().any(|&v| v + b.epsilon <= T::ZERO) {
                return Err(param_err(node, "variance + epsilon must be positive".into()));
            }
            Ok(x.to_vec())
        }
        Layer::Relu | Layer::Sigmoid | Layer::Tanh | Layer::Identity => Ok(inputs[0].to_vec()),
        Layer::LeakyRelu { alpha } => {
            if !alpha.is_finite() {
                return Err(param_err(node, "alpha must be finite".into()));
            }
            Ok(inputs[0].to_vec())
        }
        Layer::Clip { min, max } => {
            if min > max {
                return Err(param_err(node, format!("Clip min {min:?} exceeds max {max:?}")));
            }
            Ok(inputs[0].to_vec())
        }
        Layer::Reshape { shape } => {
            if size(shape) != size(inputs[0]) {
                return Err(shape_err(node, format!("cannot reshape {:?} into {shape:?}", inputs[0])));
            }
            Ok(shape.clone())
        }
        Layer::Concat { axis } => {
            let first = inputs[0];
            if *axis >= first.len() {
                return Err(shape_err(node, format!("axis {axis} out of range for {first:?}")));
            }
            let mut out = first.to_vec();
            for s in &inputs[1..] {
                if s.len() != first.len() || s.iter().zip(first).enumerate().any(|(i, (a, b))| i != *axis && a != b) {
                    return Err(shape_err(node, format!("cannot concatenate {first:?} and {s:?} on axis {axis}")));
                }
                out[*axis] += s[*axis];
            }
            Ok(out)
        }
        Layer::Pad(p) => {
            let x = inputs[0];
            if p.begin.len() != x.len() || p.end.len() != x.len() {
                return Err(param_err(node, format!("pads must have one entry per axis of {x:?}")));
            }
            Ok(x.iter().zip(&p.begin).zip(&p.end).map(|((&s, &b), &e)| s + b + e).collect())
        }
        Layer::Transpose { perm } => {
            let x = inputs[0];
            let mut seen = alloc::vec![false; x.len()];
            if perm.len() != x.len() || perm.iter().any(|&p| p >= x.len() || core::mem::replace(&mut seen[p], true)) {
                return Err(param_err(node, format!("{perm:?} is not a permutation of the axes of {x:?}")));
            }
            Ok(perm.iter().map(|&p| x[p]).collect())
        }
    }
}

/// Pooling output length (padding never makes a window start in the right padding).
pub(crate) fn pool_out(
    size: usize,
    kernel: usize,
    stride: usize,
    pad_begin: usize,
    pad_end: usize,
    ceil: bool,
) -> Option<usize> {
    let padded = size + pad_begin + pad_end;
    if padded < kernel {
        return None;
    }
    let num = padded - kernel;
    let mut out = num / stride + 1;
    if ceil && !num.is_multiple_of(stride) {
        out += 1;
        // The last window must start inside the input or the left padding.
        if (out - 1) * stride >= size + pad_begin {
            out -= 1;
        }
    }
    Some(out)
}
