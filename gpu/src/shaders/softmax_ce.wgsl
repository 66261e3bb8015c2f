// Softmax cross-entropy of a chunk of samples: one invocation per sample.
//   cot[i, k]  = scale · (softmax(z_i)_k − [k = y_i])    (the loss's logit cotangents)
//   stats[2i]  = CE_i = log Σ_k exp(z_ik − max) − (z_{i,y_i} − max)
//   stats[2i+1] = 1 when the first largest logit is y_i, else 0

struct CeParams {
    batch: u32,
    classes: u32,
    scale: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: CeParams;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> cot: array<f32>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;

@compute @workgroup_size(64)
fn softmax_ce(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.batch) {
        return;
    }
    let base = i * p.classes;
    let y = labels[i];
    var m = logits[base];
    var arg = 0u;
    for (var k = 1u; k < p.classes; k++) {
        let v = logits[base + k];
        if (v > m) {
            m = v;
            arg = k;
        }
    }
    var s = 0.0;
    for (var k = 0u; k < p.classes; k++) {
        s += exp(logits[base + k] - m);
    }
    for (var k = 0u; k < p.classes; k++) {
        let prob = exp(logits[base + k] - m) / s;
        cot[base + k] = p.scale * (prob - select(0.0, 1.0, k == y));
    }
    stats[2u * i] = log(s) - (logits[base + y] - m);
    stats[2u * i + 1u] = select(0.0, 1.0, arg == y);
}
