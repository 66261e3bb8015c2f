//! `certify-onnx`: imports ONNX classifiers into certify's [`Network`].
//!
//! The importer reads the raw ONNX protobuf graph (through `tract-onnx`'s generated `pb` types)
//! rather than an optimised model, so every layer stays visible, and maps each operator onto
//! one of `certify-core`'s closed set of [`Layer`](certify_core::Layer)s:
//!
//! - the one graph input that is not an initializer is the network input; its first axis is the
//!   batch axis whatever its declared value (symbolic, `-1`, `0` or a fixed `1` as in VNN-COMP
//!   exports), the other axes must be fixed and form the per-sample shape;
//! - the first graph output is the network output; a final `Softmax`/`LogSoftmax` is stripped
//!   (the network computes the logits before it) and reported in [`Imported::stripped_softmax`];
//! - shape computations (`Shape → Gather → Unsqueeze → Concat → Reshape`, `Cast`, `Slice`, …)
//!   are evaluated at import time from the statically known per-sample shapes;
//! - anything that cannot be represented exactly is refused with an [`Error`] naming the
//!   operator, the node and what to do; supported operators are listed in [`SUPPORTED_OPS`].
//!
//! Opsets 9 to 18 are supported.
//!
//! [`export`] / [`export_bytes`] write the imported model back with a network's current
//! parameter values (after training, for example): same graph, names, opset and metadata; each
//! trainable parameter goes back into the tensor it came from ([`Imported::params`] records the
//! tensor and the transform applied on import), in the tensor's original data type and layout.
//!
//! ```no_run
//! use std::path::Path;
//!
//! let imported = certify_onnx::import_path(Path::new("model.onnx"))?;
//! let net = &imported.network;
//! println!("input `{}` {:?} → {} classes", imported.input_name, net.input_shape(), net.num_classes());
//! for note in &imported.notes {
//!     println!("note: {note}");
//! }
//! let x = vec![0.5f32; net.input_len()];
//! let logits = net.forward(&x, 1)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Errors say what went wrong and where:
//!
//! ```
//! let err = certify_onnx::import_bytes(b"definitely not protobuf").unwrap_err();
//! assert!(matches!(err, certify_onnx::Error::Decode { .. }));
//! assert!(err.to_string().contains("is not a valid ONNX model"));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod attrs;
mod build;
mod error;
mod export;
mod import;
mod tensor;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use certify_core::Network;
use prost::Message;
use tract_onnx::pb::ModelProto;

pub use build::{
    export_network, export_network_bytes, BuildOptions, BATCH_DIM, BUILD_IR_VERSION, BUILD_OPSET, INPUT_NAME,
    OUTPUT_NAME,
};
pub use error::{Error, Result};
pub use export::{export, export_bytes, ParamKind, ParamSource, TensorLocation, Transform};

/// The ONNX operators the importer supports, as listed in error messages.
pub const SUPPORTED_OPS: &str = "Conv (2-D), MaxPool, AveragePool, GlobalAveragePool, ReduceMean (over all spatial \
     axes), Gemm, MatMul (by a constant), Add, Sub, Mul, Div (with a constant operand; Add/Sub of two tensors of \
     equal shape), Neg, BatchNormalization, Relu, LeakyRelu, PRelu (one slope), Sigmoid, Tanh, Clip, Flatten, Reshape, Squeeze, \
     Unsqueeze, Concat, Pad (constant mode), Transpose (keeping the batch axis first), Dropout, Identity, Cast (to \
     float), Constant, and a final Softmax/LogSoftmax (stripped); on constants only (shape computations): Shape, \
     Gather, Slice, Cast, Concat, Unsqueeze, Squeeze, Reshape, Flatten, Transpose, Add, Sub, Mul, Div, Neg";

/// An imported model: the network and what the importer learned or changed on the way.
#[derive(Clone, Debug)]
pub struct Imported {
    /// The network, taking per-sample inputs of the ONNX input shape without its batch axis.
    pub network: Network<f32>,
    /// Name of the ONNX graph input.
    pub input_name: String,
    /// Name of the ONNX value the network outputs: the first graph output, or the input of the
    /// stripped final softmax.
    pub output_name: String,
    /// The input shape as declared, batch axis included; `-1` (or `0`, as some exporters write)
    /// marks a symbolic dimension.
    pub input_shape_onnx: Vec<i64>,
    /// `Some("Softmax")` or `Some("LogSoftmax")` when such a final operator was stripped.
    pub stripped_softmax: Option<String>,
    /// The model's `ai.onnx` opset.
    pub opset: i64,
    /// Human-readable notes on what the importer did (stripped softmax, fixed batch, …).
    pub notes: Vec<String>,
    /// Where each trainable parameter of [`network`](Self::network) comes from (initializer and
    /// the transform applied on import), used by [`export`]. Parameters without an entry (a bias
    /// created by merging a constant `Mul`, …) can only be exported unchanged.
    pub params: Vec<ParamSource>,
    /// The decoded ONNX model, kept for [`export`].
    model: SourceModel,
    /// The file it was read from ([`import_path`] only).
    source_path: Option<PathBuf>,
}

/// The original model; its `Debug` does not print the weights.
#[derive(Clone, Default)]
pub(crate) struct SourceModel(pub(crate) Arc<ModelProto>);

impl std::fmt::Debug for SourceModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.0.graph.as_ref();
        write!(
            f,
            "ModelProto {{ {} nodes, {} initializers }}",
            g.map_or(0, |g| g.node.len()),
            g.map_or(0, |g| g.initializer.len())
        )
    }
}

impl Imported {
    /// The file the model was imported from (`None` for [`import_bytes`]).
    pub fn source_path(&self) -> Option<&Path> {
        self.source_path.as_deref()
    }

    /// The original ONNX model, as decoded.
    pub fn model(&self) -> &ModelProto {
        &self.model.0
    }
}

/// Reads and imports the ONNX file at `path`.
pub fn import_path(path: &Path) -> Result<Imported> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    let mut imported = import_labelled(&bytes, &path.display().to_string())?;
    imported.source_path = Some(path.to_path_buf());
    Ok(imported)
}

/// Imports an ONNX model from its serialized bytes.
pub fn import_bytes(bytes: &[u8]) -> Result<Imported> {
    import_labelled(bytes, "<bytes>")
}

fn import_labelled(bytes: &[u8], label: &str) -> Result<Imported> {
    let decode_err = |reason: String| Error::Decode { path: label.to_string(), reason };
    if bytes.is_empty() {
        return Err(decode_err("the file is empty".into()));
    }
    let model = ModelProto::decode(bytes).map_err(|e| decode_err(e.to_string()))?;
    if model.graph.is_none() {
        return Err(decode_err("it decodes as protobuf but holds no graph".into()));
    }
    let mut imported = import::import_model(&model)?;
    imported.model = SourceModel(Arc::new(model));
    log::info!(
        "imported {label}: opset {}, input `{}` {:?}, {} nodes, {} classes",
        imported.opset,
        imported.input_name,
        imported.input_shape_onnx,
        imported.network.nodes().len(),
        imported.network.num_classes()
    );
    Ok(imported)
}
