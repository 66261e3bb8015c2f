// Average pooling, forward: one invocation per output value (the sum over the window's cells
// inside the image divided by window_count; 0 for a window with divisor 0).

// `PoolParams` is in params/pool.wgsl, prepended by shaders.rs.

@group(0) @binding(0) var<uniform> p: PoolParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

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
fn avgpool_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 64u;
    let out_size = p.channels * p.ho * p.wo;
    if (idx >= p.rows * out_size) {
        return;
    }
    let r = idx / out_size;
    let rem = idx % out_size;
    let ch = rem / (p.ho * p.wo);
    let pos = rem % (p.ho * p.wo);
    let oy = pos / p.wo;
    let ox = pos % p.wo;
    let y0 = i32(oy * p.stride_y) - i32(p.pad_top);
    let x0 = i32(ox * p.stride_x) - i32(p.pad_left);
    let ya = u32(max(y0, 0));
    let yb = u32(max(min(y0 + i32(p.kh), i32(p.h)), 0));
    let xa = u32(max(x0, 0));
    let xb = u32(max(min(x0 + i32(p.kw), i32(p.w)), 0));
    let xbase = r * p.channels * p.h * p.w + ch * p.h * p.w;
    var s = 0.0;
    for (var yy = ya; yy < yb; yy++) {
        for (var xx = xa; xx < xb; xx++) {
            s += x[xbase + yy * p.w + xx];
        }
    }
    let count = window_count(oy, ox);
    if (count == 0u) {
        y[idx] = 0.0;
    } else {
        y[idx] = s / f32(count);
    }
}
