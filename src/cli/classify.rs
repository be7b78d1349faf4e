//! `classify`: zero-shot classification. Each label goes through the prompt template, the
//! prompts are encoded once, and each image gets the softmax over the labels of its logits
//! (`exp(logit_scale)·cos`) and its top-k labels.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;
use serde_json::json;

use clip_wgpu::pipeline::Pipeline;
use clip_wgpu::{cosine, softmax, Error};

use super::inputs::{read_lines, ImageArgs, ImageInput};
use super::output::{Cell, Col, Format, RecordWriter, Sink};
use super::{exit_code, load, ModelArgs, Progress};

#[derive(Args)]
pub struct ClassifyArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub images: ImageArgs,
    /// A label (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// A file of labels, one per line (empty lines skipped). Repeatable; after the --label ones.
    #[arg(long, value_name = "FILE")]
    pub labels_from: Vec<PathBuf>,
    /// Prompt template: `{}` is replaced by the label.
    #[arg(long, default_value = "a photo of a {}.")]
    pub template: String,
    /// How many labels to give per image, most probable first (at most the number of labels).
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// Output format: a table; JSON `{"results": [{"image", "top": [{"label","prob","logit","cosine"}]}],
    /// "errors": [{"input","error"}], "template"}`; JSONL (one image per line); CSV, TSV (one row
    /// per image and rank).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write to FILE (atomically) instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// No progress bar and no notices (failed inputs are still reported).
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Serialize)]
struct Top<'a> {
    label: &'a str,
    prob: f32,
    logit: f32,
    cosine: f32,
}

#[derive(Serialize)]
struct Result<'a> {
    image: &'a str,
    top: Vec<Top<'a>>,
}

const COLUMNS: &[(&str, Col)] = &[
    ("image", Col::Text),
    ("rank", Col::Int),
    ("label", Col::Text),
    ("prob", Col::Num),
    ("logit", Col::Num),
    ("cosine", Col::Num),
];

pub fn classify(a: ClassifyArgs) -> std::result::Result<ExitCode, Error> {
    let mut labels = a.labels.clone();
    for p in &a.labels_from {
        labels.extend(read_lines(p)?);
    }
    if labels.is_empty() {
        return Err(Error::Invalid("no labels: give --label or --labels-from".into()));
    }
    if a.images.is_empty() {
        return Err(Error::Invalid("no images: give --image (file, directory, glob or -) or --images-from".into()));
    }
    if !a.template.contains("{}") {
        return Err(Error::Invalid(format!("--template {:?} has no {{}} for the label", a.template)));
    }
    if a.top_k == 0 {
        return Err(Error::Invalid("--top-k must be at least 1".into()));
    }
    let prompts: Vec<String> = labels.iter().map(|l| a.template.replace("{}", l)).collect();
    let clip = load(&a.model, a.quiet)?;
    let txt = clip.encode_texts(&prompts)?;
    let (d, scale, k) = (clip.embed_dim(), clip.logit_scale(), a.top_k.min(labels.len()));
    let progress = Progress::new(a.quiet, "images");
    let mut w = RecordWriter::new(a.format, Sink::open(a.output.as_deref())?, "results", COLUMNS)?;
    let mut failed = 0;
    Pipeline::new(&clip, clip.batch_size()).run(
        a.images.iter(),
        |it: &ImageInput| it.prepare(&clip),
        |batch| {
            super::check_interrupted()?;
            progress.inc(batch.len());
            for (it, r) in batch {
                let e = match r {
                    Ok(e) => e,
                    Err(err) => {
                        failed += 1;
                        let err = err.to_string();
                        progress.report(&it.name, &err);
                        w.error(&it.name, &err, &[])?;
                        continue;
                    }
                };
                let cos: Vec<f32> = txt.chunks(d).map(|t| cosine(&e, t)).collect();
                let logits: Vec<f32> = cos.iter().map(|c| scale * c).collect();
                let probs = softmax(&logits);
                let mut order: Vec<usize> = (0..labels.len()).collect();
                // most probable first; ties in label order
                order.sort_by(|&x, &y| probs[y].total_cmp(&probs[x]).then(x.cmp(&y)));
                order.truncate(k);
                let top: Vec<Top> = order
                    .iter()
                    .map(|&i| Top { label: &labels[i], prob: probs[i], logit: logits[i], cosine: cos[i] })
                    .collect();
                let rows = top
                    .iter()
                    .enumerate()
                    .map(|(rank, t)| {
                        vec![
                            Cell::Text(it.name.clone()),
                            Cell::Int(rank + 1),
                            Cell::Text(t.label.to_string()),
                            Cell::Num(t.prob, 4),
                            Cell::Num(t.logit, 3),
                            Cell::Num(t.cosine, 5),
                        ]
                    })
                    .collect();
                w.record(&Result { image: &it.name, top }, rows)?;
            }
            w.flush()
        },
    )?;
    drop(progress);
    let mut summary = serde_json::Map::new();
    if a.format == Format::Json {
        summary.insert("template".into(), json!(a.template));
    }
    w.finish(summary, &[])?;
    Ok(exit_code(failed))
}
