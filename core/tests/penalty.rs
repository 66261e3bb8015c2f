//! Acceptance tests of the exact gradient of the regularised training objective
//! (`train::Objective::evaluate`, built on `Network::bilinear_grads`):
//!
//! - on random small f64 networks of every piecewise-linear layer kind, the gradient equals
//!   central finite differences of `stats.loss` for the Jacobian penalty (exact in the mean and
//!   sum forms, subsampled, random projections with a fixed draw) and the input-gradient
//!   penalty, and the reported values equal an independent computation from `jacobian_at`;
//! - the same with dropout masks reused at `θ ± h`, and with the penultimate layer as target
//!   (whose later parameters receive no penalty gradient);
//! - the random-projection estimate and its gradient are unbiased (checked statistically);
//! - smooth networks and bad arguments give errors, and a linear model matches a closed form.
//!
//! Piecewise-linear networks have kinks: cases with a pre-activation or a max-pool runner-up
//! near a kink are rejected rather than failed, and so are cases where a parameter's exact
//! gradient differs from finite differences with step `h` *and* those differ from finite
//! differences with step `h/2` (the step crossed a kink).

use std::collections::BTreeSet;
use std::fmt::Display;

use certify_core::train::{
    dense_dropout_sites, dropout_masks, softmax_cross_entropy, DropoutSite, LossForm, Objective, ObjectiveStats,
    PenaltyEstimate, PenaltyTarget, Regularizer, Rng as TrainRng,
};
use certify_core::{Dense, Error, Layer, Network, NodeId, ParamGrads, Trace};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};

use crate::checks::{near_kink, KINK_MARGIN};
use crate::strategies::{block, build, inputs, Block, Case, Kind, Rng};

/// Finite-difference step, relative to `max(1, |θ|)`.
const STEP: f64 = 1e-5;
/// Allowed difference between the exact gradient and finite differences: relative part…
const REL_TOL: f64 = 1e-5;
/// … and absolute part.
const ABS_TOL: f64 = 1e-7;
/// At most this many parameters are checked per case and objective (all of them when there
/// are fewer; otherwise one per tensor and random others).
const FD_PARAMS: usize = 20;

/// The layer kinds whose second derivative is zero almost everywhere.
const PL_KINDS: [Kind; 16] = [
    Kind::Conv2d,
    Kind::MaxPool2d,
    Kind::AvgPool2d,
    Kind::GlobalAvgPool,
    Kind::Dense,
    Kind::Add,
    Kind::Affine,
    Kind::BatchNorm,
    Kind::Relu,
    Kind::LeakyRelu,
    Kind::Clip,
    Kind::Reshape,
    Kind::Concat,
    Kind::Pad,
    Kind::Transpose,
    Kind::Identity,
];

/// Each case evaluates the objective a few hundred times, so these properties run 12 cases by
/// default and a quarter of `PROPTEST_CASES` (at least one) when it is set.
fn config() -> Config {
    let mut c = crate::strategies::config();
    c.cases = match std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse::<u32>().ok()) {
        Some(n) => (n / 4).max(1),
        None => 12,
    };
    c
}

fn fail<E: Display>(what: &'static str) -> impl FnOnce(E) -> TestCaseError {
    move |e| TestCaseError::fail(format!("{what}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

/// Inputs of at most 2×4×4 = 32 values.
fn small_input() -> impl Strategy<Value = Vec<usize>> {
    (1..=2usize, 3..=4usize, 3..=4usize).prop_map(|(c, h, w)| vec![c, h, w])
}

/// A block of a random piecewise-linear kind.
fn pl_block() -> BoxedStrategy<Block> {
    proptest::sample::select(PL_KINDS.to_vec()).prop_flat_map(block).boxed()
}

/// A network testing one kind: a channel mix, the layer, optionally one more random
/// piecewise-linear block, then (added by `build`) a flattening reshape and the logits.
fn pl_kind_case(kind: Kind) -> impl Strategy<Value = Case> {
    (small_input(), 1..=2usize, block(kind), prop::option::of(pl_block()), 2..=4usize, any::<u64>()).prop_map(
        |(input, mix, b, extra, classes, seed)| {
            let mut blocks = vec![Block::Mix { out: mix }, b];
            blocks.extend(extra);
            Case { input, blocks, classes, seed }
        },
    )
}

/// A network of 1–4 random piecewise-linear blocks after a channel mix.
fn pl_random_case() -> impl Strategy<Value = Case> {
    (small_input(), 1..=2usize, prop::collection::vec(pl_block(), 1..=4), 2..=4usize, any::<u64>()).prop_map(
        |(input, mix, rest, classes, seed)| {
            let mut blocks = vec![Block::Mix { out: mix }];
            blocks.extend(rest);
            Case { input, blocks, classes, seed }
        },
    )
}

/// What varies per case besides the network: batch size, λ, the subsample size `M` (may
/// exceed the batch, which must clamp), projections `P`, and the forms of the random-form
/// objectives.
#[derive(Clone, Debug)]
struct Knobs {
    batch: usize,
    lambda: f64,
    subsample: usize,
    projections: usize,
    sum_forms: [bool; 3],
}

fn knobs() -> impl Strategy<Value = Knobs> {
    (2..=3usize, 0.05..2.0f64, 1..=4usize, 1..=3usize, any::<[bool; 3]>()).prop_map(
        |(batch, lambda, subsample, projections, sum_forms)| Knobs { batch, lambda, subsample, projections, sum_forms },
    )
}

fn form(sum: bool) -> LossForm {
    if sum {
        LossForm::Sum
    } else {
        LossForm::Mean
    }
}

fn objective(regularizer: Regularizer, lambda: f64, estimate: PenaltyEstimate, form: LossForm) -> Objective {
    Objective { regularizer, lambda, estimate, form, target: PenaltyTarget::Logits }
}

/// The objectives checked on every case.
fn objectives(k: &Knobs, input_gradient_estimate: PenaltyEstimate) -> Vec<Objective> {
    use PenaltyEstimate::*;
    use Regularizer::*;
    vec![
        objective(Jacobian, k.lambda, Exact, LossForm::Mean),
        objective(Jacobian, k.lambda, Exact, LossForm::Sum),
        objective(Jacobian, k.lambda, Subsample(k.subsample), form(k.sum_forms[0])),
        objective(Jacobian, k.lambda, Projections(k.projections), form(k.sum_forms[1])),
        objective(InputGradient, k.lambda, input_gradient_estimate, form(k.sum_forms[2])),
    ]
}

// ---------------------------------------------------------------------------------------------
// Evaluation at a point, perturbed parameters, independent reference values
// ---------------------------------------------------------------------------------------------

/// A mini-batch at which the objective is evaluated, with the dropout masks of its trace.
struct Batch<'a> {
    xs: &'a [f64],
    batch: usize,
    labels: &'a [usize],
    masks: &'a [Option<Vec<f64>>],
}

impl Batch<'_> {
    fn trace(&self, net: &Network<f64>) -> Result<Trace<f64>, Error> {
        net.trace_with_masks(self.xs, self.batch, self.masks.to_vec())
    }

    /// `obj.evaluate` at this batch; projections are drawn from a generator seeded by `draw`,
    /// so that repeated evaluations see the same vectors.
    fn evaluate(
        &self,
        net: &Network<f64>,
        obj: &Objective,
        draw: u64,
    ) -> Result<(ObjectiveStats, ParamGrads<f64>), Error> {
        let trace = self.trace(net)?;
        obj.evaluate(net, &trace, self.labels, &mut TrainRng::new(draw))
    }
}

/// Runs `f` on one thread. The finite-difference loss evaluations (hundreds per case, on
/// networks far too small for row parallelism to pay off) run serially, which makes them
/// several times faster; the gradients under test are computed in the default pool.
fn serial<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    #[cfg(feature = "std")]
    {
        thread_local! {
            // One per test thread, so that parallel tests do not queue on one worker.
            static POOL: rayon::ThreadPool =
                rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a one-thread pool");
        }
        POOL.with(|pool| pool.install(f))
    }
    #[cfg(not(feature = "std"))]
    f()
}

/// `net` with element `j` of parameter tensor `t` moved by `h`.
fn perturbed(net: &Network<f64>, t: usize, j: usize, h: f64) -> Network<f64> {
    let mut n = net.clone();
    let zero = ParamGrads::zeros_like(&n);
    n.update_params(&zero, |i, p, _| {
        if i == t {
            p[j] += h;
        }
    })
    .expect("layout");
    n
}

/// The parameters to check, as `(tensor, index)`: all of them, or one per tensor and random
/// others up to [`FD_PARAMS`].
fn picks(net: &Network<f64>, seed: u64) -> Vec<(usize, usize)> {
    let lens: Vec<usize> = net.params().tensors().iter().map(|t| t.len()).collect();
    let all: Vec<(usize, usize)> = lens.iter().enumerate().flat_map(|(t, &n)| (0..n).map(move |j| (t, j))).collect();
    if all.len() <= FD_PARAMS {
        return all;
    }
    let mut rng = Rng::new(seed);
    let mut below = |n: usize| (rng.next_u64() % n as u64) as usize;
    let mut chosen: BTreeSet<(usize, usize)> =
        lens.iter().enumerate().filter(|(_, &n)| n > 0).map(|(t, &n)| (t, below(n))).collect();
    while chosen.len() < FD_PARAMS {
        chosen.insert(all[below(all.len())]);
    }
    chosen.into_iter().collect()
}

/// Whether two values of some max-pooling window (the winner and a runner-up) are within
/// [`KINK_MARGIN`] of each other but not equal (equal values are copies of one cell or
/// constants, and stay tied).
fn near_pool_tie(net: &Network<f64>, trace: &Trace<f64>) -> Option<String> {
    for (id, node) in net.nodes().iter().enumerate() {
        let Layer::MaxPool2d(p) = &node.layer else { continue };
        let s = &net.nodes()[node.inputs[0]].shape;
        let (c, h, w) = (s[0], s[1] as isize, s[2] as isize);
        let (oh, ow) = (node.shape[1], node.shape[2]);
        let x = trace.value(node.inputs[0]);
        let in_size = c * (h * w) as usize;
        for b in 0..trace.batch() {
            for ch in 0..c {
                let plane = &x[b * in_size + ch * (h * w) as usize..][..(h * w) as usize];
                for i in 0..oh {
                    for j in 0..ow {
                        let mut vals = Vec::new();
                        for a in 0..p.kernel[0] {
                            for e in 0..p.kernel[1] {
                                let r = (i * p.stride[0] + a) as isize - p.padding[0] as isize;
                                let q = (j * p.stride[1] + e) as isize - p.padding[1] as isize;
                                if (0..h).contains(&r) && (0..w).contains(&q) {
                                    vals.push(plane[(r * w + q) as usize]);
                                }
                            }
                        }
                        let best = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        if let Some(v) = vals.iter().find(|&&v| v < best && best - v < KINK_MARGIN) {
                            return Some(format!(
                                "max pool {id} ({}): window values {best} and {v} nearly tie",
                                node.name
                            ));
                        }
                    }
                }
            }
        }
    }
    None
}

/// The per-sample squared norms of the penalised Jacobians (`‖J_i‖_F²` of the target) and the
/// per-sample squared input-gradient norms `‖J_iᵀ(p_i − e_{y_i})‖²` of the logits, computed from
/// `jacobian_at` (the reverse pass with unit cotangents), independently of `bilinear_grads`.
fn reference_norms(
    net: &Network<f64>,
    trace: &Trace<f64>,
    labels: &[usize],
    target: PenaltyTarget,
) -> (Vec<f64>, Vec<f64>) {
    let b = trace.batch();
    let jac = net.jacobian_at(trace).expect("jacobian");
    let (k, d) = (jac.classes, jac.inputs);
    let input_grad: Vec<f64> = (0..b)
        .map(|i| {
            let z = jac.logits_of(i);
            let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
            let s: f64 = e.iter().sum();
            let c: Vec<f64> = (0..k).map(|j| e[j] / s - f64::from(u8::from(j == labels[i]))).collect();
            let jm = jac.jacobian_of(i);
            (0..d).map(|x| (0..k).map(|r| c[r] * jm[r * d + x]).sum::<f64>().powi(2)).sum()
        })
        .collect();
    let jac_sq = match target {
        PenaltyTarget::Logits => (0..b).map(|i| jac.frobenius(i).powi(2)).collect(),
        PenaltyTarget::Node(id) => {
            let sub = net.truncated(id).expect("truncated");
            let tj = sub.jacobian_at(&trace.prefix(id + 1)).expect("jacobian of the target");
            (0..b).map(|i| tj.frobenius(i).powi(2)).collect()
        }
    };
    (jac_sq, input_grad)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

/// The statistics of `evaluate` equal the formulas of the objective's documentation applied to
/// independently computed Jacobians (projection estimates are checked statistically instead).
fn check_values(
    net: &Network<f64>,
    trace: &Trace<f64>,
    labels: &[usize],
    obj: &Objective,
    stats: &ObjectiveStats,
) -> Result<f64, TestCaseError> {
    let (b, k) = (trace.batch(), net.num_classes());
    let bf = b as f64;
    let (ce, _) = softmax_cross_entropy(trace.logits(), labels, k);
    prop_assert!(close(stats.cross_entropy, ce), "{obj:?}: cross-entropy {} vs {ce}", stats.cross_entropy);
    prop_assert_eq!(stats.batch, b);
    let correct = trace
        .logits()
        .chunks(k)
        .zip(labels)
        .filter(|(z, &y)| (0..k).all(|j| j == y || z[j] < z[y] || (z[j] == z[y] && j > y)))
        .count();
    prop_assert_eq!(stats.correct, correct, "{:?}: correct count", obj);
    let (jac_sq, input_grad) = reference_norms(net, trace, labels, obj.target);
    let m = match obj.estimate {
        PenaltyEstimate::Subsample(m) => m.min(b),
        _ => b,
    };
    let mean = |v: &[f64]| v[..m].iter().sum::<f64>() / m as f64;
    let sum_form = obj.form == LossForm::Sum;
    let (sq, term) = match obj.regularizer {
        Regularizer::None => (0.0, 0.0),
        Regularizer::Jacobian => {
            let sq = mean(&jac_sq);
            (sq, obj.lambda * if sum_form { (bf * sq).sqrt() } else { sq.sqrt() })
        }
        Regularizer::InputGradient => {
            let sq = mean(&input_grad);
            (sq, obj.lambda * if sum_form { bf * sq } else { sq })
        }
    };
    let loss = if sum_form { bf * ce } else { ce } + term;
    if !matches!(obj.estimate, PenaltyEstimate::Projections(_)) {
        prop_assert!(close(stats.penalty_sq, sq), "{obj:?}: penalty_sq {} vs reference {sq}", stats.penalty_sq);
        prop_assert!(close(stats.penalty_term, term), "{obj:?}: penalty_term {} vs {term}", stats.penalty_term);
        prop_assert!(close(stats.loss, loss), "{obj:?}: loss {} vs {loss}", stats.loss);
    } else {
        let ce_part = if sum_form { bf * ce } else { ce };
        prop_assert!(close(stats.loss, ce_part + stats.penalty_term), "{obj:?}: loss ≠ cross-entropy + penalty term");
    }
    Ok(sq)
}

/// The core property: at the mini-batch `at`, for objective `obj`, `evaluate`'s statistics equal the
/// reference values and its gradient equals central finite differences of `stats.loss` on the
/// picked parameters; the penalty's own part of the gradient is not zero when the penalty is
/// not. Returns the penalty part of the gradient (`grad(λ) − grad(λ = 0)`).
fn objective_matches_fd(
    net: &Network<f64>,
    at: &Batch,
    obj: &Objective,
    picks: &[(usize, usize)],
    draw: u64,
) -> Result<ParamGrads<f64>, TestCaseError> {
    let trace = at.trace(net).map_err(fail("trace"))?;
    let (stats, grads) = obj.evaluate(net, &trace, at.labels, &mut TrainRng::new(draw)).map_err(fail("evaluate"))?;
    let sq = serial(|| check_values(net, &trace, at.labels, obj, &stats))?;
    let plain = Objective { lambda: 0.0, ..*obj };
    let (_, ce_grads) =
        serial(|| plain.evaluate(net, &trace, at.labels, &mut TrainRng::new(draw))).map_err(fail("evaluate"))?;
    let mut penalty = grads.clone();
    penalty.axpy(-1.0, &ce_grads);
    if sq > 1e-8 && !net.params().is_empty() {
        prop_assert!(penalty.norm2() > 0.0, "{obj:?}: penalty {sq} > 0 but its gradient is identically zero");
    }
    let exact = grads.tensors();
    let theta = net.params();
    let theta = theta.tensors();
    let loss_at = |t: usize, j: usize, h: f64| -> Result<f64, TestCaseError> {
        let moved = perturbed(net, t, j, h);
        Ok(serial(|| at.evaluate(&moved, obj, draw)).map_err(fail("evaluate at θ ± h"))?.0.loss)
    };
    for &(t, j) in picks {
        let h = STEP * theta[t][j].abs().max(1.0);
        let g = exact[t][j];
        let fd = (loss_at(t, j, h)? - loss_at(t, j, -h)?) / (2.0 * h);
        if (g - fd).abs() <= REL_TOL * fd.abs() + ABS_TOL {
            continue;
        }
        // A mismatch: a real one, or the step crossed a kink (then halving it changes the
        // finite difference).
        let fd_half = (loss_at(t, j, h / 2.0)? - loss_at(t, j, -h / 2.0)?) / h;
        let tol = REL_TOL * fd_half.abs() + ABS_TOL;
        if (fd - fd_half).abs() > tol {
            return Err(TestCaseError::reject(format!(
                "{obj:?}: parameter ({t}, {j}): finite differences unstable ({fd} vs {fd_half}), a kink was crossed"
            )));
        }
        prop_assert!(
            (g - fd_half).abs() <= tol,
            "{:?}: parameter {} of tensor {}: exact gradient {} vs finite differences {} (step h: {}; loss {})",
            obj,
            j,
            t,
            g,
            fd_half,
            fd,
            stats.loss
        );
    }
    Ok(penalty)
}

/// Random labels in `0..k`.
fn labels(seed: u64, batch: usize, k: usize) -> Vec<usize> {
    let mut rng = Rng::new(seed ^ 0x1AB_E150);
    (0..batch).map(|_| (rng.next_u64() % k as u64) as usize).collect()
}

/// Rejects cases whose trace sits near a kink of the network.
fn reject_near_kinks(net: &Network<f64>, trace: &Trace<f64>) -> Result<(), TestCaseError> {
    if let Some(why) = near_kink(net, trace).or_else(|| near_pool_tie(net, trace)) {
        return Err(TestCaseError::reject(why));
    }
    Ok(())
}

/// Every objective of [`objectives`] matches finite differences on the network of `case`.
fn case_matches_fd(
    case: &Case,
    k: &Knobs,
    input_gradient_estimate: PenaltyEstimate,
    masks: &[Option<Vec<f64>>],
) -> Result<(), TestCaseError> {
    let net = build(case);
    let xs = inputs(case, &net, k.batch);
    let ys = labels(case.seed, k.batch, net.num_classes());
    let at = Batch { xs: &xs, batch: k.batch, labels: &ys, masks };
    reject_near_kinks(&net, &at.trace(&net).map_err(fail("trace"))?)?;
    let picks = picks(&net, case.seed);
    for (i, obj) in objectives(k, input_gradient_estimate).iter().enumerate() {
        objective_matches_fd(&net, &at, obj, &picks, case.seed ^ i as u64)?;
    }
    Ok(())
}

macro_rules! kind_properties {
    ($($module:ident => $kind:expr;)*) => {$(
        mod $module {
            use super::*;

            proptest! {
                #![proptest_config(config())]

                #[test]
                fn penalty_gradients_match_fd(case in pl_kind_case($kind), k in knobs()) {
                    case_matches_fd(&case, &k, PenaltyEstimate::Exact, &[])?;
                }
            }
        }
    )*};
}

kind_properties! {
    conv2d => Kind::Conv2d;
    max_pool => Kind::MaxPool2d;
    avg_pool => Kind::AvgPool2d;
    global_avg_pool => Kind::GlobalAvgPool;
    dense => Kind::Dense;
    add => Kind::Add;
    affine => Kind::Affine;
    batch_norm => Kind::BatchNorm;
    relu => Kind::Relu;
    leaky_relu => Kind::LeakyRelu;
    clip => Kind::Clip;
    reshape => Kind::Reshape;
    concat => Kind::Concat;
    pad => Kind::Pad;
    transpose => Kind::Transpose;
    identity => Kind::Identity;
}

/// Dropout sites on random nodes (the logits included), with random rates.
fn random_sites(net: &Network<f64>, seed: u64) -> Vec<DropoutSite> {
    let mut rng = Rng::new(seed ^ 0xD80_9017);
    let mut sites = Vec::new();
    for node in 1..net.nodes().len() {
        if rng.uniform(0.0, 1.0) < 0.4 {
            sites.push(DropoutSite { node, rate: rng.uniform(0.1, 0.6) });
        }
    }
    sites
}

/// The id of the input of the last `Dense` layer (the penultimate layer's output).
fn penultimate(net: &Network<f64>) -> NodeId {
    let last = net.nodes().iter().rposition(|n| matches!(n.layer, Layer::Dense(_))).expect("a dense layer");
    net.nodes()[last].inputs[0]
}

/// A random network whose penultimate layer has at most 48 values (the exact penalty of a
/// target with `K'` values carries `K'` cotangent rows per sample through the network).
fn narrow_penultimate_case() -> impl Strategy<Value = Case> {
    pl_random_case().prop_filter("penultimate layer too wide", |c| {
        let net = build(c);
        net.nodes()[penultimate(&net)].size() <= 48
    })
}

proptest! {
    #![proptest_config(config())]

    /// Mixed piecewise-linear networks; the input-gradient penalty on a subsample.
    #[test]
    fn random_networks_match_fd(case in pl_random_case(), k in knobs()) {
        case_matches_fd(&case, &k, PenaltyEstimate::Subsample(k.subsample), &[])?;
    }

    /// With dropout masks from `dropout_masks` passed to `trace_with_masks`, and the same
    /// masks reused at `θ ± h`, the gradients are those of the thinned network.
    #[test]
    fn dropout_gradients_match_fd(case in pl_random_case(), k in knobs()) {
        let net = build(&case);
        let sites = random_sites(&net, case.seed);
        let masks = dropout_masks(&net, &sites, k.batch, &mut TrainRng::new(case.seed)).map_err(fail("masks"))?;
        prop_assert_eq!(masks.iter().flatten().count(), sites.len());
        case_matches_fd(&case, &k, PenaltyEstimate::Exact, &masks)?;
    }

    /// The penultimate layer as target: finite differences, reference values, and no penalty
    /// gradient on the parameters after the target node.
    #[test]
    fn penultimate_target_matches_fd(case in narrow_penultimate_case(), k in knobs(), dropout in any::<bool>()) {
        let net = build(&case);
        let target = penultimate(&net);
        let masks = if dropout {
            dropout_masks(&net, &random_sites(&net, case.seed), k.batch, &mut TrainRng::new(case.seed))
                .map_err(fail("masks"))?
        } else {
            Vec::new()
        };
        let xs = inputs(&case, &net, k.batch);
        let ys = labels(case.seed, k.batch, net.num_classes());
        let at = Batch { xs: &xs, batch: k.batch, labels: &ys, masks: &masks };
        reject_near_kinks(&net, &at.trace(&net).map_err(fail("trace"))?)?;
        let picks = picks(&net, case.seed);
        let estimates = [
            (PenaltyEstimate::Exact, LossForm::Mean),
            (PenaltyEstimate::Exact, LossForm::Sum),
            (PenaltyEstimate::Subsample(k.subsample), form(k.sum_forms[0])),
            (PenaltyEstimate::Projections(k.projections), form(k.sum_forms[1])),
        ];
        for (i, (estimate, form)) in estimates.into_iter().enumerate() {
            let obj = Objective {
                regularizer: Regularizer::Jacobian,
                lambda: k.lambda,
                estimate,
                form,
                target: PenaltyTarget::Node(target),
            };
            let penalty = objective_matches_fd(&net, &at, &obj, &picks, case.seed ^ i as u64)?;
            prop_assert_eq!(penalty.nodes.len(), net.nodes().len());
            for (id, g) in penalty.nodes.iter().enumerate().skip(target + 1) {
                for t in g.iter().flat_map(|g| g.tensors()) {
                    prop_assert!(t.iter().all(|&v| v == 0.0), "{:?}: node {} after the target has a penalty gradient {:?}", obj, id, t);
                }
            }
        }
    }
}

/// A dropout MLP as trained in the paper (dropout before every dense layer but the first):
/// sites from `dense_dropout_sites`, masks from `dropout_masks`, gradients against finite
/// differences for the Jacobian (exact, mean form) and input-gradient penalties.
#[test]
fn dropout_mlp_matches_fd() {
    let mut rng = Rng::new(99);
    let mut net = Network::<f64>::new(&[6]).unwrap();
    for (i, (inp, out)) in [(6, 8), (8, 8), (8, 3)].into_iter().enumerate() {
        let d = Dense {
            weight: rng.weights(inp * out, inp),
            bias: Some(rng.vec(out, -0.3, 0.3)),
            inputs: inp,
            outputs: out,
        };
        net.then(format!("fc{i}"), Layer::Dense(d)).unwrap();
        if out != 3 {
            net.then(format!("relu{i}"), Layer::Relu).unwrap();
        }
    }
    let sites = dense_dropout_sites(&net, 0.5);
    assert_eq!(sites.iter().map(|s| s.node).collect::<Vec<_>>(), vec![2, 4]);
    let batch = 4;
    let masks = dropout_masks(&net, &sites, batch, &mut TrainRng::new(5)).unwrap();
    assert!(masks[2].as_ref().unwrap().iter().all(|&m| m == 0.0 || m == 2.0));
    let xs = rng.vec(batch * 6, -1.0, 1.0);
    let ys = [0, 2, 1, 2];
    let at = Batch { xs: &xs, batch, labels: &ys, masks: &masks };
    let trace = at.trace(&net).unwrap();
    assert!(near_kink(&net, &trace).is_none());
    let all = picks(&net, 0);
    let mut checked = 0;
    for obj in [
        objective(Regularizer::Jacobian, 0.7, PenaltyEstimate::Exact, LossForm::Mean),
        objective(Regularizer::InputGradient, 0.7, PenaltyEstimate::Exact, LossForm::Sum),
    ] {
        // The same network without masks has a different penalty: the masks are really used.
        let (with, _) = at.evaluate(&net, &obj, 1).unwrap();
        let (without, _) = Batch { masks: &[], ..at }.evaluate(&net, &obj, 1).unwrap();
        assert!((with.penalty_sq - without.penalty_sq).abs() > 1e-6 * without.penalty_sq);
        match objective_matches_fd(&net, &at, &obj, &all, 1) {
            Ok(_) => checked += 1,
            Err(e) => panic!("{obj:?}: {e}"),
        }
    }
    assert_eq!(checked, 2);
}

// ---------------------------------------------------------------------------------------------
// Random projections: unbiasedness
// ---------------------------------------------------------------------------------------------

/// Sample mean and standard error of the mean.
fn mean_se(sum: f64, sum_sq: f64, n: usize) -> (f64, f64) {
    let nf = n as f64;
    let mean = sum / nf;
    let var = ((sum_sq - nf * mean * mean) / (nf - 1.0)).max(0.0);
    (mean, (var / nf).sqrt())
}

/// `Projections(P)` estimates `‖J‖_F²` without bias, and so does the gradient of the estimate.
///
/// The estimate is `ŝ = (K/P)·(1/B)·Σ_i Σ_p ‖J_iᵀ v_ip‖²` with `v` uniform on the sphere, so
/// `E[v vᵀ] = I/K` gives `E[ŝ] = (1/B)·Σ_i ‖J_i‖_F²`. Its gradient `∇ŝ` is linear in the
/// `v vᵀ` as well (at a fixed activation pattern), hence also unbiased for `∇ s`. The gradient
/// that `evaluate` returns is that of `λ·sqrt(ŝ)` (mean form), which is *not* unbiased (the
/// square root is concave), so the test recovers `∇ŝ = 2·sqrt(ŝ)/λ·(grad(λ) − grad(λ = 0))`
/// from each draw (`grad(λ = 0)` is the cross-entropy part, the same for every draw) and
/// compares the mean of `ŝ` and `∇ŝ` over 4000 seeds with the exact `s` and `∇s` obtained the
/// same way from `PenaltyEstimate::Exact`. Seeds are fixed, so the outcome is deterministic.
#[test]
fn projections_are_unbiased() {
    let case = Case {
        input: vec![1, 4, 4],
        blocks: vec![
            Block::Mix { out: 2 },
            Block::LeakyRelu { alpha: 0.2 },
            Block::Dense { outputs: 3, bias: true },
            Block::Relu,
        ],
        classes: 4,
        seed: 42,
    };
    let net = build(&case);
    let batch = 3;
    let xs = inputs(&case, &net, batch);
    let ys = [1, 3, 0];
    let at = Batch { xs: &xs, batch, labels: &ys, masks: &[] };
    let lambda = 0.5;
    let jac = |estimate| objective(Regularizer::Jacobian, lambda, estimate, LossForm::Mean);
    let (_, ce_grads) = at.evaluate(&net, &Objective { lambda: 0.0, ..jac(PenaltyEstimate::Exact) }, 0).unwrap();
    // ∇ŝ from one evaluation.
    let grad_sq = |stats: &ObjectiveStats, grads: &ParamGrads<f64>| -> Vec<f64> {
        let mut g = grads.clone();
        g.axpy(-1.0, &ce_grads);
        g.scale(2.0 * stats.penalty_sq.sqrt() / lambda);
        g.tensors().concat()
    };
    let (exact_stats, exact_grads) = at.evaluate(&net, &jac(PenaltyEstimate::Exact), 0).unwrap();
    let s = exact_stats.penalty_sq;
    let ds = grad_sq(&exact_stats, &exact_grads);
    assert!(s > 1e-3 && ds.iter().any(|&v| v.abs() > 1e-3), "degenerate test network: ‖J‖² = {s}");
    let ds_norm = ds.iter().map(|v| v * v).sum::<f64>().sqrt();
    let n = 4000;
    for p in [1, 3] {
        let (mut sum, mut sum_sq) = (0.0, 0.0);
        let (mut gsum, mut gsum_sq) = (vec![0.0; ds.len()], vec![0.0; ds.len()]);
        // The projection of ∇ŝ on the direction of ∇s, a scalar summary.
        let (mut dsum, mut dsum_sq) = (0.0, 0.0);
        for seed in 0..n {
            let (stats, grads) =
                serial(|| at.evaluate(&net, &jac(PenaltyEstimate::Projections(p)), seed as u64)).unwrap();
            sum += stats.penalty_sq;
            sum_sq += stats.penalty_sq * stats.penalty_sq;
            let g = grad_sq(&stats, &grads);
            let along: f64 = g.iter().zip(&ds).map(|(a, b)| a * b).sum::<f64>() / ds_norm;
            dsum += along;
            dsum_sq += along * along;
            for (i, v) in g.iter().enumerate() {
                gsum[i] += v;
                gsum_sq[i] += v * v;
            }
        }
        let (mean, se) = mean_se(sum, sum_sq, n);
        assert!(se < 0.05 * s, "P = {p}: too noisy to detect a bias (se {se}, ‖J‖² {s})");
        assert!((mean - s).abs() <= 4.0 * se, "P = {p}: mean estimate {mean} vs exact {s} (se {se})");
        let (mean, se) = mean_se(dsum, dsum_sq, n);
        assert!(se < 0.05 * ds_norm, "P = {p}: gradient too noisy (se {se}, ‖∇s‖ {ds_norm})");
        assert!((mean - ds_norm).abs() <= 4.0 * se, "P = {p}: ∇ŝ along ∇s: {mean} vs {ds_norm} (se {se})");
        // Per coordinate: a family of up to ~100 comparisons, so 5 standard errors (a false
        // alarm for a Gaussian mean has probability about 6e-5 over the family).
        let mut worst = 0.0f64;
        for (i, &exact) in ds.iter().enumerate() {
            let (mean, se) = mean_se(gsum[i], gsum_sq[i], n);
            let err = (mean - exact).abs();
            assert!(
                err <= 5.0 * se + 1e-12 * ds_norm,
                "P = {p}: gradient entry {i}: mean {mean} vs exact {exact} (se {se})"
            );
            if se > 0.0 {
                worst = worst.max(err / se);
            }
        }
        assert!(worst > 0.0, "P = {p}: no gradient entry varies between draws");
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// `[4] → Dense(5) → <smooth> → Dense(3)`, with the smooth node named `squash`.
fn smooth_net(smooth: Layer<f64>) -> Network<f64> {
    let mut rng = Rng::new(3);
    let mut net = Network::<f64>::new(&[4]).unwrap();
    net.then(
        "fc1",
        Layer::Dense(Dense { weight: rng.weights(20, 4), bias: Some(vec![0.1; 5]), inputs: 4, outputs: 5 }),
    )
    .unwrap();
    net.then("squash", smooth).unwrap();
    net.then("fc2", Layer::Dense(Dense { weight: rng.weights(15, 5), bias: None, inputs: 5, outputs: 3 })).unwrap();
    net
}

#[test]
fn smooth_networks_are_refused_by_penalties_only() {
    let xs = Rng::new(4).vec(8, -1.0, 1.0);
    let ys = [0, 2];
    for (layer, kind) in [(Layer::Sigmoid, "Sigmoid"), (Layer::Tanh, "Tanh")] {
        let net = smooth_net(layer);
        let trace = net.trace(&xs, 2).unwrap();
        let penalties = [
            objective(Regularizer::Jacobian, 0.1, PenaltyEstimate::Exact, LossForm::Mean),
            objective(Regularizer::Jacobian, 0.1, PenaltyEstimate::Subsample(1), LossForm::Sum),
            objective(Regularizer::Jacobian, 0.1, PenaltyEstimate::Projections(2), LossForm::Mean),
            objective(Regularizer::InputGradient, 0.1, PenaltyEstimate::Exact, LossForm::Mean),
        ];
        for obj in penalties {
            match obj.evaluate(&net, &trace, &ys, &mut TrainRng::new(0)) {
                Err(Error::NotPiecewiseLinear { node, kind: k }) => {
                    assert_eq!((node.as_str(), k), ("squash", kind), "{obj:?}");
                    let msg = Error::NotPiecewiseLinear { node, kind: k }.to_string();
                    assert!(msg.contains("squash") && msg.contains(kind), "{msg}");
                }
                other => panic!("{kind}, {obj:?}: expected NotPiecewiseLinear, got {other:?}"),
            }
        }
        // Cross-entropy alone works, and so does a penalty whose target precedes the smooth
        // node (the truncated network is piecewise linear).
        let (stats, grads) = Objective::default().evaluate(&net, &trace, &ys, &mut TrainRng::new(0)).unwrap();
        assert!(stats.loss.is_finite() && stats.penalty_sq == 0.0 && grads.norm2() > 0.0);
        let (_, bp) = net.backward(&trace, &softmax_cross_entropy(trace.logits(), &ys, 3).1, 1).unwrap();
        assert!(grads.tensors().concat().iter().zip(bp.tensors().concat()).all(|(a, b)| close(*a, b)));
        let early = Objective { target: PenaltyTarget::Node(1), ..penalties[0] };
        let (stats, _) = early.evaluate(&net, &trace, &ys, &mut TrainRng::new(0)).unwrap();
        assert!(stats.penalty_sq > 0.0);
    }
    // A smooth node off the path to the logits does not matter.
    let mut rng = Rng::new(3);
    let mut net = Network::<f64>::new(&[4]).unwrap();
    let fc1 = Dense { weight: rng.weights(20, 4), bias: Some(vec![0.1; 5]), inputs: 4, outputs: 5 };
    let fc1 = net.push("fc1", Layer::Dense(fc1), &[0]).unwrap();
    let relu = net.push("relu", Layer::Relu, &[fc1]).unwrap();
    net.push("dead", Layer::Tanh, &[fc1]).unwrap();
    net.push("fc2", Layer::Dense(Dense { weight: rng.weights(15, 5), bias: None, inputs: 5, outputs: 3 }), &[relu])
        .unwrap();
    let trace = net.trace(&xs, 2).unwrap();
    let obj = objective(Regularizer::Jacobian, 0.1, PenaltyEstimate::Exact, LossForm::Mean);
    assert!(obj.evaluate(&net, &trace, &ys, &mut TrainRng::new(0)).is_ok());
}

#[test]
fn bad_arguments_are_errors() {
    let net = smooth_net(Layer::Relu);
    let xs = Rng::new(4).vec(12, -1.0, 1.0);
    let trace = net.trace(&xs, 3).unwrap();
    let good = objective(Regularizer::Jacobian, 0.1, PenaltyEstimate::Exact, LossForm::Mean);
    let eval = |obj: &Objective, ys: &[usize]| obj.evaluate(&net, &trace, ys, &mut TrainRng::new(0));
    assert!(eval(&good, &[0, 1, 2]).is_ok());
    for obj in
        [good, Objective::default(), objective(Regularizer::InputGradient, 0.1, PenaltyEstimate::Exact, LossForm::Sum)]
    {
        // Labels out of range, too few or too many.
        assert!(matches!(eval(&obj, &[0, 3, 1]), Err(Error::Parameter { .. })), "{obj:?}");
        assert!(matches!(eval(&obj, &[0, usize::MAX, 1]), Err(Error::Parameter { .. })), "{obj:?}");
        assert!(matches!(eval(&obj, &[0, 1]), Err(Error::DataLength { got: 2, expected: 3, .. })), "{obj:?}");
        assert!(matches!(eval(&obj, &[0, 1, 2, 0]), Err(Error::DataLength { got: 4, expected: 3, .. })), "{obj:?}");
    }
    let bad = [
        Objective { estimate: PenaltyEstimate::Subsample(0), ..good },
        Objective { estimate: PenaltyEstimate::Projections(0), ..good },
        Objective { lambda: -0.1, ..good },
        Objective { lambda: -0.0001, regularizer: Regularizer::None, ..good },
        Objective { lambda: f64::NAN, ..good },
        Objective { lambda: f64::INFINITY, ..good },
        Objective { regularizer: Regularizer::InputGradient, estimate: PenaltyEstimate::Projections(2), ..good },
        Objective { regularizer: Regularizer::InputGradient, target: PenaltyTarget::Node(2), ..good },
        Objective { target: PenaltyTarget::Node(0), ..good },
        Objective { target: PenaltyTarget::Node(4), ..good },
        Objective { target: PenaltyTarget::Node(usize::MAX), ..good },
    ];
    for obj in bad {
        let r = eval(&obj, &[0, 1, 2]);
        assert!(r.is_err(), "{obj:?} was accepted");
        if obj.target == PenaltyTarget::Logits {
            assert!(obj.validate().is_err(), "{obj:?}: validate accepts it");
        }
    }
    // The last node as target is the logits' Jacobian.
    let last = Objective { target: PenaltyTarget::Node(3), ..good };
    let (a, ga) = eval(&last, &[0, 1, 2]).unwrap();
    let (b, gb) = eval(&good, &[0, 1, 2]).unwrap();
    assert!(close(a.loss, b.loss) && close(a.penalty_sq, b.penalty_sq));
    let (ga, gb) = (ga.tensors().concat(), gb.tensors().concat());
    assert!(ga.iter().zip(&gb).all(|(x, y)| close(*x, *y)));
    // A cotangent row count of zero and cotangents of the wrong length are errors too.
    assert!(net.bilinear_grads(&trace, &[], 0).is_err());
    assert!(net.bilinear_grads(&trace, &[1.0; 8], 3).is_err());
    assert!(net.bilinear_grads(&trace, &[f64::NAN; 9], 1).is_err());
}

// ---------------------------------------------------------------------------------------------
// A closed form
// ---------------------------------------------------------------------------------------------

/// For `z = W·x + b`, `J = W` at every point: `‖J‖_F² = ‖W‖_F²`, and the penalty's gradient is
/// `λ·W/‖W‖_F` (mean form) or `λ·√B·W/‖W‖_F` (sum form) on the weights and zero on the bias;
/// the cross-entropy part is that of `Network::backward`. The projection estimate of `‖W‖²`
/// is `(K/P)·mean ‖Wᵀv‖²`, whose gradient is `(K/P)·mean 2·v vᵀ W`, reproduced through
/// `bilinear_grads` with explicit vectors.
#[test]
fn linear_model_closed_form() {
    let mut rng = Rng::new(17);
    let (d, k, batch) = (5, 3, 4);
    let w = rng.vec(k * d, -1.0, 1.0);
    let bias = rng.vec(k, -0.5, 0.5);
    let mut net = Network::<f64>::new(&[d]).unwrap();
    net.then("fc", Layer::Dense(Dense { weight: w.clone(), bias: Some(bias), inputs: d, outputs: k })).unwrap();
    let xs = rng.vec(batch * d, -1.0, 1.0);
    let ys = [2, 0, 1, 1];
    let trace = net.trace(&xs, batch).unwrap();
    let w2: f64 = w.iter().map(|v| v * v).sum();
    let wn = w2.sqrt();
    let lambda = 0.3;
    let (ce, dz) = softmax_cross_entropy(trace.logits(), &ys, k);
    for (form, scale, ce_scale) in [(LossForm::Mean, 1.0, 1.0), (LossForm::Sum, (batch as f64).sqrt(), batch as f64)] {
        for estimate in [PenaltyEstimate::Exact, PenaltyEstimate::Subsample(1), PenaltyEstimate::Subsample(3)] {
            let obj = objective(Regularizer::Jacobian, lambda, estimate, form);
            let (stats, grads) = obj.evaluate(&net, &trace, &ys, &mut TrainRng::new(0)).unwrap();
            assert!(close(stats.penalty_sq, w2), "{obj:?}: {} vs ‖W‖² {w2}", stats.penalty_sq);
            assert!(close(stats.penalty_term, lambda * scale * wn), "{obj:?}: term {}", stats.penalty_term);
            assert!(close(stats.loss, ce_scale * ce + lambda * scale * wn), "{obj:?}: loss {}", stats.loss);
            let cot: Vec<f64> = dz.iter().map(|v| v * ce_scale).collect();
            let (_, ce_grads) = net.backward(&trace, &cot, 1).unwrap();
            let ce_g = ce_grads.tensors();
            let g = grads.tensors();
            for i in 0..k * d {
                let expected = ce_g[0][i] + lambda * scale * w[i] / wn;
                assert!((g[0][i] - expected).abs() < 1e-12, "{obj:?}: weight {i}: {} vs {expected}", g[0][i]);
            }
            for i in 0..k {
                assert!((g[1][i] - ce_g[1][i]).abs() < 1e-12, "{obj:?}: bias {i}: {} vs {}", g[1][i], ce_g[1][i]);
            }
        }
    }
    // bilinear_grads with explicit cotangents v: u = Wᵀv, J·u = W Wᵀ v, ∇_W Σ vᵀ W u = Σ v uᵀ.
    let rows = 2;
    let v = rng.vec(batch * rows * k, -1.0, 1.0);
    let bl = net.bilinear_grads(&trace, &v, rows).unwrap();
    let mut gw = vec![0.0; k * d];
    for r in 0..batch * rows {
        let vr = &v[r * k..(r + 1) * k];
        let u: Vec<f64> = (0..d).map(|j| (0..k).map(|o| vr[o] * w[o * d + j]).sum()).collect();
        assert!(bl.vjp[r * d..(r + 1) * d].iter().zip(&u).all(|(a, b)| (a - b).abs() < 1e-12), "vjp row {r}");
        for o in 0..k {
            let ju: f64 = (0..d).map(|j| w[o * d + j] * u[j]).sum();
            assert!((bl.jvp[r * k + o] - ju).abs() < 1e-12, "jvp row {r}");
            for j in 0..d {
                gw[o * d + j] += vr[o] * u[j];
            }
        }
    }
    let g = bl.grads.tensors();
    assert!(g[0].iter().zip(&gw).all(|(a, b)| (a - b).abs() < 1e-12), "{:?} vs {gw:?}", g[0]);
    assert!(g[1].iter().all(|&b| b == 0.0), "bias entries must be zero: {:?}", g[1]);
    // The input-gradient penalty of a linear model: ∇_x CE_i = Wᵀ(p_i − e_{y_i}).
    let obj = objective(Regularizer::InputGradient, lambda, PenaltyEstimate::Exact, LossForm::Mean);
    let (stats, _) = obj.evaluate(&net, &trace, &ys, &mut TrainRng::new(0)).unwrap();
    let expected: f64 = (0..batch)
        .map(|i| {
            let c: Vec<f64> = (0..k).map(|o| dz[i * k + o] * batch as f64).collect();
            (0..d).map(|j| (0..k).map(|o| c[o] * w[o * d + j]).sum::<f64>().powi(2)).sum::<f64>()
        })
        .sum::<f64>()
        / batch as f64;
    assert!(close(stats.penalty_sq, expected), "{} vs {expected}", stats.penalty_sq);
    assert!(close(stats.loss, ce + lambda * expected));
}

proptest! {
    #![proptest_config(config())]

    /// Post-training lowers the penalty: on a fixed batch, a plain gradient step of the penalty
    /// term alone (the λ = 1 objective's gradient minus the λ = 0 one's, i.e. without the
    /// cross-entropy) lowers `sqrt(mean ‖J‖_F²)` for a small enough step, by at least half the
    /// first-order prediction `η‖g‖²` (Armijo's condition), for some `η = 2⁻ʲ`, `j < 40`.
    #[test]
    fn a_small_penalty_gradient_step_lowers_the_penalty(case in pl_random_case(), batch in 2..=3usize) {
        let net = build(&case);
        let xs = inputs(&case, &net, batch);
        let ys = labels(case.seed, batch, net.num_classes());
        let trace = net.trace(&xs, batch).map_err(fail("trace"))?;
        reject_near_kinks(&net, &trace)?;
        let obj = |lambda| objective(Regularizer::Jacobian, lambda, PenaltyEstimate::Exact, LossForm::Mean);
        let eval = |net: &Network<f64>, lambda: f64| -> Result<(ObjectiveStats, ParamGrads<f64>), TestCaseError> {
            let trace = net.trace(&xs, batch).map_err(fail("trace"))?;
            obj(lambda).evaluate(net, &trace, &ys, &mut TrainRng::new(0)).map_err(fail("evaluate"))
        };
        let (stats, mut g) = eval(&net, 1.0)?;
        let (_, ce_only) = eval(&net, 0.0)?;
        g.axpy(-1.0, &ce_only);
        let g2 = g.norm2();
        prop_assume!(stats.penalty_term > 1e-9 && g2 > 1e-18, "zero penalty or zero penalty gradient");
        let before = stats.penalty_term;
        let mut tried = Vec::new();
        let mut lowered = false;
        for j in 0..40 {
            let eta = 0.5f64.powi(j);
            let mut stepped = net.clone();
            stepped.apply_update(&g, -eta).map_err(fail("update"))?;
            let after = eval(&stepped, 1.0)?.0.penalty_term;
            tried.push((eta, after));
            if after <= before - 0.5 * eta * g2 {
                lowered = true;
                break;
            }
        }
        prop_assert!(lowered, "penalty {before}, ‖g‖² {g2}: no step lowered it enough; (η, penalty after): {tried:?}");
    }
}
