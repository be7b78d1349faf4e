//! Streaming image encoding: inputs go through decoding and preprocessing on the rayon pool
//! one batch ahead of the encoder (a bounded queue between the two), so a list of any length
//! holds at most `prefetch + 1` batches of pixels at a time, and the encoder always gets full
//! batches.
//!
//! ```no_run
//! use clip_wgpu::{pipeline::Pipeline, Clip, ClipOptions};
//! let clip = Clip::load("clip-vit-base-patch32/", &ClipOptions::default())?;
//! let paths = ["a.jpg", "b.png"].map(std::path::PathBuf::from);
//! Pipeline::new(&clip, 32).run(
//!     paths.into_iter(),
//!     |p| clip.preprocess_file(p),
//!     |batch| {
//!         for (path, emb) in batch {
//!             match emb {
//!                 Ok(e) => println!("{}: {} values", path.display(), e.len()),
//!                 Err(err) => eprintln!("{err}"),
//!             }
//!         }
//!         Ok::<(), clip_wgpu::Error>(())
//!     },
//! )?;
//! # Ok::<(), clip_wgpu::Error>(())
//! ```

use std::sync::mpsc::sync_channel;

use rayon::prelude::*;

use crate::{Clip, Error, Result};

/// One input with its embedding (L2-normalised, `embed_dim` values) or its error.
pub type Embedded<T> = (T, Result<Vec<f32>>);

/// Batches inputs through preprocessing and the encoder of a [`Clip`].
pub struct Pipeline<'c> {
    clip: &'c Clip,
    batch_size: usize,
    prefetch: usize,
}

impl<'c> Pipeline<'c> {
    /// `batch_size` inputs per encoder call (at least 1); one batch is preprocessed ahead.
    pub fn new(clip: &'c Clip, batch_size: usize) -> Self {
        Pipeline { clip, batch_size: batch_size.max(1), prefetch: 1 }
    }

    /// How many preprocessed batches may wait for the encoder (at least 1).
    pub fn prefetch(mut self, batches: usize) -> Self {
        self.prefetch = batches.max(1);
        self
    }

    /// Runs every item of `items` through `prepare` (decode and preprocess to `3·S·S` pixels,
    /// in parallel) and the image encoder, and hands the results to `sink` batch by batch, in
    /// input order. A failed item carries its error; the others are still encoded. Stops at
    /// the first error `sink` returns, and returns it.
    pub fn run<T, I, P, S, E>(&self, items: I, prepare: P, mut sink: S) -> std::result::Result<(), E>
    where
        T: Send,
        I: Iterator<Item = T> + Send,
        P: Fn(&T) -> Result<Vec<f32>> + Sync,
        S: FnMut(Vec<Embedded<T>>) -> std::result::Result<(), E>,
    {
        let (tx, rx) = sync_channel::<Vec<(T, Result<Vec<f32>>)>>(self.prefetch);
        let batch_size = self.batch_size;
        let prepare = &prepare;
        std::thread::scope(|s| {
            s.spawn(move || {
                let mut items = items;
                loop {
                    let chunk: Vec<T> = items.by_ref().take(batch_size).collect();
                    if chunk.is_empty() {
                        break;
                    }
                    let prepared: Vec<(T, Result<Vec<f32>>)> = chunk
                        .into_par_iter()
                        .map(|t| {
                            let px = prepare(&t);
                            (t, px)
                        })
                        .collect();
                    // the receiver is gone when the sink failed: stop reading inputs
                    if tx.send(prepared).is_err() {
                        break;
                    }
                }
            });
            // owned here, so an early return drops it and unblocks the producer before the join
            let rx = rx;
            for batch in rx.iter() {
                sink(self.encode(batch))?;
            }
            Ok(())
        })
    }

    fn encode<T>(&self, batch: Vec<(T, Result<Vec<f32>>)>) -> Vec<Embedded<T>> {
        let n = batch.iter().filter(|(_, r)| r.is_ok()).count();
        let mut px = Vec::with_capacity(batch.iter().map(|(_, r)| r.as_ref().map_or(0, |v| v.len())).sum());
        for (_, r) in &batch {
            if let Ok(v) = r {
                px.extend_from_slice(v);
            }
        }
        let emb = if n == 0 { Ok(Vec::new()) } else { self.clip.encode_pixels(&px, n) };
        drop(px);
        match emb {
            Ok(emb) => {
                let mut rows = emb.chunks(self.clip.embed_dim());
                batch
                    .into_iter()
                    .map(|(t, r)| (t, r.map(|_| rows.next().expect("one embedding per image").to_vec())))
                    .collect()
            }
            // the encoder itself failed (a forced GPU): every image of the batch gets that error
            Err(e) => {
                let msg = e.to_string();
                batch.into_iter().map(|(t, r)| (t, r.and_then(|_| Err(Error::Gpu(msg.clone()))))).collect()
            }
        }
    }
}
