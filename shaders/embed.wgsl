// embed.wgsl — the text input: a gather of whole rows.
//
// token_embed: out[r, :] = table[tok[r].x, :] + pos[tok[r].y, :]   (tok: id and position of
//              every token row of the ragged batch, made on the host).
// (The vision input, the patch embedding, is patch_embed.wgsl; pooling is head.wgsl's.)
//
// The token table may be larger than one storage binding may be (49408 × 768 f32 is 152 MB,
// lavapipe's limit 128 MiB): the engine uploads it in parts of `part_rows` rows each, bound
// as table0 … table3; row `id` is row id % part_rows of part id / part_rows (unused parts are
// bound to part 0 and never read).
//
// Shape: one invocation per vec4 of output; workgroups of 64.
// Dispatch: (ceil(rows·w4 / 64) split as x ≤ 65535 and y, 1)  (src/gpu/embed.rs).
//
// Bindings (group 0): declared once, in src/gpu/embed.rs (`slots`), generated into the header:
//   p (uniform Params), emb_out (vec4<ET>, read_write), pos (vec4<TT>), tok (vec2<u32>),
//   table0 … table3 (vec4<TT>)
// Generated header (src/gpu/wgsl.rs): aliases ET, TT.

// Uniform block: embed::EmbedParams in src/gpu/embed.rs.
struct Params {
    w4: u32,        // row width / 4
    rows: u32,      // token rows
    stride: u32,    // invocations per dispatch row (x workgroups · 64)
    part_rows: u32, // rows of each part of the table
}

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
