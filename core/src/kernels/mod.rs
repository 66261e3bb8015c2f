//! Per-sample compute kernels used by the passes.

pub(crate) mod conv;
pub(crate) mod conv_sparse;
pub(crate) mod elementwise;
pub(crate) mod layout;
pub(crate) mod pool;
pub(crate) mod tiles;
