//! Constant tensors known at import time: initializers, `Constant` nodes and folded shape
//! computations.

use tract_onnx::pb::tensor_proto::{DataLocation, DataType};
use tract_onnx::pb::TensorProto;

use crate::error::{Error, Result};

/// Largest number of elements any tensor (constant, or one sample of a network value) may have.
/// Keeps corrupt files from asking for absurd allocations.
pub(crate) const MAX_ELEMS: usize = 1 << 26;

/// A constant tensor. Values are held as `f64`, which represents every `f32` and every integer
/// that can sensibly occur in a shape computation exactly.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Const {
    /// Dimensions (empty for a scalar).
    pub dims: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f64>,
    /// Integer (or boolean) data type: arithmetic truncates.
    pub int: bool,
    /// Where it comes from (initializer or node output), for messages.
    pub origin: String,
}

/// Product of dimensions, refusing overflow and tensors over [`MAX_ELEMS`].
pub(crate) fn checked_size(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).filter(|&n| n <= MAX_ELEMS)
}

impl Const {
    /// A new constant; errors when `data` does not match `dims`.
    pub fn new(dims: Vec<usize>, data: Vec<f64>, int: bool, origin: impl Into<String>) -> Result<Self> {
        let origin = origin.into();
        match checked_size(&dims) {
            Some(n) if n == data.len() => Ok(Const { dims, data, int, origin }),
            _ => Err(Error::BadTensor {
                name: origin,
                reason: format!("dimensions {dims:?} do not match its {} values", data.len()),
            }),
        }
    }

    /// A float scalar.
    pub fn scalar(v: f64, origin: impl Into<String>) -> Self {
        Const { dims: Vec::new(), data: vec![v], int: false, origin: origin.into() }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// The values as integers (shape-like inputs).
    pub fn ints(&self) -> Result<Vec<i64>> {
        self.data
            .iter()
            .map(|&v| {
                if v.fract() == 0.0 && v.abs() < 9.2e18 {
                    Ok(v as i64)
                } else {
                    Err(Error::BadTensor { name: self.origin.clone(), reason: format!("expected integers, found {v}") })
                }
            })
            .collect()
    }

    /// The single value of a one-element tensor.
    pub fn single(&self) -> Option<f64> {
        (self.data.len() == 1).then(|| self.data[0])
    }

    /// The values as `f32` parameters, refusing NaN and infinities (corrupt weights).
    pub fn finite_f32(&self) -> Result<Vec<f32>> {
        to_finite_f32(&self.data, &self.origin)
    }
}

/// Converts to `f32`, refusing NaN and infinities (before or after rounding).
pub(crate) fn to_finite_f32(data: &[f64], origin: &str) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(data.len());
    for (i, &v) in data.iter().enumerate() {
        let f = v as f32;
        if !f.is_finite() {
            return Err(Error::BadTensor {
                name: origin.to_string(),
                reason: format!(
                    "value #{i} is {v} (NaN or infinite after conversion to float32); the weights are corrupt: \
                     re-export the model from a healthy checkpoint"
                ),
            });
        }
        out.push(f);
    }
    Ok(out)
}

/// IEEE half precision to single precision.
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let man = (h & 0x3ff) as u32;
    match exp {
        0 => sign * man as f32 * (1.0 / 16_777_216.0), // subnormal: man · 2⁻²⁴
        0x1f => {
            if man == 0 {
                sign * f32::INFINITY
            } else {
                f32::NAN
            }
        }
        _ => f32::from_bits(((h as u32 & 0x8000) << 16) | (((exp + 127 - 15) as u32) << 23) | (man << 13)),
    }
}

/// bfloat16 to single precision.
pub(crate) fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

fn data_type_name(t: i32) -> String {
    DataType::try_from(t).map(|d| d.as_str_name().to_string()).unwrap_or_else(|_| format!("#{t}"))
}

/// Decodes a `TensorProto` (initializer, `Constant` value).
pub(crate) fn load(t: &TensorProto, origin: &str) -> Result<Const> {
    let bad = |reason: String| Error::BadTensor { name: origin.to_string(), reason };
    if t.data_location == Some(DataLocation::External as i32) || !t.external_data.is_empty() {
        return Err(bad("its data is stored in an external file, which certify does not read; re-save the model \
             as a single file (onnx.save_model(model, path, save_as_external_data=False))"
            .into()));
    }
    if t.segment.is_some() {
        return Err(bad("segmented tensors are not supported; re-save the model with onnx.save_model".into()));
    }
    let mut dims = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        if d < 0 || d as u64 > MAX_ELEMS as u64 {
            return Err(bad(format!("invalid dimensions {:?}", t.dims)));
        }
        dims.push(d as usize);
    }
    let n = checked_size(&dims).ok_or_else(|| bad(format!("dimensions {:?} are too large", t.dims)))?;
    let raw = &t.raw_data;
    // Reads `raw_data` in chunks of `w` little-endian bytes, or the typed field.
    fn from_raw<const W: usize>(raw: &[u8], n: usize, f: impl Fn([u8; W]) -> f64) -> Option<Vec<f64>> {
        if raw.len() != n.checked_mul(W)? {
            return None;
        }
        Some(
            raw.chunks_exact(W)
                .map(|c| {
                    let mut b = [0u8; W];
                    b.copy_from_slice(c);
                    f(b)
                })
                .collect(),
        )
    }
    let dt = DataType::try_from(t.data_type).unwrap_or(DataType::Undefined);
    let use_raw = !raw.is_empty();
    let (data, int): (Option<Vec<f64>>, bool) = match dt {
        DataType::Float => (
            if use_raw {
                from_raw::<4>(raw, n, |b| f32::from_le_bytes(b) as f64)
            } else {
                Some(t.float_data.iter().map(|&v| v as f64).collect())
            },
            false,
        ),
        DataType::Double => {
            (if use_raw { from_raw::<8>(raw, n, f64::from_le_bytes) } else { Some(t.double_data.clone()) }, false)
        }
        DataType::Float16 | DataType::Bfloat16 => {
            let conv = if dt == DataType::Float16 { f16_to_f32 } else { bf16_to_f32 };
            (
                if use_raw {
                    from_raw::<2>(raw, n, |b| conv(u16::from_le_bytes(b)) as f64)
                } else {
                    Some(t.int32_data.iter().map(|&v| conv(v as u16) as f64).collect())
                },
                false,
            )
        }
        DataType::Int64 => (
            if use_raw {
                from_raw::<8>(raw, n, |b| i64::from_le_bytes(b) as f64)
            } else {
                Some(t.int64_data.iter().map(|&v| v as f64).collect())
            },
            true,
        ),
        DataType::Int32 => (
            if use_raw {
                from_raw::<4>(raw, n, |b| i32::from_le_bytes(b) as f64)
            } else {
                Some(t.int32_data.iter().map(|&v| v as f64).collect())
            },
            true,
        ),
        DataType::Int16 | DataType::Uint16 => (
            if use_raw {
                if dt == DataType::Int16 {
                    from_raw::<2>(raw, n, |b| i16::from_le_bytes(b) as f64)
                } else {
                    from_raw::<2>(raw, n, |b| u16::from_le_bytes(b) as f64)
                }
            } else {
                Some(t.int32_data.iter().map(|&v| v as f64).collect())
            },
            true,
        ),
        DataType::Int8 | DataType::Uint8 | DataType::Bool => (
            if use_raw {
                match dt {
                    DataType::Int8 => from_raw::<1>(raw, n, |b| b[0] as i8 as f64),
                    _ => from_raw::<1>(raw, n, |b| b[0] as f64),
                }
            } else {
                Some(t.int32_data.iter().map(|&v| v as f64).collect())
            },
            true,
        ),
        DataType::Uint32 | DataType::Uint64 => (
            if use_raw {
                if dt == DataType::Uint32 {
                    from_raw::<4>(raw, n, |b| u32::from_le_bytes(b) as f64)
                } else {
                    from_raw::<8>(raw, n, |b| u64::from_le_bytes(b) as f64)
                }
            } else {
                Some(t.uint64_data.iter().map(|&v| v as f64).collect())
            },
            true,
        ),
        _ => {
            return Err(bad(format!(
                "data type {} is not supported (certify reads float32/float64/float16/bfloat16 weights and integer \
                 shapes)",
                data_type_name(t.data_type)
            )))
        }
    };
    match data {
        Some(d) if d.len() == n => Ok(Const { dims, data: d, int, origin: origin.to_string() }),
        Some(d) => Err(bad(format!("dimensions {:?} need {n} values but the tensor holds {}", t.dims, d.len()))),
        None => Err(bad(format!(
            "dimensions {:?} need {n} values of type {} but raw_data holds {} bytes",
            t.dims,
            data_type_name(t.data_type),
            raw.len()
        ))),
    }
}

/// Numpy broadcast of two shapes.
pub(crate) fn broadcast_dims(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for (i, o) in out.iter_mut().enumerate() {
        let da = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
        let db = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
        *o = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return None;
        };
    }
    Some(out)
}

/// Broadcasts `data` of shape `dims` to `target` (numpy rules, `dims` aligned to the right); `None`
/// when `dims` does not broadcast to exactly `target` or the result is too large.
pub(crate) fn expand(data: &[f64], dims: &[usize], target: &[usize]) -> Option<Vec<f64>> {
    if dims.len() > target.len() || checked_size(dims)? != data.len() {
        return None;
    }
    let n = checked_size(target)?;
    let off = target.len() - dims.len();
    let mut strides = vec![0usize; target.len()];
    let mut s = 1usize;
    for i in (0..dims.len()).rev() {
        let t = target[off + i];
        if dims[i] == t {
            strides[off + i] = if t == 1 { 0 } else { s };
        } else if dims[i] != 1 {
            return None;
        }
        s *= dims[i];
    }
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; target.len()];
    let mut pos = 0usize;
    for _ in 0..n {
        out.push(data[pos]);
        for ax in (0..target.len()).rev() {
            idx[ax] += 1;
            pos += strides[ax];
            if idx[ax] < target[ax] {
                break;
            }
            pos -= strides[ax] * target[ax];
            idx[ax] = 0;
        }
    }
    Some(out)
}

/// Elementwise binary operation on constants with broadcasting.
pub(crate) fn binary(a: &Const, b: &Const, origin: &str, f: impl Fn(f64, f64) -> f64) -> Option<Const> {
    let dims = broadcast_dims(&a.dims, &b.dims)?;
    let x = expand(&a.data, &a.dims, &dims)?;
    let y = expand(&b.data, &b.dims, &dims)?;
    let int = a.int && b.int;
    let data = x
        .iter()
        .zip(&y)
        .map(|(&p, &q)| {
            let v = f(p, q);
            if int {
                v.trunc()
            } else {
                v
            }
        })
        .collect();
    Some(Const { dims, data, int, origin: origin.to_string() })
}

/// Row-major strides.
fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// Selects, along every axis, the listed indices (slicing); `sel[a]` are valid indices of axis `a`.
pub(crate) fn select(c: &Const, sel: &[Vec<usize>], origin: &str) -> Option<Const> {
    if sel.len() != c.dims.len() {
        return None;
    }
    let dims: Vec<usize> = sel.iter().map(Vec::len).collect();
    let n = checked_size(&dims)?;
    let st = strides(&c.dims);
    let mut data = Vec::with_capacity(n);
    let mut idx = vec![0usize; dims.len()];
    for _ in 0..n {
        let pos: usize = idx.iter().enumerate().map(|(a, &i)| sel[a][i] * st[a]).sum();
        data.push(*c.data.get(pos)?);
        for ax in (0..dims.len()).rev() {
            idx[ax] += 1;
            if idx[ax] < dims[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
    Some(Const { dims, data, int: c.int, origin: origin.to_string() })
}

/// Permutes the axes of a constant: output axis `i` is input axis `perm[i]`.
pub(crate) fn transpose(c: &Const, perm: &[usize], origin: &str) -> Option<Const> {
    if perm.len() != c.dims.len() {
        return None;
    }
    let dims: Vec<usize> = perm.iter().map(|&p| c.dims.get(p).copied()).collect::<Option<_>>()?;
    let st = strides(&c.dims);
    let pst: Vec<usize> = perm.iter().map(|&p| st[p]).collect();
    let n = c.data.len();
    let mut data = Vec::with_capacity(n);
    let mut idx = vec![0usize; dims.len()];
    for _ in 0..n {
        let pos: usize = idx.iter().zip(&pst).map(|(&i, &s)| i * s).sum();
        data.push(*c.data.get(pos)?);
        for ax in (0..dims.len()).rev() {
            idx[ax] += 1;
            if idx[ax] < dims[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
    Some(Const { dims, data, int: c.int, origin: origin.to_string() })
}

/// `Gather` along `axis` with (already normalised) indices of shape `idx_dims`.
pub(crate) fn gather(c: &Const, axis: usize, idx: &[usize], idx_dims: &[usize], origin: &str) -> Option<Const> {
    let d = *c.dims.get(axis)?;
    let outer: usize = c.dims[..axis].iter().product();
    let inner: usize = c.dims[axis + 1..].iter().product();
    let mut dims = c.dims[..axis].to_vec();
    dims.extend_from_slice(idx_dims);
    dims.extend_from_slice(&c.dims[axis + 1..]);
    let n = checked_size(&dims)?;
    let mut data = Vec::with_capacity(n);
    for o in 0..outer {
        for &i in idx {
            if i >= d {
                return None;
            }
            let start = (o * d + i) * inner;
            data.extend_from_slice(c.data.get(start..start + inner)?);
        }
    }
    Some(Const { dims, data, int: c.int, origin: origin.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x8000), 0.0);
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
    }

    #[test]
    fn broadcasting() {
        assert_eq!(broadcast_dims(&[3, 1], &[4]), Some(vec![3, 4]));
        assert_eq!(broadcast_dims(&[3], &[4]), None);
        assert_eq!(expand(&[1.0, 2.0], &[2, 1], &[2, 3]), Some(vec![1.0, 1.0, 1.0, 2.0, 2.0, 2.0]));
        assert_eq!(expand(&[1.0, 2.0, 3.0], &[3], &[2, 3]), Some(vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0]));
        assert_eq!(expand(&[5.0], &[], &[2]), Some(vec![5.0, 5.0]));
        assert_eq!(expand(&[1.0, 2.0], &[2], &[3]), None);
        assert_eq!(expand(&[1.0; 6], &[2, 3], &[3]), None);
    }

    #[test]
    fn layout_ops() {
        let c = Const::new(vec![2, 3], vec![0., 1., 2., 3., 4., 5.], true, "c").unwrap();
        let t = transpose(&c, &[1, 0], "t").unwrap();
        assert_eq!((t.dims.as_slice(), t.data.as_slice()), (&[3, 2][..], &[0., 3., 1., 4., 2., 5.][..]));
        let g = gather(&c, 1, &[2, 0], &[2], "g").unwrap();
        assert_eq!(g.data, vec![2., 0., 5., 3.]);
        let g = gather(&c, 0, &[1], &[], "g").unwrap();
        assert_eq!((g.dims.as_slice(), g.data.as_slice()), (&[3][..], &[3., 4., 5.][..]));
        let s = select(&c, &[vec![1], vec![2, 1]], "s").unwrap();
        assert_eq!(s.data, vec![5., 4.]);
        let b = binary(&c, &Const::new(vec![3], vec![1., 1., 2.], true, "d").unwrap(), "b", |x, y| x / y).unwrap();
        assert_eq!(b.data, vec![0., 1., 1., 3., 4., 2.]);
    }

    #[test]
    fn load_checks_lengths_and_external_data() {
        let t = TensorProto {
            dims: vec![2],
            data_type: DataType::Float as i32,
            raw_data: 1.5f32.to_le_bytes().to_vec(),
            ..Default::default()
        };
        assert!(matches!(load(&t, "w"), Err(Error::BadTensor { .. })));
        let t = TensorProto {
            dims: vec![2],
            data_type: DataType::Float16 as i32,
            int32_data: vec![0x3c00, 0xc000],
            ..Default::default()
        };
        assert_eq!(load(&t, "h").unwrap().data, vec![1.0, -2.0]);
        let t = TensorProto { dims: vec![1], data_type: 1, data_location: Some(1), ..Default::default() };
        let e = load(&t, "ext").unwrap_err().to_string();
        assert!(e.contains("external file"), "{e}");
        let t = TensorProto { dims: vec![1], data_type: DataType::String as i32, ..Default::default() };
        assert!(load(&t, "s").unwrap_err().to_string().contains("STRING"));
    }
}
