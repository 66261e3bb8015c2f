// Matrix transpose: one invocation per value, out[j, i] = a[i, j] for a of shape [rows, cols].

struct TransposeParams {
    rows: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: TransposeParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn transpose(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 64u;
    if (idx >= p.rows * p.cols) {
        return;
    }
    let j = idx / p.rows;
    let i = idx % p.rows;
    out[idx] = a[i * p.cols + j];
}
