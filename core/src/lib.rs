//! `certify-core`: the network type of certify, its forward pass, and exact logit Jacobians.
//!
//! A [`Network`] is a DAG of nodes over the closed [`Layer`] enum, with per-sample shapes
//! (the batch axis is implicit). It computes, for a batch of inputs:
//! - logits ([`Network::forward`]) and all node values ([`Network::trace`]);
//! - vector-Jacobian products `uᵀJ` ([`Network::vjp`], reverse mode);
//! - Jacobian-vector products `Jv` ([`Network::jvp`], forward mode);
//! - parameter gradients ([`Network::backward`], [`ParamGrads`]) and training utilities
//!   ([`train`]: softmax cross-entropy, SGD, Adam, RMSProp);
//! - the exact Jacobian `J = ∂z/∂x` of the logits `z` with respect to the input
//!   ([`Network::jacobian`]), whose Frobenius norm is what Jacobian regularisation penalises.
//!
//! Everything is generic over [`Float`] (`f32` for production, `f64` for reference checks) and
//! works without `std` (with `alloc`) when the default `std` feature is off; with `std`, batches
//! are spread over rayon's thread pool.
//!
//! ```
//! use certify_core::{Dense, Layer, Network};
//! let mut net = Network::<f32>::new(&[2]).unwrap();
//! net.then("fc", Layer::Dense(Dense { weight: vec![1.0, 2.0, 3.0, 4.0], bias: None, inputs: 2, outputs: 2 })).unwrap();
//! let j = net.jacobian(&[0.5, -1.0], 1).unwrap();
//! assert_eq!(j.jacobian_of(0), &[1.0, 2.0, 3.0, 4.0]); // a linear map is its own Jacobian
//! ```
#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]

extern crate alloc;

pub mod arch;
mod bilinear;
pub mod compact;
mod demand;
mod error;
mod first_order;
mod forward;
mod gemm;
mod jacobian;
mod kernels;
mod layer;
mod network;
mod parallel;
mod params;
mod pooled;
mod pooled_dense;
mod reverse;
mod scalar;
mod tangent;
pub mod train;

pub use bilinear::BilinearGrads;
pub use error::{Error, Result};
pub use first_order::{first_order, top2, FirstOrder};
pub use forward::Trace;
pub use jacobian::Jacobians;
pub use layer::{infer_shape, Affine, BatchNorm, Conv2d, Dense, Layer, Pad, Pool2d};
pub use network::{Network, Node, NodeId};
pub use params::{LayerGrads, ParamGrads};
pub use scalar::Float;
