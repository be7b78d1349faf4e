//! Dynamic batching: the items of concurrent callers merged into true encoder batches.
//!
//! A [`Batcher`] owns one queue for one tower. Callers [`submit`](Batcher::submit) a list of
//! inputs and get a [`Ticket`]; the items go through
//!
//! 1. a bounded pool of worker threads running [`Processor::prepare`] (decoding and
//!    preprocessing an image, tokenising a text) one item at a time, while
//! 2. one batch thread runs [`Processor::process`] on the prepared items: a batch goes when it
//!    is full, or when nothing more is on its way (no item queued or being prepared), or when
//!    its oldest item has waited [`BatcherConfig::max_wait`]. A lone caller never waits.
//!
//! Each item has its own completion channel, so a caller's items may span several batches
//! and still come back in order, and an item that fails (a bad image) fails alone. The queue
//! is bounded in items ([`BatcherConfig::max_queue`]): past it [`submit`](Batcher::submit)
//! refuses at once, so memory does not grow with the offered load. Dropping a [`Ticket`]
//! cancels its items: those not yet prepared or batched are dropped unprocessed.
//!
//! When a whole batch fails ([`Processor::process`] returns `Err`, e.g. out of memory), the
//! batch size is halved and the items are retried in smaller batches; it grows back after a
//! run of successful batches. A panic in `prepare` or `process` fails the items concerned,
//! never the batcher.
//!
//! Completion uses `tokio::sync::oneshot` (no runtime needed): [`Ticket::wait`] is a future for
//! any executor, [`Ticket::wait_blocking`] blocks a plain thread.
//!
//! ```no_run
//! use std::sync::Arc;
//! use clip_wgpu::batcher::{Batcher, BatcherConfig, ImageTower};
//! use clip_wgpu::{Clip, ClipOptions};
//! let clip = Arc::new(Clip::load("clip-vit-base-patch32/", &ClipOptions::default())?);
//! let images = Batcher::new(ImageTower::new(clip.clone()), BatcherConfig::for_clip(&clip));
//! let bytes = std::fs::read("dog.jpg").unwrap();
//! let ticket = images.submit(vec![("dog.jpg".to_string(), bytes)]).unwrap();
//! for r in ticket.wait_blocking() {
//!     println!("{} values", r.unwrap().len());
//! }
//! # Ok::<(), clip_wgpu::Error>(())
//! ```

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::{Clip, PreparedImage};

/// Why one item has no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItemError {
    /// The input itself is bad (an undecodable image): the caller's fault.
    #[error("{0}")]
    Invalid(String),
    /// The engine failed on it (or panicked): not the caller's fault.
    #[error("{0}")]
    Engine(String),
    /// The batcher shut down before the item was done.
    #[error("the batcher shut down before this item was processed")]
    ShutDown,
}

/// Why [`Batcher::submit`] refused a list of items.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The queue holds too many items to take these now; retry later.
    #[error("the queue is full ({queued} of {capacity} items waiting): retry later")]
    QueueFull { queued: usize, capacity: usize },
    /// More items than the queue can ever hold.
    #[error("{items} items in one submission, more than the queue holds ({capacity})")]
    TooLarge { items: usize, capacity: usize },
    /// The batcher is shutting down.
    #[error("the batcher is shutting down")]
    ShutDown,
}

/// What a [`Batcher`] runs: per-item preparation, then per-batch processing.
pub trait Processor: Send + Sync + 'static {
    type Input: Send + 'static;
    type Prepared: Send + 'static;
    type Output: Send + 'static;
    /// Prepares one item (on a worker thread, concurrently with other items and with the
    /// batch in [`process`](Self::process)). An error fails this item alone.
    fn prepare(&self, input: Self::Input) -> Result<Self::Prepared, ItemError>;
    /// Processes one batch: one result per item, in order. `Err`: the whole batch failed
    /// (say, out of memory); the batcher retries its items in smaller batches, and a single
    /// item failing so gets the error.
    fn process(&self, batch: &[Self::Prepared]) -> Result<Vec<Result<Self::Output, ItemError>>, String>;
    /// The most items a batch may hold right now, if less than the configured batch size
    /// (memory pressure); asked before every batch. `None`: no limit of its own.
    fn batch_cap(&self) -> Option<usize> {
        None
    }
}

/// How a [`Batcher`] batches.
#[derive(Debug, Clone)]
pub struct BatcherConfig {
    /// Most items per batch (at least 1).
    pub max_batch: usize,
    /// Longest a batch that is not full waits for more items while more are on their way.
    pub max_wait: Duration,
    /// Most items in the batcher at once (queued, being prepared, waiting, in a batch).
    pub max_queue: usize,
    /// Worker threads preparing items (at least 1).
    pub workers: usize,
    /// Thread names start with this.
    pub name: String,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        BatcherConfig {
            max_batch: 32,
            max_wait: Duration::from_millis(5),
            max_queue: 1024,
            workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            name: "batcher".into(),
        }
    }
}

impl BatcherConfig {
    /// The defaults with the batch size the model's device takes ([`Clip::batch_size`]).
    pub fn for_clip(clip: &Clip) -> Self {
        BatcherConfig { max_batch: clip.batch_size(), ..Default::default() }
    }
}

/// Upper bounds of the batch-duration histogram, in seconds.
pub const SECONDS_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// What a batcher has done so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatcherStats {
    /// Items in the batcher now (queued, preparing, waiting for a batch, in a batch).
    pub depth: usize,
    /// Batches processed.
    pub batches: u64,
    /// Items processed in those batches.
    pub items: u64,
    /// `sizes[n]`: batches of `n` items (index 0 unused).
    pub sizes: Vec<u64>,
    /// Seconds spent in [`Processor::process`], summed.
    pub seconds_sum: f64,
    /// Batches per duration bucket ([`SECONDS_BUCKETS`], not cumulative), then the rest.
    pub seconds_counts: Vec<u64>,
    /// Items cancelled (their ticket dropped) before being processed.
    pub cancelled: u64,
    /// Times the batch size was halved after a batch failed.
    pub shrinks: u64,
    /// The batch size in force now.
    pub batch_limit: usize,
    /// Times the processor capped the batch size below it (memory pressure).
    pub memory_caps: u64,
}

struct Pending<I, O> {
    value: I,
    tx: oneshot::Sender<Result<O, ItemError>>,
    since: Instant,
}

struct State<P: Processor> {
    raw: VecDeque<Pending<P::Input, P::Output>>,
    ready: VecDeque<Pending<P::Prepared, P::Output>>,
    preparing: usize,
    shutdown: bool,
}

struct Shared<P: Processor> {
    processor: P,
    config: BatcherConfig,
    state: Mutex<State<P>>,
    /// workers wait on it for raw items
    raw_cv: Condvar,
    /// the batch thread waits on it for prepared items
    ready_cv: Condvar,
    /// items admitted and not yet answered or dropped
    depth: AtomicUsize,
    stats: Mutex<BatcherStats>,
}

impl<P: Processor> Shared<P> {
    fn lock(&self) -> MutexGuard<'_, State<P>> {
        // no user code runs under the lock: a poisoned lock still holds a consistent state
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stats(&self) -> MutexGuard<'_, BatcherStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One item leaves the batcher.
    fn done(&self, cancelled: bool) {
        self.depth.fetch_sub(1, Ordering::SeqCst);
        if cancelled {
            self.stats().cancelled += 1;
        }
    }

    fn answer<O>(&self, tx: oneshot::Sender<Result<O, ItemError>>, r: Result<O, ItemError>) {
        // out of the count first: whoever gets the result sees the queue without it
        self.done(false);
        // a receiver gone meanwhile (its ticket dropped) just does not get it
        let _ = tx.send(r);
    }
}

/// Merges the items of concurrent submissions into batches for one [`Processor`]. Dropping it
/// finishes the items already submitted, then stops its threads.
pub struct Batcher<P: Processor> {
    shared: Arc<Shared<P>>,
    threads: Vec<JoinHandle<()>>,
}

/// The pending results of one submission, in input order. Dropping it cancels the items not
/// processed yet.
pub struct Ticket<O> {
    rx: Vec<oneshot::Receiver<Result<O, ItemError>>>,
}

impl<O> Ticket<O> {
    /// Items in the submission.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// Waits for every item's result (a future for any executor).
    pub async fn wait(self) -> Vec<Result<O, ItemError>> {
        let mut out = Vec::with_capacity(self.rx.len());
        for rx in self.rx {
            out.push(rx.await.unwrap_or(Err(ItemError::ShutDown)));
        }
        out
    }

    /// Waits for every item's result, blocking this thread (not from within an async
    /// runtime's thread).
    pub fn wait_blocking(self) -> Vec<Result<O, ItemError>> {
        self.rx.into_iter().map(|rx| rx.blocking_recv().unwrap_or(Err(ItemError::ShutDown))).collect()
    }
}

impl<P: Processor> Batcher<P> {
    /// Starts the worker threads and the batch thread.
    pub fn new(processor: P, config: BatcherConfig) -> Batcher<P> {
        let config = BatcherConfig {
            max_batch: config.max_batch.max(1),
            workers: config.workers.max(1),
            max_queue: config.max_queue.max(1),
            ..config
        };
        let shared = Arc::new(Shared {
            processor,
            state: Mutex::new(State { raw: VecDeque::new(), ready: VecDeque::new(), preparing: 0, shutdown: false }),
            raw_cv: Condvar::new(),
            ready_cv: Condvar::new(),
            depth: AtomicUsize::new(0),
            stats: Mutex::new(BatcherStats {
                sizes: vec![0; config.max_batch + 1],
                seconds_counts: vec![0; SECONDS_BUCKETS.len() + 1],
                batch_limit: config.max_batch,
                ..Default::default()
            }),
            config,
        });
        let mut threads = Vec::new();
        for i in 0..shared.config.workers {
            let s = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("{}-prep-{i}", s.config.name))
                    .spawn(move || worker(&s))
                    .expect("spawning a batcher worker thread"),
            );
        }
        let s = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("{}-batch", s.config.name))
                .spawn(move || batch_loop(&s))
                .expect("spawning the batcher's batch thread"),
        );
        Batcher { shared, threads }
    }

    /// Queues `inputs` (all or none): their results come through the ticket, in order.
    pub fn submit(&self, inputs: Vec<P::Input>) -> Result<Ticket<P::Output>, SubmitError> {
        let n = inputs.len();
        let capacity = self.shared.config.max_queue;
        if n > capacity {
            return Err(SubmitError::TooLarge { items: n, capacity });
        }
        let mut st = self.shared.lock();
        if st.shutdown {
            return Err(SubmitError::ShutDown);
        }
        let queued = self.shared.depth.load(Ordering::SeqCst);
        if queued + n > capacity {
            return Err(SubmitError::QueueFull { queued, capacity });
        }
        self.shared.depth.fetch_add(n, Ordering::SeqCst);
        let now = Instant::now();
        let mut rx = Vec::with_capacity(n);
        for value in inputs {
            let (tx, r) = oneshot::channel();
            st.raw.push_back(Pending { value, tx, since: now });
            rx.push(r);
        }
        drop(st);
        if n == 1 {
            self.shared.raw_cv.notify_one();
        } else if n > 1 {
            self.shared.raw_cv.notify_all();
        }
        Ok(Ticket { rx })
    }

    /// Items in the batcher now (queued, being prepared, waiting, in a batch).
    pub fn queue_depth(&self) -> usize {
        self.shared.depth.load(Ordering::SeqCst)
    }

    /// Counters and histograms so far.
    pub fn stats(&self) -> BatcherStats {
        let mut s = self.shared.stats().clone();
        s.depth = self.queue_depth();
        s
    }

    pub fn config(&self) -> &BatcherConfig {
        &self.shared.config
    }

    pub fn processor(&self) -> &P {
        &self.shared.processor
    }
}

impl<P: Processor> Drop for Batcher<P> {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.raw_cv.notify_all();
        self.shared.ready_cv.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    let what = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("internal error (panic: {what})")
}

fn worker<P: Processor>(s: &Shared<P>) {
    loop {
        let mut st = s.lock();
        let item = loop {
            if let Some(it) = st.raw.pop_front() {
                break it;
            }
            if st.shutdown {
                return;
            }
            st = s.raw_cv.wait(st).unwrap_or_else(|e| e.into_inner());
        };
        if item.tx.is_closed() {
            drop(st);
            s.done(true);
            continue;
        }
        st.preparing += 1;
        drop(st);
        let Pending { value, tx, since } = item;
        let r = catch_unwind(AssertUnwindSafe(|| s.processor.prepare(value)))
            .unwrap_or_else(|p| Err(ItemError::Engine(panic_message(&*p))));
        let mut st = s.lock();
        st.preparing -= 1;
        match r {
            Ok(value) => {
                st.ready.push_back(Pending { value, tx, since });
                drop(st);
            }
            Err(e) => {
                drop(st);
                s.answer(tx, Err(e));
            }
        }
        // the batch thread may be waiting for this item, or for nothing more to come
        s.ready_cv.notify_one();
    }
}

fn batch_loop<P: Processor>(s: &Shared<P>) {
    let max = s.config.max_batch;
    let mut limit = max;
    let mut good_run = 0usize;
    loop {
        let mut st = s.lock();
        let batch = loop {
            // cancelled items leave without being processed
            let before = st.ready.len();
            st.ready.retain(|p| !p.tx.is_closed());
            let dropped = before - st.ready.len();
            if dropped > 0 {
                for _ in 0..dropped {
                    s.done(true);
                }
            }
            let coming = st.raw.len() + st.preparing;
            if st.ready.is_empty() {
                if st.shutdown && coming == 0 {
                    return;
                }
                st = s.ready_cv.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            let deadline = st.ready.iter().map(|p| p.since).min().expect("not empty") + s.config.max_wait;
            let now = Instant::now();
            let limit = match s.processor.batch_cap() {
                Some(cap) if cap.max(1) < limit => {
                    let cap = cap.max(1);
                    let mut stats = s.stats();
                    if stats.batch_limit != cap {
                        stats.batch_limit = cap;
                        stats.memory_caps += 1;
                    }
                    cap
                }
                _ => {
                    let mut stats = s.stats();
                    if stats.batch_limit != limit {
                        stats.batch_limit = limit;
                    }
                    limit
                }
            };
            if st.ready.len() >= limit || coming == 0 || now >= deadline || st.shutdown {
                let n = st.ready.len().min(limit);
                break st.ready.drain(..n).collect::<Vec<_>>();
            }
            st = s.ready_cv.wait_timeout(st, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        };
        drop(st);
        let (values, rest): (Vec<P::Prepared>, Vec<_>) = batch.into_iter().map(|p| (p.value, (p.tx, p.since))).unzip();
        let t0 = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| s.processor.process(&values)))
            .unwrap_or_else(|p| Err(panic_message(&*p)))
            .and_then(|out| {
                if out.len() == values.len() {
                    Ok(out)
                } else {
                    Err(format!("internal error: {} results for a batch of {}", out.len(), values.len()))
                }
            });
        let secs = t0.elapsed().as_secs_f64();
        match r {
            Ok(out) => {
                {
                    let mut st = s.stats();
                    st.batches += 1;
                    st.items += values.len() as u64;
                    st.sizes[values.len()] += 1;
                    st.seconds_sum += secs;
                    let b = SECONDS_BUCKETS.iter().position(|&b| secs <= b).unwrap_or(SECONDS_BUCKETS.len());
                    st.seconds_counts[b] += 1;
                }
                for ((tx, _), o) in rest.into_iter().zip(out) {
                    s.answer(tx, o);
                }
                if limit < max {
                    good_run += 1;
                    if good_run >= 32 {
                        limit = (limit * 2).min(max);
                        good_run = 0;
                        s.stats().batch_limit = limit;
                    }
                }
            }
            Err(msg) if values.len() > 1 => {
                // too big for the device now: halve the batch size and retry these items first
                limit = (values.len() / 2).max(1);
                good_run = 0;
                {
                    let mut st = s.stats();
                    st.shrinks += 1;
                    st.batch_limit = limit;
                }
                let _ = msg;
                let mut st = s.lock();
                for (value, (tx, since)) in values.into_iter().zip(rest).rev() {
                    st.ready.push_front(Pending { value, tx, since });
                }
            }
            Err(msg) => {
                for (tx, _) in rest {
                    s.answer(tx, Err(ItemError::Engine(msg.clone())));
                }
            }
        }
    }
}

/// The image tower of a [`Clip`]: inputs are `(name, encoded image bytes)`; `name` labels
/// errors. Preparing decodes and preprocesses (or finds the embedding in the model's cache);
/// processing encodes a batch. Outputs are L2-normalised embeddings.
pub struct ImageTower {
    clip: Arc<Clip>,
}

impl ImageTower {
    pub fn new(clip: Arc<Clip>) -> Self {
        ImageTower { clip }
    }
}

/// The most images a CPU batch may hold with `available` bytes of memory free, when one image
/// needs `per_image` bytes of activations: half of what is free goes to the batch (the rest is
/// left to the system and to the batches of the other tower), and at least one image always
/// goes.
pub fn memory_cap(available: u64, per_image: u64) -> usize {
    ((available / 2) / per_image.max(1)).clamp(1, usize::MAX as u64) as usize
}

/// Bytes of memory the CPU engine's activations take per image (the residual stream, the
/// attention scores and the MLP's hidden layer, in f32, and the pixels), from the model's
/// configuration.
pub fn cpu_bytes_per_image(clip: &Clip) -> u64 {
    let v = &clip.checkpoint().config.vision;
    let (t, w) = (v.tokens() as u64, v.tower.width as u64);
    let per_token = 4 * w + v.tower.mlp as u64 + v.tower.heads as u64 * t;
    4 * (t * per_token + 3 * (v.image_size * v.image_size) as u64)
}

/// `MemAvailable` from /proc/meminfo (Linux), in bytes.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

impl Processor for ImageTower {
    type Input = (String, Vec<u8>);
    type Prepared = PreparedImage;
    type Output = Vec<f32>;

    fn prepare(&self, (name, bytes): (String, Vec<u8>)) -> Result<PreparedImage, ItemError> {
        self.clip.prepare_bytes(&name, &bytes).map_err(|e| ItemError::Invalid(e.to_string()))
    }

    fn process(&self, batch: &[PreparedImage]) -> Result<Vec<Result<Vec<f32>, ItemError>>, String> {
        let copy = batch
            .iter()
            .map(|p| {
                Ok(match p {
                    PreparedImage::Pixels { pixels, key } => {
                        PreparedImage::Pixels { pixels: pixels.clone(), key: *key }
                    }
                    PreparedImage::Cached(e) => PreparedImage::Cached(e.clone()),
                })
            })
            .collect();
        let to_encode = batch.iter().filter(|p| matches!(p, PreparedImage::Pixels { .. })).count();
        let out = self.clip.encode_prepared(copy);
        // the encoder failing gives every image it had the same engine error: a batch failure
        let failed: Vec<&crate::Error> = out.iter().filter_map(|r| r.as_ref().err()).collect();
        if to_encode > 1 && failed.len() == to_encode {
            return Err(failed[0].to_string());
        }
        Ok(out.into_iter().map(|r| r.map_err(|e| ItemError::Engine(e.to_string()))).collect())
    }

    /// On the CPU, the batch shrinks when free memory would not hold it (on a GPU a batch too
    /// big fails and is retried smaller).
    fn batch_cap(&self) -> Option<usize> {
        if self.clip.device() != crate::Device::Cpu {
            return None;
        }
        Some(memory_cap(available_memory()?, cpu_bytes_per_image(&self.clip)))
    }
}

/// The text tower of a [`Clip`]: inputs are texts; preparing tokenises; outputs are the
/// L2-normalised embedding and the number of tokens (start and end included).
pub struct TextTower {
    clip: Arc<Clip>,
}

impl TextTower {
    pub fn new(clip: Arc<Clip>) -> Self {
        TextTower { clip }
    }
}

impl Processor for TextTower {
    type Input = String;
    type Prepared = Vec<u32>;
    type Output = (Vec<f32>, usize);

    fn prepare(&self, text: String) -> Result<Vec<u32>, ItemError> {
        Ok(self.clip.tokenizer().encode(&text))
    }

    fn process(&self, batch: &[Vec<u32>]) -> Result<Vec<Result<(Vec<f32>, usize), ItemError>>, String> {
        let emb = self.clip.encode_ids(batch).map_err(|e| e.to_string())?;
        let d = self.clip.embed_dim();
        Ok(emb.chunks(d).zip(batch).map(|(e, ids)| Ok((e.to_vec(), ids.len()))).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Doubles numbers; "bad" inputs (negative) fail in prepare; a gate can hold `process`
    /// until released; records every batch it processed.
    struct Double {
        batches: Mutex<Vec<Vec<i64>>>,
        prepared: Mutex<Vec<i64>>,
        gate: Mutex<Option<mpsc::Receiver<()>>>,
        entered: Mutex<Option<mpsc::Sender<()>>>,
        /// batches larger than this fail as a whole (a device out of memory)
        fail_above: AtomicUsize,
        panic_on: i64,
    }

    impl Double {
        fn new() -> Double {
            Double {
                batches: Mutex::new(Vec::new()),
                prepared: Mutex::new(Vec::new()),
                gate: Mutex::new(None),
                entered: Mutex::new(None),
                fail_above: AtomicUsize::new(usize::MAX),
                panic_on: i64::MIN,
            }
        }
    }

    impl Processor for Double {
        type Input = i64;
        type Prepared = i64;
        type Output = i64;
        fn prepare(&self, x: i64) -> Result<i64, ItemError> {
            if x == self.panic_on {
                panic!("prepare panicked on {x}");
            }
            self.prepared.lock().unwrap().push(x);
            if x < 0 {
                return Err(ItemError::Invalid(format!("{x} is negative")));
            }
            Ok(x)
        }
        fn process(&self, batch: &[i64]) -> Result<Vec<Result<i64, ItemError>>, String> {
            if let Some(tx) = self.entered.lock().unwrap().as_ref() {
                let _ = tx.send(());
            }
            if let Some(rx) = self.gate.lock().unwrap().as_ref() {
                let _ = rx.recv();
            }
            if batch.len() > self.fail_above.load(Ordering::SeqCst) {
                return Err(format!("out of memory at {}", batch.len()));
            }
            self.batches.lock().unwrap().push(batch.to_vec());
            Ok(batch.iter().map(|x| Ok(2 * x)).collect())
        }
    }

    fn config(max_batch: usize, max_queue: usize) -> BatcherConfig {
        BatcherConfig { max_batch, max_wait: Duration::from_millis(2), max_queue, workers: 2, name: "test".into() }
    }

    /// A batcher whose first batch (the item `0`) is held in `process` until `release` is
    /// sent: whatever is submitted meanwhile queues up behind it.
    fn held(p: Double, max_batch: usize, max_queue: usize) -> (Batcher<Double>, Ticket<i64>, mpsc::Sender<()>) {
        let (gate_tx, gate_rx) = mpsc::channel();
        let (ent_tx, ent_rx) = mpsc::channel();
        *p.gate.lock().unwrap() = Some(gate_rx);
        *p.entered.lock().unwrap() = Some(ent_tx);
        let b = Batcher::new(p, config(max_batch, max_queue));
        let first = b.submit(vec![0]).unwrap();
        ent_rx.recv_timeout(Duration::from_secs(10)).expect("the first batch starts");
        (b, first, gate_tx)
    }

    /// Waits until `n` items are prepared and waiting for a batch.
    fn wait_ready(b: &Batcher<Double>, n: usize) {
        let t0 = Instant::now();
        while b.shared.lock().ready.len() < n {
            assert!(t0.elapsed() < Duration::from_secs(60), "items never got prepared");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn release(gate: &mpsc::Sender<()>, n: usize) {
        for _ in 0..n {
            let _ = gate.send(());
        }
    }

    #[test]
    fn results_in_order_across_batches() {
        let (b, first, gate) = held(Double::new(), 4, 100);
        let t = b.submit((1..=10).collect()).unwrap();
        wait_ready(&b, 10);
        release(&gate, 100);
        assert_eq!(first.wait_blocking(), vec![Ok(0)]);
        let out: Vec<i64> = t.wait_blocking().into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(out, (1..=10).map(|x| 2 * x).collect::<Vec<_>>());
        let batches = b.processor().batches.lock().unwrap().clone();
        // the ten queued behind the first batch went as batches of at most 4: 4, 4, 2
        assert_eq!(batches.len(), 4, "{batches:?}");
        assert!(batches[1..].iter().all(|x| x.len() <= 4));
        assert_eq!(batches[1..].iter().map(Vec::len).sum::<usize>(), 10);
        let s = b.stats();
        assert_eq!((s.batches, s.items, s.depth), (4, 11, 0));
        assert_eq!(s.sizes[4], 2);
    }

    #[test]
    fn concurrent_submissions_share_batches() {
        let (b, first, gate) = held(Double::new(), 32, 100);
        let tickets: Vec<_> = (0..8).map(|i| b.submit(vec![10 * i + 1, 10 * i + 2]).unwrap()).collect();
        // all 16 items are prepared and waiting before the held batch ends
        wait_ready(&b, 16);
        release(&gate, 100);
        first.wait_blocking();
        for (i, t) in tickets.into_iter().enumerate() {
            let i = i as i64;
            assert_eq!(t.wait_blocking(), vec![Ok(20 * i + 2), Ok(20 * i + 4)]);
        }
        let batches = b.processor().batches.lock().unwrap().clone();
        assert_eq!(batches.len(), 2, "the 8 submissions went as one batch: {batches:?}");
        assert_eq!(batches[1].len(), 16);
    }

    /// A processor that says memory is short gets batches no bigger than its cap, and the
    /// stats say so.
    #[test]
    fn batches_shrink_to_the_processors_memory_cap() {
        struct Capped(Double);
        impl Processor for Capped {
            type Input = i64;
            type Prepared = i64;
            type Output = i64;
            fn prepare(&self, x: i64) -> Result<i64, ItemError> {
                self.0.prepare(x)
            }
            fn process(&self, batch: &[i64]) -> Result<Vec<Result<i64, ItemError>>, String> {
                self.0.process(batch)
            }
            fn batch_cap(&self) -> Option<usize> {
                Some(3)
            }
        }
        let (gate_tx, gate_rx) = mpsc::channel();
        let (ent_tx, ent_rx) = mpsc::channel();
        let d = Double::new();
        *d.gate.lock().unwrap() = Some(gate_rx);
        *d.entered.lock().unwrap() = Some(ent_tx);
        let b = Batcher::new(Capped(d), config(8, 100));
        let first = b.submit(vec![0]).unwrap();
        ent_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let t = b.submit((1..=10).collect()).unwrap();
        let t0 = Instant::now();
        while b.shared.lock().ready.len() < 10 {
            assert!(t0.elapsed() < Duration::from_secs(60));
            std::thread::sleep(Duration::from_millis(1));
        }
        release(&gate_tx, 100);
        first.wait_blocking();
        let out: Vec<i64> = t.wait_blocking().into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(out, (1..=10).map(|x| 2 * x).collect::<Vec<_>>());
        let sizes: Vec<usize> = b.processor().0.batches.lock().unwrap().iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1, 3, 3, 3, 1], "batches of at most the cap, 3");
        let s = b.stats();
        assert_eq!(s.batch_limit, 3);
        assert!(s.memory_caps >= 1);
    }

    #[test]
    fn memory_cap_arithmetic() {
        // 8 GiB free, 1.2 MB per image (ViT-B/32): the configured 32 stands
        assert!(memory_cap(8 << 30, 1_200_000) > 32);
        // 300 MiB free, 38 MB per image (ViT-L/14-336): half of it holds 4 images
        assert_eq!(memory_cap(300 << 20, 38_000_000), 4);
        // nothing free: one image still goes
        assert_eq!(memory_cap(0, 38_000_000), 1);
    }

    #[test]
    fn a_bad_item_fails_alone() {
        let b = Batcher::new(Double::new(), config(8, 100));
        let out = b.submit(vec![1, -2, 3]).unwrap().wait_blocking();
        assert_eq!(out, vec![Ok(2), Err(ItemError::Invalid("-2 is negative".into())), Ok(6)]);
    }

    #[test]
    fn a_panic_fails_its_item_and_the_batcher_goes_on() {
        let p = Double { panic_on: 7, ..Double::new() };
        let b = Batcher::new(p, config(8, 100));
        let out = b.submit(vec![1, 7, 3]).unwrap().wait_blocking();
        assert_eq!(out[0], Ok(2));
        assert!(matches!(&out[1], Err(ItemError::Engine(m)) if m.contains("prepare panicked on 7")), "{out:?}");
        assert_eq!(out[2], Ok(6));
        assert_eq!(b.submit(vec![5]).unwrap().wait_blocking(), vec![Ok(10)]);
    }

    #[test]
    fn queue_full_is_refused_at_once() {
        let (b, first, gate) = held(Double::new(), 4, 5);
        // one item (the held one) is in; four more fit
        let t = b.submit(vec![1, 2, 3, 4]).unwrap();
        assert_eq!(b.submit(vec![5]).err(), Some(SubmitError::QueueFull { queued: 5, capacity: 5 }));
        assert_eq!(b.submit(vec![1; 6]).err(), Some(SubmitError::TooLarge { items: 6, capacity: 5 }));
        release(&gate, 100);
        first.wait_blocking();
        assert_eq!(t.wait_blocking(), vec![Ok(2), Ok(4), Ok(6), Ok(8)]);
        // room again
        assert_eq!(b.submit(vec![5]).unwrap().wait_blocking(), vec![Ok(10)]);
        assert_eq!(b.queue_depth(), 0);
    }

    #[test]
    fn cancellation_drops_queued_items() {
        let (b, first, gate) = held(Double::new(), 4, 100);
        let kept = b.submit(vec![1, 2]).unwrap();
        let dropped = b.submit(vec![100, 101, 102]).unwrap();
        wait_ready(&b, 5);
        drop(dropped);
        release(&gate, 100);
        first.wait_blocking();
        assert_eq!(kept.wait_blocking(), vec![Ok(2), Ok(4)]);
        // the next submission is processed after anything left: nothing of the dropped one ran
        assert_eq!(b.submit(vec![3]).unwrap().wait_blocking(), vec![Ok(6)]);
        let processed: Vec<i64> = b.processor().batches.lock().unwrap().concat();
        assert!(processed.iter().all(|&x| x < 100), "cancelled items were processed: {processed:?}");
        let s = b.stats();
        assert_eq!(s.cancelled, 3);
        assert_eq!(s.depth, 0);
    }

    #[test]
    fn a_failing_batch_is_retried_smaller() {
        let p = Double::new();
        p.fail_above.store(2, Ordering::SeqCst);
        let (b, first, gate) = held(p, 8, 100);
        let t = b.submit((1..=8).collect()).unwrap();
        release(&gate, 1000);
        first.wait_blocking();
        let out: Vec<i64> = t.wait_blocking().into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(out, (1..=8).map(|x| 2 * x).collect::<Vec<_>>());
        let s = b.stats();
        assert!(s.shrinks >= 1);
        assert!(s.batch_limit <= 2);
        assert!(b.processor().batches.lock().unwrap().iter().all(|x| x.len() <= 2));
        // a single item the device cannot take gets the error
        b.processor().fail_above.store(0, Ordering::SeqCst);
        let out = b.submit(vec![9]).unwrap().wait_blocking();
        assert_eq!(out, vec![Err(ItemError::Engine("out of memory at 1".into()))]);
    }

    #[test]
    fn a_lone_item_does_not_wait() {
        // a max_wait far beyond the test's patience: the lone item still goes at once
        let cfg = BatcherConfig { max_wait: Duration::from_secs(3600), ..config(32, 10) };
        let b = Batcher::new(Double::new(), cfg);
        let (tx, rx) = mpsc::channel();
        let t = b.submit(vec![21]).unwrap();
        std::thread::spawn(move || tx.send(t.wait_blocking()));
        assert_eq!(rx.recv_timeout(Duration::from_secs(60)).unwrap(), vec![Ok(42)]);
    }

    #[test]
    fn async_wait_and_drop_finishes_work() {
        let b = Batcher::new(Double::new(), config(4, 100));
        let t = b.submit(vec![1, 2, 3]).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        assert_eq!(rt.block_on(t.wait()), vec![Ok(2), Ok(4), Ok(6)]);
        let t = b.submit(vec![4]).unwrap();
        drop(b);
        // dropping the batcher finished what was submitted
        assert_eq!(t.wait_blocking(), vec![Ok(8)]);
    }
}
