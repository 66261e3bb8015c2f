//! Batched logits, exact Jacobians and Prop. 3 / Cor. 2 figures on the GPU.

use certify_bounds::{point_bounds, PointBounds};
use certify_core::{Jacobians, Layer, Network};
use wgpu::util::DeviceExt;

use crate::context::GpuContext;
use crate::error::{Error, Result};
use crate::runtime::{conv_params, pool_params, u32_of, Runtime};
use crate::shaders::{self, ActivationParams, AddParams, ConvParams, DenseParams, PoolParams, ScaleShiftParams};

/// Bytes of GPU memory one chunk of the batch may allocate (all node values, cotangents and
/// read-back buffers together); larger batches run in several chunks.
pub const CHUNK_MEMORY_BYTES: u64 = 1 << 30;

/// How one node runs on the GPU; weights live in device buffers uploaded once.
enum Op {
    Input,
    Conv {
        geom: ConvParams,
        weight: wgpu::Buffer,
        bias: Option<wgpu::Buffer>,
    },
    Dense {
        inputs: u32,
        outputs: u32,
        weight: wgpu::Buffer,
        bias: Option<wgpu::Buffer>,
    },
    MaxPool(PoolParams),
    AvgPool(PoolParams),
    Activation {
        kind: u32,
        alpha: f32,
        lo: f32,
        hi: f32,
    },
    ScaleShift {
        scale: wgpu::Buffer,
        shift: wgpu::Buffer,
        inner: u32,
    },
    Add,
    /// Reshape and Identity: the output is the input buffer.
    Alias,
    /// A node that does not reach the output.
    Dead,
}

struct Step {
    op: Op,
    inputs: Vec<usize>,
    /// Values per sample at the node's output.
    size: usize,
    /// Values per sample at the node's first input.
    in_size: usize,
}

/// A network compiled for the GPU: its weights on the device and one compute pipeline per kernel.
///
/// [`jacobians`](Self::jacobians) runs, per chunk of the batch, one forward pass (batch rows) and
/// one reverse pass whose rows are the `(sample, class)` pairs (`batch·K` rows, seeded with the
/// unit cotangents), exactly as [`Network::jacobian`] does on the CPU; the Jacobian rows are read
/// back, and [`certify`](Self::certify) computes `‖J‖_F`, Prop. 3 and Cor. 2 from them **on the
/// host** with [`certify_bounds::point_bounds`] (f64 accumulation), so the figures are those of
/// the CPU path applied to the GPU's logits and Jacobian. Arithmetic on the device is f32 with a
/// different summation order from the CPU's, so results agree to rounding (the tests check
/// 1e-4 relative), not bit for bit; a ReLU or max-pool decision that sits within rounding of its
/// kink can differ.
pub struct GpuCertifier {
    rt: Runtime,
    steps: Vec<Step>,
    classes: usize,
    input_len: usize,
    chunk: usize,
}

impl std::fmt::Debug for GpuCertifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuCertifier")
            .field("nodes", &self.steps.len())
            .field("classes", &self.classes)
            .field("chunk", &self.chunk)
            .finish()
    }
}

impl GpuCertifier {
    /// Compiles `net` for the device of `ctx`: checks that every node reaching the output has a
    /// GPU kernel ([`Error::Unsupported`] names the first that does not), uploads the weights
    /// once, builds the pipelines, and sizes the chunks of the batch so that no buffer exceeds
    /// the adapter's binding limit ([`Error::TooLarge`] when even one input does not fit).
    pub fn new(ctx: &GpuContext, net: &Network<f32>) -> Result<Self> {
        ctx.check_faults()?;
        let device = ctx.device.clone();
        let max_binding = ctx.max_binding_bytes();
        let nodes = net.nodes();
        // Which nodes reach the output.
        let mut live = vec![false; nodes.len()];
        live[net.output()] = true;
        for id in (0..nodes.len()).rev() {
            if live[id] {
                for &i in &nodes[id].inputs {
                    live[i] = true;
                }
            }
        }
        let upload = |data: &[f32], what: String| -> Result<wgpu::Buffer> {
            let bytes = (data.len().max(1) * 4) as u64;
            if bytes > max_binding {
                return Err(Error::TooLarge { what, bytes, limit: max_binding });
            }
            let contents: &[f32] = if data.is_empty() { &[0.0] } else { data };
            Ok(device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(&what),
                contents: bytemuck::cast_slice(contents),
                usage: wgpu::BufferUsages::STORAGE,
            }))
        };
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let mut steps = Vec::with_capacity(nodes.len());
        for (id, node) in nodes.iter().enumerate() {
            let in_shape: &[usize] = node.inputs.first().map(|&i| nodes[i].shape.as_slice()).unwrap_or(&[]);
            let in_size: usize = in_shape.iter().product();
            let name = &node.name;
            let op = if !live[id] {
                Op::Dead
            } else {
                match &node.layer {
                    Layer::Input => Op::Input,
                    Layer::Conv2d(c) => {
                        let geom = conv_params(c, in_shape, &node.shape)?;
                        Op::Conv {
                            geom,
                            weight: upload(&c.weight, format!("node `{name}`: convolution weights"))?,
                            bias: c.bias.as_ref().map(|b| upload(b, format!("node `{name}`: bias"))).transpose()?,
                        }
                    }
                    Layer::Dense(d) => Op::Dense {
                        inputs: u32_of(d.inputs, "dense inputs")?,
                        outputs: u32_of(d.outputs, "dense outputs")?,
                        weight: upload(&d.weight, format!("node `{name}`: dense weights"))?,
                        bias: d.bias.as_ref().map(|b| upload(b, format!("node `{name}`: bias"))).transpose()?,
                    },
                    Layer::MaxPool2d(p) => Op::MaxPool(pool_params(p, in_shape, &node.shape)?),
                    Layer::AvgPool2d(p) => Op::AvgPool(pool_params(p, in_shape, &node.shape)?),
                    Layer::Relu => Op::Activation { kind: 0, alpha: 0.0, lo: 0.0, hi: 0.0 },
                    Layer::LeakyRelu { alpha } => Op::Activation { kind: 1, alpha: *alpha, lo: 0.0, hi: 0.0 },
                    Layer::Clip { min, max } => Op::Activation { kind: 2, alpha: 0.0, lo: *min, hi: *max },
                    Layer::Affine(a) => Op::ScaleShift {
                        scale: upload(&a.scale, format!("node `{name}`: affine scale"))?,
                        shift: upload(&a.shift, format!("node `{name}`: affine shift"))?,
                        inner: 1,
                    },
                    Layer::BatchNorm(b) => {
                        // The same f32 folding as the CPU path.
                        let (scale, shift) = b.folded();
                        Op::ScaleShift {
                            inner: u32_of(in_size / scale.len().max(1), "batch-norm channel size")?,
                            scale: upload(&scale, format!("node `{name}`: batch-norm scale"))?,
                            shift: upload(&shift, format!("node `{name}`: batch-norm shift"))?,
                        }
                    }
                    Layer::Add => Op::Add,
                    Layer::Reshape { .. } | Layer::Identity => Op::Alias,
                    Layer::GlobalAvgPool
                    | Layer::Sigmoid
                    | Layer::Tanh
                    | Layer::Concat { .. }
                    | Layer::Pad(_)
                    | Layer::Transpose { .. } => {
                        return Err(Error::Unsupported { node: name.clone(), layer: node.layer.kind() })
                    }
                }
            };
            steps.push(Step { op, inputs: node.inputs.clone(), size: node.size(), in_size });
        }
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Device { during: "uploading weights".into(), reason: e.to_string() });
        }
        let rt = Runtime::new(ctx, &shaders::CERTIFY)?;
        ctx.check_faults()?;

        let classes = net.num_classes();
        let input_len = net.input_len();
        // Per input: node values, max-pool winners, K cotangent rows per node, the unit
        // cotangents and the read-back copies.
        let live_sizes: Vec<usize> = steps.iter().filter(|s| !matches!(s.op, Op::Dead)).map(|s| s.size).collect();
        let widest = live_sizes.iter().copied().max().unwrap_or(1).max(input_len) as u64;
        let per_input_bytes = 4
            * ((live_sizes.iter().sum::<usize>() as u64) * (2 + classes as u64)
                + (classes * classes + classes + classes * input_len) as u64);
        let widest_row_bytes = 4 * widest * classes as u64;
        if widest_row_bytes > max_binding {
            let node = nodes.iter().max_by_key(|n| n.size()).map(|n| n.name.clone()).unwrap_or_default();
            return Err(Error::TooLarge {
                what: format!("node `{node}`: the {classes} cotangent rows of one input"),
                bytes: widest_row_bytes,
                limit: max_binding,
            });
        }
        let chunk = ((max_binding / widest_row_bytes).min(CHUNK_MEMORY_BYTES / per_input_bytes.max(1)).max(1)) as usize;
        Ok(GpuCertifier { rt, steps, classes, input_len, chunk })
    }

    /// Inputs per GPU chunk: batches larger than this run in several submissions.
    pub fn chunk_size(&self) -> usize {
        self.chunk
    }

    /// Caps the inputs per chunk at `n` (at least 1), e.g. to bound GPU memory further; the
    /// results do not depend on the chunk size.
    pub fn with_chunk_size(mut self, n: usize) -> Self {
        self.chunk = self.chunk.min(n.max(1));
        self
    }

    /// Logits `K` per input.
    pub fn num_classes(&self) -> usize {
        self.classes
    }

    /// Logits and exact Jacobians of the batch `x` (`[batch, D]`, row-major, finite), in the
    /// layout of [`Network::jacobian`]: `logits [batch, K]`, `jacobian [batch, K, D]` with row
    /// `k` of sample `b` equal to `∇_x z_k(x_b)`, computed on the GPU in f32.
    pub fn jacobians(&self, x: &[f32], batch: usize) -> Result<Jacobians<f32>> {
        let d = self.input_len;
        let k = self.classes;
        let expected = batch.checked_mul(d).ok_or_else(|| Error::Input("batch × D overflows".into()))?;
        if x.len() != expected {
            return Err(Error::Input(format!(
                "{} values for {batch} inputs of {d} values each (expected {expected})",
                x.len()
            )));
        }
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(Error::Input(format!("value {i} is not finite (NaN or infinity)")));
        }
        let mut logits = Vec::with_capacity(batch * k);
        let mut jacobian = Vec::with_capacity(batch * k * d);
        for start in (0..batch).step_by(self.chunk.max(1)) {
            let b = self.chunk.min(batch - start);
            let (l, j) = self.run_chunk(&x[start * d..(start + b) * d], b)?;
            logits.extend_from_slice(&l);
            jacobian.extend_from_slice(&j);
        }
        Ok(Jacobians { batch, classes: k, inputs: d, logits, jacobian })
    }

    /// [`PointBounds`] for every input of the batch: the GPU's logits and Jacobian rows (see
    /// [`jacobians`](Self::jacobians)), then `‖J‖_F`, Prop. 3 and Cor. 2 on the host with
    /// [`certify_bounds::point_bounds`]. These are first-order estimates, not sound certificates.
    pub fn certify(&self, x: &[f32], batch: usize) -> Result<Vec<PointBounds>> {
        if self.classes < 2 {
            return Err(Error::NotAClassifier { classes: self.classes });
        }
        let j = self.jacobians(x, batch)?;
        let d = self.input_len;
        Ok((0..batch).map(|b| point_bounds(j.logits_of(b), j.jacobian_of(b), &x[b * d..(b + 1) * d])).collect())
    }

    /// `slot += g` (or `slot = g` when empty), as the CPU reverse pass accumulates cotangents.
    fn accumulate(
        &self,
        enc: &mut wgpu::CommandEncoder,
        slot: &mut Option<wgpu::Buffer>,
        g: wgpu::Buffer,
        n: usize,
    ) -> Result<()> {
        match slot.take() {
            None => *slot = Some(g),
            Some(acc) => {
                let sum = self.rt.storage(n, "accumulated cotangents")?;
                self.rt.dispatch(
                    enc,
                    &shaders::ADD,
                    &AddParams { n: n as u32, ..Default::default() },
                    &[&acc, &g, &sum],
                    n,
                )?;
                *slot = Some(sum);
            }
        }
        Ok(())
    }

    /// One forward and one `(sample, class)`-row reverse pass for `b ≤ chunk` inputs; returns
    /// the logits `[b, K]` and the Jacobian rows `[b, K, D]`.
    fn run_chunk(&self, x: &[f32], b: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let k = self.classes;
        let d = self.input_len;
        let rows = b * k;
        let n_nodes = self.steps.len();
        let out_id = n_nodes - 1;
        let validation = self.rt.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = self.rt.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let mut enc =
            self.rt.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("certify chunk") });
        let mut values: Vec<Option<wgpu::Buffer>> = vec![None; n_nodes];
        let mut args: Vec<Option<wgpu::Buffer>> = vec![None; n_nodes];
        values[0] = Some(self.rt.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("input batch"),
            contents: bytemuck::cast_slice(x),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        }));
        let value = |values: &Vec<Option<wgpu::Buffer>>, i: usize| -> wgpu::Buffer {
            values[i].clone().expect("inputs of a live node are computed before it")
        };
        // Forward pass over the batch rows.
        for (id, step) in self.steps.iter().enumerate().skip(1) {
            let n = b * step.size;
            let out = match &step.op {
                Op::Dead => continue,
                Op::Input => unreachable!("node 0 is the only input"),
                Op::Alias => value(&values, step.inputs[0]),
                Op::Conv { geom, weight, bias } => {
                    let y = self.rt.storage(n, "convolution output")?;
                    let p = ConvParams { rows: b as u32, ..*geom };
                    let xb = value(&values, step.inputs[0]);
                    self.rt.dispatch(
                        &mut enc,
                        &shaders::CONV_FORWARD,
                        &p,
                        &[&xb, weight, bias.as_ref().unwrap_or(&self.rt.dummy), &y],
                        n,
                    )?;
                    y
                }
                Op::Dense { inputs, outputs, weight, bias } => {
                    let y = self.rt.storage(n, "dense output")?;
                    let m = (b * step.in_size / *inputs as usize) as u32;
                    let p = DenseParams { m, inputs: *inputs, outputs: *outputs, has_bias: bias.is_some() as u32 };
                    let xb = value(&values, step.inputs[0]);
                    self.rt.dispatch(
                        &mut enc,
                        &shaders::DENSE_FORWARD,
                        &p,
                        &[&xb, weight, bias.as_ref().unwrap_or(&self.rt.dummy), &y],
                        n,
                    )?;
                    y
                }
                Op::MaxPool(geom) => {
                    let y = self.rt.storage(n, "max-pool output")?;
                    let a = self.rt.storage(n, "max-pool winners")?;
                    let p = PoolParams { rows: b as u32, rows_per_sample: 1, ..*geom };
                    let xb = value(&values, step.inputs[0]);
                    self.rt.dispatch(&mut enc, &shaders::MAXPOOL_FORWARD, &p, &[&xb, &y, &a], n)?;
                    args[id] = Some(a);
                    y
                }
                Op::AvgPool(geom) => {
                    let y = self.rt.storage(n, "average-pool output")?;
                    let p = PoolParams { rows: b as u32, rows_per_sample: 1, ..*geom };
                    let xb = value(&values, step.inputs[0]);
                    self.rt.dispatch(&mut enc, &shaders::AVGPOOL_FORWARD, &p, &[&xb, &y], n)?;
                    y
                }
                Op::Activation { kind, alpha, lo, hi } => {
                    let y = self.rt.storage(n, "activation output")?;
                    let p = ActivationParams {
                        n: n as u32,
                        size: step.size as u32,
                        rows_per_sample: 1,
                        kind: *kind,
                        alpha: *alpha,
                        lo: *lo,
                        hi: *hi,
                        _pad0: 0,
                    };
                    let xb = value(&values, step.inputs[0]);
                    self.rt.dispatch(&mut enc, &shaders::ACTIVATION_FORWARD, &p, &[&xb, &y], n)?;
                    y
                }
                Op::ScaleShift { scale, shift, inner } => {
                    let y = self.rt.storage(n, "affine output")?;
                    let p = ScaleShiftParams { n: n as u32, size: step.size as u32, inner: *inner, use_shift: 1 };
                    let xb = value(&values, step.inputs[0]);
                    self.rt.dispatch(&mut enc, &shaders::SCALE_SHIFT, &p, &[&xb, scale, shift, &y], n)?;
                    y
                }
                Op::Add => {
                    let y = self.rt.storage(n, "sum")?;
                    let (a, c) = (value(&values, step.inputs[0]), value(&values, step.inputs[1]));
                    self.rt.dispatch(
                        &mut enc,
                        &shaders::ADD,
                        &AddParams { n: n as u32, ..Default::default() },
                        &[&a, &c, &y],
                        n,
                    )?;
                    y
                }
            };
            values[id] = Some(out);
        }
        // Reverse pass over the (sample, class) rows, seeded with the unit cotangents.
        let mut eye = vec![0f32; rows * k];
        for r in 0..rows {
            eye[r * k + r % k] = 1.0;
        }
        let mut grads: Vec<Option<wgpu::Buffer>> = vec![None; n_nodes];
        grads[out_id] = Some(self.rt.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("unit cotangents"),
            contents: bytemuck::cast_slice(&eye),
            // COPY_SRC: for a network that is the identity, these are the Jacobian rows.
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        }));
        for id in (1..n_nodes).rev() {
            let Some(dy) = grads[id].take() else { continue };
            let step = &self.steps[id];
            let first = step.inputs[0];
            let n = rows * step.in_size;
            let dx = match &step.op {
                Op::Dead | Op::Input => continue,
                Op::Alias => dy,
                Op::Add => {
                    self.accumulate(&mut enc, &mut grads[step.inputs[1]], dy.clone(), n)?;
                    dy
                }
                Op::Conv { geom, weight, .. } => {
                    let dx = self.rt.storage(n, "convolution input gradient")?;
                    let p = ConvParams { rows: rows as u32, has_bias: 0, ..*geom };
                    self.rt.dispatch(&mut enc, &shaders::CONV_BACKWARD, &p, &[&dy, weight, &dx], n)?;
                    dx
                }
                Op::Dense { inputs, outputs, weight, .. } => {
                    let dx = self.rt.storage(n, "dense input gradient")?;
                    let m = (rows * step.in_size / *inputs as usize) as u32;
                    let p = DenseParams { m, inputs: *inputs, outputs: *outputs, has_bias: 0 };
                    self.rt.dispatch(&mut enc, &shaders::DENSE_BACKWARD, &p, &[&dy, weight, &dx], n)?;
                    dx
                }
                Op::MaxPool(geom) => {
                    let dx = self.rt.storage(n, "max-pool input gradient")?;
                    let p = PoolParams { rows: rows as u32, rows_per_sample: k as u32, ..*geom };
                    let a = args[id].clone().expect("max-pool winners are recorded in the forward pass");
                    self.rt.dispatch(&mut enc, &shaders::MAXPOOL_BACKWARD, &p, &[&dy, &a, &dx], n)?;
                    dx
                }
                Op::AvgPool(geom) => {
                    let dx = self.rt.storage(n, "average-pool input gradient")?;
                    let p = PoolParams { rows: rows as u32, rows_per_sample: k as u32, ..*geom };
                    self.rt.dispatch(&mut enc, &shaders::AVGPOOL_BACKWARD, &p, &[&dy, &dx], n)?;
                    dx
                }
                Op::Activation { kind, alpha, lo, hi } => {
                    let dx = self.rt.storage(n, "activation input gradient")?;
                    let p = ActivationParams {
                        n: n as u32,
                        size: step.in_size as u32,
                        rows_per_sample: k as u32,
                        kind: *kind,
                        alpha: *alpha,
                        lo: *lo,
                        hi: *hi,
                        _pad0: 0,
                    };
                    let primal = value(&values, first);
                    self.rt.dispatch(&mut enc, &shaders::ACTIVATION_BACKWARD, &p, &[&dy, &primal, &dx], n)?;
                    dx
                }
                Op::ScaleShift { scale, shift, inner } => {
                    let dx = self.rt.storage(n, "affine input gradient")?;
                    let p = ScaleShiftParams { n: n as u32, size: step.in_size as u32, inner: *inner, use_shift: 0 };
                    self.rt.dispatch(&mut enc, &shaders::SCALE_SHIFT, &p, &[&dy, scale, shift, &dx], n)?;
                    dx
                }
            };
            self.accumulate(&mut enc, &mut grads[first], dx, n)?;
        }
        // An input that does not reach the output has a zero Jacobian (fresh buffers are zero).
        let jac = match grads[0].take() {
            Some(g) => g,
            None => self.rt.storage(rows * d, "zero Jacobian")?,
        };
        let logits = value(&values, out_id);
        let read_logits = self.rt.readback_buffer(b * k)?;
        let read_jac = self.rt.readback_buffer(rows * d)?;
        enc.copy_buffer_to_buffer(&logits, 0, &read_logits, 0, (b * k * 4) as u64);
        enc.copy_buffer_to_buffer(&jac, 0, &read_jac, 0, (rows * d * 4) as u64);
        self.rt.queue.submit([enc.finish()]);
        let oom = pollster::block_on(oom.pop());
        let validation = pollster::block_on(validation.pop());
        if let Some(e) = oom.or(validation) {
            return Err(Error::Device { during: "running the certification kernels".into(), reason: e.to_string() });
        }
        let l = self.rt.read(&read_logits, b * k)?;
        let j = self.rt.read(&read_jac, rows * d)?;
        Ok((l, j))
    }
}
