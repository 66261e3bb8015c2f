//! The network: a DAG of [`Node`]s over the closed [`Layer`] enum.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::error::{Error, Result};
use crate::layer::{infer_shape, Layer};
use crate::scalar::Float;

/// Index of a node in [`Network::nodes`]. Node 0 is always the input.
pub type NodeId = usize;

/// One node: a layer applied to the outputs of earlier nodes.
#[derive(Clone, Debug, PartialEq)]
pub struct Node<T> {
    /// Name (the ONNX node name when imported).
    pub name: String,
    /// What the node computes.
    pub layer: Layer<T>,
    /// The nodes whose outputs feed this one, in order; each is smaller than this node's id.
    pub inputs: Vec<NodeId>,
    /// Per-sample output shape (no batch axis).
    pub shape: Vec<usize>,
}

impl<T> Node<T> {
    /// Number of values per sample this node produces.
    pub fn size(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A feed-forward classifier over per-sample inputs of a fixed shape, producing `K` logits.
///
/// Nodes are stored in topological order; the output is the last node. Every constructor checks
/// shapes and parameters, so a `Network` that exists can always be run.
#[derive(Clone, Debug, PartialEq)]
pub struct Network<T = f32> {
    nodes: Vec<Node<T>>,
}

impl<T: Float> Network<T> {
    /// A network that is only its input, with the given per-sample shape.
    pub fn new(input_shape: &[usize]) -> Result<Self> {
        if input_shape.is_empty()
            || input_shape.contains(&0)
            || crate::layer::checked_size(input_shape).is_none_or(|n| n > crate::layer::MAX_VALUES_PER_SAMPLE)
        {
            return Err(Error::Shape {
                node: "input".into(),
                reason: format!(
                    "input shape {input_shape:?} must be non-empty, with no zero axis and at most 2^31 values"
                ),
            });
        }
        Ok(Network {
            nodes: alloc::vec![Node {
                name: "input".into(),
                layer: Layer::Input,
                inputs: Vec::new(),
                shape: input_shape.to_vec()
            }],
        })
    }

    /// Appends a node and returns its id; checks shapes and parameters.
    pub fn push(&mut self, name: impl Into<String>, layer: Layer<T>, inputs: &[NodeId]) -> Result<NodeId> {
        let name = name.into();
        for &i in inputs {
            if i >= self.nodes.len() {
                return Err(Error::Topology { node: name, input: i });
            }
        }
        let shapes: Vec<&[usize]> = inputs.iter().map(|&i| self.nodes[i].shape.as_slice()).collect();
        let shape = infer_shape(&name, &layer, &shapes)?;
        if shape.contains(&0) {
            return Err(Error::Shape { node: name, reason: format!("output shape {shape:?} has an empty axis") });
        }
        self.nodes.push(Node { name, layer, inputs: inputs.to_vec(), shape });
        Ok(self.nodes.len() - 1)
    }

    /// Appends a node fed by the current last node.
    pub fn then(&mut self, name: impl Into<String>, layer: Layer<T>) -> Result<NodeId> {
        let last = self.nodes.len() - 1;
        self.push(name, layer, &[last])
    }

    /// Rebuilds a network from nodes (node 0 must be the input), re-checking everything.
    pub fn from_nodes(nodes: Vec<Node<T>>) -> Result<Self> {
        let mut it = nodes.into_iter();
        let first = it.next().ok_or_else(|| Error::Shape { node: "input".into(), reason: "no nodes".into() })?;
        if first.layer != Layer::Input {
            return Err(Error::Shape { node: first.name, reason: "node 0 must be the input".into() });
        }
        let mut net = Network::new(&first.shape)?;
        net.nodes[0].name = first.name;
        for n in it {
            if n.layer == Layer::Input {
                return Err(Error::Shape { node: n.name, reason: "only node 0 can be an input".into() });
            }
            net.push(n.name, n.layer, &n.inputs)?;
        }
        Ok(net)
    }

    /// All nodes in topological order.
    pub fn nodes(&self) -> &[Node<T>] {
        &self.nodes
    }

    /// Mutable access to a node's layer, for training code that updates weights in place.
    /// Shapes cannot change through this handle: only parameter *values* may be modified.
    pub fn layer_params_mut(&mut self, id: NodeId) -> Option<&mut Layer<T>> {
        self.nodes.get_mut(id).map(|n| &mut n.layer)
    }

    /// Per-sample input shape.
    pub fn input_shape(&self) -> &[usize] {
        &self.nodes[0].shape
    }

    /// Values per input sample (`D`).
    pub fn input_len(&self) -> usize {
        self.nodes[0].size()
    }

    /// Per-sample output shape.
    pub fn output_shape(&self) -> &[usize] {
        &self.nodes[self.nodes.len() - 1].shape
    }

    /// Number of logits per sample (`K`).
    pub fn num_classes(&self) -> usize {
        self.nodes[self.nodes.len() - 1].size()
    }

    /// Id of the output node.
    pub fn output(&self) -> NodeId {
        self.nodes.len() - 1
    }

    /// Checks that the output is a vector of at least two logits per sample.
    pub fn check_classifier(&self) -> Result<()> {
        let shape = self.output_shape();
        let k = self.num_classes();
        if k < 2 || shape.iter().filter(|&&d| d != 1).count() > 1 {
            return Err(Error::NotAClassifier { shape: shape.to_vec() });
        }
        Ok(())
    }

    /// The sub-network of nodes `0..=id` whose output is node `id` (e.g. the penultimate
    /// layer). Node ids are unchanged. Errors when `id` is out of range or the input itself.
    pub fn truncated(&self, id: NodeId) -> Result<Network<T>> {
        if id == 0 || id >= self.nodes.len() {
            return Err(Error::Topology { node: "truncation".into(), input: id });
        }
        Ok(Network { nodes: self.nodes[..=id].to_vec() })
    }

    /// The same network with parameters converted to another float type.
    pub fn cast<U: Float>(&self) -> Network<U> {
        Network {
            nodes: self
                .nodes
                .iter()
                .map(|n| Node {
                    name: n.name.clone(),
                    layer: n.layer.cast(),
                    inputs: n.inputs.clone(),
                    shape: n.shape.clone(),
                })
                .collect(),
        }
    }

    /// Number of consumers of each node (the output counts as consumed once).
    pub(crate) fn consumers(&self) -> Vec<usize> {
        let mut c = alloc::vec![0usize; self.nodes.len()];
        for n in &self.nodes {
            for &i in &n.inputs {
                c[i] += 1;
            }
        }
        let out = self.output();
        c[out] += 1;
        c
    }

    /// Whether each node's value influences the output.
    pub(crate) fn live(&self) -> Vec<bool> {
        let mut live = alloc::vec![false; self.nodes.len()];
        let out = self.output();
        live[out] = true;
        for id in (0..self.nodes.len()).rev() {
            if live[id] {
                for &i in &self.nodes[id].inputs {
                    live[i] = true;
                }
            }
        }
        live
    }
}
