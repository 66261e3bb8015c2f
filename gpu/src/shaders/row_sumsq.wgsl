// Squared norm of each row: out[r] = Σ_j g[r·len + j]² (one invocation per row).

struct SumsqParams {
    rows: u32,
    len: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: SumsqParams;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn row_sumsq(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = gid.x + gid.y * nwg.x * 64u;
    if (r >= p.rows) {
        return;
    }
    var acc = 0.0;
    for (var j = 0u; j < p.len; j++) {
        let v = g[r * p.len + j];
        acc += v * v;
    }
    out[r] = acc;
}
