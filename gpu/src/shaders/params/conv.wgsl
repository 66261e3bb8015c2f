// The uniform parameters shared by the conv kernels (prepended to each by shaders.rs; the
// host-side twin is `shaders::ConvParams`).

struct ConvParams {
    rows: u32,
    in_channels: u32,
    h: u32,
    w: u32,
    out_channels: u32,
    ho: u32,
    wo: u32,
    kh: u32,
    kw: u32,
    stride_y: u32,
    stride_x: u32,
    pad_top: u32,
    pad_left: u32,
    dil_y: u32,
    dil_x: u32,
    groups: u32,
    has_bias: u32,
    splits: u32,
    split_rows: u32,
    _pad0: u32,
}

