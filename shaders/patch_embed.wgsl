// patch_embed.wgsl — the vision input: the patch embedding, the class token and the
// position embedding, as one matmul with the im2col fused into the loads.
//
// Output row r is token t = r % T of image r / T (T = grid² + 1 tokens per image):
//   t = 0:  Y[r, n] = class[n] + pos[0, n]
//   t ≥ 1:  Y[r, n] = Σ_k patch_{t-1}(pixels)[k] · W[n, k] + pos[t, n]
// with patches in row-major order over the grid, each flattened channel-major [3, P, P]
// (k = (c·P + dy)·P + dx), W stored [width, 3·P·P]. Pixels are CHW f32, S×S per channel.
// Any patch size P and image size S (S a multiple of P): loads are scalar (a row of a patch
// starts anywhere), so ViT-B/32, B/16 and L/14 (224 or 336 px) all run here; with VEC4 (P a
// multiple of 4, hence S too) pixels and weights are loaded as vec4 (2.6× faster on lavapipe).
//
// Tiling: as matmul.wgsl, each invocation owns a 4×4 block of Y; workgroup 8×8 = 32×32.
// The class-token rows read zeros. Accumulation f32.
// Dispatch: (ceil(n / 32), ceil(m / 32), 1), m = images · T  (src/gpu/patch.rs).
//
// Bindings (group 0): declared once, in src/gpu/patch.rs (SLOTS), generated into the
// header: p (uniform Params), px (pixels, f32; VEC4: vec4<f32>), w (W, WT; VEC4: vec4<WT>),
// pos (position embedding [T, n], WT), y (Y, YT, read_write), class_emb (class embedding [n], WT).
// Generated header (src/gpu/wgsl.rs): aliases WT, YT; flag VEC4.

// Uniform block: patch::PatchParams in src/gpu/patch.rs.
struct Params {
    m: u32,      // rows of Y: images · tokens
    n: u32,      // width
    k: u32,      // 3 · P · P
    tokens: u32, // T = grid² + 1
    grid: u32,   // patches per side
    psize: u32,  // P
    image: u32,  // S
    _pad: u32,
}

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c0 = gid.x * 4u;
    let r0 = gid.y * 4u;
    if (c0 >= p.n || r0 >= p.m) {
        return;
    }
    let k = p.k;
    var wb: array<u32, 4>;
    for (var j = 0u; j < 4u; j++) {
        wb[j] = min(c0 + j, p.n - 1u) * k;
    }
    // Row i → image s, token t, first pixel of its patch; the class token reads zeros.
    var xb: array<u32, 4>;
    var mask: array<f32, 4>;
    for (var i = 0u; i < 4u; i++) {
        let r = min(r0 + i, p.m - 1u);
        let s = r / p.tokens;
        let t = r % p.tokens;
        let pt = max(t, 1u) - 1u;
        let gy = pt / p.grid;
        let gx = pt % p.grid;
        xb[i] = s * 3u * p.image * p.image + gy * p.psize * p.image + gx * p.psize;
        mask[i] = select(1.0, 0.0, t == 0u);
    }
    var acc: array<vec4<f32>, 4>;
    var kw = 0u;
//#if VEC4
    // Everything in vec4 units: the patch rows start at multiples of 4 pixels.
    let p4 = p.psize / 4u;
    for (var cd = 0u; cd < 3u * p.psize; cd++) {
        let c = cd / p.psize;
        let dy = cd % p.psize;
        let off = (c * p.image * p.image + dy * p.image) / 4u;
        for (var dx = 0u; dx < p4; dx++) {
            let a0 = px[xb[0] / 4u + off + dx] * mask[0];
            let a1 = px[xb[1] / 4u + off + dx] * mask[1];
            let a2 = px[xb[2] / 4u + off + dx] * mask[2];
            let a3 = px[xb[3] / 4u + off + dx] * mask[3];
            let b0 = vec4<f32>(w[wb[0] / 4u + kw]);
            let b1 = vec4<f32>(w[wb[1] / 4u + kw]);
            let b2 = vec4<f32>(w[wb[2] / 4u + kw]);
            let b3 = vec4<f32>(w[wb[3] / 4u + kw]);
            acc[0] += vec4<f32>(dot(a0, b0), dot(a0, b1), dot(a0, b2), dot(a0, b3));
            acc[1] += vec4<f32>(dot(a1, b0), dot(a1, b1), dot(a1, b2), dot(a1, b3));
            acc[2] += vec4<f32>(dot(a2, b0), dot(a2, b1), dot(a2, b2), dot(a2, b3));
            acc[3] += vec4<f32>(dot(a3, b0), dot(a3, b1), dot(a3, b2), dot(a3, b3));
            kw += 1u;
        }
    }
//#else
    for (var cd = 0u; cd < 3u * p.psize; cd++) {
        // (channel, dy) row of the patch
        let c = cd / p.psize;
        let dy = cd % p.psize;
        let off = c * p.image * p.image + dy * p.image;
        for (var dx = 0u; dx < p.psize; dx++) {
            let a = vec4<f32>(
                px[xb[0] + off + dx] * mask[0],
                px[xb[1] + off + dx] * mask[1],
                px[xb[2] + off + dx] * mask[2],
                px[xb[3] + off + dx] * mask[3],
            );
            let b = vec4<f32>(f32(w[wb[0] + kw]), f32(w[wb[1] + kw]), f32(w[wb[2] + kw]), f32(w[wb[3] + kw]));
            // acc[i][j] += a[i] · b[j]
            acc[0] += a.x * b;
            acc[1] += a.y * b;
            acc[2] += a.z * b;
            acc[3] += a.w * b;
            kw += 1u;
        }
    }
//#endif
    for (var i = 0u; i < 4u; i++) {
        let r = r0 + i;
        if (r >= p.m) {
            break;
        }
        let t = r % p.tokens;
        for (var j = 0u; j < 4u; j++) {
            let c = c0 + j;
            if (c >= p.n) {
                break;
            }
            var v = acc[i][j] + f32(pos[t * p.n + c]);
            if (t == 0u) {
                v += f32(class_emb[c]);
            }
            y[r * p.n + c] = YT(v);
        }
    }
}
