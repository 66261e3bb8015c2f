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

use alloc::vec::Vec;

use crate::forward::Trace;
use crate::kernels::conv::ConvGeom;
use crate::kernels::conv_sparse::{self, weights_to_hwc, Sites, SparseGeom};
use crate::kernels::elementwise;
use crate::layer::Layer;
use crate::network::Network;
use crate::parallel::{for_rows, threads};
use crate::scalar::Float;
use crate::tangent::maxpool_argmax;

/// A convolution is computed sparsely when at most this fraction of its outputs is read.
const SPARSE_LIMIT: f64 = 0.5;

/// A convolution computed at its demanded sites only.
pub(crate) struct SparseConv<T> {
    /// Its geometry in the padded channels-last layout.
    pub geom: SparseGeom,
    /// Its weights reordered to `[Cout, kh, kw, Cin]`.
    pub w_hwc: Vec<T>,
    /// The demanded sites of each sample of the trace.
    pub sites: Vec<Sites>,
}

/// For each node, `Some` when it is a convolution to compute sparsely.
pub(crate) type SparseConvs<T> = Vec<Option<SparseConv<T>>>;

fn merge(slot: &mut Option<Vec<u8>>, d: Vec<u8>) {
    match slot {
        Some(acc) => acc.iter_mut().zip(d).for_each(|(a, b)| *a |= b),
        None => *slot = Some(d),
    }
}

impl<T: Float> Network<T> {
    /// The convolutions that [`SparseGeom::new`] accepts (not the output node) at most
    /// [`SPARSE_LIMIT`] of whose outputs the linear passes read at the points of `trace`, with
    /// their demanded sites.
    pub(crate) fn sparse_convs(&self, trace: &Trace<T>) -> SparseConvs<T> {
        let nodes = self.nodes();
        let batch = trace.batch();
        let mut out: SparseConvs<T> = (0..nodes.len()).map(|_| None).collect();
        let any_sparse_conv = nodes.iter().enumerate().any(|(id, n)| {
            id != self.output() && matches!(&n.layer, Layer::Conv2d(c) if c.groups == 1 && c.dilation[1] == 1)
                || matches!(&n.layer, Layer::Dense(_))
        });
        if batch == 0 || !any_sparse_conv {
            return out;
        }
        let live = self.live();
        let mut demand: Vec<Option<Vec<u8>>> = alloc::vec![None; nodes.len()];
        demand[self.output()] = Some(alloc::vec![1u8; batch * nodes[self.output()].size()]);
        for id in (1..nodes.len()).rev() {
            let Some(mut d) = demand[id].take() else { continue };
            if !live[id] {
                continue;
            }
            let node = &nodes[id];
            if let Some(mask) = trace.mask(id) {
                d.iter_mut().zip(mask).for_each(|(v, &m)| {
                    if m == T::ZERO {
                        *v = 0
                    }
                });
            }
            let first = node.inputs[0];
            let in_shape = nodes[first].shape.as_slice();
            let in_size: usize = in_shape.iter().product();
            let out_size = node.size();
            match &node.layer {
                Layer::Relu | Layer::LeakyRelu { .. } | Layer::Sigmoid | Layer::Tanh | Layer::Clip { .. } => {
                    let primal = trace.value(first);
                    let mut di = d;
                    for (v, &x) in di.iter_mut().zip(primal) {
                        if elementwise::derivative(&node.layer, x) == T::ZERO {
                            *v = 0;
                        }
                    }
                    merge(&mut demand[first], di);
                }
                Layer::MaxPool2d(p) => {
                    let arg = maxpool_argmax(p, in_shape, &node.shape, trace.value(first), batch);
                    let mut di = alloc::vec![0u8; batch * in_size];
                    for s in 0..batch {
                        for q in 0..out_size {
                            if d[s * out_size + q] != 0 {
                                di[s * in_size + arg[s * out_size + q]] = 1;
                            }
                        }
                    }
                    merge(&mut demand[first], di);
                }
                Layer::Reshape { .. } | Layer::Identity => merge(&mut demand[first], d),
                Layer::Conv2d(c) => {
                    let read = d.iter().filter(|&&v| v != 0).count();
                    let geom = SparseGeom::new(c, &ConvGeom::new(in_shape, &node.shape));
                    if let (Some(geom), true) = (geom, (read as f64) <= SPARSE_LIMIT * d.len() as f64) {
                        let sites =
                            d.chunks(out_size).map(|ds| Sites::from_demand(ds, c.out_channels, geom.npos)).collect();
                        out[id] = Some(SparseConv { w_hwc: weights_to_hwc(&geom, &c.weight), geom, sites });
                    }
                    merge(&mut demand[first], alloc::vec![1u8; batch * in_size]);
                }
                Layer::Dense(dl) => {
                    let read = d.iter().filter(|&&v| v != 0).count();
                    let geom = if in_size == dl.inputs { SparseGeom::dense(dl.inputs, dl.outputs) } else { None };
                    if let (Some(geom), true) = (geom, (read as f64) <= SPARSE_LIMIT * d.len() as f64) {
                        let sites = d.chunks(out_size).map(|ds| Sites::from_demand(ds, dl.outputs, 1)).collect();
                        out[id] = Some(SparseConv { w_hwc: dl.weight.clone(), geom, sites });
                    }
                    merge(&mut demand[first], alloc::vec![1u8; batch * in_size]);
                }
                _ => {
                    for &i in &node.inputs {
                        merge(&mut demand[i], alloc::vec![1u8; batch * nodes[i].size()]);
                    }
                }
            }
        }
        out
    }
}

impl<T: Float> SparseConv<T> {
    /// Adds the weight gradient of this layer to `weight`: inputs `x` (`[n, rows, in]`; the
    /// tangents in a tangent pass, the node's input values with `rows = 1` in a plain backward
    /// pass) and cotangents `dy` (`[n, rows, out]`, zero outside the sites). The output
    /// channels are split over the threads, each going through every sample, so no partial
    /// gradients are summed and the result does not depend on the thread count.
    pub fn add_weight_grads(&self, in_size: usize, out_size: usize, x: &[T], dy: &[T], rows: usize, weight: &mut [T]) {
        let n = self.sites.len();
        let (cout, klen) = (self.geom.out_channels(), self.geom.weights_per_channel());
        let per = cout.div_ceil(threads().max(1)).max(1);
        let accumulate = |target: &mut [T]| {
            for_rows(target, per * klen, Vec::new, |scratch, blk, part| {
                let channels = blk * per..(blk * per + part.len() / klen);
                for s in 0..n {
                    let xs = &x[s * rows * in_size..(s + 1) * rows * in_size];
                    let ds = &dy[s * rows * out_size..(s + 1) * rows * out_size];
                    conv_sparse::weight_grad_sample(
                        &self.geom,
                        &self.sites[s],
                        xs,
                        ds,
                        channels.clone(),
                        part,
                        scratch,
                    );
                }
            })
        };
        if self.geom.weights_are_channels_last() {
            accumulate(weight);
        } else {
            let mut hwc = alloc::vec![T::ZERO; cout * klen];
            accumulate(&mut hwc);
            conv_sparse::add_weights_from_hwc(&self.geom, &hwc, weight);
        }
    }
}
