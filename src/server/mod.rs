//! The HTTP service behind `clip-wgpu serve` (cargo feature `server`): JSON endpoints over
//! two [`Batcher`]s (one per tower) sharing one [`Clip`], built on axum/hyper and tower-http.
//!
//! * `POST /v1/embeddings`: OpenAI's embeddings API (`input`: a string or a list; a
//!   `data:image/…;base64,…` URL is an image, anything else a text; `encoding_format` `float`
//!   or `base64`, little-endian f32).
//! * `POST /embed`, `/score`, `/classify`: the CLI's JSON outputs for images (base64 or data
//!   URLs, or `multipart/form-data` files) and texts.
//! * `GET /health` (200 once the model is loaded and warmed, 503 before) and `GET /metrics`
//!   (Prometheus text).
//!
//! The port is bound before the model loads, so `/health` answers 503 while it does. Limits:
//! a bounded queue (503 with `Retry-After` past it), a body limit (413), an item limit (400),
//! a body read timeout (408) and a request timeout (504); a client that goes away has its
//! queued items dropped. No request makes the server read a file or fetch a URL.

mod api;
mod metrics;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use crate::batcher::{Batcher, BatcherConfig, ImageTower, TextTower};
use crate::{Clip, Error, Result};

/// How the service runs (the `clip-wgpu serve` options).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Items per encoder batch; 0: what the device takes ([`Clip::batch_size`]).
    pub max_batch: usize,
    /// Longest a batch that is not full waits for more items while more are on their way.
    pub max_wait: Duration,
    /// Items queued per tower (waiting, being prepared, being encoded); past it, 503.
    pub max_queue: usize,
    /// Largest request body in bytes (413 past it).
    pub max_body_bytes: usize,
    /// Most images plus texts (or labels) in one request (400 past it).
    pub max_items: usize,
    /// Longest text in bytes (400 past it; CLIP reads at most 77 tokens anyway).
    pub max_text_bytes: usize,
    /// A request not answered within this gets 504 (and its queued items are dropped).
    pub request_timeout: Duration,
    /// Headers and body must arrive within this (408 for the body; the connection is closed
    /// for the headers).
    pub read_timeout: Duration,
    /// Every endpoint but `/health` requires `Authorization: Bearer KEY`.
    pub api_key: Option<String>,
    /// Threads decoding and preprocessing images (and tokenising texts), per tower.
    pub workers: usize,
    /// The name `/v1/embeddings` answers with when the request names none.
    pub model_name: String,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            max_batch: 0,
            max_wait: Duration::from_millis(DEFAULT_MAX_WAIT_MS),
            max_queue: 256,
            max_body_bytes: 16 << 20,
            max_items: 2048,
            max_text_bytes: 64 << 10,
            request_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(10),
            api_key: None,
            workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            model_name: "clip".into(),
        }
    }
}

/// The default `max_wait` in milliseconds (see benchmarks/serve/README.md: the latency of a
/// lone request does not depend on it, as a lone request never waits).
pub const DEFAULT_MAX_WAIT_MS: u64 = 5;

/// The model and its two batchers, once loaded.
pub(crate) struct Engine {
    pub clip: Arc<Clip>,
    pub images: Batcher<ImageTower>,
    pub texts: Batcher<TextTower>,
}

pub(crate) struct AppState {
    pub config: ServeConfig,
    pub engine: OnceLock<Engine>,
    pub metrics: metrics::Metrics,
    /// requests being handled (bounded: past `max_queue`, 503 before reading the body)
    pub in_flight: Semaphore,
    pub started: Instant,
}

/// Serves on `listener` until SIGTERM or Ctrl-C: answers `/health` with 503 at once, calls
/// `load` (on a blocking thread), warms the model, then prints `listening on http://ADDR` on
/// stderr and serves every endpoint. On the signal it stops accepting, finishes the requests
/// it has, and returns. A failed `load` is returned as the error.
pub fn run<F>(listener: std::net::TcpListener, config: ServeConfig, load: F) -> Result<()>
where
    F: FnOnce() -> Result<Clip> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("clip-wgpu-http")
        .worker_threads(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 4))
        .build()
        .map_err(|e| Error::Invalid(format!("starting the async runtime: {e}")))?;
    rt.block_on(serve(listener, config, load))
}

async fn serve<F>(listener: std::net::TcpListener, config: ServeConfig, load: F) -> Result<()>
where
    F: FnOnce() -> Result<Clip> + Send + 'static,
{
    let io_err = |e: std::io::Error| Error::Invalid(format!("listening socket: {e}"));
    listener.set_nonblocking(true).map_err(io_err)?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(io_err)?;
    let addr = listener.local_addr().map_err(io_err)?;
    let state = Arc::new(AppState {
        in_flight: Semaphore::new(config.max_queue.max(1)),
        config,
        engine: OnceLock::new(),
        metrics: metrics::Metrics::default(),
        started: Instant::now(),
    });
    let app = router(state.clone());

    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });

    // the model loads while /health already answers 503
    let loader = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let clip = Arc::new(load()?);
            let cfg = &state.config;
            warm(&clip, if cfg.max_batch > 0 { cfg.max_batch } else { clip.batch_size() })?;
            let bc = |name: &str| BatcherConfig {
                max_batch: if cfg.max_batch > 0 { cfg.max_batch } else { clip.batch_size() },
                max_wait: cfg.max_wait,
                max_queue: cfg.max_queue,
                workers: cfg.workers,
                name: name.into(),
            };
            let engine = Engine {
                images: Batcher::new(ImageTower::new(clip.clone()), bc("clip-image")),
                texts: Batcher::new(TextTower::new(clip.clone()), bc("clip-text")),
                clip,
            };
            let _ = state.engine.set(engine);
            Ok(())
        })
    };

    // a failed load ends the server with its error; a good one prints the address
    let (fail_tx, mut fail_rx) = tokio::sync::mpsc::channel::<Error>(1);
    {
        let state = state.clone();
        tokio::spawn(async move {
            let failed = match loader.await {
                Ok(Ok(())) => {
                    let e = state.engine.get().expect("set by the loader");
                    tracing::info!(engine = %e.clip.engine_description(), batch = e.images.config().max_batch, "model ready");
                    eprintln!("listening on http://{addr}");
                    return;
                }
                Ok(Err(e)) => e,
                Err(e) => Error::Invalid(format!("loading the model: {e}")),
            };
            let _ = fail_tx.send(failed).await;
        });
    }

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let read_timeout = state.config.read_timeout;
    loop {
        tokio::select! {
            Some(e) = fail_rx.recv() => return Err(e),
            conn = listener.accept() => {
                let (stream, _peer): (tokio::net::TcpStream, SocketAddr) = match conn {
                    Ok(c) => c,
                    Err(e) => {
                        // out of file descriptors and the like: wait a little, go on
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let svc = TowerToHyperService::new(app.clone());
                let mut http = hyper::server::conn::http1::Builder::new();
                http.timer(TokioTimer::new()).header_read_timeout(read_timeout);
                let conn = http.serve_connection(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!("connection: {e}");
                    }
                });
            }
            _ = stop_rx.changed() => break,
        }
    }
    eprintln!("clip-wgpu: shutting down: finishing the requests in hand");
    drop(listener);
    // every accepted request is answered; idle keep-alive connections are closed
    graceful.shutdown().await;
    // the batchers finish and stop their threads
    if let Ok(state) = Arc::try_unwrap(state) {
        tokio::task::spawn_blocking(move || drop(state)).await.ok();
    }
    Ok(())
}

fn router(state: Arc<AppState>) -> Router {
    let protected = Router::new()
        .route("/v1/embeddings", post(api::openai_embeddings))
        .route("/embed", post(api::embed))
        .route("/score", post(api::score))
        .route("/classify", post(api::classify))
        .route("/metrics", get(metrics::metrics))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), api::auth));
    let routes = Router::new()
        .route("/health", get(api::health))
        .merge(protected)
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed);
    layers(routes, state)
}

/// What wraps every route: the body limit, panics turned into a 500 for their request alone,
/// the request counts of /metrics, tracing.
fn layers(routes: Router<Arc<AppState>>, state: Arc<AppState>) -> Router {
    routes
        // multipart reads the (already bounded) body in full
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(CatchPanicLayer::custom(api::panic_response))
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::count))
        // 5xx answers are expected under overload (503) and while loading: logged at debug,
        // not as errors on every refused request
        .layer(TraceLayer::new_for_http().on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)))
        .with_state(state)
}

/// One text and one image through both towers: the first real request does not pay for the
/// lazy set-up (pipelines, the CPU engine's layout, thread pools). On a GPU, then one full
/// batch of each tower (`max_batch` images, `max_batch` texts of the longest length), so the
/// activation pools are made at their largest now and not grown under load: the GPU's buffers
/// and bind groups stay constant from here on.
fn warm(clip: &Clip, max_batch: usize) -> Result<()> {
    clip.encode_texts(&["a photo of a cat"])?;
    let img = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, 128]));
    let mut png = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| Error::Invalid(format!("warm-up image: {e}")))?;
    let px = clip.preprocess_bytes("warm-up image", &png)?;
    clip.encode_pixels(&px, 1)?;
    if clip.device() == crate::Device::Gpu && max_batch > 1 {
        let px: Vec<f32> = px.iter().copied().cycle().take(px.len() * max_batch).collect();
        clip.encode_pixels(&px, max_batch)?;
        // the tokenizer cuts at the context length, the end token kept
        let ids = clip.tokenizer().encode(&"a photo of a cat ".repeat(clip.checkpoint().config.text.context_length));
        clip.encode_ids(&vec![ids; max_batch])?;
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    fn state() -> Arc<AppState> {
        Arc::new(AppState {
            config: ServeConfig::default(),
            engine: OnceLock::new(),
            metrics: metrics::Metrics::default(),
            in_flight: Semaphore::new(4),
            started: Instant::now(),
        })
    }

    async fn call(app: &Router, path: &str) -> (StatusCode, serde_json::Value) {
        let r = app.clone().oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    /// A handler that panics answers 500 with OpenAI's error shape for its own request; the
    /// same router goes on answering, and the 500 is counted.
    #[test]
    fn a_panic_is_a_500_for_its_request_alone() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let st = state();
            let routes = Router::new()
                .route(
                    "/boom",
                    get(|| async {
                        if std::hint::black_box(true) {
                            panic!("kaboom in a handler");
                        }
                        "unreachable"
                    }),
                )
                .route("/fine", get(|| async { axum::Json(serde_json::json!({"ok": true})) }));
            let app = layers(routes, st.clone());
            let (status, body) = call(&app, "/boom").await;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
            let msg = body["error"]["message"].as_str().unwrap_or_default();
            assert!(msg.contains("kaboom in a handler"), "{body}");
            assert_eq!(body["error"]["type"], "server_error", "{body}");
            let (status, body) = call(&app, "/fine").await;
            assert_eq!((status, body["ok"].as_bool()), (StatusCode::OK, Some(true)));
            let counts = st.metrics.snapshot();
            assert_eq!(counts.get(&("/boom".to_string(), 500)), Some(&1), "{counts:?}");
            assert_eq!(counts.get(&("/fine".to_string(), 200)), Some(&1), "{counts:?}");
        });
    }
}
