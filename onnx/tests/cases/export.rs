//! Export: the imported model written back with the network's (possibly changed) parameters.

use std::path::{Path, PathBuf};

use certify_core::{Layer, Network};
use certify_onnx::{export, export_bytes, import_bytes, import_path, Error, Imported, TensorLocation, Transform};
use prost::Message;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{ModelProto, TensorProto};
use tract_onnx::prelude::*;

use super::harness::{rel_diff, restore_softmax, tract_outputs};
use crate::support::{self, af, ai, float_tensor, Dim, GraphBuilder, Rng};

const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared");

/// A fresh scratch directory (removed by [`Scratch::drop`]).
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("certify-onnx-export-{}-{tag}", std::process::id()));
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

/// Multiplies every trainable parameter by `mul` and adds `add`.
fn perturb(net: &Network<f32>, mul: f32, add: f32) -> Network<f32> {
    let mut out = net.clone();
    let f = |v: &mut Vec<f32>| v.iter_mut().for_each(|x| *x = *x * mul + add);
    for id in 0..out.nodes().len() {
        match out.layer_params_mut(id).expect("node") {
            Layer::Conv2d(c) => {
                f(&mut c.weight);
                c.bias.as_mut().map(f);
            }
            Layer::Dense(d) => {
                f(&mut d.weight);
                d.bias.as_mut().map(f);
            }
            Layer::BatchNorm(b) => {
                for v in [&mut b.gamma, &mut b.beta, &mut b.mean, &mut b.var] {
                    f(v);
                }
            }
            _ => {}
        }
    }
    out
}

/// Float32 fixture exercising every transform: a Conv weight from a `Constant` node, a bias in
/// `float_data`, BatchNormalization, Gemm with transB = 0, alpha and beta, MatMul + Sub merged
/// into the bias, an initializer shared by the MatMul and a transB = 1 Gemm, a final Softmax.
fn transforms_model() -> ModelProto {
    let mut g = GraphBuilder::new(13, 11);
    let x = g.input("x", &[Dim::Sym("N"), Dim::Fixed(1), Dim::Fixed(4), Dim::Fixed(4)]);
    let wdata: Vec<f32> = (0..18).map(|_| g.rng.range(-0.5, 0.5)).collect();
    let w = g.constant(float_tensor("conv_w_const", &[2, 1, 3, 3], &wdata));
    let b = g.init_float_data("conv_b", &[2], &[0.1, -0.05]);
    let x = g.node("Conv", &[&x, &w, &b], vec![support::ais("pads", &[1, 1, 1, 1])]);
    let x = g.batchnorm(&x, 2);
    let x = g.node("Relu", &[&x], vec![]);
    let x = g.node("Flatten", &[&x], vec![]);
    let gw = g.weights("gemm_w", &[32, 8], 32, 1.5); // [K, M]: transB = 0
    let gc = g.uniform("gemm_c", &[8], -0.1, 0.1);
    let x = g.node("Gemm", &[&x, &gw, &gc], vec![ai("transB", 0), af("alpha", 0.5), af("beta", 2.0)]);
    let x = g.node("Tanh", &[&x], vec![]);
    let shared = g.weights("shared_w", &[8, 8], 8, 1.5);
    let x = g.node("MatMul", &[&x, &shared], vec![]);
    let s = g.uniform("sub_c", &[8], -0.1, 0.1);
    let x = g.node("Sub", &[&x, &s], vec![]);
    let x = g.node("Relu", &[&x], vec![]);
    let sb = g.uniform("shared_b", &[8], -0.1, 0.1);
    let x = g.node("Gemm", &[&x, &shared, &sb], vec![ai("transB", 1)]);
    let x = g.gemm(&x, 8, 10, true);
    let x = g.node("Softmax", &[&x], vec![ai("axis", 1)]);
    g.output(&x);
    g.build("export-transforms")
}

/// Every model to test: the fixtures, the transforms fixture and the shared models.
fn models() -> Vec<(String, ModelProto, Option<PathBuf>)> {
    let mut v: Vec<(String, ModelProto, Option<PathBuf>)> =
        support::all().into_iter().map(|(n, m)| (n, m, None)).collect();
    v.push(("export-transforms".into(), transforms_model(), None));
    let dir = Path::new(SHARED).join("models");
    if dir.is_dir() {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("read models dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
            .collect();
        paths.sort();
        for p in paths {
            let m = ModelProto::decode(&std::fs::read(&p).expect("read model")[..]).expect("decode");
            v.push((p.file_name().unwrap_or_default().to_string_lossy().into_owned(), m, Some(p)));
        }
    } else {
        println!("shared models skipped: {} does not exist", dir.display());
    }
    v
}

/// Loads the exported file in tract as a user would, then compares tract's outputs with
/// `network`'s forward pass on a few inputs.
fn check_with_tract(name: &str, bytes: &[u8], im: &Imported, network: &Network<f32>, scratch: &Scratch) -> f32 {
    let path = scratch.0.join(format!("{name}.exported.onnx"));
    std::fs::write(&path, bytes).expect("write exported");
    tract_onnx::onnx()
        .model_for_path(&path)
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .unwrap_or_else(|e| panic!("{name}: tract cannot load the exported model: {e:?}"));
    let model = ModelProto::decode(bytes).expect("exported bytes decode");
    let batch = 3;
    let x = Rng::new(5).inputs(batch * network.input_len());
    let mut ours = network.forward(&x, batch).expect("forward");
    restore_softmax(im, &mut ours);
    let theirs = tract_outputs(&model, im, &x, batch).expect("tract inference");
    rel_diff(&ours, &theirs)
}

fn import_model(m: &ModelProto, path: &Option<PathBuf>) -> Imported {
    match path {
        Some(p) => import_path(p).expect("import"),
        None => import_bytes(&m.encode_to_vec()).expect("import"),
    }
}

#[test]
fn unchanged_export_round_trips() {
    let scratch = Scratch::new("unchanged");
    for (name, m, path) in models() {
        let im = import_model(&m, &path);
        let bytes = export_bytes(&im, &im.network).unwrap_or_else(|e| panic!("{name}: {e}"));
        let back = ModelProto::decode(&bytes[..]).expect("decode");
        // Same graph and metadata: unchanged parameters leave the model as it was.
        assert_eq!(back, m, "{name}: the unchanged export differs from the original model");
        let rel = check_with_tract(&name, &bytes, &im, &im.network, &scratch);
        println!("{name}: unchanged export, {} parameter sources, tract rel diff {rel:.2e}", im.params.len());
        assert!(rel <= 1e-5, "{name}: tract on the export differs from our forward by {rel}");
        assert_eq!(import_bytes(&bytes).expect("re-import").network, im.network, "{name}");
    }
}

#[test]
fn changed_weights_round_trip() {
    let scratch = Scratch::new("changed");
    for (name, m, path) in models() {
        let im = import_model(&m, &path);
        let changed = perturb(&im.network, 1.1, 0.01);
        assert_ne!(changed, im.network);
        let bytes = export_bytes(&im, &changed).unwrap_or_else(|e| panic!("{name}: {e}"));
        let rel = check_with_tract(&name, &bytes, &im, &changed, &scratch);
        println!("{name}: perturbed export, tract rel diff {rel:.2e}");
        assert!(rel <= 1e-5, "{name}: tract on the export differs from our forward of the perturbed network by {rel}");
        let back = import_bytes(&bytes).expect("re-import");
        assert_eq!(back.network, changed, "{name}: re-import differs from the perturbed network");
        // Graph, names, opset and metadata are kept: only initializer/Constant values differ.
        let exported = ModelProto::decode(&bytes[..]).expect("decode");
        let (g0, g1) = (m.graph.as_ref().expect("graph"), exported.graph.as_ref().expect("graph"));
        assert_eq!((&exported.opset_import, &exported.producer_name), (&m.opset_import, &m.producer_name));
        assert_eq!((&g1.input, &g1.output, g1.node.len()), (&g0.input, &g0.output, g0.node.len()));
        for (a, b) in g0.node.iter().zip(&g1.node) {
            assert_eq!((&a.name, &a.op_type, &a.input, &a.output), (&b.name, &b.op_type, &b.input, &b.output));
        }
        let names = |g: &tract_onnx::pb::GraphProto| g.initializer.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(g0), names(g1));
    }
}

#[test]
fn transforms_are_recorded() {
    let im = import_bytes(&transforms_model().encode_to_vec()).expect("import");
    let t: Vec<_> = im.params.iter().map(|s| (s.node_name.as_str(), s.tensor.as_str(), &s.transform)).collect();
    assert!(im.params.iter().any(|s| matches!(s.location, TensorLocation::Constant { .. })), "{t:?}");
    assert!(t
        .iter()
        .any(|(_, _, x)| matches!(x, Transform::GemmWeight { trans_b: false, alpha, .. } if *alpha == 0.5)));
    assert!(t.iter().any(|(_, _, x)| matches!(x, Transform::GemmBias { beta, .. } if *beta == 2.0)));
    assert!(t.iter().any(|(_, _, x)| matches!(x, Transform::MergedShift { sign, .. } if *sign == -1.0)));
    assert!(t.iter().any(|(_, _, x)| matches!(x, Transform::MatMulWeight { .. })));
    // The shared initializer feeds two nodes.
    assert_eq!(im.params.iter().filter(|s| s.tensor.starts_with("shared_w")).count(), 2);
}

/// A tensor of `dt` holding `v`, in `raw_data` or in the typed field.
fn typed(name: &str, dims: &[i64], v: &[f32], dt: DataType, raw: bool) -> TensorProto {
    let mut t = TensorProto { name: name.into(), dims: dims.to_vec(), data_type: dt as i32, ..Default::default() };
    // Halves of small dyadic values are exact: v·2⁻⁴ rounded to 1/64 steps.
    match (dt, raw) {
        (DataType::Double, true) => t.raw_data = v.iter().flat_map(|&x| (x as f64).to_le_bytes()).collect(),
        (DataType::Double, false) => t.double_data = v.iter().map(|&x| x as f64).collect(),
        (DataType::Float16, _) => {
            // Only multiples of 1/64 in [-2, 2] are used: exact in half precision.
            let h: Vec<u16> = v.iter().map(|&x| half(x)).collect();
            if raw {
                t.raw_data = h.iter().flat_map(|x| x.to_le_bytes()).collect();
            } else {
                t.int32_data = h.iter().map(|&x| x as i32).collect();
            }
        }
        _ => unreachable!(),
    }
    t
}

/// Half-precision bits of a multiple of 1/64 with magnitude below 2 (test values only).
fn half(x: f32) -> u16 {
    if x == 0.0 {
        return 0;
    }
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    assert!((1..31).contains(&exp) && b & 0x1fff == 0, "{x} is not exact in half precision");
    sign | ((exp as u16) << 10) | ((b >> 13) & 0x3ff) as u16
}

#[test]
fn data_types_and_layouts_are_kept() {
    let mut g = GraphBuilder::new(13, 3);
    let x = g.input("x", &[Dim::Sym("N"), Dim::Fixed(1), Dim::Fixed(3), Dim::Fixed(3)]);
    let q = |g: &mut GraphBuilder, n: usize| -> Vec<f32> {
        (0..n).map(|_| (g.rng.range(-1.0, 1.0) * 64.0).round() / 64.0).collect()
    };
    let wv = q(&mut g, 8);
    let bv = q(&mut g, 2);
    let gv: Vec<f32> = q(&mut g, 2).iter().map(|v| v.abs() + 0.5).collect();
    let mv = q(&mut g, 2);
    g.initializers.push(typed("w16", &[2, 1, 2, 2], &wv, DataType::Float16, true));
    g.initializers.push(typed("b64", &[2], &bv, DataType::Double, false));
    g.initializers.push(typed("gamma16", &[2], &gv, DataType::Float16, false));
    g.initializers.push(typed("beta64", &[2], &bv, DataType::Double, true));
    g.initializers.push(typed("mean16", &[2], &mv, DataType::Float16, true));
    let var = g.uniform("var", &[2], 0.5, 1.0);
    let x = g.node("Conv", &[&x, "w16", "b64"], vec![]);
    let x = g.node("BatchNormalization", &[&x, "gamma16", "beta64", "mean16", &var], vec![]);
    let x = g.node("Flatten", &[&x], vec![]);
    let x = g.gemm(&x, 8, 3, true);
    g.output(&x);
    let m = g.build("dtypes");
    let im = import_bytes(&m.encode_to_vec()).expect("import");
    assert_eq!(ModelProto::decode(&export_bytes(&im, &im.network).expect("export")[..]).expect("decode"), m);
    // ×2 is exact in every precision, so the re-import must give the changed network exactly.
    let changed = perturb(&im.network, 2.0, 0.0);
    let bytes = export_bytes(&im, &changed).expect("export");
    assert_eq!(import_bytes(&bytes).expect("re-import").network, changed);
    let out = ModelProto::decode(&bytes[..]).expect("decode");
    for (a, b) in m.graph.as_ref().unwrap().initializer.iter().zip(&out.graph.as_ref().unwrap().initializer) {
        assert_eq!(a.data_type, b.data_type, "{}", a.name);
        assert_eq!(
            (a.raw_data.is_empty(), a.float_data.is_empty(), a.double_data.is_empty(), a.int32_data.is_empty()),
            (b.raw_data.is_empty(), b.float_data.is_empty(), b.double_data.is_empty(), b.int32_data.is_empty()),
            "{}: layout changed",
            a.name
        );
        assert_ne!(a, b, "{} was not written", a.name);
    }
    // A value that is not exact in half precision is rounded, within half precision.
    let changed = perturb(&im.network, 1.1, 0.01);
    let back = import_bytes(&export_bytes(&im, &changed).expect("export")).expect("re-import");
    let (Layer::Conv2d(a), Layer::Conv2d(b)) = (&back.network.nodes()[1].layer, &changed.nodes()[1].layer) else {
        panic!("conv expected")
    };
    assert!(a.weight.iter().zip(&b.weight).all(|(x, y)| (x - y).abs() <= 2e-3), "{:?} vs {:?}", a.weight, b.weight);
}

fn message(e: Error) -> String {
    e.to_string()
}

#[test]
fn refuses_the_source_file_and_writes_atomically() {
    let scratch = Scratch::new("errors");
    let src = scratch.0.join("model.onnx");
    std::fs::write(&src, support::bn_leaky_softmax().encode_to_vec()).expect("write");
    let im = import_path(&src).expect("import");
    assert_eq!(im.source_path(), Some(src.as_path()));
    let changed = perturb(&im.network, 1.1, 0.01);

    // The source itself, also spelled differently.
    for out in [src.clone(), scratch.0.join(".").join("model.onnx")] {
        let e = message(export(&im, &changed, &out).unwrap_err());
        assert!(e.contains("the model it was imported from"), "{e}");
    }
    assert_eq!(std::fs::read(&src).expect("read"), support::bn_leaky_softmax().encode_to_vec());

    // A good export, then overwriting it.
    let out = scratch.0.join("out.onnx");
    export(&im, &im.network, &out).expect("export");
    export(&im, &changed, &out).expect("overwrite");
    assert_eq!(import_path(&out).expect("re-import").network, changed);
    assert_eq!(scratch.files(), ["model.onnx", "out.onnx"]);

    // A structurally different network.
    let other = import_bytes(&support::nhwc_mlp().encode_to_vec()).expect("import").network;
    let e = message(export(&im, &other, &out).unwrap_err());
    assert!(e.contains("imported structure"), "{e}");

    // A changed Affine constant (the input normalisation) is refused, naming the node.
    let mut bad = changed.clone();
    let id = bad.nodes().iter().position(|n| matches!(n.layer, Layer::Affine(_))).expect("an Affine node");
    let node = bad.nodes()[id].name.clone();
    if let Some(Layer::Affine(a)) = bad.layer_params_mut(id) {
        a.shift[0] += 0.5;
    }
    let e = message(export(&im, &bad, &out).unwrap_err());
    assert!(e.contains(&format!("`{node}`")) && e.contains("only Conv/Gemm/MatMul/BatchNormalization"), "{e}");
    // A failed export leaves `out` as it was and no temporary file.
    assert_eq!(import_path(&out).expect("re-import").network, changed);
    assert_eq!(scratch.files(), ["model.onnx", "out.onnx"]);

    // A failure while writing (the target is a directory): no temporary file either.
    let blocker = scratch.0.join("dir.onnx");
    std::fs::create_dir(&blocker).expect("mkdir");
    assert!(export(&im, &changed, &blocker).is_err());
    assert_eq!(scratch.files(), ["dir.onnx", "model.onnx", "out.onnx"]);
    // A missing directory.
    let e = export(&im, &changed, &scratch.0.join("missing/out.onnx")).unwrap_err();
    assert!(matches!(e, Error::Write { .. }) && e.to_string().starts_with("cannot write"), "{e}");
    assert_eq!(scratch.files(), ["dir.onnx", "model.onnx", "out.onnx"]);
}

#[test]
fn changed_derived_parameter_is_refused() {
    // A MatMul weight computed by a Transpose of an initializer cannot be written back.
    let mut g = GraphBuilder::new(13, 9);
    let x = g.input("x", &[Dim::Sym("N"), Dim::Fixed(4)]);
    let w = g.weights("w", &[3, 4], 4, 1.0);
    let wt = g.node("Transpose", &[&w], vec![]);
    let x = g.node("MatMul", &[&x, &wt], vec![]);
    g.output(&x);
    let im = import_bytes(&g.build("derived").encode_to_vec()).expect("import");
    assert!(im.params.iter().any(|s| s.location == TensorLocation::Derived));
    export_bytes(&im, &im.network).expect("unchanged export");
    let e = message(export_bytes(&im, &perturb(&im.network, 1.1, 0.01)).unwrap_err());
    assert!(e.contains("computed from constants"), "{e}");
}

#[test]
fn shared_initializer_needs_consistent_values() {
    let im = import_bytes(&transforms_model().encode_to_vec()).expect("import");
    let users: Vec<usize> = im.params.iter().filter(|s| s.tensor.starts_with("shared_w")).map(|s| s.node).collect();
    assert_eq!(users.len(), 2);
    let bump = |net: &mut Network<f32>, id: usize, by: f32| {
        if let Some(Layer::Dense(d)) = net.layer_params_mut(id) {
            d.weight[1] += by;
        }
    };
    // Only one of the two users changed: the other would silently change too.
    let mut one = im.network.clone();
    bump(&mut one, users[0], 0.5);
    let e = message(export_bytes(&im, &one).unwrap_err());
    assert!(e.contains("does not re-import"), "{e}");
    // Both changed, to values that disagree on one element of the shared tensor.
    let mut both = one.clone();
    bump(&mut both, users[1], 0.25);
    let e = message(export_bytes(&im, &both).unwrap_err());
    assert!(e.contains("two different values") || e.contains("does not re-import"), "{e}");
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config { source_file: Some(file!()), ..Default::default() })]

    /// `export` into the source graph then re-import gives back every changed parameter bit for
    /// bit (also −0, subnormals and the extremes) and bitwise-equal logits, for every fixture
    /// whose parameters are stored as float32 without a scaling transform.
    #[test]
    fn export_round_trip_is_bitwise(
        which in 0usize..64,
        values in proptest::collection::vec(super::build::awkward_f32(), 1..64),
    ) {
        use super::build::{first_difference, output_bits, param_bits, set_params};
        let models: Vec<(String, ModelProto)> = support::all();
        let (name, m) = &models[which % models.len()];
        let Ok(im) = import_bytes(&m.encode_to_vec()) else { return Ok(()) };
        let mut changed = im.network.clone();
        set_params(&mut changed, &values);
        let bytes = export_bytes(&im, &changed).map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{name}: {e}")))?;
        let back = import_bytes(&bytes).expect("re-import").network;
        let (got, want) = (param_bits(&back), param_bits(&changed));
        proptest::prop_assert!(got == want, "{name}: parameters differ at {}", first_difference(&got, &want));
        let x: Vec<f32> = (0..2 * changed.input_len()).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
        let (got, want) = (output_bits(&back, &x, 2), output_bits(&changed, &x, 2));
        proptest::prop_assert!(got == want, "{name}: logits differ: {}", first_difference(&got.unwrap_or_default(), &want.unwrap_or_default()));
    }
}
