// Max pooling, input gradient: one invocation per input value of each cotangent row; sums the
// cotangents of every window whose recorded winner (from maxpool_forward on the row's sample) is
// this cell. Rows r·rows_per_sample .. (r+1)·rows_per_sample − 1 belong to sample r.

// `PoolParams` is in params/pool.wgsl, prepended by shaders.rs.

@group(0) @binding(0) var<uniform> p: PoolParams;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> arg: array<u32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(64)
fn maxpool_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 64u;
    let in_size = p.channels * p.h * p.w;
    if (idx >= p.rows * in_size) {
        return;
    }
    let r = idx / in_size;
    let cell = idx % in_size;
    let ch = cell / (p.h * p.w);
    let pos = cell % (p.h * p.w);
    let iy = pos / p.w;
    let ix = pos % p.w;
    let s = r / p.rows_per_sample;
    let out_size = p.channels * p.ho * p.wo;
    // Windows oy with oy·sy − pad_top ≤ iy < oy·sy − pad_top + kh.
    let ty = iy + p.pad_top;
    let tx = ix + p.pad_left;
    var oy_lo = 0u;
    if (ty >= p.kh) {
        oy_lo = (ty - p.kh) / p.stride_y + 1u;
    }
    let oy_hi = min(ty / p.stride_y + 1u, p.ho);
    var ox_lo = 0u;
    if (tx >= p.kw) {
        ox_lo = (tx - p.kw) / p.stride_x + 1u;
    }
    let ox_hi = min(tx / p.stride_x + 1u, p.wo);
    var acc = 0.0;
    for (var oy = oy_lo; oy < oy_hi; oy++) {
        for (var ox = ox_lo; ox < ox_hi; ox++) {
            let o = (ch * p.ho + oy) * p.wo + ox;
            if (arg[s * out_size + o] == cell) {
                acc += dy[r * out_size + o];
            }
        }
    }
    dx[idx] = acc;
}
