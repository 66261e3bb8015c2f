//! Turning a loaded data set into model inputs: scaling, normalisation, layout, attack domain.

use anyhow::{bail, Result};
use certify_bounds::InputDomain;
use certify_cli::data::Dataset;

/// Model-ready inputs.
pub struct Prepared {
    /// `[n, D]` in the model's per-sample layout.
    pub x: Vec<f32>,
    /// Where attacks may move each element, and the size of one pixel unit.
    pub domain: InputDomain,
}

fn squeeze(s: &[usize]) -> Vec<usize> {
    s.iter().copied().filter(|&d| d != 1).collect()
}

/// Which axis of `shape` holds the `c` channels a per-channel mean/std refers to.
fn channel_axis(shape: &[usize], c: usize) -> Option<usize> {
    if shape.first() == Some(&c) {
        Some(0)
    } else if shape.last() == Some(&c) {
        Some(shape.len() - 1)
    } else {
        None
    }
}

/// Scales, normalises and lays out `ds` for a model with per-sample input shape `model_shape`.
///
/// Integer pixels are divided by `scale` (default 255); float data only when `scale` is given.
/// Then `(x − mean[c]) / std[c]`. The attack domain is the pixel range (`[0, max/scale]` for
/// integer data, the observed range for float data) mapped the same way.
pub fn prepare(ds: &Dataset, model_shape: &[usize], scale: Option<f32>, mean: &[f32], std: &[f32]) -> Result<Prepared> {
    let shape = &ds.sample_shape;
    let d: usize = shape.iter().product();
    let model_d: usize = model_shape.iter().product();
    if let Some(s) = scale {
        if !(s.is_finite() && s > 0.0) {
            bail!("--scale must be a positive number, got {s}");
        }
    }
    if std.iter().any(|&s| !(s.is_finite() && s > 0.0)) || mean.iter().any(|m| !m.is_finite()) {
        bail!("--std values must be positive and --mean values finite");
    }
    let channels = mean.len().max(std.len());
    if mean.len() > 1 && std.len() > 1 && mean.len() != std.len() {
        bail!("--mean has {} values but --std has {}", mean.len(), std.len());
    }
    let ch_of: Box<dyn Fn(usize) -> usize> = if channels <= 1 {
        Box::new(|_| 0)
    } else {
        let Some(axis) = channel_axis(shape, channels) else {
            bail!(
                "{} per-channel --mean/--std values do not match the first or last axis of the data shape {shape:?}",
                channels
            );
        };
        let inner: usize = shape[axis + 1..].iter().product();
        let c = shape[axis];
        Box::new(move |i| (i / inner) % c)
    };
    let pick = |v: &[f32], c: usize, default: f32| match v.len() {
        0 => default,
        1 => v[0],
        _ => v[c],
    };
    let divisor = match scale {
        Some(s) => s,
        None if ds.integer_pixels => 255.0,
        None => 1.0,
    };
    let (raw_lo, raw_hi) = if ds.integer_pixels {
        let max = ds.images.iter().fold(0f32, |m, &v| m.max(v));
        (0.0f32, if max <= 255.0 { 255.0 } else { max })
    } else {
        ds.images.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)))
    };
    let mut x = vec![0f32; ds.len * d];
    let mut lo = vec![0f32; d];
    let mut hi = vec![0f32; d];
    let mut unit = vec![0f32; d];
    for i in 0..d {
        let c = ch_of(i);
        let (m, s) = (pick(mean, c, 0.0), pick(std, c, 1.0));
        lo[i] = (raw_lo / divisor - m) / s;
        hi[i] = (raw_hi / divisor - m) / s;
        unit[i] = 1.0 / s;
    }
    for n in 0..ds.len {
        let src = ds.sample(n);
        for i in 0..d {
            let c = ch_of(i);
            x[n * d + i] = (src[i] / divisor - pick(mean, c, 0.0)) / pick(std, c, 1.0);
        }
    }
    // Layout.
    if squeeze(shape) == squeeze(model_shape) {
        return Ok(Prepared { x, domain: InputDomain { lo, hi, unit } });
    }
    let sm = squeeze(model_shape);
    if shape.len() == 3 && sm == [shape[2], shape[0], shape[1]] {
        log::info!("data samples are {shape:?} (HWC); transposing to the model's CHW {model_shape:?}");
        let (h, w, c) = (shape[0], shape[1], shape[2]);
        let perm = |v: &[f32]| {
            let mut out = vec![0f32; d];
            for y in 0..h {
                for xx in 0..w {
                    for ch in 0..c {
                        out[(ch * h + y) * w + xx] = v[(y * w + xx) * c + ch];
                    }
                }
            }
            out
        };
        let mut xt = Vec::with_capacity(x.len());
        for n in 0..ds.len {
            xt.extend(perm(&x[n * d..(n + 1) * d]));
        }
        return Ok(Prepared { x: xt, domain: InputDomain { lo: perm(&lo), hi: perm(&hi), unit: perm(&unit) } });
    }
    if d == model_d {
        log::warn!(
            "data samples have shape {shape:?}; reshaping them (row-major) to the model's input shape {model_shape:?}"
        );
        return Ok(Prepared { x, domain: InputDomain { lo, hi, unit } });
    }
    bail!(
        "`{}`: samples have shape {shape:?} ({d} values) but the model expects per-sample input {model_shape:?} ({model_d} values)",
        ds.images_path.display()
    )
}
