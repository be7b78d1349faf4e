// matmul_coop.wgsl — the linear layer on cooperative matrices (tensor cores).
//
// Computes  Y[m, n] (+)= act( X[m, :] · W[n, :] + b[n] )  with W stored [out, in] as PyTorch
// keeps it: the same semantics and the same bindings as matmul.wgsl without PATCH, so the
// executor swaps one for the other. Products are 16×16×16 f16 cooperative matrices with f32
// accumulation (`coopMultiplyAdd`); bias, activation, residual and the output conversion are
// applied in f32 by the epilogue.
//
// UNRUN ON HARDWARE: it is naga-validated and written as SPIR-V by the tests, but no adapter it
// has been run on so far offered EXPERIMENTAL_COOPERATIVE_MATRIX. The engine runs it only after
// a self-check against an f64 reference at build time (src/gpu/selfcheck.rs).
//
// Tiling (the layout that measured best among the probes of docs/gpu-hardware.md):
//   * a workgroup computes a BM×BN = 128×128 block of Y with 256 invocations = 8 subgroups of
//     32 (the subgroup size must be 32: the engine selects this kernel only where it is);
//   * subgroup s owns rows (s / 4)·64 … +64 and columns (s % 4)·32 … +32 of the block:
//     4×2 accumulator tiles of 16×16 (several tiles per subgroup: each A tile feeds 2
//     products, each B tile 4);
//   * K is walked BK = 32 at a time. X[128 rows][32] and W[128 rows][32] are staged in
//     workgroup memory as f16, each row padded by 8 halves (stride 40) against bank
//     conflicts, double-buffered: step t loads step t+1's slices into the other buffer
//     before it multiplies, so there is one barrier per step. A tiles are read row-major
//     (`coopLoadT`, stride 40); the staged W rows are the B tile's columns (`coopLoad`,
//     column-major, stride 40).
//   * epilogue: an f32 accumulator tile cannot be converted to f16 in WGSL, so each subgroup
//     stores its tiles one at a time into its own 16×16 f32 scratch (`coopStoreT`), and its
//     32 lanes apply bias, activation, residual and the store to Y, 8 elements each.
// Bounds: any M and N (out-of-range rows and columns are clamped on load and skipped on
// store); K must be a multiple of 32 (every CLIP width is: 512, 768, 2048, 3072).
// Workgroup memory: 2·2·128·40 halves (40 960 B) + 8·256 f32 (8 192 B) = WG_BYTES = 49 152 B,
// the H100's limit through wgpu (48 KiB); the engine checks the device limit.
// Dispatch: (ceil(n / 128), ceil(m / 128), 1).
//
// Bindings (group 0): declared once, in src/gpu/matmul.rs (SLOTS, shared with matmul.wgsl),
// and generated into the header: p (uniform Params), x (X rows, vec4<XT>, XT = f16),
// w (W, vec4<WT>, WT = f16), bias (b[n], WT), y (Y, YT, read_write; read too when ACCUMULATE).
//
// Generated header (src/gpu/wgsl.rs): `enable f16;`, `enable wgpu_cooperative_matrix;`,
// aliases XT, WT (f16), YT (f16 or f32); the epilogue consts HAS_BIAS, ACT, ACCUMULATE and
// shaders/epilogue.wgsl appended. Needs SHADER_F16, SUBGROUP (the subgroup_id builtin) and
// EXPERIMENTAL_COOPERATIVE_MATRIX with the 16×16×16 f16→f32 configuration.
//
// Pitfalls followed (docs/gpu-hardware.md): no module-level names A, B, C (they would shadow the matrix
// roles); coopLoad only through f16 element pointers; no bitcast to vec2<f16>.

// Uniform block: matmul::MatmulParams in src/gpu/matmul.rs (the same as matmul.wgsl's).
struct Params {
    m: u32,  // rows of X and Y
    n: u32,  // columns of Y = rows of W
    k4: u32, // K / 4
    _pad: u32,
}

const BM: u32 = 128u;
const BN: u32 = 128u;
const BK: u32 = 32u;
const LDS: u32 = 40u; // BK + 8: padded row stride of the staged slices, in halves
const STAGE_X: u32 = 5120u; // BM * LDS halves per buffer
const STAGE_W: u32 = 5120u; // BN * LDS
const WG_BYTES: u32 = 49152u; // 2*(STAGE_X+STAGE_W)*2 + 8*256*4

var<workgroup> xs: array<f16, 10240>; // 2 * STAGE_X
var<workgroup> ws: array<f16, 10240>; // 2 * STAGE_W
var<workgroup> cs: array<f32, 2048>; // 8 subgroups * 16*16

// Copies the K slice [k0, k0 + BK) of the block's 128 X rows and 128 W rows into buffer `buf`:
// 1024 vec4 each, 4 per invocation. Rows past m or n are clamped (never stored).
fn stage(lid: u32, m0: u32, n0: u32, k0: u32, buf: u32) {
    let k4 = p.k4;
    for (var j = 0u; j < 4u; j++) {
        let idx = lid + j * 256u;
        let row = idx / 8u;
        let q = idx % 8u;
        let xr = min(m0 + row, p.m - 1u);
        let a = x[xr * k4 + k0 / 4u + q];
        let xo = buf * STAGE_X + row * LDS + q * 4u;
        xs[xo] = f16(a.x);
        xs[xo + 1u] = f16(a.y);
        xs[xo + 2u] = f16(a.z);
        xs[xo + 3u] = f16(a.w);
        let wr = min(n0 + row, p.n - 1u);
        let b = w[wr * k4 + k0 / 4u + q];
        let wo = buf * STAGE_W + row * LDS + q * 4u;
        ws[wo] = f16(b.x);
        ws[wo + 1u] = f16(b.y);
        ws[wo + 2u] = f16(b.z);
        ws[wo + 3u] = f16(b.w);
    }
}

// Epilogue of one accumulator tile whose top-left output is (r0, c0): through this
// subgroup's scratch, 8 elements per lane. Called by every invocation of the workgroup
// (the barriers need uniform control flow).
fn finish(acc: coop_mat16x16<f32, C>, sg: u32, lane: u32, r0: u32, c0: u32) {
    let base = sg * 256u;
    coopStoreT(acc, &cs[base], 16u);
    workgroupBarrier();
    for (var i = 0u; i < 8u; i++) {
        let e = lane + i * 32u;
        let r = r0 + e / 16u;
        let c = c0 + e % 16u;
        if (r < p.m && c < p.n) {
            let idx = r * p.n + c;
            var b = 0.0;
            if (HAS_BIAS) {
                b = f32(bias[c]);
            }
            var old = 0.0;
            if (ACCUMULATE) {
                old = f32(y[idx]);
            }
            y[idx] = YT(epilogue(cs[base + e], b, old));
        }
    }
    workgroupBarrier();
}

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let m0 = wid.y * BM;
    let n0 = wid.x * BN;
    let sm = (sg / 4u) * 64u; // this subgroup's first row in the block
    let sn = (sg % 4u) * 32u; // and first column
    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();
    var c20 = coop_mat16x16<f32, C>();
    var c21 = coop_mat16x16<f32, C>();
    var c30 = coop_mat16x16<f32, C>();
    var c31 = coop_mat16x16<f32, C>();

    let steps = (p.k4 * 4u) / BK;
    stage(lid, m0, n0, 0u, 0u);
    workgroupBarrier();
    for (var t = 0u; t < steps; t++) {
        let cur = t % 2u;
        if (t + 1u < steps) {
            stage(lid, m0, n0, (t + 1u) * BK, 1u - cur);
        }
        let xo = cur * STAGE_X + sm * LDS;
        let wo = cur * STAGE_W + sn * LDS;
        for (var kk = 0u; kk < BK; kk += 16u) {
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&xs[xo + kk], LDS);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&xs[xo + 16u * LDS + kk], LDS);
            let a2 = coopLoadT<coop_mat16x16<f16, A>>(&xs[xo + 32u * LDS + kk], LDS);
            let a3 = coopLoadT<coop_mat16x16<f16, A>>(&xs[xo + 48u * LDS + kk], LDS);
            let b0 = coopLoad<coop_mat16x16<f16, B>>(&ws[wo + kk], LDS);
            let b1 = coopLoad<coop_mat16x16<f16, B>>(&ws[wo + 16u * LDS + kk], LDS);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
            c20 = coopMultiplyAdd(a2, b0, c20);
            c21 = coopMultiplyAdd(a2, b1, c21);
            c30 = coopMultiplyAdd(a3, b0, c30);
            c31 = coopMultiplyAdd(a3, b1, c31);
        }
        workgroupBarrier();
    }

    let r = m0 + sm;
    let c = n0 + sn;
    finish(c00, sg, lane, r, c);
    finish(c01, sg, lane, r, c + 16u);
    finish(c10, sg, lane, r + 16u, c);
    finish(c11, sg, lane, r + 16u, c + 16u);
    finish(c20, sg, lane, r + 32u, c);
    finish(c21, sg, lane, r + 32u, c + 16u);
    finish(c30, sg, lane, r + 48u, c);
    finish(c31, sg, lane, r + 48u, c + 16u);
}
