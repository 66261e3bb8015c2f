//! `certify export` through the binary (compact f32/f16 and ONNX output, atomic write, refusals)
//! and the compact engine against the `Network<f32>` path on imported ONNX models: the shipped
//! example, and the shared MNIST models when `../shared` is present.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use certify_bounds::certify_batch;
use certify_core::compact::{to_compact, AlignedModel, CompactModel, Precision};
use certify_core::{Dense, Layer, Network};

use crate::common::{root, shared};

fn certify(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_certify")).args(args).output().expect("the certify binary runs")
}

fn example_model() -> PathBuf {
    root().join("examples/models/mnist-convnet-maxpool.onnx")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn assert_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "expected exit 2, stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(stderr.contains(needle), "stderr `{stderr}` should mention `{needle}`");
}

/// The first `n` images of a data set, as the main command prepares them (u8 / 255).
fn images(path: &Path, n: usize) -> Vec<f32> {
    let ds = certify_cli::data::load(path, None, Some(n)).expect("data set loads");
    ds.to_f32().iter().map(|&v| v / 255.0).collect()
}

/// Largest relative difference `|a − b| / max(|b|, floor)`.
fn rel(a: f64, b: f64, floor: f64) -> f64 {
    if a == b {
        0.0
    } else {
        (a - b).abs() / b.abs().max(floor)
    }
}

/// Compares the compact model (f32) of `net` with `certify_batch` on `n` inputs `xs`; returns the
/// largest relative differences of (logits, ‖J‖_F, Prop. 3, Cor. 2).
fn compare_f32(net: &Network<f32>, xs: &[f32], n: usize) -> [f64; 4] {
    let aligned = AlignedModel::new(&to_compact(net, Precision::F32).unwrap());
    let model = CompactModel::load(aligned.as_bytes()).unwrap();
    let mut scratch = vec![0u8; model.scratch_size()];
    let d = net.input_len();
    let want = certify_batch(net, &xs[..n * d], n).unwrap();
    let z = net.forward(&xs[..n * d], n).unwrap();
    let k = net.num_classes();
    let mut worst = [0f64; 4];
    for (i, w) in want.iter().enumerate() {
        let c = model.certify(&xs[i * d..(i + 1) * d], &mut scratch).unwrap();
        let zi = &z[i * k..(i + 1) * k];
        let zscale = zi.iter().fold(0f64, |m, &v| m.max((v as f64).abs()));
        for (a, b) in c.logits().iter().zip(zi) {
            worst[0] = worst[0].max(rel(*a as f64, *b as f64, zscale));
        }
        assert_eq!((c.predicted, c.runner_up, c.cor2_class), (w.predicted, w.runner_up, w.cor2_class), "input {i}");
        worst[1] = worst[1].max(rel(c.jacobian_fro, w.jacobian_fro, 0.0));
        worst[2] = worst[2].max(rel(c.prop3_bound, w.prop3_bound, 0.0));
        worst[3] = worst[3].max(rel(c.cor2_estimate, w.cor2_estimate, 0.0));
    }
    worst
}

#[test]
fn compact_export_of_the_example_runs_like_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let model = example_model();
    let onnx_len = std::fs::metadata(&model).unwrap().len() as usize;
    let mut sizes = Vec::new();
    for precision in ["f32", "f16"] {
        let out = dir.path().join(format!("m-{precision}.cfy"));
        let o = certify(&["export", s(&model), "--format", "compact", "--precision", precision, "--out", s(&out)]);
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
        let bytes = std::fs::read(&out).unwrap();
        assert!(stdout.contains(&format!("{} bytes", bytes.len())), "{stdout}");
        assert!(stdout.contains("scratch bytes"), "{stdout}");
        assert_eq!(&bytes[..4], b"CFY1");
        let aligned = AlignedModel::new(&bytes);
        let m = CompactModel::load(aligned.as_bytes()).unwrap();
        assert_eq!((m.input_len(), m.num_classes(), m.precision().name()), (784, 10, precision));
        sizes.push(bytes.len());
        // No temporary file is left beside the output.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(names.iter().all(|n| !n.to_string_lossy().ends_with(".tmp")), "{names:?}");
    }
    assert!(sizes[1] < sizes[0] / 2 + 4096 && sizes[0] <= onnx_len + 4096, "{sizes:?} vs {onnx_len}");

    let net = certify_onnx::import_path(&model).unwrap().network;
    let xs = images(&root().join("examples/data/mnist-1k/t10k-images-idx3-ubyte.gz"), 20);
    let worst = compare_f32(&net, &xs, 20);
    assert!(worst.iter().all(|&w| w <= 1e-5), "relative differences {worst:?}");
}

#[test]
fn onnx_reexport_imports_again() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("again.onnx");
    let o = certify(&["export", s(&example_model()), "--format", "onnx", "--out", s(&out)]);
    assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    let a = certify_onnx::import_path(&out).unwrap().network;
    let b = certify_onnx::import_path(&example_model()).unwrap().network;
    assert_eq!(a.nodes().len(), b.nodes().len());
}

#[test]
fn export_refusals_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    // --out is the model: refused, the model untouched.
    let copy = dir.path().join("m.onnx");
    std::fs::copy(example_model(), &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();
    assert_error(&certify(&["export", s(&copy), "--out", s(&copy)]), "is the input model");
    assert_eq!(std::fs::read(&copy).unwrap(), before);
    // A layer the format lacks: named, nothing written.
    let mut net = Network::<f32>::new(&[4]).unwrap();
    net.then("fc0", Layer::Dense(Dense { weight: vec![0.5; 16], bias: None, inputs: 4, outputs: 4 })).unwrap();
    net.then("squash", Layer::Sigmoid).unwrap();
    net.then("fc", Layer::Dense(Dense { weight: vec![0.25; 8], bias: None, inputs: 4, outputs: 2 })).unwrap();
    let sig = dir.path().join("sigmoid.onnx");
    certify_onnx::export_network(&net, &sig, &Default::default()).unwrap();
    let out = dir.path().join("sigmoid.cfy");
    assert_error(&certify(&["export", s(&sig), "--out", s(&out)]), "(Sigmoid) cannot be written to the compact");
    assert!(!out.exists());
    // Bad values and missing files.
    assert_error(&certify(&["export", s(&copy), "--precision", "f8", "--out", s(&out)]), "f8");
    assert_error(&certify(&["export", s(&dir.path().join("none.onnx")), "--out", s(&out)]), "none.onnx");
    assert_error(&certify(&["export", s(&copy), "--out", s(&dir.path().join("no/such/dir/m.cfy"))]), "cannot write");
}

#[test]
fn compact_matches_network_on_shared_models() {
    let Some(shared) = shared() else { return };
    let data = shared.join("data/mnist/t10k-images-idx3-ubyte.gz");
    let xs = images(&data, 50);
    for name in
        ["mnist-paper-base", "mnist-mlp-256x2-pytorch", "vnncomp-mnistfc-256x2", "vnncomp-verivital-convnet-maxpool"]
    {
        let net = certify_onnx::import_path(&shared.join(format!("models/{name}.onnx"))).unwrap().network;
        let n = if name == "mnist-paper-base" { 10 } else { 50 };
        let worst = compare_f32(&net, &xs, n);
        eprintln!("{name}: compact f32 vs Network<f32>, {n} inputs: logits, ‖J‖_F, Prop. 3, Cor. 2: {worst:?}");
        assert!(worst.iter().all(|&w| w <= 1e-5), "{name}: relative differences {worst:?}");
    }
}
