// Max pooling, forward: one invocation per output value; also records the winner (the first
// maximum in row-major scan order, padding excluded) as a per-sample flat index, or 0xffffffff for
// a window that holds no input cell.

// `PoolParams` is in params/pool.wgsl, prepended by shaders.rs.

@group(0) @binding(0) var<uniform> p: PoolParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> arg: array<u32>;

@compute @workgroup_size(64)
fn maxpool_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
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
    let base = ch * p.h * p.w;
    let xbase = r * p.channels * p.h * p.w;
    var best = 0xffffffffu;
    var bv = 0.0;
    for (var yy = ya; yy < yb; yy++) {
        for (var xx = xa; xx < xb; xx++) {
            let i = base + yy * p.w + xx;
            let v = x[xbase + i];
            if (best == 0xffffffffu || v > bv) {
                best = i;
                bv = v;
            }
        }
    }
    y[idx] = bv;
    arg[idx] = best;
}
