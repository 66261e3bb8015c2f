// 2-D convolution (cross-correlation), forward: one invocation per output value.
// y[r, co, oy, ox] = bias[co] + Σ_{ci in group, ki, kj} w[co, ci_l, ki, kj] · x[r, ci, oy·sy + ki·dil_y − pad_top, ox·sx + kj·dil_x − pad_left]
// Cells in the padding are zero.

// `ConvParams` is in params/conv.wgsl, prepended by shaders.rs.

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn conv_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 64u;
    let out_size = p.out_channels * p.ho * p.wo;
    if (idx >= p.rows * out_size) {
        return;
    }
    let r = idx / out_size;
    let rem = idx % out_size;
    let co = rem / (p.ho * p.wo);
    let pos = rem % (p.ho * p.wo);
    let oy = pos / p.wo;
    let ox = pos % p.wo;
    let cin_g = p.in_channels / p.groups;
    let cout_g = p.out_channels / p.groups;
    let g = co / cout_g;
    let x_base = r * p.in_channels * p.h * p.w;
    var acc = 0.0;
    for (var ci_l = 0u; ci_l < cin_g; ci_l++) {
        let ci = g * cin_g + ci_l;
        for (var ki = 0u; ki < p.kh; ki++) {
            let iy = i32(oy * p.stride_y + ki * p.dil_y) - i32(p.pad_top);
            if (iy < 0 || iy >= i32(p.h)) {
                continue;
            }
            for (var kj = 0u; kj < p.kw; kj++) {
                let ix = i32(ox * p.stride_x + kj * p.dil_x) - i32(p.pad_left);
                if (ix < 0 || ix >= i32(p.w)) {
                    continue;
                }
                let xv = x[x_base + (ci * p.h + u32(iy)) * p.w + u32(ix)];
                let wv = weight[((co * cin_g + ci_l) * p.kh + ki) * p.kw + kj];
                acc += xv * wv;
            }
        }
    }
    if (p.has_bias != 0u) {
        acc += bias[co];
    }
    y[idx] = acc;
}
