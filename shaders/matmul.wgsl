// matmul.wgsl — the linear layer, and the patch embedding as a linear layer.
//
// Computes  Y[m, n] (+)= act( X[m, :] · W[n, :] + b[n] )  with W stored [out, in] as PyTorch
// keeps it (both operands contiguous along K, so every load is a vec4 along K).
// Accumulation is always f32, whatever the storage types.
//
// Variant `PATCH` (the vision input): X is the image batch itself (CHW f32 pixels) and the
// im2col is fused into the loads; output row r is token t = r % T of image r / T; token 0 is
// the class token (its X row reads as zeros) and the epilogue adds `class[n]` to it and
// `pos[t, n]` (bound as the bias) to every token.
//
// Tiling: register tiles, no workgroup memory and no barriers (lavapipe runs such kernels
// ~4× faster than shared-memory tiles): each invocation owns a 4×4 block of Y (4 rows × 4
// columns) and walks K four at a time: 8 vec4 loads feed 16 dot4 per step. Out-of-range
// rows and columns are clamped on load and skipped on store.
// Workgroup 8×8 invocations = a 32×32 tile of Y.
// Dispatch: (ceil(n / 32), ceil(m / 32), 1).
//
// Bindings (group 0):
//   0 uniform Params   1 x: X rows (vec4<XT>; PATCH: pixels vec4<f32>)   2 w: W (vec4<WT>)
//   3 bias: b[n] (WT; PATCH: pos [T, n])   4 y: Y (YT, read_write; read too when ACCUMULATE)
//   5 class: class embedding [n] (WT; PATCH only)
//
// Generated header (src/gpu/shader.rs): aliases XT, WT, YT; consts HAS_BIAS: bool,
// ACT: u32 (0 none, 1 QuickGELU, 2 GELU), ACCUMULATE: bool; flag PATCH.

struct Params {
    m: u32,      // rows of X and Y
    n: u32,      // columns of Y = rows of W
    k4: u32,     // K / 4
    tokens: u32, // PATCH: tokens per image (grid² + 1)
    grid: u32,   // PATCH: patches per side
    psize: u32,  // PATCH: patch side P (P % 4 == 0)
    image: u32,  // PATCH: image side S (S % 4 == 0)
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
//#if PATCH
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
//#else
@group(0) @binding(1) var<storage, read> x: array<vec4<XT>>;
//#endif
@group(0) @binding(2) var<storage, read> w: array<vec4<WT>>;
@group(0) @binding(3) var<storage, read> bias: array<WT>;
@group(0) @binding(4) var<storage, read_write> y: array<YT>;
//#if PATCH
@group(0) @binding(5) var<storage, read> class_emb: array<WT>;
//#endif

// erf-based GELU. erfc(|z|) by Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7), used on the
// tail directly so that negative inputs do not lose digits to cancellation.
fn gelu(v: f32) -> f32 {
    let z = abs(v) * 0.70710678118654752;
    let t = 1.0 / (1.0 + 0.3275911 * z);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    let erfc = poly * exp(-z * z);
    let cdf = select(0.5 * erfc, 1.0 - 0.5 * erfc, v >= 0.0);
    return v * cdf;
}

fn activation(v: f32) -> f32 {
    if (ACT == 1u) {
        return v / (1.0 + exp(-1.702 * v));
    }
    if (ACT == 2u) {
        return gelu(v);
    }
    return v;
}

fn dot4(a: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(dot(a, b0), dot(a, b1), dot(a, b2), dot(a, b3));
}

@compute @workgroup_size(8, 8, 1)
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
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
//#if PATCH
    // Row r → image s, token t; token 0 (class) reads zeros (mask 0).
    var xb: array<u32, 4>;
    var mask: array<f32, 4>;
    for (var i = 0u; i < 4u; i++) {
        let r = min(r0 + i, p.m - 1u);
        let s = r / p.tokens;
        let t = r % p.tokens;
        let pt = max(t, 1u) - 1u;
        let gy = pt / p.grid;
        let gx = pt % p.grid;
        // first pixel of the patch, in vec4 units
        xb[i] = (s * 3u * p.image * p.image + gy * p.psize * p.image + gx * p.psize) / 4u;
        mask[i] = select(1.0, 0.0, t == 0u);
    }
    let p4 = p.psize / 4u;
    let rows = 3u * p.psize; // (channel, dy) pairs
    var kw = 0u;
    for (var cd = 0u; cd < rows; cd++) {
        let c = cd / p.psize;
        let dy = cd % p.psize;
        let off = (c * p.image * p.image + dy * p.image) / 4u;
        for (var dx = 0u; dx < p4; dx++) {
            let a0 = x[xb[0] + off + dx] * mask[0];
            let a1 = x[xb[1] + off + dx] * mask[1];
            let a2 = x[xb[2] + off + dx] * mask[2];
            let a3 = x[xb[3] + off + dx] * mask[3];
            let b0 = vec4<f32>(w[w0 + kw]);
            let b1 = vec4<f32>(w[w1 + kw]);
            let b2 = vec4<f32>(w[w2 + kw]);
            let b3 = vec4<f32>(w[w3 + kw]);
            acc0 += dot4(a0, b0, b1, b2, b3);
            acc1 += dot4(a1, b0, b1, b2, b3);
            acc2 += dot4(a2, b0, b1, b2, b3);
            acc3 += dot4(a3, b0, b1, b2, b3);
            kw += 1u;
        }
    }
//#else
    let x0 = min(r0, p.m - 1u) * k4;
    let x1 = min(r0 + 1u, p.m - 1u) * k4;
    let x2 = min(r0 + 2u, p.m - 1u) * k4;
    let x3 = min(r0 + 3u, p.m - 1u) * k4;
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
//#endif
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
            var v = acc[i][j];
//#if PATCH
            let t = r % p.tokens;
            v += f32(bias[t * p.n + c]);
            if (t == 0u) {
                v += f32(class_emb[c]);
            }
//#else
            if (HAS_BIAS) {
                v += f32(bias[c]);
            }
            v = activation(v);
//#endif
            let idx = r * p.n + c;
            if (ACCUMULATE) {
                v += f32(y[idx]);
            }
            y[idx] = YT(v);
        }
    }
}
