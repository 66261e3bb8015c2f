// Pointwise activation, input gradient: dx = dy · f'(primal) where primal is the activation's input
// for the row's sample (rows r·rows_per_sample .. belong to sample r). Derivatives as the CPU
// reference: ReLU 1 for x > 0 else 0; LeakyReLU 1 for x > 0 else alpha; Clip 1 for lo < x < hi else 0.

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
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> primal: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(64)
fn activation_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 64u;
    if (idx >= p.n) {
        return;
    }
    let r = idx / p.size;
    let i = idx % p.size;
    let v = primal[(r / p.rows_per_sample) * p.size + i];
    var d = 1.0;
    if (p.kind == 0u) {
        d = select(0.0, 1.0, v > 0.0);
    } else if (p.kind == 1u) {
        d = select(p.alpha, 1.0, v > 0.0);
    } else {
        d = select(0.0, 1.0, v > p.lo && v < p.hi);
    }
    dx[idx] = dy[idx] * d;
}
