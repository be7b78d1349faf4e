// head.wgsl — a tower's last four steps in one kernel: pooling, the final layernorm, the
// projection and the L2 normalisation.
//
// For each sequence s (rows seqs[s].x … seqs[s].x + seqs[s].y - 1 of the token rows x):
//   r      = seqs[s].x (last = 0: the class token) or seqs[s].x + seqs[s].y - 1 (last = 1: EOT)
//   h      = (x[r, :] - mean) / sqrt(var + eps) · gamma + beta        (f32, two passes)
//   e[j]   = Σ_i h[i] · proj[j, i] (+ bias[j] where has_bias)          (j < d; proj is [d, w])
//   out[s] = e / ‖e‖  (a row of norm 0 is left as it is)
// The same arithmetic as the separate pool, layernorm, matmul and l2-normalize kernels it
// replaces (three dispatches fewer per tower); f32 throughout, whatever the storage types.
//
// Shape: one workgroup of WG = 256 invocations per sequence. The row is read once into
// workgroup memory (`h`, at most MAXW = 2048 values: the engine refuses wider towers), the
// sums are reduced by a workgroup-memory tree, and invocation l computes outputs l, l + WG, …
// reading its row of proj as vec4 along w (w % 4 == 0) and h from workgroup memory; it writes
// them unnormalised, then rescales its own outputs once the norm is known (no barrier needed
// between an invocation's own write and read).
// Dispatch: (sequences, 1, 1)  (src/gpu/head.rs).
//
// Bindings (group 0): declared once, in src/gpu/head.rs (SLOTS), generated into the header:
// p (uniform Params), out (f32, read_write), x (XT), seqs (vec2<u32>), gamma, beta (WT),
// proj (vec4<WT>), bias (WT; a dummy without has_bias).
// Generated header (src/gpu/wgsl.rs): aliases XT (token rows), WT (parameters); const MAXW.

// Uniform block: head::HeadParams in src/gpu/head.rs.
struct Params {
    w: u32,    // token row width
    d: u32,    // embedding width (rows of proj)
    last: u32, // 1: pool the last row of each sequence (text), 0: the first (vision)
    eps: f32,
    has_bias: u32, // 1: add bias[j]
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const WG: u32 = 256u;

var<workgroup> h: array<f32, MAXW>;
var<workgroup> red: array<f32, WG>;

fn wg_sum(v: f32, lid: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var st = WG / 2u; st > 0u; st >>= 1u) {
        if (lid < st) {
            red[lid] += red[lid + st];
        }
        workgroupBarrier();
    }
    let t = red[0];
    workgroupBarrier();
    return t;
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let s = wid.x;
    let w = p.w;
    let seq = seqs[s];
    var r = seq.x;
    if (p.last == 1u) {
        r = seq.x + seq.y - 1u;
    }
    let base = r * w;
    var sum = 0.0;
    for (var i = lid; i < w; i += WG) {
        let v = f32(x[base + i]);
        h[i] = v;
        sum += v;
    }
    let mean = wg_sum(sum, lid) / f32(w);
    var q = 0.0;
    for (var i = lid; i < w; i += WG) {
        let dv = h[i] - mean;
        q += dv * dv;
    }
    let inv = 1.0 / sqrt(wg_sum(q, lid) / f32(w) + p.eps);
    for (var i = lid; i < w; i += WG) {
        h[i] = (h[i] - mean) * inv * f32(gamma[i]) + f32(beta[i]);
    }
    workgroupBarrier();
    let w4 = w / 4u;
    let o = s * p.d;
    var sq = 0.0;
    for (var j = lid; j < p.d; j += WG) {
        var acc = 0.0;
        let row = j * w4;
        for (var k = 0u; k < w4; k++) {
            let hv = vec4<f32>(h[4u * k], h[4u * k + 1u], h[4u * k + 2u], h[4u * k + 3u]);
            acc += dot(hv, vec4<f32>(proj[row + k]));
        }
        if (p.has_bias == 1u) {
            acc += f32(bias[j]);
        }
        out[o + j] = acc;
        sq += acc * acc;
    }
    let n = sqrt(wg_sum(sq, lid));
    if (n > 0.0) {
        for (var j = lid; j < p.d; j += WG) {
            out[o + j] = out[o + j] / n;
        }
    }
}
