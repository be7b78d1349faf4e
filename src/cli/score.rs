//! `score`: every image × every text, or the aligned pairs of a pairs file, streamed through
//! the pipeline; optional threshold filter and torchmetrics' CLIPScore.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::json;

use clip_wgpu::pipeline::Pipeline;
use clip_wgpu::{clip_score, cosine, Error};

use super::inputs::{read_pairs, ImageArgs, ImageInput, TextArgs};
use super::output::{Cell, Col, Format, RecordWriter, Sink};
use super::{exit_code, load, ModelArgs, Progress};

#[derive(Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub images: ImageArgs,
    #[command(flatten)]
    pub texts: TextArgs,
    /// Aligned image/caption pairs instead of images × texts: a .csv or .tsv with a header row
    /// naming an `image` column and a `text` (or `caption`) column, or a .jsonl of
    /// `{"image": PATH, "text": STR}` objects, or a WebDataset shard (.tar: each sample's image
    /// with its .txt caption, or its .json's "caption"). Relative image paths are from the
    /// current directory.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["images", "images_from", "texts", "texts_from"])]
    pub pairs: Option<PathBuf>,
    /// Output format: a table; JSON `{"scores": [{"image","text","score","cosine","logit"}],
    /// "errors": [{"input","error"}]}`; JSONL, CSV, TSV (one record per pair, written as
    /// results come); Parquet (with --output: those columns plus `embedding`, the image's
    /// L2-normalised embedding, so one pass over a dataset gives both its scores and its
    /// embeddings).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write to FILE (atomically: a temporary file renamed when complete) instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also give torchmetrics' CLIPScore: the mean of 100·cos over every scored pair (before
    /// --threshold), clamped at 0 (`clipscore_torchmetrics`; on stderr for CSV/TSV).
    #[arg(long)]
    pub mean: bool,
    /// Keep only the pairs whose CLIP score is at least T (or below T with --keep below).
    #[arg(long, value_name = "T")]
    pub threshold: Option<f32>,
    /// Which side of --threshold to keep.
    #[arg(long, value_enum, default_value_t = Keep::Above, requires = "threshold")]
    pub keep: Keep,
    /// No progress bar and no notices (failed inputs are still reported).
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Keep {
    /// score ≥ T
    Above,
    /// score < T
    Below,
}

#[derive(Serialize)]
struct Score<'a> {
    image: &'a str,
    text: &'a str,
    score: f32,
    cosine: f32,
    logit: f32,
}

/// The record columns; `embedding` (the image's) only in the typed formats.
fn columns(dim: usize) -> [(&'static str, Col); 6] {
    [
        ("image", Col::Text),
        ("text", Col::Text),
        ("score", Col::Num),
        ("cosine", Col::Num),
        ("logit", Col::Num),
        ("embedding", Col::Vector(dim)),
    ]
}

/// Counts, the running mean, the filter, and the writer.
struct Scorer {
    w: RecordWriter,
    /// the image's embedding goes in each record (Parquet)
    embeddings: bool,
    scale: f32,
    threshold: Option<(f32, Keep)>,
    sum: f64,
    scored: usize,
    kept: usize,
    failed: usize,
}

impl Scorer {
    fn pair(&mut self, image: &str, text: &str, img: &[f32], txt: &[f32]) -> clip_wgpu::Result<()> {
        let c = cosine(img, txt);
        let s = clip_score(c);
        self.sum += 100.0 * c as f64;
        self.scored += 1;
        let keep = match self.threshold {
            None => true,
            Some((t, Keep::Above)) => s >= t,
            Some((t, Keep::Below)) => s < t,
        };
        if !keep {
            return Ok(());
        }
        self.kept += 1;
        let logit = self.scale * c;
        let mut row = vec![
            Cell::Text(image.into()),
            Cell::Text(text.into()),
            Cell::Num(s, 3),
            Cell::Num(c, 5),
            Cell::Num(logit, 3),
        ];
        if self.embeddings {
            row.push(Cell::Vector(img.to_vec()));
        }
        self.w.record(&Score { image, text, score: s, cosine: c, logit }, vec![row])
    }

    fn error(&mut self, progress: &Progress, input: &str, err: &str, text: Option<&str>) -> clip_wgpu::Result<()> {
        self.failed += 1;
        progress.report(input, err);
        match text {
            Some(t) => self.w.error(input, err, &[("text", t)]),
            None => self.w.error(input, err, &[]),
        }
    }
}

pub fn score(a: ScoreArgs) -> Result<ExitCode, Error> {
    let texts = a.texts.collect()?;
    if a.pairs.is_none() {
        if a.images.is_empty() {
            return Err(Error::Invalid(
                "no images: give --image (file, directory, glob or -), --images-from or --pairs".into(),
            ));
        }
        if texts.is_empty() {
            return Err(Error::Invalid("no texts: give --text or --texts-from (or use --pairs)".into()));
        }
    }
    let pairs = a.pairs.as_deref().map(read_pairs).transpose()?;
    let clip = load(&a.model, a.quiet)?;
    let progress = Progress::new(a.quiet, "images");
    let w = RecordWriter::new(a.format, Sink::open(a.output.as_deref())?, "scores", &columns(clip.embed_dim()))?;
    let mut sc = Scorer {
        w,
        embeddings: a.format == Format::Parquet,
        scale: clip.logit_scale(),
        threshold: a.threshold.map(|t| (t, a.keep)),
        sum: 0.0,
        scored: 0,
        kept: 0,
        failed: 0,
    };
    let pipeline = Pipeline::new(&clip, clip.batch_size());
    let d = clip.embed_dim();
    let mut done = 0;
    match pairs {
        None => {
            // texts once, up front
            let txt = clip.encode_texts(&texts)?;
            pipeline.run(
                a.images.iter(),
                |it: &ImageInput| it.prepare(&clip),
                |batch| {
                    super::check_interrupted()?;
                    progress.inc(batch.len());
                    done += batch.len();
                    super::stats_line(&clip, done);
                    for (it, r) in batch {
                        match r {
                            Ok(e) => {
                                for (t, te) in texts.iter().zip(txt.chunks(d)) {
                                    sc.pair(&it.name, t, &e, te)?;
                                }
                            }
                            Err(err) => sc.error(&progress, &it.name, &err.to_string(), None)?,
                        }
                    }
                    sc.w.flush()
                },
            )?;
        }
        Some(pairs) => {
            pipeline.run(
                pairs,
                |p| p.image.prepare(&clip),
                |batch| {
                    super::check_interrupted()?;
                    progress.inc(batch.len());
                    done += batch.len();
                    super::stats_line(&clip, done);
                    let ok: Vec<&str> = batch.iter().filter(|(_, r)| r.is_ok()).map(|(p, _)| p.text.as_str()).collect();
                    let txt = clip.encode_texts(&ok)?;
                    let mut rows = txt.chunks(d);
                    for (p, r) in &batch {
                        match r {
                            Ok(e) => sc.pair(&p.image.name, &p.text, e, rows.next().expect("one text per pair"))?,
                            Err(err) => {
                                let text = (!p.text.is_empty()).then_some(p.text.as_str());
                                sc.error(&progress, &p.image.name, &err.to_string(), text)?
                            }
                        }
                    }
                    sc.w.flush()
                },
            )?;
        }
    }
    drop(progress);
    let mean = if sc.scored == 0 { 0.0 } else { (sc.sum / sc.scored as f64).max(0.0) as f32 };
    let mut summary = serde_json::Map::new();
    let mut notes = Vec::new();
    if a.mean {
        summary.insert("clipscore_torchmetrics".into(), short(mean));
        notes.push(format!("CLIPScore (torchmetrics: mean of 100·cos, clamped at 0): {mean:.4}"));
    }
    if let Some(t) = a.threshold {
        summary.insert("threshold".into(), short(t));
        summary.insert("kept".into(), json!(sc.kept));
        summary.insert("dropped".into(), json!(sc.scored - sc.kept));
        notes.push(format!(
            "kept {} of {} pairs ({} {t})",
            sc.kept,
            sc.scored,
            if a.keep == Keep::Above { "score ≥" } else { "score <" }
        ));
    }
    if matches!(a.format, Format::Csv | Format::Tsv | Format::Parquet) {
        for n in &notes {
            eprintln!("clip-wgpu: {n}");
        }
    }
    let failed = sc.failed;
    sc.w.finish(summary, &notes)?;
    Ok(exit_code(failed))
}

/// An f32 as a JSON number with its shortest digits (as serde writes an f32), not the f64's.
fn short(x: f32) -> serde_json::Value {
    x.to_string().parse::<f64>().map(|v| json!(v)).unwrap_or(serde_json::Value::Null)
}
