//! The error type of `certify-bounds`.

/// Everything that can go wrong when computing bounds or running attacks.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum Error {
    /// The network failed to run (bad input length, NaN input, …).
    #[error(transparent)]
    Network(#[from] certify_core::Error),
    /// A label is not one of the network's classes.
    #[error("label {label} of sample {index} is out of range for a network with {classes} classes")]
    LabelOutOfRange {
        /// Sample index in the batch.
        index: usize,
        /// The label.
        label: usize,
        /// Classes of the network.
        classes: usize,
    },
    /// A configuration value is unusable.
    #[error("invalid attack configuration: {0}")]
    Config(&'static str),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = core::result::Result<T, E>;
