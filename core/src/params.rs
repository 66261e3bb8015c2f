//! Gradients with respect to the trainable parameters, and in-place parameter updates.
//!
//! The trainable parameters are the weights and biases of [`Layer::Conv2d`] and
//! [`Layer::Dense`] and `gamma`/`beta` of [`Layer::BatchNorm`] (its running mean and variance
//! are statistics, not trained). [`Network::backward`] returns their gradients as a
//! [`ParamGrads`]; optimizers (see `train`) write updates back with
//! [`Network::update_params`].

use alloc::format;
use alloc::vec::Vec;

use crate::error::{Error, Result};
use crate::layer::Layer;
use crate::network::Network;
use crate::scalar::Float;

/// The gradients of one layer's parameters, in the layouts of the layer's own fields.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerGrads<T> {
    /// Of a [`Conv2d`](crate::Conv2d): `weight` `[out, in/groups, kh, kw]`, `bias` `[out]`.
    Conv2d {
        /// Gradient of the weights.
        weight: Vec<T>,
        /// Gradient of the bias (present exactly when the layer has one).
        bias: Option<Vec<T>>,
    },
    /// Of a [`Dense`](crate::Dense): `weight` `[out, in]`, `bias` `[out]`.
    Dense {
        /// Gradient of the weights.
        weight: Vec<T>,
        /// Gradient of the bias (present exactly when the layer has one).
        bias: Option<Vec<T>>,
    },
    /// Of a [`BatchNorm`](crate::BatchNorm): one value per channel each.
    BatchNorm {
        /// Gradient of the scale.
        gamma: Vec<T>,
        /// Gradient of the shift.
        beta: Vec<T>,
    },
}

impl<T: Float> LayerGrads<T> {
    /// Zeros shaped like the parameters of `layer`, or `None` when it has no trainable ones.
    pub fn zeros_like(layer: &Layer<T>) -> Option<Self> {
        let z = |v: &Vec<T>| alloc::vec![T::ZERO; v.len()];
        match layer {
            Layer::Conv2d(c) => Some(LayerGrads::Conv2d { weight: z(&c.weight), bias: c.bias.as_ref().map(z) }),
            Layer::Dense(d) => Some(LayerGrads::Dense { weight: z(&d.weight), bias: d.bias.as_ref().map(z) }),
            Layer::BatchNorm(b) => Some(LayerGrads::BatchNorm { gamma: z(&b.gamma), beta: z(&b.beta) }),
            _ => None,
        }
    }

    /// The parameter tensors in a fixed order: weight then bias, or gamma then beta.
    pub fn tensors(&self) -> Vec<&[T]> {
        match self {
            LayerGrads::Conv2d { weight, bias } | LayerGrads::Dense { weight, bias } => {
                let mut v = alloc::vec![weight.as_slice()];
                v.extend(bias.as_deref());
                v
            }
            LayerGrads::BatchNorm { gamma, beta } => alloc::vec![gamma.as_slice(), beta.as_slice()],
        }
    }

    /// [`tensors`](Self::tensors), mutably.
    pub fn tensors_mut(&mut self) -> Vec<&mut [T]> {
        match self {
            LayerGrads::Conv2d { weight, bias } | LayerGrads::Dense { weight, bias } => {
                let mut v = alloc::vec![weight.as_mut_slice()];
                v.extend(bias.as_deref_mut());
                v
            }
            LayerGrads::BatchNorm { gamma, beta } => alloc::vec![gamma.as_mut_slice(), beta.as_mut_slice()],
        }
    }
}

/// The trainable parameters of a layer, mutably, in the order of [`LayerGrads::tensors`]
/// (empty for layers without trainable parameters).
fn layer_tensors_mut<T>(layer: &mut Layer<T>) -> Vec<&mut [T]> {
    match layer {
        Layer::Conv2d(c) => {
            let mut v = alloc::vec![c.weight.as_mut_slice()];
            v.extend(c.bias.as_deref_mut());
            v
        }
        Layer::Dense(d) => {
            let mut v = alloc::vec![d.weight.as_mut_slice()];
            v.extend(d.bias.as_deref_mut());
            v
        }
        Layer::BatchNorm(b) => alloc::vec![b.gamma.as_mut_slice(), b.beta.as_mut_slice()],
        _ => Vec::new(),
    }
}

/// Gradients of all trainable parameters of a network: `nodes[id]` belongs to node `id` and is
/// `None` for nodes without trainable parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamGrads<T> {
    /// One entry per node of the network (index = node id).
    pub nodes: Vec<Option<LayerGrads<T>>>,
}

impl<T: Float> ParamGrads<T> {
    /// Zeros with the layout of `net`'s parameters.
    pub fn zeros_like(net: &Network<T>) -> Self {
        ParamGrads { nodes: net.nodes().iter().map(|n| LayerGrads::zeros_like(&n.layer)).collect() }
    }

    /// These gradients (of a [`truncated`](Network::truncated) prefix of `net`) extended with
    /// zeros to all of `net`'s nodes.
    pub fn padded_to(mut self, net: &Network<T>) -> Self {
        let n = self.nodes.len();
        self.nodes
            .extend(net.nodes()[n.min(net.nodes().len())..].iter().map(|node| LayerGrads::zeros_like(&node.layer)));
        self
    }

    /// Every parameter tensor, in node order (weight before bias, gamma before beta): the
    /// order in which [`Network::update_params`] visits them.
    pub fn tensors(&self) -> Vec<&[T]> {
        self.nodes.iter().flatten().flat_map(LayerGrads::tensors).collect()
    }

    /// [`tensors`](Self::tensors), mutably.
    pub fn tensors_mut(&mut self) -> Vec<&mut [T]> {
        self.nodes.iter_mut().flatten().flat_map(LayerGrads::tensors_mut).collect()
    }

    /// Number of scalar parameters.
    pub fn len(&self) -> usize {
        self.tensors().iter().map(|t| t.len()).sum()
    }

    /// Whether there are no parameters at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `self += other`. Panics when the layouts differ.
    pub fn add_assign(&mut self, other: &ParamGrads<T>) {
        self.axpy(T::ONE, other);
    }

    /// `self += alpha·other`. Panics when the layouts differ.
    pub fn axpy(&mut self, alpha: T, other: &ParamGrads<T>) {
        let theirs = other.tensors();
        let mut mine = self.tensors_mut();
        assert_eq!(mine.len(), theirs.len(), "parameter gradients of different networks");
        for (a, b) in mine.iter_mut().zip(theirs) {
            assert_eq!(a.len(), b.len(), "parameter gradients of different networks");
            a.iter_mut().zip(b).for_each(|(x, &y)| *x += alpha * y);
        }
    }

    /// `self *= s`.
    pub fn scale(&mut self, s: T) {
        for t in self.tensors_mut() {
            t.iter_mut().for_each(|v| *v *= s);
        }
    }

    /// `Σ self_i·other_i` over all parameters. Panics when the layouts differ.
    pub fn dot(&self, other: &ParamGrads<T>) -> T {
        let (a, b) = (self.tensors(), other.tensors());
        assert_eq!(a.len(), b.len(), "parameter gradients of different networks");
        a.iter()
            .zip(&b)
            .map(|(x, y)| {
                assert_eq!(x.len(), y.len(), "parameter gradients of different networks");
                crate::gemm::dot(x, y)
            })
            .sum()
    }

    /// `Σ self_i²`, the squared Euclidean norm over all parameters.
    pub fn norm2(&self) -> T {
        self.dot(self)
    }
}

impl<T: Float> Network<T> {
    /// Calls `f(index, params, grads)` for every trainable parameter tensor of the network,
    /// paired with its gradient in `grads`, in node order (weight before bias, gamma before
    /// beta); `index` counts the tensors from 0, so optimizers can keep per-tensor state.
    /// `f` may change the parameter values (not their number).
    ///
    /// Errors, before any call, when `grads` does not have this network's parameter layout.
    pub fn update_params<F>(&mut self, grads: &ParamGrads<T>, mut f: F) -> Result<()>
    where
        F: FnMut(usize, &mut [T], &[T]),
    {
        self.check_grads_layout(grads)?;
        let mut index = 0;
        for (id, g) in grads.nodes.iter().enumerate() {
            let Some(g) = g else { continue };
            let Some(layer) = self.layer_params_mut(id) else { continue };
            for (p, gt) in layer_tensors_mut(layer).into_iter().zip(g.tensors()) {
                f(index, p, gt);
                index += 1;
            }
        }
        Ok(())
    }

    /// `θ ← θ + alpha·delta` for every trainable parameter (`alpha = −lr` with a gradient is a
    /// plain gradient-descent step). Errors when `delta` does not fit the network.
    pub fn apply_update(&mut self, delta: &ParamGrads<T>, alpha: T) -> Result<()> {
        self.update_params(delta, |_, p, d| p.iter_mut().zip(d).for_each(|(x, &y)| *x += alpha * y))
    }

    /// The current parameter values, in the layout of [`ParamGrads`] (e.g. to save and
    /// restore them, or for weight decay).
    pub fn params(&self) -> ParamGrads<T> {
        ParamGrads {
            nodes: self
                .nodes()
                .iter()
                .map(|n| match &n.layer {
                    Layer::Conv2d(c) => Some(LayerGrads::Conv2d { weight: c.weight.clone(), bias: c.bias.clone() }),
                    Layer::Dense(d) => Some(LayerGrads::Dense { weight: d.weight.clone(), bias: d.bias.clone() }),
                    Layer::BatchNorm(b) => Some(LayerGrads::BatchNorm { gamma: b.gamma.clone(), beta: b.beta.clone() }),
                    _ => None,
                })
                .collect(),
        }
    }

    pub(crate) fn check_grads_layout(&self, grads: &ParamGrads<T>) -> Result<()> {
        let bad = |node: &str, reason: &str| Error::Parameter { node: node.into(), reason: reason.into() };
        if grads.nodes.len() != self.nodes().len() {
            return Err(bad(
                "network",
                &format!("gradients for {} nodes, the network has {}", grads.nodes.len(), self.nodes().len()),
            ));
        }
        for (n, g) in self.nodes().iter().zip(&grads.nodes) {
            let fits = match (LayerGrads::zeros_like(&n.layer), g) {
                (None, None) => true,
                (Some(z), Some(g)) => {
                    let (a, b) = (z.tensors(), g.tensors());
                    core::mem::discriminant(&z) == core::mem::discriminant(g)
                        && a.len() == b.len()
                        && a.iter().zip(&b).all(|(x, y)| x.len() == y.len())
                }
                _ => false,
            };
            if !fits {
                return Err(bad(&n.name, "the gradients do not have the layout of this layer's parameters"));
            }
        }
        Ok(())
    }
}
