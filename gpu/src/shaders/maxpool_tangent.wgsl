// Max pooling, tangent (forward-mode) pass at fixed winners: one invocation per output value of
// each tangent row; the output takes the tangent of its window's winner (recorded by
// maxpool_forward on the row's sample), 0 for a window without input cells. Rows
// r·rows_per_sample .. (r+1)·rows_per_sample − 1 belong to sample r.

// `PoolParams` is in params/pool.wgsl, prepended by shaders.rs.

@group(0) @binding(0) var<uniform> p: PoolParams;
@group(0) @binding(1) var<storage, read> t: array<f32>;
@group(0) @binding(2) var<storage, read> arg: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn maxpool_tangent(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 64u;
    let out_size = p.channels * p.ho * p.wo;
    if (idx >= p.rows * out_size) {
        return;
    }
    let r = idx / out_size;
    let o = idx % out_size;
    let a = arg[(r / p.rows_per_sample) * out_size + o];
    var v = 0.0;
    if (a != 0xffffffffu) {
        v = t[r * p.channels * p.h * p.w + a];
    }
    y[idx] = v;
}
