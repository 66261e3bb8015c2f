//! Which node outputs the linear (tangent and reverse) passes actually read.
//!
//! At the points of a trace, a tangent pass multiplies by each activation's derivative, keeps
//! only each max-pooling window's winner and multiplies by dropout masks. An element whose
//! tangent is multiplied by zero, or dropped by a pool, is never read by the rest of the
//! pass; by the same token the reverse pass gives it a zero cotangent. The *demand* of a node
//! is the per-sample set of its output elements that are read. Convolutions whose demand is
//! sparse (for the paper's network: behind ReLU and 2×2 max pooling, at most a quarter of the
//! outputs) are computed at the demanded sites only ([`crate::kernels::conv_sparse`]).
//!
//! The rules are conservative: pointwise activations, max pooling, dropout masks, reshapes and
//! identities narrow the demand; every other layer reads all of its inputs.

use alloc::borrow::Cow;
use alloc::vec::Vec;

use crate::forward::Trace;
use crate::kernels::conv::ConvGeom;
use crate::kernels::conv_sparse::{self, weights_to_hwc, Sites, SparseGeom};
use crate::kernels::elementwise;
use crate::layer::Layer;
use crate::network::Network;
use crate::parallel::for_rows;
use crate::pooled::CotRows;
use crate::scalar::Float;
use crate::tangent::winners;

/// A convolution is computed sparsely when at most this fraction of its outputs is read.
const SPARSE_LIMIT: f64 = 0.5;

/// Weight-gradient blocks of at most this many values (256 KiB of `f32`) stay in a core's
/// L2 cache while the samples stream through ([`SparseConv::add_weight_grads`]).
const CACHED_WEIGHTS: usize = 1 << 16;

/// Samples whose inputs a one-row dense weight gradient adds in one pass over a channel
/// block ([`conv_sparse::dense_weight_grad_group`]).
const SAMPLE_GROUP: usize = 16;

/// Samples per partial weight gradient of a small layer: fixed, so that the summation order
/// does not depend on the thread count.
const CHUNK_SAMPLES: usize = 32;

/// A convolution computed at its demanded sites only.
pub(crate) struct SparseConv<'a, T: Clone> {
    /// Its geometry in the padded channels-last layout.
    pub geom: SparseGeom,
    /// Its weights in the `[Cout, kh, kw, Cin]` order (a dense layer's own weights, borrowed).
    pub w_hwc: Cow<'a, [T]>,
    /// The demanded sites of each sample of the trace.
    pub sites: Cow<'a, [Sites]>,
}

impl<T: Clone> SparseConv<'_, T> {
    /// This convolution restricted to the samples `start..end` (borrowed, nothing copied).
    pub fn samples(&self, start: usize, end: usize) -> SparseConv<'_, T> {
        SparseConv {
            geom: self.geom.clone(),
            w_hwc: Cow::Borrowed(&self.w_hwc),
            sites: Cow::Borrowed(&self.sites[start..end]),
        }
    }
}

/// `sparse` restricted to the samples `start..end` of its trace (borrowed).
pub(crate) fn sparse_samples<'a, T: Clone>(
    sparse: &'a SparseConvs<'_, T>,
    start: usize,
    end: usize,
) -> SparseConvs<'a, T> {
    sparse.iter().map(|s| s.as_ref().map(|s| s.samples(start, end))).collect()
}

/// For each node, `Some` when it is a convolution to compute sparsely.
pub(crate) type SparseConvs<'a, T> = Vec<Option<SparseConv<'a, T>>>;

/// The sparse form of node `id` in `sparse`, if it has one whose kernels handle samples of
/// `rows` rows ([`SparseGeom::handles`]); `None` means: compute it dense.
pub(crate) fn sparse_for<'s, 'a, T: Clone>(
    sparse: Option<&'s SparseConvs<'a, T>>,
    id: usize,
    rows: usize,
) -> Option<&'s SparseConv<'a, T>> {
    sparse.and_then(|s| s[id].as_ref()).filter(|sc| sc.geom.handles(rows))
}

fn merge(slot: &mut Option<Vec<u8>>, d: Vec<u8>) {
    match slot {
        Some(acc) => acc.iter_mut().zip(d).for_each(|(a, b)| *a |= b),
        None => *slot = Some(d),
    }
}

impl<T: Float> Network<T> {
    /// The convolutions and dense layers that [`SparseGeom`] accepts, at most
    /// [`SPARSE_LIMIT`] of whose outputs the linear passes read at the points of `trace`, with
    /// their demanded sites (samples walked in parallel). `rows` is the most rows per sample
    /// the passes will use: narrow convolutions are left out (computed dense, and their
    /// demand not analysed) when no pass can use them ([`SparseGeom::handles`]).
    pub(crate) fn sparse_convs(&self, trace: &Trace<T>, rows: usize) -> SparseConvs<'_, T> {
        let nodes = self.nodes();
        let batch = trace.batch();
        let mut out: SparseConvs<'_, T> = (0..nodes.len()).map(|_| None).collect();
        let geoms: Vec<Option<SparseGeom>> = nodes
            .iter()
            .enumerate()
            .map(|(id, n)| {
                if id == 0 || id == self.output() {
                    return None;
                }
                let in_shape = nodes[n.inputs[0]].shape.as_slice();
                match &n.layer {
                    Layer::Conv2d(c) => {
                        SparseGeom::new(c, &ConvGeom::new(in_shape, &n.shape)).filter(|g| g.handles(rows))
                    }
                    Layer::Dense(d) if in_shape.iter().product::<usize>() == d.inputs => {
                        SparseGeom::dense(d.inputs, d.outputs)
                    }
                    _ => None,
                }
            })
            .collect();
        if batch == 0 || geoms.iter().all(Option::is_none) {
            return out;
        }
        let live = self.live();
        let wins: Vec<Option<Cow<'_, [usize]>>> = nodes
            .iter()
            .enumerate()
            .map(|(id, n)| match &n.layer {
                Layer::MaxPool2d(p) if live[id] => {
                    let first = n.inputs[0];
                    Some(winners(trace, id, p, &nodes[first].shape, &n.shape, first))
                }
                _ => None,
            })
            .collect();
        let mut per_sample: Vec<Vec<Option<Sites>>> = alloc::vec![Vec::new(); batch];
        for_rows(&mut per_sample, 1, || (), |_, s, slot| slot[0] = self.sample_sites(trace, s, &live, &geoms, &wins));
        for (id, geom) in geoms.into_iter().enumerate() {
            let Some(geom) = geom else { continue };
            let sites: Vec<Sites> = per_sample.iter_mut().map(|p| p[id].take().unwrap_or_default()).collect();
            let read: usize = sites.iter().map(Sites::len).sum();
            if (read as f64) > SPARSE_LIMIT * (batch * nodes[id].size()) as f64 {
                continue;
            }
            let w_hwc = match &nodes[id].layer {
                Layer::Conv2d(c) => Cow::Owned(weights_to_hwc(&geom, &c.weight)),
                Layer::Dense(d) => Cow::Borrowed(d.weight.as_slice()),
                _ => unreachable!("only convolutions and dense layers have a sparse geometry"),
            };
            out[id] = Some(SparseConv { geom, w_hwc, sites: Cow::Owned(sites) });
        }
        out
    }

    /// The demanded sites of sample `s` for every node with a geometry in `geoms`.
    fn sample_sites(
        &self,
        trace: &Trace<T>,
        s: usize,
        live: &[bool],
        geoms: &[Option<SparseGeom>],
        wins: &[Option<Cow<'_, [usize]>>],
    ) -> Vec<Option<Sites>> {
        let nodes = self.nodes();
        let mut sites: Vec<Option<Sites>> = (0..nodes.len()).map(|_| None).collect();
        let Some(lowest) = geoms.iter().position(Option::is_some) else { return sites };
        let mut demand: Vec<Option<Vec<u8>>> = alloc::vec![None; nodes.len()];
        demand[self.output()] = Some(alloc::vec![1u8; nodes[self.output()].size()]);
        for id in (1..nodes.len()).rev() {
            let Some(mut d) = demand[id].take() else { continue };
            if !live[id] {
                continue;
            }
            let node = &nodes[id];
            let out_size = node.size();
            if let Some(mask) = trace.mask(id) {
                d.iter_mut().zip(&mask[s * out_size..(s + 1) * out_size]).for_each(|(v, &m)| {
                    if m == T::ZERO {
                        *v = 0
                    }
                });
            }
            let first = node.inputs[0];
            let in_shape = nodes[first].shape.as_slice();
            let in_size: usize = in_shape.iter().product();
            if let Some(g) = &geoms[id] {
                sites[id] = Some(Sites::from_demand(&d, g.out_channels(), g.npos));
            }
            if id <= lowest {
                // No sparse layer below: the rest of the demand is never used.
                break;
            }
            match &node.layer {
                Layer::Relu | Layer::LeakyRelu { .. } | Layer::Sigmoid | Layer::Tanh | Layer::Clip { .. } => {
                    let primal = &trace.value(first)[s * in_size..(s + 1) * in_size];
                    elementwise::clear_where_flat(&node.layer, primal, &mut d);
                    merge(&mut demand[first], d);
                }
                Layer::MaxPool2d(_) => {
                    let arg = wins[id].as_deref().expect("winners of every live max pool");
                    let mut di = alloc::vec![0u8; in_size];
                    for (&q, &a) in d.iter().zip(&arg[s * out_size..(s + 1) * out_size]) {
                        if q != 0 {
                            di[a] = 1;
                        }
                    }
                    merge(&mut demand[first], di);
                }
                Layer::Reshape { .. } | Layer::Identity => merge(&mut demand[first], d),
                _ => {
                    for &i in &node.inputs {
                        merge(&mut demand[i], alloc::vec![1u8; nodes[i].size()]);
                    }
                }
            }
        }
        sites
    }
}

impl<T: Float> SparseConv<'_, T> {
    /// Adds the weight gradient of this layer to `weight`: inputs `x` (`[n, rows, in]`; the
    /// tangents in a tangent pass, the node's input values with `rows = 1` in a plain backward
    /// pass) and cotangents `dy` (`[n, rows, out]`, zero outside the sites, or a pooled block's
    /// cotangents expanded sample by sample).
    ///
    /// Small weight tensors (at most [`CACHED_WEIGHTS`] values, e.g. convolutions) are summed in
    /// partial gradients over fixed chunks of [`CHUNK_SAMPLES`] samples, each chunk padding its
    /// samples one by one into a reused buffer, and the partials are added in chunk order.
    /// Larger ones (dense layers) are split into blocks of output channels of about
    /// [`CACHED_WEIGHTS`] values, each block going through every sample. Either way the
    /// summation order is fixed by the shapes alone, so the result does not depend on the
    /// thread count.
    pub fn add_weight_grads(
        &self,
        in_size: usize,
        out_size: usize,
        x: &[T],
        dy: CotRows<'_, T>,
        rows: usize,
        weight: &mut [T],
    ) {
        let n = self.sites.len();
        let (cout, klen) = (self.geom.out_channels(), self.geom.weights_per_channel());
        if n == 0 || cout * klen == 0 {
            return;
        }
        let apply = |target: &mut [T]| {
            if cout * klen <= CACHED_WEIGHTS {
                self.weight_grads_by_samples(in_size, out_size, x, dy, rows, target);
            } else {
                self.weight_grads_by_channels(in_size, out_size, x, dy, rows, target);
            }
        };
        if self.geom.weights_are_channels_last() {
            apply(weight);
        } else {
            let mut hwc = alloc::vec![T::ZERO; cout * klen];
            apply(&mut hwc);
            conv_sparse::add_weights_from_hwc(&self.geom, &hwc, weight);
        }
    }

    /// Sample `s`'s share of the weight gradient for the output channels `channels`, added to
    /// `part` (those channels' rows, `[Cout, kh, kw, Cin]` order); `xs` is the sample's input
    /// in the padded layout, `expanded` a buffer that is all zeros on entry and on return.
    #[allow(clippy::too_many_arguments)]
    fn sample_weight_grad(
        &self,
        s: usize,
        xs: &[T],
        dy: CotRows<'_, T>,
        rows: usize,
        out_size: usize,
        channels: core::ops::Range<usize>,
        part: &mut [T],
        expanded: &mut Vec<T>,
    ) {
        let sites = &self.sites[s];
        match dy {
            CotRows::Full(dy) => {
                let ds = &dy[s * rows * out_size..(s + 1) * rows * out_size];
                conv_sparse::weight_grad_sample(&self.geom, sites, xs, ds, channels, part);
            }
            CotRows::Pooled(pc, dp) => {
                // The channels expanded into a zero buffer, then cleared again.
                let ps = rows * pc.pool_size();
                let dp = &dp[s * ps..(s + 1) * ps];
                expanded.resize(rows * out_size, T::ZERO);
                pc.scatter(s, dp, rows, channels.clone(), expanded, false);
                conv_sparse::weight_grad_sample(&self.geom, sites, xs, expanded, channels.clone(), part);
                pc.scatter(s, dp, rows, channels, expanded, true);
            }
        }
    }

    /// [`add_weight_grads`](Self::add_weight_grads) for small weight tensors: partial
    /// gradients over fixed chunks of samples, each in cache while its samples stream through.
    fn weight_grads_by_samples(
        &self,
        in_size: usize,
        out_size: usize,
        x: &[T],
        dy: CotRows<'_, T>,
        rows: usize,
        target: &mut [T],
    ) {
        let n = self.sites.len();
        let len = self.geom.out_channels() * self.geom.weights_per_channel();
        let chunks = n.div_ceil(CHUNK_SAMPLES);
        let flat = self.geom.is_flat();
        let plen = self.geom.sample_len(rows);
        let mut partials = alloc::vec![T::ZERO; chunks * len];
        for_rows(
            &mut partials,
            len,
            || (Vec::new(), Vec::new()),
            |(padded, expanded): &mut (Vec<T>, Vec<T>), c, part| {
                for s in c * CHUNK_SAMPLES..((c + 1) * CHUNK_SAMPLES).min(n) {
                    let xr = &x[s * rows * in_size..(s + 1) * rows * in_size];
                    let xs = if flat {
                        xr
                    } else {
                        padded.resize(plen, T::ZERO);
                        conv_sparse::pad_rows(&self.geom, xr, padded);
                        padded.as_slice()
                    };
                    self.sample_weight_grad(s, xs, dy, rows, out_size, 0..self.geom.out_channels(), part, expanded);
                }
            },
        );
        for part in partials.chunks_exact(len) {
            target.iter_mut().zip(part).for_each(|(t, &p)| *t += p);
        }
    }

    /// [`add_weight_grads`](Self::add_weight_grads) for large weight tensors: blocks of
    /// output channels of about [`CACHED_WEIGHTS`] values, each going through every sample.
    fn weight_grads_by_channels(
        &self,
        in_size: usize,
        out_size: usize,
        x: &[T],
        dy: CotRows<'_, T>,
        rows: usize,
        target: &mut [T],
    ) {
        let n = self.sites.len();
        let (cout, klen) = (self.geom.out_channels(), self.geom.weights_per_channel());
        // The inputs in the padded layout, made once and read by every block of channels.
        let padded;
        let (xs_all, x_len) = if self.geom.is_flat() {
            (x, rows * in_size)
        } else {
            let plen = self.geom.sample_len(rows);
            let mut buf = alloc::vec![T::ZERO; n * plen];
            for_rows(
                &mut buf,
                plen,
                || (),
                |_, s, out| conv_sparse::pad_rows(&self.geom, &x[s * rows * in_size..(s + 1) * rows * in_size], out),
            );
            padded = buf;
            (padded.as_slice(), plen)
        };
        let per = (CACHED_WEIGHTS / klen).clamp(1, cout);
        if let (true, 1, CotRows::Full(dy)) = (self.geom.is_flat(), rows, dy) {
            // A dense layer with one row: groups of samples, so that each pass over a
            // channel's gradient row adds several samples' inputs.
            for_rows(
                target,
                per * klen,
                || (),
                |_, blk, part| {
                    let channels = blk * per..(blk * per + part.len() / klen);
                    for first in (0..n).step_by(SAMPLE_GROUP) {
                        let group = first..(first + SAMPLE_GROUP).min(n);
                        let xs: Vec<&[T]> = group.clone().map(|s| &x[s * in_size..(s + 1) * in_size]).collect();
                        let dys: Vec<&[T]> = group.map(|s| &dy[s * out_size..(s + 1) * out_size]).collect();
                        conv_sparse::dense_weight_grad_group(&xs, &dys, channels.clone(), part);
                    }
                },
            );
            return;
        }
        for_rows(target, per * klen, Vec::new, |expanded, blk, part| {
            let channels = blk * per..(blk * per + part.len() / klen);
            for s in 0..n {
                let xs = &xs_all[s * x_len..(s + 1) * x_len];
                self.sample_weight_grad(s, xs, dy, rows, out_size, channels.clone(), part, expanded);
            }
        });
    }
}
