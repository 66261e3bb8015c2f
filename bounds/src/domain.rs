//! The valid input range and the size of one data unit, per input element.

use alloc::vec::Vec;

/// Where attacks may move each input element, in the units the network sees.
///
/// With pixel data scaled to `[0, 1]` and normalised as `(p − mean)/std`, element `i` ranges
/// over `[(0 − mean)/std, (1 − mean)/std]` and one pixel unit is `1/std` model units. Attack
/// strengths (`ε`) are given in pixel units and multiplied by `unit`.
#[derive(Clone, Debug, PartialEq)]
pub struct InputDomain {
    /// Lowest allowed value per element (`D` values).
    pub lo: Vec<f32>,
    /// Highest allowed value per element (`D` values).
    pub hi: Vec<f32>,
    /// Model units per pixel unit, per element (`D` values).
    pub unit: Vec<f32>,
}

impl InputDomain {
    /// The same range and unit for all `d` elements.
    pub fn uniform(d: usize, lo: f32, hi: f32, unit: f32) -> Self {
        InputDomain { lo: alloc::vec![lo; d], hi: alloc::vec![hi; d], unit: alloc::vec![unit; d] }
    }

    /// Unbounded range, unit 1 (no clipping).
    pub fn unbounded(d: usize) -> Self {
        Self::uniform(d, f32::NEG_INFINITY, f32::INFINITY, 1.0)
    }

    /// Elements described.
    pub fn len(&self) -> usize {
        self.lo.len()
    }

    /// Whether it describes no element.
    pub fn is_empty(&self) -> bool {
        self.lo.is_empty()
    }

    /// `v` clamped to element `i`'s range.
    #[inline]
    pub fn clamp(&self, i: usize, v: f64) -> f64 {
        v.max(self.lo[i] as f64).min(self.hi[i] as f64)
    }
}
