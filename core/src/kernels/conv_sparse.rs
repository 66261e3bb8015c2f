//! Convolution restricted to a sparse set of output sites `(channel, position)`, for the
//! linear passes of Jacobian regularisation.
//!
//! In a tangent pass (and its adjoint, the reverse pass) the value of a convolution output is
//! only read when the layers after it read it: behind a ReLU only where the unit is active,
//! behind a 2×2 max pool only at the window's winner. For the paper's network that is at most
//! a quarter of the second convolution's outputs. These kernels compute exactly those sites,
//! for all `R` tangent rows of one sample at once (the rows share the activation pattern):
//! - [`forward_sample`]: `y_r[c, p] = W[c, :]·patch_r(p)` at the sites, zero elsewhere;
//! - [`backward_sample`]: `dx_r = Σ_sites dy_r[c, p]·W[c, :]` scattered back through the
//!   patches (the adjoint of `forward_sample`);
//! - [`weight_grad_sample`]: `dW[c, :] += Σ_r Σ_{p : (c, p) a site} dy_r[c, p]·patch_r(p)`.
//!
//! Inputs are copied once per row into a zero-padded channels-last image (`[Hp, Wp, Cin]`)
//! and the weights are reordered to `[Cout, kh, kw, Cin]`, so a patch is `kh` contiguous runs
//! of `kw·Cin` values that the inner loops read in place: no im2col, no gather.
//!
//! Sites outside the set must have a zero cotangent (the caller guarantees it: they are exactly
//! the outputs no later layer reads), so the results equal the dense kernels' up to rounding.
//! Only ungrouped convolutions (`groups == 1`) with unit horizontal dilation are handled
//! ([`SparseGeom::new`]); biases do not enter linear passes. *Narrow* convolutions, whose runs
//! are shorter than [`MIN_RUN`] values, store the rows of a sample last instead (module
//! [`narrow`]) and are handled only for samples with several rows ([`SparseGeom::handles`]).
//! The same channels-last layout also serves dense `f32` forward and weight-gradient kernels
//! (module [`direct`]).

mod direct;
mod narrow;

pub(crate) use direct::{
    forward_rows as dense_forward_rows, weight_grad_from as dense_weight_grad_from,
    weight_grad_rows as dense_weight_grad_rows, weight_grad_sites as dense_weight_grad_sites, CotSource, DirectConv,
    SiteConv,
};

use alloc::vec::Vec;

use crate::kernels::conv::ConvGeom;
use crate::kernels::tiles::{add_products, balanced_tiles, dot_tile, Runs, MAX_DOT_COLS, MAX_TILE};
use crate::layer::Conv2d;
use crate::scalar::Float;

/// Channels (or patches) handled together by the single-row kernels.
const ROW_BLOCK: usize = 5;
/// Shortest contiguous run (`kw·Cin`) the row-by-row layout vectorises along: shorter runs (a
/// first layer on one channel) use the rows-last layout of [`narrow`].
pub(crate) const MIN_RUN: usize = 16;

/// Geometry of a convolution in the padded channels-last layout.
#[derive(Clone, Debug)]
pub(crate) struct SparseGeom {
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    stride: [usize; 2],
    dil_h: usize,
    pad_top: usize,
    pad_left: usize,
    /// Output width.
    wo: usize,
    /// Output positions `Ho·Wo`.
    pub npos: usize,
    hp: usize,
    wp: usize,
    /// Runs shorter than [`MIN_RUN`]: the rows-last layout of [`narrow`].
    rows_last: bool,
}

impl SparseGeom {
    /// The geometry of `c` on an input of geometry `g`, or `None` when the sparse kernels do
    /// not handle it (groups, horizontal dilation).
    pub fn new<T>(c: &Conv2d<T>, g: &ConvGeom) -> Option<Self> {
        if c.groups != 1 || c.dilation[1] != 1 || g.ho == 0 || g.wo == 0 {
            return None;
        }
        let (kh, kw) = (c.kernel[0], c.kernel[1]);
        let hp = ((g.ho - 1) * c.stride[0] + (kh - 1) * c.dilation[0] + 1).max(c.padding[0] + g.h);
        let wp = ((g.wo - 1) * c.stride[1] + kw).max(c.padding[1] + g.w);
        Some(SparseGeom {
            cin: c.in_channels,
            cout: c.out_channels,
            h: g.h,
            w: g.w,
            kh,
            kw,
            stride: c.stride,
            dil_h: c.dilation[0],
            pad_top: c.padding[0],
            pad_left: c.padding[1],
            wo: g.wo,
            npos: g.ho * g.wo,
            hp,
            wp,
            rows_last: c.kernel[1] * c.in_channels < MIN_RUN,
        })
    }

    /// A dense layer `inputs → outputs` seen as a 1×1 convolution on a 1×1 image with
    /// `inputs` channels (its weight layout `[outputs, inputs]` is already channels-last), or
    /// `None` when its rows are shorter than [`MIN_RUN`].
    pub fn dense(inputs: usize, outputs: usize) -> Option<Self> {
        (inputs >= MIN_RUN).then_some(SparseGeom {
            cin: inputs,
            cout: outputs,
            h: 1,
            w: 1,
            kh: 1,
            kw: 1,
            stride: [1, 1],
            dil_h: 1,
            pad_top: 0,
            pad_left: 0,
            wo: 1,
            npos: 1,
            hp: 1,
            wp: 1,
            rows_last: false,
        })
    }

    /// Whether the kernels of this module handle samples of `rows` rows: a narrow convolution
    /// needs at least two (with one, the dense im2col path is as fast and needs no demand
    /// analysis).
    pub fn handles(&self, rows: usize) -> bool {
        !self.rows_last || rows >= 2
    }

    /// Values of one sample's `rows` rows in the padded layout the kernels read.
    pub fn sample_len(&self, rows: usize) -> usize {
        if self.rows_last {
            self.hp * self.wp * self.cin * narrow::lane_rows(rows)
        } else {
            rows * self.padded_len()
        }
    }

    /// Whether the padded channels-last layout is the input layout itself (1×1 image, no
    /// padding: a dense layer).
    pub fn is_flat(&self) -> bool {
        !self.rows_last && self.h == 1 && self.w == 1 && self.hp == 1 && self.wp == 1
    }

    /// Whether the `[Cout, kh, kw, Cin]` weight order is the stored `[Cout, Cin, kh, kw]` one
    /// (a 1×1 kernel).
    pub fn weights_are_channels_last(&self) -> bool {
        self.kh == 1 && self.kw == 1
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.cout
    }

    /// Weights per output channel (`Cin·kh·kw`).
    pub fn weights_per_channel(&self) -> usize {
        self.kh * self.kw * self.cin
    }

    /// Values of one padded channels-last image.
    pub fn padded_len(&self) -> usize {
        self.hp * self.wp * self.cin
    }

    /// Length of one contiguous run of a patch.
    fn run(&self) -> usize {
        self.kw * self.cin
    }

    /// Distance between the starts of consecutive runs of a patch.
    fn run_stride(&self) -> usize {
        self.dil_h * self.wp * self.cin
    }

    /// Where the first run of position `p`'s patch starts in the padded image.
    fn patch_start(&self, p: usize) -> usize {
        let (oy, ox) = (p / self.wo, p % self.wo);
        (oy * self.stride[0] * self.wp + ox * self.stride[1]) * self.cin
    }

    /// [`patch_start`](Self::patch_start) of every position in order, without a division per
    /// position.
    fn patch_starts(&self) -> impl Iterator<Item = usize> + '_ {
        let ho = self.npos.checked_div(self.wo).unwrap_or(0);
        (0..ho).flat_map(move |oy| {
            (0..self.wo).map(move |ox| (oy * self.stride[0] * self.wp + ox * self.stride[1]) * self.cin)
        })
    }

    /// Length a patch spans in the padded image from its start.
    fn patch_span(&self) -> usize {
        (self.kh - 1) * self.run_stride() + self.run()
    }
}

/// The sites of one sample, grouped by position: the channels of position `p` are
/// `chans[start[p]..start[p + 1]]`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Sites {
    start: Vec<u32>,
    chans: Vec<u32>,
}

impl Sites {
    /// The sites where `demand` (`[channels, npos]`, nonzero = read later) is set.
    pub fn from_demand(demand: &[u8], channels: usize, npos: usize) -> Self {
        // A counting sort by position of the set entries, read in their channel-major order
        // (so the channels of a position come out sorted).
        let demand = &demand[..channels * npos];
        let mut start = alloc::vec![0u32; npos + 1];
        for_each_set(demand, |i| start[i % npos + 1] += 1);
        for p in 0..npos {
            start[p + 1] += start[p];
        }
        let mut chans = alloc::vec![0u32; start[npos] as usize];
        let mut next = start.clone();
        for_each_set(demand, |i| {
            let (c, p) = (i / npos, i % npos);
            chans[next[p] as usize] = c as u32;
            next[p] += 1;
        });
        Sites { start, chans }
    }

    /// Number of sites.
    pub fn len(&self) -> usize {
        self.chans.len()
    }

    fn at(&self, p: usize) -> &[u32] {
        &self.chans[self.start[p] as usize..self.start[p + 1] as usize]
    }

    /// The channels of position `p` that lie in `channels` (a sub-slice: the lists are sorted).
    fn at_in(&self, p: usize, channels: &core::ops::Range<usize>) -> &[u32] {
        let all = self.at(p);
        let lo = all.partition_point(|&c| (c as usize) < channels.start);
        let hi = all.partition_point(|&c| (c as usize) < channels.end);
        &all[lo..hi]
    }
}

/// Calls `f(i)` for every `i` with `flags[i] != 0`, in order, skipping zero bytes eight at a
/// time.
fn for_each_set(flags: &[u8], mut f: impl FnMut(usize)) {
    let mut chunks = flags.chunks_exact(8);
    for (k, c) in chunks.by_ref().enumerate() {
        if u64::from_ne_bytes(c.try_into().expect("eight bytes")) != 0 {
            c.iter().enumerate().filter(|(_, &v)| v != 0).for_each(|(j, _)| f(k * 8 + j));
        }
    }
    let base = flags.len() - chunks.remainder().len();
    chunks.remainder().iter().enumerate().filter(|(_, &v)| v != 0).for_each(|(j, _)| f(base + j));
}

/// Copies `x` (`[Cin, H, W]`) into the padded channels-last image `xp` (zero padding).
fn to_padded<T: Float>(g: &SparseGeom, x: &[T], xp: &mut [T]) {
    xp.fill(T::ZERO);
    for ci in 0..g.cin {
        for iy in 0..g.h {
            let src = &x[(ci * g.h + iy) * g.w..(ci * g.h + iy + 1) * g.w];
            let row = (iy + g.pad_top) * g.wp + g.pad_left;
            for (ix, &v) in src.iter().enumerate() {
                xp[(row + ix) * g.cin + ci] = v;
            }
        }
    }
}

/// Writes the interior of the padded channels-last image `xp` to `dx` (`[Cin, H, W]`): the
/// adjoint of [`to_padded`] (the padding's share is dropped).
fn from_padded<T: Float>(g: &SparseGeom, xp: &[T], dx: &mut [T]) {
    for ci in 0..g.cin {
        for iy in 0..g.h {
            let dst = &mut dx[(ci * g.h + iy) * g.w..(ci * g.h + iy + 1) * g.w];
            let row = (iy + g.pad_top) * g.wp + g.pad_left;
            for (ix, v) in dst.iter_mut().enumerate() {
                *v = xp[(row + ix) * g.cin + ci];
            }
        }
    }
}

/// The weights `[Cout, Cin, kh, kw]` reordered to `[Cout, kh, kw, Cin]`.
pub(crate) fn weights_to_hwc<T: Float>(g: &SparseGeom, w: &[T]) -> Vec<T> {
    let mut out = alloc::vec![T::ZERO; w.len()];
    for co in 0..g.cout {
        for ci in 0..g.cin {
            for ki in 0..g.kh {
                for kj in 0..g.kw {
                    out[((co * g.kh + ki) * g.kw + kj) * g.cin + ci] = w[((co * g.cin + ci) * g.kh + ki) * g.kw + kj];
                }
            }
        }
    }
    out
}

/// Adds a weight gradient in the `[Cout, kh, kw, Cin]` order to `dw` in `[Cout, Cin, kh, kw]`.
pub(crate) fn add_weights_from_hwc<T: Float>(g: &SparseGeom, hwc: &[T], dw: &mut [T]) {
    if g.weights_are_channels_last() {
        dw.iter_mut().zip(hwc).for_each(|(a, &b)| *a += b);
        return;
    }
    for co in 0..g.cout {
        for ci in 0..g.cin {
            for ki in 0..g.kh {
                for kj in 0..g.kw {
                    dw[((co * g.cin + ci) * g.kh + ki) * g.kw + kj] += hwc[((co * g.kh + ki) * g.kw + kj) * g.cin + ci];
                }
            }
        }
    }
}

/// Scratch length of the per-sample kernels for `rows` rows.
fn scratch_len(g: &SparseGeom, rows: usize) -> usize {
    rows * g.padded_len()
}

/// The rows of `x` (`[R, Cin·H·W]`) in the padded channels-last layout: `x` itself when the
/// layouts coincide (a dense layer), else a copy made in `scratch`.
fn padded_rows<'a, T: Float>(g: &SparseGeom, x: &'a [T], scratch: &'a mut Vec<T>) -> &'a [T] {
    if g.is_flat() {
        return x;
    }
    let (in_size, plen) = (g.cin * g.h * g.w, g.padded_len());
    let rows = x.len() / in_size;
    scratch.resize(scratch_len(g, rows), T::ZERO);
    for (xr, xp) in x.chunks_exact(in_size).zip(scratch.chunks_exact_mut(plen)) {
        to_padded(g, xr, xp);
    }
    scratch
}

/// Writes the rows of one sample, `x` (`[R, Cin·H·W]`), into `out` (`sample_len(R)` values)
/// in the padded layout ([`weight_grad_sample`] reads its inputs in it).
pub(crate) fn pad_rows<T: Float>(g: &SparseGeom, x: &[T], out: &mut [T]) {
    if g.rows_last {
        return narrow::pad_sample(g, x, out);
    }
    let (in_size, plen) = (g.cin * g.h * g.w, g.padded_len());
    for (xr, xp) in x.chunks_exact(in_size).zip(out.chunks_exact_mut(plen)) {
        to_padded(g, xr, xp);
    }
}

/// The sparse forward (tangent) map for one sample: `x` is `[R, in]` (`[Cin, H, W]` rows),
/// `y` is `[R, out]` and must hold zeros on entry (only the sites are written, so it is zero
/// outside them); `w_hwc` from [`weights_to_hwc`].
pub(crate) fn forward_sample<T: Float>(
    g: &SparseGeom,
    w_hwc: &[T],
    sites: &Sites,
    x: &[T],
    y: &mut [T],
    scratch: &mut Vec<T>,
) {
    if g.rows_last {
        return narrow::forward_sample(g, w_hwc, sites, x, y, scratch);
    }
    let (in_size, out_size, plen) = (g.cin * g.h * g.w, g.cout * g.npos, g.padded_len());
    let rows = x.len() / in_size;
    let xp = padded_rows(g, x, scratch);
    debug_assert!(y.iter().all(|&v| v == T::ZERO), "forward_sample needs a zeroed output");
    let simd = simd_available();
    let (klen, span) = (g.kh * g.run(), g.patch_span());
    let seg = Segments { count: g.kh, len: g.run(), stride: g.run_stride() };
    let mut out = [T::ZERO; ROW_BLOCK];
    if rows == 1 {
        // One row: the channels of a position share its patch, [`ROW_BLOCK`] at a time.
        for p in 0..g.npos {
            let patch = &xp[g.patch_start(p)..g.patch_start(p) + span];
            for block in sites.at(p).chunks(ROW_BLOCK) {
                let mut ws: [&[T]; ROW_BLOCK] = [&[]; ROW_BLOCK];
                for (w, &ch) in ws.iter_mut().zip(block) {
                    *w = &w_hwc[ch as usize * klen..(ch as usize + 1) * klen];
                }
                dots_shared(simd, &ws[..block.len()], patch, seg, &mut out);
                for (&ch, &v) in block.iter().zip(&out) {
                    y[ch as usize * g.npos + p] = v;
                }
            }
        }
        return;
    }
    let runs = Runs { count: g.kh, len: g.run(), a_step: g.run_stride(), b_step: g.run() };
    let mut tile = [T::ZERO; MAX_TILE * MAX_DOT_COLS];
    for p in 0..g.npos {
        let start = g.patch_start(p);
        // Rows × channels tiles: each loaded patch value meets two weight runs, each weight
        // value up to five patches.
        for pair in sites.at(p).chunks(MAX_DOT_COLS) {
            let mut b_offs = [0usize; MAX_DOT_COLS];
            for (o, &ch) in b_offs.iter_mut().zip(pair) {
                *o = ch as usize * klen;
            }
            for (r0, n) in balanced_tiles(rows, MAX_TILE - 1) {
                let mut a_offs = [0usize; MAX_TILE];
                for (i, o) in a_offs[..n].iter_mut().enumerate() {
                    *o = (r0 + i) * plen + start;
                }
                dot_tile(xp, &a_offs[..n], w_hwc, &b_offs[..pair.len()], runs, &mut tile);
                for i in 0..n {
                    for (j, &ch) in pair.iter().enumerate() {
                        y[(r0 + i) * out_size + ch as usize * g.npos + p] = tile[i * pair.len() + j];
                    }
                }
            }
        }
    }
}

/// The adjoint of [`forward_sample`] for one sample: `dy` is `[R, out]` (zero outside the
/// sites), `dx` is `[R, in]` (overwritten).
pub(crate) fn backward_sample<T: Float>(
    g: &SparseGeom,
    w_hwc: &[T],
    sites: &Sites,
    dy: &[T],
    dx: &mut [T],
    scratch: &mut Vec<T>,
) {
    if g.rows_last {
        return narrow::backward_sample(g, w_hwc, sites, dy, dx, scratch);
    }
    let (in_size, out_size, plen) = (g.cin * g.h * g.w, g.cout * g.npos, g.padded_len());
    let rows = dy.len() / out_size;
    let flat = g.is_flat();
    let acc: &mut [T] = if flat {
        dx.fill(T::ZERO);
        dx
    } else {
        scratch.clear();
        scratch.resize(scratch_len(g, rows), T::ZERO);
        scratch
    };
    let simd = simd_available();
    let (klen, run, rstride) = (g.kh * g.run(), g.run(), g.run_stride());
    if rows > 1 {
        // Tiles of rows: each run of up to [`MAX_TILE`] rows' `dxp` stays in registers
        // while every channel of the position adds its weight run to it.
        let mut coef: Vec<T> = Vec::new();
        let mut w_offs: Vec<usize> = Vec::new();
        for p in 0..g.npos {
            let chans = sites.at(p);
            if chans.is_empty() {
                continue;
            }
            let k = chans.len();
            coef.clear();
            for r in 0..rows {
                coef.extend(chans.iter().map(|&ch| dy[r * out_size + ch as usize * g.npos + p]));
            }
            let start = g.patch_start(p);
            for ki in 0..g.kh {
                let at = start + ki * rstride;
                w_offs.clear();
                w_offs.extend(chans.iter().map(|&ch| ch as usize * klen + ki * run));
                for (r0, n) in balanced_tiles(rows, MAX_TILE) {
                    let mut d_offs = [0usize; MAX_TILE];
                    for (i, o) in d_offs[..n].iter_mut().enumerate() {
                        *o = (r0 + i) * plen + at;
                    }
                    add_products(acc, &d_offs[..n], &coef[r0 * k..(r0 + n) * k], w_hwc, &w_offs, run);
                }
            }
        }
    }
    if rows == 1 && !flat {
        // One row, position by position: the patch's runs stay in registers while every
        // channel of the position adds its weight runs ([`add_runs`]).
        let mut coef: Vec<T> = Vec::new();
        let mut w_at: Vec<usize> = Vec::new();
        for (p, start) in g.patch_starts().enumerate() {
            let chans = sites.at(p);
            if !chans.is_empty() {
                coef.clear();
                w_at.clear();
                coef.extend(chans.iter().map(|&ch| dy[ch as usize * g.npos + p]));
                w_at.extend(chans.iter().map(|&ch| ch as usize * klen));
                add_runs(simd, &mut acc[start..], rstride, &coef, &w_at, w_hwc, run, g.kh, run);
            }
        }
    }
    for p in (0..g.npos).filter(|_| rows == 1 && flat) {
        let start = g.patch_start(p);
        // One row: [`ROW_BLOCK`] channels at a time, their weights reused while they are
        // in cache; each run of a row's `dxp` is loaded and stored once per block.
        for block in sites.at(p).chunks(ROW_BLOCK) {
            for (r, dxp) in acc.chunks_exact_mut(plen).enumerate() {
                let mut coef = [T::ZERO; ROW_BLOCK];
                for (c, &ch) in coef.iter_mut().zip(block) {
                    *c = dy[r * out_size + ch as usize * g.npos + p];
                }
                if coef.iter().all(|&c| c == T::ZERO) {
                    continue;
                }
                for ki in 0..g.kh {
                    let at = start + ki * rstride;
                    let mut ws: [&[T]; ROW_BLOCK] = [&[]; ROW_BLOCK];
                    for (w, &ch) in ws.iter_mut().zip(block) {
                        let o = ch as usize * klen + ki * run;
                        *w = &w_hwc[o..o + run];
                    }
                    accumulate_rows(simd, &mut dxp[at..at + run], &coef[..block.len()], &ws[..block.len()]);
                }
            }
        }
    }
    if !flat {
        for (dxp, dxr) in scratch.chunks_exact(plen).zip(dx.chunks_exact_mut(in_size)) {
            from_padded(g, dxp, dxr);
        }
    }
}

/// Adds this sample's weight gradient for the output channels `channels`, in the
/// `[Cout, kh, kw, Cin]` order, to `dw_part` (those channels' rows only): `xp` is the tangent
/// input `[R, in]` in the padded channels-last layout of [`pad_rows`] (for a dense layer, the
/// rows themselves), `dy` the cotangent `[R, out]` (zero outside the sites).
pub(crate) fn weight_grad_sample<T: Float>(
    g: &SparseGeom,
    sites: &Sites,
    xp: &[T],
    dy: &[T],
    channels: core::ops::Range<usize>,
    dw_part: &mut [T],
) {
    if g.rows_last {
        return narrow::weight_grad_sample(g, sites, xp, dy, channels, dw_part);
    }
    let (out_size, plen) = (g.cout * g.npos, g.padded_len());
    let rows = dy.len() / out_size;
    if rows == 1 {
        return one_row_weight_grad(g, sites, xp, dy, channels, dw_part);
    }
    let (klen, run, rstride) = (g.kh * g.run(), g.run(), g.run_stride());
    // Tiles of channels: each run of up to [`MAX_TILE`] channels' weight gradient stays in
    // registers while every row adds its patch run to it.
    let mut coef: Vec<T> = Vec::new();
    let mut s_offs: Vec<usize> = Vec::new();
    for p in 0..g.npos {
        let sel = sites.at_in(p, &channels);
        if sel.is_empty() {
            continue;
        }
        coef.clear();
        for &ch in sel {
            coef.extend((0..rows).map(|r| dy[r * out_size + ch as usize * g.npos + p]));
        }
        let start = g.patch_start(p);
        for ki in 0..g.kh {
            let at = start + ki * rstride;
            s_offs.clear();
            s_offs.extend((0..rows).map(|r| r * plen + at));
            for (c0, n) in balanced_tiles(sel.len(), MAX_TILE) {
                let mut d_offs = [0usize; MAX_TILE];
                for (o, &ch) in d_offs[..n].iter_mut().zip(&sel[c0..c0 + n]) {
                    *o = (ch as usize - channels.start) * klen + ki * run;
                }
                add_products(dw_part, &d_offs[..n], &coef[c0 * rows..(c0 + n) * rows], xp, &s_offs, run);
            }
        }
    }
}

/// `count` runs of `len` values, `stride` apart: the layout of a patch in a padded image.
#[derive(Clone, Copy, Debug)]
struct Segments {
    count: usize,
    len: usize,
    stride: usize,
}

/// `out[j] = Σ_s ws[j][s·len..(s+1)·len]·patch[s·stride..s·stride + len]` for up to
/// [`ROW_BLOCK`] weight rows `ws` sharing one patch.
#[inline(always)]
fn dots_shared<T: Float>(simd: bool, ws: &[&[T]], patch: &[T], seg: Segments, out: &mut [T]) {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if simd {
        if let (Some(patch), Some(out)) = (avx2::as_f32(patch), avx2::as_f32_mut(out)) {
            let mut w: [&[f32]; ROW_BLOCK] = [&[]; ROW_BLOCK];
            for (d, s) in w.iter_mut().zip(ws) {
                *d = avx2::as_f32(s).expect("same type as patch");
            }
            // SAFETY: `simd` is only set when the processor has AVX2 and FMA.
            return unsafe { avx2::dots_shared(&w[..ws.len()], patch, seg.count, seg.len, seg.stride, out) };
        }
    }
    let _ = simd;
    for (o, w) in out.iter_mut().zip(ws) {
        let mut acc = T::ZERO;
        for s in 0..seg.count {
            let a = &w[s * seg.len..(s + 1) * seg.len];
            let b = &patch[s * seg.stride..s * seg.stride + seg.len];
            acc += a.iter().zip(b).map(|(&x, &y)| x * y).sum::<T>();
        }
        *o = acc;
    }
}

/// `d += Σ_j coef[j]·rows[j]`, one pass over `d`.
#[inline(always)]
fn accumulate_rows<T: Float>(simd: bool, d: &mut [T], coef: &[T], rows: &[&[T]]) {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if simd {
        if let (Some(d), Some(coef)) = (avx2::as_f32_mut(d), avx2::as_f32(coef)) {
            let mut r: [&[f32]; ROW_BLOCK] = [&[]; ROW_BLOCK];
            for (dst, s) in r.iter_mut().zip(rows) {
                *dst = avx2::as_f32(s).expect("same type as d");
            }
            // SAFETY: `simd` is only set when the processor has AVX2 and FMA.
            return unsafe { avx2::accumulate_rows(d, coef, &r[..rows.len()]) };
        }
    }
    let _ = simd;
    for (t, v) in d.iter_mut().enumerate() {
        for (&a, r) in coef.iter().zip(rows) {
            *v += a * r[t];
        }
    }
}

/// [`weight_grad_sample`] with one row: the sites regrouped by channel (cotangent, patch
/// start; a counting sort over the position-major site list, no scan of `dy`), then each
/// channel's gradient row accumulated over its sites ([`add_runs`]).
fn one_row_weight_grad<T: Float>(
    g: &SparseGeom,
    sites: &Sites,
    xp: &[T],
    dy: &[T],
    channels: core::ops::Range<usize>,
    dw_part: &mut [T],
) {
    let (nch, klen) = (channels.len(), g.kh * g.run());
    let mut next = alloc::vec![0usize; nch + 1];
    for p in 0..g.npos {
        for &c in sites.at_in(p, &channels) {
            next[c as usize - channels.start + 1] += 1;
        }
    }
    for i in 1..=nch {
        next[i] += next[i - 1];
    }
    let bounds = next.clone();
    let total = bounds[nch];
    let mut coef = alloc::vec![T::ZERO; total];
    let mut at = alloc::vec![0usize; total];
    for (p, start) in g.patch_starts().enumerate() {
        for &c in sites.at_in(p, &channels) {
            let slot = &mut next[c as usize - channels.start];
            coef[*slot] = dy[c as usize * g.npos + p];
            at[*slot] = start;
            *slot += 1;
        }
    }
    let simd = simd_available();
    for (local, d) in dw_part.chunks_exact_mut(klen).enumerate().take(nch) {
        let (lo, hi) = (bounds[local], bounds[local + 1]);
        if lo < hi {
            add_runs(simd, d, g.run(), &coef[lo..hi], &at[lo..hi], xp, g.run_stride(), g.kh, g.run());
        }
    }
}

/// `d[ki·d_stride + t] += Σ_s coef[s]·x[at[s] + ki·x_stride + t]` for `ki < kh`, `t < run`:
/// `kh` runs of `d` plus a combination of runs of `x`. The one-row weight gradient adds
/// patches to a channel's gradient row (`d_stride = run`, `x` the padded input); the one-row
/// backward pass adds weight rows to a patch of the padded input gradient (`x` the weights).
#[allow(clippy::too_many_arguments)]
fn add_runs<T: Float>(
    simd: bool,
    d: &mut [T],
    d_stride: usize,
    coef: &[T],
    at: &[usize],
    x: &[T],
    x_stride: usize,
    kh: usize,
    run: usize,
) {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if simd {
        if let (Some(d), Some(coef), Some(x)) = (avx2::as_f32_mut(d), avx2::as_f32(coef), avx2::as_f32(x)) {
            // SAFETY: `simd` is only set when the processor has AVX2 and FMA.
            return unsafe { avx2::add_runs(d, d_stride, coef, at, x, x_stride, kh, run) };
        }
    }
    let _ = simd;
    for ki in 0..kh {
        let dk = &mut d[ki * d_stride..ki * d_stride + run];
        for (&c, &a) in coef.iter().zip(at) {
            let xr = &x[a + ki * x_stride..a + ki * x_stride + run];
            dk.iter_mut().zip(xr).for_each(|(v, &xv)| *v += c * xv);
        }
    }
}

/// One-row weight gradient of a dense layer (flat geometry) for a group of samples:
/// `dW[c, :] += Σ_s dy_s[c]·x_s` for the output channels `channels` (`dw_part` holds those
/// channels' rows), [`ROW_BLOCK`] of the samples active at a channel per pass over its row.
/// Samples are added in order, so the result does not depend on how the caller splits the
/// channels.
pub(crate) fn dense_weight_grad_group<T: Float>(
    xs: &[&[T]],
    dys: &[&[T]],
    channels: core::ops::Range<usize>,
    dw_part: &mut [T],
) {
    let Some(klen) = xs.first().map(|x| x.len()) else { return };
    let simd = simd_available();
    for (local, d) in dw_part.chunks_exact_mut(klen).enumerate().take(channels.len()) {
        let ch = channels.start + local;
        let mut coef = [T::ZERO; ROW_BLOCK];
        let mut rows: [&[T]; ROW_BLOCK] = [&[]; ROW_BLOCK];
        let mut filled = 0;
        for (&x, dy) in xs.iter().zip(dys) {
            let c = dy[ch];
            if c == T::ZERO {
                continue;
            }
            coef[filled] = c;
            rows[filled] = x;
            filled += 1;
            if filled == ROW_BLOCK {
                accumulate_rows(simd, d, &coef, &rows);
                filled = 0;
            }
        }
        if filled > 0 {
            accumulate_rows(simd, d, &coef[..filled], &rows[..filled]);
        }
    }
}

/// Whether the `f32` AVX2 + FMA inner loops can run on this processor.
fn simd_available() -> bool {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(all(feature = "std", target_arch = "x86_64")))]
    {
        false
    }
}

/// The `f32` inner loops with AVX2 and FMA.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod avx2 {
    use core::arch::x86_64::*;

    use crate::kernels::tiles::avx2::hsum;
    pub use crate::kernels::tiles::avx2::{as_f32, as_f32_mut};

    use super::ROW_BLOCK;

    /// `out[j] = Σ_s ws[j][s·len..][..len]·patch[s·stride..][..len]` (each `ws[j]` holds
    /// `count` runs back to back; `patch` spans `(count − 1)·stride + len` values; at most
    /// [`ROW_BLOCK`] weight rows).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dots_shared(ws: &[&[f32]], patch: &[f32], count: usize, len: usize, stride: usize, out: &mut [f32]) {
        assert!(
            ws.len() <= ROW_BLOCK
                && out.len() >= ws.len()
                && ws.iter().all(|w| w.len() >= count * len)
                && (count == 0 || patch.len() >= (count - 1) * stride + len)
        );
        match ws.len() {
            1 => dots_shared_n::<1>(ws, patch, count, len, stride, out),
            2 => dots_shared_n::<2>(ws, patch, count, len, stride, out),
            3 => dots_shared_n::<3>(ws, patch, count, len, stride, out),
            4 => dots_shared_n::<4>(ws, patch, count, len, stride, out),
            5 => dots_shared_n::<5>(ws, patch, count, len, stride, out),
            _ => {}
        }
    }

    /// [`dots_shared`] for exactly `N` weight rows (bounds checked by the caller).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dots_shared_n<const N: usize>(
        ws: &[&[f32]],
        patch: &[f32],
        count: usize,
        len: usize,
        stride: usize,
        out: &mut [f32],
    ) {
        let full = len - len % 8;
        let mut acc = [_mm256_setzero_ps(); N];
        let mut tail = [0.0f32; N];
        let mut w = [core::ptr::null::<f32>(); N];
        for s in 0..count {
            let pp = patch.as_ptr().add(s * stride);
            for j in 0..N {
                w[j] = ws[j].as_ptr().add(s * len);
            }
            let mut i = 0;
            while i < full {
                let pv = _mm256_loadu_ps(pp.add(i));
                for j in 0..N {
                    acc[j] = _mm256_fmadd_ps(_mm256_loadu_ps(w[j].add(i)), pv, acc[j]);
                }
                i += 8;
            }
            for j in 0..N {
                for i in full..len {
                    tail[j] += *w[j].add(i) * *pp.add(i);
                }
            }
        }
        for j in 0..N {
            out[j] = hsum(acc[j]) + tail[j];
        }
    }

    /// [`super::add_runs`] for `f32`: each chunk of up to 64 values of a run of `d` stays in
    /// registers while every term adds to it.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn add_runs(
        d: &mut [f32],
        d_stride: usize,
        coef: &[f32],
        at: &[usize],
        x: &[f32],
        x_stride: usize,
        kh: usize,
        run: usize,
    ) {
        assert!(
            coef.len() == at.len()
                && (kh == 0 || run == 0 || (kh - 1) * d_stride + run <= d.len())
                && (kh == 0 || run == 0 || at.iter().all(|&a| a + (kh - 1) * x_stride + run <= x.len()))
        );
        for ki in 0..kh {
            let dk = d.as_mut_ptr().add(ki * d_stride);
            let xk = x.as_ptr().add(ki * x_stride);
            let mut t = 0;
            while t + 64 <= run {
                patch_chunk::<8>(dk.add(t), coef, at, xk.add(t));
                t += 64;
            }
            while t + 32 <= run {
                patch_chunk::<4>(dk.add(t), coef, at, xk.add(t));
                t += 32;
            }
            while t + 8 <= run {
                patch_chunk::<1>(dk.add(t), coef, at, xk.add(t));
                t += 8;
            }
            for u in t..run {
                for (&c, &a) in coef.iter().zip(at) {
                    *dk.add(u) += c * *xk.add(a + u);
                }
            }
        }
    }

    /// `V` vectors of `d` plus `Σ_s coef[s]·x[at[s]..]` (bounds checked by the caller).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn patch_chunk<const V: usize>(d: *mut f32, coef: &[f32], at: &[usize], x: *const f32) {
        let mut acc = [_mm256_setzero_ps(); V];
        for (v, a) in acc.iter_mut().enumerate() {
            *a = _mm256_loadu_ps(d.add(8 * v));
        }
        for (&c, &a) in coef.iter().zip(at) {
            let cv = _mm256_set1_ps(c);
            let xs = x.add(a);
            for (v, acc) in acc.iter_mut().enumerate() {
                *acc = _mm256_fmadd_ps(cv, _mm256_loadu_ps(xs.add(8 * v)), *acc);
            }
        }
        for (v, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(d.add(8 * v), *a);
        }
    }

    /// `d += Σ_j coef[j]·rows[j]` (rows at least as long as `d`, at most [`ROW_BLOCK`]).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn accumulate_rows(d: &mut [f32], coef: &[f32], rows: &[&[f32]]) {
        let n = d.len();
        assert!(rows.len() <= ROW_BLOCK && rows.iter().all(|r| r.len() >= n) && coef.len() >= rows.len());
        match rows.len() {
            1 => accumulate_n::<1>(d, coef, rows),
            2 => accumulate_n::<2>(d, coef, rows),
            3 => accumulate_n::<3>(d, coef, rows),
            4 => accumulate_n::<4>(d, coef, rows),
            5 => accumulate_n::<5>(d, coef, rows),
            _ => {}
        }
    }

    /// [`accumulate_rows`] for exactly `N` rows (bounds checked by the caller).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn accumulate_n<const N: usize>(d: &mut [f32], coef: &[f32], rows: &[&[f32]]) {
        let n = d.len();
        let full = n - n % 8;
        let mut c = [_mm256_setzero_ps(); N];
        let mut p = [core::ptr::null::<f32>(); N];
        for j in 0..N {
            c[j] = _mm256_set1_ps(coef[j]);
            p[j] = rows[j].as_ptr();
        }
        let dp = d.as_mut_ptr();
        let mut i = 0;
        while i < full {
            // Two partial sums halve the dependency chain through the FMAs.
            let mut a = _mm256_loadu_ps(dp.add(i));
            let mut b = _mm256_setzero_ps();
            for j in 0..N {
                if j % 2 == 0 {
                    a = _mm256_fmadd_ps(c[j], _mm256_loadu_ps(p[j].add(i)), a);
                } else {
                    b = _mm256_fmadd_ps(c[j], _mm256_loadu_ps(p[j].add(i)), b);
                }
            }
            _mm256_storeu_ps(dp.add(i), _mm256_add_ps(a, b));
            i += 8;
        }
        for t in full..n {
            for j in 0..N {
                *dp.add(t) += coef[j] * *p[j].add(t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use super::Sites;
    use crate::train::Rng;

    /// The sites of a random demand pattern (lengths that are not whole words of eight flags,
    /// densities from empty to full) equal the definition: for each position in order, the
    /// channels whose flag is set, ascending.
    #[test]
    fn sites_from_demand_match_a_position_major_scan() {
        let mut rng = Rng::new(21);
        for (channels, npos) in [(1, 1), (3, 7), (5, 13), (64, 196), (17, 9)] {
            for density in [0.0, 0.1, 0.5, 1.0] {
                let demand: Vec<u8> = (0..channels * npos).map(|_| u8::from(rng.uniform() < density) * 3).collect();
                let sites = Sites::from_demand(&demand, channels, npos);
                let mut total = 0;
                for p in 0..npos {
                    let expected: Vec<u32> =
                        (0..channels).filter(|&c| demand[c * npos + p] != 0).map(|c| c as u32).collect();
                    assert_eq!(sites.at(p), expected.as_slice(), "position {p} of {channels}×{npos}");
                    total += expected.len();
                }
                assert_eq!(sites.len(), total);
            }
        }
    }
}
