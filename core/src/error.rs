//! The error type of `certify-core`.

use alloc::string::String;
use alloc::vec::Vec;

/// Everything that can go wrong when building or running a network.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum Error {
    /// A node's inputs do not have the shapes its layer needs.
    #[error("node `{node}`: {reason}")]
    Shape {
        /// Name of the offending node.
        node: String,
        /// What is wrong, in words.
        reason: String,
    },
    /// A layer parameter is invalid (zero stride, weight of the wrong length, …).
    #[error("node `{node}`: invalid parameter: {reason}")]
    Parameter {
        /// Name of the offending node.
        node: String,
        /// What is wrong, in words.
        reason: String,
    },
    /// A node refers to an input that does not precede it.
    #[error("node `{node}` refers to input #{input}, which is not an earlier node")]
    Topology {
        /// Name of the offending node.
        node: String,
        /// The bad input index.
        input: usize,
    },
    /// The data handed to a pass has the wrong length.
    #[error("input data has {got} values, expected {expected} ({what})")]
    DataLength {
        /// Values given.
        got: usize,
        /// Values expected.
        expected: usize,
        /// Which buffer.
        what: &'static str,
    },
    /// The data contains NaN or an infinity.
    #[error("input data contains a non-finite value (NaN or infinity) at position {index}")]
    NonFinite {
        /// Flat index of the first non-finite value.
        index: usize,
    },
    /// The network's output is not a vector of logits per sample.
    #[error("the network output has per-sample shape {shape:?}; a classifier must output one vector of K ≥ 2 logits")]
    NotAClassifier {
        /// Per-sample output shape.
        shape: Vec<usize>,
    },
    /// A pass needs a piecewise-linear network and meets a smooth nonlinearity.
    #[error(
        "node `{node}` ({kind}) has a non-zero second derivative; the exact Jacobian-penalty gradient needs a \
         piecewise-linear network (ReLU, LeakyReLU, Clip, max pooling and affine layers)"
    )]
    NotPiecewiseLinear {
        /// Name of the offending node.
        node: String,
        /// Its layer kind.
        kind: &'static str,
    },
    /// Training produced a NaN or an infinity; the step was not applied.
    #[error("training step {step}: the {what} went non-finite (NaN or infinity) and the step was not applied; try a smaller learning rate or λ")]
    NonFiniteLoss {
        /// The step (counting from 1) whose update was refused.
        step: u64,
        /// `"logits"`, `"loss"` or `"gradient"`.
        what: &'static str,
    },
    /// A layer or network cannot be written to the compact model format ([`crate::compact`]).
    #[error("node `{node}` ({kind}) cannot be written to the compact model format: {reason}")]
    CompactUnsupported {
        /// Name of the offending node.
        node: String,
        /// Its layer kind.
        kind: &'static str,
        /// Why, and what to do instead.
        reason: String,
    },
    /// Compact model bytes failed validation (corrupt, truncated, or from another version).
    #[error("invalid compact model{}: {what}", node_suffix(.node))]
    CompactInvalid {
        /// Index of the node-table entry at fault, when the fault is in one.
        node: Option<usize>,
        /// What is wrong, in words.
        what: &'static str,
    },
    /// A buffer handed to the compact engine is not aligned as it needs.
    #[error(
        "the {what} start {offset} byte(s) past a multiple of {align}; they must be {align}-byte aligned \
         (read the file into a buffer of u32 words, or align the flash section)"
    )]
    Misaligned {
        /// Which buffer.
        what: &'static str,
        /// The alignment needed, in bytes.
        align: usize,
        /// The address modulo `align`.
        offset: usize,
    },
    /// The scratch buffer handed to the compact engine is too small.
    #[error("the scratch buffer has {got} bytes but {needed} are needed (see CompactModel::scratch_size)")]
    ScratchTooSmall {
        /// Bytes given.
        got: usize,
        /// Bytes needed.
        needed: usize,
    },
}

/// ` (node N)` for messages about one node-table entry, nothing otherwise.
fn node_suffix(node: &Option<usize>) -> NodeSuffix {
    NodeSuffix(*node)
}

struct NodeSuffix(Option<usize>);

impl core::fmt::Display for NodeSuffix {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(n) => write!(f, " (node {n})"),
            None => Ok(()),
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = core::result::Result<T, E>;
