//! Median wall time of one training step on the paper's MNIST network (batch 500 of MNIST
//! training images, Adam, dropout 0.5, λ 0.1), for profiling one penalty on its own:
//! `cargo run --release -p certify-cli --example step_timing -- [plain|exact|projections:P] [STEPS]`.
//! Threads: `RAYON_NUM_THREADS` (default: all cores). Needs ../shared.
use std::path::PathBuf;
use std::time::Instant;

use certify_core::train::{dense_dropout_sites, Adam, Objective, PenaltyEstimate, Regularizer, Trainer};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // As `certify harden` does (see certify_cli::allocator).
    certify_cli::allocator::keep_freed_memory_for_reuse();
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map(String::as_str).unwrap_or("projections:1");
    let steps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let shared = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared"));
    if !shared.is_dir() {
        eprintln!("step_timing needs ../shared (the paper's network and MNIST)");
        std::process::exit(2);
    }
    let estimate = match which {
        "plain" => None,
        "exact" => Some(PenaltyEstimate::Exact),
        p => match p.strip_prefix("projections:").and_then(|n| n.parse().ok()) {
            Some(n) => Some(PenaltyEstimate::Projections(n)),
            None => {
                eprintln!("unknown penalty {p:?}: plain, exact or projections:P");
                std::process::exit(2);
            }
        },
    };
    let mut net = certify_onnx::import_path(&shared.join("models/mnist-paper-base.onnx")).expect("model").network;
    let ds =
        certify_cli::data::load(&shared.join("data/mnist/train-images-idx3-ubyte.gz"), None, Some(500)).expect("MNIST");
    let x: Vec<f32> = ds.to_f32().iter().map(|&v| v / 255.0).collect();
    let objective = match estimate {
        Some(e) => Objective { regularizer: Regularizer::Jacobian, lambda: 0.1, estimate: e, ..Objective::default() },
        None => Objective::default(),
    };
    let mut t = Trainer::new(objective, Box::new(Adam::new(1e-4f32)), 0);
    t.dropout = dense_dropout_sites(&net, 0.5);
    t.step(&mut net, &x, &ds.labels).expect("step");
    let mut times: Vec<f64> = (0..steps)
        .map(|_| {
            let s = Instant::now();
            t.step(&mut net, &x, &ds.labels).expect("step");
            s.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!("{which}: median {:.3} s per step of 500 over {steps} steps (min {:.3})", times[steps / 2], times[0]);
}
