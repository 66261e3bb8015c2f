// Tangent pass through conv → activation → max pool at fixed winners and gates (maxpool_gate):
// one invocation per pooled output value of each tangent row,
//   y[r, co, q] = gate[s, co, q] · Σ_{ci in group, ki, kj} w[co, ci_l, ki, kj] · t[r, ci, oy·sy + ki·dil_y − pad_top, ox·sx + kj·dil_x − pad_left]
// where (oy, ox) is the winner of pooled cell q of channel co for the row's sample s (`pos`). The
// convolution is evaluated only at the winners (a quarter of its outputs for 2×2 pooling) and
// not at all where the gate is 0. No bias (tangents are differences).

// `PooledConvParams` is in params/conv_pool.wgsl, prepended by shaders.rs.

@group(0) @binding(0) var<uniform> p: PooledConvParams;
@group(0) @binding(1) var<storage, read> t: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> gate: array<f32>;
@group(0) @binding(4) var<storage, read> pos: array<u32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn conv_forward_pooled(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 64u;
    let pooled_hw = p.pool_ho * p.pool_wo;
    let pooled_size = p.out_channels * pooled_hw;
    if (idx >= p.rows * pooled_size) {
        return;
    }
    let r = idx / pooled_size;
    let o = idx % pooled_size;
    let so = (r / p.rows_per_sample) * pooled_size + o;
    let gv = gate[so];
    if (gv == 0.0) {
        y[idx] = 0.0;
        return;
    }
    let co = o / pooled_hw;
    let c = pos[so];
    let oy = c >> 16u;
    let ox = c & 0xffffu;
    let cin_g = p.in_channels / p.groups;
    let cout_g = p.out_channels / p.groups;
    let g = co / cout_g;
    let t_base = r * p.in_channels * p.h * p.w;
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
                let tv = t[t_base + (ci * p.h + u32(iy)) * p.w + u32(ix)];
                acc += tv * weight[((co * cin_g + ci_l) * p.kh + ki) * p.kw + kj];
            }
        }
    }
    y[idx] = gv * acc;
}
