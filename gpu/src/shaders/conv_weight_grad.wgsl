// 2-D convolution, parameter gradient over a range of rows: one invocation per (split, parameter).
// Parameters are the weights [co, ci_l, ki, kj] followed, when has_bias = 1, by the biases [co];
// split s sums rows s·split_rows .. min(rows, (s+1)·split_rows) and writes
//   partial[s·np + j] = Σ_{r, oy, ox} dy[r, co, oy, ox] · x[r, ci, oy·sy + ki·dil_y − pad_top, ox·sx + kj·dil_x − pad_left]
// (weights; padding cells are zero) or Σ_{r, oy, ox} dy[r, co, oy, ox] (biases), np the parameter
// count. reduce_partials sums the splits in order, so the result does not depend on scheduling.

// `ConvParams` is in params/conv.wgsl, prepended by shaders.rs.

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> partial: array<f32>;

@compute @workgroup_size(64)
fn conv_weight_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 64u;
    let cin_g = p.in_channels / p.groups;
    let cout_g = p.out_channels / p.groups;
    let nw = p.out_channels * cin_g * p.kh * p.kw;
    let np = nw + select(0u, p.out_channels, p.has_bias != 0u);
    if (idx >= np * p.splits) {
        return;
    }
    let s = idx / np;
    let j = idx % np;
    let r0 = s * p.split_rows;
    let r1 = min(p.rows, r0 + p.split_rows);
    let out_hw = p.ho * p.wo;
    let out_size = p.out_channels * out_hw;
    let in_hw = p.h * p.w;
    let in_size = p.in_channels * in_hw;
    var acc = 0.0;
    if (j < nw) {
        let kj = j % p.kw;
        let ki = (j / p.kw) % p.kh;
        let ci_l = (j / (p.kw * p.kh)) % cin_g;
        let co = j / (p.kw * p.kh * cin_g);
        let ci = (co / cout_g) * cin_g + ci_l;
        for (var r = r0; r < r1; r++) {
            let db = r * out_size + co * out_hw;
            let xb = r * in_size + ci * in_hw;
            for (var oy = 0u; oy < p.ho; oy++) {
                let iy = i32(oy * p.stride_y + ki * p.dil_y) - i32(p.pad_top);
                if (iy < 0 || iy >= i32(p.h)) {
                    continue;
                }
                for (var ox = 0u; ox < p.wo; ox++) {
                    let ix = i32(ox * p.stride_x + kj * p.dil_x) - i32(p.pad_left);
                    if (ix < 0 || ix >= i32(p.w)) {
                        continue;
                    }
                    acc += dy[db + oy * p.wo + ox] * x[xb + u32(iy) * p.w + u32(ix)];
                }
            }
        }
    } else {
        let co = j - nw;
        for (var r = r0; r < r1; r++) {
            let db = r * out_size + co * out_hw;
            for (var q = 0u; q < out_hw; q++) {
                acc += dy[db + q];
            }
        }
    }
    partial[idx] = acc;
}
