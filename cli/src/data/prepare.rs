//! Model-ready inputs from a [`Dataset`]: scaling, normalisation, layout and the attack domain,
//! applied per sample as batches are taken, so that the whole data set never exists in `f32`.

use certify_bounds::InputDomain;

use super::Dataset;
use crate::error::Error;

/// A data set with the transformation a model needs. Samples come out in the model's layout:
/// [`fill`](Prepared::fill) one, [`batch`](Prepared::batch) a range, [`gather`](Prepared::gather)
/// any indices.
#[derive(Clone, Debug)]
pub struct Prepared {
    data: Dataset,
    /// Integer pixels are divided by it (1 for float data without `--scale`).
    divisor: f32,
    /// Per data element (data layout): the mean subtracted and the deviation divided by.
    mean: Vec<f32>,
    std: Vec<f32>,
    /// Per data element: its index in the model's layout (`None`: the same index).
    dest: Option<Vec<usize>>,
    /// Where attacks may move each element (model layout), and the size of one pixel unit.
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

fn bad(reason: String) -> Error {
    Error::Preprocess { reason }
}

/// Wraps `data` for a model with per-sample input shape `model_shape`.
///
/// Integer pixels are divided by `scale` (default 255); float data only when `scale` is given.
/// Then `(x − mean[c]) / std[c]`, where `mean` and `std` hold no value (no shift / no
/// division), one value (every element) or one per channel (the first or the last axis of the
/// sample shape, whichever has that length). The attack domain is the pixel range (`[min(0,
/// lowest), max(255, highest)]` for integer data, the observed range for float data) mapped the
/// same way. Samples whose squeezed shape is the model's are used as they are; `[H, W, C]`
/// samples for a `[C, H, W]` model are transposed; other shapes with the model's number of
/// values are reshaped row-major (with a warning in the log).
///
/// Errors: a non-positive or non-finite `scale` or `std`, a non-finite `mean`, per-channel
/// values that fit no axis, a normalisation that makes some value non-finite, and samples that
/// do not fit the model.
pub fn prepare(
    data: Dataset,
    model_shape: &[usize],
    scale: Option<f32>,
    mean: &[f32],
    std: &[f32],
) -> Result<Prepared, Error> {
    let shape = data.sample_shape.clone();
    let d = data.sample_len();
    let model_d: usize = model_shape.iter().product();
    if let Some(s) = scale {
        if !(s.is_finite() && s > 0.0) {
            return Err(bad(format!("--scale must be a positive number, got {s}")));
        }
    }
    if std.iter().any(|&s| !(s.is_finite() && s > 0.0)) || mean.iter().any(|m| !m.is_finite()) {
        return Err(bad("--std values must be positive and --mean values finite".into()));
    }
    if mean.len() > 1 && std.len() > 1 && mean.len() != std.len() {
        return Err(bad(format!("--mean has {} values but --std has {}", mean.len(), std.len())));
    }
    let channels = mean.len().max(std.len());
    let channel_of: Box<dyn Fn(usize) -> usize> = if channels <= 1 {
        Box::new(|_| 0)
    } else {
        let Some(axis) = channel_axis(&shape, channels) else {
            return Err(bad(format!(
                "{channels} per-channel --mean/--std values do not match the first or last axis of the data shape \
                 {shape:?}"
            )));
        };
        let inner: usize = shape[axis + 1..].iter().product();
        Box::new(move |i| (i / inner) % channels)
    };
    let pick = |v: &[f32], c: usize, default: f32| match v.len() {
        0 => default,
        1 => v[0],
        _ => v[c],
    };
    let per_element = |v: &[f32], default: f32| (0..d).map(|i| pick(v, channel_of(i), default)).collect::<Vec<_>>();
    let (mean, std) = (per_element(mean, 0.0), per_element(std, 1.0));
    let divisor = match scale {
        Some(s) => s,
        None if data.integer_pixels => 255.0,
        None => 1.0,
    };

    // The pixel range, in one pass over the stored values.
    let (mut lowest, mut highest) = (f32::INFINITY, f32::NEG_INFINITY);
    data.visit_samples(0, data.len, |v| {
        lowest = lowest.min(v);
        highest = highest.max(v);
    });
    let (raw_lo, raw_hi) = if data.integer_pixels { (lowest.min(0.0), highest.max(255.0)) } else { (lowest, highest) };
    let map = |v: f32, i: usize| (v / divisor - mean[i]) / std[i];
    let lo: Vec<f32> = (0..d).map(|i| map(raw_lo, i)).collect();
    let hi: Vec<f32> = (0..d).map(|i| map(raw_hi, i)).collect();
    let unit: Vec<f32> = std.iter().map(|s| 1.0 / s).collect();
    // The map increases with the value, so every sample lies between `lo` and `hi`.
    if let Some(i) = (0..d).find(|&i| !(lo[i].is_finite() && hi[i].is_finite())) {
        return Err(bad(format!(
            "normalising makes element {i} of the samples non-finite (pixels {raw_lo:?}..{raw_hi:?} / {divisor:?}, \
             mean {:?}, std {:?}); check --scale/--mean/--std",
            mean[i], std[i]
        )));
    }

    let dest = if squeeze(&shape) == squeeze(model_shape) {
        None
    } else if shape.len() == 3 && squeeze(model_shape) == [shape[2], shape[0], shape[1]] {
        log::info!("data samples are {shape:?} (HWC); transposing to the model's CHW {model_shape:?}");
        let (h, w, c) = (shape[0], shape[1], shape[2]);
        Some((0..d).map(|i| (i % c * h + i / c / w) * w + i / c % w).collect::<Vec<usize>>())
    } else if d == model_d {
        log::warn!(
            "data samples have shape {shape:?}; reshaping them (row-major) to the model's input shape {model_shape:?}"
        );
        None
    } else {
        return Err(Error::SampleShape {
            path: data.images_path.clone(),
            shape,
            values: d,
            model_shape: model_shape.to_vec(),
            model_values: model_d,
        });
    };
    let to_model = |v: Vec<f32>| match &dest {
        None => v,
        Some(dest) => {
            let mut out = vec![0f32; v.len()];
            dest.iter().zip(&v).for_each(|(&j, &x)| out[j] = x);
            out
        }
    };
    let domain = InputDomain { lo: to_model(lo), hi: to_model(hi), unit: to_model(unit) };
    Ok(Prepared { data, divisor, mean, std, dest, domain })
}

impl Prepared {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.data.len
    }

    /// Whether there are no samples (never, for a data set from [`load`](super::load)).
    pub fn is_empty(&self) -> bool {
        self.data.len == 0
    }

    /// Values per model input.
    pub fn sample_len(&self) -> usize {
        self.data.sample_len()
    }

    /// One class index per sample.
    pub fn labels(&self) -> &[usize] {
        &self.data.labels
    }

    /// The data set underneath.
    pub fn dataset(&self) -> &Dataset {
        &self.data
    }

    /// Writes sample `i`, model-ready, into `out` ([`sample_len`](Prepared::sample_len) values).
    ///
    /// # Panics
    /// When `i >= len()` or `out` has another length.
    pub fn fill(&self, i: usize, out: &mut [f32]) {
        let d = self.sample_len();
        assert!(i < self.len() && out.len() == d, "sample {i} of {} into {} values", self.len(), out.len());
        let mut e = 0;
        self.data.visit_samples(i, 1, |v| {
            let x = (v / self.divisor - self.mean[e]) / self.std[e];
            out[self.dest.as_ref().map_or(e, |dest| dest[e])] = x;
            e += 1;
        });
    }

    /// Samples `start..start + count`, model-ready, `[count, sample_len()]`.
    ///
    /// # Panics
    /// When the range is not inside the data set.
    pub fn batch(&self, start: usize, count: usize) -> Vec<f32> {
        let d = self.sample_len();
        let mut out = vec![0f32; count * d];
        for (j, row) in out.chunks_exact_mut(d.max(1)).enumerate().take(count) {
            self.fill(start + j, row);
        }
        out
    }

    /// The samples at `indices`, model-ready, into `out` (`indices.len() × sample_len()`).
    ///
    /// # Panics
    /// When an index is out of range or `out` has another length.
    pub fn gather(&self, indices: &[usize], out: &mut [f32]) {
        let d = self.sample_len();
        assert_eq!(out.len(), indices.len() * d, "gather buffer");
        for (&i, row) in indices.iter().zip(out.chunks_exact_mut(d.max(1))) {
            self.fill(i, row);
        }
    }
}
