//! The model, described once: the sequence of operations each tower performs. The CPU
//! backend interprets it directly and the GPU backend records one dispatch per op (or
//! fuses neighbours); neither restates the wiring.
//!
//! Activations are row-major `[rows, width]` matrices. A batch is *ragged*: sequence `s`
//! owns rows `offsets[s]..offsets[s]+lens[s]` of every per-token activation. Images all
//! have `grid²+1` tokens; a text has exactly `eot+1` tokens (attention is causal and the
//! embedding is read at the EOT position, so the positions after it never matter). Row-wise
//! ops (layernorm, linear layers) therefore run on all tokens of the batch at once, and
//! only attention looks at sequence boundaries.

use super::config::{Activation, ClipConfig, TextConfig};
use super::weights::{LayerNormW, LinearW, ParamId, Weights};

/// The towers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Tower {
    Vision,
    Text,
}

/// Activation buffers a program uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Act {
    /// The residual stream, `[tokens, width]`.
    X,
    /// A layernormed copy of the stream, `[tokens, width]`.
    H,
    /// Fused q|k|v, `[tokens, 3·width]`.
    Qkv,
    /// Attention output (heads concatenated), `[tokens, width]`.
    Attn,
    /// MLP hidden, `[tokens, mlp]`.
    Mlp,
    /// The projected embeddings, `[seqs, embed_dim]`.
    Embed,
}

/// How many rows an activation has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    Tokens,
    Seqs,
}

/// Which token of each sequence is pooled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolAt {
    /// The class token (vision).
    First,
    /// The EOT token (text), which the ragged layout puts last.
    Last,
}

#[derive(Debug, Clone)]
pub enum Op {
    /// Vision input: `X[s·T] = class + pos[0]`, `X[s·T+1+p] = patch_p(pixels_s)·Wᵀ + pos[1+p]`,
    /// patches in row-major order over the grid, each flattened channel-major `[3, P, P]`.
    PatchEmbed { patch: LinearW, class: ParamId, pos: ParamId, out: Act },
    /// Text input: `X[row] = table[id] + pos[position in its sequence]`.
    TokenEmbed { table: ParamId, pos: ParamId, out: Act },
    /// Per-row layernorm (may be in place).
    LayerNorm { x: Act, ln: LayerNormW, eps: f32, out: Act },
    /// `out = act(x·Wᵀ + b)`, or `out += x·Wᵀ + b` when `accumulate` (the residual add).
    Linear { x: Act, lin: LinearW, act: Option<Activation>, accumulate: bool, out: Act },
    /// Multi-head self-attention within each sequence, from fused q|k|v rows; scale `1/√head_dim`.
    Attention { qkv: Act, out: Act, heads: usize, head_dim: usize, causal: bool },
    /// The tower's end, per sequence: its pooled row of `x` (`at`), layernormed, projected
    /// (`proj`, `x`'s width in, the embedding width out) and scaled to unit L2 norm (a zero
    /// row stays zero): `out[s] = l2(proj(layernorm(x[pool row of s])))`. One op, so that a
    /// backend may run it as one kernel (the GPU does); layernorm being per row, pooling
    /// first is the same as HF's normalise-everything-then-pool, at a fraction of the work.
    Head { x: Act, at: PoolAt, ln: LayerNormW, eps: f32, proj: LinearW, out: Act },
}

impl Op {
    /// A short name of the op's kind (profiles, GPU labels).
    pub fn kind(&self) -> &'static str {
        match self {
            Op::PatchEmbed { .. } => "patch_embed",
            Op::TokenEmbed { .. } => "token_embed",
            Op::LayerNorm { .. } => "layernorm",
            Op::Linear { act: Some(_), .. } => "linear+act",
            Op::Linear { accumulate: true, .. } => "linear+residual",
            Op::Linear { .. } => "linear",
            Op::Attention { .. } => "attention",
            Op::Head { .. } => "head",
        }
    }

    /// The epilogue of a linear layer (`None` for the other ops).
    pub fn epilogue(&self) -> Option<Epilogue> {
        match *self {
            Op::Linear { lin, act, accumulate, .. } => Some(Epilogue { bias: lin.bias.is_some(), act, accumulate }),
            _ => None,
        }
    }
}

/// What a linear layer does after its product, `y (+)= act(x·Wᵀ + b)`: the one epilogue type
/// of every matmul (the CPU engine's, the GPU's plain and cooperative-matrix kernels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Epilogue {
    /// `+ b` (the layer has a bias).
    pub bias: bool,
    /// The activation, applied after the bias (`None`: identity).
    pub act: Option<Activation>,
    /// `y += …` instead of `y = …` (the residual add).
    pub accumulate: bool,
}

impl Epilogue {
    /// Every epilogue (for the kernel catalogs).
    pub fn all() -> Vec<Epilogue> {
        let mut v = Vec::new();
        for bias in [false, true] {
            for act in [None, Some(Activation::QuickGelu), Some(Activation::Gelu)] {
                for accumulate in [false, true] {
                    v.push(Epilogue { bias, act, accumulate });
                }
            }
        }
        v
    }
    /// A total order key (the activation type itself is not ordered).
    fn rank(&self) -> (bool, u8, bool) {
        let a = match self.act {
            None => 0,
            Some(Activation::QuickGelu) => 1,
            Some(Activation::Gelu) => 2,
        };
        (self.bias, a, self.accumulate)
    }
}

impl std::hash::Hash for Epilogue {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.rank().hash(h)
    }
}
impl PartialOrd for Epilogue {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Epilogue {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.rank().cmp(&o.rank())
    }
}

/// A tower's complete program.
#[derive(Debug, Clone)]
pub struct Program {
    pub tower: Tower,
    pub ops: Vec<Op>,
    /// Width (columns) of each activation the program uses.
    pub widths: Vec<(Act, usize, Rows)>,
    /// The activation holding the final embeddings.
    pub output: Act,
    pub embed_dim: usize,
}

impl Program {
    pub fn width(&self, a: Act) -> usize {
        self.widths.iter().find(|w| w.0 == a).map(|w| w.1).expect("activation not in program")
    }
    pub fn rows(&self, a: Act) -> Rows {
        self.widths.iter().find(|w| w.0 == a).map(|w| w.2).expect("activation not in program")
    }

    /// Where only the pooled rows still matter: `(i, at)` when every op after op `i` works
    /// row by row (layernorms, linear layers) up to the closing [`Op::Head`], which reads one
    /// row per sequence (`at`). Op `i` is the last one that mixes rows (the last attention).
    /// After it, a backend may keep only each sequence's pooled row of every per-token
    /// activation and run the rest on those rows alone, with the same result for them: in
    /// CLIP, the last layer's output projection and MLP (a twelfth of the work of a
    /// 12-layer tower, 6 %) then run on one row per sequence instead of 50 or 77.
    /// `None` when there is no such tail.
    pub fn pooled_tail(&self) -> Option<(usize, PoolAt)> {
        let Some(Op::Head { at, .. }) = self.ops.last() else { return None };
        let cut = self
            .ops
            .iter()
            .rposition(|op| !matches!(op, Op::LayerNorm { .. } | Op::Linear { .. } | Op::Head { .. }))?;
        (cut + 2 < self.ops.len()).then_some((cut, *at))
    }

    /// The program of one tower.
    pub fn new(tower: Tower, cfg: &ClipConfig, w: &Weights) -> Program {
        let (t, blocks, first, ln_final, proj, at) = match tower {
            Tower::Vision => (
                &cfg.vision.tower,
                &w.vision.blocks,
                Op::PatchEmbed { patch: w.vision.patch, class: w.vision.class, pos: w.vision.pos, out: Act::X },
                w.vision.ln_post,
                w.vision.proj,
                PoolAt::First,
            ),
            Tower::Text => (
                &cfg.text.tower,
                &w.text.blocks,
                Op::TokenEmbed { table: w.text.token, pos: w.text.pos, out: Act::X },
                w.text.ln_final,
                w.text.proj,
                PoolAt::Last,
            ),
        };
        let eps = t.layer_norm_eps;
        let mut ops = vec![first];
        if tower == Tower::Vision {
            ops.push(Op::LayerNorm { x: Act::X, ln: w.vision.ln_pre, eps, out: Act::X });
        }
        for b in blocks {
            ops.push(Op::LayerNorm { x: Act::X, ln: b.ln1, eps, out: Act::H });
            ops.push(Op::Linear { x: Act::H, lin: b.qkv, act: None, accumulate: false, out: Act::Qkv });
            ops.push(Op::Attention {
                qkv: Act::Qkv,
                out: Act::Attn,
                heads: t.heads,
                head_dim: t.head_dim(),
                causal: tower == Tower::Text,
            });
            ops.push(Op::Linear { x: Act::Attn, lin: b.out, act: None, accumulate: true, out: Act::X });
            ops.push(Op::LayerNorm { x: Act::X, ln: b.ln2, eps, out: Act::H });
            ops.push(Op::Linear { x: Act::H, lin: b.fc1, act: Some(t.activation), accumulate: false, out: Act::Mlp });
            ops.push(Op::Linear { x: Act::Mlp, lin: b.fc2, act: None, accumulate: true, out: Act::X });
        }
        ops.push(Op::Head { x: Act::X, at, ln: ln_final, eps, proj, out: Act::Embed });
        Program {
            tower,
            ops,
            widths: vec![
                (Act::X, t.width, Rows::Tokens),
                (Act::H, t.width, Rows::Tokens),
                (Act::Qkv, 3 * t.width, Rows::Tokens),
                (Act::Attn, t.width, Rows::Tokens),
                (Act::Mlp, t.mlp, Rows::Tokens),
                (Act::Embed, cfg.embed_dim, Rows::Seqs),
            ],
            output: Act::Embed,
            embed_dim: cfg.embed_dim,
        }
    }
}

/// The input of one batch.
#[derive(Debug, Clone)]
pub enum Input<'a> {
    /// `n` preprocessed images, CHW f32, `3·S·S` values each, back to back.
    Pixels { data: &'a [f32], n: usize },
    /// Token ids per text, each `[SOT, …, EOT]` and no longer than the context.
    Tokens(&'a [Vec<u32>]),
}

impl Input<'_> {
    /// The number of images or texts.
    pub fn len(&self) -> usize {
        match self {
            Input::Pixels { n, .. } => *n,
            Input::Tokens(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The one check of a batch of token id sequences (both engines' entry points use it): each
/// holds 1 to `context_length` ids, each below the vocabulary size.
pub fn check_tokens(texts: &[Vec<u32>], cfg: &TextConfig) -> Result<(), String> {
    for (i, ids) in texts.iter().enumerate() {
        if ids.is_empty() || ids.len() > cfg.context_length {
            return Err(format!(
                "token sequence #{i}: must hold 1 to {} ids below {}, got {} ids",
                cfg.context_length,
                cfg.vocab_size,
                ids.len()
            ));
        }
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= cfg.vocab_size) {
            return Err(format!("token sequence #{i}: token id {bad} ≥ the vocabulary size {}", cfg.vocab_size));
        }
    }
    Ok(())
}

/// How many positions of a text are computed: up to and including the first occurrence of
/// its highest id, which is where CLIP pools (OpenAI's `text.argmax(-1)`, transformers'
/// first EOT). That is the EOT a tokenizer appends, or an earlier one when the text itself
/// held `<|endoftext|>`. Causal attention makes the later positions irrelevant.
pub fn text_len(ids: &[u32]) -> usize {
    let mut best = 0;
    for (i, &id) in ids.iter().enumerate() {
        if id > ids[best] {
            best = i;
        }
    }
    (best + 1).min(ids.len())
}

/// Sequence boundaries of a ragged batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seqs {
    pub offsets: Vec<usize>,
    pub lens: Vec<usize>,
}

impl Seqs {
    /// The sequences of a batch: `grid²+1` tokens per image; for a text, the positions up
    /// to and including its pooling position (see [`text_len`]).
    pub fn of(input: &Input, cfg: &super::config::ClipConfig) -> Seqs {
        match input {
            Input::Pixels { n, .. } => Seqs::uniform(*n, cfg.vision.tokens()),
            Input::Tokens(ids) => Seqs::from_lens(ids.iter().map(|t| text_len(t)).collect()),
        }
    }

    pub fn uniform(n: usize, len: usize) -> Seqs {
        Seqs { offsets: (0..n).map(|i| i * len).collect(), lens: vec![len; n] }
    }
    pub fn from_lens(lens: Vec<usize>) -> Seqs {
        let mut offsets = Vec::with_capacity(lens.len());
        let mut acc = 0;
        for &l in &lens {
            offsets.push(acc);
            acc += l;
        }
        Seqs { offsets, lens }
    }
    pub fn count(&self) -> usize {
        self.lens.len()
    }
    pub fn tokens(&self) -> usize {
        self.lens.iter().sum()
    }

    /// The row of sequence `s` that is pooled at `at` (its first, or its last: a text's EOT).
    pub fn pooled_row(&self, s: usize, at: PoolAt) -> usize {
        match at {
            PoolAt::First => self.offsets[s],
            PoolAt::Last => self.offsets[s] + self.lens[s] - 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::text_len;

    #[test]
    fn text_len_stops_at_first_highest_id() {
        assert_eq!(text_len(&[49406, 320, 1929, 49407]), 4);
        assert_eq!(text_len(&[49406, 49407, 2912, 49407]), 2);
        assert_eq!(text_len(&[49406, 49407, 0, 0]), 2);
        assert_eq!(text_len(&[5]), 1);
        assert_eq!(text_len(&[]), 0);
    }
}
