//! The validating, zero-copy view over compact model bytes.
//!
//! [`CompactModel::load`] checks every field before anything is run: the header (magic,
//! version, sizes, offsets, checksum), and for every node its kind, its inputs (earlier nodes
//! only), its shape (recomputed from its inputs and parameters), its parameters (ranges, unused
//! fields zero), its activation offset, and the location, length and alignment of each tensor.
//! All arithmetic on stored values is checked, so corrupt bytes give an [`Error`], never a panic
//! or an out-of-bounds read. Loading allocates nothing.

use super::format::*;
use super::Precision;
use crate::error::{Error, Result};
use crate::layer::pool_out;

/// A compact model borrowed from its bytes (e.g. in flash); cheap to copy.
#[derive(Clone, Copy, Debug)]
pub struct CompactModel<'a> {
    pub(super) header: &'a Header,
    pub(super) nodes: &'a [NodeEntry],
    pub(super) data: &'a [u8],
    pub(super) precision: Precision,
    pub(super) input_len: usize,
    pub(super) classes: usize,
    pub(super) values_len: usize,
    pub(super) infer_scratch: usize,
    pub(super) scratch: usize,
}

pub(super) fn invalid(node: Option<usize>, what: &'static str) -> Error {
    Error::CompactInvalid { node, what }
}

fn at(node: usize, what: &'static str) -> Error {
    invalid(Some(node), what)
}

/// Per-sample shape, `rank` entries of `dims` used.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Shape {
    rank: usize,
    dims: [usize; MAX_RANK],
}

impl Shape {
    fn of(e: &NodeEntry) -> Shape {
        let mut dims = [0; MAX_RANK];
        for (d, &s) in dims.iter_mut().zip(&e.shape) {
            *d = s as usize;
        }
        Shape { rank: e.rank as usize, dims }
    }
    fn dims(&self) -> &[usize] {
        &self.dims[..self.rank]
    }
    fn size(&self) -> usize {
        self.dims().iter().product()
    }
    fn with(dims: &[usize]) -> Shape {
        let mut s = Shape { rank: dims.len(), dims: [0; MAX_RANK] };
        s.dims[..dims.len()].copy_from_slice(dims);
        s
    }
}

fn window_param(v: usize) -> bool {
    (1..=MAX_WINDOW_PARAM).contains(&v)
}

/// Checks a tensor reference: present with exactly `len` elements of `elem` bytes, aligned, inside
/// the data section; or, when `len` is `None`, absent (all zero).
fn check_tensor(id: usize, t: TensorRef, len: Option<usize>, elem: usize, data_len: usize) -> Result<()> {
    match len {
        None => {
            if t != TensorRef::default() {
                return Err(at(id, "a tensor this layer does not use is set"));
            }
        }
        Some(n) => {
            if t.len as usize != n {
                return Err(at(id, "a tensor has the wrong number of elements for the layer's parameters"));
            }
            if !(t.offset as usize).is_multiple_of(ALIGN) {
                return Err(at(id, "a tensor offset is not a multiple of 4"));
            }
            let end = (t.len as usize)
                .checked_mul(elem)
                .and_then(|b| b.checked_add(t.offset as usize))
                .ok_or(at(id, "a tensor extends past the data section"))?;
            if end > data_len {
                return Err(at(id, "a tensor extends past the data section"));
            }
        }
    }
    Ok(())
}

/// Output length of a convolution axis, or an error when the window does not fit.
fn conv_axis(id: usize, size: usize, kernel: usize, stride: usize, dil: usize, pad: usize) -> Result<usize> {
    let span = dil.checked_mul(kernel - 1).and_then(|v| v.checked_add(1)).ok_or(at(id, "dilated kernel too large"))?;
    let padded = size.checked_add(pad).ok_or(at(id, "padding too large"))?;
    if padded < span {
        return Err(at(id, "the convolution kernel does not fit its padded input"));
    }
    Ok((padded - span) / stride + 1)
}

/// Validates node `id` against the nodes before it and returns its output shape.
fn infer(id: usize, e: &NodeEntry, nodes: &[NodeEntry], precision: Precision, data_len: usize) -> Result<Shape> {
    let arity = match e.kind {
        KIND_INPUT => 0,
        KIND_ADD => 2,
        KIND_CONV2D..=KIND_PAD => 1,
        _ => return Err(at(id, "unknown layer kind")),
    };
    if (id == 0) != (e.kind == KIND_INPUT) {
        return Err(at(id, "node 0, and only node 0, must be the input"));
    }
    if e.input_count as usize != arity {
        return Err(at(id, "wrong number of inputs for the layer kind"));
    }
    for (j, &i) in e.inputs.iter().enumerate() {
        if j >= arity {
            if i != 0 {
                return Err(at(id, "an unused input slot is set"));
            }
        } else if i as usize >= id {
            return Err(at(id, "an input refers to a node that is not earlier"));
        }
    }
    let p = e.params.map(|v| v as usize);
    let used_params = match e.kind {
        KIND_CONV2D => 13,
        KIND_DENSE => 2,
        KIND_MAX_POOL | KIND_AVG_POOL => 10,
        KIND_PAD => 2 * MAX_RANK,
        _ => 0,
    };
    if p[used_params..].iter().any(|&v| v != 0) {
        return Err(at(id, "an unused parameter is set"));
    }
    let used_f = match e.kind {
        KIND_LEAKY_RELU | KIND_PAD => 1,
        KIND_CLIP => 2,
        _ => 0,
    };
    if e.fparams[..used_f].iter().any(|v| !v.is_finite()) {
        return Err(at(id, "a float parameter is not finite"));
    }
    if e.fparams[used_f..].iter().any(|v| v.to_bits() != 0) {
        return Err(at(id, "an unused float parameter is set"));
    }
    let wsize = match precision {
        Precision::F32 => 4,
        Precision::F16 => 2,
    };
    let check = |t: TensorRef, len: Option<usize>, elem: usize| check_tensor(id, t, len, elem, data_len);
    let bias_len = |n: usize| if e.bias.len == 0 { None } else { Some(n) };
    if e.kind == KIND_INPUT {
        check(e.weight, None, 4)?;
        check(e.bias, None, 4)?;
        return Ok(Shape::of(e));
    }
    let x = Shape::of(&nodes[e.inputs[0] as usize]);
    let xd = x.dims();
    let mut out = x;
    let (mut weight, mut bias): (Option<usize>, Option<usize>) = (None, None);
    match e.kind {
        KIND_CONV2D => {
            if x.rank != 3 {
                return Err(at(id, "Conv2d needs an input of rank 3 [C, H, W]"));
            }
            let (ic, oc, groups) = (p[0], p[1], p[12]);
            if ic != xd[0] {
                return Err(at(id, "Conv2d input channels differ from its input's"));
            }
            if oc == 0 || oc > MAX_NODE_VALUES || groups == 0 || ic % groups != 0 || oc % groups != 0 {
                return Err(at(id, "Conv2d channel counts and groups are inconsistent"));
            }
            if !p[2..6].iter().chain(&p[10..12]).all(|&v| window_param(v))
                || p[6..10].iter().any(|&v| v > MAX_WINDOW_PARAM)
            {
                return Err(at(id, "Conv2d kernel, stride, dilation (1..=65536) or padding (≤ 65536) out of range"));
            }
            let ho = conv_axis(id, xd[1], p[2], p[4], p[10], p[6] + p[8])?;
            let wo = conv_axis(id, xd[2], p[3], p[5], p[11], p[7] + p[9])?;
            out = Shape::with(&[oc, ho, wo]);
            let n = [ic / groups, p[2], p[3]].iter().try_fold(oc, |a, &b| a.checked_mul(b));
            weight = Some(n.ok_or(at(id, "Conv2d weight too large"))?);
            bias = bias_len(oc);
        }
        KIND_DENSE => {
            let (inputs, outputs) = (p[0], p[1]);
            if inputs == 0 || outputs == 0 || outputs > MAX_NODE_VALUES || xd[x.rank - 1] != inputs {
                return Err(at(id, "Dense input features differ from its input's last axis"));
            }
            out.dims[x.rank - 1] = outputs;
            weight = Some(inputs.checked_mul(outputs).ok_or(at(id, "Dense weight too large"))?);
            bias = bias_len(outputs);
        }
        KIND_MAX_POOL | KIND_AVG_POOL => {
            if x.rank != 3 {
                return Err(at(id, "pooling needs an input of rank 3 [C, H, W]"));
            }
            if !p[0..4].iter().all(|&v| window_param(v)) {
                return Err(at(id, "pooling kernel and stride must be in 1..=65536"));
            }
            if p[4] >= p[0] || p[6] >= p[0] || p[5] >= p[1] || p[7] >= p[1] {
                return Err(at(id, "pooling padding must be smaller than the kernel"));
            }
            if p[8] > 1 || p[9] > 1 || (e.kind == KIND_MAX_POOL && p[8] != 0) {
                return Err(at(id, "pooling flags must be 0 or 1 (count_include_pad: average pooling only)"));
            }
            let ho = pool_out(xd[1], p[0], p[2], p[4], p[6], p[9] == 1);
            let wo = pool_out(xd[2], p[1], p[3], p[5], p[7], p[9] == 1);
            match (ho, wo) {
                (Some(h), Some(w)) => out = Shape::with(&[xd[0], h, w]),
                _ => return Err(at(id, "the pooling window does not fit its input")),
            }
        }
        KIND_GLOBAL_AVG_POOL => {
            if x.rank < 2 {
                return Err(at(id, "GlobalAvgPool needs an input of rank ≥ 2"));
            }
            out.dims[1..x.rank].fill(1);
        }
        KIND_AFFINE => {
            weight = Some(x.size());
            bias = Some(x.size());
        }
        KIND_CHANNEL_AFFINE => {
            weight = Some(xd[0]);
            bias = Some(xd[0]);
        }
        KIND_RELU | KIND_LEAKY_RELU => {}
        KIND_CLIP => {
            if e.fparams[0] > e.fparams[1] {
                return Err(at(id, "Clip minimum exceeds its maximum"));
            }
        }
        KIND_RESHAPE => {
            out = Shape::of(e);
            let n = out.dims().iter().try_fold(1usize, |a, &b| a.checked_mul(b));
            if out.rank == 0 || out.rank > MAX_RANK || n != Some(x.size()) {
                return Err(at(id, "Reshape changes the number of values"));
            }
        }
        KIND_ADD => {
            if Shape::of(&nodes[e.inputs[1] as usize]) != x {
                return Err(at(id, "Add needs inputs of equal shape"));
            }
        }
        KIND_PAD => {
            for a in 0..MAX_RANK {
                let (b, en) = (p[a], p[MAX_RANK + a]);
                if a >= x.rank && (b | en) != 0 {
                    return Err(at(id, "Pad sets padding for an axis the input does not have"));
                }
                if b > MAX_WINDOW_PARAM || en > MAX_WINDOW_PARAM {
                    return Err(at(id, "Pad amounts must be at most 65536"));
                }
                if a < x.rank {
                    out.dims[a] = xd[a] + b + en;
                }
            }
        }
        _ => return Err(at(id, "unknown layer kind")),
    }
    let (welem, belem) = if matches!(e.kind, KIND_CONV2D | KIND_DENSE) { (wsize, 4) } else { (4, 4) };
    check(e.weight, weight, welem)?;
    check(e.bias, bias, belem)?;
    Ok(out)
}

impl<'a> CompactModel<'a> {
    /// Validates `bytes` and returns a view that runs the model in place.
    ///
    /// `bytes` must start at a 4-byte aligned address ([`Error::Misaligned`] otherwise) and hold
    /// at least the model's `file_len` bytes (trailing bytes, e.g. flash padding, are ignored).
    /// Every other defect is an [`Error::CompactInvalid`] naming the problem and, where it lies
    /// in one, the node. Allocates nothing; takes time linear in the model size (checksum).
    pub fn load(bytes: &'a [u8]) -> Result<Self> {
        if cfg!(target_endian = "big") {
            return Err(invalid(None, "compact models are little-endian; this target is big-endian"));
        }
        let misalign = bytes.as_ptr() as usize % ALIGN;
        if misalign != 0 {
            return Err(Error::Misaligned { what: "compact model bytes", align: ALIGN, offset: misalign });
        }
        let hlen = core::mem::size_of::<Header>();
        if bytes.len() < hlen {
            return Err(invalid(None, "truncated: shorter than the 64-byte header"));
        }
        let header: &Header = bytemuck::try_from_bytes(&bytes[..hlen])
            .map_err(|_| invalid(None, "the header cannot be read in place"))?;
        if header.magic != MAGIC {
            return Err(invalid(None, "not a compact certify model (the file does not start with CFY1)"));
        }
        if header.version != VERSION {
            return Err(invalid(None, "unsupported format version (this build reads version 1)"));
        }
        let precision = Precision::from_code(header.precision).ok_or(invalid(None, "unknown weight precision code"))?;
        if header.flags != 0 || header.reserved != [0; 3] {
            return Err(invalid(None, "reserved header fields are set"));
        }
        let elen = core::mem::size_of::<NodeEntry>();
        if header.header_len as usize != hlen
            || header.node_entry_len as usize != elen
            || header.nodes_offset as usize != hlen
        {
            return Err(invalid(None, "header or node-entry size does not match version 1"));
        }
        let file_len = header.file_len as usize;
        if bytes.len() < file_len {
            return Err(invalid(None, "truncated: fewer bytes than the header's file length"));
        }
        let bytes = &bytes[..file_len];
        let node_count = header.node_count as usize;
        let table_end = node_count.checked_mul(elen).and_then(|t| t.checked_add(hlen));
        let data_offset = header.data_offset as usize;
        let data_len = header.data_len as usize;
        if node_count < 2 || table_end != Some(data_offset) {
            return Err(invalid(None, "the node table does not end where the data section starts (or has < 2 nodes)"));
        }
        if !data_offset.is_multiple_of(ALIGN) || data_offset.checked_add(data_len) != Some(file_len) {
            return Err(invalid(None, "the data section is misplaced or does not end at the file length"));
        }
        if model_crc(bytes) != header.crc32 {
            return Err(invalid(None, "checksum mismatch: the bytes are corrupt or truncated"));
        }
        let nodes: &[NodeEntry] = bytemuck::try_cast_slice(&bytes[hlen..data_offset])
            .map_err(|_| invalid(None, "the node table cannot be read in place"))?;
        let data = &bytes[data_offset..];
        let mut total = 0usize;
        for (id, e) in nodes.iter().enumerate() {
            let rank = e.rank as usize;
            if rank == 0 || rank > MAX_RANK || e.shape[rank..].iter().any(|&d| d != 0) {
                return Err(at(id, "rank must be 1..=4 with unused shape entries zero"));
            }
            let size = e.shape[..rank].iter().try_fold(1usize, |a, &d| a.checked_mul(d as usize));
            let size = match size {
                Some(s) if s > 0 && s <= MAX_NODE_VALUES => s,
                _ => return Err(at(id, "a node must hold between 1 and 2^26 values")),
            };
            if e.value_offset as usize != total {
                return Err(at(id, "activation offset is not the sum of the earlier nodes' sizes"));
            }
            total += size;
            if total > MAX_TOTAL_VALUES {
                return Err(at(id, "the activations exceed 2^28 values"));
            }
            let shape = infer(id, e, &nodes[..id], precision, data.len())?;
            if shape != Shape::of(e) {
                return Err(at(id, "the stored shape differs from the one its inputs and parameters give"));
            }
        }
        let last = &nodes[node_count - 1];
        let classes = Shape::of(last).size();
        let non_unit = last.shape().iter().filter(|&&d| d != 1).count();
        if !(2..=MAX_CLASSES).contains(&classes) || non_unit > 1 || header.classes as usize != classes {
            return Err(invalid(Some(node_count - 1), "the output must be a vector of 2..=128 logits"));
        }
        if header.values_len as usize != total {
            return Err(invalid(None, "values_len differs from the sum of the node sizes"));
        }
        let input_len = Shape::of(&nodes[0]).size();
        let too_big = || invalid(None, "the scratch size overflows this target's address space");
        // Activations (+ cotangents + Jacobian), in bytes, plus slack to align the scratch start.
        let infer_scratch = total.checked_mul(4).and_then(|b| b.checked_add(ALIGN - 1)).ok_or_else(too_big)?;
        let scratch = classes
            .checked_mul(input_len)
            .and_then(|j| j.checked_add(2 * total))
            .and_then(|n| n.checked_mul(4))
            .and_then(|b| b.checked_add(ALIGN - 1))
            .ok_or_else(too_big)?;
        Ok(CompactModel {
            header,
            nodes,
            data,
            precision,
            input_len,
            classes,
            values_len: total,
            infer_scratch,
            scratch,
        })
    }

    /// The weight precision.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The per-sample input shape (e.g. `[1, 28, 28]`).
    pub fn input_shape(&self) -> &'a [u32] {
        let n: &'a NodeEntry = &self.nodes[0];
        n.shape()
    }

    /// Values per input (`D`).
    pub fn input_len(&self) -> usize {
        self.input_len
    }

    /// Logits per input (`K`).
    pub fn num_classes(&self) -> usize {
        self.classes
    }

    /// Nodes, the input included.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Bytes of the model (the header's file length).
    pub fn byte_len(&self) -> usize {
        self.header.file_len as usize
    }

    /// Scratch bytes [`certify`](Self::certify) and [`jacobian`](Self::jacobian) need:
    /// `4·(2·A + K·D) + 3` where `A` is the number of activation values of all nodes (the 3 bytes
    /// let the engine align an arbitrary `&mut [u8]`).
    pub fn scratch_size(&self) -> usize {
        self.scratch
    }

    /// Scratch bytes [`infer`](Self::infer) needs: `4·A + 3`.
    pub fn infer_scratch_size(&self) -> usize {
        self.infer_scratch
    }
}
