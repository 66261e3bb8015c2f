// The uniform parameters of the kernels that run a convolution followed by an elementwise
// activation and a max pool "at the winners" (prepended to each by shaders.rs; the host-side twin
// is `shaders::PooledConvParams`). The first fields are the convolution's (as `ConvParams`); the
// `pool_*` fields describe the max pool over the convolution's output ([out_channels, ho, wo] →
// [out_channels, pool_ho, pool_wo]); rows r·rows_per_sample .. (r+1)·rows_per_sample − 1 belong
// to sample r, whose winners and gates the kernels read.

struct PooledConvParams {
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
    splits: u32,
    split_rows: u32,
    rows_per_sample: u32,
    pool_ho: u32,
    pool_wo: u32,
    pool_kh: u32,
    pool_kw: u32,
    pool_stride_y: u32,
    pool_stride_x: u32,
    pool_pad_top: u32,
    pool_pad_left: u32,
    _pad0: u32,
}

