//! `certify --device gpu|auto` through the binary: the per-input JSON values equal the CPU's
//! within 1e-4 relative, and a machine without a GPU gets a clear error (gpu) or the CPU with a
//! note (auto). The comparison is skipped, with a message, when no adapter exists here, unless
//! `REQUIRE_GPU=1`.

use std::process::{Command, Output};

use serde_json::Value;

use crate::common::root;

fn certify(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_certify"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("the certify binary runs")
}

fn json_run(device: &str, env: &[(&str, &str)]) -> Output {
    let model = root().join("examples/models/mnist-convnet-maxpool.onnx");
    let data = root().join("examples/data/mnist-1k");
    certify(
        &[
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--limit",
            "12",
            "--batch",
            "5",
            "--attacks",
            "none",
            "--json",
            "-q",
            "--device",
            device,
        ],
        env,
    )
}

fn inputs(out: &Output) -> Vec<Value> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["type"] == "input")
        .collect()
}

fn close(what: &str, g: &Value, c: &Value) {
    match (g.as_f64(), c.as_f64()) {
        (Some(g), Some(c)) => assert!((g - c).abs() <= 1e-4 * c.abs().max(1e-9), "{what}: gpu {g} vs cpu {c}"),
        _ => assert_eq!(g, c, "{what}"),
    }
}

/// Hides every Vulkan driver from the loader, as on a machine without one.
const NO_DRIVER: [(&str, &str); 2] =
    [("VK_ICD_FILENAMES", "/nonexistent/icd.json"), ("VK_DRIVER_FILES", "/nonexistent/icd.json")];

#[test]
fn device_gpu_matches_device_cpu() {
    let cpu = json_run("cpu", &[]);
    assert!(cpu.status.success(), "{}", String::from_utf8_lossy(&cpu.stderr));
    let gpu = json_run("gpu", &[]);
    let stderr = String::from_utf8_lossy(&gpu.stderr);
    if gpu.status.code() == Some(2) && stderr.contains("no GPU adapter") {
        assert!(std::env::var("REQUIRE_GPU").as_deref() != Ok("1"), "REQUIRE_GPU=1 but: {stderr}");
        eprintln!("skipping the GPU comparison: {stderr}");
        return;
    }
    assert!(gpu.status.success(), "{stderr}");
    let (c, g) = (inputs(&cpu), inputs(&gpu));
    assert_eq!(c.len(), 12);
    assert_eq!(g.len(), 12);
    for (i, (g, c)) in g.iter().zip(&c).enumerate() {
        for key in ["index", "label", "predicted", "correct", "runner_up", "cor2_class"] {
            assert_eq!(g[key], c[key], "input {i}: {key}");
        }
        for key in ["margin", "jacobian_fro", "prop3_bound", "cor2_estimate", "curvature_bound", "x_norm"] {
            close(&format!("input {i}: {key}"), &g[key], &c[key]);
        }
        let (gl, cl) = (g["logits"].as_array().unwrap(), c["logits"].as_array().unwrap());
        let scale = cl.iter().map(|v| v.as_f64().unwrap().abs()).fold(0.0, f64::max);
        for (a, b) in gl.iter().zip(cl) {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            assert!((a - b).abs() <= 1e-4 * b.abs().max(1e-2 * scale), "input {i}: logit {a} vs {b}");
        }
    }
}

#[test]
fn no_adapter_is_an_error_for_gpu_and_a_fallback_for_auto() {
    let gpu = json_run("gpu", &NO_DRIVER);
    let stderr = String::from_utf8_lossy(&gpu.stderr);
    assert_eq!(gpu.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let line = stderr.lines().find(|l| l.starts_with("certify: error:")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        line.contains("--device gpu") && line.contains("no GPU adapter") && line.contains("mesa-vulkan-drivers"),
        "{line}"
    );
    let auto = json_run("auto", &NO_DRIVER);
    let stderr = String::from_utf8_lossy(&auto.stderr);
    assert!(auto.status.success(), "{stderr}");
    assert!(stderr.contains("--device auto: using the CPU"), "{stderr}");
    assert_eq!(inputs(&auto).len(), 12);
}

fn last_json(out: &Output) -> Value {
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    serde_json::from_str(
        text.lines().last().unwrap_or_else(|| panic!("no output: {}", String::from_utf8_lossy(&out.stderr))),
    )
    .unwrap()
}

/// A short harden run of a small MNIST network on the GPU reaches the CPU run's accuracy and
/// ρ̂_adv (no dropout, so the two runs see the same batches and differ only by f32 rounding).
#[test]
fn harden_device_gpu_reaches_the_cpu_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = root().join("examples/data/mnist-1k");
    let d = data.to_str().unwrap();
    let base = dir.path().join("base.onnx");
    let b = base.to_str().unwrap();
    let run = certify(
        &[
            "train",
            "--arch",
            "mlp:784-32-10",
            "--data",
            d,
            "--out",
            b,
            "--epochs",
            "3",
            "--batch",
            "50",
            "--seed",
            "1",
            "-q",
        ],
        &[],
    );
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let harden = |device: &str| {
        let out = dir.path().join(format!("{device}.onnx"));
        let run = certify(
            &[
                "harden",
                b,
                "--data",
                d,
                "--out",
                out.to_str().unwrap(),
                "--steps",
                "12",
                "--batch",
                "100",
                "--lambda",
                "0.5",
                "--lr",
                "1e-3",
                "--penalty",
                "exact",
                "--device",
                device,
                "--json",
                "-q",
            ],
            &[],
        );
        (out, run)
    };
    let (cpu_model, cpu) = harden("cpu");
    assert!(cpu.status.success(), "{}", String::from_utf8_lossy(&cpu.stderr));
    let (gpu_model, gpu) = harden("gpu");
    let stderr = String::from_utf8_lossy(&gpu.stderr);
    if gpu.status.code() == Some(2) && stderr.contains("no GPU adapter") {
        assert!(std::env::var("REQUIRE_GPU").as_deref() != Ok("1"), "REQUIRE_GPU=1 but: {stderr}");
        eprintln!("skipping the GPU harden comparison: {stderr}");
        return;
    }
    assert!(gpu.status.success(), "{stderr}");
    assert_eq!(last_json(&gpu)["device"], "gpu");
    let (c, g) = (last_json(&cpu), last_json(&gpu));
    let rel = |a: f64, b: f64| (a - b).abs() / b.abs();
    let (cc, gc) = (c["last_batch_cross_entropy"].as_f64().unwrap(), g["last_batch_cross_entropy"].as_f64().unwrap());
    assert!(rel(gc, cc) < 1e-3, "last batch CE: gpu {gc} vs cpu {cc}");
    let evaluate = |m: &std::path::Path| {
        let out = certify(
            &[m.to_str().unwrap(), "--data", d, "--limit", "300", "--attacks", "deepfool", "--json", "-q"],
            &[],
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        last_json(&out)
    };
    let (ce, ge) = (evaluate(&cpu_model), evaluate(&gpu_model));
    let (ca, ga) = (ce["accuracy"].as_f64().unwrap(), ge["accuracy"].as_f64().unwrap());
    assert!((ca - ga).abs() <= 0.01, "accuracy: gpu {ga} vs cpu {ca}");
    let (cr, gr) = (ce["rho_adv"].as_f64().unwrap(), ge["rho_adv"].as_f64().unwrap());
    assert!(rel(gr, cr) < 0.02, "rho_adv: gpu {gr} vs cpu {cr}");
    let (cj, gj) = (ce["mean_jacobian_fro"].as_f64().unwrap(), ge["mean_jacobian_fro"].as_f64().unwrap());
    assert!(rel(gj, cj) < 1e-3, "mean ‖J‖_F: gpu {gj} vs cpu {cj}");
}

/// `harden --device gpu` without an adapter is a clear error; `auto` trains on the CPU and says so.
#[test]
fn harden_without_an_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let model = root().join("examples/models/mnist-convnet-maxpool.onnx");
    let data = root().join("examples/data/mnist-1k");
    let run = |device: &str| {
        let out = dir.path().join(format!("{device}.onnx"));
        certify(
            &[
                "harden",
                model.to_str().unwrap(),
                "--data",
                data.to_str().unwrap(),
                "--limit",
                "20",
                "--out",
                out.to_str().unwrap(),
                "--steps",
                "1",
                "--batch",
                "10",
                "--device",
                device,
                "-q",
            ],
            &NO_DRIVER,
        )
    };
    let gpu = run("gpu");
    let stderr = String::from_utf8_lossy(&gpu.stderr);
    assert_eq!(gpu.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--device gpu") && stderr.contains("no GPU adapter"), "{stderr}");
    assert!(!dir.path().join("gpu.onnx").exists());
    let auto = run("auto");
    let stderr = String::from_utf8_lossy(&auto.stderr);
    assert!(auto.status.success(), "{stderr}");
    assert!(stderr.contains("--device auto: training on the CPU"), "{stderr}");
    assert!(dir.path().join("auto.onnx").exists());
}
