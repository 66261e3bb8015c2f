//! Where the time of one exact-penalty training step goes, on an ONNX model (default: the
//! paper's MNIST network from ../shared): `cargo run --release -p certify-cli --example
//! penalty_timing [MODEL] [BATCH]`. Random inputs in [0, 1].
use std::time::Instant;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use certify_core::train::{Objective, PenaltyEstimate, Regularizer, Rng};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).cloned().unwrap_or_else(|| "../shared/models/mnist-paper-base.onnx".into());
    let batch: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(500);
    let net = certify_onnx::import_path(std::path::Path::new(&path)).expect("model").network;
    let (d, k) = (net.input_len(), net.num_classes());
    let mut rng = Rng::new(1);
    let x: Vec<f32> = (0..batch * d).map(|_| rng.uniform() as f32).collect();
    let labels: Vec<usize> = (0..batch).map(|i| i % k).collect();
    let t = |name: &str, f: &mut dyn FnMut()| {
        let s = Instant::now();
        f();
        eprintln!("{name:>28}: {:8.3} s", s.elapsed().as_secs_f64());
    };
    let reps: usize = std::env::var("REPS").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    let only_bilinear = std::env::var("ONLY_BILINEAR").is_ok();
    for _ in 0..reps {
        if only_bilinear {
            let trace = net.trace(&x, batch).unwrap();
            let mut eye = vec![0f32; batch * k * k];
            for b in 0..batch {
                for i in 0..k {
                    eye[(b * k + i) * k + i] = 1.0;
                }
            }
            t("bilinear_grads K rows", &mut || drop(net.bilinear_grads(&trace, &eye, k).unwrap()));
            continue;
        }
        let trace = net.trace(&x, batch).unwrap();
        t("trace", &mut || drop(net.trace(&x, batch).unwrap()));
        let cot = vec![0.01f32; batch * k];
        t("backward (CE)", &mut || drop(net.backward(&trace, &cot, 1).unwrap()));
        let mut eye = vec![0f32; batch * k * k];
        for b in 0..batch {
            for i in 0..k {
                eye[(b * k + i) * k + i] = 1.0;
            }
        }
        let mut u = Vec::new();
        t("vjp K rows", &mut || u = net.vjp(&trace, &eye, k).unwrap());
        t("jvp K rows", &mut || drop(net.jvp(&trace, &u, k).unwrap()));
        t("bilinear_grads K rows", &mut || drop(net.bilinear_grads(&trace, &eye, k).unwrap()));
        for est in [PenaltyEstimate::Exact, PenaltyEstimate::Projections(1)] {
            let obj =
                Objective { regularizer: Regularizer::Jacobian, lambda: 0.1, estimate: est, ..Objective::default() };
            t(&format!("objective {est:?}"), &mut || drop(obj.evaluate(&net, &trace, &labels, &mut rng).unwrap()));
        }
    }
}
