// Average pooling, input gradient: one invocation per input value of each cotangent row, summing
// dy / window_count over every window that holds the cell.

// `PoolParams` is in params/pool.wgsl, prepended by shaders.rs.

@group(0) @binding(0) var<uniform> p: PoolParams;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;

// The divisor of window (oy, ox): the cells inside the image, or with count_include_pad the cells
// inside the padded extent.
fn window_count(oy: u32, ox: u32) -> u32 {
    let y0 = i32(oy * p.stride_y) - i32(p.pad_top);
    let x0 = i32(ox * p.stride_x) - i32(p.pad_left);
    let y1 = y0 + i32(p.kh);
    let x1 = x0 + i32(p.kw);
    if (p.count_include_pad != 0u) {
        let yl = min(y1, i32(p.h + p.pad_bottom)) - y0;
        let xl = min(x1, i32(p.w + p.pad_right)) - x0;
        return u32(yl * xl);
    }
    let ya = max(y0, 0);
    let yb = max(min(y1, i32(p.h)), ya);
    let xa = max(x0, 0);
    let xb = max(min(x1, i32(p.w)), xa);
    return u32((yb - ya) * (xb - xa));
}

@compute @workgroup_size(64)
fn avgpool_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
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
    let out_size = p.channels * p.ho * p.wo;
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
            let count = window_count(oy, ox);
            if (count != 0u) {
                acc += dy[r * out_size + (ch * p.ho + oy) * p.wo + ox] / f32(count);
            }
        }
    }
    dx[idx] = acc;
}
