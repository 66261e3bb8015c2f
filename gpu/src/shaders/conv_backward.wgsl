// 2-D convolution, input gradient (the adjoint of conv_forward without bias): one invocation per
// input value of each cotangent row, gathering every output cell whose window reads it.
// dx[r, ci, iy, ix] = Σ_{co in group, ki, kj : (iy + pad_top − ki·dil_y) = oy·sy, (ix + pad_left − kj·dil_x) = ox·sx}
//                     w[co, ci_l, ki, kj] · dy[r, co, oy, ox]

// `ConvParams` is in params/conv.wgsl, prepended by shaders.rs.

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(64)
fn conv_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 64u;
    let in_size = p.in_channels * p.h * p.w;
    if (idx >= p.rows * in_size) {
        return;
    }
    let r = idx / in_size;
    let rem = idx % in_size;
    let ci = rem / (p.h * p.w);
    let pos = rem % (p.h * p.w);
    let iy = pos / p.w;
    let ix = pos % p.w;
    let cin_g = p.in_channels / p.groups;
    let cout_g = p.out_channels / p.groups;
    let g = ci / cin_g;
    let ci_l = ci % cin_g;
    let dy_base = r * p.out_channels * p.ho * p.wo;
    var acc = 0.0;
    for (var ki = 0u; ki < p.kh; ki++) {
        let ty = i32(iy + p.pad_top) - i32(ki * p.dil_y);
        if (ty < 0 || (u32(ty) % p.stride_y) != 0u) {
            continue;
        }
        let oy = u32(ty) / p.stride_y;
        if (oy >= p.ho) {
            continue;
        }
        for (var kj = 0u; kj < p.kw; kj++) {
            let tx = i32(ix + p.pad_left) - i32(kj * p.dil_x);
            if (tx < 0 || (u32(tx) % p.stride_x) != 0u) {
                continue;
            }
            let ox = u32(tx) / p.stride_x;
            if (ox >= p.wo) {
                continue;
            }
            for (var co_l = 0u; co_l < cout_g; co_l++) {
                let co = g * cout_g + co_l;
                let wv = weight[((co * cin_g + ci_l) * p.kh + ki) * p.kw + kj];
                acc += wv * dy[dy_base + (co * p.ho + oy) * p.wo + ox];
            }
        }
    }
    dx[idx] = acc;
}
