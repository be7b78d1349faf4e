// matmul.wgsl — the linear layer.
//
// Computes  Y[m, n] (+)= act( X[m, :] · W[n, :] + b[n] )  with W stored [out, in] as PyTorch
// keeps it (both operands contiguous along K, so every load is a vec4 along K).
// Accumulation is always f32, whatever the storage types.
//
// Two tilings, chosen per variant (matmul::Tile in src/gpu/matmul.rs; which one runs a layer
// is the tile policy's choice, src/gpu/tiles.rs):
//
// * register tiles (no STAGED; reg32x32, reg64x64): no workgroup memory and no barriers
//   (lavapipe runs such kernels ~4× faster than shared-memory tiles): each invocation owns a
//   4×4 block of Y (4 rows × 4 columns) and walks K four at a time: 8 vec4 loads feed 16
//   dot4 per step. Out-of-range rows and columns are clamped on load and skipped on store.
//   Workgroup WGX×WGY invocations = a (4·WGY)×(4·WGX) tile of Y.
// * workgroup-memory tiles (STAGED; wg64x64k16, wg64x64k32, wg64x64k16db, wg128x64k16): a
//   workgroup of WGX×WGY invocations computes a BM×BN block (BM = WGY·TM, BN = WGX·4), each
//   invocation TM rows × 4 columns. K is walked BK4 vec4 (BK scalars) at a time: the block's
//   BM rows of X and BN rows of W for that K slice are staged in var<workgroup> as
//   vec4<f32> (converted from the storage type once), every invocation loading
//   (XS + WS) / (WGX·WGY) vec4, then a barrier, then BK4 steps of TM·4 dot4 from workgroup
//   memory. K need not be a multiple of BK: the slice past K is staged as zeros. DOUBLE
//   stages slice t+1 into the second buffer while slice t is used (one barrier per step
//   instead of two). No early return (the barriers need uniform control flow): out-of-range
//   rows and columns are clamped on load and skipped on store.
// Dispatch: (ceil(n / BN), ceil(m / BM), 1)  (src/gpu/matmul.rs, `Tile::dispatch`).
//
// Bindings (group 0): declared once, in src/gpu/matmul.rs (SLOTS), and generated into the
// header: p (uniform Params), x (X rows, vec4<XT>), w (W, vec4<WT>), bias (b[n], WT),
// y (Y, YT, read_write; read too when ACCUMULATE).
//
// Generated header (src/gpu/wgsl.rs): aliases XT, WT, YT; WGX, WGY; with STAGED the tile
// consts TM, BM, BN, BK4, XS, WS (vec4 per staging buffer), XS_ALL, WS_ALL (all buffers) and
// DOUBLE; the epilogue consts HAS_BIAS, ACT, ACCUMULATE, with shaders/epilogue.wgsl appended
// (`epilogue(acc, b, y_old)`).

// Uniform block: matmul::MatmulParams in src/gpu/matmul.rs.
struct Params {
    m: u32,  // rows of X and Y
    n: u32,  // columns of Y = rows of W
    k4: u32, // K / 4
    _pad: u32,
}

fn dot4(a: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(dot(a, b0), dot(a, b1), dot(a, b2), dot(a, b3));
}

//#if STAGED
var<workgroup> xs: array<vec4<f32>, XS_ALL>;
var<workgroup> ws: array<vec4<f32>, WS_ALL>;

// Stages the K slice [kq0, kq0 + BK4) (in vec4) of the block's BM rows of X and BN rows of W
// into buffer `buf`; vec4 past K are zeros, rows past m or n are clamped (never stored).
fn stage(lid: u32, m0: u32, n0: u32, kq0: u32, buf: u32) {
    let k4 = p.k4;
    for (var i = lid; i < XS; i += WGX * WGY) {
        let kq = kq0 + i % BK4;
        var v = vec4<f32>(0.0);
        if (kq < k4) {
            v = vec4<f32>(x[min(m0 + i / BK4, p.m - 1u) * k4 + kq]);
        }
        xs[buf * XS + i] = v;
    }
    for (var i = lid; i < WS; i += WGX * WGY) {
        let kq = kq0 + i % BK4;
        var v = vec4<f32>(0.0);
        if (kq < k4) {
            v = vec4<f32>(w[min(n0 + i / BK4, p.n - 1u) * k4 + kq]);
        }
        ws[buf * WS + i] = v;
    }
}

@compute @workgroup_size(WGX, WGY, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) l: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let m0 = wid.y * BM;
    let n0 = wid.x * BN;
    let tr = l.y * TM; // this invocation's first row in the block
    let tc = l.x * 4u; // and first column
    var acc: array<vec4<f32>, TM>;
    for (var i = 0u; i < TM; i++) {
        acc[i] = vec4<f32>(0.0);
    }
    let steps = (p.k4 + BK4 - 1u) / BK4;
    if (DOUBLE) {
        stage(lid, m0, n0, 0u, 0u);
        workgroupBarrier();
    }
    for (var t = 0u; t < steps; t++) {
        var cur = 0u;
        if (DOUBLE) {
            cur = t % 2u;
            if (t + 1u < steps) {
                stage(lid, m0, n0, (t + 1u) * BK4, 1u - cur);
            }
        } else {
            stage(lid, m0, n0, t * BK4, 0u);
            workgroupBarrier();
        }
        let xo = cur * XS + tr * BK4;
        let wo = cur * WS + tc * BK4;
        for (var q = 0u; q < BK4; q++) {
            let b0 = ws[wo + q];
            let b1 = ws[wo + BK4 + q];
            let b2 = ws[wo + 2u * BK4 + q];
            let b3 = ws[wo + 3u * BK4 + q];
            for (var i = 0u; i < TM; i++) {
                acc[i] += dot4(xs[xo + i * BK4 + q], b0, b1, b2, b3);
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < TM; i++) {
        let r = m0 + tr + i;
        if (r >= p.m) {
            break;
        }
        for (var j = 0u; j < 4u; j++) {
            let c = n0 + tc + j;
            if (c >= p.n) {
                break;
            }
            let idx = r * p.n + c;
            var b = 0.0;
            if (HAS_BIAS) {
                b = f32(bias[c]);
            }
            var old = 0.0;
            if (ACCUMULATE) {
                old = f32(y[idx]);
            }
            y[idx] = YT(epilogue(acc[i][j], b, old));
        }
    }
}
//#else
@compute @workgroup_size(WGX, WGY, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c0 = gid.x * 4u;
    let r0 = gid.y * 4u;
    if (c0 >= p.n || r0 >= p.m) {
        return;
    }
    let k4 = p.k4;
    let w0 = min(c0, p.n - 1u) * k4;
    let w1 = min(c0 + 1u, p.n - 1u) * k4;
    let w2 = min(c0 + 2u, p.n - 1u) * k4;
    let w3 = min(c0 + 3u, p.n - 1u) * k4;
    let x0 = min(r0, p.m - 1u) * k4;
    let x1 = min(r0 + 1u, p.m - 1u) * k4;
    let x2 = min(r0 + 2u, p.m - 1u) * k4;
    let x3 = min(r0 + 3u, p.m - 1u) * k4;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k = 0u; k < k4; k++) {
        let a0 = vec4<f32>(x[x0 + k]);
        let a1 = vec4<f32>(x[x1 + k]);
        let a2 = vec4<f32>(x[x2 + k]);
        let a3 = vec4<f32>(x[x3 + k]);
        let b0 = vec4<f32>(w[w0 + k]);
        let b1 = vec4<f32>(w[w1 + k]);
        let b2 = vec4<f32>(w[w2 + k]);
        let b3 = vec4<f32>(w[w3 + k]);
        acc0 += dot4(a0, b0, b1, b2, b3);
        acc1 += dot4(a1, b0, b1, b2, b3);
        acc2 += dot4(a2, b0, b1, b2, b3);
        acc3 += dot4(a3, b0, b1, b2, b3);
    }
    var acc = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var i = 0u; i < 4u; i++) {
        let r = r0 + i;
        if (r >= p.m) {
            break;
        }
        for (var j = 0u; j < 4u; j++) {
            let c = c0 + j;
            if (c >= p.n) {
                break;
            }
            let idx = r * p.n + c;
            var b = 0.0;
            if (HAS_BIAS) {
                b = f32(bias[c]);
            }
            var old = 0.0;
            if (ACCUMULATE) {
                old = f32(y[idx]);
            }
            y[idx] = YT(epilogue(acc[i][j], b, old));
        }
    }
}
//#endif
