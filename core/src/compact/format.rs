//! The byte layout of a compact model (version 1), shared by the writer and the loader.
//!
//! ```text
//! offset 0              Header (64 bytes)
//! header.nodes_offset   NodeEntry × header.node_count (120 bytes each)
//! header.data_offset    tensor data, header.data_len bytes; every tensor starts at a multiple
//!                       of 4 bytes from the data start
//! header.file_len       end of the model
//! ```
//!
//! All integers and floats are little-endian; structures are `#[repr(C)]` with no padding, so a
//! 4-byte-aligned `&[u8]` is read in place ([`bytemuck`]). Node 0 is the input; every other node
//! reads only earlier nodes; the last node is the output (the logits). Node values are stored
//! one after another in an activation buffer at the element offsets the table gives, so the
//! engine needs no allocation and no offset computation at run time.
//!
//! Tensors: the weights of [`KIND_CONV2D`] and [`KIND_DENSE`] are in the model's precision
//! ([`PRECISION_F32`] or [`PRECISION_F16`], IEEE binary16 bits); biases and the scale/shift of
//! [`KIND_AFFINE`] and [`KIND_CHANNEL_AFFINE`] are always `f32`. Unused fields are zero (the
//! loader checks).

use bytemuck::{Pod, Zeroable};

/// The first four bytes of a compact model.
pub const MAGIC: [u8; 4] = *b"CFY1";
/// The format version this crate writes and reads.
pub const VERSION: u16 = 1;
/// The alignment (bytes) the model bytes, every tensor and the data section need.
pub const ALIGN: usize = 4;
/// Weights stored as `f32`.
pub const PRECISION_F32: u16 = 0;
/// Weights stored as IEEE binary16 (`f16`), computed in `f32`.
pub const PRECISION_F16: u16 = 1;
/// The largest per-sample rank of any node.
pub const MAX_RANK: usize = 4;
/// The most logits a compact classifier may have (the size of [`Certificate`](super::Certificate)'s
/// logits array).
pub const MAX_CLASSES: usize = 128;
/// The most values one node may hold per sample (2²⁶), so that index arithmetic cannot overflow
/// even with 32-bit `usize`.
pub const MAX_NODE_VALUES: usize = 1 << 26;
/// The most values of all nodes together (2²⁸).
pub const MAX_TOTAL_VALUES: usize = 1 << 28;
/// The largest kernel, stride, padding or dilation (2¹⁶).
pub const MAX_WINDOW_PARAM: usize = 1 << 16;

/// The network input (node 0 only).
pub const KIND_INPUT: u32 = 0;
/// 2-D convolution: params `[in_c, out_c, kh, kw, sh, sw, pad_top, pad_left, pad_bottom,
/// pad_right, dil_h, dil_w, groups, 0]`; weight `[out_c, in_c/groups, kh, kw]`, optional bias.
pub const KIND_CONV2D: u32 = 1;
/// Dense on the last axis: params `[inputs, outputs, 0…]`; weight `[outputs, inputs]`,
/// optional bias.
pub const KIND_DENSE: u32 = 2;
/// `max(x, 0)`.
pub const KIND_RELU: u32 = 3;
/// `x` for `x > 0`, `alpha·x` otherwise: `fparams[0] = alpha`.
pub const KIND_LEAKY_RELU: u32 = 4;
/// `min(max(x, lo), hi)`: `fparams = [lo, hi]`.
pub const KIND_CLIP: u32 = 5;
/// Max pooling: params `[kh, kw, sh, sw, pad_top, pad_left, pad_bottom, pad_right, 0,
/// ceil_mode, 0…]`.
pub const KIND_MAX_POOL: u32 = 6;
/// Average pooling: params as [`KIND_MAX_POOL`] with `params[8] = count_include_pad`.
pub const KIND_AVG_POOL: u32 = 7;
/// Mean over the spatial axes, `[C, …] → [C, 1, …]`.
pub const KIND_GLOBAL_AVG_POOL: u32 = 8;
/// Elementwise `x·scale + shift`: weight = scale, bias = shift, one `f32` per element.
pub const KIND_AFFINE: u32 = 9;
/// Per-channel (axis 0) `x·scale + shift`, e.g. a folded batch normalisation: weight = scale,
/// bias = shift, one `f32` per channel.
pub const KIND_CHANNEL_AFFINE: u32 = 10;
/// The same values with another shape (also Identity and Flatten).
pub const KIND_RESHAPE: u32 = 11;
/// Sum of two nodes of equal shape.
pub const KIND_ADD: u32 = 12;
/// Constant padding: params `[begin_0..begin_3, end_0..end_3, 0…]` (per axis, unused axes 0),
/// `fparams[0]` = the fill value.
pub const KIND_PAD: u32 = 13;

/// The file header (64 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: [u8; 4],
    /// [`VERSION`].
    pub version: u16,
    /// [`PRECISION_F32`] or [`PRECISION_F16`].
    pub precision: u16,
    /// Reserved flags, zero.
    pub flags: u32,
    /// `size_of::<Header>()` (64).
    pub header_len: u32,
    /// Nodes in the table (≥ 2).
    pub node_count: u32,
    /// `size_of::<NodeEntry>()` (120).
    pub node_entry_len: u32,
    /// Byte offset of the node table (= `header_len`).
    pub nodes_offset: u32,
    /// Byte offset of the tensor data (a multiple of [`ALIGN`]).
    pub data_offset: u32,
    /// Bytes of tensor data.
    pub data_len: u32,
    /// Bytes of the whole model (`data_offset + data_len`).
    pub file_len: u32,
    /// Logits of the output node.
    pub classes: u32,
    /// Values of all nodes together (the activation buffer's length in `f32`).
    pub values_len: u32,
    /// CRC-32 (IEEE) of the `file_len` bytes with this field read as zero.
    pub crc32: u32,
    /// Reserved, zero.
    pub reserved: [u32; 3],
}

/// Where a tensor lies in the data section.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct TensorRef {
    /// Byte offset from the data start (a multiple of [`ALIGN`]).
    pub offset: u32,
    /// Elements (0: no tensor).
    pub len: u32,
}

/// One node of the table (120 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct NodeEntry {
    /// One of the `KIND_*` constants.
    pub kind: u32,
    /// Inputs used (0 for the input node, 2 for [`KIND_ADD`], 1 otherwise).
    pub input_count: u32,
    /// Input node indices, each smaller than this node's; unused entries zero.
    pub inputs: [u32; 2],
    /// Per-sample rank of the output (1..=[`MAX_RANK`]).
    pub rank: u32,
    /// Per-sample output shape; entries past `rank` are zero.
    pub shape: [u32; MAX_RANK],
    /// Element offset of this node's values in the activation buffer (the sum of the sizes of
    /// the nodes before it).
    pub value_offset: u32,
    /// Integer parameters (see the `KIND_*` constants).
    pub params: [u32; 14],
    /// Float parameters (see the `KIND_*` constants).
    pub fparams: [f32; 2],
    /// The weight (or scale) tensor.
    pub weight: TensorRef,
    /// The bias (or shift) tensor.
    pub bias: TensorRef,
}

impl NodeEntry {
    /// The per-sample output shape (`rank` entries).
    pub fn shape(&self) -> &[u32] {
        &self.shape[..(self.rank as usize).min(MAX_RANK)]
    }
}

const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC_TABLE: [u32; 256] = crc_table();

/// Continues a CRC-32 (IEEE 802.3, reflected, as zlib's `crc32`) over `bytes`; start from 0.
pub fn crc32_update(crc: u32, bytes: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in bytes {
        c = CRC_TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

/// Byte offset of [`Header::crc32`].
pub const CRC_FIELD: usize = 48;

/// The CRC of a whole model with its CRC field read as zero (`bytes.len() ≥ 64`).
pub fn model_crc(bytes: &[u8]) -> u32 {
    let c = crc32_update(0, &bytes[..CRC_FIELD]);
    let c = crc32_update(c, &[0; 4]);
    crc32_update(c, &bytes[CRC_FIELD + 4..])
}

/// IEEE binary16 bits to `f32` (exact for every value; NaN stays NaN). Branch-free, so loops over
/// it vectorise.
#[inline(always)]
pub fn f16_to_f32(h: u16) -> f32 {
    let h = h as u32;
    let magnitude = (h & 0x7FFF) << 13;
    // Rebias the exponent from 15 to 127 by multiplying with 2^112 (also normalises subnormals).
    let v = f32::from_bits(magnitude) * f32::from_bits(0x7780_0000);
    // Infinity and NaN (half exponent 31): set every exponent bit, keeping the mantissa.
    let inf_nan = 0u32.wrapping_sub((magnitude >= 0x0F80_0000) as u32) & 0x7F80_0000;
    f32::from_bits(v.to_bits() | inf_nan | ((h & 0x8000) << 16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_sizes() {
        assert_eq!(core::mem::size_of::<Header>(), 64);
        assert_eq!(core::mem::size_of::<NodeEntry>(), 120);
        assert_eq!(core::mem::size_of::<TensorRef>(), 8);
        assert_eq!(core::mem::offset_of!(Header, crc32), CRC_FIELD);
    }

    #[test]
    fn crc_matches_known_value() {
        assert_eq!(crc32_update(0, b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32_update(crc32_update(0, b"1234"), b"56789"), 0xCBF4_3926);
    }

    #[test]
    fn f16_conversion_matches_half_for_every_value() {
        for bits in 0..=u16::MAX {
            let want = half::f16::from_bits(bits).to_f32();
            let got = f16_to_f32(bits);
            if want.is_nan() {
                assert!(got.is_nan(), "{bits:#06x}");
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{bits:#06x}");
            }
        }
    }
}
