//! Columnar output of `embed` (feature `parquet`): one Parquet file, or clip-retrieval's
//! layout (`img_emb/img_emb_0.npy`, `text_emb/text_emb_0.npy`, `metadata/metadata_0.parquet`)
//! that its index-building step (autofaiss, embedding-reader) reads unchanged.
//!
//! The Parquet schema (`embed --format parquet`), one row per embedded input, images first:
//!
//! | column      | type                                  | what                                      |
//! |-------------|---------------------------------------|-------------------------------------------|
//! | `input`     | string                                | the file path, the shard sample's key, or the text |
//! | `kind`      | string                                | `image` or `text`                         |
//! | `shard`     | string, nullable                      | the WebDataset shard of a sample          |
//! | `caption`   | string, nullable                      | the sample's caption (`.txt`/`.json`)     |
//! | `embedding` | fixed_size_list<float32>[D]           | L2-normalised                             |
//!
//! Failed inputs have no row (they are reported on stderr and the exit status is 2).
//!
//! `score` and `classify` write their records as Parquet too ([`RecordsParquet`], behind
//! `--format parquet`): one row per record, its columns typed as the command declares them
//! (`score`: `image`, `text` strings; `score`, `cosine`, `logit` float32; `embedding`, the
//! image's, fixed_size_list<float32>[D]).

use std::path::{Path, PathBuf};

use clip_wgpu::{Clip, Error};

use super::output::{AtomicFile, Cell, Col};

#[cfg(feature = "parquet")]
pub use imp::*;

/// What every row of the output says besides its embedding.
pub struct Row<'a> {
    pub input: &'a str,
    pub kind: &'static str,
    pub shard: Option<&'a Path>,
    pub caption: Option<&'a str>,
}

#[cfg(not(feature = "parquet"))]
pub struct ColumnsWriter;

#[cfg(not(feature = "parquet"))]
impl ColumnsWriter {
    pub fn parquet(_: &Path, _: usize) -> clip_wgpu::Result<Self> {
        Err(Error::Invalid("this build has no Parquet output (cargo feature `parquet`)".into()))
    }
    pub fn clip_retrieval(_: &Path, _: usize) -> clip_wgpu::Result<Self> {
        Self::parquet(Path::new(""), 0)
    }
    pub fn push(&mut self, _: Row, _: &[f32]) -> clip_wgpu::Result<()> {
        Ok(())
    }
    pub fn end_batch(&mut self, _: &Clip) -> clip_wgpu::Result<()> {
        Ok(())
    }
    pub fn commit(self, _: &Clip) -> clip_wgpu::Result<String> {
        Ok(String::new())
    }
}

#[cfg(not(feature = "parquet"))]
pub struct RecordsParquet;

#[cfg(not(feature = "parquet"))]
impl RecordsParquet {
    pub fn create(_: AtomicFile, _: &[(&'static str, Col)]) -> clip_wgpu::Result<Self> {
        Err(Error::Invalid("this build has no Parquet output (cargo feature `parquet`)".into()))
    }
    pub fn name(&self) -> PathBuf {
        PathBuf::new()
    }
    pub fn push(&mut self, _: Vec<Cell>) -> clip_wgpu::Result<()> {
        Ok(())
    }
    pub fn write(&mut self) -> clip_wgpu::Result<()> {
        Ok(())
    }
    pub fn commit(self) -> clip_wgpu::Result<()> {
        Ok(())
    }
}

#[cfg(feature = "parquet")]
mod imp {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, FixedSizeListArray, Float32Array, RecordBatch, StringArray, UInt32Array};
    use arrow_schema::{DataType, Field, Schema, SchemaRef};
    use parquet::arrow::ArrowWriter;
    use parquet::basic::Compression;
    use parquet::file::properties::WriterProperties;

    use super::super::embed::{Container, Dtype, NpyWriter};
    use super::super::output::io_err;
    use super::*;

    /// Column values not yet written.
    #[derive(Default)]
    struct Buffer {
        input: Vec<String>,
        kind: Vec<&'static str>,
        shard: Vec<Option<String>>,
        caption: Vec<Option<String>>,
        embedding: Vec<f32>,
    }

    struct Parquet {
        writer: ArrowWriter<AtomicFile>,
        schema: SchemaRef,
        path: PathBuf,
        dim: usize,
        rows: usize,
    }

    fn list_field(dim: usize) -> DataType {
        DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, false)), dim as i32)
    }

    impl Parquet {
        fn create(path: &Path, schema: SchemaRef, dim: usize) -> clip_wgpu::Result<Parquet> {
            Parquet::on(AtomicFile::create(path)?, schema, dim)
        }

        fn on(file: AtomicFile, schema: SchemaRef, dim: usize) -> clip_wgpu::Result<Parquet> {
            let path = file.dest().to_path_buf();
            let path = path.as_path();
            let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
            let writer = ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(|e| io_err(path, e))?;
            Ok(Parquet { writer, schema, path: path.into(), dim, rows: 0 })
        }

        fn write(&mut self, columns: Vec<ArrayRef>) -> clip_wgpu::Result<()> {
            let batch = RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| io_err(&self.path, e))?;
            self.rows += batch.num_rows();
            self.writer.write(&batch).map_err(|e| io_err(&self.path, e))
        }

        fn embeddings(&self, values: Vec<f32>) -> clip_wgpu::Result<ArrayRef> {
            let field = Arc::new(Field::new("item", DataType::Float32, false));
            let a = FixedSizeListArray::try_new(field, self.dim as i32, Arc::new(Float32Array::from(values)), None)
                .map_err(|e| io_err(&self.path, e))?;
            Ok(Arc::new(a))
        }

        fn commit(self) -> clip_wgpu::Result<(PathBuf, usize)> {
            let f = self.writer.into_inner().map_err(|e| io_err(&self.path, e))?;
            f.commit()?;
            Ok((self.path, self.rows))
        }
    }

    // one value per run: its size does not matter
    #[allow(clippy::large_enum_variant)]
    enum Kind {
        /// One Parquet file with the embeddings.
        Parquet(Parquet),
        /// clip-retrieval's layout: the matrices as .npy, the metadata as Parquet, row i of
        /// each describing the same image.
        ClipRetrieval { dir: PathBuf, img: NpyWriter, text: NpyWriter, meta: Parquet, captions: bool },
    }

    /// `embed --format parquet|clip-retrieval`.
    pub struct ColumnsWriter {
        kind: Kind,
        buf: Buffer,
    }

    impl ColumnsWriter {
        /// One Parquet file at `path` with the schema above.
        pub fn parquet(path: &Path, dim: usize) -> clip_wgpu::Result<Self> {
            let schema = Arc::new(Schema::new(vec![
                Field::new("input", DataType::Utf8, false),
                Field::new("kind", DataType::Utf8, false),
                Field::new("shard", DataType::Utf8, true),
                Field::new("caption", DataType::Utf8, true),
                Field::new("embedding", list_field(dim), false),
            ]));
            Ok(ColumnsWriter { kind: Kind::Parquet(Parquet::create(path, schema, dim)?), buf: Buffer::default() })
        }

        /// clip-retrieval's layout under `dir` (created if needed): `img_emb/img_emb_0.npy`
        /// (N×D f32), `text_emb/text_emb_0.npy` (the captions' embeddings, row i of image i's
        /// sample; written when the images have captions) and `metadata/metadata_0.parquet`
        /// with the columns `image_path` (the file, or `SHARD:KEY`), `key` and `caption`.
        pub fn clip_retrieval(dir: &Path, dim: usize) -> clip_wgpu::Result<Self> {
            for sub in ["img_emb", "text_emb", "metadata"] {
                std::fs::create_dir_all(dir.join(sub)).map_err(|e| io_err(&dir.join(sub), e))?;
            }
            let schema = Arc::new(Schema::new(vec![
                Field::new("image_path", DataType::Utf8, false),
                Field::new("key", DataType::Utf8, false),
                Field::new("caption", DataType::Utf8, true),
            ]));
            let npy = |sub: &str| NpyWriter::create(&dir.join(sub), dim, Dtype::F32, Container::Npy);
            Ok(ColumnsWriter {
                kind: Kind::ClipRetrieval {
                    dir: dir.into(),
                    img: npy("img_emb/img_emb_0.npy")?,
                    text: npy("text_emb/text_emb_0.npy")?,
                    meta: Parquet::create(&dir.join("metadata/metadata_0.parquet"), schema, dim)?,
                    captions: false,
                },
                buf: Buffer::default(),
            })
        }

        /// One embedded input (buffered until [`end_batch`](Self::end_batch)).
        pub fn push(&mut self, row: Row, embedding: &[f32]) -> clip_wgpu::Result<()> {
            if let Kind::ClipRetrieval { img, .. } = &mut self.kind {
                if row.kind != "image" {
                    return Err(Error::Invalid(
                        "--format clip-retrieval holds images and their captions; embed texts with --format parquet or npy"
                            .into(),
                    ));
                }
                img.push(embedding)?;
            } else {
                self.buf.embedding.extend_from_slice(embedding);
            }
            self.buf.input.push(row.input.to_string());
            self.buf.kind.push(row.kind);
            self.buf.shard.push(row.shard.map(|p| p.display().to_string()));
            self.buf.caption.push(row.caption.map(String::from));
            Ok(())
        }

        /// Writes what is buffered (clip-retrieval: embeds the buffered captions first).
        pub fn end_batch(&mut self, clip: &Clip) -> clip_wgpu::Result<()> {
            if self.buf.input.is_empty() {
                return Ok(());
            }
            let b = std::mem::take(&mut self.buf);
            let strings = |v: Vec<String>| -> ArrayRef { Arc::new(StringArray::from(v)) };
            let opt = |v: Vec<Option<String>>| -> ArrayRef { Arc::new(StringArray::from(v)) };
            match &mut self.kind {
                Kind::Parquet(p) => {
                    let emb = p.embeddings(b.embedding)?;
                    let kind: ArrayRef = Arc::new(StringArray::from(b.kind));
                    p.write(vec![strings(b.input), kind, opt(b.shard), opt(b.caption), emb])
                }
                Kind::ClipRetrieval { text, meta, captions, .. } => {
                    if b.caption.iter().any(Option::is_some) {
                        *captions = true;
                    }
                    if *captions {
                        let texts: Vec<&str> = b.caption.iter().map(|c| c.as_deref().unwrap_or("")).collect();
                        let e = clip.encode_texts(&texts)?;
                        for row in e.chunks(clip.embed_dim()) {
                            text.push(row)?;
                        }
                    }
                    let paths: Vec<String> = b
                        .input
                        .iter()
                        .zip(&b.shard)
                        .map(|(k, s)| match s {
                            Some(s) => format!("{s}:{k}"),
                            None => k.clone(),
                        })
                        .collect();
                    meta.write(vec![strings(paths), strings(b.input), opt(b.caption)])
                }
            }
        }

        /// Writes the rest and moves the files into place; returns a line saying what was written.
        pub fn commit(mut self, clip: &Clip) -> clip_wgpu::Result<String> {
            self.end_batch(clip)?;
            match self.kind {
                Kind::Parquet(p) => {
                    let (path, rows) = p.commit()?;
                    Ok(format!("wrote {rows} rows to {}", path.display()))
                }
                Kind::ClipRetrieval { dir, img, text, meta, captions } => {
                    let (_, rows) = img.commit()?;
                    if captions {
                        text.commit()?;
                    }
                    meta.commit()?;
                    Ok(format!(
                        "wrote {rows} image embeddings{} in clip-retrieval's layout under {}",
                        if captions { " and their captions'" } else { "" },
                        dir.display()
                    ))
                }
            }
        }
    }

    /// The records of `score`/`classify` as Parquet: rows of [`Cell`]s under typed columns,
    /// buffered until [`write`](Self::write) (once per batch of images).
    pub struct RecordsParquet {
        p: Parquet,
        cols: Vec<Col>,
        rows: Vec<Vec<Cell>>,
    }

    impl RecordsParquet {
        pub fn create(file: AtomicFile, typed: &[(&'static str, Col)]) -> clip_wgpu::Result<Self> {
            let mut dim = 0;
            let fields: Vec<Field> = typed
                .iter()
                .map(|&(name, col)| {
                    let t = match col {
                        Col::Text => DataType::Utf8,
                        Col::Num => DataType::Float32,
                        Col::Int => DataType::UInt32,
                        Col::Vector(d) => {
                            dim = d;
                            list_field(d)
                        }
                    };
                    Field::new(name, t, false)
                })
                .collect();
            let p = Parquet::on(file, Arc::new(Schema::new(fields)), dim)?;
            Ok(RecordsParquet { p, cols: typed.iter().map(|c| c.1).collect(), rows: Vec::new() })
        }

        pub fn name(&self) -> PathBuf {
            self.p.path.clone()
        }

        pub fn push(&mut self, row: Vec<Cell>) -> clip_wgpu::Result<()> {
            let fits = row.len() == self.cols.len()
                && row.iter().zip(&self.cols).all(|(cell, col)| match (cell, col) {
                    (Cell::Text(_), Col::Text) | (Cell::Num(..), Col::Num) | (Cell::Int(_), Col::Int) => true,
                    (Cell::Vector(v), Col::Vector(d)) => v.len() == *d,
                    _ => false,
                });
            if !fits {
                return Err(io_err(&self.p.path, "a record does not match the Parquet columns (a bug)"));
            }
            self.rows.push(row);
            Ok(())
        }

        /// Writes the buffered rows as one record batch.
        pub fn write(&mut self) -> clip_wgpu::Result<()> {
            if self.rows.is_empty() {
                return Ok(());
            }
            let rows = std::mem::take(&mut self.rows);
            let mut columns = Vec::with_capacity(self.cols.len());
            for (c, col) in self.cols.iter().enumerate() {
                let cells = rows.iter().map(|r| &r[c]);
                let array: ArrayRef = match col {
                    Col::Text => Arc::new(StringArray::from_iter_values(cells.map(|x| match x {
                        Cell::Text(s) => s.as_str(),
                        _ => unreachable!("checked in push"),
                    }))),
                    Col::Num => Arc::new(Float32Array::from_iter_values(cells.map(|x| match x {
                        Cell::Num(v, _) => *v,
                        _ => unreachable!("checked in push"),
                    }))),
                    Col::Int => Arc::new(UInt32Array::from_iter_values(cells.map(|x| match x {
                        Cell::Int(v) => *v as u32,
                        _ => unreachable!("checked in push"),
                    }))),
                    Col::Vector(_) => {
                        let mut values = Vec::new();
                        for x in cells {
                            if let Cell::Vector(v) = x {
                                values.extend_from_slice(v);
                            }
                        }
                        self.p.embeddings(values)?
                    }
                };
                columns.push(array);
            }
            self.p.write(columns)
        }

        /// Writes the rest and moves the file into place.
        pub fn commit(mut self) -> clip_wgpu::Result<()> {
            self.write()?;
            self.p.commit().map(|_| ())
        }
    }
}
