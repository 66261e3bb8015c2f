//! Training: the objective of Jacobian regularisation and its relatives ([`Objective`], exact
//! parameter gradients), a mini-batch [`Trainer`] with dropout and frozen weights, a seeded
//! [`Rng`], and the building blocks below it: the softmax cross-entropy loss and first-order
//! optimizers
//! ([`Sgd`], [`Adam`], [`RmsProp`]) that update a [`Network`](crate::Network) in place from the
//! parameter gradients of [`Network::backward`](crate::Network::backward).
//!
//! ```
//! use certify_core::train::{softmax_cross_entropy, Adam, Optimizer};
//! use certify_core::{Dense, Layer, Network};
//! let mut net = Network::<f64>::new(&[2]).unwrap();
//! net.then("fc", Layer::Dense(Dense { weight: vec![0.0; 4], bias: Some(vec![0.0; 2]), inputs: 2, outputs: 2 }))
//!     .unwrap();
//! let (x, labels) = ([1.0, 0.0, 0.0, 1.0], [0, 1]);
//! let mut adam = Adam::new(0.1);
//! for _ in 0..50 {
//!     let trace = net.trace(&x, 2).unwrap();
//!     let (_loss, dlogits) = softmax_cross_entropy(trace.logits(), &labels, 2);
//!     let (_, grads) = net.backward(&trace, &dlogits, 1).unwrap();
//!     adam.step(&mut net, &grads).unwrap();
//! }
//! let (loss, _) = softmax_cross_entropy(&net.forward(&x, 2).unwrap(), &labels, 2);
//! assert!(loss < 0.05);
//! ```

mod loss;
mod objective;
mod optim;
mod rng;
mod schedule;
mod trainer;

pub use loss::softmax_cross_entropy;
pub use objective::{LossForm, Objective, ObjectiveStats, PenaltyEstimate, PenaltyTarget, Regularizer};
pub use optim::{Adam, Optimizer, OptimizerState, RmsProp, Sgd};
pub use rng::{counter_bits, dropout_threshold, Rng};
pub use schedule::LrSchedule;
pub use trainer::{counter_dropout_masks, dense_dropout_sites, dropout_masks, DropoutSite, Trainer};
