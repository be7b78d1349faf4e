//! Output: stdout or a file written atomically (a temporary file in the same directory,
//! renamed over the destination when complete: an interrupted run leaves no half file), and
//! the record formats (table, JSON, JSONL, CSV, TSV, Parquet) written as results come.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use serde::Serialize;
use serde_json::{json, Value};

use clip_wgpu::Error;

use super::columns::RecordsParquet;

pub fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io { path: path.into(), msg: e.to_string() }
}

/// A file that appears at `dest` only when [`AtomicFile::commit`] is called; dropped
/// uncommitted, it leaves nothing.
pub struct AtomicFile {
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
}

impl AtomicFile {
    pub fn create(dest: &Path) -> clip_wgpu::Result<AtomicFile> {
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(|e| io_err(dest, e))?;
        Ok(AtomicFile { tmp, dest: dest.to_path_buf() })
    }

    pub fn file(&mut self) -> &mut std::fs::File {
        self.tmp.as_file_mut()
    }

    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Flushes to disk and renames over the destination.
    pub fn commit(self) -> clip_wgpu::Result<()> {
        let AtomicFile { tmp, dest } = self;
        tmp.as_file().sync_all().map_err(|e| io_err(&dest, e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // tempfile creates 0600; a result file is an ordinary file
            let _ = tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644));
        }
        tmp.persist(&dest).map_err(|e| io_err(&dest, e.error))?;
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tmp.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.tmp.flush()
    }
}

/// Where a command's output goes: stdout, or `--output FILE` written atomically.
pub enum Sink {
    Stdout(BufWriter<std::io::Stdout>),
    File(BufWriter<AtomicFile>),
}

impl Sink {
    pub fn open(output: Option<&Path>) -> clip_wgpu::Result<Sink> {
        Ok(match output {
            Some(p) => Sink::File(BufWriter::new(AtomicFile::create(p)?)),
            None => Sink::Stdout(BufWriter::new(std::io::stdout())),
        })
    }

    fn name(&self) -> PathBuf {
        match self {
            Sink::Stdout(_) => PathBuf::from("<stdout>"),
            Sink::File(f) => f.get_ref().dest().to_path_buf(),
        }
    }

    /// Flushes; a file is renamed into place.
    pub fn commit(self) -> clip_wgpu::Result<()> {
        let name = self.name();
        match self {
            Sink::Stdout(mut w) => w.flush().map_err(|e| io_err(&name, e)),
            Sink::File(w) => w.into_inner().map_err(|e| io_err(&name, e.error()))?.commit(),
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Stdout(w) => w.write(buf),
            Sink::File(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Stdout(w) => w.flush(),
            Sink::File(w) => w.flush(),
        }
    }
}

/// Record formats of `score` and `classify`.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum Format {
    /// Aligned columns for reading (the whole table is printed at the end).
    Table,
    /// One JSON object: `{"<records>": [...], "errors": [{"input", "error"}], ...}`.
    Json,
    /// One JSON object per line, as results come; failed inputs as `{"input", "error"}` lines.
    Jsonl,
    /// A header row then one row per record, as results come; failed inputs as rows with
    /// only the first column and `error` filled.
    Csv,
    /// As csv, tab-separated.
    Tsv,
    /// Parquet (needs --output FILE): one row per record, the columns typed (strings,
    /// float32, uint32; `score` adds the image's embedding, fixed_size_list<float32>[D]),
    /// written batch by batch. Failed inputs have no row: they are reported on stderr and the
    /// exit status is 2.
    Parquet,
}

/// The type of a record column, for the typed formats (Parquet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Col {
    /// a string ([`Cell::Text`])
    Text,
    /// a float32 ([`Cell::Num`])
    Num,
    /// an unsigned integer ([`Cell::Int`])
    Int,
    /// a float32 vector of this length ([`Cell::Vector`]); only in the typed formats, the
    /// table, CSV and TSV leave it out
    Vector(usize),
}

/// A table or CSV cell: text, or a number shown in the table with `decimals` decimals (and in
/// full in CSV).
pub enum Cell {
    Text(String),
    Num(f32, usize),
    Int(usize),
    /// An embedding: a [`Col::Vector`] column's value.
    Vector(Vec<f32>),
}

impl Cell {
    fn full(&self) -> String {
        match self {
            Cell::Text(s) => s.clone(),
            Cell::Num(x, _) => x.to_string(),
            Cell::Int(i) => i.to_string(),
            Cell::Vector(_) => String::new(),
        }
    }
    fn short(&self) -> String {
        match self {
            Cell::Text(s) => s.clone(),
            Cell::Num(x, d) => format!("{x:.d$}"),
            Cell::Int(i) => i.to_string(),
            Cell::Vector(_) => String::new(),
        }
    }
}

enum Out {
    Plain(Sink),
    Csv(Box<csv::Writer<Sink>>),
    Parquet(Box<RecordsParquet>),
}

/// Writes records in a [`Format`]: structured ones (JSON, JSONL) as serialisable objects,
/// flat ones (table, CSV, TSV, Parquet) as rows of cells under `columns` (the table, CSV and
/// TSV leave the [`Col::Vector`] columns out).
pub struct RecordWriter {
    format: Format,
    out: Out,
    columns: Vec<&'static str>,
    n: usize,
    errors: Vec<Value>,
    table: Vec<Vec<Cell>>,
}

impl RecordWriter {
    pub fn new(
        format: Format,
        sink: Sink,
        key: &'static str,
        typed: &[(&'static str, Col)],
    ) -> clip_wgpu::Result<Self> {
        // the flat formats' columns: all but the vectors
        let mut columns: Vec<&'static str> =
            typed.iter().filter(|(_, c)| !matches!(c, Col::Vector(_))).map(|(n, _)| *n).collect();
        let name = sink.name();
        let out = match format {
            Format::Parquet => match sink {
                Sink::File(w) => {
                    let file = w.into_inner().map_err(|e| io_err(&name, e.error()))?;
                    Out::Parquet(Box::new(RecordsParquet::create(file, typed)?))
                }
                Sink::Stdout(_) => {
                    return Err(Error::Invalid("--format parquet writes a file: give --output FILE".into()))
                }
            },
            Format::Csv | Format::Tsv => {
                let mut w = csv::WriterBuilder::new()
                    .delimiter(if format == Format::Csv { b',' } else { b'\t' })
                    .quote_style(if format == Format::Csv {
                        csv::QuoteStyle::Necessary
                    } else {
                        csv::QuoteStyle::Never
                    })
                    .from_writer(sink);
                columns.push("error");
                w.write_record(&columns).map_err(|e| io_err(&name, e))?;
                Out::Csv(Box::new(w))
            }
            Format::Json => {
                let mut sink = sink;
                write!(sink, "{{\"{key}\":[").map_err(|e| io_err(&name, e))?;
                Out::Plain(sink)
            }
            _ => Out::Plain(sink),
        };
        Ok(RecordWriter { format, out, columns, n: 0, errors: Vec::new(), table: Vec::new() })
    }

    fn name(&self) -> PathBuf {
        match &self.out {
            Out::Plain(s) => s.name(),
            Out::Csv(w) => w.get_ref().name(),
            Out::Parquet(p) => p.name(),
        }
    }

    fn plain(&mut self) -> &mut Sink {
        match &mut self.out {
            Out::Plain(s) => s,
            Out::Csv(_) | Out::Parquet(_) => unreachable!("plain output in a CSV or Parquet writer"),
        }
    }

    /// One record: `structured` for JSON/JSONL, `rows` (one or more) for table/CSV/TSV.
    pub fn record(&mut self, structured: &impl Serialize, rows: Vec<Vec<Cell>>) -> clip_wgpu::Result<()> {
        let name = self.name();
        let err = |e: &dyn std::fmt::Display| io_err(&name, e);
        match self.format {
            Format::Json => {
                let first = self.n == 0;
                let s = self.plain();
                if !first {
                    s.write_all(b",").map_err(|e| err(&e))?;
                }
                serde_json::to_writer(s, structured).map_err(|e| err(&e))?;
            }
            Format::Jsonl => {
                let s = self.plain();
                serde_json::to_writer(&mut *s, structured).map_err(|e| err(&e))?;
                s.write_all(b"\n").map_err(|e| err(&e))?;
            }
            Format::Csv | Format::Tsv => {
                let Out::Csv(w) = &mut self.out else { unreachable!() };
                for row in rows {
                    let mut fields: Vec<String> =
                        row.iter().filter(|c| !matches!(c, Cell::Vector(_))).map(Cell::full).collect();
                    fields.push(String::new());
                    w.write_record(&fields).map_err(|e| err(&e))?;
                }
            }
            Format::Table => self.table.extend(rows),
            Format::Parquet => {
                let Out::Parquet(p) = &mut self.out else { unreachable!() };
                for row in rows {
                    p.push(row)?;
                }
            }
        }
        self.n += 1;
        Ok(())
    }

    /// A failed input: `{"input", "error"}` plus `extra` fields (e.g. the pair's text).
    pub fn error(&mut self, input: &str, error: &str, extra: &[(&str, &str)]) -> clip_wgpu::Result<()> {
        let name = self.name();
        let err = |e: &dyn std::fmt::Display| io_err(&name, e);
        let mut v = json!({"input": input, "error": error});
        for (k, x) in extra {
            v[*k] = json!(x);
        }
        match self.format {
            Format::Json => self.errors.push(v),
            Format::Jsonl => {
                let s = self.plain();
                serde_json::to_writer(&mut *s, &v).map_err(|e| err(&e))?;
                s.write_all(b"\n").map_err(|e| err(&e))?;
            }
            Format::Csv | Format::Tsv => {
                let n = self.columns.len();
                let Out::Csv(w) = &mut self.out else { unreachable!() };
                let mut fields = vec![String::new(); n];
                fields[0] = input.to_string();
                if let (Some((_, text)), true) = (extra.first(), n > 2) {
                    fields[1] = text.to_string();
                }
                fields[n - 1] = error.to_string();
                w.write_record(&fields).map_err(|e| err(&e))?;
            }
            // already on stderr
            Format::Table | Format::Parquet => {}
        }
        Ok(())
    }

    /// Pushes what was written so far to its destination (streaming formats).
    pub fn flush(&mut self) -> clip_wgpu::Result<()> {
        let name = self.name();
        let r = match &mut self.out {
            Out::Plain(s) => s.flush(),
            Out::Csv(w) => w.flush(),
            Out::Parquet(p) => return p.write(),
        };
        r.map_err(|e| io_err(&name, e))
    }

    /// Ends the output: JSON gets `"errors"` and the `summary` fields; JSONL gets the summary
    /// as a last line when it has any; the table gets `notes` under it. CSV/TSV: neither
    /// (the caller prints the summary on stderr).
    pub fn finish(mut self, summary: serde_json::Map<String, Value>, notes: &[String]) -> clip_wgpu::Result<()> {
        let name = self.name();
        let err = |e: &dyn std::fmt::Display| io_err(&name, e);
        match self.format {
            Format::Json => {
                let errors = std::mem::take(&mut self.errors);
                let s = self.plain();
                write!(s, "],\"errors\":").map_err(|e| err(&e))?;
                serde_json::to_writer(&mut *s, &errors).map_err(|e| err(&e))?;
                for (k, v) in &summary {
                    write!(s, ",{}:", Value::from(k.as_str())).map_err(|e| err(&e))?;
                    serde_json::to_writer(&mut *s, v).map_err(|e| err(&e))?;
                }
                s.write_all(b"}\n").map_err(|e| err(&e))?;
            }
            Format::Jsonl if !summary.is_empty() => {
                let s = self.plain();
                serde_json::to_writer(&mut *s, &summary).map_err(|e| err(&e))?;
                s.write_all(b"\n").map_err(|e| err(&e))?;
            }
            Format::Table => {
                let table = std::mem::take(&mut self.table);
                let columns = self.columns.clone();
                let s = self.plain();
                write_table(s, &columns, &table).map_err(|e| err(&e))?;
                for n in notes {
                    writeln!(s, "{n}").map_err(|e| err(&e))?;
                }
            }
            _ => {}
        }
        match self.out {
            Out::Plain(s) => s.commit(),
            Out::Csv(w) => w.into_inner().map_err(|e| err(e.error()))?.commit(),
            Out::Parquet(p) => p.commit(),
        }
    }
}

/// Aligned columns: text left-aligned (at most 60 characters shown), numbers right-aligned.
fn write_table(w: &mut impl Write, columns: &[&str], rows: &[Vec<Cell>]) -> std::io::Result<()> {
    let rows: Vec<Vec<&Cell>> =
        rows.iter().map(|r| r.iter().filter(|c| !matches!(c, Cell::Vector(_))).collect()).collect();
    let numeric: Vec<bool> =
        (0..columns.len()).map(|c| rows.first().is_some_and(|r| !matches!(r[c], Cell::Text(_)))).collect();
    let cells: Vec<Vec<String>> =
        rows.iter().map(|r| r.iter().map(|c| c.short().chars().take(60).collect()).collect()).collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|c| cells.iter().map(|r| r[c].chars().count()).chain([columns[c].len()]).max().unwrap_or(0))
        .collect();
    let line = |vals: &[&str]| {
        let parts: Vec<String> = vals
            .iter()
            .enumerate()
            .map(|(c, v)| {
                let pad = " ".repeat(widths[c].saturating_sub(v.chars().count()));
                if numeric[c] {
                    format!("{pad}{v}")
                } else if c + 1 == vals.len() {
                    v.to_string()
                } else {
                    format!("{v}{pad}")
                }
            })
            .collect();
        parts.join("  ")
    };
    writeln!(w, "{}", line(columns))?;
    for r in &cells {
        let v: Vec<&str> = r.iter().map(String::as_str).collect();
        writeln!(w, "{}", line(&v))?;
    }
    Ok(())
}
