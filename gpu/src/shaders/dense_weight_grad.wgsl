// Fully connected layer, parameter gradient over a range of matrix rows: one invocation per
// (split, parameter). Parameters are the weights [o, i] followed, when has_bias = 1, by the biases
// [o]; split s sums rows m in s·split_rows .. min(m, (s+1)·split_rows) and writes
//   partial[s·np + j] = Σ_m dy[m, o] · x[m, i]   (weights)   or   Σ_m dy[m, o]   (biases).

struct DenseGradParams {
    m: u32,
    inputs: u32,
    outputs: u32,
    has_bias: u32,
    splits: u32,
    split_rows: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: DenseGradParams;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> partial: array<f32>;

@compute @workgroup_size(64)
fn dense_weight_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 64u;
    let nw = p.outputs * p.inputs;
    let np = nw + select(0u, p.outputs, p.has_bias != 0u);
    if (idx >= np * p.splits) {
        return;
    }
    let s = idx / np;
    let j = idx % np;
    let r0 = s * p.split_rows;
    let r1 = min(p.m, r0 + p.split_rows);
    var acc = 0.0;
    if (j < nw) {
        let o = j / p.inputs;
        let i = j % p.inputs;
        // Neighbouring invocations share o: zero cotangents skip the loads for all of them. Four
        // rows per pass so that their cotangent loads overlap; the sum keeps the row order.
        var r = r0;
        for (; r + 4u <= r1; r += 4u) {
            let g0 = dy[r * p.outputs + o];
            let g1 = dy[(r + 1u) * p.outputs + o];
            let g2 = dy[(r + 2u) * p.outputs + o];
            let g3 = dy[(r + 3u) * p.outputs + o];
            if (g0 != 0.0) {
                acc += g0 * x[r * p.inputs + i];
            }
            if (g1 != 0.0) {
                acc += g1 * x[(r + 1u) * p.inputs + i];
            }
            if (g2 != 0.0) {
                acc += g2 * x[(r + 2u) * p.inputs + i];
            }
            if (g3 != 0.0) {
                acc += g3 * x[(r + 3u) * p.inputs + i];
            }
        }
        for (; r < r1; r++) {
            let g = dy[r * p.outputs + o];
            if (g != 0.0) {
                acc += g * x[r * p.inputs + i];
            }
        }
    } else {
        let o = j - nw;
        for (var r = r0; r < r1; r++) {
            acc += dy[r * p.outputs + o];
        }
    }
    partial[idx] = acc;
}
