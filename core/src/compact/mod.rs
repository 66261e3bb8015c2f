//! A compact model format for devices, and an allocation-free engine that certifies from it.
//!
//! - [`to_compact`] serialises a [`Network<f32>`](crate::Network) (weights in `f32` or `f16`);
//! - [`CompactModel::load`] validates the bytes and views them in place (e.g. in flash);
//! - [`CompactModel::certify`] runs the forward pass, the exact logit Jacobian and the
//!   Prop. 3 / Cor. 2 figures ([`first_order`](crate::first_order)) inside a caller-provided
//!   scratch buffer of [`CompactModel::scratch_size`] bytes, without allocating;
//!   [`CompactModel::infer`] computes the logits only.
//!
//! `f16` weights are converted to `f32` as they are read; all arithmetic is `f32`. The layout is
//! documented in [`format`].
//!
//! ```
//! use certify_core::compact::{to_compact, AlignedModel, CompactModel, Precision};
//! use certify_core::{Dense, Layer, Network};
//! let mut net = Network::<f32>::new(&[2]).unwrap();
//! net.then("fc", Layer::Dense(Dense { weight: vec![1.0, 0.0, 0.0, 1.0], bias: None, inputs: 2, outputs: 2 })).unwrap();
//! let bytes = AlignedModel::new(&to_compact(&net, Precision::F16).unwrap());
//! let model = CompactModel::load(bytes.as_bytes()).unwrap();
//! let mut scratch = vec![0u8; model.scratch_size()];
//! let c = model.certify(&[1.0, 0.0], &mut scratch).unwrap();
//! assert_eq!((c.predicted, c.runner_up), (0, 1));
//! assert!((c.cor2_estimate - 1.0 / 2f64.sqrt()).abs() < 1e-6); // exact for a linear model
//! ```

pub mod format;
mod kernels;
mod load;
mod run;
mod write;

use alloc::vec::Vec;

pub use format::MAX_CLASSES;
pub use load::CompactModel;
pub use run::Certificate;
pub use write::to_compact;

/// How weight matrices (convolution and dense weights) are stored. Biases and elementwise
/// scales are always `f32`; all arithmetic is `f32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// 4 bytes per weight.
    F32,
    /// IEEE binary16, 2 bytes per weight (about 3 significant decimal digits).
    F16,
}

impl Precision {
    /// The code stored in the header.
    pub fn code(self) -> u16 {
        match self {
            Precision::F32 => format::PRECISION_F32,
            Precision::F16 => format::PRECISION_F16,
        }
    }

    /// The precision of a header code.
    pub fn from_code(code: u16) -> Option<Self> {
        match code {
            format::PRECISION_F32 => Some(Precision::F32),
            format::PRECISION_F16 => Some(Precision::F16),
            _ => None,
        }
    }

    /// `"f32"` or `"f16"`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }
}

/// Model bytes copied into a 4-byte aligned buffer, as [`CompactModel::load`] needs (a `Vec<u8>`
/// read from a file has no alignment guarantee).
#[derive(Clone, Debug)]
pub struct AlignedModel {
    words: Vec<u32>,
    len: usize,
}

impl AlignedModel {
    /// Copies `bytes`.
    pub fn new(bytes: &[u8]) -> Self {
        let mut words = alloc::vec![0u32; bytes.len().div_ceil(4)];
        bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        AlignedModel { words, len: bytes.len() }
    }

    /// The bytes, starting at a 4-byte aligned address.
    pub fn as_bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<u32, u8>(&self.words)[..self.len]
    }
}
