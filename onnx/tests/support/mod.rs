//! Test support: builds ONNX models in Rust with tract-onnx's `pb` types (no hand-edited
//! binaries), deterministic pseudo-random weights, and the golden fixtures.
//!
//! Shared by the integration tests (`tests/tests.rs`) and the `make_fixtures` example.
#![allow(dead_code)]

use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::{dimension, Dimension};
use tract_onnx::pb::{
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto,
    TypeProto, ValueInfoProto,
};

/// SplitMix64: a tiny deterministic generator.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.uniform()
    }
    /// `n` values uniform in `[0, 1)`.
    pub fn inputs(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.uniform()).collect()
    }
}

/// A declared input dimension.
#[derive(Clone, Copy, Debug)]
pub enum Dim {
    Sym(&'static str),
    Fixed(i64),
}

pub fn ai(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Int as i32, i: v, ..Default::default() }
}
pub fn ais(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Ints as i32, ints: v.to_vec(), ..Default::default() }
}
pub fn af(name: &str, v: f32) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Float as i32, f: v, ..Default::default() }
}
pub fn astr(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::String as i32,
        s: v.as_bytes().to_vec(),
        ..Default::default()
    }
}
pub fn atensor(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Tensor as i32, t: Some(t), ..Default::default() }
}

/// A float tensor stored in `raw_data` (little-endian), as PyTorch writes them.
pub fn float_tensor(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    assert_eq!(dims.iter().product::<i64>() as usize, data.len(), "tensor `{name}`");
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// An int64 tensor stored in `int64_data`.
pub fn int_tensor(name: &str, dims: &[i64], data: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Int64 as i32,
        int64_data: data.to_vec(),
        ..Default::default()
    }
}

fn value_info(name: &str, dims: Option<&[Dim]>) -> ValueInfoProto {
    let shape = dims.map(|dims| TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| Dimension {
                denotation: String::new(),
                value: Some(match d {
                    Dim::Sym(s) => dimension::Value::DimParam(s.to_string()),
                    Dim::Fixed(v) => dimension::Value::DimValue(*v),
                }),
            })
            .collect(),
    });
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            denotation: String::new(),
            value: Some(type_proto::Value::TensorType(type_proto::Tensor { elem_type: DataType::Float as i32, shape })),
        }),
        ..Default::default()
    }
}

/// Builds a graph node by node.
pub struct GraphBuilder {
    pub opset: i64,
    pub rng: Rng,
    pub nodes: Vec<NodeProto>,
    pub initializers: Vec<TensorProto>,
    pub inputs: Vec<ValueInfoProto>,
    pub outputs: Vec<ValueInfoProto>,
    count: usize,
}

impl GraphBuilder {
    pub fn new(opset: i64, seed: u64) -> Self {
        GraphBuilder {
            opset,
            rng: Rng::new(seed),
            nodes: Vec::new(),
            initializers: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            count: 0,
        }
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.count += 1;
        format!("{hint}_{}", self.count)
    }

    /// Declares a float graph input.
    pub fn input(&mut self, name: &str, dims: &[Dim]) -> String {
        self.inputs.push(value_info(name, Some(dims)));
        name.to_string()
    }

    /// Adds a float initializer.
    pub fn init(&mut self, hint: &str, dims: &[i64], data: &[f32]) -> String {
        let name = self.fresh(hint);
        self.initializers.push(float_tensor(&name, dims, data));
        name
    }

    /// Adds a float initializer stored in `float_data` rather than `raw_data`.
    pub fn init_float_data(&mut self, hint: &str, dims: &[i64], data: &[f32]) -> String {
        let name = self.fresh(hint);
        let mut t = float_tensor(&name, dims, data);
        t.raw_data.clear();
        t.float_data = data.to_vec();
        self.initializers.push(t);
        name
    }

    /// Uniform weights in `±scale/√fan_in`.
    pub fn weights(&mut self, hint: &str, dims: &[i64], fan_in: usize, scale: f32) -> String {
        let n = dims.iter().product::<i64>() as usize;
        let s = scale / (fan_in as f32).sqrt();
        let data: Vec<f32> = (0..n).map(|_| self.rng.range(-s, s)).collect();
        self.init(hint, dims, &data)
    }

    /// Uniform values in `[lo, hi)`.
    pub fn uniform(&mut self, hint: &str, dims: &[i64], lo: f32, hi: f32) -> String {
        let n = dims.iter().product::<i64>() as usize;
        let data: Vec<f32> = (0..n).map(|_| self.rng.range(lo, hi)).collect();
        self.init(hint, dims, &data)
    }

    /// An int64 initializer.
    pub fn ints(&mut self, hint: &str, dims: &[i64], data: &[i64]) -> String {
        let name = self.fresh(hint);
        self.initializers.push(int_tensor(&name, dims, data));
        name
    }

    /// A node with one output; returns the output name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        self.node_n(op, inputs, attrs, 1).remove(0)
    }

    /// A node with `n` outputs.
    pub fn node_n(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>, n: usize) -> Vec<String> {
        let name = self.fresh(op);
        let outputs: Vec<String> = (0..n).map(|i| format!("{name}_out{i}")).collect();
        self.nodes.push(NodeProto {
            name,
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.clone(),
            attribute: attrs,
            ..Default::default()
        });
        outputs
    }

    /// A `Constant` node holding a tensor.
    pub fn constant(&mut self, t: TensorProto) -> String {
        self.node("Constant", &[], vec![atensor("value", t)])
    }

    /// Conv with random weights and bias; `attrs` as given.
    pub fn conv(&mut self, x: &str, cin: i64, cout: i64, k: i64, attrs: Vec<AttributeProto>) -> String {
        let w = self.weights("conv_w", &[cout, cin, k, k], (cin * k * k) as usize, 1.5);
        let b = self.uniform("conv_b", &[cout], -0.1, 0.1);
        self.node("Conv", &[x, &w, &b], attrs)
    }

    /// BatchNormalization with random statistics.
    pub fn batchnorm(&mut self, x: &str, c: i64) -> String {
        let g = self.uniform("bn_gamma", &[c], 0.5, 1.5);
        let b = self.uniform("bn_beta", &[c], -0.2, 0.2);
        let m = self.uniform("bn_mean", &[c], -0.2, 0.2);
        let v = self.uniform("bn_var", &[c], 0.5, 2.0);
        self.node("BatchNormalization", &[x, &g, &b, &m, &v], vec![af("epsilon", 1e-5)])
    }

    /// Gemm `[N, k] → [N, m]`, weight `[m, k]` (transB = 1) or `[k, m]`.
    pub fn gemm(&mut self, x: &str, k: i64, m: i64, trans_b: bool) -> String {
        let dims = if trans_b { [m, k] } else { [k, m] };
        let w = self.weights("fc_w", &dims, k as usize, 1.5);
        let b = self.uniform("fc_b", &[m], -0.1, 0.1);
        self.node("Gemm", &[x, &w, &b], vec![ai("transB", trans_b as i64)])
    }

    /// Declares a graph output (float, shape left to inference).
    pub fn output(&mut self, name: &str) {
        self.outputs.push(value_info(name, None));
    }

    pub fn build(self, name: &str) -> ModelProto {
        ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: self.opset }],
            producer_name: "certify-onnx tests".into(),
            graph: Some(GraphProto {
                node: self.nodes,
                name: name.into(),
                initializer: self.initializers,
                input: self.inputs,
                output: self.outputs,
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

use Dim::{Fixed, Sym};

/// Sub/Div normalisation, Conv + BatchNormalization + LeakyRelu, AveragePool with pads
/// (count_include_pad 0 and 1), MaxPool with ceil_mode, Dropout, Flatten, Gemm, final Softmax.
pub fn bn_leaky_softmax() -> ModelProto {
    let mut g = GraphBuilder::new(13, 1);
    let x = g.input("image", &[Sym("N"), Fixed(1), Fixed(28), Fixed(28)]);
    let mean = g.init("mean", &[], &[0.1307]);
    let std = g.init("std", &[1, 1, 1], &[0.3081]);
    let x = g.node("Sub", &[&x, &mean], vec![]);
    let x = g.node("Div", &[&x, &std], vec![]);
    let x = g.conv(&x, 1, 8, 3, vec![ais("pads", &[1, 1, 1, 1]), ais("kernel_shape", &[3, 3])]);
    let x = g.batchnorm(&x, 8);
    let x = g.node("LeakyRelu", &[&x], vec![af("alpha", 0.1)]);
    let pool = vec![ais("kernel_shape", &[3, 3]), ais("strides", &[2, 2]), ais("pads", &[1, 1, 1, 1])];
    let x = g.node("AveragePool", &[&x], [pool, vec![ai("count_include_pad", 0)]].concat()); // 28 → 14
    let x = g.conv(&x, 8, 16, 3, vec![]); // 14 → 12
    let x = g.node("Relu", &[&x], vec![]);
    let x = g.node(
        "AveragePool",
        &[&x],
        vec![
            ais("kernel_shape", &[2, 2]),
            ais("strides", &[2, 2]),
            ais("pads", &[1, 1, 1, 1]),
            ai("count_include_pad", 1),
        ],
    ); // 12 → 7
    let x = g.node("MaxPool", &[&x], vec![ais("kernel_shape", &[2, 2]), ais("strides", &[2, 2]), ai("ceil_mode", 1)]); // 7 → 4
    let x = g.node("Dropout", &[&x], vec![]);
    let x = g.node("Flatten", &[&x], vec![ai("axis", 1)]);
    let x = g.gemm(&x, 256, 32, true);
    let x = g.node("Relu", &[&x], vec![]);
    let x = g.gemm(&x, 32, 10, false);
    let y = g.node("Softmax", &[&x], vec![ai("axis", -1)]);
    g.output(&y);
    g.build("bn-leaky-softmax")
}

/// NHWC input `[N, 28, 28, 1]`, Transpose to NCHW, Flatten, MatMul + Add, Sigmoid, Gemm.
pub fn nhwc_mlp() -> ModelProto {
    let mut g = GraphBuilder::new(13, 2);
    let x = g.input("input_1", &[Sym("unk__6"), Fixed(28), Fixed(28), Fixed(1)]);
    let x = g.node("Transpose", &[&x], vec![ais("perm", &[0, 3, 1, 2])]);
    let x = g.node("Flatten", &[&x], vec![]);
    let w = g.weights("dense_w", &[784, 24], 784, 4.0);
    let x = g.node("MatMul", &[&x, &w], vec![]);
    let b = g.uniform("dense_b", &[24], -0.5, 0.5);
    let x = g.node("Add", &[&x, &b], vec![]);
    let x = g.node("Sigmoid", &[&x], vec![]);
    let x = g.gemm(&x, 24, 10, true);
    g.output(&x);
    g.build("nhwc-mlp")
}

/// An MNIST MLP `[N, 784]` with a GELU written out through `Erf`, an op certify does not
/// support: import must fail naming `Erf` and its node.
pub fn unsupported_erf() -> ModelProto {
    let mut g = GraphBuilder::new(13, 4);
    let x = g.input("input", &[Sym("batch"), Fixed(784)]);
    let x = g.gemm(&x, 784, 16, true);
    let x = g.node("Erf", &[&x], vec![]);
    let x = g.gemm(&x, 16, 10, true);
    g.output(&x);
    g.build("unsupported-erf")
}

/// Keras-style NHWC CNN: Transpose in, Conv with auto_pad SAME_UPPER / SAME_LOWER, Transpose
/// back to NHWC, Reshape `[0, -1]`, Gemm.
pub fn nhwc_cnn() -> ModelProto {
    let mut g = GraphBuilder::new(11, 3);
    let x = g.input("input", &[Sym("N"), Fixed(9), Fixed(8), Fixed(3)]);
    let x = g.node("Transpose", &[&x], vec![ais("perm", &[0, 3, 1, 2])]);
    let x = g.conv(&x, 3, 4, 3, vec![astr("auto_pad", "SAME_UPPER"), ais("strides", &[2, 2])]); // [4, 5, 4]
    let x = g.node("Relu", &[&x], vec![]);
    let x = g.conv(&x, 4, 5, 2, vec![astr("auto_pad", "SAME_LOWER")]); // [5, 5, 4]
    let x = g.node("Tanh", &[&x], vec![]);
    let x = g.node("Transpose", &[&x], vec![ais("perm", &[0, 2, 3, 1])]); // [5, 4, 5]
    let shape = g.ints("shape", &[2], &[0, -1]);
    let x = g.node("Reshape", &[&x, &shape], vec![]);
    let x = g.gemm(&x, 100, 10, true);
    g.output(&x);
    g.build("nhwc-cnn")
}

/// How the residual network ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    /// GlobalAveragePool + Flatten.
    Flatten,
    /// GlobalAveragePool + Reshape whose target is computed by Shape → Gather → Unsqueeze →
    /// Concat (→ Cast), as old PyTorch exports do for `x.view(x.size(0), -1)`.
    ShapeChain,
    /// ReduceMean over the spatial axes (keepdims 0).
    ReduceMean,
    /// GlobalAveragePool + Reshape whose target is Shape → Slice `[0:1]` → Concat `[-1]`.
    ShapeSlice,
}

/// CIFAR-shaped residual CNN `[N, 3, 32, 32]`: Conv-BN-Relu blocks with Add skips.
pub fn residual_cifar(opset: i64, head: Head) -> ModelProto {
    let mut g = GraphBuilder::new(opset, 4);
    let x = g.input("input", &[Sym("batch"), Fixed(3), Fixed(32), Fixed(32)]);
    let p1 = || vec![ais("pads", &[1, 1, 1, 1]), ais("strides", &[1, 1])];
    let stem = g.conv(&x, 3, 8, 3, p1());
    let stem = g.batchnorm(&stem, 8);
    let x1 = g.node("Relu", &[&stem], vec![]);
    let block = |g: &mut GraphBuilder, x: &str, c: i64| {
        let y = g.conv(x, c, c, 3, p1());
        let y = g.batchnorm(&y, c);
        let y = g.node("Relu", &[&y], vec![]);
        let y = g.conv(&y, c, c, 3, p1());
        let y = g.batchnorm(&y, c);
        let y = g.node("Add", &[&y, x], vec![]);
        g.node("Relu", &[&y], vec![])
    };
    let x2 = block(&mut g, &x1, 8);
    let x3 = g.conv(&x2, 8, 16, 3, vec![ais("pads", &[1, 1, 1, 1]), ais("strides", &[2, 2])]); // 32 → 16
    let x3 = g.batchnorm(&x3, 16);
    let x3 = g.node("Relu", &[&x3], vec![]);
    let x4 = block(&mut g, &x3, 16);
    let feat = match head {
        Head::Flatten => {
            let p = g.node("GlobalAveragePool", &[&x4], vec![]);
            g.node("Flatten", &[&p], vec![])
        }
        Head::ShapeChain => {
            let p = g.node("GlobalAveragePool", &[&x4], vec![]);
            let shape = g.node("Shape", &[&p], vec![]);
            let zero = g.constant(int_tensor("zero", &[], &[0]));
            let n = g.node("Gather", &[&shape, &zero], vec![ai("axis", 0)]);
            let n = if opset < 13 {
                g.node("Unsqueeze", &[&n], vec![ais("axes", &[0])])
            } else {
                let axes = g.ints("axes", &[1], &[0]);
                g.node("Unsqueeze", &[&n, &axes], vec![])
            };
            let minus1 = g.ints("minus1", &[1], &[-1]);
            let target = g.node("Concat", &[&n, &minus1], vec![ai("axis", 0)]);
            let target = g.node("Cast", &[&target], vec![ai("to", DataType::Int64 as i64)]);
            g.node("Reshape", &[&p, &target], vec![])
        }
        Head::ReduceMean => g.node("ReduceMean", &[&x4], vec![ais("axes", &[2, 3]), ai("keepdims", 0)]),
        Head::ShapeSlice => {
            let p = g.node("GlobalAveragePool", &[&x4], vec![]);
            let shape = g.node("Shape", &[&p], vec![]);
            let n = if opset < 10 {
                g.node("Slice", &[&shape], vec![ais("starts", &[0]), ais("ends", &[1]), ais("axes", &[0])])
            } else {
                let starts = g.ints("starts", &[1], &[-4]);
                let ends = g.ints("ends", &[1], &[-3]);
                g.node("Slice", &[&shape, &starts, &ends], vec![])
            };
            let minus1 = g.ints("minus1", &[1], &[-1]);
            let target = g.node("Concat", &[&n, &minus1], vec![ai("axis", 0)]);
            g.node("Reshape", &[&p, &target], vec![])
        }
    };
    let y = g.gemm(&feat, 16, 10, true);
    g.output(&y);
    g.build("residual-cifar")
}

/// VNN-COMP style MLP: fixed input `[1, 784, 1]`, Reshape, then MatMul + Add layers.
pub fn vnn_mlp() -> ModelProto {
    let mut g = GraphBuilder::new(9, 5);
    let x = g.input("0", &[Fixed(1), Fixed(784), Fixed(1)]);
    let shape = g.ints("shape", &[2], &[1, 784]);
    let mut x = g.node("Reshape", &[&x, &shape], vec![]);
    let sizes = [784, 32, 16, 10];
    for (i, w) in sizes.windows(2).enumerate() {
        let wt = g.weights("W", &[w[0], w[1]], w[0] as usize, 2.0);
        x = g.node("MatMul", &[&x, &wt], vec![]);
        let b = g.init_float_data("b", &[w[1]], &vec![0.05; w[1] as usize]);
        x = g.node("Add", &[&x, &b], vec![]);
        if i + 2 < sizes.len() {
            x = g.node("Relu", &[&x], vec![]);
        }
    }
    g.output(&x);
    g.build("vnn-mlp")
}

/// VNN-COMP style MLP with the weights on the left: `W·x` with `x` of shape `[1, 784, 1]`.
pub fn vnn_left_matmul() -> ModelProto {
    let mut g = GraphBuilder::new(9, 6);
    let mut x = g.input("x", &[Fixed(1), Fixed(784), Fixed(1)]);
    for (i, w) in [784, 24, 10].windows(2).enumerate() {
        let wt = g.weights("W", &[w[1], w[0]], w[0] as usize, 2.0);
        x = g.node("MatMul", &[&wt, &x], vec![]);
        let b = g.uniform("b", &[w[1], 1], -0.1, 0.1);
        x = g.node("Add", &[&x, &b], vec![]);
        if i == 0 {
            x = g.node("Relu", &[&x], vec![]);
        }
    }
    g.output(&x);
    g.build("vnn-left-matmul")
}

/// Clip (attributes before opset 11, inputs after), Sigmoid, Tanh, constant Mul/Sub (either
/// side), Neg, and a min-only Clip (a ReLU).
pub fn activations(opset: i64) -> ModelProto {
    let mut g = GraphBuilder::new(opset, 7);
    let x = g.input("x", &[Sym("N"), Fixed(20)]);
    let clip = |g: &mut GraphBuilder, x: &str, min: Option<f32>, max: Option<f32>| {
        if opset < 11 {
            let mut attrs = Vec::new();
            if let Some(m) = min {
                attrs.push(af("min", m));
            }
            if let Some(m) = max {
                attrs.push(af("max", m));
            }
            g.node("Clip", &[x], attrs)
        } else {
            let lo = min.map(|m| g.init("min", &[], &[m])).unwrap_or_default();
            let hi = max.map(|m| g.init("max", &[], &[m])).unwrap_or_default();
            let ins: Vec<&str> = if max.is_some() { vec![x, &lo, &hi] } else { vec![x, &lo] };
            g.node("Clip", &ins, vec![])
        }
    };
    let x = g.gemm(&x, 20, 16, true);
    let x = clip(&mut g, &x, Some(-0.5), Some(0.5));
    let x = g.gemm(&x, 16, 16, false);
    let x = g.node("Sigmoid", &[&x], vec![]);
    let two = g.uniform("scale", &[16], 1.0, 3.0);
    let x = g.node("Mul", &[&two, &x], vec![]);
    let c = g.uniform("c", &[1, 16], -1.0, 1.0);
    let x = g.node("Sub", &[&c, &x], vec![]);
    let x = g.gemm(&x, 16, 16, true);
    let x = g.node("Tanh", &[&x], vec![]);
    let x = g.node("Neg", &[&x], vec![]);
    let x = clip(&mut g, &x, Some(0.0), None);
    let x = g.gemm(&x, 16, 10, true);
    g.output(&x);
    g.build("activations")
}

/// Concat of two conv branches (channel axis) and of two dense branches, PRelu with one slope,
/// Add and Sub of two computed tensors, a constant Div.
pub fn concat() -> ModelProto {
    let mut g = GraphBuilder::new(13, 8);
    let x = g.input("x", &[Sym("N"), Fixed(2), Fixed(10), Fixed(10)]);
    let a = g.conv(&x, 2, 3, 3, vec![ais("pads", &[1, 1, 1, 1])]);
    let b = g.conv(&x, 2, 2, 1, vec![]);
    let y = g.node("Concat", &[&a, &b], vec![ai("axis", 1)]);
    let slope = g.init("slope", &[1, 1, 1], &[0.2]);
    let y = g.node("PRelu", &[&y, &slope], vec![]);
    let c1 = g.conv(&y, 5, 5, 1, vec![]);
    let y = g.node("Sub", &[&y, &c1], vec![]);
    let d = g.init("div", &[5, 1, 1], &[2.0, 4.0, 0.5, 1.0, 8.0]);
    let y = g.node("Div", &[&y, &d], vec![]);
    let y = g.node("Flatten", &[&y], vec![]);
    let p = g.gemm(&y, 500, 8, true);
    let p = g.node("Relu", &[&p], vec![]);
    let q = g.gemm(&y, 500, 4, false);
    let q = g.node("Sigmoid", &[&q], vec![]);
    let z = g.node("Concat", &[&p, &q], vec![ai("axis", -1)]);
    let r = g.gemm(&z, 12, 12, true);
    let z = g.node("Add", &[&z, &r], vec![]);
    let z = g.gemm(&z, 12, 10, true);
    g.output(&z);
    g.build("concat")
}

/// Pad: attributes before opset 11, inputs from 11, `axes` input at 18.
pub fn pad(opset: i64) -> ModelProto {
    let mut g = GraphBuilder::new(opset, 9);
    let x = g.input("x", &[Sym("N"), Fixed(1), Fixed(12), Fixed(12)]);
    let pads = [0, 0, 1, 2, 0, 0, 2, 1];
    let x = if opset < 11 {
        g.node("Pad", &[&x], vec![ais("pads", &pads), af("value", 0.5), astr("mode", "constant")])
    } else {
        let p = g.ints("pads", &[8], &pads);
        let v = g.init("value", &[], &[0.5]);
        g.node("Pad", &[&x, &p, &v], vec![])
    }; // [1, 15, 15]
    let x = g.conv(&x, 1, 4, 3, vec![]); // [4, 13, 13]
    let x = g.node("Relu", &[&x], vec![]);
    let x = if opset < 11 {
        g.node("Pad", &[&x], vec![ais("pads", &[0, 0, 1, 1, 0, 0, 0, 0])])
    } else if opset < 18 {
        let p = g.ints("pads", &[8], &[0, 0, 1, 1, 0, 0, 0, 0]);
        g.node("Pad", &[&x, &p], vec![])
    } else {
        let p = g.ints("pads", &[4], &[1, 1, 0, 0]);
        let axes = g.ints("axes", &[2], &[-2, 3]);
        g.node("Pad", &[&x, &p, "", &axes], vec![])
    }; // [4, 14, 14]
    let x = g.node("AveragePool", &[&x], vec![ais("kernel_shape", &[2, 2]), ais("strides", &[2, 2])]); // [4, 7, 7]
    let x = g.node("Flatten", &[&x], vec![]);
    let x = g.gemm(&x, 196, 10, true);
    g.output(&x);
    g.build("pad")
}

/// Squeeze/Unsqueeze: `axes` attribute before opset 13, input from 13.
pub fn squeeze(opset: i64) -> ModelProto {
    let mut g = GraphBuilder::new(opset, 10);
    let x = g.input("x", &[Sym("N"), Fixed(1), Fixed(28), Fixed(28)]);
    let x = g.conv(&x, 1, 8, 28, vec![]); // [8, 1, 1]
    let x = g.node("Relu", &[&x], vec![]);
    let axes_node = |g: &mut GraphBuilder, op: &str, x: &str, axes: &[i64]| {
        if opset < 13 {
            g.node(op, &[x], vec![ais("axes", axes)])
        } else {
            let a = g.ints("axes", &[axes.len() as i64], axes);
            g.node(op, &[x, &a], vec![])
        }
    };
    let x = axes_node(&mut g, "Squeeze", &x, &[2, 3]); // [8]
    let x = g.gemm(&x, 8, 10, true);
    let x = axes_node(&mut g, "Unsqueeze", &x, &[-1, 2]); // [10, 1, 1]
    let x = axes_node(&mut g, "Squeeze", &x, &[-1]); // [10, 1]
    let x = g.node("Sigmoid", &[&x], vec![]);
    let x = axes_node(&mut g, "Squeeze", &x, &[2]); // [10]
    g.output(&x);
    g.build("squeeze")
}

/// VNN-COMP style fixed batch of 1 with `Flatten(axis = 0)`, which acts per sample at batch 1.
pub fn vnn_flatten_axis0() -> ModelProto {
    let mut g = GraphBuilder::new(11, 12);
    let x = g.input("input", &[Fixed(1), Fixed(1), Fixed(6), Fixed(6)]);
    let x = g.node("Flatten", &[&x], vec![ai("axis", 0)]);
    let x = g.gemm(&x, 36, 10, true);
    g.output(&x);
    g.build("vnn-flatten-axis0")
}

/// MatMul over a 3-D input (Dense on the last axis) followed by Add (merged into its bias),
/// Transpose of the per-sample axes, Reshape with a 0 entry, LogSoftmax at the end.
pub fn matmul_3d() -> ModelProto {
    let mut g = GraphBuilder::new(13, 11);
    let x = g.input("tokens", &[Sym("N"), Fixed(4), Fixed(6)]);
    let w = g.weights("W", &[6, 5], 6, 2.0);
    let x = g.node("MatMul", &[&x, &w], vec![]);
    let b = g.uniform("b", &[1, 5], -0.5, 0.5);
    let x = g.node("Add", &[&b, &x], vec![]);
    let x = g.node("Relu", &[&x], vec![]);
    let x = g.node("Transpose", &[&x], vec![ais("perm", &[0, 2, 1])]); // [5, 4]
    let shape = g.ints("shape", &[2], &[0, 20]);
    let x = g.node("Reshape", &[&x, &shape], vec![]);
    let x = g.gemm(&x, 20, 10, true);
    let x = g.node("LogSoftmax", &[&x], vec![ai("axis", 1)]);
    g.output(&x);
    g.build("matmul-3d")
}

/// Every golden fixture, by name.
pub fn all() -> Vec<(String, ModelProto)> {
    let mut v: Vec<(String, ModelProto)> = vec![
        ("bn-leaky-softmax".into(), bn_leaky_softmax()),
        ("nhwc-mlp".into(), nhwc_mlp()),
        ("nhwc-cnn".into(), nhwc_cnn()),
        ("residual-cifar".into(), residual_cifar(13, Head::Flatten)),
        ("residual-cifar-opset9-shape-chain".into(), residual_cifar(9, Head::ShapeChain)),
        ("residual-cifar-opset13-shape-chain".into(), residual_cifar(13, Head::ShapeChain)),
        ("residual-cifar-reducemean".into(), residual_cifar(13, Head::ReduceMean)),
        ("residual-cifar-opset9-shape-slice".into(), residual_cifar(9, Head::ShapeSlice)),
        ("residual-cifar-opset13-shape-slice".into(), residual_cifar(13, Head::ShapeSlice)),
        ("vnn-flatten-axis0".into(), vnn_flatten_axis0()),
        ("vnn-mlp".into(), vnn_mlp()),
        ("vnn-left-matmul".into(), vnn_left_matmul()),
        ("concat".into(), concat()),
        ("matmul-3d".into(), matmul_3d()),
    ];
    for opset in [9, 13] {
        v.push((format!("activations-opset{opset}"), activations(opset)));
        v.push((format!("squeeze-opset{opset}"), squeeze(opset)));
    }
    for opset in [9, 13, 18] {
        v.push((format!("pad-opset{opset}"), pad(opset)));
    }
    v
}

/// The fixtures written to `onnx/testdata/` for the CLI.
pub fn testdata() -> Vec<(&'static str, ModelProto)> {
    vec![
        ("residual-cifar.onnx", residual_cifar(13, Head::Flatten)),
        ("bn-leaky-softmax.onnx", bn_leaky_softmax()),
        ("nhwc-mlp.onnx", nhwc_mlp()),
        ("unsupported-erf.onnx", unsupported_erf()),
    ]
}
