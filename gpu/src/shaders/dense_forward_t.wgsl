// Fully connected layer on the last axis, forward, from the transposed weights (transpose.wgsl):
// y[m, o] = bias[o] + Σ_i wt[i, o] · x[m, i], one invocation per output o of a block of four
// matrix rows (rows 4b .. 4b + 3; dispatched over ceil(m / 4) · outputs invocations). Neighbouring
// invocations (neighbouring o) read neighbouring weights, where dense_forward's read a whole row
// apart, and each weight read serves four rows; for many rows (the penalty's tangent pass) this is
// the faster form. Each output sums in the same order as dense_forward.

struct DenseParams {
    m: u32,
    inputs: u32,
    outputs: u32,
    has_bias: u32,
}

@group(0) @binding(0) var<uniform> p: DenseParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn dense_forward_t(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 64u;
    let blocks = (p.m + 3u) / 4u;
    if (idx >= blocks * p.outputs) {
        return;
    }
    let row = (idx / p.outputs) * 4u;
    let o = idx % p.outputs;
    // Rows past the end read the last row again and are not written.
    let last = p.m - 1u;
    let x0 = row * p.inputs;
    let x1 = min(row + 1u, last) * p.inputs;
    let x2 = min(row + 2u, last) * p.inputs;
    let x3 = min(row + 3u, last) * p.inputs;
    var a0 = 0.0;
    var a1 = 0.0;
    var a2 = 0.0;
    var a3 = 0.0;
    for (var i = 0u; i < p.inputs; i++) {
        let w = wt[i * p.outputs + o];
        a0 += x[x0 + i] * w;
        a1 += x[x1 + i] * w;
        a2 += x[x2 + i] * w;
        a3 += x[x3 + i] * w;
    }
    var b = 0.0;
    if (p.has_bias != 0u) {
        b = bias[o];
    }
    y[row * p.outputs + o] = a0 + b;
    if (row + 1u < p.m) {
        y[(row + 1u) * p.outputs + o] = a1 + b;
    }
    if (row + 2u < p.m) {
        y[(row + 2u) * p.outputs + o] = a2 + b;
    }
    if (row + 3u < p.m) {
        y[(row + 3u) * p.outputs + o] = a3 + b;
    }
}
