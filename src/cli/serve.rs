//! `serve`: the HTTP service (clip_wgpu::server) with dynamic batching.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use clip_wgpu::server::{ServeConfig, DEFAULT_MAX_WAIT_MS};
use clip_wgpu::Error;

use super::{load, ModelArgs};

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface).
    #[arg(long, default_value = "127.0.0.1", env = "CLIP_WGPU_HOST")]
    pub host: String,
    /// Port to listen on (0: any free port; the `listening on` line says which).
    #[arg(long, default_value_t = 8080, env = "CLIP_WGPU_PORT")]
    pub port: u16,
    /// Most items per encoder batch: a number, or `auto` (what the device takes: --batch-size,
    /// else the GPU's limits, else 32 on the CPU).
    #[arg(long, default_value = "auto", value_parser = parse_auto)]
    pub max_batch: usize,
    /// Longest a batch that is not full waits for more items while more are on their way, in
    /// milliseconds (a lone request never waits).
    #[arg(long, default_value_t = DEFAULT_MAX_WAIT_MS, value_name = "MS")]
    pub max_wait_ms: u64,
    /// Items queued per tower (images, texts) and requests in progress; past it, 503 with
    /// Retry-After.
    #[arg(long, default_value_t = ServeConfig::default().max_queue, value_name = "N")]
    pub max_queue: usize,
    /// Largest request body in bytes (413 past it).
    #[arg(long, default_value_t = ServeConfig::default().max_body_bytes, value_name = "BYTES")]
    pub max_body_bytes: usize,
    /// Most images plus texts in one request (400 past it).
    #[arg(long, default_value_t = ServeConfig::default().max_items, value_name = "N")]
    pub max_items: usize,
    /// Longest text in bytes (400 past it).
    #[arg(long, default_value_t = ServeConfig::default().max_text_bytes, value_name = "BYTES")]
    pub max_text_bytes: usize,
    /// Seconds a request may take before 504 (its queued items are then dropped).
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS", value_parser = parse_seconds)]
    pub request_timeout: f64,
    /// Seconds the headers, and then the body, of a request may take to arrive (408 for the
    /// body; slow clients do not hold a connection forever).
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS", value_parser = parse_seconds)]
    pub read_timeout: f64,
    /// Require `Authorization: Bearer KEY` on every endpoint but /health.
    #[arg(long, env = "CLIP_WGPU_API_KEY", hide_env_values = true, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Threads decoding and preprocessing images per tower (default: the number of cores).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// The model name /v1/embeddings reports when the request gives none (default: the
    /// checkpoint's directory or file name).
    #[arg(long)]
    pub model_name: Option<String>,
}

fn parse_auto(s: &str) -> Result<usize, String> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(0);
    }
    match s.parse::<usize>() {
        Ok(0) | Err(_) => Err(format!("{s:?}: give a positive number or `auto`")),
        Ok(n) => Ok(n),
    }
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() && x < 1e9 => Ok(x),
        _ => Err(format!("{s:?}: give a positive number of seconds")),
    }
}

/// glibc's malloc gives threads that allocate at once arenas of their own (up to 8 per core),
/// and a long-running server whose threads (HTTP, decoding workers, one batch thread per
/// tower, the encoder's pool) each touch buffers of every size keeps growing in resident
/// memory as those arenas fragment: on lavapipe, +5 % over 14 minutes before it levelled off;
/// with two arenas, flat from the third minute (benchmarks/serve/README.md). Two arenas, unless
/// `MALLOC_ARENA_MAX` says otherwise.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a parameter of glibc's allocator; it is called before the
        // server starts its threads, and M_ARENA_MAX takes any positive count.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

pub fn serve(a: ServeArgs) -> Result<ExitCode, Error> {
    limit_malloc_arenas();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CLIP_WGPU_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let defaults = ServeConfig::default();
    if a.max_queue == 0 || a.max_items == 0 || a.max_body_bytes == 0 {
        return Err(Error::Invalid("--max-queue, --max-items and --max-body-bytes must be at least 1".into()));
    }
    let model_name = a.model_name.clone().unwrap_or_else(|| {
        a.model
            .model
            .as_ref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| super::DEFAULT_REPO.to_string())
    });
    let config = ServeConfig {
        max_batch: a.max_batch,
        max_wait: Duration::from_millis(a.max_wait_ms),
        max_queue: a.max_queue,
        max_body_bytes: a.max_body_bytes,
        max_items: a.max_items,
        max_text_bytes: a.max_text_bytes,
        request_timeout: Duration::from_secs_f64(a.request_timeout),
        read_timeout: Duration::from_secs_f64(a.read_timeout),
        api_key: a.api_key.clone().filter(|k| !k.is_empty()),
        workers: a.workers.unwrap_or(defaults.workers).max(1),
        model_name,
    };
    let addr = if a.host.contains(':') && !a.host.starts_with('[') {
        format!("[{}]:{}", a.host, a.port)
    } else {
        format!("{}:{}", a.host, a.port)
    };
    let listener =
        std::net::TcpListener::bind(&addr).map_err(|e| Error::Invalid(format!("cannot listen on {addr}: {e}")))?;
    let model = a.model;
    clip_wgpu::server::run(listener, config, move || load(&model, false))?;
    Ok(ExitCode::SUCCESS)
}
