//! One mini-batch step of training: dropout, the objective's exact gradient, frozen weights,
//! the optimizer update, and a refusal to apply a non-finite update.

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::error::{Error, Result};
use crate::layer::Layer;
use crate::network::{Network, NodeId};
use crate::scalar::Float;
use crate::train::objective::{Objective, ObjectiveStats};
use crate::train::optim::Optimizer;
use crate::train::rng::{counter_bits, dropout_threshold, Rng};

/// Training-time dropout on the output of one node: each value is zeroed with probability
/// `rate` and the survivors scaled by `1/(1 − rate)` (inverted dropout, as PyTorch).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropoutSite {
    /// The node whose output is thinned.
    pub node: NodeId,
    /// Probability of zeroing a value, in `[0, 1)`.
    pub rate: f64,
}

/// The node of dropout site `s`; errors when it does not exist or the rate is outside `[0, 1)`.
fn checked_site<'a, T: Float>(net: &'a Network<T>, s: &DropoutSite) -> Result<&'a crate::network::Node<T>> {
    let node = net.nodes().get(s.node).ok_or(Error::Topology { node: "dropout".into(), input: s.node })?;
    if !(0.0..1.0).contains(&s.rate) {
        return Err(Error::Parameter {
            node: node.name.clone(),
            reason: alloc::format!("dropout rate {} outside [0, 1)", s.rate),
        });
    }
    Ok(node)
}

/// Fresh dropout masks for a batch of `batch` samples (see [`Network::trace_with_masks`]).
/// Errors when a site's node does not exist or its rate is outside `[0, 1)`.
pub fn dropout_masks<T: Float>(
    net: &Network<T>,
    sites: &[DropoutSite],
    batch: usize,
    rng: &mut Rng,
) -> Result<Vec<Option<Vec<T>>>> {
    let mut masks: Vec<Option<Vec<T>>> = alloc::vec![None; net.nodes().len()];
    for s in sites {
        let node = checked_site(net, s)?;
        if s.rate == 0.0 {
            continue;
        }
        let keep = T::from_f64(1.0 / (1.0 - s.rate));
        let m = (0..batch * node.size()).map(|_| if rng.uniform() < s.rate { T::ZERO } else { keep }).collect();
        masks[s.node] = Some(m);
    }
    Ok(masks)
}

/// Dropout masks drawn with the counter-based generator [`counter_bits`] instead of a sequential
/// stream: value `i` of sample `s` at site `node` is kept when
/// `counter_bits(seed, step, node, s·size + i) ≥ dropout_threshold(rate)`. These are the masks
/// the GPU trainer draws, so a CPU step with them is the reference for a GPU step. Errors like
/// [`dropout_masks`], and when `batch × node size` exceeds `u32::MAX`.
pub fn counter_dropout_masks<T: Float>(
    net: &Network<T>,
    sites: &[DropoutSite],
    batch: usize,
    seed: u64,
    step: u64,
) -> Result<Vec<Option<Vec<T>>>> {
    let mut masks: Vec<Option<Vec<T>>> = alloc::vec![None; net.nodes().len()];
    for s in sites {
        let node = checked_site(net, s)?;
        if s.rate == 0.0 {
            continue;
        }
        let n = batch * node.size();
        if n > u32::MAX as usize {
            return Err(Error::Parameter {
                node: node.name.clone(),
                reason: alloc::format!("{n} dropout values in one mini-batch (at most 2³² − 1)"),
            });
        }
        let keep = T::from_f64(1.0 / (1.0 - s.rate));
        let threshold = dropout_threshold(s.rate);
        let m = (0..n as u32)
            .map(|i| if counter_bits(seed, step, s.node as u32, i) < threshold { T::ZERO } else { keep })
            .collect();
        masks[s.node] = Some(m);
    }
    Ok(masks)
}

/// The dropout sites of a classic "dropout before every fully connected layer but the first"
/// recipe (the paper's MNIST network: before the last layer): the inputs of every
/// [`Layer::Dense`] except the first one on the path from the input.
pub fn dense_dropout_sites<T: Float>(net: &Network<T>, rate: f64) -> Vec<DropoutSite> {
    let dense: Vec<NodeId> =
        net.nodes().iter().enumerate().filter(|(_, n)| matches!(n.layer, Layer::Dense(_))).map(|(i, _)| i).collect();
    dense.iter().skip(1).map(|&id| DropoutSite { node: net.nodes()[id].inputs[0], rate }).collect()
}

/// Everything that defines how a network is trained, step by step. Deterministic for a given
/// seed, data order and thread count.
pub struct Trainer<T: Float> {
    /// The loss and its penalty.
    pub objective: Objective,
    /// Where dropout acts during training (never at inference).
    pub dropout: Vec<DropoutSite>,
    /// Nodes whose weights (not biases) are kept fixed, e.g. an orthonormal last layer.
    pub frozen_weights: Vec<NodeId>,
    /// The optimizer.
    pub optimizer: Box<dyn Optimizer<T> + Send>,
    /// Draws dropout masks and projection vectors.
    pub rng: Rng,
    /// Steps applied so far.
    pub steps: u64,
}

impl<T: Float> Trainer<T> {
    /// A trainer with no dropout and no frozen weights.
    pub fn new(objective: Objective, optimizer: Box<dyn Optimizer<T> + Send>, seed: u64) -> Self {
        Trainer { objective, dropout: Vec::new(), frozen_weights: Vec::new(), optimizer, rng: Rng::new(seed), steps: 0 }
    }

    /// One step on the mini-batch `x` (`[batch, D]`) with `labels`: dropout masks, the
    /// objective's value and exact gradient, frozen weights zeroed, one optimizer update.
    ///
    /// Errors without changing `net` when the data or labels are bad, or with
    /// [`Error::NonFiniteLoss`] when the loss or a gradient is not finite.
    pub fn step(&mut self, net: &mut Network<T>, x: &[T], labels: &[usize]) -> Result<ObjectiveStats> {
        let batch = labels.len();
        if batch == 0 {
            return Err(Error::DataLength { got: 0, expected: 1, what: "mini-batch samples" });
        }
        let masks = dropout_masks(net, &self.dropout, batch, &mut self.rng)?;
        let trace = net.training_trace(x, batch, masks)?;
        let step = self.steps + 1;
        if trace.logits().iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFiniteLoss { step, what: "logits" });
        }
        let (stats, mut grads) = match self.objective.evaluate(net, &trace, labels, &mut self.rng) {
            Err(Error::NonFinite { .. }) => return Err(Error::NonFiniteLoss { step, what: "gradient" }),
            r => r?,
        };
        drop(trace);
        for &id in &self.frozen_weights {
            if let Some(Some(g)) = grads.nodes.get_mut(id) {
                if let Some(w) = g.tensors_mut().into_iter().next() {
                    w.iter_mut().for_each(|v| *v = T::ZERO);
                }
            }
        }
        if !stats.loss.is_finite() {
            return Err(Error::NonFiniteLoss { step, what: "loss" });
        }
        if grads.tensors().iter().any(|t| t.iter().any(|v| !v.is_finite())) {
            return Err(Error::NonFiniteLoss { step, what: "gradient" });
        }
        self.optimizer.step(net, &grads)?;
        self.steps = step;
        Ok(stats)
    }
}
