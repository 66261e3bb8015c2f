//! Forward mode: Jacobian-vector products `J·v` for several tangents per sample.

use alloc::vec::Vec;

use crate::demand::{sparse_for, SparseConvs};
use crate::error::{Error, Result};
use crate::forward::{apply_mask, check_input, forward_node, Trace};
use crate::kernels::{conv_sparse, elementwise, pool};
use crate::layer::Layer;
use crate::network::Network;
use crate::parallel::for_rows;
use crate::scalar::Float;

/// For each sample, the flat input index that wins each max-pooling window (samples in
/// parallel).
pub(crate) fn maxpool_argmax<T: Float>(
    p: &crate::layer::Pool2d,
    in_shape: &[usize],
    out_shape: &[usize],
    x: &[T],
    batch: usize,
) -> Vec<usize> {
    let in_size: usize = in_shape.iter().product();
    let out_size: usize = out_shape.iter().product();
    let mut arg = alloc::vec![0usize; batch * out_size];
    for_rows(
        &mut arg,
        out_size,
        || alloc::vec![T::ZERO; out_size],
        |y, b, a| pool::max_forward(p, in_shape, out_shape, &x[b * in_size..(b + 1) * in_size], y, Some(a)),
    );
    arg
}

/// The winners of max-pooling node `id` at the points of `trace` (kept by the trace; found
/// anew only for a trace that lacks them).
pub(crate) fn winners<'a, T: Float>(
    trace: &'a Trace<T>,
    id: usize,
    p: &crate::layer::Pool2d,
    in_shape: &[usize],
    out_shape: &[usize],
    input: usize,
) -> alloc::borrow::Cow<'a, [usize]> {
    match trace.winners(id) {
        Some(w) => alloc::borrow::Cow::Borrowed(w),
        None => alloc::borrow::Cow::Owned(maxpool_argmax(p, in_shape, out_shape, trace.value(input), trace.batch())),
    }
}

impl<T: Float> Network<T> {
    /// Jacobian-vector products at the points of `trace`: `tangents` holds `rows` tangent
    /// vectors per sample (`[batch, rows, D]`); returns `J(x_b)·v` as `[batch, rows, K]`.
    pub fn jvp(&self, trace: &Trace<T>, tangents: &[T], rows: usize) -> Result<Vec<T>> {
        self.tangent_walk(trace, tangents, rows, &mut |_, _| {}, None)
    }

    /// The forward-mode walk of [`jvp`](Self::jvp); `visit(id, t)` sees, for every node with
    /// trainable parameters, the tangents `t` (`[batch, rows, in]`) arriving at its input.
    /// Convolutions listed in `sparse` (see [`Network::sparse_convs`]) are computed at their
    /// demanded sites only (zero elsewhere), which leaves every value the rest of the walk
    /// reads unchanged. With `sparse` given, pooled blocks (see [`crate::pooled`]) are taken
    /// sample by sample, their convolution sparse or dense; with `None`, every layer on its own.
    pub(crate) fn tangent_walk(
        &self,
        trace: &Trace<T>,
        tangents: &[T],
        rows: usize,
        visit: &mut dyn FnMut(usize, &[T]),
        sparse: Option<&SparseConvs<'_, T>>,
    ) -> Result<Vec<T>> {
        let batch = trace.batch();
        check_input(tangents, batch.saturating_mul(rows), self.input_len(), "tangents")?;
        if rows == 0 {
            return Err(Error::DataLength { got: 0, expected: 1, what: "tangent rows per sample" });
        }
        let nodes = self.nodes();
        let live = self.live();
        let consumers = self.consumers();
        let mut t: Vec<Vec<T>> = alloc::vec![Vec::new(); nodes.len()];
        t[0] = tangents.to_vec();
        // Nodes whose tangents a pooled block (below) has already computed.
        let mut done = alloc::vec![false; nodes.len()];
        for id in 1..nodes.len() {
            if !live[id] || done[id] {
                continue;
            }
            let node = &nodes[id];
            let shapes: Vec<&[usize]> = node.inputs.iter().map(|&i| nodes[i].shape.as_slice()).collect();
            let in_size: usize = shapes[0].iter().product();
            let out_size = node.size();
            if node.layer.has_params() {
                visit(id, &t[node.inputs[0]]);
            }
            // A pooled block, its convolution sparse or (when the fused passes are on at all)
            // dense.
            let tin = &t[node.inputs[0]];
            let pooled = match sparse_for(sparse, id, rows) {
                Some(sc) => {
                    self.pooled_block(id, &consumers, trace).map(|b| (b, self.pooled_tangent(trace, sc, &b, tin, rows)))
                }
                None if sparse.is_some() => self
                    .pooled_block(id, &consumers, trace)
                    .map(|b| (b, self.dense_pooled_tangent(trace, &b, tin, rows))),
                None => None,
            };
            if let Some((block, mut out)) = pooled {
                if let Some(mask) = trace.mask(block.pool) {
                    apply_mask(&mut out, mask, rows, nodes[block.pool].size());
                }
                t[block.pool] = out;
                done[block.act] = true;
                done[block.pool] = true;
                continue;
            }
            let out = match &node.layer {
                Layer::Relu | Layer::LeakyRelu { .. } | Layer::Sigmoid | Layer::Tanh | Layer::Clip { .. } => {
                    let input = node.inputs[0];
                    let primal = trace.value(input);
                    // In place when this node is the only reader of its input's tangents.
                    let mut out = if input != 0 && consumers[input] == 1 {
                        core::mem::take(&mut t[input])
                    } else {
                        t[input].clone()
                    };
                    for_rows(
                        &mut out,
                        in_size,
                        || (),
                        |_, r, o| {
                            let s = r / rows;
                            elementwise::scale_by_derivative(&node.layer, &primal[s * in_size..(s + 1) * in_size], o)
                        },
                    );
                    out
                }
                Layer::MaxPool2d(p) => {
                    let arg = winners(trace, id, p, shapes[0], &node.shape, node.inputs[0]);
                    let tin = &t[node.inputs[0]];
                    let mut out = alloc::vec![T::ZERO; batch * rows * out_size];
                    for_rows(
                        &mut out,
                        out_size,
                        || (),
                        |_, r, o| {
                            let a = &arg[(r / rows) * out_size..(r / rows + 1) * out_size];
                            let ti = &tin[r * in_size..(r + 1) * in_size];
                            for (v, &i) in o.iter_mut().zip(a) {
                                *v = ti[i];
                            }
                        },
                    );
                    out
                }
                Layer::Input => unreachable!("node 0 is the only input"),
                // The same values: moved when this node is their only reader.
                Layer::Reshape { .. } | Layer::Identity if node.inputs[0] != 0 && consumers[node.inputs[0]] == 1 => {
                    core::mem::take(&mut t[node.inputs[0]])
                }
                Layer::Conv2d(_) | Layer::Dense(_) if sparse_for(sparse, id, rows).is_some() => {
                    let sc = sparse_for(sparse, id, rows).expect("checked by the guard");
                    let tin = &t[node.inputs[0]];
                    // Zeroed: the sparse kernel writes the demanded sites only.
                    let mut out = alloc::vec![T::ZERO; batch * rows * out_size];
                    for_rows(&mut out, rows * out_size, Vec::new, |scratch, s, ys| {
                        let xs = &tin[s * rows * in_size..(s + 1) * rows * in_size];
                        conv_sparse::forward_sample(&sc.geom, &sc.w_hwc, &sc.sites[s], xs, ys, scratch)
                    });
                    out
                }
                Layer::Conv2d(_)
                | Layer::AvgPool2d(_)
                | Layer::GlobalAvgPool
                | Layer::Dense(_)
                | Layer::Add
                | Layer::Affine(_)
                | Layer::BatchNorm(_)
                | Layer::Reshape { .. }
                | Layer::Concat { .. }
                | Layer::Pad(_)
                | Layer::Transpose { .. }
                | Layer::Identity => {
                    let ins: Vec<&[T]> = node.inputs.iter().map(|&i| t[i].as_slice()).collect();
                    forward_node(node, &shapes, &ins, batch * rows, false)
                }
            };
            let mut out = out;
            if let Some(mask) = trace.mask(id) {
                apply_mask(&mut out, mask, rows, out_size);
            }
            t[id] = out;
        }
        Ok(core::mem::take(&mut t[self.output()]))
    }
}
