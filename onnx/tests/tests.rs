//! Integration tests of `certify-onnx`: the shared real models, golden fixtures built in Rust,
//! and malformed inputs.

mod cases;
mod support;
