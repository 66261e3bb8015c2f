//! The training loop shared by `certify harden` and `certify train`: seeded mini-batches,
//! dropout, penalties, adversarial examples, validation, checkpoints, atomic output.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use certify_bounds::{cross_entropy_input_gradient, deepfool, DeepFoolConfig, InputDomain};
use certify_core::train::{
    dense_dropout_sites, Adam, LossForm, LrSchedule, Objective, ObjectiveStats, Optimizer, PenaltyEstimate,
    PenaltyTarget, Regularizer, RmsProp, Rng, Sgd, Trainer,
};
use certify_core::{Layer, Network};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use certify_cli::data::Prepared;

use crate::checkpoint;
use crate::train_args::{LossArg, LrScheduleArg, OptimizerArg, RegularizerArg, TrainOpts};
use crate::train_engine::{Engine, StepError};

/// Adversarial examples mixed into every mini-batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Adversarial {
    /// DeepFool perturbations (overshoot 0.02, ≤ 50 iterations) of a fraction of the batch.
    DeepFool { fraction: f64 },
    /// FGSM with ε in pixel units.
    Fgsm { fraction: f64, eps: f64 },
}

/// Parses `--adversarial`.
pub fn parse_adversarial(s: &str) -> Result<Adversarial> {
    let parts: Vec<&str> = s.split(':').collect();
    let frac = |t: Option<&&str>| -> Result<f64> {
        let f: f64 = t
            .context("--adversarial needs a fraction, e.g. deepfool:0.2")?
            .parse()
            .with_context(|| format!("--adversarial `{s}`: the fraction is not a number"))?;
        if !(f > 0.0 && f <= 1.0) {
            bail!("--adversarial `{s}`: the fraction must be in (0, 1]");
        }
        Ok(f)
    };
    match parts[0] {
        "deepfool" if parts.len() == 2 => Ok(Adversarial::DeepFool { fraction: frac(parts.get(1))? }),
        "fgsm" if parts.len() == 2 || parts.len() == 3 => {
            let eps = match parts.get(2) {
                Some(e) => e
                    .parse::<f64>()
                    .ok()
                    .filter(|e| e.is_finite() && *e > 0.0)
                    .with_context(|| format!("--adversarial `{s}`: ε must be a positive number"))?,
                None => 0.1,
            };
            Ok(Adversarial::Fgsm { fraction: frac(parts.get(1))?, eps })
        }
        _ => bail!("--adversarial `{s}`: expected deepfool:F or fgsm:F[:EPS] with F in (0, 1]"),
    }
}

/// Parses `--penalty`.
pub fn parse_penalty(s: &str) -> Result<PenaltyEstimate> {
    let count = |t: &str, what: &str| -> Result<usize> {
        t.parse::<usize>().ok().filter(|&n| n >= 1).with_context(|| format!("--penalty `{s}`: {what} must be ≥ 1"))
    };
    match s.split_once(':') {
        None if s == "exact" => Ok(PenaltyEstimate::Exact),
        Some(("subsample", m)) => Ok(PenaltyEstimate::Subsample(count(m, "M")?)),
        Some(("projections", p)) => Ok(PenaltyEstimate::Projections(count(p, "P")?)),
        _ => bail!("--penalty `{s}`: expected exact, subsample:M or projections:P"),
    }
}

/// Everything `fit` needs.
pub struct Job<'a> {
    pub opts: &'a TrainOpts,
    /// The training data; its domain bounds the adversarial perturbations.
    pub train: Prepared,
    pub val: Option<Prepared>,
    pub default_lr: f64,
    pub default_regularizer: RegularizerArg,
    pub default_dropout: f64,
    /// Writes `net` as ONNX to the given path (atomically).
    pub write_model: &'a dyn Fn(&Network<f32>, &Path) -> Result<()>,
    pub out: &'a Path,
    /// Model file name for messages.
    pub what: String,
}

/// Validation figures.
#[derive(Clone, Copy, Debug, Default)]
pub struct Validation {
    pub accuracy: f64,
    pub mean_jacobian_fro: f64,
}

/// Accuracy on all of `val` and mean ‖J‖_F on its first `nj` samples.
pub fn validate(net: &Network<f32>, val: &Prepared, nj: usize) -> Result<Validation> {
    let k = net.num_classes();
    let mut correct = 0usize;
    for start in (0..val.len()).step_by(256) {
        let end = (start + 256).min(val.len());
        let z = net.forward(&val.batch(start, end - start), end - start)?;
        for (i, row) in z.chunks(k).enumerate() {
            let arg = (0..k).fold(0, |a, j| if row[j] > row[a] { j } else { a });
            correct += usize::from(arg == val.labels()[start + i]);
        }
    }
    let nj = nj.min(val.len());
    let mut fro = 0.0;
    for start in (0..nj).step_by(64) {
        let end = (start + 64).min(nj);
        let j = net.jacobian(&val.batch(start, end - start), end - start)?;
        fro += (0..end - start).map(|b| j.frobenius(b)).sum::<f64>();
    }
    Ok(Validation {
        accuracy: correct as f64 / val.len().max(1) as f64,
        mean_jacobian_fro: if nj > 0 { fro / nj as f64 } else { f64::NAN },
    })
}

/// The id of the last dense layer on the way to the output.
fn last_dense(net: &Network<f32>) -> Option<usize> {
    net.nodes().iter().rposition(|n| matches!(n.layer, Layer::Dense(_)))
}

/// Replaces the rows of a `[k, h]` matrix by the nearest matrix with orthonormal rows (the
/// polar factor `(W Wᵀ)^{-1/2} W`, by Newton–Schulz iteration). Errors when `W` has
/// (numerically) dependent rows or `k > h`.
pub fn orthonormalize_rows(w: &mut [f32], k: usize, h: usize) -> Result<()> {
    if k > h {
        bail!("--fix-last-orthonormal: the last layer maps {h} features to {k} logits; {k} orthonormal rows need at least {k} features");
    }
    let mut x: Vec<f64> = w.iter().map(|&v| v as f64).collect();
    let norm = x.iter().map(|v| v * v).sum::<f64>().sqrt();
    if norm == 0.0 {
        bail!("--fix-last-orthonormal: the last layer's weights are all zero");
    }
    x.iter_mut().for_each(|v| *v /= norm);
    let gram = |x: &[f64]| {
        let mut g = vec![0.0; k * k];
        for i in 0..k {
            for j in 0..k {
                g[i * k + j] = (0..h).map(|t| x[i * h + t] * x[j * h + t]).sum();
            }
        }
        g
    };
    for _ in 0..200 {
        let g = gram(&x);
        let err = (0..k * k).map(|i| (g[i] - if i % (k + 1) == 0 { 1.0 } else { 0.0 }).abs()).fold(0.0, f64::max);
        if err < 1e-12 {
            break;
        }
        // X ← 1.5·X − 0.5·(X Xᵀ)·X
        let mut nx = vec![0.0; k * h];
        for i in 0..k {
            for t in 0..h {
                let gx: f64 = (0..k).map(|j| g[i * k + j] * x[j * h + t]).sum();
                nx[i * h + t] = 1.5 * x[i * h + t] - 0.5 * gx;
            }
        }
        x = nx;
    }
    let g = gram(&x);
    let err = (0..k * k).map(|i| (g[i] - if i % (k + 1) == 0 { 1.0 } else { 0.0 }).abs()).fold(0.0, f64::max);
    if err > 1e-5 {
        bail!("--fix-last-orthonormal: the last layer's weight rows are (nearly) linearly dependent");
    }
    w.iter_mut().zip(&x).for_each(|(a, &b)| *a = b as f32);
    Ok(())
}

/// The schedule of --lr-schedule / --lr-min, checked against the base rate `lr`.
fn lr_schedule(opts: &TrainOpts, lr: f64) -> Result<LrSchedule> {
    let min = opts.lr_min;
    let decaying = opts.lr_schedule != LrScheduleArg::Constant;
    if decaying && !(min.is_finite() && min >= 0.0 && min <= lr) {
        bail!("--lr-min must be a number in [0, --lr] = [0, {lr}], got {min}");
    }
    if !decaying && min != 0.0 {
        bail!("--lr-min applies to --lr-schedule cosine or linear");
    }
    Ok(match opts.lr_schedule {
        LrScheduleArg::Constant => LrSchedule::Constant,
        LrScheduleArg::Cosine => LrSchedule::Cosine { min },
        LrScheduleArg::Linear => LrSchedule::Linear { min },
    })
}

fn make_optimizer(opts: &TrainOpts, lr: f64) -> Result<Box<dyn Optimizer<f32> + Send>> {
    if !(lr.is_finite() && lr > 0.0) {
        bail!("--lr must be a positive number, got {lr}");
    }
    if !(opts.momentum.is_finite() && (0.0..1.0).contains(&opts.momentum)) {
        bail!("--momentum must be in [0, 1)");
    }
    Ok(match opts.optimizer {
        OptimizerArg::Adam => Box::new(Adam::new(lr as f32)),
        OptimizerArg::Rmsprop => Box::new(RmsProp::new(lr as f32)),
        OptimizerArg::Sgd => Box::new(Sgd::new(lr as f32, opts.momentum as f32)),
    })
}

/// Replaces the first `fraction` of the mini-batch by adversarial examples against `net`.
fn perturb(
    net: &Network<f32>,
    adv: Adversarial,
    x: &mut [f32],
    labels: &[usize],
    domain: &InputDomain,
) -> Result<usize> {
    let d = net.input_len();
    let n = match adv {
        Adversarial::DeepFool { fraction } | Adversarial::Fgsm { fraction, .. } => {
            ((fraction * labels.len() as f64).round() as usize).min(labels.len())
        }
    };
    if n == 0 {
        return Ok(0);
    }
    let part = &mut x[..n * d];
    let mut changed = 0;
    match adv {
        Adversarial::DeepFool { .. } => {
            let res = deepfool(net, part, n, &DeepFoolConfig::default())?;
            for (b, r) in res.iter().enumerate() {
                if r.success {
                    for i in 0..d {
                        let v = part[b * d + i] as f64 + r.perturbation[i] as f64;
                        part[b * d + i] = domain.clamp(i, v) as f32;
                    }
                    changed += 1;
                }
            }
        }
        Adversarial::Fgsm { eps, .. } => {
            let (g, _) = cross_entropy_input_gradient(net, part, &labels[..n])?;
            for b in 0..n {
                for i in 0..d {
                    let s = g[b * d + i];
                    let step = if s > 0.0 {
                        1.0
                    } else if s < 0.0 {
                        -1.0
                    } else {
                        0.0
                    };
                    let v = part[b * d + i] as f64 + eps * domain.unit[i] as f64 * step;
                    part[b * d + i] = domain.clamp(i, v) as f32;
                }
            }
            changed = n;
        }
    }
    Ok(changed)
}

/// Trains `net` as `job` says and writes it to `job.out`; prints the summary.
pub fn fit(mut net: Network<f32>, job: Job<'_>) -> Result<()> {
    let opts = job.opts;
    if opts.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if job.train.is_empty() {
        bail!("the training data is empty");
    }
    if !(opts.lambda.is_finite() && opts.lambda >= 0.0) {
        bail!("--lambda must be a finite number ≥ 0");
    }
    let regularizer = match opts.regularizer.unwrap_or(job.default_regularizer) {
        RegularizerArg::Jacobian => Regularizer::Jacobian,
        RegularizerArg::InputGradient => Regularizer::InputGradient,
        RegularizerArg::None => Regularizer::None,
    };
    let estimate = parse_penalty(&opts.penalty)?;
    if regularizer == Regularizer::InputGradient && matches!(estimate, PenaltyEstimate::Projections(_)) {
        bail!("--penalty projections:P estimates the Jacobian penalty only; use exact or subsample:M with --regularizer input-gradient");
    }
    let adversarial = opts.adversarial.as_deref().map(parse_adversarial).transpose()?;
    let dropout = opts.dropout.unwrap_or(job.default_dropout);
    if !(0.0..1.0).contains(&dropout) {
        bail!("--dropout must be in [0, 1)");
    }
    let last = last_dense(&net);
    let target = if opts.penultimate {
        let Some(id) = last else { bail!("--penultimate: the model has no dense (fully connected) layer") };
        if regularizer != Regularizer::Jacobian {
            bail!("--penultimate applies to --regularizer jacobian");
        }
        PenaltyTarget::Node(net.nodes()[id].inputs[0])
    } else {
        PenaltyTarget::Logits
    };
    let objective = Objective {
        regularizer,
        lambda: opts.lambda,
        estimate,
        form: match opts.loss {
            LossArg::Mean => LossForm::Mean,
            LossArg::Sum => LossForm::Sum,
        },
        target,
    };
    objective.validate()?;
    if regularizer != Regularizer::None {
        net.check_piecewise_linear()
            .with_context(|| format!("{}: cannot train this model with a penalty", job.what))?;
    }
    let batch = opts.batch.min(job.train.len());
    if batch < opts.batch {
        log::warn!("only {} training samples: mini-batches of {batch}", job.train.len());
    }
    let per_epoch = (job.train.len() / batch) as u64;
    let total = match (opts.steps, opts.epochs) {
        (Some(s), _) => s,
        (None, Some(e)) => e.saturating_mul(per_epoch),
        (None, None) => per_epoch,
    };
    if total == 0 {
        bail!("nothing to do: 0 steps");
    }
    let lr = opts.lr.unwrap_or(job.default_lr);
    let schedule = lr_schedule(opts, lr)?;
    let mut trainer: Trainer<f32> = Trainer::new(objective, make_optimizer(opts, lr)?, opts.seed);
    if dropout > 0.0 {
        trainer.dropout = dense_dropout_sites(&net, dropout);
        if trainer.dropout.is_empty() {
            log::warn!("--dropout {dropout}: the model has fewer than two dense layers; no dropout applied");
        }
    }
    if opts.fix_last_orthonormal {
        let id = last.expect("checked with --penultimate");
        if let Some(Layer::Dense(dl)) = net.layer_params_mut(id) {
            let (k, h) = (dl.outputs, dl.inputs);
            orthonormalize_rows(&mut dl.weight, k, h)?;
        }
        trainer.frozen_weights.push(id);
        log::info!("last layer's weights replaced by the nearest orthonormal-row matrix and frozen");
    }
    // A checkpoint's parameters go into `net` before the engine uploads it.
    let resumed = match opts.resume {
        true => {
            let dir = opts.checkpoint.as_deref().expect("clap requires --checkpoint");
            let ck = checkpoint::load(dir)?;
            let mut i = 0;
            let mut bad = false;
            let zeros = net.params();
            net.update_params(&zeros, |_, p, _| {
                match ck.params.get(i) {
                    Some(src) if src.len() == p.len() => p.copy_from_slice(src),
                    _ => bad = true,
                }
                i += 1;
            })?;
            if bad || i != ck.params.len() {
                bail!("`{}`: the saved parameters do not fit this model", ck.dir.display());
            }
            Some(ck)
        }
        false => None,
    };
    let mut engine = Engine::select(opts.device, &net, trainer, opts, lr)?;
    let fingerprint = format!(
        "{} samples, batch {batch}, seed {}, {:?}, dropout {dropout}, adversarial {:?}, optimizer {:?} lr {lr}, \
         orthonormal {}",
        job.train.len(),
        opts.seed,
        objective,
        adversarial,
        opts.optimizer,
        opts.fix_last_orthonormal
    ) + &match schedule {
        LrSchedule::Constant => String::new(),
        s => format!(", lr schedule {s:?} over {total} steps"),
    } + if engine.name() == "gpu" { ", counter-based dropout (gpu)" } else { "" };
    let mut start_step = 0u64;
    if let Some(ck) = resumed {
        if ck.state.fingerprint != fingerprint {
            bail!(
                "the checkpoint in `{}` was made with other settings:\n  checkpoint: {}\n  now:        {}",
                ck.dir.display(),
                ck.state.fingerprint,
                fingerprint
            );
        }
        engine.restore(ck.state.step, ck.optimizer, ck.state.rng)?;
        start_step = ck.state.step;
        log::info!("resuming from `{}` at step {start_step}", ck.dir.display());
    }
    log::info!(
        "{}: {} steps of {batch} ({per_epoch} per epoch), {:?} λ={} {:?} {:?}, {:?} lr {lr} {:?}, dropout {dropout}{}",
        job.what,
        total,
        regularizer,
        opts.lambda,
        estimate,
        objective.form,
        opts.optimizer,
        schedule,
        adversarial.map(|a| format!(", adversarial {a:?}")).unwrap_or_default()
    );
    let d = net.input_len();
    let bar = if opts.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total).with_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps, ETA {eta} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        )
    };
    bar.set_position(start_step);
    let started = Instant::now();
    let mut last_stats = ObjectiveStats::default();
    let mut last_val: Option<Validation> = None;
    let mut order: Vec<usize> = Vec::new();
    let mut order_epoch = u64::MAX;
    let mut xb = vec![0f32; batch * d];
    let mut yb = vec![0usize; batch];
    let mut ce_avg = 0.0;
    let mut pen_avg = 0.0;
    let mut averaged = 0u64;
    let mut step_lr = lr;
    for step in start_step..total {
        let epoch = step / per_epoch;
        if epoch != order_epoch {
            order = (0..job.train.len()).collect();
            Rng::new(opts.seed ^ 0x5EED_0F0D_A7A0_0000 ^ epoch.wrapping_mul(0x9E37_79B9)).shuffle(&mut order);
            order_epoch = epoch;
        }
        let pos = (step % per_epoch) as usize * batch;
        let picked = &order[pos..pos + batch];
        job.train.gather(picked, &mut xb);
        for (y, &i) in yb.iter_mut().zip(picked) {
            *y = job.train.labels()[i];
        }
        if let Some(adv) = adversarial {
            engine.sync(&mut net)?;
            perturb(&net, adv, &mut xb, &yb, &job.train.domain)?;
        }
        step_lr = schedule.at(lr, step, total);
        engine.set_learning_rate(step_lr);
        let stats = match engine.step(&mut net, &xb, &yb) {
            Ok(s) => s,
            Err(StepError::NonFinite(e)) => {
                bar.abandon();
                let kept = match &opts.checkpoint {
                    Some(dir) => format!("; the last good checkpoint in `{}` is intact", dir.display()),
                    None => String::from("; nothing was written"),
                };
                bail!("{e}{kept}");
            }
            Err(StepError::Other(e)) => return Err(e),
        };
        last_stats = stats;
        ce_avg += stats.cross_entropy;
        pen_avg += stats.penalty_sq.sqrt();
        averaged += 1;
        let done = step + 1;
        let mut msg = format!(
            "CE {:.4} {} {:.3}",
            ce_avg / averaged as f64,
            match regularizer {
                Regularizer::InputGradient => "‖∇CE‖",
                _ => "‖J‖",
            },
            pen_avg / averaged as f64
        );
        if opts.val_every > 0 && done % opts.val_every == 0 && done < total {
            if let Some(val) = &job.val {
                engine.sync(&mut net)?;
                let v = validate(&net, val, opts.val_jacobian)?;
                log::info!(
                    "step {done}: train CE {:.4}, penalty {:.4}; val accuracy {:.2}%, mean ‖J‖_F {:.3}",
                    ce_avg / averaged as f64,
                    pen_avg / averaged as f64,
                    100.0 * v.accuracy,
                    v.mean_jacobian_fro
                );
                last_val = Some(v);
            }
            ce_avg = 0.0;
            pen_avg = 0.0;
            averaged = 0;
        }
        if let Some(v) = last_val {
            msg.push_str(&format!(" | val {:.2}% ‖J‖ {:.2}", 100.0 * v.accuracy, v.mean_jacobian_fro));
        }
        bar.set_message(msg);
        bar.set_position(done);
        if let Some(dir) = &opts.checkpoint {
            if (opts.checkpoint_every > 0 && done % opts.checkpoint_every == 0) || done == total {
                engine.sync(&mut net)?;
                let state = checkpoint::State { step: done, rng: engine.rng_state(), fingerprint: fingerprint.clone() };
                checkpoint::save(dir, &state, &net.params(), &engine.optimizer_state()?, &|p| {
                    (job.write_model)(&net, p)
                })?;
            }
        }
    }
    bar.finish_and_clear();
    engine.sync(&mut net)?;
    let wall = started.elapsed().as_secs_f64();
    let ran = total - start_step;
    (job.write_model)(&net, job.out).with_context(|| format!("writing `{}`", job.out.display()))?;
    let val = match &job.val {
        Some(v) => Some(validate(&net, v, opts.val_jacobian)?),
        None => None,
    };
    let summary = json!({
        "type": "summary",
        "out": job.out.display().to_string(),
        "steps": total,
        "steps_this_run": ran,
        "batch": batch,
        "regularizer": format!("{regularizer:?}"),
        "penalty": opts.penalty,
        "loss_form": format!("{:?}", objective.form),
        "lambda": opts.lambda,
        "adversarial": opts.adversarial,
        "penultimate": opts.penultimate,
        "fix_last_orthonormal": opts.fix_last_orthonormal,
        "dropout": dropout,
        "optimizer": format!("{:?}", opts.optimizer),
        "lr": lr,
        "lr_schedule": format!("{schedule:?}"),
        "last_lr": step_lr,
        "seed": opts.seed,
        "device": engine.name(),
        "wall_s": wall,
        "s_per_step": if ran > 0 { wall / ran as f64 } else { 0.0 },
        "last_batch_cross_entropy": last_stats.cross_entropy,
        "last_batch_penalty_sq": last_stats.penalty_sq,
        "val_accuracy": val.map(|v| v.accuracy),
        "val_mean_jacobian_fro": val.map(|v| v.mean_jacobian_fro),
    });
    if opts.json {
        println!("{summary}");
    } else {
        println!(
            "wrote `{}`: {total} steps ({ran} in this run, {wall:.1} s, {:.3} s/step)",
            job.out.display(),
            if ran > 0 { wall / ran as f64 } else { 0.0 }
        );
        if let Some(v) = val {
            println!(
                "validation: accuracy {:.2}%, mean ‖J‖_F {:.4} (first {} samples)",
                100.0 * v.accuracy,
                v.mean_jacobian_fro,
                opts.val_jacobian.min(job.val.as_ref().map_or(0, |s| s.len()))
            );
        }
    }
    Ok(())
}
