//! Exact parameter gradients of Jacobian bilinear forms `vᵀ·J_θ(x)·u`: the building block of
//! Jacobian regularisation.
//!
//! For a piecewise-linear network (ReLU, LeakyReLU, Clip, max pooling and affine layers; the
//! activation patterns, pooling winners and dropout masks fixed by the forward trace) the
//! logit Jacobian `J(x) = A_L·…·A_1` is a product of the layers' *linear parts*, and the
//! activation pattern is locally constant in the parameters `θ`. So for a fixed pair `(v, u)`
//! the gradient of `vᵀ J_θ u` with respect to the weights of layer `l` is the outer product of
//! the cotangent `v` reaching layer `l`'s output in a reverse pass and the tangent `u` reaching
//! its input in a forward (tangent) pass: no second-order autograd tape is needed.
//!
//! With `u = Jᵀv` held fixed, `∇_θ ‖Jᵀv‖² = 2·∇_θ (vᵀ J_θ u)`; summing over the unit vectors
//! `v = e_k` gives the exact gradient of `‖J‖_F²`, over random unit vectors an unbiased
//! estimate of it, and with `v = ∂CE/∂z` the first half of the input-gradient penalty's.

use alloc::vec::Vec;

use crate::demand::{sparse_for, sparse_samples, SparseConvs};
use crate::error::{Error, Result};
use crate::forward::Trace;
use crate::network::Network;
use crate::params::{LayerGrads, ParamGrads};
use crate::pooled::{CotRows, PooledCot, Recorded};
use crate::reverse::param_grads;
use crate::scalar::Float;

/// Cotangent rows per piece of the batch (16 Mi values of the widest node, 64 MB in f32).
const PIECE_VALUES: usize = 1 << 24;

/// The result of [`Network::bilinear_grads`] for cotangents `v` (`rows` per sample).
#[derive(Clone, Debug)]
pub struct BilinearGrads<T> {
    /// `u = J(x_b)ᵀ v_br`, `[batch, rows, D]`.
    pub vjp: Vec<T>,
    /// `J(x_b)·u_br`, `[batch, rows, K]`.
    pub jvp: Vec<T>,
    /// `∇_θ Σ_{b,r} v_brᵀ·J_θ(x_b)·u_br` with `u` held fixed (weights and batch-norm scales;
    /// biases and shifts do not enter a Jacobian, their entries are zero).
    pub grads: ParamGrads<T>,
}

impl<T: Float> Network<T> {
    /// Errors with [`Error::NotPiecewiseLinear`] naming the first live node whose second
    /// derivative is not zero (Sigmoid, Tanh).
    pub fn check_piecewise_linear(&self) -> Result<()> {
        let live = self.live();
        match self.nodes().iter().zip(live).find(|(n, l)| *l && !n.layer.is_piecewise_linear()) {
            Some((n, _)) => Err(Error::NotPiecewiseLinear { node: n.name.clone(), kind: n.layer.kind() }),
            None => Ok(()),
        }
    }

    /// For `rows` cotangents `v` per sample (`[batch, rows, K]`) at the points of `trace`:
    /// the vector-Jacobian products `u = Jᵀv`, the products `J·u`, and the exact gradient of
    /// `Σ v·(J_θ u)` with respect to every trainable parameter with `u` held fixed (see the
    /// module docs). One reverse pass, one tangent pass and the weight-gradient products,
    /// over pieces of the batch of bounded memory.
    ///
    /// Errors when the network is not piecewise linear ([`Error::NotPiecewiseLinear`]), when
    /// `v` does not hold `batch·rows·K` finite values, or `rows == 0`.
    pub fn bilinear_grads(&self, trace: &Trace<T>, v: &[T], rows: usize) -> Result<BilinearGrads<T>> {
        self.bilinear_grads_with(trace, v, rows, true)
    }

    /// [`bilinear_grads`](Self::bilinear_grads), with the sparse convolutions of
    /// [`Network::sparse_convs`] and fused pooled blocks, or (`sparse = false`) every layer on
    /// its own and every convolution dense (the reference the fast paths are tested against).
    pub(crate) fn bilinear_grads_with(
        &self,
        trace: &Trace<T>,
        v: &[T],
        rows: usize,
        sparse: bool,
    ) -> Result<BilinearGrads<T>> {
        if sparse {
            self.bilinear_grads_given(trace, v, rows, Some(&self.sparse_convs(trace, rows)))
        } else {
            self.bilinear_grads_given(trace, v, rows, None)
        }
    }

    /// [`bilinear_grads`](Self::bilinear_grads) with the sparse convolutions `sparse` made
    /// for `trace` by [`Network::sparse_convs`] (so one demand analysis serves several passes
    /// over the same trace); `None` entries are computed dense. With `sparse = None`, every
    /// layer on its own ([`Network::reverse`]).
    pub(crate) fn bilinear_grads_given(
        &self,
        trace: &Trace<T>,
        v: &[T],
        rows: usize,
        sparse: Option<&SparseConvs<'_, T>>,
    ) -> Result<BilinearGrads<T>> {
        self.check_piecewise_linear()?;
        let (batch, k, d) = (trace.batch(), self.num_classes(), self.input_len());
        crate::forward::check_input(v, batch.saturating_mul(rows), k, "cotangents")?;
        if rows == 0 {
            return Err(Error::DataLength { got: 0, expected: 1, what: "cotangent rows per sample" });
        }
        let widest = self.nodes().iter().map(|n| n.size()).max().unwrap_or(1).max(1);
        let piece = (PIECE_VALUES / (rows * widest)).clamp(1, batch.max(1));
        let mut out = BilinearGrads {
            vjp: alloc::vec![T::ZERO; batch * rows * d],
            jvp: alloc::vec![T::ZERO; batch * rows * k],
            grads: ParamGrads::zeros_like(self),
        };
        for start in (0..batch).step_by(piece) {
            let end = (start + piece).min(batch);
            let vs = &v[start * rows * k..end * rows * k];
            if end - start == batch {
                self.bilinear_piece(trace, vs, rows, &mut out, start, sparse)?;
            } else {
                let part = trace.samples(start, end);
                let part_sparse = sparse.map(|s| sparse_samples(s, start, end));
                self.bilinear_piece(&part, vs, rows, &mut out, start, part_sparse.as_ref())?;
            }
        }
        Ok(out)
    }

    fn bilinear_piece(
        &self,
        trace: &Trace<T>,
        v: &[T],
        rows: usize,
        out: &mut BilinearGrads<T>,
        start: usize,
        sparse: Option<&SparseConvs<'_, T>>,
    ) -> Result<()> {
        let n = trace.batch();
        let (k, d) = (self.num_classes(), self.input_len());
        let mut cot: Vec<Option<Recorded<T>>> = alloc::vec![None; self.nodes().len()];
        let u = self.reverse(trace, v, rows, None, Some(&mut cot), sparse, true)?;
        let nodes = self.nodes();
        let grads = &mut out.grads;
        let ju = self.tangent_walk(
            trace,
            &u,
            rows,
            &mut |id, t_in| {
                let Some(rec) = cot[id].take() else { return };
                let node = &nodes[id];
                let in_shape = nodes[node.inputs[0]].shape.as_slice();
                let in_size = in_shape.iter().product();
                match (sparse_for(sparse, id, rows), grads.nodes[id].as_mut(), rec) {
                    // A parameter node whose gradient nobody asked for.
                    (_, None, _) => {}
                    (
                        Some(sc),
                        Some(LayerGrads::Conv2d { weight, .. } | LayerGrads::Dense { weight, .. }),
                        Recorded::Full(dy),
                    ) => sc.add_weight_grads(in_size, node.size(), t_in, CotRows::Full(&dy), rows, weight),
                    (Some(sc), Some(LayerGrads::Conv2d { weight, .. }), Recorded::Pooled(dp, block)) => {
                        let pc = PooledCot::new(self, trace, &block);
                        sc.add_weight_grads(in_size, node.size(), t_in, CotRows::Pooled(&pc, &dp), rows, weight)
                    }
                    (None, Some(LayerGrads::Conv2d { weight, .. }), Recorded::Pooled(dp, block)) => {
                        let pc = PooledCot::new(self, trace, &block);
                        self.dense_pooled_weight_grad(&block, &pc, t_in, &dp, rows, weight)
                    }
                    (_, _, Recorded::Pooled(..)) => unreachable!("the reverse pass pools convolutions only"),
                    (_, acc, Recorded::Full(dy)) => param_grads(node, in_shape, t_in, &dy, n * rows, 1, acc, false),
                }
            },
            sparse,
        )?;
        out.vjp[start * rows * d..(start + n) * rows * d].copy_from_slice(&u);
        out.jvp[start * rows * k..(start + n) * rows * k].copy_from_slice(&ju);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use crate::arch::Arch;
    use crate::train::Rng;
    use crate::{Float, Layer, Network, ParamGrads};

    /// Where the tests put dropout masks (entries 0, 2 and some −1).
    #[derive(Clone, Copy)]
    enum Masks {
        /// After every activation: no pooled blocks.
        EveryActivation,
        /// After the activations that no max pool reads: pooled blocks, their ReLU slopes read
        /// from the pools' values.
        UnpooledActivations,
        /// After every max pool and the activations that no max pool reads: pooled blocks,
        /// their slopes read from the convolutions' values.
        Pools,
    }

    fn max_rel(a: &[f64], b: &[f64]) -> f64 {
        let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
        a.iter().zip(b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs())) / scale
    }

    /// The sparse convolution path equals the dense one (vjp, jvp, every parameter gradient)
    /// on a network where the demand is sparse (at least one layer of each kind in
    /// `expect_sparse` computed sparsely), with dropout masks in the way: within `tol`
    /// relative to each result's largest entry. Three times, with the masks of [`Masks`].
    fn sparse_equals_dense<T: Float>(
        net: &Network<T>,
        batch: usize,
        rows: usize,
        seed: u64,
        tol: f64,
        expect_sparse: &[&str],
    ) {
        for masks in [Masks::EveryActivation, Masks::UnpooledActivations, Masks::Pools] {
            sparse_equals_dense_with(net, batch, rows, seed, tol, expect_sparse, masks);
        }
    }

    fn sparse_equals_dense_with<T: Float>(
        net: &Network<T>,
        batch: usize,
        rows: usize,
        seed: u64,
        tol: f64,
        expect_sparse: &[&str],
        masks: Masks,
    ) {
        let mut rng = Rng::new(seed);
        let d = net.input_len();
        let x: Vec<T> = (0..batch * d).map(|_| T::from_f64(rng.uniform())).collect();
        // Dropout (p = 0.5) after the activations.
        let nodes = net.nodes();
        let pooled = |id: usize| nodes.iter().any(|n| n.inputs == [id] && matches!(n.layer, Layer::MaxPool2d(_)));
        let masks: Vec<Option<Vec<T>>> = nodes
            .iter()
            .enumerate()
            .map(|(id, n)| {
                let masked = match masks {
                    Masks::EveryActivation => matches!(n.layer, Layer::Relu),
                    Masks::UnpooledActivations => matches!(n.layer, Layer::Relu) && !pooled(id),
                    Masks::Pools => {
                        matches!(n.layer, Layer::MaxPool2d(_)) || matches!(n.layer, Layer::Relu) && !pooled(id)
                    }
                };
                masked.then(|| {
                    // Mostly dropout's 0 and 2, some negative entries too (masks are any
                    // factors: a pool's value then has the opposite sign of its winner's).
                    let m = |_| T::from_f64([0.0, 0.0, 2.0, 2.0, -1.0][(rng.uniform() * 5.0) as usize % 5]);
                    (0..batch * n.size()).map(m).collect()
                })
            })
            .collect();
        let trace = net.trace_with_masks(&x, batch, masks).unwrap();
        let sparse = net.sparse_convs(&trace, rows);
        for kind in expect_sparse {
            let found = sparse.iter().zip(net.nodes()).any(|(s, n)| s.is_some() && n.layer.kind() == *kind);
            assert!(found, "no sparse {kind} layer in the test network");
        }
        let k = net.num_classes();
        let v: Vec<T> = (0..batch * rows * k).map(|_| T::from_f64(rng.normal())).collect();
        let a = net.bilinear_grads_with(&trace, &v, rows, true).unwrap();
        let b = net.bilinear_grads_with(&trace, &v, rows, false).unwrap();
        let f = |v: &[T]| v.iter().map(|x| x.to_f64()).collect::<Vec<f64>>();
        // The plain reverse pass with parameter gradients (what `backward` runs).
        let (mut pa, mut pb) = (ParamGrads::zeros_like(net), ParamGrads::zeros_like(net));
        let dxa = net.reverse(&trace, &v, rows, Some(&mut pa), None, Some(&sparse), true).unwrap();
        let dxb = net.reverse(&trace, &v, rows, Some(&mut pb), None, None, true).unwrap();
        for (what, x, y) in [
            ("backward dx", f(&dxa), f(&dxb)),
            ("backward params", f(&pa.tensors().concat()), f(&pb.tensors().concat())),
        ] {
            let e = max_rel(&x, &y);
            assert!(e < tol, "{what}: sparse and dense differ by {e:e} relative");
        }
        for (what, x, y) in [
            ("vjp", f(&a.vjp), f(&b.vjp)),
            ("jvp", f(&a.jvp), f(&b.jvp)),
            ("grads", f(&a.grads.tensors().concat()), f(&b.grads.tensors().concat())),
        ] {
            let e = max_rel(&x, &y);
            assert!(e < tol, "{what}: sparse and dense differ by {e:e} relative");
        }
    }

    const BOTH: &[&str] = &["Conv2d", "Dense"];
    const CONV: &[&str] = &["Conv2d"];

    #[test]
    fn sparse_convolutions_equal_dense_on_the_paper_network() {
        let net: Network<f64> = Arch::PaperMnist.build(None, &mut Rng::new(1)).unwrap();
        sparse_equals_dense(&net, 3, 10, 2, 1e-12, BOTH);
        // One row per sample (the one-projection penalty): the channel-blocked kernels, and
        // the first convolution dense in its pooled block (portable kernels in f64, the
        // direct ones in f32).
        sparse_equals_dense(&net, 2, 1, 6, 1e-12, BOTH);
        sparse_equals_dense(&net.cast::<f32>(), 4, 1, 5, 1e-4, BOTH);
        // f32 runs the AVX2 inner loops where the processor has them.
        sparse_equals_dense(&net.cast::<f32>(), 5, 10, 2, 1e-4, BOTH);
    }

    #[test]
    fn sparse_convolutions_equal_dense_on_a_small_cnn() {
        let net: Network<f64> = Arch::ConvSmall.build(Some(&[3, 12, 12]), &mut Rng::new(3)).unwrap();
        sparse_equals_dense(&net, 2, 3, 4, 1e-12, BOTH);
        sparse_equals_dense(&net.cast::<f32>(), 3, 7, 4, 1e-4, BOTH);
    }

    /// conv(`cin` → 6 channels, 3×4 kernel, stride 2×1, uneven padding, vertical dilation 2)
    /// → ReLU → 2×2 max pool → dense, random weights.
    fn odd_geometry(cin: usize, seed: u64) -> Network<f64> {
        odd_geometry_dilated(cin, seed, [2, 1])
    }

    /// [`odd_geometry`] with the convolution's `dilation`.
    fn odd_geometry_dilated(cin: usize, seed: u64, dilation: [usize; 2]) -> Network<f64> {
        use crate::{Conv2d, Dense, Pool2d};
        let mut rng = Rng::new(seed);
        let mut u = |n: usize| (0..n).map(|_| rng.uniform() - 0.5).collect::<Vec<f64>>();
        let mut net = Network::<f64>::new(&[cin, 11, 9]).unwrap();
        let conv = Conv2d {
            weight: u(6 * cin * 12),
            bias: Some(u(6)),
            out_channels: 6,
            in_channels: cin,
            kernel: [3, 4],
            stride: [2, 1],
            padding: [1, 2, 0, 1],
            dilation,
            groups: 1,
        };
        net.then("conv", Layer::Conv2d(conv)).unwrap();
        net.then("relu", Layer::Relu).unwrap();
        let pool =
            Pool2d { kernel: [2, 2], stride: [2, 2], padding: [0; 4], count_include_pad: false, ceil_mode: false };
        net.then("pool", Layer::MaxPool2d(pool)).unwrap();
        let features = net.nodes().last().unwrap().size();
        net.then("flatten", Layer::Reshape { shape: alloc::vec![features] }).unwrap();
        net.then("fc", Layer::Dense(Dense { weight: u(4 * features), bias: None, inputs: features, outputs: 4 }))
            .unwrap();
        net
    }

    /// Strides, uneven padding, vertical dilation and runs that are not a multiple of the
    /// vector width (5 channels: runs of 20 values).
    #[test]
    fn sparse_convolutions_equal_dense_on_odd_geometry() {
        let net = odd_geometry(5, 7);
        sparse_equals_dense(&net, 3, 5, 8, 1e-12, CONV);
        sparse_equals_dense(&net, 3, 1, 9, 1e-12, CONV);
        sparse_equals_dense(&net.cast::<f32>(), 2, 1, 9, 1e-4, CONV);
        sparse_equals_dense(&net.cast::<f32>(), 3, 6, 8, 1e-4, CONV);
    }

    /// 64 input channels (runs of 256 values: every chunk width of the one-row weight-gradient
    /// kernel) and 35–40 samples, which fall in two chunks of partial weight gradients.
    #[test]
    fn sparse_convolutions_equal_dense_with_wide_inputs_and_chunks() {
        let net = odd_geometry(64, 13);
        sparse_equals_dense(&net, 40, 1, 14, 1e-12, CONV);
        sparse_equals_dense(&net, 35, 2, 15, 1e-12, CONV);
        sparse_equals_dense(&net.cast::<f32>(), 40, 1, 16, 1e-4, CONV);
    }

    /// A horizontally dilated convolution, which the sparse kernels do not take: its pooled
    /// block runs dense for any number of rows (portable kernels in f64; the direct ones in
    /// f32 do not take it either). Batches of 40 rows: each worker reuses its buffers.
    #[test]
    fn dense_pooled_blocks_equal_layer_by_layer() {
        let net = odd_geometry_dilated(3, 17, [2, 2]);
        for (batch, rows) in [(40, 1), (14, 3)] {
            sparse_equals_dense(&net, batch, rows, 40 + rows as u64, 1e-12, &[]);
            sparse_equals_dense(&net.cast::<f32>(), batch, rows, 50 + rows as u64, 1e-4, &[]);
        }
    }

    /// A narrow convolution (runs of 8 values: the rows-last kernels) on the same geometry,
    /// with row counts below, at and across whole blocks of lanes; one row runs dense (in a
    /// pooled block taken sample by sample).
    #[test]
    fn narrow_sparse_convolutions_equal_dense() {
        let net = odd_geometry(2, 11);
        for rows in [1, 2, 3, 8, 9, 17] {
            let expect = if rows == 1 { &[][..] } else { CONV };
            sparse_equals_dense(&net, 3, rows, 12 + rows as u64, 1e-12, expect);
            sparse_equals_dense(&net.cast::<f32>(), 2, rows, 30 + rows as u64, 1e-4, expect);
        }
        // With one row per sample the narrow convolution is not analysed at all.
        let x: Vec<f64> = (0..2 * net.input_len()).map(|i| (i % 7) as f64 / 7.0).collect();
        let trace = net.trace(&x, 2).unwrap();
        assert!(net.sparse_convs(&trace, 1).iter().all(Option::is_none));
        assert!(net.sparse_convs(&trace, 2).iter().any(Option::is_some));
    }
}
