//! Pooled blocks (`conv → activation → max pool`, see [`crate::pooled`]) whose convolution is
//! computed dense in a linear pass: a first layer on one channel with one row per sample, which
//! the sparse kernels do not take, or a convolution read at more than half its outputs.
//!
//! The block is still taken sample by sample: the convolution's tangents (or cotangents) of one
//! sample live in a buffer of one sample's size, and only the pool's winners are read from it
//! (or written to it); a narrow convolution (conv1) computes its tangents and weight gradient
//! at the winners only ([`SiteConv`]). The full-size tangents and cotangents of the whole batch at the
//! convolution and the activation (for the paper's network, 50 MB each per batch of 500 with
//! one row), and the passes of the activation and pool layers over them, are never made.

use alloc::vec::Vec;

use crate::forward::Trace;
use crate::kernels::conv::{self, ConvGeom};
use crate::kernels::conv_sparse::{dense_weight_grad_from, dense_weight_grad_sites, CotSource, DirectConv, SiteConv};
use crate::layer::{Conv2d, Layer};
use crate::network::Network;
use crate::parallel::for_rows;
use crate::pooled::{PooledBlock, PooledCot, Slopes};
use crate::scalar::Float;
use crate::tangent::winners;

/// Samples per partial weight gradient of the portable path: fixed, so that the summation
/// order does not depend on the thread count.
const CHUNK_SAMPLES: usize = 32;

/// Per worker of the site-by-site tangent: a sample's padded planes, and for one channel the
/// windows whose slope is not zero, their winners, slopes and convolution values.
type SiteTangentScratch<T> = (Vec<f32>, Vec<u32>, Vec<u32>, Vec<T>, Vec<f32>);

impl<T: Float> Network<T> {
    /// The convolution of `block` and its geometry.
    fn block_conv(&self, block: &PooledBlock) -> (usize, &Conv2d<T>, ConvGeom) {
        let nodes = self.nodes();
        let conv = nodes[block.act].inputs[0];
        let Layer::Conv2d(c) = &nodes[conv].layer else { unreachable!("a pooled block starts at a convolution") };
        let below = nodes[conv].inputs[0];
        (conv, c, ConvGeom::new(&nodes[below].shape, &nodes[conv].shape))
    }

    /// The tangents at the pool of `block` (`[batch, rows, pool size]`, before any dropout
    /// mask on the pool) for the tangents `tin` (`[batch, rows, in]`) at the input of its
    /// dense convolution: each row's convolution computed whole, then read at the winners; a
    /// narrow one that [`SiteConv`] handles (conv1) is computed at the winners whose slope is not
    /// zero only.
    pub(crate) fn dense_pooled_tangent(&self, trace: &Trace<T>, block: &PooledBlock, tin: &[T], rows: usize) -> Vec<T> {
        let nodes = self.nodes();
        let (conv, c, g) = self.block_conv(block);
        let Layer::MaxPool2d(p) = &nodes[block.pool].layer else { unreachable!("a pooled block ends in a max pool") };
        let slopes = Slopes::new(self, trace, block);
        let (in_size, conv_size, pool_size) = (c.in_channels * g.h * g.w, nodes[conv].size(), nodes[block.pool].size());
        let arg = winners(trace, block.pool, p, &nodes[block.act].shape, &nodes[block.pool].shape, block.act);
        let mut out = alloc::vec![T::ZERO; trace.batch() * rows * pool_size];
        if let Some(sites) = SiteConv::new(c, &g) {
            // Narrow convolutions: only at the winners whose slope is not zero.
            let (cout, conv_plane) = (c.out_channels, conv_size / c.out_channels.max(1));
            let pool_plane = pool_size / cout.max(1);
            for_rows(
                &mut out,
                pool_size,
                || (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new()),
                |(xq, windows, positions, factors, dots): &mut SiteTangentScratch<T>, r, tr| {
                    sites.planes(&tin[r * in_size..(r + 1) * in_size], xq);
                    let s = r / rows;
                    let a = &arg[s * pool_size..(s + 1) * pool_size];
                    for ch in 0..cout {
                        let outs = ch * pool_plane..(ch + 1) * pool_plane;
                        windows.resize(pool_plane, 0);
                        positions.resize(pool_plane, 0);
                        factors.resize(pool_plane, T::ZERO);
                        // Every window is written, and kept only when its slope is not zero.
                        let mut kept = 0;
                        slopes.each(s, (conv_size, pool_size), a, outs.clone(), |j, i, f| {
                            windows[kept] = j as u32;
                            positions[kept] = (i - ch * conv_plane) as u32;
                            factors[kept] = f;
                            kept += usize::from(f != T::ZERO);
                        });
                        dots.resize(kept, 0.0);
                        sites.dots(xq, ch, &positions[..kept], dots);
                        let trc = &mut tr[outs];
                        for ((&j, &f), &d) in windows[..kept].iter().zip(&factors[..kept]).zip(dots.iter()) {
                            trc[j as usize] = T::from_f64(d as f64) * f;
                        }
                    }
                },
            );
            return out;
        }
        let direct = DirectConv::new(c, &g);
        for_rows(
            &mut out,
            pool_size,
            || (Vec::new(), Vec::new(), alloc::vec![T::ZERO; conv_size]),
            |(scratch, xp, y): &mut (Vec<T>, Vec<f32>, Vec<T>), r, tr| {
                let x = &tin[r * in_size..(r + 1) * in_size];
                match &direct {
                    Some(d) => d.forward_sample(x, None, xp, y),
                    None => conv::forward_row(c, &g, x, y, false, scratch),
                }
                let s = r / rows;
                let a = &arg[s * pool_size..(s + 1) * pool_size];
                slopes.each(s, (conv_size, pool_size), a, 0..pool_size, |j, i, f| tr[j] = y[i] * f);
            },
        );
        out
    }

    /// The input cotangents (`[batch, rows, in]`) of the dense convolution of the block that
    /// `pc` expands, for the cotangents `dp` at the block's pool (`[batch, rows, pool size]`,
    /// after the pool's dropout mask): each row expanded to the convolution's size, then
    /// propagated through it.
    pub(crate) fn dense_pooled_backward(
        &self,
        block: &PooledBlock,
        pc: &PooledCot<'_, T>,
        dp: &[T],
        rows: usize,
    ) -> Vec<T> {
        let (conv, c, g) = self.block_conv(block);
        let (in_size, conv_size, pool_size) = (c.in_channels * g.h * g.w, self.nodes()[conv].size(), pc.pool_size());
        let n_rows = dp.len() / pool_size.max(1);
        let mut dx = alloc::vec![T::ZERO; n_rows * in_size];
        for_rows(
            &mut dx,
            in_size,
            || (Vec::new(), alloc::vec![T::ZERO; conv_size]),
            |(scratch, e): &mut (Vec<T>, Vec<T>), r, dxr| {
                let d = &dp[r * pool_size..(r + 1) * pool_size];
                pc.scatter(r / rows, d, 1, 0..c.out_channels, e, false);
                conv::backward_row(c, &g, e, dxr, scratch);
                pc.scatter(r / rows, d, 1, 0..c.out_channels, e, true);
            },
        );
        dx
    }

    /// Adds to `weight` the weight gradient of the block's dense convolution for the inputs
    /// `x` (`[batch, rows, in]`: the tangents in a tangent pass, the node's input values with
    /// `rows = 1` in a plain backward pass) and the cotangents `dp` at the block's pool
    /// (`[batch, rows, pool size]`) that `pc` expands (for a narrow convolution that
    /// [`SiteConv`] handles, only the winners' patches with a nonzero cotangent). Partial sums
    /// over fixed chunks of samples, so the result does not depend on the thread count.
    pub(crate) fn dense_pooled_weight_grad(
        &self,
        block: &PooledBlock,
        pc: &PooledCot<'_, T>,
        x: &[T],
        dp: &[T],
        rows: usize,
        weight: &mut [T],
    ) {
        let (_, c, g) = self.block_conv(block);
        let pool_size = pc.pool_size();
        let n_rows = dp.len() / pool_size.max(1);
        let expand = |r: usize, e: &mut [T], clear: bool| {
            pc.scatter(r / rows, &dp[r * pool_size..(r + 1) * pool_size], 1, 0..c.out_channels, e, clear);
        };
        // Narrow convolutions: only the winners' patches (most of the expansion is zero).
        let sites = |r: usize, ch: usize, positions: &mut Vec<u32>, values: &mut Vec<T>| {
            pc.channel_sites(r / rows, &dp[r * pool_size..(r + 1) * pool_size], ch, positions, values);
        };
        if dense_weight_grad_sites(c, &g, x, n_rows, &sites, weight) {
            return;
        }
        if dense_weight_grad_from(c, &g, x, CotSource::Expand(&expand), n_rows, weight) {
            return;
        }
        let (in_size, out_size, wlen) = (c.in_channels * g.h * g.w, c.out_channels * g.ho * g.wo, weight.len());
        let mut partial = alloc::vec![T::ZERO; n_rows.div_ceil(CHUNK_SAMPLES) * wlen];
        for_rows(
            &mut partial,
            wlen,
            || (Vec::new(), alloc::vec![T::ZERO; out_size]),
            |(scratch, e): &mut (Vec<T>, Vec<T>), chunk, dw| {
                for r in chunk * CHUNK_SAMPLES..((chunk + 1) * CHUNK_SAMPLES).min(n_rows) {
                    expand(r, e, false);
                    conv::weight_grad_row(c, &g, &x[r * in_size..(r + 1) * in_size], e, dw, scratch);
                    expand(r, e, true);
                }
            },
        );
        for p in partial.chunks_exact(wlen.max(1)) {
            weight.iter_mut().zip(p).for_each(|(a, &b)| *a += b);
        }
    }
}
