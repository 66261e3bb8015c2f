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

// The term of one pooled cell: its gated cotangent gv times the weight of the tap that connects
// its winner (packed position c) to the input cell (ty, tx) = (iy + pad_top, ix + pad_left), in
// the kh × kw kernel starting at weight index wb; 0 when the cell has no winner, a zero cotangent,
// or no such tap.
fn tap(gv: f32, c: u32, wb: u32, ty: u32, tx: u32) -> f32 {
    if (gv == 0.0 || c == 0xffffffffu) {
        return 0.0;
    }
    // The tap offsets; negative ones wrap to large values and fail the checks.
    let ky = ty - (c >> 16u) * p.stride_y;
    let kx = tx - (c & 0xffffu) * p.stride_x;
    var ki = ky;
    var kj = kx;
    if (p.dil_y == 1u && p.dil_x == 1u) {
        if (ky >= p.kh || kx >= p.kw) {
            return 0.0;
        }
    } else {
        if (ky > (p.kh - 1u) * p.dil_y || kx > (p.kw - 1u) * p.dil_x || ky % p.dil_y != 0u || kx % p.dil_x != 0u) {
            return 0.0;
        }
        ki = ky / p.dil_y;
        kj = kx / p.dil_x;
    }
    return gv * weight[wb + ki * p.kw + kj];
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
    var acc = 0.0;
    if (oy_lo <= oy_hi && ox_lo <= ox_hi) {
        let ry = pooled_range(oy_lo, oy_hi, p.pool_kh, p.pool_stride_y, p.pool_pad_top, p.pool_ho);
        let rx = pooled_range(ox_lo, ox_hi, p.pool_kw, p.pool_stride_x, p.pool_pad_left, p.pool_wo);
        for (var py = ry.x; py < ry.y; py++) {
            for (var px = rx.x; px < rx.y; px++) {
                let cell = py * p.pool_wo + px;
                // Four output channels per pass so that their loads overlap; the sum keeps the
                // channel order (skipped terms add 0).
                var co = grp * cout_g;
                let co_end = co + cout_g;
                // Weight index of kernel [co, ci_l] and the step to the next channel's.
                let wstep = cin_g * p.kh * p.kw;
                var wb = (co * cin_g + ci_l) * p.kh * p.kw;
                for (; co + 4u <= co_end; co += 4u) {
                    let o = co * pooled_hw + cell;
                    let g0 = g[g_base + o];
                    let g1 = g[g_base + o + pooled_hw];
                    let g2 = g[g_base + o + 2u * pooled_hw];
                    let g3 = g[g_base + o + 3u * pooled_hw];
                    let c0 = pos[a_base + o];
                    let c1 = pos[a_base + o + pooled_hw];
                    let c2 = pos[a_base + o + 2u * pooled_hw];
                    let c3 = pos[a_base + o + 3u * pooled_hw];
                    acc += tap(g0, c0, wb, ty, tx);
                    acc += tap(g1, c1, wb + wstep, ty, tx);
                    acc += tap(g2, c2, wb + 2u * wstep, ty, tx);
                    acc += tap(g3, c3, wb + 3u * wstep, ty, tx);
                    wb += 4u * wstep;
                }
                for (; co < co_end; co++) {
                    let o = co * pooled_hw + cell;
                    acc += tap(g[g_base + o], pos[a_base + o], wb, ty, tx);
                    wb += wstep;
                }
            }
        }
    }
    dx[idx] = acc;
}
