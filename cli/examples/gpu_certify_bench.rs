//! Certification throughput on the GPU against the CPU path, in one run.
//!
//! ```text
//! cargo run --release -p certify-cli --example gpu_certify_bench -- MODEL.onnx DATA N [CPU_BATCH] [GPU_BATCH]
//! ```
//!
//! Certifies the first `N` inputs of `DATA` (an IDX file or directory, as `certify --data`;
//! integer pixels scaled to [0, 1]) with `MODEL`: logits, exact Jacobian, ‖J‖_F, Prop. 3 and
//! Cor. 2 per input, first with `certify_bounds::certify_batch` on the CPU (all cores, batches of
//! `CPU_BATCH`, default 64), then with `certify_gpu::GpuCertifier::certify` (batches of
//! `GPU_BATCH`, default 256; one warm-up batch not timed). Prints inputs per second for each, the
//! ratio GPU / CPU, and the largest relative difference of ‖J‖_F, Prop. 3 and Cor. 2. A missing
//! model file is skipped with a message (exit 0); no GPU adapter is an error (exit 2).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpu_certify_bench: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        bail!("usage: gpu_certify_bench MODEL.onnx DATA N [CPU_BATCH] [GPU_BATCH]");
    }
    let model = PathBuf::from(&args[0]);
    let data = PathBuf::from(&args[1]);
    let n: usize = args[2].parse().context("N")?;
    let cpu_batch: usize = args.get(3).map(|s| s.parse()).transpose().context("CPU_BATCH")?.unwrap_or(64);
    let gpu_batch: usize = args.get(4).map(|s| s.parse()).transpose().context("GPU_BATCH")?.unwrap_or(256);
    if n == 0 || cpu_batch == 0 || gpu_batch == 0 {
        bail!("N and the batch sizes must be at least 1");
    }
    if !model.exists() {
        println!("skipping: model `{}` not found", model.display());
        return Ok(());
    }
    let net = certify_onnx::import_path(&model)?.network;
    net.check_classifier()?;
    let ds = certify_cli::data::load(&data, None, Some(n))?;
    let prepared = certify_cli::data::prepare(ds, net.input_shape(), None, &[], &[])?;
    let d = net.input_len();
    let n = prepared.len();
    let x = &prepared.batch(0, n);
    println!(
        "model {} ({d} inputs, {} classes), {n} inputs from {}",
        model.display(),
        net.num_classes(),
        data.display()
    );
    println!("CPU: {} rayon threads", rayon::current_num_threads());

    let t = Instant::now();
    let mut cpu = Vec::with_capacity(n);
    for start in (0..n).step_by(cpu_batch) {
        let b = cpu_batch.min(n - start);
        cpu.extend(certify_bounds::certify_batch(&net, &x[start * d..(start + b) * d], b)?);
    }
    let cpu_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let ctx = certify_gpu::GpuContext::new()?;
    let gpu = certify_gpu::GpuCertifier::new(&ctx, &net)?;
    let setup_s = t.elapsed().as_secs_f64();
    println!("GPU: {} (setup {:.2} s, chunk {} inputs)", ctx.describe(), setup_s, gpu.chunk_size());
    let warm = gpu_batch.min(n);
    gpu.certify(&x[..warm * d], warm)?;
    let t = Instant::now();
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(gpu_batch) {
        let b = gpu_batch.min(n - start);
        out.extend(gpu.certify(&x[start * d..(start + b) * d], b)?);
    }
    let gpu_s = t.elapsed().as_secs_f64();

    let rel = |a: f64, b: f64| if a == b { 0.0 } else { (a - b).abs() / b.abs().max(1e-12) };
    let mut worst = [0f64; 3];
    let mut class_diff = 0;
    for (g, c) in out.iter().zip(&cpu) {
        worst[0] = worst[0].max(rel(g.jacobian_fro, c.jacobian_fro));
        worst[1] = worst[1].max(rel(g.prop3_bound, c.prop3_bound));
        worst[2] = worst[2].max(rel(g.cor2_estimate, c.cor2_estimate));
        class_diff += usize::from(g.predicted != c.predicted);
    }
    let cpu_rate = n as f64 / cpu_s;
    let gpu_rate = n as f64 / gpu_s;
    println!("cpu: {n} inputs in {cpu_s:.3} s = {cpu_rate:.1} inputs/s (batch {cpu_batch})");
    println!("gpu: {n} inputs in {gpu_s:.3} s = {gpu_rate:.1} inputs/s (batch {gpu_batch})");
    println!("ratio gpu/cpu: {:.3}", gpu_rate / cpu_rate);
    println!(
        "max relative difference gpu vs cpu: ‖J‖_F {:.2e}, Prop. 3 {:.2e}, Cor. 2 {:.2e}; predicted class differs on {class_diff} of {n}",
        worst[0], worst[1], worst[2]
    );
    Ok(())
}
