// embed.wgsl — the text input and the pooling: gathers of whole rows.
//
// token_embed: out[r, :] = table[tok[r].x, :] + pos[tok[r].y, :]   (tok: id and position of
//              every token row of the ragged batch, made on the host).
// pool:        pooled[s, :] = x[seqs[s].x, :] (LAST = 0, the class token) or
//              x[seqs[s].x + seqs[s].y - 1, :] (LAST = 1, the EOT token).
// (The vision input, the patch embedding, is a matmul variant: matmul.wgsl, PATCH.)
//
// Shape: one invocation per vec4 of output; workgroups of 64.
// Dispatch: token_embed (ceil(rows·w4 / 64) split as x ≤ 65535 and y, 1);
//           pool (ceil(w4 / 64), sequences, 1).
//
// Bindings (group 0): 0 uniform Params;
//   token_embed: 1 out (vec4<ET>, read_write); 2 table (vec4<TT>); 3 pos (vec4<TT>); 4 tok (vec2<u32>)
//   pool:        5 pooled (vec4<PT>, read_write); 6 x (vec4<XT>); 7 seqs (vec2<u32>)
// Generated header: aliases ET, TT, PT, XT.

struct Params {
    w4: u32,     // row width / 4
    rows: u32,   // token rows (token_embed) or sequences (pool)
    last: u32,   // pool: 1 = last token of each sequence, 0 = first
    stride: u32, // token_embed: invocations per dispatch row (x workgroups · 64)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> emb_out: array<vec4<ET>>;
@group(0) @binding(2) var<storage, read> table: array<vec4<TT>>;
@group(0) @binding(3) var<storage, read> pos: array<vec4<TT>>;
@group(0) @binding(4) var<storage, read> tok: array<vec2<u32>>;
@group(0) @binding(5) var<storage, read_write> pooled: array<vec4<PT>>;
@group(0) @binding(6) var<storage, read> x: array<vec4<XT>>;
@group(0) @binding(7) var<storage, read> seqs: array<vec2<u32>>;

@compute @workgroup_size(64, 1, 1)
fn token_embed(@builtin(global_invocation_id) gid: vec3<u32>) {
    let idx = gid.y * p.stride + gid.x;
    if (idx >= p.rows * p.w4) {
        return;
    }
    let r = idx / p.w4;
    let c = idx % p.w4;
    let t = tok[r];
    let v = vec4<f32>(table[t.x * p.w4 + c]) + vec4<f32>(pos[t.y * p.w4 + c]);
    emb_out[idx] = vec4<ET>(v);
}

@compute @workgroup_size(64, 1, 1)
fn pool(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let s = gid.y;
    if (c >= p.w4 || s >= p.rows) {
        return;
    }
    let seq = seqs[s];
    var r = seq.x;
    if (p.last == 1u) {
        r = seq.x + seq.y - 1u;
    }
    pooled[s * p.w4 + c] = vec4<PT>(vec4<f32>(x[r * p.w4 + c]));
}
