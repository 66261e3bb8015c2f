//! The compact inference engine: forward pass, exact Jacobian (reverse mode, one logit row at a
//! time) and the Prop. 3 / Cor. 2 certificate, all inside a caller-provided scratch buffer.
//! Nothing here allocates.

use super::format::*;
use super::kernels::{dense_adjoint, dense_forward, pad_runs, Conv};
use super::load::{invalid, CompactModel};
use super::Precision;
use crate::error::{Error, Result};
use crate::first_order::first_order;
use crate::kernels::pool;
use crate::layer::Pool2d;

/// The first-order robustness figures of one input and its logits, from
/// [`CompactModel::certify`]. The same figures as `certify_bounds::PointBounds` (see
/// [`FirstOrder`](crate::FirstOrder) for their meaning; estimates, not sound certificates).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Certificate {
    /// The predicted class (argmax of the logits; lowest index on ties).
    pub predicted: usize,
    /// The class with the second-largest logit.
    pub runner_up: usize,
    /// `z_predicted − z_runner_up` (≥ 0).
    pub margin: f64,
    /// `‖J(x)‖_F` of the exact logit Jacobian.
    pub jacobian_fro: f64,
    /// Prop. 3: `margin / (√2·‖J‖_F)`, `+∞` when `J = 0`.
    pub prop3_bound: f64,
    /// Cor. 2: `min_{k≠k*} |z_k* − z_k| / ‖∇z_k* − ∇z_k‖₂`, `+∞` when no gradient differs.
    pub cor2_estimate: f64,
    /// The class attaining `cor2_estimate` (`None` when it is infinite).
    pub cor2_class: Option<usize>,
    /// Logits in use (`K`, ≤ [`MAX_CLASSES`]).
    pub classes: usize,
    /// The logits; entries past `classes` are zero.
    pub logits: [f32; MAX_CLASSES],
}

impl Certificate {
    /// The `K` logits.
    pub fn logits(&self) -> &[f32] {
        &self.logits[..self.classes]
    }
}

/// Stored weights of one tensor in the model's precision.
enum Weights<'a> {
    F32(&'a [f32]),
    F16(&'a [u16]),
}

/// Runs `$body` with `$w` bound to the typed weight slice.
macro_rules! with_weights {
    ($ws:expr, $w:ident => $body:expr) => {
        match $ws {
            Weights::F32($w) => $body,
            Weights::F16($w) => $body,
        }
    };
}

fn dims(e: &NodeEntry) -> [usize; MAX_RANK] {
    e.shape.map(|d| d as usize)
}

fn size(e: &NodeEntry) -> usize {
    e.shape().iter().map(|&d| d as usize).product()
}

fn pool2d(e: &NodeEntry) -> Pool2d {
    let p = e.params.map(|v| v as usize);
    Pool2d {
        kernel: [p[0], p[1]],
        stride: [p[2], p[3]],
        padding: [p[4], p[5], p[6], p[7]],
        count_include_pad: p[8] == 1,
        ceil_mode: p[9] == 1,
    }
}

fn conv(e: &NodeEntry, x: &NodeEntry) -> Conv {
    let p = e.params.map(|v| v as usize);
    let (xd, yd) = (dims(x), dims(e));
    Conv {
        in_c: p[0],
        out_c: p[1],
        groups: p[12],
        k: [p[2], p[3]],
        s: [p[4], p[5]],
        pad: [p[6], p[7]],
        dil: [p[10], p[11]],
        h: xd[1],
        w: xd[2],
        ho: yd[1],
        wo: yd[2],
    }
}

/// Splits `buf` at the start of node `e`'s values: `(values of earlier nodes, this node's)`.
fn split_at_node<'b>(buf: &'b mut [f32], e: &NodeEntry) -> (&'b mut [f32], &'b mut [f32]) {
    let (before, rest) = buf.split_at_mut(e.value_offset as usize);
    let n = size(e);
    (before, &mut rest[..n])
}

impl<'a> CompactModel<'a> {
    fn f32_tensor(&self, t: TensorRef) -> Result<&'a [f32]> {
        let bytes = self.data.get(t.offset as usize..t.offset as usize + 4 * t.len as usize);
        bytes.and_then(|b| bytemuck::try_cast_slice(b).ok()).ok_or(invalid(None, "a tensor cannot be read in place"))
    }

    fn weights(&self, t: TensorRef) -> Result<Weights<'a>> {
        match self.precision {
            Precision::F32 => self.f32_tensor(t).map(Weights::F32),
            Precision::F16 => {
                let bytes = self.data.get(t.offset as usize..t.offset as usize + 2 * t.len as usize);
                bytes
                    .and_then(|b| bytemuck::try_cast_slice(b).ok())
                    .map(Weights::F16)
                    .ok_or(invalid(None, "a tensor cannot be read in place"))
            }
        }
    }

    /// Aligns `scratch` and returns its first `floats` values.
    fn scratch_f32<'s>(&self, scratch: &'s mut [u8], needed: usize) -> Result<&'s mut [f32]> {
        if scratch.len() < needed {
            return Err(Error::ScratchTooSmall { got: scratch.len(), needed });
        }
        let (_, body, _) = bytemuck::pod_align_to_mut::<u8, f32>(scratch);
        let floats = (needed - (ALIGN - 1)) / 4;
        body.get_mut(..floats).ok_or(Error::ScratchTooSmall { got: 0, needed })
    }

    /// Runs the forward pass of `x` into `values` (the activation buffer).
    fn forward(&self, x: &[f32], values: &mut [f32]) -> Result<()> {
        if x.len() != self.input_len {
            return Err(Error::DataLength { got: x.len(), expected: self.input_len, what: "compact model input" });
        }
        if let Some(index) = x.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite { index });
        }
        values[..self.input_len].copy_from_slice(x);
        for e in &self.nodes[1..] {
            let xe = &self.nodes[e.inputs[0] as usize];
            let (before, y) = split_at_node(values, e);
            let at = |n: &NodeEntry| &before[n.value_offset as usize..n.value_offset as usize + size(n)];
            let xv = at(xe);
            match e.kind {
                KIND_CONV2D => {
                    let bias = self.f32_tensor(e.bias)?;
                    let g = conv(e, xe);
                    with_weights!(self.weights(e.weight)?, w => g.forward(w, bias, xv, y));
                }
                KIND_DENSE => {
                    let bias = self.f32_tensor(e.bias)?;
                    let inputs = e.params[0] as usize;
                    with_weights!(self.weights(e.weight)?, w => dense_forward(w, bias, inputs, xv, y));
                }
                KIND_RELU => y.iter_mut().zip(xv).for_each(|(y, &v)| *y = if v > 0.0 { v } else { 0.0 }),
                KIND_LEAKY_RELU => {
                    let a = e.fparams[0];
                    y.iter_mut().zip(xv).for_each(|(y, &v)| *y = if v > 0.0 { v } else { a * v });
                }
                KIND_CLIP => {
                    let [lo, hi] = e.fparams;
                    y.iter_mut().zip(xv).for_each(|(y, &v)| {
                        let t = if lo > v { lo } else { v };
                        *y = if hi < t { hi } else { t };
                    });
                }
                KIND_MAX_POOL => pool::max_forward(&pool2d(e), &dims(xe)[..3], &dims(e)[..3], xv, y, None),
                KIND_AVG_POOL => pool::avg_forward(&pool2d(e), &dims(xe)[..3], &dims(e)[..3], xv, y),
                KIND_GLOBAL_AVG_POOL => {
                    let hw = xv.len() / y.len();
                    let inv = 1.0 / hw as f32;
                    for (v, plane) in y.iter_mut().zip(xv.chunks(hw)) {
                        *v = plane.iter().copied().sum::<f32>() * inv;
                    }
                }
                KIND_AFFINE => {
                    let (scale, shift) = (self.f32_tensor(e.weight)?, self.f32_tensor(e.bias)?);
                    for (((y, &v), &s), &t) in y.iter_mut().zip(xv).zip(scale).zip(shift) {
                        *y = v * s + t;
                    }
                }
                KIND_CHANNEL_AFFINE => {
                    let (scale, shift) = (self.f32_tensor(e.weight)?, self.f32_tensor(e.bias)?);
                    let inner = xv.len() / scale.len();
                    for (ch, (yc, xc)) in y.chunks_mut(inner).zip(xv.chunks(inner)).enumerate() {
                        yc.iter_mut().zip(xc).for_each(|(y, &v)| *y = v * scale[ch] + shift[ch]);
                    }
                }
                KIND_RESHAPE => y.copy_from_slice(xv),
                KIND_ADD => {
                    let b = at(&self.nodes[e.inputs[1] as usize]);
                    y.iter_mut().zip(xv.iter().zip(b)).for_each(|(y, (&u, &v))| *y = u + v);
                }
                KIND_PAD => {
                    y.fill(e.fparams[0]);
                    let rank = xe.rank as usize;
                    let begin = e.params.map(|v| v as usize);
                    pad_runs(&dims(xe)[..rank], &dims(e)[..rank], &begin[..rank], |s, d, n| {
                        y[d..d + n].copy_from_slice(&xv[s..s + n])
                    });
                }
                _ => return Err(invalid(None, "unknown layer kind")),
            }
        }
        Ok(())
    }

    /// Adds the adjoint of node `e` applied to `dy` into the cotangents `before` of the earlier
    /// nodes; `values` holds the forward activations.
    fn adjoint(&self, e: &NodeEntry, values: &[f32], dy: &[f32], before: &mut [f32]) -> Result<()> {
        let xe = &self.nodes[e.inputs[0] as usize];
        let range = |n: &NodeEntry| n.value_offset as usize..n.value_offset as usize + size(n);
        let xv = &values[range(xe)];
        let dx = &mut before[range(xe)];
        match e.kind {
            KIND_CONV2D => {
                let g = conv(e, xe);
                with_weights!(self.weights(e.weight)?, w => g.adjoint(w, dy, dx));
            }
            KIND_DENSE => {
                let (inputs, outputs) = (e.params[0] as usize, e.params[1] as usize);
                with_weights!(self.weights(e.weight)?, w => dense_adjoint(w, inputs, outputs, dy, dx));
            }
            KIND_RELU => dx.iter_mut().zip(dy).zip(xv).for_each(|((d, &g), &v)| *d += if v > 0.0 { g } else { 0.0 }),
            KIND_LEAKY_RELU => {
                let a = e.fparams[0];
                dx.iter_mut().zip(dy).zip(xv).for_each(|((d, &g), &v)| *d += if v > 0.0 { g } else { a * g });
            }
            KIND_CLIP => {
                let [lo, hi] = e.fparams;
                dx.iter_mut().zip(dy).zip(xv).for_each(|((d, &g), &v)| *d += if v > lo && v < hi { g } else { 0.0 });
            }
            KIND_MAX_POOL => pool::max_backward_acc(&pool2d(e), &dims(xe)[..3], &dims(e)[..3], xv, dy, dx),
            KIND_AVG_POOL => pool::avg_backward_acc(&pool2d(e), &dims(xe)[..3], &dims(e)[..3], dy, dx),
            KIND_GLOBAL_AVG_POOL => {
                let hw = dx.len() / dy.len();
                let inv = 1.0 / hw as f32;
                for (plane, &g) in dx.chunks_mut(hw).zip(dy) {
                    let g = g * inv;
                    plane.iter_mut().for_each(|d| *d += g);
                }
            }
            KIND_AFFINE => {
                let scale = self.f32_tensor(e.weight)?;
                dx.iter_mut().zip(dy).zip(scale).for_each(|((d, &g), &s)| *d += g * s);
            }
            KIND_CHANNEL_AFFINE => {
                let scale = self.f32_tensor(e.weight)?;
                let inner = dx.len() / scale.len();
                for (ch, (dc, gc)) in dx.chunks_mut(inner).zip(dy.chunks(inner)).enumerate() {
                    dc.iter_mut().zip(gc).for_each(|(d, &g)| *d += g * scale[ch]);
                }
            }
            KIND_RESHAPE => dx.iter_mut().zip(dy).for_each(|(d, &g)| *d += g),
            KIND_ADD => {
                dx.iter_mut().zip(dy).for_each(|(d, &g)| *d += g);
                let dx2 = &mut before[range(&self.nodes[e.inputs[1] as usize])];
                dx2.iter_mut().zip(dy).for_each(|(d, &g)| *d += g);
            }
            KIND_PAD => {
                let rank = xe.rank as usize;
                let begin = e.params.map(|v| v as usize);
                pad_runs(&dims(xe)[..rank], &dims(e)[..rank], &begin[..rank], |s, d, n| {
                    dx[s..s + n].iter_mut().zip(&dy[d..d + n]).for_each(|(a, &g)| *a += g)
                });
            }
            _ => return Err(invalid(None, "unknown layer kind")),
        }
        Ok(())
    }

    /// The exact Jacobian `[K, D]` at the activations `values`, one reverse pass per logit.
    fn jacobian_rows(&self, values: &[f32], cot: &mut [f32], jac: &mut [f32]) -> Result<()> {
        let d = self.input_len;
        let out = &self.nodes[self.nodes.len() - 1];
        for (k, row) in jac.chunks_mut(d).enumerate() {
            cot.fill(0.0);
            cot[out.value_offset as usize + k] = 1.0;
            for e in self.nodes[1..].iter().rev() {
                let (before, dy) = split_at_node(cot, e);
                if dy.iter().all(|&v| v == 0.0) {
                    continue;
                }
                self.adjoint(e, values, dy, before)?;
            }
            row.copy_from_slice(&cot[..d]);
        }
        Ok(())
    }

    fn logits_in<'v>(&self, values: &'v [f32]) -> &'v [f32] {
        let out = &self.nodes[self.nodes.len() - 1];
        &values[out.value_offset as usize..out.value_offset as usize + self.classes]
    }

    /// Writes the logits of the input `x` (`D` values) into `logits` (`K` values).
    ///
    /// `scratch` needs at least [`infer_scratch_size`](Self::infer_scratch_size) bytes, any
    /// alignment. Errors when a length is wrong or `x` holds NaN/infinity. Allocation-free.
    pub fn infer(&self, x: &[f32], scratch: &mut [u8], logits: &mut [f32]) -> Result<()> {
        if logits.len() != self.classes {
            return Err(Error::DataLength { got: logits.len(), expected: self.classes, what: "logits output" });
        }
        let values = self.scratch_f32(scratch, self.infer_scratch)?;
        self.forward(x, values)?;
        logits.copy_from_slice(self.logits_in(values));
        Ok(())
    }

    /// Writes the logits (`K`) and the exact Jacobian `∂z/∂x` (`[K, D]` row-major) of `x`.
    ///
    /// `scratch` needs at least [`scratch_size`](Self::scratch_size) bytes. Allocation-free.
    pub fn jacobian(&self, x: &[f32], scratch: &mut [u8], logits: &mut [f32], jac: &mut [f32]) -> Result<()> {
        if logits.len() != self.classes {
            return Err(Error::DataLength { got: logits.len(), expected: self.classes, what: "logits output" });
        }
        let expected = self.classes * self.input_len;
        if jac.len() != expected {
            return Err(Error::DataLength { got: jac.len(), expected, what: "Jacobian output" });
        }
        let buf = self.scratch_f32(scratch, self.scratch)?;
        let (values, rest) = buf.split_at_mut(self.values_len);
        let cot = &mut rest[..self.values_len];
        self.forward(x, values)?;
        self.jacobian_rows(values, cot, jac)?;
        logits.copy_from_slice(self.logits_in(values));
        Ok(())
    }

    /// Forward pass, exact Jacobian and the Prop. 3 / Cor. 2 figures of the input `x` (`D`
    /// values), in the same arithmetic as [`first_order`](crate::first_order).
    ///
    /// `scratch` needs at least [`scratch_size`](Self::scratch_size) bytes, any alignment; its
    /// contents on entry do not matter. Errors when `x` has the wrong length or holds
    /// NaN/infinity, or the scratch is too small. Allocation-free.
    pub fn certify(&self, x: &[f32], scratch: &mut [u8]) -> Result<Certificate> {
        let buf = self.scratch_f32(scratch, self.scratch)?;
        let (values, rest) = buf.split_at_mut(self.values_len);
        let (cot, jac) = rest.split_at_mut(self.values_len);
        self.forward(x, values)?;
        self.jacobian_rows(values, cot, jac)?;
        let z = self.logits_in(values);
        let f = first_order(z, jac);
        let mut logits = [0f32; MAX_CLASSES];
        logits[..self.classes].copy_from_slice(z);
        Ok(Certificate {
            predicted: f.predicted,
            runner_up: f.runner_up,
            margin: f.margin,
            jacobian_fro: f.jacobian_fro,
            prop3_bound: f.prop3_bound,
            cor2_estimate: f.cor2_estimate,
            cor2_class: f.cor2_class,
            classes: self.classes,
            logits,
        })
    }
}
