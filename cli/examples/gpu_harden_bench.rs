//! Time per harden step on the GPU against the CPU path, in one run.
//!
//! ```text
//! cargo run --release -p certify-cli --example gpu_harden_bench -- MODEL.onnx DATA [BATCH] [GPU_STEPS] [CPU_STEPS] [PENALTY]
//! ```
//!
//! Takes the first `BATCH` (default 500) images of `DATA` (IDX file or directory as
//! `certify --data`, pixels scaled to [0, 1]) and times training steps of `MODEL` with the
//! objective of `certify harden --penalty PENALTY` (default `exact`; λ 0.1, mean form, Adam
//! 1e-4, dropout 0.5 before the last dense layer): `GPU_STEPS` (default 10) steps of
//! `certify_gpu::GpuTrainer` after 2 untimed warm-up steps, then `CPU_STEPS` (default 3) steps of
//! `certify_core::train::Trainer` (all cores) after 1 warm-up step, from the same weights. Prints
//! the adapter, seconds per step (median) and examples per second for each, the ratio, and the
//! relative difference of the first step's objective (GPU vs CPU; dropout masks differ between
//! the two, so this is a sanity check, not the equality test, which is in certify-gpu's tests).
//! With `CERTIFY_GPU_PROFILE=1` (and an adapter with timestamp queries) it also prints the device
//! time per step of each kernel over the timed steps.
//! No GPU adapter is an error (exit 2); a missing model is skipped (exit 0).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use certify_core::train::{
    dense_dropout_sites, Adam, LossForm, Objective, PenaltyEstimate, PenaltyTarget, Regularizer, Trainer,
};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpu_harden_bench: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn parse_penalty(s: &str) -> Result<PenaltyEstimate> {
    Ok(match s.split_once(':') {
        None if s == "exact" => PenaltyEstimate::Exact,
        Some(("subsample", m)) => PenaltyEstimate::Subsample(m.parse().context("subsample:M")?),
        Some(("projections", p)) => PenaltyEstimate::Projections(p.parse().context("projections:P")?),
        _ => bail!("PENALTY is exact, subsample:M or projections:P"),
    })
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        bail!("usage: gpu_harden_bench MODEL.onnx DATA [BATCH] [GPU_STEPS] [CPU_STEPS] [PENALTY]");
    }
    let model = PathBuf::from(&args[0]);
    let data = PathBuf::from(&args[1]);
    let num = |i: usize, default: usize, what: &str| -> Result<usize> {
        args.get(i).map(|s| s.parse::<usize>()).transpose().context(what.to_string()).map(|v| v.unwrap_or(default))
    };
    let batch = num(2, 500, "BATCH")?;
    let gpu_steps = num(3, 10, "GPU_STEPS")?.max(1);
    let cpu_steps = num(4, 3, "CPU_STEPS")?;
    let estimate = parse_penalty(args.get(5).map_or("exact", |s| s.as_str()))?;
    if batch == 0 {
        bail!("BATCH must be at least 1");
    }
    if !model.exists() {
        println!("skipping: model `{}` not found", model.display());
        return Ok(());
    }
    let net = certify_onnx::import_path(&model)?.network;
    net.check_classifier()?;
    let ds = certify_cli::data::load(&data, None, Some(batch))?;
    let prepared = certify_cli::data::prepare(ds, net.input_shape(), None, &[], &[])?;
    let b = prepared.len();
    let x = prepared.batch(0, b);
    let labels: Vec<usize> = prepared.labels()[..b].to_vec();
    let objective = Objective {
        regularizer: Regularizer::Jacobian,
        lambda: 0.1,
        estimate,
        form: LossForm::Mean,
        target: PenaltyTarget::Logits,
    };
    let sites = dense_dropout_sites(&net, 0.5);
    println!(
        "model {} ({} inputs, {} classes), batch {b}, penalty {estimate:?}",
        model.display(),
        net.input_len(),
        net.num_classes()
    );

    let ctx = certify_gpu::GpuContext::new()?;
    println!("GPU adapter: {}", ctx.describe());
    let mut gpu = certify_gpu::GpuTrainer::new(&ctx, &net, objective, certify_gpu::GpuOptimizer::adam(1e-4), 0)?
        .with_dropout(&sites)?;
    println!("GPU chunk: {} samples per chunk", gpu.chunk_size(b)?);
    let first_gpu = gpu.step(&x, &labels)?;
    gpu.step(&x, &labels)?;
    gpu.reset_kernel_profile();
    let mut times = Vec::new();
    for _ in 0..gpu_steps {
        let t = Instant::now();
        gpu.step(&x, &labels)?;
        times.push(t.elapsed().as_secs_f64());
    }
    let g = median(&mut times);
    println!("gpu: {g:.4} s/step (median of {gpu_steps}), {:.0} examples/s", b as f64 / g);
    let profile = gpu.kernel_profile();
    if !profile.is_empty() {
        let total: f64 = profile.iter().map(|p| p.2).sum();
        println!("device time per step by kernel ({} set; {gpu_steps} steps):", certify_gpu::PROFILE_ENV);
        for (name, calls, secs) in &profile {
            let per = secs / gpu_steps as f64;
            println!(
                "  {name:<28} {:>6.1} ms  {:>5.1}%  ({} dispatches)",
                per * 1e3,
                100.0 * secs / total,
                calls / gpu_steps as u64
            );
        }
        println!("  {:<28} {:>6.1} ms of {:.1} ms wall", "sum", total / gpu_steps as f64 * 1e3, g * 1e3);
    }
    if cpu_steps == 0 {
        return Ok(());
    }
    let mut cpu_net = net.clone();
    let mut trainer = Trainer::new(objective, Box::new(Adam::new(1e-4f32)), 0);
    trainer.dropout = sites;
    let first_cpu = trainer.step(&mut cpu_net, &x, &labels)?;
    let mut times = Vec::new();
    for _ in 0..cpu_steps {
        let t = Instant::now();
        trainer.step(&mut cpu_net, &x, &labels)?;
        times.push(t.elapsed().as_secs_f64());
    }
    let c = median(&mut times);
    println!(
        "cpu: {c:.4} s/step (median of {cpu_steps}, {} threads), {:.0} examples/s",
        rayon::current_num_threads(),
        b as f64 / c
    );
    println!("gpu speed-up over cpu: {:.2}x", c / g);
    let rel = |a: f64, b: f64| (a - b).abs() / b.abs().max(1e-12);
    println!(
        "first step, GPU vs CPU (different dropout masks): CE {:.5} vs {:.5} ({:.1e} rel), ‖J‖² {:.3} vs {:.3} ({:.1e} rel)",
        first_gpu.cross_entropy,
        first_cpu.cross_entropy,
        rel(first_gpu.cross_entropy, first_cpu.cross_entropy),
        first_gpu.penalty_sq,
        first_cpu.penalty_sq,
        rel(first_gpu.penalty_sq, first_cpu.penalty_sq)
    );
    Ok(())
}
