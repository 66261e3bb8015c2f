//! Per-input time of the compact engine on the paper's MNIST architecture (random weights):
//! inference and certificate, f32 and f16 weights, one thread.
//!
//! Run: `cargo run --release -p certify-core --example compact_timing`.

use std::time::Instant;

use certify_core::compact::{to_compact, AlignedModel, CompactModel, Precision};
use certify_core::{arch, train::Rng};

fn main() {
    for spec in ["paper-mnist", "mlp:784-256-256-10"] {
        let a = arch::parse(spec).unwrap();
        let net = a.build::<f32>(None, &mut Rng::new(1)).unwrap();
        let x: Vec<f32> = (0..net.input_len()).map(|i| (i % 17) as f32 / 17.0).collect();
        for p in [Precision::F32, Precision::F16] {
            let bytes = AlignedModel::new(&to_compact(&net, p).unwrap());
            let m = CompactModel::load(bytes.as_bytes()).unwrap();
            let mut scratch = vec![0u8; m.scratch_size()];
            let mut z = vec![0f32; m.num_classes()];
            let t = Instant::now();
            for _ in 0..20 {
                m.infer(&x, &mut scratch, &mut z).unwrap();
            }
            let infer = t.elapsed().as_secs_f64() / 20.0;
            let t = Instant::now();
            for _ in 0..5 {
                m.certify(&x, &mut scratch).unwrap();
            }
            let cert = t.elapsed().as_secs_f64() / 5.0;
            println!("{spec} {}: infer {:.3} ms, certify {:.3} ms", p.name(), infer * 1e3, cert * 1e3);
        }
    }
}
