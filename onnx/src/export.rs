//! Writes a network back into the ONNX model it was imported from.
//!
//! The graph, node names, opset, inputs, outputs and metadata are the imported file's; only the
//! tensors that hold trainable parameters (Conv weight/bias, Gemm/MatMul weight and bias,
//! BatchNormalization statistics) receive the network's current values, each inverted through
//! the transform the importer applied ([`Transform`]) and stored in its original data type and
//! layout.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use certify_core::{Layer, Network, NodeId};
use prost::Message;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{ModelProto, TensorProto};

use crate::error::{Error, Result};
use crate::tensor;
use crate::Imported;

/// A trainable parameter of a network node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamKind {
    /// `Conv2d::weight`.
    ConvWeight,
    /// `Conv2d::bias`.
    ConvBias,
    /// `Dense::weight`.
    DenseWeight,
    /// `Dense::bias`.
    DenseBias,
    /// `BatchNorm::gamma`.
    BnGamma,
    /// `BatchNorm::beta`.
    BnBeta,
    /// `BatchNorm::mean`.
    BnMean,
    /// `BatchNorm::var`.
    BnVar,
}

impl ParamKind {
    /// A short name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            ParamKind::ConvWeight => "weight",
            ParamKind::ConvBias => "bias",
            ParamKind::DenseWeight => "weight",
            ParamKind::DenseBias => "bias",
            ParamKind::BnGamma => "scale (gamma)",
            ParamKind::BnBeta => "shift (beta)",
            ParamKind::BnMean => "running mean",
            ParamKind::BnVar => "running variance",
        }
    }

    /// The parameter's values in `layer`, when it has this parameter.
    fn values(self, layer: &Layer<f32>) -> Option<&[f32]> {
        match (self, layer) {
            (ParamKind::ConvWeight, Layer::Conv2d(c)) => Some(&c.weight),
            (ParamKind::ConvBias, Layer::Conv2d(c)) => c.bias.as_deref(),
            (ParamKind::DenseWeight, Layer::Dense(d)) => Some(&d.weight),
            (ParamKind::DenseBias, Layer::Dense(d)) => d.bias.as_deref(),
            (ParamKind::BnGamma, Layer::BatchNorm(b)) => Some(&b.gamma),
            (ParamKind::BnBeta, Layer::BatchNorm(b)) => Some(&b.beta),
            (ParamKind::BnMean, Layer::BatchNorm(b)) => Some(&b.mean),
            (ParamKind::BnVar, Layer::BatchNorm(b)) => Some(&b.var),
            _ => None,
        }
    }

    /// The trainable parameters of a layer.
    fn of(layer: &Layer<f32>) -> &'static [ParamKind] {
        match layer {
            Layer::Conv2d(_) => &[ParamKind::ConvWeight, ParamKind::ConvBias],
            Layer::Dense(_) => &[ParamKind::DenseWeight, ParamKind::DenseBias],
            Layer::BatchNorm(_) => &[ParamKind::BnGamma, ParamKind::BnBeta, ParamKind::BnMean, ParamKind::BnVar],
            _ => &[],
        }
    }
}

/// Where a tensor that a parameter was built from lives in the ONNX graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TensorLocation {
    /// A graph initializer of that name.
    Initializer,
    /// The `value` tensor of the `Constant` node of that name.
    Constant {
        /// The node's name.
        node: String,
    },
    /// A value computed from constants at import time (folded `Transpose`, `Reshape`, `Cast`, …):
    /// it cannot be written back, so the parameter can only be exported unchanged.
    Derived,
}

/// How a parameter was computed from its tensor `t` (row-major values) on import; export inverts it.
#[derive(Clone, Debug, PartialEq)]
pub enum Transform {
    /// `param[q] = t[q]` (Conv weight/bias, BatchNormalization, a constant left MatMul operand).
    Direct,
    /// Gemm weight: `param[o·K + i] = alpha · (transB ? t[o·K + i] : t[i·M + o])`.
    GemmWeight {
        /// The `transB` attribute.
        trans_b: bool,
        /// The `alpha` attribute.
        alpha: f32,
        /// `K`, the layer inputs.
        inputs: usize,
        /// `M`, the layer outputs.
        outputs: usize,
    },
    /// MatMul weight `[K, M]` stored as `[M, K]`: `param[o·K + i] = t[i·M + o]`.
    MatMulWeight {
        /// `K`, the layer inputs.
        inputs: usize,
        /// `M`, the layer outputs.
        outputs: usize,
    },
    /// Gemm bias: `param[j] = beta · t[index[j]]` (`index` broadcasts C to `[1, M]`).
    GemmBias {
        /// The `beta` attribute.
        beta: f32,
        /// Tensor element of each output.
        index: Vec<usize>,
    },
    /// A constant `Add`/`Sub` merged into a Dense bias: for every position `p` of the layer's
    /// per-sample output, `param[p mod M] = base[p mod M] + sign · t[index[p]]`.
    MergedShift {
        /// `1` for `Add`, `-1` for `Sub`.
        sign: f64,
        /// The bias before the merge (zeros, or the Gemm bias), left unchanged on export.
        base: Vec<f32>,
        /// Tensor element of each per-sample output position.
        index: Vec<usize>,
        /// `M`, the layer outputs.
        outputs: usize,
    },
}

/// Where one trainable parameter of the imported network came from.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSource {
    /// The network node (index into [`Network::nodes`]).
    pub node: NodeId,
    /// Its name.
    pub node_name: String,
    /// Which parameter.
    pub param: ParamKind,
    /// The initializer (or `Constant` output, or folded value) name.
    pub tensor: String,
    /// The tensor's dimensions.
    pub dims: Vec<usize>,
    /// Where the tensor lives.
    pub location: TensorLocation,
    /// How the parameter was computed from it.
    pub transform: Transform,
}

/// For each position of `target`, the element of a tensor of shape `dims` broadcast to it.
pub(crate) fn expand_index(dims: &[usize], target: &[usize]) -> Option<Vec<usize>> {
    let n = tensor::checked_size(dims)?;
    let ids: Vec<f64> = (0..n).map(|i| i as f64).collect();
    Some(tensor::expand(&ids, dims, target)?.into_iter().map(|v| v as usize).collect())
}

/// The message of a changed non-trainable value.
fn only_trainable(node: &str) -> Error {
    Error::Export(format!(
        "`{node}`: only Conv/Gemm/MatMul/BatchNormalization parameters can be exported changed (its constants \
         differ from the imported model's)"
    ))
}

/// Checks that `network` has the imported structure and that only trainable parameters changed.
fn check_structure(orig: &Network<f32>, network: &Network<f32>) -> Result<()> {
    let (a, b) = (orig.nodes(), network.nodes());
    if a.len() != b.len() {
        return Err(Error::Export(format!(
            "the network has {} nodes but the imported model has {}: only a network with the imported structure can \
             be exported",
            b.len(),
            a.len()
        )));
    }
    for (o, n) in a.iter().zip(b) {
        let differ = |what: String| {
            Error::Export(format!(
                "node `{}` ({}): {what}; only a network with the imported structure can be exported",
                n.name,
                n.layer.kind()
            ))
        };
        if o.layer.kind() != n.layer.kind() {
            return Err(differ(format!("it is a {} in the imported model (node `{}`)", o.layer.kind(), o.name)));
        }
        if o.inputs != n.inputs || o.shape != n.shape {
            return Err(differ(format!(
                "its inputs {:?} / shape {:?} differ from the imported {:?} / {:?}",
                n.inputs, n.shape, o.inputs, o.shape
            )));
        }
        let same_shape = match (&o.layer, &n.layer) {
            (Layer::Conv2d(x), Layer::Conv2d(y)) => {
                x.out_channels == y.out_channels
                    && x.in_channels == y.in_channels
                    && x.kernel == y.kernel
                    && x.stride == y.stride
                    && x.padding == y.padding
                    && x.dilation == y.dilation
                    && x.groups == y.groups
            }
            (Layer::Dense(x), Layer::Dense(y)) => x.inputs == y.inputs && x.outputs == y.outputs,
            (Layer::BatchNorm(x), Layer::BatchNorm(y)) => {
                if x.epsilon != y.epsilon {
                    return Err(only_trainable(&n.name));
                }
                true
            }
            (x, y) => {
                if x != y {
                    return Err(only_trainable(&n.name));
                }
                true
            }
        };
        if !same_shape {
            return Err(differ(
                "its hyper-parameters (sizes, strides, padding, …) differ from the imported ones".into(),
            ));
        }
        for &p in ParamKind::of(&o.layer) {
            match (p.values(&o.layer), p.values(&n.layer)) {
                (Some(x), Some(y)) if x.len() == y.len() => {
                    if let Some(v) = y.iter().find(|v| !v.is_finite()) {
                        return Err(Error::Export(format!("node `{}`: its {} holds {v}", n.name, p.name())));
                    }
                }
                (None, None) => {}
                (x, y) => {
                    return Err(differ(format!(
                        "its {} has {} values, the imported one {}",
                        p.name(),
                        y.map_or(0, <[f32]>::len),
                        x.map_or(0, <[f32]>::len)
                    )))
                }
            }
        }
    }
    Ok(())
}

/// Storage type of a tensor.
#[derive(Clone, Copy, PartialEq)]
enum Storage {
    F32,
    F64,
    Half,
}

/// The representable value nearest `v` that `fwd` maps exactly to `target`, if a close one does
/// (inverting `alpha·v` or `base + v` in float32 exactly); else `v`.
fn solve(target: f32, v: f64, storage: Storage, fwd: impl Fn(f64) -> f32) -> f64 {
    match storage {
        Storage::F32 => {
            let c = v as f32;
            let mut bits = [c; 6];
            bits[1] = step(c, true);
            bits[2] = step(c, false);
            bits[3] = step(bits[1], true);
            bits[4] = step(bits[2], false);
            // A zero of the other sign; and bitwise comparison, so that a zero's sign survives.
            bits[5] = -c;
            bits.iter().map(|&x| x as f64).find(|&x| fwd(x).to_bits() == target.to_bits()).unwrap_or(c as f64)
        }
        Storage::F64 | Storage::Half => v,
    }
}

/// The next float32 up or down.
fn step(x: f32, up: bool) -> f32 {
    if !x.is_finite() {
        return x;
    }
    if x == 0.0 {
        let tiny = f32::from_bits(1);
        return if up { tiny } else { -tiny };
    }
    let b = x.to_bits();
    let away = (x > 0.0) == up;
    f32::from_bits(if away { b + 1 } else { b - 1 })
}

/// Float32 to IEEE half precision, rounding to nearest even.
pub(crate) fn f32_to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    let (m, shift) = if e <= 0 {
        if e < -10 {
            return sign;
        }
        (man | 0x80_0000, (14 - e) as u32)
    } else {
        (man, 13u32)
    };
    let half = 1u32 << (shift - 1);
    let rest = m & ((1u32 << shift) - 1);
    let mut out = m >> shift;
    if rest > half || (rest == half && out & 1 == 1) {
        out += 1;
    }
    // For normals the carry out of the mantissa correctly bumps the exponent.
    let base = if e <= 0 { 0u32 } else { (e as u32) << 10 };
    sign | (base + out) as u16
}

/// Float32 to bfloat16, rounding to nearest even.
fn f32_to_bf16(x: f32) -> u16 {
    if x.is_nan() {
        return 0x7fc0;
    }
    let b = x.to_bits();
    let round = 0x7fff + ((b >> 16) & 1);
    (b.wrapping_add(round) >> 16) as u16
}

/// The new values of one tensor, element by element (`None`: keep the original).
struct Pending {
    location: TensorLocation,
    values: Vec<Option<f64>>,
    /// Which node and parameter wrote each element, for conflict messages.
    writer: Vec<Option<(usize, ParamKind)>>,
}

/// Writes `values` (one per element) into `t`, keeping its data type and layout.
fn encode(t: &mut TensorProto, values: &[f64]) -> Result<()> {
    let raw = !t.raw_data.is_empty() || values.is_empty();
    let dt = DataType::try_from(t.data_type).unwrap_or(DataType::Undefined);
    match dt {
        DataType::Float => {
            if raw {
                t.raw_data = values.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect();
            } else {
                t.float_data = values.iter().map(|&v| v as f32).collect();
            }
        }
        DataType::Double => {
            if raw {
                t.raw_data = values.iter().flat_map(|&v| v.to_le_bytes()).collect();
            } else {
                t.double_data = values.to_vec();
            }
        }
        DataType::Float16 | DataType::Bfloat16 => {
            let conv = if dt == DataType::Float16 { f32_to_f16 } else { f32_to_bf16 };
            let h = values.iter().map(|&v| conv(v as f32));
            if raw {
                t.raw_data = h.flat_map(u16::to_le_bytes).collect();
            } else {
                t.int32_data = h.map(i32::from).collect();
            }
        }
        _ => {
            return Err(Error::Export(format!(
                "tensor `{}` of type {} holds parameters; only float tensors can be written",
                t.name,
                dt.as_str_name()
            )))
        }
    }
    Ok(())
}

fn storage_of(t: &TensorProto) -> Storage {
    match DataType::try_from(t.data_type) {
        Ok(DataType::Double) => Storage::F64,
        Ok(DataType::Float16 | DataType::Bfloat16) => Storage::Half,
        _ => Storage::F32,
    }
}

/// Finds the tensor of a source in `model`.
fn find_tensor<'m>(model: &'m mut ModelProto, name: &str, loc: &TensorLocation) -> Option<&'m mut TensorProto> {
    let graph = model.graph.as_mut()?;
    match loc {
        TensorLocation::Initializer => graph.initializer.iter_mut().find(|t| t.name == name),
        TensorLocation::Constant { .. } => graph
            .node
            .iter_mut()
            .find(|n| n.op_type == "Constant" && n.output.first().is_some_and(|o| o == name))?
            .attribute
            .iter_mut()
            .find(|a| a.name == "value")?
            .t
            .as_mut(),
        TensorLocation::Derived => None,
    }
}

/// Serializes the imported model with `network`'s current parameter values.
///
/// `network` must have the imported structure (same nodes, layer kinds and shapes) and may differ
/// from the imported network only in its trainable parameters: Conv weight/bias, Dense
/// weight/bias (Gemm, MatMul and a constant Add/Sub merged into the bias) and BatchNorm
/// gamma/beta/mean/var. Every other tensor, node, attribute and metadata field is the imported
/// file's; tensors keep their data type (FLOAT, DOUBLE, FLOAT16, BFLOAT16) and layout
/// (`raw_data` or the typed field). The result is re-imported and checked against `network`.
pub fn export_bytes(imported: &Imported, network: &Network<f32>) -> Result<Vec<u8>> {
    let orig = &imported.network;
    check_structure(orig, network)?;
    let mut model: ModelProto = (*imported.model.0).clone();
    if model.graph.is_none() {
        return Err(Error::Export("the imported model is not available (no graph)".into()));
    }
    let by_param: HashMap<(usize, ParamKind), &ParamSource> =
        imported.params.iter().map(|s| ((s.node, s.param), s)).collect();
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let mut lossy = false;
    for (id, (o, n)) in orig.nodes().iter().zip(network.nodes()).enumerate() {
        for &p in ParamKind::of(&o.layer) {
            let (Some(old), Some(new)) = (p.values(&o.layer), p.values(&n.layer)) else { continue };
            if old == new {
                continue;
            }
            let cannot = |why: String| {
                Error::Export(format!("node `{}`: its {} changed, but it cannot be exported: {why}", n.name, p.name()))
            };
            let src = by_param.get(&(id, p)).ok_or_else(|| {
                cannot("the importer built it without a tensor to write it to (e.g. a bias created by merging)".into())
            })?;
            if src.location == TensorLocation::Derived {
                return Err(cannot(format!(
                    "it comes from `{}`, a value computed from constants in the graph, not an initializer or a \
                     Constant node",
                    src.tensor
                )));
            }
            let t = find_tensor(&mut model, &src.tensor, &src.location)
                .ok_or_else(|| cannot(format!("tensor `{}` is not in the model", src.tensor)))?;
            let storage = storage_of(t);
            lossy |= storage == Storage::Half;
            let len = tensor::load(t, &src.tensor)?.len();
            let entry = pending.entry(src.tensor.clone()).or_insert_with(|| Pending {
                location: src.location.clone(),
                values: vec![None; len],
                writer: vec![None; len],
            });
            // (parameter index, tensor element, value); unchanged values keep their tensor elements.
            let mut writes: Vec<(usize, usize, f64)> = Vec::with_capacity(new.len());
            match &src.transform {
                Transform::Direct => {
                    writes.extend(new.iter().enumerate().map(|(q, &w)| (q, q, w as f64)));
                }
                Transform::GemmWeight { trans_b, alpha, inputs: k, outputs: m } => {
                    let (k, m, alpha) = (*k, *m, *alpha);
                    for o in 0..m {
                        for i in 0..k {
                            let q = o * k + i;
                            let e = if *trans_b { q } else { i * m + o };
                            let w = new[q];
                            let v = if alpha == 1.0 {
                                w as f64
                            } else {
                                solve(w, w as f64 / alpha as f64, storage, |v| alpha * v as f32)
                            };
                            writes.push((q, e, v));
                        }
                    }
                }
                Transform::MatMulWeight { inputs: k, outputs: m } => {
                    for o in 0..*m {
                        for i in 0..*k {
                            writes.push((o * k + i, i * m + o, new[o * k + i] as f64));
                        }
                    }
                }
                Transform::GemmBias { beta, index } => {
                    let beta = *beta as f64;
                    for (q, &e) in index.iter().enumerate() {
                        let w = new[q];
                        writes.push((q, e, solve(w, w as f64 / beta, storage, |v| (v * beta) as f32)));
                    }
                }
                Transform::MergedShift { sign, base, index, outputs } => {
                    for (p, &e) in index.iter().enumerate() {
                        let q = p % outputs;
                        let (w, b) = (new[q], base[q]);
                        let v = solve(w, sign * (w as f64 - b as f64), storage, |v| b + (sign * v) as f32);
                        writes.push((q, e, v));
                    }
                }
            }
            for (q, e, v) in writes {
                if new[q].to_bits() == old[q].to_bits() {
                    continue;
                }
                if e >= len {
                    return Err(cannot(format!("tensor `{}` is smaller than recorded", src.tensor)));
                }
                match entry.values[e] {
                    Some(prev) if prev != v => {
                        let (wn, wp) = entry.writer[e].unwrap_or((id, p));
                        return Err(Error::Export(format!(
                            "node `{}`: its {} cannot be exported: element {e} of tensor `{}` would need two different \
                             values ({prev} for the {} of node `{}`, {v} here); the tensor is shared or broadcast, so \
                             the values it feeds must stay equal",
                            n.name,
                            p.name(),
                            src.tensor,
                            wp.name(),
                            network.nodes()[wn].name
                        )));
                    }
                    _ => {
                        entry.values[e] = Some(v);
                        entry.writer[e] = Some((id, p));
                    }
                }
            }
        }
    }
    for (name, pend) in &pending {
        let t = find_tensor(&mut model, name, &pend.location)
            .ok_or_else(|| Error::Export(format!("tensor `{name}` is not in the model")))?;
        let mut data = tensor::load(t, name)?.data;
        for (d, v) in data.iter_mut().zip(&pend.values) {
            if let Some(v) = v {
                *d = *v;
            }
        }
        encode(t, &data)?;
    }
    let bytes = model.encode_to_vec();
    verify(&bytes, network, lossy)?;
    Ok(bytes)
}

/// Re-imports the exported bytes and checks that they give `network` back.
fn verify(bytes: &[u8], network: &Network<f32>, lossy: bool) -> Result<()> {
    let back = crate::import_bytes(bytes)?;
    let tol = if lossy { 1e-2f32 } else { 1e-6 };
    let nodes = back.network.nodes();
    if nodes.len() != network.nodes().len() {
        return Err(Error::Export("the exported model does not re-import to the same structure".into()));
    }
    for (b, n) in nodes.iter().zip(network.nodes()) {
        if b.layer.kind() != n.layer.kind() {
            return Err(Error::Export(format!("node `{}` does not re-import as a {}", n.name, n.layer.kind())));
        }
        let params = ParamKind::of(&n.layer);
        if params.is_empty() {
            if b.layer != n.layer {
                return Err(Error::Export(format!(
                    "node `{}`: its constants change on export (a tensor it reads is also a trainable parameter of \
                     another node); such a model cannot be exported changed",
                    n.name
                )));
            }
            continue;
        }
        for &p in params {
            let (x, y) = (p.values(&b.layer).unwrap_or(&[]), p.values(&n.layer).unwrap_or(&[]));
            let scale = y.iter().fold(1f32, |m, v| m.max(v.abs()));
            if x.len() != y.len() || x.iter().zip(y).any(|(a, c)| (a - c).abs() > tol * scale) {
                return Err(Error::Export(format!(
                    "node `{}`: its {} does not re-import to the network's values (is its tensor also read by another \
                     node, with another transform?)",
                    n.name,
                    p.name()
                )));
            }
        }
    }
    Ok(())
}

/// Whether `a` and `b` name the same file (both must exist to compare canonical paths).
fn same_file(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Exports like [`export_bytes`] and writes the file `out` atomically: to a temporary file in the
/// same directory, synced, then renamed over `out`. Refuses to overwrite the imported file itself.
/// On error `out` is untouched and no temporary file is left behind.
pub fn export(imported: &Imported, network: &Network<f32>, out: &Path) -> Result<()> {
    if let Some(src) = imported.source_path() {
        if same_file(src, out) {
            return Err(Error::Export(format!(
                "`{}` is the model it was imported from; write the exported model to another file",
                out.display()
            )));
        }
    }
    let bytes = export_bytes(imported, network)?;
    write_atomic(out, &bytes)
}

pub(crate) fn write_atomic(out: &Path, bytes: &[u8]) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Write { path, source }
    };
    let file_name = out.file_name().ok_or_else(|| Error::Export(format!("`{}` is not a file name", out.display())))?;
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(
        ".{}.{}-{}.tmp",
        file_name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, out).map_err(io(out))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    // Persist the rename; not every platform can sync a directory.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::f16_to_f32;

    #[test]
    fn half_round_trip() {
        for h in [0u16, 1, 0x3c00, 0xc000, 0x3555, 0x7bff, 0x0400, 0x03ff, 0x8001] {
            assert_eq!(f32_to_f16(f16_to_f32(h)), h, "{h:#x}");
        }
        assert_eq!(f32_to_f16(1.0 + 1.0 / 4096.0), 0x3c00); // ties to even
        assert_eq!(f32_to_f16(1e6), 0x7c00);
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
    }

    #[test]
    fn steps() {
        assert_eq!(step(1.0, true), 1.0 + f32::EPSILON);
        assert_eq!(step(-1.0, false), -1.0 - f32::EPSILON);
        assert!(step(0.0, false) < 0.0);
    }
}
