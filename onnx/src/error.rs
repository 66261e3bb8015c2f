//! The error type of `certify-onnx`.

use std::path::PathBuf;

/// Everything that can go wrong when importing an ONNX model.
///
/// Every message names what was found and what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not an ONNX protobuf (wrong file, truncated download, empty file).
    #[error(
        "`{path}` is not a valid ONNX model: {reason}; check that the file is complete (not truncated) \
         and is an .onnx protobuf file"
    )]
    Decode {
        /// The file (`<bytes>` for [`import_bytes`](crate::import_bytes)).
        path: String,
        /// What the protobuf decoder reported.
        reason: String,
    },
    /// An operator certify cannot represent.
    #[error(
        "node `{node}`: operator `{op}` is not supported; certify imports {supported}. Re-export the \
         model without it (or replace it by supported operators)"
    )]
    UnsupportedOp {
        /// The ONNX operator (prefixed by its domain when not the default one).
        op: String,
        /// The ONNX node name (or its first output when unnamed).
        node: String,
        /// The operators this importer supports.
        supported: &'static str,
    },
    /// A supported operator with an attribute value certify cannot represent.
    #[error("node `{node}` ({op}): attribute `{attribute}` = {value} is not supported: {reason}")]
    UnsupportedAttribute {
        /// The ONNX operator.
        op: String,
        /// The ONNX node name.
        node: String,
        /// The attribute name.
        attribute: String,
        /// Its value, as text.
        value: String,
        /// Why it is refused and what to do.
        reason: String,
    },
    /// A supported operator used in a way certify cannot represent (for example a product of
    /// two non-constant tensors, or a reshape that mixes the batch axis into the features).
    #[error("node `{node}` ({op}): {reason}")]
    Unsupported {
        /// The ONNX operator.
        op: String,
        /// The ONNX node name.
        node: String,
        /// What is not supported and what to do.
        reason: String,
    },
    /// A constant tensor (initializer or `Constant` node) with bad values, such as NaN weights.
    #[error("tensor `{name}`: {reason}")]
    BadTensor {
        /// The initializer (or `Constant` node output) name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The graph is malformed or outside what certify imports (missing initializer, several
    /// inputs, symbolic non-batch dimensions, unsupported opset, …).
    #[error("{0}")]
    BadGraph(String),
    /// The network cannot be exported into the imported model (changed structure or constants,
    /// output path equal to the source, …).
    #[error("cannot export: {0}")]
    Export(String),
    /// [`export_network`](crate::export_network) was told not to overwrite
    /// ([`BuildOptions::overwrite`](crate::BuildOptions::overwrite) off) and the file exists.
    #[error("`{path}` already exists; remove it or choose another output file")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// A file could not be written (missing directory, no permission, full disk, …).
    #[error("cannot write `{path}`: {source}")]
    Write {
        /// The file (or the temporary file beside it).
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The imported layers were rejected by `certify-core` (inconsistent shapes or parameters).
    #[error("the imported network is invalid: {0}")]
    Core(#[from] certify_core::Error),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
