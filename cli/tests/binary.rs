//! The `certify` binary: a successful run on the shipped example, and every kind of bad input
//! giving exit status 2 with a one-line message naming the file — never a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::common::root;

fn certify(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_certify")).args(args).output().expect("the certify binary runs")
}

fn example_model() -> PathBuf {
    root().join("examples/models/mnist-convnet-maxpool.onnx")
}

fn example_data() -> PathBuf {
    root().join("examples/data/mnist-1k/t10k-images-idx3-ubyte.gz")
}

/// Writes an IDX file: `magic` type byte, dims, payload.
fn write_idx(path: &Path, ty: u8, dims: &[u32], payload: &[u8]) {
    let mut b = vec![0, 0, ty, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(payload);
    std::fs::write(path, b).unwrap();
}

/// A labels/images pair of `n` 28×28 images in `dir`, with the given labels.
fn write_pair(dir: &Path, pixels: &[u8], labels: &[u8]) -> PathBuf {
    let n = labels.len() as u32;
    let img = dir.join("t10k-images-idx3-ubyte");
    write_idx(&img, 0x08, &[n, 28, 28], pixels);
    write_idx(&dir.join("t10k-labels-idx1-ubyte"), 0x08, &[n], labels);
    img
}

fn assert_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "expected exit 2, stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("certify: error:"))
        .unwrap_or_else(|| panic!("no error line in: {stderr}"));
    assert!(line.contains(needle), "error line `{line}` should mention `{needle}`");
}

#[test]
fn json_lines_on_the_shipped_example() {
    let out = certify(&[
        example_model().to_str().unwrap(),
        "--data",
        example_data().to_str().unwrap(),
        "--limit",
        "20",
        "--json",
        "--quiet",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 21);
    for (i, l) in lines[..20].iter().enumerate() {
        assert_eq!(l["type"], "input");
        assert_eq!(l["index"], i);
        for key in [
            "label",
            "predicted",
            "correct",
            "logits",
            "margin",
            "jacobian_fro",
            "prop3_bound",
            "cor2_estimate",
            "cor2_class",
            "curvature_proxy",
            "curvature_bound",
            "x_norm",
            "deepfool_distance",
            "deepfool_iterations",
            "deepfool_success",
            "deepfool_jacobian_fro",
            "fgsm",
            "jsma_success",
            "jsma_pixels",
        ] {
            assert!(l.get(key).is_some(), "missing {key}");
        }
        assert_eq!(l["fgsm"].as_object().unwrap().len(), 4);
        // Prop. 3 never exceeds Cor. 2 (‖∇z_k* − ∇z_k‖ ≤ √2‖J‖_F).
        assert!(l["prop3_bound"].as_f64().unwrap() <= l["cor2_estimate"].as_f64().unwrap() * (1.0 + 1e-9));
    }
    let s = &lines[20];
    assert_eq!(s["type"], "summary");
    assert_eq!(s["n"], 20);
    for key in [
        "accuracy",
        "rho_adv",
        "mean_jacobian_fro",
        "mean_jacobian_fro_deepfool",
        "mean_prop3_bound",
        "mean_cor2_estimate",
        "frac_deepfool_ge_prop3",
        "fgsm_accuracy",
        "jsma_success_rate",
        "seconds",
    ] {
        assert!(!s[key].is_null(), "summary {key} is null");
    }
}

#[test]
fn csv_and_table_outputs() {
    let m = example_model();
    let d = example_data();
    let out = certify(&[
        m.to_str().unwrap(),
        "--data",
        d.to_str().unwrap(),
        "--limit",
        "5",
        "--csv",
        "--attacks",
        "none",
        "-q",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 6);
    let cols = rows[0].split(',').count();
    assert!(rows[1..].iter().all(|r| r.split(',').count() == cols));
    let out = certify(&[m.to_str().unwrap(), "--data", d.to_str().unwrap(), "--limit", "5", "--attacks", "fgsm", "-q"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("accuracy") && text.contains("FGSM accuracy at ε = 0.3"), "{text}");
}

#[test]
fn truncated_and_non_onnx_models_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(example_model()).unwrap();
    let trunc = dir.path().join("truncated.onnx");
    std::fs::write(&trunc, &bytes[..bytes.len() / 3]).unwrap();
    let data = example_data();
    assert_error(&certify(&[trunc.to_str().unwrap(), "--data", data.to_str().unwrap()]), "truncated.onnx");
    let text = dir.path().join("notes.onnx");
    std::fs::write(&text, "this is not a model\n").unwrap();
    assert_error(&certify(&[text.to_str().unwrap(), "--data", data.to_str().unwrap()]), "notes.onnx");
    // An unsupported operator is named, with its node.
    let erf = root().join("onnx/testdata/unsupported-erf.onnx");
    let out = certify(&[erf.to_str().unwrap(), "--data", data.to_str().unwrap()]);
    assert_error(&out, "unsupported-erf.onnx");
    assert_error(&out, "`Erf` is not supported");
    let missing = dir.path().join("missing.onnx");
    assert_error(&certify(&[missing.to_str().unwrap(), "--data", data.to_str().unwrap()]), "missing.onnx");
}

#[test]
fn data_problems_are_errors() {
    let m = example_model();
    let m = m.to_str().unwrap();
    // Labels out of range for a 10-class model.
    let dir = tempfile::tempdir().unwrap();
    let img = write_pair(dir.path(), &[0u8; 2 * 784], &[3, 12]);
    assert_error(&certify(&[m, "--data", img.to_str().unwrap()]), "12");
    // Empty data set.
    let dir = tempfile::tempdir().unwrap();
    let img = write_pair(dir.path(), &[], &[]);
    assert_error(&certify(&[m, "--data", img.to_str().unwrap()]), "t10k-images-idx3-ubyte");
    // Missing labels file.
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("t10k-images-idx3-ubyte");
    write_idx(&img, 0x08, &[1, 28, 28], &[0u8; 784]);
    assert_error(&certify(&[m, "--data", img.to_str().unwrap()]), "labels");
    // Shapes that do not fit the model.
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("t10k-images-idx3-ubyte");
    write_idx(&img, 0x08, &[1, 20, 20], &[0u8; 400]);
    write_idx(&dir.path().join("t10k-labels-idx1-ubyte"), 0x08, &[1], &[1]);
    assert_error(&certify(&[m, "--data", img.to_str().unwrap()]), "t10k-images-idx3-ubyte");
    // NaN pixels in float IDX data.
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("t10k-images-idx3-ubyte");
    let mut px: Vec<u8> = Vec::new();
    for i in 0..784 {
        px.extend_from_slice(&(if i == 17 { f32::NAN } else { 0.5f32 }).to_be_bytes());
    }
    write_idx(&img, 0x0D, &[1, 28, 28], &px);
    write_idx(&dir.path().join("t10k-labels-idx1-ubyte"), 0x08, &[1], &[1]);
    assert_error(&certify(&[m, "--data", img.to_str().unwrap()]), "NaN");
    // Non-existent data path.
    assert_error(&certify(&[m, "--data", "/nonexistent/data.gz"]), "/nonexistent/data.gz");
}

#[test]
fn bad_arguments_are_errors() {
    let m = example_model();
    let d = example_data();
    let (m, d) = (m.to_str().unwrap(), d.to_str().unwrap());
    assert_error(&certify(&[m, "--data", d, "--batch", "0"]), "--batch");
    assert_error(&certify(&[m, "--data", d, "--eps", "-1"]), "--eps");
    assert_error(&certify(&[m, "--data", d, "--std", "0"]), "--std");
    let out = certify(&[m, "--data", d, "--attacks", "bogus"]);
    assert_eq!(out.status.code(), Some(2));
}

/// A `.npy` v1.0 file with the given dtype descriptor, shape and raw little-endian payload.
fn write_npy(path: &Path, descr: &str, shape: &[usize], payload: &[u8]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_txt = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_txt}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(header.len() as u16).to_le_bytes());
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(payload);
    std::fs::write(path, b).unwrap();
}

/// A residual CIFAR-shaped CNN (BatchNorm, Add skips, GlobalAveragePool) on HWC `.npy` data
/// with per-channel normalisation: the samples are transposed to the model's CHW layout and all
/// figures come out finite.
#[test]
fn residual_cifar_cnn_on_npy_data() {
    let dir = tempfile::tempdir().unwrap();
    let n = 6;
    let pixels: Vec<u8> = (0..n * 32 * 32 * 3).map(|i| ((i * 7919) % 256) as u8).collect();
    write_npy(&dir.path().join("x_test.npy"), "|u1", &[n, 32, 32, 3], &pixels);
    let labels: Vec<u8> = (0..n as i64).flat_map(|i| (i % 10).to_le_bytes()).collect();
    write_npy(&dir.path().join("y_test.npy"), "<i8", &[n], &labels);
    let model = root().join("onnx/testdata/residual-cifar.onnx");
    let data = dir.path().join("x_test.npy");
    let out = certify(&[
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--mean",
        "0.49,0.48,0.45",
        "--std",
        "0.25,0.24,0.26",
        "--attacks",
        "deepfool,fgsm",
        "--json",
        "-q",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), n + 1);
    for l in &lines[..n] {
        assert_eq!(l["logits"].as_array().unwrap().len(), 10);
        assert!(l["jacobian_fro"].as_f64().unwrap() > 0.0);
        assert!(l["x_norm"].as_f64().is_some() && l["deepfool_distance"].as_f64().is_some());
    }
    // The same data with a channel count that matches neither axis is refused.
    let out = certify(&[model.to_str().unwrap(), "--data", data.to_str().unwrap(), "--mean", "0.5,0.5", "-q"]);
    assert_error(&out, "--mean");
}

/// PyTorch-style exports with in-graph normalisation, BatchNorm, LeakyReLU, AvgPool and a final
/// Softmax (stripped), and an NHWC Keras-style MLP, run on MNIST digits.
#[test]
fn other_exports_run_on_mnist() {
    for model in ["onnx/testdata/bn-leaky-softmax.onnx", "onnx/testdata/nhwc-mlp.onnx"] {
        let m = root().join(model);
        let d = example_data();
        let out = certify(&[m.to_str().unwrap(), "--data", d.to_str().unwrap(), "--limit", "8", "--json"]);
        assert!(out.status.success(), "{model}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(text.lines().count(), 9, "{model}");
        if model.contains("softmax") {
            assert!(String::from_utf8_lossy(&out.stderr).contains("Softmax"), "the stripped Softmax is reported");
        }
    }
}
