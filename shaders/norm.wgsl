// norm.wgsl — layernorm of token rows.
//
// layer_norm: y[r, i] = (x[r, i] - mean_r) / sqrt(var_r + eps) · gamma[i] + beta[i]
//             (two passes: the mean, then the variance of x - mean; f32 throughout).
//             INPLACE: x is y itself (the same binding, read then written).
// (The tower's final layernorm, on pooled rows, and the L2 normalisation are head.wgsl's.)
//
// Shape: one workgroup of WG = 64 invocations per row; invocation l handles columns
// l, l + 64, …; the row sums are reduced with `subgroupAdd` and one workgroup-memory slot
// per subgroup (SUBGROUP, where the adapter has the feature), or by a workgroup-memory
// tree (the fallback).
// Dispatch: (rows, 1, 1).
//
// Bindings (group 0): declared once, in src/gpu/norm.rs (`slots`), generated into the header:
// p (uniform Params), y (YT, read_write), x (XT; not INPLACE), gamma, beta (GT).
// Generated header (src/gpu/wgsl.rs): aliases XT, YT, GT; flags SUBGROUP, INPLACE.

// Uniform block: norm::NormParams in src/gpu/norm.rs.
struct Params {
    w: u32,    // row width
    rows: u32,
    eps: f32,
    _pad: u32,
}

const WG: u32 = 64u;

var<workgroup> red: array<f32, WG>;

//#if SUBGROUP
struct Lane {
    lid: u32,
    sl: u32,   // subgroup_invocation_id
    sid: u32,  // subgroup_id
    nsg: u32,  // num_subgroups
}

fn wg_sum(v: f32, l: Lane) -> f32 {
    let s = subgroupAdd(v);
    if (l.sl == 0u) {
        red[l.sid] = s;
    }
    workgroupBarrier();
    var t = 0.0;
    for (var i = 0u; i < l.nsg; i++) {
        t += red[i];
    }
    workgroupBarrier();
    return t;
}
//#else
struct Lane {
    lid: u32,
}

fn wg_sum(v: f32, l: Lane) -> f32 {
    red[l.lid] = v;
    workgroupBarrier();
    for (var st = WG / 2u; st > 0u; st >>= 1u) {
        if (l.lid < st) {
            red[l.lid] += red[l.lid + st];
        }
        workgroupBarrier();
    }
    let t = red[0];
    workgroupBarrier();
    return t;
}
//#endif

fn ld(i: u32) -> f32 {
//#if INPLACE
    return f32(y[i]);
//#else
    return f32(x[i]);
//#endif
}

@compute @workgroup_size(64, 1, 1)
fn layer_norm(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
//#if SUBGROUP
    @builtin(subgroup_invocation_id) sl: u32,
    @builtin(subgroup_id) sid: u32,
    @builtin(num_subgroups) nsg: u32,
//#endif
) {
//#if SUBGROUP
    let lane = Lane(lid, sl, sid, nsg);
//#else
    let lane = Lane(lid);
//#endif
    let w = p.w;
    let base = wid.x * w;
    var s = 0.0;
    for (var i = lid; i < w; i += WG) {
        s += ld(base + i);
    }
    let mean = wg_sum(s, lane) / f32(w);
    var q = 0.0;
    for (var i = lid; i < w; i += WG) {
        let d = ld(base + i) - mean;
        q += d * d;
    }
    let var_ = wg_sum(q, lane) / f32(w);
    let inv = 1.0 / sqrt(var_ + p.eps);
    for (var i = lid; i < w; i += WG) {
        let v = (ld(base + i) - mean) * inv * f32(gamma[i]) + f32(beta[i]);
        y[base + i] = YT(v);
    }
}
