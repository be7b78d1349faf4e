// matmul.wgsl — the linear layer.
//
// Computes  Y[m, n] (+)= act( X[m, :] · W[n, :] + b[n] )  with W stored [out, in] as PyTorch
// keeps it (both operands contiguous along K, so every load is a vec4 along K).
// Accumulation is always f32, whatever the storage types.
//
// Tiling: register tiles, no workgroup memory and no barriers (lavapipe runs such kernels
// ~4× faster than shared-memory tiles): each invocation owns a 4×4 block of Y (4 rows × 4
// columns) and walks K four at a time: 8 vec4 loads feed 16 dot4 per step. Out-of-range
// rows and columns are clamped on load and skipped on store.
// Workgroup 8×8 invocations = a 32×32 tile of Y.
// Dispatch: (ceil(n / 32), ceil(m / 32), 1)  (src/gpu/matmul.rs, `dispatch`).
//
// Bindings (group 0): declared once, in src/gpu/matmul.rs (SLOTS), and generated into the
// header: p (uniform Params), x (X rows, vec4<XT>), w (W, vec4<WT>), bias (b[n], WT),
// y (Y, YT, read_write; read too when ACCUMULATE).
//
// Generated header (src/gpu/wgsl.rs): aliases XT, WT, YT; the epilogue consts HAS_BIAS,
// ACT, ACCUMULATE, with shaders/epilogue.wgsl appended (`epilogue(acc, b, y_old)`).

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
