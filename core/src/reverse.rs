//! Reverse mode: vector-Jacobian products `uᵀ·J` for several cotangents per sample.

use alloc::borrow::Cow;
use alloc::vec::Vec;

use crate::demand::{sparse_for, SparseConv, SparseConvs};
use crate::error::{Error, Result};
use crate::forward::{apply_mask, check_input, Trace};
use crate::gemm::{gemm, Mat};
use crate::kernels::{conv, conv_sparse, elementwise, layout, pool};
use crate::layer::Layer;
use crate::network::{Network, Node};
use crate::parallel::{for_row_blocks, for_rows, threads};
use crate::params::{LayerGrads, ParamGrads};
use crate::pooled::{CotRows, PooledCot, Recorded};
use crate::scalar::Float;
use crate::tangent::winners;

fn accumulate<T: Float>(slot: &mut Option<Vec<T>>, g: Vec<T>) {
    match slot {
        Some(acc) => acc.iter_mut().zip(g).for_each(|(a, b)| *a += b),
        None => *slot = Some(g),
    }
}

impl<T: Float> Network<T> {
    /// Vector-Jacobian products at the points of `trace`: `cotangents` holds `rows` vectors `u`
    /// per sample (`[batch, rows, K]`); returns `uᵀ·J(x_b)` as `[batch, rows, D]`.
    pub fn vjp(&self, trace: &Trace<T>, cotangents: &[T], rows: usize) -> Result<Vec<T>> {
        let sparse = self.sparse_convs(trace, rows);
        self.reverse(trace, cotangents, rows, None, None, Some(&sparse), true)
    }

    /// Reverse mode with parameter gradients: the input gradient of [`vjp`](Self::vjp) (same
    /// cotangent layout `[batch, rows, K]`, same result `[batch, rows, D]`), and the gradient of
    /// `Σ_{b,r} u_{b,r}·z(x_b)` with respect to every trainable parameter (convolution and dense
    /// weights and biases, batch-norm `gamma` and `beta`), summed over all `batch·rows` rows.
    pub fn backward(&self, trace: &Trace<T>, cotangents: &[T], rows: usize) -> Result<(Vec<T>, ParamGrads<T>)> {
        let mut params = ParamGrads::zeros_like(self);
        let sparse = self.sparse_convs(trace, rows);
        let dx = self.reverse(trace, cotangents, rows, Some(&mut params), None, Some(&sparse), true)?;
        Ok((dx, params))
    }

    /// The reverse walk shared by [`vjp`](Self::vjp) and [`backward`](Self::backward); parameter
    /// gradients are accumulated into `params` when it is given, and the cotangents reaching
    /// the outputs of nodes with trainable parameters are kept in `record[id]` when it is given.
    /// Convolutions listed in `sparse` (see [`Network::sparse_convs`]) propagate from their
    /// demanded sites only: exact, since the cotangents vanish at every other site. With
    /// `sparse` given, pooled blocks are taken sample by sample (see [`crate::pooled`]); with
    /// `None`, every layer on its own.
    /// With `input_grad = false` the cotangents of the network input are not computed and the
    /// returned vector is empty (a backward pass for parameter gradients only).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn reverse(
        &self,
        trace: &Trace<T>,
        cotangents: &[T],
        rows: usize,
        mut params: Option<&mut ParamGrads<T>>,
        mut record: Option<&mut Vec<Option<Recorded<T>>>>,
        sparse: Option<&SparseConvs<'_, T>>,
        input_grad: bool,
    ) -> Result<Vec<T>> {
        let batch = trace.batch();
        check_input(cotangents, batch.saturating_mul(rows), self.num_classes(), "cotangents")?;
        if rows == 0 {
            return Err(Error::DataLength { got: 0, expected: 1, what: "cotangent rows per sample" });
        }
        let n_rows = batch * rows;
        let nodes = self.nodes();
        let consumers = self.consumers();
        let mut grads: Vec<Option<Vec<T>>> = alloc::vec![None; nodes.len()];
        grads[self.output()] = Some(cotangents.to_vec());
        for id in (1..nodes.len()).rev() {
            let Some(mut dy) = grads[id].take() else { continue };
            let node = &nodes[id];
            if let Some(mask) = trace.mask(id) {
                apply_mask(&mut dy, mask, rows, node.size());
            }
            let shapes: Vec<&[usize]> = node.inputs.iter().map(|&i| nodes[i].shape.as_slice()).collect();
            let in_size: usize = shapes[0].iter().product();
            let out_size = node.size();
            let first = node.inputs[0];
            if let Some((block, sc)) = self.pooled_block_ending(id, &consumers, trace, sparse, rows, params.is_some()) {
                // conv → activation → this pool in one go: the activation's and the
                // convolution's full-size cotangents are never built.
                let pc = PooledCot::new(self, trace, &block);
                let conv = nodes[block.act].inputs[0];
                let below = nodes[conv].inputs[0];
                let (conv_in, conv_size) = (nodes[below].size(), nodes[conv].size());
                if let Some(LayerGrads::Conv2d { weight, bias }) =
                    params.as_deref_mut().and_then(|p| p.nodes[conv].as_mut())
                {
                    let sc1 = sparse_for(sparse, conv, 1).expect("checked by pooled_block_ending");
                    let dps = sum_over_rows(&dy, batch, rows, out_size);
                    let cot = CotRows::Pooled(&pc, &dps);
                    sc1.add_weight_grads(conv_in, conv_size, trace.value(below), cot, 1, weight);
                    if let Some(db) = bias {
                        pc.add_bias_grads(&dps, db);
                    }
                }
                if input_grad || below != 0 {
                    let mut dx = alloc::vec![T::ZERO; n_rows * conv_in];
                    let cout = sc.geom.out_channels();
                    for_rows(
                        &mut dx,
                        rows * conv_in,
                        || (Vec::new(), alloc::vec![T::ZERO; rows * conv_size]),
                        |(scratch, expanded), s, dxs| {
                            let dp = &dy[s * rows * out_size..(s + 1) * rows * out_size];
                            pc.scatter(s, dp, rows, 0..cout, expanded, false);
                            conv_sparse::backward_sample(&sc.geom, &sc.w_hwc, &sc.sites[s], expanded, dxs, scratch);
                            pc.scatter(s, dp, rows, 0..cout, expanded, true);
                        },
                    );
                    accumulate(&mut grads[below], dx);
                }
                if let Some(rec) = record.as_deref_mut() {
                    rec[conv] = Some(Recorded::Pooled(dy, block));
                }
                continue;
            }
            if let Some(block) = self.dense_pooled_block_ending(id, &consumers, trace, sparse, rows) {
                // The same block with a dense convolution, sample by sample.
                let pc = PooledCot::new(self, trace, &block);
                let conv = nodes[block.act].inputs[0];
                let below = nodes[conv].inputs[0];
                if let Some(LayerGrads::Conv2d { weight, bias }) =
                    params.as_deref_mut().and_then(|p| p.nodes[conv].as_mut())
                {
                    let dps = sum_over_rows(&dy, batch, rows, out_size);
                    self.dense_pooled_weight_grad(&block, &pc, trace.value(below), &dps, 1, weight);
                    if let Some(db) = bias {
                        pc.add_bias_grads(&dps, db);
                    }
                }
                if input_grad || below != 0 {
                    let dx = self.dense_pooled_backward(&block, &pc, &dy, rows);
                    accumulate(&mut grads[below], dx);
                }
                if let Some(rec) = record.as_deref_mut() {
                    rec[conv] = Some(Recorded::Pooled(dy, block));
                }
                continue;
            }
            if let Some(p) = params.as_deref_mut() {
                // The rows are summed first: one row per sample.
                match (sparse_for(sparse, id, 1), p.nodes[id].as_mut()) {
                    (Some(sc), Some(LayerGrads::Conv2d { weight, bias } | LayerGrads::Dense { weight, bias })) => {
                        let dys = sum_over_rows(&dy, batch, rows, out_size);
                        sc.add_weight_grads(in_size, out_size, trace.value(first), CotRows::Full(&dys), 1, weight);
                        if let Some(db) = bias {
                            add_bias_grads(db, &dys, out_size);
                        }
                    }
                    (_, acc) => param_grads(node, shapes[0], trace.value(first), &dy, batch, rows, acc, true),
                }
            }
            if !input_grad && node.inputs.iter().all(|&i| i == 0) {
                // Only the network input lies below: nothing more to propagate.
                if let Some(rec) = record.as_deref_mut() {
                    rec[id] = Some(Recorded::Full(dy));
                }
                continue;
            }
            // Cotangents of parameter layers are kept (moved after their last use below).
            let recording = record.is_some();
            let mut keep = |dy: Vec<T>| {
                if let Some(rec) = record.as_deref_mut() {
                    rec[id] = Some(Recorded::Full(dy));
                }
            };
            match &node.layer {
                Layer::Input => unreachable!("node 0 is the only input"),
                Layer::Conv2d(c) => {
                    let mut dx = alloc::vec![T::ZERO; n_rows * in_size];
                    if let Some(sc) = sparse_for(sparse, id, rows) {
                        sparse_backward(sc, &dy, &mut dx);
                    } else {
                        let g = conv::ConvGeom::new(shapes[0], &node.shape);
                        for_rows(&mut dx, in_size, Vec::new, |scratch, r, dxr| {
                            conv::backward_row(c, &g, &dy[r * out_size..(r + 1) * out_size], dxr, scratch)
                        });
                    }
                    accumulate(&mut grads[first], dx);
                    keep(dy);
                }
                Layer::MaxPool2d(p) => {
                    let arg = winners(trace, id, p, shapes[0], &node.shape, first);
                    let mut dx = alloc::vec![T::ZERO; n_rows * in_size];
                    for_rows(
                        &mut dx,
                        in_size,
                        || (),
                        |_, r, dxr| {
                            let a = &arg[(r / rows) * out_size..(r / rows + 1) * out_size];
                            for (&i, &g) in a.iter().zip(&dy[r * out_size..(r + 1) * out_size]) {
                                dxr[i] += g;
                            }
                        },
                    );
                    accumulate(&mut grads[first], dx);
                }
                Layer::AvgPool2d(p) => {
                    let mut dx = alloc::vec![T::ZERO; n_rows * in_size];
                    for (r, dxr) in dx.chunks_mut(in_size).enumerate() {
                        pool::avg_backward(p, shapes[0], &node.shape, &dy[r * out_size..(r + 1) * out_size], dxr);
                    }
                    accumulate(&mut grads[first], dx);
                }
                Layer::GlobalAvgPool => {
                    let c = shapes[0][0];
                    let hw = in_size / c;
                    let inv = T::ONE / T::from_f64(hw as f64);
                    let mut dx = alloc::vec![T::ZERO; n_rows * in_size];
                    for (r, dxr) in dx.chunks_mut(in_size).enumerate() {
                        for ch in 0..c {
                            let g = dy[r * out_size + ch] * inv;
                            dxr[ch * hw..(ch + 1) * hw].iter_mut().for_each(|v| *v = g);
                        }
                    }
                    accumulate(&mut grads[first], dx);
                }
                Layer::Dense(_) if sparse_for(sparse, id, rows).is_some() => {
                    let sc = sparse_for(sparse, id, rows).expect("checked by the guard");
                    let mut dx = alloc::vec![T::ZERO; n_rows * in_size];
                    sparse_backward(sc, &dy, &mut dx);
                    accumulate(&mut grads[first], dx);
                    keep(dy);
                }
                Layer::Dense(d) => {
                    let mut dx = alloc::vec![T::ZERO; n_rows * in_size];
                    for_row_blocks(&mut dx, in_size, |first_row, block| {
                        let m = block.len() / d.inputs;
                        let g = &dy[first_row * out_size..first_row * out_size + m * d.outputs];
                        gemm(
                            T::ONE,
                            Mat::new(g, m, d.outputs),
                            Mat::new(&d.weight, d.outputs, d.inputs),
                            T::ZERO,
                            block,
                        );
                    });
                    accumulate(&mut grads[first], dx);
                    keep(dy);
                }
                Layer::Add => {
                    accumulate(&mut grads[node.inputs[1]], dy.clone());
                    accumulate(&mut grads[first], dy);
                }
                Layer::Affine(a) => {
                    let mut dx = dy;
                    for row in dx.chunks_mut(in_size) {
                        row.iter_mut().zip(&a.scale).for_each(|(v, &s)| *v *= s);
                    }
                    accumulate(&mut grads[first], dx);
                }
                Layer::BatchNorm(b) => {
                    let (scale, _) = b.folded();
                    let inner = in_size / scale.len();
                    if recording {
                        keep(dy.clone());
                    }
                    let mut dx = dy;
                    for row in dx.chunks_mut(in_size) {
                        for (ch, &s) in scale.iter().enumerate() {
                            row[ch * inner..(ch + 1) * inner].iter_mut().for_each(|v| *v *= s);
                        }
                    }
                    accumulate(&mut grads[first], dx);
                }
                Layer::Relu | Layer::LeakyRelu { .. } | Layer::Sigmoid | Layer::Tanh | Layer::Clip { .. } => {
                    let primal = trace.value(first);
                    let mut dx = dy;
                    for_rows(
                        &mut dx,
                        in_size,
                        || (),
                        |_, r, row| {
                            let s = r / rows;
                            elementwise::scale_by_derivative(&node.layer, &primal[s * in_size..(s + 1) * in_size], row)
                        },
                    );
                    accumulate(&mut grads[first], dx);
                }
                Layer::Reshape { .. } | Layer::Identity => accumulate(&mut grads[first], dy),
                Layer::Concat { axis } => {
                    let (outer, out_inner) = layout::concat_blocks(&node.shape, *axis);
                    let mut offset = 0;
                    for (&input, s) in node.inputs.iter().zip(&shapes) {
                        let (_, inner) = layout::concat_blocks(s, *axis);
                        let sz = outer * inner;
                        let mut dx = alloc::vec![T::ZERO; n_rows * sz];
                        for (r, dxr) in dx.chunks_mut(sz).enumerate() {
                            let y = &dy[r * out_size..(r + 1) * out_size];
                            for o in 0..outer {
                                dxr[o * inner..(o + 1) * inner]
                                    .copy_from_slice(&y[o * out_inner + offset..o * out_inner + offset + inner]);
                            }
                        }
                        offset += inner;
                        accumulate(&mut grads[input], dx);
                    }
                }
                Layer::Pad(p) => {
                    let map = layout::pad_map(shapes[0], &p.begin, &node.shape);
                    let mut dx = alloc::vec![T::ZERO; n_rows * in_size];
                    for (dxr, y) in dx.chunks_mut(in_size).zip(dy.chunks(out_size)) {
                        for (i, &o) in map.iter().enumerate() {
                            dxr[i] = y[o];
                        }
                    }
                    accumulate(&mut grads[first], dx);
                }
                Layer::Transpose { perm } => {
                    let map = layout::transpose_map(shapes[0], perm);
                    let mut dx = alloc::vec![T::ZERO; n_rows * in_size];
                    for (dxr, y) in dx.chunks_mut(in_size).zip(dy.chunks(out_size)) {
                        for (o, &i) in map.iter().enumerate() {
                            dxr[i] = y[o];
                        }
                    }
                    accumulate(&mut grads[first], dx);
                }
            }
        }
        if !input_grad {
            return Ok(Vec::new());
        }
        // An input that does not reach the output has a zero gradient.
        Ok(grads[0].take().unwrap_or_else(|| alloc::vec![T::ZERO; n_rows * self.input_len()]))
    }
}

/// The input cotangents `dx` (`[batch, rows, in]`) of a layer computed at sparse sites, from
/// its output cotangents `dy` (`[batch, rows, out]`, zero outside the sites).
fn sparse_backward<T: Float>(sc: &SparseConv<'_, T>, dy: &[T], dx: &mut [T]) {
    let batch = sc.sites.len();
    let (per_out, per_in) = (dy.len() / batch.max(1), dx.len() / batch.max(1));
    for_rows(dx, per_in, Vec::new, |scratch, s, dxs| {
        let dys = &dy[s * per_out..(s + 1) * per_out];
        conv_sparse::backward_sample(&sc.geom, &sc.w_hwc, &sc.sites[s], dys, dxs, scratch)
    });
}

/// Adds the bias gradient of a convolution or dense layer (`db` has one entry per output
/// channel) for the per-sample cotangents `dys` (`[batch, out]`, channel-major).
fn add_bias_grads<T: Float>(db: &mut [T], dys: &[T], out_size: usize) {
    let npos = out_size / db.len().max(1);
    for row in dys.chunks(out_size) {
        for (o, d) in db.iter_mut().enumerate() {
            *d += row[o * npos..(o + 1) * npos].iter().copied().sum::<T>();
        }
    }
}

/// `weight += dysᵀ·x` for a dense layer (`dys` `[m, outputs]`, `x` `[m, inputs]`, `weight`
/// `[outputs, inputs]`), the output rows split over the threads.
pub(crate) fn dense_weight_grad<T: Float>(
    dys: &[T],
    x: &[T],
    m: usize,
    outputs: usize,
    inputs: usize,
    weight: &mut [T],
) {
    for_row_blocks(weight, inputs, |first, block| {
        let nb = block.len() / inputs;
        gemm(T::ONE, Mat::strided(&dys[first..], m, nb, outputs).t(), Mat::new(x, m, inputs), T::ONE, block);
    });
}

/// `dy` (`[batch, rows, size]`) summed over the rows of each sample: `[batch, size]`.
fn sum_over_rows<T: Float>(dy: &[T], batch: usize, rows: usize, size: usize) -> Cow<'_, [T]> {
    if rows == 1 {
        return Cow::Borrowed(dy);
    }
    let mut out = alloc::vec![T::ZERO; batch * size];
    for (r, row) in dy.chunks(size).enumerate() {
        let s = r / rows;
        out[s * size..(s + 1) * size].iter_mut().zip(row).for_each(|(a, &b)| *a += b);
    }
    Cow::Owned(out)
}

/// Adds the gradients of `node`'s parameters for the cotangent rows `dy` (`[batch, rows, out]`)
/// at the node input values `x` (`[batch, in]`) to `acc`. Every parameter gradient is linear in
/// `dy` and the input is shared by the rows of a sample, so the rows are summed first.
///
/// With `offsets = false` the gradients are those of the layer's *linear part* (its tangent
/// map, see [`forward_node`](crate::forward::forward_node)) at the tangent inputs `x`: biases
/// and batch-norm shifts get nothing and batch-norm scales see `x` without the running mean.
#[allow(clippy::too_many_arguments)]
pub(crate) fn param_grads<T: Float>(
    node: &Node<T>,
    in_shape: &[usize],
    x: &[T],
    dy: &[T],
    batch: usize,
    rows: usize,
    acc: Option<&mut LayerGrads<T>>,
    offsets: bool,
) {
    let Some(acc) = acc else { return };
    let out_size = node.size();
    let in_size: usize = in_shape.iter().product();
    match (&node.layer, acc) {
        (Layer::Conv2d(c), LayerGrads::Conv2d { weight, bias }) => {
            let dys = sum_over_rows(dy, batch, rows, out_size);
            let g = conv::ConvGeom::new(in_shape, &node.shape);
            let wlen = c.weight.len();
            if conv_sparse::dense_weight_grad_rows(c, &g, x, &dys, batch, weight) {
                // Register-tiled f32 kernel.
                if let (Some(db), true) = (bias, offsets) {
                    add_bias_grads(db, &dys, out_size);
                }
                return;
            }
            // One partial weight gradient per block of samples, summed afterwards.
            let per = batch.div_ceil(threads().max(1)).max(1);
            let blocks = batch.div_ceil(per);
            let mut partial = alloc::vec![T::ZERO; blocks * wlen];
            for_rows(&mut partial, wlen, Vec::new, |scratch, blk, dw| {
                for s in blk * per..((blk + 1) * per).min(batch) {
                    let xs = &x[s * in_size..(s + 1) * in_size];
                    conv::weight_grad_row(c, &g, xs, &dys[s * out_size..(s + 1) * out_size], dw, scratch);
                }
            });
            for p in partial.chunks(wlen) {
                weight.iter_mut().zip(p).for_each(|(a, &b)| *a += b);
            }
            if let (Some(db), true) = (bias, offsets) {
                add_bias_grads(db, &dys, out_size);
            }
        }
        (Layer::Dense(d), LayerGrads::Dense { weight, bias }) => {
            let dys = sum_over_rows(dy, batch, rows, out_size);
            let m = batch * (in_size / d.inputs);
            dense_weight_grad(&dys, x, m, d.outputs, d.inputs, weight);
            if let (Some(db), true) = (bias, offsets) {
                for row in dys.chunks(d.outputs) {
                    db.iter_mut().zip(row).for_each(|(a, &b)| *a += b);
                }
            }
        }
        (Layer::BatchNorm(b), LayerGrads::BatchNorm { gamma, beta }) => {
            let dys = sum_over_rows(dy, batch, rows, out_size);
            let c = b.gamma.len();
            let inner = in_size / c;
            for (xr, yr) in x.chunks(in_size).zip(dys.chunks(out_size)) {
                for ch in 0..c {
                    let inv = T::ONE / (b.var[ch] + b.epsilon).sqrt();
                    let mean = if offsets { b.mean[ch] } else { T::ZERO };
                    let xs = &xr[ch * inner..(ch + 1) * inner];
                    let ys = &yr[ch * inner..(ch + 1) * inner];
                    let mut sg = T::ZERO;
                    let mut sb = T::ZERO;
                    for (&xv, &yv) in xs.iter().zip(ys) {
                        sg += yv * (xv - mean);
                        sb += yv;
                    }
                    gamma[ch] += sg * inv;
                    if offsets {
                        beta[ch] += sb;
                    }
                }
            }
        }
        _ => {}
    }
}
