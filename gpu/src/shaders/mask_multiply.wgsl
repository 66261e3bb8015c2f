// Multiplies rows by their sample's dropout mask (reverse and tangent passes through a dropout
// site): y[r, i] = x[r, i] · mask[r / rows_per_sample, i].

struct MaskParams {
    n: u32,
    size: u32,
    rows_per_sample: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: MaskParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> mask: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn mask_multiply(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 64u;
    if (idx >= p.n) {
        return;
    }
    let r = idx / p.size;
    let i = idx % p.size;
    y[idx] = x[idx] * mask[(r / p.rows_per_sample) * p.size + i];
}
