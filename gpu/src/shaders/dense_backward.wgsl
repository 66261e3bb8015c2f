// Fully connected layer, input gradient: one invocation per input value of each cotangent row.
// dx[m, i] = Σ_o dy[m, o] · w[o, i]   (terms with dy[m, o] = 0 are skipped)

struct DenseParams {
    m: u32,
    inputs: u32,
    outputs: u32,
    has_bias: u32,
}

@group(0) @binding(0) var<uniform> p: DenseParams;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(64)
fn dense_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 64u;
    if (idx >= p.m * p.inputs) {
        return;
    }
    let row = idx / p.inputs;
    let i = idx % p.inputs;
    let gb = row * p.outputs;
    var acc = 0.0;
    for (var o = 0u; o < p.outputs; o++) {
        // Neighbouring invocations share the row, so skipping zero cotangents (ReLU and dropout
        // zero most of them in the penalty rows) skips the weight loads for all of them.
        let g = dy[gb + o];
        if (g != 0.0) {
            acc += g * weight[o * p.inputs + i];
        }
    }
    dx[idx] = acc;
}
