//! Golden fixtures generated in Rust: import, then compare with tract's inference.

use certify_core::Layer;
use certify_onnx::{import_bytes, Imported};
use prost::Message;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{ModelProto, TensorProto};

use super::harness::compare_with_tract;
use crate::support::{self, ai, Dim, GraphBuilder, Head};

fn import(model: &ModelProto) -> Imported {
    import_bytes(&model.encode_to_vec()).unwrap_or_else(|e| panic!("import failed: {e}"))
}

fn kinds(im: &Imported) -> Vec<&'static str> {
    im.network.nodes().iter().map(|n| n.layer.kind()).collect()
}

#[test]
fn every_fixture_matches_tract() {
    for (name, model) in support::all() {
        let im = import(&model);
        let fixed = im.input_shape_onnx[0] > 0;
        let rel = compare_with_tract(&model, &im, 3, 7);
        println!(
            "{name}: opset {}, input {:?} → {} nodes {:?}, stripped {:?}, rel diff {rel:.2e}",
            im.opset,
            im.input_shape_onnx,
            im.network.nodes().len(),
            kinds(&im),
            im.stripped_softmax
        );
        assert!(rel <= 1e-4, "{name}: relative difference {rel} vs tract");
        // The batch axis is the first one even when the file fixes it to 1.
        assert_eq!(fixed, name.starts_with("vnn"), "{name}");
    }
}

#[test]
fn bn_leaky_softmax_structure() {
    let im = import(&support::bn_leaky_softmax());
    assert_eq!(im.stripped_softmax.as_deref(), Some("Softmax"));
    assert!(im.notes.iter().any(|n| n.contains("stripped final Softmax")), "{:?}", im.notes);
    assert_eq!(im.input_name, "image");
    assert_eq!(im.input_shape_onnx, vec![-1, 1, 28, 28]);
    assert_eq!(im.opset, 13);
    // Sub and Div are merged into one affine map.
    assert_eq!(
        kinds(&im),
        [
            "Input",
            "Affine",
            "Conv2d",
            "BatchNorm",
            "LeakyRelu",
            "AvgPool2d",
            "Conv2d",
            "Relu",
            "AvgPool2d",
            "MaxPool2d",
            "Identity",
            "Reshape",
            "Dense",
            "Relu",
            "Dense"
        ]
    );
    let pools: Vec<_> = im
        .network
        .nodes()
        .iter()
        .filter_map(|n| match &n.layer {
            Layer::AvgPool2d(p) | Layer::MaxPool2d(p) => Some((p.count_include_pad, p.ceil_mode, n.shape.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(pools, [(false, false, vec![8, 14, 14]), (true, false, vec![16, 7, 7]), (false, true, vec![16, 4, 4])]);
    match &im.network.nodes()[1].layer {
        Layer::Affine(a) => {
            assert!((a.scale[0] - 1.0 / 0.3081).abs() < 1e-4);
            assert!((a.shift[0] + 0.1307 / 0.3081).abs() < 1e-4);
        }
        other => panic!("expected the normalisation, got {other:?}"),
    }
}

#[test]
fn shape_chains_are_folded() {
    for opset in [9, 13] {
        let im = import(&support::residual_cifar(opset, Head::ShapeChain));
        assert_eq!(im.network.input_shape(), &[3, 32, 32]);
        let reshape = im.network.nodes().iter().find(|n| matches!(n.layer, Layer::Reshape { .. })).expect("reshape");
        assert_eq!(reshape.shape, vec![16]);
        assert_eq!(kinds(&im).iter().filter(|k| **k == "Add").count(), 2);
    }
    for opset in [9, 13] {
        let im = import(&support::residual_cifar(opset, Head::ShapeSlice));
        assert_eq!(im.network.output_shape(), &[10]);
    }
    let im = import(&support::vnn_flatten_axis0());
    assert!(im.notes.iter().any(|n| n.contains("axis 0")), "{:?}", im.notes);
    let im = import(&support::residual_cifar(13, Head::ReduceMean));
    assert!(kinds(&im).contains(&"GlobalAvgPool"));
}

#[test]
fn matmul_add_becomes_a_biased_dense_layer() {
    let im = import(&support::vnn_mlp());
    assert_eq!(im.input_shape_onnx, vec![1, 784, 1]);
    assert_eq!(im.network.input_shape(), &[784, 1]);
    assert_eq!(kinds(&im), ["Input", "Reshape", "Dense", "Relu", "Dense", "Relu", "Dense"]);
    assert!(im.network.nodes().iter().all(|n| !matches!(&n.layer, Layer::Dense(d) if d.bias.is_none())));
    // Batches work even though the file fixes the batch to 1.
    let x = vec![0.25f32; 3 * 784];
    let y = im.network.forward(&x, 3).expect("batch of 3");
    assert_eq!(&y[..10], &y[20..30]);
    // The 3-D case: Add of a [1, 5] constant after MatMul over [N, 4, 6].
    let im = import(&support::matmul_3d());
    assert_eq!(im.stripped_softmax.as_deref(), Some("LogSoftmax"));
    assert!(matches!(&im.network.nodes()[1].layer, Layer::Dense(d) if d.bias.is_some()));
    assert!(!kinds(&im).contains(&"Affine"));
}

#[test]
fn clip_variants() {
    for opset in [9, 13] {
        let im = import(&support::activations(opset));
        let k = kinds(&im);
        assert!(k.contains(&"Clip") && k.contains(&"Sigmoid") && k.contains(&"Tanh"), "{k:?}");
        // Clip with only min = 0 is a ReLU.
        assert!(k.contains(&"Relu"), "{k:?}");
        let clip = im.network.nodes().iter().find_map(|n| match n.layer {
            Layer::Clip { min, max } => Some((min, max)),
            _ => None,
        });
        assert_eq!(clip, Some((-0.5, 0.5)));
    }
}

#[test]
fn float16_and_double_weights_are_converted() {
    // Gemm weights stored as float16 (cast to float in the graph) and bias stored as double.
    let mut g = GraphBuilder::new(13, 3);
    let x = g.input("x", &[Dim::Sym("N"), Dim::Fixed(4)]);
    let w: Vec<f32> = (0..12).map(|i| (i as f32 - 5.5) / 4.0).collect();
    let bits: Vec<i32> = w.iter().map(|v| f32_to_f16_exact(*v) as i32).collect();
    g.initializers.push(TensorProto {
        name: "w16".into(),
        dims: vec![3, 4],
        data_type: DataType::Float16 as i32,
        int32_data: bits,
        ..Default::default()
    });
    g.initializers.push(TensorProto {
        name: "b64".into(),
        dims: vec![3],
        data_type: DataType::Double as i32,
        double_data: vec![0.5, -0.25, 1.0],
        ..Default::default()
    });
    let wf = g.node("Cast", &["w16"], vec![ai("to", DataType::Float as i64)]);
    let bf = g.node("Cast", &["b64"], vec![ai("to", DataType::Float as i64)]);
    let y = g.node("Gemm", &[&x, &wf, &bf], vec![ai("transB", 1)]);
    g.output(&y);
    let model = g.build("f16");
    let im = import(&model);
    match &im.network.nodes()[1].layer {
        Layer::Dense(d) => {
            assert_eq!(d.weight, w);
            assert_eq!(d.bias.as_deref(), Some(&[0.5, -0.25, 1.0][..]));
        }
        other => panic!("expected Dense, got {other:?}"),
    }
    assert!(compare_with_tract(&model, &im, 3, 1) <= 1e-6);
}

/// float32 → float16 bits for values that float16 represents exactly.
fn f32_to_f16_exact(v: f32) -> u16 {
    if v == 0.0 {
        return 0;
    }
    let bits = v.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32 - 127 + 15;
    let man = (bits & 0x7f_ffff) >> 13;
    assert!((1..31).contains(&exp) && bits & 0x1fff == 0, "{v} is not exact in float16");
    sign | ((exp as u16) << 10) | man as u16
}

#[test]
fn testdata_files_are_up_to_date() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    for (file, model) in support::testdata() {
        let path = dir.join(file);
        let bytes = model.encode_to_vec();
        assert!(bytes.len() < 200 * 1024, "{file} is {} bytes", bytes.len());
        let on_disk = std::fs::read(&path).unwrap_or_default();
        assert!(
            on_disk == bytes,
            "{} is missing or stale: run `cargo run --release -p certify-onnx --example make_fixtures`",
            path.display()
        );
        match certify_onnx::import_path(&path) {
            Ok(im) => assert_eq!(im.network.num_classes(), 10),
            Err(certify_onnx::Error::UnsupportedOp { op, .. }) if file.starts_with("unsupported-") => {
                assert_eq!(op, "Erf")
            }
            Err(e) => panic!("import {file}: {e}"),
        }
    }
}

#[test]
fn squeeze_without_axes_keeps_the_batch_axis() {
    let mut g = GraphBuilder::new(11, 5);
    let x = g.input("x", &[Dim::Sym("N"), Dim::Fixed(1), Dim::Fixed(10), Dim::Fixed(1)]);
    let x = g.node("Squeeze", &[&x], vec![]);
    let x = g.gemm(&x, 10, 10, true);
    g.output(&x);
    let im = import(&g.build("squeeze-all"));
    assert_eq!(im.network.nodes()[1].shape, vec![10]);
}
