//! `certify-gpu`: batched certification on the GPU through wgpu (Vulkan; WGSL compute kernels).
//!
//! [`GpuContext::new`] opens one device (an [`Error::NoAdapter`] with install advice when there is
//! none, never a panic). [`GpuCertifier::new`] compiles a [`certify_core::Network`] for it: every
//! node reaching the output must be Conv2d (any stride, padding, dilation, groups), Dense, Relu,
//! LeakyRelu, Clip, MaxPool2d, AvgPool2d, Affine, BatchNorm (inference), Add, Reshape or Identity;
//! any other layer is an [`Error::Unsupported`] naming the node. Weights are uploaded once.
//!
//! [`GpuCertifier::jacobians`] computes the logits and the exact Jacobian rows of a batch on the
//! GPU: one forward pass, then one reverse pass whose rows are the `(sample, class)` pairs, seeded
//! with unit cotangents, as [`certify_core::Network::jacobian`] does on the CPU.
//! [`GpuCertifier::certify`] turns them into [`certify_bounds::PointBounds`] (‖J‖_F, Prop. 3,
//! Cor. 2, curvature proxy) **on the host** with [`certify_bounds::point_bounds`]. Batches are
//! split into chunks so that no buffer exceeds the adapter's `max_storage_buffer_binding_size` /
//! `max_buffer_size` and one chunk allocates at most [`CHUNK_MEMORY_BYTES`].
//!
//! Kernels are WGSL files under `src/shaders/` (one entry point each, listed in [`shaders`]),
//! parameterised by uniform structs whose host layouts are checked against the shaders by naga.
//!
//! [`GpuTrainer`] runs the whole training step (forward, cross-entropy, the Jacobian penalty with
//! its exact gradient, optimizer update) on the device. With [`PROFILE_ENV`]
//! (`CERTIFY_GPU_PROFILE=1`) set when the context is created, every dispatch is timed with
//! timestamp queries and [`GpuTrainer::kernel_profile`] reports the device time per kernel.
//!
//! ```no_run
//! use certify_core::{Dense, Layer, Network};
//! use certify_gpu::{GpuCertifier, GpuContext};
//! let mut net = Network::<f32>::new(&[2]).unwrap();
//! net.then("fc", Layer::Dense(Dense { weight: vec![1.0, 0.0, 0.0, 1.0], bias: None, inputs: 2, outputs: 2 })).unwrap();
//! let ctx = match GpuContext::new() {
//!     Ok(ctx) => ctx,
//!     Err(e) => { eprintln!("{e}"); return; } // no adapter: fall back to the CPU
//! };
//! let gpu = GpuCertifier::new(&ctx, &net).unwrap();
//! let b = &gpu.certify(&[1.0, 0.0], 1).unwrap()[0];
//! assert!((b.cor2_estimate - 1.0 / 2f64.sqrt()).abs() < 1e-6);
//! ```
#![warn(missing_docs)]

mod certifier;
mod context;
mod error;
mod runtime;
pub mod shaders;
mod trainer;

pub use certifier::{GpuCertifier, CHUNK_MEMORY_BYTES};
pub use context::{GpuContext, PROFILE_ENV};
pub use error::{Error, Result};
pub use trainer::{GpuOptimizer, GpuTrainer, TRAIN_CHUNK_BYTES};
