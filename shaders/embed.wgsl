// embed.wgsl — the text input and the pooling: gathers of whole rows.
//
// token_embed: out[r, :] = table[tok[r].x, :] + pos[tok[r].y, :]   (tok: id and position of
//              every token row of the ragged batch, made on the host).
// pool (POOL): pooled[s, :] = x[seqs[s].x, :] (last = 0, the class token) or
//              x[seqs[s].x + seqs[s].y - 1, :] (last = 1, the EOT token).
// (The vision input, the patch embedding, is patch_embed.wgsl.)
//
// The token table may be larger than one storage binding may be (49408 × 768 f32 is 152 MB,
// lavapipe's limit 128 MiB): the engine uploads it in parts of `part_rows` rows each, bound
// as table0 … table3; row `id` is row id % part_rows of part id / part_rows (unused parts are
// bound to part 0 and never read).
//
// Shape: one invocation per vec4 of output; workgroups of 64.
// Dispatch: token_embed (ceil(rows·w4 / 64) split as x ≤ 65535 and y, 1);
//           pool (ceil(w4 / 64), sequences, 1)  (src/gpu/embed.rs).
//
// Bindings (group 0): declared once, in src/gpu/embed.rs (`slots`), generated into the header:
//   token_embed: p (uniform Params), emb_out (vec4<ET>, read_write), pos (vec4<TT>),
//                tok (vec2<u32>), table0 … table3 (vec4<TT>)
//   pool:        p, pooled (vec4<PT>, read_write), x (vec4<XT>), seqs (vec2<u32>)
// Generated header (src/gpu/wgsl.rs): aliases ET, TT, PT, XT; flag POOL (the entry point).

// Uniform block: embed::EmbedParams in src/gpu/embed.rs.
struct Params {
    w4: u32,        // row width / 4
    rows: u32,      // token rows (token_embed) or sequences (pool)
    last: u32,      // pool: 1 = last token of each sequence, 0 = first
    stride: u32,    // token_embed: invocations per dispatch row (x workgroups · 64)
    part_rows: u32, // token_embed: rows of each part of the table
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

//#if !POOL
fn table_row(id: u32, c: u32) -> vec4<f32> {
    let part = id / p.part_rows;
    let i = (id % p.part_rows) * p.w4 + c;
    var v: vec4<f32>;
    switch part {
        case 0u: {
            v = vec4<f32>(table0[i]);
        }
        case 1u: {
            v = vec4<f32>(table1[i]);
        }
        case 2u: {
            v = vec4<f32>(table2[i]);
        }
        default: {
            v = vec4<f32>(table3[i]);
        }
    }
    return v;
}

@compute @workgroup_size(64, 1, 1)
fn token_embed(@builtin(global_invocation_id) gid: vec3<u32>) {
    let idx = gid.y * p.stride + gid.x;
    if (idx >= p.rows * p.w4) {
        return;
    }
    let r = idx / p.w4;
    let c = idx % p.w4;
    let t = tok[r];
    let v = table_row(t.x, c) + vec4<f32>(pos[t.y * p.w4 + c]);
    emb_out[idx] = vec4<ET>(v);
}
//#else
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
//#endif
