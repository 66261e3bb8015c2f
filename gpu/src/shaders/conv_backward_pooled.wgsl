// Input gradient of conv → activation → max pool from gated pooled cotangents: one invocation per
// input value of each cotangent row,
//   dx[r, ci, iy, ix] = Σ_{co in group} Σ_{pooled cells q of co} g[r, co, q] · w[co, ci_l, ki, kj]
// over the cells whose winner (oy, ox) (for the row's sample; `pos` from maxpool_gate) reads the
// input cell through kernel tap (ki, kj): oy·sy + ki·dil_y − pad_top = iy and ox·sx + kj·dil_x − pad_left = ix.
// g is the pooled cotangent times the gate (maxpool_gate), i.e. what conv_backward would read at
// the winners (every other output cell of the convolution has a zero cotangent). Cells that
// share a winner (overlapping windows) each add their term, as maxpool_backward sums them.

// `PooledConvParams` is in params/conv_pool.wgsl, prepended by shaders.rs.

@group(0) @binding(0) var<uniform> p: PooledConvParams;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> pos: array<u32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;

// The pooled cells (half-open range) whose windows hold a convolution output cell in
// [lo, hi] (inclusive) along one axis: cells c with c·stride − pad ≤ o < c·stride − pad + k.
fn pooled_range(lo: u32, hi: u32, k: u32, stride: u32, pad: u32, n: u32) -> vec2<u32> {
    let a = lo + pad;
    var first = 0u;
    if (a >= k) {
        first = (a - k) / stride + 1u;
    }
    return vec2<u32>(first, min((hi + pad) / stride + 1u, n));
}

@compute @workgroup_size(64)
fn conv_backward_pooled(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 64u;
    let in_size = p.in_channels * p.h * p.w;
    if (idx >= p.rows * in_size) {
        return;
    }
    let r = idx / in_size;
    let rem = idx % in_size;
    let ci = rem / (p.h * p.w);
    let here = rem % (p.h * p.w);
    let iy = here / p.w;
    let ix = here % p.w;
    let cin_g = p.in_channels / p.groups;
    let cout_g = p.out_channels / p.groups;
    let grp = ci / cin_g;
    let ci_l = ci % cin_g;
    let pooled_hw = p.pool_ho * p.pool_wo;
    let pooled_size = p.out_channels * pooled_hw;
    let g_base = r * pooled_size;
    let a_base = (r / p.rows_per_sample) * pooled_size;
    // Output cells oy whose window reads iy: oy·sy = iy + pad_top − ki·dil_y for some tap ki.
    let ty = iy + p.pad_top;
    let tx = ix + p.pad_left;
    let span_y = (p.kh - 1u) * p.dil_y;
    let span_x = (p.kw - 1u) * p.dil_x;
    var oy_lo = 0u;
    if (ty > span_y) {
        oy_lo = (ty - span_y + p.stride_y - 1u) / p.stride_y;
    }
    var ox_lo = 0u;
    if (tx > span_x) {
        ox_lo = (tx - span_x + p.stride_x - 1u) / p.stride_x;
    }
    let oy_hi = min(ty / p.stride_y, p.ho - 1u);
    let ox_hi = min(tx / p.stride_x, p.wo - 1u);
    let unit_dilation = p.dil_y == 1u && p.dil_x == 1u;
    var acc = 0.0;
    if (oy_lo <= oy_hi && ox_lo <= ox_hi) {
        let ry = pooled_range(oy_lo, oy_hi, p.pool_kh, p.pool_stride_y, p.pool_pad_top, p.pool_ho);
        let rx = pooled_range(ox_lo, ox_hi, p.pool_kw, p.pool_stride_x, p.pool_pad_left, p.pool_wo);
        for (var py = ry.x; py < ry.y; py++) {
            for (var px = rx.x; px < rx.y; px++) {
                let cell = py * p.pool_wo + px;
                for (var co_l = 0u; co_l < cout_g; co_l++) {
                    let co = grp * cout_g + co_l;
                    let o = co * pooled_hw + cell;
                    let gv = g[g_base + o];
                    let c = pos[a_base + o];
                    if (gv == 0.0 || c == 0xffffffffu) {
                        continue;
                    }
                    // The tap offsets; negative ones wrap to large values and fail the checks.
                    let ky = ty - (c >> 16u) * p.stride_y;
                    let kx = tx - (c & 0xffffu) * p.stride_x;
                    var ki = ky;
                    var kj = kx;
                    if (unit_dilation) {
                        if (ky >= p.kh || kx >= p.kw) {
                            continue;
                        }
                    } else {
                        if (ky > span_y || kx > span_x || ky % p.dil_y != 0u || kx % p.dil_x != 0u) {
                            continue;
                        }
                        ki = ky / p.dil_y;
                        kj = kx / p.dil_x;
                    }
                    acc += gv * weight[((co * cin_g + ci_l) * p.kh + ki) * p.kw + kj];
                }
            }
        }
    }
    dx[idx] = acc;
}
