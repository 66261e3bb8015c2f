//! Training on the GPU: the objective of [`certify_core::train::Objective`] (cross-entropy plus
//! the Jacobian penalty, exact / subsample / projections) with its exact parameter gradient,
//! counter-based dropout and SGD / Adam / RMSProp updates, all in WGSL kernels. Weights and
//! optimizer state stay on the device; each step uploads one mini-batch and reads back only
//! per-sample metrics.

use certify_core::train::{
    dropout_threshold, DropoutSite, LossForm, Objective, ObjectiveStats, OptimizerState, PenaltyEstimate,
    PenaltyTarget, Regularizer, Rng,
};
use certify_core::{Layer, Network, NodeId};

use crate::context::GpuContext;
use crate::error::{Error, Result};
use crate::runtime::{conv_params, pool_params, u32_of, Runtime};
use crate::shaders::{
    self, ActivationParams, CeParams, ConvParams, DenseGradParams, DenseParams, DropoutParams, GateParams, MaskParams,
    OptParams, PoolParams, PooledConvParams, ReduceParams, ScaleShiftParams, SumsqParams, TransposeParams,
};

/// Default bytes of GPU memory for the per-chunk work buffers of a step (node values, the
/// penalty's cotangent and tangent rows); larger mini-batches run in several chunks.
pub const TRAIN_CHUNK_BYTES: u64 = 1 << 30;

/// Invocations a weight-gradient dispatch aims at: the rows are split so that
/// `splits × parameters` reaches this, which keeps small layers (a first convolution has a few
/// hundred weights) from running on a handful of threads.
const GRAD_THREADS: usize = 1 << 20;

/// The optimizer and its hyper-parameters, with the update rules of
/// [`certify_core::train::{Sgd, Adam, RmsProp}`](certify_core::train).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GpuOptimizer {
    /// SGD with heavy-ball momentum (0 for plain gradient descent).
    Sgd {
        /// Learning rate.
        lr: f32,
        /// Momentum factor.
        momentum: f32,
    },
    /// Adam.
    Adam {
        /// Learning rate.
        lr: f32,
        /// β₁.
        beta1: f32,
        /// β₂.
        beta2: f32,
        /// ε.
        eps: f32,
    },
    /// Uncentred RMSProp.
    RmsProp {
        /// Learning rate.
        lr: f32,
        /// Smoothing constant α.
        alpha: f32,
        /// ε.
        eps: f32,
    },
}

impl GpuOptimizer {
    /// Adam with PyTorch's defaults (β₁ 0.9, β₂ 0.999, ε 1e-8), as `Adam::new`.
    pub fn adam(lr: f32) -> Self {
        GpuOptimizer::Adam { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }

    /// RMSProp with PyTorch's defaults (α 0.99, ε 1e-8), as `RmsProp::new`.
    pub fn rmsprop(lr: f32) -> Self {
        GpuOptimizer::RmsProp { lr, alpha: 0.99, eps: 1e-8 }
    }

    /// State buffers per parameter (Adam 2, RMSProp 1, SGD 1).
    fn buffers(&self) -> usize {
        match self {
            GpuOptimizer::Adam { .. } => 2,
            _ => 1,
        }
    }
}

/// A trainable layer's parameters and their gradients and optimizer state on the device.
struct Params {
    weight: wgpu::Buffer,
    bias: Option<wgpu::Buffer>,
    n_weight: usize,
    n_bias: usize,
    /// Cross-entropy gradient (weights, then biases).
    g_ce: wgpu::Buffer,
    /// Unscaled penalty gradient (weights only; the bias part stays zero).
    g_pen: wgpu::Buffer,
    s1: wgpu::Buffer,
    s2: wgpu::Buffer,
    /// Per-split partial sums of the weight-gradient kernels.
    partial: wgpu::Buffer,
    /// Dense layers: the weights transposed (`[inputs, outputs]`), refreshed at the start of
    /// every step for `dense_forward_t`.
    transposed: Option<wgpu::Buffer>,
}

enum Op {
    Conv(ConvParams, Params),
    Dense {
        inputs: u32,
        outputs: u32,
        params: Params,
    },
    MaxPool(PoolParams),
    AvgPool(PoolParams),
    Activation(ActivationParams),
    ScaleShift {
        scale: wgpu::Buffer,
        shift: wgpu::Buffer,
        inner: u32,
    },
    /// Reshape and Identity.
    Alias,
}

struct Node {
    name: String,
    op: Op,
    /// Values per sample at the output and at the input.
    size: usize,
    in_size: usize,
    /// Dropout rate on the output (0: none).
    dropout: f64,
    frozen: bool,
}

/// Buffers sized for one chunk of `chunk` samples and `rows` penalty rows per sample.
struct Workspace {
    chunk: usize,
    rows: usize,
    /// Node values `[chunk, size]` (index 0: the input); aliases share their input's buffer.
    values: Vec<Option<wgpu::Buffer>>,
    winners: Vec<Option<wgpu::Buffer>>,
    /// At the max pool of each conv → activation → max pool block (with penalty rows): the
    /// activation's derivative at each pooled cell's winner and the winner's packed position,
    /// per sample (`maxpool_gate`).
    gates: Vec<Option<(wgpu::Buffer, wgpu::Buffer)>>,
    masks: Vec<Option<wgpu::Buffer>>,
    labels: wgpu::Buffer,
    cot: wgpu::Buffer,
    stats: wgpu::Buffer,
    /// Ping-pong buffers of the reverse and tangent passes.
    ping: [wgpu::Buffer; 2],
    /// Penalty cotangent rows at each trainable layer's output, kept for the tangent pass.
    kept: Vec<Option<wgpu::Buffer>>,
    seeds: wgpu::Buffer,
    rowsq: wgpu::Buffer,
}

/// Buffers sized for the whole mini-batch.
struct BatchBuffers {
    batch: usize,
    x: wgpu::Buffer,
    labels: wgpu::Buffer,
    projections: wgpu::Buffer,
    stats: wgpu::Buffer,
    rowsq: wgpu::Buffer,
    read_stats: wgpu::Buffer,
    read_rowsq: wgpu::Buffer,
}

/// A network trained on the GPU: [`Trainer`](certify_core::train::Trainer)'s step with the
/// same objective, gradient and optimizer, in f32 on the device.
///
/// Supported networks are chains (each node reads the node before it) of Conv2d, Dense, Relu,
/// LeakyRelu, Clip, MaxPool2d, AvgPool2d, Affine, Reshape and Identity; other layers (BatchNorm,
/// Add, …) are refused with [`Error::NotTrainable`]. Objectives: [`Regularizer::None`] and
/// [`Regularizer::Jacobian`] on the logits with every [`PenaltyEstimate`] and [`LossForm`]; the
/// input-gradient regulariser and penultimate-layer targets are refused (the CPU trainer has
/// them).
///
/// Dropout masks come from the counter-based generator of
/// [`certify_core::train::counter_dropout_masks`] keyed by (seed, step, node, value), so a CPU
/// step given those masks is the exact reference of a GPU step; projection vectors are drawn on
/// the host from an [`Rng`] seeded like the CPU trainer's, in the same order.
pub struct GpuTrainer {
    rt: Runtime,
    nodes: Vec<Node>,
    objective: Objective,
    optimizer: GpuOptimizer,
    seed: u64,
    steps: u64,
    /// Optimizer steps taken (Adam's bias correction) and β₁ᵗ, β₂ᵗ in f32 as the CPU keeps them.
    opt_steps: u64,
    beta_t: (f32, f32),
    rng: Rng,
    classes: usize,
    input_len: usize,
    budget: u64,
    flag: wgpu::Buffer,
    read_flag: wgpu::Buffer,
    ws: Option<Workspace>,
    bb: Option<BatchBuffers>,
    /// Invocations a weight-gradient dispatch aims at (see [`GRAD_THREADS`]).
    grad_threads: usize,
}

impl std::fmt::Debug for GpuTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuTrainer").field("nodes", &self.nodes.len()).field("steps", &self.steps).finish()
    }
}

impl GpuTrainer {
    /// Compiles `net` for training on the device of `ctx` with `objective`, `optimizer` and
    /// `seed` (dropout masks and projection vectors), uploading the weights once.
    ///
    /// Errors when the objective is invalid or not supported on the GPU, when a node is not
    /// trainable here ([`Error::NotTrainable`] names it), or when a weight exceeds the adapter's
    /// buffer limits.
    pub fn new(
        ctx: &GpuContext,
        net: &Network<f32>,
        objective: Objective,
        optimizer: GpuOptimizer,
        seed: u64,
    ) -> Result<Self> {
        objective.validate()?;
        let refuse = |node: &str, reason: &str| Error::NotTrainable { node: node.into(), reason: reason.into() };
        match objective.regularizer {
            Regularizer::InputGradient => {
                return Err(refuse("objective", "the input-gradient regulariser runs on the CPU only"))
            }
            Regularizer::Jacobian if objective.target != PenaltyTarget::Logits => {
                return Err(refuse("objective", "penultimate-layer Jacobian targets run on the CPU only"))
            }
            _ => {}
        }
        net.check_classifier()?;
        let rt = Runtime::new(ctx, &shaders::TRAIN)?;
        let all = net.nodes();
        let validation = rt.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let mut nodes = Vec::with_capacity(all.len());
        for (id, node) in all.iter().enumerate() {
            let name = node.name.clone();
            if id == 0 {
                nodes.push(Node { name, op: Op::Alias, size: node.size(), in_size: 0, dropout: 0.0, frozen: false });
                continue;
            }
            if node.inputs != [id - 1] {
                return Err(refuse(&name, "GPU training takes chains of layers (each node reads the one before it)"));
            }
            let in_shape = all[id - 1].shape.as_slice();
            let in_size = all[id - 1].size();
            let params = |w: &[f32], b: Option<&Vec<f32>>| -> Result<Params> {
                let n_weight = w.len();
                let n_bias = b.map_or(0, |b| b.len());
                let n = n_weight + n_bias;
                let parts = GRAD_THREADS.div_ceil(n.max(1)).max(1) * n;
                Ok(Params {
                    weight: rt.upload(w, &format!("node `{name}`: weights"))?,
                    bias: b.map(|b| rt.upload(b, &format!("node `{name}`: bias"))).transpose()?,
                    n_weight,
                    n_bias,
                    g_ce: rt.storage(n, "gradient")?,
                    g_pen: rt.storage(n, "penalty gradient")?,
                    s1: rt.storage(n, "optimizer state")?,
                    s2: rt.storage(if optimizer.buffers() > 1 { n } else { 1 }, "optimizer state")?,
                    partial: rt.storage(parts.min((rt.max_binding / 4) as usize), "partial gradients")?,
                    transposed: None,
                })
            };
            let op = match &node.layer {
                Layer::Conv2d(c) => {
                    let geom = conv_params(c, in_shape, &node.shape)?;
                    Op::Conv(geom, params(&c.weight, c.bias.as_ref())?)
                }
                Layer::Dense(d) => {
                    let mut p = params(&d.weight, d.bias.as_ref())?;
                    p.transposed = Some(rt.storage(d.weight.len(), "transposed weights")?);
                    Op::Dense {
                        inputs: u32_of(d.inputs, "dense inputs")?,
                        outputs: u32_of(d.outputs, "dense outputs")?,
                        params: p,
                    }
                }
                Layer::MaxPool2d(p) => Op::MaxPool(pool_params(p, in_shape, &node.shape)?),
                Layer::AvgPool2d(p) => Op::AvgPool(pool_params(p, in_shape, &node.shape)?),
                Layer::Relu => Op::Activation(ActivationParams { kind: 0, ..Default::default() }),
                Layer::LeakyRelu { alpha } => {
                    Op::Activation(ActivationParams { kind: 1, alpha: *alpha, ..Default::default() })
                }
                Layer::Clip { min, max } => {
                    Op::Activation(ActivationParams { kind: 2, lo: *min, hi: *max, ..Default::default() })
                }
                Layer::Affine(a) => Op::ScaleShift {
                    scale: rt.upload(&a.scale, &format!("node `{name}`: affine scale"))?,
                    shift: rt.upload(&a.shift, &format!("node `{name}`: affine shift"))?,
                    inner: 1,
                },
                Layer::Reshape { .. } | Layer::Identity => Op::Alias,
                other => {
                    return Err(refuse(
                        &name,
                        &format!(
                            "layer {} is not trained on the GPU (it trains Conv2d, Dense, Relu, LeakyRelu, Clip, \
                             MaxPool2d, AvgPool2d, Affine, Reshape, Identity)",
                            other.kind()
                        ),
                    ))
                }
            };
            nodes.push(Node { name, op, size: node.size(), in_size, dropout: 0.0, frozen: false });
        }
        if net.output() != all.len() - 1 {
            return Err(refuse(&all[net.output()].name, "the output must be the last node"));
        }
        let flag = rt.storage(1, "non-finite flag")?;
        let read_flag = rt.readback_buffer(1)?;
        if let Some(e) = pollster::block_on(validation.pop()) {
            return Err(Error::Device { during: "uploading the weights".into(), reason: e.to_string() });
        }
        Ok(GpuTrainer {
            rt,
            nodes,
            objective,
            optimizer,
            seed,
            steps: 0,
            opt_steps: 0,
            beta_t: (1.0, 1.0),
            rng: Rng::new(seed),
            classes: net.num_classes(),
            input_len: net.input_len(),
            budget: TRAIN_CHUNK_BYTES,
            flag,
            read_flag,
            ws: None,
            bb: None,
            grad_threads: GRAD_THREADS,
        })
    }

    /// Dropout on the outputs of `sites` (as [`Trainer::dropout`](certify_core::train::Trainer)).
    /// Errors when a site's node does not exist or its rate is outside `[0, 1)`.
    pub fn with_dropout(mut self, sites: &[DropoutSite]) -> Result<Self> {
        for s in sites {
            let Some(node) = self.nodes.get_mut(s.node) else {
                return Err(Error::NotTrainable { node: format!("#{}", s.node), reason: "no such node".into() });
            };
            if !(0.0..1.0).contains(&s.rate) {
                return Err(Error::NotTrainable {
                    node: node.name.clone(),
                    reason: format!("dropout rate {} outside [0, 1)", s.rate),
                });
            }
            node.dropout = s.rate;
        }
        self.ws = None;
        Ok(self)
    }

    /// Keeps the weights (not the biases) of `nodes` fixed (see
    /// [`Trainer::frozen_weights`](certify_core::train::Trainer)).
    pub fn with_frozen_weights(mut self, nodes: &[NodeId]) -> Self {
        for &id in nodes {
            if let Some(n) = self.nodes.get_mut(id) {
                n.frozen = true;
            }
        }
        self
    }

    /// Caps the bytes of the per-chunk work buffers (default [`TRAIN_CHUNK_BYTES`]); smaller
    /// budgets run a mini-batch in more chunks with the same result up to summation order.
    pub fn with_memory_budget(mut self, bytes: u64) -> Self {
        self.budget = bytes.max(1);
        self.ws = None;
        self
    }

    /// Sets the learning rate of the next steps (a schedule calls this before each step), as
    /// [`Optimizer::set_learning_rate`](certify_core::train::Optimizer::set_learning_rate).
    pub fn set_learning_rate(&mut self, rate: f32) {
        match &mut self.optimizer {
            GpuOptimizer::Sgd { lr, .. } | GpuOptimizer::Adam { lr, .. } | GpuOptimizer::RmsProp { lr, .. } => {
                *lr = rate
            }
        }
    }

    /// Continues a run: `steps` steps already taken, the optimizer's saved state and the
    /// projection generator's state. Errors when the state does not fit this network.
    pub fn restore(&mut self, steps: u64, state: &OptimizerState<f32>, rng: Rng) -> Result<()> {
        if state.buffers.len() != self.optimizer.buffers() {
            return Err(Error::Input(format!(
                "saved optimizer state has {} buffers, this optimizer keeps {}",
                state.buffers.len(),
                self.optimizer.buffers()
            )));
        }
        for (b, buffer) in state.buffers.iter().enumerate() {
            if buffer.is_empty() {
                continue;
            }
            let mut tensors = buffer.iter();
            for node in &self.nodes {
                let Some(p) = node.params() else { continue };
                let target = if b == 0 { &p.s1 } else { &p.s2 };
                let mut flat = Vec::with_capacity(p.n_weight + p.n_bias);
                for len in [p.n_weight, p.n_bias].into_iter().filter(|&l| l > 0) {
                    match tensors.next() {
                        Some(t) if t.len() == len => flat.extend_from_slice(t),
                        _ => return Err(Error::Input("the saved optimizer state does not fit this network".into())),
                    }
                }
                self.rt.queue.write_buffer(target, 0, bytemuck::cast_slice(&flat));
            }
        }
        self.steps = steps;
        self.opt_steps = if matches!(self.optimizer, GpuOptimizer::Adam { .. }) { state.steps } else { steps };
        if let GpuOptimizer::Adam { beta1, beta2, .. } = self.optimizer {
            self.beta_t = (1.0, 1.0);
            for _ in 0..self.opt_steps {
                self.beta_t.0 *= beta1;
                self.beta_t.1 *= beta2;
            }
        }
        self.rng = rng;
        Ok(())
    }

    /// Device time per kernel since construction or [`reset_kernel_profile`](Self::reset_kernel_profile):
    /// `(kernel, dispatches, seconds)`, longest first. Empty unless the context was created with
    /// [`PROFILE_ENV`](crate::PROFILE_ENV) set on an adapter with timestamp queries.
    pub fn kernel_profile(&self) -> Vec<(String, u64, f64)> {
        self.rt.profile_totals()
    }

    /// Forgets the kernel times gathered so far (e.g. those of warm-up steps).
    pub fn reset_kernel_profile(&self) {
        self.rt.profile_reset()
    }

    /// Sets how many invocations each weight-gradient dispatch aims at (default 2^20, at least
    /// 1): fewer means more rows summed per invocation. The result is the same up to f32
    /// summation order; tests use small values to run the kernels' many-row paths on small
    /// networks.
    pub fn with_gradient_threads(mut self, threads: usize) -> Self {
        self.grad_threads = threads.clamp(1, GRAD_THREADS);
        self
    }

    /// Steps applied so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The projection-vector generator (to checkpoint it).
    pub fn rng(&self) -> &Rng {
        &self.rng
    }

    /// Samples per chunk for a mini-batch of `batch` (the whole batch when it fits the memory
    /// budget and the adapter's binding limit).
    pub fn chunk_size(&self, batch: usize) -> Result<usize> {
        let rows = self.penalty_rows();
        let widest = self.nodes.iter().map(|n| n.size).max().unwrap_or(1).max(self.classes);
        let values: usize =
            self.nodes.iter().filter(|n| !matches!(n.op, Op::Alias)).map(|n| n.size).sum::<usize>() + self.input_len;
        // Dropout masks, max-pool winners and (with penalty rows) the pools' gates.
        let gated = if rows > 0 { 3 } else { 1 };
        let extra: usize = self
            .nodes
            .iter()
            .map(|n| {
                let pool = if matches!(n.op, Op::MaxPool(_)) { gated } else { 0 };
                let mask = if n.dropout > 0.0 { 1 } else { 0 };
                (pool + mask) * n.size
            })
            .sum();
        let kept: usize = self.nodes.iter().filter(|n| n.params().is_some()).map(|n| n.size).sum();
        let row_values = rows.max(1) * widest;
        let per_sample =
            4 * (values + extra + 2 * row_values + rows * (kept + self.classes + 1) + 3 * self.classes) as u64;
        let widest_row = 4 * row_values as u64;
        self.rt.check_size(widest_row, "the widest layer's rows of one sample")?;
        let by_budget = (self.budget / per_sample.max(1)).max(1);
        let by_binding = self.rt.max_binding / widest_row.max(1);
        Ok((batch as u64).min(by_budget).min(by_binding).max(1) as usize)
    }

    fn penalty_rows(&self) -> usize {
        match (self.objective.regularizer, self.objective.estimate) {
            (Regularizer::Jacobian, PenaltyEstimate::Projections(p)) if self.objective.lambda > 0.0 => p,
            (Regularizer::Jacobian, _) if self.objective.lambda > 0.0 => self.classes,
            _ => 0,
        }
    }

    /// Writes the device's current weights into `net` (the network this trainer was built from).
    pub fn download(&self, net: &mut Network<f32>) -> Result<()> {
        let mut enc =
            self.rt.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("download") });
        let mut reads = Vec::new();
        for node in &self.nodes {
            let Some(p) = node.params() else { continue };
            let w = self.rt.readback_buffer(p.n_weight)?;
            enc.copy_buffer_to_buffer(&p.weight, 0, &w, 0, (p.n_weight * 4) as u64);
            let b = match &p.bias {
                Some(bias) => {
                    let b = self.rt.readback_buffer(p.n_bias)?;
                    enc.copy_buffer_to_buffer(bias, 0, &b, 0, (p.n_bias * 4) as u64);
                    Some(b)
                }
                None => None,
            };
            reads.push((w, b, p.n_weight, p.n_bias));
        }
        self.rt.queue.submit([enc.finish()]);
        let mut values = Vec::new();
        for (w, b, nw, nb) in &reads {
            values.push(self.rt.read::<f32>(w, *nw)?);
            if let Some(b) = b {
                values.push(self.rt.read::<f32>(b, *nb)?);
            }
        }
        let mut it = values.into_iter();
        let params = net.params();
        let mut bad = false;
        net.update_params(&params, |_, p, _| match it.next() {
            Some(v) if v.len() == p.len() => p.copy_from_slice(&v),
            _ => bad = true,
        })?;
        if bad || it.next().is_some() {
            return Err(Error::Input("the network does not have the trainer's parameter layout".into()));
        }
        Ok(())
    }

    /// The optimizer's state in the layout of [`Optimizer::state`](certify_core::train::Optimizer).
    pub fn optimizer_state(&self) -> Result<OptimizerState<f32>> {
        let mut buffers = Vec::new();
        for b in 0..self.optimizer.buffers() {
            let mut enc =
                self.rt.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("state") });
            let mut reads = Vec::new();
            for node in &self.nodes {
                let Some(p) = node.params() else { continue };
                let n = p.n_weight + p.n_bias;
                let r = self.rt.readback_buffer(n)?;
                enc.copy_buffer_to_buffer(if b == 0 { &p.s1 } else { &p.s2 }, 0, &r, 0, (n * 4) as u64);
                reads.push((r, p.n_weight, p.n_bias));
            }
            self.rt.queue.submit([enc.finish()]);
            let mut tensors = Vec::new();
            for (r, nw, nb) in &reads {
                let v = self.rt.read::<f32>(r, nw + nb)?;
                tensors.push(v[..*nw].to_vec());
                if *nb > 0 {
                    tensors.push(v[*nw..].to_vec());
                }
            }
            buffers.push(tensors);
        }
        let steps = if matches!(self.optimizer, GpuOptimizer::Adam { .. }) { self.opt_steps } else { 0 };
        Ok(OptimizerState { steps, buffers })
    }

    fn workspace(&self, chunk: usize) -> Result<Workspace> {
        let rt = &self.rt;
        let rows = self.penalty_rows();
        let k = self.classes;
        let mut values: Vec<Option<wgpu::Buffer>> = Vec::with_capacity(self.nodes.len());
        let mut winners = Vec::with_capacity(self.nodes.len());
        let mut gates = Vec::with_capacity(self.nodes.len());
        let mut masks = Vec::with_capacity(self.nodes.len());
        let mut kept = Vec::with_capacity(self.nodes.len());
        for (id, n) in self.nodes.iter().enumerate() {
            let v = match (&n.op, id) {
                (_, 0) => Some(rt.storage(chunk * self.input_len, "input chunk")?),
                (Op::Alias, _) => values[id - 1].clone(),
                _ => Some(rt.storage(chunk * n.size, &format!("node `{}`: values", n.name))?),
            };
            values.push(v);
            winners.push(match n.op {
                Op::MaxPool(_) => Some(rt.storage(chunk * n.size, "max-pool winners")?),
                _ => None,
            });
            let block = id >= 2 && self.pooled_block(id - 2) == Some(id);
            gates.push(if rows > 0 && block {
                Some((
                    rt.storage(chunk * n.size, "max-pool gates")?,
                    rt.storage(chunk * n.size, "max-pool winner positions")?,
                ))
            } else {
                None
            });
            masks.push(if n.dropout > 0.0 { Some(rt.storage(chunk * n.size, "dropout mask")?) } else { None });
            kept.push(if rows > 0 && n.params().is_some() {
                Some(rt.storage(chunk * rows * n.size, "penalty cotangents")?)
            } else {
                None
            });
        }
        let widest = self.nodes.iter().map(|n| n.size).max().unwrap_or(1).max(k);
        let ping_len = chunk * rows.max(1) * widest;
        let mut seeds = vec![0f32; chunk * rows * k];
        if !matches!(self.objective.estimate, PenaltyEstimate::Projections(_)) {
            for r in 0..chunk * rows {
                seeds[r * k + r % k] = 1.0;
            }
        }
        Ok(Workspace {
            chunk,
            rows,
            values,
            winners,
            gates,
            masks,
            labels: rt.storage(chunk, "labels")?,
            cot: rt.storage(chunk * k, "logit cotangents")?,
            stats: rt.storage(chunk * 2, "per-sample loss")?,
            ping: [rt.storage(ping_len, "reverse/tangent rows")?, rt.storage(ping_len, "reverse/tangent rows")?],
            kept,
            seeds: rt.upload(&seeds, "penalty seeds")?,
            rowsq: rt.storage(chunk * rows, "row norms")?,
        })
    }

    fn batch_buffers(&self, batch: usize) -> Result<BatchBuffers> {
        let rt = &self.rt;
        let rows = self.penalty_rows();
        Ok(BatchBuffers {
            batch,
            x: rt.storage(batch * self.input_len, "mini-batch")?,
            labels: rt.storage(batch, "mini-batch labels")?,
            projections: rt.storage(batch * rows * self.classes, "projection vectors")?,
            stats: rt.storage(batch * 2, "mini-batch loss")?,
            rowsq: rt.storage(batch * rows, "mini-batch row norms")?,
            read_stats: rt.readback_buffer(batch * 2)?,
            read_rowsq: rt.readback_buffer(batch * rows)?,
        })
    }

    /// One training step on the mini-batch `x` (`[batch, D]`) with `labels`: dropout, the
    /// objective's value and exact gradient, one optimizer update; the same step as
    /// [`Trainer::step`](certify_core::train::Trainer::step) up to f32 summation order (and with
    /// counter-based dropout masks).
    ///
    /// Errors without changing the weights when the data or labels are bad, or with
    /// [`certify_core::Error::NonFiniteLoss`] (as [`Error::Core`]) when the loss or a gradient
    /// is not finite.
    pub fn step(&mut self, x: &[f32], labels: &[usize]) -> Result<ObjectiveStats> {
        let b = labels.len();
        let (k, d) = (self.classes, self.input_len);
        if b == 0 {
            return Err(Error::Input("an empty mini-batch".into()));
        }
        if x.len() != b * d {
            return Err(Error::Input(format!("{} values for {b} samples of {d} values each", x.len())));
        }
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(Error::Input(format!("value {i} is not finite (NaN or infinity)")));
        }
        if let Some(&y) = labels.iter().find(|&&y| y >= k) {
            return Err(Error::Input(format!("label {y} is out of range for a model with {k} classes")));
        }
        u32_of(b * self.nodes.iter().map(|n| n.size).max().unwrap_or(1), "values of one node over the mini-batch")?;
        let chunk = self.chunk_size(b)?;
        if self.ws.as_ref().is_none_or(|w| w.chunk != chunk) {
            self.ws = None;
            self.ws = Some(self.workspace(chunk)?);
        }
        if self.bb.as_ref().is_none_or(|bb| bb.batch != b) {
            self.bb = None;
            self.bb = Some(self.batch_buffers(b)?);
        }
        let step = self.steps + 1;
        let rows = self.penalty_rows();
        let penalised = match self.objective.estimate {
            PenaltyEstimate::Subsample(m) if rows > 0 => m.min(b),
            _ if rows > 0 => b,
            _ => 0,
        };
        let (ws, bb) = (self.ws.as_ref().expect("built above"), self.bb.as_ref().expect("built above"));
        let rt = &self.rt;
        let labels32: Vec<u32> = labels.iter().map(|&y| y as u32).collect();
        rt.queue.write_buffer(&bb.x, 0, bytemuck::cast_slice(x));
        rt.queue.write_buffer(&bb.labels, 0, bytemuck::cast_slice(&labels32));
        rt.queue.write_buffer(&self.flag, 0, bytemuck::cast_slice(&[0u32]));
        if let (PenaltyEstimate::Projections(p), true) = (self.objective.estimate, penalised > 0) {
            let mut v = Vec::with_capacity(penalised * p * k);
            for _ in 0..penalised * p {
                v.extend(self.rng.unit_vector(k).into_iter().map(|x| x as f32));
            }
            rt.queue.write_buffer(&bb.projections, 0, bytemuck::cast_slice(&v));
        }
        let ce_scale = match self.objective.form {
            LossForm::Mean => 1.0 / b as f64,
            LossForm::Sum => 1.0,
        } as f32;
        let validation = rt.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = rt.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let mut enc = rt.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("train step") });
        for node in &self.nodes {
            if let Op::Dense { inputs, outputs, params: p } = &node.op {
                let t = p.transposed.as_ref().expect("dense layers have a transposed copy");
                let g = TransposeParams { rows: *outputs, cols: *inputs, ..Default::default() };
                rt.dispatch(&mut enc, &shaders::TRANSPOSE, &g, &[&p.weight, t], p.n_weight)?;
            }
        }
        for (ci, start) in (0..b).step_by(chunk).enumerate() {
            let n = chunk.min(b - start);
            let input = ws.values[0].as_ref().expect("the input buffer exists");
            enc.copy_buffer_to_buffer(&bb.x, (start * d * 4) as u64, input, 0, (n * d * 4) as u64);
            enc.copy_buffer_to_buffer(&bb.labels, (start * 4) as u64, &ws.labels, 0, (n * 4) as u64);
            self.forward(&mut enc, ws, n, start, step)?;
            let logits = ws.values[self.nodes.len() - 1].as_ref().expect("the logits buffer exists");
            rt.dispatch(
                &mut enc,
                &shaders::SOFTMAX_CE,
                &CeParams { batch: n as u32, classes: k as u32, scale: ce_scale, _pad0: 0 },
                &[logits, &ws.labels, &ws.cot, &ws.stats],
                n,
            )?;
            enc.copy_buffer_to_buffer(&ws.stats, 0, &bb.stats, (start * 2 * 4) as u64, (n * 2 * 4) as u64);
            self.reverse(&mut enc, ws, n, 1, &ws.cot, Pass::CrossEntropy { accumulate: ci > 0 })?;
            let pen_n = penalised.saturating_sub(start).min(n);
            if pen_n > 0 {
                let seeds = &ws.seeds;
                if let PenaltyEstimate::Projections(_) = self.objective.estimate {
                    let len = (pen_n * rows * k * 4) as u64;
                    enc.copy_buffer_to_buffer(&bb.projections, (start * rows * k * 4) as u64, seeds, 0, len);
                }
                let g = self.reverse(&mut enc, ws, pen_n, rows, seeds, Pass::Penalty)?;
                rt.dispatch(
                    &mut enc,
                    &shaders::ROW_SUMSQ,
                    &SumsqParams { rows: (pen_n * rows) as u32, len: d as u32, ..Default::default() },
                    &[&ws.ping[g], &ws.rowsq],
                    pen_n * rows,
                )?;
                let len = (pen_n * rows * 4) as u64;
                enc.copy_buffer_to_buffer(&ws.rowsq, 0, &bb.rowsq, (start * rows * 4) as u64, len);
                self.tangent(&mut enc, ws, pen_n, g, start > 0)?;
            }
        }
        enc.copy_buffer_to_buffer(&bb.stats, 0, &bb.read_stats, 0, (b * 2 * 4) as u64);
        if penalised > 0 {
            enc.copy_buffer_to_buffer(&bb.rowsq, 0, &bb.read_rowsq, 0, (penalised * rows * 4) as u64);
        }
        enc.copy_buffer_to_buffer(&self.flag, 0, &self.read_flag, 0, 4);
        rt.profile_resolve(&mut enc);
        rt.queue.submit([enc.finish()]);
        if let Some(e) = pollster::block_on(oom.pop()).or(pollster::block_on(validation.pop())) {
            return Err(Error::Device { during: "running the training kernels".into(), reason: e.to_string() });
        }
        let stats: Vec<f32> = rt.read(&bb.read_stats, b * 2)?;
        let rowsq: Vec<f32> = if penalised > 0 { rt.read(&bb.read_rowsq, penalised * rows)? } else { Vec::new() };
        let flag: Vec<u32> = rt.read(&self.read_flag, 1)?;
        rt.profile_collect()?;
        let non_finite = |what| Error::Core(certify_core::Error::NonFiniteLoss { step, what });
        let ce_sum: f64 = stats.iter().step_by(2).map(|&v| v as f64).sum();
        let correct = stats.iter().skip(1).step_by(2).filter(|&&v| v > 0.5).count();
        if !ce_sum.is_finite() {
            return Err(non_finite("loss"));
        }
        let bf = b as f64;
        let mut out = ObjectiveStats { cross_entropy: ce_sum / bf, batch: b, correct, ..Default::default() };
        // The penalty's value and the factor of its raw gradient Σ_rows ∂‖Jᵀv‖²/∂θ / 2, as
        // Objective::evaluate computes them.
        let mut pen_coef = 0.0f64;
        if penalised > 0 {
            let total: f64 = rowsq.iter().map(|&v| v as f64).sum();
            let scale = match self.objective.estimate {
                PenaltyEstimate::Projections(p) => k as f64 / p as f64,
                _ => 1.0,
            };
            let mf = penalised as f64;
            let sq = scale * total / mf;
            let lambda = self.objective.lambda;
            let (term, coef) = match self.objective.form {
                LossForm::Sum => {
                    let t = bf * sq;
                    (lambda * t.sqrt(), if t > 0.0 { lambda * bf / (2.0 * t.sqrt()) } else { 0.0 })
                }
                LossForm::Mean => (lambda * sq.sqrt(), if sq > 0.0 { lambda / (2.0 * sq.sqrt()) } else { 0.0 }),
            };
            out.penalty_sq = sq;
            out.penalty_term = term;
            pen_coef = 2.0 * scale / mf * coef;
            if !sq.is_finite() {
                return Err(non_finite("loss"));
            }
        }
        out.loss = match self.objective.form {
            LossForm::Mean => ce_sum / bf,
            LossForm::Sum => ce_sum,
        } + out.penalty_term;
        if flag[0] != 0 || !pen_coef.is_finite() {
            return Err(non_finite("gradient"));
        }
        self.update(penalised > 0, pen_coef as f32)?;
        self.steps = step;
        Ok(out)
    }

    /// The training forward pass of `n` samples (batch positions `start..start + n`).
    fn forward(&self, enc: &mut wgpu::CommandEncoder, ws: &Workspace, n: usize, start: usize, step: u64) -> Result<()> {
        let rt = &self.rt;
        for (id, node) in self.nodes.iter().enumerate().skip(1) {
            let x = ws.values[id - 1].as_ref().expect("values exist");
            let y = ws.values[id].as_ref().expect("values exist");
            let len = n * node.size;
            match &node.op {
                Op::Alias => {}
                Op::Conv(geom, p) => {
                    let g = ConvParams { rows: n as u32, ..*geom };
                    rt.dispatch(enc, &shaders::CONV_FORWARD, &g, &[x, &p.weight, p.bias_or(&rt.dummy), y], len)?;
                }
                Op::Dense { inputs, outputs, params: p } => {
                    let m = (n * node.in_size / *inputs as usize) as u32;
                    let g = DenseParams { m, inputs: *inputs, outputs: *outputs, has_bias: p.bias.is_some() as u32 };
                    let wt = p.transposed.as_ref().expect("dense layers have a transposed copy");
                    let blocks = (m as usize).div_ceil(4) * *outputs as usize;
                    rt.dispatch(enc, &shaders::DENSE_FORWARD_T, &g, &[x, wt, p.bias_or(&rt.dummy), y], blocks)?;
                }
                Op::MaxPool(geom) => {
                    let g = PoolParams { rows: n as u32, rows_per_sample: 1, ..*geom };
                    let a = ws.winners[id].as_ref().expect("winners exist");
                    rt.dispatch(enc, &shaders::MAXPOOL_FORWARD, &g, &[x, y, a], len)?;
                }
                Op::AvgPool(geom) => {
                    let g = PoolParams { rows: n as u32, rows_per_sample: 1, ..*geom };
                    rt.dispatch(enc, &shaders::AVGPOOL_FORWARD, &g, &[x, y], len)?;
                }
                Op::Activation(a) => {
                    let g = ActivationParams { n: len as u32, size: node.size as u32, rows_per_sample: 1, ..*a };
                    rt.dispatch(enc, &shaders::ACTIVATION_FORWARD, &g, &[x, y], len)?;
                }
                Op::ScaleShift { scale, shift, inner } => {
                    let g = ScaleShiftParams { n: len as u32, size: node.size as u32, inner: *inner, use_shift: 1 };
                    rt.dispatch(enc, &shaders::SCALE_SHIFT, &g, &[x, scale, shift, y], len)?;
                }
            }
            if let Some(mask) = &ws.masks[id] {
                let g = DropoutParams {
                    n: len as u32,
                    first: u32_of(start * node.size, "dropout values of one mini-batch")?,
                    site: id as u32,
                    threshold: dropout_threshold(node.dropout),
                    seed_lo: self.seed as u32,
                    seed_hi: (self.seed >> 32) as u32,
                    step_lo: step as u32,
                    step_hi: (step >> 32) as u32,
                    keep: (1.0 / (1.0 - node.dropout)) as f32,
                    ..Default::default()
                };
                rt.dispatch(enc, &shaders::DROPOUT, &g, &[y, mask], len)?;
            }
        }
        Ok(())
    }

    /// A reverse pass of `n` samples × `rps` rows from the logit cotangents `seed`: with
    /// [`Pass::CrossEntropy`] it writes (or adds) the parameter gradients into `g_ce` and stops
    /// at the first trainable layer; with [`Pass::Penalty`] it keeps each trainable layer's
    /// output cotangents and returns the ping buffer holding the input gradients.
    fn reverse(
        &self,
        enc: &mut wgpu::CommandEncoder,
        ws: &Workspace,
        n: usize,
        rps: usize,
        seed: &wgpu::Buffer,
        pass: Pass,
    ) -> Result<usize> {
        let rt = &self.rt;
        let rows = n * rps;
        let first_trainable = self.nodes.iter().position(|n| n.params().is_some()).unwrap_or(usize::MAX);
        // `cur`: None while the cotangents are still in `seed`, else the ping buffer holding them.
        let mut cur: Option<usize> = None;
        // Nodes from this one up were handled with the block of a later node.
        let mut handled_from = usize::MAX;
        for id in (1..self.nodes.len()).rev() {
            let node = &self.nodes[id];
            if matches!(pass, Pass::CrossEntropy { .. }) && id < first_trainable {
                break;
            }
            if id >= handled_from {
                continue;
            }
            let out_len = rows * node.size;
            let in_len = rows * node.in_size;
            let next = cur.map_or(0, |c| 1 - c);
            if let Some(mask) = &ws.masks[id] {
                let src = cur.map_or(seed, |c| &ws.ping[c]);
                let g = MaskParams { n: out_len as u32, size: node.size as u32, rows_per_sample: rps as u32, _pad0: 0 };
                rt.dispatch(enc, &shaders::MASK_MULTIPLY, &g, &[src, mask, &ws.ping[next]], out_len)?;
                cur = Some(next);
            }
            let dy = cur.map_or(seed, |c| &ws.ping[c]);
            let next = cur.map_or(0, |c| 1 - c);
            let dx = &ws.ping[next];
            let primal = ws.values[id - 1].as_ref().expect("values exist");
            let need_dx = matches!(pass, Pass::Penalty) || id > first_trainable;
            if let (Pass::Penalty, Some(c)) = (pass, id.checked_sub(2).filter(|&c| self.pooled_block(c) == Some(id))) {
                self.reverse_pooled_block(enc, ws, n, rps, c, dy, dx)?;
                handled_from = c;
                cur = Some(next);
                continue;
            }
            match &node.op {
                Op::Alias => continue,
                Op::Conv(geom, p) => {
                    match pass {
                        Pass::CrossEntropy { accumulate } => {
                            self.conv_grad(enc, geom, p, dy, primal, rows, &p.g_ce, accumulate, true)?
                        }
                        Pass::Penalty => {
                            let kept = ws.kept[id].as_ref().expect("kept cotangents exist");
                            enc.copy_buffer_to_buffer(dy, 0, kept, 0, (out_len * 4) as u64);
                        }
                    }
                    if !need_dx {
                        continue;
                    }
                    let g = ConvParams { rows: rows as u32, has_bias: 0, ..*geom };
                    rt.dispatch(enc, &shaders::CONV_BACKWARD, &g, &[dy, &p.weight, dx], in_len)?;
                }
                Op::Dense { inputs, outputs, params: p } => {
                    match pass {
                        Pass::CrossEntropy { accumulate } => {
                            let m = n * node.in_size / *inputs as usize;
                            self.dense_grad(enc, (*inputs, *outputs), p, dy, primal, m, &p.g_ce, accumulate, true)?
                        }
                        Pass::Penalty => {
                            let kept = ws.kept[id].as_ref().expect("kept cotangents exist");
                            enc.copy_buffer_to_buffer(dy, 0, kept, 0, (out_len * 4) as u64);
                        }
                    }
                    if !need_dx {
                        continue;
                    }
                    let m = (rows * node.in_size / *inputs as usize) as u32;
                    let g = DenseParams { m, inputs: *inputs, outputs: *outputs, has_bias: 0 };
                    rt.dispatch(enc, &shaders::DENSE_BACKWARD, &g, &[dy, &p.weight, dx], in_len)?;
                }
                Op::MaxPool(geom) => {
                    let g = PoolParams { rows: rows as u32, rows_per_sample: rps as u32, ..*geom };
                    let a = ws.winners[id].as_ref().expect("winners exist");
                    rt.dispatch(enc, &shaders::MAXPOOL_BACKWARD, &g, &[dy, a, dx], in_len)?;
                }
                Op::AvgPool(geom) => {
                    let g = PoolParams { rows: rows as u32, rows_per_sample: rps as u32, ..*geom };
                    rt.dispatch(enc, &shaders::AVGPOOL_BACKWARD, &g, &[dy, dx], in_len)?;
                }
                Op::Activation(a) => {
                    let g = ActivationParams {
                        n: in_len as u32,
                        size: node.in_size as u32,
                        rows_per_sample: rps as u32,
                        ..*a
                    };
                    rt.dispatch(enc, &shaders::ACTIVATION_BACKWARD, &g, &[dy, primal, dx], in_len)?;
                }
                Op::ScaleShift { scale, shift, inner } => {
                    let g =
                        ScaleShiftParams { n: in_len as u32, size: node.in_size as u32, inner: *inner, use_shift: 0 };
                    rt.dispatch(enc, &shaders::SCALE_SHIFT, &g, &[dy, scale, shift, dx], in_len)?;
                }
            }
            cur = Some(next);
        }
        match cur {
            Some(c) => Ok(c),
            None => {
                // A network whose every layer is an alias: the input gradients are the seeds.
                enc.copy_buffer_to_buffer(seed, 0, &ws.ping[0], 0, (rows * self.input_len * 4) as u64);
                Ok(0)
            }
        }
    }

    /// The tangent pass of the penalty rows from their input gradients (in `ws.ping[g]`): at
    /// each trainable layer, the weight gradient of Σ_rows vᵀ J u (u the row's input gradient,
    /// v its seed) from the kept cotangents and the tangents reaching the layer.
    fn tangent(
        &self,
        enc: &mut wgpu::CommandEncoder,
        ws: &Workspace,
        n: usize,
        g: usize,
        accumulate: bool,
    ) -> Result<()> {
        let rt = &self.rt;
        let rps = ws.rows;
        let rows = n * rps;
        let last_trainable = self.nodes.iter().rposition(|n| n.params().is_some()).unwrap_or(0);
        let mut cur = g;
        // Nodes up to this one were handled with the block of an earlier node.
        let mut handled_to = 0;
        for id in 1..=last_trainable {
            if id <= handled_to {
                continue;
            }
            let node = &self.nodes[id];
            if let Some(pool) = self.pooled_block(id) {
                let (Op::Conv(geom, p), Op::MaxPool(pg)) = (&node.op, &self.nodes[pool].op) else {
                    unreachable!("pooled_block checks the layer kinds")
                };
                let kept = ws.kept[id].as_ref().expect("kept cotangents exist");
                let (gates, winners) = ws.gates[pool].as_ref().expect("gates exist");
                let mut gp = PooledConvParams::new(geom, pg);
                gp.rows = rows as u32;
                gp.rows_per_sample = rps as u32;
                let (splits, split_rows) = self.splits(p.n_weight, rows, p);
                gp.splits = splits as u32;
                gp.split_rows = split_rows as u32;
                let t = &ws.ping[cur];
                rt.dispatch(
                    enc,
                    &shaders::CONV_WEIGHT_GRAD_POOLED,
                    &gp,
                    &[kept, winners, t, &p.partial],
                    splits * p.n_weight,
                )?;
                self.reduce(enc, p, p.n_weight, splits, &p.g_pen, accumulate)?;
                if id == last_trainable {
                    break;
                }
                let out_len = rows * self.nodes[pool].size;
                rt.dispatch(
                    enc,
                    &shaders::CONV_FORWARD_POOLED,
                    &gp,
                    &[t, &p.weight, gates, winners, &ws.ping[1 - cur]],
                    out_len,
                )?;
                cur = 1 - cur;
                if let Some(mask) = &ws.masks[pool] {
                    let size = self.nodes[pool].size as u32;
                    let mp = MaskParams { n: out_len as u32, size, rows_per_sample: rps as u32, _pad0: 0 };
                    rt.dispatch(enc, &shaders::MASK_MULTIPLY, &mp, &[&ws.ping[cur], mask, &ws.ping[1 - cur]], out_len)?;
                    cur = 1 - cur;
                }
                handled_to = pool;
                continue;
            }
            let out_len = rows * node.size;
            let t = &ws.ping[cur];
            let y = &ws.ping[1 - cur];
            let primal = ws.values[id - 1].as_ref().expect("values exist");
            match &node.op {
                Op::Alias => {}
                Op::Conv(geom, p) => {
                    let kept = ws.kept[id].as_ref().expect("kept cotangents exist");
                    self.conv_grad(enc, geom, p, kept, t, rows, &p.g_pen, accumulate, false)?;
                    if id == last_trainable {
                        break;
                    }
                    let gp = ConvParams { rows: rows as u32, has_bias: 0, ..*geom };
                    rt.dispatch(enc, &shaders::CONV_FORWARD, &gp, &[t, &p.weight, &rt.dummy, y], out_len)?;
                    cur = 1 - cur;
                }
                Op::Dense { inputs, outputs, params: p } => {
                    let kept = ws.kept[id].as_ref().expect("kept cotangents exist");
                    let m = rows * node.in_size / *inputs as usize;
                    self.dense_grad(enc, (*inputs, *outputs), p, kept, t, m, &p.g_pen, accumulate, false)?;
                    if id == last_trainable {
                        break;
                    }
                    let gp = DenseParams { m: m as u32, inputs: *inputs, outputs: *outputs, has_bias: 0 };
                    let wt = p.transposed.as_ref().expect("dense layers have a transposed copy");
                    let blocks = m.div_ceil(4) * *outputs as usize;
                    rt.dispatch(enc, &shaders::DENSE_FORWARD_T, &gp, &[t, wt, &rt.dummy, y], blocks)?;
                    cur = 1 - cur;
                }
                Op::MaxPool(geom) => {
                    let gp = PoolParams { rows: rows as u32, rows_per_sample: rps as u32, ..*geom };
                    let a = ws.winners[id].as_ref().expect("winners exist");
                    rt.dispatch(enc, &shaders::MAXPOOL_TANGENT, &gp, &[t, a, y], out_len)?;
                    cur = 1 - cur;
                }
                Op::AvgPool(geom) => {
                    let gp = PoolParams { rows: rows as u32, rows_per_sample: rps as u32, ..*geom };
                    rt.dispatch(enc, &shaders::AVGPOOL_FORWARD, &gp, &[t, y], out_len)?;
                    cur = 1 - cur;
                }
                Op::Activation(a) => {
                    // The derivative is diagonal: the tangent is the reverse kernel's product.
                    let gp = ActivationParams {
                        n: out_len as u32,
                        size: node.size as u32,
                        rows_per_sample: rps as u32,
                        ..*a
                    };
                    rt.dispatch(enc, &shaders::ACTIVATION_BACKWARD, &gp, &[t, primal, y], out_len)?;
                    cur = 1 - cur;
                }
                Op::ScaleShift { scale, shift, inner } => {
                    let gp =
                        ScaleShiftParams { n: out_len as u32, size: node.size as u32, inner: *inner, use_shift: 0 };
                    rt.dispatch(enc, &shaders::SCALE_SHIFT, &gp, &[t, scale, shift, y], out_len)?;
                    cur = 1 - cur;
                }
            }
            if let Some(mask) = &ws.masks[id] {
                let gp =
                    MaskParams { n: out_len as u32, size: node.size as u32, rows_per_sample: rps as u32, _pad0: 0 };
                rt.dispatch(enc, &shaders::MASK_MULTIPLY, &gp, &[&ws.ping[cur], mask, &ws.ping[1 - cur]], out_len)?;
                cur = 1 - cur;
            }
        }
        Ok(())
    }

    /// The max pool ending the conv → activation → max pool block that starts at node `c`, if
    /// one does (no dropout inside it). The penalty passes run such a block at the pool's
    /// winners: its Jacobian sends the convolution's output to the pooled cells through the
    /// winners times the activation's derivative there, so the convolution is needed only at
    /// the winners (a quarter of its outputs for 2×2 pooling).
    fn pooled_block(&self, c: usize) -> Option<usize> {
        let (conv, act, pool) = (self.nodes.get(c)?, self.nodes.get(c + 1)?, self.nodes.get(c + 2)?);
        // Winner positions are packed as oy << 16 | ox.
        let kinds = matches!(&conv.op, Op::Conv(g, _) if g.ho < 1 << 16 && g.wo < 1 << 16)
            && matches!(act.op, Op::Activation(_))
            && matches!(pool.op, Op::MaxPool(_));
        (kinds && conv.dropout == 0.0 && act.dropout == 0.0).then_some(c + 2)
    }

    /// The penalty's reverse pass through the block of [`pooled_block`](Self::pooled_block)
    /// starting at conv node `c`, from the pooled cotangents `dy` (`n` samples × `rps` rows):
    /// the gates of the chunk's samples, the gated cotangents kept for the tangent pass
    /// (`ws.kept[c]`, pooled), and the input gradients into `dx`.
    #[allow(clippy::too_many_arguments)]
    fn reverse_pooled_block(
        &self,
        enc: &mut wgpu::CommandEncoder,
        ws: &Workspace,
        n: usize,
        rps: usize,
        c: usize,
        dy: &wgpu::Buffer,
        dx: &wgpu::Buffer,
    ) -> Result<()> {
        let rt = &self.rt;
        let pool = c + 2;
        let (Op::Conv(geom, p), Op::Activation(a), Op::MaxPool(pg)) =
            (&self.nodes[c].op, &self.nodes[c + 1].op, &self.nodes[pool].op)
        else {
            unreachable!("pooled_block checks the layer kinds")
        };
        let size = self.nodes[pool].size;
        let rows = n * rps;
        let winners = ws.winners[pool].as_ref().expect("winners exist");
        let (gates, positions) = ws.gates[pool].as_ref().expect("gates exist");
        let kept = ws.kept[c].as_ref().expect("kept cotangents exist");
        let pre = ws.values[c].as_ref().expect("values exist");
        let gp = GateParams {
            n: (n * size) as u32,
            out_size: size as u32,
            in_size: self.nodes[c].size as u32,
            kind: a.kind,
            alpha: a.alpha,
            lo: a.lo,
            hi: a.hi,
            w: pg.w,
            in_hw: pg.h * pg.w,
            pooled_hw: pg.ho * pg.wo,
            ..Default::default()
        };
        rt.dispatch(enc, &shaders::MAXPOOL_GATE, &gp, &[pre, winners, gates, positions], n * size)?;
        let mp = MaskParams { n: (rows * size) as u32, size: size as u32, rows_per_sample: rps as u32, _pad0: 0 };
        rt.dispatch(enc, &shaders::MASK_MULTIPLY, &mp, &[dy, gates, kept], rows * size)?;
        let mut cp = PooledConvParams::new(geom, pg);
        cp.rows = rows as u32;
        cp.rows_per_sample = rps as u32;
        rt.dispatch(
            enc,
            &shaders::CONV_BACKWARD_POOLED,
            &cp,
            &[kept, positions, &p.weight, dx],
            rows * self.nodes[c].in_size,
        )
    }

    /// `target (+)= Σ_rows` the convolution's parameter gradient from output cotangents `dy`
    /// and inputs `x` (`rows` rows each), biases too when `with_bias`.
    #[allow(clippy::too_many_arguments)]
    fn conv_grad(
        &self,
        enc: &mut wgpu::CommandEncoder,
        geom: &ConvParams,
        p: &Params,
        dy: &wgpu::Buffer,
        x: &wgpu::Buffer,
        rows: usize,
        target: &wgpu::Buffer,
        accumulate: bool,
        with_bias: bool,
    ) -> Result<()> {
        let has_bias = with_bias && p.bias.is_some();
        let np = p.n_weight + if has_bias { p.n_bias } else { 0 };
        let (splits, split_rows) = self.splits(np, rows, p);
        let g = ConvParams {
            rows: rows as u32,
            has_bias: has_bias as u32,
            splits: splits as u32,
            split_rows: split_rows as u32,
            ..*geom
        };
        self.rt.dispatch(enc, &shaders::CONV_WEIGHT_GRAD, &g, &[dy, x, &p.partial], splits * np)?;
        self.reduce(enc, p, np, splits, target, accumulate)
    }

    /// As [`conv_grad`](Self::conv_grad) for a dense layer over `m` matrix rows.
    #[allow(clippy::too_many_arguments)]
    fn dense_grad(
        &self,
        enc: &mut wgpu::CommandEncoder,
        (inputs, outputs): (u32, u32),
        p: &Params,
        dy: &wgpu::Buffer,
        x: &wgpu::Buffer,
        m: usize,
        target: &wgpu::Buffer,
        accumulate: bool,
        with_bias: bool,
    ) -> Result<()> {
        let has_bias = with_bias && p.bias.is_some();
        let np = p.n_weight + if has_bias { p.n_bias } else { 0 };
        let (splits, split_rows) = self.splits(np, m, p);
        let g = DenseGradParams {
            m: m as u32,
            inputs,
            outputs,
            has_bias: has_bias as u32,
            splits: splits as u32,
            split_rows: split_rows as u32,
            ..Default::default()
        };
        self.rt.dispatch(enc, &shaders::DENSE_WEIGHT_GRAD, &g, &[dy, x, &p.partial], splits * np)?;
        self.reduce(enc, p, np, splits, target, accumulate)
    }

    /// Splits of `rows` for a gradient of `np` parameters: enough invocations to fill the
    /// device, within the partial-sum buffer.
    fn splits(&self, np: usize, rows: usize, p: &Params) -> (usize, usize) {
        let cap = (p.partial.size() as usize / 4) / np.max(1);
        let want = self.grad_threads.div_ceil(np.max(1)).clamp(1, rows.max(1)).min(cap.max(1));
        let split_rows = rows.div_ceil(want).max(1);
        (rows.div_ceil(split_rows).max(1), split_rows)
    }

    fn reduce(
        &self,
        enc: &mut wgpu::CommandEncoder,
        p: &Params,
        np: usize,
        splits: usize,
        target: &wgpu::Buffer,
        accumulate: bool,
    ) -> Result<()> {
        let g = ReduceParams { n: np as u32, splits: splits as u32, accumulate: accumulate as u32, _pad0: 0 };
        self.rt.dispatch(enc, &shaders::REDUCE_PARTIALS, &g, &[&p.partial, target, &self.flag], np)
    }

    /// One optimizer update of every trainable layer with `d = g_ce + pen_coef·g_pen`.
    fn update(&mut self, has_pen: bool, pen_coef: f32) -> Result<()> {
        let mut g = OptParams { has_pen: has_pen as u32, pen_coef, ..Default::default() };
        match self.optimizer {
            GpuOptimizer::Sgd { lr, momentum } => {
                g.kind = if momentum == 0.0 { 0 } else { 1 };
                g.lr = lr;
                g.momentum = momentum;
            }
            GpuOptimizer::Adam { lr, beta1, beta2, eps } => {
                let (b1t, b2t) = (self.beta_t.0 * beta1, self.beta_t.1 * beta2);
                g.kind = 2;
                g.lr = lr;
                g.beta1 = beta1;
                g.beta2 = beta2;
                g.eps = eps;
                g.step_size = lr / (1.0 - b1t);
                g.sqrt_c2 = (1.0 - b2t).sqrt();
                self.beta_t = (b1t, b2t);
            }
            GpuOptimizer::RmsProp { lr, alpha, eps } => {
                g.kind = 3;
                g.lr = lr;
                g.alpha = alpha;
                g.eps = eps;
            }
        }
        self.opt_steps += 1;
        let rt = &self.rt;
        let validation = rt.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let mut enc = rt.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("update") });
        for node in &self.nodes {
            let Some(p) = node.params() else { continue };
            let n = p.n_weight + p.n_bias;
            let gp = OptParams { n: n as u32, n_weight: p.n_weight as u32, freeze_weight: node.frozen as u32, ..g };
            rt.dispatch(
                &mut enc,
                &shaders::OPTIMIZER_STEP,
                &gp,
                &[&p.weight, p.bias_or(&rt.dummy), &p.g_ce, &p.g_pen, &p.s1, &p.s2],
                n,
            )?;
        }
        rt.profile_resolve(&mut enc);
        rt.queue.submit([enc.finish()]);
        if let Some(e) = pollster::block_on(validation.pop()) {
            return Err(Error::Device { during: "updating the weights".into(), reason: e.to_string() });
        }
        rt.profile_collect()?;
        rt.check_lost()
    }
}

/// Which reverse pass runs.
#[derive(Clone, Copy)]
enum Pass {
    /// The cross-entropy's parameter gradient (added to earlier chunks' when `accumulate`).
    CrossEntropy { accumulate: bool },
    /// The penalty rows' input gradients, keeping each trainable layer's output cotangents.
    Penalty,
}

impl Node {
    fn params(&self) -> Option<&Params> {
        match &self.op {
            Op::Conv(_, p) | Op::Dense { params: p, .. } => Some(p),
            _ => None,
        }
    }
}

impl Params {
    fn bias_or<'a>(&'a self, dummy: &'a wgpu::Buffer) -> &'a wgpu::Buffer {
        self.bias.as_ref().unwrap_or(dummy)
    }
}
