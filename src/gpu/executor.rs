//! [`GpuEncoder`]: executes a tower's [`Program`] on the GPU, one dispatch per [`Op`](crate::model::Op). It only
//! walks the program: which kernel runs an op is the planner's ([`plan`](super::plan)), what
//! the op binds, its uniforms and its dispatch are the kernel family's
//! ([`Family`](super::family::Family)), the buffers and the recording the pool's
//! ([`pool`](super::pool)).
//!
//! * Pipelines are created once, in [`GpuEncoder::with_options`], for every kernel variant the
//!   two programs use; weights are uploaded once ([`WeightStore`]).
//! * The linear layers' tiles depend on the chunk's row bucket ([`TilePolicy`]): each tower has
//!   one plan per distinct choice, all made at build; a chunk runs its bucket's plan. The
//!   variants of one family share their bindings, so the pool's bind groups serve every plan.
//! * Activations live in a per-tower [`Pool`], sized for the largest chunk seen and grown only
//!   when a larger one comes; the bind groups of all ops are made with the pool.
//! * A batch is cut into chunks that fit the pool limits; each chunk is one command encoder,
//!   one compute pass with all the ops, one copy of the embeddings, one submit.

use std::sync::Mutex;

use super::context::Context;
use super::family::Chunk;
use super::matmul_coop::MatmulPath;
use super::pipeline_cache::{CacheReport, PipelineCache};
use super::plan::{act_dt, plan_kernels_tiled};
use super::pool::{create_kernels, ChunkCost, ChunkInput, Pool, Resources};
use super::selfcheck::choose_matmul;
use super::shader::KernelKey;
use super::tiles::{bucket_rows, row_buckets, Choice, TilePolicy, Tiles};
use super::types::{GpuError, Precision};
use super::weights::WeightStore;
#[cfg(not(target_arch = "wasm32"))]
use crate::model::Act;
use crate::model::{check_tokens, text_len, ClipConfig, Input, Params, Program, Rows, Seqs, Tower, Weights};

/// Chunk limits and kernel choices.
#[derive(Debug, Clone)]
pub struct GpuOptions {
    /// Most sequences (images or texts) per chunk.
    pub max_seqs: usize,
    /// Most token rows per chunk.
    pub max_tokens: usize,
    /// Use subgroup reductions where the device has SUBGROUP (`false` forces the
    /// workgroup-memory fallback, for testing it on devices that have subgroups).
    pub subgroups: bool,
    /// Which matmul kernel runs the linear layers (see [`MatmulPath`]).
    pub matmul: MatmulPath,
    /// The largest storage binding to use, in bytes, if less than the device allows (tests
    /// force a small one to exercise the splitting of large tables).
    pub max_binding: Option<u64>,
    /// The directory of the persisted pipeline cache (`None`: none). By default
    /// [`pipeline_cache::default_dir`](super::pipeline_cache::default_dir):
    /// `$CLIP_WGPU_PIPELINE_CACHE`, else `~/.cache/clip-wgpu`.
    pub pipeline_cache: Option<std::path::PathBuf>,
    /// The plain matmul's tiles: the cached tuner table or the shipped default, or forced
    /// (see [`Tiles`]).
    pub tiles: Tiles,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions {
            max_seqs: 256,
            max_tokens: 256 * 77,
            subgroups: true,
            matmul: MatmulPath::Auto,
            max_binding: None,
            pipeline_cache: super::pipeline_cache::default_dir(),
            tiles: Tiles::Auto,
        }
    }
}

/// What the encoder created and did (counters for the tests and `info`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct GpuStats {
    pub buffers_created: usize,
    pub pipelines_created: usize,
    pub bind_groups_created: usize,
    pub submits: usize,
    pub weight_buffers: usize,
    pub weight_bytes: u64,
}

const MAX_ROWS: usize = 65535;

struct TowerExec {
    program: Program,
    /// The plan of the largest row bucket (the pool's bind groups are made with it).
    keys: Vec<KernelKey>,
    /// `(largest row bucket, plan)`, ascending: a chunk of `r` token rows runs the first plan
    /// whose bucket holds `bucket_rows(r)`.
    plans: Vec<(usize, Vec<KernelKey>)>,
    pool: Mutex<Option<Pool>>,
}

impl TowerExec {
    fn keys_for(&self, rows: usize) -> &[KernelKey] {
        let b = bucket_rows(rows);
        self.plans.iter().find(|(top, _)| *top >= b).map_or(&self.keys, |(_, k)| k)
    }
}

/// A model on one device: weights uploaded, pipelines created; [`encode`](Self::encode)
/// runs a batch through one tower.
pub struct GpuEncoder {
    res: Resources,
    precision: Precision,
    cfg: ClipConfig,
    opts: GpuOptions,
    vision: TowerExec,
    text: TowerExec,
    /// The linear layers run the cooperative-matrix kernel.
    coop: bool,
    /// Why the plain kernel runs (`None` when the coop one does).
    plain_reason: Option<String>,
    /// The plain matmul's tile per bucket.
    tiles: TilePolicy,
}

/// What the kernels need of the model's shape: the vec4 kernels need widths that are
/// multiples of 4. (Patch and image sizes are free: the patch kernel loads scalars.)
fn check_model(cfg: &ClipConfig) -> Result<(), String> {
    for (name, t) in [("vision", &cfg.vision.tower), ("text", &cfg.text.tower)] {
        if !t.width.is_multiple_of(4) || !t.mlp.is_multiple_of(4) || !t.head_dim().is_multiple_of(4) {
            return Err(format!(
                "{name} tower: width {}, MLP {} and head size {} must be multiples of 4 (vec4 kernels)",
                t.width,
                t.mlp,
                t.head_dim()
            ));
        }
    }
    if !cfg.embed_dim.is_multiple_of(4) {
        return Err(format!("projection size {} must be a multiple of 4 (vec4 kernels)", cfg.embed_dim));
    }
    Ok(())
}

/// The device's largest binding, or less where the options say.
fn max_binding(ctx: &Context, opts: &GpuOptions) -> u64 {
    opts.max_binding.map_or(ctx.max_binding(), |m| m.min(ctx.max_binding()))
}

/// Uploads `params`, creates the pipelines of `keys` (natively both at once: the upload on
/// this thread, the pipelines on the others, through the persisted pipeline cache where
/// `opts` names one) and checks every op of `programs` can be bound.
async fn resources(
    ctx: &Context,
    params: &Params,
    precision: Precision,
    opts: &GpuOptions,
    towers: &[(&Program, &[KernelKey])],
) -> Result<Resources, GpuError> {
    let keys: Vec<KernelKey> = towers.iter().flat_map(|(_, k)| k.iter().copied()).collect();
    let cache = match opts.pipeline_cache.as_deref() {
        Some(dir) => PipelineCache::open(ctx, dir).await,
        None => None,
    };
    let cache_ref = cache.as_ref().map(|c| &c.cache);
    let upload = WeightStore::upload_async(ctx, params, precision.weights(), max_binding(ctx, opts));
    #[cfg(not(target_arch = "wasm32"))]
    let (store, kernels) = std::thread::scope(|s| {
        let kernels = s.spawn(|| super::context::block_on(create_kernels(ctx, &keys, cache_ref)));
        let store = super::context::block_on(upload);
        (store, kernels.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
    });
    #[cfg(target_arch = "wasm32")]
    let (store, kernels) = (upload.await, create_kernels(ctx, &keys, cache_ref).await);
    let mut res = Resources::new(ctx, store?, kernels?);
    res.pipeline_cache = cache.map(|c| c.save());
    for (program, keys) in towers {
        res.check_bindings(program, keys, params)?;
    }
    if let Some(e) = ctx.take_error() {
        return Err(e);
    }
    Ok(res)
}

impl GpuEncoder {
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new(ctx: &Context, cfg: &ClipConfig, weights: &Weights, precision: Precision) -> Result<Self, GpuError> {
        Self::with_options(ctx, cfg, weights, precision, GpuOptions::default())
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_checkpoint(
        ctx: &Context,
        ck: &crate::model::Checkpoint,
        precision: Precision,
    ) -> Result<Self, GpuError> {
        Self::new(ctx, &ck.config, &ck.weights, precision)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn with_options(
        ctx: &Context,
        cfg: &ClipConfig,
        weights: &Weights,
        precision: Precision,
        opts: GpuOptions,
    ) -> Result<Self, GpuError> {
        super::context::block_on(Self::with_options_async(ctx, cfg, weights, precision, opts))
    }

    /// [`with_options`](Self::with_options), awaited (the web's way).
    pub async fn with_options_async(
        ctx: &Context,
        cfg: &ClipConfig,
        weights: &Weights,
        precision: Precision,
        opts: GpuOptions,
    ) -> Result<Self, GpuError> {
        check_model(cfg).map_err(GpuError::Unsupported)?;
        if precision == Precision::F16 && !ctx.has_f16() {
            return Err(GpuError::Unsupported(format!("f16 precision: {} lacks SHADER_F16", ctx.report.name)));
        }
        let subgroup = ctx.has_subgroup() && opts.subgroups;
        let (coop, plain_reason) = choose_matmul(ctx, precision, opts.matmul)?;
        let tiles = TilePolicy::resolve(&ctx.report, precision, &opts.tiles);
        let max_rows = opts.max_tokens.min(MAX_ROWS);
        let make = |tower| {
            let program = Program::new(tower, cfg, weights);
            let plans = plans(&program, precision, subgroup, coop, &tiles, max_rows);
            let keys = plans.last().map(|p| p.1.clone()).unwrap_or_default();
            TowerExec { program, keys, plans, pool: Mutex::new(None) }
        };
        let (vision, text) = (make(Tower::Vision), make(Tower::Text));
        let towers: Vec<(&Program, &[KernelKey])> =
            [&vision, &text].into_iter().flat_map(|t| t.plans.iter().map(move |(_, k)| (&t.program, &k[..]))).collect();
        let res = resources(ctx, &weights.params, precision, &opts, &towers).await?;
        Ok(GpuEncoder { res, precision, cfg: cfg.clone(), opts, vision, text, coop, plain_reason, tiles })
    }

    /// The tile policy of the plain matmul (which tile each bucket runs, and why).
    pub fn tiles(&self) -> &TilePolicy {
        &self.tiles
    }

    /// The tile of every linear layer shape of a tower at each row bucket up to its chunk
    /// limit: `(n_out, n_in, row bucket, choice)` (the coop kernel, where it runs, overrides
    /// these on f16 token rows).
    pub fn tile_choices(&self, tower: Tower) -> Vec<(usize, usize, usize, Choice)> {
        let (max_tokens, _) = self.chunk_limits(tower);
        let mut v = Vec::new();
        for (n, k) in super::tiles::linear_shapes(self.program(tower)) {
            for rows in row_buckets(max_tokens) {
                v.push((n, k, rows, self.tiles.choose(n, k, rows)));
            }
        }
        v
    }

    /// The linear layers run on cooperative matrices (tensor cores).
    pub fn uses_coop(&self) -> bool {
        self.coop
    }

    /// The matmul path in words: `coop (…)` or `plain (why)`.
    pub fn matmul_description(&self) -> String {
        match &self.plain_reason {
            None => "coop (16x16x16 f16→f32 cooperative matrices, self-check passed)".into(),
            Some(why) => format!("plain ({why})"),
        }
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }
    pub fn context(&self) -> &Context {
        &self.res.ctx
    }
    pub fn config(&self) -> &ClipConfig {
        &self.cfg
    }
    pub fn program(&self, tower: Tower) -> &Program {
        &self.tower(tower).program
    }
    /// The kernel variant of each op of a tower's program, for chunks of the largest row
    /// bucket.
    pub fn kernels(&self, tower: Tower) -> &[KernelKey] {
        &self.tower(tower).keys
    }

    /// What became of the persisted pipeline cache at start-up (`None` where none was used:
    /// disabled, or the backend keeps none).
    pub fn pipeline_cache(&self) -> Option<&CacheReport> {
        self.res.pipeline_cache.as_ref()
    }

    /// The kernel variant of each op of a tower's program for a chunk of `rows` token rows.
    pub fn kernels_for(&self, tower: Tower, rows: usize) -> &[KernelKey] {
        self.tower(tower).keys_for(rows)
    }

    pub fn stats(&self) -> GpuStats {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.res.counters;
        GpuStats {
            buffers_created: c.buffers.load(Relaxed),
            pipelines_created: c.pipelines.load(Relaxed),
            bind_groups_created: c.bind_groups.load(Relaxed),
            submits: c.submits.load(Relaxed),
            weight_buffers: self.res.weights.buffers.len(),
            weight_bytes: self.res.weights.bytes,
        }
    }

    /// What the last chunk of `tower` cost the CPU to write, record and submit, and its
    /// dispatches (`None` before its first chunk).
    pub fn last_chunk_cost(&self, tower: Tower) -> Option<ChunkCost> {
        let pool = self.tower(tower).pool.lock().unwrap_or_else(|e| e.into_inner());
        pool.as_ref().and_then(|p| *p.last_cost.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Bytes of GPU memory the activation pools (both towers) hold now: activations, inputs,
    /// sequence tables, parameter blocks and readback buffers (weights excluded: see
    /// `GpuStats::weight_bytes`).
    pub fn pool_bytes(&self) -> u64 {
        [&self.vision, &self.text]
            .iter()
            .map(|t| t.pool.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map_or(0, Pool::bytes))
            .sum()
    }

    fn tower(&self, t: Tower) -> &TowerExec {
        match t {
            Tower::Vision => &self.vision,
            Tower::Text => &self.text,
        }
    }

    /// Most token rows and sequences one chunk of `tower` may hold on this device.
    pub fn chunk_limits(&self, tower: Tower) -> (usize, usize) {
        let te = self.tower(tower);
        let maxb = max_binding(&self.res.ctx, &self.opts).min(1 << 30) as usize;
        let mut tokens = self.opts.max_tokens.min(MAX_ROWS);
        let mut seqs = self.opts.max_seqs.min(MAX_ROWS);
        for &(a, w, rows) in &te.program.widths {
            let per = w * act_dt(&te.program, self.precision, a).size() as usize;
            match rows {
                Rows::Tokens => tokens = tokens.min(maxb / per),
                Rows::Seqs => seqs = seqs.min(maxb / per),
            }
        }
        match tower {
            Tower::Vision => {
                let v = &self.cfg.vision;
                seqs = seqs.min(maxb / (3 * v.image_size * v.image_size * 4)).min(tokens / v.tokens());
            }
            Tower::Text => tokens = tokens.min(maxb / 8),
        }
        (tokens, seqs.max(1))
    }

    /// The L2-normalised embeddings of a batch, `[n, embed_dim]`, exactly like
    /// [`cpu::run`](crate::cpu::run) with this tower's program.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn encode(&self, tower: Tower, input: &Input) -> Result<Vec<f32>, GpuError> {
        super::context::block_on(self.encode_async(tower, input))
    }

    /// [`encode`](Self::encode), awaited (the web's way: each chunk's results come back
    /// when the browser has mapped them).
    pub async fn encode_async(&self, tower: Tower, input: &Input<'_>) -> Result<Vec<f32>, GpuError> {
        if let Some(e) = self.res.ctx.take_error() {
            return Err(e);
        }
        let (max_tokens, max_seqs) = self.chunk_limits(tower);
        let mut out = Vec::new();
        match (tower, input) {
            (Tower::Vision, Input::Pixels { data, n }) => {
                let v = &self.cfg.vision;
                let px = 3 * v.image_size * v.image_size;
                if data.len() != n * px {
                    return Err(GpuError::InvalidInput(format!(
                        "{} pixel values for {n} images of {}×{} (expected {})",
                        data.len(),
                        v.image_size,
                        v.image_size,
                        n * px
                    )));
                }
                let per = max_seqs.min(max_tokens / v.tokens()).max(1);
                let mut s = 0;
                while s < *n {
                    let k = per.min(n - s);
                    let seqs = Seqs::uniform(k, v.tokens());
                    let chunk = ChunkInput::Pixels(&data[s * px..(s + k) * px]);
                    out.extend(self.run_chunk(tower, &seqs, &chunk).await?);
                    s += k;
                }
            }
            (Tower::Text, Input::Tokens(texts)) => {
                check_tokens(texts, &self.cfg.text).map_err(GpuError::InvalidInput)?;
                // Only the positions up to the pooled (first highest-id) token are computed:
                // the same ragged layout as the CPU engine (`Seqs::of`).
                let lens: Vec<usize> = texts.iter().map(|t| text_len(t)).collect();
                let mut s = 0;
                while s < texts.len() {
                    let mut e = s;
                    let mut tok = 0;
                    while e < texts.len() && e - s < max_seqs && tok + lens[e] <= max_tokens {
                        tok += lens[e];
                        e += 1;
                    }
                    let e = e.max(s + 1);
                    let seqs = Seqs::from_lens(lens[s..e].to_vec());
                    out.extend(self.run_chunk(tower, &seqs, &ChunkInput::Tokens(&texts[s..e])).await?);
                    s = e;
                }
            }
            _ => return Err(GpuError::InvalidInput(format!("{tower:?} tower given the other tower's input"))),
        }
        Ok(out)
    }

    fn input_bytes(&self, tower: Tower, tokens: usize, seqs: usize) -> u64 {
        let s = self.cfg.vision.image_size;
        match tower {
            Tower::Vision => (seqs * 3 * s * s * 4) as u64,
            Tower::Text => (tokens * 8) as u64,
        }
    }

    // The pool's lock is held across the awaits: natively `block_on` drives this future on
    // the calling thread, so it is held exactly as long as a synchronous chunk held it (and
    // concurrent callers wait as before); the web has one thread.
    #[allow(clippy::await_holding_lock)]
    async fn run_chunk(&self, tower: Tower, seqs: &Seqs, input: &ChunkInput<'_>) -> Result<Vec<f32>, GpuError> {
        let te = self.tower(tower);
        let dev = &self.res.ctx.device;
        let oom = dev.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let val = dev.push_error_scope(wgpu::ErrorFilter::Validation);

        let bind_groups_before = self.res.counters.bind_groups.load(std::sync::atomic::Ordering::Relaxed);
        let mut guard = te.pool.lock().unwrap_or_else(|e| e.into_inner());
        let grow = match &*guard {
            Some(p) => p.tokens < seqs.tokens() || p.seqs < seqs.count(),
            None => true,
        };
        if grow {
            // Room for the larger of the old pool and this chunk, rounded up to a power of
            // two within the chunk limits, so that growth happens a few times at most.
            let (max_tokens, max_seqs) = self.chunk_limits(tower);
            let round = |need: usize, limit: usize| need.next_power_of_two().min(limit).max(need);
            let (t, s) = match &*guard {
                Some(p) => (p.tokens.max(seqs.tokens()), p.seqs.max(seqs.count())),
                None => (seqs.tokens(), seqs.count()),
            };
            let (t, s) = (round(t, max_tokens), round(s, max_seqs));
            *guard = None; // free the old pool first
            let program = &te.program;
            *guard = Some(Pool::new(
                &self.res,
                program,
                &te.keys,
                |a| act_dt(program, self.precision, a),
                (t, s),
                self.input_bytes(tower, t, s),
                (s * program.embed_dim * 4) as u64,
            ));
        }
        let pool = guard.as_ref().unwrap();
        let (pool_bytes, slots) = (pool.bytes(), pool.seqs);
        let part_rows = |id: crate::model::ParamId| self.res.weights.part_rows[id.0];
        let chunk = Chunk { program: &te.program, seqs, vision: &self.cfg.vision, part_rows: &part_rows };
        let result = pool
            .run_async(&self.res, te.keys_for(seqs.tokens()), &chunk, input, &[], &[te.program.output])
            .await
            .map(|mut v| v.pop().unwrap_or_default());
        if let Some(c) = pool.last_cost.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            c.bind_groups =
                self.res.counters.bind_groups.load(std::sync::atomic::Ordering::Relaxed) - bind_groups_before;
        }
        let val_err = val.pop().await.map(|e| GpuError::Backend(e.to_string()));
        let oom_err = oom.pop().await.map(|e| {
            let what = if tower == Tower::Vision { "images" } else { "texts" };
            GpuError::OutOfMemory(format!(
                "{e} (a chunk of {} {what} in buffers for {slots}, {:.0} MiB; a smaller --batch-size needs less)",
                seqs.count(),
                pool_bytes as f64 / (1 << 20) as f64
            ))
        });
        let result = match oom_err.or(val_err).or_else(|| self.res.ctx.take_error()) {
            Some(e) => Err(e),
            None => result,
        };
        if result.is_err() {
            // The pool may hold buffers that failed to allocate or a mapped readback buffer:
            // start afresh next time, and let the device free them now (after an out-of-memory
            // error the CPU that takes over needs that memory back).
            *guard = None;
            let _ = dev.poll(wgpu::PollType::Poll);
        }
        result
    }
}

/// One plan per distinct tile choice over the row buckets up to `max_rows`:
/// `(largest bucket, plan)`, ascending.
fn plans(
    program: &Program,
    precision: Precision,
    subgroup: bool,
    coop: bool,
    tiles: &TilePolicy,
    max_rows: usize,
) -> Vec<(usize, Vec<KernelKey>)> {
    let mut out: Vec<(usize, Vec<KernelKey>)> = Vec::new();
    for rows in row_buckets(max_rows) {
        let keys = plan_kernels_tiled(program, precision, subgroup, coop, &|op| tiles.tile_of(program, op, rows));
        match out.last_mut() {
            Some((top, k)) if *k == keys => *top = rows,
            _ => out.push((rows, keys)),
        }
    }
    out
}

/// Runs any `program` (a few ops built by a test, or a tower's) once on the GPU, on one
/// chunk: the parameters uploaded, the kernels planned and created, the activations of `init`
/// written first (f32, converted to their storage type); returns the activations of `read`
/// (as f32). The per-kernel tests compare this with [`cpu::run_op`](crate::cpu::run_op).
#[allow(clippy::too_many_arguments)]
#[cfg(not(target_arch = "wasm32"))]
pub fn run_program(
    ctx: &Context,
    cfg: &ClipConfig,
    params: &Params,
    program: &Program,
    precision: Precision,
    opts: &GpuOptions,
    input: &Input,
    init: &[(Act, &[f32])],
    read: &[Act],
) -> Result<(Vec<KernelKey>, Vec<Vec<f32>>), GpuError> {
    let seqs = Seqs::of(input, cfg);
    let tiles = TilePolicy::resolve(&ctx.report, precision, &opts.tiles);
    let tile = |op: &crate::model::Op| tiles.tile_of(program, op, seqs.tokens());
    let keys = plan_kernels_tiled(program, precision, ctx.has_subgroup() && opts.subgroups, false, &tile);
    let res = super::context::block_on(resources(ctx, params, precision, opts, &[(program, &keys[..])]))?;
    let (chunk_input, input_bytes) = match input {
        Input::Pixels { data, .. } => (ChunkInput::Pixels(data), data.len() as u64 * 4),
        Input::Tokens(t) => (ChunkInput::Tokens(t), seqs.tokens() as u64 * 8),
    };
    let dev = &ctx.device;
    let val = dev.push_error_scope(wgpu::ErrorFilter::Validation);
    let pool = Pool::new(
        &res,
        program,
        &keys,
        |a| act_dt(program, precision, a),
        (seqs.tokens(), seqs.count()),
        input_bytes,
        16,
    );
    let part_rows = |id: crate::model::ParamId| res.weights.part_rows[id.0];
    let chunk = Chunk { program, seqs: &seqs, vision: &cfg.vision, part_rows: &part_rows };
    let out = pool.run(&res, &keys, &chunk, &chunk_input, init, read);
    if let Some(e) = super::context::block_on(val.pop()) {
        return Err(GpuError::Backend(e.to_string()));
    }
    out.map(|v| (keys, v))
}
