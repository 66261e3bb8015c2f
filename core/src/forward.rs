//! The forward pass: values of every node for a batch.

use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::error::{Error, Result};
use crate::gemm::{dot, gemm, Mat};
use crate::kernels::{conv, conv_sparse, elementwise, layout, pool};
use crate::layer::Layer;
use crate::network::{Network, Node};
use crate::parallel::{for_row_blocks, for_rows, for_rows2, for_rows3};
use crate::scalar::Float;

/// Up to this many matrix rows, dense layers use matrix-vector products instead of a packed
/// matrix product (which would repack the whole weight matrix for a handful of rows).
const SMALL_BATCH: usize = 4;
/// Output features per parallel task in matrix-vector products.
const GEMV_CHUNK: usize = 64;

/// The values of every node for one batch, kept for the reverse and tangent passes.
///
/// The buffers are shared: [`samples`](Self::samples) and [`prefix`](Self::prefix) make views
/// of the same values, masks and winners without copying them.
#[derive(Clone, Debug)]
pub struct Trace<T> {
    /// Samples in this trace.
    batch: usize,
    /// Where this trace's samples start in the shared buffers.
    first: usize,
    /// Samples in the shared buffers.
    stored: usize,
    /// Nodes `0..nodes` are visible.
    nodes: usize,
    buffers: Arc<Buffers<T>>,
}

#[derive(Debug)]
struct Buffers<T> {
    /// `values[id]` is `[stored, node size]`, empty for nodes that do not reach the output.
    values: Vec<Vec<T>>,
    /// Training-time dropout: `masks[id]`, when present, multiplies node `id`'s output
    /// elementwise (`[stored, node size]`, entries 0 or `1/(1−p)`); empty when no dropout ran.
    masks: Vec<Option<Vec<T>>>,
    /// `winners[id]`, for a max-pooling node: the flat input index that wins each window,
    /// `[stored, node size]` (found once here; every linear pass at this trace reuses it).
    winners: Vec<Option<Vec<usize>>>,
    /// `elided[id]`: node `id`'s values were not kept (a training trace's activation inside a
    /// convolution → activation → max pool chain, which no pass reads; see [`Kept::Training`]).
    elided: Vec<bool>,
}

/// Which node values a forward pass keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kept {
    /// The output's only (every other value is dropped once read).
    Output,
    /// Every node's, and the max pools' winners.
    All,
    /// Every node's but those of the activations in convolution → activation → max pool
    /// chains ([`Network::fused_pool`]): the passes of a training step read the convolution's
    /// values and the pool's values and winners there, never the activation's.
    Training,
}

impl<T: Float> Trace<T> {
    fn new(batch: usize, run: Run<T>) -> Self {
        let nodes = run.values.len();
        let buffers = Buffers { values: run.values, masks: run.masks, winners: run.winners, elided: run.elided };
        Trace { batch, first: 0, stored: batch, nodes, buffers: Arc::new(buffers) }
    }

    /// This trace's samples of a shared `[stored, size]` buffer (an empty one stays empty).
    fn rows_of<'a, U>(&self, v: &'a [U]) -> &'a [U] {
        match v.len().checked_div(self.stored) {
            Some(per) if per > 0 => &v[self.first * per..(self.first + self.batch) * per],
            _ => &v[..0],
        }
    }

    /// Samples in the batch.
    pub fn batch(&self) -> usize {
        self.batch
    }
    /// The values of node `id`, `[batch, size]`.
    pub fn value(&self, id: usize) -> &[T] {
        assert!(id < self.nodes, "node {id} is not in this trace of {} nodes", self.nodes);
        assert!(!self.buffers.elided[id], "node {id}'s values were not kept by this training trace");
        self.rows_of(&self.buffers.values[id])
    }
    /// The logits, `[batch, K]`.
    pub fn logits(&self) -> &[T] {
        self.value(self.nodes - 1)
    }
    /// The input batch, `[batch, D]`.
    pub fn input(&self) -> &[T] {
        self.value(0)
    }

    /// The dropout mask applied to node `id`'s output, `[batch, size]`, if dropout ran there.
    pub fn mask(&self, id: usize) -> Option<&[T]> {
        let m = self.buffers.masks.get(id).filter(|_| id < self.nodes)?;
        m.as_deref().map(|m| self.rows_of(m))
    }

    /// The winning input index of every window of max-pooling node `id`, `[batch, size]`.
    pub(crate) fn winners(&self, id: usize) -> Option<&[usize]> {
        let w = self.buffers.winners.get(id).filter(|_| id < self.nodes)?;
        w.as_deref().map(|w| self.rows_of(w))
    }

    /// The values of nodes `0..n` only (a view, nothing copied): the trace of
    /// [`Network::truncated`]`(n − 1)`.
    pub fn prefix(&self, n: usize) -> Trace<T> {
        Trace { nodes: n.min(self.nodes), ..self.clone() }
    }

    /// A trace of samples `start..end` only (a view, nothing copied), so that memory-hungry
    /// reverse passes can run over a large batch in cache-sized pieces.
    pub fn samples(&self, start: usize, end: usize) -> Trace<T> {
        assert!(start <= end && end <= self.batch, "sample range {start}..{end} outside batch {}", self.batch);
        Trace { batch: end - start, first: self.first + start, ..self.clone() }
    }
}

/// Checks that `x` holds `rows·per_row` finite values (an overflowing product is a length error).
pub(crate) fn check_input<T: Float>(x: &[T], rows: usize, per_row: usize, what: &'static str) -> Result<()> {
    let expected = rows.checked_mul(per_row).ok_or(Error::DataLength { got: x.len(), expected: usize::MAX, what })?;
    if x.len() != expected {
        return Err(Error::DataLength { got: x.len(), expected, what });
    }
    if let Some(index) = x.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite { index });
    }
    Ok(())
}

impl<T: Float> Network<T> {
    /// Runs the batch `x` (`[batch, D]`, row-major) and keeps every node's value.
    ///
    /// Errors when `x` does not hold `batch·D` values or contains NaN/infinity.
    pub fn trace(&self, x: &[T], batch: usize) -> Result<Trace<T>> {
        self.trace_with_masks(x, batch, Vec::new())
    }

    /// [`trace`](Self::trace) with training-time dropout: `masks[id]`, when present, multiplies
    /// node `id`'s output (`[batch, node size]`, typically 0 or `1/(1−p)`, see
    /// [`train::dropout_masks`](crate::train::dropout_masks)). The reverse and tangent passes
    /// at this trace apply the same masks, so gradients and Jacobians are those of the thinned
    /// network, as in training-mode frameworks.
    ///
    /// Errors like [`trace`](Self::trace), and when a mask has the wrong length.
    pub fn trace_with_masks(&self, x: &[T], batch: usize, masks: Vec<Option<Vec<T>>>) -> Result<Trace<T>> {
        self.checked_masks(&masks, batch)?;
        Ok(Trace::new(batch, self.run(x, batch, Kept::All, masks)?))
    }

    /// [`trace_with_masks`](Self::trace_with_masks) for a training step: the same values,
    /// masks and winners, except that the activations of convolution → activation → max pool
    /// chains are not kept ([`Trace::value`] panics on them). The objective's passes never
    /// read them; keeping them would write and sweep the largest buffers of the step.
    pub(crate) fn training_trace(&self, x: &[T], batch: usize, masks: Vec<Option<Vec<T>>>) -> Result<Trace<T>> {
        self.checked_masks(&masks, batch)?;
        Ok(Trace::new(batch, self.run(x, batch, Kept::Training, masks)?))
    }

    fn checked_masks(&self, masks: &[Option<Vec<T>>], batch: usize) -> Result<()> {
        if masks.len() > self.nodes().len() {
            return Err(Error::DataLength { got: masks.len(), expected: self.nodes().len(), what: "dropout masks" });
        }
        for (id, m) in masks.iter().enumerate() {
            if let Some(m) = m {
                check_input(m, batch, self.nodes()[id].size(), "dropout mask")?;
            }
        }
        Ok(())
    }

    /// The logits `[batch, K]` of the batch `x` (`[batch, D]`, row-major).
    ///
    /// Errors when `x` does not hold `batch·D` values or contains NaN/infinity.
    pub fn forward(&self, x: &[T], batch: usize) -> Result<Vec<T>> {
        let mut run = self.run(x, batch, Kept::Output, Vec::new())?;
        Ok(core::mem::take(&mut run.values[self.output()]))
    }

    /// The node values, the masks, the max pools' winners (found unless `kept` is
    /// [`Kept::Output`]: then values are dropped once read, and only the output's is kept) and
    /// which values were not kept.
    fn run(&self, x: &[T], batch: usize, kept: Kept, masks: Vec<Option<Vec<T>>>) -> Result<Run<T>> {
        check_input(x, batch, self.input_len(), "input batch")?;
        let keep = kept != Kept::Output;
        let nodes = self.nodes();
        let live = self.live();
        let consumers = self.consumers();
        let mut remaining = consumers.clone();
        let mut values: Vec<Vec<T>> = alloc::vec![Vec::new(); nodes.len()];
        values[0] = x.to_vec();
        let mut winners: Vec<Option<Vec<usize>>> = alloc::vec![None; nodes.len()];
        let mut elided = alloc::vec![false; nodes.len()];
        let mut next = 1;
        for id in 1..nodes.len() {
            if !live[id] || id < next {
                continue;
            }
            let node = &nodes[id];
            if let (true, Some((act, pool))) = (keep && batch > 1, self.fused_pool(id, &consumers, &masks)) {
                // Sample by sample: each sample's convolution output is pooled while in cache.
                let shapes =
                    (nodes[node.inputs[0]].shape.as_slice(), node.shape.as_slice(), nodes[pool].shape.as_slice());
                let (conv_values, mut pooled, arg) = conv_act_pool(
                    &node.layer,
                    &nodes[act].layer,
                    &nodes[pool].layer,
                    shapes,
                    &values[node.inputs[0]],
                    batch,
                );
                if kept == Kept::Training {
                    elided[act] = true;
                } else {
                    values[act] = forward_node(&nodes[act], &[shapes.1], &[&conv_values], batch, true);
                }
                if let Some(Some(m)) = masks.get(pool) {
                    pooled.iter_mut().zip(m).for_each(|(v, &k)| *v *= k);
                }
                values[id] = conv_values;
                values[pool] = pooled;
                winners[pool] = Some(arg);
                next = pool + 1;
                continue;
            }
            let ins: Vec<&[T]> = node.inputs.iter().map(|&i| values[i].as_slice()).collect();
            let shapes: Vec<&[usize]> = node.inputs.iter().map(|&i| nodes[i].shape.as_slice()).collect();
            let mut out = match (&node.layer, keep) {
                // Values and winners in one pass over the input.
                (Layer::MaxPool2d(p), true) => {
                    let (out, arg) = max_pool_with_winners(p, shapes[0], &node.shape, ins[0], batch);
                    winners[id] = Some(arg);
                    out
                }
                _ => forward_node(node, &shapes, &ins, batch, true),
            };
            if let Some(Some(m)) = masks.get(id) {
                out.iter_mut().zip(m).for_each(|(v, &k)| *v *= k);
            }
            if !keep {
                for &i in &node.inputs {
                    remaining[i] -= 1;
                    if remaining[i] == 0 {
                        values[i] = Vec::new();
                    }
                }
            }
            values[id] = out;
        }
        Ok(Run { values, masks, winners, elided })
    }

    /// The activation and max pool `(conv + 1, conv + 2)` when node `conv` is a convolution
    /// read only by a pointwise activation that is read only by a max pool, with no dropout
    /// mask on the convolution or the activation: a chain the forward pass computes sample by
    /// sample ([`conv_act_pool`]).
    fn fused_pool(&self, conv: usize, consumers: &[usize], masks: &[Option<Vec<T>>]) -> Option<(usize, usize)> {
        let nodes = self.nodes();
        let (act, pool) = (conv + 1, conv + 2);
        if pool >= nodes.len() {
            return None;
        }
        let masked = |id: usize| matches!(masks.get(id), Some(Some(_)));
        let pointwise = matches!(
            nodes[act].layer,
            Layer::Relu | Layer::LeakyRelu { .. } | Layer::Clip { .. } | Layer::Sigmoid | Layer::Tanh
        );
        let chain = matches!(nodes[conv].layer, Layer::Conv2d(_))
            && pointwise
            && matches!(nodes[pool].layer, Layer::MaxPool2d(_))
            && nodes[act].inputs == [conv]
            && nodes[pool].inputs == [act]
            && consumers[conv] == 1
            && consumers[act] == 1;
        (chain && !masked(conv) && !masked(act)).then_some((act, pool))
    }
}

/// What a forward pass produced: see [`Buffers`].
struct Run<T> {
    values: Vec<Vec<T>>,
    masks: Vec<Option<Vec<T>>>,
    winners: Vec<Option<Vec<usize>>>,
    elided: Vec<bool>,
}

/// A convolution, a pointwise activation and a max pool over `batch` samples `x`, sample by
/// sample: the convolution's values `[batch, conv size]`, the pool's `[batch, pool size]` and
/// its winners, the same as the three layers one after the other give.
fn conv_act_pool<T: Float>(
    conv_layer: &Layer<T>,
    act: &Layer<T>,
    pool_layer: &Layer<T>,
    shapes: (&[usize], &[usize], &[usize]),
    x: &[T],
    batch: usize,
) -> (Vec<T>, Vec<T>, Vec<usize>) {
    let (Layer::Conv2d(c), Layer::MaxPool2d(p)) = (conv_layer, pool_layer) else {
        unreachable!("fused_pool checked the layer kinds")
    };
    let (in_shape, conv_shape, pool_shape) = shapes;
    let g = conv::ConvGeom::new(in_shape, conv_shape);
    let in_size: usize = in_shape.iter().product();
    let conv_size: usize = conv_shape.iter().product();
    let pool_size: usize = pool_shape.iter().product();
    // The register-tiled kernel where `forward_node` would use it, im2col + gemm elsewhere.
    let direct = conv_sparse::DirectConv::new(c, &g);
    let mut values = alloc::vec![T::ZERO; batch * conv_size];
    let mut pooled = alloc::vec![T::ZERO; batch * pool_size];
    let mut arg = alloc::vec![0usize; batch * pool_size];
    for_rows3(
        &mut values,
        conv_size,
        &mut pooled,
        pool_size,
        &mut arg,
        pool_size,
        || (Vec::new(), Vec::new()),
        |(xp, scratch), r, yc, yp, ya| {
            let xr = &x[r * in_size..(r + 1) * in_size];
            match &direct {
                Some(d) => d.forward_sample(xr, c.bias.as_deref(), xp, yc),
                None => conv::forward_row(c, &g, xr, yc, true, scratch),
            }
            match act {
                Layer::Relu => pool::max_forward_of(p, conv_shape, pool_shape, yc, elementwise::relu, yp, Some(ya)),
                _ => pool::max_forward_of(p, conv_shape, pool_shape, yc, |v| elementwise::value(act, v), yp, Some(ya)),
            }
        },
    );
    (values, pooled, arg)
}

/// Multiplies `rows` rows per sample of node values (`[batch, rows, size]`) by the sample's
/// dropout mask (`[batch, size]`).
/// Max pooling of `batch` samples `x` (`[batch, in]`): the values `[batch, out]` and, for
/// each output, the flat input index of its window's winner (samples in parallel).
fn max_pool_with_winners<T: Float>(
    p: &crate::layer::Pool2d,
    in_shape: &[usize],
    out_shape: &[usize],
    x: &[T],
    batch: usize,
) -> (Vec<T>, Vec<usize>) {
    let in_size: usize = in_shape.iter().product();
    let out_size: usize = out_shape.iter().product();
    let mut y = alloc::vec![T::ZERO; batch * out_size];
    let mut arg = alloc::vec![0usize; batch * out_size];
    for_rows2(&mut y, out_size, &mut arg, out_size, |b, yr, ar| {
        pool::max_forward(p, in_shape, out_shape, &x[b * in_size..(b + 1) * in_size], yr, Some(ar))
    });
    (y, arg)
}

pub(crate) fn apply_mask<T: Float>(values: &mut [T], mask: &[T], rows: usize, size: usize) {
    for (r, row) in values.chunks_mut(size).enumerate() {
        let s = r / rows;
        row.iter_mut().zip(&mask[s * size..(s + 1) * size]).for_each(|(v, &k)| *v *= k);
    }
}

/// Applies one node to `rows` rows of inputs. With `with_offsets = false` every constant
/// offset (biases, shifts, the pad value) is dropped, which turns each affine layer into its
/// linear part: that is the tangent map of the layer. Pointwise nonlinear layers and max
/// pooling are only meaningful with `with_offsets = true` (the tangent pass handles them).
pub(crate) fn forward_node<T: Float>(
    node: &Node<T>,
    shapes: &[&[usize]],
    ins: &[&[T]],
    rows: usize,
    with_offsets: bool,
) -> Vec<T> {
    let out_size = node.size();
    let in_size: usize = shapes[0].iter().product();
    let mut out = alloc::vec![T::ZERO; rows * out_size];
    match &node.layer {
        Layer::Input => unreachable!("the input node is never applied"),
        Layer::Conv2d(c) => {
            let g = conv::ConvGeom::new(shapes[0], &node.shape);
            let x = ins[0];
            if rows == 1 && c.groups == 1 {
                conv::forward_single_split(c, &g, x, &mut out, with_offsets);
            } else if conv_sparse::dense_forward_rows(c, &g, x, &mut out, rows, with_offsets) {
                // Register-tiled f32 kernel, samples in parallel.
            } else {
                for_rows(&mut out, out_size, Vec::new, |scratch, r, y| {
                    conv::forward_row(c, &g, &x[r * in_size..(r + 1) * in_size], y, with_offsets, scratch)
                });
            }
        }
        Layer::MaxPool2d(p) => {
            let x = ins[0];
            for_rows(
                &mut out,
                out_size,
                || (),
                |_, r, y| pool::max_forward(p, shapes[0], &node.shape, &x[r * in_size..(r + 1) * in_size], y, None),
            );
        }
        Layer::AvgPool2d(p) => {
            let x = ins[0];
            for_rows(
                &mut out,
                out_size,
                || (),
                |_, r, y| pool::avg_forward(p, shapes[0], &node.shape, &x[r * in_size..(r + 1) * in_size], y),
            );
        }
        Layer::GlobalAvgPool => {
            let x = ins[0];
            let c = shapes[0][0];
            let hw = in_size / c;
            let inv = T::ONE / T::from_f64(hw as f64);
            for (r, y) in out.chunks_mut(out_size).enumerate() {
                for (ch, v) in y.iter_mut().enumerate() {
                    let s: T = x[r * in_size + ch * hw..r * in_size + (ch + 1) * hw].iter().copied().sum();
                    *v = s * inv;
                }
            }
        }
        Layer::Dense(d) => {
            let x = ins[0];
            let m_total = rows * (in_size / d.inputs);
            if m_total <= SMALL_BATCH {
                // Matrix-vector products: stream the weights once, split over output features.
                for (xr, yr) in x.chunks(d.inputs).zip(out.chunks_mut(d.outputs)) {
                    for_rows(
                        yr,
                        GEMV_CHUNK,
                        || (),
                        |_, c, ys| {
                            for (j, y) in ys.iter_mut().enumerate() {
                                let o = c * GEMV_CHUNK + j;
                                *y = dot(xr, &d.weight[o * d.inputs..(o + 1) * d.inputs]);
                            }
                        },
                    );
                }
            } else {
                for_row_blocks(&mut out, out_size, |first, block| {
                    let m = block.len() / d.outputs;
                    let xs = &x[first * in_size..first * in_size + m * d.inputs];
                    gemm(
                        T::ONE,
                        Mat::new(xs, m, d.inputs),
                        Mat::new(&d.weight, d.outputs, d.inputs).t(),
                        T::ZERO,
                        block,
                    );
                });
            }
            if with_offsets {
                if let Some(b) = &d.bias {
                    for row in out.chunks_mut(d.outputs) {
                        row.iter_mut().zip(b).for_each(|(v, &bb)| *v += bb);
                    }
                }
            }
        }
        Layer::Add => {
            out.iter_mut().zip(ins[0].iter().zip(ins[1])).for_each(|(o, (&a, &b))| *o = a + b);
        }
        Layer::Affine(a) => {
            for (y, x) in out.chunks_mut(out_size).zip(ins[0].chunks(in_size)) {
                for i in 0..out_size {
                    y[i] = x[i] * a.scale[i] + if with_offsets { a.shift[i] } else { T::ZERO };
                }
            }
        }
        Layer::BatchNorm(b) => {
            let (scale, shift) = b.folded();
            let c = scale.len();
            let inner = in_size / c;
            for (y, x) in out.chunks_mut(out_size).zip(ins[0].chunks(in_size)) {
                for ch in 0..c {
                    let off = if with_offsets { shift[ch] } else { T::ZERO };
                    for i in ch * inner..(ch + 1) * inner {
                        y[i] = x[i] * scale[ch] + off;
                    }
                }
            }
        }
        Layer::Relu | Layer::LeakyRelu { .. } | Layer::Sigmoid | Layer::Tanh | Layer::Clip { .. } => {
            let x = ins[0];
            for_rows(
                &mut out,
                out_size,
                || (),
                |_, r, y| elementwise::map_values(&node.layer, &x[r * in_size..(r + 1) * in_size], y),
            );
        }
        Layer::Reshape { .. } | Layer::Identity => out.copy_from_slice(ins[0]),
        Layer::Concat { axis } => {
            let (outer, out_inner) = layout::concat_blocks(&node.shape, *axis);
            for r in 0..rows {
                let y = &mut out[r * out_size..(r + 1) * out_size];
                let mut offset = 0;
                for (x, s) in ins.iter().zip(shapes) {
                    let (_, inner) = layout::concat_blocks(s, *axis);
                    let sz = outer * inner;
                    let xr = &x[r * sz..(r + 1) * sz];
                    for o in 0..outer {
                        y[o * out_inner + offset..o * out_inner + offset + inner]
                            .copy_from_slice(&xr[o * inner..(o + 1) * inner]);
                    }
                    offset += inner;
                }
            }
        }
        Layer::Pad(p) => {
            let map = layout::pad_map(shapes[0], &p.begin, &node.shape);
            let fill = if with_offsets { p.value } else { T::ZERO };
            for (y, x) in out.chunks_mut(out_size).zip(ins[0].chunks(in_size)) {
                y.iter_mut().for_each(|v| *v = fill);
                for (i, &o) in map.iter().enumerate() {
                    y[o] = x[i];
                }
            }
        }
        Layer::Transpose { perm } => {
            let map = layout::transpose_map(shapes[0], perm);
            for (y, x) in out.chunks_mut(out_size).zip(ins[0].chunks(in_size)) {
                for (o, &i) in map.iter().enumerate() {
                    y[o] = x[i];
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use crate::arch::Arch;
    use crate::train::Rng;
    use crate::{Float, Layer, Network};

    /// A network of conv → activation → max pool chains (narrow and wide convolutions, ReLU
    /// and LeakyReLU, a plain 2×2 pool and a 3×3 stride-2 padded one, a dropout mask on a
    /// pool) and a chain that must not be fused (a mask on its activation).
    fn chained<T: Float>(rng: &mut Rng) -> (Network<T>, Vec<Option<Vec<T>>>, usize) {
        use crate::{Conv2d, Dense, Pool2d};
        let mut rand = |n: usize| -> Vec<T> { (0..n).map(|_| T::from_f64(rng.normal() * 0.3)).collect() };
        let conv = |w: Vec<T>, b: Vec<T>, cin: usize, cout: usize| {
            Layer::Conv2d(Conv2d {
                weight: w,
                bias: Some(b),
                out_channels: cout,
                in_channels: cin,
                kernel: [3, 3],
                stride: [1, 1],
                padding: [1; 4],
                dilation: [1, 1],
                groups: 1,
            })
        };
        let pool = |k: usize, s: usize, pad: usize| {
            Layer::MaxPool2d(Pool2d {
                kernel: [k, k],
                stride: [s, s],
                padding: [pad; 4],
                count_include_pad: false,
                ceil_mode: false,
            })
        };
        let mut net = Network::<T>::new(&[2, 12, 12]).unwrap();
        net.then("c1", conv(rand(4 * 2 * 9), rand(4), 2, 4)).unwrap();
        net.then("a1", Layer::Relu).unwrap();
        net.then("p1", pool(2, 2, 0)).unwrap();
        net.then("c2", conv(rand(24 * 4 * 9), rand(24), 4, 24)).unwrap();
        net.then("a2", Layer::LeakyRelu { alpha: T::from_f64(0.1) }).unwrap();
        net.then("p2", pool(3, 2, 1)).unwrap();
        net.then("c3", conv(rand(8 * 24 * 9), rand(8), 24, 8)).unwrap();
        net.then("a3", Layer::Relu).unwrap();
        net.then("p3", pool(2, 2, 0)).unwrap();
        let flat = net.nodes().last().unwrap().size();
        net.then("flatten", Layer::Reshape { shape: alloc::vec![flat] }).unwrap();
        net.then("fc", Layer::Dense(Dense { weight: rand(3 * flat), bias: None, inputs: flat, outputs: 3 })).unwrap();
        let batch = 5;
        let mut masks: Vec<Option<Vec<T>>> = alloc::vec![None; net.nodes().len()];
        for id in [6, 8] {
            // Dropout on p2 (the chain stays fused) and on a3 (c3's chain does not).
            masks[id] = Some((0..batch * net.nodes()[id].size()).map(|i| T::from_f64((i % 3) as f64)).collect());
        }
        (net, masks, batch)
    }

    /// Node by node, the way the forward pass runs a chain it does not fuse.
    fn layer_by_layer<T: Float>(net: &Network<T>, x: &[T], batch: usize, masks: &[Option<Vec<T>>]) -> Vec<Vec<T>> {
        let nodes = net.nodes();
        let mut values = alloc::vec![x.to_vec()];
        for node in &nodes[1..] {
            let shapes = [nodes[node.inputs[0]].shape.as_slice()];
            let mut out = super::forward_node(node, &shapes, &[&values[node.inputs[0]]], batch, true);
            if let Some(Some(m)) = masks.get(values.len()) {
                out.iter_mut().zip(m).for_each(|(v, &k)| *v *= k);
            }
            values.push(out);
        }
        values
    }

    /// The fused chains give every node's values, and the pools' winners, exactly as the
    /// layers one after the other do (f32: the register-tiled convolution; f64: im2col), and a
    /// training trace the same values but those of its fused activations.
    #[test]
    fn fused_convolution_activation_pool_chains_equal_the_layers_one_by_one() {
        fn check<T: Float>() {
            let mut rng = Rng::new(11);
            let (net, masks, batch) = chained::<T>(&mut rng);
            let consumers = net.consumers();
            let fused: Vec<usize> =
                (0..net.nodes().len()).filter(|&id| net.fused_pool(id, &consumers, &masks).is_some()).collect();
            assert_eq!(fused, [1, 4], "c1 and c2 chains fuse; c3's has a masked activation");
            let x: Vec<T> = (0..batch * net.input_len()).map(|_| T::from_f64(rng.uniform() - 0.3)).collect();
            let reference = layer_by_layer(&net, &x, batch, &masks);
            let all = net.trace_with_masks(&x, batch, masks.clone()).unwrap();
            let training = net.training_trace(&x, batch, masks).unwrap();
            for (id, want) in reference.iter().enumerate() {
                assert_eq!(all.value(id), want.as_slice(), "values of node {id}");
                if ![2, 5].contains(&id) {
                    assert_eq!(training.value(id), want.as_slice(), "training values of node {id}");
                }
            }
            for (pool, act) in [(3, 2), (6, 5), (9, 8)] {
                let Layer::MaxPool2d(p) = &net.nodes()[pool].layer else { unreachable!() };
                let (i, o) = (&net.nodes()[act].shape, &net.nodes()[pool].shape);
                let want = crate::tangent::maxpool_argmax(p, i, o, &reference[act], batch);
                assert_eq!(all.winners(pool).unwrap(), want.as_slice(), "winners of node {pool}");
                assert_eq!(training.winners(pool).unwrap(), want.as_slice(), "training winners of node {pool}");
            }
        }
        check::<f32>();
        check::<f64>();
    }

    /// A training trace refuses to hand out the activations it did not keep.
    #[test]
    #[should_panic(expected = "not kept by this training trace")]
    fn a_training_trace_panics_on_an_elided_activation() {
        let mut rng = Rng::new(3);
        let (net, masks, batch) = chained::<f32>(&mut rng);
        let x = alloc::vec![0.5f32; batch * net.input_len()];
        let _ = net.training_trace(&x, batch, masks).unwrap().value(2);
    }

    /// Views of a trace (samples of samples, a prefix of them) read the same samples of the
    /// whole trace's values, dropout masks and max-pool winners, and a view's passes equal
    /// those at a trace of its samples alone.
    #[test]
    fn sample_and_prefix_views_read_their_samples() {
        let mut rng = Rng::new(4);
        let net: Network<f64> = Arch::ConvSmall.build(Some(&[1, 10, 10]), &mut rng).unwrap();
        let (batch, d, k) = (6, net.input_len(), net.num_classes());
        let x: Vec<f64> = (0..batch * d).map(|_| rng.uniform()).collect();
        let masks: Vec<Option<Vec<f64>>> = net
            .nodes()
            .iter()
            .map(|n| n.layer.kind().eq("Relu").then(|| (0..batch * n.size()).map(|_| rng.uniform()).collect()))
            .collect();
        assert!(masks.iter().any(Option::is_some), "the test network has a ReLU to mask");
        let whole = net.trace_with_masks(&x, batch, masks).unwrap();
        let view = whole.samples(1, 5).samples(1, 3); // samples 2..4
        fn two<U: Clone>(v: &[U]) -> Vec<U> {
            let per = v.len() / 6;
            v[2 * per..4 * per].to_vec()
        }
        assert_eq!(view.batch(), 2);
        for id in 0..net.nodes().len() {
            assert_eq!(view.value(id), two(whole.value(id)), "values of node {id}");
            assert_eq!(view.mask(id).map(|m| m.to_vec()), whole.mask(id).map(two), "mask of node {id}");
            assert_eq!(view.winners(id).map(|w| w.to_vec()), whole.winners(id).map(two), "winners of node {id}");
        }
        assert_eq!(view.logits(), two(whole.logits()));
        assert_eq!(view.input(), &x[2 * d..4 * d]);
        let cut = net.nodes().len() - 2;
        let prefix = view.prefix(cut);
        assert_eq!(prefix.logits(), two(whole.value(cut - 1)));
        assert_eq!(prefix.mask(cut), None);
        // A reverse pass at the view equals one at a trace of the same samples and masks.
        let masks_alone: Vec<Option<Vec<f64>>> =
            (0..net.nodes().len()).map(|id| view.mask(id).map(<[f64]>::to_vec)).collect();
        let alone = net.trace_with_masks(view.input(), 2, masks_alone).unwrap();
        let v: Vec<f64> = (0..2 * k).map(|_| rng.normal()).collect();
        let (a, b) = (net.vjp(&view, &v, 1).unwrap(), net.vjp(&alone, &v, 1).unwrap());
        let scale = b.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() <= 1e-12 * scale), "vjp at the view");
    }
}
