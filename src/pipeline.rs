//! Streaming image encoding: inputs go through decoding and preprocessing on the rayon pool
//! one batch ahead of the encoder (a bounded queue between the two), so a list of any length
//! holds at most `prefetch + 2` batches of pixels at a time, and the encoder always gets full
//! batches. Images the embedding cache already holds skip decoding and the encoder.
//!
//! ```no_run
//! use clip_wgpu::{pipeline::Pipeline, Clip, ClipOptions};
//! let clip = Clip::load("clip-vit-base-patch32/", &ClipOptions::default())?;
//! let paths = ["a.jpg", "b.png"].map(std::path::PathBuf::from);
//! Pipeline::new(&clip, clip.batch_size()).run(
//!     paths.into_iter(),
//!     |p| clip.prepare_file(p),
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

use crate::{Clip, PreparedImage, Result};

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

    /// Runs every item of `items` through `prepare` (in parallel: usually
    /// [`Clip::prepare_file`], the cached embedding or the decoded and preprocessed pixels)
    /// and the image encoder, and hands the results to `sink` batch by batch, in
    /// input order. A failed item carries its error; the others are still encoded. Stops at
    /// the first error `sink` returns, and returns it.
    pub fn run<T, I, P, S, E>(&self, items: I, prepare: P, mut sink: S) -> std::result::Result<(), E>
    where
        T: Send,
        I: Iterator<Item = T> + Send,
        P: Fn(&T) -> Result<PreparedImage> + Sync,
        S: FnMut(Vec<Embedded<T>>) -> std::result::Result<(), E>,
    {
        let (tx, rx) = sync_channel::<Vec<(T, Result<PreparedImage>)>>(self.prefetch);
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
                    let prepared: Vec<(T, Result<PreparedImage>)> = chunk
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

    fn encode<T>(&self, batch: Vec<(T, Result<PreparedImage>)>) -> Vec<Embedded<T>> {
        let (items, prepared): (Vec<T>, Vec<Result<PreparedImage>>) = batch.into_iter().unzip();
        items.into_iter().zip(self.clip.encode_prepared(prepared)).collect()
    }
}
