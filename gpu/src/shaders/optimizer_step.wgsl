// One optimizer update of a layer's parameters (weights, then biases), one invocation each, with
// the gradient d = g_ce[j] + pen_coef · g_pen[j] (d = 0 for frozen weights), as
// certify_core::train::{Sgd, Adam, RmsProp} (PyTorch's update rules):
//   kind 0 SGD:           θ −= lr·d
//   kind 1 SGD, momentum: b = momentum·b + d;  θ −= lr·b                       (b in s1)
//   kind 2 Adam:          m = β₁m + (1−β₁)d;  v = β₂v + (1−β₂)d²;
//                         θ −= step_size·m / (sqrt(v)/sqrt_c2 + ε)           (m in s1, v in s2)
//   kind 3 RMSProp:       v = αv + (1−α)d²;  θ −= lr·d / (sqrt(v) + ε)         (v in s1)
// with step_size = lr/(1 − β₁ᵗ) and sqrt_c2 = sqrt(1 − β₂ᵗ) computed on the host.

struct OptParams {
    n: u32,
    n_weight: u32,
    kind: u32,
    freeze_weight: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    step_size: f32,
    sqrt_c2: f32,
    pen_coef: f32,
    momentum: f32,
    alpha: f32,
    has_pen: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: OptParams;
@group(0) @binding(1) var<storage, read_write> weight: array<f32>;
@group(0) @binding(2) var<storage, read_write> bias: array<f32>;
@group(0) @binding(3) var<storage, read> g_ce: array<f32>;
@group(0) @binding(4) var<storage, read> g_pen: array<f32>;
@group(0) @binding(5) var<storage, read_write> s1: array<f32>;
@group(0) @binding(6) var<storage, read_write> s2: array<f32>;

@compute @workgroup_size(64)
fn optimizer_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = gid.x + gid.y * nwg.x * 64u;
    if (j >= p.n) {
        return;
    }
    var d = g_ce[j];
    if (p.has_pen != 0u) {
        d += p.pen_coef * g_pen[j];
    }
    let is_weight = j < p.n_weight;
    if (is_weight && p.freeze_weight != 0u) {
        d = 0.0;
    }
    var theta = 0.0;
    if (is_weight) {
        theta = weight[j];
    } else {
        theta = bias[j - p.n_weight];
    }
    if (p.kind == 0u) {
        theta -= p.lr * d;
    } else if (p.kind == 1u) {
        let b = p.momentum * s1[j] + d;
        s1[j] = b;
        theta -= p.lr * b;
    } else if (p.kind == 2u) {
        let m = p.beta1 * s1[j] + (1.0 - p.beta1) * d;
        let v = p.beta2 * s2[j] + (1.0 - p.beta2) * d * d;
        s1[j] = m;
        s2[j] = v;
        theta -= p.step_size * m / (sqrt(v) / p.sqrt_c2 + p.eps);
    } else {
        let v = p.alpha * s1[j] + (1.0 - p.alpha) * d * d;
        s1[j] = v;
        theta -= p.lr * d / (sqrt(v) + p.eps);
    }
    if (is_weight) {
        weight[j] = theta;
    } else {
        bias[j - p.n_weight] = theta;
    }
}
