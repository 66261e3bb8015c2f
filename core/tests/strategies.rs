//! Shared strategies: random specifications of small networks, one strategy per layer kind, and
//! a deterministic builder that turns a specification into a `Network<f64>` and inputs.
//!
//! Structure (kernel sizes, strides, paddings, permutations, …) comes from proptest so that it
//! shrinks and is printed on failure; weights and inputs come from a small seeded generator so a
//! failing case is reproducible from its printed `seed`.

use certify_core::{Affine, BatchNorm, Conv2d, Dense, Layer, Network, NodeId, Pad, Pool2d};
use proptest::prelude::*;
use proptest::test_runner::Config;

/// The proptest configuration of every property: `PROPTEST_CASES` (and the other `PROPTEST_*`
/// variables) are respected; without it each property runs 64 cases so the suite stays fast.
pub fn config() -> Config {
    let mut c = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = 64;
    }
    c
}

/// SplitMix64: a tiny deterministic generator for weights and inputs.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator with the given seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        lo + (hi - lo) * u
    }

    /// `n` values uniform in `[lo, hi)`.
    pub fn vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }

    /// `n` weights for a layer with `fan_in` inputs per output (scaled to keep values O(1)).
    pub fn weights(&mut self, n: usize, fan_in: usize) -> Vec<f64> {
        let s = 1.5 / (fan_in.max(1) as f64).sqrt();
        self.vec(n, -s, s)
    }
}

/// Parameters of a convolution; channel counts come from the input it is applied to.
#[derive(Clone, Debug)]
pub struct ConvSpec {
    /// Output channels per group.
    pub out_per_group: usize,
    /// Wanted groups (the largest divisor of the input channels not above it is used).
    pub groups: usize,
    /// Kernel `[h, w]`.
    pub kernel: [usize; 2],
    /// Stride `[h, w]`.
    pub stride: [usize; 2],
    /// Padding `[top, left, bottom, right]`.
    pub padding: [usize; 4],
    /// Dilation `[h, w]`.
    pub dilation: [usize; 2],
    /// Whether there is a bias.
    pub bias: bool,
}

/// Parameters of a pooling layer (clamped to the input when applied).
#[derive(Clone, Debug)]
pub struct PoolSpec {
    /// Window `[h, w]`.
    pub kernel: [usize; 2],
    /// Stride `[h, w]`.
    pub stride: [usize; 2],
    /// Padding `[top, left, bottom, right]`, clamped below the window.
    pub padding: [usize; 4],
    /// ONNX `ceil_mode`.
    pub ceil_mode: bool,
    /// Average pooling: whether padded cells count in the divisor.
    pub count_include_pad: bool,
}

/// One building block of a test network; every block maps a `[C, H, W]` tensor to another
/// `[C', H', W']` tensor.
#[derive(Clone, Debug)]
pub enum Block {
    /// A 1×1 convolution with bias to `out` channels (mixes the channels so that the layer
    /// under test sees a dense function of the input).
    Mix { out: usize },
    /// `Conv2d`.
    Conv(ConvSpec),
    /// `MaxPool2d`.
    MaxPool(PoolSpec),
    /// `AvgPool2d`.
    AvgPool(PoolSpec),
    /// `GlobalAvgPool`.
    GlobalAvgPool,
    /// `Dense` on the last axis.
    Dense { outputs: usize, bias: bool },
    /// `Add`: `h + h` when `same`, else the residual `h + conv3×3(h)`.
    Add { same: bool },
    /// `Affine` with random per-element constants.
    Affine,
    /// `BatchNorm` with random statistics.
    BatchNorm,
    /// `Relu`.
    Relu,
    /// `LeakyRelu`.
    LeakyRelu { alpha: f64 },
    /// `Sigmoid`.
    Sigmoid,
    /// `Tanh`.
    Tanh,
    /// `Clip`.
    Clip { min: f64, max: f64 },
    /// `Reshape` to another rank-3 shape of the same size: `[H, W, C]`, `[1, C·H, W]` or
    /// `[C, 1, H·W]` (`variant` 0, 1, 2).
    Reshape { variant: usize },
    /// `Concat` along `axis` of `h` and a second branch (a 1×1 convolution, padded by `extra`
    /// along the axis when it is spatial), and `h` again when `three`.
    Concat { axis: usize, extra: usize, three: bool },
    /// `Pad`.
    Pad { begin: [usize; 3], end: [usize; 3], value: f64 },
    /// `Transpose`.
    Transpose { perm: Vec<usize> },
    /// `Identity`.
    Identity,
}

/// The layer kinds of `certify_core::Layer` (all but `Input`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Conv2d,
    MaxPool2d,
    AvgPool2d,
    GlobalAvgPool,
    Dense,
    Add,
    Affine,
    BatchNorm,
    Relu,
    LeakyRelu,
    Sigmoid,
    Tanh,
    Clip,
    Reshape,
    Concat,
    Pad,
    Transpose,
    Identity,
}

/// Every kind.
pub const ALL_KINDS: [Kind; 18] = [
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
    Kind::Sigmoid,
    Kind::Tanh,
    Kind::Clip,
    Kind::Reshape,
    Kind::Concat,
    Kind::Pad,
    Kind::Transpose,
    Kind::Identity,
];

fn pair(lo: usize, hi: usize) -> impl Strategy<Value = [usize; 2]> {
    [lo..=hi, lo..=hi]
}

fn quad(lo: usize, hi: usize) -> impl Strategy<Value = [usize; 4]> {
    [lo..=hi, lo..=hi, lo..=hi, lo..=hi]
}

/// Convolutions: kernels 1–3, strides 1–2, paddings 0–2, dilations 1–2, 1–2 groups.
pub fn conv_spec() -> impl Strategy<Value = ConvSpec> {
    (1..=3usize, 1..=2usize, pair(1, 3), pair(1, 2), quad(0, 2), pair(1, 2), any::<bool>()).prop_map(
        |(out_per_group, groups, kernel, stride, padding, dilation, bias)| ConvSpec {
            out_per_group,
            groups,
            kernel,
            stride,
            padding,
            dilation,
            bias,
        },
    )
}

/// Pooling windows 1–3 with strides 1–3, paddings 0–2, both rounding modes, both divisors.
pub fn pool_spec() -> impl Strategy<Value = PoolSpec> {
    (pair(1, 3), pair(1, 3), quad(0, 2), any::<bool>(), any::<bool>()).prop_map(
        |(kernel, stride, padding, ceil_mode, count_include_pad)| PoolSpec {
            kernel,
            stride,
            padding,
            ceil_mode,
            count_include_pad,
        },
    )
}

/// The strategy of one layer kind.
pub fn block(kind: Kind) -> BoxedStrategy<Block> {
    match kind {
        Kind::Conv2d => conv_spec().prop_map(Block::Conv).boxed(),
        Kind::MaxPool2d => pool_spec().prop_map(Block::MaxPool).boxed(),
        Kind::AvgPool2d => pool_spec().prop_map(Block::AvgPool).boxed(),
        Kind::GlobalAvgPool => Just(Block::GlobalAvgPool).boxed(),
        Kind::Dense => (1..=4usize, any::<bool>()).prop_map(|(outputs, bias)| Block::Dense { outputs, bias }).boxed(),
        Kind::Add => any::<bool>().prop_map(|same| Block::Add { same }).boxed(),
        Kind::Affine => Just(Block::Affine).boxed(),
        Kind::BatchNorm => Just(Block::BatchNorm).boxed(),
        Kind::Relu => Just(Block::Relu).boxed(),
        Kind::LeakyRelu => (-0.5..1.5f64).prop_map(|alpha| Block::LeakyRelu { alpha }).boxed(),
        Kind::Sigmoid => Just(Block::Sigmoid).boxed(),
        Kind::Tanh => Just(Block::Tanh).boxed(),
        Kind::Clip => {
            (-1.0..0.2f64, 0.1..1.0f64).prop_map(|(min, width)| Block::Clip { min, max: min + width }).boxed()
        }
        Kind::Reshape => (0..3usize).prop_map(|variant| Block::Reshape { variant }).boxed(),
        Kind::Concat => (0..3usize, 1..=2usize, any::<bool>())
            .prop_map(|(axis, extra, three)| Block::Concat { axis, extra, three })
            .boxed(),
        Kind::Pad => ([0..=2usize, 0..=2, 0..=2], [0..=2usize, 0..=2, 0..=2], -1.0..1.0f64)
            .prop_map(|(begin, end, value)| Block::Pad { begin, end, value })
            .boxed(),
        Kind::Transpose => Just(vec![0usize, 1, 2]).prop_shuffle().prop_map(|perm| Block::Transpose { perm }).boxed(),
        Kind::Identity => Just(Block::Identity).boxed(),
    }
}

/// A block of any kind.
pub fn any_block() -> BoxedStrategy<Block> {
    proptest::sample::select(ALL_KINDS.to_vec()).prop_flat_map(block).boxed()
}

/// A whole test network: per-sample input shape, blocks, number of logits, weight seed. The
/// builder appends a flattening `Reshape` and a `Dense` layer to `classes` logits.
#[derive(Clone, Debug)]
pub struct Case {
    /// Per-sample input shape `[C, H, W]`.
    pub input: Vec<usize>,
    /// The blocks, in order.
    pub blocks: Vec<Block>,
    /// Logits `K`.
    pub classes: usize,
    /// Seed of weights and inputs.
    pub seed: u64,
}

/// Small image inputs `[C, H, W]`: 1–3 channels, 5–7 pixels a side.
pub fn input_shape() -> impl Strategy<Value = Vec<usize>> {
    (1..=3usize, 5..=7usize, 5..=7usize).prop_map(|(c, h, w)| vec![c, h, w])
}

/// A network testing one layer kind: a channel mix, the layer, then the logits.
pub fn kind_case(kind: Kind) -> impl Strategy<Value = Case> {
    (input_shape(), 1..=3usize, block(kind), 3..=5usize, any::<u64>()).prop_map(|(input, mix, b, classes, seed)| Case {
        input,
        blocks: vec![Block::Mix { out: mix }, b],
        classes,
        seed,
    })
}

/// A network of 1–5 blocks of random kinds after a channel mix.
pub fn random_case() -> impl Strategy<Value = Case> {
    (input_shape(), 1..=3usize, prop::collection::vec(any_block(), 1..=5), 3..=5usize, any::<u64>()).prop_map(
        |(input, mix, rest, classes, seed)| {
            let mut blocks = vec![Block::Mix { out: mix }];
            blocks.extend(rest);
            Case { input, blocks, classes, seed }
        },
    )
}

/// Builds the network of a case (deterministic in the case).
pub fn build(case: &Case) -> Network<f64> {
    let mut rng = Rng::new(case.seed);
    let mut net = Network::<f64>::new(&case.input).expect("input shape");
    for b in &case.blocks {
        apply(&mut net, b, &mut rng);
    }
    let n: usize = net.output_shape().iter().product();
    let last = net.output();
    let flat = push(&mut net, Layer::Reshape { shape: vec![n] }, &[last]);
    let dense = Dense {
        weight: rng.weights(case.classes * n, n),
        bias: Some(rng.vec(case.classes, -0.5, 0.5)),
        inputs: n,
        outputs: case.classes,
    };
    push(&mut net, Layer::Dense(dense), &[flat]);
    net
}

/// `batch` inputs for the network of a case, uniform in `[-1, 1)` (from a stream independent of
/// the weights).
pub fn inputs(case: &Case, net: &Network<f64>, batch: usize) -> Vec<f64> {
    Rng::new(case.seed ^ 0x5DEE_CE66_D1CE_5EED).vec(batch * net.input_len(), -1.0, 1.0)
}

fn push(net: &mut Network<f64>, layer: Layer<f64>, inputs: &[NodeId]) -> NodeId {
    let name = format!("n{}_{}", net.nodes().len(), layer.kind());
    match net.push(name, layer.clone(), inputs) {
        Ok(id) => id,
        Err(e) => panic!("test network construction failed: {e}\nlayer: {layer:?}\nnetwork: {:?}", net.nodes()),
    }
}

/// Reduces dilation, then the kernel, until the dilated window fits `size + pads`.
fn fit_conv_axis(size: usize, pads: usize, kernel: &mut usize, dilation: &mut usize) {
    while *dilation * (*kernel - 1) + 1 > size + pads {
        if *dilation > 1 {
            *dilation = 1;
        } else {
            *kernel -= 1;
        }
    }
}

fn conv(
    c_in: usize,
    out: usize,
    groups: usize,
    geometry: ([usize; 2], [usize; 2], [usize; 4], [usize; 2]),
    bias: bool,
    rng: &mut Rng,
) -> Layer<f64> {
    let (kernel, stride, padding, dilation) = geometry;
    let fan_in = c_in / groups * kernel[0] * kernel[1];
    Layer::Conv2d(Conv2d {
        weight: rng.weights(out * fan_in, fan_in),
        bias: if bias { Some(rng.vec(out, -0.5, 0.5)) } else { None },
        out_channels: out,
        in_channels: c_in,
        kernel,
        stride,
        padding,
        dilation,
        groups,
    })
}

fn pool(p: &PoolSpec, h: usize, w: usize) -> Pool2d {
    let kernel = [p.kernel[0].min(h), p.kernel[1].min(w)];
    let padding = [
        p.padding[0].min(kernel[0] - 1),
        p.padding[1].min(kernel[1] - 1),
        p.padding[2].min(kernel[0] - 1),
        p.padding[3].min(kernel[1] - 1),
    ];
    Pool2d { kernel, stride: p.stride, padding, ceil_mode: p.ceil_mode, count_include_pad: p.count_include_pad }
}

/// Appends one block to the network, adapting its parameters to the current output shape.
pub fn apply(net: &mut Network<f64>, block: &Block, rng: &mut Rng) {
    let last = net.output();
    let shape = net.output_shape().to_vec();
    let (c, h, w) = (shape[0], shape[1], shape[2]);
    let n = c * h * w;
    match block {
        Block::Mix { out } => {
            let layer = conv(c, *out, 1, ([1, 1], [1, 1], [0; 4], [1, 1]), true, rng);
            push(net, layer, &[last]);
        }
        Block::Conv(s) => {
            let groups = (1..=s.groups).rev().find(|g| c % g == 0).unwrap_or(1);
            let (mut kernel, mut dilation) = (s.kernel, s.dilation);
            fit_conv_axis(h, s.padding[0] + s.padding[2], &mut kernel[0], &mut dilation[0]);
            fit_conv_axis(w, s.padding[1] + s.padding[3], &mut kernel[1], &mut dilation[1]);
            let layer = conv(c, groups * s.out_per_group, groups, (kernel, s.stride, s.padding, dilation), s.bias, rng);
            push(net, layer, &[last]);
        }
        Block::MaxPool(p) => {
            push(net, Layer::MaxPool2d(pool(p, h, w)), &[last]);
        }
        Block::AvgPool(p) => {
            push(net, Layer::AvgPool2d(pool(p, h, w)), &[last]);
        }
        Block::GlobalAvgPool => {
            push(net, Layer::GlobalAvgPool, &[last]);
        }
        Block::Dense { outputs, bias } => {
            let d = Dense {
                weight: rng.weights(outputs * w, w),
                bias: if *bias { Some(rng.vec(*outputs, -0.5, 0.5)) } else { None },
                inputs: w,
                outputs: *outputs,
            };
            push(net, Layer::Dense(d), &[last]);
        }
        Block::Add { same } => {
            if *same {
                push(net, Layer::Add, &[last, last]);
            } else {
                let layer = conv(c, c, 1, ([3, 3], [1, 1], [1; 4], [1, 1]), true, rng);
                let branch = push(net, layer, &[last]);
                push(net, Layer::Add, &[last, branch]);
            }
        }
        Block::Affine => {
            let a = Affine { scale: rng.vec(n, -1.5, 1.5), shift: rng.vec(n, -0.5, 0.5) };
            push(net, Layer::Affine(a), &[last]);
        }
        Block::BatchNorm => {
            let b = BatchNorm {
                gamma: rng.vec(c, -1.5, 1.5),
                beta: rng.vec(c, -0.5, 0.5),
                mean: rng.vec(c, -0.5, 0.5),
                var: rng.vec(c, 0.5, 2.0),
                epsilon: 1e-5,
            };
            push(net, Layer::BatchNorm(b), &[last]);
        }
        Block::Relu => {
            push(net, Layer::Relu, &[last]);
        }
        Block::LeakyRelu { alpha } => {
            push(net, Layer::LeakyRelu { alpha: *alpha }, &[last]);
        }
        Block::Sigmoid => {
            push(net, Layer::Sigmoid, &[last]);
        }
        Block::Tanh => {
            push(net, Layer::Tanh, &[last]);
        }
        Block::Clip { min, max } => {
            push(net, Layer::Clip { min: *min, max: *max }, &[last]);
        }
        Block::Reshape { variant } => {
            let shape = match variant {
                0 => vec![h, w, c],
                1 => vec![1, c * h, w],
                _ => vec![c, 1, h * w],
            };
            push(net, Layer::Reshape { shape }, &[last]);
        }
        Block::Concat { axis, extra, three } => {
            let out = if *axis == 0 { *extra } else { c };
            let layer = conv(c, out, 1, ([1, 1], [1, 1], [0; 4], [1, 1]), true, rng);
            let mut branch = push(net, layer, &[last]);
            if *axis != 0 {
                let mut begin = vec![0; 3];
                let mut end = vec![0; 3];
                begin[*axis] = extra / 2;
                end[*axis] = extra - extra / 2;
                let value = rng.uniform(-1.0, 1.0);
                branch = push(net, Layer::Pad(Pad { begin, end, value }), &[branch]);
            }
            let inputs: &[NodeId] = if *three { &[last, branch, last] } else { &[last, branch] };
            push(net, Layer::Concat { axis: *axis }, inputs);
        }
        Block::Pad { begin, end, value } => {
            push(net, Layer::Pad(Pad { begin: begin.to_vec(), end: end.to_vec(), value: *value }), &[last]);
        }
        Block::Transpose { perm } => {
            push(net, Layer::Transpose { perm: perm.clone() }, &[last]);
        }
        Block::Identity => {
            push(net, Layer::Identity, &[last]);
        }
    }
}
