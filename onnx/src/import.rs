//! Walks the raw ONNX graph and builds the certify network.

use std::collections::HashMap;
use std::rc::Rc;

use certify_core::{infer_shape, Affine, BatchNorm, Conv2d, Dense, Layer, Network, Node, NodeId, Pad, Pool2d};
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::dimension::Value as DimValue;
use tract_onnx::pb::type_proto::Value as TypeValue;
use tract_onnx::pb::{GraphProto, ModelProto, NodeProto, TensorProto};

use crate::attrs::Attrs;
use crate::error::{Error, Result};
use crate::export::{expand_index, ParamKind, ParamSource, TensorLocation, Transform};
use crate::tensor::{self, checked_size, to_finite_f32, Const};
use crate::{Imported, SUPPORTED_OPS};

/// Lowest and highest supported `ai.onnx` opset.
const OPSETS: (i64, i64) = (9, 18);

/// Largest attribute value (kernel, stride, padding, …) accepted.
const MAX_ATTR: i64 = 1 << 20;

/// Operators that are evaluated at import time when all their inputs are constants.
const FOLDABLE: &[&str] = &[
    "Identity",
    "Dropout",
    "Cast",
    "Shape",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Flatten",
    "Reshape",
    "Concat",
    "Slice",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Neg",
    "Transpose",
];

/// A value of the ONNX graph: known at import time, or computed by a network node.
#[derive(Clone, Debug)]
enum Val {
    Const(Rc<Const>),
    Node(NodeId),
}

/// The node being converted, for messages.
struct Ctx<'a> {
    n: &'a NodeProto,
    name: &'a str,
    op: &'a str,
}

impl Ctx<'_> {
    fn unsupported(&self, reason: impl Into<String>) -> Error {
        Error::Unsupported { op: self.op.to_string(), node: self.name.to_string(), reason: reason.into() }
    }
    fn unsupported_op(&self) -> Error {
        let op = if self.n.domain.is_empty() || self.n.domain == "ai.onnx" {
            self.op.to_string()
        } else {
            format!("{}.{}", self.n.domain, self.op)
        };
        Error::UnsupportedOp { op, node: self.name.to_string(), supported: SUPPORTED_OPS }
    }
    fn bad_attr(&self, attribute: &str, value: impl std::fmt::Debug, reason: impl Into<String>) -> Error {
        Error::UnsupportedAttribute {
            op: self.op.to_string(),
            node: self.name.to_string(),
            attribute: attribute.to_string(),
            value: format!("{value:?}"),
            reason: reason.into(),
        }
    }
    fn bad(&self, reason: impl std::fmt::Display) -> Error {
        Error::BadGraph(format!("node `{}` ({}): {reason}", self.name, self.op))
    }
    fn input_name(&self, i: usize) -> &str {
        self.n.input.get(i).map_or("", String::as_str)
    }
}

/// `[N, a, b]` for a per-sample shape `[a, b]`.
fn full(s: &[usize]) -> String {
    let mut t = String::from("[N");
    for d in s {
        t.push_str(&format!(", {d}"));
    }
    t.push(']');
    t
}

/// The name shown for a node: its ONNX name, else its first output, else op and position.
fn display_name(n: &NodeProto, idx: usize) -> String {
    if !n.name.is_empty() {
        n.name.clone()
    } else if let Some(o) = n.output.iter().find(|o| !o.is_empty()) {
        o.clone()
    } else {
        format!("{}#{idx}", n.op_type)
    }
}

/// Normalises a possibly negative axis for a tensor of rank `rank` (valid: `-rank..rank`).
fn norm_axis(c: &Ctx, axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if !(0..r).contains(&a) {
        return Err(c.bad(format!("axis {axis} is out of range for a tensor of rank {rank}")));
    }
    Ok(a as usize)
}

fn ai_onnx_opset(model: &ModelProto) -> Result<i64> {
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| Error::BadGraph("the model declares no ai.onnx opset (opset_import); re-export it".into()))?;
    if !(OPSETS.0..=OPSETS.1).contains(&opset) {
        return Err(Error::BadGraph(format!(
            "opset {opset} is not supported: certify imports opsets {} to {}; re-export the model with e.g. \
             torch.onnx.export(..., opset_version=17), or convert it with onnx.version_converter",
            OPSETS.0, OPSETS.1
        )));
    }
    Ok(opset)
}

/// The final Softmax to strip.
struct Strip {
    node: usize,
    kind: &'static str,
}

/// Walks back from the graph output through Identity/Dropout and finds a final Softmax,
/// LogSoftmax or Log∘Softmax; returns the value the network must compute.
fn find_softmax<'g>(
    graph: &'g GraphProto,
    producer: &HashMap<&str, usize>,
    output: &'g str,
) -> (&'g str, Option<Strip>) {
    let mut cur = output;
    let mut log_seen = false;
    for _ in 0..=graph.node.len() {
        let Some(&i) = producer.get(cur) else { break };
        let n = &graph.node[i];
        let Some(x) = n.input.first().map(String::as_str).filter(|x| !x.is_empty()) else { break };
        if n.output.first().map(String::as_str) != Some(cur) || !(n.domain.is_empty() || n.domain == "ai.onnx") {
            break;
        }
        match n.op_type.as_str() {
            "Identity" | "Dropout" => cur = x,
            "Log" if !log_seen => {
                log_seen = true;
                cur = x;
            }
            "Softmax" => return (x, Some(Strip { node: i, kind: if log_seen { "LogSoftmax" } else { "Softmax" } })),
            "LogSoftmax" if !log_seen => return (x, Some(Strip { node: i, kind: "LogSoftmax" })),
            _ => break,
        }
    }
    (output, None)
}

/// The nodes `target` depends on, in an order where every node follows its producers (the file's
/// order when it already is one).
fn needed_nodes(graph: &GraphProto, producer: &HashMap<&str, usize>, target: &str) -> Result<Vec<usize>> {
    let mut state = vec![0u8; graph.node.len()]; // 0 unseen, 1 on the stack, 2 done
    let mut order = Vec::new();
    let Some(&start) = producer.get(target) else { return Ok(order) };
    let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
    state[start] = 1;
    while let Some(&(node, k)) = stack.last() {
        let inputs = &graph.node[node].input;
        if k < inputs.len() {
            if let Some(top) = stack.last_mut() {
                top.1 += 1;
            }
            if let Some(&p) = producer.get(inputs[k].as_str()) {
                match state[p] {
                    0 => {
                        state[p] = 1;
                        stack.push((p, 0));
                    }
                    1 => {
                        return Err(Error::BadGraph(format!(
                            "the graph has a cycle through value `{}`; ONNX graphs must be acyclic",
                            inputs[k]
                        )))
                    }
                    _ => {}
                }
            }
        } else {
            state[node] = 2;
            order.push(node);
            stack.pop();
        }
    }
    let mut sorted = order.clone();
    sorted.sort_unstable();
    let in_file_order =
        sorted.iter().all(|&i| graph.node[i].input.iter().all(|x| producer.get(x.as_str()).is_none_or(|&p| p < i)));
    Ok(if in_file_order { sorted } else { order })
}

/// Converts a decoded model.
pub(crate) fn import_model(model: &ModelProto) -> Result<Imported> {
    let opset = ai_onnx_opset(model)?;
    let graph = model.graph.as_ref().ok_or_else(|| Error::BadGraph("the model has no graph".into()))?;
    let mut notes = Vec::new();

    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            if producer.insert(o, i).is_some() {
                return Err(Error::BadGraph(format!("value `{o}` is produced by several nodes")));
            }
        }
    }
    let initializers: HashMap<&str, &TensorProto> = graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();

    let output = graph
        .output
        .first()
        .map(|o| o.name.as_str())
        .ok_or_else(|| Error::BadGraph("the graph declares no output".into()))?;
    if graph.output.len() > 1 {
        notes.push(format!("the graph has {} outputs; using the first, `{output}`", graph.output.len()));
    }
    if !producer.contains_key(output) {
        let what = if initializers.contains_key(output) {
            "a constant initializer"
        } else if graph.input.iter().any(|i| i.name == output) {
            "the graph input itself"
        } else {
            "not defined anywhere"
        };
        return Err(Error::BadGraph(format!("the graph output `{output}` is not produced by any node (it is {what})")));
    }

    let (target, strip) = find_softmax(graph, &producer, output);
    let order = needed_nodes(graph, &producer, target)?;

    // The one graph input that is not an initializer and that the output depends on.
    let referenced =
        |name: &str| name == target || order.iter().any(|&i| graph.node[i].input.iter().any(|x| x == name));
    let candidates: Vec<_> = graph.input.iter().filter(|i| !initializers.contains_key(i.name.as_str())).collect();
    let used: Vec<_> = candidates.iter().filter(|i| referenced(&i.name)).collect();
    let input = match used.as_slice() {
        [one] => **one,
        [] if candidates.is_empty() => {
            return Err(Error::BadGraph("the graph has no input (every graph input is an initializer)".into()))
        }
        [] => return Err(Error::BadGraph(format!("the graph output `{output}` does not depend on the graph input"))),
        many => {
            let names: Vec<&str> = many.iter().map(|i| i.name.as_str()).collect();
            return Err(Error::BadGraph(format!(
                "the graph has {} inputs ({}); certify needs exactly one (the image)",
                many.len(),
                names.join(", ")
            )));
        }
    };
    if candidates.len() > 1 {
        notes.push(format!("ignored {} graph input(s) the output does not depend on", candidates.len() - 1));
    }

    // Its declared shape.
    let bad_input = |what: String| Error::BadGraph(format!("graph input `{}`: {what}", input.name));
    let tensor_type = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(TypeValue::TensorType(t)) => t,
        _ => return Err(bad_input("it is not declared as a tensor".into())),
    };
    if tensor_type.elem_type != DataType::Float as i32 {
        let ty = DataType::try_from(tensor_type.elem_type).map_or("unknown", |t| t.as_str_name());
        return Err(bad_input(format!("its element type is {ty}; certify imports float32 models only")));
    }
    let shape = tensor_type
        .shape
        .as_ref()
        .ok_or_else(|| bad_input("it has no declared shape; re-export the model with a fixed input shape".into()))?;
    let input_shape_onnx: Vec<i64> = shape
        .dim
        .iter()
        .map(|d| match d.value {
            Some(DimValue::DimValue(v)) => v,
            _ => -1,
        })
        .collect();
    if input_shape_onnx.len() < 2 {
        return Err(bad_input(format!(
            "its declared shape {input_shape_onnx:?} has no batch axis; certify needs [batch, features…]"
        )));
    }
    let mut per_sample = Vec::with_capacity(input_shape_onnx.len() - 1);
    for (i, &d) in input_shape_onnx.iter().enumerate().skip(1) {
        if d <= 0 || d > MAX_ATTR {
            return Err(bad_input(format!(
                "axis {i} of its declared shape {input_shape_onnx:?} is symbolic or invalid; only the batch axis (0) \
                 may be dynamic: re-export with fixed sizes (e.g. torch.onnx.export(..., dynamic_axes={{'input': {{0: \
                 'batch'}}}}))"
            )));
        }
        per_sample.push(d as usize);
    }
    if checked_size(&per_sample).is_none() {
        return Err(bad_input(format!("its declared shape {input_shape_onnx:?} is too large")));
    }
    let fixed_batch = input_shape_onnx.first().copied().filter(|&b| b > 0);
    if let Some(b) = fixed_batch {
        notes.push(format!(
            "input `{}` is declared with a fixed batch of {b}; its first axis is treated as the batch axis",
            input.name
        ));
    }

    let mut uses: HashMap<&str, usize> = HashMap::new();
    for &i in &order {
        for x in graph.node[i].input.iter().filter(|x| !x.is_empty()) {
            *uses.entry(x.as_str()).or_default() += 1;
        }
    }
    *uses.entry(target).or_default() += 1;

    let mut im = Importer {
        opset,
        initializers,
        values: HashMap::new(),
        nodes: vec![Node { name: input.name.clone(), layer: Layer::Input, inputs: Vec::new(), shape: per_sample }],
        uses,
        batch_value: fixed_batch.unwrap_or(1),
        fixed_batch,
        notes,
        sources: Vec::new(),
    };
    im.values.insert(input.name.clone(), Val::Node(0));
    for &i in &order {
        im.node(&graph.node[i], i)?;
    }

    let out_id = match im.values.get(target) {
        Some(Val::Node(id)) => *id,
        Some(Val::Const(_)) => {
            return Err(Error::BadGraph(format!(
                "the graph output `{target}` is a constant: it does not depend on the input"
            )))
        }
        None => return Err(Error::BadGraph(format!("the graph output `{target}` was not computed"))),
    };
    let out_id =
        if out_id + 1 == im.nodes.len() { out_id } else { im.push(target.to_string(), Layer::Identity, &[out_id])? };

    let stripped_softmax = match strip {
        Some(s) => {
            let n = &graph.node[s.node];
            let name = display_name(n, s.node);
            let c = Ctx { n, name: &name, op: &n.op_type };
            let shape = im.nodes[out_id].shape.clone();
            let rank = shape.len() + 1;
            let axis = norm_axis(&c, Attrs::new(n, &name).int("axis", if opset < 13 { 1 } else { -1 })?, rank)?;
            // Before opset 13 the input is coerced to 2-D at `axis`: the softmax runs over all later axes.
            let over_classes = axis >= 1
                && if opset < 13 {
                    shape[..axis - 1].iter().all(|&d| d == 1)
                } else {
                    shape.iter().enumerate().all(|(i, &d)| i + 1 == axis || d == 1)
                };
            if !over_classes {
                return Err(c.unsupported(format!(
                    "the final {} normalises over axis {axis} of {}, not over the classes; only a final softmax over \
                     the class axis can be stripped",
                    s.kind,
                    full(&shape)
                )));
            }
            let note = format!("stripped final {} (node `{name}`): the network outputs the logits before it", s.kind);
            log::info!("{note}");
            im.notes.push(note);
            Some(s.kind.to_string())
        }
        None => None,
    };

    let params = resolve_sources(graph, &producer, &im.initializers, im.sources, &im.nodes);
    let network = Network::from_nodes(im.nodes)?;
    network.check_classifier()?;
    Ok(Imported {
        network,
        input_name: input.name.clone(),
        output_name: target.to_string(),
        input_shape_onnx,
        stripped_softmax,
        opset,
        notes: im.notes,
        params,
        model: Default::default(),
        source_path: None,
    })
}

/// A parameter source recorded during the walk, before its tensor is located in the graph.
struct RawSource {
    node: NodeId,
    param: ParamKind,
    konst: Rc<Const>,
    transform: Transform,
}

/// Locates each recorded constant: an initializer or a `Constant` node whose decoded value is
/// exactly the constant the layer was built from; anything else (a folded computation) is derived.
fn resolve_sources(
    graph: &GraphProto,
    producer: &HashMap<&str, usize>,
    initializers: &HashMap<&str, &TensorProto>,
    sources: Vec<RawSource>,
    nodes: &[Node<f32>],
) -> Vec<ParamSource> {
    let same = |t: &TensorProto, k: &Const| {
        tensor::load(t, &k.origin).is_ok_and(|l| l.dims == k.dims && l.data == k.data && !l.int)
    };
    sources
        .into_iter()
        .map(|s| {
            let name = s.konst.origin.as_str();
            let location = match producer.get(name) {
                Some(&i) => {
                    let n = &graph.node[i];
                    let value = n.attribute.iter().find(|a| a.name == "value").and_then(|a| a.t.as_ref());
                    match value {
                        Some(t) if n.op_type == "Constant" && same(t, &s.konst) => {
                            TensorLocation::Constant { node: display_name(n, i) }
                        }
                        _ => TensorLocation::Derived,
                    }
                }
                None => match initializers.get(name) {
                    Some(t) if same(t, &s.konst) => TensorLocation::Initializer,
                    _ => TensorLocation::Derived,
                },
            };
            ParamSource {
                node: s.node,
                node_name: nodes[s.node].name.clone(),
                param: s.param,
                tensor: name.to_string(),
                dims: s.konst.dims.clone(),
                location,
                transform: s.transform,
            }
        })
        .collect()
}

struct Importer<'g> {
    opset: i64,
    initializers: HashMap<&'g str, &'g TensorProto>,
    values: HashMap<String, Val>,
    nodes: Vec<Node<f32>>,
    /// How many needed nodes read each value (the output counts once).
    uses: HashMap<&'g str, usize>,
    /// What `Shape` reports for the batch axis (the fixed batch, else 1).
    batch_value: i64,
    fixed_batch: Option<i64>,
    notes: Vec<String>,
    /// Where each trainable parameter comes from.
    sources: Vec<RawSource>,
}

impl<'g> Importer<'g> {
    fn shape(&self, id: NodeId) -> &[usize] {
        &self.nodes[id].shape
    }

    /// Records the source of a parameter of node `node`, replacing an earlier one.
    fn source(&mut self, node: NodeId, param: ParamKind, konst: &Rc<Const>, transform: Transform) {
        self.sources.retain(|s| !(s.node == node && s.param == param));
        self.sources.push(RawSource { node, param, konst: konst.clone(), transform });
    }

    fn push(&mut self, name: String, layer: Layer<f32>, inputs: &[NodeId]) -> Result<NodeId> {
        let shapes: Vec<&[usize]> = inputs.iter().map(|&i| self.nodes[i].shape.as_slice()).collect();
        let shape = infer_shape(&name, &layer, &shapes)?;
        if shape.is_empty() || shape.contains(&0) || checked_size(&shape).is_none() {
            return Err(Error::Core(certify_core::Error::Shape {
                node: name,
                reason: format!("output shape {shape:?} is empty or too large"),
            }));
        }
        log::debug!("node `{name}`: {} → {shape:?}", layer.kind());
        self.nodes.push(Node { name, layer, inputs: inputs.to_vec(), shape });
        Ok(self.nodes.len() - 1)
    }

    /// The value of input `i` of the node (`None` when absent or empty).
    fn input(&mut self, c: &Ctx, i: usize) -> Result<Option<Val>> {
        let name = c.input_name(i);
        if name.is_empty() {
            return Ok(None);
        }
        if let Some(v) = self.values.get(name) {
            return Ok(Some(v.clone()));
        }
        if let Some(t) = self.initializers.get(name) {
            let v = Val::Const(Rc::new(tensor::load(t, name)?));
            self.values.insert(name.to_string(), v.clone());
            return Ok(Some(v));
        }
        Err(c.bad(format!(
            "input `{name}` is neither an initializer, the graph input, nor the output of an earlier node \
             (missing initializer?)"
        )))
    }

    fn node(&mut self, n: &'g NodeProto, idx: usize) -> Result<()> {
        let name = display_name(n, idx);
        let c = Ctx { n, name: &name, op: &n.op_type };
        if !(n.domain.is_empty() || n.domain == "ai.onnx") {
            return Err(c.unsupported_op());
        }
        let ins: Vec<Option<Val>> = (0..n.input.len()).map(|i| self.input(&c, i)).collect::<Result<_>>()?;
        let a = Attrs::new(n, &name);
        let first = n.output.first().filter(|o| !o.is_empty()).ok_or_else(|| c.bad("the node has no output"))?.clone();
        let all_const = ins.iter().any(Option::is_some) && ins.iter().flatten().all(|v| matches!(v, Val::Const(_)));
        let out = if c.op == "Constant" {
            Val::Const(Rc::new(self.constant_node(&c, &a, &first)?))
        } else if all_const && FOLDABLE.contains(&c.op) {
            Val::Const(Rc::new(self.fold(&c, &a, &ins, &first)?))
        } else if c.op == "Shape" {
            Val::Const(Rc::new(self.shape_of_runtime(&c, &a, &ins, &first)?))
        } else {
            Val::Node(self.layer(&c, &a, &ins)?)
        };
        for o in n.output.iter().skip(1).filter(|o| !o.is_empty()) {
            if self.uses.get(o.as_str()).copied().unwrap_or(0) > 0 {
                return Err(c.unsupported(format!(
                    "its output #{} (`{o}`) is used by the graph; certify only supports the first output",
                    n.output.iter().position(|x| x == o).unwrap_or(1)
                )));
            }
        }
        self.values.insert(first, out);
        Ok(())
    }

    fn rt(&self, c: &Ctx, ins: &[Option<Val>], i: usize) -> Result<NodeId> {
        match ins.get(i) {
            Some(Some(Val::Node(id))) => Ok(*id),
            Some(Some(Val::Const(_))) => Err(c.unsupported(format!(
                "input #{i} (`{}`) is a constant, but certify supports this operator only on values computed from the \
                 network input",
                c.input_name(i)
            ))),
            _ => Err(c.bad(format!("input #{i} is missing"))),
        }
    }

    fn cst(&self, c: &Ctx, ins: &[Option<Val>], i: usize, what: &str) -> Result<Rc<Const>> {
        self.opt_cst(c, ins, i, what)?.ok_or_else(|| c.bad(format!("the {what} (input #{i}) is missing")))
    }

    fn opt_cst(&self, c: &Ctx, ins: &[Option<Val>], i: usize, what: &str) -> Result<Option<Rc<Const>>> {
        match ins.get(i) {
            Some(Some(Val::Const(k))) => Ok(Some(k.clone())),
            Some(Some(Val::Node(_))) => Err(c.unsupported(format!(
                "the {what} (input #{i}, `{}`) must be a constant (an initializer or a Constant node), but it is \
                 computed from the network input",
                c.input_name(i)
            ))),
            _ => Ok(None),
        }
    }

    /// Integer list from an attribute (`opset < from`) or from constant input `i`.
    fn ints_attr_or_input(
        &self,
        c: &Ctx,
        a: &Attrs,
        ins: &[Option<Val>],
        from: i64,
        attr: &str,
        i: usize,
    ) -> Result<Option<Vec<i64>>> {
        if self.opset < from {
            a.ints(attr)
        } else {
            self.opt_cst(c, ins, i, attr)?.map(|k| k.ints()).transpose()
        }
    }

    fn layer(&mut self, c: &Ctx, a: &Attrs, ins: &[Option<Val>]) -> Result<NodeId> {
        let name = c.name.to_string();
        match c.op {
            "Conv" => self.conv(c, a, ins),
            "MaxPool" | "AveragePool" => self.pool(c, a, ins),
            "GlobalAveragePool" => {
                let x = self.rt(c, ins, 0)?;
                if self.shape(x).len() < 2 {
                    return Err(c.unsupported(format!("needs an input [N, C, spatial…], got {}", full(self.shape(x)))));
                }
                self.push(name, Layer::GlobalAvgPool, &[x])
            }
            "Gemm" => self.gemm(c, a, ins),
            "MatMul" => self.matmul(c, ins),
            "Add" | "Sub" | "Mul" | "Div" => self.arith(c, ins),
            "Neg" => {
                let x = self.rt(c, ins, 0)?;
                let n = self.nodes[x].size();
                self.affine(c, x, 0, vec![-1.0; n], vec![0.0; n], None)
            }
            "BatchNormalization" => self.batchnorm(c, a, ins),
            "Relu" => {
                let x = self.rt(c, ins, 0)?;
                self.push(name, Layer::Relu, &[x])
            }
            "Sigmoid" => {
                let x = self.rt(c, ins, 0)?;
                self.push(name, Layer::Sigmoid, &[x])
            }
            "Tanh" => {
                let x = self.rt(c, ins, 0)?;
                self.push(name, Layer::Tanh, &[x])
            }
            "LeakyRelu" => {
                let x = self.rt(c, ins, 0)?;
                let alpha = a.float("alpha", 0.01)?;
                if !alpha.is_finite() {
                    return Err(c.bad_attr("alpha", alpha, "must be finite"));
                }
                self.push(name, Layer::LeakyRelu { alpha }, &[x])
            }
            "PRelu" => {
                let x = self.rt(c, ins, 0)?;
                let slope = self.cst(c, ins, 1, "slope")?;
                let v = slope.finite_f32()?;
                match v.first() {
                    Some(&alpha) if v.iter().all(|&s| s == alpha) => self.push(name, Layer::LeakyRelu { alpha }, &[x]),
                    _ => Err(c.unsupported(format!(
                        "PRelu with several different slopes (`{}`, shape {:?}) is not supported; only a single slope \
                         (a LeakyRelu) is",
                        slope.origin, slope.dims
                    ))),
                }
            }
            "Clip" => self.clip(c, a, ins),
            "Flatten" | "Reshape" | "Squeeze" | "Unsqueeze" => {
                let x = self.rt(c, ins, 0)?;
                let shape = self.new_shape(c, a, ins, x)?;
                self.push(name, Layer::Reshape { shape }, &[x])
            }
            "Concat" => {
                let mut ids = Vec::new();
                for (i, v) in ins.iter().enumerate() {
                    match v {
                        Some(Val::Node(id)) => ids.push(*id),
                        Some(Val::Const(_)) => {
                            return Err(c.unsupported(format!(
                                "input #{i} (`{}`) is a constant; certify concatenates only values computed from the \
                                 network input",
                                c.input_name(i)
                            )))
                        }
                        None => return Err(c.bad(format!("input #{i} is missing"))),
                    }
                }
                let first = *ids.first().ok_or_else(|| c.bad("has no inputs"))?;
                if !a.has("axis") {
                    return Err(c.bad("the `axis` attribute is missing"));
                }
                let axis = norm_axis(c, a.int("axis", 1)?, self.shape(first).len() + 1)?;
                if axis == 0 {
                    return Err(c.unsupported("concatenation along the batch axis is not supported"));
                }
                self.push(name, Layer::Concat { axis: axis - 1 }, &ids)
            }
            "Pad" => self.pad(c, a, ins),
            "Transpose" => {
                let x = self.rt(c, ins, 0)?;
                let rank = self.shape(x).len() + 1;
                let perm = self.perm(c, a, rank)?;
                if perm[0] != 0 {
                    return Err(c.unsupported(format!(
                        "the permutation {perm:?} moves the batch axis; only transposes that keep axis 0 first are \
                         supported"
                    )));
                }
                let perm = perm[1..].iter().map(|&p| p - 1).collect();
                self.push(name, Layer::Transpose { perm }, &[x])
            }
            "Identity" | "Dropout" => {
                let x = self.rt(c, ins, 0)?;
                if c.op == "Dropout" {
                    if let Some(t) = self.opt_cst(c, ins, 2, "training_mode")? {
                        if t.single() != Some(0.0) {
                            return Err(c.unsupported(
                                "Dropout in training mode is not supported; export the model in eval() mode",
                            ));
                        }
                    }
                }
                self.push(name, Layer::Identity, &[x])
            }
            "Cast" => {
                let x = self.rt(c, ins, 0)?;
                let to = a.int("to", 0)?;
                if to != DataType::Float as i32 as i64 {
                    let ty = i32::try_from(to).ok().and_then(|t| DataType::try_from(t).ok());
                    return Err(c.bad_attr(
                        "to",
                        ty.map_or("unknown", |t| t.as_str_name()),
                        "certify computes in float32: only casts to FLOAT of the network's values are supported",
                    ));
                }
                self.push(name, Layer::Identity, &[x])
            }
            "ReduceMean" => self.reduce_mean(c, a, ins),
            "Softmax" | "LogSoftmax" => Err(c.unsupported(format!(
                "{} is supported only as the last operator of the graph, where it is stripped (certify works on the \
                 logits before it)",
                c.op
            ))),
            _ => Err(c.unsupported_op()),
        }
    }

    /// Two positive integers from an attribute (`strides`, `dilations`), default `[d, d]`.
    fn pair(&self, c: &Ctx, a: &Attrs, attr: &str, d: usize) -> Result<[usize; 2]> {
        match a.ints(attr)? {
            None => Ok([d, d]),
            Some(v) if v.len() == 2 && v.iter().all(|&x| (1..=MAX_ATTR).contains(&x)) => {
                Ok([v[0] as usize, v[1] as usize])
            }
            Some(v) => Err(c.bad(format!("attribute `{attr}` = {v:?} must hold two values ≥ 1"))),
        }
    }

    /// `[top, left, bottom, right]` padding from `pads` / `auto_pad`.
    fn pads(&self, c: &Ctx, a: &Attrs, size: [usize; 2], span: [usize; 2], stride: [usize; 2]) -> Result<[usize; 4]> {
        let auto = a.string("auto_pad", "NOTSET")?;
        match auto.as_str() {
            "NOTSET" | "" => match a.ints("pads")? {
                None => Ok([0; 4]),
                Some(p) if p.len() == 4 && p.iter().all(|&x| (0..=MAX_ATTR).contains(&x)) => {
                    Ok([p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize])
                }
                Some(p) if p.len() == 4 && p.iter().any(|&x| x < 0) => {
                    Err(c.bad_attr("pads", p, "negative padding (cropping) is not supported"))
                }
                Some(p) => Err(c.bad(format!("attribute `pads` = {p:?} must hold 4 values in 0..={MAX_ATTR}"))),
            },
            "VALID" => Ok([0; 4]),
            "SAME_UPPER" | "SAME_LOWER" => {
                let mut out = [0; 4];
                for ax in 0..2 {
                    let o = size[ax].div_ceil(stride[ax]);
                    let total = ((o - 1) * stride[ax] + span[ax]).saturating_sub(size[ax]);
                    let small = total / 2;
                    let (b, e) = if auto == "SAME_UPPER" { (small, total - small) } else { (total - small, small) };
                    out[ax] = b;
                    out[ax + 2] = e;
                }
                Ok(out)
            }
            other => Err(c.bad_attr("auto_pad", other, "expected NOTSET, VALID, SAME_UPPER or SAME_LOWER")),
        }
    }

    fn conv(&mut self, c: &Ctx, a: &Attrs, ins: &[Option<Val>]) -> Result<NodeId> {
        let x = self.rt(c, ins, 0)?;
        let w = self.cst(c, ins, 1, "weight")?;
        let b = self.opt_cst(c, ins, 2, "bias")?;
        let s = self.shape(x).to_vec();
        if s.len() != 3 || w.dims.len() != 4 {
            return Err(c.unsupported(format!(
                "only 2-D convolutions are supported (input [N, C, H, W], weight [M, C/group, kH, kW]); the input is \
                 {} and the weight {:?}",
                full(&s),
                w.dims
            )));
        }
        let (m, cg, kh, kw) = (w.dims[0], w.dims[1], w.dims[2], w.dims[3]);
        if let Some(k) = a.ints("kernel_shape")? {
            if k != [kh as i64, kw as i64] {
                return Err(c.bad(format!("kernel_shape {k:?} disagrees with the weight shape {:?}", w.dims)));
            }
        }
        let group = a.int("group", 1)?;
        if !(1..=MAX_ATTR).contains(&group) {
            return Err(c.bad(format!("group {group} must be ≥ 1")));
        }
        let group = group as usize;
        if cg * group != s[0] || m % group != 0 {
            return Err(
                c.bad(format!("weight {:?} with group {group} does not fit an input with {} channels", w.dims, s[0]))
            );
        }
        let stride = self.pair(c, a, "strides", 1)?;
        let dilation = self.pair(c, a, "dilations", 1)?;
        let span = [(kh.max(1) - 1) * dilation[0] + 1, (kw.max(1) - 1) * dilation[1] + 1];
        let padding = self.pads(c, a, [s[1], s[2]], span, stride)?;
        let bias = match &b {
            Some(b) if b.len() == m => Some(b.finite_f32()?),
            Some(b) => return Err(c.bad(format!("bias `{}` has {} values, expected {m}", b.origin, b.len()))),
            None => None,
        };
        let has_bias = bias.is_some();
        let conv = Conv2d {
            weight: w.finite_f32()?,
            bias,
            out_channels: m,
            in_channels: s[0],
            kernel: [kh, kw],
            stride,
            padding,
            dilation,
            groups: group,
        };
        let id = self.push(c.name.to_string(), Layer::Conv2d(conv), &[x])?;
        self.source(id, ParamKind::ConvWeight, &w, Transform::Direct);
        if let (Some(b), true) = (&b, has_bias) {
            self.source(id, ParamKind::ConvBias, b, Transform::Direct);
        }
        Ok(id)
    }

    fn pool(&mut self, c: &Ctx, a: &Attrs, ins: &[Option<Val>]) -> Result<NodeId> {
        let x = self.rt(c, ins, 0)?;
        let s = self.shape(x).to_vec();
        if s.len() != 3 {
            return Err(
                c.unsupported(format!("only 2-D pooling on [N, C, H, W] is supported; the input is {}", full(&s)))
            );
        }
        let kernel = match a.ints("kernel_shape")? {
            Some(k) if k.len() == 2 && k.iter().all(|&v| (1..=MAX_ATTR).contains(&v)) => [k[0] as usize, k[1] as usize],
            Some(k) => return Err(c.bad(format!("kernel_shape {k:?} must hold two values ≥ 1"))),
            None => return Err(c.bad("the `kernel_shape` attribute is missing")),
        };
        let stride = self.pair(c, a, "strides", 1)?;
        let max = c.op == "MaxPool";
        if let Some(d) = a.ints("dilations")? {
            if d.iter().any(|&v| v != 1) {
                return Err(c.bad_attr("dilations", d, "dilated pooling is not supported; re-export with dilation 1"));
            }
        }
        if max {
            let order = a.int("storage_order", 0)?;
            if order != 0 {
                return Err(c.bad_attr("storage_order", order, "only row-major storage (0) is supported"));
            }
        }
        let padding = self.pads(c, a, [s[1], s[2]], kernel, stride)?;
        let p = Pool2d {
            kernel,
            stride,
            padding,
            count_include_pad: !max && a.int("count_include_pad", 0)? != 0,
            ceil_mode: a.int("ceil_mode", 0)? != 0,
        };
        let layer = if max { Layer::MaxPool2d(p) } else { Layer::AvgPool2d(p) };
        self.push(c.name.to_string(), layer, &[x])
    }

    fn gemm(&mut self, c: &Ctx, a: &Attrs, ins: &[Option<Val>]) -> Result<NodeId> {
        if let Some(Some(Val::Const(_))) = ins.first() {
            return Err(c.unsupported(
                "Gemm with a constant first operand A is not supported: certify needs A to be the layer input",
            ));
        }
        let x = self.rt(c, ins, 0)?;
        let b = self.cst(c, ins, 1, "weight B")?;
        let bias_c = self.opt_cst(c, ins, 2, "bias C")?;
        let trans_a = a.int("transA", 0)?;
        if trans_a != 0 {
            return Err(c.bad_attr(
                "transA",
                trans_a,
                "transposing the input would mix the batch axis into the features; re-export with the layer input as \
                 A, untransposed (as torch.nn.Linear does)",
            ));
        }
        let trans_b = a.int("transB", 0)? != 0;
        let alpha = a.float("alpha", 1.0)?;
        let beta = a.float("beta", 1.0)?;
        let s = self.shape(x).to_vec();
        if s.len() != 1 {
            return Err(
                c.unsupported(format!("Gemm needs a 2-D input [N, K], got {}; add a Flatten before it", full(&s)))
            );
        }
        let k = s[0];
        if b.dims.len() != 2 {
            return Err(c.bad(format!("the weight B `{}` must be 2-D, has shape {:?}", b.origin, b.dims)));
        }
        let (bk, m) = if trans_b { (b.dims[1], b.dims[0]) } else { (b.dims[0], b.dims[1]) };
        if bk != k {
            return Err(c.bad(format!(
                "the weight B `{}` of shape {:?} (transB = {}) does not fit the input {}",
                b.origin,
                b.dims,
                trans_b as u8,
                full(&s)
            )));
        }
        let bv = b.finite_f32()?;
        let mut weight = vec![0f32; m * k];
        for o in 0..m {
            for i in 0..k {
                let v = if trans_b { bv[o * k + i] } else { bv[i * m + o] };
                weight[o * k + i] = if alpha == 1.0 { v } else { alpha * v };
            }
        }
        let mut bias_src = None;
        let bias = match bias_c {
            Some(cc) if beta != 0.0 => {
                let e = tensor::expand(&cc.data, &cc.dims, &[1, m]).ok_or_else(|| {
                    c.unsupported(format!(
                        "the bias C `{}` of shape {:?} does not broadcast to [1, {m}] (a bias that depends on the batch \
                         is not supported)",
                        cc.origin, cc.dims
                    ))
                })?;
                let scaled: Vec<f64> = e.iter().map(|&v| v * beta as f64).collect();
                if let Some(index) = expand_index(&cc.dims, &[1, m]) {
                    bias_src = Some((cc.clone(), Transform::GemmBias { beta, index }));
                }
                Some(to_finite_f32(&scaled, &cc.origin)?)
            }
            _ => None,
        };
        let id = self.push(c.name.to_string(), Layer::Dense(Dense { weight, bias, inputs: k, outputs: m }), &[x])?;
        self.source(id, ParamKind::DenseWeight, &b, Transform::GemmWeight { trans_b, alpha, inputs: k, outputs: m });
        if let Some((cc, t)) = bias_src {
            self.source(id, ParamKind::DenseBias, &cc, t);
        }
        Ok(id)
    }

    fn matmul(&mut self, c: &Ctx, ins: &[Option<Val>]) -> Result<NodeId> {
        let name = c.name.to_string();
        let weight_dims = |w: &Const, full_rank: usize| -> Result<(usize, usize)> {
            let r = w.dims.len();
            if r < 2 || r > full_rank || w.dims[..r - 2].iter().any(|&d| d != 1) {
                return Err(c.unsupported(format!(
                    "MatMul by the constant `{}` of shape {:?} is not supported: only a 2-D weight (possibly with \
                     leading 1s) is",
                    w.origin, w.dims
                )));
            }
            Ok((w.dims[r - 2], w.dims[r - 1]))
        };
        match (ins.first().cloned().flatten(), ins.get(1).cloned().flatten()) {
            (Some(Val::Node(x)), Some(Val::Const(w))) => {
                let s = self.shape(x).to_vec();
                let (k, m) = weight_dims(&w, s.len() + 1)?;
                if s.last() != Some(&k) {
                    return Err(c.bad(format!(
                        "the weight `{}` {:?} does not fit the input {}",
                        w.origin,
                        w.dims,
                        full(&s)
                    )));
                }
                let wv = w.finite_f32()?;
                let mut weight = vec![0f32; m * k];
                for i in 0..k {
                    for o in 0..m {
                        weight[o * k + i] = wv[i * m + o];
                    }
                }
                let id = self.push(name, Layer::Dense(Dense { weight, bias: None, inputs: k, outputs: m }), &[x])?;
                self.source(id, ParamKind::DenseWeight, &w, Transform::MatMulWeight { inputs: k, outputs: m });
                Ok(id)
            }
            (Some(Val::Const(w)), Some(Val::Node(x))) => {
                // W·X per sample, X of shape [K, M]: (Xᵀ·Wᵀ)ᵀ, a dense layer between two transposes.
                let s = self.shape(x).to_vec();
                if s.len() != 2 {
                    return Err(c.unsupported(format!(
                        "a constant left operand times an input {} would contract the batch axis; only inputs [N, K, M] \
                         are supported with a constant on the left",
                        full(&s)
                    )));
                }
                let (p, k) = weight_dims(&w, s.len() + 1)?;
                if s[0] != k {
                    return Err(c.bad(format!(
                        "the weight `{}` {:?} does not fit the input {}",
                        w.origin,
                        w.dims,
                        full(&s)
                    )));
                }
                let m = s[1];
                let dense = Layer::Dense(Dense { weight: w.finite_f32()?, bias: None, inputs: k, outputs: p });
                let (pre, post) = if m == 1 {
                    (Layer::Reshape { shape: vec![1, k] }, Layer::Reshape { shape: vec![p, 1] })
                } else {
                    (Layer::Transpose { perm: vec![1, 0] }, Layer::Transpose { perm: vec![1, 0] })
                };
                let t = self.push(format!("{name}/transpose_in"), pre, &[x])?;
                let d = self.push(format!("{name}/dense"), dense, &[t])?;
                self.source(d, ParamKind::DenseWeight, &w, Transform::Direct);
                self.push(name, post, &[d])
            }
            (Some(Val::Node(_)), Some(Val::Node(_))) => Err(c.unsupported(
                "MatMul of two non-constant tensors is not supported (only products with constant weights)",
            )),
            _ => Err(c.bad("MatMul needs two inputs")),
        }
    }

    /// Broadcasts a constant to the per-sample shape of node `x`.
    fn expand_to(&self, c: &Ctx, x: NodeId, k: &Const) -> Result<Vec<f64>> {
        let s = self.shape(x);
        let mut target = vec![1];
        target.extend_from_slice(s);
        tensor::expand(&k.data, &k.dims, &target).ok_or_else(|| {
            c.unsupported(format!(
                "the constant `{}` of shape {:?} does not broadcast to the input shape {} without changing it",
                k.origin,
                k.dims,
                full(s)
            ))
        })
    }

    fn arith(&mut self, c: &Ctx, ins: &[Option<Val>]) -> Result<NodeId> {
        let name = c.name.to_string();
        let (Some(p), Some(q)) = (ins.first().cloned().flatten(), ins.get(1).cloned().flatten()) else {
            return Err(c.bad("needs two inputs"));
        };
        match (p, q) {
            (Val::Node(x), Val::Node(y)) => match c.op {
                "Add" | "Sub" if self.shape(x) == self.shape(y) => {
                    let y = if c.op == "Sub" {
                        let n = self.nodes[y].size();
                        let neg = Layer::Affine(Affine { scale: vec![-1.0; n], shift: vec![0.0; n] });
                        self.push(format!("{name}/neg"), neg, &[y])?
                    } else {
                        y
                    };
                    self.push(name, Layer::Add, &[x, y])
                }
                "Add" | "Sub" => Err(c.unsupported(format!(
                    "{} of tensors of different shapes {} and {} (broadcasting) is not supported",
                    c.op,
                    full(self.shape(x)),
                    full(self.shape(y))
                ))),
                _ => Err(c.unsupported(format!(
                    "{} of two non-constant tensors is not supported (certify's layers are affine maps, activations \
                     and pooling)",
                    c.op
                ))),
            },
            (Val::Node(x), Val::Const(k)) => {
                let v = self.expand_to(c, x, &k)?;
                let n = v.len();
                let (scale, shift): (Vec<f64>, Vec<f64>) = match c.op {
                    "Add" => (vec![1.0; n], v),
                    "Sub" => (vec![1.0; n], v.iter().map(|&t| -t).collect()),
                    "Mul" => (v, vec![0.0; n]),
                    _ => {
                        if v.contains(&0.0) {
                            return Err(Error::BadTensor {
                                name: k.origin.clone(),
                                reason: format!("node `{}` divides by it, and it contains zeros", c.name),
                            });
                        }
                        (v.iter().map(|&t| 1.0 / t).collect(), vec![0.0; n])
                    }
                };
                let (scale, shift) = (to_finite_f32(&scale, &k.origin)?, to_finite_f32(&shift, &k.origin)?);
                let sign = match c.op {
                    "Add" => Some(1.0),
                    "Sub" => Some(-1.0),
                    _ => None,
                };
                self.affine(c, x, 0, scale, shift, sign.map(|s| (k.clone(), s)))
            }
            (Val::Const(k), Val::Node(x)) => {
                let v = self.expand_to(c, x, &k)?;
                let n = v.len();
                let (scale, shift) = match c.op {
                    "Add" => (vec![1.0; n], v),
                    "Sub" => (vec![-1.0; n], v),
                    "Mul" => (v, vec![0.0; n]),
                    _ => {
                        return Err(c.unsupported(
                            "dividing a constant by a tensor (c / x) is not supported: it is not an affine map",
                        ))
                    }
                };
                let (scale, shift) = (to_finite_f32(&scale, &k.origin)?, to_finite_f32(&shift, &k.origin)?);
                let src = (c.op == "Add").then(|| (k.clone(), 1.0));
                self.affine(c, x, 1, scale, shift, src)
            }
            (Val::Const(_), Val::Const(_)) => Err(c.bad("constant arithmetic was not folded")),
        }
    }

    /// `x·scale + shift`, merged into the node producing `x` when that node is an affine map
    /// used only here (input normalisation `(x − m)/s`, the bias of `MatMul` + `Add`).
    ///
    /// `src` is the constant of an `Add`/`Sub` and its sign, recorded as the source of a Dense
    /// bias it is merged into.
    fn affine(
        &mut self,
        c: &Ctx,
        x: NodeId,
        input: usize,
        scale: Vec<f32>,
        shift: Vec<f32>,
        src: Option<(Rc<Const>, f64)>,
    ) -> Result<NodeId> {
        let x_name = c.input_name(input);
        let mut target = vec![1];
        target.extend_from_slice(self.shape(x));
        let single_use = x != 0 && x + 1 == self.nodes.len() && self.uses.get(x_name).copied() == Some(1);
        if single_use {
            match &mut self.nodes[x].layer {
                Layer::Affine(prev) if prev.scale.len() == scale.len() => {
                    for i in 0..scale.len() {
                        prev.shift[i] = prev.shift[i] * scale[i] + shift[i];
                        prev.scale[i] *= scale[i];
                    }
                    log::debug!("merged node `{}` into the affine node `{}`", c.name, self.nodes[x].name);
                    return Ok(x);
                }
                Layer::Dense(d)
                    if scale.iter().all(|&s| s == 1.0)
                        && d.outputs > 0
                        && shift.iter().enumerate().all(|(j, &t)| t == shift[j % d.outputs]) =>
                {
                    let outputs = d.outputs;
                    // −0 is the additive identity of IEEE arithmetic (+0 would turn a shift of −0
                    // into +0), so a merged shift becomes the bias bit for bit.
                    let bias = d.bias.get_or_insert_with(|| vec![-0.0; outputs]);
                    let base = bias.clone();
                    for (b, &t) in bias.iter_mut().zip(&shift) {
                        *b += t;
                    }
                    log::debug!("merged node `{}` into the bias of `{}`", c.name, self.nodes[x].name);
                    if let Some((k, sign)) = src {
                        if let Some(index) = expand_index(&k.dims, &target) {
                            let t = Transform::MergedShift { sign, base, index, outputs };
                            self.source(x, ParamKind::DenseBias, &k, t);
                        }
                    }
                    return Ok(x);
                }
                _ => {}
            }
        }
        self.push(c.name.to_string(), Layer::Affine(Affine { scale, shift }), &[x])
    }

    fn batchnorm(&mut self, c: &Ctx, a: &Attrs, ins: &[Option<Val>]) -> Result<NodeId> {
        let x = self.rt(c, ins, 0)?;
        let ch = self.shape(x).first().copied().unwrap_or(0);
        let mut params = Vec::with_capacity(4);
        let mut consts = Vec::with_capacity(4);
        for (i, what) in ["scale", "B", "mean", "var"].into_iter().enumerate() {
            let k = self.cst(c, ins, i + 1, what)?;
            if k.len() != ch {
                return Err(c.bad(format!(
                    "the {what} `{}` has {} values, expected one per channel ({ch})",
                    k.origin,
                    k.len()
                )));
            }
            params.push(k.finite_f32()?);
            consts.push(k);
        }
        let training = a.int("training_mode", 0)?;
        if training != 0 {
            return Err(c.bad_attr(
                "training_mode",
                training,
                "only inference-mode batch normalisation is supported; export the model in eval() mode",
            ));
        }
        let epsilon = a.float("epsilon", 1e-5)?;
        if !epsilon.is_finite() || epsilon < 0.0 {
            return Err(c.bad_attr("epsilon", epsilon, "must be finite and ≥ 0"));
        }
        let var = params.pop().unwrap_or_default();
        let mean = params.pop().unwrap_or_default();
        let beta = params.pop().unwrap_or_default();
        let gamma = params.pop().unwrap_or_default();
        let id =
            self.push(c.name.to_string(), Layer::BatchNorm(BatchNorm { gamma, beta, mean, var, epsilon }), &[x])?;
        for (k, param) in
            consts.iter().zip([ParamKind::BnGamma, ParamKind::BnBeta, ParamKind::BnMean, ParamKind::BnVar])
        {
            self.source(id, param, k, Transform::Direct);
        }
        Ok(id)
    }

    fn clip(&mut self, c: &Ctx, a: &Attrs, ins: &[Option<Val>]) -> Result<NodeId> {
        let x = self.rt(c, ins, 0)?;
        let (min, max) = if self.opset < 11 {
            (a.float("min", f32::MIN)?, a.float("max", f32::MAX)?)
        } else {
            let bound = |i: usize, what: &str, default: f32| -> Result<f32> {
                match self.opt_cst(c, ins, i, what)? {
                    None => Ok(default),
                    Some(k) => k.single().map(|v| v as f32).ok_or_else(|| {
                        c.bad(format!("the {what} `{}` must hold one value, has shape {:?}", k.origin, k.dims))
                    }),
                }
            };
            (bound(1, "min", f32::MIN)?, bound(2, "max", f32::MAX)?)
        };
        if min.is_nan() || max.is_nan() {
            return Err(c.bad("Clip bounds must not be NaN"));
        }
        let layer = if min == 0.0 && max >= f32::MAX { Layer::Relu } else { Layer::Clip { min, max } };
        self.push(c.name.to_string(), layer, &[x])
    }

    fn pad(&mut self, c: &Ctx, a: &Attrs, ins: &[Option<Val>]) -> Result<NodeId> {
        let x = self.rt(c, ins, 0)?;
        let s = self.shape(x).to_vec();
        let rank = s.len() + 1;
        let mode = a.string("mode", "constant")?;
        if mode != "constant" {
            return Err(c.bad_attr("mode", &mode, "only constant padding is supported"));
        }
        let (pads, value, axes) = if self.opset < 11 {
            let pads = a.ints("pads")?.ok_or_else(|| c.bad("the `pads` attribute is missing"))?;
            (pads, a.float("value", 0.0)?, None)
        } else {
            let pads = self.cst(c, ins, 1, "pads")?.ints()?;
            let value = match self.opt_cst(c, ins, 2, "constant_value")? {
                None => 0.0,
                Some(k) => k.single().ok_or_else(|| c.bad("constant_value must hold one value"))? as f32,
            };
            let axes = self.opt_cst(c, ins, 3, "axes")?.map(|k| k.ints()).transpose()?;
            (pads, value, axes)
        };
        if !value.is_finite() {
            return Err(c.bad("the padding value must be finite"));
        }
        let axes: Vec<usize> = match axes {
            Some(ax) => ax.iter().map(|&v| norm_axis(c, v, rank)).collect::<Result<_>>()?,
            None => (0..rank).collect(),
        };
        if pads.len() != 2 * axes.len() {
            return Err(c.bad(format!("pads {pads:?} must hold two values per padded axis ({})", axes.len())));
        }
        let (mut begin, mut end) = (vec![0; s.len()], vec![0; s.len()]);
        for (k, &ax) in axes.iter().enumerate() {
            let (b, e) = (pads[k], pads[k + axes.len()]);
            if b < 0 || e < 0 {
                return Err(c.unsupported(format!("negative pads {pads:?} (cropping) are not supported")));
            }
            if b > MAX_ATTR || e > MAX_ATTR {
                return Err(c.bad(format!("pads {pads:?} are too large")));
            }
            if ax == 0 {
                if b != 0 || e != 0 {
                    return Err(c.unsupported("padding the batch axis is not supported"));
                }
            } else {
                begin[ax - 1] = b as usize;
                end[ax - 1] = e as usize;
            }
        }
        self.push(c.name.to_string(), Layer::Pad(Pad { begin, end, value }), &[x])
    }

    fn perm(&self, c: &Ctx, a: &Attrs, rank: usize) -> Result<Vec<usize>> {
        let perm: Vec<i64> = a.ints("perm")?.unwrap_or_else(|| (0..rank as i64).rev().collect());
        let mut seen = vec![false; rank];
        let ok = perm.len() == rank
            && perm.iter().all(|&p| (0..rank as i64).contains(&p) && !std::mem::replace(&mut seen[p as usize], true));
        if !ok {
            return Err(c.bad(format!("perm {perm:?} is not a permutation of {rank} axes")));
        }
        Ok(perm.into_iter().map(|p| p as usize).collect())
    }

    /// Per-sample result shape of Flatten / Reshape / Squeeze / Unsqueeze applied to node `x`.
    fn new_shape(&mut self, c: &Ctx, a: &Attrs, ins: &[Option<Val>], x: NodeId) -> Result<Vec<usize>> {
        let s = self.shape(x).to_vec();
        let rank = s.len() + 1;
        let size: usize = s.iter().product();
        let out = match c.op {
            "Flatten" => {
                let axis = a.int("axis", 1)?;
                let axis = if axis == rank as i64 { rank } else { norm_axis(c, axis, rank)? };
                if axis == 0 {
                    if self.fixed_batch != Some(1) {
                        return Err(c.unsupported("Flatten with axis 0 merges the batch axis into the features"));
                    }
                    self.notes
                        .push(format!("Flatten `{}` has axis 0; with the fixed batch of 1 it acts per sample", c.name));
                    vec![size]
                } else if s[..axis - 1].iter().product::<usize>() == 1 {
                    vec![s[axis - 1..].iter().product()]
                } else {
                    return Err(c.unsupported(format!(
                        "Flatten with axis {axis} of {} merges the batch axis with other axes",
                        full(&s)
                    )));
                }
            }
            "Reshape" => {
                let t = self.cst(c, ins, 1, "target shape")?.ints()?;
                let allow_zero = a.int("allowzero", 0)? != 0;
                self.reshape_target(c, &s, &t, allow_zero)?
            }
            "Squeeze" => match self.ints_attr_or_input(c, a, ins, 13, "axes", 1)? {
                None => {
                    let v: Vec<usize> = s.iter().copied().filter(|&d| d != 1).collect();
                    if v.is_empty() {
                        vec![1]
                    } else {
                        v
                    }
                }
                Some(axes) => {
                    let axes: Vec<usize> = axes.iter().map(|&v| norm_axis(c, v, rank)).collect::<Result<_>>()?;
                    if axes.contains(&0) {
                        return Err(c.unsupported("squeezing the batch axis is not supported"));
                    }
                    if let Some(&ax) = axes.iter().find(|&&ax| s[ax - 1] != 1) {
                        return Err(c.bad(format!("cannot squeeze axis {ax} of {}: its size is not 1", full(&s))));
                    }
                    s.iter().enumerate().filter(|(i, _)| !axes.contains(&(i + 1))).map(|(_, &d)| d).collect()
                }
            },
            _ => {
                // Unsqueeze
                let axes = self
                    .ints_attr_or_input(c, a, ins, 13, "axes", 1)?
                    .ok_or_else(|| c.bad("the axes to unsqueeze are missing"))?;
                let out_rank = rank + axes.len();
                let mut axes: Vec<usize> = axes.iter().map(|&v| norm_axis(c, v, out_rank)).collect::<Result<_>>()?;
                axes.sort_unstable();
                if axes.windows(2).any(|w| w[0] == w[1]) {
                    return Err(c.bad("repeated axes"));
                }
                if axes.first() == Some(&0) {
                    return Err(c.unsupported("Unsqueeze at axis 0 would put a new axis before the batch axis"));
                }
                let mut it = s.iter();
                (1..out_rank).map(|i| if axes.contains(&i) { 1 } else { it.next().copied().unwrap_or(1) }).collect()
            }
        };
        if out.is_empty() {
            return Err(c.unsupported("reshaping to one value per sample ([N]) is not supported"));
        }
        Ok(out)
    }

    /// Resolves a Reshape target `[batch, …]` against the per-sample shape `s`.
    fn reshape_target(&self, c: &Ctx, s: &[usize], t: &[i64], allow_zero: bool) -> Result<Vec<usize>> {
        let size: usize = s.iter().product();
        let batch_ok = match t.first() {
            Some(0) => !allow_zero,
            Some(&b) => b == -1 || b == self.batch_value,
            None => false,
        };
        if !batch_ok {
            return Err(c.unsupported(format!(
                "Reshape of {} to {t:?} does not keep the batch axis first (the target must start with 0, -1 or the \
                 batch size {})",
                full(s),
                self.batch_value
            )));
        }
        let mut out = Vec::with_capacity(t.len().saturating_sub(1));
        let mut infer = None;
        let mut known = 1usize;
        for (i, &v) in t.iter().enumerate().skip(1) {
            let d = match v {
                0 if !allow_zero => {
                    *s.get(i - 1).ok_or_else(|| c.bad(format!("0 in {t:?} refers to a missing axis")))?
                }
                -1 if infer.is_none() && t[0] != -1 => {
                    infer = Some(out.len());
                    1
                }
                v if (1..=MAX_ATTR).contains(&v) => v as usize,
                _ => return Err(c.bad(format!("invalid target shape {t:?}"))),
            };
            known = known.checked_mul(d).ok_or_else(|| c.bad(format!("target shape {t:?} is too large")))?;
            out.push(d);
        }
        if let Some(i) = infer {
            if !size.is_multiple_of(known) {
                return Err(c.bad(format!("cannot reshape {} to {t:?}", full(s))));
            }
            out[i] = size / known;
        }
        if out.iter().product::<usize>() != size {
            return Err(c.unsupported(format!(
                "Reshape of {} to {t:?} changes the number of values per sample (it would mix the batch axis into \
                 the features)",
                full(s)
            )));
        }
        Ok(out)
    }

    fn reduce_mean(&mut self, c: &Ctx, a: &Attrs, ins: &[Option<Val>]) -> Result<NodeId> {
        let x = self.rt(c, ins, 0)?;
        let s = self.shape(x).to_vec();
        let rank = s.len() + 1;
        let axes = self.ints_attr_or_input(c, a, ins, 18, "axes", 1)?.unwrap_or_default();
        let mut axes: Vec<usize> = axes.iter().map(|&v| norm_axis(c, v, rank)).collect::<Result<_>>()?;
        axes.sort_unstable();
        axes.dedup();
        if axes.is_empty() && a.int("noop_with_empty_axes", 0)? != 0 {
            return self.push(c.name.to_string(), Layer::Identity, &[x]);
        }
        if s.len() < 2 || axes != (2..rank).collect::<Vec<_>>() {
            return Err(c.unsupported(format!(
                "ReduceMean over axes {axes:?} of {} is not supported; only the mean over all spatial axes (global \
                 average pooling) is",
                full(&s)
            )));
        }
        let g = self.push(c.name.to_string(), Layer::GlobalAvgPool, &[x])?;
        if a.int("keepdims", 1)? != 0 {
            Ok(g)
        } else {
            self.push(format!("{}/squeeze", c.name), Layer::Reshape { shape: vec![s[0]] }, &[g])
        }
    }

    /// `Shape` of a value computed by the network: the batch axis reads as the fixed batch (or 1).
    fn shape_of_runtime(&self, c: &Ctx, a: &Attrs, ins: &[Option<Val>], origin: &str) -> Result<Const> {
        let x = self.rt(c, ins, 0)?;
        let mut dims = vec![self.batch_value as f64];
        dims.extend(self.shape(x).iter().map(|&d| d as f64));
        shape_slice(a, dims, origin)
    }

    fn constant_node(&self, c: &Ctx, a: &Attrs, origin: &str) -> Result<Const> {
        if let Some(t) = a.tensor("value")? {
            return tensor::load(t, origin);
        }
        if a.has("value_float") {
            return Ok(Const::scalar(a.float("value_float", 0.0)? as f64, origin));
        }
        if let Some(v) = a.floats("value_floats")? {
            return Const::new(vec![v.len()], v.iter().map(|&x| x as f64).collect(), false, origin);
        }
        if a.has("value_int") {
            let mut k = Const::scalar(a.int("value_int", 0)? as f64, origin);
            k.int = true;
            return Ok(k);
        }
        if let Some(v) = a.ints("value_ints")? {
            return Const::new(vec![v.len()], v.iter().map(|&x| x as f64).collect(), true, origin);
        }
        Err(c.unsupported("only Constant nodes holding a dense tensor, float(s) or int(s) are supported"))
    }

    /// Evaluates an operator whose inputs are all constants (shape computations).
    fn fold(&self, c: &Ctx, a: &Attrs, ins: &[Option<Val>], origin: &str) -> Result<Const> {
        let k0 = self.cst(c, ins, 0, "input")?;
        let fail = || c.bad("cannot evaluate this operator on its constant inputs (inconsistent shapes?)");
        let reshaped = |dims: Vec<usize>| Const::new(dims, k0.data.clone(), k0.int, origin);
        match c.op {
            "Identity" | "Dropout" => Ok((*k0).clone()),
            "Cast" => {
                let to = i32::try_from(a.int("to", 0)?).ok().and_then(|t| DataType::try_from(t).ok());
                let mut k = (*k0).clone();
                k.origin = origin.to_string();
                match to {
                    Some(DataType::Float | DataType::Float16 | DataType::Bfloat16) => {
                        k.data.iter_mut().for_each(|v| *v = *v as f32 as f64);
                        k.int = false;
                    }
                    Some(DataType::Double) => k.int = false,
                    Some(DataType::Bool) => {
                        k.data.iter_mut().for_each(|v| *v = (*v != 0.0) as u8 as f64);
                        k.int = true;
                    }
                    Some(
                        DataType::Int64
                        | DataType::Int32
                        | DataType::Int16
                        | DataType::Int8
                        | DataType::Uint64
                        | DataType::Uint32
                        | DataType::Uint16
                        | DataType::Uint8,
                    ) => {
                        k.data.iter_mut().for_each(|v| *v = v.trunc());
                        k.int = true;
                    }
                    _ => return Err(c.bad_attr("to", a.int("to", 0)?, "unsupported target type")),
                }
                Ok(k)
            }
            "Shape" => shape_slice(a, k0.dims.iter().map(|&d| d as f64).collect(), origin),
            "Gather" => {
                let idx = self.cst(c, ins, 1, "indices")?;
                let axis = norm_axis(c, a.int("axis", 0)?, k0.dims.len())?;
                let d = k0.dims[axis] as i64;
                let mut norm = Vec::with_capacity(idx.len());
                for v in idx.ints()? {
                    let i = if v < 0 { v + d } else { v };
                    if !(0..d).contains(&i) {
                        return Err(c.bad(format!("index {v} is out of range for an axis of size {d}")));
                    }
                    norm.push(i as usize);
                }
                tensor::gather(&k0, axis, &norm, &idx.dims, origin).ok_or_else(fail)
            }
            "Flatten" => {
                let r = k0.dims.len();
                let axis = a.int("axis", 1)?;
                let axis = if axis == r as i64 { r } else { norm_axis(c, axis, r)? };
                reshaped(vec![k0.dims[..axis].iter().product(), k0.dims[axis..].iter().product()])
            }
            "Reshape" => {
                let t = self.cst(c, ins, 1, "target shape")?.ints()?;
                let allow_zero = a.int("allowzero", 0)? != 0;
                let mut infer = None;
                let mut dims = Vec::with_capacity(t.len());
                for (i, &v) in t.iter().enumerate() {
                    dims.push(match v {
                        0 if !allow_zero => *k0.dims.get(i).ok_or_else(fail)?,
                        -1 if infer.is_none() => {
                            infer = Some(i);
                            1
                        }
                        v if (0..=MAX_ATTR).contains(&v) => v as usize,
                        _ => return Err(c.bad(format!("invalid target shape {t:?}"))),
                    });
                }
                if let Some(i) = infer {
                    let known = checked_size(&dims).filter(|&n| n > 0).ok_or_else(fail)?;
                    dims[i] = k0.len() / known;
                }
                reshaped(dims)
            }
            "Squeeze" => {
                let r = k0.dims.len();
                let dims = match self.ints_attr_or_input(c, a, ins, 13, "axes", 1)? {
                    None => k0.dims.iter().copied().filter(|&d| d != 1).collect(),
                    Some(axes) => {
                        let axes: Vec<usize> = axes.iter().map(|&v| norm_axis(c, v, r)).collect::<Result<_>>()?;
                        k0.dims.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect()
                    }
                };
                reshaped(dims)
            }
            "Unsqueeze" => {
                let axes = self.ints_attr_or_input(c, a, ins, 13, "axes", 1)?.ok_or_else(fail)?;
                let r = k0.dims.len() + axes.len();
                let axes: Vec<usize> = axes.iter().map(|&v| norm_axis(c, v, r)).collect::<Result<_>>()?;
                let mut it = k0.dims.iter();
                reshaped((0..r).map(|i| if axes.contains(&i) { 1 } else { it.next().copied().unwrap_or(1) }).collect())
            }
            "Concat" => {
                let parts: Vec<Rc<Const>> =
                    (0..ins.len()).map(|i| self.cst(c, ins, i, "input")).collect::<Result<_>>()?;
                let r = k0.dims.len();
                let axis = norm_axis(c, a.int("axis", 0)?, r)?;
                let mut dims = k0.dims.clone();
                dims[axis] = 0;
                for p in &parts {
                    if p.dims.len() != r || p.dims.iter().enumerate().any(|(i, &d)| i != axis && d != k0.dims[i]) {
                        return Err(fail());
                    }
                    dims[axis] += p.dims[axis];
                }
                let outer: usize = k0.dims[..axis].iter().product();
                let inner: usize = k0.dims[axis + 1..].iter().product();
                let mut data = Vec::with_capacity(checked_size(&dims).ok_or_else(fail)?);
                for o in 0..outer {
                    for p in &parts {
                        let chunk = p.dims[axis] * inner;
                        data.extend_from_slice(p.data.get(o * chunk..(o + 1) * chunk).ok_or_else(fail)?);
                    }
                }
                Const::new(dims, data, parts.iter().all(|p| p.int), origin)
            }
            "Slice" => {
                let (starts, ends, axes, steps) = if self.opset < 10 {
                    (a.ints("starts")?, a.ints("ends")?, a.ints("axes")?, None)
                } else {
                    let get = |i, what| self.opt_cst(c, ins, i, what)?.map(|k| k.ints()).transpose();
                    (get(1, "starts")?, get(2, "ends")?, get(3, "axes")?, get(4, "steps")?)
                };
                let (starts, ends) = starts.zip(ends).ok_or_else(|| c.bad("starts and ends are required"))?;
                let r = k0.dims.len();
                let axes: Vec<usize> = match axes {
                    Some(ax) => ax.iter().map(|&v| norm_axis(c, v, r)).collect::<Result<_>>()?,
                    None => (0..starts.len()).collect(),
                };
                let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
                if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
                    return Err(c.bad("starts, ends, axes and steps must have the same length"));
                }
                let mut sel: Vec<Vec<usize>> = k0.dims.iter().map(|&d| (0..d).collect()).collect();
                for k in 0..starts.len() {
                    let (ax, step) = (axes[k], steps[k]);
                    let d = k0.dims.get(ax).copied().ok_or_else(fail)? as i64;
                    if step == 0 {
                        return Err(c.bad("slice step 0"));
                    }
                    let fix = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
                    if d == 0 {
                        sel[ax] = Vec::new();
                        continue;
                    }
                    let (mut i, end) = if step > 0 {
                        (fix(starts[k]).clamp(0, d), fix(ends[k]).clamp(0, d))
                    } else {
                        (fix(starts[k]).clamp(0, d - 1), fix(ends[k]).clamp(-1, d - 1))
                    };
                    let mut v = Vec::new();
                    while (step > 0 && i < end) || (step < 0 && i > end) {
                        v.push(i as usize);
                        i = i.saturating_add(step);
                    }
                    sel[ax] = v;
                }
                tensor::select(&k0, &sel, origin).ok_or_else(fail)
            }
            "Add" | "Sub" | "Mul" | "Div" => {
                let k1 = self.cst(c, ins, 1, "input")?;
                if c.op == "Div" && k0.int && k1.int && k1.data.contains(&0.0) {
                    return Err(c.bad("integer division by zero"));
                }
                let f: fn(f64, f64) -> f64 = match c.op {
                    "Add" => |x, y| x + y,
                    "Sub" => |x, y| x - y,
                    "Mul" => |x, y| x * y,
                    _ => |x, y| x / y,
                };
                tensor::binary(&k0, &k1, origin, f).ok_or_else(fail)
            }
            "Neg" => {
                let mut k = (*k0).clone();
                k.data.iter_mut().for_each(|v| *v = -*v);
                Ok(k)
            }
            "Transpose" => {
                let perm = self.perm(c, a, k0.dims.len())?;
                tensor::transpose(&k0, &perm, origin).ok_or_else(fail)
            }
            _ => Err(c.unsupported_op()),
        }
    }
}

/// The `start`/`end` attributes of `Shape` (opset 15).
fn shape_slice(a: &Attrs, dims: Vec<f64>, origin: &str) -> Result<Const> {
    let r = dims.len() as i64;
    let fix = |v: i64| (if v < 0 { v.saturating_add(r) } else { v }).clamp(0, r) as usize;
    let start = fix(a.int("start", 0)?);
    let end = fix(a.int("end", r)?);
    let data = if start < end { dims[start..end].to_vec() } else { Vec::new() };
    Const::new(vec![data.len()], data, true, origin)
}
