// Training-time (inverted) dropout with a counter-based generator: one invocation per value of the
// chunk. Value idx is value (first + idx) of the mini-batch (first = the chunk's first sample ×
// the node size); its 32 random bits are a hash of (seed, step, site, first + idx), so a mask
// does not depend on chunking or scheduling, and `certify_core::train::counter_bits` gives the
// same bits on the CPU. The value is kept (and scaled by `keep` = 1/(1 − rate)) when the bits are
// ≥ threshold = round(rate·2³²), zeroed otherwise; the mask is written too.

struct DropoutParams {
    n: u32,
    first: u32,
    site: u32,
    threshold: u32,
    seed_lo: u32,
    seed_hi: u32,
    step_lo: u32,
    step_hi: u32,
    keep: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: DropoutParams;
@group(0) @binding(1) var<storage, read_write> values: array<f32>;
@group(0) @binding(2) var<storage, read_write> mask: array<f32>;

// A 32-bit integer finaliser (xor-shift / multiply rounds).
fn mix32(v: u32) -> u32 {
    var x = v;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    x ^= x >> 16u;
    return x;
}

@compute @workgroup_size(64)
fn dropout(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 64u;
    if (idx >= p.n) {
        return;
    }
    var h = mix32(p.seed_lo ^ 0x9e3779b9u);
    h = mix32(h ^ p.seed_hi);
    h = mix32(h ^ p.step_lo);
    h = mix32(h ^ p.step_hi);
    h = mix32(h ^ p.site);
    h = mix32(h ^ (p.first + idx));
    let m = select(0.0, p.keep, h >= p.threshold);
    mask[idx] = m;
    values[idx] = values[idx] * m;
}
