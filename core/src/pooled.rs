//! Pooled blocks: a convolution followed by a pointwise activation and a max pool, in the
//! linear passes.
//!
//! In a tangent pass the convolution's tangent is read only at the pool windows' winners
//! (the demanded sites), scaled by the activation's derivative there. Computing the block
//! sample by sample, from the sparse convolution straight to the pooled output, never
//! materialises the full-size convolution and activation tangents of the whole batch (for the
//! paper's network with ten rows per sample, 500 MB per batch of 500 for the first block),
//! which is what the step time went into: allocating, zeroing and sweeping those buffers.

use alloc::vec::Vec;

use crate::demand::{sparse_for, SparseConv, SparseConvs};
use crate::forward::Trace;
use crate::kernels::{conv_sparse, elementwise};
use crate::layer::Layer;
use crate::network::Network;
use crate::parallel::for_rows;
use crate::scalar::Float;
use crate::tangent::winners;

/// The nodes of a pooled block that starts at a convolution.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PooledBlock {
    /// The pointwise activation reading the convolution.
    pub act: usize,
    /// The max pool reading the activation.
    pub pool: usize,
}

impl<T: Float> Network<T> {
    /// The block `conv → act → max pool` starting at node `conv`, when the activation is
    /// pointwise and the convolution's only reader, the pool the activation's only reader, and
    /// no dropout mask sits on the convolution or the activation (`consumers` from
    /// [`Network::consumers`]).
    pub(crate) fn pooled_block(&self, conv: usize, consumers: &[usize], trace: &Trace<T>) -> Option<PooledBlock> {
        let nodes = self.nodes();
        let only_reader = |id: usize| -> Option<usize> {
            if consumers[id] != 1 || id == self.output() {
                return None;
            }
            (id + 1..nodes.len()).find(|&n| nodes[n].inputs.contains(&id)).filter(|&n| nodes[n].inputs.len() == 1)
        };
        if !matches!(nodes[conv].layer, Layer::Conv2d(_)) || trace.mask(conv).is_some() {
            return None;
        }
        let act = only_reader(conv)?;
        let pointwise = matches!(
            nodes[act].layer,
            Layer::Relu | Layer::LeakyRelu { .. } | Layer::Clip { .. } | Layer::Sigmoid | Layer::Tanh
        );
        if !pointwise || trace.mask(act).is_some() {
            return None;
        }
        let pool = only_reader(act)?;
        matches!(nodes[pool].layer, Layer::MaxPool2d(_)).then_some(PooledBlock { act, pool })
    }

    /// The tangents at the pool of `block` (`[batch, rows, pool size]`, before any dropout
    /// mask on the pool) for the tangents `tin` (`[batch, rows, in]`) at the convolution's
    /// input, the convolution computed by `sc` at its demanded sites, one sample at a time.
    pub(crate) fn pooled_tangent(
        &self,
        trace: &Trace<T>,
        sc: &SparseConv<'_, T>,
        block: &PooledBlock,
        tin: &[T],
        rows: usize,
    ) -> Vec<T> {
        let nodes = self.nodes();
        let conv = nodes[block.act].inputs[0];
        let Layer::MaxPool2d(p) = &nodes[block.pool].layer else { unreachable!("a pooled block ends in a max pool") };
        let slopes = Slopes::new(self, trace, block);
        let in_size = nodes[nodes[conv].inputs[0]].size();
        let (conv_size, pool_size) = (nodes[conv].size(), nodes[block.pool].size());
        let arg = winners(trace, block.pool, p, &nodes[block.act].shape, &nodes[block.pool].shape, block.act);
        let batch = trace.batch();
        let mut out = alloc::vec![T::ZERO; batch * rows * pool_size];
        for_rows(
            &mut out,
            rows * pool_size,
            || (Vec::new(), alloc::vec![T::ZERO; rows * conv_size], alloc::vec![T::ZERO; pool_size]),
            |(pad, y, scale), s, ts| {
                let xs = &tin[s * rows * in_size..(s + 1) * rows * in_size];
                conv_sparse::forward_sample(&sc.geom, &sc.w_hwc, &sc.sites[s], xs, y, pad);
                let a = &arg[s * pool_size..(s + 1) * pool_size];
                slopes.each(s, (conv_size, pool_size), a, 0..pool_size, |j, _, f| scale[j] = f);
                for (yr, tr) in y.chunks_exact_mut(conv_size).zip(ts.chunks_exact_mut(pool_size)) {
                    for ((t, &i), &f) in tr.iter_mut().zip(a).zip(scale.iter()) {
                        *t = yr[i] * f;
                    }
                    // The sites are among the winners: clearing these leaves `y` zero again.
                    for &i in a {
                        yr[i] = T::ZERO;
                    }
                }
            },
        );
        out
    }
}

/// The activation's derivative at each pool window's winner, at the points of a trace.
#[derive(Clone, Copy)]
pub(crate) enum Slopes<'a, T> {
    /// ReLU with no dropout mask on the pool: 1 exactly where the pool's own value is positive
    /// (`max(x, 0) > 0` exactly when `x > 0`), read in order from the pool's values
    /// (`[batch, pool size]`) instead of gathered from the convolution's.
    Relu(&'a [T]),
    /// Any activation: at the convolution's values (`[batch, conv size]`) at the winners.
    At(&'a Layer<T>, &'a [T]),
}

impl<'a, T: Float> Slopes<'a, T> {
    /// The slopes of `block` at the points of `trace`.
    pub fn new(net: &'a Network<T>, trace: &'a Trace<T>, block: &PooledBlock) -> Self {
        let nodes = net.nodes();
        let act = &nodes[block.act].layer;
        if matches!(act, Layer::Relu) && trace.mask(block.pool).is_none() {
            Slopes::Relu(trace.value(block.pool))
        } else {
            Slopes::At(act, trace.value(nodes[block.act].inputs[0]))
        }
    }

    /// Calls `f(j, a[outs][j], slope)` for the windows `outs` of sample `s`, whose winners are
    /// `a` (`pool_size` of them, flat indices into the convolution's `conv_size` outputs).
    #[inline]
    pub fn each(
        &self,
        s: usize,
        sizes: (usize, usize),
        a: &[usize],
        outs: core::ops::Range<usize>,
        mut f: impl FnMut(usize, usize, T),
    ) {
        let (conv_size, pool_size) = sizes;
        match *self {
            Slopes::Relu(v) => {
                let v = &v[s * pool_size + outs.start..s * pool_size + outs.end];
                for (j, (&i, &y)) in a[outs].iter().zip(v).enumerate() {
                    f(j, i, if y > T::ZERO { T::ONE } else { T::ZERO });
                }
            }
            Slopes::At(act, x) => {
                elementwise::for_derivatives_at(act, &x[s * conv_size..(s + 1) * conv_size], &a[outs], f)
            }
        }
    }
}

/// A cotangent kept by the reverse pass for a parameter node's weight gradient.
#[derive(Clone, Debug)]
pub(crate) enum Recorded<T> {
    /// At the node's output, `[batch, rows, out]`.
    Full(Vec<T>),
    /// For the convolution of a pooled block: at the pool's output (`[batch, rows, pool
    /// size]`, after the pool's dropout mask), expanded to the convolution's sites on demand
    /// ([`PooledCot`]).
    Pooled(Vec<T>, PooledBlock),
}

/// What expands a pooled block's cotangents (at the pool output) to the convolution's output:
/// each window's cotangent goes to its winner, scaled by the activation's derivative there.
pub(crate) struct PooledCot<'a, T> {
    arg: alloc::borrow::Cow<'a, [usize]>,
    slopes: Slopes<'a, T>,
    conv_size: usize,
    pool_size: usize,
    /// Pool outputs per channel.
    pool_plane: usize,
}

impl<'a, T: Float> PooledCot<'a, T> {
    /// The expansion of `block` at the points of `trace`.
    pub fn new(net: &'a Network<T>, trace: &'a Trace<T>, block: &PooledBlock) -> Self {
        let nodes = net.nodes();
        let conv = nodes[block.act].inputs[0];
        let Layer::MaxPool2d(p) = &nodes[block.pool].layer else { unreachable!("a pooled block ends in a max pool") };
        let pool_shape = &nodes[block.pool].shape;
        let pool_size = nodes[block.pool].size();
        PooledCot {
            arg: winners(trace, block.pool, p, &nodes[block.act].shape, pool_shape, block.act),
            slopes: Slopes::new(net, trace, block),
            conv_size: nodes[conv].size(),
            pool_size,
            pool_plane: pool_size / pool_shape[0].max(1),
        }
    }

    /// Pool outputs per sample and row.
    pub fn pool_size(&self) -> usize {
        self.pool_size
    }

    /// Adds the expansion of sample `s`'s pooled cotangents `dp` (`[rows, pool size]`), for
    /// the channels `chans` only, to `y` (`[rows, conv size]`); with `clear`, writes zeros at
    /// the same places instead (leaving a zero `y` zero again).
    pub fn scatter(&self, s: usize, dp: &[T], rows: usize, chans: core::ops::Range<usize>, y: &mut [T], clear: bool) {
        let a = &self.arg[s * self.pool_size..(s + 1) * self.pool_size];
        let sizes = (self.conv_size, self.pool_size);
        let outs = chans.start * self.pool_plane..chans.end * self.pool_plane;
        for r in 0..rows {
            let yr = &mut y[r * self.conv_size..(r + 1) * self.conv_size];
            if clear {
                a[outs.clone()].iter().for_each(|&i| yr[i] = T::ZERO);
                continue;
            }
            let dr = &dp[r * self.pool_size + outs.start..r * self.pool_size + outs.end];
            self.slopes.each(s, sizes, a, outs.clone(), |j, i, f| yr[i] += dr[j] * f);
        }
    }

    /// The nonzero cotangents of channel `ch` of sample `s`'s expansion of `dp` (one row,
    /// `pool size` values): their positions in the channel's plane and their values replace the
    /// contents of `positions` and `values`. What [`scatter`](Self::scatter) would add at each
    /// winner, without the zeros.
    pub fn channel_sites(&self, s: usize, dp: &[T], ch: usize, positions: &mut Vec<u32>, values: &mut Vec<T>) {
        let a = &self.arg[s * self.pool_size..(s + 1) * self.pool_size];
        let n = self.pool_plane;
        let outs = ch * n..(ch + 1) * n;
        let plane = self.conv_size / (self.pool_size / n.max(1)).max(1);
        let first = ch * plane;
        let dc = &dp[outs.clone()];
        positions.clear();
        positions.resize(n, 0);
        values.clear();
        values.resize(n, T::ZERO);
        // Every window is written, and kept only when nonzero (no branch on the value).
        let mut kept = 0;
        self.slopes.each(s, (self.conv_size, self.pool_size), a, outs, |j, i, f| {
            let v = dc[j] * f;
            positions[kept] = (i - first) as u32;
            values[kept] = v;
            kept += usize::from(v != T::ZERO);
        });
        positions.truncate(kept);
        values.truncate(kept);
    }

    /// Adds the convolution's bias gradient for the per-sample pooled cotangents `dps`
    /// (`[batch, pool size]`, rows summed) to `db` (one entry per channel).
    pub fn add_bias_grads(&self, dps: &[T], db: &mut [T]) {
        for (s, dp) in dps.chunks_exact(self.pool_size).enumerate() {
            let a = &self.arg[s * self.pool_size..(s + 1) * self.pool_size];
            let sizes = (self.conv_size, self.pool_size);
            for (ch, d) in db.iter_mut().enumerate() {
                let outs = ch * self.pool_plane..(ch + 1) * self.pool_plane;
                let (dc, mut sum) = (&dp[outs.clone()], T::ZERO);
                self.slopes.each(s, sizes, a, outs, |j, _, f| sum += dc[j] * f);
                *d += sum;
            }
        }
    }
}

/// A parameter node's output cotangents as a weight-gradient pass reads them.
pub(crate) enum CotRows<'a, T> {
    /// `[batch, rows, out]`.
    Full(&'a [T]),
    /// Pooled (`[batch, rows, pool size]`), with their expansion.
    Pooled(&'a PooledCot<'a, T>, &'a [T]),
}

// Only references inside: copyable whatever `T` is.
impl<T> Clone for CotRows<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for CotRows<'_, T> {}

impl<T: Float> Network<T> {
    /// The pooled block whose pool is node `pool`, with the sparse form of its convolution,
    /// when the reverse pass can take it in one go: the convolution is computed sparsely for
    /// `rows` rows and, when parameter gradients are summed over the rows (`one_row_too`), for
    /// one row as well.
    pub(crate) fn pooled_block_ending<'s, 'n>(
        &self,
        pool: usize,
        consumers: &[usize],
        trace: &Trace<T>,
        sparse: Option<&'s SparseConvs<'n, T>>,
        rows: usize,
        one_row_too: bool,
    ) -> Option<(PooledBlock, &'s SparseConv<'n, T>)> {
        let (block, conv) = self.block_ending(pool, consumers, trace)?;
        let sc = sparse_for(sparse, conv, rows)?;
        if one_row_too && sparse_for(sparse, conv, 1).is_none() {
            return None;
        }
        Some((block, sc))
    }

    /// The pooled block whose pool is node `pool` when its convolution has no sparse form for
    /// `rows` rows in `sparse` (given: the fused passes are on), for the dense form of the
    /// block ([`crate::pooled_dense`]).
    pub(crate) fn dense_pooled_block_ending(
        &self,
        pool: usize,
        consumers: &[usize],
        trace: &Trace<T>,
        sparse: Option<&SparseConvs<'_, T>>,
        rows: usize,
    ) -> Option<PooledBlock> {
        sparse?;
        let (block, conv) = self.block_ending(pool, consumers, trace)?;
        sparse_for(sparse, conv, rows).is_none().then_some(block)
    }

    /// The pooled block whose pool is node `pool`, if there is one, and its convolution.
    fn block_ending(&self, pool: usize, consumers: &[usize], trace: &Trace<T>) -> Option<(PooledBlock, usize)> {
        let nodes = self.nodes();
        if !matches!(nodes[pool].layer, Layer::MaxPool2d(_)) {
            return None;
        }
        let act = nodes[pool].inputs[0];
        let conv = *nodes[act].inputs.first()?;
        let block = self.pooled_block(conv, consumers, trace)?;
        (block.act == act && block.pool == pool).then_some((block, conv))
    }
}
