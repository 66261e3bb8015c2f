//! Training-step benchmark on the paper's MNIST network (../shared/models/mnist-paper-base.onnx),
//! 2 threads, mini-batches of 500 MNIST training images, Adam, dropout 0.5: the plain step
//! (cross-entropy only), the exact Jacobian-penalty step (all K = 10 rows of every sample) and
//! the one-projection step. After the criterion runs, a table prints the ratio against the
//! PyTorch figures of ../shared/reference/README.md (measured on this machine kind, 2 threads)
//! and the dense-equivalent fraction of the 2-thread sgemm roofline: the multiply-adds of the
//! *dense* computation (what PyTorch performs) per second. The penalty passes skip the outputs
//! that ReLU, max pooling and dropout discard (`certify_core`'s sparse layers), so the
//! arithmetic actually done is smaller and this fraction can exceed what the kernels reach.
//!
//! Run: `cargo bench -p certify-cli --bench harden`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use certify_core::train::{dense_dropout_sites, Adam, Objective, PenaltyEstimate, Regularizer, Trainer};
use criterion::Criterion;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// PyTorch training-step medians (seconds per step of 500), ../shared/reference/README.md.
const TORCH_PLAIN: f64 = 0.37;
const TORCH_EXACT: f64 = 4.0;
const TORCH_PROJECTION: f64 = 0.65;
/// 2-thread sgemm roofline of this machine kind (FLOP/s), same README / harden issue.
const ROOFLINE: f64 = 180e9;
const BATCH: usize = 500;

fn shared() -> Option<PathBuf> {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared"));
    p.is_dir().then_some(p)
}

/// Multiply-adds of one pass of each layer of the paper network, per sample: conv1, conv2,
/// fc1, fc2.
const MACS: [f64; 4] = [28.0 * 28.0 * 32.0 * 25.0, 14.0 * 14.0 * 64.0 * 800.0, 3136.0 * 1024.0, 1024.0 * 10.0];

/// FLOPs of one step: a forward pass and the cross-entropy backward (input gradients of all
/// layers but the first, weight gradients of all), plus for `rows` penalty rows per sample one
/// reverse pass (input gradients of every layer, the first included), one tangent pass and one
/// weight-gradient pass.
fn step_flops(rows: f64) -> f64 {
    let all: f64 = MACS.iter().sum();
    let plain = all + (all - MACS[0]) + all;
    2.0 * BATCH as f64 * (plain + rows * 3.0 * all)
}

fn main() {
    let Some(shared) = shared() else {
        eprintln!("skipping benchmarks: ../shared is not present");
        return;
    };
    rayon::ThreadPoolBuilder::new().num_threads(2).build_global().unwrap();
    // As `certify harden` does (see certify_cli::allocator).
    certify_cli::allocator::keep_freed_memory_for_reuse();
    let net0 = certify_onnx::import_path(&shared.join("models/mnist-paper-base.onnx")).unwrap().network;
    let ds = certify_cli::data::load(&shared.join("data/mnist/train-images-idx3-ubyte.gz"), None, Some(BATCH)).unwrap();
    let x: Vec<f32> = ds.to_f32().iter().map(|&v| v / 255.0).collect();
    let labels = ds.labels.clone();
    let trainer = |est: Option<PenaltyEstimate>| {
        let objective = match est {
            Some(e) => {
                Objective { regularizer: Regularizer::Jacobian, lambda: 0.1, estimate: e, ..Objective::default() }
            }
            None => Objective::default(),
        };
        let mut t = Trainer::new(objective, Box::new(Adam::new(1e-4f32)), 0);
        t.dropout = dense_dropout_sites(&net0, 0.5);
        t
    };
    let cases = [
        ("plain", None, 0.0, TORCH_PLAIN),
        ("exact penalty", Some(PenaltyEstimate::Exact), 10.0, TORCH_EXACT),
        ("1 projection", Some(PenaltyEstimate::Projections(1)), 1.0, TORCH_PROJECTION),
    ];
    let mut c = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(20)).configure_from_args();
    for (name, est, _, _) in &cases {
        let mut net = net0.clone();
        let mut t = trainer(*est);
        c.bench_function(&format!("harden-step/batch500/{name}"), |b| {
            b.iter(|| t.step(&mut net, &x, &labels).unwrap())
        });
    }
    c.final_summary();

    println!(
        "\n| training step, batch 500, 2 threads | certify s/step | PyTorch s/step | speed-up (PyTorch / ours) | dense-equivalent roofline |"
    );
    println!("|---|---|---|---|---|");
    for (name, est, rows, torch) in cases {
        let mut net = net0.clone();
        let mut t = trainer(est);
        t.step(&mut net, &x, &labels).unwrap();
        let mut times: Vec<f64> = (0..5)
            .map(|_| {
                let s = Instant::now();
                t.step(&mut net, &x, &labels).unwrap();
                s.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let med = times[times.len() / 2];
        println!(
            "| {name} | {med:.3} | {torch:.2} | {:.2}× | {:.0}% |",
            torch / med,
            100.0 * step_flops(rows) / med / ROOFLINE
        );
    }
}
