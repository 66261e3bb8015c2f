//! GPU training against the CPU reference: one step from the same weights, batch, seed and
//! dropout masks (`counter_dropout_masks`, the masks the GPU draws) gives the same objective
//! value and the same updated weights as the CPU step computed in f64, within 1e-4 relative (to
//! 1% of each tensor's scale) or within four times the f32 CPU step's own distance from it
//! (`assert_near_reference`), for every penalty estimate, loss form and optimizer, in one chunk
//! or several; and unsupported networks or objectives, bad batches and non-finite steps are
//! refused with errors.

use certify_core::train::{
    counter_dropout_masks, Adam, DropoutSite, LossForm, LrSchedule, Objective, Optimizer, PenaltyEstimate,
    PenaltyTarget, Regularizer, RmsProp, Rng, Sgd,
};
use certify_core::{BatchNorm, Dense, Float, Layer, Network, Pool2d};
use certify_gpu::{Error, GpuContext, GpuOptimizer, GpuTrainer};

use crate::device::{context, conv, uniform};

/// conv 3×3 (pad 1) – ReLU – max pool 2 – flatten – dense 12 – LeakyReLU – [dropout] – dense 4 – clip.
fn small_convnet(seed: u64) -> Network<f32> {
    let mut rng = Rng::new(seed);
    let mut net = Network::new(&[2, 6, 6]).unwrap();
    let mut c = conv(&mut rng, 2, 3, [3, 3], 1, true);
    c.padding = [1, 1, 1, 1];
    net.then("conv", Layer::Conv2d(c)).unwrap();
    net.then("relu", Layer::Relu).unwrap();
    let pool = Pool2d { kernel: [2, 2], stride: [2, 2], padding: [0; 4], count_include_pad: false, ceil_mode: false };
    net.then("pool", Layer::MaxPool2d(pool)).unwrap();
    net.then("flat", Layer::Reshape { shape: vec![27] }).unwrap();
    let d1 = Dense {
        weight: uniform(&mut rng, 12 * 27, 0.4),
        bias: Some(uniform(&mut rng, 12, 0.2)),
        inputs: 27,
        outputs: 12,
    };
    net.then("fc1", Layer::Dense(d1)).unwrap();
    net.then("act", Layer::LeakyRelu { alpha: 0.1 }).unwrap();
    let d2 =
        Dense { weight: uniform(&mut rng, 4 * 12, 0.5), bias: Some(uniform(&mut rng, 4, 0.2)), inputs: 12, outputs: 4 };
    net.then("fc2", Layer::Dense(d2)).unwrap();
    net
}

/// Two conv → activation → max pool blocks with the geometry the pooled kernels must get right:
/// grouped dilated padded conv – Clip – overlapping padded 3×3/2 pool – strided padded conv –
/// LeakyReLU – overlapping 2×2/1 pool – flatten – dense 6 – ReLU – dense 3.
fn pooled_blocks_net(seed: u64) -> Network<f32> {
    let mut rng = Rng::new(seed);
    let mut net = Network::new(&[2, 9, 9]).unwrap();
    let mut c1 = conv(&mut rng, 2, 10, [3, 3], 2, true);
    c1.padding = [2, 2, 2, 2];
    c1.dilation = [2, 2];
    net.then("conv1", Layer::Conv2d(c1)).unwrap();
    net.then("clip", Layer::Clip { min: -0.3, max: 0.6 }).unwrap();
    let p1 = Pool2d { kernel: [3, 3], stride: [2, 2], padding: [1; 4], count_include_pad: false, ceil_mode: false };
    net.then("pool1", Layer::MaxPool2d(p1)).unwrap();
    let mut c2 = conv(&mut rng, 10, 3, [2, 2], 1, false);
    c2.padding = [1, 1, 1, 1];
    c2.stride = [2, 1];
    net.then("conv2", Layer::Conv2d(c2)).unwrap();
    net.then("leaky", Layer::LeakyRelu { alpha: 0.1 }).unwrap();
    let p2 = Pool2d { kernel: [2, 2], stride: [1, 1], padding: [0; 4], count_include_pad: false, ceil_mode: false };
    net.then("pool2", Layer::MaxPool2d(p2)).unwrap();
    let n = net.nodes()[6].size();
    net.then("flat", Layer::Reshape { shape: vec![n] }).unwrap();
    let d1 =
        Dense { weight: uniform(&mut rng, 6 * n, 0.5), bias: Some(uniform(&mut rng, 6, 0.2)), inputs: n, outputs: 6 };
    net.then("fc1", Layer::Dense(d1)).unwrap();
    net.then("relu", Layer::Relu).unwrap();
    let d2 = Dense { weight: uniform(&mut rng, 18, 0.5), bias: Some(uniform(&mut rng, 3, 0.2)), inputs: 6, outputs: 3 };
    net.then("fc2", Layer::Dense(d2)).unwrap();
    net
}

/// avg pool 2 on [1, 4, 4] – flatten – dense 10 (no bias) – ReLU – dense 3.
fn small_avgnet(seed: u64) -> Network<f32> {
    let mut rng = Rng::new(seed);
    let mut net = Network::new(&[1, 4, 4]).unwrap();
    let pool =
        Pool2d { kernel: [2, 2], stride: [1, 1], padding: [1, 1, 0, 0], count_include_pad: true, ceil_mode: false };
    net.then("pool", Layer::AvgPool2d(pool)).unwrap();
    let n = net.nodes()[1].size();
    net.then("flat", Layer::Reshape { shape: vec![n] }).unwrap();
    net.then("fc1", Layer::Dense(Dense { weight: uniform(&mut rng, 10 * n, 0.5), bias: None, inputs: n, outputs: 10 }))
        .unwrap();
    net.then("relu", Layer::Relu).unwrap();
    let d2 =
        Dense { weight: uniform(&mut rng, 30, 0.5), bias: Some(uniform(&mut rng, 3, 0.2)), inputs: 10, outputs: 3 };
    net.then("fc2", Layer::Dense(d2)).unwrap();
    net
}

/// dense 50 → 70 – ReLU – dense 70 → 5: several 32×32 tiles of the `gemm` kernel in every pass.
fn wide_mlp(seed: u64) -> Network<f32> {
    let mut rng = Rng::new(seed);
    let mut net = Network::new(&[50]).unwrap();
    let d1 = Dense {
        weight: uniform(&mut rng, 70 * 50, 0.3),
        bias: Some(uniform(&mut rng, 70, 0.2)),
        inputs: 50,
        outputs: 70,
    };
    net.then("fc1", Layer::Dense(d1)).unwrap();
    net.then("relu", Layer::Relu).unwrap();
    let d2 =
        Dense { weight: uniform(&mut rng, 5 * 70, 0.3), bias: Some(uniform(&mut rng, 5, 0.2)), inputs: 70, outputs: 5 };
    net.then("fc2", Layer::Dense(d2)).unwrap();
    net
}

fn objective(estimate: PenaltyEstimate, form: LossForm, lambda: f64) -> Objective {
    Objective { regularizer: Regularizer::Jacobian, lambda, estimate, form, target: PenaltyTarget::Logits }
}

fn cpu_optimizer<T: Float>(o: GpuOptimizer) -> Box<dyn Optimizer<T>> {
    let f = |v: f32| T::from_f64(v as f64);
    match o {
        GpuOptimizer::Sgd { lr, momentum } => Box::new(Sgd::new(f(lr), f(momentum))),
        GpuOptimizer::Adam { lr, beta1, beta2, eps } => Box::new(Adam::with_params(f(lr), f(beta1), f(beta2), f(eps))),
        GpuOptimizer::RmsProp { lr, alpha, eps } => Box::new(RmsProp::with_params(f(lr), f(alpha), f(eps))),
    }
}

struct Case {
    what: &'static str,
    net: Network<f32>,
    objective: Objective,
    optimizer: GpuOptimizer,
    dropout: Vec<DropoutSite>,
    frozen: Vec<usize>,
    batch: usize,
    steps: u64,
    budget: Option<u64>,
    /// A learning-rate schedule over the `steps` steps (set before each step on both sides).
    schedule: LrSchedule,
    /// `GpuTrainer::with_gradient_threads` (None: the default).
    grad_threads: Option<usize>,
}

/// What a CPU run of a case gives, widened to f64 whatever precision it ran in.
struct CpuRun {
    /// Per step: cross-entropy, ‖J‖², loss, correct.
    stats: Vec<(f64, f64, f64, usize)>,
    params: Vec<Vec<f64>>,
    optimizer: Vec<Vec<Vec<f64>>>,
}

fn widen<T: Float>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

/// The CPU steps of case `c` in precision `T` on `batches`, with the GPU's dropout masks.
fn cpu_run<T: Float>(c: &Case, batches: &[(Vec<f32>, Vec<usize>)], seed: u64, base_lr: f32) -> CpuRun {
    let mut net: Network<T> = c.net.cast();
    let mut opt = cpu_optimizer::<T>(c.optimizer);
    let mut rng = Rng::new(seed);
    let mut stats = Vec::new();
    for (step, (x, labels)) in (1..).zip(batches) {
        opt.set_learning_rate(T::from_f64(c.schedule.at(base_lr as f64, step - 1, c.steps) as f32 as f64));
        let masks = counter_dropout_masks(&net, &c.dropout, c.batch, seed, step).unwrap();
        let x: Vec<T> = x.iter().map(|v| T::from_f64(*v as f64)).collect();
        let trace = net.trace_with_masks(&x, c.batch, masks).unwrap();
        let (s, mut grads) = c.objective.evaluate(&net, &trace, labels, &mut rng).unwrap();
        for &id in &c.frozen {
            if let Some(Some(g)) = grads.nodes.get_mut(id) {
                g.tensors_mut()[0].iter_mut().for_each(|v| *v = T::ZERO);
            }
        }
        opt.step(&mut net, &grads).unwrap();
        stats.push((s.cross_entropy, s.penalty_sq, s.loss, s.correct));
    }
    CpuRun {
        stats,
        params: net.params().tensors().iter().map(|t| widen(t)).collect(),
        optimizer: opt.state().buffers.iter().map(|b| b.iter().map(|t| widen(t)).collect()).collect(),
    }
}

/// `gpu` against the f64 CPU reference `exact`: within 1e-4 relative (floored at 1% of the
/// array's scale, as `assert_close`), or no farther than four times the f32 CPU run `cpu` is from
/// it. The second arm admits f32 rounding where the values cancel (the f32 CPU path, with its own
/// summation order, then differs from f64 by more than 1e-4 too); a wrong kernel is off by far more.
fn assert_near_reference(what: &str, gpu: &[f64], cpu: &[f64], exact: &[f64]) {
    assert_eq!((gpu.len(), cpu.len()), (exact.len(), exact.len()), "{what}: lengths");
    let scale = exact.iter().fold(0f64, |m, v| m.max(v.abs()));
    for (i, ((&g, &c), &r)) in gpu.iter().zip(cpu).zip(exact).enumerate() {
        let tol = (1e-4 * r.abs().max(1e-2 * scale).max(f32::MIN_POSITIVE as f64)).max(4.0 * (c - r).abs());
        assert!(
            (g - r).abs() <= tol,
            "{what}[{i}]: GPU {g} vs CPU {r} in f64, {c} in f32 (tolerance {tol}, scale {scale})"
        );
    }
}

/// Runs `steps` steps on the GPU and on the CPU (in f32 and in f64, with the GPU's dropout masks)
/// from the same weights and compares the objective statistics every step and the weights and
/// optimizer state at the end (`assert_near_reference`).
fn check(ctx: &GpuContext, c: Case) {
    let seed = 7;
    let mut data = Rng::new(99);
    let (d, k) = (c.net.input_len(), c.net.num_classes());
    let batches: Vec<(Vec<f32>, Vec<usize>)> = (0..c.steps)
        .map(|_| (uniform(&mut data, c.batch * d, 1.0), (0..c.batch).map(|_| data.below(k)).collect()))
        .collect();
    let mut gpu = GpuTrainer::new(ctx, &c.net, c.objective, c.optimizer, seed)
        .and_then(|t| t.with_dropout(&c.dropout))
        .map(|t| t.with_frozen_weights(&c.frozen))
        .map(|t| match c.grad_threads {
            Some(n) => t.with_gradient_threads(n),
            None => t,
        })
        .unwrap_or_else(|e| panic!("{}: {e}", c.what));
    if let Some(b) = c.budget {
        gpu = gpu.with_memory_budget(b);
        assert!(gpu.chunk_size(c.batch).unwrap() < c.batch, "{}: the budget splits the batch", c.what);
    }
    let base_lr = match c.optimizer {
        GpuOptimizer::Sgd { lr, .. } | GpuOptimizer::Adam { lr, .. } | GpuOptimizer::RmsProp { lr, .. } => lr,
    };
    let cpu = cpu_run::<f32>(&c, &batches, seed, base_lr);
    let exact = cpu_run::<f64>(&c, &batches, seed, base_lr);
    for (step, (x, labels)) in (1..).zip(&batches) {
        gpu.set_learning_rate(c.schedule.at(base_lr as f64, step - 1, c.steps) as f32);
        let gs = gpu.step(x, labels).unwrap_or_else(|e| panic!("{}: {e}", c.what));
        let (cs, rs) = (cpu.stats[step as usize - 1], exact.stats[step as usize - 1]);
        let what = format!("{} step {step}", c.what);
        assert_near_reference(&format!("{what}: CE"), &[gs.cross_entropy], &[cs.0], &[rs.0]);
        assert_near_reference(&format!("{what}: ‖J‖²"), &[gs.penalty_sq], &[cs.1], &[rs.1]);
        assert_near_reference(&format!("{what}: loss"), &[gs.loss], &[cs.2], &[rs.2]);
        assert_eq!(gs.correct, cs.3, "{what}: correct");
    }
    assert_eq!(gpu.steps(), c.steps);
    let mut back = c.net.clone();
    gpu.download(&mut back).unwrap();
    let (start, got) = (c.net.params(), back.params());
    for (i, (((s, w), r), g)) in
        start.tensors().iter().zip(&cpu.params).zip(&exact.params).zip(got.tensors()).enumerate()
    {
        // Compare the change of each tensor (what the gradient determines) and the values.
        let s = widen(s);
        let g = widen(g);
        let delta = |v: &[f64]| -> Vec<f64> { v.iter().zip(&s).map(|(a, b)| a - b).collect() };
        let (dg, dw, dr) = (delta(&g), delta(w), delta(r));
        if dr.iter().any(|v| *v != 0.0) {
            assert_near_reference(&format!("{}: update of tensor {i}", c.what), &dg, &dw, &dr);
        } else {
            assert!(dg.iter().all(|v| *v == 0.0), "{}: tensor {i} is frozen on the CPU but moved on the GPU", c.what);
        }
        assert_near_reference(&format!("{}: tensor {i}", c.what), &g, w, r);
    }
    let state = gpu.optimizer_state().unwrap();
    assert_eq!(state.buffers.len(), exact.optimizer.len(), "{}: optimizer buffers", c.what);
    for ((a, b), r) in state.buffers.iter().zip(&cpu.optimizer).zip(&exact.optimizer) {
        if r.is_empty() {
            continue;
        }
        for (i, ((x, y), z)) in a.iter().zip(b).zip(r).enumerate() {
            assert_near_reference(&format!("{}: optimizer state tensor {i}", c.what), &widen(x), y, z);
        }
    }
}

fn sgd() -> GpuOptimizer {
    GpuOptimizer::Sgd { lr: 0.05, momentum: 0.0 }
}

#[test]
fn one_step_equals_the_cpu_step_for_every_penalty_estimate() {
    let Some(ctx) = context() else { return };
    for (what, estimate) in [
        ("exact", PenaltyEstimate::Exact),
        ("subsample:3", PenaltyEstimate::Subsample(3)),
        ("projections:2", PenaltyEstimate::Projections(2)),
    ] {
        for form in [LossForm::Mean, LossForm::Sum] {
            let net = small_convnet(1);
            let drop = vec![DropoutSite { node: 6, rate: 0.5 }];
            check(
                &ctx,
                Case {
                    what: if form == LossForm::Mean { what } else { "sum form" },
                    net,
                    objective: objective(estimate, form, 0.3),
                    optimizer: sgd(),
                    dropout: drop,
                    frozen: vec![],
                    batch: 8,
                    steps: 1,
                    budget: None,
                    schedule: LrSchedule::Constant,
                    grad_threads: None,
                },
            );
        }
    }
}

#[test]
fn pooled_blocks_with_strides_padding_overlap_and_dropout_equal_the_cpu() {
    let Some(ctx) = context() else { return };
    // Few gradient invocations: every row-summing loop runs its four-at-a-time path and its tail.
    for (what, estimate, drop, grad_threads) in [
        ("pooled blocks, exact", PenaltyEstimate::Exact, vec![], None),
        ("pooled blocks, projections:2, dropout on a pool", PenaltyEstimate::Projections(2), vec![3], None),
        ("pooled blocks, exact, many rows per gradient invocation", PenaltyEstimate::Exact, vec![], Some(400)),
    ] {
        let net = pooled_blocks_net(4);
        assert_eq!(net.nodes()[3].shape, vec![10, 5, 5], "{what}: first pool");
        assert_eq!(net.nodes()[6].shape, vec![3, 2, 5], "{what}: second pool");
        check(
            &ctx,
            Case {
                what,
                net,
                objective: objective(estimate, LossForm::Mean, 0.3),
                optimizer: sgd(),
                dropout: drop.into_iter().map(|node| DropoutSite { node, rate: 0.3 }).collect(),
                frozen: vec![],
                batch: 6,
                steps: 2,
                budget: None,
                schedule: LrSchedule::Constant,
                grad_threads,
            },
        );
    }
}

#[test]
fn several_steps_equal_the_cpu_with_every_optimizer() {
    let Some(ctx) = context() else { return };
    for (what, optimizer) in [
        ("adam", GpuOptimizer::adam(1e-3)),
        ("rmsprop", GpuOptimizer::rmsprop(1e-3)),
        ("sgd momentum", GpuOptimizer::Sgd { lr: 0.02, momentum: 0.9 }),
    ] {
        for schedule in [LrSchedule::Constant, LrSchedule::Cosine { min: 1e-4 }] {
            check(
                &ctx,
                Case {
                    what,
                    net: small_convnet(2),
                    objective: objective(PenaltyEstimate::Exact, LossForm::Mean, 0.1),
                    optimizer,
                    dropout: vec![DropoutSite { node: 6, rate: 0.25 }],
                    frozen: vec![],
                    batch: 6,
                    steps: 3,
                    budget: None,
                    schedule,
                    grad_threads: None,
                },
            );
        }
    }
}

#[test]
fn chunked_batches_frozen_weights_and_plain_training_equal_the_cpu() {
    let Some(ctx) = context() else { return };
    let cases = [
        ("chunked exact", objective(PenaltyEstimate::Exact, LossForm::Mean, 0.2), Some(40_000u64), vec![]),
        ("chunked projections", objective(PenaltyEstimate::Projections(3), LossForm::Mean, 0.2), Some(40_000), vec![]),
        ("frozen last layer", objective(PenaltyEstimate::Exact, LossForm::Mean, 0.2), None, vec![7]),
        ("no penalty", Objective::default(), None, vec![]),
    ];
    for (what, objective, budget, frozen) in cases {
        check(
            &ctx,
            Case {
                what,
                net: small_convnet(3),
                objective,
                optimizer: GpuOptimizer::adam(1e-2),
                dropout: vec![DropoutSite { node: 6, rate: 0.5 }],
                frozen,
                batch: 11,
                steps: 2,
                budget,
                schedule: LrSchedule::Constant,
                grad_threads: None,
            },
        );
    }
    check(
        &ctx,
        Case {
            what: "wide dense layers",
            net: wide_mlp(8),
            objective: objective(PenaltyEstimate::Exact, LossForm::Mean, 0.3),
            optimizer: sgd(),
            dropout: vec![DropoutSite { node: 2, rate: 0.3 }],
            frozen: vec![],
            batch: 9,
            steps: 2,
            budget: None,
            schedule: LrSchedule::Constant,
            grad_threads: None,
        },
    );
    check(
        &ctx,
        Case {
            what: "average pooling, no bias",
            net: small_avgnet(4),
            objective: objective(PenaltyEstimate::Exact, LossForm::Mean, 0.5),
            optimizer: sgd(),
            dropout: vec![],
            frozen: vec![],
            batch: 5,
            steps: 2,
            budget: None,
            schedule: LrSchedule::Constant,
            grad_threads: None,
        },
    );
}

#[test]
fn unsupported_networks_objectives_and_bad_batches_are_refused() {
    let Some(ctx) = context() else { return };
    let net = small_convnet(5);
    let ig = Objective { regularizer: Regularizer::InputGradient, lambda: 0.1, ..Objective::default() };
    let e = GpuTrainer::new(&ctx, &net, ig, sgd(), 0).unwrap_err();
    assert!(matches!(e, Error::NotTrainable { .. }), "{e}");
    let pen = Objective { target: PenaltyTarget::Node(5), ..objective(PenaltyEstimate::Exact, LossForm::Mean, 0.1) };
    assert!(matches!(GpuTrainer::new(&ctx, &net, pen, sgd(), 0), Err(Error::NotTrainable { .. })));
    let mut bn = Network::new(&[2, 3, 3]).unwrap();
    let c = vec![0.0f32, 0.0];
    let b = BatchNorm { gamma: vec![1.0, 1.0], beta: c.clone(), mean: c.clone(), var: vec![1.0, 1.0], epsilon: 1e-5 };
    bn.then("bn", Layer::BatchNorm(b)).unwrap();
    bn.then("flat", Layer::Reshape { shape: vec![18] }).unwrap();
    bn.then("fc", Layer::Dense(Dense { weight: vec![0.1; 36], bias: None, inputs: 18, outputs: 2 })).unwrap();
    let e = GpuTrainer::new(&ctx, &bn, Objective::default(), sgd(), 0).unwrap_err();
    assert!(e.to_string().contains("node `bn`") && e.to_string().contains("--device cpu"), "{e}");

    let mut t = GpuTrainer::new(&ctx, &net, objective(PenaltyEstimate::Exact, LossForm::Mean, 0.1), sgd(), 0).unwrap();
    let x = vec![0.5f32; 2 * 72];
    assert!(matches!(t.step(&x, &[0, 4]), Err(Error::Input(m)) if m.contains("label 4")));
    assert!(matches!(t.step(&x[..100], &[0, 1]), Err(Error::Input(_))));
    assert!(matches!(t.step(&[], &[]), Err(Error::Input(_))));
    let mut nan = x.clone();
    nan[3] = f32::NAN;
    assert!(matches!(t.step(&nan, &[0, 1]), Err(Error::Input(m)) if m.contains("not finite")));
    assert_eq!(t.steps(), 0);

    // Weights so large that the logits overflow: the step is refused and nothing changes.
    let mut huge = net.clone();
    if let Some(Layer::Dense(d)) = huge.layer_params_mut(7) {
        d.weight.iter_mut().for_each(|w| *w = 3e38);
    }
    let mut t = GpuTrainer::new(&ctx, &huge, Objective::default(), sgd(), 0).unwrap();
    let e = t.step(&x, &[0, 1]).unwrap_err();
    assert!(matches!(e, Error::Core(certify_core::Error::NonFiniteLoss { step: 1, .. })), "{e}");
    let mut back = huge.clone();
    t.download(&mut back).unwrap();
    assert_eq!(back.params(), huge.params(), "a refused step leaves the weights as they were");
}

#[test]
fn dropout_masks_are_the_cpu_counter_masks_and_have_the_rate() {
    // The masks' statistics: about `rate` of the values dropped, survivors scaled by 1/(1 − rate).
    let net = small_convnet(6);
    let m = counter_dropout_masks(&net, &[DropoutSite { node: 6, rate: 0.3 }], 2000, 5, 1).unwrap();
    let mask = m[6].as_ref().unwrap();
    let dropped = mask.iter().filter(|&&v| v == 0.0).count() as f64 / mask.len() as f64;
    assert!((dropped - 0.3).abs() < 0.01, "dropped fraction {dropped}");
    assert!(mask.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-6));
    let other = counter_dropout_masks(&net, &[DropoutSite { node: 6, rate: 0.3 }], 2000, 5, 2).unwrap();
    assert_ne!(m, other, "another step draws another mask");
}
