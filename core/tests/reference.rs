//! The forward pass of convolution and pooling against direct loops written from the ONNX
//! definitions (the finite-difference properties check derivatives, not the forward values).

use certify_core::{Conv2d, Layer, Network, Pool2d};
use proptest::prelude::*;

use crate::strategies::{config, conv_spec, pool_spec, Rng};

/// Output length of a pooling axis (ONNX, with PyTorch's rule that in ceil mode the last window
/// must start inside the input or the left padding).
fn pool_len(size: usize, k: usize, s: usize, p0: usize, p1: usize, ceil: bool) -> usize {
    let span = size + p0 + p1 - k;
    let mut n = if ceil { span.div_ceil(s) + 1 } else { span / s + 1 };
    if ceil && (n - 1) * s >= size + p0 {
        n -= 1;
    }
    n
}

fn conv_reference(c: &Conv2d<f64>, x: &[f64], h: usize, w: usize) -> Vec<f64> {
    let [kh, kw] = c.kernel;
    let span = |k: usize, d: usize| d * (k - 1) + 1;
    let ho = (h + c.padding[0] + c.padding[2] - span(kh, c.dilation[0])) / c.stride[0] + 1;
    let wo = (w + c.padding[1] + c.padding[3] - span(kw, c.dilation[1])) / c.stride[1] + 1;
    let cin_g = c.in_channels / c.groups;
    let cout_g = c.out_channels / c.groups;
    let mut y = vec![0.0; c.out_channels * ho * wo];
    for o in 0..c.out_channels {
        let g = o / cout_g;
        for oy in 0..ho {
            for ox in 0..wo {
                let mut acc = c.bias.as_ref().map_or(0.0, |b| b[o]);
                for cl in 0..cin_g {
                    let ci = g * cin_g + cl;
                    for ki in 0..kh {
                        for kj in 0..kw {
                            let iy = (oy * c.stride[0] + ki * c.dilation[0]) as isize - c.padding[0] as isize;
                            let ix = (ox * c.stride[1] + kj * c.dilation[1]) as isize - c.padding[1] as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                continue;
                            }
                            let wv = c.weight[((o * cin_g + cl) * kh + ki) * kw + kj];
                            acc += wv * x[(ci * h + iy as usize) * w + ix as usize];
                        }
                    }
                }
                y[(o * ho + oy) * wo + ox] = acc;
            }
        }
    }
    y
}

fn pool_reference(p: &Pool2d, max: bool, x: &[f64], c: usize, h: usize, w: usize) -> Vec<f64> {
    let ho = pool_len(h, p.kernel[0], p.stride[0], p.padding[0], p.padding[2], p.ceil_mode);
    let wo = pool_len(w, p.kernel[1], p.stride[1], p.padding[1], p.padding[3], p.ceil_mode);
    let mut y = Vec::with_capacity(c * ho * wo);
    for ch in 0..c {
        for oy in 0..ho {
            for ox in 0..wo {
                let y0 = (oy * p.stride[0]) as isize - p.padding[0] as isize;
                let x0 = (ox * p.stride[1]) as isize - p.padding[1] as isize;
                let (y1, x1) = (y0 + p.kernel[0] as isize, x0 + p.kernel[1] as isize);
                let mut cells = Vec::new();
                for iy in y0.max(0)..y1.min(h as isize) {
                    for ix in x0.max(0)..x1.min(w as isize) {
                        cells.push(x[(ch * h + iy as usize) * w + ix as usize]);
                    }
                }
                assert!(!cells.is_empty(), "a window without input cells");
                y.push(if max {
                    cells.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                } else {
                    let divisor = if p.count_include_pad {
                        // Padded cells count, cells past the end padding (ceil mode) do not.
                        let yl = y1.min((h + p.padding[2]) as isize) - y0;
                        let xl = x1.min((w + p.padding[3]) as isize) - x0;
                        (yl * xl) as f64
                    } else {
                        cells.len() as f64
                    };
                    cells.iter().sum::<f64>() / divisor
                });
            }
        }
    }
    y
}

fn close(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-12 * (1.0 + y.abs()))
}

proptest! {
    #![proptest_config(config())]

    /// Conv2d (strides, paddings, dilations, groups) matches direct loops.
    #[test]
    fn conv2d_forward_matches_loops(
        spec in conv_spec(),
        c_per_group in 1..=2usize,
        (h, w) in (3..=7usize, 3..=7usize),
        seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let c_in = spec.groups * c_per_group;
        let c_out = spec.groups * spec.out_per_group;
        let [kh, kw] = spec.kernel;
        let fits = |size: usize, k: usize, d: usize, pads: usize| d * (k - 1) < size + pads;
        prop_assume!(fits(h, kh, spec.dilation[0], spec.padding[0] + spec.padding[2]));
        prop_assume!(fits(w, kw, spec.dilation[1], spec.padding[1] + spec.padding[3]));
        let conv = Conv2d {
            weight: rng.vec(c_out * c_per_group * kh * kw, -1.0, 1.0),
            bias: spec.bias.then(|| rng.vec(c_out, -1.0, 1.0)),
            out_channels: c_out,
            in_channels: c_in,
            kernel: spec.kernel,
            stride: spec.stride,
            padding: spec.padding,
            dilation: spec.dilation,
            groups: spec.groups,
        };
        let mut net = Network::<f64>::new(&[c_in, h, w]).unwrap();
        net.then("conv", Layer::Conv2d(conv.clone())).unwrap();
        let batch = 2;
        let x = rng.vec(batch * c_in * h * w, -1.0, 1.0);
        let y = net.forward(&x, batch).unwrap();
        let per = y.len() / batch;
        for b in 0..batch {
            let want = conv_reference(&conv, &x[b * c_in * h * w..(b + 1) * c_in * h * w], h, w);
            prop_assert!(close(&y[b * per..(b + 1) * per], &want), "sample {b}: {:?} vs {:?}", &y[b * per..(b + 1) * per], want);
        }
    }

    /// MaxPool2d and AvgPool2d (paddings, ceil mode, count_include_pad) match direct loops.
    #[test]
    fn pool_forward_matches_loops(
        spec in pool_spec(),
        max in any::<bool>(),
        c in 1..=2usize,
        (h, w) in (3..=7usize, 3..=7usize),
        seed in any::<u64>(),
    ) {
        let p = Pool2d {
            kernel: spec.kernel,
            stride: spec.stride,
            padding: [
                spec.padding[0].min(spec.kernel[0] - 1),
                spec.padding[1].min(spec.kernel[1] - 1),
                spec.padding[2].min(spec.kernel[0] - 1),
                spec.padding[3].min(spec.kernel[1] - 1),
            ],
            ceil_mode: spec.ceil_mode,
            count_include_pad: spec.count_include_pad,
        };
        let mut net = Network::<f64>::new(&[c, h, w]).unwrap();
        let layer = if max { Layer::MaxPool2d(p.clone()) } else { Layer::AvgPool2d(p.clone()) };
        net.then("pool", layer).unwrap();
        let x = Rng::new(seed).vec(c * h * w, -1.0, 1.0);
        let y = net.forward(&x, 1).unwrap();
        let want = pool_reference(&p, max, &x, c, h, w);
        prop_assert!(close(&y, &want), "{p:?} max={max} on [{c}, {h}, {w}]: {y:?} vs {want:?}");
    }
}
