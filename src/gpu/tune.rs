//! The autotuner: for each matmul shape bucket it times every tile candidate that fits the
//! adapter on the device, keeps the fastest, and caches the table on disk keyed by adapter,
//! driver and kernel set ([`tiles`](super::tiles) reads it back). `clip-wgpu tune` runs it;
//! the engine never does on its own (see the `tiles` module for why).
//!
//! Timing: wall clock around a submit and a blocking device poll, each submit holding enough
//! back-to-back dispatches of the product (at least ~20 ms of work) that the submit's own
//! cost is small beside it; one warm-up submit first (the pipeline's compilation at its
//! first dispatch is not timed), then timed submits until [`TuneOptions::min_time`] and
//! [`TuneOptions::min_runs`] are reached; the best per-product time counts. GPU timestamps
//! would need the device opened with TIMESTAMP_QUERY, which the engine's device is not. A
//! candidate whose first timed submit is over [`TuneOptions::prune`] times the best so far
//! is not timed further (its one figure is kept).

use std::time::{Duration, Instant};

use wgpu::util::DeviceExt;

use super::context::Context;
use super::matmul::{self, Tile};
use super::pipeline::{bind_all, create_kernel};
use super::pool::to_bytes;
use super::tiles::{
    cached_table, tuning_key, write_cache, AdapterKey, Bucket, Entry, Reason, Table, TilePolicy, Timing,
};
use super::types::{GpuError, Precision};

/// How long to measure.
#[derive(Debug, Clone)]
pub struct TuneOptions {
    /// Timed submits at least (after the warm-up).
    pub min_runs: usize,
    /// And at most.
    pub max_runs: usize,
    /// Timed submits go on until this much time is spent (within `max_runs`).
    pub min_time: Duration,
    /// Work per submit: dispatches are repeated until one submit takes about this long.
    pub submit_time: Duration,
    /// A candidate slower than `prune` × the best so far after one timed submit is dropped.
    pub prune: f64,
}

impl Default for TuneOptions {
    fn default() -> Self {
        TuneOptions {
            min_runs: 2,
            max_runs: 8,
            min_time: Duration::from_millis(150),
            submit_time: Duration::from_millis(20),
            prune: 2.0,
        }
    }
}

/// Times every candidate on an `m × n × k` product at `precision` and returns the bucket's
/// row, the fastest first in [`Entry::tile`] and every candidate's figure in
/// [`Entry::timings`] (in [`Tile::CANDIDATES`] order).
pub fn tune_bucket(
    ctx: &Context,
    precision: Precision,
    (n, k, m): (usize, usize, usize),
    opts: &TuneOptions,
) -> Result<Entry, GpuError> {
    if precision == Precision::F16 && !ctx.has_f16() {
        return Err(GpuError::Unsupported(format!("f16 precision: {} lacks SHADER_F16", ctx.report.name)));
    }
    if !k.is_multiple_of(4) || m == 0 || n == 0 {
        return Err(GpuError::InvalidInput(format!("bad matmul shape {m}×{n}×{k}")));
    }
    let dev = &ctx.device;
    let dt = precision.tokens();
    use wgpu::BufferUsages as U;
    let init = |label: &str, v: Vec<f32>, usage: U| {
        dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: &to_bytes(&v, dt),
            usage,
        })
    };
    // small smooth values: no denormals, no overflow in f16
    let pattern = |len: usize, s: f32| (0..len).map(|i| ((i % 97) as f32 - 48.0) * s).collect::<Vec<f32>>();
    let x = init("tune x", pattern(m * k, 1e-3), U::STORAGE);
    let w = init("tune w", pattern(n * k, 1e-3), U::STORAGE);
    let b = init("tune bias", pattern(n.max(4), 1e-2), U::STORAGE);
    let y = init("tune y", vec![0.0; m * n], U::STORAGE);
    let u = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("tune params"),
        contents: bytemuck::bytes_of(&matmul::params(m, n, k)),
        usage: U::UNIFORM,
    });
    let limits = dev.limits();
    let mut timings = Vec::new();
    let mut best: Option<(f64, Tile)> = None;
    for tile in Tile::CANDIDATES {
        let name = tile.name();
        if let Some(why) =
            tile.unfit(limits.max_compute_workgroup_storage_size, limits.max_compute_invocations_per_workgroup)
        {
            timings.push(Timing { tile: name, ms: None, note: format!("over the adapter's limits: {why}") });
            continue;
        }
        let key = tuning_key(tile, precision);
        let scope = dev.push_error_scope(wgpu::ErrorFilter::Validation);
        let kernel = create_kernel(dev, &key);
        let bg = bind_all(
            dev,
            &kernel,
            &key,
            vec![
                u.as_entire_binding(),
                x.as_entire_binding(),
                w.as_entire_binding(),
                b.as_entire_binding(),
                y.as_entire_binding(),
            ],
        );
        let groups = tile.dispatch(m, n);
        let run = |reps: usize| -> Result<Duration, GpuError> {
            let mut enc = dev.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("tune") });
            {
                let mut pass = enc
                    .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("tune"), timestamp_writes: None });
                pass.set_pipeline(&kernel.pipeline);
                pass.set_bind_group(0, &bg, &[]);
                for _ in 0..reps {
                    pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
                }
            }
            let t = Instant::now();
            ctx.queue.submit([enc.finish()]);
            dev.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| GpuError::DeviceLost(e.to_string()))?;
            Ok(t.elapsed())
        };
        // warm-up: the pipeline compiles at its first dispatch
        run(1)?;
        if let Some(e) = super::context::block_on(scope.pop()) {
            timings.push(Timing { tile: name, ms: None, note: format!("pipeline error: {e}") });
            continue;
        }
        if let Some(e) = ctx.take_error() {
            return Err(e);
        }
        let first = run(1)?;
        let reps = (opts.submit_time.as_secs_f64() / first.as_secs_f64().max(1e-6)).ceil().clamp(1.0, 256.0) as usize;
        let per = |d: Duration, r: usize| d.as_secs_f64() * 1e3 / r as f64;
        let mut ms = per(first, 1);
        let note = if best.is_some_and(|(b, _)| ms > opts.prune * b) {
            format!("one run: over {}× the best", opts.prune)
        } else {
            let (mut runs, mut spent) = (0, Duration::ZERO);
            while runs < opts.min_runs || (spent < opts.min_time && runs < opts.max_runs) {
                let d = run(reps)?;
                ms = ms.min(per(d, reps));
                spent += d;
                runs += 1;
            }
            format!("best of {runs} submits of {reps}")
        };
        if best.is_none_or(|(b, _)| ms < b) {
            best = Some((ms, tile));
        }
        timings.push(Timing { tile: name, ms: Some(ms), note });
    }
    let (_, tile) = best.ok_or_else(|| GpuError::Unsupported("no tile candidate fits this adapter".into()))?;
    Ok(Entry { bucket: Bucket::of(precision, n, k, m), tile: tile.name(), timed_rows: m, timings })
}

/// What [`ensure`] did.
#[derive(Debug, Clone)]
pub struct Tuned {
    pub policy: TilePolicy,
    /// Buckets measured now (0: the cached table covered them all).
    pub measured: usize,
    /// The table was written to the cache file.
    pub written: bool,
}

/// The table for `shapes` (`(n, k, m)` products) on this adapter: the cached one where its
/// key (adapter, driver, kernel set) matches and it has every bucket ([`Reason::Cached`]);
/// otherwise the missing buckets (all of them when the cached table is stale) are measured,
/// and the table is written back to `cache` ([`Reason::Tuned`]). `force` measures every
/// bucket again. `progress` sees each measured row.
pub fn ensure(
    ctx: &Context,
    precision: Precision,
    shapes: &[(usize, usize, usize)],
    cache: Option<&std::path::Path>,
    force: bool,
    opts: &TuneOptions,
    progress: &mut dyn FnMut(&Entry),
) -> Result<Tuned, GpuError> {
    let key = AdapterKey::of(&ctx.report);
    // with `force` the cached rows of other buckets are kept (another tower's, say) and only
    // these buckets are measured again
    let cached = cache.and_then(|p| cached_table(p, &key));
    let mut table = cached.clone().unwrap_or_default();
    let mut measured = 0;
    let mut seen = std::collections::BTreeSet::new();
    for &(n, k, m) in shapes {
        let b = Bucket::of(precision, n, k, m);
        if !seen.insert(b) || (!force && table.entries.iter().any(|e| e.bucket == b)) {
            continue;
        }
        let e = tune_bucket(ctx, precision, (n, k, m), opts)?;
        progress(&e);
        table.set(e);
        measured += 1;
    }
    if measured == 0 {
        if let Some(t) = cached {
            return Ok(Tuned {
                policy: TilePolicy::with_table(&ctx.report, precision, t, Reason::Cached),
                measured,
                written: false,
            });
        }
    }
    let written = cache.is_some_and(|p| write_cache(p, &key, &table).is_ok());
    Ok(Tuned { policy: TilePolicy::with_table(&ctx.report, precision, table, Reason::Tuned), measured, written })
}

/// A table measured for `shapes` (nothing read or written).
pub fn measure(
    ctx: &Context,
    precision: Precision,
    shapes: &[(usize, usize, usize)],
    opts: &TuneOptions,
) -> Result<Table, GpuError> {
    let mut t = Table::default();
    for &s in shapes {
        t.set(tune_bucket(ctx, precision, s, opts)?);
    }
    Ok(t)
}
