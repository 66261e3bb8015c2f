//! [`Network<f32>`] → compact model bytes.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use bytemuck::Zeroable;

use super::format::*;
use super::Precision;
use crate::error::{Error, Result};
use crate::layer::{Layer, Pool2d};
use crate::network::{Network, Node};

const SUPPORTED: &str = "the compact format supports Conv2d, Dense, Relu, LeakyRelu, Clip, MaxPool2d, AvgPool2d, \
                         GlobalAvgPool, Affine, BatchNorm, Reshape, Identity, Add and Pad; run this model with the \
                         ONNX path instead, or re-export it without this layer";

fn unsupported(node: &Node<f32>, reason: String) -> Error {
    Error::CompactUnsupported { node: node.name.clone(), kind: node.layer.kind(), reason }
}

fn u32_of(node: &Node<f32>, v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| unsupported(node, format!("{what} {v} does not fit the format's 32-bit fields")))
}

/// The tensor data section under construction.
struct Data {
    bytes: Vec<u8>,
}

impl Data {
    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(ALIGN) {
            self.bytes.push(0);
        }
    }

    fn offset(&self, node: &Node<f32>) -> Result<u32> {
        u32_of(node, self.bytes.len(), "data offset")
    }

    /// Appends `f32` values (biases, scales, shifts, or weights in `f32` precision).
    fn f32s(&mut self, node: &Node<f32>, v: &[f32]) -> Result<TensorRef> {
        let offset = self.offset(node)?;
        for x in v {
            self.bytes.extend_from_slice(&x.to_le_bytes());
        }
        Ok(TensorRef { offset, len: u32_of(node, v.len(), "tensor length")? })
    }

    /// Appends weights in the model's precision.
    fn weights(&mut self, node: &Node<f32>, v: &[f32], precision: Precision) -> Result<TensorRef> {
        match precision {
            Precision::F32 => self.f32s(node, v),
            Precision::F16 => {
                let offset = self.offset(node)?;
                for (i, &x) in v.iter().enumerate() {
                    let h = half::f16::from_f32(x);
                    if x.is_finite() && !h.is_finite() {
                        return Err(unsupported(
                            node,
                            format!("weight #{i} = {x} is outside the f16 range (±65504); write it with precision f32"),
                        ));
                    }
                    self.bytes.extend_from_slice(&h.to_bits().to_le_bytes());
                }
                self.pad();
                Ok(TensorRef { offset, len: u32_of(node, v.len(), "tensor length")? })
            }
        }
    }
}

fn pool_params(p: &Pool2d, count_include_pad: bool) -> [usize; 10] {
    [
        p.kernel[0],
        p.kernel[1],
        p.stride[0],
        p.stride[1],
        p.padding[0],
        p.padding[1],
        p.padding[2],
        p.padding[3],
        count_include_pad as usize,
        p.ceil_mode as usize,
    ]
}

/// Serialises `net` in the compact format with weights of the given precision.
///
/// Batch normalisation is folded into a per-channel affine map (as the forward pass computes
/// it), Identity becomes a Reshape to the same shape. Errors name the node when a layer kind
/// is not in the format (Sigmoid, Tanh, Concat, Transpose), a shape has rank above 4 or more than
/// 2²⁶ values, the network is not a classifier with 2..=128 logits, or an `f16` weight
/// overflows. The result loads with [`CompactModel::load`](super::CompactModel::load) once it is
/// in a 4-byte aligned buffer (see [`AlignedModel`](super::AlignedModel)).
pub fn to_compact(net: &Network<f32>, precision: Precision) -> Result<Vec<u8>> {
    net.check_classifier()?;
    let nodes = net.nodes();
    if cfg!(target_endian = "big") {
        return Err(unsupported(
            &nodes[0],
            "the compact format is little-endian; write it on a little-endian host".into(),
        ));
    }
    let out = &nodes[net.output()];
    if net.num_classes() > MAX_CLASSES {
        return Err(unsupported(
            out,
            format!("the output has {} logits; the compact format allows at most {MAX_CLASSES}", net.num_classes()),
        ));
    }
    let mut data = Data { bytes: Vec::new() };
    let mut entries: Vec<NodeEntry> = Vec::with_capacity(nodes.len());
    let mut values = 0usize;
    for (id, node) in nodes.iter().enumerate() {
        if node.shape.len() > MAX_RANK {
            return Err(unsupported(node, format!("shape {:?} has rank above {MAX_RANK}", node.shape)));
        }
        if node.size() > MAX_NODE_VALUES {
            return Err(unsupported(node, format!("{} values per sample exceed {MAX_NODE_VALUES}", node.size())));
        }
        let mut e = NodeEntry::zeroed();
        e.rank = node.shape.len() as u32;
        for (s, &d) in e.shape.iter_mut().zip(&node.shape) {
            *s = d as u32;
        }
        e.value_offset = u32_of(node, values, "activation offset")?;
        values += node.size();
        if values > MAX_TOTAL_VALUES {
            return Err(unsupported(node, format!("the activations exceed {MAX_TOTAL_VALUES} values per sample")));
        }
        e.input_count = node.inputs.len() as u32;
        for (slot, &i) in e.inputs.iter_mut().zip(&node.inputs) {
            *slot = i as u32;
        }
        let mut params = [0usize; 14];
        match &node.layer {
            Layer::Input => e.kind = KIND_INPUT,
            Layer::Conv2d(c) => {
                e.kind = KIND_CONV2D;
                params[..13].copy_from_slice(&[
                    c.in_channels,
                    c.out_channels,
                    c.kernel[0],
                    c.kernel[1],
                    c.stride[0],
                    c.stride[1],
                    c.padding[0],
                    c.padding[1],
                    c.padding[2],
                    c.padding[3],
                    c.dilation[0],
                    c.dilation[1],
                    c.groups,
                ]);
                e.weight = data.weights(node, &c.weight, precision)?;
                if let Some(b) = &c.bias {
                    e.bias = data.f32s(node, b)?;
                }
            }
            Layer::Dense(d) => {
                e.kind = KIND_DENSE;
                params[0] = d.inputs;
                params[1] = d.outputs;
                e.weight = data.weights(node, &d.weight, precision)?;
                if let Some(b) = &d.bias {
                    e.bias = data.f32s(node, b)?;
                }
            }
            Layer::MaxPool2d(p) => {
                e.kind = KIND_MAX_POOL;
                params[..10].copy_from_slice(&pool_params(p, false));
            }
            Layer::AvgPool2d(p) => {
                e.kind = KIND_AVG_POOL;
                params[..10].copy_from_slice(&pool_params(p, p.count_include_pad));
            }
            Layer::GlobalAvgPool => e.kind = KIND_GLOBAL_AVG_POOL,
            Layer::Affine(a) => {
                e.kind = KIND_AFFINE;
                e.weight = data.f32s(node, &a.scale)?;
                e.bias = data.f32s(node, &a.shift)?;
            }
            Layer::BatchNorm(b) => {
                e.kind = KIND_CHANNEL_AFFINE;
                let (scale, shift) = b.folded();
                e.weight = data.f32s(node, &scale)?;
                e.bias = data.f32s(node, &shift)?;
            }
            Layer::Relu => e.kind = KIND_RELU,
            Layer::LeakyRelu { alpha } => {
                e.kind = KIND_LEAKY_RELU;
                e.fparams[0] = *alpha;
            }
            Layer::Clip { min, max } => {
                e.kind = KIND_CLIP;
                e.fparams = [*min, *max];
            }
            Layer::Reshape { .. } | Layer::Identity => e.kind = KIND_RESHAPE,
            Layer::Add => e.kind = KIND_ADD,
            Layer::Pad(p) => {
                e.kind = KIND_PAD;
                for (a, (&b, &en)) in p.begin.iter().zip(&p.end).enumerate() {
                    params[a] = b;
                    params[MAX_RANK + a] = en;
                }
                e.fparams[0] = p.value;
            }
            Layer::Sigmoid | Layer::Tanh | Layer::Concat { .. } | Layer::Transpose { .. } => {
                return Err(unsupported(node, String::from(SUPPORTED)));
            }
        }
        for (slot, &p) in e.params.iter_mut().zip(&params) {
            *slot = u32_of(node, p, "parameter")?;
        }
        debug_assert!(id > 0 || e.kind == KIND_INPUT);
        entries.push(e);
    }
    let table = core::mem::size_of::<NodeEntry>() * entries.len();
    let data_offset = core::mem::size_of::<Header>() + table;
    let file_len = data_offset + data.bytes.len();
    let too_big = || unsupported(out, format!("the model would take {file_len} bytes; the format allows up to 4 GiB"));
    let header = Header {
        magic: MAGIC,
        version: VERSION,
        precision: precision.code(),
        flags: 0,
        header_len: core::mem::size_of::<Header>() as u32,
        node_count: entries.len() as u32,
        node_entry_len: core::mem::size_of::<NodeEntry>() as u32,
        nodes_offset: core::mem::size_of::<Header>() as u32,
        data_offset: data_offset as u32,
        data_len: u32::try_from(data.bytes.len()).map_err(|_| too_big())?,
        file_len: u32::try_from(file_len).map_err(|_| too_big())?,
        classes: net.num_classes() as u32,
        values_len: values as u32,
        crc32: 0,
        reserved: [0; 3],
    };
    let mut bytes = Vec::with_capacity(file_len);
    bytes.extend_from_slice(bytemuck::bytes_of(&header));
    bytes.extend_from_slice(bytemuck::cast_slice(&entries));
    bytes.extend_from_slice(&data.bytes);
    let crc = model_crc(&bytes);
    bytes[CRC_FIELD..CRC_FIELD + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(bytes)
}
