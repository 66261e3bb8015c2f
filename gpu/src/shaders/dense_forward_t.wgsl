// Fully connected layer on the last axis, forward, from the transposed weights (transpose.wgsl):
// one invocation per output value, y[m, o] = bias[o] + Σ_i wt[i, o] · x[m, i]. Neighbouring
// invocations (neighbouring o) read neighbouring weights, where dense_forward's read a whole row
// apart; for many rows (the penalty's tangent pass) this is the faster form.

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
    if (idx >= p.m * p.outputs) {
        return;
    }
    let row = idx / p.outputs;
    let o = idx % p.outputs;
    let xb = row * p.inputs;
    var acc = 0.0;
    for (var i = 0u; i < p.inputs; i++) {
        acc += x[xb + i] * wt[i * p.outputs + o];
    }
    if (p.has_bias != 0u) {
        acc += bias[o];
    }
    y[idx] = acc;
}
