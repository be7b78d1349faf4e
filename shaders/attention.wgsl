// attention.wgsl — multi-head self-attention of a ragged batch, in one dispatch.
//
// Computes, for every sequence s, head h and query row i of s:
//   out[i, h] = Σ_j softmax_j(q_i · k_j / √d) · v_j     (j ≤ i when CAUSAL)
// from fused q|k|v rows (each row: q, then k, then v, each `width` wide, heads side by side).
// Sequence s owns rows seqs[s].x .. seqs[s].x + seqs[s].y of qkv and out (ragged batch).
//
// Shape: one workgroup per (head, sequence); 64 invocations, each owning query rows
// i = lid, lid + 64, …; q and the output accumulator live in registers (HD4 = d/4 vec4s),
// keys and values are read straight from storage (they are shared through the cache).
// Two passes over the keys: the row maximum of the scores, then exp, sum and the weighted
// sum of values; f32 throughout. No workgroup memory, no barriers; any length works (77 text
// tokens; 50, 197, 257 or 577 image tokens).
// Dispatch: (heads, sequences, 1).
//
// Bindings (group 0): declared once, in src/gpu/attention.rs (SLOTS), generated into the
// header: p (uniform Params), qkv (vec4<QT>), seqs (vec2<u32>: offset, length), out
// (vec4<OT>, read_write).
// Generated header (src/gpu/wgsl.rs): aliases QT, OT; consts HD4: u32 (head_dim / 4),
// CAUSAL: bool.

// Uniform block: attention::AttentionParams in src/gpu/attention.rs.
struct Params {
    width4: u32, // model width / 4
    heads: u32,
    scale: f32,  // 1 / sqrt(head_dim)
    _pad: u32,
}

const WG: u32 = 64u;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let seq = seqs[wid.y];
    let off = seq.x;
    let len = seq.y;
    let row4 = 3u * p.width4;
    let hq = h * HD4;
    for (var i = lid; i < len; i += WG) {
        let qb = (off + i) * row4 + hq;
        var q: array<vec4<f32>, HD4>;
        for (var d = 0u; d < HD4; d++) {
            q[d] = vec4<f32>(qkv[qb + d]) * p.scale;
        }
        var end = len;
        if (CAUSAL) {
            end = i + 1u;
        }
        var mx = -3.0e38;
        for (var j = 0u; j < end; j++) {
            let kb = (off + j) * row4 + p.width4 + hq;
            var s = 0.0;
            for (var d = 0u; d < HD4; d++) {
                s += dot(q[d], vec4<f32>(qkv[kb + d]));
            }
            mx = max(mx, s);
        }
        var o: array<vec4<f32>, HD4>;
        for (var d = 0u; d < HD4; d++) {
            o[d] = vec4<f32>(0.0);
        }
        var sum = 0.0;
        for (var j = 0u; j < end; j++) {
            let kb = (off + j) * row4 + p.width4 + hq;
            var s = 0.0;
            for (var d = 0u; d < HD4; d++) {
                s += dot(q[d], vec4<f32>(qkv[kb + d]));
            }
            let e = exp(s - mx);
            sum += e;
            let vb = kb + p.width4;
            for (var d = 0u; d < HD4; d++) {
                o[d] += e * vec4<f32>(qkv[vb + d]);
            }
        }
        let inv = 1.0 / sum;
        let ob = (off + i) * p.width4 + hq;
        for (var d = 0u; d < HD4; d++) {
            out[ob + d] = vec4<OT>(o[d] * inv);
        }
    }
}
