//! `f64` helpers that work without `std` (through libm).

#[inline]
pub(crate) fn sq(x: f64) -> f64 {
    x * x
}
#[inline]
pub(crate) fn sqrt(x: f64) -> f64 {
    libm::sqrt(x)
}
#[inline]
pub(crate) fn abs(x: f64) -> f64 {
    libm::fabs(x)
}
#[inline]
pub(crate) fn exp(x: f64) -> f64 {
    libm::exp(x)
}
