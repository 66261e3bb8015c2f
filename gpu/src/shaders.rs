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

/// Every kernel, in a fixed order.
pub const ALL: [Kernel; 12] = [
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
    /// 1 when the bias is added (forward only).
    pub has_bias: u32,
    /// Padding to a multiple of 16 bytes.
    pub _pad0: u32,
    /// Padding.
    pub _pad1: u32,
    /// Padding.
    pub _pad2: u32,
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
            _pad0,
            _pad1,
            _pad2
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
    ]
}
