// Elementwise affine map y = x · scale[c] + (use_shift ? shift[c] : 0) with c = (i mod size) / inner:
// inner = 1 for Affine (per-element constants), inner = H·W for inference BatchNorm (per channel).
// With use_shift = 0 it is the layer's linear part, which is also its own adjoint (the reverse pass).

struct ScaleShiftParams {
    n: u32,
    size: u32,
    inner: u32,
    use_shift: u32,
}

@group(0) @binding(0) var<uniform> p: ScaleShiftParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> scale: array<f32>;
@group(0) @binding(3) var<storage, read> shift: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn scale_shift(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 64u;
    if (idx >= p.n) {
        return;
    }
    let c = (idx % p.size) / p.inner;
    var v = x[idx] * scale[c];
    if (p.use_shift != 0u) {
        v += shift[c];
    }
    y[idx] = v;
}
