//! `certify harden` and `certify train` end to end on the shipped example: the penalty lowers
//! ‖J‖_F, outputs are written atomically and never over the input, runs are deterministic
//! and resumable, and bad input is a clear error.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::common::root;

fn certify(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_certify")).args(args).output().expect("the certify binary runs")
}

fn model() -> PathBuf {
    root().join("examples/models/mnist-convnet-maxpool.onnx")
}

fn data() -> PathBuf {
    root().join("examples/data/mnist-1k/t10k-images-idx3-ubyte.gz")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn assert_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "expected exit 2, stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let line =
        stderr.lines().find(|l| l.starts_with("certify: error:")).unwrap_or_else(|| panic!("no error in {stderr}"));
    assert!(line.contains(needle), "error line `{line}` should mention `{needle}`");
}

/// Mean ‖J‖_F and accuracy of a model on the first `n` example images, by the main command.
fn summary(model: &Path, n: usize) -> Value {
    let out =
        certify(&[s(model), "--data", s(&data()), "--limit", &n.to_string(), "--attacks", "none", "--json", "-q"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

fn harden(out: &Path, extra: &[&str]) -> Output {
    let (m, d) = (model(), data());
    let mut args = vec!["harden", s(&m), "--data", s(&d), "--out", s(out), "--threads", "2"];
    if !extra.contains(&"--batch") {
        args.extend_from_slice(&["--batch", "50"]);
    }
    args.extend_from_slice(extra);
    certify(&args)
}

#[test]
fn harden_lowers_the_jacobian_and_keeps_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hard.onnx");
    let before = std::fs::read(model()).unwrap();
    let run = harden(&out, &["--steps", "30", "--lr", "5e-3", "--lambda", "1", "--json", "-q"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(std::fs::read(model()).unwrap(), before, "the input model must not change");
    let js: Value = serde_json::from_str(String::from_utf8(run.stdout).unwrap().trim()).unwrap();
    assert_eq!(js["steps"], 30);
    assert_eq!(js["regularizer"], "Jacobian");
    let (a, b) = (summary(&model(), 200), summary(&out, 200));
    let (ja, jb) = (a["mean_jacobian_fro"].as_f64().unwrap(), b["mean_jacobian_fro"].as_f64().unwrap());
    eprintln!("mean ‖J‖_F {ja} → {jb}, accuracy {} → {}", a["accuracy"], b["accuracy"]);
    assert!(jb < 0.8 * ja, "mean ‖J‖_F {ja} → {jb}: the penalty should lower it");
    let (acc_a, acc_b) = (a["accuracy"].as_f64().unwrap(), b["accuracy"].as_f64().unwrap());
    assert!(acc_b > acc_a - 0.1, "accuracy {acc_a} → {acc_b}");
    // No temporary files left beside the output.
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    assert_eq!(names, ["hard.onnx"]);
}

#[test]
fn penalties_and_adversarial_options_run() {
    let dir = tempfile::tempdir().unwrap();
    for (i, extra) in [
        &["--penalty", "subsample:5"][..],
        &["--penalty", "projections:2", "--loss", "sum"],
        &["--regularizer", "input-gradient"],
        &["--adversarial", "deepfool:0.2"],
        &["--adversarial", "fgsm:0.3:0.1", "--regularizer", "none"],
        &["--penultimate", "--penalty", "projections:1"],
        &["--optimizer", "sgd", "--momentum", "0.9", "--lr", "1e-3"],
        &["--optimizer", "rmsprop"],
    ]
    .iter()
    .enumerate()
    {
        let out = dir.path().join(format!("m{i}.onnx"));
        let mut args = vec!["--steps", "2", "-q"];
        args.extend_from_slice(extra);
        let run = harden(&out, &args);
        assert!(run.status.success(), "{extra:?}: {}", String::from_utf8_lossy(&run.stderr));
        assert!(summary(&out, 20)["accuracy"].as_f64().unwrap() > 0.5, "{extra:?}");
    }
}

#[test]
fn runs_are_deterministic_and_resume_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let common = ["--dropout", "0.3", "--penalty", "projections:1", "--seed", "7", "-q"];
    let straight = dir.path().join("straight.onnx");
    let mut a = vec!["--steps", "6"];
    a.extend_from_slice(&common);
    assert!(harden(&straight, &a).status.success());
    let again = dir.path().join("again.onnx");
    assert!(harden(&again, &a).status.success());
    assert_eq!(std::fs::read(&straight).unwrap(), std::fs::read(&again).unwrap(), "same seed, same model");

    let ck = dir.path().join("ck");
    let part = dir.path().join("part.onnx");
    let mut b = vec!["--steps", "4", "--checkpoint", s(&ck), "--checkpoint-every", "2"];
    b.extend_from_slice(&common);
    assert!(harden(&part, &b).status.success());
    assert!(ck.join("latest").is_file());
    let resumed = dir.path().join("resumed.onnx");
    let mut c = vec!["--steps", "6", "--checkpoint", s(&ck), "--resume"];
    c.extend_from_slice(&common);
    let run = harden(&resumed, &c);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(std::fs::read(&straight).unwrap(), std::fs::read(&resumed).unwrap(), "resume continues exactly");
    // A checkpoint is a usable model.
    let latest = std::fs::read_to_string(ck.join("latest")).unwrap();
    assert!(summary(&ck.join(latest.trim()).join("model.onnx"), 20)["accuracy"].as_f64().unwrap() > 0.5);
    // Other settings are refused.
    let mut d = vec!["--steps", "8", "--checkpoint", s(&ck), "--resume", "--seed", "8", "--dropout", "0.3", "-q"];
    d.extend_from_slice(&["--penalty", "projections:1"]);
    assert_error(&harden(&dir.path().join("x.onnx"), &d), "other settings");
}

#[test]
fn learning_rate_schedules_decay_to_their_last_rate_and_bind_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let common = ["--dropout", "0", "--penalty", "projections:1", "--seed", "3", "-q"];
    // Linear decay to 0 over two steps: the second step has rate 0 and changes nothing, so the
    // model equals the one-step run at the base rate.
    let one = dir.path().join("one.onnx");
    let mut a = vec!["--steps", "1"];
    a.extend_from_slice(&common);
    assert!(harden(&one, &a).status.success());
    let two = dir.path().join("two.onnx");
    let mut b = vec!["--steps", "2", "--lr-schedule", "linear", "--json"];
    b.extend_from_slice(&common);
    let run = harden(&two, &b);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let js: Value = serde_json::from_str(String::from_utf8(run.stdout).unwrap().trim()).unwrap();
    assert_eq!(js["last_lr"], 0.0);
    assert_eq!(std::fs::read(&one).unwrap(), std::fs::read(&two).unwrap(), "a step at rate 0 changes nothing");
    // ... and a decaying schedule does change the run.
    let three = dir.path().join("three.onnx");
    let mut c = vec!["--steps", "3", "--lr-schedule", "cosine", "--lr-min", "1e-5"];
    c.extend_from_slice(&common);
    assert!(harden(&three, &c).status.success());
    let constant = dir.path().join("constant.onnx");
    let mut d = vec!["--steps", "3"];
    d.extend_from_slice(&common);
    assert!(harden(&constant, &d).status.success());
    assert_ne!(std::fs::read(&three).unwrap(), std::fs::read(&constant).unwrap());
    // Checkpoints record the schedule with its length: resuming under another step count
    // (another schedule) is refused.
    let ck = dir.path().join("ck");
    let mut e = vec!["--steps", "3", "--lr-schedule", "cosine", "--lr-min", "1e-5", "--checkpoint", s(&ck)];
    e.extend_from_slice(&common);
    let ck_run = dir.path().join("ck-run.onnx");
    let run = harden(&ck_run, &e);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(std::fs::read(&three).unwrap(), std::fs::read(&ck_run).unwrap(), "checkpoints do not change the run");
    let mut g = e.clone();
    g[1] = "4";
    g.push("--resume");
    assert_error(&harden(&dir.path().join("x.onnx"), &g), "other settings");
    // Bad schedules.
    assert_error(
        &harden(&dir.path().join("x.onnx"), &["--steps", "2", "--lr-schedule", "cosine", "--lr-min", "1"]),
        "--lr-min",
    );
    assert_error(&harden(&dir.path().join("x.onnx"), &["--steps", "2", "--lr-min", "1e-6"]), "--lr-min applies");
}

#[test]
fn bad_harden_inputs_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    // The output is the input model.
    let copy = dir.path().join("model.onnx");
    std::fs::copy(model(), &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();
    let run = certify(&["harden", s(&copy), "--data", s(&data()), "--out", s(&copy), "--steps", "1"]);
    assert_error(&run, "input model");
    assert_eq!(std::fs::read(&copy).unwrap(), before);
    // Labels outside the model's classes.
    let img = dir.path().join("t10k-images-idx3-ubyte");
    let mut b = vec![0u8, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28];
    b.extend(vec![0u8; 2 * 784]);
    std::fs::write(&img, b).unwrap();
    std::fs::write(dir.path().join("t10k-labels-idx1-ubyte"), [0u8, 0, 8, 1, 0, 0, 0, 2, 3, 12]).unwrap();
    let run =
        certify(&["harden", s(&model()), "--data", s(&img), "--out", s(&dir.path().join("o.onnx")), "--steps", "1"]);
    assert_error(&run, "label");
    // Bad option values.
    for (extra, needle) in [
        (&["--penalty", "projections:0"][..], "projections"),
        (&["--penalty", "bogus"], "penalty"),
        (&["--adversarial", "deepfool:1.5"], "fraction"),
        (&["--lambda", "-1"], "lambda"),
        (&["--lr", "0"], "lr"),
        (&["--batch", "0"], "batch"),
        (&["--regularizer", "input-gradient", "--penalty", "projections:1"], "projections"),
    ] {
        let mut args = vec!["--steps", "1"];
        args.extend_from_slice(extra);
        assert_error(&harden(&dir.path().join("o.onnx"), &args), needle);
    }
    assert!(!dir.path().join("o.onnx").exists(), "nothing written on errors");
}

#[test]
fn a_diverging_run_stops_naming_the_step_and_keeps_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let out = dir.path().join("o.onnx");
    let run = harden(
        &out,
        &[
            "--steps",
            "20",
            "--optimizer",
            "sgd",
            "--lr",
            "1e30",
            "--checkpoint",
            s(&ck),
            "--checkpoint-every",
            "1",
            "-q",
        ],
    );
    assert_error(&run, "non-finite");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("training step"), "{stderr}");
    assert!(stderr.contains("checkpoint"), "{stderr}");
    assert!(!out.exists(), "no output model from a diverged run");
}

#[test]
fn train_from_scratch_then_harden() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("mlp.onnx");
    let run = certify(&[
        "train",
        "--arch",
        "mlp:784-64-10",
        "--data",
        s(&data()),
        "--out",
        s(&base),
        "--epochs",
        "4",
        "--batch",
        "50",
        "--seed",
        "3",
        "--threads",
        "2",
        "--json",
        "-q",
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let js: Value = serde_json::from_str(String::from_utf8(run.stdout).unwrap().trim()).unwrap();
    assert_eq!(js["steps"], 80);
    assert_eq!(js["regularizer"], "None");
    let a = summary(&base, 1000);
    assert!(a["accuracy"].as_f64().unwrap() > 0.8, "training accuracy after 4 epochs: {}", a["accuracy"]);
    // The exported network hardens like any imported model.
    let hard = dir.path().join("mlp-hard.onnx");
    let run = certify(&[
        "harden",
        s(&base),
        "--data",
        s(&data()),
        "--out",
        s(&hard),
        "--steps",
        "40",
        "--batch",
        "50",
        "--lr",
        "3e-3",
        "--lambda",
        "1",
        "-q",
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let b = summary(&hard, 1000);
    let (ja, jb) = (a["mean_jacobian_fro"].as_f64().unwrap(), b["mean_jacobian_fro"].as_f64().unwrap());
    assert!(jb < 0.8 * ja, "mean ‖J‖_F {ja} → {jb}");
    // Unknown architectures are a clear error.
    let run = certify(&["train", "--arch", "resnet", "--data", s(&data()), "--out", s(&dir.path().join("x.onnx"))]);
    assert_error(&run, "paper-mnist");
}

#[test]
fn models_with_smooth_activations_are_refused_for_penalties() {
    use certify_core::{Dense, Layer, Network};
    let dir = tempfile::tempdir().unwrap();
    let mut net = Network::<f32>::new(&[784]).unwrap();
    let w = |o: usize, i: usize| (0..o * i).map(|j| ((j * 7919) % 13) as f32 / 13.0 - 0.5).collect::<Vec<f32>>();
    net.then("fc1", Layer::Dense(Dense { weight: w(16, 784), bias: Some(vec![0.0; 16]), inputs: 784, outputs: 16 }))
        .unwrap();
    net.then("squash", Layer::Sigmoid).unwrap();
    net.then("fc2", Layer::Dense(Dense { weight: w(10, 16), bias: Some(vec![0.0; 10]), inputs: 16, outputs: 10 }))
        .unwrap();
    let model = dir.path().join("sigmoid.onnx");
    certify_onnx::export_network(&net, &model, &certify_onnx::BuildOptions::default()).unwrap();
    let out = dir.path().join("o.onnx");
    let run = certify(&["harden", s(&model), "--data", s(&data()), "--out", s(&out), "--steps", "1", "--batch", "10"]);
    assert_error(&run, "squash");
    assert!(!out.exists());
    // Plain training (no penalty) needs no second derivative and works.
    let run = certify(&[
        "harden",
        s(&model),
        "--data",
        s(&data()),
        "--out",
        s(&out),
        "--steps",
        "1",
        "--batch",
        "10",
        "--regularizer",
        "none",
        "-q",
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
}
