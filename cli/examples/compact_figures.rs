//! The compact-format figures of the README's "Edge deployment" section, per model: file sizes
//! (ONNX, compact f32, compact f16), MNIST test accuracy of the `f32` network and of the `f16`
//! compact model on all 10,000 test images, the Prop. 3 estimates of the `f16` compact model
//! against the `f32` network path on the first 1,000, the scratch bytes, and the heap allocated
//! by `CompactModel::load` + `certify` (counted by this program's global allocator).
//!
//! After the table it lists, per model, the inputs whose `f16` Prop. 3 estimate differs from the
//! `f32` one by more than 1% (with their margins and ‖J‖_F), and an ablation: the largest
//! relative difference when the weights of only one layer are rounded to `f16` (emulated on the
//! `f32` network), which shows whether keeping some layers in `f32` would help.
//!
//! Run: `cargo run --release -p certify-cli --example compact_figures [-- SHARED_DIR]`
//! (default `../shared` beside the workspace).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};
use certify_bounds::certify_batch;
use certify_bounds::PointBounds;
use certify_core::compact::{to_compact, AlignedModel, CompactModel, Precision};
use certify_core::{Layer, Network};
use rayon::prelude::*;

/// Tracks the bytes currently allocated and their peak.
struct Tracking;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        PEAK.fetch_max(now, Ordering::SeqCst);
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

fn argmax(z: &[f32]) -> usize {
    certify_core::top2(z).0
}

/// Per-input relative differences of the Prop. 3 estimate, `got` against `want`.
fn prop3_rel(got: impl Iterator<Item = f64>, want: &[PointBounds]) -> Vec<f64> {
    got.zip(want).map(|(g, w)| (g - w.prop3_bound).abs() / w.prop3_bound.abs()).collect()
}

/// `net` with the weights of node `id` (Dense or Conv2d) rounded to `f16` and back.
fn round_layer_to_f16(net: &Network<f32>, id: usize) -> Network<f32> {
    let mut q = net.clone();
    let weights = match q.layer_params_mut(id) {
        Some(Layer::Dense(d)) => &mut d.weight,
        Some(Layer::Conv2d(c)) => &mut c.weight,
        _ => return q,
    };
    weights.iter_mut().for_each(|w| *w = half::f16::from_f32(*w).to_f32());
    q
}

/// How many ReLU units are active in one of `a`, `b` (the same graph, other weights) and not in
/// the other, on input `x`.
fn relu_switches(a: &Network<f32>, b: &Network<f32>, x: &[f32]) -> Result<usize> {
    let (ta, tb) = (a.trace(x, 1)?, b.trace(x, 1)?);
    let mut n = 0;
    for node in a.nodes() {
        if matches!(node.layer, Layer::Relu) {
            let input = node.inputs[0];
            n += ta.value(input).iter().zip(tb.value(input)).filter(|(p, q)| (**p > 0.0) != (**q > 0.0)).count();
        }
    }
    Ok(n)
}

fn main() -> Result<()> {
    let shared = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared")));
    let data = shared.join("data/mnist/t10k-images-idx3-ubyte.gz");
    let ds = certify_cli::data::load(&data, None, None).with_context(|| format!("`{}`", data.display()))?;
    let xs: Vec<f32> = ds.to_f32().iter().map(|&v| v / 255.0).collect();
    let n = ds.len;
    println!("| model | ONNX bytes | compact f32 | compact f16 (÷ ONNX) | accuracy f32 network / f16 compact ({n}) | Prop. 3 f16 vs f32, first 1,000: max / mean rel. diff | scratch bytes | heap of load + certify |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut notes = Vec::new();
    for name in ["mnist-paper-base", "mnist-mlp-256x2-pytorch"] {
        let path = shared.join(format!("models/{name}.onnx"));
        let onnx_len = std::fs::metadata(&path)?.len() as usize;
        let net = certify_onnx::import_path(&path)?.network;
        let d = net.input_len();
        let k = net.num_classes();
        let f32_bytes = to_compact(&net, Precision::F32)?;
        let f16_bytes = to_compact(&net, Precision::F16)?;
        let aligned = AlignedModel::new(&f16_bytes);
        let model = CompactModel::load(aligned.as_bytes())?;

        // Accuracy: the f32 network (batched) and the f16 compact model (one input at a time).
        let mut correct32 = 0;
        for (chunk, labels) in xs.chunks(256 * d).zip(ds.labels.chunks(256)) {
            let z = net.forward(chunk, labels.len())?;
            correct32 += z.chunks(k).zip(labels).filter(|(z, &l)| argmax(z) == l).count();
        }
        let correct16: usize = xs
            .par_chunks(d)
            .zip(ds.labels.par_iter())
            .map_init(
                || (vec![0u8; model.infer_scratch_size()], vec![0f32; k]),
                |(scratch, z), (x, &l)| {
                    model.infer(x, scratch, z).expect("inference");
                    usize::from(argmax(z) == l)
                },
            )
            .sum();

        // Prop. 3 on the first 1,000: the f32 Network path against the f16 compact model.
        let m = 1000.min(n);
        let want = certify_batch(&net, &xs[..m * d], m)?;
        let got: Vec<_> = xs[..m * d]
            .par_chunks(d)
            .map_init(|| vec![0u8; model.scratch_size()], |s, x| model.certify(x, s).expect("certify"))
            .collect();
        let rel = prop3_rel(got.iter().map(|g| g.prop3_bound), &want);
        notes.push(format!("{name}: inputs (of the first {m}) whose f16 Prop. 3 differs by more than 1%:"));
        let weight_ids: Vec<usize> = net
            .nodes()
            .iter()
            .enumerate()
            .filter(|(_, n)| matches!(n.layer, Layer::Dense(_) | Layer::Conv2d(_)))
            .map(|(id, _)| id)
            .collect();
        let rounded_all = weight_ids.iter().fold(net.clone(), |q, &id| round_layer_to_f16(&q, id));
        for (i, r) in rel.iter().enumerate().filter(|(_, &r)| r > 0.01) {
            let x = &xs[i * d..(i + 1) * d];
            let switched = relu_switches(&net, &rounded_all, x)?;
            notes.push(format!(
                "  #{i}: {:.2}%; margin f32 {:.4} / f16 {:.4}; ‖J‖_F f32 {:.4} / f16 {:.4}; ReLUs that switch with \
                 every weight rounded to f16: {switched}",
                100.0 * r,
                want[i].margin,
                got[i].margin,
                want[i].jacobian_fro,
                got[i].jacobian_fro
            ));
        }
        for (id, node) in net.nodes().iter().enumerate() {
            let weights = match &node.layer {
                Layer::Dense(l) => l.weight.len(),
                Layer::Conv2d(l) => l.weight.len(),
                _ => continue,
            };
            let rounded = certify_batch(&round_layer_to_f16(&net, id), &xs[..m * d], m)?;
            let r = prop3_rel(rounded.iter().map(|c| c.prop3_bound), &want);
            notes.push(format!(
                "  only `{}` ({} weights) rounded to f16: largest Prop. 3 difference {:.2}%, {} inputs over 1%",
                node.name,
                weights,
                100.0 * r.iter().copied().fold(0.0, f64::max),
                r.iter().filter(|&&x| x > 0.01).count()
            ));
        }
        let max_rel = rel.iter().copied().fold(0.0, f64::max);
        let mean_rel = rel.iter().sum::<f64>() / m as f64;
        let class_changes = got.iter().zip(&want).filter(|(g, w)| g.predicted != w.predicted).count();

        // Heap of load + certify, measured around exactly those two calls.
        let mut scratch = vec![0u8; model.scratch_size()];
        let base = CURRENT.load(Ordering::SeqCst);
        PEAK.store(base, Ordering::SeqCst);
        let loaded = CompactModel::load(aligned.as_bytes())?;
        let cert = loaded.certify(&xs[..d], &mut scratch)?;
        let heap = PEAK.load(Ordering::SeqCst) - base;
        assert!(cert.jacobian_fro > 0.0);

        println!(
            "| {name} | {onnx_len} | {} | {} ({:.2}%) | {:.2}% / {:.2}% | {:.2e} / {:.2e} ({class_changes} predicted classes differ) | {} | {heap} bytes |",
            f32_bytes.len(),
            f16_bytes.len(),
            100.0 * f16_bytes.len() as f64 / onnx_len as f64,
            100.0 * correct32 as f64 / n as f64,
            100.0 * correct16 as f64 / n as f64,
            max_rel,
            mean_rel,
            model.scratch_size(),
        );
    }
    println!();
    for line in notes {
        println!("{line}");
    }
    Ok(())
}
