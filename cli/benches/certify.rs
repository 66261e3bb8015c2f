//! Benchmarks on the paper's MNIST network (../shared/models/mnist-paper-base.onnx), 2 threads:
//! forward at batch 1 and 256 against tract's optimised plan of the same file (measured in the
//! same run), certification throughput (forward + exact Jacobian + bounds) and DeepFool per
//! input. After the criterion runs, a comparison table prints the ratios against tract (same
//! run) and against the PyTorch CPU figures in ../shared/reference/README.md (measured by the
//! reference's authors on this machine kind), and the fraction of the 2-thread sgemm roofline.
//!
//! Run: `cargo bench -p certify-cli --bench certify`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use certify_bounds::{certify_batch, deepfool, DeepFoolConfig};
use std::hint::black_box;

use criterion::Criterion;
use tract_onnx::prelude::*;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// PyTorch / onnxruntime medians from ../shared/reference/README.md (seconds per input).
const ORT_FORWARD_B1: f64 = 0.241e-3;
const ORT_FORWARD_B256: f64 = 0.139e-3;
const TORCH_JACOBIAN_B256: f64 = 2.74e-3;
const TORCH_DEEPFOOL_B256: f64 = 11.6e-3;
/// Measured 2-thread sgemm roofline of this machine kind (FLOP/s), same README.
const ROOFLINE: f64 = 180e9;

fn shared() -> Option<PathBuf> {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared"));
    p.is_dir().then_some(p)
}

fn mnist(n: usize) -> Vec<f32> {
    let p = shared().unwrap().join("data/mnist/t10k-images-idx3-ubyte.gz");
    let ds = certify_cli::data::load(&p, None, Some(n)).unwrap();
    ds.to_f32().iter().map(|&v| v / 255.0).collect()
}

/// Floating-point operations (2 per multiply-accumulate) of one forward pass of the paper
/// network: conv1 (5×5, padding 2, 1→32 at 28×28), conv2 (5×5, padding 2, 32→64 at 14×14),
/// fc1 (3136→1024), fc2 (1024→10).
fn forward_flops() -> f64 {
    2.0 * (28.0 * 28.0 * 32.0 * 25.0 + 14.0 * 14.0 * 64.0 * 800.0 + 3136.0 * 1024.0 + 1024.0 * 10.0)
}

/// Median wall time per input over 11 runs (after one warm-up run).
fn time_per_input(n: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..11)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2] / n as f64
}

fn main() {
    let Some(shared) = shared() else {
        eprintln!("skipping benchmarks: ../shared is not present");
        return;
    };
    rayon::ThreadPoolBuilder::new().num_threads(2).build_global().unwrap();
    let model = shared.join("models/mnist-paper-base.onnx");
    let net = certify_onnx::import_path(&model).unwrap().network;
    let x = mnist(256);
    let tract_plan = |b: usize| {
        tract_onnx::onnx()
            .model_for_path(&model)
            .unwrap()
            .with_input_fact(0, f32::fact([b, 1, 28, 28]).into())
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap()
    };
    let tract1 = tract_plan(1);
    let tract256 = tract_plan(256);
    let t1: Tensor = tract_ndarray::Array4::from_shape_vec((1, 1, 28, 28), x[..784].to_vec()).unwrap().into();
    let t256: Tensor = tract_ndarray::Array4::from_shape_vec((256, 1, 28, 28), x.clone()).unwrap().into();

    let mut c = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(4)).configure_from_args();
    c.bench_function("forward/batch1/certify", |b| b.iter(|| net.forward(black_box(&x[..784]), 1).unwrap()));
    c.bench_function("forward/batch1/tract", |b| b.iter(|| tract1.run(tvec!(t1.clone().into())).unwrap()));
    c.bench_function("forward/batch256/certify", |b| b.iter(|| net.forward(black_box(&x), 256).unwrap()));
    c.bench_function("forward/batch256/tract", |b| b.iter(|| tract256.run(tvec!(t256.clone().into())).unwrap()));
    c.bench_function("certify/batch256", |b| b.iter(|| certify_batch(&net, black_box(&x), 256).unwrap()));
    c.final_summary();

    // The comparison table (median of 11 runs, per input).
    let ours_b1 = time_per_input(1, || drop(net.forward(&x[..784], 1).unwrap()));
    let tract_b1 = time_per_input(1, || drop(tract1.run(tvec!(t1.clone().into())).unwrap()));
    let ours_b256 = time_per_input(256, || drop(net.forward(&x, 256).unwrap()));
    let tract_b256 = time_per_input(256, || drop(tract256.run(tvec!(t256.clone().into())).unwrap()));
    let cert = time_per_input(256, || drop(certify_batch(&net, &x, 256).unwrap()));
    let df = time_per_input(256, || drop(deepfool(&net, &x, 256, &DeepFoolConfig::default()).unwrap()));
    let fl = forward_flops();
    // The exact Jacobian: one forward plus K = 10 backward passes of about the same cost.
    let jac_fl = fl * 11.0;
    println!(
        "\n| what (paper network, 2 threads) | certify ms/input | reference ms/input | ratio (ref / ours) | roofline |"
    );
    println!("|---|---|---|---|---|");
    let row = |what: &str, ours: f64, refv: f64, reference: &str, flops: f64| {
        let roof = if flops.is_finite() { format!("{:.0}%", 100.0 * flops / ours / ROOFLINE) } else { "-".into() };
        println!("| {what} | {:.3} | {:.3} ({reference}) | {:.2}× | {roof} |", ours * 1e3, refv * 1e3, refv / ours)
    };
    row("forward, batch 1", ours_b1, tract_b1, "tract, same run", fl);
    row("forward, batch 1", ours_b1, ORT_FORWARD_B1, "onnxruntime", fl);
    row("forward, batch 256", ours_b256, tract_b256, "tract, same run", fl);
    row("forward, batch 256", ours_b256, ORT_FORWARD_B256, "onnxruntime", fl);
    row("certification (fwd + exact J + bounds), batch 256", cert, TORCH_JACOBIAN_B256, "PyTorch exact J", jac_fl);
    row("DeepFool, batch 256", df, TORCH_DEEPFOOL_B256, "PyTorch", f64::NAN);
}
