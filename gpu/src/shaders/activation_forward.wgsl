// Pointwise activation, forward: kind 0 ReLU max(x, 0), 1 LeakyReLU (x > 0 ? x : alpha·x),
// 2 Clip min(max(x, lo), hi).

struct ActivationParams {
    n: u32,
    size: u32,
    rows_per_sample: u32,
    kind: u32,
    alpha: f32,
    lo: f32,
    hi: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: ActivationParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn activation_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 64u;
    if (idx >= p.n) {
        return;
    }
    let v = x[idx];
    var res = v;
    if (p.kind == 0u) {
        res = select(0.0, v, v > 0.0);
    } else if (p.kind == 1u) {
        res = select(p.alpha * v, v, v > 0.0);
    } else {
        res = min(max(v, p.lo), p.hi);
    }
    y[idx] = res;
}
