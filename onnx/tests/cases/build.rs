//! `export_network`: networks without a source model written as fresh ONNX models. Random
//! networks covering every layer kind (and every mapping: Gemm with and without bias, MatMul with
//! and without Add, Flatten and Reshape, pooling with padding, `ceil_mode` and
//! `count_include_pad`, …) are exported, run in tract (outputs equal ours within 1e-5) and
//! re-imported (forward equal within 1e-6), as is `paper-mnist` from `certify_core::arch`.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Once;

use certify_core::arch;
use certify_core::train::Rng as CoreRng;
use certify_core::{Affine, BatchNorm, Conv2d, Dense, Layer, Network, NodeId, Pad, Pool2d};
use certify_onnx::{
    export_network, export_network_bytes, import_bytes, import_path, BuildOptions, Error, BATCH_DIM, BUILD_IR_VERSION,
    BUILD_OPSET, INPUT_NAME, OUTPUT_NAME,
};
use prost::Message;
use tract_onnx::pb::tensor_shape_proto::dimension;
use tract_onnx::pb::{type_proto, ModelProto, ValueInfoProto};
use tract_onnx::prelude::*;

use super::harness::rel_diff;
use crate::support::Rng;

// ---------------------------------------------------------------------------------------------
// Random layers.

fn vals(rng: &mut Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.range(lo, hi)).collect()
}

#[allow(clippy::too_many_arguments)]
fn conv(
    rng: &mut Rng,
    cin: usize,
    cout: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 4],
    dilation: [usize; 2],
    groups: usize,
    bias: bool,
) -> Layer<f32> {
    let fan_in = cin / groups * kernel[0] * kernel[1];
    let s = 1.5 / (fan_in as f32).sqrt();
    Layer::Conv2d(Conv2d {
        weight: vals(rng, cout * fan_in, -s, s),
        bias: bias.then(|| vals(rng, cout, -0.2, 0.2)),
        out_channels: cout,
        in_channels: cin,
        kernel,
        stride,
        padding,
        dilation,
        groups,
    })
}

fn dense(rng: &mut Rng, inputs: usize, outputs: usize, bias: bool) -> Layer<f32> {
    let s = 1.5 / (inputs as f32).sqrt();
    Layer::Dense(Dense {
        weight: vals(rng, inputs * outputs, -s, s),
        bias: bias.then(|| vals(rng, outputs, -0.2, 0.2)),
        inputs,
        outputs,
    })
}

fn affine(rng: &mut Rng, n: usize) -> Layer<f32> {
    Layer::Affine(Affine { scale: vals(rng, n, 0.5, 2.0), shift: vals(rng, n, -0.5, 0.5) })
}

fn batchnorm(rng: &mut Rng, c: usize) -> Layer<f32> {
    Layer::BatchNorm(BatchNorm {
        gamma: vals(rng, c, 0.5, 1.5),
        beta: vals(rng, c, -0.2, 0.2),
        mean: vals(rng, c, -0.2, 0.2),
        var: vals(rng, c, 0.5, 2.0),
        epsilon: 1e-3,
    })
}

fn pool(kernel: [usize; 2], stride: [usize; 2], padding: [usize; 4], count_include_pad: bool, ceil: bool) -> Pool2d {
    Pool2d { kernel, stride, padding, count_include_pad, ceil_mode: ceil }
}

/// Appends a node fed by the last one, checking its shape.
fn then(net: &mut Network<f32>, name: &str, layer: Layer<f32>, shape: &[usize]) -> NodeId {
    let id = net.then(name, layer).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(net.nodes()[id].shape, shape, "{name}");
    id
}

fn push(net: &mut Network<f32>, name: &str, layer: Layer<f32>, inputs: &[NodeId], shape: &[usize]) -> NodeId {
    let id = net.push(name, layer, inputs).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(net.nodes()[id].shape, shape, "{name}");
    id
}

// ---------------------------------------------------------------------------------------------
// Test networks.

/// Affine on the input, grouped/dilated/strided Conv with asymmetric padding, BatchNorm,
/// LeakyRelu, MaxPool with ceil_mode and with padding, Conv without bias, Relu, AveragePool with
/// padding counted and not counted (with ceil_mode), Flatten, Gemm, Sigmoid, Gemm without bias,
/// Clip, Gemm.
fn cnn(seed: u64) -> Network<f32> {
    let mut r = Rng::new(seed);
    let mut n = Network::new(&[2, 9, 8]).unwrap();
    then(&mut n, "norm", affine(&mut r, 144), &[2, 9, 8]);
    then(&mut n, "conv1", conv(&mut r, 2, 4, [3, 2], [2, 1], [1, 0, 2, 1], [1, 2], 2, true), &[4, 5, 7]);
    then(&mut n, "bn1", batchnorm(&mut r, 4), &[4, 5, 7]);
    then(&mut n, "lrelu", Layer::LeakyRelu { alpha: 0.1 }, &[4, 5, 7]);
    then(&mut n, "pool_ceil", Layer::MaxPool2d(pool([2, 2], [2, 2], [0; 4], false, true)), &[4, 3, 4]);
    then(&mut n, "conv2", conv(&mut r, 4, 6, [2, 2], [1, 1], [1, 1, 0, 0], [1, 1], 1, false), &[6, 3, 4]);
    then(&mut n, "relu", Layer::Relu, &[6, 3, 4]);
    then(&mut n, "avg_incl", Layer::AvgPool2d(pool([2, 2], [1, 1], [1; 4], true, false)), &[6, 4, 5]);
    then(&mut n, "avg_excl_ceil", Layer::AvgPool2d(pool([3, 3], [2, 2], [1, 0, 1, 0], false, true)), &[6, 3, 2]);
    then(&mut n, "max_pad", Layer::MaxPool2d(pool([2, 2], [1, 1], [1, 1, 0, 0], false, false)), &[6, 3, 2]);
    then(&mut n, "flatten", Layer::Reshape { shape: vec![36] }, &[36]);
    then(&mut n, "fc1", dense(&mut r, 36, 16, true), &[16]);
    then(&mut n, "sigmoid", Layer::Sigmoid, &[16]);
    then(&mut n, "fc2", dense(&mut r, 16, 12, false), &[12]);
    then(&mut n, "clip", Layer::Clip { min: -0.3, max: 0.4 }, &[12]);
    then(&mut n, "fc3", dense(&mut r, 12, 10, true), &[10]);
    n
}

/// Two branches from the input, Add, Tanh, Concat on channels, Pad, Transpose, Dense on a 3-D
/// input (MatMul + Add), Identity, Reshape, MatMul without bias and MatMul + Add on 2-D inputs,
/// Concat on the last axis, GlobalAveragePool, Flatten, BatchNormalization on [N, C], Gemm.
fn branches(seed: u64) -> Network<f32> {
    let mut r = Rng::new(seed);
    let mut n = Network::new(&[3, 6, 6]).unwrap();
    let a = then(&mut n, "a", conv(&mut r, 3, 4, [3, 3], [1, 1], [1; 4], [1, 1], 1, true), &[4, 6, 6]);
    let b = push(&mut n, "b", conv(&mut r, 3, 4, [1, 1], [1, 1], [0; 4], [1, 1], 1, true), &[0], &[4, 6, 6]);
    push(&mut n, "sum", Layer::Add, &[a, b], &[4, 6, 6]);
    let t = then(&mut n, "tanh", Layer::Tanh, &[4, 6, 6]);
    push(&mut n, "cat", Layer::Concat { axis: 0 }, &[t, b], &[8, 6, 6]);
    let pad = Pad { begin: vec![0, 1, 0], end: vec![1, 0, 2], value: 0.3 };
    then(&mut n, "pad", Layer::Pad(pad), &[9, 7, 8]);
    then(&mut n, "transpose", Layer::Transpose { perm: vec![1, 2, 0] }, &[7, 8, 9]);
    then(&mut n, "proj", dense(&mut r, 9, 5, true), &[7, 8, 5]);
    then(&mut n, "identity", Layer::Identity, &[7, 8, 5]);
    let rs = then(&mut n, "reshape", Layer::Reshape { shape: vec![8, 35] }, &[8, 35]);
    let p = then(&mut n, "proj_nobias", dense(&mut r, 35, 6, false), &[8, 6]);
    let q = push(&mut n, "proj_bias", dense(&mut r, 35, 3, true), &[rs], &[8, 3]);
    push(&mut n, "cat_last", Layer::Concat { axis: 1 }, &[p, q], &[8, 9]);
    then(&mut n, "reshape3", Layer::Reshape { shape: vec![8, 3, 3] }, &[8, 3, 3]);
    then(&mut n, "gap", Layer::GlobalAvgPool, &[8, 1, 1]);
    then(&mut n, "flatten", Layer::Reshape { shape: vec![8] }, &[8]);
    then(&mut n, "bn", batchnorm(&mut r, 8), &[8]);
    then(&mut n, "out", dense(&mut r, 8, 10, true), &[10]);
    n
}

/// A vector input: Affine on the input, Gemm, LeakyRelu, Concat of vectors, an Affine as the
/// output node (so `logits` is the output of its Add), and a Clip with infinite bounds.
fn vector(seed: u64) -> Network<f32> {
    let mut r = Rng::new(seed);
    let mut n = Network::new(&[5]).unwrap();
    then(&mut n, "norm", affine(&mut r, 5), &[5]);
    then(&mut n, "fc1", dense(&mut r, 5, 7, true), &[7]);
    let l = then(&mut n, "leaky", Layer::LeakyRelu { alpha: 0.2 }, &[7]);
    then(&mut n, "clip_inf", Layer::Clip { min: f32::NEG_INFINITY, max: 0.8 }, &[7]);
    let f = then(&mut n, "fc2", dense(&mut r, 7, 3, true), &[3]);
    push(&mut n, "cat", Layer::Concat { axis: 0 }, &[l, f], &[10]);
    then(&mut n, "scale", affine(&mut r, 10), &[10]);
    n
}

/// AveragePool with padding counted and ceil_mode together (windows past the padded input).
fn avg_ceil_counted(seed: u64) -> Network<f32> {
    let mut r = Rng::new(seed);
    let mut n = Network::new(&[2, 7, 6]).unwrap();
    then(&mut n, "avg", Layer::AvgPool2d(pool([3, 2], [2, 2], [1, 1, 0, 0], true, true)), &[2, 4, 4]);
    then(&mut n, "flatten", Layer::Reshape { shape: vec![32] }, &[32]);
    then(&mut n, "fc", dense(&mut r, 32, 4, true), &[4]);
    n
}

/// An all-convolutional net whose output is `[K, 1, 1]` per sample.
fn spatial_output(seed: u64) -> Network<f32> {
    let mut r = Rng::new(seed);
    let mut n = Network::new(&[2, 5, 5]).unwrap();
    then(&mut n, "conv", conv(&mut r, 2, 10, [3, 3], [1, 1], [0; 4], [1, 1], 1, true), &[10, 3, 3]);
    then(&mut n, "gap", Layer::GlobalAvgPool, &[10, 1, 1]);
    n
}

/// `paper-mnist` from `certify_core::arch`.
fn paper_mnist(seed: u64) -> Network<f32> {
    arch::parse("paper-mnist").unwrap().build(Some(&[28, 28]), &mut CoreRng::new(seed)).unwrap()
}

/// Every test network, by name; `true` when it must re-import as the very same network.
fn networks() -> Vec<(&'static str, Network<f32>, bool)> {
    vec![
        ("cnn", cnn(1), true),
        ("branches", branches(2), true),
        ("vector", vector(3), true),
        ("avg-ceil-counted", avg_ceil_counted(4), true),
        ("spatial-output", spatial_output(5), true),
        ("paper-mnist", paper_mnist(6), true),
        (
            "conv-small",
            arch::parse("conv-small").unwrap().build(Some(&[3, 32, 32]), &mut CoreRng::new(7)).unwrap(),
            true,
        ),
        ("mlp", arch::parse("mlp:20-16-16-4").unwrap().build(None, &mut CoreRng::new(8)).unwrap(), true),
    ]
}

// ---------------------------------------------------------------------------------------------
// tract, and its warnings.

thread_local! {
    static WARNINGS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Records warnings and errors logged on the current thread.
struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            WARNINGS.with(|w| w.borrow_mut().push(format!("{} [{}]: {}", r.level(), r.target(), r.args())));
        }
    }
    fn flush(&self) {}
}

static CAPTURE: Capture = Capture;

/// Runs `f` and returns the warnings it logged on this thread.
fn warnings_of<R>(f: impl FnOnce() -> R) -> (R, Vec<String>) {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        log::set_logger(&CAPTURE).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Warn);
    });
    WARNINGS.with(|w| w.borrow_mut().clear());
    let r = f();
    (r, WARNINGS.with(|w| std::mem::take(&mut *w.borrow_mut())))
}

/// Loads the bytes in tract with the symbolic batch left symbolic, optimises, and runs `x`.
fn tract_run(bytes: &[u8], net: &Network<f32>, x: &[f32], batch: usize) -> TractResult<Vec<f32>> {
    let plan = tract_onnx::onnx().model_for_read(&mut &bytes[..])?.into_optimized()?.into_runnable()?;
    let mut dims = vec![batch];
    dims.extend_from_slice(net.input_shape());
    let y = plan.run(tvec!(Tensor::from_shape(&dims, x)?.into()))?;
    let mut out_dims = vec![batch];
    out_dims.extend_from_slice(net.output_shape());
    assert_eq!(y[0].shape(), &out_dims[..], "tract output shape");
    Ok(y[0].to_plain_array_view::<f32>()?.iter().copied().collect())
}

fn inputs(net: &Network<f32>, batch: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    vals(&mut r, batch * net.input_len(), -1.0, 1.0)
}

fn decode(bytes: &[u8]) -> ModelProto {
    ModelProto::decode(bytes).expect("decode")
}

/// `(name, dims)` of a graph input or output; symbolic dims as their names.
fn declared(v: &ValueInfoProto) -> (String, Vec<String>) {
    let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        panic!("`{}` is not a tensor", v.name)
    };
    let dims = t
        .shape
        .as_ref()
        .expect("shape")
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(dimension::Value::DimValue(v)) => v.to_string(),
            Some(dimension::Value::DimParam(p)) => p.clone(),
            None => "?".into(),
        })
        .collect();
    (v.name.clone(), dims)
}

fn dims(batch: &str, shape: &[usize]) -> Vec<String> {
    std::iter::once(batch.to_string()).chain(shape.iter().map(usize::to_string)).collect()
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn every_layer_matches_tract_and_reimports() {
    let mut kinds = BTreeSet::new();
    let mut ops = BTreeSet::new();
    for (name, net, same) in networks() {
        for n in &net.nodes()[1..] {
            kinds.insert(n.layer.kind());
        }
        let bytes = export_network_bytes(&net, &BuildOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        ops.extend(decode(&bytes).graph.expect("graph").node.into_iter().map(|n| n.op_type));
        for batch in [1, 3] {
            let x = inputs(&net, batch, 10 + batch as u64);
            let ours = net.forward(&x, batch).expect("forward");
            let (theirs, warned) = warnings_of(|| tract_run(&bytes, &net, &x, batch));
            let theirs = theirs.unwrap_or_else(|e| panic!("{name}: tract: {e:?}"));
            assert!(warned.is_empty(), "{name}: tract warned: {warned:?}");
            let d = rel_diff(&ours, &theirs);
            assert!(d <= 1e-5, "{name} (batch {batch}): tract differs by {d:e}");
            let back = import_bytes(&bytes).unwrap_or_else(|e| panic!("{name}: re-import: {e}"));
            assert!(back.notes.is_empty(), "{name}: {:?}", back.notes);
            let again = back.network.forward(&x, batch).expect("forward");
            let d = rel_diff(&again, &ours);
            assert!(d <= 1e-6, "{name} (batch {batch}): the re-imported network differs by {d:e}");
            if same {
                assert_eq!(back.network, net, "{name}: re-imports as another network");
            }
        }
    }
    let all = [
        "Conv2d",
        "MaxPool2d",
        "AvgPool2d",
        "GlobalAvgPool",
        "Dense",
        "Add",
        "Affine",
        "BatchNorm",
        "Relu",
        "LeakyRelu",
        "Sigmoid",
        "Tanh",
        "Clip",
        "Reshape",
        "Concat",
        "Pad",
        "Transpose",
        "Identity",
    ];
    assert_eq!(kinds, all.into_iter().collect(), "layer kinds covered");
    let want = [
        "Add",
        "AveragePool",
        "BatchNormalization",
        "Clip",
        "Concat",
        "Conv",
        "Flatten",
        "Gemm",
        "GlobalAveragePool",
        "Identity",
        "LeakyRelu",
        "MatMul",
        "MaxPool",
        "Mul",
        "Pad",
        "Relu",
        "Reshape",
        "Sigmoid",
        "Tanh",
        "Transpose",
    ];
    assert_eq!(ops, want.into_iter().map(String::from).collect(), "ONNX operators written");
}

#[test]
fn random_weights_match_tract() {
    // Several seeds of the hand-built networks (fresh weights, same structure).
    for seed in 20..26 {
        for (name, net) in [("cnn", cnn(seed)), ("branches", branches(seed)), ("vector", vector(seed))] {
            let bytes = export_network_bytes(&net, &BuildOptions::default()).unwrap();
            let x = inputs(&net, 2, seed);
            let ours = net.forward(&x, 2).unwrap();
            let theirs = tract_run(&bytes, &net, &x, 2).unwrap_or_else(|e| panic!("{name}/{seed}: {e:?}"));
            let d = rel_diff(&ours, &theirs);
            assert!(d <= 1e-5, "{name}/{seed}: tract differs by {d:e}");
        }
    }
}

#[test]
fn layout_names_and_attributes() {
    let net = paper_mnist(0);
    let bytes = export_network_bytes(&net, &BuildOptions::default()).unwrap();
    let m = decode(&bytes);
    assert_eq!((m.ir_version, BUILD_IR_VERSION, BUILD_OPSET), (8, 8, 17));
    assert_eq!(m.opset_import.len(), 1);
    assert_eq!((m.opset_import[0].domain.as_str(), m.opset_import[0].version), ("", 17));
    assert_eq!(m.producer_name, "certify");
    let g = m.graph.expect("graph");
    assert_eq!(g.input.len(), 1);
    assert_eq!(g.output.len(), 1);
    assert_eq!((INPUT_NAME, OUTPUT_NAME, BATCH_DIM), ("input", "logits", "N"));
    assert_eq!(declared(&g.input[0]), ("input".to_string(), dims("N", &[1, 28, 28])));
    assert_eq!(declared(&g.output[0]), ("logits".to_string(), dims("N", &[10])));
    let nodes: Vec<(&str, &str)> = g.node.iter().map(|n| (n.name.as_str(), n.op_type.as_str())).collect();
    assert_eq!(
        nodes,
        [
            ("conv1", "Conv"),
            ("relu1", "Relu"),
            ("pool1", "MaxPool"),
            ("conv2", "Conv"),
            ("relu2", "Relu"),
            ("pool2", "MaxPool"),
            ("flatten", "Flatten"),
            ("fc1", "Gemm"),
            ("relu3", "Relu"),
            ("fc2", "Gemm"),
        ]
    );
    assert_eq!(g.node[0].input, ["input", "conv1.weight", "conv1.bias"]);
    assert_eq!(g.node[0].output, ["conv1"]);
    assert_eq!(g.node[9].output, ["logits"]);
    let inits: Vec<(&str, &[i64])> = g.initializer.iter().map(|t| (t.name.as_str(), &t.dims[..])).collect();
    assert_eq!(
        inits,
        [
            ("conv1.weight", &[32i64, 1, 5, 5][..]),
            ("conv1.bias", &[32][..]),
            ("conv2.weight", &[64, 32, 5, 5][..]),
            ("conv2.bias", &[64][..]),
            ("fc1.weight", &[1024, 3136][..]),
            ("fc1.bias", &[1024][..]),
            ("fc2.weight", &[10, 1024][..]),
            ("fc2.bias", &[10][..]),
        ]
    );
    let attr = |node: usize, name: &str| {
        let a = g.node[node].attribute.iter().find(|a| a.name == name).unwrap_or_else(|| panic!("{name}"));
        if a.ints.is_empty() {
            vec![a.i]
        } else {
            a.ints.clone()
        }
    };
    assert_eq!(attr(0, "pads"), [2, 2, 2, 2]);
    assert_eq!(attr(0, "kernel_shape"), [5, 5]);
    assert_eq!(attr(0, "group"), [1]);
    assert_eq!(attr(2, "strides"), [2, 2]);
    assert_eq!(attr(6, "axis"), [1]);
    assert_eq!(attr(7, "transB"), [1]);

    // The other mappings' constants: batch axis first in Reshape (0), Transpose, Pad, Concat.
    let g = decode(&export_network_bytes(&branches(2), &BuildOptions::default()).unwrap()).graph.expect("graph");
    let node = |name: &str| g.node.iter().find(|n| n.name == name).unwrap_or_else(|| panic!("{name}"));
    let int_init = |name: &str| {
        let t = g.initializer.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("{name}"));
        t.raw_data.chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect::<Vec<_>>()
    };
    assert_eq!(node("reshape").input[1], "reshape.shape");
    assert_eq!(int_init("reshape.shape"), [0, 8, 35]);
    assert_eq!(int_init("pad.pads"), [0, 0, 1, 0, 0, 1, 0, 2]);
    assert_eq!(node("transpose").attribute[0].ints, [0, 2, 3, 1]);
    assert_eq!(node("cat").attribute[0].i, 1);
    assert_eq!(node("cat_last").attribute[0].i, 2);
    let proj: Vec<&str> = g.node.iter().filter(|n| n.name.starts_with("proj")).map(|n| n.op_type.as_str()).collect();
    assert_eq!(proj, ["MatMul", "Add", "MatMul", "MatMul", "Add"]);
    let w = g.initializer.iter().find(|t| t.name == "proj.weight").expect("proj.weight");
    assert_eq!(w.dims, [9, 5]);

    // A spatial output is declared as it is.
    let g = decode(&export_network_bytes(&spatial_output(1), &BuildOptions::default()).unwrap()).graph.expect("graph");
    assert_eq!(declared(&g.output[0]), ("logits".to_string(), dims("N", &[10, 1, 1])));
}

#[test]
fn tract_warnings_are_observed() {
    // Positive control: tract warns about opsets above 18, and the capture sees it.
    let net = vector(1);
    let mut m = decode(&export_network_bytes(&net, &BuildOptions::default()).unwrap());
    m.opset_import[0].version = 19;
    let bytes = m.encode_to_vec();
    let (r, warned) = warnings_of(|| tract_onnx::onnx().model_for_read(&mut &bytes[..]).map(|_| ()));
    r.unwrap();
    assert!(warned.iter().any(|w| w.contains("operator set")), "{warned:?}");
    // The exported model itself loads, optimises and runs without any.
    let bytes = export_network_bytes(&net, &BuildOptions::default()).unwrap();
    let x = inputs(&net, 2, 1);
    let (r, warned) = warnings_of(|| tract_run(&bytes, &net, &x, 2));
    r.unwrap();
    assert!(warned.is_empty(), "{warned:?}");
}

#[test]
fn names_are_made_unique() {
    let mut r = Rng::new(3);
    let mut n = Network::new(&[4]).unwrap();
    then(&mut n, "input", dense(&mut r, 4, 4, true), &[4]);
    then(&mut n, "logits", Layer::Relu, &[4]);
    then(&mut n, "fc.weight", Layer::Sigmoid, &[4]);
    then(&mut n, "fc", dense(&mut r, 4, 4, true), &[4]);
    then(&mut n, "fc", Layer::Tanh, &[4]);
    then(&mut n, "", Layer::Identity, &[4]);
    then(&mut n, "", dense(&mut r, 4, 3, true), &[3]);
    let bytes = export_network_bytes(&n, &BuildOptions::default()).unwrap();
    let g = decode(&bytes).graph.expect("graph");
    let names: Vec<&str> = g.node.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["input_1", "logits_1", "fc.weight", "fc", "fc_1", "identity_6", "dense_7"]);
    let mut seen = HashSet::new();
    for v in g.node.iter().flat_map(|n| n.output.iter()).chain(g.initializer.iter().map(|t| &t.name)) {
        assert!(seen.insert(v.clone()), "value `{v}` defined twice");
    }
    assert!(!seen.contains("input"));
    let node_names: HashSet<&str> = names.iter().copied().collect();
    assert_eq!(node_names.len(), names.len());
    assert!(!node_names.contains("") && !node_names.contains("input"));
    let weights: Vec<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(weights, ["input_1.weight", "input_1.bias", "fc.weight_1", "fc.bias", "dense_7.weight", "dense_7.bias"]);
    let x = inputs(&n, 2, 4);
    let ours = n.forward(&x, 2).unwrap();
    assert!(rel_diff(&tract_run(&bytes, &n, &x, 2).unwrap(), &ours) <= 1e-5);
    assert!(rel_diff(&import_bytes(&bytes).unwrap().network.forward(&x, 2).unwrap(), &ours) <= 1e-6);
}

#[test]
fn options_and_non_classifiers() {
    let net = vector(2);
    let opts = BuildOptions {
        producer_name: "certify train".into(),
        graph_name: "vector-net".into(),
        doc_string: "trained with λ = 0.1".into(),
        metadata: vec![("seed".into(), "7".into()), ("arch".into(), "custom".into())],
        ..BuildOptions::default()
    };
    let m = decode(&export_network_bytes(&net, &opts).unwrap());
    assert_eq!(m.producer_name, "certify train");
    assert_eq!(m.producer_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(m.doc_string, "trained with λ = 0.1");
    assert_eq!(m.graph.as_ref().expect("graph").name, "vector-net");
    let meta: Vec<(&str, &str)> = m.metadata_props.iter().map(|e| (e.key.as_str(), e.value.as_str())).collect();
    assert_eq!(meta, [("seed", "7"), ("arch", "custom")]);
    // Verification does not change the bytes.
    let unverified = export_network_bytes(&net, &BuildOptions { verify: false, ..opts.clone() }).unwrap();
    assert_eq!(unverified, export_network_bytes(&net, &opts).unwrap());

    // A network whose output is not a vector of logits is written (without the re-import check,
    // which needs a classifier) and runs in tract.
    let mut r = Rng::new(5);
    let mut n = Network::new(&[4]).unwrap();
    then(&mut n, "fc", dense(&mut r, 4, 6, true), &[6]);
    then(&mut n, "grid", Layer::Reshape { shape: vec![2, 3] }, &[2, 3]);
    assert!(n.check_classifier().is_err());
    let bytes = export_network_bytes(&n, &BuildOptions::default()).unwrap();
    let g = decode(&bytes).graph.expect("graph");
    assert_eq!(declared(&g.output[0]), ("logits".to_string(), dims("N", &[2, 3])));
    let x = inputs(&n, 3, 6);
    assert!(rel_diff(&tract_run(&bytes, &n, &x, 3).unwrap(), &n.forward(&x, 3).unwrap()) <= 1e-5);
}

#[test]
fn refuses_unexportable_networks() {
    let err = export_network_bytes(&Network::<f32>::new(&[3]).unwrap(), &BuildOptions::default()).unwrap_err();
    assert!(matches!(&err, Error::Export(m) if m.contains("no layers")), "{err}");

    let bad = |f: &dyn Fn(&mut Layer<f32>), id: usize, want: &str| {
        let mut net = cnn(1);
        f(net.layer_params_mut(id).expect("node"));
        let err = export_network_bytes(&net, &BuildOptions::default()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Export(_)), "{msg}");
        assert!(msg.contains(want) && msg.contains("NaN or an infinity"), "{msg}");
    };
    bad(
        &|l| {
            if let Layer::Conv2d(c) = l {
                c.weight[3] = f32::NAN
            }
        },
        2,
        "node `conv1` (Conv2d): its weight",
    );
    bad(
        &|l| {
            if let Layer::Dense(d) = l {
                d.bias.as_mut().unwrap()[0] = f32::INFINITY
            }
        },
        12,
        "`fc1` (Dense): its bias",
    );
    bad(
        &|l| {
            if let Layer::Affine(a) = l {
                a.shift[7] = f32::NEG_INFINITY
            }
        },
        1,
        "`norm` (Affine): its shift",
    );
    bad(
        &|l| {
            if let Layer::BatchNorm(b) = l {
                b.var[1] = f32::NAN
            }
        },
        3,
        "its running variance",
    );
    bad(
        &|l| {
            if let Layer::Clip { min, .. } = l {
                *min = f32::NAN
            }
        },
        15,
        "`clip` (Clip): its bounds",
    );
}

/// A fresh scratch directory (removed on drop).
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("certify-onnx-build-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create scratch dir");
        Scratch(d)
    }
    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .expect("read scratch dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn writes_files_atomically() {
    let scratch = Scratch::new("files");
    let out = scratch.0.join("model.onnx");
    let a = paper_mnist(1);
    let b = paper_mnist(2);
    export_network(&a, &out, &BuildOptions::default()).unwrap();
    assert_eq!(scratch.files(), ["model.onnx"]);
    let back = import_path(&out).unwrap();
    assert_eq!(back.network, a);
    assert_eq!(std::fs::read(&out).unwrap(), export_network_bytes(&a, &BuildOptions::default()).unwrap());

    // The default overwrites (a training run rewrites its model).
    export_network(&b, &out, &BuildOptions::default()).unwrap();
    assert_eq!(import_path(&out).unwrap().network, b);

    // With overwrite off an existing file is refused and left as it was.
    let before = std::fs::read(&out).unwrap();
    let keep = BuildOptions { overwrite: false, ..BuildOptions::default() };
    let err = export_network(&a, &out, &keep).unwrap_err();
    assert!(matches!(&err, Error::Exists { path } if path == &out), "{err:?}");
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), before);
    let fresh = scratch.0.join("fresh.onnx");
    export_network(&a, &fresh, &keep).unwrap();
    assert_eq!(import_path(&fresh).unwrap().network, a);

    // Write failures name the file and leave nothing behind; so do export errors.
    let missing = scratch.0.join("no-such-dir").join("m.onnx");
    let err = export_network(&a, &missing, &BuildOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Write { .. }), "{err:?}");
    assert!(err.to_string().starts_with("cannot write"), "{err}");
    let mut nan = a.clone();
    if let Some(Layer::Dense(d)) = nan.layer_params_mut(8) {
        d.weight[0] = f32::NAN;
    }
    let err = export_network(&nan, &scratch.0.join("nan.onnx"), &BuildOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Export(_)), "{err:?}");
    assert_eq!(scratch.files(), ["fresh.onnx", "model.onnx"]);
    // A directory is not overwritten.
    let err = export_network(&a, &scratch.0, &BuildOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Write { .. } | Error::Export(_)), "{err:?}");
    assert_eq!(scratch.files(), ["fresh.onnx", "model.onnx"]);
}

// ---------------------------------------------------------------------------------------------
// Bitwise round trip.

/// Finite f32 values that stress an exact round trip: ordinary values, both zeros,
/// subnormals, the extremes, and arbitrary finite bit patterns.
pub(super) fn awkward_f32() -> impl proptest::strategy::Strategy<Value = f32> {
    use proptest::prelude::*;
    prop_oneof![
        4 => -2.0f32..2.0,
        1 => prop::sample::select(vec![0.0f32, -0.0, 1e-45, -1e-45, f32::MIN_POSITIVE, -3.4e-39, f32::MAX, f32::MIN, 1e30]),
        1 => any::<f32>().prop_filter("finite", |v| v.is_finite()),
    ]
}

/// Overwrites every trainable parameter of `net` with `values`, cycled.
pub(super) fn set_params(net: &mut Network<f32>, values: &[f32]) {
    let layout = net.params();
    let mut next = values.iter().copied().cycle();
    net.update_params(&layout, |_, p, _| p.iter_mut().for_each(|v| *v = next.next().expect("values")))
        .expect("own layout");
}

/// The bits of every trainable parameter, in order.
pub(super) fn param_bits(net: &Network<f32>) -> Vec<u32> {
    net.params().tensors().iter().flat_map(|t| t.iter().map(|v| v.to_bits())).collect()
}

/// Where two bit vectors first differ, for messages: `(index, a, b)` as floats, or the lengths.
pub(super) fn first_difference(a: &[u32], b: &[u32]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!("index {i}: {:e} vs {:e}", f32::from_bits(a[i]), f32::from_bits(b[i])),
        None if a.len() != b.len() => format!("lengths {} vs {}", a.len(), b.len()),
        None => "equal".into(),
    }
}

/// The bits of the forward pass on `x` (an error maps to no bits).
pub(super) fn output_bits(net: &Network<f32>, x: &[f32], batch: usize) -> Option<Vec<u32>> {
    net.forward(x, batch).ok().map(|z| z.iter().map(|v| v.to_bits()).collect())
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config { source_file: Some(file!()), ..Default::default() })]

    /// `export_network` then `import_bytes` gives back the very same network: every parameter
    /// bit for bit (also −0, subnormals and the extremes) and bitwise-equal logits.
    #[test]
    fn export_network_round_trip_is_bitwise(
        which in 0usize..6,
        seed in 0u64..1000,
        values in proptest::collection::vec(awkward_f32(), 1..64),
    ) {
        let mut net = match which {
            0 => cnn(seed),
            1 => branches(seed),
            2 => vector(seed),
            3 => avg_ceil_counted(seed),
            4 => spatial_output(seed),
            _ => arch::parse("mlp:20-16-16-4").unwrap().build(None, &mut CoreRng::new(seed)).unwrap(),
        };
        set_params(&mut net, &values);
        let bytes = export_network_bytes(&net, &BuildOptions::default()).expect("export");
        let back = import_bytes(&bytes).expect("re-import").network;
        let (got, want) = (param_bits(&back), param_bits(&net));
        proptest::prop_assert!(got == want, "parameters differ at {}", first_difference(&got, &want));
        let x = inputs(&net, 2, seed);
        let (got, want) = (output_bits(&back, &x, 2), output_bits(&net, &x, 2));
        proptest::prop_assert!(got == want, "logits differ: {}", first_difference(&got.unwrap_or_default(), &want.unwrap_or_default()));
    }
}
