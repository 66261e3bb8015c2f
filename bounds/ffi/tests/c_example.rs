//! The C example, built with the system C compiler against the static library and the committed
//! header, prints what the Rust engine computes and what the CLI prints for the same digits.

use std::path::{Path, PathBuf};
use std::process::Command;

use certify_core::compact::{AlignedModel, CompactModel, Precision};
use serde_json::Value;

use crate::support::{cli_binary, compact_example, example_model, image, raw_idx_images, rel, repo};

const COUNT: usize = 25;

/// The static library of this build. `cargo test` builds only the rlib of a library, so the
/// test asks cargo (the one running it) for the static library in the same profile and target
/// directory; that is quick, since the code is already compiled.
fn static_library() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let profile = profile_dir.file_name().unwrap().to_str().unwrap();
    let target_dir = profile_dir.parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "--quiet", "-p", "certify-ffi", "--lib", "--target-dir"]).arg(target_dir);
    match profile {
        "debug" => {}
        "release" => {
            build.arg("--release");
        }
        other => {
            build.args(["--profile", other]);
        }
    }
    let status = build.current_dir(env!("CARGO_MANIFEST_DIR")).status().expect("cargo runs");
    assert!(status.success(), "cargo could not build the static library of certify-ffi");
    let name = if cfg!(windows) { "certify_ffi.lib" } else { "libcertify_ffi.a" };
    profile_dir.join(name)
}

fn compiler() -> Option<String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    Command::new(&cc).arg("--version").output().ok().filter(|o| o.status.success()).map(|_| cc)
}

fn build_example(out: &Path) -> Option<PathBuf> {
    let Some(cc) = compiler() else {
        println!("skipped: no C compiler (`cc`, or $CC) on this machine");
        return None;
    };
    let lib = static_library();
    assert!(lib.exists(), "{} was not built", lib.display());
    let ffi = Path::new(env!("CARGO_MANIFEST_DIR"));
    let exe = out.join("classify");
    let status = Command::new(cc)
        .args(["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .arg("-I")
        .arg(ffi.join("include"))
        .arg(ffi.join("examples/classify.c"))
        .arg(&lib)
        .args(["-lpthread", "-ldl", "-lm"])
        .arg("-o")
        .arg(&exe)
        .status()
        .unwrap();
    assert!(status.success(), "the C example does not compile or link");
    Some(exe)
}

/// The example's output lines, parsed as JSON and as text.
fn run_example(exe: &Path, model: &Path, images: &Path) -> (Vec<Value>, Vec<String>) {
    let out = Command::new(exe).arg(model).arg(images).args(["0", &COUNT.to_string()]).output().unwrap();
    assert!(out.status.success(), "classify failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<String> = text.lines().map(String::from).collect();
    let values: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(lines.len(), COUNT);
    (values, lines)
}

/// The number printed for `"key":` in a line of the example's output, parsed exactly.
fn exact_field(line: &str, key: &str) -> f64 {
    let start = line.find(&format!("\"{key}\":")).unwrap_or_else(|| panic!("no {key} in {line}")) + key.len() + 3;
    let end = line[start..].find([',', '}']).map_or(line.len(), |e| start + e);
    line[start..end].parse().unwrap()
}

#[test]
fn c_example_prints_what_the_engine_and_the_cli_compute() {
    let dir = tempfile::tempdir().unwrap();
    let Some(exe) = build_example(dir.path()) else { return };
    let raw = raw_idx_images();
    let images = dir.path().join("t10k-images-idx3-ubyte");
    std::fs::write(&images, &raw).unwrap();

    for precision in [Precision::F32, Precision::F16] {
        let bytes = compact_example(precision);
        let model = dir.path().join(format!("model-{}.cfy", precision.name()));
        std::fs::write(&model, &bytes).unwrap();
        let (printed, lines) = run_example(&exe, &model, &images);
        // The Rust engine, bit for bit (%.17g round-trips a double).
        let aligned = AlignedModel::new(&bytes);
        let engine = CompactModel::load(aligned.as_bytes()).unwrap();
        let mut scratch = vec![0u8; engine.scratch_size()];
        for (i, line) in printed.iter().enumerate() {
            let c = engine.certify(&image(&raw, i), &mut scratch).unwrap();
            assert_eq!(line["index"].as_u64(), Some(i as u64));
            assert_eq!(line["predicted"].as_u64(), Some(c.predicted as u64), "image {i}");
            for (key, want) in [
                ("margin", c.margin),
                ("jacobian_fro", c.jacobian_fro),
                ("prop3_bound", c.prop3_bound),
                ("cor2_estimate", c.cor2_estimate),
            ] {
                // serde_json's float parsing may be one ulp off; Rust's `parse` rounds correctly.
                assert_eq!(exact_field(&lines[i], key), want, "{} image {i} {key}", precision.name());
            }
        }
        if precision == Precision::F32 {
            compare_with_cli(&printed);
        }
    }
}

/// The CLI's JSON for the ONNX model the compact file came from: same predictions, figures
/// within 1e-5 relative (the two engines sum in different orders in f32).
fn compare_with_cli(printed: &[Value]) {
    let Some(cli) = cli_binary() else {
        println!("skipped the CLI comparison: the certify binary is not built (run the workspace tests)");
        return;
    };
    let out = Command::new(cli)
        .arg(example_model())
        .arg("--data")
        .arg(repo().join("examples/data/mnist-1k"))
        .args(["--limit", &COUNT.to_string(), "--attacks", "none", "--json", "-q"])
        .output()
        .unwrap();
    assert!(out.status.success(), "certify failed: {}", String::from_utf8_lossy(&out.stderr));
    let inputs: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["type"] == "input")
        .collect();
    assert_eq!(inputs.len(), printed.len());
    let mut worst = 0f64;
    for (c, j) in printed.iter().zip(&inputs) {
        assert_eq!(c["index"], j["index"]);
        assert_eq!(c["predicted"], j["predicted"], "image {}", c["index"]);
        for key in ["margin", "jacobian_fro", "prop3_bound", "cor2_estimate"] {
            let d = rel(c[key].as_f64().unwrap(), j[key].as_f64().unwrap());
            assert!(d < 1e-5, "image {} {key}: C {} vs CLI {}", c["index"], c[key], j[key]);
            worst = worst.max(d);
        }
    }
    println!("C example vs CLI JSON on {} digits: largest relative difference {worst:.2e}", printed.len());
}
