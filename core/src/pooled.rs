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

use crate::demand::SparseConv;
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
        let act = &nodes[block.act].layer;
        let in_size = nodes[nodes[conv].inputs[0]].size();
        let (conv_size, pool_size) = (nodes[conv].size(), nodes[block.pool].size());
        let arg = winners(trace, block.pool, p, &nodes[block.act].shape, &nodes[block.pool].shape, block.act);
        let primal = trace.value(conv);
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
                let x = &primal[s * conv_size..(s + 1) * conv_size];
                for (f, &i) in scale.iter_mut().zip(a) {
                    *f = elementwise::derivative(act, x[i]);
                }
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
