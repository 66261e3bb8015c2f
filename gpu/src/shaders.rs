//! The WGSL kernels (one file and one entry point each, under `src/shaders/`) and the host-side
//! layouts of their uniform parameter structs.
//!
//! Every kernel runs one invocation per output value with `@workgroup_size(64)`, over a grid of
//! `(x, y)` workgroups whose linear index is `x + y·num_workgroups.x` (so that more than 65,535
//! workgroups fit); invocations past the end return at once.

use bytemuck::{Pod, Zeroable};

/// One kernel: its file name, WGSL source and entry point (equal to the file stem).
#[derive(Clone, Copy, Debug)]
pub struct Kernel {
    /// The entry point, which is also the file stem under `src/shaders/`.
    pub name: &'static str,
    /// The WGSL source.
    pub source: &'static str,
    /// The name of the uniform struct the kernel reads at `@group(0) @binding(0)`.
    pub uniform: &'static str,
}

macro_rules! kernel {
    ($name:literal, $uniform:literal) => {
        Kernel { name: $name, source: include_str!(concat!("shaders/", $name, ".wgsl")), uniform: $uniform }
    };
    // A kernel whose uniform struct is shared: `shaders/params/<prelude>.wgsl` goes first.
    ($name:literal, $uniform:literal, $prelude:literal) => {
        Kernel {
            name: $name,
            source: concat!(
                include_str!(concat!("shaders/params/", $prelude, ".wgsl")),
                include_str!(concat!("shaders/", $name, ".wgsl"))
            ),
            uniform: $uniform,
        }
    };
}

/// Convolution forward.
pub const CONV_FORWARD: Kernel = kernel!("conv_forward", "ConvParams", "conv");
/// Convolution input gradient.
pub const CONV_BACKWARD: Kernel = kernel!("conv_backward", "ConvParams", "conv");
/// Dense forward.
pub const DENSE_FORWARD: Kernel = kernel!("dense_forward", "DenseParams");
/// Dense input gradient.
pub const DENSE_BACKWARD: Kernel = kernel!("dense_backward", "DenseParams");
/// Max pooling forward (values and winners).
pub const MAXPOOL_FORWARD: Kernel = kernel!("maxpool_forward", "PoolParams", "pool");
/// Max pooling input gradient.
pub const MAXPOOL_BACKWARD: Kernel = kernel!("maxpool_backward", "PoolParams", "pool");
/// Average pooling forward.
pub const AVGPOOL_FORWARD: Kernel = kernel!("avgpool_forward", "PoolParams", "pool");
/// Average pooling input gradient.
pub const AVGPOOL_BACKWARD: Kernel = kernel!("avgpool_backward", "PoolParams", "pool");
/// ReLU / LeakyReLU / Clip forward.
pub const ACTIVATION_FORWARD: Kernel = kernel!("activation_forward", "ActivationParams");
/// ReLU / LeakyReLU / Clip input gradient.
pub const ACTIVATION_BACKWARD: Kernel = kernel!("activation_backward", "ActivationParams");
/// Affine and BatchNorm (forward with shift, reverse without).
pub const SCALE_SHIFT: Kernel = kernel!("scale_shift", "ScaleShiftParams");
/// Elementwise sum.
pub const ADD: Kernel = kernel!("add", "AddParams");

/// Convolution parameter gradient (per split of the rows).
pub const CONV_WEIGHT_GRAD: Kernel = kernel!("conv_weight_grad", "ConvParams", "conv");
/// Dense parameter gradient (per split of the rows).
pub const DENSE_WEIGHT_GRAD: Kernel = kernel!("dense_weight_grad", "DenseGradParams");
/// Sum of per-split partial gradients, with a non-finite flag.
pub const REDUCE_PARTIALS: Kernel = kernel!("reduce_partials", "ReduceParams");
/// Max pooling tangent at fixed winners.
pub const MAXPOOL_TANGENT: Kernel = kernel!("maxpool_tangent", "PoolParams", "pool");
/// Rows times their sample's dropout mask.
pub const MASK_MULTIPLY: Kernel = kernel!("mask_multiply", "MaskParams");
/// Counter-based inverted dropout (mask and thinned values).
pub const DROPOUT: Kernel = kernel!("dropout", "DropoutParams");
/// Softmax cross-entropy: logit cotangents and per-sample loss / correctness.
pub const SOFTMAX_CE: Kernel = kernel!("softmax_ce", "CeParams");
/// Squared norm of each row.
pub const ROW_SUMSQ: Kernel = kernel!("row_sumsq", "SumsqParams");
/// SGD / SGD with momentum / Adam / RMSProp update.
pub const OPTIMIZER_STEP: Kernel = kernel!("optimizer_step", "OptParams");
/// Max pool gates: the activation's derivative at each pooled cell's winner.
pub const MAXPOOL_GATE: Kernel = kernel!("maxpool_gate", "GateParams");
/// Tangent of conv → activation → max pool, the convolution evaluated at the winners only.
pub const CONV_FORWARD_POOLED: Kernel = kernel!("conv_forward_pooled", "PooledConvParams", "conv_pool");
/// Input gradient of conv → activation → max pool from gated pooled cotangents.
pub const CONV_BACKWARD_POOLED: Kernel = kernel!("conv_backward_pooled", "PooledConvParams", "conv_pool");
/// Weight gradient of conv → activation → max pool from gated pooled cotangents (per split).
pub const CONV_WEIGHT_GRAD_POOLED: Kernel = kernel!("conv_weight_grad_pooled", "PooledConvParams", "conv_pool");
/// Dense forward from transposed weights.
pub const DENSE_FORWARD_T: Kernel = kernel!("dense_forward_t", "DenseParams");
/// Matrix transpose.
pub const TRANSPOSE: Kernel = kernel!("transpose", "TransposeParams");

/// The kernels of batched certification.
pub const CERTIFY: [Kernel; 12] = [
    CONV_FORWARD,
    CONV_BACKWARD,
    DENSE_FORWARD,
    DENSE_BACKWARD,
    MAXPOOL_FORWARD,
    MAXPOOL_BACKWARD,
    AVGPOOL_FORWARD,
    AVGPOOL_BACKWARD,
    ACTIVATION_FORWARD,
    ACTIVATION_BACKWARD,
    SCALE_SHIFT,
    ADD,
];

/// The kernels of training (forward, reverse and tangent passes, gradients, optimizers).
pub const TRAIN: [Kernel; 24] = [
    MAXPOOL_GATE,
    CONV_FORWARD_POOLED,
    CONV_BACKWARD_POOLED,
    CONV_WEIGHT_GRAD_POOLED,
    DENSE_FORWARD_T,
    TRANSPOSE,
    CONV_FORWARD,
    CONV_BACKWARD,
    CONV_WEIGHT_GRAD,
    DENSE_BACKWARD,
    DENSE_WEIGHT_GRAD,
    MAXPOOL_FORWARD,
    MAXPOOL_BACKWARD,
    MAXPOOL_TANGENT,
    AVGPOOL_FORWARD,
    AVGPOOL_BACKWARD,
    ACTIVATION_BACKWARD,
    ACTIVATION_FORWARD,
    REDUCE_PARTIALS,
    MASK_MULTIPLY,
    DROPOUT,
    SOFTMAX_CE,
    ROW_SUMSQ,
    OPTIMIZER_STEP,
];

/// Every kernel, in a fixed order.
pub const ALL: [Kernel; 27] = [
    CONV_FORWARD,
    CONV_BACKWARD,
    DENSE_FORWARD,
    DENSE_BACKWARD,
    MAXPOOL_FORWARD,
    MAXPOOL_BACKWARD,
    AVGPOOL_FORWARD,
    AVGPOOL_BACKWARD,
    ACTIVATION_FORWARD,
    ACTIVATION_BACKWARD,
    SCALE_SHIFT,
    ADD,
    CONV_WEIGHT_GRAD,
    DENSE_WEIGHT_GRAD,
    REDUCE_PARTIALS,
    MAXPOOL_TANGENT,
    MASK_MULTIPLY,
    DROPOUT,
    SOFTMAX_CE,
    ROW_SUMSQ,
    OPTIMIZER_STEP,
    MAXPOOL_GATE,
    CONV_FORWARD_POOLED,
    CONV_BACKWARD_POOLED,
    CONV_WEIGHT_GRAD_POOLED,
    DENSE_FORWARD_T,
    TRANSPOSE,
];

/// Workgroup size of every kernel (`@workgroup_size(64)`).
pub const WORKGROUP: u32 = 64;

/// `ConvParams` of `conv_forward` / `conv_backward`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ConvParams {
    /// Rows (samples, or cotangent rows in the reverse pass).
    pub rows: u32,
    /// Input channels (all groups).
    pub in_channels: u32,
    /// Input height.
    pub h: u32,
    /// Input width.
    pub w: u32,
    /// Output channels (all groups).
    pub out_channels: u32,
    /// Output height.
    pub ho: u32,
    /// Output width.
    pub wo: u32,
    /// Kernel height.
    pub kh: u32,
    /// Kernel width.
    pub kw: u32,
    /// Vertical stride.
    pub stride_y: u32,
    /// Horizontal stride.
    pub stride_x: u32,
    /// Zero rows above.
    pub pad_top: u32,
    /// Zero columns on the left.
    pub pad_left: u32,
    /// Vertical dilation.
    pub dil_y: u32,
    /// Horizontal dilation.
    pub dil_x: u32,
    /// Groups.
    pub groups: u32,
    /// 1 when the bias is added (forward) or its gradient computed (`conv_weight_grad`).
    pub has_bias: u32,
    /// `conv_weight_grad`: splits of the rows (one partial sum each).
    pub splits: u32,
    /// `conv_weight_grad`: rows per split.
    pub split_rows: u32,
    /// Padding to a multiple of 16 bytes.
    pub _pad0: u32,
}

/// `DenseParams` of `dense_forward` / `dense_backward`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct DenseParams {
    /// Matrix rows: rows × the per-sample leading axes.
    pub m: u32,
    /// Input features.
    pub inputs: u32,
    /// Output features.
    pub outputs: u32,
    /// 1 when the bias is added (forward only).
    pub has_bias: u32,
}

/// `PoolParams` of the max and average pooling kernels.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PoolParams {
    /// Rows (samples, or cotangent rows in the reverse pass).
    pub rows: u32,
    /// Channels.
    pub channels: u32,
    /// Input height.
    pub h: u32,
    /// Input width.
    pub w: u32,
    /// Output height.
    pub ho: u32,
    /// Output width.
    pub wo: u32,
    /// Window height.
    pub kh: u32,
    /// Window width.
    pub kw: u32,
    /// Vertical stride.
    pub stride_y: u32,
    /// Horizontal stride.
    pub stride_x: u32,
    /// Padding above.
    pub pad_top: u32,
    /// Padding on the left.
    pub pad_left: u32,
    /// Padding below.
    pub pad_bottom: u32,
    /// Padding on the right.
    pub pad_right: u32,
    /// Average pooling: 1 when padded cells count in the divisor.
    pub count_include_pad: u32,
    /// Reverse pass: cotangent rows per sample (`K`); 1 in the forward pass.
    pub rows_per_sample: u32,
}

/// `ActivationParams` of `activation_forward` / `activation_backward`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct ActivationParams {
    /// Values in the buffer (rows × size).
    pub n: u32,
    /// Values per row.
    pub size: u32,
    /// Reverse pass: cotangent rows per sample; 1 in the forward pass.
    pub rows_per_sample: u32,
    /// 0 ReLU, 1 LeakyReLU, 2 Clip.
    pub kind: u32,
    /// LeakyReLU slope.
    pub alpha: f32,
    /// Clip lower limit.
    pub lo: f32,
    /// Clip upper limit.
    pub hi: f32,
    /// Padding to 32 bytes.
    pub _pad0: u32,
}

/// `ScaleShiftParams` of `scale_shift`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ScaleShiftParams {
    /// Values in the buffer (rows × size).
    pub n: u32,
    /// Values per row.
    pub size: u32,
    /// Consecutive values sharing one constant (1 for Affine, H·W for BatchNorm).
    pub inner: u32,
    /// 1 to add the shift (forward), 0 for the linear part (reverse).
    pub use_shift: u32,
}

/// `AddParams` of `add`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct AddParams {
    /// Values in each buffer.
    pub n: u32,
    /// Padding to 16 bytes.
    pub _pad0: u32,
    /// Padding.
    pub _pad1: u32,
    /// Padding.
    pub _pad2: u32,
}

/// `DenseGradParams` of `dense_weight_grad`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct DenseGradParams {
    /// Matrix rows summed over.
    pub m: u32,
    /// Input features.
    pub inputs: u32,
    /// Output features.
    pub outputs: u32,
    /// 1 to compute the bias gradient too.
    pub has_bias: u32,
    /// Splits of the rows (one partial sum each).
    pub splits: u32,
    /// Rows per split.
    pub split_rows: u32,
    /// Padding.
    pub _pad0: u32,
    /// Padding.
    pub _pad1: u32,
}

/// `ReduceParams` of `reduce_partials`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ReduceParams {
    /// Values per split (parameters of the layer).
    pub n: u32,
    /// Splits to sum.
    pub splits: u32,
    /// 1 to add to the output's current values.
    pub accumulate: u32,
    /// Padding.
    pub _pad0: u32,
}

/// `MaskParams` of `mask_multiply`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct MaskParams {
    /// Values in the buffer (rows × size).
    pub n: u32,
    /// Values per row.
    pub size: u32,
    /// Rows per sample (the mask has one row per sample).
    pub rows_per_sample: u32,
    /// Padding.
    pub _pad0: u32,
}

/// `DropoutParams` of `dropout`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct DropoutParams {
    /// Values in the chunk (samples × node size).
    pub n: u32,
    /// Mini-batch index of the chunk's first value (first sample × node size).
    pub first: u32,
    /// The dropout site (its node id).
    pub site: u32,
    /// Values whose 32 random bits are below this are dropped: round(rate·2³²).
    pub threshold: u32,
    /// Low 32 bits of the seed.
    pub seed_lo: u32,
    /// High 32 bits of the seed.
    pub seed_hi: u32,
    /// Low 32 bits of the step number.
    pub step_lo: u32,
    /// High 32 bits of the step number.
    pub step_hi: u32,
    /// Scale of kept values, 1/(1 − rate).
    pub keep: f32,
    /// Padding.
    pub _pad0: u32,
    /// Padding.
    pub _pad1: u32,
    /// Padding.
    pub _pad2: u32,
}

/// `CeParams` of `softmax_ce`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct CeParams {
    /// Samples.
    pub batch: u32,
    /// Logits per sample.
    pub classes: u32,
    /// Factor of the cotangents (1/B for the mean form, 1 for the sum form).
    pub scale: f32,
    /// Padding.
    pub _pad0: u32,
}

/// `SumsqParams` of `row_sumsq`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SumsqParams {
    /// Rows.
    pub rows: u32,
    /// Values per row.
    pub len: u32,
    /// Padding.
    pub _pad0: u32,
    /// Padding.
    pub _pad1: u32,
}

/// `OptParams` of `optimizer_step`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct OptParams {
    /// Parameters of the layer (weights then biases).
    pub n: u32,
    /// Weights among them.
    pub n_weight: u32,
    /// 0 SGD, 1 SGD with momentum, 2 Adam, 3 RMSProp.
    pub kind: u32,
    /// 1 to keep the weights (not the biases) fixed.
    pub freeze_weight: u32,
    /// Learning rate.
    pub lr: f32,
    /// Adam β₁.
    pub beta1: f32,
    /// Adam β₂.
    pub beta2: f32,
    /// Adam / RMSProp ε.
    pub eps: f32,
    /// Adam: lr/(1 − β₁ᵗ).
    pub step_size: f32,
    /// Adam: sqrt(1 − β₂ᵗ).
    pub sqrt_c2: f32,
    /// Factor of the penalty gradient.
    pub pen_coef: f32,
    /// SGD momentum.
    pub momentum: f32,
    /// RMSProp smoothing constant.
    pub alpha: f32,
    /// 1 when a penalty gradient is added.
    pub has_pen: u32,
    /// Padding.
    pub _pad0: u32,
    /// Padding.
    pub _pad1: u32,
}

/// `GateParams` of `maxpool_gate`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct GateParams {
    /// Gates to compute: samples × pooled values per sample.
    pub n: u32,
    /// Pooled values per sample.
    pub out_size: u32,
    /// Values per sample of the pool's input (the activation's input).
    pub in_size: u32,
    /// Activation kind, as `ActivationParams::kind` (0 ReLU, 1 LeakyReLU, 2 Clip).
    pub kind: u32,
    /// LeakyReLU slope.
    pub alpha: f32,
    /// Clip bounds.
    pub lo: f32,
    /// Clip bounds.
    pub hi: f32,
    /// The pool's input width.
    pub w: u32,
    /// The pool's input cells per channel (height × width).
    pub in_hw: u32,
    /// Pooled cells per channel.
    pub pooled_hw: u32,
    /// Padding to a multiple of 16 bytes.
    pub _pad0: u32,
    /// Padding.
    pub _pad1: u32,
}

/// `PooledConvParams` of the kernels of conv → activation → max pool at the winners: the
/// convolution's geometry (as [`ConvParams`]) and the max pool's over its output.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PooledConvParams {
    /// Rows (tangent or cotangent rows).
    pub rows: u32,
    /// Input channels (all groups).
    pub in_channels: u32,
    /// Input height.
    pub h: u32,
    /// Input width.
    pub w: u32,
    /// Output channels (all groups).
    pub out_channels: u32,
    /// Convolution output height (the pool's input).
    pub ho: u32,
    /// Convolution output width.
    pub wo: u32,
    /// Kernel height.
    pub kh: u32,
    /// Kernel width.
    pub kw: u32,
    /// Vertical stride.
    pub stride_y: u32,
    /// Horizontal stride.
    pub stride_x: u32,
    /// Zero rows above.
    pub pad_top: u32,
    /// Zero columns on the left.
    pub pad_left: u32,
    /// Vertical dilation.
    pub dil_y: u32,
    /// Horizontal dilation.
    pub dil_x: u32,
    /// Groups.
    pub groups: u32,
    /// `conv_weight_grad_pooled`: splits of the rows (one partial sum each).
    pub splits: u32,
    /// `conv_weight_grad_pooled`: rows per split.
    pub split_rows: u32,
    /// Rows per sample (winners and gates are per sample).
    pub rows_per_sample: u32,
    /// Pooled height.
    pub pool_ho: u32,
    /// Pooled width.
    pub pool_wo: u32,
    /// Pool window height.
    pub pool_kh: u32,
    /// Pool window width.
    pub pool_kw: u32,
    /// Pool vertical stride.
    pub pool_stride_y: u32,
    /// Pool horizontal stride.
    pub pool_stride_x: u32,
    /// Pool zero rows above.
    pub pool_pad_top: u32,
    /// Pool zero columns on the left.
    pub pool_pad_left: u32,
    /// Padding to a multiple of 16 bytes.
    pub _pad0: u32,
}

impl PooledConvParams {
    /// The parameters of convolution `c` followed by max pool `pool` (rows and splits 0).
    pub fn new(c: &ConvParams, pool: &PoolParams) -> Self {
        PooledConvParams {
            rows: 0,
            in_channels: c.in_channels,
            h: c.h,
            w: c.w,
            out_channels: c.out_channels,
            ho: c.ho,
            wo: c.wo,
            kh: c.kh,
            kw: c.kw,
            stride_y: c.stride_y,
            stride_x: c.stride_x,
            pad_top: c.pad_top,
            pad_left: c.pad_left,
            dil_y: c.dil_y,
            dil_x: c.dil_x,
            groups: c.groups,
            splits: 0,
            split_rows: 0,
            rows_per_sample: 1,
            pool_ho: pool.ho,
            pool_wo: pool.wo,
            pool_kh: pool.kh,
            pool_kw: pool.kw,
            pool_stride_y: pool.stride_y,
            pool_stride_x: pool.stride_x,
            pool_pad_top: pool.pad_top,
            pool_pad_left: pool.pad_left,
            _pad0: 0,
        }
    }
}

/// `TransposeParams` of `transpose`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct TransposeParams {
    /// Rows of the input matrix.
    pub rows: u32,
    /// Columns of the input matrix.
    pub cols: u32,
    /// Padding to a multiple of 16 bytes.
    pub _pad0: u32,
    /// Padding.
    pub _pad1: u32,
}

/// The host-side layout of one uniform struct: its WGSL name, size in bytes, and each field's
/// name and byte offset (from `core::mem::offset_of!`), for checking against the shaders.
#[derive(Clone, Debug)]
pub struct HostLayout {
    /// The struct name in WGSL and in Rust.
    pub name: &'static str,
    /// `size_of` the Rust struct.
    pub size: usize,
    /// `(field, offset)` in declaration order.
    pub fields: Vec<(&'static str, usize)>,
}

macro_rules! layout {
    ($t:ident { $($f:ident),* $(,)? }) => {
        HostLayout {
            name: stringify!($t),
            size: core::mem::size_of::<$t>(),
            fields: vec![$((stringify!($f), core::mem::offset_of!($t, $f))),*],
        }
    };
}

/// The layouts of every host uniform struct.
pub fn host_layouts() -> Vec<HostLayout> {
    vec![
        layout!(ConvParams {
            rows,
            in_channels,
            h,
            w,
            out_channels,
            ho,
            wo,
            kh,
            kw,
            stride_y,
            stride_x,
            pad_top,
            pad_left,
            dil_y,
            dil_x,
            groups,
            has_bias,
            splits,
            split_rows,
            _pad0
        }),
        layout!(DenseParams { m, inputs, outputs, has_bias }),
        layout!(PoolParams {
            rows,
            channels,
            h,
            w,
            ho,
            wo,
            kh,
            kw,
            stride_y,
            stride_x,
            pad_top,
            pad_left,
            pad_bottom,
            pad_right,
            count_include_pad,
            rows_per_sample
        }),
        layout!(ActivationParams { n, size, rows_per_sample, kind, alpha, lo, hi, _pad0 }),
        layout!(ScaleShiftParams { n, size, inner, use_shift }),
        layout!(AddParams { n, _pad0, _pad1, _pad2 }),
        layout!(DenseGradParams { m, inputs, outputs, has_bias, splits, split_rows, _pad0, _pad1 }),
        layout!(ReduceParams { n, splits, accumulate, _pad0 }),
        layout!(MaskParams { n, size, rows_per_sample, _pad0 }),
        layout!(DropoutParams {
            n,
            first,
            site,
            threshold,
            seed_lo,
            seed_hi,
            step_lo,
            step_hi,
            keep,
            _pad0,
            _pad1,
            _pad2
        }),
        layout!(CeParams { batch, classes, scale, _pad0 }),
        layout!(SumsqParams { rows, len, _pad0, _pad1 }),
        layout!(OptParams {
            n,
            n_weight,
            kind,
            freeze_weight,
            lr,
            beta1,
            beta2,
            eps,
            step_size,
            sqrt_c2,
            pen_coef,
            momentum,
            alpha,
            has_pen,
            _pad0,
            _pad1
        }),
        layout!(GateParams { n, out_size, in_size, kind, alpha, lo, hi, w, in_hw, pooled_hw, _pad0, _pad1 }),
        layout!(PooledConvParams {
            rows,
            in_channels,
            h,
            w,
            out_channels,
            ho,
            wo,
            kh,
            kw,
            stride_y,
            stride_x,
            pad_top,
            pad_left,
            dil_y,
            dil_x,
            groups,
            splits,
            split_rows,
            rows_per_sample,
            pool_ho,
            pool_wo,
            pool_kh,
            pool_kw,
            pool_stride_y,
            pool_stride_x,
            pool_pad_top,
            pool_pad_left,
            _pad0
        }),
        layout!(TransposeParams { rows, cols, _pad0, _pad1 }),
    ]
}
