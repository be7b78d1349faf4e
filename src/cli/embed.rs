//! `embed`: L2-normalised embeddings as JSON (the original contract), JSONL, a matrix
//! (`.npy` or `.safetensors`) with a JSONL index of its rows, Parquet, or clip-retrieval's
//! layout (see `columns`), streamed through the pipeline.

use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::json;

use clip_wgpu::pipeline::Pipeline;
use clip_wgpu::Error;

use super::columns::{ColumnsWriter, Row};
use super::inputs::{ImageArgs, ImageInput, TextArgs};
use super::output::{io_err, AtomicFile, Sink};
use super::{exit_code, load, ModelArgs, Progress};

#[derive(Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub images: ImageArgs,
    #[command(flatten)]
    pub texts: TextArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = EmbedFormat::Json)]
    pub format: EmbedFormat,
    /// json/jsonl: write to FILE (atomically) instead of stdout. npy/safetensors: required,
    /// the PREFIX of PREFIX.npy (or PREFIX.safetensors) and PREFIX.jsonl. parquet: required,
    /// the FILE. clip-retrieval: required, the DIRECTORY.
    #[arg(long, short, value_name = "FILE|PREFIX")]
    pub output: Option<PathBuf>,
    /// Element type of the .npy/.safetensors matrix.
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    pub dtype: Dtype,
    /// No progress bar and no notices (failed inputs are still reported).
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum EmbedFormat {
    /// `{"images": [{"input", "embedding"}|{"input", "error"}], "texts": [...], "engine", "precision"}`
    Json,
    /// One `{"input", "kind": "image"|"text", "embedding"}` (or `"error"`) object per line.
    Jsonl,
    /// PREFIX.npy: an N×D matrix (images in order, then texts; failed inputs have no row), and
    /// PREFIX.jsonl: one `{"row", "input", "kind"}` line per input, `{"input", "kind", "error"}`
    /// for a failed one.
    Npy,
    /// PREFIX.safetensors: the same matrix as one tensor named `embeddings` (N×D), and the
    /// same PREFIX.jsonl index.
    Safetensors,
    /// One Parquet file (--output FILE): columns `input` (path, shard sample key or text),
    /// `kind`, `shard`, `caption` (nullable) and `embedding` (fixed_size_list<float32>[D]);
    /// failed inputs have no row.
    Parquet,
    /// clip-retrieval's layout under --output DIR: img_emb/img_emb_0.npy,
    /// text_emb/text_emb_0.npy (the samples' captions) and metadata/metadata_0.parquet
    /// (`image_path`, `key`, `caption`), which autofaiss and embedding-reader read. Images only.
    ClipRetrieval,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
}

/// One input's result in structured output: an embedding or an error.
#[derive(Serialize)]
struct Item<'a> {
    input: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shard: Option<&'a Path>,
    #[serde(skip_serializing_if = "Option::is_none")]
    caption: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    embedding: Option<&'a [f32]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// Where embeddings go, as they come.
enum Writer {
    Json { out: Sink, n: usize },
    Jsonl { out: Sink },
    Npy { npy: NpyWriter, index: BufWriter<AtomicFile>, index_path: PathBuf },
    Columns(Box<ColumnsWriter>),
}

impl Writer {
    /// One input's result; `sample`: the shard and caption of a WebDataset sample.
    fn item(
        &mut self,
        kind: &'static str,
        input: &str,
        sample: Option<(&Path, Option<&str>)>,
        r: Result<&[f32], &str>,
    ) -> clip_wgpu::Result<()> {
        let (embedding, error) = match r {
            Ok(e) => (Some(e), None),
            Err(e) => (None, Some(e)),
        };
        let (shard, caption) = (sample.map(|s| s.0), sample.and_then(|s| s.1));
        match self {
            Writer::Json { out, n } => {
                let p = PathBuf::from("<output>");
                if *n > 0 {
                    out.write_all(b",").map_err(|e| io_err(&p, e))?;
                }
                *n += 1;
                serde_json::to_writer(out, &Item { input, kind: None, shard, caption, embedding, error })
                    .map_err(|e| io_err(&p, e))
            }
            Writer::Jsonl { out } => {
                let p = PathBuf::from("<output>");
                serde_json::to_writer(&mut *out, &Item { input, kind: Some(kind), shard, caption, embedding, error })
                    .map_err(|e| io_err(&p, e))?;
                out.write_all(b"\n").map_err(|e| io_err(&p, e))
            }
            Writer::Npy { npy, index, index_path } => {
                let mut line = match r {
                    Ok(e) => json!({"row": npy.push(e)?, "input": input, "kind": kind}),
                    Err(err) => json!({"input": input, "kind": kind, "error": err}),
                };
                if let Some(s) = shard {
                    line["shard"] = json!(s);
                    line["caption"] = json!(caption);
                }
                serde_json::to_writer(&mut *index, &line).map_err(|e| io_err(index_path, e))?;
                index.write_all(b"\n").map_err(|e| io_err(index_path, e))
            }
            Writer::Columns(c) => match embedding {
                Some(e) => c.push(Row { input, kind, shard, caption }, e),
                None => Ok(()),
            },
        }
    }

    /// Between the images and the texts.
    fn texts_begin(&mut self) -> clip_wgpu::Result<()> {
        if let Writer::Json { out, n } = self {
            *n = 0;
            out.write_all(b"],\"texts\":[").map_err(|e| io_err(Path::new("<output>"), e))?;
        }
        Ok(())
    }

    fn flush(&mut self, clip: &clip_wgpu::Clip) -> clip_wgpu::Result<()> {
        let r = match self {
            Writer::Json { out, .. } | Writer::Jsonl { out } => out.flush(),
            Writer::Npy { .. } => Ok(()),
            Writer::Columns(c) => return c.end_batch(clip),
        };
        r.map_err(|e| io_err(Path::new("<output>"), e))
    }
}

pub fn embed(a: EmbedArgs) -> Result<ExitCode, Error> {
    let container = match a.format {
        EmbedFormat::Npy => Some(Container::Npy),
        EmbedFormat::Safetensors => Some(Container::Safetensors),
        _ => None,
    };
    let npy_prefix = match (container, &a.output) {
        (Some(c), None) => {
            return Err(Error::Invalid(format!(
                "--format {} needs --output PREFIX (writes PREFIX.{} and PREFIX.jsonl)",
                c.ext(),
                c.ext()
            )))
        }
        (Some(c), Some(p)) => {
            let s = p.display().to_string();
            Some((c, PathBuf::from(s.strip_suffix(&format!(".{}", c.ext())).unwrap_or(&s))))
        }
        _ => None,
    };
    let columns = matches!(a.format, EmbedFormat::Parquet | EmbedFormat::ClipRetrieval);
    if columns && a.output.is_none() {
        return Err(Error::Invalid(format!(
            "--format {} needs --output {}",
            if a.format == EmbedFormat::Parquet { "parquet" } else { "clip-retrieval" },
            if a.format == EmbedFormat::Parquet { "FILE" } else { "DIRECTORY" }
        )));
    }
    let texts = a.texts.collect()?;
    if a.format == EmbedFormat::ClipRetrieval && !texts.is_empty() {
        return Err(Error::Invalid(
            "--format clip-retrieval holds images and their captions; embed texts with --format parquet or npy".into(),
        ));
    }
    let clip = load(&a.model, a.quiet)?;
    // texts first: a fatal problem shows before any image work
    let txt = clip.encode_texts(&texts)?;
    let d = clip.embed_dim();
    let mut w = match (&npy_prefix, &a.output) {
        (None, Some(out)) if a.format == EmbedFormat::Parquet => {
            Writer::Columns(Box::new(ColumnsWriter::parquet(out, d)?))
        }
        (None, Some(out)) if a.format == EmbedFormat::ClipRetrieval => {
            Writer::Columns(Box::new(ColumnsWriter::clip_retrieval(out, d)?))
        }
        (Some((container, prefix)), _) => {
            let with = |ext: &str| PathBuf::from(format!("{}.{ext}", prefix.display()));
            let index_path = with("jsonl");
            Writer::Npy {
                npy: NpyWriter::create(&with(container.ext()), d, a.dtype, *container)?,
                index: BufWriter::new(AtomicFile::create(&index_path)?),
                index_path,
            }
        }
        _ => {
            let mut out = Sink::open(a.output.as_deref())?;
            if a.format == EmbedFormat::Json {
                out.write_all(b"{\"images\":[").map_err(|e| io_err(Path::new("<output>"), e))?;
                Writer::Json { out, n: 0 }
            } else {
                Writer::Jsonl { out }
            }
        }
    };
    let progress = Progress::new(a.quiet || a.images.is_empty(), "images");
    let mut failed = 0;
    Pipeline::new(&clip, clip.batch_size()).run(
        a.images.iter(),
        |it: &ImageInput| it.prepare(&clip),
        |batch| {
            super::check_interrupted()?;
            progress.inc(batch.len());
            for (it, r) in batch {
                let sample = it.shard().map(|s| (s, it.caption()));
                match r {
                    Ok(e) => w.item("image", &it.name, sample, Ok(&e))?,
                    Err(err) => {
                        failed += 1;
                        let err = err.to_string();
                        progress.report(&it.name, &err);
                        w.item("image", &it.name, sample, Err(&err))?;
                    }
                }
            }
            w.flush(&clip)
        },
    )?;
    drop(progress);
    w.texts_begin()?;
    for (t, e) in texts.iter().zip(txt.chunks(d)) {
        w.item("text", t, None, Ok(e))?;
    }
    match w {
        Writer::Json { mut out, .. } => {
            let p = Path::new("<output>");
            write!(out, "],\"engine\":{},\"precision\":", json!(clip.engine_description()))
                .map_err(|e| io_err(p, e))?;
            // the engine's own: f16/f32 on a GPU, f32/bf16/int8 on the CPU
            serde_json::to_writer(&mut out, clip.engine_kind().precision_name()).map_err(|e| io_err(p, e))?;
            out.write_all(b"}\n").map_err(|e| io_err(p, e))?;
            out.commit()?;
        }
        Writer::Jsonl { out } => out.commit()?,
        Writer::Columns(c) => {
            let what = c.commit(&clip)?;
            if !a.quiet {
                eprintln!("clip-wgpu: {what}");
            }
        }
        Writer::Npy { npy, index, index_path } => {
            let (path, rows) = npy.commit()?;
            index.into_inner().map_err(|e| io_err(&index_path, e.error()))?.commit()?;
            if !a.quiet {
                eprintln!(
                    "clip-wgpu: wrote {rows}×{d} {} embeddings to {} (index: {})",
                    if a.dtype == Dtype::F16 { "f16" } else { "f32" },
                    path.display(),
                    index_path.display()
                );
            }
        }
    }
    Ok(exit_code(failed))
}

/// Matrix files.
#[derive(Clone, Copy)]
pub(super) enum Container {
    Npy,
    Safetensors,
}

impl Container {
    fn ext(self) -> &'static str {
        match self {
            Container::Npy => "npy",
            Container::Safetensors => "safetensors",
        }
    }
}

/// An N×D matrix of rows appended as they come (little-endian, C order). `.npy` (version
/// 1.0): the header, reserved at the start, is filled in with the row count at the end.
/// `.safetensors`: the rows go to an anonymous temporary file, copied after the header (whose
/// length depends on the row count) at the end.
pub(super) struct NpyWriter {
    out: BufWriter<AtomicFile>,
    /// safetensors: the rows until the header is known
    rows_tmp: Option<BufWriter<std::fs::File>>,
    path: PathBuf,
    dim: usize,
    dtype: Dtype,
    rows: usize,
}

/// Bytes reserved for magic, version, length and the header dict (a multiple of 64).
const NPY_HEADER: usize = 128;

impl NpyWriter {
    pub(super) fn create(path: &Path, dim: usize, dtype: Dtype, container: Container) -> clip_wgpu::Result<NpyWriter> {
        let mut out = BufWriter::new(AtomicFile::create(path)?);
        let rows_tmp = match container {
            Container::Npy => {
                out.write_all(&[0u8; NPY_HEADER]).map_err(|e| io_err(path, e))?;
                None
            }
            Container::Safetensors => Some(BufWriter::new(tempfile::tempfile().map_err(|e| io_err(path, e))?)),
        };
        Ok(NpyWriter { out, rows_tmp, path: path.into(), dim, dtype, rows: 0 })
    }

    /// Appends a row; returns its index.
    pub(super) fn push(&mut self, row: &[f32]) -> clip_wgpu::Result<usize> {
        debug_assert_eq!(row.len(), self.dim);
        let w: &mut dyn Write = match &mut self.rows_tmp {
            Some(t) => t,
            None => &mut self.out,
        };
        let r = match self.dtype {
            Dtype::F32 => row.iter().try_for_each(|x| w.write_all(&x.to_le_bytes())),
            Dtype::F16 => row.iter().try_for_each(|x| w.write_all(&half::f16::from_f32(*x).to_le_bytes())),
        };
        r.map_err(|e| io_err(&self.path, e))?;
        self.rows += 1;
        Ok(self.rows - 1)
    }

    fn header(&self) -> Vec<u8> {
        let descr = if self.dtype == Dtype::F16 { "<f2" } else { "<f4" };
        let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({}, {}), }}", self.rows, self.dim);
        let mut h = b"\x93NUMPY\x01\x00".to_vec();
        h.extend_from_slice(&((NPY_HEADER - 10) as u16).to_le_bytes());
        h.extend_from_slice(dict.as_bytes());
        h.resize(NPY_HEADER - 1, b' ');
        h.push(b'\n');
        h
    }

    /// The safetensors header: one tensor `embeddings`, padded with spaces to 8 bytes.
    fn safetensors_header(&self) -> Vec<u8> {
        let (dtype, size) = if self.dtype == Dtype::F16 { ("F16", 2) } else { ("F32", 4) };
        let h = json!({
            "__metadata__": {"format": "clip-wgpu embeddings", "index": "rows are described by the .jsonl next to this file"},
            "embeddings": {"dtype": dtype, "shape": [self.rows, self.dim], "data_offsets": [0, self.rows * self.dim * size]},
        });
        let mut h = h.to_string().into_bytes();
        h.resize(h.len().div_ceil(8) * 8, b' ');
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend(h);
        out
    }

    pub(super) fn commit(mut self) -> clip_wgpu::Result<(PathBuf, usize)> {
        let path = self.path.clone();
        let err = |e: &dyn std::fmt::Display| io_err(&path, e);
        if let Some(tmp) = self.rows_tmp.take() {
            let header = self.safetensors_header();
            self.out.write_all(&header).map_err(|e| err(&e))?;
            let mut rows = tmp.into_inner().map_err(|e| err(e.error()))?;
            rows.seek(SeekFrom::Start(0)).and_then(|_| std::io::copy(&mut rows, &mut self.out)).map_err(|e| err(&e))?;
            let f = self.out.into_inner().map_err(|e| err(e.error()))?;
            f.commit()?;
            return Ok((path, self.rows));
        }
        let header = self.header();
        let NpyWriter { out, rows, .. } = self;
        let mut f = out.into_inner().map_err(|e| err(e.error()))?;
        let file = f.file();
        file.seek(SeekFrom::Start(0)).and_then(|_| file.write_all(&header)).map_err(|e| err(&e))?;
        f.commit()?;
        Ok((path, rows))
    }
}
