//! Malformed and unsupported models: the right error, never a panic.

use std::panic::{catch_unwind, AssertUnwindSafe};

use certify_onnx::{import_bytes, Error};
use prost::Message;
use tract_onnx::pb::ModelProto;

use crate::support::{self, af, ai, ais, astr, Dim, GraphBuilder, Rng};

fn err(model: ModelProto) -> Error {
    match import_bytes(&model.encode_to_vec()) {
        Ok(im) => panic!(
            "import should fail, got {:?}",
            im.network.nodes().iter().map(|n| n.layer.kind()).collect::<Vec<_>>()
        ),
        Err(e) => {
            println!("{e}");
            e
        }
    }
}

/// A graph `x [N, 10] → f(x) → Gemm → 10 logits`, with `f` given.
fn with_op(opset: i64, f: impl FnOnce(&mut GraphBuilder, &str) -> String) -> ModelProto {
    let mut g = GraphBuilder::new(opset, 1);
    let x = g.input("x", &[Dim::Sym("N"), Dim::Fixed(10)]);
    let y = f(&mut g, &x);
    let y = g.gemm(&y, 10, 10, true);
    g.output(&y);
    g.build("bad")
}

/// A graph `x [N, 4, 8, 8] → f(x) → Flatten → Gemm`, with `f` keeping the size 256.
fn with_image_op(opset: i64, f: impl FnOnce(&mut GraphBuilder, &str) -> String) -> ModelProto {
    let mut g = GraphBuilder::new(opset, 1);
    let x = g.input("x", &[Dim::Sym("N"), Dim::Fixed(4), Dim::Fixed(8), Dim::Fixed(8)]);
    let y = f(&mut g, &x);
    let y = g.node("Flatten", &[&y], vec![]);
    let y = g.gemm(&y, 256, 10, true);
    g.output(&y);
    g.build("bad")
}

#[test]
fn empty_and_random_bytes() {
    let e = import_bytes(&[]).unwrap_err();
    assert!(matches!(e, Error::Decode { .. }), "{e}");
    assert!(e.to_string().contains("empty"), "{e}");
    let mut rng = Rng::new(99);
    for len in [1usize, 7, 100, 4096] {
        for _ in 0..10 {
            let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            let e = import_bytes(&bytes).unwrap_err();
            assert!(matches!(e, Error::Decode { .. } | Error::BadGraph(_)), "{e}");
        }
    }
}

#[test]
fn truncated_model() {
    let bytes = support::bn_leaky_softmax().encode_to_vec();
    let e = import_bytes(&bytes[..bytes.len() / 2]).unwrap_err();
    assert!(matches!(e, Error::Decode { .. }), "{e}");
    assert!(e.to_string().contains("is not a valid ONNX model"), "{e}");
    let shared = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/models/vnncomp-verivital-convnet-maxpool.onnx");
    match std::fs::read(shared) {
        Ok(real) => {
            let dir = std::env::temp_dir().join(format!("certify-onnx-truncated-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let path = dir.join("truncated.onnx");
            std::fs::write(&path, &real[..real.len() * 2 / 3]).expect("write");
            let e = certify_onnx::import_path(&path).unwrap_err();
            assert!(matches!(e, Error::Decode { .. }), "{e}");
            assert!(e.to_string().contains("truncated.onnx` is not a valid ONNX model"), "{e}");
            std::fs::remove_dir_all(&dir).ok();
        }
        Err(_) => println!("shared model absent: skipped the truncated real model"),
    }
    let e = certify_onnx::import_path(std::path::Path::new("/nonexistent/model.onnx")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
}

#[test]
fn unsupported_ops_are_named() {
    let lstm = with_op(13, |g, x| {
        let w = g.uniform("W", &[1, 40, 10], -0.1, 0.1);
        let r = g.uniform("R", &[1, 40, 10], -0.1, 0.1);
        g.node("LSTM", &[x, &w, &r], vec![ai("hidden_size", 10)])
    });
    let e = err(lstm);
    match &e {
        Error::UnsupportedOp { op, node, supported } => {
            assert_eq!(op, "LSTM");
            assert!(node.starts_with("LSTM"), "{node}");
            assert!(supported.contains("Conv"));
        }
        other => panic!("expected UnsupportedOp, got {other:?}"),
    }
    let msg = e.to_string();
    assert!(msg.contains("`LSTM`") && msg.contains("Gemm") && msg.contains("node `LSTM"), "{msg}");

    let gather = with_op(13, |g, x| {
        let idx = g.ints("idx", &[10], &[9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
        g.node("Gather", &[x, &idx], vec![ai("axis", 1)])
    });
    let e = err(gather);
    assert!(matches!(&e, Error::UnsupportedOp { op, .. } if op == "Gather"), "{e}");
    assert!(e.to_string().contains("Gather_"), "{e}");

    let custom = with_op(13, |g, x| {
        let y = g.node("FusedGemm", &[x], vec![]);
        if let Some(n) = g.nodes.last_mut() {
            n.domain = "com.microsoft".into();
        }
        y
    });
    assert!(matches!(err(custom), Error::UnsupportedOp { op, .. } if op == "com.microsoft.FusedGemm"));
}

#[test]
fn unsupported_uses_of_supported_ops() {
    let cases: Vec<(&str, ModelProto)> = vec![
        ("Mul of two non-constant", with_op(13, |g, x| g.node("Mul", &[x, x], vec![]))),
        (
            "c / x",
            with_op(13, |g, x| {
                let c = g.init("c", &[], &[2.0]);
                g.node("Div", &[&c, x], vec![])
            }),
        ),
        ("moves the batch axis", with_image_op(13, |g, x| g.node("Transpose", &[x], vec![ais("perm", &[1, 0, 2, 3])]))),
        (
            "batch axis",
            with_image_op(13, |g, x| {
                let s = g.ints("s", &[4], &[4, -1, 8, 8]);
                g.node("Reshape", &[x, &s], vec![])
            }),
        ),
        ("only as the last operator", with_op(13, |g, x| g.node("Softmax", &[x], vec![]))),
        ("concatenation along the batch axis", with_op(13, |g, x| g.node("Concat", &[x, x], vec![ai("axis", 0)]))),
        (
            "must be a constant",
            with_op(13, |g, x| {
                let w = g.node("Relu", &[x], vec![]);
                g.node("Gemm", &[x, &w], vec![])
            }),
        ),
    ];
    for (needle, model) in cases {
        let e = err(model);
        assert!(matches!(e, Error::Unsupported { .. }), "{needle}: {e:?}");
        assert!(e.to_string().contains(needle), "{needle}: {e}");
    }
}

#[test]
fn unsupported_attributes() {
    let cases: Vec<(&str, ModelProto)> = vec![
        (
            "dilations",
            with_image_op(13, |g, x| {
                g.node("MaxPool", &[x], vec![ais("kernel_shape", &[1, 1]), ais("dilations", &[2, 2])])
            }),
        ),
        (
            "storage_order",
            with_image_op(13, |g, x| {
                g.node("MaxPool", &[x], vec![ais("kernel_shape", &[1, 1]), ai("storage_order", 1)])
            }),
        ),
        (
            "transA",
            with_op(13, |g, x| {
                let w = g.uniform("w", &[10, 10], -1.0, 1.0);
                g.node("Gemm", &[x, &w], vec![ai("transA", 1)])
            }),
        ),
        (
            "mode",
            with_op(13, |g, x| {
                let p = g.ints("p", &[4], &[0, 0, 0, 0]);
                g.node("Pad", &[x, &p], vec![astr("mode", "reflect")])
            }),
        ),
        (
            "training_mode",
            with_image_op(15, |g, x| {
                let y = g.batchnorm(x, 4);
                if let Some(n) = g.nodes.last_mut() {
                    n.attribute.push(ai("training_mode", 1));
                }
                y
            }),
        ),
    ];
    for (attr, model) in cases {
        let e = err(model);
        assert!(matches!(&e, Error::UnsupportedAttribute { attribute, .. } if attribute == attr), "{attr}: {e:?}");
    }
}

#[test]
fn bad_graphs() {
    // Missing initializer.
    let e = err(with_op(13, |g, x| g.node("Add", &[x, "nowhere"], vec![])));
    assert!(matches!(&e, Error::BadGraph(m) if m.contains("`nowhere`") && m.contains("missing initializer")), "{e}");
    // Two inputs.
    let mut g = GraphBuilder::new(13, 1);
    let a = g.input("a", &[Dim::Sym("N"), Dim::Fixed(10)]);
    let b = g.input("b", &[Dim::Sym("N"), Dim::Fixed(10)]);
    let y = g.node("Add", &[&a, &b], vec![]);
    g.output(&y);
    let e = err(g.build("two"));
    assert!(matches!(&e, Error::BadGraph(m) if m.contains("2 inputs (a, b)")), "{e}");
    // Symbolic non-batch axis.
    let mut g = GraphBuilder::new(13, 1);
    let x = g.input("x", &[Dim::Sym("N"), Dim::Sym("features")]);
    let y = g.node("Relu", &[&x], vec![]);
    g.output(&y);
    let e = err(g.build("sym"));
    assert!(matches!(&e, Error::BadGraph(m) if m.contains("symbolic")), "{e}");
    // Opsets out of range.
    for opset in [8, 19] {
        let e = err(with_op(opset, |g, x| g.node("Relu", &[x], vec![])));
        assert!(matches!(&e, Error::BadGraph(m) if m.contains(&format!("opset {opset}"))), "{e}");
    }
    // Output produced by no node.
    let mut g = GraphBuilder::new(13, 1);
    g.input("x", &[Dim::Sym("N"), Dim::Fixed(10)]);
    g.output("ghost");
    let e = err(g.build("ghost"));
    assert!(matches!(&e, Error::BadGraph(m) if m.contains("`ghost`")), "{e}");
    // Output that does not depend on the input.
    let mut g = GraphBuilder::new(13, 1);
    g.input("x", &[Dim::Sym("N"), Dim::Fixed(10)]);
    let c = g.init("c", &[10], &[1.0; 10]);
    let y = g.node("Relu", &[&c], vec![]);
    g.output(&y);
    assert!(matches!(err(g.build("const")), Error::BadGraph(_)));
}

#[test]
fn bad_weights_name_the_initializer() {
    let mut model = with_op(13, |g, x| g.node("Relu", &[x], vec![]));
    let graph = model.graph.as_mut().expect("graph");
    let w = graph.initializer.iter_mut().find(|t| t.name.starts_with("fc_w")).expect("weight");
    let name = w.name.clone();
    w.raw_data[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
    let e = err(model.clone());
    assert!(matches!(&e, Error::BadTensor { name: n, .. } if *n == name), "{e}");
    assert!(e.to_string().contains("#2 is NaN"), "{e}");

    let graph = model.graph.as_mut().expect("graph");
    let w = graph.initializer.iter_mut().find(|t| t.name == name).expect("weight");
    w.data_location = Some(1);
    let e = err(model.clone());
    assert!(matches!(&e, Error::BadTensor { .. }) && e.to_string().contains("external file"), "{e}");

    let graph = model.graph.as_mut().expect("graph");
    let w = graph.initializer.iter_mut().find(|t| t.name == name).expect("weight");
    w.data_location = None;
    w.raw_data.truncate(20);
    let e = err(model);
    assert!(matches!(&e, Error::BadTensor { .. }) && e.to_string().contains("raw_data holds 20 bytes"), "{e}");
}

#[test]
fn leaky_relu_default_and_final_softmax_axis() {
    let im = certify_onnx::import_bytes(&with_op(9, |g, x| g.node("LeakyRelu", &[x], vec![])).encode_to_vec()).unwrap();
    assert!(matches!(im.network.nodes()[1].layer, certify_core::Layer::LeakyRelu { alpha } if alpha == 0.01));
    // A softmax over the batch axis cannot be stripped.
    let mut g = GraphBuilder::new(13, 1);
    let x = g.input("x", &[Dim::Sym("N"), Dim::Fixed(10)]);
    let y = g.gemm(&x, 10, 10, true);
    let y = g.node("Softmax", &[&y], vec![ai("axis", 0)]);
    g.output(&y);
    let e = err(g.build("softmax0"));
    assert!(matches!(e, Error::Unsupported { .. }) && e.to_string().contains("not over the classes"), "{e}");
    let _ = af;
}

/// No input makes the importer (or running what it imported) panic: 50 truncations and 200
/// single-byte changes of a small fixture (`CERTIFY_ONNX_FUZZ_FLIPS` raises the count).
#[test]
fn corrupted_files_never_panic() {
    let bytes = support::activations(13).encode_to_vec();
    let flips = std::env::var("CERTIFY_ONNX_FUZZ_FLIPS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let mut rng = Rng::new(2024);
    let mut variants: Vec<Vec<u8>> = (0..50).map(|i| bytes[..i * bytes.len() / 50].to_vec()).collect();
    for _ in 0..flips {
        let mut b = bytes.clone();
        let pos = (rng.next_u64() % b.len() as u64) as usize;
        b[pos] ^= 1 + (rng.next_u64() % 255) as u8;
        variants.push(b);
    }
    for (i, b) in variants.iter().enumerate() {
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            if let Ok(im) = import_bytes(b) {
                let x = vec![0.5f32; 2 * im.network.input_len()];
                let _ = im.network.forward(&x, 2);
            }
        }));
        assert!(outcome.is_ok(), "variant {i} (length {}) made the importer panic", b.len());
    }
    println!("{} corrupted variants, none panicked", variants.len());
}
