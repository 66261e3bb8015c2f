// The uniform parameters shared by the pool kernels (prepended to each by shaders.rs; the
// host-side twin is `shaders::PoolParams`).

struct PoolParams {
    rows: u32,
    channels: u32,
    h: u32,
    w: u32,
    ho: u32,
    wo: u32,
    kh: u32,
    kw: u32,
    stride_y: u32,
    stride_x: u32,
    pad_top: u32,
    pad_left: u32,
    pad_bottom: u32,
    pad_right: u32,
    count_include_pad: u32,
    rows_per_sample: u32,
}

