//! Writes a network that has no source ONNX model (one built from scratch by `certify train`)
//! as a fresh ONNX model; the layout is documented on [`export_network_bytes`].

use std::collections::HashSet;
use std::path::Path;

use certify_core::{Layer, Network, Node};
use prost::Message;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::{dimension, Dimension};
use tract_onnx::pb::{
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

use crate::error::{Error, Result};

/// The `ai.onnx` opset of the models written by [`export_network`].
pub const BUILD_OPSET: i64 = 17;
/// The ONNX IR version of the models written by [`export_network`].
pub const BUILD_IR_VERSION: i64 = 8;
/// The name of the graph input.
pub const INPUT_NAME: &str = "input";
/// The name of the graph output.
pub const OUTPUT_NAME: &str = "logits";
/// The symbolic batch dimension of the input and output.
pub const BATCH_DIM: &str = "N";

/// Options of [`export_network`] and [`export_network_bytes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildOptions {
    /// Whether [`export_network`] may replace an existing file (default `true`, as when a
    /// training run rewrites its model); with `false` it refuses with [`Error::Exists`].
    pub overwrite: bool,
    /// Re-import the written model with [`import_bytes`](crate::import_bytes) and check that it
    /// computes what the network does (default `true`; classifiers only, as the importer needs
    /// one).
    pub verify: bool,
    /// `ModelProto.producer_name` (default `certify`).
    pub producer_name: String,
    /// The graph's name (default `certify`).
    pub graph_name: String,
    /// `ModelProto.doc_string` (default empty).
    pub doc_string: String,
    /// Key–value pairs stored in `ModelProto.metadata_props` (training settings, …).
    pub metadata: Vec<(String, String)>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            overwrite: true,
            verify: true,
            producer_name: "certify".into(),
            graph_name: "certify".into(),
            doc_string: String::new(),
            metadata: Vec::new(),
        }
    }
}

fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Int as i32, i: v, ..Default::default() }
}

fn attr_ints(name: &str, v: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: v.iter().map(|&x| x as i64).collect(),
        ..Default::default()
    }
}

fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Float as i32, f: v, ..Default::default() }
}

fn attr_string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::String as i32,
        s: v.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// A float value `[N, …shape]`.
fn value_info(name: &str, shape: &[usize]) -> ValueInfoProto {
    let mut dim =
        vec![Dimension { denotation: String::new(), value: Some(dimension::Value::DimParam(BATCH_DIM.into())) }];
    dim.extend(
        shape
            .iter()
            .map(|&d| Dimension { denotation: String::new(), value: Some(dimension::Value::DimValue(d as i64)) }),
    );
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            denotation: String::new(),
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
        }),
        ..Default::default()
    }
}

/// The graph under construction, with one namespace for node, value and initializer names.
struct Graph {
    names: HashSet<String>,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
}

impl Graph {
    /// `base`, or `base_1`, `base_2`, … when taken; the name is reserved.
    fn fresh(&mut self, base: &str) -> String {
        if self.names.insert(base.to_string()) {
            return base.to_string();
        }
        let mut i = 1usize;
        loop {
            let name = format!("{base}_{i}");
            if self.names.insert(name.clone()) {
                return name;
            }
            i += 1;
        }
    }

    /// A float initializer named after `base`, in `raw_data` (little-endian) as PyTorch writes them.
    fn float(&mut self, base: &str, dims: &[usize], data: &[f32]) -> String {
        let name = self.fresh(base);
        self.inits.push(TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Float as i32,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    /// An int64 initializer named after `base`.
    fn int64(&mut self, base: &str, data: &[i64]) -> String {
        let name = self.fresh(base);
        self.inits.push(TensorProto {
            name: name.clone(),
            dims: vec![data.len() as i64],
            data_type: DataType::Int64 as i32,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    fn node(&mut self, op: &str, name: String, inputs: Vec<String>, output: String, attribute: Vec<AttributeProto>) {
        self.nodes.push(NodeProto {
            name,
            op_type: op.into(),
            input: inputs,
            output: vec![output],
            attribute,
            ..Default::default()
        });
    }
}

/// The message of a parameter that cannot be written.
fn non_finite(node: &Node<f32>, what: &str) -> Error {
    Error::Export(format!(
        "node `{}` ({}): its {what} holds NaN or an infinity; a model with non-finite parameters cannot be exported",
        node.name,
        node.layer.kind()
    ))
}

/// Checks that every parameter is finite (Clip bounds may be infinite but not NaN).
fn check_finite(node: &Node<f32>) -> Result<()> {
    let finite = |v: &[f32]| v.iter().all(|x| x.is_finite());
    let tensors: Vec<(&str, &[f32])> = match &node.layer {
        Layer::Conv2d(c) => vec![("weight", &c.weight), ("bias", c.bias.as_deref().unwrap_or(&[]))],
        Layer::Dense(d) => vec![("weight", &d.weight), ("bias", d.bias.as_deref().unwrap_or(&[]))],
        Layer::Affine(a) => vec![("scale", &a.scale), ("shift", &a.shift)],
        Layer::BatchNorm(b) => vec![
            ("scale (gamma)", &b.gamma),
            ("shift (beta)", &b.beta),
            ("running mean", &b.mean),
            ("running variance", &b.var),
            ("epsilon", std::slice::from_ref(&b.epsilon)),
        ],
        Layer::LeakyRelu { alpha } => vec![("alpha", std::slice::from_ref(alpha))],
        Layer::Pad(p) => vec![("padding value", std::slice::from_ref(&p.value))],
        Layer::Clip { min, max } => {
            if min.is_nan() || max.is_nan() {
                return Err(non_finite(node, "bounds"));
            }
            vec![]
        }
        _ => vec![],
    };
    match tensors.into_iter().find(|(_, v)| !finite(v)) {
        Some((what, _)) => Err(non_finite(node, what)),
        None => Ok(()),
    }
}

/// Builds the ONNX model of `net`.
fn build_model(net: &Network<f32>, opts: &BuildOptions) -> Result<ModelProto> {
    let nodes = net.nodes();
    if nodes.len() < 2 {
        return Err(Error::Export("the network has no layers (its output is its input)".into()));
    }
    let mut g = Graph { names: HashSet::new(), nodes: Vec::new(), inits: Vec::new() };
    g.fresh(INPUT_NAME);
    g.fresh(OUTPUT_NAME);
    let last = nodes.len() - 1;
    // The ONNX value computed by each network node.
    let mut values: Vec<String> = vec![INPUT_NAME.to_string()];
    for (id, node) in nodes.iter().enumerate().skip(1) {
        check_finite(node)?;
        let base =
            if node.name.is_empty() { format!("{}_{id}", node.layer.kind().to_lowercase()) } else { node.name.clone() };
        let name = g.fresh(&base);
        let out = if id == last { OUTPUT_NAME.to_string() } else { name.clone() };
        let ins: Vec<String> = node.inputs.iter().map(|&i| values[i].clone()).collect();
        let x = ins.first().cloned().unwrap_or_default();
        let in_shape: &[usize] = node.inputs.first().map_or(&[], |&i| nodes[i].shape.as_slice());
        match &node.layer {
            Layer::Input => {
                return Err(Error::Export(format!("node `{}`: only node 0 can be the input", node.name)));
            }
            Layer::Conv2d(c) => {
                let (kh, kw) = (c.kernel[0], c.kernel[1]);
                let w =
                    g.float(&format!("{name}.weight"), &[c.out_channels, c.in_channels / c.groups, kh, kw], &c.weight);
                let mut inputs = vec![x, w];
                if let Some(b) = &c.bias {
                    inputs.push(g.float(&format!("{name}.bias"), &[c.out_channels], b));
                }
                let attrs = vec![
                    attr_ints("kernel_shape", &c.kernel),
                    attr_ints("pads", &c.padding),
                    attr_ints("strides", &c.stride),
                    attr_ints("dilations", &c.dilation),
                    attr_int("group", c.groups as i64),
                ];
                g.node("Conv", name, inputs, out.clone(), attrs);
            }
            Layer::MaxPool2d(p) | Layer::AvgPool2d(p) => {
                let max = matches!(node.layer, Layer::MaxPool2d(_));
                let mut attrs = vec![
                    attr_ints("kernel_shape", &p.kernel),
                    attr_ints("pads", &p.padding),
                    attr_ints("strides", &p.stride),
                    attr_int("ceil_mode", p.ceil_mode as i64),
                ];
                if !max {
                    attrs.push(attr_int("count_include_pad", p.count_include_pad as i64));
                }
                g.node(if max { "MaxPool" } else { "AveragePool" }, name, vec![x], out.clone(), attrs);
            }
            Layer::GlobalAvgPool => g.node("GlobalAveragePool", name, vec![x], out.clone(), vec![]),
            Layer::Dense(d) => {
                if in_shape.len() == 1 {
                    // Gemm: y = x·Wᵀ + b with W [out, in] as stored (transB = 1), as torch.nn.Linear.
                    let w = g.float(&format!("{name}.weight"), &[d.outputs, d.inputs], &d.weight);
                    let mut inputs = vec![x, w];
                    if let Some(b) = &d.bias {
                        inputs.push(g.float(&format!("{name}.bias"), &[d.outputs], b));
                    }
                    g.node("Gemm", name, inputs, out.clone(), vec![attr_int("transB", 1)]);
                } else {
                    // MatMul on the last axis by W [in, out], then Add of the bias.
                    let (k, m) = (d.inputs, d.outputs);
                    let mut wt = vec![0f32; k * m];
                    for o in 0..m {
                        for i in 0..k {
                            wt[i * m + o] = d.weight[o * k + i];
                        }
                    }
                    let w = g.float(&format!("{name}.weight"), &[k, m], &wt);
                    match &d.bias {
                        Some(b) => {
                            let mid = g.fresh(&format!("{name}.matmul"));
                            let add = g.fresh(&format!("{name}.add"));
                            let bias = g.float(&format!("{name}.bias"), &[m], b);
                            g.node("MatMul", name, vec![x, w], mid.clone(), vec![]);
                            g.node("Add", add, vec![mid, bias], out.clone(), vec![]);
                        }
                        None => g.node("MatMul", name, vec![x, w], out.clone(), vec![]),
                    }
                }
            }
            Layer::Add => g.node("Add", name, ins, out.clone(), vec![]),
            Layer::Affine(a) => {
                let mut dims = vec![1];
                dims.extend_from_slice(in_shape);
                let scale = g.float(&format!("{name}.scale"), &dims, &a.scale);
                let shift = g.float(&format!("{name}.shift"), &dims, &a.shift);
                let mid = g.fresh(&format!("{name}.mul"));
                let add = g.fresh(&format!("{name}.add"));
                g.node("Mul", name, vec![x, scale], mid.clone(), vec![]);
                g.node("Add", add, vec![mid, shift], out.clone(), vec![]);
            }
            Layer::BatchNorm(b) => {
                let c = [b.gamma.len()];
                let gamma = g.float(&format!("{name}.weight"), &c, &b.gamma);
                let beta = g.float(&format!("{name}.bias"), &c, &b.beta);
                let mean = g.float(&format!("{name}.running_mean"), &c, &b.mean);
                let var = g.float(&format!("{name}.running_var"), &c, &b.var);
                let attrs = vec![attr_float("epsilon", b.epsilon)];
                g.node("BatchNormalization", name, vec![x, gamma, beta, mean, var], out.clone(), attrs);
            }
            Layer::Relu => g.node("Relu", name, vec![x], out.clone(), vec![]),
            Layer::LeakyRelu { alpha } => {
                g.node("LeakyRelu", name, vec![x], out.clone(), vec![attr_float("alpha", *alpha)]);
            }
            Layer::Sigmoid => g.node("Sigmoid", name, vec![x], out.clone(), vec![]),
            Layer::Tanh => g.node("Tanh", name, vec![x], out.clone(), vec![]),
            Layer::Clip { min, max } => {
                let lo = g.float(&format!("{name}.min"), &[], &[*min]);
                let hi = g.float(&format!("{name}.max"), &[], &[*max]);
                g.node("Clip", name, vec![x, lo, hi], out.clone(), vec![]);
            }
            Layer::Reshape { shape } => {
                if shape.len() == 1 {
                    g.node("Flatten", name, vec![x], out.clone(), vec![attr_int("axis", 1)]);
                } else {
                    // 0 keeps the batch dimension.
                    let target: Vec<i64> = std::iter::once(0).chain(shape.iter().map(|&d| d as i64)).collect();
                    let t = g.int64(&format!("{name}.shape"), &target);
                    g.node("Reshape", name, vec![x, t], out.clone(), vec![]);
                }
            }
            Layer::Concat { axis } => {
                g.node("Concat", name, ins, out.clone(), vec![attr_int("axis", *axis as i64 + 1)]);
            }
            Layer::Pad(p) => {
                let pads: Vec<i64> = std::iter::once(0)
                    .chain(p.begin.iter().map(|&v| v as i64))
                    .chain(std::iter::once(0))
                    .chain(p.end.iter().map(|&v| v as i64))
                    .collect();
                let pads = g.int64(&format!("{name}.pads"), &pads);
                let value = g.float(&format!("{name}.value"), &[], &[p.value]);
                g.node("Pad", name, vec![x, pads, value], out.clone(), vec![attr_string("mode", "constant")]);
            }
            Layer::Transpose { perm } => {
                let full: Vec<usize> = std::iter::once(0).chain(perm.iter().map(|&p| p + 1)).collect();
                g.node("Transpose", name, vec![x], out.clone(), vec![attr_ints("perm", &full)]);
            }
            Layer::Identity => g.node("Identity", name, vec![x], out.clone(), vec![]),
        }
        values.push(out);
    }
    Ok(ModelProto {
        ir_version: BUILD_IR_VERSION,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: BUILD_OPSET }],
        producer_name: opts.producer_name.clone(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: opts.doc_string.clone(),
        metadata_props: opts
            .metadata
            .iter()
            .map(|(k, v)| StringStringEntryProto { key: k.clone(), value: v.clone() })
            .collect(),
        graph: Some(GraphProto {
            node: g.nodes,
            name: opts.graph_name.clone(),
            initializer: g.inits,
            input: vec![value_info(INPUT_NAME, net.input_shape())],
            output: vec![value_info(OUTPUT_NAME, net.output_shape())],
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Serializes `net`, a network without a source model (built by `certify train`, say), as a
/// fresh ONNX model.
///
/// The model uses opset [`BUILD_OPSET`] (IR version [`BUILD_IR_VERSION`]); its one float input
/// [`INPUT_NAME`] has shape `[N, …input shape]` with the symbolic batch dimension [`BATCH_DIM`],
/// its output [`OUTPUT_NAME`] has shape `[N, …output shape]` (`[N, K]` for a classifier with a
/// vector output). Each network node becomes one ONNX node of the same name, two for an `Affine`
/// (`Mul` + `Add`, named `<node>` and `<node>.add`) and for a `Dense` with a bias on a multi-axis
/// input (`MatMul` + `Add`). Parameters become float initializers `<node>.weight` and
/// `<node>.bias` (BatchNorm: `<node>.weight`, `<node>.bias`, `<node>.running_mean`,
/// `<node>.running_var`, as PyTorch names them; Affine: `<node>.scale`, `<node>.shift`). Names
/// are made unique across nodes, values and initializers by suffixing `_1`, `_2`, … where two
/// would clash; an unnamed node is called after its kind and index (`dense_7`).
///
/// Every [`Layer`] maps onto standard operators: `Conv`, `MaxPool`, `AveragePool` (with
/// `pads`, `ceil_mode`, `count_include_pad`), `GlobalAveragePool`, `Gemm` (`transB = 1`) for a
/// `Dense` on vectors and `MatMul` (+ `Add`) on more axes, `Add`, `Mul` + `Add`,
/// `BatchNormalization`, `Relu`, `LeakyRelu`, `Sigmoid`, `Tanh`, `Clip` (bounds as inputs),
/// `Flatten` for a reshape to a vector and `Reshape` (target `[0, …]`) otherwise, `Concat`, `Pad`
/// (constant mode), `Transpose`, `Identity`.
///
/// Refuses a network without layers and one with a NaN or infinite parameter. With
/// [`BuildOptions::verify`] (the default), a classifier's model is re-imported and must compute
/// the network's logits (within 1e-5, relative) on a fixed pseudo-random batch.
pub fn export_network_bytes(net: &Network<f32>, opts: &BuildOptions) -> Result<Vec<u8>> {
    let bytes = build_model(net, opts)?.encode_to_vec();
    if opts.verify && net.check_classifier().is_ok() {
        verify(&bytes, net)?;
    }
    Ok(bytes)
}

/// Re-imports the bytes and compares the logits with the network's on a fixed batch of two.
fn verify(bytes: &[u8], net: &Network<f32>) -> Result<()> {
    let back = crate::import_bytes(bytes)?;
    let d = net.input_len();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let x: Vec<f32> = (0..2 * d)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect();
    let ours = net.forward(&x, 2)?;
    let theirs = back.network.forward(&x, 2)?;
    let scale = ours.iter().filter(|v| v.is_finite()).fold(1f32, |m, v| m.max(v.abs()));
    let same = |a: f32, b: f32| a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-5 * scale;
    if ours.len() != theirs.len() || ours.iter().zip(&theirs).any(|(&a, &b)| !same(a, b)) {
        return Err(Error::Export(
            "the written model does not re-import to a network computing the same logits (please report this)".into(),
        ));
    }
    Ok(())
}

/// Exports like [`export_network_bytes`] and writes the file `path` atomically: to a temporary
/// file in the same directory, synced, then renamed over `path`. With
/// [`BuildOptions::overwrite`] off, an existing `path` is refused with [`Error::Exists`] (checked
/// before writing; a file created meanwhile by another process is replaced). On error `path` is
/// untouched and no temporary file is left behind; write failures are [`Error::Write`].
pub fn export_network(net: &Network<f32>, path: &Path, opts: &BuildOptions) -> Result<()> {
    let exists = || path.symlink_metadata().is_ok();
    if !opts.overwrite && exists() {
        return Err(Error::Exists { path: path.to_path_buf() });
    }
    let bytes = export_network_bytes(net, opts)?;
    if !opts.overwrite && exists() {
        return Err(Error::Exists { path: path.to_path_buf() });
    }
    crate::export::write_atomic(path, &bytes)
}
