// The gate of a max pool over an elementwise activation, per sample and pooled cell: the
// activation's derivative at the window's winner, gate[s, o] = f'(pre[s, arg[s, o]]), or 0 for a
// window without input cells; and the winner's position within its channel, packed as
// pos[s, o] = oy << 16 | ox (0xffffffff for none), so that the pooled kernels need no division. `pre` is the activation's input (a convolution's output), `arg` the
// winners recorded by maxpool_forward. Derivatives as activation_backward: ReLU 1 for x > 0 else
// 0; LeakyReLU 1 for x > 0 else alpha; Clip 1 for lo < x < hi else 0.
// The Jacobian of conv → activation → max pool maps the convolution's output to the pooled cells
// through the winners and these gates, so the penalty passes need the convolution only there.

struct GateParams {
    n: u32,
    out_size: u32,
    in_size: u32,
    kind: u32,
    alpha: f32,
    lo: f32,
    hi: f32,
    // The pool's input width, input cells per channel (h·w) and pooled cells per channel.
    w: u32,
    in_hw: u32,
    pooled_hw: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: GateParams;
@group(0) @binding(1) var<storage, read> pre: array<f32>;
@group(0) @binding(2) var<storage, read> arg: array<u32>;
@group(0) @binding(3) var<storage, read_write> gate: array<f32>;
@group(0) @binding(4) var<storage, read_write> pos: array<u32>;

@compute @workgroup_size(64)
fn maxpool_gate(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 64u;
    if (idx >= p.n) {
        return;
    }
    let a = arg[idx];
    var d = 0.0;
    var packed = 0xffffffffu;
    if (a != 0xffffffffu) {
        let ch = (idx % p.out_size) / p.pooled_hw;
        let local = a - ch * p.in_hw;
        packed = ((local / p.w) << 16u) | (local % p.w);
        let v = pre[(idx / p.out_size) * p.in_size + a];
        if (p.kind == 0u) {
            d = select(0.0, 1.0, v > 0.0);
        } else if (p.kind == 1u) {
            d = select(p.alpha, 1.0, v > 0.0);
        } else {
            d = select(0.0, 1.0, v > p.lo && v < p.hi);
        }
    }
    gate[idx] = d;
    pos[idx] = packed;
}
