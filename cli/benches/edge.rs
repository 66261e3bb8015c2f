//! The compact engine (`certify_core::compact`) at batch 1 on one thread, against tract's
//! optimised plan of the same ONNX file (measured in the same run): inference alone, and
//! inference + exact Jacobian + Prop. 3 / Cor. 2 (`certify`), with `f32` and `f16` weights; the
//! `Network<f32>` path (`certify_batch`, one thread) for reference. Models: the paper's MNIST
//! network and the 784-256-256-10 MLP from ../shared/models. After the criterion runs a table
//! prints the medians and the ratios against tract.
//!
//! Run: `cargo bench -p certify-cli --bench edge` (add `-- --measurement-time 2` for a short run).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use certify_bounds::certify_batch;
use certify_core::compact::{to_compact, AlignedModel, CompactModel, Precision};
use criterion::Criterion;
use tract_onnx::prelude::*;

fn shared() -> Option<PathBuf> {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared"));
    p.is_dir().then_some(p)
}

/// Median wall time of `f` over 31 runs (after 3 warm-up runs), in seconds.
fn median(mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let mut t: Vec<f64> = (0..31)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

struct Row {
    what: String,
    seconds: f64,
}

fn bench_model(c: &mut Criterion, name: &str, path: &Path, x: &[f32], rows: &mut Vec<Row>) {
    let net = certify_onnx::import_path(path).unwrap().network;
    let shape: Vec<usize> = std::iter::once(1).chain(net.input_shape().iter().copied()).collect();
    let tract = tract_onnx::onnx()
        .model_for_path(path)
        .unwrap()
        .with_input_fact(0, f32::fact(&shape).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let input: Tensor = tract_ndarray::ArrayD::from_shape_vec(shape.clone(), x.to_vec()).unwrap().into();
    let f32_model = AlignedModel::new(&to_compact(&net, Precision::F32).unwrap());
    let f16_model = AlignedModel::new(&to_compact(&net, Precision::F16).unwrap());
    let models = [
        ("f32", CompactModel::load(f32_model.as_bytes()).unwrap()),
        ("f16", CompactModel::load(f16_model.as_bytes()).unwrap()),
    ];
    let mut scratch = vec![0u8; models[0].1.scratch_size()];
    let mut logits = vec![0f32; net.num_classes()];

    c.bench_function(&format!("{name}/infer/tract"), |b| b.iter(|| tract.run(tvec!(input.clone().into())).unwrap()));
    rows.push(Row {
        what: format!("{name}: inference, tract"),
        seconds: median(|| drop(tract.run(tvec!(input.clone().into())).unwrap())),
    });
    for (p, m) in &models {
        c.bench_function(&format!("{name}/infer/compact-{p}"), |b| {
            b.iter(|| m.infer(black_box(x), &mut scratch, &mut logits).unwrap())
        });
        rows.push(Row {
            what: format!("{name}: inference, compact {p}"),
            seconds: median(|| m.infer(x, &mut scratch, &mut logits).unwrap()),
        });
    }
    for (p, m) in &models {
        c.bench_function(&format!("{name}/certify/compact-{p}"), |b| {
            b.iter(|| m.certify(black_box(x), &mut scratch).unwrap())
        });
        rows.push(Row {
            what: format!("{name}: inference + certificate, compact {p}"),
            seconds: median(|| {
                black_box(m.certify(x, &mut scratch).unwrap());
            }),
        });
    }
    c.bench_function(&format!("{name}/certify/network-f32"), |b| {
        b.iter(|| certify_batch(&net, black_box(x), 1).unwrap())
    });
    rows.push(Row {
        what: format!("{name}: inference + certificate, Network<f32> (certify_batch)"),
        seconds: median(|| drop(certify_batch(&net, x, 1).unwrap())),
    });
}

fn main() {
    let Some(shared) = shared() else {
        eprintln!("skipping benchmarks: ../shared is not present");
        return;
    };
    // One thread: the compact engine is single-threaded; so are tract's plans and, with this
    // pool, the Network path.
    rayon::ThreadPoolBuilder::new().num_threads(1).build_global().unwrap();
    let data = shared.join("data/mnist/t10k-images-idx3-ubyte.gz");
    let ds = certify_cli::data::load(&data, None, Some(1)).unwrap();
    let x: Vec<f32> = ds.to_f32().iter().map(|&v| v / 255.0).collect();
    let mut c = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(3)).configure_from_args();
    let mut rows = Vec::new();
    for name in ["mnist-paper-base", "mnist-mlp-256x2-pytorch"] {
        bench_model(&mut c, name, &shared.join(format!("models/{name}.onnx")), &x, &mut rows);
    }
    c.final_summary();
    println!("\n| what (batch 1, 1 thread) | median | tract / this |");
    println!("|---|---|---|");
    let mut tract = f64::NAN;
    for r in &rows {
        if r.what.ends_with("tract") {
            tract = r.seconds;
        }
        println!("| {} | {:.3} ms | {:.2}× |", r.what, r.seconds * 1e3, tract / r.seconds);
    }
}
