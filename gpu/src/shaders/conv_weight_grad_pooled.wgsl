// Weight gradient of conv → activation → max pool from gated pooled cotangents (as
// conv_backward_pooled) over a range of rows: one invocation per (split, weight); split s sums
// rows s·split_rows .. min(rows, (s+1)·split_rows) and writes
//   partial[s·nw + j] = Σ_{r, pooled cells q of co} g[r, co, q] · x[r, ci, oy·sy + ki·dil_y − pad_top, ox·sx + kj·dil_x − pad_left]
// for weight j = [co, ci_l, ki, kj], (oy, ox) the winner of q for the row's sample (`pos` from
// maxpool_gate), nw the weight
// count; padding cells are zero. Equal to conv_weight_grad with the cotangent scattered to the
// winners, at a quarter of its work for 2×2 pooling. No bias (the penalty's bias gradient is 0).

// `PooledConvParams` is in params/conv_pool.wgsl, prepended by shaders.rs.

@group(0) @binding(0) var<uniform> p: PooledConvParams;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> pos: array<u32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> partial: array<f32>;

// One cell's term: its gated cotangent gv times the input its winner (packed position c) reads
// through tap (ki, kj) in the channel plane starting at xb; 0 for no winner, a zero cotangent or
// a tap in the padding.
fn term(gv: f32, c: u32, xb: u32, ki: u32, kj: u32) -> f32 {
    if (gv == 0.0 || c == 0xffffffffu) {
        return 0.0;
    }
    let iy = i32((c >> 16u) * p.stride_y + ki * p.dil_y) - i32(p.pad_top);
    let ix = i32((c & 0xffffu) * p.stride_x + kj * p.dil_x) - i32(p.pad_left);
    if (iy < 0 || iy >= i32(p.h) || ix < 0 || ix >= i32(p.w)) {
        return 0.0;
    }
    return gv * x[xb + u32(iy) * p.w + u32(ix)];
}

@compute @workgroup_size(64)
fn conv_weight_grad_pooled(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 64u;
    let cin_g = p.in_channels / p.groups;
    let cout_g = p.out_channels / p.groups;
    let nw = p.out_channels * cin_g * p.kh * p.kw;
    if (idx >= nw * p.splits) {
        return;
    }
    let s = idx / nw;
    let j = idx % nw;
    let r0 = s * p.split_rows;
    let r1 = min(p.rows, r0 + p.split_rows);
    let kj = j % p.kw;
    let ki = (j / p.kw) % p.kh;
    let ci_l = (j / (p.kw * p.kh)) % cin_g;
    let co = j / (p.kw * p.kh * cin_g);
    let ci = (co / cout_g) * cin_g + ci_l;
    let pooled_hw = p.pool_ho * p.pool_wo;
    let pooled_size = p.out_channels * pooled_hw;
    let in_hw = p.h * p.w;
    let in_size = p.in_channels * in_hw;
    var acc = 0.0;
    for (var r = r0; r < r1; r++) {
        let gb = r * pooled_size + co * pooled_hw;
        let ab = (r / p.rows_per_sample) * pooled_size + co * pooled_hw;
        let xb = r * in_size + ci * in_hw;
        // Four cells per pass so that their loads overlap; the sum keeps the cell order
        // (skipped terms add 0).
        var q = 0u;
        for (; q + 4u <= pooled_hw; q += 4u) {
            let g0 = g[gb + q];
            let g1 = g[gb + q + 1u];
            let g2 = g[gb + q + 2u];
            let g3 = g[gb + q + 3u];
            let c0 = pos[ab + q];
            let c1 = pos[ab + q + 1u];
            let c2 = pos[ab + q + 2u];
            let c3 = pos[ab + q + 3u];
            acc += term(g0, c0, xb, ki, kj);
            acc += term(g1, c1, xb, ki, kj);
            acc += term(g2, c2, xb, ki, kj);
            acc += term(g3, c3, xb, ki, kj);
        }
        for (; q < pooled_hw; q++) {
            acc += term(g[gb + q], pos[ab + q], xb, ki, kj);
        }
    }
    partial[idx] = acc;
}
