// Sums the per-split partial gradients of weight_grad kernels, in split order:
//   out[j] = (accumulate ? out[j] : 0) + Σ_s partial[s·n + j]
// and raises flag[0] = 1 when a result is not finite (NaN or ±infinity).

struct ReduceParams {
    n: u32,
    splits: u32,
    accumulate: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: ReduceParams;
@group(0) @binding(1) var<storage, read> partial: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> flag: array<u32>;

@compute @workgroup_size(64)
fn reduce_partials(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = gid.x + gid.y * nwg.x * 64u;
    if (j >= p.n) {
        return;
    }
    var acc = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        acc += partial[s * p.n + j];
    }
    if (p.accumulate != 0u) {
        acc = out[j] + acc;
    }
    out[j] = acc;
    if ((bitcast<u32>(acc) & 0x7f800000u) == 0x7f800000u) {
        flag[0] = 1u;
    }
}
