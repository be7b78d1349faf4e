//! `GET /metrics`: Prometheus text exposition (version 0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::batcher::{BatcherStats, SECONDS_BUCKETS};

/// Upper bounds of the batch-size histogram.
const SIZE_BUCKETS: [usize; 10] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];

#[derive(Default)]
pub struct Metrics {
    /// (endpoint, status) → requests answered
    requests: Mutex<BTreeMap<(String, u16), u64>>,
}

impl Metrics {
    /// The request counts so far, by (endpoint, status).
    #[cfg(test)]
    pub fn snapshot(&self) -> BTreeMap<(String, u16), u64> {
        self.requests.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Counts every answer by endpoint (the route, or `other`) and status.
pub async fn count(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let endpoint =
        req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()).unwrap_or_else(|| "other".into());
    let r = next.run(req).await;
    let mut m = st.metrics.requests.lock().unwrap_or_else(|e| e.into_inner());
    *m.entry((endpoint, r.status().as_u16())).or_default() += 1;
    r
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn histograms(out: &mut String, towers: &[(&str, BatcherStats)]) {
    let _ = writeln!(out, "# HELP clip_wgpu_batch_size Items per encoder batch.");
    let _ = writeln!(out, "# TYPE clip_wgpu_batch_size histogram");
    for (tower, s) in towers {
        for b in SIZE_BUCKETS {
            let n: u64 = s.sizes.iter().enumerate().filter(|&(k, _)| k <= b).map(|(_, c)| c).sum();
            let _ = writeln!(out, "clip_wgpu_batch_size_bucket{{tower=\"{tower}\",le=\"{b}\"}} {n}");
        }
        let _ = writeln!(out, "clip_wgpu_batch_size_bucket{{tower=\"{tower}\",le=\"+Inf\"}} {}", s.batches);
        let _ = writeln!(out, "clip_wgpu_batch_size_sum{{tower=\"{tower}\"}} {}", s.items);
        let _ = writeln!(out, "clip_wgpu_batch_size_count{{tower=\"{tower}\"}} {}", s.batches);
    }
    let _ = writeln!(out, "# HELP clip_wgpu_batch_seconds Time to encode one batch.");
    let _ = writeln!(out, "# TYPE clip_wgpu_batch_seconds histogram");
    for (tower, s) in towers {
        let mut cum = 0;
        for (i, b) in SECONDS_BUCKETS.iter().enumerate() {
            cum += s.seconds_counts[i];
            let _ = writeln!(out, "clip_wgpu_batch_seconds_bucket{{tower=\"{tower}\",le=\"{b}\"}} {cum}");
        }
        let _ = writeln!(out, "clip_wgpu_batch_seconds_bucket{{tower=\"{tower}\",le=\"+Inf\"}} {}", s.batches);
        let _ = writeln!(out, "clip_wgpu_batch_seconds_sum{{tower=\"{tower}\"}} {}", s.seconds_sum);
        let _ = writeln!(out, "clip_wgpu_batch_seconds_count{{tower=\"{tower}\"}} {}", s.batches);
    }
}

pub async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let mut out = String::new();
    let _ = writeln!(out, "# HELP clip_wgpu_requests_total HTTP requests answered, by endpoint and status.");
    let _ = writeln!(out, "# TYPE clip_wgpu_requests_total counter");
    {
        let m = st.metrics.requests.lock().unwrap_or_else(|e| e.into_inner());
        for ((endpoint, status), n) in m.iter() {
            let _ =
                writeln!(out, "clip_wgpu_requests_total{{endpoint=\"{}\",status=\"{status}\"}} {n}", escape(endpoint));
        }
    }
    let _ = writeln!(out, "# HELP clip_wgpu_ready Whether the model is loaded and warmed.");
    let _ = writeln!(out, "# TYPE clip_wgpu_ready gauge");
    let _ = writeln!(out, "clip_wgpu_ready {}", u8::from(st.engine.get().is_some()));
    if let Some(e) = st.engine.get() {
        let towers = [("image", e.images.stats()), ("text", e.texts.stats())];
        let _ = writeln!(out, "# HELP clip_wgpu_queue_depth Items in a tower's batcher (queued, preparing, encoding).");
        let _ = writeln!(out, "# TYPE clip_wgpu_queue_depth gauge");
        for (tower, s) in &towers {
            let _ = writeln!(out, "clip_wgpu_queue_depth{{tower=\"{tower}\"}} {}", s.depth);
        }
        let _ = writeln!(out, "# HELP clip_wgpu_batch_limit The batch size in force (halved after a failed batch).");
        let _ = writeln!(out, "# TYPE clip_wgpu_batch_limit gauge");
        for (tower, s) in &towers {
            let _ = writeln!(out, "clip_wgpu_batch_limit{{tower=\"{tower}\"}} {}", s.batch_limit);
        }
        let _ =
            writeln!(out, "# HELP clip_wgpu_items_cancelled_total Items dropped unprocessed (client gone, timeout).");
        let _ = writeln!(out, "# TYPE clip_wgpu_items_cancelled_total counter");
        for (tower, s) in &towers {
            let _ = writeln!(out, "clip_wgpu_items_cancelled_total{{tower=\"{tower}\"}} {}", s.cancelled);
        }
        let _ = writeln!(
            out,
            "# HELP clip_wgpu_batch_memory_caps_total Times free memory capped the batch size below the configured one."
        );
        let _ = writeln!(out, "# TYPE clip_wgpu_batch_memory_caps_total counter");
        for (tower, s) in &towers {
            let _ = writeln!(out, "clip_wgpu_batch_memory_caps_total{{tower=\"{tower}\"}} {}", s.memory_caps);
        }
        histograms(&mut out, &towers);
        let c = e.clip.cache_stats();
        let _ = writeln!(out, "# HELP clip_wgpu_cache_hits_total Embeddings found in the cache.");
        let _ = writeln!(out, "# TYPE clip_wgpu_cache_hits_total counter");
        let _ = writeln!(out, "clip_wgpu_cache_hits_total {}", c.hits);
        let _ = writeln!(out, "# HELP clip_wgpu_cache_misses_total Embeddings not in the cache (encoded).");
        let _ = writeln!(out, "# TYPE clip_wgpu_cache_misses_total counter");
        let _ = writeln!(out, "clip_wgpu_cache_misses_total {}", c.misses);
        let _ = writeln!(out, "# HELP clip_wgpu_cache_entries Embeddings held in memory.");
        let _ = writeln!(out, "# TYPE clip_wgpu_cache_entries gauge");
        let _ = writeln!(out, "clip_wgpu_cache_entries {}", c.entries);
        if let Some(g) = e.clip.gpu() {
            // Constant after warm-up: nothing is created per batch (the soak checks these).
            let s = g.stats();
            for (name, help, n) in [
                ("buffers", "GPU buffers created since start.", s.buffers_created),
                ("bind_groups", "GPU bind groups created since start.", s.bind_groups_created),
                ("pipelines", "GPU compute pipelines created since start.", s.pipelines_created),
                ("submits", "GPU command buffers submitted.", s.submits),
            ] {
                let _ = writeln!(out, "# HELP clip_wgpu_gpu_{name}_total {help}");
                let _ = writeln!(out, "# TYPE clip_wgpu_gpu_{name}_total counter");
                let _ = writeln!(out, "clip_wgpu_gpu_{name}_total {n}");
            }
        }
        let _ = writeln!(out, "# HELP clip_wgpu_info The engine and device serving.");
        let _ = writeln!(out, "# TYPE clip_wgpu_info gauge");
        let device = match e.clip.device() {
            crate::Device::Gpu => "gpu",
            _ => "cpu",
        };
        let _ = writeln!(
            out,
            "clip_wgpu_info{{engine=\"{}\",device=\"{device}\",precision=\"{}\",version=\"{}\"}} 1",
            escape(&e.clip.engine_description()),
            e.clip.precision(),
            env!("CARGO_PKG_VERSION")
        );
    }
    let _ = writeln!(out, "# HELP clip_wgpu_uptime_seconds Seconds since the server started.");
    let _ = writeln!(out, "# TYPE clip_wgpu_uptime_seconds gauge");
    let _ = writeln!(out, "clip_wgpu_uptime_seconds {}", st.started.elapsed().as_secs_f64());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response()
}
